-- K1 (a first cut; the full suite is the benchmarks issue's): reserving a
-- free job behind 100,000 jobs of a saturated concurrency key, against the
-- same in a queue with no throttled jobs.  Needs a fresh database with the
-- extension; prints the median reserve time of each and their ratio.
--   psql -X -d DB -f test/bench/k1_skip.sql
\set ON_ERROR_STOP 1
SELECT throttle_jobs.create_queue('bench_k1');
SELECT throttle_jobs.create_queue('bench_k0');
SELECT throttle_jobs.set_concurrency_limit('bench:hot', 1);
SELECT throttle_jobs.set_concurrency_limit('bench:free', 100000);
SELECT count(throttle_jobs.enqueue('bench_k1', '{}', concurrency_key => 'bench:hot'))
FROM generate_series(1, 100000);
SELECT count(throttle_jobs.enqueue(q, '{}', priority => -1, concurrency_key => 'bench:free'))
FROM generate_series(1, 2000), (VALUES ('bench_k1'), ('bench_k0')) v(q);
-- the first reservation takes the hot key's slot; the second parks the rest once
SELECT count(*) FROM throttle_jobs.reserve('bench_k1', 'w');
\timing on
SELECT count(*) AS first_call_parks_the_key FROM throttle_jobs.reserve('bench_k1', 'w');
\timing off
VACUUM throttle_jobs.job;
CREATE TEMP TABLE k1_times (q text, ms float8);
DO $$
DECLARE s timestamptz; q text;
BEGIN
  FOR i IN 1..3 LOOP
    FOREACH q IN ARRAY ARRAY['bench_k1', 'bench_k0'] LOOP
      FOR j IN 1..200 LOOP
        s := clock_timestamp();
        PERFORM throttle_jobs.reserve(q, 'w');
        INSERT INTO k1_times VALUES (q, extract(epoch FROM clock_timestamp() - s) * 1000);
      END LOOP;
    END LOOP;
  END LOOP;
END $$;
SELECT q, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p50_ms
FROM k1_times GROUP BY q ORDER BY q;
SELECT round(((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM k1_times WHERE q = 'bench_k1')
     / (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM k1_times WHERE q = 'bench_k0'))::numeric, 2)
       AS throttled_over_unthrottled;
SELECT throttle_jobs.drop_limit('bench:hot'), throttle_jobs.drop_limit('bench:free');
SELECT throttle_jobs.drop_queue('bench_k1', force => true), throttle_jobs.drop_queue('bench_k0', force => true);
