\set VERBOSITY terse
SET client_min_messages = warning;

-- The columns of the views, in order.
SELECT table_name, ordinal_position AS pos, column_name, data_type
FROM information_schema.columns
WHERE table_schema = 'throttle_jobs'
  AND table_name IN ('jobs', 'running_jobs', 'dead_letters', 'archived_jobs', 'queues')
ORDER BY table_name, ordinal_position;

-- A small known scenario in queue v_q (3 attempts, retry after 1 hour, 10 min lease):
--   avail      available now
--   sched      run_at in an hour
--   retrying   failed once, waiting for its retry
--   running    reserved by worker w-run
--   done       completed with a result
--   cancelled  cancelled
--   dead       failed without retry
-- and v_empty, an empty paused queue.
SELECT throttle_jobs.create_queue('v_q', max_attempts => 3, backoff_base => '1 hour', backoff_jitter => 0, lease => '10 minutes');
SELECT throttle_jobs.create_queue('v_empty', max_size => 5, on_full => 'drop');
CREATE TEMP TABLE v_ids (label text PRIMARY KEY, id bigint);
BEGIN;
INSERT INTO v_ids
SELECT label, throttle_jobs.enqueue('v_q', jsonb_build_object('label', label), priority => prio,
                                    run_at => now() + run_in, concurrency_key => ck,
                                    rate_limit_key => rk, unique_key => uk, cost => cost)
FROM (VALUES ('done',      9, interval '0', NULL, NULL, 'u-done', 1),
             ('running',   8, interval '0', 'ck-run', 'rk-run', NULL, 2),
             ('retrying',  7, interval '0', NULL, NULL, NULL, 1),
             ('dead',      6, interval '0', NULL, NULL, 'u-dead', 1),
             ('avail',     0, interval '0', 'ck', NULL, NULL, 3),
             ('cancelled', 0, interval '0', NULL, NULL, NULL, 1),
             ('sched',     0, interval '1 hour', NULL, 'rk', NULL, 1))
     AS j(label, prio, run_in, ck, rk, uk, cost)
ORDER BY prio DESC, label;
COMMIT;
SELECT throttle_jobs.complete(id, lease_token, '{"ok": true}') FROM throttle_jobs.reserve('v_q', 'w-done');
SELECT throttle_jobs.reserve('v_q', 'w-run') IS NOT NULL AS reserved;
SELECT throttle_jobs.fail(id, lease_token, 'temporary') FROM throttle_jobs.reserve('v_q', 'w-retry');
SELECT throttle_jobs.fail(id, lease_token, 'permanent', retryable => false) FROM throttle_jobs.reserve('v_q', 'w-dead');
SELECT throttle_jobs.cancel(id) FROM v_ids WHERE label = 'cancelled';
SELECT throttle_jobs.pause_queue('v_empty');

-- queues: both queues with their settings.
SELECT name, paused, max_size, on_full, max_attempts, backoff_base, backoff_factor, backoff_max,
       backoff_jitter, lease, retain_completed, retain_dead, handler, fairness,
       owner = current_user::regrole AS owned_by_me, created_at <= now() AS created_before
FROM throttle_jobs.queues WHERE name IN ('v_q', 'v_empty') ORDER BY name;

-- jobs: the live jobs (available, scheduled, running), none of the finished.
SELECT i.label, j.queue, j.state, j.priority, j.run_at > now() AS in_future, j.attempt,
       j.max_attempts, j.worker, j.lease_until IS NOT NULL AS leased,
       j.reserved_at IS NOT NULL AS reserved, j.enqueued_at <= now() AS enqueued_before,
       j.concurrency_key, j.rate_limit_key, j.unique_key, j.cost, j.payload,
       jsonb_array_length(j.errors) AS errors, j.last_error
FROM throttle_jobs.jobs j JOIN v_ids i USING (id)
ORDER BY i.label;

-- running_jobs: only the running one, its lease not expired.
BEGIN;
SELECT i.label, r.queue, r.worker, r.attempt, r.max_attempts, r.reserved_at <= now() AS reserved_before,
       r.lease_until - r.reserved_at AS lease, r.lease_expired, r.priority, r.concurrency_key,
       r.rate_limit_key, r.payload
FROM throttle_jobs.running_jobs r JOIN v_ids i USING (id)
ORDER BY i.label;
COMMIT;
-- lease_expired turns true once lease_until has passed.
UPDATE throttle_jobs.job SET lease_until = now() - interval '1 second'
WHERE id = (SELECT id FROM v_ids WHERE label = 'running');
SELECT i.label, r.lease_expired FROM throttle_jobs.running_jobs r JOIN v_ids i USING (id);

-- dead_letters: the dead one, with its reason and errors.
SELECT i.label, d.queue, d.reason, d.died_at <= now() AS died_before, d.attempt, d.max_attempts,
       d.priority, d.enqueued_at <= d.died_at AS enqueued_before, d.worker, d.concurrency_key,
       d.rate_limit_key, d.unique_key, d.payload, jsonb_array_length(d.errors) AS errors,
       d.last_error
FROM throttle_jobs.dead_letters d JOIN v_ids i USING (id)
ORDER BY i.label;

-- archived_jobs: the completed and the cancelled ones.
SELECT i.label, a.queue, a.state, a.finished_at <= now() AS finished_before, a.attempt,
       a.max_attempts, a.priority, a.enqueued_at <= a.finished_at AS enqueued_before,
       a.reserved_at IS NOT NULL AS reserved, a.worker, a.concurrency_key, a.rate_limit_key,
       a.unique_key, a.payload, a.result, jsonb_array_length(a.errors) AS errors
FROM throttle_jobs.archived_jobs a JOIN v_ids i USING (id)
ORDER BY i.label;

-- Every job of the scenario is in exactly one view of jobs, dead_letters
-- and archived_jobs.
SELECT i.label,
       (SELECT count(*) FROM throttle_jobs.jobs j WHERE j.id = i.id) AS in_jobs,
       (SELECT count(*) FROM throttle_jobs.dead_letters d WHERE d.id = i.id) AS in_dead,
       (SELECT count(*) FROM throttle_jobs.archived_jobs a WHERE a.id = i.id) AS in_archive
FROM v_ids i ORDER BY i.label;

-- archived_jobs hides jobs past their queue's retain_completed.
SELECT throttle_jobs.alter_queue('v_q', retain_completed => '1 hour');
UPDATE throttle_jobs.job_archive SET finished_at = now() - interval '2 hours'
WHERE id = (SELECT id FROM v_ids WHERE label = 'done');
SELECT i.label FROM throttle_jobs.archived_jobs a JOIN v_ids i USING (id) ORDER BY i.label;
SELECT count(*) AS still_in_table FROM throttle_jobs.job_archive WHERE id = (SELECT id FROM v_ids WHERE label = 'done');

-- The views show nothing of a dropped queue.
SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
WHERE name IN ('v_q', 'v_empty') ORDER BY name;
SELECT (SELECT count(*) FROM throttle_jobs.jobs j JOIN v_ids USING (id)) AS jobs,
       (SELECT count(*) FROM throttle_jobs.running_jobs j JOIN v_ids USING (id)) AS running,
       (SELECT count(*) FROM throttle_jobs.dead_letters j JOIN v_ids USING (id)) AS dead,
       (SELECT count(*) FROM throttle_jobs.archived_jobs j JOIN v_ids USING (id)) AS archived,
       (SELECT count(*) FROM throttle_jobs.queues) AS queues;
