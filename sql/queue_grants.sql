\set VERBOSITY terse
SET client_min_messages = warning;

-- Per-queue privileges: grant_queue, revoke_queue, the queue_grants view,
-- and their enforcement by every function that takes a queue or a job and
-- by the views.  No temporary objects here: run_jobs may refuse a session
-- that has them.

-- Roles: one per capability role, the queues' owner, one per grant, a
-- member of a grantee role, one holding throttle_jobs_user alone, and one
-- that is granted a privilege and then dropped.
CREATE ROLE qg_owner;
CREATE ROLE qg_admin;
CREATE ROLE qg_producer;
CREATE ROLE qg_worker;
CREATE ROLE qg_p;
CREATE ROLE qg_c;
CREATE ROLE qg_m;
CREATE ROLE qg_team;
CREATE ROLE qg_member;
CREATE ROLE qg_none;
CREATE ROLE qg_gone;
GRANT throttle_jobs_admin TO qg_owner, qg_admin;
GRANT throttle_jobs_producer TO qg_producer;
GRANT throttle_jobs_worker TO qg_worker;
GRANT throttle_jobs_user TO qg_p, qg_c, qg_m, qg_member, qg_none, qg_gone;
GRANT qg_team TO qg_member;

-- The new role is NOLOGIN, may use the schema, and is no member of a
-- capability role, nor are they of it (expect no rows).
SELECT rolcanlogin, has_schema_privilege('throttle_jobs_user', 'throttle_jobs', 'USAGE') AS usage
FROM pg_roles WHERE rolname = 'throttle_jobs_user';
SELECT a.rolname AS role, b.rolname AS of_role
FROM pg_roles a, pg_roles b
WHERE a.rolname LIKE 'throttle\_jobs\_%' AND b.rolname LIKE 'throttle\_jobs\_%'
  AND 'throttle_jobs_user' IN (a.rolname, b.rolname)
  AND a.oid <> b.oid AND pg_has_role(a.oid, b.oid, 'MEMBER')
ORDER BY 1, 2;

