\set VERBOSITY terse
-- Adaptive rate limits.  The rule: once a period has passed since the last
-- evaluation, the next admission check tallies the key's job outcomes since
-- then (complete = success; fail or an expired lease = failure).  With at
-- least 5 outcomes and an error rate above error_threshold, the factor
-- halves (never below min_factor); with an error rate at or below it (and
-- at least one outcome) it grows by 0.1 (at most 1).  The rate in force is
-- max_per_period * factor (at least 1), and burst likewise.

-- The factor rule itself, exactly (_adaptive_factor(factor, ok, failed,
-- error_threshold, min_factor)):
SELECT f.label, throttle_jobs._adaptive_factor(f.factor, f.ok, f.failed, 0.5, 0.1) AS next
FROM (VALUES ('all failed: halves', 1.0, 0, 10),
             ('halves again', 0.5, 0, 10),
             ('floor', 0.15, 0, 10),
             ('at the floor', 0.1, 3, 7),
             ('too few samples', 0.5, 0, 4),
             ('error rate equal to threshold: recovers', 0.5, 5, 5),
             ('healthy: recovers a step', 0.5, 9, 1),
             ('recovery is capped at 1', 0.95, 10, 0),
             ('no outcomes: stays', 0.5, 0, 0)) f(label, factor, ok, failed);

