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
-- Handlers, workers and run_jobs (issue 10: security-restricted handlers)
------------------------------------------------------------------------------



------------------------------------------------------------------------------
-- C-side SQL and operator hardening
------------------------------------------------------------------------------



------------------------------------------------------------------------------
-- Per-queue privileges (grant_queue, revoke_queue, queue_grants)
------------------------------------------------------------------------------



------------------------------------------------------------------------------
-- Limits: try_acquire/acquire, statistics bounds, input bounds
------------------------------------------------------------------------------



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
-- End of the 0.1.0 -> 0.2.0 changes
------------------------------------------------------------------------------
