\set VERBOSITY terse
SET client_min_messages = warning;

-- maintain() returns a jsonb object: what the pass did.
SELECT jsonb_typeof(m) AS type,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(m) k) AS keys,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(m->'archive') k) AS archive_keys
FROM throttle_jobs.maintain() m;

------------------------------------------------------------------------------
-- Expired leases
------------------------------------------------------------------------------

-- m_q: retries after 1 minute (no jitter), two attempts.  m_keep: a job
-- whose lease has not expired.
SELECT throttle_jobs.create_queue('m_q', max_attempts => 2, backoff_base => '1 minute', backoff_jitter => 0);
SELECT throttle_jobs.create_queue('m_keep');
SELECT throttle_jobs.enqueue('m_q', '{"n": "retry"}') AS m_retry \gset
SELECT throttle_jobs.enqueue('m_q', '{"n": "last"}', max_attempts => 1) AS m_last \gset
SELECT throttle_jobs.enqueue('m_keep', '{"n": "keep"}') AS m_keep \gset
CREATE TEMP TABLE leases AS
SELECT id, lease_token FROM throttle_jobs.reserve('m_q', 'w-m', max_jobs => 2, lease => '1 millisecond');
SELECT count(*) AS reserved FROM leases;
SELECT count(*) AS reserved FROM throttle_jobs.reserve('m_keep', 'w-k');
SELECT pg_sleep(0.01);
-- Before the pass, running_jobs flags the expired leases.
SELECT payload->>'n' AS job, worker, lease_expired FROM throttle_jobs.running_jobs
WHERE queue IN ('m_q', 'm_keep') ORDER BY id;

-- The pass retries an expired job that has attempts left (attempt kept,
-- run_at pushed by the backoff, the lease released, the expiry recorded as
-- an error), dead-letters one on its last attempt, and leaves live leases alone.
BEGIN;
SELECT m->'expired_leases' AS expired_leases, m->'retried' AS retried,
       m->'dead_lettered' AS dead_lettered
FROM throttle_jobs.maintain() m;
SELECT state, attempt, run_at - now() AS retry_in, worker, lease_until, reserved_at, last_error,
       errors->0->>'attempt' AS err_attempt, errors->0->>'worker' AS err_worker,
       (errors->0->>'at')::timestamptz = now() AS err_at_now
FROM throttle_jobs.jobs WHERE id = :m_retry;
SELECT lease_token IS NULL AS token_cleared FROM throttle_jobs.job WHERE id = :m_retry;
SELECT queue, reason, attempt, max_attempts, died_at = now() AS died_now, worker, last_error
FROM throttle_jobs.dead_letters WHERE id = :m_last;
SELECT state, worker, lease_until > now() AS lease_live FROM throttle_jobs.jobs WHERE id = :m_keep;
COMMIT;
-- The workers whose leases expired are now stale.
SELECT throttle_jobs.complete(id, lease_token) AS completed FROM leases ORDER BY id;
SELECT throttle_jobs.heartbeat(id, lease_token) IS NULL AS stale FROM leases ORDER BY id;

-- maintain() twice in a row is harmless: the second pass finds nothing to do
-- and changes nothing.
CREATE TEMP TABLE jobs_before AS SELECT * FROM throttle_jobs.job;
CREATE TEMP TABLE dead_before AS SELECT * FROM throttle_jobs.job_dead;
SELECT m->'expired_leases' AS expired_leases, m->'dead_letters_purged' AS purged,
       m->'archive'->'partitions_created' AS created, m->'archive'->'partitions_dropped' AS dropped,
       m->'archive'->'rows_deleted' AS rows_deleted
FROM throttle_jobs.maintain() m;
SELECT m->'expired_leases' AS expired_leases, m->'dead_letters_purged' AS purged,
       m->'archive'->'partitions_created' AS created, m->'archive'->'partitions_dropped' AS dropped,
       m->'archive'->'rows_deleted' AS rows_deleted
