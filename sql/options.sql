\set VERBOSITY terse
SET client_min_messages = warning;

-- Queue and limit options (issue 12): costs a rate limit never admits, the
-- exact adaptive factor, meaningless options refused, clearing max_size and
-- handler, and the backoff formula's bounds as the README states them.

SELECT throttle_jobs.create_queue('op_q');

------------------------------------------------------------------------------
-- A cost above what the rate key's limit ever admits
------------------------------------------------------------------------------

-- The README's Throttling example: 100 a minute, bursts of at most 10.
SELECT throttle_jobs.set_rate_limit('op:acme', 100, '1 minute', 'token_bucket', burst => 10);
-- A cost of 20 is refused at enqueue (22023), naming the cost, the burst
-- and the limit; a cost of 10 (the whole burst) is accepted.
SELECT throttle_jobs.enqueue('op_q', '{"bulk": true}', rate_limit_key => 'op:acme', cost => 20);
SELECT throttle_jobs.enqueue('op_q', '{"bulk": true}', rate_limit_key => 'op:acme', cost => 10) IS NOT NULL AS enqueued;
-- A token bucket without a burst holds max_per_period tokens.
SELECT throttle_jobs.set_rate_limit('op:nb', 5, '1 minute');
SELECT throttle_jobs.enqueue('op_q', '{}', rate_limit_key => 'op:nb', cost => 6);
-- A window admits at most max_per_period at once.
SELECT throttle_jobs.set_rate_limit('op:sw', 3, '1 minute', 'sliding_window');
SELECT throttle_jobs.enqueue('op_q', '{}', rate_limit_key => 'op:sw', cost => 4);
SELECT throttle_jobs.set_rate_limit('op:fw', 3, '1 minute', 'fixed_window');
SELECT throttle_jobs.enqueue('op_q', '{}', rate_limit_key => 'op:fw', cost => 4);
-- The most specific limit governs: the template's burst (4) for a concrete
-- key of it, the key's own limit (50) where it has one; the error names the
-- governing limit's key.
SELECT throttle_jobs.set_rate_limit('op:t:*', 100, '1 minute', burst => 4);
SELECT throttle_jobs.set_rate_limit('op:t:big', 50, '1 minute');
SELECT throttle_jobs.enqueue('op_q', '{}', rate_limit_key => 'op:t:small', cost => 5);
SELECT throttle_jobs.enqueue('op_q', '{}', rate_limit_key => 'op:t:big', cost => 5) IS NOT NULL AS enqueued;
-- A key without a rate limit admits any cost; a concurrency limit is no rate.
SELECT throttle_jobs.set_concurrency_limit('op:cap', 1);
SELECT throttle_jobs.enqueue('op_q', '{}', rate_limit_key => 'op:free', cost => 1000) IS NOT NULL AS enqueued;
SELECT throttle_jobs.enqueue('op_q', '{}', rate_limit_key => 'op:cap', cost => 1000) IS NOT NULL AS enqueued;
-- enqueue_batch refuses the same job, names its place, and adds nothing.
SELECT count(*) AS live_before FROM throttle_jobs.jobs WHERE queue = 'op_q' \gset
SELECT throttle_jobs.enqueue_batch('op_q',
	'[{"rate_limit_key": "op:acme", "cost": 10}, {"rate_limit_key": "op:acme", "cost": 11}]');
SELECT count(*) = :live_before AS nothing_added FROM throttle_jobs.jobs WHERE queue = 'op_q';
-- A batch whose costs fit is added.
SELECT count(*) AS added FROM throttle_jobs.enqueue_batch('op_q',
	'[{"rate_limit_key": "op:acme", "cost": 10}, {"rate_limit_key": "op:acme", "cost": 1}]');

------------------------------------------------------------------------------
-- A lowered burst dead-letters the waiting jobs it can never admit
------------------------------------------------------------------------------

