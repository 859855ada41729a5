\set VERBOSITY terse

-- The contract's defaults (base 30 s, factor 4, cap 1 h, jitter 0.1) with
-- the middle draw (0.5, no jitter effect): 30 s, 2 min, 8 min, 32 min, 1 h, 1 h.
SELECT n AS attempt, throttle_jobs.backoff_delay(n) AS delay
FROM generate_series(1, 7) n ORDER BY n;

-- The same with every argument spelled out.
SELECT n AS attempt,
       throttle_jobs.backoff_delay(n, base => '30 seconds', factor => 4, max => '1 hour',
                                   jitter => 0.1, draw => 0.5) AS delay
FROM generate_series(1, 6) n ORDER BY n;

-- Jitter bounds: draw 0 gives -jitter, draw 1 gives +jitter, but never
-- above the cap.
SELECT n AS attempt,
       throttle_jobs.backoff_delay(n, draw => 0) AS draw_0,
       throttle_jobs.backoff_delay(n, draw => 1) AS draw_1
FROM generate_series(1, 6) n ORDER BY n;
SELECT throttle_jobs.backoff_delay(1, jitter => 0.5, draw => 0) AS half_down,
       throttle_jobs.backoff_delay(1, jitter => 0.5, draw => 1) AS half_up,
       throttle_jobs.backoff_delay(1, jitter => 1, draw => 0) AS full_down,
       throttle_jobs.backoff_delay(1, jitter => 1, draw => 1) AS full_up,
       throttle_jobs.backoff_delay(1, jitter => 1, draw => 0.75) AS three_quarters;

-- Every draw stays within [delay * (1 - jitter), min(cap, delay * (1 + jitter))].
SELECT count(*) AS out_of_bounds
FROM generate_series(1, 8) n, generate_series(0, 100) d,
     LATERAL (SELECT least(interval '30 seconds' * 4 ^ (n - 1), interval '1 hour') AS mid) m
WHERE throttle_jobs.backoff_delay(n, draw => d / 100.0) < m.mid * 0.9
   OR throttle_jobs.backoff_delay(n, draw => d / 100.0) > least(m.mid * 1.1, interval '1 hour');

-- Without jitter the delay is exactly min(max, base * factor^(attempt-1)).
SELECT count(*) AS mismatches
FROM generate_series(1, 40) n
WHERE throttle_jobs.backoff_delay(n, '1 second', 2, '1 day', 0, 0.5)
      <> least(interval '1 second' * 2 ^ (n - 1), interval '1 day');

-- A base above the cap gives the cap; a factor of 1 gives a constant delay.
SELECT throttle_jobs.backoff_delay(1, '2 hours', 4, '1 hour', 0, 0.5) AS base_above_cap,
       throttle_jobs.backoff_delay(50, '10 seconds', 1, '1 hour', 0, 0.5) AS factor_1;

-- The result is a plain time interval (no day or month part), so adding it
-- to a timestamp does not depend on the time zone.
SELECT count(*) AS with_days_or_months
FROM generate_series(1, 50) n,
     LATERAL (SELECT throttle_jobs.backoff_delay(n, '1 hour', 2, '30 days', 0, 0.5) AS d) x
WHERE extract(day FROM x.d) <> 0 OR extract(month FROM x.d) <> 0;

-- Over attempts 1..100000, with several parameter sets: never above the
-- cap, never negative, non-decreasing with draw 0.5 and jitter 0, and the
-- cap is reached.
CREATE TEMP TABLE params (set int, base interval, factor float8, max interval, jitter float8, draw float8);
INSERT INTO params VALUES
  (1, '30 seconds',      4,         '1 hour',    0,   0.5),
  (2, '1 microsecond',   1.0000001, '1 day',     0,   0.5),
  (3, '1 second',        1000,      '100 years', 0,   0.5),
  (4, '100 years',       2,         '100 years', 0,   0.5),
  (5, '1 millisecond',   1,         '1 second',  0,   0.5),
  (6, '30 seconds',      4,         '1 hour',    1,   0),
  (7, '30 seconds',      4,         '1 hour',    1,   1),
  (8, '1 second',        2,         '1 day',     0.3, 0.9),
  (9, '1 second',        1.5,       '1 hour',    0.1, 0.123);
SELECT p.set,
       max(d) <= p.max AS never_above_cap,
       min(d) >= interval '0' AS never_negative,
       count(*) FILTER (WHERE d < prev) AS decreases,
       bool_or(d = p.max) AS reaches_cap
FROM params p,
     LATERAL (SELECT n, throttle_jobs.backoff_delay(n, p.base, p.factor, p.max, p.jitter, p.draw) AS d,
                     lag(throttle_jobs.backoff_delay(n, p.base, p.factor, p.max, p.jitter, p.draw)) OVER (ORDER BY n) AS prev
              FROM generate_series(1, 100000) n) x
GROUP BY p.set, p.max
ORDER BY p.set;

-- Huge attempt numbers neither fail nor overflow: they give the cap
-- (times the jitter factor, when below the cap).
SELECT throttle_jobs.backoff_delay(100000) AS at_100000,
       throttle_jobs.backoff_delay(2147483647) AS at_int_max,
       throttle_jobs.backoff_delay(2147483647, '1 second', 1000, '100 years', 0, 0.5) AS max_factor_max_cap,
       throttle_jobs.backoff_delay(2147483647, '100 years', 1000, '100 years', 1, 0) AS full_jitter_down,
       throttle_jobs.backoff_delay(2147483647, '100 years', 1000, '100 years', 1, 1) AS full_jitter_up;

-- The function is immutable and strict: NULL in, NULL out.
SELECT throttle_jobs.backoff_delay(NULL) IS NULL AS null_attempt,
       throttle_jobs.backoff_delay(1, NULL) IS NULL AS null_base;

-- Out-of-range arguments are refused.
SELECT throttle_jobs.backoff_delay(0);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.backoff_delay(-5);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.backoff_delay(1, draw => 1.5);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.backoff_delay(1, draw => -0.1);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.backoff_delay(1, jitter => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.backoff_delay(1, factor => 0.5);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.backoff_delay(1, factor => 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.backoff_delay(1, base => '0');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.backoff_delay(1, base => '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.backoff_delay(1, max => '0');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.backoff_delay(1, max => '1000 years');
\echo :LAST_ERROR_SQLSTATE
