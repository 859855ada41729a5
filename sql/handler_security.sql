\set VERBOSITY terse
SET client_min_messages = warning;

-- How handlers run: as their queue's owner inside a security-restricted
-- operation (nothing they arrange can run later as another user), with
-- constraints IMMEDIATE, with every setting at its session default, and
-- never in a session that has temporary objects.  run_jobs is called here
-- by a worker role that is not a superuser, and by the superuser (as a
-- pg_cron job would).  Every handler error is recorded with its SQLSTATE.

CREATE ROLE hs_owner NOLOGIN;      -- owns the queue and writes the handler
CREATE ROLE hs_worker NOLOGIN;     -- calls run_jobs
GRANT throttle_jobs_admin TO hs_owner;
GRANT throttle_jobs_worker TO hs_worker;
CREATE SCHEMA hs AUTHORIZATION hs_owner;

-- What ran, as whom.
CREATE TABLE public.hs_log (n int GENERATED ALWAYS AS IDENTITY, what text, who name, detail text);
GRANT INSERT ON public.hs_log TO hs_owner, hs_worker;

SET ROLE hs_owner;
-- A trap: a deferred constraint trigger that makes its owner a superuser
-- when it runs as one (at commit, it used to run as the superuser that
-- called run_jobs, or as the executor's bootstrap superuser).
CREATE FUNCTION hs.escalate() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.hs_log (what, who) VALUES ('escalate', current_user);
	IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
		ALTER ROLE hs_owner SUPERUSER;
	END IF;
	RETURN 1;
END $$;
CREATE FUNCTION hs.escalate_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM hs.escalate();
	RETURN NULL;
END $$;
CREATE TABLE hs.trap (n int);
CREATE CONSTRAINT TRIGGER trap_escalates AFTER INSERT ON hs.trap
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hs.escalate_trigger();
-- A deferrable foreign key, and an ordinary AFTER trigger.
CREATE TABLE hs.parent (id int PRIMARY KEY);
INSERT INTO hs.parent VALUES (1);
CREATE TABLE hs.child (parent_id int REFERENCES hs.parent DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE hs.watched (n int);
CREATE FUNCTION hs.note_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.hs_log (what, who) VALUES ('after trigger', current_user);
	RETURN NULL;
END $$;
CREATE TRIGGER watched_note AFTER INSERT ON hs.watched FOR EACH ROW EXECUTE FUNCTION hs.note_trigger();

-- The handler does what its payload says, then logs that it got through.
CREATE FUNCTION hs.handler(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	CASE p->>'do'
	WHEN 'hold_cursor' THEN
		EXECUTE 'DECLARE hs_c CURSOR WITH HOLD FOR SELECT hs.escalate()';
	WHEN 'deferred_trigger' THEN
		INSERT INTO hs.trap VALUES (1);
	WHEN 'set_deferred' THEN
		SET CONSTRAINTS ALL DEFERRED;
		INSERT INTO hs.trap VALUES (2);
	WHEN 'temp_table' THEN
		CREATE TEMP TABLE hs_tmp (a int);
	WHEN 'set_role' THEN
		SET ROLE NONE;
	WHEN 'listen' THEN
		LISTEN hs_channel;
	WHEN 'prepare' THEN
		EXECUTE 'PREPARE hs_stmt AS SELECT 1';
	WHEN 'fk' THEN
		INSERT INTO hs.child VALUES ((p->>'parent')::int);
	WHEN 'fk_deferred' THEN
		SET CONSTRAINTS ALL DEFERRED;
		INSERT INTO hs.child VALUES ((p->>'parent')::int);
	WHEN 'after_trigger' THEN
		INSERT INTO hs.watched VALUES (1);
	WHEN 'settings' THEN
		INSERT INTO public.hs_log (what, who, detail)
		VALUES ('settings', current_user,
		        pg_catalog.concat_ws(' | ', 'app.tenant=' || coalesce(current_setting('app.tenant', true), '(null)'),
		                             'statement_timeout=' || current_setting('statement_timeout'),
		                             'work_mem=' || current_setting('work_mem'),
		                             'search_path=' || current_setting('search_path')));
	END CASE;
	INSERT INTO public.hs_log (what, who) VALUES ('handler ' || (p->>'do'), current_user);
END $$;
SELECT throttle_jobs.create_queue('hs_q', handler => 'hs.handler(jsonb)', max_attempts => 1);
RESET ROLE;

-- A job per case; the outcome of each: completed, or dead with the error.
CREATE VIEW hs_outcome AS
SELECT payload->>'do' AS job, 'completed' AS outcome, NULL AS error, id FROM throttle_jobs.archived_jobs WHERE queue = 'hs_q'
UNION ALL
SELECT payload->>'do', 'dead', last_error, id FROM throttle_jobs.dead_letters WHERE queue = 'hs_q';

------------------------------------------------------------------------------
-- Refused inside the security-restricted operation (run_jobs by a worker)
------------------------------------------------------------------------------

-- A WITH HOLD cursor (it would run its query at commit): 42501.
-- The trap's constraint trigger, made DEFERRED by the handler: 42501 at the
-- end of the INSERT that would queue it.
-- A temporary table: 42501.  SET ROLE: 42501.  LISTEN: 42501.  PREPARE
-- (a statement that would outlive the job in the session): 42501.
SELECT count(throttle_jobs.enqueue('hs_q', jsonb_build_object('do', d))) AS enqueued
FROM unnest(ARRAY['hold_cursor', 'set_deferred', 'temp_table', 'set_role', 'listen', 'prepare']) d;
SET ROLE hs_worker;
SELECT throttle_jobs.run_jobs('hs_q') AS ran;
RESET ROLE;
SELECT job, outcome, error FROM hs_outcome ORDER BY id;
-- None of them got past its refused statement, and nothing escalated.
SELECT what, who FROM hs_log ORDER BY n;
SELECT rolname, rolsuper FROM pg_roles WHERE rolname IN ('hs_owner', 'hs_worker') ORDER BY rolname;
-- No cursor, prepared statement or temporary schema was left in this session.
SELECT count(*) AS cursors FROM pg_cursors;
SELECT count(*) AS prepared_statements FROM pg_prepared_statements;
SELECT count(*) AS temp_schemas FROM pg_namespace WHERE oid = pg_my_temp_schema();
DELETE FROM throttle_jobs.job_dead WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'hs_q');
TRUNCATE hs_log;

------------------------------------------------------------------------------
-- The same attacks when a superuser calls run_jobs (the pg_cron recipe)
------------------------------------------------------------------------------

-- The deferred trigger, left DEFERRED as created: constraints are
-- IMMEDIATE in the handler, so it fires at the end of the INSERT, as the
-- owner, and the job completes.  Made DEFERRED by the handler, or a WITH
-- HOLD cursor: refused (42501).  No role became a superuser.
SELECT count(throttle_jobs.enqueue('hs_q', jsonb_build_object('do', d))) AS enqueued
FROM unnest(ARRAY['deferred_trigger', 'set_deferred', 'hold_cursor']) d;
SELECT throttle_jobs.run_jobs('hs_q') AS ran;
SELECT job, outcome, error FROM hs_outcome ORDER BY id;
SELECT what, who FROM hs_log ORDER BY n;
SELECT rolname, rolsuper FROM pg_roles WHERE rolname IN ('hs_owner', 'hs_worker') ORDER BY rolname;
SELECT count(*) AS trapped_rows FROM hs.trap;
DELETE FROM throttle_jobs.job_dead WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'hs_q');
DELETE FROM throttle_jobs.job_archive WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'hs_q');
TRUNCATE hs_log;

