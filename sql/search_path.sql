\set VERBOSITY terse
SET client_min_messages = warning;

-- Whatever the caller's search_path, every operator, function and type
-- that the extension's own SQL uses resolves to pg_catalog or to the
-- extension's schema.  A schema "evil" shadows what that SQL uses: each
-- evil operator, function, aggregate and domain records who called it
-- into evil.calls and then does what the real one does.  With evil searched
-- first, even before pg_catalog, a superuser calls every function and reads
-- every view of the extension; evil.calls must stay empty.

CREATE SCHEMA evil;
CREATE TABLE evil.calls (who text, what text);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
GRANT INSERT ON evil.calls TO PUBLIC;
CREATE FUNCTION evil.note(what text) RETURNS boolean
LANGUAGE sql AS $$ INSERT INTO evil.calls VALUES (current_user, what) RETURNING true $$;
GRANT EXECUTE ON FUNCTION evil.note(text) TO PUBLIC;

-- Operators: inexact matches (pg_catalog has no operator of these operand
-- types, so PostgreSQL would pick the evil one over a pg_catalog one that
-- needs a cast), the (T, T) variants that a literal on one side makes
-- PostgreSQL look for first (jsonb ->> 'key' looks for ->>(jsonb, jsonb)),
-- and exact shadows of what the extension's SQL uses (found before
-- pg_catalog when evil comes first).
DO $$
DECLARE
	o record;
	n integer := 0;
BEGIN
	FOR o IN SELECT * FROM (VALUES
		-- inexact
		('*', 'float8', 'int4', 'float8', NULL),
		('*', 'int4', 'float8', 'float8', NULL),
		('*', 'interval', 'int4', 'interval', NULL),
		('/', 'float8', 'int4', 'float8', NULL),
		('/', 'interval', 'int4', 'interval', NULL),
		('+', 'timestamptz', 'int4', 'timestamptz', 'l'),
		('-', 'timestamptz', 'int4', 'timestamptz', 'l'),
		('=', 'text', 'varchar', 'bool', NULL),
		('=', 'int8', 'numeric', 'bool', NULL),
		('>', 'int8', 'numeric', 'bool', NULL),
		('||', 'text', 'int4', 'text', 'l || r::text'),
		('~', 'varchar', 'text', 'bool', NULL),
		('=', 'int8[]', 'int8[]', 'bool', NULL),
		('@>', 'text[]', 'text[]', 'bool', NULL),
		-- what a literal on one side looks for first
		('+', 'timestamptz', 'timestamptz', 'timestamptz', 'l'),
		('->>', 'jsonb', 'jsonb', 'text', 'l OPERATOR(pg_catalog.->>) (r OPERATOR(pg_catalog.#>>) ''{}'')'),
		('->', 'jsonb', 'jsonb', 'jsonb', 'l OPERATOR(pg_catalog.->) (r OPERATOR(pg_catalog.#>>) ''{}'')'),
		('?', 'jsonb', 'jsonb', 'bool', 'l OPERATOR(pg_catalog.?) (r OPERATOR(pg_catalog.#>>) ''{}'')'),
		('*', 'interval', 'interval', 'interval', 'l'),
		-- exact shadows
		('=', 'text', 'text', 'bool', NULL),
		('<>', 'text', 'text', 'bool', NULL),
		('=', 'int4', 'int4', 'bool', NULL),
		('=', 'int8', 'int8', 'bool', NULL),
		('>', 'int8', 'int4', 'bool', NULL),
		('>=', 'int4', 'int4', 'bool', NULL),
		('=', 'uuid', 'uuid', 'bool', NULL),
		('<', 'timestamptz', 'timestamptz', 'bool', NULL),
		('<=', 'timestamptz', 'timestamptz', 'bool', NULL),
		('>', 'timestamptz', 'timestamptz', 'bool', NULL),
		('+', 'timestamptz', 'interval', 'timestamptz', NULL),
		('-', 'timestamptz', 'interval', 'timestamptz', NULL),
		('-', 'timestamptz', 'timestamptz', 'interval', NULL),
		('+', 'int4', 'int4', 'int4', NULL),
		('+', 'int8', 'int8', 'int8', NULL),
		('*', 'float8', 'float8', 'float8', NULL),
		('*', 'interval', 'float8', 'interval', NULL),
		('->>', 'jsonb', 'text', 'text', NULL),
		('->', 'jsonb', 'int4', 'jsonb', NULL),
		('||', 'text', 'text', 'text', NULL),
		('||', 'jsonb', 'jsonb', 'jsonb', NULL),
		('~', 'text', 'text', 'bool', NULL)
	) v(op, l, r, res, body)
	LOOP
		n := n + 1;
		EXECUTE format('CREATE FUNCTION evil.op%s(l %s, r %s) RETURNS %s LANGUAGE plpgsql AS %L',
					   n, o.l, o.r, o.res,
					   format('BEGIN PERFORM evil.note(%L); RETURN %s; END',
							  format('%s(%s,%s)', o.op, o.l, o.r),
							  coalesce(o.body, format('l OPERATOR(pg_catalog.%s) r', o.op))));
		EXECUTE format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.op%s)',
					   o.op, o.l, o.r, n);
	END LOOP;