-- The helper and the handler live in a schema of their own.
-- try_as(role, statement) runs the statement as the role in a
-- subtransaction that is always rolled back, and reports 'ok' or the SQLSTATE.
CREATE SCHEMA qg;
CREATE FUNCTION qg.try_as(role text, stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', role);
	EXECUTE stmt;
	RAISE EXCEPTION 'rolled back' USING ERRCODE = 'TJ0OK';
EXCEPTION WHEN OTHERS THEN
	RETURN CASE SQLSTATE WHEN 'TJ0OK' THEN 'ok' ELSE SQLSTATE END;
END
$$;
-- see_as(role, query): the query's one text value as the role, or the SQLSTATE.
CREATE FUNCTION qg.see_as(role text, query text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	result text;
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', role);
	EXECUTE query INTO result;
	RAISE EXCEPTION 'rolled back' USING ERRCODE = 'TJ0OK';
EXCEPTION WHEN OTHERS THEN
	RETURN CASE SQLSTATE WHEN 'TJ0OK' THEN coalesce(result, '-') ELSE SQLSTATE END;
END
$$;
CREATE TABLE qg.calls (n serial, call text, stmt text);
CREATE FUNCTION qg.handler(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
REVOKE ALL ON FUNCTION qg.handler(jsonb) FROM PUBLIC;
GRANT USAGE ON SCHEMA qg TO qg_owner;
ALTER FUNCTION qg.handler(jsonb) OWNER TO qg_owner;

-- qg_owner creates the queues (so it owns them), then keeps only
-- throttle_jobs_user: it manages them as their owner alone.
SET ROLE qg_owner;
SELECT throttle_jobs.create_queue('qg_a');
SELECT throttle_jobs.create_queue('qg_b');
SELECT throttle_jobs.create_queue('qg_h', handler => 'qg.handler(jsonb)');
SELECT throttle_jobs.create_queue('qg_h2', handler => 'qg.handler(jsonb)');
RESET ROLE;
REVOKE throttle_jobs_admin FROM qg_owner;
GRANT throttle_jobs_user TO qg_owner;

-- The owner grants: produce, consume and manage on qg_a to one role each,
-- consume on qg_a to the group qg_team, consume on qg_h, and manage on
-- qg_a to qg_gone, which is then dropped (its grant dangles).
SET ROLE qg_owner;
SELECT throttle_jobs.grant_queue('qg_a', 'qg_p', 'produce');
SELECT throttle_jobs.grant_queue('qg_a', 'qg_c', 'consume');
SELECT throttle_jobs.grant_queue('qg_a', 'qg_m', 'manage');
SELECT throttle_jobs.grant_queue('qg_a', 'qg_team', 'consume');
SELECT throttle_jobs.grant_queue('qg_h', 'qg_c', 'consume');
SELECT throttle_jobs.grant_queue('qg_a', 'qg_gone', 'manage');
-- granting again changes nothing
SELECT throttle_jobs.grant_queue('qg_a', 'qg_p', 'produce');
RESET ROLE;
SELECT oid AS gone_oid FROM pg_roles WHERE rolname = 'qg_gone' \gset
DROP ROLE qg_gone;
SELECT queue, grantee::oid = :gone_oid AS dangling, privilege, granted_by
FROM throttle_jobs.queue_grants WHERE queue LIKE 'qg\_%' ORDER BY queue, privilege, grantee::text;

-- Jobs in every state: in qg_a one archived, one dead, one running (its
-- lease token kept) and one available; one running job in qg_b; one ready
-- job in each handler queue.
SELECT throttle_jobs.enqueue('qg_a', jsonb_build_object('n', i)) > 0 AS enqueued
FROM generate_series(1, 4) i;
SELECT throttle_jobs.complete(id, lease_token) FROM throttle_jobs.reserve('qg_a', 'setup');
SELECT throttle_jobs.fail(id, lease_token, 'boom', retryable => false) FROM throttle_jobs.reserve('qg_a', 'setup');
SELECT id AS run_id, lease_token AS run_tok FROM throttle_jobs.reserve('qg_a', 'setup') \gset
SELECT id AS live_id FROM throttle_jobs.jobs WHERE queue = 'qg_a' AND state = 'available' \gset
SELECT id AS dead_id FROM throttle_jobs.dead_letters WHERE queue = 'qg_a' \gset
SELECT throttle_jobs.enqueue('qg_b', '{"secret": true}', unique_key => 'b-key') > 0 AS enqueued;
SELECT id AS b_id, lease_token AS b_tok FROM throttle_jobs.reserve('qg_b', 'setup') \gset
SELECT throttle_jobs.enqueue('qg_h') > 0 AS enqueued, throttle_jobs.enqueue('qg_h2') > 0 AS enqueued;

-- Every function that takes a queue or a job, with arguments that let it run.
INSERT INTO qg.calls (call, stmt) VALUES
  ('enqueue', $$SELECT throttle_jobs.enqueue('qg_a')$$),
  ('enqueue_batch', $$SELECT throttle_jobs.enqueue_batch('qg_a', '[{}, {"unique_key": "k"}]')$$),
  ('enqueue qg_b', $$SELECT throttle_jobs.enqueue('qg_b')$$),
  ('reserve', $$SELECT * FROM throttle_jobs.reserve('qg_a', 'w')$$),
  ('reserve qg_b', $$SELECT * FROM throttle_jobs.reserve('qg_b', 'w')$$),
  ('complete_and_reserve', format($$SELECT * FROM throttle_jobs.complete_and_reserve('qg_a', 'w', '{%s}', '{%s}')$$, :run_id, :'run_tok')),
  ('complete_and_reserve, a qg_b job', format($$SELECT * FROM throttle_jobs.complete_and_reserve('qg_a', 'w', '{%s}', '{%s}')$$, :b_id, :'b_tok')),
  ('complete', format($$SELECT throttle_jobs.complete(%s, %L, '{"r": 1}')$$, :run_id, :'run_tok')),
  ('complete, a qg_b job', format($$SELECT throttle_jobs.complete(%s, %L)$$, :b_id, :'b_tok')),
  ('fail', format($$SELECT throttle_jobs.fail(%s, %L, 'e')$$, :run_id, :'run_tok')),
  ('snooze', format($$SELECT throttle_jobs.snooze(%s, %L, '1 min')$$, :run_id, :'run_tok')),
  ('heartbeat', format($$SELECT throttle_jobs.heartbeat(%s, %L)$$, :run_id, :'run_tok')),
  ('explain_job live', format('SELECT throttle_jobs.explain_job(%s)', :live_id)),
  ('explain_job dead', format('SELECT throttle_jobs.explain_job(%s)', :dead_id)),
  ('run_jobs qg_h', $$SELECT throttle_jobs.run_jobs('qg_h')$$),
  ('alter_queue', $$SELECT throttle_jobs.alter_queue('qg_a', max_attempts => 3)$$),
  ('alter_queue handler', $$SELECT throttle_jobs.alter_queue('qg_a', handler => 'qg.handler(jsonb)')$$),
  ('pause_queue', $$SELECT throttle_jobs.pause_queue('qg_a')$$),
  ('resume_queue', $$SELECT throttle_jobs.resume_queue('qg_a')$$),
  ('cancel', format('SELECT throttle_jobs.cancel(%s)', :live_id)),
  ('retry_dead(id)', format('SELECT throttle_jobs.retry_dead(%s)', :dead_id)),
  ('retry_dead(queue)', $$SELECT throttle_jobs.retry_dead('qg_a')$$),
  ('purge_dead', $$SELECT throttle_jobs.purge_dead('qg_a')$$),
  ('grant_queue', $$SELECT throttle_jobs.grant_queue('qg_a', 'qg_none', 'consume')$$),
  ('revoke_queue', $$SELECT throttle_jobs.revoke_queue('qg_a', 'qg_c', 'consume')$$),
  ('drop_queue', $$SELECT throttle_jobs.drop_queue('qg_a', force => true)$$);

-- As the extension owner (a superuser) every call runs.
SELECT count(*) AS calls, count(*) FILTER (WHERE qg.try_as(current_user, stmt) = 'ok') AS ran
FROM qg.calls;

-- By role: 'ok' = allowed (and rolled back), 42501 = refused.  Capability
-- roles: every queue, as before (42501 where the role lacks EXECUTE);
-- owner and manage: everything on qg_a (the handler: the owner alone);
-- consume (qg_c, and qg_member through qg_team): reserve, finish, explain,
-- run_jobs; produce: enqueue only; none: nothing.  No grant reaches qg_b,
-- and a lease token alone is not enough.
SELECT call,
       qg.try_as('qg_none', stmt) AS none,
       qg.try_as('qg_producer', stmt) AS producer,
       qg.try_as('qg_worker', stmt) AS worker,
       qg.try_as('qg_admin', stmt) AS admin,
       qg.try_as('qg_owner', stmt) AS owner,
       qg.try_as('qg_p', stmt) AS p,
       qg.try_as('qg_c', stmt) AS c,
       qg.try_as('qg_m', stmt) AS m,
       qg.try_as('qg_member', stmt) AS member
FROM qg.calls ORDER BY n;

-- Nothing above was kept.
SELECT queue, state, count(*) FROM throttle_jobs.jobs WHERE queue LIKE 'qg\_%' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT name, paused, max_attempts, handler FROM throttle_jobs.queues WHERE name LIKE 'qg\_%' ORDER BY name;

-- The messages: the queue and the privilege, the job when a job was given.
SET ROLE qg_p;
SELECT * FROM throttle_jobs.reserve('qg_a', 'w');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.complete(:run_id, :'run_tok');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE qg_c;
SELECT * FROM throttle_jobs.complete_and_reserve('qg_a', 'w', ARRAY[:run_id, :b_id], ARRAY[:'run_tok', :'b_tok']::uuid[]);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.pause_queue('qg_a');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- (with its hint)
\set VERBOSITY default
SET ROLE qg_none;
SELECT throttle_jobs.enqueue('qg_a');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
\set VERBOSITY terse
-- the refused complete_and_reserve completed nothing: the job still runs
SELECT id = :run_id AS same_job, state FROM throttle_jobs.jobs WHERE id = :run_id;

-- The views show the rows of the queues the reader may consume (queues:
-- any privilege; queue_grants: manage), as queue:count.
CREATE FUNCTION qg.visible(view text, col text) RETURNS text LANGUAGE sql AS $$
SELECT format('SELECT string_agg(%1$s || '':'' || n, '' '' ORDER BY %1$s) FROM (SELECT %1$s, count(*) AS n FROM throttle_jobs.%2$s WHERE %1$s LIKE ''qg\_%%'' GROUP BY 1) s', col, view)
$$;
SELECT v.view, qg.see_as('qg_none', qg.visible(v.view, v.col)) AS none,
       qg.see_as('qg_worker', qg.visible(v.view, v.col)) AS worker,
       qg.see_as('qg_admin', qg.visible(v.view, v.col)) AS admin,
       qg.see_as('qg_owner', qg.visible(v.view, v.col)) AS owner,
       qg.see_as('qg_p', qg.visible(v.view, v.col)) AS p,
       qg.see_as('qg_c', qg.visible(v.view, v.col)) AS c,
       qg.see_as('qg_m', qg.visible(v.view, v.col)) AS m,
       qg.see_as('qg_member', qg.visible(v.view, v.col)) AS member
FROM (VALUES (1, 'queues', 'name'), (2, 'jobs', 'queue'), (3, 'running_jobs', 'queue'),
             (4, 'dead_letters', 'queue'), (5, 'archived_jobs', 'queue'),
             (6, 'queue_grants', 'queue')) v(o, view, col)
ORDER BY v.o;

-- The checked role is current_user where the function is called: a
-- SECURITY DEFINER function enqueues as its owner, whoever calls it...
CREATE FUNCTION qg.enqueue_a() RETURNS bigint LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog AS $$ SELECT throttle_jobs.enqueue('qg_a', '{"via": "definer"}') $$;
ALTER FUNCTION qg.enqueue_a() OWNER TO qg_p;
GRANT USAGE ON SCHEMA qg TO qg_none, qg_p;
GRANT EXECUTE ON FUNCTION qg.enqueue_a() TO qg_none;
SELECT qg.try_as('qg_none', 'SELECT qg.enqueue_a()') AS none_through_qg_p;
-- ...and a role without the privilege cannot lend it: the same function
-- owned by qg_none is refused to qg_p, who may produce itself.
ALTER FUNCTION qg.enqueue_a() OWNER TO qg_none;
GRANT EXECUTE ON FUNCTION qg.enqueue_a() TO qg_p;
SELECT qg.try_as('qg_p', 'SELECT qg.enqueue_a()') AS p_through_qg_none;
-- a superuser under SET ROLE is that role
SET ROLE qg_none;
SELECT throttle_jobs.reserve('qg_a', 'w');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- run_jobs(NULL) runs only the handler queues its caller may consume:
-- qg_c runs qg_h's job and leaves qg_h2's.
SET ROLE qg_c;
SELECT throttle_jobs.run_jobs() AS ran;
RESET ROLE;
SELECT queue, count(*) AS left FROM throttle_jobs.jobs WHERE queue IN ('qg_h', 'qg_h2') GROUP BY 1 ORDER BY 1;
SET ROLE qg_none;
SELECT throttle_jobs.run_jobs() AS ran;
SELECT throttle_jobs.run_jobs('qg_h2');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- Unique keys are scoped to their queue, shared by the roles that may
-- produce into it: qg_p gets the live job's id for a key of qg_a...
SELECT throttle_jobs.enqueue('qg_a', unique_key => 'a-key') AS a_key_id \gset
SET ROLE qg_p;
SELECT throttle_jobs.enqueue('qg_a', '{"other": "payload"}', unique_key => 'a-key') = :a_key_id AS same_job;
-- ...but can neither squat nor learn the keys of qg_b.
SELECT throttle_jobs.enqueue('qg_b', unique_key => 'b-key');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.enqueue('qg_b', unique_key => 'b-key-2');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS qg_b_jobs FROM throttle_jobs.jobs WHERE queue = 'qg_b';

-- grant_queue and revoke_queue errors, each changing nothing.
SET client_min_messages = notice;
SET ROLE qg_m;
-- not a privilege (22023)
SELECT throttle_jobs.grant_queue('qg_a', 'qg_none', 'read');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.revoke_queue('qg_a', 'qg_c', 'CONSUME');
\echo :LAST_ERROR_SQLSTATE
-- unknown queue (42704)
SELECT throttle_jobs.grant_queue('qg_nope', 'qg_none', 'consume');
\echo :LAST_ERROR_SQLSTATE
-- unknown role, by name and by oid (42704)
SELECT throttle_jobs.grant_queue('qg_a', 'qg_nobody', 'consume');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.grant_queue('qg_a', 4294967294::oid::regrole, 'consume');
\echo :LAST_ERROR_SQLSTATE
-- NULLs (22004)
SELECT throttle_jobs.grant_queue(NULL, 'qg_none', 'consume');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.grant_queue('qg_a', NULL, 'consume');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.grant_queue('qg_a', 'qg_none', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.revoke_queue('qg_a', NULL, 'consume');
\echo :LAST_ERROR_SQLSTATE
-- a queue it does not manage (42501)
SELECT throttle_jobs.grant_queue('qg_b', 'qg_m', 'consume');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.revoke_queue('qg_h', 'qg_c', 'consume');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE qg_c;
SELECT throttle_jobs.grant_queue('qg_a', 'qg_c', 'manage');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- a grantee that cannot use the functions yet gets a notice with a hint
\set VERBOSITY default
SET ROLE qg_m;
SELECT throttle_jobs.grant_queue('qg_a', 'qg_team', 'produce');
RESET ROLE;
\set VERBOSITY terse
SET client_min_messages = warning;
SELECT grantee, privilege FROM throttle_jobs.queue_grants
WHERE queue = 'qg_a' AND grantee::oid <> :gone_oid ORDER BY 1::text, 2;

-- A manager revokes: the role loses the privilege at once; revoking what
-- was not granted returns false.
SET ROLE qg_m;
SELECT throttle_jobs.revoke_queue('qg_a', 'qg_c', 'consume') AS revoked;
SELECT throttle_jobs.revoke_queue('qg_a', 'qg_c', 'consume') AS revoked;
RESET ROLE;
SELECT qg.try_as('qg_c', $$SELECT * FROM throttle_jobs.reserve('qg_a', 'w')$$) AS c_reserve;
-- so does a member that leaves the grantee role
REVOKE qg_team FROM qg_member;
SELECT qg.try_as('qg_member', $$SELECT * FROM throttle_jobs.reserve('qg_a', 'w')$$) AS member_reserve;

-- A dropped grantee grants nothing and breaks nothing; maintain() forgets it.
SELECT count(*) AS dangling FROM throttle_jobs.queue_grant WHERE grantee::oid = :gone_oid;
SELECT throttle_jobs.maintain() IS NOT NULL AS maintained;
SELECT count(*) AS dangling FROM throttle_jobs.queue_grant WHERE grantee::oid = :gone_oid;

-- pg_dump keeps the grants (a configuration table of the extension).
SELECT 'throttle_jobs.queue_grant'::regclass = ANY (extconfig) AS dumped
FROM pg_extension WHERE extname = 'throttle_jobs';

-- Dropping a queue drops its grants.
SET ROLE qg_m;
SELECT throttle_jobs.drop_queue('qg_a', force => true);
RESET ROLE;
SELECT count(*) AS grants_left FROM throttle_jobs.queue_grant g
WHERE NOT EXISTS (SELECT FROM throttle_jobs.queue q WHERE q.id = g.queue_id);

-- Clean up.
SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
WHERE name IN ('qg_b', 'qg_h', 'qg_h2');
DROP SCHEMA qg CASCADE;
DROP ROLE qg_owner, qg_admin, qg_producer, qg_worker, qg_p, qg_c, qg_m, qg_team, qg_member, qg_none;
SELECT count(*) AS grants_left FROM throttle_jobs.queue_grant;

-- The filtering views are security barriers: a reader's own condition (here
-- a cast that fails with the value in its message, and a function that
-- reports every row it sees) never sees the rows of queues it may not read.
CREATE ROLE qg_spy NOLOGIN;
CREATE ROLE qg_victim NOLOGIN;
GRANT throttle_jobs_user TO qg_spy;
GRANT throttle_jobs_admin TO qg_victim;
CREATE FUNCTION public.qg_peek(v text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
	RAISE NOTICE 'peeked at %', v;
	RETURN true;
END $$;
SET ROLE qg_victim;
SELECT throttle_jobs.create_queue('qg_secret');
SELECT throttle_jobs.enqueue('qg_secret', '{"card": "4111-1111"}', unique_key => 'u-secret') IS NOT NULL AS enqueued;
SELECT throttle_jobs.create_queue('qg_open');
SELECT throttle_jobs.grant_queue('qg_open', 'qg_spy', 'consume');
SELECT throttle_jobs.enqueue('qg_open', '{"card": "12"}') IS NOT NULL AS enqueued;
RESET ROLE;
SET ROLE qg_spy;
SET client_min_messages = notice;
SELECT count(*) AS cast_leak FROM throttle_jobs.jobs WHERE (payload ->> 'card')::int = 1;
SELECT count(*) AS peeked FROM throttle_jobs.jobs WHERE public.qg_peek(payload::text);
SELECT count(*) AS peeked FROM throttle_jobs.jobs WHERE public.qg_peek(unique_key);
SELECT count(*) AS peeked FROM throttle_jobs.queues WHERE public.qg_peek(name);
SET client_min_messages = warning;
RESET ROLE;
SELECT c.relname, c.reloptions FROM pg_class c
WHERE c.relnamespace = 'throttle_jobs'::regnamespace AND c.relkind = 'v'
  AND c.relname IN ('queues', 'jobs', 'running_jobs', 'dead_letters', 'archived_jobs', 'queue_grants')
ORDER BY c.relname;
SELECT throttle_jobs.drop_queue(q, force => true) FROM unnest(ARRAY['qg_secret', 'qg_open']) q;
DROP FUNCTION public.qg_peek(text);
DROP ROLE qg_spy, qg_victim;