------------------------------------------------------------------------------
-- What handlers legitimately do still works
------------------------------------------------------------------------------

-- A DEFERRABLE INITIALLY DEFERRED foreign key is checked at the end of the
-- handler's INSERT: a good row completes; a bad one fails the job at once
-- (23503), and the caller's transaction goes on.  SET CONSTRAINTS ALL
-- DEFERRED before it is refused (42501).  An ordinary AFTER trigger fires
-- inside the handler's statement, as the owner.
SELECT count(throttle_jobs.enqueue('hs_q', p)) AS enqueued
FROM (VALUES ('{"do": "fk", "parent": 1}'::jsonb), ('{"do": "fk", "parent": 2}'),
             ('{"do": "fk_deferred", "parent": 1}'), ('{"do": "after_trigger"}')) v(p);
SET ROLE hs_worker;
SELECT throttle_jobs.run_jobs('hs_q') AS ran;
RESET ROLE;
SELECT job, outcome, error FROM hs_outcome ORDER BY id;
SELECT parent_id FROM hs.child;
SELECT what, who FROM hs_log ORDER BY n;
DELETE FROM throttle_jobs.job_dead WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'hs_q');
DELETE FROM throttle_jobs.job_archive WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'hs_q');
TRUNCATE hs_log;

------------------------------------------------------------------------------
-- The caller's deferred trigger events fire as the caller
------------------------------------------------------------------------------