END
$$;

-- Functions of pg_catalog that SQL commonly calls without a schema.
DO $$
DECLARE
	f record;
BEGIN
	FOR f IN SELECT * FROM (VALUES
		('now', '', 'timestamptz', 'pg_catalog.now()'),
		('length', 'a text', 'int4', 'pg_catalog.length(a)'),
		('octet_length', 'a text', 'int4', 'pg_catalog.octet_length(a)'),
		('left', 'a text, b int4', 'text', 'pg_catalog.left(a, b)'),
		('right', 'a text, b int4', 'text', 'pg_catalog.right(a, b)'),
		('substr', 'a text, b int4', 'text', 'pg_catalog.substr(a, b)'),
		('strpos', 'a text, b text', 'int4', 'pg_catalog.strpos(a, b)'),
		('starts_with', 'a text, b text', 'bool', 'pg_catalog.starts_with(a, b)'),
		('replace', 'a text, b text, c text', 'text', 'pg_catalog.replace(a, b, c)'),
		('format', 'a text, VARIADIC b text[]', 'text', 'pg_catalog.format(a, VARIADIC b)'),
		('date_part', 'a text, b timestamptz', 'float8', 'pg_catalog.date_part(a, b)'),
		('date_part', 'a text, b interval', 'float8', 'pg_catalog.date_part(a, b)'),
		('round', 'a numeric', 'numeric', 'pg_catalog.round(a)'),
		('hashtext', 'a text', 'int4', 'pg_catalog.hashtext(a)'),
		('gen_random_uuid', '', 'uuid', 'pg_catalog.gen_random_uuid()'),
		('jsonb_array_length', 'a jsonb', 'int4', 'pg_catalog.jsonb_array_length(a)'),
		('jsonb_build_object', 'VARIADIC a text[]', 'jsonb', 'pg_catalog.jsonb_build_object(VARIADIC a)'),
		('jsonb_build_array', 'VARIADIC a text[]', 'jsonb', 'pg_catalog.jsonb_build_array(VARIADIC a)'),
		('to_jsonb', 'a text', 'jsonb', 'pg_catalog.to_jsonb(a)'),
		('array_to_string', 'a text[], b text', 'text', 'pg_catalog.array_to_string(a, b)'),
		('nextval', 'a regclass', 'int8', 'pg_catalog.nextval(a)'),
		('to_regclass', 'a text', 'regclass', 'pg_catalog.to_regclass(a)'),
		('current_setting', 'a text', 'text', 'pg_catalog.current_setting(a)'),
		('pg_try_advisory_xact_lock', 'a int8', 'bool', 'pg_catalog.pg_try_advisory_xact_lock(a)'),
		('has_function_privilege', 'a oid, b oid, c text', 'bool', 'pg_catalog.has_function_privilege(a, b, c)'),
		('pg_has_role', 'a oid, b oid, c text', 'bool', 'pg_catalog.pg_has_role(a, b, c)')
	) v(name, args, res, body)
	LOOP
		EXECUTE format('CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
					   f.name, f.args, f.res,
					   format('BEGIN PERFORM evil.note(%L); RETURN %s; END', f.name || '()', f.body));
	END LOOP;
