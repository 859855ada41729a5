-- throttle_jobs 0.1.0 -> 0.2.0: upgrade script.
--
-- 0.1.0 is released and its install script never changes; every schema
-- change since goes here.  The 0.2.0 install script is built by make from
-- the install guard below, the 0.1.0 script and this file, so a fresh
-- install and an updated one run the same statements (test/t tests that
-- their schemas are equal).
--
-- Every operator and function here is written so that it resolves to
-- pg_catalog or to this schema whatever the search_path: OPERATOR(pg_catalog.x)
-- where the operand types are not an exact match in pg_catalog, and
-- schema-qualified names.
\echo Use "ALTER EXTENSION throttle_jobs UPDATE TO '0.2.0'" to load this file. \quit

-- BEGIN install guard
-- Refuse a schema that another role prepared for us: an object planted in
-- it (an operator, a function, a table) could be bound into our constraints,
-- index predicates, defaults and views, or called by our functions; a role
-- holding CREATE on it could plant one while we install.  The 0.2.0 install
-- script runs this block before anything else; an update runs it too, and
-- then refuses objects in our schema that are not the extension's own.
DO $tj_guard$
DECLARE
	nsp oid;
	ext oid;
	bad text;
BEGIN
	SELECT n.oid INTO nsp FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'throttle_jobs';
	SELECT e.oid INTO ext FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'throttle_jobs';
	IF nsp IS NULL THEN
		RETURN;
	END IF;
	IF EXISTS (SELECT FROM pg_catalog.pg_namespace n
			   JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
			   WHERE n.oid OPERATOR(pg_catalog.=) nsp
				 AND r.rolname OPERATOR(pg_catalog.<>) pg_catalog.current_user() AND NOT r.rolsuper) THEN
		RAISE EXCEPTION 'schema "throttle_jobs" is owned by another role'
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Drop the schema, or create the extension as its owner.';
	END IF;
	SELECT pg_catalog.string_agg(DISTINCT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
												ELSE a.grantee::pg_catalog.regrole::pg_catalog.text END, ', ') INTO bad
	FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
	WHERE n.oid OPERATOR(pg_catalog.=) nsp AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
	  AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner;
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'schema "throttle_jobs" grants CREATE to %', bad
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'A role that may create objects in the extension''s schema could plant operators or functions that the extension would use.',
				  HINT = 'REVOKE CREATE ON SCHEMA throttle_jobs FROM those roles (or drop the schema) first.';
	END IF;
	-- Objects in the schema that are not members of the extension (at the
	-- start of a fresh install: any object at all).  Every object created in
	-- a schema records a dependency on it; the day partitions of job_archive
	-- that maintain() attaches are the extension's too.
	SELECT pg_catalog.string_agg(pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), ', ') INTO bad
	FROM pg_catalog.pg_depend d
	WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
	  AND d.refobjid OPERATOR(pg_catalog.=) nsp
	  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e
					  WHERE e.classid OPERATOR(pg_catalog.=) d.classid
						AND e.objid OPERATOR(pg_catalog.=) d.objid
						AND e.deptype OPERATOR(pg_catalog.=) 'e'
						AND e.refobjid OPERATOR(pg_catalog.=) ext)
	  AND NOT (d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
			   AND d.objid OPERATOR(pg_catalog.=) ext)
	  AND NOT (d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
			   AND EXISTS (SELECT FROM pg_catalog.pg_inherits i
						   WHERE i.inhrelid OPERATOR(pg_catalog.=) d.objid));
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'schema "throttle_jobs" already holds objects that are not the extension''s'
			USING ERRCODE = 'duplicate_schema',
				  DETAIL = pg_catalog.format('Found: %s.', bad),
				  HINT = 'Create the extension into a new, empty schema: drop or move those objects first.';
	END IF;
END
$tj_guard$;
-- END install guard

------------------------------------------------------------------------------
-- Maintenance: a lock no other role can hold, settings-proof partition DDL
------------------------------------------------------------------------------

-- _maintain_archive serialised its passes with an advisory lock whose key
-- anyone could compute and hold (stopping archive maintenance for good), and
-- wrote partition bounds through the session's DateStyle and TimeZone (which
-- a database owner can set so that every pass fails).  It now locks a row
-- of its own and writes bounds in ISO form; and it drops no partition while
-- no queue exists (a restore that has not loaded the queues yet).
CREATE TABLE throttle_jobs.maintenance_lock (
	id			integer NOT NULL CONSTRAINT maintenance_lock_pkey PRIMARY KEY
		CONSTRAINT maintenance_lock_one CHECK (id OPERATOR(pg_catalog.=) 1)
);
INSERT INTO throttle_jobs.maintenance_lock (id) VALUES (1);
REVOKE ALL ON throttle_jobs.maintenance_lock FROM PUBLIC;
COMMENT ON TABLE throttle_jobs.maintenance_lock IS 'One row, locked by a maintenance pass so that passes do not overlap (not dumped: the install script makes it).';