FROM throttle_jobs.maintain() m;
SELECT (SELECT count(*) FROM (SELECT * FROM throttle_jobs.job EXCEPT SELECT * FROM jobs_before) a) +
       (SELECT count(*) FROM (SELECT * FROM jobs_before EXCEPT SELECT * FROM throttle_jobs.job) b) AS jobs_changed,
       (SELECT count(*) FROM (SELECT * FROM throttle_jobs.job_dead EXCEPT SELECT * FROM dead_before) a) +
       (SELECT count(*) FROM (SELECT * FROM dead_before EXCEPT SELECT * FROM throttle_jobs.job_dead) b) AS dead_changed;

-- The retried job's second expiry sends it to the dead letters with both errors.
UPDATE throttle_jobs.job SET run_at = now() WHERE id = :m_retry;  -- skip the backoff
SELECT count(*) AS reserved FROM throttle_jobs.reserve('m_q', 'w-m2', lease => '1 millisecond');
SELECT pg_sleep(0.01);
SELECT m->'expired_leases' AS expired_leases, m->'dead_lettered' AS dead_lettered
FROM throttle_jobs.maintain() m;
SELECT reason, attempt, jsonb_array_length(errors) AS errors,
       errors->1->>'attempt' AS last_attempt, errors->1->>'worker' AS last_worker, last_error
FROM throttle_jobs.dead_letters WHERE id = :m_retry;

------------------------------------------------------------------------------
-- Retention of dead letters
------------------------------------------------------------------------------

-- Within retain_dead (14 days by default) dead letters stay.
SELECT m->'dead_letters_purged' AS purged FROM throttle_jobs.maintain() m;
SELECT count(*) AS dead FROM throttle_jobs.dead_letters WHERE queue = 'm_q';
-- Past it they go.
UPDATE throttle_jobs.job_dead SET died_at = now() - interval '15 days' WHERE id = :m_last;
SELECT m->'dead_letters_purged' AS purged FROM throttle_jobs.maintain() m;
SELECT id = :m_retry AS is_m_retry FROM throttle_jobs.dead_letters WHERE queue = 'm_q';

-- retain_dead => '0': the next pass deletes the queue's dead letters, and
-- only that queue's.
SELECT throttle_jobs.enqueue('m_keep', '{"n": "dead in m_keep"}') AS m_keep_dead \gset
SELECT throttle_jobs.fail(id, lease_token, 'x', retryable => false)
FROM throttle_jobs.reserve('m_keep', 'w-k') WHERE id = :m_keep_dead;
SELECT throttle_jobs.alter_queue('m_q', retain_dead => '0');
SELECT m->'dead_letters_purged' AS purged FROM throttle_jobs.maintain() m;
SELECT queue, count(*) FROM throttle_jobs.dead_letters WHERE queue IN ('m_q', 'm_keep')
GROUP BY queue ORDER BY queue;

------------------------------------------------------------------------------
-- Archive partitions
------------------------------------------------------------------------------

-- maintain() creates day partitions job_archive_pYYYYMMDD (UTC) for today
-- and the next two days; the default partition holds nothing.
BEGIN;
SELECT jsonb_typeof(throttle_jobs.maintain()) AS maintain;
SELECT d AS days_ahead,
       to_regclass('throttle_jobs.job_archive_p' ||
                   to_char((now() AT TIME ZONE 'UTC')::date + d, 'YYYYMMDD')) IS NOT NULL AS exists
FROM generate_series(0, 2) d ORDER BY d;
SELECT count(*) AS rows_in_default_partition FROM throttle_jobs.job_archive_default;
COMMIT;
SELECT count(*) AS day_partitions
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'throttle_jobs.job_archive'::regclass
  AND c.relname ~ '^job_archive_p[0-9]{8}$';
-- The partitions are reachable by no one but the owner (no PUBLIC access).
SELECT count(*) AS public_readable
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'throttle_jobs.job_archive'::regclass
  AND has_table_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE');

