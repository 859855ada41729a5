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
	-- Default privileges of the installing role (ALTER DEFAULT PRIVILEGES,
	-- for all schemas or for ours) would grant other roles rights on the
	-- extension's functions, tables and sequences, around its own grants.
	SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format('%s on %s',
				CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
					 ELSE a.grantee::pg_catalog.regrole::pg_catalog.text END,
				CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences'
					 WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' ELSE 'schemas' END), ', ') INTO bad
	FROM pg_catalog.pg_default_acl d, pg_catalog.aclexplode(d.defaclacl) a
	WHERE d.defaclrole OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r
											 WHERE r.rolname OPERATOR(pg_catalog.=) pg_catalog.current_user())
	  AND (d.defaclnamespace OPERATOR(pg_catalog.=) 0 OR d.defaclnamespace OPERATOR(pg_catalog.=) nsp)
	  AND d.defaclobjtype OPERATOR(pg_catalog.<>) 'n'
	  AND a.grantee OPERATOR(pg_catalog.<>) d.defaclrole
	  -- PUBLIC's EXECUTE on functions and USAGE on types are the built-in
	  -- defaults, which the scripts revoke (functions) or allow (types)
	  AND NOT (a.grantee OPERATOR(pg_catalog.=) 0
			   AND d.defaclobjtype OPERATOR(pg_catalog.=) ANY ('{f,T}'::pg_catalog."char"[]));
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'default privileges of role "%" would grant rights on the extension''s objects: %',
			pg_catalog.current_user(), bad
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Objects that the extension creates would carry these grants, which bypass its own functions and checks.',
				  HINT = 'Install (or update) as a superuser role without such ALTER DEFAULT PRIVILEGES entries, or revoke them first.';
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

-- Retention keeps what it cannot prove is past every queue's retention:
-- no queue (none yet, or a restore that has not loaded them) drops nothing,
-- and a day partition holding a row of a queue that does not exist is kept.
-- Partitions are made only once a queue exists, each with its own indexes.
CREATE OR REPLACE FUNCTION throttle_jobs._maintain_archive(now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
-- the day partitions go where the archive is, however the database's
-- settings point default_tablespace (pg_global made every pass fail)
SET default_tablespace = ''
SET default_table_access_method = 'heap'
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
	grantee text;
	unknown boolean;
	kept integer := 0;
BEGIN
	-- One pass at a time: the row lock of our own row, which no other role
	-- can take (an advisory lock's key anyone can compute and hold).
	PERFORM FROM throttle_jobs.maintenance_lock l WHERE l.id OPERATOR(pg_catalog.=) 1
		FOR UPDATE SKIP LOCKED;
	IF NOT FOUND THEN
		RETURN pg_catalog.jsonb_build_object('busy', true);
	END IF;

	-- No queue, nothing to archive: make no partition (a restore that has
	-- not loaded its queues yet is about to create its own).
	FOR i IN 0..2 LOOP
		EXIT WHEN NOT EXISTS (SELECT FROM throttle_jobs.queue);
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
			-- the partition's own indexes (job_archive has none: see above)
			EXECUTE pg_catalog.format('CREATE INDEX %I ON throttle_jobs.%I (queue_id, finished_at)',
									  part OPERATOR(pg_catalog.||) '_queue_idx', part);
			EXECUTE pg_catalog.format('CREATE INDEX %I ON throttle_jobs.%I (id)',
									  part OPERATOR(pg_catalog.||) '_id_idx', part);
			EXECUTE pg_catalog.format('REVOKE ALL ON throttle_jobs.%I FROM PUBLIC', part);
			-- and from whomever default privileges granted rights on it
			FOR grantee IN
				SELECT DISTINCT a.grantee::pg_catalog.regrole::pg_catalog.text
				FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
				WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('throttle_jobs.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(part))
				  AND a.grantee OPERATOR(pg_catalog.<>) c.relowner AND a.grantee OPERATOR(pg_catalog.<>) 0
			LOOP
				EXECUTE pg_catalog.format('REVOKE ALL ON throttle_jobs.%I FROM %s', part, grantee);
			END LOOP;
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
			-- and a row of a queue that does not exist (yet) has no known
			-- retention: keep its partition (one scan, of a partition
			-- that is otherwise dropped now)
			EXECUTE pg_catalog.format(
				'SELECT EXISTS (SELECT FROM throttle_jobs.%I a WHERE NOT EXISTS '
				'(SELECT FROM throttle_jobs.queue q WHERE q.id OPERATOR(pg_catalog.=) a.queue_id))', part)
				INTO unknown;
			IF unknown THEN
				kept := kept + 1;
				CONTINUE;
			END IF;
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
		'partitions_kept_unknown_queue', kept,
		'rows_deleted', deleted);
END
$$;
REVOKE ALL ON FUNCTION throttle_jobs._maintain_archive(timestamptz) FROM PUBLIC;


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

-- A role holds a privilege on a queue ('produce': enqueue; 'consume':
-- reserve and finish its jobs, read them; 'manage': all of these, and
-- alter, pause, drop, cancel, dead letters, grants) when it has the
-- privileges of throttle_jobs_admin (manage on every queue),
-- throttle_jobs_worker (consume on every queue), throttle_jobs_producer
-- (produce on every queue), the queue's owner (manage), or a grantee of the
-- queue in queue_grant.  src/privilege.c holds the rule; the views below
-- repeat it in SQL.

-- Per-queue grantees need EXECUTE on the functions and SELECT on the views:
-- throttle_jobs_user gives them, and holding it alone gives access to no
-- queue.  Created where missing, like the capability roles; they are not
-- made members of it.
DO $tj$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles
				   WHERE rolname OPERATOR(pg_catalog.=) 'throttle_jobs_user') THEN
		CREATE ROLE throttle_jobs_user NOLOGIN;
	END IF;
END
$tj$;
GRANT USAGE ON SCHEMA throttle_jobs TO throttle_jobs_user;

-- Grants of a privilege on a queue to a role (and, through
-- has_privs_of_role, to its members).  A grantee dropped later grants
-- nothing; maintain() deletes its rows.  Dumped: user data (regrole, like
-- queue.owner, so that a dump names the role).
CREATE TABLE throttle_jobs.queue_grant (
	queue_id			integer NOT NULL
		CONSTRAINT queue_grant_queue_id_fkey REFERENCES throttle_jobs.queue (id) ON DELETE CASCADE,
	grantee				regrole NOT NULL,
	privilege			text NOT NULL
		CONSTRAINT queue_grant_privilege_check
		CHECK (privilege OPERATOR(pg_catalog.=) ANY (ARRAY['produce', 'consume', 'manage']::pg_catalog.text[])),
	granted_by			regrole NOT NULL,
	granted_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT queue_grant_pkey PRIMARY KEY (queue_id, grantee, privilege)
);
COMMENT ON TABLE throttle_jobs.queue_grant IS 'Per-queue privileges (produce, consume, manage) granted to roles by grant_queue().';
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.queue_grant', '');
REVOKE ALL ON throttle_jobs.queue_grant FROM PUBLIC;

-- The C entry points that take a queue or a job read the calling role
-- (current_user where they are called) and then run as their owner, as
-- SECURITY DEFINER did (src/privilege.c): SECURITY INVOKER from now on.
ALTER FUNCTION throttle_jobs.enqueue(text, jsonb, timestamptz, integer, integer, text, text, text, integer) SECURITY INVOKER;
ALTER FUNCTION throttle_jobs.enqueue_batch(text, jsonb) SECURITY INVOKER;
ALTER FUNCTION throttle_jobs.reserve(text, text, integer, interval) SECURITY INVOKER;
ALTER FUNCTION throttle_jobs.complete(bigint, uuid, jsonb) SECURITY INVOKER;
ALTER FUNCTION throttle_jobs.complete_and_reserve(text, text, bigint[], uuid[], integer, interval) SECURITY INVOKER;
ALTER FUNCTION throttle_jobs.fail(bigint, uuid, text, interval, boolean) SECURITY INVOKER;
ALTER FUNCTION throttle_jobs.snooze(bigint, uuid, interval) SECURITY INVOKER;
ALTER FUNCTION throttle_jobs.heartbeat(bigint, uuid, interval) SECURITY INVOKER;

-- run_jobs: the caller must consume the queue it names; run_jobs(NULL) runs
-- only the handler queues its caller may consume.  (Its SET search_path
-- gives it the GUC nest level that keeps its caller: src/privilege.c.)
ALTER FUNCTION throttle_jobs.run_jobs(text, integer, interval) SECURITY INVOKER;

-- The functions that take a queue or a job are C entry points, SECURITY
-- INVOKER, that check the calling role (create_queue, alter_queue,
-- pause_queue, resume_queue, grant_queue and revoke_queue: src/queue.c,
-- src/privilege.c).  explain_job (src/explain.c) checks the caller and
-- asks the C API for the governing limits, then has the internal function
-- below word the report.

-- explain_job's report of job id, for a caller that may consume its queue
-- (live, dead or archived): cap_limit and rate_limit are the limits that
-- govern its concurrency key and, when it waits for a rate, its blocked key
-- (NULL: none); the running holders of its concurrency key are listed by
-- id for the queues in visible_queues, and only counted for the others.
CREATE FUNCTION throttle_jobs._explain_job(id bigint, cap_limit text, rate_limit text,
										   visible_queues integer[])
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j throttle_jobs.job;
	q throttle_jobs.queue;
	d throttle_jobs.job_dead;
	a record;
	lim throttle_jobs.key_limit;
	reasons jsonb := '[]';
	ahead bigint;
	holders jsonb;
	nholders bigint;
	until timestamptz;
BEGIN
	SELECT * INTO j FROM throttle_jobs.job x WHERE x.id = _explain_job.id;
	IF NOT FOUND THEN
		SELECT * INTO d FROM throttle_jobs.job_dead x WHERE x.id = _explain_job.id;
		IF FOUND THEN
			RETURN pg_catalog.jsonb_build_object('id', id, 'state', 'dead',
				'reasons', pg_catalog.jsonb_build_array(pg_catalog.format('dead because %s', d.reason)),
				'died_at', d.died_at, 'attempt', d.attempt,
				'last_error', (d.errors -> (-1)) ->> 'error');
		END IF;
		SELECT x.state, x.finished_at, x.queue_id INTO a FROM throttle_jobs.job_archive x
		WHERE x.id = _explain_job.id LIMIT 1;
		IF FOUND THEN
			RETURN pg_catalog.jsonb_build_object('id', id, 'state', a.state,
				'reasons', pg_catalog.jsonb_build_array(pg_catalog.format('%s at %s', a.state, a.finished_at)),
				'finished_at', a.finished_at);
		END IF;
		RETURN pg_catalog.jsonb_build_object('id', id, 'state', 'unknown',
			'reasons', pg_catalog.jsonb_build_array('no live, dead or archived job has this id'));
	END IF;
	SELECT * INTO q FROM throttle_jobs.queue x WHERE x.id = j.queue_id;

	IF j.state = 'running' THEN
		RETURN pg_catalog.jsonb_build_object('id', id, 'queue', q.name, 'state', 'running',
			'reasons', pg_catalog.jsonb_build_array(pg_catalog.format('running on worker %s, attempt %s of %s, lease until %s',
				j.worker, j.attempt, coalesce(j.max_attempts, q.max_attempts), j.lease_until)),
			'worker', j.worker, 'lease_until', j.lease_until, 'attempt', j.attempt);
	END IF;

	IF q.paused THEN
		reasons := reasons || pg_catalog.jsonb_build_array(pg_catalog.format('queue %s is paused', q.name));
	END IF;
	IF j.run_at > pg_catalog.now() THEN
		reasons := reasons || pg_catalog.jsonb_build_array(CASE WHEN j.attempt > 0
			THEN pg_catalog.format('retrying after attempt %s failed (%s): scheduled until %s',
								   j.attempt, (j.errors -> (-1)) ->> 'error', j.run_at)
			ELSE pg_catalog.format('scheduled until %s', j.run_at) END);
	END IF;

	-- the concurrency cap of its key, whether or not it is parked yet
	IF j.concurrency_key IS NOT NULL THEN
		SELECT * INTO lim FROM throttle_jobs.key_limit l
		WHERE l.key OPERATOR(pg_catalog.=) cap_limit;
		IF FOUND THEN
			-- holders in queues the caller may not consume are only counted
			SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('id', r.id, 'worker', r.worker) ORDER BY r.id)
					   FILTER (WHERE r.queue_id OPERATOR(pg_catalog.=) ANY (visible_queues)),
				   pg_catalog.count(*)
			INTO holders, nholders FROM throttle_jobs.job r
			WHERE r.state = 'running' AND r.concurrency_key = j.concurrency_key;
			IF nholders >= lim.max_running THEN
				reasons := reasons || pg_catalog.jsonb_build_array(pg_catalog.format(
					'concurrency key %s is at its cap of %s (limit %s), held by %s%s',
					j.concurrency_key, lim.max_running, lim.key, coalesce(holders, '[]'),
					CASE WHEN nholders > pg_catalog.jsonb_array_length(coalesce(holders, '[]'))
						 THEN pg_catalog.format(' and %s running jobs of other queues',
							nholders - pg_catalog.jsonb_array_length(coalesce(holders, '[]'))) ELSE '' END));
			END IF;
		END IF;
	END IF;
	-- A rate wait: the key's own next time (key_rate_state.next_at, kept by
	-- the releases) is later than the job's blocked_until when tokens ran
	-- out again since the job was judged.
	until := j.blocked_until;
	IF j.state = 'throttled' AND j.blocked_until IS NOT NULL AND j.blocked_until < 'infinity' THEN
		until := greatest(j.blocked_until,
			(SELECT st.next_at FROM throttle_jobs.key_rate_state st WHERE st.key = j.blocked_key));
	END IF;
	IF j.state = 'throttled' AND j.blocked_until IS NOT NULL THEN
		SELECT * INTO lim FROM throttle_jobs.key_limit l
		WHERE l.key OPERATOR(pg_catalog.=) rate_limit;
		reasons := reasons || pg_catalog.jsonb_build_array(CASE
			WHEN j.blocked_until = 'infinity' THEN pg_catalog.format(
				'its cost %s exceeds what rate key %s ever admits (%s per %s, limit %s)',
				j.cost, j.blocked_key, lim.max_per_period, lim.period, lim.key)
			ELSE pg_catalog.format('rate key %s (%s per %s, limit %s%s) next admits it at %s',
				j.blocked_key, lim.max_per_period, lim.period, lim.key,
				(SELECT pg_catalog.format(', adaptive: %s%% of the rate after errors', pg_catalog.round((st.factor * 100)::numeric))
				 FROM throttle_jobs.key_rate_state st
				 WHERE lim.adaptive AND st.key = j.blocked_key AND st.factor < 1),
				until) END);
	ELSIF j.state = 'throttled' AND pg_catalog.jsonb_array_length(reasons) = 0 THEN
		reasons := reasons || pg_catalog.jsonb_build_array(pg_catalog.format(
			'throttled by key %s: waiting for a slot to free', j.blocked_key));
	END IF;

	IF j.state = 'available' AND j.run_at <= pg_catalog.now() THEN
		SELECT pg_catalog.count(*) INTO ahead FROM throttle_jobs.job x
		WHERE x.queue_id = j.queue_id AND x.state = 'available' AND x.run_at <= pg_catalog.now()
		  AND (x.priority > j.priority
			   OR (x.priority = j.priority AND (x.rr_rank, x.run_at, x.id) < (j.rr_rank, j.run_at, j.id)));
		IF ahead > 0 THEN
			reasons := reasons || pg_catalog.jsonb_build_array(pg_catalog.format(
				'waiting behind %s ready jobs of higher or equal priority', ahead));
		ELSIF pg_catalog.jsonb_array_length(reasons) = 0 THEN
			reasons := reasons || pg_catalog.jsonb_build_array('ready: the next reserve on this queue takes it');
		END IF;
	END IF;

	RETURN pg_catalog.jsonb_build_object('id', id, 'queue', q.name,
		'state', CASE WHEN j.state = 'available' AND j.run_at > pg_catalog.now() THEN 'scheduled' ELSE j.state END,
		'reasons', reasons, 'attempt', j.attempt, 'run_at', j.run_at, 'priority', j.priority,
		'concurrency_key', j.concurrency_key, 'rate_limit_key', j.rate_limit_key,
		'blocked_key', j.blocked_key, 'blocked_until', until);
