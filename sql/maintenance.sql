\set VERBOSITY terse
-- Archive maintenance that no session setting and no missing queue can
-- turn against the data.

-- With no queue nothing can be archived, and no day partition is made (a
-- restore that has not loaded its queues yet creates its own next).
SELECT count(*) AS queues FROM throttle_jobs.queue;
SELECT throttle_jobs._maintain_archive(now() + interval '30 days')->'partitions_created' AS created_without_queues;
SELECT throttle_jobs.create_queue('maint_any');

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

-- A day partition carries indexes of its own; job_archive has none.  (With
-- a partitioned index on job_archive, ATTACH PARTITION in a restore made
-- the partition's indexes, and the dump's CREATE INDEX of them then failed.)
SELECT c.relname AS index, pg_get_indexdef(c.oid) ~ ('ON throttle_jobs.' || t.relname || ' ') AS on_the_partition
  FROM pg_class t JOIN pg_index i ON i.indrelid = t.oid JOIN pg_class c ON c.oid = i.indexrelid
 WHERE t.relname = 'job_archive_p' || to_char((now() + interval '60 days') AT TIME ZONE 'UTC', 'YYYYMMDD')
 ORDER BY 1;
SELECT count(*) AS indexes_on_job_archive FROM pg_index WHERE indrelid = 'throttle_jobs.job_archive'::regclass;
SELECT count(*) AS attached_indexes
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE c.relkind = 'i' AND c.relnamespace = 'throttle_jobs'::regnamespace;

-- A day partition past retention that holds a row of a queue that does not
-- exist is kept (its retention is unknown); without that row it is dropped.
BEGIN;
UPDATE throttle_jobs.queue SET retain_completed = '1 day';
SELECT throttle_jobs._maintain_archive(now() - interval '400 days')->'partitions_created' AS old_created;
INSERT INTO throttle_jobs.job_archive (id, queue_id, state, priority, run_at, attempt, cost,
       enqueued_at, finished_at, errors, payload)
VALUES (-1, -7, 'completed', 0, now() - interval '400 days', 1, 1,
        now() - interval '400 days', now() - interval '400 days', '[]', '{}');
SELECT m->'partitions_dropped' AS dropped, m->'partitions_kept_unknown_queue' AS kept
  FROM throttle_jobs._maintain_archive(now()) m;
SELECT count(*) AS partition_kept FROM pg_class
 WHERE relname = 'job_archive_p' || to_char((now() - interval '400 days') AT TIME ZONE 'UTC', 'YYYYMMDD');
DELETE FROM throttle_jobs.job_archive WHERE id = -1;
SELECT (m->>'partitions_dropped')::int >= 1 AS dropped, m->'partitions_kept_unknown_queue' AS kept
  FROM throttle_jobs._maintain_archive(now()) m;
SELECT count(*) AS partition_kept FROM pg_class
 WHERE relname = 'job_archive_p' || to_char((now() - interval '400 days') AT TIME ZONE 'UTC', 'YYYYMMDD');
ROLLBACK;

------------------------------------------------------------------------------
-- Restores
------------------------------------------------------------------------------

-- A CREATE EXTENSION run by a session that restores a dump leaves a marker
-- naming that session (test/t/011_dump_restore.pl makes one through
-- pg_restore); this install made none.
SELECT count(*) AS markers FROM throttle_jobs.restore_marker;
SELECT has_table_privilege('throttle_jobs_admin', 'throttle_jobs.restore_marker', 'SELECT') AS admin_may_read;
-- With no marker, nothing is being restored.
SELECT throttle_jobs._restore_state(now()) IS NULL AS no_restore;
-- While the marked session (here: this one) is connected, maintain() does
-- nothing at all and says so.
INSERT INTO throttle_jobs.restore_marker
SELECT pid, backend_start, application_name, now() - interval '1 hour'
  FROM pg_stat_activity WHERE pid = pg_backend_pid();
SELECT throttle_jobs.maintain() AS pass_during_restore;
SELECT throttle_jobs._restore_state(now()) AS state;
-- it noted when it last saw the restoring session
SELECT seen_at > now() - interval '1 minute' AS seen_lately FROM throttle_jobs.restore_marker;
-- A session of another backend start (the pid reused) is not the one.
UPDATE throttle_jobs.restore_marker SET backend_start = backend_start - interval '1 day';
-- For 10 seconds after the restore was last seen, still nothing (pg_restore
-- -j closes its first session before its workers connect).
SELECT throttle_jobs._restore_state(now()) AS state_within_grace;
SELECT throttle_jobs._restore_state(now() + interval '11 seconds') AS state_after_grace;
SELECT count(*) AS markers_left FROM throttle_jobs.restore_marker;
-- The first pass after it says nothing of a restore and works.
SELECT m ? 'restore_in_progress' AS waiting, m ? 'archive' AS maintained FROM throttle_jobs.maintain() m;
-- A session named pg_restore in this database counts as a restore too.
INSERT INTO throttle_jobs.restore_marker VALUES (0, NULL, 'pg_restore', now() - interval '1 hour');
SET application_name = 'pg_restore';
SELECT throttle_jobs._restore_state(now()) AS own_session_is_not_a_restorer;
RESET application_name;
SELECT count(*) AS markers_left FROM throttle_jobs.restore_marker;

SELECT throttle_jobs.drop_queue('maint_any');