SELECT throttle_jobs.create_queue('op_dl');
SELECT throttle_jobs.set_rate_limit('op:low', 100, '1 minute', burst => 30);
-- Jobs costing 5, 15 and 20, and one costing 20 that is running.
SELECT throttle_jobs.enqueue('op_dl', '{"c": 20}', rate_limit_key => 'op:low', cost => 20) AS running_id \gset
SELECT id = :running_id AS reserved_the_first FROM throttle_jobs.reserve('op_dl', 'w');
SELECT throttle_jobs.enqueue('op_dl', jsonb_build_object('c', c), rate_limit_key => 'op:low', cost => c) IS NOT NULL AS enqueued
FROM unnest(ARRAY[5, 15, 20]) c;
-- (maintain() counts the depth gauges if no earlier test has.)
SELECT throttle_jobs.maintain() IS NOT NULL AS maintained;
SELECT dead_lettered AS dead_lettered_before, dead AS dead_before, available + scheduled AS waiting_before
FROM throttle_jobs.queue_stats WHERE queue = 'op_dl' \gset
-- The burst goes down to 10: the waiting jobs costing 15 and 20 are dead,
-- with the reason in their last error; the one costing 5 waits on; the
-- running one is left alone; no attempt is counted.
SELECT throttle_jobs.set_rate_limit('op:low', 100, '1 minute', burst => 10);
SELECT payload, state FROM throttle_jobs.jobs WHERE queue = 'op_dl' ORDER BY id;
SELECT payload, reason, attempt, last_error, jsonb_array_length(errors) AS errors
FROM throttle_jobs.dead_letters WHERE queue = 'op_dl' ORDER BY id;
-- Counted as dead letters, not as failures; the waiting depth drops by two.
SELECT dead_lettered - :dead_lettered_before AS dead_lettered, dead - :dead_before AS dead,
       :waiting_before - (available + scheduled) AS left_waiting, failed
FROM throttle_jobs.queue_stats WHERE queue = 'op_dl';
-- A template that now governs with a smaller burst (its specific limit
-- dropped) dead-letters too; keys with a limit of their own are untouched.
SELECT throttle_jobs.set_rate_limit('op:d:*', 100, '1 minute', burst => 2);
SELECT throttle_jobs.set_rate_limit('op:d:own', 100, '1 minute', burst => 8);
SELECT throttle_jobs.set_rate_limit('op:d:other', 100, '1 minute', burst => 8);
SELECT throttle_jobs.enqueue('op_dl', jsonb_build_object('k', k), rate_limit_key => k, cost => 6) IS NOT NULL AS enqueued
FROM unnest(ARRAY['op:d:own', 'op:d:other']) k;
SELECT throttle_jobs.drop_limit('op:d:other');
SELECT payload, last_error FROM throttle_jobs.dead_letters
WHERE queue = 'op_dl' AND payload ? 'k' ORDER BY id;
SELECT payload, state FROM throttle_jobs.jobs WHERE queue = 'op_dl' AND payload ? 'k';
-- A rolled-back change dead-letters nothing.
BEGIN;
SELECT throttle_jobs.set_rate_limit('op:d:own', 100, '1 minute', burst => 1);
SELECT count(*) AS dead_in_transaction FROM throttle_jobs.dead_letters WHERE payload->>'k' = 'op:d:own';
ROLLBACK;
SELECT payload, state FROM throttle_jobs.jobs WHERE queue = 'op_dl' AND payload ? 'k';
-- Committed, the same change dead-letters it.
SELECT throttle_jobs.set_rate_limit('op:d:own', 100, '1 minute', burst => 1);
SELECT count(*) AS dead_own FROM throttle_jobs.dead_letters WHERE payload->>'k' = 'op:d:own';

------------------------------------------------------------------------------
-- The adaptive factor is exact
------------------------------------------------------------------------------

