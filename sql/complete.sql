\set VERBOSITY terse
SET client_min_messages = warning;

-- A queue whose retry delays are exact (no jitter): 30 s after attempt 1.
SELECT throttle_jobs.create_queue('c_q', backoff_jitter => 0, max_attempts => 3, lease => '10 minutes');
CREATE TEMP TABLE lease (id bigint, token uuid);

------------------------------------------------------------------------------
-- complete
------------------------------------------------------------------------------

-- complete returns true; the job leaves the live jobs and is archived as
-- 'completed' with its result.
SELECT throttle_jobs.enqueue('c_q', '{"job": "complete"}', priority => 2, unique_key => 'c1') AS c_id \gset
INSERT INTO lease SELECT id, lease_token FROM throttle_jobs.reserve('c_q', 'w-c');
BEGIN;
SELECT throttle_jobs.complete(id, token, '{"sent": 1}') AS completed FROM lease;
SELECT count(*) AS live FROM throttle_jobs.jobs WHERE id = :c_id;
SELECT queue, state, finished_at = now() AS finished_now, attempt, max_attempts, priority,
       reserved_at < now() AS reserved_before, worker, unique_key, payload, result, errors
FROM throttle_jobs.archived_jobs WHERE id = :c_id;
COMMIT;

-- A second complete with the same token returns false and changes nothing.
SELECT throttle_jobs.complete(id, token, '{"sent": 2}') AS completed_again FROM lease;
SELECT count(*) AS archived, max(result::text) AS result FROM throttle_jobs.archived_jobs WHERE id = :c_id;

-- complete without a result archives a NULL result.
TRUNCATE lease;
SELECT throttle_jobs.enqueue('c_q', '{"job": "no result"}') AS nr_id \gset
INSERT INTO lease SELECT id, lease_token FROM throttle_jobs.reserve('c_q', 'w-c');
SELECT throttle_jobs.complete(id, token) AS completed FROM lease;
SELECT state, result IS NULL AS result_is_null FROM throttle_jobs.archived_jobs WHERE id = :nr_id;

-- A random token returns false and changes nothing.
TRUNCATE lease;
SELECT throttle_jobs.enqueue('c_q', '{"job": "random token"}') AS rt_id \gset
INSERT INTO lease SELECT id, lease_token FROM throttle_jobs.reserve('c_q', 'w-c');
CREATE TEMP TABLE rt_before AS SELECT * FROM throttle_jobs.job WHERE id = :rt_id;
SELECT throttle_jobs.complete(:rt_id, gen_random_uuid(), '{}') AS completed;
SELECT (SELECT count(*) FROM throttle_jobs.job j, rt_before b
        WHERE j.id = b.id AND row(j.*)::text = row(b.*)::text) AS unchanged_rows,
       (SELECT count(*) FROM throttle_jobs.job_archive WHERE id = :rt_id) AS archived;
-- complete of an unknown job id returns false.
SELECT throttle_jobs.complete(-1, gen_random_uuid()) AS completed;
-- complete of a job that was never reserved, with another job's token,
-- returns false.
SELECT throttle_jobs.enqueue('c_q', '{"job": "never reserved"}') AS avail_id \gset
SELECT throttle_jobs.complete(:avail_id, token) AS completed FROM lease;
SELECT state FROM throttle_jobs.jobs WHERE id = :avail_id;
SELECT throttle_jobs.cancel(:avail_id);
-- The right token still completes it.
SELECT throttle_jobs.complete(id, token) AS completed FROM lease;

-- With retain_completed => '0' a completed job is deleted, not archived.
SELECT throttle_jobs.create_queue('c_noarchive', retain_completed => '0');
SELECT throttle_jobs.enqueue('c_noarchive', '{"job": "forget"}') AS na_id \gset
SELECT throttle_jobs.complete(id, lease_token, '{"r": 1}') AS completed
FROM throttle_jobs.reserve('c_noarchive', 'w-c');
SELECT (SELECT count(*) FROM throttle_jobs.job WHERE id = :na_id) AS live,
       (SELECT count(*) FROM throttle_jobs.job_archive WHERE id = :na_id) AS archived,
       (SELECT count(*) FROM throttle_jobs.job_dead WHERE id = :na_id) AS dead;

------------------------------------------------------------------------------
-- heartbeat
------------------------------------------------------------------------------