END
$$;

REVOKE ALL ON FUNCTION throttle_jobs._explain_job(bigint, text, text, integer[]) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._explain_job(bigint, text, text, integer[]) IS 'Internal: explain_job''s report, from what src/explain.c found.';

-- The public functions: C wrappers around the internal ones, or (cancel
-- and the dead letters: src/cancel.c, src/dead_letters.c) C themselves
-- (their grants and comments stay).
CREATE OR REPLACE FUNCTION throttle_jobs.drop_queue(name text, force boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_drop_queue'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION throttle_jobs.pause_queue(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_pause_queue'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION throttle_jobs.resume_queue(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_resume_queue'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION throttle_jobs.cancel(id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_cancel_job'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION throttle_jobs.retry_dead(id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_retry_dead'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION throttle_jobs.retry_dead(
	queue				text,
	died_after			timestamptz DEFAULT NULL,
	max_jobs			integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'throttle_jobs_retry_dead_queue'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION throttle_jobs.purge_dead(queue text, older_than interval DEFAULT '0 seconds')
RETURNS bigint
AS 'MODULE_PATHNAME', 'throttle_jobs_purge_dead'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION throttle_jobs.explain_job(id bigint)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'throttle_jobs_explain_job'
LANGUAGE C STABLE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION throttle_jobs.grant_queue(queue text, role regrole, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_grant_queue'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.grant_queue(text, regrole, text) IS 'Grants a privilege (produce, consume or manage) on a queue to a role and its members; for those who manage the queue.';

CREATE FUNCTION throttle_jobs.revoke_queue(queue text, role regrole, privilege text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_revoke_queue'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.revoke_queue(text, regrole, text) IS 'Revokes a privilege on a queue granted to a role by grant_queue; true if there was such a grant.';
REVOKE ALL ON FUNCTION throttle_jobs.grant_queue(text, regrole, text),
	throttle_jobs.revoke_queue(text, regrole, text) FROM PUBLIC;

-- The views show the rows of the queues the reader holds a privilege on
-- (security barriers: the reader's own conditions, which may call any
-- function, see only those rows):
-- jobs, running_jobs, dead_letters and archived_jobs those it may consume
-- (or manage), queues those it holds any privilege on, queue_grants those
-- it manages.  The reader is current_user, which pg_has_role tests; the
-- capability roles are tested once per query (an InitPlan).
CREATE OR REPLACE VIEW throttle_jobs.queues WITH (security_barrier) AS
SELECT q.name, q.paused, q.max_size, q.on_full, q.max_attempts, q.backoff_base,
	   q.backoff_factor, q.backoff_max, q.backoff_jitter, q.lease,
	   q.retain_completed, q.retain_dead, q.handler, q.fairness,
	   q.owner, q.created_at
FROM throttle_jobs.queue q
WHERE (SELECT pg_catalog.pg_has_role('throttle_jobs_admin'::pg_catalog.name, 'USAGE')
		   OR pg_catalog.pg_has_role('throttle_jobs_worker'::pg_catalog.name, 'USAGE')
		   OR pg_catalog.pg_has_role('throttle_jobs_producer'::pg_catalog.name, 'USAGE'))
   OR pg_catalog.pg_has_role(q.owner::pg_catalog.oid, 'USAGE')
   OR EXISTS (SELECT FROM throttle_jobs.queue_grant g
			  WHERE g.queue_id OPERATOR(pg_catalog.=) q.id
				AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE'));

CREATE OR REPLACE VIEW throttle_jobs.jobs WITH (security_barrier) AS
SELECT j.id, q.name AS queue,
	   CASE WHEN j.state OPERATOR(pg_catalog.=) 'available' AND j.run_at OPERATOR(pg_catalog.>) pg_catalog.now() THEN 'scheduled'
			ELSE j.state END AS state,
	   j.priority, j.run_at, j.attempt, coalesce(j.max_attempts, q.max_attempts) AS max_attempts, j.worker, j.lease_until,
	   j.reserved_at, j.enqueued_at, j.concurrency_key, j.rate_limit_key,
	   j.unique_key, j.cost, j.payload, j.errors,
	   (j.errors OPERATOR(pg_catalog.->) (-1)) OPERATOR(pg_catalog.->>) 'error' AS last_error,
	   j.blocked_key, j.blocked_until
FROM throttle_jobs.job j
JOIN throttle_jobs.queue q ON q.id OPERATOR(pg_catalog.=) j.queue_id
WHERE (SELECT pg_catalog.pg_has_role('throttle_jobs_admin'::pg_catalog.name, 'USAGE')
		   OR pg_catalog.pg_has_role('throttle_jobs_worker'::pg_catalog.name, 'USAGE'))
   OR pg_catalog.pg_has_role(q.owner::pg_catalog.oid, 'USAGE')
   OR EXISTS (SELECT FROM throttle_jobs.queue_grant g
			  WHERE g.queue_id OPERATOR(pg_catalog.=) q.id
				AND g.privilege OPERATOR(pg_catalog.<>) 'produce'
				AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE'));

CREATE OR REPLACE VIEW throttle_jobs.running_jobs WITH (security_barrier) AS
SELECT j.id, q.name AS queue, j.worker, j.attempt,
	   coalesce(j.max_attempts, q.max_attempts) AS max_attempts, j.reserved_at,
	   j.lease_until, j.lease_until OPERATOR(pg_catalog.<) pg_catalog.now() AS lease_expired,
	   j.priority, j.concurrency_key, j.rate_limit_key, j.payload
FROM throttle_jobs.job j
JOIN throttle_jobs.queue q ON q.id OPERATOR(pg_catalog.=) j.queue_id
WHERE j.state OPERATOR(pg_catalog.=) 'running'
  AND ((SELECT pg_catalog.pg_has_role('throttle_jobs_admin'::pg_catalog.name, 'USAGE')
			OR pg_catalog.pg_has_role('throttle_jobs_worker'::pg_catalog.name, 'USAGE'))
	   OR pg_catalog.pg_has_role(q.owner::pg_catalog.oid, 'USAGE')
	   OR EXISTS (SELECT FROM throttle_jobs.queue_grant g
				  WHERE g.queue_id OPERATOR(pg_catalog.=) q.id
					AND g.privilege OPERATOR(pg_catalog.<>) 'produce'
					AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE')));

CREATE OR REPLACE VIEW throttle_jobs.dead_letters WITH (security_barrier) AS
SELECT d.id, q.name AS queue, d.reason, d.died_at, d.attempt,
	   coalesce(d.max_attempts, q.max_attempts) AS max_attempts,
	   d.priority, d.enqueued_at, d.worker, d.concurrency_key, d.rate_limit_key,
	   d.unique_key, d.payload, d.errors,
	   (d.errors OPERATOR(pg_catalog.->) (-1)) OPERATOR(pg_catalog.->>) 'error' AS last_error
FROM throttle_jobs.job_dead d
JOIN throttle_jobs.queue q ON q.id OPERATOR(pg_catalog.=) d.queue_id
WHERE (SELECT pg_catalog.pg_has_role('throttle_jobs_admin'::pg_catalog.name, 'USAGE')
		   OR pg_catalog.pg_has_role('throttle_jobs_worker'::pg_catalog.name, 'USAGE'))
   OR pg_catalog.pg_has_role(q.owner::pg_catalog.oid, 'USAGE')
   OR EXISTS (SELECT FROM throttle_jobs.queue_grant g
			  WHERE g.queue_id OPERATOR(pg_catalog.=) q.id
				AND g.privilege OPERATOR(pg_catalog.<>) 'produce'
				AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE'));

CREATE OR REPLACE VIEW throttle_jobs.archived_jobs WITH (security_barrier) AS
SELECT a.id, q.name AS queue, a.state, a.finished_at, a.attempt,
	   coalesce(a.max_attempts, q.max_attempts) AS max_attempts,
	   a.priority, a.enqueued_at, a.reserved_at, a.worker, a.concurrency_key,
	   a.rate_limit_key, a.unique_key, a.payload, a.result, a.errors
FROM throttle_jobs.job_archive a
JOIN throttle_jobs.queue q ON q.id OPERATOR(pg_catalog.=) a.queue_id
WHERE a.finished_at OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) q.retain_completed)
  AND ((SELECT pg_catalog.pg_has_role('throttle_jobs_admin'::pg_catalog.name, 'USAGE')
			OR pg_catalog.pg_has_role('throttle_jobs_worker'::pg_catalog.name, 'USAGE'))
	   OR pg_catalog.pg_has_role(q.owner::pg_catalog.oid, 'USAGE')
	   OR EXISTS (SELECT FROM throttle_jobs.queue_grant g
				  WHERE g.queue_id OPERATOR(pg_catalog.=) q.id
					AND g.privilege OPERATOR(pg_catalog.<>) 'produce'
					AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE')));

CREATE VIEW throttle_jobs.queue_grants WITH (security_barrier) AS
SELECT q.name AS queue, g.grantee, g.privilege, g.granted_by, g.granted_at
FROM throttle_jobs.queue_grant g
JOIN throttle_jobs.queue q ON q.id OPERATOR(pg_catalog.=) g.queue_id
WHERE (SELECT pg_catalog.pg_has_role('throttle_jobs_admin'::pg_catalog.name, 'USAGE'))
   OR pg_catalog.pg_has_role(q.owner::pg_catalog.oid, 'USAGE')
   OR EXISTS (SELECT FROM throttle_jobs.queue_grant m
			  WHERE m.queue_id OPERATOR(pg_catalog.=) q.id
				AND m.privilege OPERATOR(pg_catalog.=) 'manage'
				AND pg_catalog.pg_has_role(m.grantee::pg_catalog.oid, 'USAGE'));
COMMENT ON VIEW throttle_jobs.queue_grants IS 'Per-queue grants (grant_queue) of the queues the reader manages.';
REVOKE ALL ON throttle_jobs.queue_grants FROM PUBLIC;

-- Who may call what: whoever holds the privilege on the queue, which the
-- functions check.  The capability roles keep their grants of 0.1.0.
GRANT EXECUTE ON FUNCTION throttle_jobs.grant_queue(text, regrole, text),
					   throttle_jobs.revoke_queue(text, regrole, text)
	TO throttle_jobs_admin;
GRANT SELECT ON throttle_jobs.queue_grants TO throttle_jobs_admin;
GRANT EXECUTE ON FUNCTION throttle_jobs.enqueue(text, jsonb, timestamptz, integer, integer, text, text, text, integer),
					   throttle_jobs.enqueue_batch(text, jsonb),
					   throttle_jobs.reserve(text, text, integer, interval),
					   throttle_jobs.complete(bigint, uuid, jsonb),
					   throttle_jobs.complete_and_reserve(text, text, bigint[], uuid[], integer, interval),
					   throttle_jobs.fail(bigint, uuid, text, interval, boolean),
					   throttle_jobs.snooze(bigint, uuid, interval),
					   throttle_jobs.heartbeat(bigint, uuid, interval),
					   throttle_jobs.run_jobs(text, integer, interval),
					   throttle_jobs.explain_job(bigint),
					   throttle_jobs.alter_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text),
					   throttle_jobs.drop_queue(text, boolean),
					   throttle_jobs.pause_queue(text),
					   throttle_jobs.resume_queue(text),
					   throttle_jobs.cancel(bigint),
					   throttle_jobs.retry_dead(bigint),
					   throttle_jobs.retry_dead(text, timestamptz, integer),
					   throttle_jobs.purge_dead(text, interval),
					   throttle_jobs.grant_queue(text, regrole, text),
					   throttle_jobs.revoke_queue(text, regrole, text)
	TO throttle_jobs_user;
GRANT SELECT ON throttle_jobs.queues, throttle_jobs.jobs, throttle_jobs.running_jobs,
				throttle_jobs.dead_letters, throttle_jobs.archived_jobs, throttle_jobs.queue_grants
	TO throttle_jobs_user;


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

-- A limited key keeps about as many ready jobs as it can admit now; the rest
-- wait in its waiting list, and come back as it can take them (see
-- src/parking.c for the invariant, the locking and the cost).

-- When the release path made a waiting job ready (NULL: not released, or
-- reserved or parked since).  A released job that nobody reserves holds its
-- key's slot (and its rate tokens) for a short grace only.
ALTER TABLE throttle_jobs.job ADD COLUMN released_at timestamptz;

-- A key's waiting list, per queue, in reservation order: the best n waiting
-- jobs of a key are index ranges with LIMIT n (no sort), paused queues
-- skipped at one probe each.  A job whose cost its rate key never admits
-- (blocked_until = infinity) waits outside the list until the limit changes.
-- Rate keys are due by key (key_rate_state.next_at), not by job.
DROP INDEX throttle_jobs.job_throttled_idx;
DROP INDEX throttle_jobs.job_throttled_due_idx;
CREATE INDEX job_waiting_idx ON throttle_jobs.job
	(blocked_key, queue_id, priority DESC, rr_rank, run_at, id)
	WHERE state OPERATOR(pg_catalog.=) 'throttled'
	  AND (blocked_until IS NULL
		   OR blocked_until OPERATOR(pg_catalog.<) 'infinity'::pg_catalog.timestamptz);
CREATE INDEX job_oversized_idx ON throttle_jobs.job (blocked_key)
	WHERE state OPERATOR(pg_catalog.=) 'throttled'
	  AND blocked_until OPERATOR(pg_catalog.=) 'infinity'::pg_catalog.timestamptz;

-- A reservation that finds a key blocked parks the key's ready jobs of its
-- own queue only (those of other queues wait for their own reservers).
DROP INDEX throttle_jobs.job_ready_ckey_idx;
DROP INDEX throttle_jobs.job_ready_rkey_idx;
CREATE INDEX job_ready_ckey_idx ON throttle_jobs.job (concurrency_key, queue_id)
	WHERE state OPERATOR(pg_catalog.=) 'available' AND concurrency_key IS NOT NULL;
CREATE INDEX job_ready_rkey_idx ON throttle_jobs.job (rate_limit_key, queue_id)
	WHERE state OPERATOR(pg_catalog.=) 'available' AND rate_limit_key IS NOT NULL;

-- Released jobs not reserved yet, per key: they hold a slot or tokens.
CREATE INDEX job_released_ckey_idx ON throttle_jobs.job (concurrency_key, released_at)
	WHERE state OPERATOR(pg_catalog.=) 'available' AND released_at IS NOT NULL
	  AND concurrency_key IS NOT NULL;
CREATE INDEX job_released_rkey_idx ON throttle_jobs.job (rate_limit_key, released_at)
	WHERE state OPERATOR(pg_catalog.=) 'available' AND released_at IS NOT NULL
	  AND rate_limit_key IS NOT NULL;

-- Rate keys whose waiting jobs are due (each reservation probes a few).
CREATE INDEX key_rate_state_next_idx ON throttle_jobs.key_rate_state (next_at)
	WHERE next_at IS NOT NULL;
COMMENT ON COLUMN throttle_jobs.key_rate_state.next_at IS 'When the key next admits, and its waiting jobs are due; NULL: nothing waits for time.';

-- Release after a limit changed lives with the rest of parking and release.
CREATE OR REPLACE FUNCTION throttle_jobs._limit_changed(limit_key text, reset_rate boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_limit_changed'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs._limit_changed(text, boolean) IS 'Internal: after a limit changed, releases what it admits now of the waiting jobs of the keys it covers and, if its rate changed, resets the rate state it governs.';


------------------------------------------------------------------------------
-- Queue and limit options: refusals, exact adaptive factor, clearing options (issue 12)
------------------------------------------------------------------------------

-- Costs that a rate limit never admits.  enqueue refuses them (22023); when
-- a limit changes (set or dropped), _limit_changed moves the waiting jobs
-- that the limit now governing them can never admit to the dead letters
-- (src/limits.c).  It finds them through this index: jobs that cost more
-- than 1, by rate key (cost and rate_limit_key never change, so lease and
-- state updates stay HOT).
CREATE INDEX job_costly_idx ON throttle_jobs.job (rate_limit_key)
	WHERE cost OPERATOR(pg_catalog.>) 1;

-- set_rate_limit: error_threshold and min_factor apply to adaptive limits
-- only.  Their defaults become NULL ("not given": 0.5 and 0.1), so that
-- passing one without adaptive => true is refused instead of ignored.
CREATE OR REPLACE FUNCTION throttle_jobs.set_rate_limit(
	key					text,
	max_per_period		integer,
	period				interval,
	algorithm			text DEFAULT 'token_bucket',
	burst				integer DEFAULT NULL,
	adaptive			boolean DEFAULT false,
	error_threshold		double precision DEFAULT NULL,
	min_factor			double precision DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old throttle_jobs.key_limit;
BEGIN
	PERFORM throttle_jobs._check_limit_key(key);
	PERFORM throttle_jobs._check_rate_limit(max_per_period, period, algorithm, burst);
	IF adaptive IS NULL THEN
		RAISE EXCEPTION 'adaptive must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT adaptive AND (error_threshold IS NOT NULL OR min_factor IS NOT NULL) THEN
		RAISE EXCEPTION '% applies to adaptive rate limits only',
			CASE WHEN error_threshold IS NOT NULL THEN 'error_threshold' ELSE 'min_factor' END
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass adaptive => true, or leave error_threshold and min_factor out.';
	END IF;
	error_threshold := coalesce(error_threshold, 0.5);
	min_factor := coalesce(min_factor, 0.1);
	IF NOT (error_threshold OPERATOR(pg_catalog.>=) 0 AND error_threshold OPERATOR(pg_catalog.<) 1) THEN
		RAISE EXCEPTION 'error_threshold must be at least 0 and below 1, not %', error_threshold
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT (min_factor OPERATOR(pg_catalog.>) 0 AND min_factor OPERATOR(pg_catalog.<=) 1) THEN
		RAISE EXCEPTION 'min_factor must be above 0 and at most 1, not %', min_factor
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT l.* INTO old FROM throttle_jobs.key_limit l WHERE l.key OPERATOR(pg_catalog.=) set_rate_limit.key;
	INSERT INTO throttle_jobs.key_limit AS l (key, max_per_period, period, algorithm, burst,
		adaptive, error_threshold, min_factor)
	VALUES (key, max_per_period, period, algorithm, burst, adaptive, error_threshold, min_factor)
	ON CONFLICT ON CONSTRAINT key_limit_pkey
	DO UPDATE SET max_per_period = EXCLUDED.max_per_period, period = EXCLUDED.period,
				  algorithm = EXCLUDED.algorithm, burst = EXCLUDED.burst,
				  adaptive = EXCLUDED.adaptive, error_threshold = EXCLUDED.error_threshold,
				  min_factor = EXCLUDED.min_factor, updated_at = pg_catalog.now();
	-- the same rate set again (a configuration push) keeps the state it has
	PERFORM throttle_jobs._limit_changed(key,
		(old.max_per_period, old.period, old.algorithm, old.burst)
		IS DISTINCT FROM (max_per_period, period, algorithm, burst));
END
$$;

-- reset_queue_options(queue, VARIADIC options): clears the options that
-- alter_queue cannot (NULL there means "unchanged"): max_size (unbounded
-- again) and handler (external workers take the jobs).  Manage, like
-- alter_queue; clearing a handler makes nothing run as the owner, so it
-- does not need the owner as setting one does.
CREATE FUNCTION throttle_jobs.reset_queue_options(queue text, VARIADIC options text[])
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_reset_queue_options'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.reset_queue_options(text, text[]) IS 'Clears queue options that alter_queue cannot (max_size, handler); for those who manage the queue.';
REVOKE ALL ON FUNCTION throttle_jobs.reset_queue_options(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION throttle_jobs.reset_queue_options(text, text[])
	TO throttle_jobs_admin, throttle_jobs_user;


------------------------------------------------------------------------------
-- Handlers: stored by signature, search_path hints, hand-backs (issue 12)
------------------------------------------------------------------------------

-- queue.handler was a regprocedure column, and pg_upgrade refuses every
-- cluster with a reg* column other than regclass, regrole and regtype
-- (function OIDs are not kept across an upgrade): it is now the handler's
-- qualified signature as text (schema.name(pg_catalog.jsonb)), resolved
-- again by name at every run.  handler_owner is the role that owned the
-- function when it was set: a function of that signature owned by anyone
-- else (the handler dropped and another made in its place) does not run.
-- Neither holds the function: PostgreSQL records no dependency of a table
-- row on a function, and a dependency of the extension or of the queue
-- table would make DROP FUNCTION ... CASCADE drop them.  DROP FUNCTION
-- therefore leaves the queue with a handler that fails each of its jobs
-- with SQLSTATE 42883 until alter_queue sets another (or the handler is
-- cleared).  create_queue and alter_queue still take a regprocedure: only
-- table columns matter to pg_upgrade.

-- The qualified signature of a function (its OID if there is none).
CREATE FUNCTION throttle_jobs._handler_signature(handler regprocedure)
RETURNS text
AS 'MODULE_PATHNAME', 'throttle_jobs_handler_signature'
LANGUAGE C STABLE STRICT
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION throttle_jobs._handler_signature(regprocedure) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._handler_signature(regprocedure) IS 'Internal: a handler''s qualified signature, as queue.handler stores it.';

ALTER TABLE throttle_jobs.queue ADD COLUMN handler_owner regrole;
UPDATE throttle_jobs.queue q SET handler_owner = p.proowner::pg_catalog.regrole
FROM pg_catalog.pg_proc p
WHERE p.oid OPERATOR(pg_catalog.=) q.handler::pg_catalog.oid;

-- The column's type changes under the queues view: drop it and make it
-- again (as the per-queue privileges section made it), with its grants.
DROP VIEW throttle_jobs.queues;
ALTER TABLE throttle_jobs.queue
	ALTER COLUMN handler TYPE text USING throttle_jobs._handler_signature(handler);
COMMENT ON COLUMN throttle_jobs.queue.handler IS 'The handler''s qualified signature (schema.name(pg_catalog.jsonb)), resolved at every run; NULL: no handler.';
COMMENT ON COLUMN throttle_jobs.queue.handler_owner IS 'The role that owned the handler function when it was set; a function of that signature owned by another role does not run.';

CREATE VIEW throttle_jobs.queues WITH (security_barrier) AS
SELECT q.name, q.paused, q.max_size, q.on_full, q.max_attempts, q.backoff_base,
	   q.backoff_factor, q.backoff_max, q.backoff_jitter, q.lease,
	   q.retain_completed, q.retain_dead, q.handler, q.fairness,
	   q.owner, q.created_at
FROM throttle_jobs.queue q
WHERE (SELECT pg_catalog.pg_has_role('throttle_jobs_admin'::pg_catalog.name, 'USAGE')
		   OR pg_catalog.pg_has_role('throttle_jobs_worker'::pg_catalog.name, 'USAGE')
		   OR pg_catalog.pg_has_role('throttle_jobs_producer'::pg_catalog.name, 'USAGE'))
   OR pg_catalog.pg_has_role(q.owner::pg_catalog.oid, 'USAGE')
   OR EXISTS (SELECT FROM throttle_jobs.queue_grant g
			  WHERE g.queue_id OPERATOR(pg_catalog.=) q.id
				AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE'));
COMMENT ON VIEW throttle_jobs.queues IS 'Queue definitions.';
GRANT SELECT ON throttle_jobs.queues TO throttle_jobs_admin, throttle_jobs_user;


-- create_queue and alter_queue (src/queue.c) store the handler's
-- signature and its function's owner.


------------------------------------------------------------------------------
-- Dumps, restores and retention (issue 12)
------------------------------------------------------------------------------

-- The archive's indexes belong to each partition, not to job_archive.  With
-- a partitioned index on job_archive (an extension object, not dumped), a
-- restore's ATTACH PARTITION created each day partition's indexes itself,
-- and then the dump's own CREATE INDEX of them failed ("already exists"),
-- twice per partition: pg_restore --single-transaction restored nothing and
-- --exit-on-error stopped part-way.  Now each day partition carries indexes
-- of its own (made by _maintain_archive with the partition, dumped with it),
-- and the default partition, a member of the extension, has its own too.
-- An update rebuilds the indexes of the day partitions that exist.
DROP INDEX throttle_jobs.job_archive_queue_idx;
DROP INDEX throttle_jobs.job_archive_id_idx;
CREATE INDEX job_archive_default_queue_id_finished_at_idx ON throttle_jobs.job_archive_default (queue_id, finished_at);
CREATE INDEX job_archive_default_id_idx ON throttle_jobs.job_archive_default (id);
DO $tj_archive_idx$
DECLARE
	part text;
BEGIN
	FOR part IN
		SELECT c.relname FROM pg_catalog.pg_inherits i
		JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
		WHERE i.inhparent OPERATOR(pg_catalog.=) 'throttle_jobs.job_archive'::pg_catalog.regclass
		  AND c.relname OPERATOR(pg_catalog.~) '^job_archive_p[0-9]{8}$'
		ORDER BY c.relname
	LOOP
		EXECUTE pg_catalog.format('CREATE INDEX %I ON throttle_jobs.%I (queue_id, finished_at)',
								  part OPERATOR(pg_catalog.||) '_queue_idx', part);
		EXECUTE pg_catalog.format('CREATE INDEX %I ON throttle_jobs.%I (id)',
								  part OPERATOR(pg_catalog.||) '_id_idx', part);
	END LOOP;
END
$tj_archive_idx$;

-- Restores.  pg_dump writes CREATE EXTENSION first and the extension's data
-- later, so for the length of a restore the schema is there but its rows
-- are not (or not all): a maintenance pass then (the worker of a database in
-- throttle_jobs.databases, or pg_cron) would create day partitions that the
-- restore creates next ("already exists"), count depth gauges from half the
-- rows, and decide retention without the queues.  The signal: CREATE
-- EXTENSION run by a session that restores a dump.  Every dump that pg_dump
-- writes, plain or archive, sets row_security = off before anything else (a
-- setting ordinary sessions leave on), and pg_restore names its sessions
-- "pg_restore"; the extension's script cannot see check_function_bodies
-- (CREATE EXTENSION turns it off for every script).  Such an install leaves
-- one row here naming its session; maintain() does nothing while that
-- session, or any superuser's session of this database named pg_restore (the parallel
-- workers of pg_restore -j), is connected, nor for 10 seconds after it last
-- saw one (pg_restore -j closes its first session before its workers
-- connect); then it deletes the row and recounts the depth gauges.  Not
-- dumped: a restore must start with the row its own CREATE EXTENSION left.
CREATE TABLE throttle_jobs.restore_marker (
	pid					integer NOT NULL,
	backend_start		timestamptz,
	application_name	text,
	seen_at				timestamptz NOT NULL
);
COMMENT ON TABLE throttle_jobs.restore_marker IS 'The session restoring a dump into this database, while maintain() waits for it to end (not dumped).';
REVOKE ALL ON throttle_jobs.restore_marker FROM PUBLIC;
INSERT INTO throttle_jobs.restore_marker (pid, backend_start, application_name, seen_at)
SELECT a.pid, a.backend_start, a.application_name, pg_catalog.now()
FROM pg_catalog.pg_stat_activity a
WHERE a.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
  AND (pg_catalog.current_setting('row_security') OPERATOR(pg_catalog.=) 'off'
	   OR a.application_name OPERATOR(pg_catalog.=) 'pg_restore')
  -- a fresh install: an update of a database in use is no restore
  AND NOT EXISTS (SELECT FROM throttle_jobs.queue);

-- Returns NULL when no restore is known, 'restoring' while one runs (and
-- maintain() must do nothing), 'restored' once, at the first pass after it
-- ended (the marker is deleted then).
CREATE FUNCTION throttle_jobs._restore_state(now timestamptz)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m record;
BEGIN
	SELECT r.pid, r.backend_start, r.seen_at INTO m FROM throttle_jobs.restore_marker r
	ORDER BY r.seen_at DESC LIMIT 1;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
			   WHERE a.pid OPERATOR(pg_catalog.=) m.pid
				 AND a.backend_start IS NOT DISTINCT FROM m.backend_start)
	   OR EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
				  WHERE a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
					AND a.application_name OPERATOR(pg_catalog.=) 'pg_restore'
					AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
					-- anyone may name a session pg_restore: only a superuser's
					-- counts (the restore's CREATE EXTENSION needed one, and
					-- pg_restore -j's workers log in as the same role)
					AND EXISTS (SELECT FROM pg_catalog.pg_authid u
								WHERE u.oid OPERATOR(pg_catalog.=) a.usesysid AND u.rolsuper)) THEN
		UPDATE throttle_jobs.restore_marker SET seen_at = now;
		RETURN 'restoring';
	END IF;
	IF m.seen_at OPERATOR(pg_catalog.>) (now OPERATOR(pg_catalog.-) '10 seconds'::interval) THEN
		RETURN 'restoring';
	END IF;
	DELETE FROM throttle_jobs.restore_marker;
	RETURN 'restored';
END
$$;
REVOKE ALL ON FUNCTION throttle_jobs._restore_state(timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._restore_state(timestamptz) IS 'Internal: whether a restore of a dump into this database runs (maintain() then waits), or just ended.';

-- The rate limiters' state is dumped: without it a restore refilled every
-- spent token bucket and emptied every window, admitting a burst that the
-- limits had already spent.  Its stamps make a restored state age as it
-- would have: a bucket restored a day later is full, one restored at once
-- is as spent as it was.  (key_outcome, the adaptive limits' unevaluated
-- outcomes, is not: an evaluation starts afresh from the next jobs.)
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.key_rate_state', '');
COMMENT ON TABLE throttle_jobs.key_rate_state IS 'Rate limiter state per concrete key: bucket level, window count or admission log (dumped, so that a restore does not refill spent limits).';

-- (_maintain_archive, in the maintenance section above, makes each day
-- partition with its own indexes.)


------------------------------------------------------------------------------
-- SQL API for workers and admins (issue 14)
------------------------------------------------------------------------------

-- enqueue_ex: enqueue() that tells a new job from the live job of the same
-- unique_key (inserted), and lets the caller choose what a live key means.
CREATE FUNCTION throttle_jobs.enqueue_ex(
	queue				text,
	payload				jsonb DEFAULT '{}',
	run_at				timestamptz DEFAULT NULL,
	priority			integer DEFAULT 0,
	max_attempts		integer DEFAULT NULL,
	concurrency_key		text DEFAULT NULL,
	rate_limit_key		text DEFAULT NULL,
	unique_key			text DEFAULT NULL,
	cost				integer DEFAULT 1,
	on_conflict			text DEFAULT 'return',
	OUT id				bigint,
	OUT inserted		boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'throttle_jobs_enqueue_ex'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.enqueue_ex(text, jsonb, timestamptz, integer, integer, text, text, text, integer, text) IS 'enqueue() returning (id, inserted): inserted is false for a live job of the same unique_key, whose id on_conflict ''return'' gives, ''skip'' omits and ''error'' refuses (23505); id NULL for a job a full queue dropped.';
REVOKE ALL ON FUNCTION throttle_jobs.enqueue_ex(text, jsonb, timestamptz, integer, integer, text, text, text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION throttle_jobs.enqueue_ex(text, jsonb, timestamptz, integer, integer, text, text, text, integer, text)
	TO throttle_jobs_producer, throttle_jobs_user;


-- complete_and_reserve_ex: complete_and_reserve() with a result per
-- completed job, telling the worker which completions were refused.
CREATE TYPE throttle_jobs.work_item AS (
	outcome				text,
	id					bigint,
	queue				text,
	payload				jsonb,
	attempt				integer,
	max_attempts		integer,
	lease_token			uuid,
	lease_until			timestamptz,
	priority			integer,
	concurrency_key		text,
	rate_limit_key		text,
	enqueued_at			timestamptz
);
COMMENT ON TYPE throttle_jobs.work_item IS 'A row of complete_and_reserve_ex(): outcome ''reserved'' with a reserved_job''s columns, or ''stale'' or ''cancelled'' with the id of a job whose completion was refused.';

CREATE FUNCTION throttle_jobs.complete_and_reserve_ex(
	queue				text,
	worker				text,
	done				bigint[] DEFAULT '{}',
	lease_tokens		uuid[] DEFAULT '{}',
	results				jsonb[] DEFAULT NULL,
	max_jobs			integer DEFAULT 1,
	lease				interval DEFAULT NULL)
RETURNS SETOF throttle_jobs.work_item
AS 'MODULE_PATHNAME', 'throttle_jobs_complete_and_reserve_ex'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.complete_and_reserve_ex(text, text, bigint[], uuid[], jsonb[], integer, interval) IS 'Completes the finished jobs with their results (NULL: none) and reserves up to max_jobs more, in one transaction; returns a ''stale'' or ''cancelled'' row for each refused completion, then a ''reserved'' row for each job reserved.';
REVOKE ALL ON FUNCTION throttle_jobs.complete_and_reserve_ex(text, text, bigint[], uuid[], jsonb[], integer, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION throttle_jobs.complete_and_reserve_ex(text, text, bigint[], uuid[], jsonb[], integer, interval)
	TO throttle_jobs_worker, throttle_jobs_user;


-- Admin operations on jobs and dead letters: manage on the job's queue.
-- cancel(id, running) (no default: cancel(id) leaves running jobs alone, as
-- 0.1.0's did) and retry_now(id) are C (src/cancel.c, src/admin.c): they
-- free a running job's slot and keep the statistics.
CREATE FUNCTION throttle_jobs.cancel(id bigint, running boolean)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_cancel_job'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.cancel(bigint, boolean) IS 'Cancels a job that waits or, with running => true, one that runs (its worker''s lease token stops matching: heartbeat returns NULL, complete false, fail ''cancelled''); true if it was cancelled.';

CREATE FUNCTION throttle_jobs.retry_now(id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_retry_now'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.retry_now(bigint) IS 'Makes a job that waits for its run_at (scheduled, or in backoff after a failure) due now; true if it did.  A job held back by a limit keeps waiting for its key.';

-- delete_dead(id), retry_dead_matching, purge_dead_matching: C
-- (src/dead_letters.c), as retry_dead and purge_dead are.
CREATE FUNCTION throttle_jobs.delete_dead(id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_delete_dead'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.delete_dead(bigint) IS 'Deletes one dead job; true if there was one.';

CREATE FUNCTION throttle_jobs.retry_dead_matching(
	queue				text,
	error_contains		text DEFAULT NULL,
	died_after			timestamptz DEFAULT NULL,
	died_before			timestamptz DEFAULT NULL,
	max_jobs			integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'throttle_jobs_retry_dead_matching'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.retry_dead_matching(text, text, timestamptz, timestamptz, integer) IS 'Moves a queue''s dead jobs that the filter selects (last error containing error_contains, died between died_after and died_before, at most max_jobs, oldest first) back with their attempts reset; returns how many.';

CREATE FUNCTION throttle_jobs.purge_dead_matching(
	queue				text,
	error_contains		text DEFAULT NULL,
	died_after			timestamptz DEFAULT NULL,
	died_before			timestamptz DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'throttle_jobs_purge_dead_matching'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.purge_dead_matching(text, text, timestamptz, timestamptz) IS 'Deletes a queue''s dead jobs that the filter selects (last error containing error_contains, died between died_after and died_before); returns how many.';

REVOKE ALL ON FUNCTION throttle_jobs.cancel(bigint, boolean),
	throttle_jobs.retry_now(bigint),
	throttle_jobs.delete_dead(bigint),
	throttle_jobs.retry_dead_matching(text, text, timestamptz, timestamptz, integer),
	throttle_jobs.purge_dead_matching(text, text, timestamptz, timestamptz)
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION throttle_jobs.cancel(bigint, boolean),
	throttle_jobs.retry_now(bigint),
	throttle_jobs.delete_dead(bigint),
	throttle_jobs.retry_dead_matching(text, text, timestamptz, timestamptz, integer),
	throttle_jobs.purge_dead_matching(text, text, timestamptz, timestamptz)
	TO throttle_jobs_admin, throttle_jobs_user;


-- Wake-ups: a queue with notify on NOTIFYs its channel at the commit of
-- every transaction that enqueued a new job into it (one notification per
-- transaction and queue, empty payload).  The channel is 'tj:' and the
-- queue's name, or 'tj:' and the name's md5 when the name is longer than 60
-- bytes (a channel holds at most 63); listeners quote it as an identifier:
-- LISTEN "tj:tenant-a:emails".
CREATE FUNCTION throttle_jobs.notify_channel(queue text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN pg_catalog.octet_length(queue) OPERATOR(pg_catalog.<=) 60
			THEN 'tj:'::pg_catalog.text OPERATOR(pg_catalog.||) queue
			ELSE 'tj:'::pg_catalog.text OPERATOR(pg_catalog.||) pg_catalog.md5(queue) END;
COMMENT ON FUNCTION throttle_jobs.notify_channel(text) IS 'The channel that enqueues into a queue with notify on NOTIFY: ''tj:'' and the queue''s name (its md5 past 60 bytes).';
REVOKE ALL ON FUNCTION throttle_jobs.notify_channel(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION throttle_jobs.notify_channel(text)
	TO throttle_jobs_producer, throttle_jobs_worker, throttle_jobs_admin, throttle_jobs_user;

CREATE TABLE throttle_jobs.queue_notify (
	queue_id			integer NOT NULL
		CONSTRAINT queue_notify_pkey PRIMARY KEY
		CONSTRAINT queue_notify_queue_id_fkey REFERENCES throttle_jobs.queue (id) ON DELETE CASCADE,
	channel				text NOT NULL,
	-- up to when maintain() has looked for jobs of the queue that became
	-- ready (see "Wake-ups for jobs that become ready later" below)
	notified_until		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE throttle_jobs.queue_notify IS 'The queues whose enqueues NOTIFY their channel at commit (set_queue_notify).';
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.queue_notify', '');
REVOKE ALL ON throttle_jobs.queue_notify FROM PUBLIC;

CREATE FUNCTION throttle_jobs.set_queue_notify(queue text, enabled boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_set_queue_notify'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.set_queue_notify(text, boolean) IS 'Turns on or off the queue''s wake-ups: every transaction that enqueues a new job into it NOTIFYs notify_channel(queue) at commit.';
REVOKE ALL ON FUNCTION throttle_jobs.set_queue_notify(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION throttle_jobs.set_queue_notify(text, boolean)
	TO throttle_jobs_admin, throttle_jobs_user;


------------------------------------------------------------------------------
-- A queue-wide cap on running jobs (issue 14, SQL gap 4)
------------------------------------------------------------------------------

-- A reservation from a capped queue takes the queue's mutex without
-- waiting (none: it reserves nothing), counts the queue's running jobs and
-- reserves at most the cap minus that count (src/queue_cap.c).
CREATE TABLE throttle_jobs.queue_max_running (
	queue_id			integer NOT NULL
		CONSTRAINT queue_max_running_pkey PRIMARY KEY
		CONSTRAINT queue_max_running_queue_id_fkey REFERENCES throttle_jobs.queue (id) ON DELETE CASCADE,
	max_running			integer NOT NULL
		CONSTRAINT queue_max_running_check CHECK (max_running > 0)
);
COMMENT ON TABLE throttle_jobs.queue_max_running IS 'The queues whose running jobs are capped as a whole (set_queue_max_running).';
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.queue_max_running', '');
REVOKE ALL ON throttle_jobs.queue_max_running FROM PUBLIC;

CREATE FUNCTION throttle_jobs.set_queue_max_running(queue text, max_running integer)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_set_queue_max_running'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.set_queue_max_running(text, integer) IS 'Caps how many of the queue''s jobs run at once (NULL or 0: no cap).';
REVOKE ALL ON FUNCTION throttle_jobs.set_queue_max_running(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION throttle_jobs.set_queue_max_running(text, integer)
	TO throttle_jobs_admin, throttle_jobs_user;

------------------------------------------------------------------------------
-- Wake-ups for jobs that become ready later: maintain() notifies (issue 14)
------------------------------------------------------------------------------

-- Up to when maintain() has looked for jobs of the queue that became ready
-- (queue_notify.notified_until, made with the table above: a column added
-- by ALTER with a now() default would store a different "missing value" in
-- an updated and in a fresh install): each pass notifies a queue once if
-- one became ready in (notified_until, the pass's time], and moves it on.
COMMENT ON COLUMN throttle_jobs.queue_notify.notified_until IS 'maintain() has notified the jobs of the queue that became ready up to this time.';

-- The ready jobs that did not become ready at their enqueue, by when they
-- did: scheduled jobs and retries (run_at after enqueued_at) and jobs
-- released from throttling (released_at).  Jobs enqueued ready (most) are
-- not in it.
CREATE INDEX job_became_ready_idx ON throttle_jobs.job
	(queue_id, (GREATEST(run_at, released_at)))
	WHERE state OPERATOR(pg_catalog.=) 'available'
	  AND (run_at OPERATOR(pg_catalog.>) enqueued_at OR released_at IS NOT NULL);

------------------------------------------------------------------------------
-- try_acquire/acquire with N holders (issue 14, SQL gap 5)
------------------------------------------------------------------------------

-- A key capped at N (no rate limit) has N slots; try_acquire() holds one to
-- transaction end (C only), try_acquire_session() holds one until
-- release(key) or the session ends.
CREATE FUNCTION throttle_jobs.try_acquire_session(key text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_try_acquire_session'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.try_acquire_session(text) IS 'Holds one of the slots of a key with a concurrency limit (and no rate limit) until release(key) or the session ends, or returns false holding nothing.';

CREATE FUNCTION throttle_jobs.release(key text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_release'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs.release(text) IS 'Gives back the slot of the key that this session holds (try_acquire_session); false when it holds none.';

REVOKE ALL ON FUNCTION throttle_jobs.try_acquire_session(text), throttle_jobs.release(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION throttle_jobs.try_acquire_session(text), throttle_jobs.release(text)
	TO throttle_jobs_limiter;
COMMENT ON FUNCTION throttle_jobs.try_acquire(text, integer) IS 'Takes cost tokens of a key''s rate limit now (and, on a capped key, holds it, or with a cap of N and no rate one of its N slots, to transaction end), or returns false holding nothing.';


------------------------------------------------------------------------------
-- One home per rule (issue 16)
------------------------------------------------------------------------------

-- The rule "the most specific limit governs" (a limit set on the key
-- itself, else the longest template that covers it; the cap and the rate
-- apart) is C's, the one the reservations use (src/limits.c,
-- governs_before): explain_job, key_stats (stats_key_rows, in the
-- acquire counters' section below) and _limit_changed ask it.
CREATE FUNCTION throttle_jobs._governing_limit(key text, rate boolean)
RETURNS text
AS 'MODULE_PATHNAME', 'throttle_jobs_governing_limit'
LANGUAGE C STABLE STRICT
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION throttle_jobs._governing_limit(text, boolean) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._governing_limit(text, boolean) IS 'Internal: the own key of the limit that governs a concrete key''s rate (rate) or cap, or NULL.';

CREATE OR REPLACE FUNCTION throttle_jobs._rate_governed_by(k text, lk text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_rate_governed_by'
LANGUAGE C STABLE STRICT
SET search_path = pg_catalog, pg_temp;



-- The bounds and rules of names and values are C's (src/validate.c):
-- the SQL-written functions and the queue table's constraints call them
-- instead of repeating them.
CREATE OR REPLACE FUNCTION throttle_jobs._check_limit_key(key text)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_check_limit_key'
LANGUAGE C IMMUTABLE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION throttle_jobs._check_rate_limit(max_per_period integer, period interval,
	algorithm text, burst integer)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_check_rate_limit'
LANGUAGE C IMMUTABLE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs._check_rate_limit(integer, interval, text, integer) IS 'Internal: checks a rate limit''s rate, period, algorithm and burst.';

CREATE FUNCTION throttle_jobs._valid_queue_name(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_valid_queue_name'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs._valid_queue_name(text) IS 'Internal: whether a queue name follows the rule (queue.name''s constraint).';

CREATE FUNCTION throttle_jobs._valid_backoff_factor(factor double precision)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_valid_backoff_factor'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION throttle_jobs._valid_backoff_factor(double precision) IS 'Internal: whether a backoff factor is within bounds (queue.backoff_factor''s constraint).';

REVOKE ALL ON FUNCTION throttle_jobs._check_rate_limit(integer, interval, text, integer),
	throttle_jobs._valid_queue_name(text),
	throttle_jobs._valid_backoff_factor(double precision)
	FROM PUBLIC;

ALTER TABLE throttle_jobs.queue
	DROP CONSTRAINT queue_name_check,
	ADD CONSTRAINT queue_name_check CHECK (throttle_jobs._valid_queue_name(name)),
	DROP CONSTRAINT queue_backoff_factor_check,
	ADD CONSTRAINT queue_backoff_factor_check CHECK (throttle_jobs._valid_backoff_factor(backoff_factor));

-- create_queue and alter_queue do their work in C (src/queue.c), with the
-- queue-option signature written once (TJQueueArg) and the handler checked
-- there: 0.1.0's internal functions that repeated them go.
DROP FUNCTION throttle_jobs._create_queue(oid, text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text);
DROP FUNCTION throttle_jobs._alter_queue(oid, text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text);
DROP FUNCTION throttle_jobs._check_handler(regprocedure, oid);
DROP FUNCTION throttle_jobs._check_queue_options(boolean, text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, text);


------------------------------------------------------------------------------
-- Skip hints: reservation under an old snapshot (issue 17)
------------------------------------------------------------------------------

-- Records the keys of jobs made ready (published when the transaction
-- commits) and of ready jobs taken out of ready (published if it aborts),
-- so that reservation's skip hints never pass a ready job (src/ready_hint.c).
-- Only rows that are, or were, ready reach the function.  It is the one
-- function of the schema without a pinned search_path: it runs no SQL and
-- looks up no name (it reads the row it is given, by column number), and a
-- SET clause would cost every row of an enqueue_batch a settings save and
-- restore (E2 lost 15% with it).
CREATE FUNCTION throttle_jobs._job_ready_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'throttle_jobs_job_ready_trigger'
LANGUAGE C;
COMMENT ON FUNCTION throttle_jobs._job_ready_trigger() IS 'Internal: notes where ready jobs begin for reservation''s skip hints.';
REVOKE ALL ON FUNCTION throttle_jobs._job_ready_trigger() FROM PUBLIC;

CREATE TRIGGER job_ready_insert BEFORE INSERT ON throttle_jobs.job
	FOR EACH ROW WHEN (NEW.state OPERATOR(pg_catalog.=) 'available')
	EXECUTE FUNCTION throttle_jobs._job_ready_trigger();
CREATE TRIGGER job_ready_update BEFORE UPDATE ON throttle_jobs.job
	FOR EACH ROW WHEN (OLD.state OPERATOR(pg_catalog.=) 'available'
					   OR NEW.state OPERATOR(pg_catalog.=) 'available')
	EXECUTE FUNCTION throttle_jobs._job_ready_trigger();
CREATE TRIGGER job_ready_delete BEFORE DELETE ON throttle_jobs.job
	FOR EACH ROW WHEN (OLD.state OPERATOR(pg_catalog.=) 'available')
	EXECUTE FUNCTION throttle_jobs._job_ready_trigger();


------------------------------------------------------------------------------
-- create_queue(..., max_running => n) (issue 14, SQL gap 4)
------------------------------------------------------------------------------

-- The queue-wide cap can be given at creation: create_queue takes one more
-- argument, last and defaulted, so every call of the 0.1.0 function means
-- the same.  An added argument is a new function: the 0.1.0 one is dropped
-- and made again, with its grant and comment.  The C wrapper sets the cap
-- as set_queue_max_running does (src/queue_cap.c), in the same transaction.
DROP FUNCTION throttle_jobs.create_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text);
CREATE FUNCTION throttle_jobs.create_queue(
	name				text,
	max_size			bigint DEFAULT NULL,
	on_full				text DEFAULT 'error',
	max_attempts		integer DEFAULT 5,
	backoff_base		interval DEFAULT '30 seconds',
	backoff_factor		double precision DEFAULT 4,
	backoff_max			interval DEFAULT '1 hour',
	backoff_jitter		double precision DEFAULT 0.1,
	lease				interval DEFAULT '5 minutes',
	retain_completed	interval DEFAULT '1 day',
	retain_dead			interval DEFAULT '14 days',
	handler				regprocedure DEFAULT NULL,
	fairness			text DEFAULT 'fifo',
	max_running			integer DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_create_queue'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION throttle_jobs.create_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION throttle_jobs.create_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text, integer)
	TO throttle_jobs_admin;
COMMENT ON FUNCTION throttle_jobs.create_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text, integer) IS 'Creates a queue with its retry policy, lease, retention, backpressure, optional SQL handler and optional cap on its running jobs (max_running, as set_queue_max_running sets it).';


------------------------------------------------------------------------------
-- try_acquire/acquire counters in key_stats and metrics() (issue 14, SQL gap 5)
------------------------------------------------------------------------------

-- The outcomes of try_acquire, acquire and try_acquire_session calls on
-- limited keys (admitted, refused, waited, timed out), kept per key in
-- shared memory with the throttling counters (src/stats.c), counted when
-- the call returns; key_stats shows them in four columns appended at its
-- end, metrics() as throttle_jobs_key_acquires_total{key, event}.
CREATE FUNCTION throttle_jobs._stats_key_acquires(
	OUT key text, OUT acquire_admitted bigint, OUT acquire_refused bigint,
	OUT acquire_waited bigint, OUT acquire_timed_out bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'throttle_jobs_stats_key_acquires'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION throttle_jobs._stats_key_acquires() FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._stats_key_acquires() IS 'Internal: try_acquire/acquire counters per key since start or reset, for key_stats.';

ALTER TYPE throttle_jobs.key_stats_row
	ADD ATTRIBUTE acquire_admitted bigint,
	ADD ATTRIBUTE acquire_refused bigint,
	ADD ATTRIBUTE acquire_waited bigint,
	ADD ATTRIBUTE acquire_timed_out bigint;

-- (the 0.1.0 function, with the acq lines added, and the governing limits
-- from _governing_limit: the "one home per rule" section above)
CREATE OR REPLACE FUNCTION throttle_jobs.stats_key_rows()
RETURNS SETOF throttle_jobs.key_stats_row
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
WITH ks AS (
	SELECT * FROM throttle_jobs.stats_keys()
), acq AS (
	SELECT * FROM throttle_jobs._stats_key_acquires()
), keys AS (
	SELECT l.key FROM throttle_jobs.key_limit l WHERE pg_catalog.right(l.key, 1) <> '*'
	UNION SELECT s.key FROM throttle_jobs.key_rate_state s
	UNION SELECT j.concurrency_key FROM throttle_jobs.job j
		  WHERE j.state = 'running' AND j.concurrency_key IS NOT NULL
	UNION SELECT ks.key FROM ks
), governed AS MATERIALIZED (
	SELECT k.key, throttle_jobs._governing_limit(k.key, false) AS cap_key,
		   throttle_jobs._governing_limit(k.key, true) AS rate_key
	FROM keys k
), gov AS (
	SELECT k.key, c.key AS cap_limit, c.max_running, r.key AS rate_limit, r.max_per_period,
		   r.period, r.algorithm, r.burst, r.adaptive
	FROM governed k
	LEFT JOIN throttle_jobs.key_limit c ON c.key OPERATOR(pg_catalog.=) k.cap_key
	LEFT JOIN throttle_jobs.key_limit r ON r.key OPERATOR(pg_catalog.=) k.rate_key
	WHERE c.key IS NOT NULL OR r.key IS NOT NULL
)
SELECT g.key, g.cap_limit, g.max_running,
	CASE WHEN g.max_running IS NOT NULL THEN
		(SELECT pg_catalog.count(*) FROM throttle_jobs.job j
		 WHERE j.state = 'running' AND j.concurrency_key = g.key) END AS running,
	g.rate_limit, g.max_per_period, g.period, g.algorithm,
	CASE WHEN g.algorithm = 'token_bucket' THEN
		CASE WHEN s.key IS NULL THEN coalesce(g.burst, g.max_per_period)::double precision
			 ELSE LEAST(coalesce(g.burst, g.max_per_period)::double precision,
						s.tokens + pg_catalog.date_part('epoch', GREATEST(pg_catalog.now() - s.stamp, '0'::interval))
								 * g.max_per_period * s.factor / pg_catalog.date_part('epoch', g.period)) END
	END AS tokens,
	CASE g.algorithm
		WHEN 'fixed_window' THEN CASE WHEN s.stamp + g.period > pg_catalog.now() THEN s.tokens::bigint ELSE 0 END
		WHEN 'sliding_window' THEN coalesce((SELECT pg_catalog.sum(u.c) FROM ROWS FROM (pg_catalog.unnest(s.log_at), pg_catalog.unnest(s.log_cost)) u(a, c)
											 WHERE u.a > pg_catalog.now() - g.period), 0)::bigint
	END AS window_used,
	CASE WHEN s.next_at > pg_catalog.now() THEN s.next_at END AS next_admission_at,
	CASE WHEN st.shared THEN coalesce(ks.throttled_cap, 0) END AS throttled_cap,
	CASE WHEN st.shared THEN coalesce(ks.throttled_rate, 0) END AS throttled_rate,
	ks.throttled_since, ks.last_throttled_at, ks.last_admitted_at,
	CASE WHEN g.adaptive THEN coalesce(s.factor, 1) END AS adaptive_factor,
	CASE WHEN st.shared THEN coalesce(a.acquire_admitted, 0) END AS acquire_admitted,
	CASE WHEN st.shared THEN coalesce(a.acquire_refused, 0) END AS acquire_refused,
	CASE WHEN st.shared THEN coalesce(a.acquire_waited, 0) END AS acquire_waited,
	CASE WHEN st.shared THEN coalesce(a.acquire_timed_out, 0) END AS acquire_timed_out
FROM gov g
CROSS JOIN throttle_jobs.stats_state() st
LEFT JOIN throttle_jobs.key_rate_state s ON s.key = g.key
LEFT JOIN ks ON ks.key = g.key
LEFT JOIN acq a ON a.key OPERATOR(pg_catalog.=) g.key
$$;
COMMENT ON FUNCTION throttle_jobs.stats_key_rows() IS 'The rows of key_stats (each limited key, templates expanded to live keys), with the try_acquire/acquire counters.';

-- (made again to take the new columns: they come last)
CREATE OR REPLACE VIEW throttle_jobs.key_stats AS
SELECT * FROM throttle_jobs.stats_key_rows();
COMMENT ON VIEW throttle_jobs.key_stats IS 'Each limited key (templates expanded to live keys): cap and holders, rate, tokens or window use, next admission, throttled counts, adaptive factor, try_acquire/acquire outcomes.';

-- metrics(): 0.1.0's function, kept under another name for metrics() alone,
-- followed by the throttle_jobs_key_acquires_total lines (statistics in
-- shared memory only, as the other counters).
ALTER FUNCTION throttle_jobs.metrics() RENAME TO _metrics_010;
REVOKE ALL ON FUNCTION throttle_jobs._metrics_010() FROM pg_monitor, throttle_jobs_admin;
COMMENT ON FUNCTION throttle_jobs._metrics_010() IS 'Internal: the metrics of 0.1.0, for metrics().';

CREATE FUNCTION throttle_jobs.metrics()
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT throttle_jobs._metrics_010() OPERATOR(pg_catalog.||) CASE WHEN st.shared THEN
	pg_catalog.array_to_string(ARRAY[
		'# HELP throttle_jobs_key_acquires_total Calls of try_acquire, acquire and try_acquire_session on a limited key: admitted (returned true), refused (try_acquire returned false), waited (acquire waited), timed_out (acquire returned false).',
		'# TYPE throttle_jobs_key_acquires_total counter']::pg_catalog.text[] OPERATOR(pg_catalog.||) ARRAY(
		SELECT pg_catalog.format('throttle_jobs_key_acquires_total{key="%s",event="%s"} %s',
								 throttle_jobs._prom_label(k.key), v.event, v.n)
		FROM throttle_jobs.key_stats k,
			 LATERAL (VALUES (1, 'admitted', k.acquire_admitted), (2, 'refused', k.acquire_refused),
							 (3, 'waited', k.acquire_waited), (4, 'timed_out', k.acquire_timed_out)) v(o, event, n)
		ORDER BY k.key, v.o), E'\n') OPERATOR(pg_catalog.||) E'\n'
	ELSE '' END
FROM throttle_jobs.stats_state() st
$$;
COMMENT ON FUNCTION throttle_jobs.metrics() IS 'The statistics in Prometheus text exposition format (queue, key, state and event labels).';
REVOKE ALL ON FUNCTION throttle_jobs.metrics() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION throttle_jobs.metrics() TO pg_monitor, throttle_jobs_admin;


------------------------------------------------------------------------------
-- End of the 0.1.0 -> 0.2.0 changes
------------------------------------------------------------------------------

-- The views that show each reader only the rows of its queues are security
-- barriers: without it the planner may run a reader's own condition (any
-- function, a cast that fails with the value in its message) on rows the
-- view's filter would hide.  Set last, so that no section above can drop it
-- with CREATE OR REPLACE VIEW.
ALTER VIEW throttle_jobs.queues SET (security_barrier = true);
ALTER VIEW throttle_jobs.jobs SET (security_barrier = true);
ALTER VIEW throttle_jobs.running_jobs SET (security_barrier = true);
ALTER VIEW throttle_jobs.dead_letters SET (security_barrier = true);
ALTER VIEW throttle_jobs.archived_jobs SET (security_barrier = true);
ALTER VIEW throttle_jobs.queue_grants SET (security_barrier = true);