-- Halving from 1 (with more than half of 10 outcomes failed): 0.5, 0.25,
-- 0.125, then min_factor 0.1; recovering by 0.1 from there: 0.2 ... 1,
-- each equal to its decimal (no 0.7999999999999999).
WITH RECURSIVE s(step, f) AS (
	SELECT 0, 1::float8
	UNION ALL
	SELECT step + 1,
		   throttle_jobs._adaptive_factor(f, CASE WHEN step < 4 THEN 0 ELSE 10 END,
										  CASE WHEN step < 4 THEN 10 ELSE 0 END, 0.5, 0.1)
	FROM s WHERE step < 13)
SELECT step, f, f = round(f::numeric, 4)::float8 AS exact FROM s ORDER BY step;
-- A factor that drifted (as 0.1.0 stored it) recovers to exact values.
SELECT throttle_jobs._adaptive_factor(0.7999999999999999, 1, 0, 0.5, 0.1) AS from_drifted,
       throttle_jobs._adaptive_factor(0.30000000000000004, 0, 0, 0.5, 0.1) AS unchanged_rounded;

-- Admissions: 60 a minute at factor 0.8 admit 48 in the window (the
-- README: max_per_period * factor), also from a stored 0.7999999999999999.
SELECT throttle_jobs.set_rate_limit('op:ad', 60, '1 minute', 'sliding_window', adaptive => true);
INSERT INTO throttle_jobs.key_rate_state (key, tokens, stamp, log_at, log_cost, factor, evaluated_at)
VALUES ('op:ad', 0, now(), '{}', '{}', 0.8, now());
SELECT count(*) FILTER (WHERE throttle_jobs.try_acquire('op:ad')) AS admitted_at_0_8
FROM generate_series(1, 60);
SELECT throttle_jobs.set_rate_limit('op:ad2', 60, '1 minute', 'sliding_window', adaptive => true);
INSERT INTO throttle_jobs.key_rate_state (key, tokens, stamp, log_at, log_cost, factor, evaluated_at)
VALUES ('op:ad2', 0, now(), '{}', '{}', 0.7999999999999999, now());
SELECT count(*) FILTER (WHERE throttle_jobs.try_acquire('op:ad2')) AS admitted_at_drifted
FROM generate_series(1, 60);

------------------------------------------------------------------------------
-- Meaningless options are refused (22023)
------------------------------------------------------------------------------

-- error_threshold or min_factor without adaptive.
SELECT throttle_jobs.set_rate_limit('op:m', 10, '1 minute', error_threshold => 0.3);
SELECT throttle_jobs.set_rate_limit('op:m', 10, '1 minute', min_factor => 0.2);
SELECT throttle_jobs.set_rate_limit('op:m', 10, '1 minute', adaptive => false, min_factor => 0.2);
SELECT count(*) AS no_limit_made FROM throttle_jobs.limits WHERE key = 'op:m';
-- With adaptive they apply; left out they take their defaults (0.5, 0.1).
SELECT throttle_jobs.set_rate_limit('op:m', 10, '1 minute', adaptive => true, error_threshold => 0.3, min_factor => 0.2);
SELECT throttle_jobs.set_rate_limit('op:m2', 10, '1 minute', adaptive => true);
SELECT throttle_jobs.set_rate_limit('op:m3', 10, '1 minute');
SELECT key, adaptive, error_threshold, min_factor FROM throttle_jobs.limits
WHERE key IN ('op:m', 'op:m2', 'op:m3') ORDER BY key;
-- Bad values are still refused with adaptive; adaptive itself is required.
SELECT throttle_jobs.set_rate_limit('op:m', 10, '1 minute', adaptive => true, error_threshold => 1);
SELECT throttle_jobs.set_rate_limit('op:m', 10, '1 minute', adaptive => true, min_factor => 0);
SELECT throttle_jobs.set_rate_limit('op:m', 10, '1 minute', adaptive => NULL);