-- The caller queues a deferred event (its function records current_user),
-- then calls run_jobs: the event fires when run_jobs starts, as the caller
-- (hs_worker), before the handler runs, and never as the queue's owner.
-- Constraints stay IMMEDIATE for the rest of the caller's transaction: the
-- next event fires at the end of its statement.
CREATE FUNCTION public.hs_caller_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.hs_log (what, who) VALUES ('caller trigger ' || NEW.n, current_user);
	RETURN NULL;
END $$;
CREATE TABLE public.hs_caller_t (n int);
CREATE CONSTRAINT TRIGGER hs_caller_deferred AFTER INSERT ON public.hs_caller_t
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.hs_caller_note();
GRANT INSERT ON public.hs_caller_t TO hs_worker;
SELECT throttle_jobs.enqueue('hs_q', '{"do": "after_trigger"}') IS NOT NULL AS enqueued;
SET ROLE hs_worker;
BEGIN;
INSERT INTO public.hs_caller_t VALUES (1);
SELECT throttle_jobs.run_jobs('hs_q') AS ran;
INSERT INTO public.hs_caller_t VALUES (2);
RESET ROLE;
SELECT what, who FROM hs_log ORDER BY n;
COMMIT;
SELECT count(*) AS log_rows FROM hs_log;
DELETE FROM throttle_jobs.job_archive WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'hs_q');
TRUNCATE hs_log;

------------------------------------------------------------------------------
-- The handler sees its owner's settings, not the caller's
------------------------------------------------------------------------------

-- The caller SETs a custom setting, statement_timeout, work_mem and
-- search_path: the handler sees each at its session default (RESET ALL),
-- search_path pinned; the caller finds its own values again afterwards.
SELECT throttle_jobs.enqueue('hs_q', '{"do": "settings"}') IS NOT NULL AS enqueued;
SET ROLE hs_worker;
SET app.tenant = 'tenant-of-the-caller';
SET statement_timeout = '123s';
SET work_mem = '7MB';
SET search_path = public, pg_catalog;
SELECT throttle_jobs.run_jobs('hs_q') AS ran;
SELECT current_setting('app.tenant') AS tenant, current_setting('statement_timeout') AS statement_timeout,
       current_setting('work_mem') AS work_mem, current_setting('search_path') AS search_path;
RESET app.tenant;
RESET statement_timeout;
RESET work_mem;
RESET search_path;
RESET ROLE;
SELECT what, who, detail FROM hs_log ORDER BY n;
DELETE FROM throttle_jobs.job_archive WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'hs_q');
TRUNCATE hs_log;

------------------------------------------------------------------------------
-- No handler runs in a session that has temporary objects
------------------------------------------------------------------------------

-- The caller's temporary table would shadow a table that a handler names
-- without a schema: run_jobs refuses (55000) before running anything; the
-- job stays available.  Dropping the table does not help (the session
-- keeps its temporary schema); a new session may run it.
SELECT throttle_jobs.enqueue('hs_q', '{"do": "after_trigger"}') AS waiting_id \gset
SET ROLE hs_worker;
CREATE TEMP TABLE watched (n int);
SELECT throttle_jobs.run_jobs('hs_q') AS ran;
\echo :LAST_ERROR_SQLSTATE
DROP TABLE watched;
SELECT throttle_jobs.run_jobs('hs_q') AS ran;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- The superuser is refused just the same.
SELECT throttle_jobs.run_jobs('hs_q') AS ran;
\echo :LAST_ERROR_SQLSTATE
SELECT state, attempt FROM throttle_jobs.jobs WHERE id = :waiting_id;
\c -
SET client_min_messages = warning;
SET ROLE hs_worker;
SELECT throttle_jobs.run_jobs('hs_q') AS ran;
RESET ROLE;
SELECT what, who FROM hs_log ORDER BY n;

------------------------------------------------------------------------------
-- dblink connections and the random seed do not outlive a job
------------------------------------------------------------------------------

