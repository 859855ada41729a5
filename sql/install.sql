\set VERBOSITY terse
SET client_min_messages = warning;

-- CREATE EXTENSION installs the version named by the control file into the
-- fixed schema throttle_jobs; the extension is not relocatable.
CREATE EXTENSION throttle_jobs;
SELECT e.extnamespace::regnamespace AS schema, e.extrelocatable,
       e.extversion = a.default_version AS is_default_version
FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname
WHERE e.extname = 'throttle_jobs';

-- Every member object of the extension, in a stable order.  From
-- PostgreSQL 17 on, the row types of tables and views and the array types
-- are members too; they are left out, so that the list is the same on
-- every supported version.
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS object
FROM pg_depend d
WHERE d.refclassid = 'pg_extension'::regclass
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'throttle_jobs')
  AND d.deptype = 'e'
  AND NOT EXISTS (SELECT 1 FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
                  WHERE d.classid = 'pg_type'::regclass AND t.oid = d.objid
                    AND (t.typcategory = 'A' OR c.relkind <> 'c'))
ORDER BY 1;

-- Nothing of the schema is left outside the extension (except the indexes,
-- which belong to their tables).
SELECT c.relname, c.relkind
FROM pg_class c
WHERE c.relnamespace = 'throttle_jobs'::regnamespace
  AND c.relkind NOT IN ('i', 'I')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')
  AND c.relkind <> 'c'
ORDER BY 1;

-- Functions: signature, result, volatility, strictness, SECURITY DEFINER
-- and pinned settings.
SELECT p.oid::regprocedure AS function,
       pg_get_function_result(p.oid) AS result,
       p.provolatile AS vol, p.proisstrict AS strict, p.prosecdef AS secdef,
       p.proconfig
FROM pg_proc p
WHERE p.pronamespace = 'throttle_jobs'::regnamespace
ORDER BY p.proname, pg_get_function_identity_arguments(p.oid);

-- Argument names and defaults: callers use named arguments, so a renamed
-- parameter or a changed default is an API change.
SELECT p.proname, a.n AS pos, p.proargnames[a.n] AS argument,
       format_type(p.proargtypes[a.n - 1], NULL) AS type,
       pg_get_function_arg_default(p.oid, a.n) AS "default"
FROM pg_proc p, generate_series(1, p.pronargs) a(n)
WHERE p.pronamespace = 'throttle_jobs'::regnamespace
  AND p.proname !~ '^_'
ORDER BY p.proname, pg_get_function_identity_arguments(p.oid), a.n;