-- backoff_base above backoff_max: create_queue (against the given or
-- default cap of 1 hour).
SELECT throttle_jobs.create_queue('op_b', backoff_base => '2 hours');
SELECT throttle_jobs.create_queue('op_b', backoff_base => '10 minutes', backoff_max => '5 minutes');
SELECT count(*) AS no_queue_made FROM throttle_jobs.queues WHERE name = 'op_b';
-- Equal is fine.
SELECT throttle_jobs.create_queue('op_b', backoff_base => '10 minutes', backoff_max => '10 minutes');
-- alter_queue checks the queue's resulting values: either side alone
-- against the queue's other one, or both given.
SELECT throttle_jobs.alter_queue('op_b', backoff_base => '11 minutes');
SELECT throttle_jobs.alter_queue('op_b', backoff_max => '9 minutes');
SELECT throttle_jobs.alter_queue('op_b', backoff_base => '2 hours', backoff_max => '1 hour');
SELECT backoff_base, backoff_max FROM throttle_jobs.queues WHERE name = 'op_b';
SELECT throttle_jobs.alter_queue('op_b', backoff_base => '2 hours', backoff_max => '3 hours');
SELECT throttle_jobs.alter_queue('op_b', backoff_max => '2 hours');
SELECT throttle_jobs.alter_queue('op_b', max_attempts => 3);
SELECT backoff_base, backoff_max, max_attempts FROM throttle_jobs.queues WHERE name = 'op_b';

------------------------------------------------------------------------------
-- reset_queue_options: clearing max_size and handler
------------------------------------------------------------------------------

-- A full queue (max_size 1) becomes unbounded again.
SELECT throttle_jobs.create_queue('op_r', max_size => 1);
SELECT throttle_jobs.enqueue('op_r', '{"n": 1}') IS NOT NULL AS enqueued;
SELECT throttle_jobs.enqueue('op_r', '{"n": 2}');
SELECT throttle_jobs.reset_queue_options('op_r', 'max_size');
SELECT max_size FROM throttle_jobs.queues WHERE name = 'op_r';
SELECT throttle_jobs.enqueue('op_r', '{"n": 2}') IS NOT NULL AS enqueued;
-- Clearing what is already clear is no change; no options at all neither.
SELECT throttle_jobs.reset_queue_options('op_r', 'max_size', 'handler');
SELECT throttle_jobs.reset_queue_options('op_r', VARIADIC '{}'::text[]);
-- Bad input changes nothing: an unknown option (22023), an option that
-- alter_queue sets, a NULL name or array (22004), an unknown queue (42704).
SELECT throttle_jobs.alter_queue('op_r', max_size => 5);
SELECT throttle_jobs.reset_queue_options('op_r', 'max_size', 'colour');
SELECT throttle_jobs.reset_queue_options('op_r', 'lease');
SELECT throttle_jobs.reset_queue_options('op_r', NULL::text);
SELECT throttle_jobs.reset_queue_options('op_r', VARIADIC NULL::text[]);
SELECT throttle_jobs.reset_queue_options(NULL, 'max_size');
SELECT throttle_jobs.reset_queue_options('op_nosuch', 'max_size');
SELECT max_size FROM throttle_jobs.queues WHERE name = 'op_r';