-- heartbeat returns the new lease end, now() + extend; with extend NULL
-- (or left out), now() + the queue's lease.
TRUNCATE lease;
SELECT throttle_jobs.enqueue('c_q', '{"job": "heartbeat"}') AS hb_id \gset
INSERT INTO lease SELECT id, lease_token FROM throttle_jobs.reserve('c_q', 'w-hb', lease => '1 minute');
BEGIN;
SELECT throttle_jobs.heartbeat(id, token, '20 minutes') - now() AS extended_by FROM lease;
SELECT lease_until - now() AS lease_left FROM throttle_jobs.running_jobs WHERE id = :hb_id;
COMMIT;
BEGIN;
SELECT throttle_jobs.heartbeat(id, token, NULL) - now() AS extended_by FROM lease;
SELECT throttle_jobs.heartbeat(id, token) - now() AS extended_by FROM lease;
SELECT lease_until - now() AS lease_left FROM throttle_jobs.running_jobs WHERE id = :hb_id;
COMMIT;
-- A heartbeat may also shorten the lease.
BEGIN;
SELECT throttle_jobs.heartbeat(id, token, '5 seconds') - now() AS extended_by FROM lease;
COMMIT;
-- heartbeat changes only the lease: attempt, worker and token stay.
SELECT state, attempt, worker FROM throttle_jobs.jobs WHERE id = :hb_id;
SELECT throttle_jobs.complete(id, token) AS completed FROM lease;
-- A stale token (the job finished) gets NULL.
SELECT throttle_jobs.heartbeat(id, token, '1 minute') IS NULL AS stale FROM lease;
SELECT throttle_jobs.heartbeat(id, gen_random_uuid()) IS NULL AS stale FROM lease;

------------------------------------------------------------------------------
-- snooze
------------------------------------------------------------------------------

-- snooze puts the job back as available at now() + delay, releases the
-- lease, and does not consume the attempt.
TRUNCATE lease;
SELECT throttle_jobs.enqueue('c_q', '{"job": "snooze"}') AS sn_id \gset
BEGIN;
INSERT INTO lease SELECT id, lease_token FROM throttle_jobs.reserve('c_q', 'w-sn');
SELECT attempt AS attempt_while_running FROM throttle_jobs.jobs WHERE id = :sn_id;
SELECT throttle_jobs.snooze(id, token, '15 minutes') AS snoozed FROM lease;
SELECT state, run_at - now() AS runs_in, attempt, worker, lease_until, reserved_at
FROM throttle_jobs.jobs WHERE id = :sn_id;
SELECT lease_token IS NULL AS token_cleared FROM throttle_jobs.job WHERE id = :sn_id;
COMMIT;
-- The snoozed job waits: a reserve now does not get it.
SELECT count(*) AS reserved FROM throttle_jobs.reserve('c_q', 'w-sn');
-- A stale token: snooze returns false and changes nothing.
SELECT throttle_jobs.snooze(id, token, '1 second') AS snoozed FROM lease;
SELECT run_at > now() + interval '14 minutes' AS still_snoozed FROM throttle_jobs.jobs WHERE id = :sn_id;
-- After a failure, a snooze brings attempt back to its previous value (1).
SELECT throttle_jobs.create_queue('c_snooze2', backoff_jitter => 0);
SELECT throttle_jobs.enqueue('c_snooze2') AS sn2_id \gset
SELECT throttle_jobs.fail(id, lease_token, 'first failure', retry_in => '0') FROM throttle_jobs.reserve('c_snooze2', 'w1');
SELECT attempt AS attempt_while_running, throttle_jobs.snooze(id, lease_token, '0') AS snoozed
FROM throttle_jobs.reserve('c_snooze2', 'w1');
SELECT attempt, jsonb_array_length(errors) AS errors FROM throttle_jobs.jobs WHERE id = :sn2_id;
-- Snoozing with a zero delay makes the job ready again at once.
SELECT attempt FROM throttle_jobs.reserve('c_snooze2', 'w1');

------------------------------------------------------------------------------
-- fail
------------------------------------------------------------------------------

-- fail returns 'available' and the job runs again at now() + backoff:
-- 30 s after attempt 1 (backoff_jitter 0); the error is recorded.
TRUNCATE lease;
SELECT throttle_jobs.enqueue('c_q', '{"job": "fail"}') AS f_id \gset
BEGIN;
INSERT INTO lease SELECT id, lease_token FROM throttle_jobs.reserve('c_q', 'w-f1');
SELECT throttle_jobs.fail(id, token, 'smtp timeout') AS state FROM lease;
SELECT state, run_at - now() AS retry_in, run_at = now() + interval '30 seconds' AS exact,
       attempt, worker, lease_until, reserved_at, last_error
FROM throttle_jobs.jobs WHERE id = :f_id;
SELECT lease_token IS NULL AS token_cleared FROM throttle_jobs.job WHERE id = :f_id;
COMMIT;
-- A stale token: fail returns 'stale' and changes nothing.
SELECT throttle_jobs.fail(id, token, 'late failure') AS state FROM lease;
SELECT throttle_jobs.fail(id, gen_random_uuid(), 'random token') AS state FROM lease;
SELECT attempt, jsonb_array_length(errors) AS errors, last_error, worker FROM throttle_jobs.jobs WHERE id = :f_id;