-- Every SECURITY DEFINER function pins search_path to pg_catalog, pg_temp.
SELECT p.oid::regprocedure AS secdef_without_pinned_search_path
FROM pg_proc p
WHERE p.pronamespace = 'throttle_jobs'::regnamespace AND p.prosecdef
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
  -- (the one exception: the skip hints' trigger runs no SQL, see the upgrade script)
  AND p.oid <> 'throttle_jobs._job_ready_trigger()'::regprocedure
ORDER BY 1;

-- Tables, views, sequences and the composite type, with their kind.
SELECT c.relname, c.relkind, c.relpersistence,
       pg_get_partkeydef(c.oid) AS partition_key,
       pg_get_expr(c.relpartbound, c.oid) AS partition_bound
FROM pg_class c
WHERE c.relnamespace = 'throttle_jobs'::regnamespace AND c.relkind <> 'i' AND c.relkind <> 'I'
ORDER BY c.relname;

-- The indexes of the tables.
SELECT c.relname AS index, pg_get_indexdef(c.oid) AS definition
FROM pg_class c
WHERE c.relnamespace = 'throttle_jobs'::regnamespace AND c.relkind IN ('i', 'I')
ORDER BY c.relname;

-- PUBLIC has no privilege on the schema.
SELECT has_schema_privilege('public', 'throttle_jobs', 'USAGE') AS public_usage,
       has_schema_privilege('public', 'throttle_jobs', 'CREATE') AS public_create;

-- PUBLIC has no privilege on any table, view or sequence of the schema,
-- neither in the ACLs nor through defaults (expect no rows).
SELECT c.relname, a.privilege_type
FROM pg_class c,
     aclexplode(coalesce(c.relacl,
                         acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
WHERE c.relnamespace = 'throttle_jobs'::regnamespace
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND a.grantee = 0
ORDER BY 1, 2;
SELECT c.relname, c.relkind
FROM pg_class c
WHERE c.relnamespace = 'throttle_jobs'::regnamespace
  AND CASE c.relkind
        WHEN 'S' THEN has_sequence_privilege('public', c.oid, 'USAGE, SELECT, UPDATE')
        WHEN 'r' THEN has_table_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                      OR has_any_column_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
        WHEN 'p' THEN has_table_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                      OR has_any_column_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
        WHEN 'v' THEN has_table_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                      OR has_any_column_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
        ELSE false
      END
ORDER BY 1;

-- PUBLIC may execute no function of the schema (expect no rows).
SELECT p.oid::regprocedure AS public_may_execute
FROM pg_proc p
WHERE p.pronamespace = 'throttle_jobs'::regnamespace
  AND (has_function_privilege('public', p.oid, 'EXECUTE')
       OR EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f'::"char", p.proowner))) a
                  WHERE a.grantee = 0))
ORDER BY 1;

-- Every function, view and table of the schema has a comment (expect no rows).
SELECT 'function' AS kind, p.oid::regprocedure::text AS object_without_comment
FROM pg_proc p
WHERE p.pronamespace = 'throttle_jobs'::regnamespace
  AND obj_description(p.oid, 'pg_proc') IS NULL
UNION ALL
SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END, c.oid::regclass::text
FROM pg_class c
WHERE c.relnamespace = 'throttle_jobs'::regnamespace
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND obj_description(c.oid, 'pg_class') IS NULL
ORDER BY 1, 2;

-- The three capability roles exist and cannot log in.
SELECT rolname, rolcanlogin, rolsuper, rolinherit
FROM pg_roles
WHERE rolname IN ('throttle_jobs_producer', 'throttle_jobs_worker', 'throttle_jobs_admin')
ORDER BY rolname;

-- admin is a member of producer and worker (and not the other way round).
SELECT m.rolname AS member, r.rolname AS role,
       pg_has_role(m.oid, r.oid, 'MEMBER') AS is_member
FROM pg_roles m, pg_roles r
WHERE m.rolname IN ('throttle_jobs_producer', 'throttle_jobs_worker', 'throttle_jobs_admin')
  AND r.rolname IN ('throttle_jobs_producer', 'throttle_jobs_worker', 'throttle_jobs_admin')
  AND m.oid <> r.oid
ORDER BY 1, 2;

-- A queue and a job, so that the kept plans of this session have been used
-- before the extension is dropped and created again below.
SELECT throttle_jobs.create_queue('install_q');
SELECT throttle_jobs.enqueue('install_q') IS NOT NULL AS enqueued;

-- DROP EXTENSION removes everything it created in the schema, but keeps
-- the roles (they are cluster-wide and may be granted elsewhere).
DROP EXTENSION throttle_jobs;
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'throttle_jobs') AS relations_left,
       (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'throttle_jobs') AS functions_left,
       (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'throttle_jobs') AS types_left;
SELECT count(*) AS roles FROM pg_roles
WHERE rolname IN ('throttle_jobs_producer', 'throttle_jobs_worker', 'throttle_jobs_admin');

-- CREATE EXTENSION works again, with the roles already there, and the
-- functions work in this same session (the kept plans follow the new tables).
CREATE EXTENSION throttle_jobs;
SELECT count(*) AS queues FROM throttle_jobs.queues;
SELECT throttle_jobs.create_queue('install_q');
SELECT throttle_jobs.enqueue('install_q') IS NOT NULL AS enqueued;
SELECT count(*) AS jobs FROM throttle_jobs.reserve('install_q', 'w');

-- And a second time in a row.
DROP EXTENSION throttle_jobs;
CREATE EXTENSION throttle_jobs;
SELECT count(*) AS queues FROM throttle_jobs.queues;
SELECT count(*) AS jobs FROM throttle_jobs.jobs;
-- admin is still a member of producer and worker after reinstalling.
SELECT pg_has_role('throttle_jobs_admin', 'throttle_jobs_producer', 'MEMBER') AS admin_is_producer,
       pg_has_role('throttle_jobs_admin', 'throttle_jobs_worker', 'MEMBER') AS admin_is_worker;

-- CREATE EXTENSION accepts a pre-existing empty schema of the installing role.
-- (The schema that CREATE EXTENSION made from the control file is not a
-- member of the extension, so it may outlive DROP EXTENSION: drop it first.)
DROP EXTENSION throttle_jobs;
DROP SCHEMA IF EXISTS throttle_jobs;
CREATE SCHEMA throttle_jobs;
CREATE EXTENSION throttle_jobs;
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'throttle_jobs';
DROP EXTENSION throttle_jobs;
DROP SCHEMA IF EXISTS throttle_jobs;

-- CREATE EXTENSION refuses a pre-existing schema "throttle_jobs" owned by
-- another role, and leaves nothing behind.
CREATE ROLE regress_tj_schema_owner NOLOGIN;
CREATE SCHEMA throttle_jobs AUTHORIZATION regress_tj_schema_owner;
CREATE EXTENSION throttle_jobs;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'throttle_jobs';
SELECT count(*) AS objects_in_schema FROM pg_class WHERE relnamespace = 'throttle_jobs'::regnamespace;
SELECT count(*) AS functions_in_schema FROM pg_proc WHERE pronamespace = 'throttle_jobs'::regnamespace;
SELECT count(*) AS schema_left_to_its_owner FROM pg_namespace
WHERE nspname = 'throttle_jobs' AND nspowner = 'regress_tj_schema_owner'::regrole;
DROP SCHEMA throttle_jobs;
DROP ROLE regress_tj_schema_owner;

-- CREATE EXTENSION also refuses a schema of our own that already holds objects.
CREATE SCHEMA throttle_jobs;
CREATE TABLE throttle_jobs.planted (x int);
CREATE EXTENSION throttle_jobs;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'throttle_jobs';
DROP SCHEMA throttle_jobs CASCADE;

-- ... or holds an operator, a function or a type (nothing in it may be bound
-- into our constraints and views, or called by our functions) ...
CREATE SCHEMA throttle_jobs;
CREATE OPERATOR throttle_jobs.> (FUNCTION = int8gt, LEFTARG = bigint, RIGHTARG = bigint);
CREATE EXTENSION throttle_jobs;
\echo :LAST_ERROR_SQLSTATE
DROP OPERATOR throttle_jobs.> (bigint, bigint);
CREATE FUNCTION throttle_jobs.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT now()';
CREATE EXTENSION throttle_jobs;
\echo :LAST_ERROR_SQLSTATE
DROP FUNCTION throttle_jobs.now();
CREATE TYPE throttle_jobs.state AS ENUM ('available');
CREATE EXTENSION throttle_jobs;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'throttle_jobs';
DROP SCHEMA throttle_jobs CASCADE;

-- ... or an empty schema in which another role (or PUBLIC) may create
-- objects while we install.
CREATE ROLE regress_tj_planter NOLOGIN;
CREATE SCHEMA throttle_jobs;
GRANT CREATE ON SCHEMA throttle_jobs TO regress_tj_planter;
CREATE EXTENSION throttle_jobs;
\echo :LAST_ERROR_SQLSTATE
REVOKE CREATE ON SCHEMA throttle_jobs FROM regress_tj_planter;
GRANT CREATE ON SCHEMA throttle_jobs TO PUBLIC;
CREATE EXTENSION throttle_jobs;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'throttle_jobs';
-- Once CREATE is revoked, the same schema is accepted.
REVOKE CREATE ON SCHEMA throttle_jobs FROM PUBLIC;
CREATE EXTENSION throttle_jobs;
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'throttle_jobs';
DROP EXTENSION throttle_jobs;
DROP SCHEMA throttle_jobs;
DROP ROLE regress_tj_planter;

-- ... or when the installing role's default privileges would grant other
-- roles rights on the objects it creates (they would bypass the
-- extension's functions and their checks).  Default privileges that only
-- take rights away are fine.
CREATE ROLE regress_tj_peeker NOLOGIN;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO regress_tj_peeker;
CREATE EXTENSION throttle_jobs;
\echo :LAST_ERROR_SQLSTATE
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM regress_tj_peeker;
ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO regress_tj_peeker;
CREATE EXTENSION throttle_jobs;
\echo :LAST_ERROR_SQLSTATE
ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM regress_tj_peeker;
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'throttle_jobs';
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
CREATE EXTENSION throttle_jobs;
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'throttle_jobs';
DROP EXTENSION throttle_jobs;
DROP SCHEMA IF EXISTS throttle_jobs;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO PUBLIC;
SELECT count(*) AS default_acls FROM pg_default_acl;
DROP ROLE regress_tj_peeker;

-- Leave the extension installed for the following tests.
CREATE EXTENSION throttle_jobs;
SELECT extname FROM pg_extension WHERE extname = 'throttle_jobs';
