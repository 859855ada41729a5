\set VERBOSITY terse
SET client_min_messages = warning;

-- What a handler leaves open when run_jobs() returns (cursors, large object
-- descriptors) is closed: the caller must not read the owner's data through
-- it.  (See also TAP 012 for the restore marker.)
-- No temporary objects here: run_jobs refuses a session that has them.

CREATE ROLE a3_owner;
CREATE ROLE a3_worker;
GRANT throttle_jobs_admin TO a3_owner;
GRANT throttle_jobs_user TO a3_worker;
CREATE SCHEMA a3 AUTHORIZATION a3_owner;

------------------------------------------------------------------------------
-- run_jobs by a per-queue consumer must not hand it the queue owner's
-- cursors.  The handler opens a cursor over a table that only its owner may
-- read and returns without closing it (a common shape: fetch one row,
-- return).  Under run_jobs the job runs in the caller's transaction, and the
-- portal outlived the handler: the caller, who may only consume the queue,
-- fetched the rest of the owner's table through it.  Executors drop every
-- portal after a job (PortalHashTableDeleteAll); run_jobs must drop those
-- the handler left.
------------------------------------------------------------------------------
SET ROLE a3_owner;
CREATE TABLE a3.secret (v text);
INSERT INTO a3.secret VALUES ('owner-only 1'), ('owner-only 2'), ('owner-only 3');
CREATE FUNCTION a3.first_secret(payload jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = a3, pg_temp AS $$
DECLARE
	named refcursor := 'a3_named';
	unnamed refcursor;
	r record;
BEGIN
	OPEN named FOR SELECT v FROM a3.secret ORDER BY v;
	OPEN unnamed FOR SELECT v FROM a3.secret ORDER BY v DESC;
	FETCH named INTO r;
	RETURN jsonb_build_object('first', r.v);
END $$;
SELECT throttle_jobs.create_queue('a3_cursor', handler => 'a3.first_secret(jsonb)');
SELECT throttle_jobs.grant_queue('a3_cursor', 'a3_worker', 'consume');
SELECT throttle_jobs.enqueue('a3_cursor', '{}') IS NOT NULL AS enqueued;
RESET ROLE;

-- The consumer may not read the table itself.
SET ROLE a3_worker;
SELECT has_schema_privilege('a3', 'USAGE') AS may_use_schema;
BEGIN;
SELECT throttle_jobs.run_jobs('a3_cursor') AS ran;
-- No cursor of the handler's is left in the caller's transaction (expect
-- no rows, and no such cursor).
SELECT name FROM pg_cursors ORDER BY name;
SAVEPOINT s;
FETCH ALL FROM a3_named;
ROLLBACK TO SAVEPOINT s;
COMMIT;
-- The job itself completed.
SELECT state, result FROM throttle_jobs.archived_jobs WHERE queue = 'a3_cursor';
RESET ROLE;

------------------------------------------------------------------------------
-- Large object descriptors: the same for a descriptor that the handler
-- opened (with the owner's rights, checked at lo_open) and did not close.
-- Under run_jobs it outlived the job in the caller's transaction: the
-- consumer read (or, opened for writing, wrote) the owner's large object
-- through it with loread/lowrite, which check nothing more.
------------------------------------------------------------------------------
SET ROLE a3_owner;
SELECT lo_from_bytea(4242001, 'owner-only large object') AS lo \gset
CREATE FUNCTION a3.peek_lo(payload jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	fd integer := lo_open((payload->>'lo')::oid, x'60000'::integer);	-- INV_READ | INV_WRITE
BEGIN
	RETURN jsonb_build_object('first', convert_from(loread(fd, 5), 'UTF8'));
END $$;
SELECT throttle_jobs.create_queue('a3_lo', handler => 'a3.peek_lo(jsonb)');
SELECT throttle_jobs.grant_queue('a3_lo', 'a3_worker', 'consume');
SELECT throttle_jobs.enqueue('a3_lo', jsonb_build_object('lo', :lo)) IS NOT NULL AS enqueued;
RESET ROLE;

SET ROLE a3_worker;
-- The consumer may not open it itself.
SELECT lo_open(:lo, x'40000'::integer);
BEGIN;
SELECT throttle_jobs.run_jobs('a3_lo') AS ran;
-- No descriptor of the handler's is left: expect an error, not the rest of
-- the object.
SAVEPOINT s;
SELECT convert_from(loread(0, 100), 'UTF8') AS rest;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT state, result FROM throttle_jobs.archived_jobs WHERE queue = 'a3_lo';
RESET ROLE;

------------------------------------------------------------------------------
-- The caller's own cursors, opened before run_jobs, stay open.
------------------------------------------------------------------------------
SET ROLE a3_owner;
SELECT throttle_jobs.enqueue('a3_cursor', '{}') IS NOT NULL AS enqueued;
RESET ROLE;
SET ROLE a3_worker;
BEGIN;
DECLARE mine CURSOR FOR SELECT n FROM generate_series(1, 3) n;
FETCH 1 FROM mine;
SELECT throttle_jobs.run_jobs('a3_cursor') AS ran;
SELECT name FROM pg_cursors ORDER BY name;
FETCH ALL FROM mine;
COMMIT;
RESET ROLE;