-- dblink in a schema of its own; hs_owner may open connections to this
-- server without a password (dblink_connect_u).  \set conn: a connection
-- string for this server (trust authentication).
CREATE SCHEMA hs_dblink;
CREATE EXTENSION dblink SCHEMA hs_dblink;
GRANT USAGE ON SCHEMA hs_dblink TO hs_owner, hs_worker;
GRANT EXECUTE ON FUNCTION hs_dblink.dblink_connect_u(text), hs_dblink.dblink_connect_u(text, text) TO hs_owner;
SELECT format('host=127.0.0.1 port=%s dbname=%s user=postgres', current_setting('port'), current_database()) AS conn \gset
SET ROLE hs_owner;
-- 'dblink' opens a named and an unnamed connection and leaves them open;
-- 'look' logs the named connections it finds; 'setseed' seeds random().
CREATE FUNCTION hs.leave(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	CASE p->>'do'
	WHEN 'dblink' THEN
		PERFORM hs_dblink.dblink_connect_u('hs_left', p->>'conn');
		PERFORM hs_dblink.dblink_connect_u(p->>'conn');
		INSERT INTO public.hs_log (what, who, detail)
		VALUES ('opened', current_user, hs_dblink.dblink_get_connections()::text);
	WHEN 'look' THEN
		INSERT INTO public.hs_log (what, who, detail)
		VALUES ('look', current_user, coalesce(hs_dblink.dblink_get_connections()::text, 'none'));
	WHEN 'setseed' THEN
		PERFORM setseed(0.42);
	END CASE;
END $$;
SELECT throttle_jobs.create_queue('hs_leave_q', handler => 'hs.leave(jsonb)', max_attempts => 1);
RESET ROLE;

-- A caller with a named dblink connection open is refused (55000) before
-- anything runs: a handler could send statements through it as the caller
-- (here a superuser).  Its connection stays open.
SELECT throttle_jobs.enqueue('hs_leave_q', '{"do": "look"}') IS NOT NULL AS enqueued;
SELECT hs_dblink.dblink_connect('hs_su', :'conn');
SELECT throttle_jobs.run_jobs('hs_leave_q') AS ran;
\echo :LAST_ERROR_SQLSTATE
SELECT hs_dblink.dblink_get_connections();
SELECT hs_dblink.dblink_disconnect('hs_su');
-- An unnamed connection: refused too (55000), and closed (it cannot be
-- found otherwise): dblink_disconnect() then finds none.
SELECT hs_dblink.dblink_connect(:'conn');
SELECT throttle_jobs.run_jobs('hs_leave_q') AS ran;
\echo :LAST_ERROR_SQLSTATE
SELECT hs_dblink.dblink_disconnect();
-- The job did not run.
SELECT count(*) AS waiting FROM throttle_jobs.jobs WHERE queue = 'hs_leave_q' AND state = 'available';

-- A handler's named and unnamed connections are closed after its job: the
-- next job (same handler) finds no named one, nor does the caller after
-- run_jobs, whose dblink_disconnect() finds no unnamed one.
SELECT throttle_jobs.enqueue('hs_leave_q', jsonb_build_object('do', 'dblink', 'conn', :'conn')) IS NOT NULL AS enqueued;
SELECT throttle_jobs.enqueue('hs_leave_q', '{"do": "look"}') IS NOT NULL AS enqueued;
TRUNCATE hs_log;
SET ROLE hs_worker;
SELECT throttle_jobs.run_jobs('hs_leave_q') AS ran;
SELECT hs_dblink.dblink_get_connections() IS NULL AS no_named_connection;
SELECT hs_dblink.dblink_disconnect();
RESET ROLE;
SELECT what, who, detail FROM hs_log ORDER BY n;

-- A handler's setseed() does not carry over: random() after run_jobs does
-- not give what it gives after setseed(0.42).
SELECT setseed(0.42);
SELECT random() AS seeded1, random() AS seeded2 \gset
SELECT throttle_jobs.enqueue('hs_leave_q', '{"do": "setseed"}') IS NOT NULL AS enqueued;
SET ROLE hs_worker;
SELECT throttle_jobs.run_jobs('hs_leave_q') AS ran;
SELECT (random(), random()) = (:seeded1::float8, :seeded2::float8) AS predictable;
RESET ROLE;
SELECT outcome, count(*) FROM (
	SELECT 'completed' AS outcome FROM throttle_jobs.archived_jobs WHERE queue = 'hs_leave_q'
	UNION ALL
	SELECT 'dead' FROM throttle_jobs.dead_letters WHERE queue = 'hs_leave_q') o
GROUP BY outcome;
SELECT throttle_jobs.drop_queue('hs_leave_q', force => true);
DROP EXTENSION dblink;
DROP SCHEMA hs_dblink;

------------------------------------------------------------------------------
-- Clean up
------------------------------------------------------------------------------

DROP VIEW hs_outcome;
SELECT throttle_jobs.drop_queue('hs_q', force => true);
DROP TABLE public.hs_caller_t, public.hs_log;
DROP FUNCTION public.hs_caller_note();
DROP SCHEMA hs CASCADE;
REVOKE throttle_jobs_admin FROM hs_owner;
REVOKE throttle_jobs_worker FROM hs_worker;
DROP ROLE hs_owner, hs_worker;