-- A job completed now lands in today's partition.
SELECT throttle_jobs.create_queue('m_archive', retain_completed => '1 hour');
SELECT count(throttle_jobs.enqueue('m_archive', jsonb_build_object('n', n))) FROM generate_series(1, 3) n;
BEGIN;
SELECT bool_and(throttle_jobs.complete(id, lease_token)) AS completed
FROM throttle_jobs.reserve('m_archive', 'w-a', max_jobs => 3);
SELECT a.payload->>'n' AS n,
       a.tableoid::regclass::text = 'throttle_jobs.job_archive_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD') AS in_todays_partition
FROM throttle_jobs.job_archive a JOIN throttle_jobs.queue q ON q.id = a.queue_id
WHERE q.name = 'm_archive' ORDER BY 1;
COMMIT;

-- Archive retention: with retain_completed 1 hour, a job finished 2 hours
-- ago is hidden from archived_jobs but kept a day longer; one finished 26
-- hours ago is deleted by the next pass; an old day partition past every
-- queue's retention is dropped whole.
UPDATE throttle_jobs.job_archive a SET finished_at = now() - interval '2 hours'
WHERE a.payload = '{"n": 2}' AND a.queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'm_archive');
UPDATE throttle_jobs.job_archive a SET finished_at = now() - interval '26 hours'
WHERE a.payload = '{"n": 3}' AND a.queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'm_archive');
SELECT payload->>'n' AS n FROM throttle_jobs.archived_jobs WHERE queue = 'm_archive' ORDER BY 1;
CREATE TABLE throttle_jobs.job_archive_p20000101 PARTITION OF throttle_jobs.job_archive
  FOR VALUES FROM ('2000-01-01 00:00:00+00') TO ('2000-01-02 00:00:00+00');
SELECT m->'archive'->'partitions_dropped' AS dropped, m->'archive'->'rows_deleted' AS rows_deleted
FROM throttle_jobs.maintain() m;
SELECT to_regclass('throttle_jobs.job_archive_p20000101') IS NULL AS old_partition_dropped;
SELECT a.payload->>'n' AS n
FROM throttle_jobs.job_archive a JOIN throttle_jobs.queue q ON q.id = a.queue_id
WHERE q.name = 'm_archive' ORDER BY 1;

------------------------------------------------------------------------------
-- Recount
------------------------------------------------------------------------------

-- The depth gauges are unknown after a start (here: forgotten) and the next
-- pass recounts them.  That pass's own changes are in the count: the jobs
-- whose expired leases it reaped are not counted a second time when its
-- deltas commit (after a crash: every job that the executors held).
SELECT throttle_jobs.create_queue('m_recount', backoff_base => '1 hour', backoff_jitter => 0);
SELECT count(throttle_jobs.enqueue('m_recount', jsonb_build_object('n', n))) FROM generate_series(1, 3) n;
SELECT count(*) AS reserved FROM throttle_jobs.reserve('m_recount', 'w-r', max_jobs => 2);
UPDATE throttle_jobs.job SET lease_until = now() - interval '1 minute'
 WHERE state = 'running' AND queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'm_recount');
BEGIN;
SELECT throttle_jobs._stats_forget();
SELECT (m->>'expired_leases')::int >= 2 AS reaped, m->'stats'->'recounted' AS recounted
  FROM throttle_jobs.maintain() m;
COMMIT;
-- one available, two retrying, none running: as the table says
SELECT s.available, s.retrying, s.running, s.scheduled,
       (SELECT count(*) FROM throttle_jobs.jobs j WHERE j.queue = 'm_recount') AS live
  FROM throttle_jobs.queue_stats s WHERE s.queue = 'm_recount';

-- Clean up.
SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
WHERE name IN ('m_q', 'm_keep', 'm_archive', 'm_recount') ORDER BY name;
SELECT count(*) AS queues_left FROM throttle_jobs.queues;
