\set VERBOSITY terse
-- Archive maintenance that no session setting and no missing queue can
-- turn against the data.

-- Partition DDL does not depend on DateStyle or TimeZone: a database owner
-- could set both (ALTER DATABASE ... SET) so that bounds written through
-- them fail to parse, and every maintenance pass failed.
SET DateStyle = 'SQL, DMY';
SET TimeZone = 'FOO+3';
SELECT throttle_jobs._maintain_archive(now() + interval '40 days')->'partitions_created' AS created;
SET DateStyle = 'ISO, YMD';
SET TimeZone = 'UTC';
-- the partition covers exactly its UTC day
SELECT pg_get_expr(c.relpartbound, c.oid)
       = format('FOR VALUES FROM (%L) TO (%L)', to_char(d, 'YYYY-MM-DD 00:00:00+00'),
                to_char(d + 1, 'YYYY-MM-DD 00:00:00+00'))
       AS bound_is_its_utc_day
  FROM (SELECT (now() AT TIME ZONE 'UTC')::date + 40 AS d) x
  JOIN pg_class c ON c.relname = 'job_archive_p' || to_char(x.d, 'YYYYMMDD');
RESET DateStyle;
RESET TimeZone;

-- Nor does default_tablespace (a database owner could point it at
-- pg_global, where no partition may go).
SET default_tablespace = 'pg_global';
SELECT throttle_jobs._maintain_archive(now() + interval '60 days')->'partitions_created' AS created;
RESET default_tablespace;

-- Unknown means keep: with no queue (a restore that has not loaded the
-- queues yet), no day partition is dropped, however old.
BEGIN;
SELECT throttle_jobs._maintain_archive(now() - interval '400 days')->'partitions_created' AS old_created;
SELECT count(*) AS old_partitions FROM pg_class
 WHERE relname = 'job_archive_p' || to_char((now() AT TIME ZONE 'UTC')::date - 400, 'YYYYMMDD');
CREATE TEMP TABLE saved_queues AS SELECT * FROM throttle_jobs.queue;
DELETE FROM throttle_jobs.queue;
SELECT throttle_jobs._maintain_archive(now())->'partitions_dropped' AS dropped_without_queues;
SELECT count(*) AS old_partitions_kept FROM pg_class
 WHERE relname = 'job_archive_p' || to_char((now() AT TIME ZONE 'UTC')::date - 400, 'YYYYMMDD');
-- with the queues back, their retention governs again
INSERT INTO throttle_jobs.queue SELECT * FROM saved_queues;
SELECT throttle_jobs.create_queue('maint_keep', retain_completed => '1 day');
UPDATE throttle_jobs.queue SET retain_completed = '1 day';
SELECT (throttle_jobs._maintain_archive(now())->>'partitions_dropped')::int >= 1 AS dropped_with_queues;
SELECT count(*) AS old_partitions_left FROM pg_class
 WHERE relname = 'job_archive_p' || to_char((now() AT TIME ZONE 'UTC')::date - 400, 'YYYYMMDD');
ROLLBACK;

-- A new day partition carries no grant that default privileges (set after
-- the install) would give it: its rows are reachable only through the views.
CREATE ROLE regress_maint_peeker NOLOGIN;
ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO regress_maint_peeker;
SELECT throttle_jobs._maintain_archive(now() + interval '50 days')->'partitions_created' AS created;
SELECT has_table_privilege('regress_maint_peeker',
		'throttle_jobs.job_archive_p' || to_char((now() AT TIME ZONE 'UTC')::date + 50, 'YYYYMMDD'),
		'SELECT') AS peeker_may_read;
ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM regress_maint_peeker;
DROP ROLE regress_maint_peeker;

-- The pass lock is a row of our own, not an advisory lock.
SELECT count(*) AS lock_rows FROM throttle_jobs.maintenance_lock;
SELECT has_table_privilege('throttle_jobs_admin', 'throttle_jobs.maintenance_lock', 'UPDATE') AS admin_may_lock;
