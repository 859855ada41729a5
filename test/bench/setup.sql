-- test/bench/setup.sql: the benchmark database (run by test/bench/run as a
-- superuser, once, after CREATE EXTENSION throttle_jobs).
--
-- bench.base_job is the baselines' table: the plain-SQL queue that
-- throttle_jobs is measured against.  It has throttle_jobs.job's hot
-- columns, its fillfactor and the same ready index, so the baselines pay
-- for the same index maintenance and differ only in what the extension adds.
\set ON_ERROR_STOP 1
CREATE EXTENSION IF NOT EXISTS pgstattuple;
CREATE SCHEMA bench;
CREATE TABLE bench.base_job (
	id					bigserial PRIMARY KEY,
	queue_id			integer NOT NULL,
	state				text NOT NULL DEFAULT 'available',
	priority			smallint NOT NULL DEFAULT 0,
	run_at				timestamptz NOT NULL DEFAULT now(),
	attempt				integer NOT NULL DEFAULT 0,
	enqueued_at			timestamptz NOT NULL DEFAULT now(),
	lease_until			timestamptz,
	payload				jsonb NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX base_job_ready_idx ON bench.base_job (queue_id, priority DESC, run_at, id)
	WHERE state = 'available';

-- Queues keep no archive, as the baselines keep nothing (P1a measures the
-- default one-day archive apart).
SELECT throttle_jobs.create_queue('bench_e', retain_completed => '0');
SELECT throttle_jobs.create_queue('bench_p', retain_completed => '0');
SELECT throttle_jobs.create_queue('bench_pa');
SELECT throttle_jobs.create_queue('bench_l', retain_completed => '0');

-- Fills a queue's backlog (or the baseline table's, for queue NULL) with n
-- ready jobs, after emptying both tables: the state every P run starts from.
CREATE FUNCTION bench.preload(queue text, n integer, ckey_prefix text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	TRUNCATE throttle_jobs.job, throttle_jobs.job_archive, bench.base_job;
	IF queue IS NULL THEN
		INSERT INTO bench.base_job (queue_id, payload)
		SELECT 1, pg_catalog.jsonb_build_object('n', i) FROM pg_catalog.generate_series(1, n) i;
	ELSE
		INSERT INTO throttle_jobs.job (queue_id, run_at, enqueued_at, payload, concurrency_key)
		SELECT q.id, now(), now(), pg_catalog.jsonb_build_object('n', i),
			   ckey_prefix || i
		  FROM throttle_jobs.queue q, pg_catalog.generate_series(1, n) i
		 WHERE q.name = queue;
	END IF;
END $$;

-- Jobs still queued (live, or in the baseline table).
CREATE FUNCTION bench.left_jobs() RETURNS bigint LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM throttle_jobs.job) + (SELECT count(*) FROM bench.base_job)
$$;

-- Dead tuples of the queue tables now (exact, by pgstattuple).
CREATE FUNCTION bench.dead_tuples() RETURNS bigint LANGUAGE sql AS $$
	SELECT (pgstattuple('throttle_jobs.job')).dead_tuple_count
		 + (pgstattuple('bench.base_job')).dead_tuple_count
$$;

-- The 1,000-job array that E2 enqueues, ours and the baseline alike.
CREATE FUNCTION bench.batch(n integer) RETURNS jsonb LANGUAGE sql AS $$
	SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('payload', pg_catalog.jsonb_build_object('n', i)))
	  FROM pg_catalog.generate_series(1, n) i
$$;