-- A handler queue whose handler is cleared: run_jobs runs nothing more,
-- and the job waits for an external worker, who can take it.
CREATE ROLE op_owner NOLOGIN;
CREATE ROLE op_stranger NOLOGIN;
CREATE ROLE op_manager NOLOGIN;
GRANT throttle_jobs_admin TO op_owner;
GRANT throttle_jobs_user TO op_stranger, op_manager;
CREATE TABLE op_seen (payload jsonb);
GRANT INSERT ON op_seen TO op_owner;
CREATE FUNCTION op_handler(payload jsonb) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.op_seen VALUES (payload) $$;
REVOKE ALL ON FUNCTION op_handler(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION op_handler(jsonb) TO op_owner;
SET ROLE op_owner;
SELECT throttle_jobs.create_queue('op_h', handler => 'op_handler(jsonb)');
SELECT throttle_jobs.grant_queue('op_h', 'op_manager', 'manage');
RESET ROLE;
SELECT throttle_jobs.enqueue('op_h', '{"n": 1}') IS NOT NULL AS enqueued;
SELECT throttle_jobs.run_jobs('op_h') AS ran_with_handler;
SELECT payload FROM op_seen;
-- A role without a privilege on the queue is refused (42501), as is one
-- that may only produce; nothing changes.
SELECT throttle_jobs.grant_queue('op_h', 'op_stranger', 'produce');
SET ROLE op_stranger;
SELECT throttle_jobs.reset_queue_options('op_h', 'handler');
RESET ROLE;
SELECT handler FROM throttle_jobs.queues WHERE name = 'op_h';
-- Whoever manages the queue may clear the handler.
SET ROLE op_manager;
SELECT throttle_jobs.reset_queue_options('op_h', 'handler');
RESET ROLE;
SELECT handler FROM throttle_jobs.queues WHERE name = 'op_h';
SELECT throttle_jobs.enqueue('op_h', '{"n": 2}') IS NOT NULL AS enqueued;
-- (run_jobs refuses a queue without a handler)
SELECT throttle_jobs.run_jobs('op_h') AS ran_without_handler;
SELECT count(*) AS handled FROM op_seen;
SELECT payload FROM throttle_jobs.reserve('op_h', 'external');
-- Only the owner may set a handler again (alter_queue's rule).
SET ROLE op_manager;
SELECT throttle_jobs.alter_queue('op_h', handler => 'op_handler(jsonb)');
RESET ROLE;
-- The function is for admins and for per-queue grantees (through
-- throttle_jobs_user), not for PUBLIC.
SELECT has_function_privilege('throttle_jobs_admin', 'throttle_jobs.reset_queue_options(text, text[])', 'EXECUTE') AS admin,
       has_function_privilege('throttle_jobs_user', 'throttle_jobs.reset_queue_options(text, text[])', 'EXECUTE') AS "user",
       EXISTS (SELECT FROM pg_proc p, aclexplode(p.proacl) a
               WHERE p.oid = 'throttle_jobs.reset_queue_options(text, text[])'::regprocedure
                 AND a.grantee = 0) AS public;

------------------------------------------------------------------------------
-- The backoff formula, as the README states it, with the defaults
------------------------------------------------------------------------------

-- delay = min(max, min(max, base * factor^(n-1)) * (1 + jitter * (2r - 1))):
-- backoff_delay agrees with it for every attempt 1..8 and draw r in
-- 0, 0.05, ..., 1 (30 s, x4, 1 h, jitter 0.1).
SELECT bool_and(abs(extract(epoch FROM throttle_jobs.backoff_delay(n, draw => r)) -
					least(3600, least(3600, 30 * 4 ^ (n - 1)) * (1 + 0.1 * (2 * r - 1)))) < 0.000001)
	   AS formula_holds,
	   -- (with one cap only, the longest delays would exceed 1 hour)
	   bool_or(least(3600, 30 * 4 ^ (n - 1)) * (1 + 0.1 * (2 * r - 1)) > 3600) AS second_cap_matters
FROM generate_series(1, 8) n, (SELECT g / 20.0 AS r FROM generate_series(0, 20) g) d;
-- Its bounds per attempt: 27-33 s, 108-132 s, 7.2-8.8 min, 28.8-35.2 min,
-- then 54-60 min for every later attempt (the jitter lowers the cap).
SELECT n, throttle_jobs.backoff_delay(n, draw => 0) AS shortest,
       throttle_jobs.backoff_delay(n, draw => 1) AS longest
FROM generate_series(1, 7) n;

-- Clean up.
SELECT throttle_jobs.drop_queue(q, force => true)
FROM unnest(ARRAY['op_q', 'op_dl', 'op_b', 'op_r', 'op_h']) q;
SELECT count(throttle_jobs.drop_limit(l.key)) AS limits_dropped FROM throttle_jobs.limits l WHERE l.key LIKE 'op:%';
DROP FUNCTION op_handler(jsonb);
DROP TABLE op_seen;
DROP ROLE op_owner, op_stranger, op_manager;