-- Options and their errors.
SELECT throttle_jobs.set_rate_limit('ad:x', 10, '1 hour', adaptive => true, error_threshold => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('ad:x', 10, '1 hour', adaptive => true, error_threshold => -0.1);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('ad:x', 10, '1 hour', adaptive => true, min_factor => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('ad:x', 10, '1 hour', adaptive => true, min_factor => 1.5);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('ad:x', 10, '1 hour', adaptive => NULL);
\echo :LAST_ERROR_SQLSTATE
-- error_threshold without adaptive means nothing: refused (22023).
SELECT throttle_jobs.set_rate_limit('ad:x', 10, '1 hour', error_threshold => 0.3);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS limits_made FROM throttle_jobs.limits WHERE key = 'ad:x';

-- End to end: a provider that fails every call.
SELECT throttle_jobs.create_queue('ad_q', backoff_base => '1 hour', backoff_jitter => 0);
SELECT throttle_jobs.set_rate_limit('ad:flaky', 10, '1 hour', 'fixed_window',
                                    adaptive => true, error_threshold => 0.5, min_factor => 0.2);
SELECT key, adaptive, error_threshold, min_factor FROM throttle_jobs.limits WHERE key = 'ad:flaky';
SELECT count(throttle_jobs.enqueue('ad_q', jsonb_build_object('n', n), rate_limit_key => 'ad:flaky',
                                   max_attempts => 100))
FROM generate_series(1, 40) n;

-- Window 1: all 10 admitted, all fail (outcomes recorded).
SELECT count(throttle_jobs.fail(id, lease_token, 'provider down')) AS failed
FROM throttle_jobs.reserve('ad_q', 'w', 20);
SELECT count(*) FILTER (WHERE failed) AS failures, count(*) FILTER (WHERE NOT failed) AS successes
FROM throttle_jobs.key_outcome WHERE key = 'ad:flaky';
SELECT factor FROM throttle_jobs.key_rate_state WHERE key = 'ad:flaky';

-- A fixed clock for the next windows: move the last evaluation and the
-- window back by two hours, and bring the retries forward.
CREATE FUNCTION pg_temp.next_window(k text DEFAULT 'ad:flaky') RETURNS void LANGUAGE sql AS $$
  UPDATE throttle_jobs.key_rate_state
     SET evaluated_at = evaluated_at - interval '2 hours', stamp = stamp - interval '2 hours'
   WHERE key = k;
  UPDATE throttle_jobs.key_outcome SET at = at - interval '2 hours' WHERE key = k;
  UPDATE throttle_jobs.job SET state = 'available', blocked_key = NULL, blocked_until = NULL,
         run_at = now() - interval '1 second'
   WHERE rate_limit_key = k AND state <> 'running';
$$;

-- Window 2: the failures halve the rate: 5 admitted; they fail again.
SELECT pg_temp.next_window();
SELECT count(throttle_jobs.fail(id, lease_token, 'provider down')) AS admitted_and_failed
FROM throttle_jobs.reserve('ad_q', 'w', 20);
SELECT factor FROM throttle_jobs.key_rate_state WHERE key = 'ad:flaky';
-- explain_job says why the rest wait.
SELECT regexp_replace(throttle_jobs.explain_job(id)->'reasons'->>0, 'at .*$', 'at ...') AS reason
FROM throttle_jobs.job WHERE rate_limit_key = 'ad:flaky' AND state = 'throttled' ORDER BY id LIMIT 1;

-- Window 3: halved again to 0.25 of 10: 2 admitted; now they succeed.
SELECT pg_temp.next_window();
SELECT count(throttle_jobs.complete(id, lease_token)) AS admitted_and_completed
FROM throttle_jobs.reserve('ad_q', 'w', 20);
SELECT factor FROM throttle_jobs.key_rate_state WHERE key = 'ad:flaky';

-- Window 4: only 2 outcomes (too few to cut), both good: +0.1 -> 0.35: 3 admitted.
SELECT pg_temp.next_window();
SELECT count(throttle_jobs.complete(id, lease_token)) AS admitted_and_completed
FROM throttle_jobs.reserve('ad_q', 'w', 20);
SELECT round(factor::numeric, 2) AS factor FROM throttle_jobs.key_rate_state WHERE key = 'ad:flaky';

-- Fewer than 5 outcomes never cut the rate: after the 3 successes the rate
-- recovers to 0.45 (4 admissions); their 4 failures leave it there.
SELECT pg_temp.next_window();
SELECT count(throttle_jobs.fail(id, lease_token, 'down')) AS admitted_and_failed
FROM throttle_jobs.reserve('ad_q', 'w', 20);
SELECT pg_temp.next_window();
SELECT count(*) AS admitted FROM throttle_jobs.reserve('ad_q', 'w', 20);
SELECT round(factor::numeric, 2) AS factor FROM throttle_jobs.key_rate_state WHERE key = 'ad:flaky';

-- The floor: 20 per window, min_factor 0.2; failures take it 20 -> 10 -> 5
-- -> 4 (0.125 would be below the floor), and it stays there.
SELECT throttle_jobs.create_queue('ad_f', backoff_base => '1 hour', backoff_jitter => 0);
SELECT throttle_jobs.set_rate_limit('ad:floor', 20, '1 hour', 'fixed_window',
                                    adaptive => true, min_factor => 0.2);
SELECT count(throttle_jobs.enqueue('ad_f', jsonb_build_object('n', n), rate_limit_key => 'ad:floor',
                                   max_attempts => 100))
FROM generate_series(1, 40) n;
CREATE TEMP TABLE ad_floor (w int, admitted bigint);
INSERT INTO ad_floor SELECT 1, count(throttle_jobs.fail(id, lease_token, 'down'))
FROM throttle_jobs.reserve('ad_f', 'w', 40);
SELECT pg_temp.next_window('ad:floor');
INSERT INTO ad_floor SELECT 2, count(throttle_jobs.fail(id, lease_token, 'down'))
FROM throttle_jobs.reserve('ad_f', 'w', 40);
SELECT pg_temp.next_window('ad:floor');
INSERT INTO ad_floor SELECT 3, count(throttle_jobs.fail(id, lease_token, 'down'))
FROM throttle_jobs.reserve('ad_f', 'w', 40);
SELECT pg_temp.next_window('ad:floor');
INSERT INTO ad_floor SELECT 4, count(throttle_jobs.fail(id, lease_token, 'down'))
FROM throttle_jobs.reserve('ad_f', 'w', 40);
SELECT pg_temp.next_window('ad:floor');
INSERT INTO ad_floor SELECT 5, count(throttle_jobs.fail(id, lease_token, 'down'))
FROM throttle_jobs.reserve('ad_f', 'w', 40);
SELECT w, admitted FROM ad_floor ORDER BY w;
SELECT round(factor::numeric, 2) AS factor FROM throttle_jobs.key_rate_state WHERE key = 'ad:floor';

-- Throttled is not failed: the jobs held back kept their attempts.
SELECT max(attempt) FILTER (WHERE state = 'throttled') AS throttled_max_attempt
FROM throttle_jobs.job WHERE rate_limit_key = 'ad:flaky' AND attempt = 0;

-- Setting the same rate again keeps the learned factor; changing it resets.
SELECT throttle_jobs.set_rate_limit('ad:flaky', 10, '1 hour', 'fixed_window',
                                    adaptive => true, error_threshold => 0.5, min_factor => 0.2);
SELECT round(factor::numeric, 2) AS kept FROM throttle_jobs.key_rate_state WHERE key = 'ad:flaky';
SELECT throttle_jobs.set_rate_limit('ad:flaky', 20, '1 hour', 'fixed_window', adaptive => true);
-- (the key's waiting jobs keep a fresh state row that says when they are due)
SELECT count(*) AS learned_state_after_change FROM throttle_jobs.key_rate_state
WHERE key = 'ad:flaky' AND (factor < 1 OR stamp > '2000-01-01 00:00:00+00' OR evaluated_at IS NOT NULL);
SELECT count(*) AS outcomes_after_change FROM throttle_jobs.key_outcome WHERE key = 'ad:flaky';

-- A non-adaptive limit records no outcomes.
SELECT throttle_jobs.create_queue('ad_p');
SELECT throttle_jobs.set_rate_limit('ad:plain', 10, '1 hour');
SELECT throttle_jobs.enqueue('ad_p', '{"plain": 1}', rate_limit_key => 'ad:plain') IS NOT NULL AS enqueued;
SELECT count(throttle_jobs.fail(id, lease_token, 'x')) AS failed FROM throttle_jobs.reserve('ad_p', 'w', 20);
SELECT count(*) AS plain_outcomes FROM throttle_jobs.key_outcome WHERE key = 'ad:plain';

SELECT throttle_jobs.drop_limit('ad:flaky'), throttle_jobs.drop_limit('ad:plain'),
       throttle_jobs.drop_limit('ad:floor');
SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues WHERE name LIKE 'ad\_%';
SELECT count(*) AS limits_left FROM throttle_jobs.limits;
