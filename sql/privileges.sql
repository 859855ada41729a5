\set VERBOSITY terse
SET client_min_messages = warning;

-- One role per capability level, and one with no grant at all.
CREATE ROLE tj_producer NOLOGIN;
CREATE ROLE tj_worker NOLOGIN;
CREATE ROLE tj_admin NOLOGIN;
CREATE ROLE tj_nobody NOLOGIN;
GRANT throttle_jobs_producer TO tj_producer;
GRANT throttle_jobs_worker TO tj_worker;
GRANT throttle_jobs_admin TO tj_admin;

-- Only the three capability roles (and so the four test roles but
-- tj_nobody) may use the schema; PUBLIC may not.
SELECT r AS role, has_schema_privilege(r, 'throttle_jobs', 'USAGE') AS usage,
       has_schema_privilege(r, 'throttle_jobs', 'CREATE') AS "create"
FROM unnest(ARRAY['tj_producer', 'tj_worker', 'tj_admin', 'tj_nobody', 'public']) r;

-- Every function of the schema, by role: who may EXECUTE it.
-- producer: enqueue, enqueue_batch; worker: reserve, complete, fail,
-- snooze, heartbeat, run_jobs; admin: all of these and the rest of the public API;
-- nobody and PUBLIC: nothing.  Internal functions (named _*): nobody.
SELECT format('%s(%s)', p.proname, oidvectortypes(p.proargtypes)) AS function,
       CASE WHEN has_function_privilege('tj_producer', p.oid, 'EXECUTE') THEN 'allowed' ELSE 'refused' END AS producer,
       CASE WHEN has_function_privilege('tj_worker', p.oid, 'EXECUTE') THEN 'allowed' ELSE 'refused' END AS worker,
       CASE WHEN has_function_privilege('tj_admin', p.oid, 'EXECUTE') THEN 'allowed' ELSE 'refused' END AS admin,
       CASE WHEN has_function_privilege('tj_nobody', p.oid, 'EXECUTE') THEN 'allowed' ELSE 'refused' END AS nobody,
       CASE WHEN has_function_privilege('public', p.oid, 'EXECUTE') THEN 'allowed' ELSE 'refused' END AS public
FROM pg_proc p
WHERE p.pronamespace = 'throttle_jobs'::regnamespace
ORDER BY p.proname, oidvectortypes(p.proargtypes);

-- Internal functions executable by any of the four roles or PUBLIC (expect no rows).
SELECT p.oid::regprocedure AS internal_function, r AS role
FROM pg_proc p, unnest(ARRAY['tj_producer', 'tj_worker', 'tj_admin', 'tj_nobody', 'public']) r
WHERE p.pronamespace = 'throttle_jobs'::regnamespace AND p.proname LIKE '\_%'
  AND has_function_privilege(r, p.oid, 'EXECUTE')
ORDER BY 1, 2;

-- Every table and view of the schema, by role: the privileges held
-- (directly, through a capability role, or on any column); '-' for none.
-- Only tj_admin may SELECT, and only from the views; nobody may touch a table.
CREATE FUNCTION pg_temp.privs(role text, rel regclass) RETURNS text
LANGUAGE sql STABLE AS $$
SELECT coalesce(string_agg(p, ',' ORDER BY o), '-')
FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])
     WITH ORDINALITY AS t(p, o)