-- The second failure waits 30 s * 4 = 2 min; retry_in overrides the delay.
SELECT throttle_jobs.create_queue('c_fail', backoff_jitter => 0, max_attempts => 4);
SELECT throttle_jobs.enqueue('c_fail', '{"job": "retry_in"}') AS ri_id \gset
SELECT throttle_jobs.fail(id, lease_token, 'e1', retry_in => '0') FROM throttle_jobs.reserve('c_fail', 'w-a');
BEGIN;
SELECT attempt, throttle_jobs.fail(id, lease_token, 'e2') FROM throttle_jobs.reserve('c_fail', 'w-b');
SELECT run_at - now() AS retry_in FROM throttle_jobs.jobs WHERE id = :ri_id;
COMMIT;
UPDATE throttle_jobs.job SET run_at = now() WHERE id = :ri_id;  -- skip the wait
BEGIN;
SELECT attempt, throttle_jobs.fail(id, lease_token, 'e3', retry_in => '3 hours') FROM throttle_jobs.reserve('c_fail', 'w-c');
SELECT run_at - now() AS retry_in FROM throttle_jobs.jobs WHERE id = :ri_id;
COMMIT;

-- The errors array keeps every failure: attempt, time, error text, worker.
SELECT e.ord, e.err->>'attempt' AS attempt, e.err->>'error' AS error, e.err->>'worker' AS worker,
       (e.err->>'at')::timestamptz <= now() AS at_is_past,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(e.err) k) AS keys
FROM throttle_jobs.jobs j, jsonb_array_elements(j.errors) WITH ORDINALITY AS e(err, ord)
WHERE j.id = :ri_id ORDER BY e.ord;
-- Failure times are in order.
SELECT bool_and((e.err->>'at')::timestamptz >= prev) AS in_order FROM (
  SELECT err, lag((err->>'at')::timestamptz) OVER (ORDER BY ord) AS prev
  FROM throttle_jobs.jobs j, jsonb_array_elements(j.errors) WITH ORDINALITY AS x(err, ord)
  WHERE j.id = :ri_id) e WHERE prev IS NOT NULL;

-- The last attempt sends the job to the dead letters ('dead'), with its
-- whole error history.
UPDATE throttle_jobs.job SET run_at = now() WHERE id = :ri_id;  -- skip the wait
BEGIN;
SELECT attempt, max_attempts, throttle_jobs.fail(id, lease_token, 'e4') FROM throttle_jobs.reserve('c_fail', 'w-d');
SELECT count(*) AS live FROM throttle_jobs.jobs WHERE id = :ri_id;
SELECT queue, reason, died_at = now() AS died_now, attempt, max_attempts, worker,
       payload, last_error, jsonb_array_length(errors) AS errors
FROM throttle_jobs.dead_letters WHERE id = :ri_id;
COMMIT;
SELECT e.ord, e.err->>'attempt' AS attempt, e.err->>'error' AS error, e.err->>'worker' AS worker
FROM throttle_jobs.dead_letters d, jsonb_array_elements(d.errors) WITH ORDINALITY AS e(err, ord)
WHERE d.id = :ri_id ORDER BY e.ord;
-- fail after the job died is stale.
SELECT throttle_jobs.fail(:ri_id, gen_random_uuid(), 'again') AS state;

-- retryable => false sends the job to the dead letters on its first attempt.
SELECT throttle_jobs.enqueue('c_fail', '{"job": "fatal"}', unique_key => 'fatal') AS nr_id \gset
SELECT attempt, throttle_jobs.fail(id, lease_token, 'bad address', retryable => false)
FROM throttle_jobs.reserve('c_fail', 'w-e');
SELECT reason, attempt, max_attempts, worker, unique_key, last_error, jsonb_array_length(errors) AS errors
FROM throttle_jobs.dead_letters WHERE id = :nr_id;
SELECT count(*) AS live FROM throttle_jobs.jobs WHERE id = :nr_id;
-- retryable => false with retry_in still dies.
SELECT throttle_jobs.enqueue('c_fail', '{"job": "fatal 2"}') AS nr2_id \gset
SELECT throttle_jobs.fail(id, lease_token, 'fatal', retry_in => '1 minute', retryable => false)
FROM throttle_jobs.reserve('c_fail', 'w-e');
SELECT reason FROM throttle_jobs.dead_letters WHERE id = :nr2_id;
-- A job with max_attempts 1 dies on its first failure.
SELECT throttle_jobs.enqueue('c_fail', '{"job": "once"}', max_attempts => 1) AS once_id \gset
SELECT throttle_jobs.fail(id, lease_token, 'once') FROM throttle_jobs.reserve('c_fail', 'w-e');
SELECT reason, attempt, max_attempts FROM throttle_jobs.dead_letters WHERE id = :once_id;

-- A long error text is kept, cut to 8192 bytes.
SELECT throttle_jobs.enqueue('c_fail', '{"job": "long error"}') AS le_id \gset
SELECT throttle_jobs.fail(id, lease_token, repeat('x', 10000)) FROM throttle_jobs.reserve('c_fail', 'w-e');
SELECT octet_length(last_error) AS error_bytes FROM throttle_jobs.jobs WHERE id = :le_id;

-- Clean up.
SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
WHERE name IN ('c_q', 'c_noarchive', 'c_snooze2', 'c_fail') ORDER BY name;
SELECT count(*) AS queues_left FROM throttle_jobs.queues;