CREATE OR REPLACE FUNCTION throttle_jobs._maintain_archive(now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $$
DECLARE
	day date;
	part text;
	lo timestamptz;
	hi timestamptz;
	longest interval;
	created integer := 0;
	dropped integer := 0;
	skipped integer := 0;
	deleted bigint := 0;
BEGIN
	-- One pass at a time: the row lock of our own row, which no other role
	-- can take (an advisory lock's key anyone can compute and hold).
	PERFORM FROM throttle_jobs.maintenance_lock l WHERE l.id OPERATOR(pg_catalog.=) 1
		FOR UPDATE SKIP LOCKED;
	IF NOT FOUND THEN
		RETURN pg_catalog.jsonb_build_object('busy', true);
	END IF;

	FOR i IN 0..2 LOOP
		day := (now AT TIME ZONE 'UTC')::date + i;
		part := 'job_archive_p' || pg_catalog.to_char(day, 'YYYYMMDD');
		lo := day::timestamp AT TIME ZONE 'UTC';
		hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
		CONTINUE WHEN pg_catalog.to_regclass('throttle_jobs.' || part) IS NOT NULL;
		-- rows of that day already in the default partition would block it
		CONTINUE WHEN EXISTS (SELECT 1 FROM throttle_jobs.job_archive_default a
							  WHERE a.finished_at >= lo AND a.finished_at < hi);
		BEGIN
			-- the bounds in ISO form with their offset, read the same way
			-- whatever DateStyle and TimeZone the session has
			EXECUTE pg_catalog.format(
				'CREATE TABLE throttle_jobs.%I PARTITION OF throttle_jobs.job_archive FOR VALUES FROM (%L) TO (%L)',
				part,
				pg_catalog.to_char(lo AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'),
				pg_catalog.to_char(hi AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'));
			EXECUTE pg_catalog.format('REVOKE ALL ON throttle_jobs.%I FROM PUBLIC', part);
			EXECUTE pg_catalog.format('COMMENT ON TABLE throttle_jobs.%I IS %L', part,
				'Archive rows finished on ' OPERATOR(pg_catalog.||) pg_catalog.to_char(day, 'YYYY-MM-DD')
				OPERATOR(pg_catalog.||) ' (UTC); dropped whole by maintain().');
			created := created + 1;
		EXCEPTION WHEN lock_not_available OR check_violation THEN
			-- busy, or rows of that day reached the default partition meanwhile
			skipped := skipped + 1;
		END;
	END LOOP;

	-- Unknown means keep: with no queue (none made yet, or a restore that
	-- has not loaded them yet) nothing proves a partition past retention.
	SELECT pg_catalog.max(q.retain_completed) INTO longest FROM throttle_jobs.queue q;
	FOR part, hi IN
		SELECT c.relname,
			   (pg_catalog.to_date(pg_catalog.substr(c.relname, 14), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
		FROM pg_catalog.pg_inherits i
		JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'throttle_jobs.job_archive'::pg_catalog.regclass
		  AND c.relname OPERATOR(pg_catalog.~) '^job_archive_p[0-9]{8}$'
		ORDER BY c.relname
	LOOP
		CONTINUE WHEN longest IS NULL OR hi > now - longest;
		BEGIN
			EXECUTE pg_catalog.format('DROP TABLE throttle_jobs.%I', part);
			dropped := dropped + 1;
		EXCEPTION WHEN lock_not_available THEN
			skipped := skipped + 1;
		END;
	END LOOP;

	DELETE FROM throttle_jobs.job_archive a
	USING throttle_jobs.queue q
	WHERE q.id = a.queue_id
	  AND a.finished_at < now - q.retain_completed - '1 day'::interval;
	GET DIAGNOSTICS deleted = ROW_COUNT;

	RETURN pg_catalog.jsonb_build_object('partitions_created', created,
		'partitions_dropped', dropped, 'partitions_skipped', skipped,
		'rows_deleted', deleted);
END
$$;


------------------------------------------------------------------------------
-- Handlers, workers and run_jobs (issue 10: security-restricted handlers)
------------------------------------------------------------------------------

-- run_jobs runs as its caller (SECURITY INVOKER): it must know who called
-- it, to fire the caller's pending deferred trigger events as the caller
-- before any handler runs (a handler's SET CONSTRAINTS ALL IMMEDIATE would
-- otherwise fire them as the queue's owner).  Its C code runs its own
-- statements as the function's owner (the extension's owner) and each
-- handler as its queue's owner inside a security-restricted operation.
-- The pinned search_path stays.
ALTER FUNCTION throttle_jobs.run_jobs(text, integer, interval) SECURITY INVOKER;
COMMENT ON FUNCTION throttle_jobs.run_jobs(text, integer, interval) IS 'Runs up to max_jobs ready handler jobs (of one queue, or of every handler queue) for at most max_time in this session, each in a subtransaction, as the queue owner inside a security-restricted operation; refuses a session that has temporary objects; leaves constraints IMMEDIATE; returns how many ran.';


------------------------------------------------------------------------------
-- C-side SQL and operator hardening
------------------------------------------------------------------------------

-- Where each name the extension's SQL uses is resolved, and why that is
-- pg_catalog or this schema whatever the caller's search_path:
--
-- * Function bodies run with the search_path of their call unless the
--   function pins one.  Every SQL and PL/pgSQL function of 0.1.0 pins
--   search_path = pg_catalog, pg_temp (no schema that another role can
--   write to is searched, and pg_temp, searched last, never supplies
--   functions or operators), and so do the SECURITY DEFINER C functions,
--   under which every statement of src/*.c runs.  The C functions below
--   did not: none runs SQL today (the create_queue and alter_queue wrappers
--   call their internal function through fmgr, by a qualified name), but
--   any statement added to them, or to the shared code they call, would
--   have resolved its operators through the caller's path.  They now pin
--   it too, so that every function of the extension does (the
--   search_path regression test checks this for every function, including
--   those added later).
-- * Views, CHECK constraints, index predicates, column defaults and
--   SQL-standard function bodies (BEGIN ATOMIC, RETURN) bind their
--   operators and functions once, when CREATE EXTENSION or ALTER EXTENSION
--   UPDATE creates them.  Both run the script with search_path set to
--   this schema and pg_temp, pg_catalog being searched implicitly first,
--   and the install guard above refuses a schema that holds anything but
--   the extension's own objects (or that grants CREATE to another role),
--   so every name binds to pg_catalog or to this schema.  The
--   search_path test checks that no object of the schema depends on an
--   operator, function or type in any other schema.
-- * Statements in src/*.c qualify every function (pg_catalog.count, ...)
--   and every type in a cast (::pg_catalog.interval), and use operators
--   whose operand types match a pg_catalog operator exactly, a literal on
--   one side being of the other side's type (text = 'running'); an
--   operator for which pg_catalog has no exact match (float8 * int4,
--   jsonb ->> 'key': PostgreSQL first looks for ->>(jsonb, jsonb) along
--   the whole path) is written OPERATOR(pg_catalog.x) or given casts on
--   both sides.  The background workers set search_path = pg_catalog,
--   pg_temp before they run any statement.
ALTER FUNCTION throttle_jobs._check_interval(interval, text, boolean)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs._lock_queue(text)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs._check_queue_options(boolean, text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, text)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs.create_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs.alter_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs.backoff_delay(integer, interval, double precision, interval, double precision, double precision)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs._rate_admit(text, integer, interval, integer, integer, timestamptz, double precision, timestamptz, timestamptz[], integer[])
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs._adaptive_factor(double precision, bigint, bigint, double precision, double precision)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs.stats_queues()
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs._stats_histograms()
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs.stats_keys()
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs.stats_state()
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs._stats_note(integer, text, bigint, timestamptz, integer)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs._stats_forget()
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION throttle_jobs._reset_stats(integer)
	SET search_path = pg_catalog, pg_temp;



------------------------------------------------------------------------------
-- Per-queue privileges (grant_queue, revoke_queue, queue_grants)
------------------------------------------------------------------------------



------------------------------------------------------------------------------
-- Limits: try_acquire/acquire, statistics bounds, input bounds
------------------------------------------------------------------------------

-- try_acquire() and acquire() take any key's tokens and hold its mutex:
-- they are a capability of their own, no longer part of producing or
-- working.  throttle_jobs_limiter may call them (admins through
-- membership); like the other capability roles it is cluster-wide and
-- created only where missing.
DO $tj_limiter$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r
				   WHERE r.rolname OPERATOR(pg_catalog.=) 'throttle_jobs_limiter') THEN
		CREATE ROLE throttle_jobs_limiter NOLOGIN;
	END IF;
	IF NOT pg_catalog.pg_has_role('throttle_jobs_admin', 'throttle_jobs_limiter', 'MEMBER') THEN
		GRANT throttle_jobs_limiter TO throttle_jobs_admin;
	END IF;
END
$tj_limiter$;

GRANT USAGE ON SCHEMA throttle_jobs TO throttle_jobs_limiter;
REVOKE EXECUTE ON FUNCTION throttle_jobs.try_acquire(text, integer),
						throttle_jobs.acquire(text, integer, interval)
	FROM throttle_jobs_producer, throttle_jobs_worker, throttle_jobs_admin;
GRANT EXECUTE ON FUNCTION throttle_jobs.try_acquire(text, integer),
					   throttle_jobs.acquire(text, integer, interval)
	TO throttle_jobs_limiter;

COMMENT ON FUNCTION throttle_jobs.try_acquire(text, integer) IS 'Takes cost tokens of a key''s rate limit now (and, on a capped key, holds it to transaction end), or returns false holding nothing.';
COMMENT ON FUNCTION throttle_jobs.acquire(text, integer, interval) IS 'try_acquire, waiting up to timeout; false (holding nothing) if the time ran out.';



------------------------------------------------------------------------------
-- Throttling under flow: waiting lists and release (issue 11)
------------------------------------------------------------------------------



------------------------------------------------------------------------------
-- End of the 0.1.0 -> 0.2.0 changes
------------------------------------------------------------------------------
