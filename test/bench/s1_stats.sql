-- S1: reading the statistics with 1,000,000 live jobs.  queue_stats and
-- key_stats must not grow with the jobs (no count over the jobs table on the
-- read path); prints the median time of each over 50 reads.  Needs a fresh
-- database with the extension on a server that preloads throttle_jobs:
--   psql -X -d DB -f test/bench/s1_stats.sql
\set ON_ERROR_STOP 1
SELECT throttle_jobs.create_queue('bench_s1');
SELECT throttle_jobs.create_queue('bench_s1b');
SELECT throttle_jobs.set_concurrency_limit('bench:tenant:*', 2);
SELECT throttle_jobs.set_rate_limit('bench:api', 100, '1 minute');
-- 1,000,000 jobs in ten transactions: ready, scheduled, a few priorities,
-- 1,000 capped keys.
DO $$
BEGIN
  FOR b IN 0..9 LOOP
    PERFORM throttle_jobs.enqueue(CASE WHEN g % 2 = 0 THEN 'bench_s1' ELSE 'bench_s1b' END, '{}',
                                  run_at => CASE WHEN g % 10 = 0 THEN now() + interval '1 hour' END,
                                  priority => g % 3,
                                  concurrency_key => 'bench:tenant:' || (g % 1000))
    FROM generate_series(b * 100000 + 1, (b + 1) * 100000) g;
    COMMIT;
  END LOOP;
END $$;
SELECT count(*) FROM throttle_jobs.reserve('bench_s1', 'w', 500);
SELECT count(*) FROM throttle_jobs.reserve('bench_s1b', 'w', 500);
SELECT throttle_jobs.maintain() IS NOT NULL AS maintained;
VACUUM ANALYZE throttle_jobs.job;
SELECT queue, available, scheduled, running, lag > interval '0' AS lagging
FROM throttle_jobs.queue_stats WHERE queue LIKE 'bench_s1%' ORDER BY queue;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT * FROM throttle_jobs.queue_stats;
CREATE TEMP TABLE s1_times (what text, ms float8);
DO $$
DECLARE s timestamptz;
BEGIN
  FOR i IN 1..50 LOOP
    s := clock_timestamp();
    PERFORM * FROM throttle_jobs.queue_stats;
    INSERT INTO s1_times VALUES ('queue_stats', extract(epoch FROM clock_timestamp() - s) * 1000);
    s := clock_timestamp();
    PERFORM * FROM throttle_jobs.key_stats;
    INSERT INTO s1_times VALUES ('key_stats', extract(epoch FROM clock_timestamp() - s) * 1000);
    s := clock_timestamp();
    PERFORM throttle_jobs.metrics();
    INSERT INTO s1_times VALUES ('metrics()', extract(epoch FROM clock_timestamp() - s) * 1000);
  END LOOP;
END $$;
SELECT what, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p50_ms,
       round(max(ms)::numeric, 2) AS max_ms
FROM s1_times GROUP BY what ORDER BY what;
SELECT (SELECT count(*) FROM throttle_jobs.key_stats) AS live_keys;
