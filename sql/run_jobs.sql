\set VERBOSITY terse
SET client_min_messages = warning;

-- Handlers run as the queue's owner: a role that is not a superuser.
CREATE ROLE rj_owner NOLOGIN;
GRANT throttle_jobs_admin TO rj_owner;
CREATE TABLE rj_seen (job_payload jsonb, who text, search_path text);
GRANT INSERT ON rj_seen TO rj_owner;

-- Records what it was given and as whom it ran; fails on request; sleeps on
-- request; and tries to leave a setting behind.
CREATE FUNCTION rj_handler(payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.rj_seen VALUES (payload, current_user, current_setting('search_path'));
	PERFORM set_config('search_path', 'leaked', false);
	IF payload ? 'fail' THEN
		RAISE EXCEPTION 'handler failed: %', payload->>'fail';
	END IF;
	IF payload ? 'sleep' THEN
		PERFORM pg_sleep((payload->>'sleep')::float8);
	END IF;
	IF payload ? 'catch' THEN
		BEGIN
			PERFORM pg_sleep((payload->>'catch')::float8);
		EXCEPTION WHEN query_canceled THEN
			RETURN jsonb_build_object('caught', 'the cancel');
		END;
	END IF;
	RETURN jsonb_build_object('handled', payload->'n');
END
$$;
CREATE PROCEDURE rj_proc(payload jsonb)
LANGUAGE sql AS $$ INSERT INTO public.rj_seen VALUES (payload, current_user, 'procedure') $$;
REVOKE ALL ON FUNCTION rj_handler(jsonb) FROM PUBLIC;
REVOKE ALL ON PROCEDURE rj_proc(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rj_handler(jsonb) TO rj_owner;
GRANT EXECUTE ON PROCEDURE rj_proc(jsonb) TO rj_owner;

SET ROLE rj_owner;
SELECT throttle_jobs.create_queue('rj_q', handler => 'rj_handler(jsonb)', max_attempts => 2,
                                  backoff_base => '1 hour', backoff_jitter => 0, lease => '1 s');
SELECT throttle_jobs.create_queue('rj_proc_q', handler => 'rj_proc(jsonb)');
SELECT throttle_jobs.create_queue('rj_plain');
RESET ROLE;

------------------------------------------------------------------------------
-- Running jobs
------------------------------------------------------------------------------

-- Three ready jobs and one for later: run_jobs runs the three, in order, as
-- rj_owner, archives them with the handler's jsonb result, and leaves the
-- caller's search_path alone although each handler changed its own.
SELECT count(throttle_jobs.enqueue('rj_q', jsonb_build_object('n', n))) AS enqueued FROM generate_series(1, 3) n;
SELECT throttle_jobs.enqueue('rj_q', '{"n": 4}', run_at => now() + interval '1 hour') AS later_id \gset
SHOW search_path;
SELECT throttle_jobs.run_jobs('rj_q') AS ran;
SHOW search_path;
SELECT job_payload, who, search_path FROM rj_seen ORDER BY job_payload->>'n';
SELECT payload, state, result, attempt, worker LIKE 'run_jobs/%' AS by_run_jobs
FROM throttle_jobs.archived_jobs WHERE queue = 'rj_q' ORDER BY id;
SELECT state, attempt FROM throttle_jobs.jobs WHERE id = :later_id;
TRUNCATE rj_seen;

-- With no queue named, every handler queue is served; a procedure handler
-- works too; jobs of queues without a handler are left alone.
SELECT throttle_jobs.enqueue('rj_proc_q', '{"p": 1}') IS NOT NULL AS enqueued;
SELECT throttle_jobs.enqueue('rj_plain', '{"x": 1}') AS plain_id \gset
SELECT throttle_jobs.run_jobs() AS ran;
SELECT job_payload, who, search_path FROM rj_seen;
SELECT state FROM throttle_jobs.archived_jobs WHERE queue = 'rj_proc_q';
SELECT state, attempt FROM throttle_jobs.jobs WHERE id = :plain_id;
TRUNCATE rj_seen;

-- max_jobs bounds the run.
SELECT count(throttle_jobs.enqueue('rj_q', jsonb_build_object('n', n))) AS enqueued FROM generate_series(5, 7) n;
SELECT throttle_jobs.run_jobs('rj_q', max_jobs => 2) AS ran;
SELECT throttle_jobs.run_jobs('rj_q', max_jobs => 2) AS ran_rest;
SELECT throttle_jobs.run_jobs('rj_q') AS nothing_left;
TRUNCATE rj_seen;

-- A paused queue's jobs do not run.
SELECT throttle_jobs.enqueue('rj_q', '{"n": 8}') AS paused_id \gset
SELECT throttle_jobs.pause_queue('rj_q');
SELECT throttle_jobs.run_jobs('rj_q') AS ran_paused;
SELECT throttle_jobs.resume_queue('rj_q');
SELECT throttle_jobs.run_jobs('rj_q') AS ran_resumed;
TRUNCATE rj_seen;

------------------------------------------------------------------------------
-- Failures
------------------------------------------------------------------------------

-- A handler error fails the job: its writes are rolled back, the error is
-- recorded, the retry waits for its backoff (1 hour), and other jobs in the
-- same run still run.
SELECT throttle_jobs.enqueue('rj_q', '{"fail": "first"}') AS fail_id \gset
SELECT throttle_jobs.enqueue('rj_q', '{"n": 9}') IS NOT NULL AS enqueued;
SELECT throttle_jobs.run_jobs('rj_q') AS ran;
SELECT job_payload FROM rj_seen;
SELECT state, attempt, last_error, run_at - now() BETWEEN '59 min' AND '61 min' AS retry_in_1_hour FROM throttle_jobs.jobs WHERE id = :fail_id;
TRUNCATE rj_seen;

-- On its last attempt the job goes to the dead letters.
UPDATE throttle_jobs.job SET run_at = now() WHERE id = :fail_id;
SELECT throttle_jobs.run_jobs('rj_q') AS ran;
SELECT attempt, jsonb_array_length(errors) AS errors, errors->1->>'error' AS last_error
FROM throttle_jobs.dead_letters WHERE id = :fail_id;

-- A handler that runs past the queue's lease (1 s) is cancelled and the job
-- fails with that reason.
SELECT throttle_jobs.enqueue('rj_q', '{"sleep": 3}') AS slow_id \gset
SELECT throttle_jobs.run_jobs('rj_q') AS ran;
SELECT state, attempt, last_error FROM throttle_jobs.jobs WHERE id = :slow_id;
SELECT throttle_jobs.cancel(:slow_id);
TRUNCATE rj_seen;

-- A handler that catches that cancel and returns has still run past its
-- lease: its job fails the same way (and its writes roll back).
SELECT throttle_jobs.enqueue('rj_q', '{"catch": 3}') AS catch_id \gset
SELECT throttle_jobs.run_jobs('rj_q') AS ran;
SELECT state, attempt, last_error FROM throttle_jobs.jobs WHERE id = :catch_id;
SELECT count(*) AS kept_writes FROM rj_seen;
SELECT throttle_jobs.cancel(:catch_id);

-- A cancel of the caller's own statement is not a job failure: it stops
-- run_jobs, and the whole transaction (the reservation too) rolls back.
SELECT throttle_jobs.enqueue('rj_q', '{"sleep": 3}') AS cancelled_id \gset
SET statement_timeout = '300ms';
SELECT throttle_jobs.run_jobs('rj_q');
RESET statement_timeout;
SELECT state, attempt, last_error FROM throttle_jobs.jobs WHERE id = :cancelled_id;
SELECT throttle_jobs.cancel(:cancelled_id);

-- Limits apply: with one admission per hour for the key, one of three runs.
SELECT throttle_jobs.set_rate_limit('rj_key', 1, '1 hour');
SELECT count(throttle_jobs.enqueue('rj_q', jsonb_build_object('n', n), rate_limit_key => 'rj_key')) AS enqueued
FROM generate_series(10, 12) n;
SELECT throttle_jobs.run_jobs('rj_q') AS ran_under_limit;
SELECT state, count(*) FROM throttle_jobs.jobs WHERE queue = 'rj_q' GROUP BY state ORDER BY state;
SELECT throttle_jobs.drop_limit('rj_key');
DELETE FROM throttle_jobs.job WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'rj_q');
TRUNCATE rj_seen;

------------------------------------------------------------------------------
-- Handler checks at run time
------------------------------------------------------------------------------

-- The owner lost EXECUTE on the handler: the job is not run and fails with
-- the reason (a WARNING, which names the job, says so too; hidden here).
SET client_min_messages = error;
REVOKE EXECUTE ON FUNCTION rj_handler(jsonb) FROM rj_owner;
SELECT throttle_jobs.enqueue('rj_q', '{"n": 20}') AS noexec_id \gset
SELECT throttle_jobs.run_jobs('rj_q') AS ran;
SELECT count(*) AS handler_calls FROM rj_seen;
SELECT state, attempt, last_error FROM throttle_jobs.jobs WHERE id = :noexec_id;
GRANT EXECUTE ON FUNCTION rj_handler(jsonb) TO rj_owner;
SELECT throttle_jobs.cancel(:noexec_id);

-- A queue owned by a superuser runs only with
-- throttle_jobs.allow_superuser_handlers on.
SELECT throttle_jobs.create_queue('rj_super', handler => 'rj_handler(jsonb)', backoff_base => '1 hour');
SELECT throttle_jobs.enqueue('rj_super', '{"n": 30}') AS super_id \gset
SELECT throttle_jobs.run_jobs('rj_super') AS ran;
SELECT count(*) AS handler_calls FROM rj_seen;
SELECT state, attempt, last_error LIKE '%allow_superuser_handlers is off%' AS refused_by_setting
FROM throttle_jobs.jobs WHERE id = :super_id;
UPDATE throttle_jobs.job SET run_at = now() WHERE id = :super_id;
SET throttle_jobs.allow_superuser_handlers = on;
SELECT throttle_jobs.run_jobs('rj_super') AS ran;
RESET throttle_jobs.allow_superuser_handlers;
SET client_min_messages = warning;
SELECT who FROM rj_seen;
SELECT state FROM throttle_jobs.archived_jobs WHERE id = :super_id;
TRUNCATE rj_seen;

-- Only a superuser may turn the setting on.
SET ROLE rj_owner;
SET throttle_jobs.allow_superuser_handlers = on;
RESET ROLE;

------------------------------------------------------------------------------
-- Handlers that would stop run_jobs() for everyone
------------------------------------------------------------------------------

-- A handler that raises query_canceled (57014) itself only fails its own job:
-- the call goes on, the other queue's job completes, and the attempt counts
-- (re-thrown as if the caller had been cancelled, it rolled back every job of
-- the call and, never counted, stopped every later call at the same job).
CREATE FUNCTION rj_fake_cancel(payload jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RAISE EXCEPTION 'pretending to be cancelled' USING ERRCODE = 'query_canceled';
END $$;
-- A handler that calls run_jobs() itself: refused (the nested call would take
-- over the outer job's clock and its deadline).
CREATE FUNCTION rj_nested(payload jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM throttle_jobs.run_jobs('rj_q', 1);
	RETURN '{}';
END $$;
GRANT EXECUTE ON FUNCTION rj_fake_cancel(jsonb), rj_nested(jsonb) TO rj_owner;
SET ROLE rj_owner;
SELECT throttle_jobs.create_queue('rj_cancel_q', handler => 'rj_fake_cancel(jsonb)', max_attempts => 1);
SELECT throttle_jobs.create_queue('rj_nested_q', handler => 'rj_nested(jsonb)', max_attempts => 1);
RESET ROLE;
SELECT throttle_jobs.enqueue('rj_cancel_q') AS fake_id \gset
SELECT throttle_jobs.enqueue('rj_nested_q') AS nested_id \gset
SELECT throttle_jobs.enqueue('rj_q', '{"n": 40}') AS ok_id \gset
SELECT throttle_jobs.run_jobs() AS ran;
SELECT id = :fake_id AS fake_cancel, reason, last_error FROM throttle_jobs.dead_letters
WHERE id IN (:fake_id, :nested_id) ORDER BY id;
SELECT state FROM throttle_jobs.archived_jobs WHERE id = :ok_id;
TRUNCATE rj_seen;

------------------------------------------------------------------------------
-- Handlers stored by signature; the search_path rule
------------------------------------------------------------------------------

-- queue.handler holds the function's qualified signature (text: pg_upgrade
-- refuses regprocedure columns), and handler_owner the role that owned it.
SELECT name, handler FROM throttle_jobs.queues WHERE name IN ('rj_q', 'rj_proc_q') ORDER BY name;
SELECT name, handler_owner = 'rj_owner'::regrole AS by_rj_owner, handler_owner IS NOT NULL AS has_owner
FROM throttle_jobs.queue WHERE name IN ('rj_q', 'rj_proc_q', 'rj_plain') ORDER BY name;

-- A handler that names a table without its schema and has no search_path
-- of its own (the most ordinary function) ...
CREATE TABLE rj_hlog (n int);
GRANT INSERT ON rj_hlog TO rj_owner;
CREATE FUNCTION rj_hlog_bare(payload jsonb) RETURNS void
LANGUAGE plpgsql AS $$ BEGIN INSERT INTO rj_hlog VALUES ((payload->>'n')::int); END $$;
-- ... and the same function with its own search_path (the fix)
CREATE FUNCTION rj_hlog_pinned(payload jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$ BEGIN INSERT INTO rj_hlog VALUES ((payload->>'n')::int); END $$;
-- ... or with a SQL-standard body, whose names are bound when it is created
CREATE FUNCTION rj_hlog_atomic(payload jsonb) RETURNS void
LANGUAGE sql BEGIN ATOMIC INSERT INTO rj_hlog VALUES ((payload->>'n')::int); END;
GRANT EXECUTE ON FUNCTION rj_hlog_bare(jsonb), rj_hlog_pinned(jsonb), rj_hlog_atomic(jsonb) TO rj_owner;

-- create_queue and alter_queue give a NOTICE for the first only.
SET client_min_messages = notice;
SET ROLE rj_owner;
SELECT throttle_jobs.create_queue('rj_hlog_q', handler => 'rj_hlog_bare(jsonb)', max_attempts => 1);
SELECT throttle_jobs.create_queue('rj_hlog_ok', handler => 'rj_hlog_pinned(jsonb)', max_attempts => 1);
SELECT throttle_jobs.alter_queue('rj_hlog_ok', handler => 'rj_hlog_atomic(jsonb)');
SELECT throttle_jobs.alter_queue('rj_hlog_ok', handler => 'rj_hlog_bare(jsonb)');
SELECT throttle_jobs.alter_queue('rj_hlog_ok', handler => 'rj_hlog_pinned(jsonb)');
RESET ROLE;
SET client_min_messages = warning;

-- The bare handler fails (42P01), and the error recorded on the job names
-- the rule; the pinned one works.  A handler with its own search_path that
-- fails the same way gets no such hint.
SELECT throttle_jobs.enqueue('rj_hlog_q', '{"n": 1}') AS bare_id \gset
SELECT throttle_jobs.enqueue('rj_hlog_ok', '{"n": 2}') AS ok_id \gset
SELECT throttle_jobs.run_jobs('rj_hlog_q') + throttle_jobs.run_jobs('rj_hlog_ok') AS ran;
SELECT last_error FROM throttle_jobs.dead_letters WHERE id = :bare_id;
SELECT state FROM throttle_jobs.archived_jobs WHERE id = :ok_id;
SELECT n FROM rj_hlog;
ALTER FUNCTION rj_hlog_pinned(jsonb) SET search_path = pg_catalog, pg_temp;
SELECT throttle_jobs.enqueue('rj_hlog_ok', '{"n": 3}') AS pinned_id \gset
SELECT throttle_jobs.run_jobs('rj_hlog_ok') AS ran;
SELECT last_error FROM throttle_jobs.dead_letters WHERE id = :pinned_id;

-- A dropped handler fails each job with SQLSTATE 42883 (there is no
-- dependency that would stop DROP FUNCTION); the function made again with
-- the same signature by the same role is the handler again.
CREATE FUNCTION rj_gone(payload jsonb) RETURNS jsonb
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT '"first"'::jsonb $$;
GRANT EXECUTE ON FUNCTION rj_gone(jsonb) TO rj_owner;
SET ROLE rj_owner;
SELECT throttle_jobs.create_queue('rj_gone_q', handler => 'rj_gone(jsonb)', max_attempts => 1);
RESET ROLE;
DROP FUNCTION rj_gone(jsonb);
SELECT throttle_jobs.enqueue('rj_gone_q', '{"n": 1}') AS gone_id \gset
SET client_min_messages = error;  -- the WARNING names the job's id
SELECT throttle_jobs.run_jobs('rj_gone_q') AS ran;
SET client_min_messages = warning;
SELECT reason, last_error FROM throttle_jobs.dead_letters WHERE id = :gone_id;
CREATE FUNCTION rj_gone(payload jsonb) RETURNS jsonb
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT '"again"'::jsonb $$;
GRANT EXECUTE ON FUNCTION rj_gone(jsonb) TO rj_owner;
SELECT throttle_jobs.retry_dead(:gone_id);
SELECT throttle_jobs.run_jobs('rj_gone_q') AS ran;
SELECT state, result FROM throttle_jobs.archived_jobs WHERE id = :gone_id;

-- A function of that signature owned by another role than the one that
-- owned it when it was set is not run (42883); setting it again with
-- alter_queue accepts the new owner.
ALTER FUNCTION rj_gone(jsonb) OWNER TO rj_owner;
SELECT throttle_jobs.enqueue('rj_gone_q', '{"n": 2}') AS changed_id \gset
SET client_min_messages = error;
SELECT throttle_jobs.run_jobs('rj_gone_q') AS ran;
SET client_min_messages = warning;
SELECT last_error ~ '^handler public\.rj_gone\(pg_catalog\.jsonb\) of queue "rj_gone_q" changed: it is owned by role "rj_owner", not by the role that owned it when it was set \(.*\) \(SQLSTATE 42883\)' AS changed
FROM throttle_jobs.dead_letters WHERE id = :changed_id;
SET ROLE rj_owner;
SELECT throttle_jobs.alter_queue('rj_gone_q', handler => 'rj_gone(jsonb)');
RESET ROLE;
SELECT throttle_jobs.retry_dead(:changed_id);
SELECT throttle_jobs.run_jobs('rj_gone_q') AS ran;
SELECT state FROM throttle_jobs.archived_jobs WHERE id = :changed_id;

------------------------------------------------------------------------------
-- Bad input
------------------------------------------------------------------------------

SELECT throttle_jobs.run_jobs('rj_missing');
SELECT throttle_jobs.run_jobs('rj_plain');
SELECT throttle_jobs.run_jobs('rj_q', max_jobs => NULL);
SELECT throttle_jobs.run_jobs('rj_q', max_jobs => 0);
SELECT throttle_jobs.run_jobs('rj_q', max_jobs => 1000001);
SELECT throttle_jobs.run_jobs('rj_q', max_time => NULL);
SELECT throttle_jobs.run_jobs('rj_q', max_time => '0 s');
SELECT throttle_jobs.run_jobs('rj_q', max_time => '-1 s');

-- A temporary function cannot be a handler (22023).  (Last: this session
-- has a temporary schema from now on, which run_jobs refuses.)
CREATE FUNCTION pg_temp.rj_temp(payload jsonb) RETURNS void LANGUAGE sql AS 'SELECT';
SELECT throttle_jobs.create_queue('rj_temp_q', handler => 'pg_temp.rj_temp(jsonb)');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.alter_queue('rj_plain', handler => 'pg_temp.rj_temp(jsonb)');
\echo :LAST_ERROR_SQLSTATE

------------------------------------------------------------------------------
-- Clean up
------------------------------------------------------------------------------

SELECT throttle_jobs.drop_queue(q, force => true)
FROM unnest(ARRAY['rj_q', 'rj_proc_q', 'rj_plain', 'rj_super', 'rj_cancel_q', 'rj_nested_q',
                  'rj_hlog_q', 'rj_hlog_ok', 'rj_gone_q']) q;
DROP FUNCTION rj_hlog_bare(jsonb), rj_hlog_pinned(jsonb), rj_hlog_atomic(jsonb), rj_gone(jsonb);
DROP TABLE rj_seen, rj_hlog;
DROP FUNCTION rj_handler(jsonb);
DROP PROCEDURE rj_proc(jsonb);
DROP FUNCTION rj_fake_cancel(jsonb), rj_nested(jsonb);
REVOKE throttle_jobs_admin FROM rj_owner;
DROP ROLE rj_owner;