WHERE has_table_privilege(role, rel, p)
   OR (p IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES') AND has_any_column_privilege(role, rel, p))
$$;
SELECT c.relname AS relation, CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END AS kind,
       pg_temp.privs('tj_producer', c.oid) AS producer,
       pg_temp.privs('tj_worker', c.oid) AS worker,
       pg_temp.privs('tj_admin', c.oid) AS admin,
       pg_temp.privs('tj_nobody', c.oid) AS nobody,
       pg_temp.privs('public', c.oid) AS public
FROM pg_class c
WHERE c.relnamespace = 'throttle_jobs'::regnamespace
  AND c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition
ORDER BY 2, 1;

-- Archive partitions (their names carry dates) and sequences: no privilege
-- for any of the four roles or PUBLIC (expect no rows).
SELECT c.relname, r AS role
FROM pg_class c, unnest(ARRAY['tj_producer', 'tj_worker', 'tj_admin', 'tj_nobody', 'public']) r
WHERE c.relnamespace = 'throttle_jobs'::regnamespace
  AND ((c.relkind IN ('r', 'p') AND c.relispartition AND pg_temp.privs(r, c.oid) <> '-')
       OR (c.relkind = 'S' AND has_sequence_privilege(r, c.oid, 'USAGE, SELECT, UPDATE')))
ORDER BY 1, 2;

-- Real calls.  try_as(role, statement) runs the statement as the role in a
-- subtransaction that is always rolled back, and reports 'ok' when it ran or
-- its SQLSTATE when it failed (42501: permission denied).
CREATE FUNCTION pg_temp.try_as(role text, stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', role);
	EXECUTE stmt;
	RAISE EXCEPTION 'rolled back' USING ERRCODE = 'TJ0OK';
EXCEPTION WHEN OTHERS THEN
	RETURN CASE SQLSTATE WHEN 'TJ0OK' THEN 'ok' ELSE SQLSTATE END;
END
$$;
CREATE TEMP TABLE calls (n serial, call text, stmt text);

-- A queue with a live job, a dead job and an archived job for the calls below.
SELECT throttle_jobs.create_queue('priv_q');
SELECT throttle_jobs.enqueue('priv_q', '{"n": 1}') IS NOT NULL AS enqueued;
SELECT throttle_jobs.enqueue('priv_q', '{"n": 2}') IS NOT NULL AS enqueued;
SELECT throttle_jobs.enqueue('priv_q', '{"n": 3}') IS NOT NULL AS enqueued;
SELECT throttle_jobs.fail(id, lease_token, 'boom', retryable => false) FROM throttle_jobs.reserve('priv_q', 'setup');
SELECT throttle_jobs.complete(id, lease_token) FROM throttle_jobs.reserve('priv_q', 'setup');
SELECT d.id AS dead_id FROM throttle_jobs.job_dead d JOIN throttle_jobs.queue q ON q.id = d.queue_id
WHERE q.name = 'priv_q' \gset
SELECT j.id AS live_id FROM throttle_jobs.job j JOIN throttle_jobs.queue q ON q.id = j.queue_id
WHERE q.name = 'priv_q' \gset

-- Every public function, with arguments that let it run; every view;
-- SELECT, INSERT, UPDATE and DELETE on every table; the internal functions.
INSERT INTO calls (call, stmt) VALUES
  ('create_queue', $$SELECT throttle_jobs.create_queue('priv_new')$$),
  ('alter_queue', $$SELECT throttle_jobs.alter_queue('priv_q', max_attempts => 3)$$),
  ('drop_queue', $$SELECT throttle_jobs.drop_queue('priv_q', force => true)$$),
  ('pause_queue', $$SELECT throttle_jobs.pause_queue('priv_q')$$),
  ('resume_queue', $$SELECT throttle_jobs.resume_queue('priv_q')$$),
  ('enqueue', $$SELECT throttle_jobs.enqueue('priv_q', '{"n": 9}')$$),
  ('enqueue_batch', $$SELECT throttle_jobs.enqueue_batch('priv_q', '[{"payload": {"n": 9}}]')$$),
  ('reserve', $$SELECT * FROM throttle_jobs.reserve('priv_q', 'w')$$),
  ('complete', $$SELECT throttle_jobs.complete(0, '00000000-0000-0000-0000-000000000000')$$),
  ('complete_and_reserve', $$SELECT * FROM throttle_jobs.complete_and_reserve('priv_q', 'w', '{0}', '{00000000-0000-0000-0000-000000000000}')$$),
  ('fail', $$SELECT throttle_jobs.fail(0, '00000000-0000-0000-0000-000000000000', 'e')$$),
  ('snooze', $$SELECT throttle_jobs.snooze(0, '00000000-0000-0000-0000-000000000000', '1 min')$$),
  ('heartbeat', $$SELECT throttle_jobs.heartbeat(0, '00000000-0000-0000-0000-000000000000')$$),
  ('cancel', format('SELECT throttle_jobs.cancel(%s)', :live_id)),
  ('retry_dead(bigint)', format('SELECT throttle_jobs.retry_dead(%s)', :dead_id)),
  ('retry_dead(text, ...)', $$SELECT throttle_jobs.retry_dead('priv_q')$$),
  ('purge_dead', $$SELECT throttle_jobs.purge_dead('priv_q')$$),
  ('maintain', $$SELECT throttle_jobs.maintain()$$),
  ('run_jobs', $$SELECT throttle_jobs.run_jobs()$$),
  ('backoff_delay', $$SELECT throttle_jobs.backoff_delay(2)$$),
  ('view queues', $$SELECT * FROM throttle_jobs.queues$$),
  ('view jobs', $$SELECT * FROM throttle_jobs.jobs$$),
  ('view running_jobs', $$SELECT * FROM throttle_jobs.running_jobs$$),
  ('view dead_letters', $$SELECT * FROM throttle_jobs.dead_letters$$),
  ('view archived_jobs', $$SELECT * FROM throttle_jobs.archived_jobs$$),
  ('SELECT queue', $$SELECT * FROM throttle_jobs.queue$$),
  ('INSERT queue', $$INSERT INTO throttle_jobs.queue (name, owner) VALUES ('priv_x', 'tj_admin')$$),
  ('UPDATE queue', $$UPDATE throttle_jobs.queue SET paused = true$$),
  ('DELETE queue', $$DELETE FROM throttle_jobs.queue$$),
  ('SELECT job', $$SELECT * FROM throttle_jobs.job$$),
  ('INSERT job', $$INSERT INTO throttle_jobs.job (queue_id, run_at, enqueued_at, payload) VALUES (1, now(), now(), '{}')$$),
  ('UPDATE job', $$UPDATE throttle_jobs.job SET priority = 1$$),
  ('DELETE job', $$DELETE FROM throttle_jobs.job$$),
  ('SELECT job_archive', $$SELECT * FROM throttle_jobs.job_archive$$),
  ('INSERT job_archive', $$INSERT INTO throttle_jobs.job_archive (id, queue_id, state, priority, run_at, attempt, cost, enqueued_at, finished_at, errors, payload) VALUES (0, 1, 'cancelled', 0, now(), 0, 1, now(), now(), '[]', '{}')$$),
  ('UPDATE job_archive', $$UPDATE throttle_jobs.job_archive SET priority = 1$$),
  ('DELETE job_archive', $$DELETE FROM throttle_jobs.job_archive$$),
  ('SELECT job_dead', $$SELECT * FROM throttle_jobs.job_dead$$),
  ('INSERT job_dead', $$INSERT INTO throttle_jobs.job_dead (id, queue_id, priority, run_at, attempt, cost, enqueued_at, died_at, reason, errors, payload) VALUES (0, 1, 0, now(), 0, 1, now(), now(), 'x', '[]', '{}')$$),
  ('UPDATE job_dead', $$UPDATE throttle_jobs.job_dead SET priority = 1$$),
  ('DELETE job_dead', $$DELETE FROM throttle_jobs.job_dead$$),
  ('_check_interval', $$SELECT throttle_jobs._check_interval('1 day', 'x', true)$$),
  ('_queue_id', $$SELECT throttle_jobs._queue_id('priv_q')$$),
  ('_lock_queue', $$SELECT throttle_jobs._lock_queue('priv_q')$$),
  ('_maintain_archive', $$SELECT throttle_jobs._maintain_archive(now())$$),
  -- per-queue privileges (0.2.0): the capability roles keep their grants,
  -- and the new functions and view are for admins (and throttle_jobs_user)
  ('explain_job', format('SELECT throttle_jobs.explain_job(%s)', :live_id)),
  ('grant_queue', $$SELECT throttle_jobs.grant_queue('priv_q', 'tj_nobody', 'consume')$$),
  ('revoke_queue', $$SELECT throttle_jobs.revoke_queue('priv_q', 'tj_nobody', 'consume')$$),
  ('view queue_grants', $$SELECT * FROM throttle_jobs.queue_grants$$),
  ('SELECT queue_grant', $$SELECT * FROM throttle_jobs.queue_grant$$),
  ('INSERT queue_grant', $$INSERT INTO throttle_jobs.queue_grant (queue_id, grantee, privilege, granted_by) SELECT id, 'tj_nobody', 'manage', 'tj_nobody' FROM throttle_jobs.queue$$),
  ('_explain_job', format('SELECT throttle_jobs._explain_job(%s, NULL, NULL, NULL)', :live_id));

-- The same statements run as the extension owner (a superuser): all run,
-- which shows that a refusal below comes from privileges alone.
SELECT count(*) AS calls, count(*) FILTER (WHERE pg_temp.try_as(current_user, stmt) = 'ok') AS ran
FROM calls;

-- By role: 'ok' = allowed (and rolled back), 42501 = refused.
SELECT call,
       pg_temp.try_as('tj_producer', stmt) AS producer,
       pg_temp.try_as('tj_worker', stmt) AS worker,
       pg_temp.try_as('tj_admin', stmt) AS admin,
       pg_temp.try_as('tj_nobody', stmt) AS nobody
FROM calls ORDER BY n;

-- What throttle_jobs_user may execute and read: the functions and views
-- that take a queue or a job, whose per-queue checks decide (see
-- queue_grants.sql); nothing else.
SELECT p.oid::regprocedure AS throttle_jobs_user_may_execute
FROM pg_proc p
WHERE p.pronamespace = 'throttle_jobs'::regnamespace
  AND has_function_privilege('throttle_jobs_user', p.oid, 'EXECUTE')
ORDER BY p.oid::regprocedure::text;
SELECT c.relname AS relation, pg_temp.privs('throttle_jobs_user', c.oid) AS throttle_jobs_user
FROM pg_class c
WHERE c.relnamespace = 'throttle_jobs'::regnamespace
  AND c.relkind IN ('r', 'p', 'v') AND pg_temp.privs('throttle_jobs_user', c.oid) <> '-'
ORDER BY 1;

-- Nothing above was kept: priv_q still holds one live and one dead job.
SELECT name, max_attempts, paused FROM throttle_jobs.queues WHERE name LIKE 'priv\_%' ORDER BY name;
SELECT (SELECT count(*) FROM throttle_jobs.jobs WHERE queue = 'priv_q') AS live,
       (SELECT count(*) FROM throttle_jobs.dead_letters WHERE queue = 'priv_q') AS dead;
SELECT throttle_jobs.drop_queue('priv_q', force => true);

-- The main paths, step by step.
-- tj_admin creates a queue; it is recorded as the queue's owner.
SET ROLE tj_admin;
SELECT throttle_jobs.create_queue('priv_main', max_attempts => 2);
SELECT name, owner, max_attempts FROM throttle_jobs.queues WHERE name = 'priv_main';
RESET ROLE;
SELECT owner = 'tj_admin'::regrole AS owned_by_tj_admin FROM throttle_jobs.queue WHERE name = 'priv_main';

-- tj_producer enqueues, alone and in a batch...
SET ROLE tj_producer;
SELECT throttle_jobs.enqueue('priv_main', '{"n": 1}', priority => 2) AS first_id \gset
SELECT id - :first_id AS rel_id FROM throttle_jobs.enqueue_batch('priv_main', '[{"payload": {"n": 2}, "priority": 1}, {"payload": {"n": 3}}]') id;
-- ...but may not reserve, complete, fail, manage queues or read anything.
SELECT * FROM throttle_jobs.reserve('priv_main', 'p1');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.complete(:first_id, '00000000-0000-0000-0000-000000000000');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.fail(:first_id, '00000000-0000-0000-0000-000000000000', 'e');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.create_queue('priv_other');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.cancel(:first_id);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM throttle_jobs.jobs;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM throttle_jobs.job;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- tj_worker reserves, heartbeats, snoozes, fails and completes...
SET ROLE tj_worker;
SELECT id - :first_id AS rel_id, payload, attempt, max_attempts, lease_token AS tok1
FROM throttle_jobs.reserve('priv_main', 'w1') \gset
SELECT :rel_id AS rel_id, :'payload' AS payload, :attempt AS attempt, :max_attempts AS max_attempts;
SELECT throttle_jobs.heartbeat(:first_id, :'tok1', '10 minutes') IS NOT NULL AS extended;
SELECT throttle_jobs.snooze(:first_id, :'tok1', '0 seconds') AS snoozed;
SELECT id - :first_id AS rel_id, attempt, lease_token AS tok2 FROM throttle_jobs.reserve('priv_main', 'w1') \gset
SELECT :rel_id AS rel_id, :attempt AS attempt;
SELECT throttle_jobs.fail(:first_id, :'tok2', 'try again', retry_in => '0 seconds') AS state;
SELECT id - :first_id AS rel_id, attempt, lease_token AS tok3 FROM throttle_jobs.reserve('priv_main', 'w1') \gset
SELECT :rel_id AS rel_id, :attempt AS attempt;
SELECT throttle_jobs.complete(:first_id, :'tok3', '{"done": true}') AS completed;
-- ...but may not enqueue, manage queues, handle dead letters or read anything.
SELECT throttle_jobs.enqueue('priv_main');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.enqueue_batch('priv_main', '[{}]');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.create_queue('priv_other');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.pause_queue('priv_main');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.retry_dead('priv_main');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.maintain();
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM throttle_jobs.running_jobs;
\echo :LAST_ERROR_SQLSTATE
UPDATE throttle_jobs.job SET lease_until = NULL;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- tj_admin can do everything through the functions and views...
SET ROLE tj_admin;
SELECT throttle_jobs.alter_queue('priv_main', max_attempts => 1);
SELECT throttle_jobs.pause_queue('priv_main');
SELECT count(*) AS reserved_while_paused FROM throttle_jobs.reserve('priv_main', 'a1');
SELECT throttle_jobs.resume_queue('priv_main');
SELECT throttle_jobs.enqueue('priv_main', '{"n": 4}') - :first_id AS rel_id;
SELECT id - :first_id AS rel_id, lease_token AS tok4 FROM throttle_jobs.reserve('priv_main', 'a1') \gset
SELECT :rel_id AS rel_id;
SELECT throttle_jobs.fail(:rel_id + :first_id, :'tok4', 'fatal') AS state;
SELECT id - :first_id AS rel_id, reason, last_error FROM throttle_jobs.dead_letters WHERE queue = 'priv_main';
SELECT throttle_jobs.retry_dead(:rel_id + :first_id) AS retried;
SELECT id - :first_id AS rel_id, lease_token AS tok5 FROM throttle_jobs.reserve('priv_main', 'a1') \gset
SELECT throttle_jobs.fail(:rel_id + :first_id, :'tok5', 'fatal again', retryable => false) AS state;
SELECT throttle_jobs.retry_dead('priv_main') AS retried;
SELECT throttle_jobs.cancel(:rel_id + :first_id) AS cancelled;
SELECT throttle_jobs.purge_dead('priv_main') AS purged;
SELECT throttle_jobs.maintain() ? 'expired_leases' AS maintained;
SELECT throttle_jobs.backoff_delay(3) AS delay;
SELECT id - :first_id AS rel_id, state, attempt FROM throttle_jobs.jobs WHERE queue = 'priv_main' ORDER BY id;
SELECT count(*) AS running FROM throttle_jobs.running_jobs WHERE queue = 'priv_main';
SELECT id - :first_id AS rel_id, state, result FROM throttle_jobs.archived_jobs WHERE queue = 'priv_main' ORDER BY id;
-- ...but has no direct access to the tables, nor to the internal functions.
SELECT count(*) FROM throttle_jobs.queue;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO throttle_jobs.job (queue_id, run_at, enqueued_at, payload) VALUES (1, now(), now(), '{}');
\echo :LAST_ERROR_SQLSTATE
UPDATE throttle_jobs.job_dead SET attempt = 0;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM throttle_jobs.job_archive;
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs._queue_id('priv_main');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs._maintain_archive(now());
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- tj_nobody can do nothing, not even reach the schema.
SET ROLE tj_nobody;
SELECT throttle_jobs.enqueue('priv_main');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM throttle_jobs.reserve('priv_main', 'n1');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.create_queue('priv_other');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.maintain();
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM throttle_jobs.queues;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM throttle_jobs.queue;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM throttle_jobs.job;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- Nothing the refused calls tried was done.
SELECT name, owner, max_attempts, paused FROM throttle_jobs.queues WHERE name LIKE 'priv\_%' ORDER BY name;
SELECT id - :first_id AS rel_id, state FROM throttle_jobs.jobs WHERE queue = 'priv_main' ORDER BY id;

-- Every SECURITY DEFINER function of the schema pins its search_path.
SELECT p.oid::regprocedure AS security_definer_function, p.proconfig
FROM pg_proc p
WHERE p.pronamespace = 'throttle_jobs'::regnamespace AND p.prosecdef
ORDER BY p.proname, oidvectortypes(p.proargtypes);
-- Those that do not (expect no rows).
SELECT p.oid::regprocedure AS search_path_not_pinned, p.proconfig
FROM pg_proc p
WHERE p.pronamespace = 'throttle_jobs'::regnamespace AND p.prosecdef
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
  -- (the one exception: the skip hints' trigger runs no SQL, see the upgrade script)
  AND p.oid <> 'throttle_jobs._job_ready_trigger()'::regprocedure
ORDER BY 1;

-- The owner is the role in effect where create_queue is called, even through
-- a SECURITY DEFINER function: an admin's wrapper that other roles call
-- creates queues owned by the admin, not by whoever calls the wrapper.
CREATE SCHEMA priv_wrap AUTHORIZATION tj_admin;
SET ROLE tj_admin;
CREATE FUNCTION priv_wrap.mk(n text) RETURNS void
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
  AS $$ SELECT throttle_jobs.create_queue(n) $$;
GRANT USAGE ON SCHEMA priv_wrap TO tj_worker;
GRANT EXECUTE ON FUNCTION priv_wrap.mk(text) TO tj_worker;
RESET ROLE;
SET ROLE tj_worker;
SELECT priv_wrap.mk('priv_wrapped');
RESET ROLE;
SELECT priv_wrap.mk('priv_wrapped_by_su');
SELECT name, owner FROM throttle_jobs.queues WHERE name LIKE 'priv\_wrapped%' ORDER BY name;

-- Handlers run as the queue's owner, so only the owner (or a member of the
-- owner role) may set one, and the owner must be allowed to execute it.
CREATE FUNCTION priv_wrap.handler(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
REVOKE ALL ON FUNCTION priv_wrap.handler(jsonb) FROM PUBLIC;
ALTER FUNCTION priv_wrap.handler(jsonb) OWNER TO tj_admin;
CREATE ROLE tj_admin2;
GRANT throttle_jobs_admin TO tj_admin2;
GRANT USAGE ON SCHEMA priv_wrap TO tj_admin2;
GRANT EXECUTE ON FUNCTION priv_wrap.handler(jsonb) TO tj_admin2;
SET ROLE tj_admin2;
-- another admin may not put a handler on tj_admin's queue
SELECT throttle_jobs.alter_queue('priv_wrapped', handler => 'priv_wrap.handler(jsonb)');
\echo :LAST_ERROR_SQLSTATE
-- its own queue with a handler it may execute is fine
SELECT throttle_jobs.create_queue('priv_admin2', handler => 'priv_wrap.handler(jsonb)');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION priv_wrap.handler(jsonb) FROM tj_admin2;
SET ROLE tj_admin2;
-- without EXECUTE on the handler, creating a queue with it is refused
SELECT throttle_jobs.create_queue('priv_admin2b', handler => 'priv_wrap.handler(jsonb)');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE tj_admin;
-- the owner may set it
SELECT throttle_jobs.alter_queue('priv_wrapped', handler => 'priv_wrap.handler(jsonb)');
RESET ROLE;
SELECT name, owner, handler FROM throttle_jobs.queues WHERE name LIKE 'priv\_%' AND name <> 'priv_main' ORDER BY name;
SELECT throttle_jobs.drop_queue(name) FROM throttle_jobs.queues
WHERE name IN ('priv_wrapped', 'priv_wrapped_by_su', 'priv_admin2');
DROP SCHEMA priv_wrap CASCADE;
DROP OWNED BY tj_admin2;
DROP ROLE tj_admin2;

-- Clean up: the queue first (it names tj_admin as owner), then the roles.
SELECT throttle_jobs.drop_queue('priv_main', force => true);
SELECT count(*) AS priv_queues_left FROM throttle_jobs.queues WHERE name LIKE 'priv\_%';
DROP OWNED BY tj_producer, tj_worker, tj_admin, tj_nobody;
DROP ROLE tj_producer;
DROP ROLE tj_worker;
DROP ROLE tj_admin;
DROP ROLE tj_nobody;
SELECT count(*) AS roles_left FROM pg_roles WHERE rolname IN ('tj_producer', 'tj_worker', 'tj_admin', 'tj_nobody');

-- pg_monitor reads the statistics: the views queue_stats, key_stats and
-- throughput, the functions they call, and metrics(); nothing else.
SELECT p.oid::regprocedure AS pg_monitor_may_execute
FROM pg_proc p
WHERE p.pronamespace = 'throttle_jobs'::regnamespace
  AND has_function_privilege('pg_monitor', p.oid, 'EXECUTE')
ORDER BY p.oid::regprocedure::text;
SELECT c.relname AS relation, pg_temp.privs('pg_monitor', c.oid) AS pg_monitor
FROM pg_class c
WHERE c.relnamespace = 'throttle_jobs'::regnamespace
  AND c.relkind IN ('r', 'p', 'v') AND pg_temp.privs('pg_monitor', c.oid) <> '-'
ORDER BY 1;
