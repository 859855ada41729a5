-- Activity for test/run's promtool step: every kind of metric gets a
-- sample (queues, states, events, histograms, keys, one with characters
-- that need escaping in a label).
\set ON_ERROR_STOP 1
CREATE EXTENSION throttle_jobs;
SELECT throttle_jobs.maintain() IS NOT NULL;
SELECT throttle_jobs.create_queue('m1', max_size => 1000, max_attempts => 1);
SELECT throttle_jobs.create_queue('m2');
SELECT throttle_jobs.set_concurrency_limit('tenant:*', 1);
SELECT throttle_jobs.set_rate_limit(E'api "v2" \\ x', 1, '1 hour', adaptive => true);
SELECT throttle_jobs.set_rate_limit('win', 5, '1 minute', algorithm => 'fixed_window');
SELECT count(throttle_jobs.enqueue('m1', '{}')) FROM generate_series(1, 4);
SELECT count(throttle_jobs.enqueue('m1', '{}', run_at => now() + interval '1 hour')) FROM generate_series(1, 2);
SELECT count(throttle_jobs.enqueue('m2', '{}', concurrency_key => 'tenant:a')) FROM generate_series(1, 3);
SELECT count(throttle_jobs.enqueue('m2', '{}', rate_limit_key => E'api "v2" \\ x')) FROM generate_series(1, 2);
SELECT count(throttle_jobs.enqueue('m2', '{}', rate_limit_key => 'win')) FROM generate_series(1, 2);
CREATE TEMP TABLE r AS SELECT row_number() OVER (ORDER BY id) n, id, lease_token FROM throttle_jobs.reserve('m1', 'w', 3);
SELECT throttle_jobs.complete(id, lease_token) FROM r WHERE n <= 2;
SELECT throttle_jobs.fail(id, lease_token, 'boom') FROM r WHERE n = 3;
SELECT count(*) FROM throttle_jobs.reserve('m2', 'w', 10);
SELECT throttle_jobs.maintain() IS NOT NULL;
