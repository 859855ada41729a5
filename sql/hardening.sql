\set VERBOSITY terse
SET client_min_messages = warning;

-- Hardening (issue 10, Medium and Low): results within max_payload_size,
-- bounded max_attempts, leases and delays, the statistics tables within
-- their configured size, try_acquire/acquire for throttle_jobs_limiter only
-- and holding nothing when they refuse, and maintain() forgetting idle rate
-- limiter state.

------------------------------------------------------------------------------
-- complete(result): a result is bounded like a payload
------------------------------------------------------------------------------

-- (first in the file: run_jobs may refuse a session holding temporary objects)
-- A handler's result passes through complete(): a result over
-- throttle_jobs.max_payload_size (1 MB here) fails the job; a small one is
-- archived.
CREATE ROLE hd_owner NOLOGIN;
GRANT throttle_jobs_admin TO hd_owner;
CREATE FUNCTION public.hd_sized(payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT jsonb_build_object('blob', repeat('x', (payload->>'size')::int)) $$;
REVOKE ALL ON FUNCTION public.hd_sized(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.hd_sized(jsonb) TO hd_owner;
SET ROLE hd_owner;
SELECT throttle_jobs.create_queue('hd_handler', handler => 'public.hd_sized(jsonb)', max_attempts => 1);
RESET ROLE;
SELECT throttle_jobs.enqueue('hd_handler', '{"size": 1100000}') AS big_id \gset
SELECT throttle_jobs.enqueue('hd_handler', '{"size": 10}') AS small_id \gset
SELECT throttle_jobs.run_jobs('hd_handler') AS ran;
SELECT reason, last_error FROM throttle_jobs.dead_letters WHERE id = :big_id;
SELECT state, pg_column_size(result) < 100 AS small_result FROM throttle_jobs.archived_jobs WHERE id = :small_id;

-- complete() itself: over the bound, 54000 and the job stays running under
-- its lease; within it, completed with the result.
SELECT throttle_jobs.create_queue('hd_q');
SELECT throttle_jobs.enqueue('hd_q', '{"n": 1}') IS NOT NULL AS enqueued;
SELECT id AS res_id, lease_token AS res_tok FROM throttle_jobs.reserve('hd_q', 'w') \gset
SET throttle_jobs.max_payload_size = 100;
SELECT throttle_jobs.complete(:res_id, :'res_tok', jsonb_build_object('blob', repeat('x', 200)));
\echo :LAST_ERROR_SQLSTATE
SELECT state, worker FROM throttle_jobs.jobs WHERE id = :res_id;
-- The check measures the result uncompressed: a compressed value read from
-- a table (2 kB that compress far below 100 bytes) is refused too.
CREATE TABLE hd_results (r jsonb);
ALTER TABLE hd_results ALTER COLUMN r SET STORAGE main;
INSERT INTO hd_results VALUES (jsonb_build_object('blob', repeat('y', 2000)));
SELECT pg_column_size(r) < 100 AS stored_compressed FROM hd_results;
SELECT throttle_jobs.complete(:res_id, :'res_tok', (SELECT r FROM hd_results));
\echo :LAST_ERROR_SQLSTATE
-- A result within the bound is archived with the job.
SELECT throttle_jobs.complete(:res_id, :'res_tok', '{"ok": true}') AS completed;
SELECT state, result FROM throttle_jobs.archived_jobs WHERE id = :res_id;
RESET throttle_jobs.max_payload_size;

------------------------------------------------------------------------------
-- max_attempts: 1 to 1000
------------------------------------------------------------------------------

-- create_queue over the bound: 22023 with a hint, no queue.
SELECT throttle_jobs.create_queue('hd_att', max_attempts => 1001);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS queues FROM throttle_jobs.queues WHERE name = 'hd_att';
-- The bound itself is accepted.
SELECT throttle_jobs.create_queue('hd_att', max_attempts => 1000);
-- alter_queue over it: refused, the queue keeps 1000.
SELECT throttle_jobs.alter_queue('hd_att', max_attempts => 2147483647);
\echo :LAST_ERROR_SQLSTATE
SELECT max_attempts FROM throttle_jobs.queues WHERE name = 'hd_att';
-- enqueue over it: refused; enqueue_batch with one job over it: nothing added.
SELECT throttle_jobs.enqueue('hd_att', max_attempts => 1001);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.enqueue_batch('hd_att', '[{"max_attempts": 5}, {"max_attempts": 100000}]');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS jobs FROM throttle_jobs.jobs WHERE queue = 'hd_att';
-- Within the bound both work.
SELECT throttle_jobs.enqueue('hd_att', max_attempts => 1000) IS NOT NULL AS enqueued;
SELECT count(*) AS enqueued FROM throttle_jobs.enqueue_batch('hd_att', '[{"max_attempts": 1}, {"max_attempts": 1000}]');
SELECT max_attempts, count(*) FROM throttle_jobs.jobs WHERE queue = 'hd_att' GROUP BY 1 ORDER BY 1;

------------------------------------------------------------------------------
-- Leases (1 day) and delays (365 days)
------------------------------------------------------------------------------

-- A queue's lease over a day: refused by create_queue and alter_queue.
SELECT throttle_jobs.create_queue('hd_lease', lease => '1 day 1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.create_queue('hd_lease', lease => '1 day');
SELECT throttle_jobs.alter_queue('hd_lease', lease => '2 days');
\echo :LAST_ERROR_SQLSTATE
SELECT lease FROM throttle_jobs.queues WHERE name = 'hd_lease';
-- reserve() with a lease over a day: refused, the job stays available.
SELECT throttle_jobs.enqueue('hd_lease', '{"n": 1}') AS lease_id \gset
SELECT * FROM throttle_jobs.reserve('hd_lease', 'w', lease => '25 hours');
\echo :LAST_ERROR_SQLSTATE
SELECT state FROM throttle_jobs.jobs WHERE id = :lease_id;
SELECT lease_token AS lease_tok, lease_until AS lease_until0
FROM throttle_jobs.reserve('hd_lease', 'w', lease => '1 minute') \gset
-- heartbeat: extend over a day is refused and the lease is unchanged; a
-- day is accepted.
SELECT throttle_jobs.heartbeat(:lease_id, :'lease_tok', '1 day 1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT lease_until = :'lease_until0' AS unchanged FROM throttle_jobs.jobs WHERE id = :lease_id;
SELECT throttle_jobs.heartbeat(:lease_id, :'lease_tok', '1 day') = now() + interval '1 day' AS extended;
-- snooze: a delay over 365 days is refused, the job keeps running.
SELECT throttle_jobs.snooze(:lease_id, :'lease_tok', '366 days');
\echo :LAST_ERROR_SQLSTATE
-- fail: so is a retry_in over 365 days; the attempt is not recorded.
SELECT throttle_jobs.fail(:lease_id, :'lease_tok', 'e', retry_in => '400 days');
\echo :LAST_ERROR_SQLSTATE
SELECT state, attempt, jsonb_array_length(errors) AS errors FROM throttle_jobs.jobs WHERE id = :lease_id;
-- Within the bounds: '1 year' is 360 days (12 months of 30 days).
SELECT throttle_jobs.snooze(:lease_id, :'lease_tok', '1 year') AS snoozed;
SELECT state, run_at > now() + interval '359 days' AS later FROM throttle_jobs.jobs WHERE id = :lease_id;

------------------------------------------------------------------------------
-- Statistics stay within stats_max_keys and stats_max_queues
------------------------------------------------------------------------------

-- test/throttle_jobs.conf sizes the tables for 100 keys and 200 queues.
SELECT current_setting('throttle_jobs.stats_max_keys') AS max_keys,
       current_setting('throttle_jobs.stats_max_queues') AS max_queues;
SELECT shared FROM throttle_jobs.stats_state();

-- 110 keys under a cap of 1, two jobs each: a reservation admits one job
-- of each and parks the other, which counts the key as throttled.  Only
-- as many keys as the table holds are kept, the rest are counted as
-- dropped.  (reset_stats() first forgets this database's keys.)
SELECT throttle_jobs.reset_stats();
SELECT throttle_jobs.set_concurrency_limit('hd:sk:*', 1);
SELECT throttle_jobs.create_queue('hd_sk');
SELECT count(throttle_jobs.enqueue('hd_sk', concurrency_key => 'hd:sk:' || n)) AS enqueued
FROM generate_series(1, 110) n, generate_series(1, 2) m;
SELECT count(*) AS reserved FROM throttle_jobs.reserve('hd_sk', 'w', max_jobs => 200);
SELECT count(*) AS throttled FROM throttle_jobs.jobs WHERE queue = 'hd_sk' AND state = 'throttled';
SELECT count(*) BETWEEN 1 AND current_setting('throttle_jobs.stats_max_keys')::int AS keys_within_max
FROM throttle_jobs.stats_keys();
SELECT keys_dropped >= 10 AS keys_dropped FROM throttle_jobs.stats_state();

-- 205 new queues with a job each: the queue table keeps at most 200
-- entries (with the queues of the earlier tests), the others' events are
-- counted as dropped; queues that had an entry keep counting.
SELECT count(throttle_jobs.create_queue('hd_sq_' || n)) AS created FROM generate_series(1, 205) n;
SELECT count(throttle_jobs.enqueue('hd_sq_' || n)) AS enqueued FROM generate_series(1, 205) n;
SELECT count(*) <= current_setting('throttle_jobs.stats_max_queues')::int AS queues_within_max
FROM throttle_jobs.stats_queues();
SELECT queues_dropped > 0 AS queues_dropped FROM throttle_jobs.stats_state();
SELECT throttle_jobs.enqueue('hd_q', '{"n": 2}') IS NOT NULL AS enqueued;
SELECT enqueued FROM throttle_jobs.queue_stats WHERE queue = 'hd_q';

-- Other users of shared memory still get it: 5000 session advisory locks
-- (more than the lock table preallocates; the rest comes from the free
-- shared memory that an oversized statistics table would have taken).
SELECT count(pg_advisory_lock(n)) AS locked FROM generate_series(1, 5000) n;
SELECT count(*) AS advisory_locks FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
SELECT pg_advisory_unlock_all();

-- Give the entries back for the tests that follow: dropped queues lose
-- theirs at commit, reset_stats() forgets the keys and the dropped counts.
SELECT count(throttle_jobs.drop_queue('hd_sq_' || n, force => true)) AS dropped FROM generate_series(1, 205) n;
SELECT throttle_jobs.drop_queue('hd_sk', force => true);
SELECT throttle_jobs.drop_limit('hd:sk:*');
SELECT throttle_jobs.reset_stats();
SELECT queues_dropped, keys_dropped FROM throttle_jobs.stats_state();

------------------------------------------------------------------------------
-- try_acquire / acquire: throttle_jobs_limiter, and a refusal holds nothing
------------------------------------------------------------------------------

-- The limiter role exists, cannot log in, and admins are members of it.
SELECT rolname, rolcanlogin, rolsuper FROM pg_roles WHERE rolname = 'throttle_jobs_limiter';
SELECT pg_has_role('throttle_jobs_admin', 'throttle_jobs_limiter', 'MEMBER') AS admin_is_limiter,
       pg_has_role('throttle_jobs_limiter', 'throttle_jobs_admin', 'MEMBER') AS limiter_is_admin;
-- Who may execute them: the limiter and admins; producers and workers no longer.
SELECT f, r AS role, has_function_privilege(r, f, 'EXECUTE') AS may_execute
FROM unnest(ARRAY['throttle_jobs.try_acquire(text, integer)',
                  'throttle_jobs.acquire(text, integer, interval)']) f,
     unnest(ARRAY['throttle_jobs_producer', 'throttle_jobs_worker', 'throttle_jobs_admin',
                  'throttle_jobs_limiter', 'public']) r
ORDER BY 1, 2;
-- Real calls: a producer and a worker are refused (42501), a limiter granted.
CREATE ROLE hd_producer NOLOGIN;
CREATE ROLE hd_worker NOLOGIN;
CREATE ROLE hd_limiter NOLOGIN;
GRANT throttle_jobs_producer TO hd_producer;
GRANT throttle_jobs_worker TO hd_worker;
GRANT throttle_jobs_limiter TO hd_limiter;
SET ROLE hd_producer;
SELECT throttle_jobs.try_acquire('hd:free');
\echo :LAST_ERROR_SQLSTATE
SET ROLE hd_worker;
SELECT throttle_jobs.acquire('hd:free', 1, '0 seconds');
\echo :LAST_ERROR_SQLSTATE
SET ROLE hd_limiter;
SELECT throttle_jobs.try_acquire('hd:free') AS granted, throttle_jobs.acquire('hd:free', 1, '0 seconds') AS acquired;
RESET ROLE;

-- Locks and rate state rows this session holds for key hd:r.
CREATE FUNCTION pg_temp.hd_holds(OUT key_locks bigint, OUT rate_rows bigint)
LANGUAGE sql AS $$
SELECT (SELECT count(*) FROM pg_locks l
        WHERE l.locktype = 'object' AND l.classid = 'throttle_jobs.key_limit'::regclass
          AND l.pid = pg_backend_pid()),
       (SELECT count(*) FROM throttle_jobs.key_rate_state s WHERE s.key = 'hd:r')
$$;

-- 1 per day.  A refusal (cost 2: more than the bucket ever holds) leaves
-- no key lock and no rate state written in the open transaction.
SELECT throttle_jobs.set_rate_limit('hd:r', 1, '1 day');
BEGIN;
SELECT throttle_jobs.try_acquire('hd:r', 2) AS granted;
SELECT * FROM pg_temp.hd_holds();
-- acquire() that runs out of time: the same.
SELECT throttle_jobs.acquire('hd:r', 2, '10 milliseconds') AS acquired;
SELECT * FROM pg_temp.hd_holds();
-- A grant holds the key (and its state row) until the transaction ends; a
-- refusal after it keeps the grant's hold and adds none.
SELECT throttle_jobs.try_acquire('hd:r') AS granted;
SELECT * FROM pg_temp.hd_holds();
SELECT throttle_jobs.try_acquire('hd:r') AS granted;
SELECT * FROM pg_temp.hd_holds();
SELECT tokens FROM throttle_jobs.key_rate_state WHERE key = 'hd:r';
COMMIT;
SELECT * FROM pg_temp.hd_holds();

-- An error inside the decision (here: a corrupt rate state row) leaves the
-- subtransaction it ran in, so the caller's own exception block catches it
-- and its transaction goes on, holding nothing for the key.
SELECT throttle_jobs.set_rate_limit('hd:bad', 5, '1 minute', 'sliding_window');
INSERT INTO throttle_jobs.key_rate_state (key, tokens, stamp, log_at, log_cost)
VALUES ('hd:bad', 0, now(), '{NULL}', '{1}');
CREATE FUNCTION pg_temp.hd_try(k text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	RETURN throttle_jobs.try_acquire(k)::text;
EXCEPTION WHEN OTHERS THEN
	RETURN 'caught ' || SQLSTATE;
END
$$;
BEGIN;
SELECT pg_temp.hd_try('hd:bad') AS bad, pg_temp.hd_try('hd:r') AS spent, pg_temp.hd_try('hd:free') AS free;
SELECT key_locks FROM pg_temp.hd_holds();
COMMIT;
SELECT throttle_jobs.drop_limit('hd:bad');

-- On a capped key with its slot taken by a running job: refused, nothing held.
SELECT throttle_jobs.set_concurrency_limit('hd:c', 1);
SELECT throttle_jobs.create_queue('hd_cap');
SELECT throttle_jobs.enqueue('hd_cap', '{"n": "cap"}', concurrency_key => 'hd:c') IS NOT NULL AS enqueued;
SELECT id AS cap_id, lease_token AS cap_tok FROM throttle_jobs.reserve('hd_cap', 'w') \gset
BEGIN;
SELECT throttle_jobs.try_acquire('hd:c') AS granted;
SELECT key_locks FROM pg_temp.hd_holds();
COMMIT;
SELECT throttle_jobs.complete(:cap_id, :'cap_tok') AS completed;
SELECT throttle_jobs.drop_limit('hd:c');

------------------------------------------------------------------------------
-- maintain() forgets idle rate limiter state
------------------------------------------------------------------------------

-- Limits of each algorithm (templates, so each key has its own state).
SELECT throttle_jobs.set_rate_limit('hd:gc:tb:*', 2, '1 minute');
SELECT throttle_jobs.set_rate_limit('hd:gc:fw:*', 2, '1 day', 'fixed_window');
SELECT throttle_jobs.set_rate_limit('hd:gc:sw:*', 2, '1 minute', 'sliding_window');
SELECT throttle_jobs.set_rate_limit('hd:gc:ad:*', 2, '1 minute', adaptive => true);
-- Two admissions each (the bucket is empty, the windows full).
SELECT k, ARRAY(SELECT throttle_jobs.try_acquire(k) FROM generate_series(1, 3)) AS granted
FROM unnest(ARRAY['hd:gc:tb:idle', 'hd:gc:tb:busy', 'hd:gc:fw:idle', 'hd:gc:fw:busy',
                  'hd:gc:sw:idle', 'hd:gc:sw:busy', 'hd:gc:ad:idle', 'hd:gc:ad:reduced',
                  'hd:gc:ad:outcome', 'hd:gc:ad:running']) k
ORDER BY k;
-- Simulate time: the idle keys' last admissions were two days ago; so
-- were those of the adaptive keys, but one has its rate reduced, one has an
-- outcome waiting to be tallied, one has a job running.  The busy keys
-- were used just now.  An orphan row (no limit governs it) is forgotten
-- too; a refusal still pending (next_at ahead) keeps its row.
UPDATE throttle_jobs.key_rate_state SET stamp = stamp - interval '2 days',
       log_at = ARRAY(SELECT a - interval '2 days' FROM unnest(log_at) a),
       evaluated_at = evaluated_at - interval '2 days'
WHERE key LIKE 'hd:gc:%:idle' OR key LIKE 'hd:gc:ad:%';
UPDATE throttle_jobs.key_rate_state SET factor = 0.5 WHERE key = 'hd:gc:ad:reduced';
INSERT INTO throttle_jobs.key_outcome (key, at, failed) VALUES ('hd:gc:ad:outcome', now() - interval '2 days', true);
-- (hd:gc:ad:running's job is admitted with its refilled bucket)
SELECT throttle_jobs.create_queue('hd_gc');
SELECT throttle_jobs.enqueue('hd_gc', '{"n": "ad"}', rate_limit_key => 'hd:gc:ad:running') IS NOT NULL AS enqueued;
SELECT count(*) AS reserved FROM throttle_jobs.reserve('hd_gc', 'w');
UPDATE throttle_jobs.key_rate_state SET stamp = stamp - interval '2 days',
       evaluated_at = evaluated_at - interval '2 days' WHERE key = 'hd:gc:ad:running';
INSERT INTO throttle_jobs.key_rate_state (key, tokens, stamp, log_at, log_cost)
VALUES ('hd:gc:orphan', 0, now() - interval '2 days', '{}', '{}');
INSERT INTO throttle_jobs.key_rate_state (key, tokens, stamp, log_at, log_cost, next_at)
VALUES ('hd:gc:tb:pending', 2, now() - interval '2 days', '{}', '{}', now() + interval '1 minute');

-- 150 more idle rows: a pass forgets at most 64, later passes the rest.
SELECT throttle_jobs.set_rate_limit('hd:gc:bulk:*', 1, '1 second');
INSERT INTO throttle_jobs.key_rate_state (key, tokens, stamp, log_at, log_cost)
SELECT 'hd:gc:bulk:' || n, 0, now() - interval '2 days', '{}', '{}' FROM generate_series(1, 150) n;
SELECT 'SELECT (m->>''rate_states_forgotten'')::int <= 64 AS pass FROM throttle_jobs.maintain() m'
FROM generate_series(1, 10) \gexec
SELECT count(*) AS bulk_left FROM throttle_jobs.key_rate_state WHERE key LIKE 'hd:gc:bulk:%';
-- What is left: the rows whose deletion would change a decision.
SELECT key FROM throttle_jobs.key_rate_state WHERE key LIKE 'hd:gc:%' ORDER BY key;

-- A forgotten key decides as before: hd:gc:tb:idle's bucket had refilled,
-- a fresh one is full (2); the busy one is still empty.
SELECT throttle_jobs.try_acquire('hd:gc:tb:idle') AS a, throttle_jobs.try_acquire('hd:gc:tb:idle') AS b,
       throttle_jobs.try_acquire('hd:gc:tb:idle') AS c, throttle_jobs.try_acquire('hd:gc:tb:busy') AS busy;

-- Clean up.
SELECT throttle_jobs.drop_limit(k) FROM unnest(ARRAY['hd:r', 'hd:gc:tb:*', 'hd:gc:fw:*', 'hd:gc:sw:*',
                                                     'hd:gc:ad:*', 'hd:gc:bulk:*']) k;
DELETE FROM throttle_jobs.key_rate_state WHERE key LIKE 'hd:%';
DELETE FROM throttle_jobs.key_outcome WHERE key LIKE 'hd:%';
SELECT throttle_jobs.drop_queue(q, force => true) FROM unnest(ARRAY['hd_q', 'hd_cap', 'hd_gc', 'hd_att', 'hd_lease', 'hd_handler']) q;
DROP TABLE hd_results;
DROP FUNCTION public.hd_sized(jsonb);
DROP ROLE hd_owner, hd_producer, hd_worker, hd_limiter;

-- Worker names that start with "throttle_jobs/" are the extension's own (the
-- maintenance worker fails the running jobs of such names once their process
-- is gone): reserve and complete_and_reserve refuse them (22023), and change
-- nothing.
SELECT throttle_jobs.create_queue('hard_names');
SELECT throttle_jobs.enqueue('hard_names') AS name_job \gset
SELECT count(*) FROM throttle_jobs.reserve('hard_names', 'throttle_jobs/executor/1');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM throttle_jobs.complete_and_reserve('hard_names', 'throttle_jobs/maintenance/2', '{}', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT state, worker FROM throttle_jobs.jobs WHERE id = :name_job;
-- a name that merely looks alike is fine
SELECT count(*) AS reserved FROM throttle_jobs.reserve('hard_names', 'throttle_jobs-host/1');
SELECT throttle_jobs.drop_queue('hard_names', force => true);