END
$$;
CREATE FUNCTION evil.unnest(a int8[]) RETURNS SETOF int8
LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.note('unnest(int8[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION evil.unnest(a text[]) RETURNS SETOF text
LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.note('unnest(text[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
-- Aggregates.
CREATE FUNCTION evil.count_step(s int8) RETURNS int8
LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.note('count(*)'); RETURN s OPERATOR(pg_catalog.+) 1; END $$;
CREATE AGGREGATE evil.count(*) (SFUNC = evil.count_step, STYPE = int8, INITCOND = '0');
CREATE FUNCTION evil.max_step(s int8, v int8) RETURNS int8
LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.note('max(int8)'); RETURN pg_catalog.int8larger(s, v); END $$;
CREATE AGGREGATE evil.max(int8) (SFUNC = evil.max_step, STYPE = int8);
-- Types named in casts: a domain of the same name whose check records the cast.
CREATE DOMAIN evil.text AS pg_catalog.text CHECK (evil.note('type text'));
CREATE DOMAIN evil.jsonb AS pg_catalog.jsonb CHECK (evil.note('type jsonb'));
CREATE DOMAIN evil.timestamptz AS pg_catalog.timestamptz CHECK (evil.note('type timestamptz'));
CREATE DOMAIN evil.uuid AS pg_catalog.uuid CHECK (evil.note('type uuid'));
CREATE DOMAIN evil.int4 AS pg_catalog.int4 CHECK (evil.note('type int4'));
CREATE DOMAIN evil.int8 AS pg_catalog.int8 CHECK (evil.note('type int8'));
CREATE DOMAIN evil.float8 AS pg_catalog.float8 CHECK (evil.note('type float8'));
SELECT (SELECT count(*) FROM pg_operator WHERE oprnamespace = 'evil'::regnamespace) AS operators,
       (SELECT count(*) FROM pg_proc WHERE pronamespace = 'evil'::regnamespace) AS functions,
       (SELECT count(*) FROM pg_type WHERE typnamespace = 'evil'::regnamespace AND typtype = 'd') AS domains;

-- A handler queue owned by a role that is not a superuser.
CREATE ROLE sp_owner NOLOGIN;
GRANT throttle_jobs_admin TO sp_owner;
CREATE FUNCTION public.sp_handler(payload pg_catalog.jsonb) RETURNS pg_catalog.jsonb
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT payload $$;
REVOKE ALL ON FUNCTION public.sp_handler(pg_catalog.jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.sp_handler(pg_catalog.jsonb) TO sp_owner;

-- From here evil is searched first.  The statements below use no
-- operator and no unqualified function or type of their own, so anything
-- evil.calls records comes from the extension.
SET search_path = evil, public, pg_catalog;

-- The trap works: an unqualified call, an inexact operator, a literal on
-- one side of ->> and, evil coming first, even an exact match are caught.  (The literal key is read as jsonb,
-- the type of the other side: evil's ->>(jsonb, jsonb) is found first,
-- and answers 'v'; pg_catalog's ->>(jsonb, text) would find no key "k"
-- with the quotes and answer NULL.)
SELECT now() IS NOT NULL AS unqualified_now,
       2.0::double precision * 3 AS float8_times_int4,
       '{"k": "v"}'::pg_catalog.jsonb ->> '"k"' AS jsonb_literal_key,
       'a'::pg_catalog.text = 'a' AS exact_text_eq;
RESET search_path;
SELECT who, what FROM evil.calls ORDER BY what;
TRUNCATE evil.calls;
SET search_path = evil, public, pg_catalog;

-- Queues: create (a plain one with every option kind, and the handler
-- queue as its owner), alter, pause, resume.
SELECT throttle_jobs.create_queue('sp_q', max_size => 100, on_full => 'error', max_attempts => 2,
                                  backoff_base => '1 hour', backoff_factor => 2,
                                  backoff_max => '2 hours', backoff_jitter => 0.1,
                                  lease => '1 minute', retain_completed => '1 day',
                                  retain_dead => '1 day', fairness => 'round_robin');
SET ROLE sp_owner;
SELECT throttle_jobs.create_queue('sp_h', handler => 'public.sp_handler(pg_catalog.jsonb)');
RESET ROLE;
SELECT throttle_jobs.alter_queue('sp_q', max_attempts => 3, lease => '2 minutes', on_full => 'drop');
SELECT throttle_jobs.pause_queue('sp_q');
SELECT throttle_jobs.resume_queue('sp_q');

-- Limits: a cap, each rate algorithm, a template, an adaptive rate.
SELECT throttle_jobs.set_concurrency_limit('sp:c', 2);
SELECT throttle_jobs.set_concurrency_limit('sp:t*', 1);
SELECT throttle_jobs.set_rate_limit('sp:tb', 100, '1 minute', burst => 10);
SELECT throttle_jobs.set_rate_limit('sp:sw', 100, '1 minute', algorithm => 'sliding_window');
SELECT throttle_jobs.set_rate_limit('sp:fw', 100, '1 minute', algorithm => 'fixed_window');
SELECT throttle_jobs.set_rate_limit('sp:ad*', 100, '1 minute', adaptive => true);
SELECT throttle_jobs.try_acquire('sp:tb') AS try_acquired,
       throttle_jobs.acquire('sp:sw', 2, '1 second') AS acquired,
       throttle_jobs.try_acquire('sp:fw', 1) AS try_acquired_fw,
       throttle_jobs.try_acquire('sp:t1') AS try_acquired_cap;

-- Jobs: enqueue with every option (keys under each kind of limit, a unique
-- key, a later run_at), enqueue_batch, and the same unique key again.
SELECT throttle_jobs.enqueue('sp_q', '{"n": 1}', priority => 5, max_attempts => 2,
                             concurrency_key => 'sp:c', rate_limit_key => 'sp:tb',
                             unique_key => 'sp-u1', cost => 1) AS j1 \gset
SELECT throttle_jobs.enqueue('sp_q', '{"n": 2}', concurrency_key => 'sp:t1', rate_limit_key => 'sp:sw') AS j2 \gset
SELECT throttle_jobs.enqueue('sp_q', '{"n": 3}', rate_limit_key => 'sp:ad1') AS j3 \gset
SELECT throttle_jobs.enqueue('sp_q', '{"n": 4}', rate_limit_key => 'sp:fw') AS j4 \gset
SELECT throttle_jobs.enqueue('sp_q', '{"n": 5}', run_at => '2100-01-01 00:00:00+00') AS j5 \gset
SELECT throttle_jobs.enqueue('sp_q', '{"n": 6}', unique_key => 'sp-u1') OPERATOR(pg_catalog.=) :j1 AS same_unique_job;
SELECT pg_catalog.count(*) AS batch_enqueued
FROM throttle_jobs.enqueue_batch('sp_q', '[{"payload": {"n": 7}}, {"payload": {"n": 8}, "priority": 1, "concurrency_key": "sp:c"}]');
SELECT throttle_jobs.explain_job(:j1) IS NOT NULL AS explained_available,
       throttle_jobs.explain_job(:j5) IS NOT NULL AS explained_scheduled;

-- reserve, heartbeat, snooze, fail, complete, complete_and_reserve.
SELECT r.id AS r1, r.lease_token AS t1 FROM throttle_jobs.reserve('sp_q', 'sp-worker', 1) r \gset
SELECT throttle_jobs.explain_job(:r1) IS NOT NULL AS explained_running;
SELECT throttle_jobs.heartbeat(:r1, :'t1') IS NOT NULL AS heartbeat,
       throttle_jobs.heartbeat(:r1, :'t1', '3 minutes') IS NOT NULL AS heartbeat_extend;
SELECT throttle_jobs.snooze(:r1, :'t1', '0 seconds') AS snoozed;
SELECT r.id AS r1, r.lease_token AS t1 FROM throttle_jobs.reserve('sp_q', 'sp-worker', 1, '1 minute') r \gset
SELECT throttle_jobs.fail(:r1, :'t1', 'first failure') AS failed_retry;
SELECT r.id AS r2, r.lease_token AS t2 FROM throttle_jobs.reserve('sp_q', 'sp-worker') r \gset
SELECT throttle_jobs.fail(:r2, :'t2', 'for good', retryable => false) AS failed_dead;
SELECT r.id AS r3, r.lease_token AS t3 FROM throttle_jobs.reserve('sp_q', 'sp-worker') r \gset
SELECT throttle_jobs.complete(:r3, :'t3', '{"ok": true}') AS completed;
SELECT r.id AS r4, r.lease_token AS t4 FROM throttle_jobs.reserve('sp_q', 'sp-worker') r \gset
SELECT pg_catalog.count(*) AS reserved_after_complete
FROM throttle_jobs.complete_and_reserve('sp_q', 'sp-worker', ARRAY[:r4]::bigint[],
                                        ARRAY[:'t4']::pg_catalog.uuid[], 2, '1 minute');
SELECT throttle_jobs.explain_job(:r2) IS NOT NULL AS explained_dead,
       throttle_jobs.explain_job(:r3) IS NOT NULL AS explained_completed;

-- Dead letters and cancel.
SELECT throttle_jobs.retry_dead(:r2) AS retried_one;
SELECT r.id AS r5, r.lease_token AS t5 FROM throttle_jobs.reserve('sp_q', 'sp-worker') r \gset
SELECT throttle_jobs.fail(:r5, :'t5', 'for good again', retryable => false) IS NOT NULL AS failed_again;
SELECT throttle_jobs.retry_dead('sp_q', died_after => '2000-01-01 00:00:00+00', max_jobs => 10) AS retried_queue;
SELECT throttle_jobs.purge_dead('sp_q', '0 seconds') AS purged;
SELECT throttle_jobs.cancel(:j5) AS cancelled;

-- Handler jobs, run in this session.
SELECT throttle_jobs.enqueue('sp_h', '{"h": 1}') IS NOT NULL AS handler_enqueued;
SELECT throttle_jobs.run_jobs('sp_h') AS ran;

-- Maintenance, statistics, metrics and the pure backoff function.
SELECT throttle_jobs.maintain() IS NOT NULL AS maintained;
SELECT throttle_jobs.metrics() IS NOT NULL AS metrics;
SELECT throttle_jobs.reset_stats('sp_q');
SELECT throttle_jobs.backoff_delay(3) AS backoff_3,
       throttle_jobs.backoff_delay(2, '10 seconds', 3, '1 hour', 0, 0.5) AS backoff_2;

-- Every view of the schema, whatever views there are.
DO $$
DECLARE
	v pg_catalog.regclass;
	n pg_catalog.int8;
BEGIN
	FOR v IN SELECT c.oid FROM pg_catalog.pg_class c
			 WHERE c.relnamespace OPERATOR(pg_catalog.=) 'throttle_jobs'::pg_catalog.regnamespace
			   AND c.relkind OPERATOR(pg_catalog.=) 'v'
	LOOP
		EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s', v) INTO n;
	END LOOP;
END
$$;

-- Limits and queues dropped.
SELECT throttle_jobs.drop_limit('sp:c') AS dropped_cap,
       throttle_jobs.drop_limit('sp:ad*') AS dropped_template;
SELECT throttle_jobs.drop_queue('sp_q', force => true);
SELECT throttle_jobs.drop_queue('sp_h', force => true);

-- Nothing the extension ran resolved to evil.
RESET search_path;
SELECT who, what FROM evil.calls ORDER BY what;

-- Every function of the extension pins search_path = pg_catalog, pg_temp
-- (expect no rows): a function without it runs its SQL with its caller's.
SELECT p.oid::regprocedure AS function_without_pinned_search_path, p.proconfig
FROM pg_proc p
WHERE p.pronamespace = 'throttle_jobs'::regnamespace
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
  -- (the one exception: the skip hints' trigger runs no SQL, see the upgrade script)
  AND p.oid <> 'throttle_jobs._job_ready_trigger()'::regprocedure
ORDER BY p.oid::regprocedure::text;

-- No object of the schema (view, constraint, index, default, function,
-- type) depends on an operator, function or type outside pg_catalog and
-- the schema itself: what they bound at creation is ours or the system's
-- (expect no rows).
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS object,
       pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) AS depends_on
FROM pg_depend d
WHERE CASE d.classid
        WHEN 'pg_rewrite'::regclass THEN
          (SELECT c.relnamespace FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE r.oid = d.objid)
        WHEN 'pg_constraint'::regclass THEN (SELECT c.connamespace FROM pg_constraint c WHERE c.oid = d.objid)
        WHEN 'pg_class'::regclass THEN (SELECT c.relnamespace FROM pg_class c WHERE c.oid = d.objid)
        WHEN 'pg_attrdef'::regclass THEN
          (SELECT c.relnamespace FROM pg_attrdef a JOIN pg_class c ON c.oid = a.adrelid WHERE a.oid = d.objid)
        WHEN 'pg_proc'::regclass THEN (SELECT p.pronamespace FROM pg_proc p WHERE p.oid = d.objid)
        WHEN 'pg_type'::regclass THEN (SELECT t.typnamespace FROM pg_type t WHERE t.oid = d.objid)
      END = 'throttle_jobs'::regnamespace
  AND CASE d.refclassid
        WHEN 'pg_operator'::regclass THEN (SELECT o.oprnamespace FROM pg_operator o WHERE o.oid = d.refobjid)
        WHEN 'pg_proc'::regclass THEN (SELECT p.pronamespace FROM pg_proc p WHERE p.oid = d.refobjid)
        WHEN 'pg_type'::regclass THEN (SELECT t.typnamespace FROM pg_type t WHERE t.oid = d.refobjid)
      END NOT IN ('pg_catalog'::regnamespace, 'throttle_jobs'::regnamespace)
ORDER BY 1, 2;

DROP FUNCTION public.sp_handler(pg_catalog.jsonb);
DROP ROLE sp_owner;
DROP SCHEMA evil CASCADE;
