\set VERBOSITY terse
SET client_min_messages = warning;
-- Times computed from fixed inputs print the same everywhere in UTC, in
-- the ISO style of the literals that produce them.
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

-- Per-key limits: concurrency caps (set_concurrency_limit), rate limits
-- (set_rate_limit), templates, parking and releasing throttled jobs,
-- drop_limit, try_acquire/acquire, explain_job, and the rate arithmetic
-- with a fixed clock (_rate_admit).  Queues are named lim_*, keys lim:*.
-- Concurrent admissions are isolation-test matters, not covered here.

-- No limit exists when this file starts (reserve takes its fast path).
SELECT count(*) AS limits FROM throttle_jobs.limits;

-- Helpers.  lim_jobs: the live jobs of this file's queues, named by the
-- "n" of their payload.  lim_lease: the lease of each reserved job, filled
-- by lim_reserve(), which returns the names of the jobs reserved.
CREATE TEMP VIEW lim_jobs AS
SELECT j.id, j.queue, j.payload->>'n' AS job, j.state, j.attempt, j.cost,
       j.concurrency_key, j.rate_limit_key, j.blocked_key, j.blocked_until
FROM throttle_jobs.jobs j WHERE j.queue LIKE 'lim\_%';
CREATE TEMP TABLE lim_lease (job text PRIMARY KEY, id bigint, token uuid);
CREATE FUNCTION pg_temp.lim_reserve(queue text, max_jobs integer DEFAULT 10,
                                    worker text DEFAULT 'w1')
RETURNS SETOF text LANGUAGE sql AS $$
  INSERT INTO lim_lease AS l
  SELECT r.payload->>'n', r.id, r.lease_token
  FROM throttle_jobs.reserve(queue, worker, max_jobs) r
  ON CONFLICT (job) DO UPDATE SET id = EXCLUDED.id, token = EXCLUDED.token
  RETURNING l.job
$$;
-- The jobs carrying a concurrency or rate key, by state, in id order.
CREATE FUNCTION pg_temp.lim_key_states(k text)
RETURNS TABLE (running text, available text, scheduled text, throttled text)
LANGUAGE sql AS $$
  SELECT string_agg(job, ',' ORDER BY id) FILTER (WHERE state = 'running'),
         string_agg(job, ',' ORDER BY id) FILTER (WHERE state = 'available'),
         string_agg(job, ',' ORDER BY id) FILTER (WHERE state = 'scheduled'),
         string_agg(job, ',' ORDER BY id) FILTER (WHERE state = 'throttled')
  FROM lim_jobs WHERE concurrency_key = k OR rate_limit_key = k
$$;
-- explain_job's state and reasons (one line, joined by ' / '), with times
-- (ISO or Postgres style) and job ids masked.
CREATE FUNCTION pg_temp.lim_mask(t text) RETURNS text LANGUAGE sql AS $$
  SELECT regexp_replace(regexp_replace(regexp_replace(t,
           '\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:\d\d)?)?', '<time>', 'g'),
           '[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d(\.\d+)? \d{4}( [A-Z]+)?', '<time>', 'g'),
           '"id": \d+', '"id": <id>', 'g')
$$;
CREATE FUNCTION pg_temp.lim_explain(job_id bigint)
RETURNS TABLE (state text, reasons text) LANGUAGE sql AS $$
  SELECT e->>'state',
         (SELECT string_agg(pg_temp.lim_mask(r), ' / ')
          FROM jsonb_array_elements_text(e->'reasons') r)
  FROM throttle_jobs.explain_job(job_id) e
$$;
CREATE FUNCTION pg_temp.lim_id(name text) RETURNS bigint LANGUAGE sql AS $$
  SELECT id FROM lim_jobs WHERE job = name
$$;

------------------------------------------------------------------------------
-- Bad arguments: each is refused with its SQLSTATE and changes nothing
------------------------------------------------------------------------------

-- set_concurrency_limit: NULL key, NULL max_running (22004)
SELECT throttle_jobs.set_concurrency_limit(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_concurrency_limit('lim:e', NULL);
\echo :LAST_ERROR_SQLSTATE
-- empty key, key over 255 bytes (22023)
SELECT throttle_jobs.set_concurrency_limit('', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_concurrency_limit(repeat('k', 256), 1);
\echo :LAST_ERROR_SQLSTATE
-- 128 two-byte characters are 256 bytes (22023)
SELECT throttle_jobs.set_concurrency_limit(repeat('é', 128), 1);
\echo :LAST_ERROR_SQLSTATE
-- bad templates: a lone '*', a '*' inside, two of them (22023)
SELECT throttle_jobs.set_concurrency_limit('*', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_concurrency_limit('a*b', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_concurrency_limit('**', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_concurrency_limit('lim:*:*', 1);
\echo :LAST_ERROR_SQLSTATE
-- max_running 0 and negative (22023)
SELECT throttle_jobs.set_concurrency_limit('lim:e', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_concurrency_limit('lim:e', -1);
\echo :LAST_ERROR_SQLSTATE

-- set_rate_limit: NULL key, max_per_period, period, algorithm (22004)
SELECT throttle_jobs.set_rate_limit(NULL, 1, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('lim:e', NULL, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('lim:e', 1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('lim:e', 1, '1 second', NULL);
\echo :LAST_ERROR_SQLSTATE
-- empty key, long key, bad template (22023)
SELECT throttle_jobs.set_rate_limit('', 1, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit(repeat('k', 256), 1, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('lim:*x', 1, '1 second');
\echo :LAST_ERROR_SQLSTATE
-- max_per_period 0 and negative (22023)
SELECT throttle_jobs.set_rate_limit('lim:e', 0, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('lim:e', -5, '1 second');
\echo :LAST_ERROR_SQLSTATE
-- period zero, negative, over 100 years (22023)
SELECT throttle_jobs.set_rate_limit('lim:e', 1, '0 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('lim:e', 1, '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('lim:e', 1, '100 years 1 day');
\echo :LAST_ERROR_SQLSTATE
-- unknown algorithm (22023)
SELECT throttle_jobs.set_rate_limit('lim:e', 1, '1 second', 'leaky_bucket');
\echo :LAST_ERROR_SQLSTATE
-- burst with another algorithm than token_bucket (22023)
SELECT throttle_jobs.set_rate_limit('lim:e', 1, '1 second', 'fixed_window', burst => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('lim:e', 1, '1 second', 'sliding_window', burst => 2);
\echo :LAST_ERROR_SQLSTATE
-- burst 0 and negative (22023)
SELECT throttle_jobs.set_rate_limit('lim:e', 1, '1 second', burst => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.set_rate_limit('lim:e', 1, '1 second', burst => -1);
\echo :LAST_ERROR_SQLSTATE
-- sliding_window keeps a log: at most 10000 per period (22023)
SELECT throttle_jobs.set_rate_limit('lim:e', 10001, '1 hour', 'sliding_window');
\echo :LAST_ERROR_SQLSTATE
-- (10000 itself is allowed)
SELECT throttle_jobs.set_rate_limit('lim:e', 10000, '1 hour', 'sliding_window');
SELECT throttle_jobs.drop_limit('lim:e') AS dropped;

-- drop_limit: NULL key (22004), empty key, bad template (22023)
SELECT throttle_jobs.drop_limit(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.drop_limit('');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.drop_limit('a*b');
\echo :LAST_ERROR_SQLSTATE

-- try_acquire: NULL key or cost (22004); empty or long key, cost 0 or
-- negative (22023)
SELECT throttle_jobs.try_acquire(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.try_acquire('lim:e', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.try_acquire('');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.try_acquire(repeat('k', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.try_acquire('lim:e', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.try_acquire('lim:e', -1);
\echo :LAST_ERROR_SQLSTATE
-- acquire: NULL key, cost or timeout (22004); cost 0, negative timeout,
-- timeout over 100 years (22023)
SELECT throttle_jobs.acquire(NULL, 1, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.acquire('lim:e', NULL, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.acquire('lim:e', 1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.acquire('lim:e', 0, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.acquire('lim:e', 1, '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.acquire('lim:e', 1, '101 years');
\echo :LAST_ERROR_SQLSTATE

-- enqueue: a job carries concrete keys; a '*' in its concurrency_key or
-- rate_limit_key is refused (22023), in enqueue_batch too.
SELECT throttle_jobs.create_queue('lim_a');
SELECT throttle_jobs.enqueue('lim_a', concurrency_key => 'lim:*');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.enqueue('lim_a', rate_limit_key => 'lim:a*b');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.enqueue_batch('lim_a', '[{"concurrency_key": "*"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.enqueue_batch('lim_a', '[{}, {"rate_limit_key": "lim:*"}]');
\echo :LAST_ERROR_SQLSTATE

-- _rate_admit (internal): NULL arguments other than burst (22004), bad
-- max, period, algorithm (22023).
SELECT throttle_jobs._rate_admit('token_bucket', 1, '1 second', NULL, 1, NULL, 0, '2000-01-01 00:00:00+00', '{}', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs._rate_admit('token_bucket', 0, '1 second', NULL, 1, now(), 0, '2000-01-01 00:00:00+00', '{}', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs._rate_admit('token_bucket', 1, '0 seconds', NULL, 1, now(), 0, '2000-01-01 00:00:00+00', '{}', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs._rate_admit('leaky', 1, '1 second', NULL, 1, now(), 0, '2000-01-01 00:00:00+00', '{}', '{}');
\echo :LAST_ERROR_SQLSTATE

-- Nothing was created, and nothing was enqueued.
SELECT count(*) AS limits FROM throttle_jobs.limits;
SELECT count(*) AS jobs FROM lim_jobs;

-- The longest key (255 bytes) is accepted.
SELECT throttle_jobs.set_concurrency_limit(repeat('k', 255), 1);
SELECT throttle_jobs.drop_limit(repeat('k', 255)) AS dropped;
-- sliding_window allows exactly 10000 per period.
SELECT throttle_jobs.set_rate_limit('lim:e', 10000, '1 hour', 'sliding_window');
SELECT throttle_jobs.drop_limit('lim:e') AS dropped;

------------------------------------------------------------------------------
-- Limits and the limits view
------------------------------------------------------------------------------

-- A key has one row: its cap, its rate, or both.  Setting again replaces
-- that part only; templates end in '*'.
SELECT throttle_jobs.set_concurrency_limit('lim:both', 3);
SELECT throttle_jobs.set_rate_limit('lim:both', 10, '1 minute');
SELECT throttle_jobs.set_concurrency_limit('lim:both', 1);
SELECT throttle_jobs.set_rate_limit('lim:rate:*', 5, '1 hour', 'fixed_window');
SELECT throttle_jobs.set_rate_limit('lim:rate:*', 7, '2 hours', 'token_bucket', burst => 9);
SELECT key, template, max_running, max_per_period, period, algorithm, burst
FROM throttle_jobs.limits WHERE key LIKE 'lim:%' ORDER BY key;
-- drop_limit removes the whole row (cap and rate): true, then false.
SELECT throttle_jobs.drop_limit('lim:both') AS dropped;
SELECT throttle_jobs.drop_limit('lim:both') AS dropped_again;
SELECT throttle_jobs.drop_limit('lim:rate:*') AS dropped;
-- A key that never had a limit: false.
SELECT throttle_jobs.drop_limit('lim:never') AS dropped;
SELECT count(*) AS limits FROM throttle_jobs.limits;

------------------------------------------------------------------------------
-- A concurrency cap across two queues
------------------------------------------------------------------------------

-- lim:cap allows 2 running jobs, in lim_a and lim_b together.
SELECT throttle_jobs.create_queue('lim_b');
SELECT throttle_jobs.set_concurrency_limit('lim:cap', 2);
-- lim_a: a1..a4 carry the key, then a job without a key.
SELECT count(throttle_jobs.enqueue('lim_a', jsonb_build_object('n', 'a' || n),
                                   concurrency_key => 'lim:cap'))
FROM generate_series(1, 4) n;
SELECT throttle_jobs.enqueue('lim_a', '{"n": "a-free"}') IS NOT NULL AS ok;
-- lim_b: b1..b5 carry the key, then a job whose key has no limit.
SELECT count(throttle_jobs.enqueue('lim_b', jsonb_build_object('n', 'b' || n),
                                   concurrency_key => 'lim:cap'))
FROM generate_series(1, 5) n;
SELECT throttle_jobs.enqueue('lim_b', '{"n": "b-other"}', concurrency_key => 'lim:other') IS NOT NULL AS ok;
-- Nobody runs yet: every job is available.
SELECT * FROM pg_temp.lim_key_states('lim:cap');

-- One job from lim_a takes the first slot.
SELECT * FROM pg_temp.lim_reserve('lim_a', 1) AS reserved;
-- lim_b: b1 takes the second slot; b2..b5 are held back, and b-other,
-- behind them, is reserved all the same (no head-of-line blocking).
SELECT * FROM pg_temp.lim_reserve('lim_b') AS reserved;
-- lim_a: its jobs of the key are held back too; a-free is reserved.
SELECT * FROM pg_temp.lim_reserve('lim_a') AS reserved;
-- Never more than 2 running: the others are 'throttled', blocked by the key.
SELECT queue, job, state, blocked_key, blocked_until FROM lim_jobs ORDER BY id;
-- Nothing more to reserve from either queue.
SELECT count(*) AS reserved FROM pg_temp.lim_reserve('lim_a');
SELECT count(*) AS reserved FROM pg_temp.lim_reserve('lim_b');

-- complete() of a running job of the key releases exactly one throttled
-- job, the best one (priority, then run_at, then id: a2), back to 'available'.
SELECT throttle_jobs.complete(id, token) AS completed FROM lim_lease WHERE job = 'a1';
SELECT * FROM pg_temp.lim_key_states('lim:cap');
SELECT blocked_key, blocked_until FROM lim_jobs WHERE job = 'a2';
SELECT * FROM pg_temp.lim_reserve('lim_a') AS reserved;

-- fail() with a retry releases one (a3); the failed job waits for its retry.
SELECT throttle_jobs.fail(id, token, 'boom', retry_in => '1 hour') AS failed FROM lim_lease WHERE job = 'b1';
SELECT * FROM pg_temp.lim_key_states('lim:cap');
SELECT * FROM pg_temp.lim_reserve('lim_a') AS reserved;

-- fail() for good (dead) releases one (a4).
SELECT throttle_jobs.fail(id, token, 'fatal', retryable => false) AS failed FROM lim_lease WHERE job = 'a2';
SELECT * FROM pg_temp.lim_key_states('lim:cap');
SELECT * FROM pg_temp.lim_reserve('lim_a') AS reserved;

-- snooze() releases one (b2); the snoozed job waits for its time.
SELECT throttle_jobs.snooze(id, token, '1 hour') AS snoozed FROM lim_lease WHERE job = 'a3';
SELECT * FROM pg_temp.lim_key_states('lim:cap');
SELECT * FROM pg_temp.lim_reserve('lim_b') AS reserved;
SELECT * FROM pg_temp.lim_key_states('lim:cap');

-- A stale token changes nothing and releases nothing.
SELECT throttle_jobs.complete(id, gen_random_uuid()) AS completed FROM lim_lease WHERE job = 'b2';
SELECT * FROM pg_temp.lim_key_states('lim:cap');

-- An expired lease, reaped by maintain(), releases exactly one (b3), and
-- a second pass releases nothing more: b3 holds the free slot.
UPDATE throttle_jobs.job SET lease_until = now() - interval '1 second'
WHERE id = pg_temp.lim_id('a4');
SELECT m->'expired_leases' AS expired_leases, m->'retried' AS retried FROM throttle_jobs.maintain() m;
SELECT * FROM pg_temp.lim_key_states('lim:cap');
SELECT jsonb_typeof(throttle_jobs.maintain()) AS maintain;
SELECT * FROM pg_temp.lim_key_states('lim:cap');
SELECT * FROM pg_temp.lim_reserve('lim_b') AS reserved;
SELECT * FROM pg_temp.lim_key_states('lim:cap');

-- Raising the cap releases as many waiting jobs as it adds free slots;
-- reserve takes them.
SELECT throttle_jobs.set_concurrency_limit('lim:cap', 4);
SELECT * FROM pg_temp.lim_key_states('lim:cap');
SELECT * FROM pg_temp.lim_reserve('lim_b') AS reserved;
SELECT * FROM pg_temp.lim_key_states('lim:cap');

-- Enqueued while its key is at its cap, a job starts out throttled (it is
-- never walked by reserve); one with run_at in the future is not parked.
SELECT throttle_jobs.enqueue('lim_a', '{"n": "a5"}', concurrency_key => 'lim:cap') IS NOT NULL AS ok;
SELECT throttle_jobs.enqueue('lim_a', '{"n": "a6"}', concurrency_key => 'lim:cap',
                             run_at => now() + interval '1 hour') IS NOT NULL AS ok;
SELECT job, state, blocked_key, blocked_until FROM lim_jobs WHERE job IN ('a5', 'a6') ORDER BY id;
-- explain_job names the key, its cap and limit, and who holds it.
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('a5'));

-- Lowering the cap interrupts nobody: the running jobs go on, and a5 keeps
-- waiting.
SELECT throttle_jobs.set_concurrency_limit('lim:cap', 1);
SELECT * FROM pg_temp.lim_key_states('lim:cap');
SELECT count(*) AS reserved FROM pg_temp.lim_reserve('lim_a');
SELECT * FROM pg_temp.lim_key_states('lim:cap');

-- A slot freed without a completion (drop_queue deletes a running job) is
-- found by maintain(): lim:rec allows 1; its holder runs in lim_c, d1 waits
-- in lim_d.
SELECT throttle_jobs.create_queue('lim_c');
SELECT throttle_jobs.create_queue('lim_d');
SELECT throttle_jobs.set_concurrency_limit('lim:rec', 1);
SELECT throttle_jobs.enqueue('lim_c', '{"n": "c1"}', concurrency_key => 'lim:rec') IS NOT NULL AS ok;
SELECT throttle_jobs.enqueue('lim_d', '{"n": "d1"}', concurrency_key => 'lim:rec') IS NOT NULL AS ok;
SELECT * FROM pg_temp.lim_reserve('lim_c') AS reserved;
SELECT count(*) AS reserved FROM pg_temp.lim_reserve('lim_d');
SELECT throttle_jobs.drop_queue('lim_c', force => true);
SELECT * FROM pg_temp.lim_key_states('lim:rec');
-- explain_job: held back by the key, though a slot is free now.
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('d1'));
SELECT jsonb_typeof(throttle_jobs.maintain()) AS maintain;
SELECT * FROM pg_temp.lim_key_states('lim:rec');
SELECT * FROM pg_temp.lim_reserve('lim_d') AS reserved;

-- Each job that stops running releases one parked job, however many are
-- parked and whether or not the job released before it was reserved yet:
-- lim:pair allows 2; two completions in a row release two (e3, e4), e5
-- stays parked.
SELECT throttle_jobs.create_queue('lim_e');
SELECT throttle_jobs.set_concurrency_limit('lim:pair', 2);
SELECT count(throttle_jobs.enqueue('lim_e', jsonb_build_object('n', 'e' || n), concurrency_key => 'lim:pair'))
FROM generate_series(1, 5) n;
SELECT * FROM pg_temp.lim_reserve('lim_e') AS reserved;
SELECT throttle_jobs.complete(id, token) AS completed FROM lim_lease WHERE job = 'e1';
SELECT * FROM pg_temp.lim_key_states('lim:pair');
SELECT throttle_jobs.complete(id, token) AS completed FROM lim_lease WHERE job = 'e2';
SELECT * FROM pg_temp.lim_key_states('lim:pair');
SELECT * FROM pg_temp.lim_reserve('lim_e') AS reserved;
SELECT * FROM pg_temp.lim_key_states('lim:pair');

------------------------------------------------------------------------------
-- Templates
------------------------------------------------------------------------------

-- 'lim:tenant:*' gives each concrete key its own cap of 1; the exact key
-- lim:tenant:vip has 3; the longer template 'lim:tenant:big:*' gives 2.
-- lim:tenant (no colon) matches no template and is unlimited.
SELECT throttle_jobs.set_concurrency_limit('lim:tenant:*', 1);
SELECT throttle_jobs.set_concurrency_limit('lim:tenant:vip', 3);
SELECT throttle_jobs.set_concurrency_limit('lim:tenant:big:*', 2);
SELECT throttle_jobs.create_queue('lim_t');
SELECT count(throttle_jobs.enqueue('lim_t', jsonb_build_object('n', k || '#' || n), concurrency_key => k))
FROM unnest(ARRAY['lim:tenant:a', 'lim:tenant:b', 'lim:tenant:vip', 'lim:tenant:big:x',
                  'lim:tenant:big:y', 'lim:tenant']) k, generate_series(1, 4) n;
SELECT count(*) AS reserved FROM pg_temp.lim_reserve('lim_t', 100);
SELECT concurrency_key, count(*) FILTER (WHERE state = 'running') AS running,
       count(*) FILTER (WHERE state = 'throttled') AS throttled
FROM lim_jobs WHERE queue = 'lim_t' GROUP BY concurrency_key ORDER BY concurrency_key;
-- explain_job names the limit that governs each key.
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('lim:tenant:a#4'));
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('lim:tenant:vip#4'));
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('lim:tenant:big:y#4'));
-- Completing a tenant:a job releases a tenant:a job, and none of another key.
SELECT throttle_jobs.complete(id, token) AS completed FROM lim_lease WHERE job = 'lim:tenant:a#1';
SELECT concurrency_key, string_agg(job, ',' ORDER BY id) AS available
FROM lim_jobs WHERE queue = 'lim_t' AND state = 'available' GROUP BY concurrency_key;
SELECT * FROM pg_temp.lim_reserve('lim_t') AS reserved;

------------------------------------------------------------------------------
-- Rate limits through reserve
------------------------------------------------------------------------------

SELECT throttle_jobs.create_queue('lim_r');

-- token_bucket, 3 per day with a burst of 5: five jobs start at once, the
-- sixth waits for the next token (a day / 3 = 8 hours).
SELECT throttle_jobs.set_rate_limit('lim:tb', 3, '1 day', burst => 5);
SELECT count(throttle_jobs.enqueue('lim_r', jsonb_build_object('n', 't' || n), rate_limit_key => 'lim:tb'))
FROM generate_series(1, 7) n;
BEGIN;
SELECT * FROM pg_temp.lim_reserve('lim_r') AS reserved;
SELECT job, state, blocked_key, blocked_until > now() AS later,
       blocked_until <= now() + interval '1 day' AS within_period,
       blocked_until - now() AS wait
FROM lim_jobs WHERE rate_limit_key = 'lim:tb' AND state = 'throttled' ORDER BY id;
-- The bucket is empty and knows when it admits next.
SELECT tokens, stamp = now() AS stamp_now, next_at - now() AS next_in
FROM throttle_jobs.key_rate_state WHERE key = 'lim:tb';
COMMIT;
-- A job enqueued while the key refuses starts out throttled until then; one
-- with run_at in the future is not parked.
SELECT throttle_jobs.enqueue('lim_r', '{"n": "t8"}', rate_limit_key => 'lim:tb') IS NOT NULL AS ok;
SELECT throttle_jobs.enqueue('lim_r', '{"n": "t9"}', rate_limit_key => 'lim:tb',
                             run_at => now() + interval '1 hour') IS NOT NULL AS ok;
SELECT job, state, blocked_key, blocked_until > now() AS later,
       blocked_until <= now() + interval '1 day' AS within_period
FROM lim_jobs WHERE job IN ('t8', 't9') ORDER BY id;
-- explain_job gives the rate and when it next admits.
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('t6'));
-- Nothing is reserved before then, and maintain() releases nothing.
SELECT count(*) AS reserved FROM pg_temp.lim_reserve('lim_r');
SELECT jsonb_typeof(throttle_jobs.maintain()) AS maintain;
SELECT * FROM pg_temp.lim_key_states('lim:tb');
-- A day later (simulated: the key's waiting jobs are due, the bucket last
-- refilled a day earlier), reserve releases as many as it has tokens for
-- (three) and admits them.
UPDATE throttle_jobs.key_rate_state SET stamp = stamp - interval '1 day',
       next_at = now() - interval '1 second'
WHERE key = 'lim:tb';
SELECT * FROM pg_temp.lim_reserve('lim_r') AS reserved;
SELECT * FROM pg_temp.lim_key_states('lim:tb');

-- A job whose cost exceeds the bucket (burst 5) could never start:
-- enqueue refuses it (22023), and no job is added (options tests more).
SELECT throttle_jobs.enqueue('lim_r', '{"n": "t-huge"}', rate_limit_key => 'lim:tb', cost => 6) IS NOT NULL AS ok;
SELECT count(*) AS reserved FROM pg_temp.lim_reserve('lim_r');
SELECT job, state, blocked_key, blocked_until FROM lim_jobs WHERE job = 't-huge';
SELECT jsonb_typeof(throttle_jobs.maintain()) AS maintain;

-- A job's cost takes that many tokens: 10 per day, jobs of cost 4, 4, 4
-- and 1: two start (8 tokens), the third waits until 4 tokens are there
-- again (2 missing: 0.2 day = 4 h 48 min), and the cheap one behind it
-- waits with it.
SELECT throttle_jobs.set_rate_limit('lim:cost', 10, '1 day');
SELECT count(throttle_jobs.enqueue('lim_r', jsonb_build_object('n', 'k' || n), rate_limit_key => 'lim:cost',
                                   cost => CASE WHEN n < 4 THEN 4 ELSE 1 END))
FROM generate_series(1, 4) n;
BEGIN;
SELECT * FROM pg_temp.lim_reserve('lim_r') AS reserved;
SELECT job, cost, state, blocked_until - now() AS wait
FROM lim_jobs WHERE rate_limit_key = 'lim:cost' ORDER BY id;
SELECT tokens FROM throttle_jobs.key_rate_state WHERE key = 'lim:cost';
COMMIT;

-- fixed_window, 4 per window of 100 years (windows start on 2000-01-01, so
-- this one ends in 2098): f1 (cost 3) starts; f-huge (cost 5) never could
-- and is refused; f2 (cost 1) still fits and starts; f3 and f4 wait for
-- the next window.
SELECT throttle_jobs.set_rate_limit('lim:fw', 4, '100 years', 'fixed_window');
SELECT throttle_jobs.enqueue('lim_r', '{"n": "f1"}', rate_limit_key => 'lim:fw', cost => 3) IS NOT NULL AS ok;
SELECT throttle_jobs.enqueue('lim_r', '{"n": "f-huge"}', rate_limit_key => 'lim:fw', cost => 5) IS NOT NULL AS ok;
SELECT count(throttle_jobs.enqueue('lim_r', jsonb_build_object('n', 'f' || n), rate_limit_key => 'lim:fw'))
FROM generate_series(2, 4) n;
SELECT * FROM pg_temp.lim_reserve('lim_r') AS reserved;
SELECT job, cost, state, blocked_until = 'infinity' AS never,
       blocked_until > now() AS later, blocked_until <= now() + interval '100 years' AS within_period
FROM lim_jobs WHERE rate_limit_key = 'lim:fw' ORDER BY id;
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('f3'));
-- The window's count.
SELECT tokens, stamp = '2000-01-01 00:00:00+00' AS window_start FROM throttle_jobs.key_rate_state WHERE key = 'lim:fw';

-- sliding_window, 2 per day: two start, the third waits until the oldest
-- admission leaves the window (exactly a day later).
SELECT throttle_jobs.set_rate_limit('lim:sw', 2, '1 day', 'sliding_window');
SELECT count(throttle_jobs.enqueue('lim_r', jsonb_build_object('n', 's' || n), rate_limit_key => 'lim:sw'))
FROM generate_series(1, 3) n;
BEGIN;
SELECT * FROM pg_temp.lim_reserve('lim_r') AS reserved;
SELECT job, state, blocked_until - now() AS wait FROM lim_jobs WHERE rate_limit_key = 'lim:sw' ORDER BY id;
-- The log holds both admissions.
SELECT cardinality(log_at) AS logged, log_cost, log_at[1] = now() AS first_now
FROM throttle_jobs.key_rate_state WHERE key = 'lim:sw';
COMMIT;
-- A day later (simulated), maintain() releases s3 and reserve admits it.
UPDATE throttle_jobs.job SET blocked_until = now() - interval '1 second'
WHERE state = 'throttled' AND blocked_key = 'lim:sw';
UPDATE throttle_jobs.key_rate_state
SET log_at = ARRAY(SELECT t - interval '1 day' FROM unnest(log_at) t), next_at = NULL
WHERE key = 'lim:sw';
SELECT jsonb_typeof(throttle_jobs.maintain()) AS maintain;
SELECT * FROM pg_temp.lim_key_states('lim:sw');
SELECT * FROM pg_temp.lim_reserve('lim_r') AS reserved;
-- The admissions that left the window are pruned from the log.
SELECT cardinality(log_at) AS logged FROM throttle_jobs.key_rate_state WHERE key = 'lim:sw';

-- A job may carry both kinds of key: lim:cap2 allows one running, lim:sw2
-- 5 a day.  The cap holds back the second even though the rate admits it,
-- and a job refused by its cap takes no token.
SELECT throttle_jobs.set_concurrency_limit('lim:cap2', 1);
SELECT throttle_jobs.set_rate_limit('lim:sw2', 5, '1 day', 'sliding_window');
SELECT count(throttle_jobs.enqueue('lim_r', jsonb_build_object('n', 'cs' || n),
                                   concurrency_key => 'lim:cap2', rate_limit_key => 'lim:sw2'))
FROM generate_series(1, 3) n;
SELECT * FROM pg_temp.lim_reserve('lim_r') AS reserved;
SELECT job, state, blocked_key, blocked_until FROM lim_jobs WHERE concurrency_key = 'lim:cap2' ORDER BY id;
SELECT cardinality(log_at) AS logged FROM throttle_jobs.key_rate_state WHERE key = 'lim:sw2';

------------------------------------------------------------------------------
-- drop_limit releases the key's throttled jobs
------------------------------------------------------------------------------

-- Without its limit, lim:fw's throttled jobs are available again and
-- start.
SELECT throttle_jobs.drop_limit('lim:fw') AS dropped;
SELECT * FROM pg_temp.lim_key_states('lim:fw');
SELECT * FROM pg_temp.lim_reserve('lim_r') AS reserved;
SELECT throttle_jobs.drop_limit('lim:fw') AS dropped_again;
-- Its rate state is gone too.
SELECT count(*) AS rate_state FROM throttle_jobs.key_rate_state WHERE key = 'lim:fw';
-- Dropping a template releases the jobs of the keys it governed.
SELECT throttle_jobs.drop_limit('lim:tenant:*') AS dropped;
SELECT concurrency_key, count(*) FILTER (WHERE state = 'throttled') AS throttled,
       count(*) FILTER (WHERE state = 'available') AS available
FROM lim_jobs WHERE concurrency_key IN ('lim:tenant:a', 'lim:tenant:b')
GROUP BY concurrency_key ORDER BY concurrency_key;
-- What is left.
SELECT key, template, max_running, max_per_period, period, algorithm, burst
FROM throttle_jobs.limits WHERE key LIKE 'lim:%' ORDER BY key;

-- Setting a template does not touch a key that has a limit of its own:
-- lim:tb's bucket, emptied above, keeps its state, so it grants nothing
-- more now (a fresh bucket would grant 5 at once).
SELECT tokens AS tb_tokens FROM throttle_jobs.key_rate_state WHERE key = 'lim:tb' \gset
SELECT throttle_jobs.set_concurrency_limit('lim:*', 100);
SELECT tokens = :tb_tokens AS same_tokens FROM throttle_jobs.key_rate_state WHERE key = 'lim:tb';
SELECT throttle_jobs.try_acquire('lim:tb') AS granted;
SELECT throttle_jobs.drop_limit('lim:*') AS dropped;

------------------------------------------------------------------------------
-- try_acquire and acquire
------------------------------------------------------------------------------

-- On a rate-limited key (3 per day): three grants, then refusals.
SELECT throttle_jobs.set_rate_limit('lim:acq', 3, '1 day');
SELECT array_agg(throttle_jobs.try_acquire('lim:acq') ORDER BY n) AS granted FROM generate_series(1, 5) n;
-- acquire with no time to wait refuses at once; with 30 seconds it still
-- refuses at once, since the next token comes in 8 hours.
SELECT throttle_jobs.acquire('lim:acq', 1, '0 seconds') AS acquired;
SELECT clock_timestamp() AS lim_t0 \gset
SELECT throttle_jobs.acquire('lim:acq', 1, '30 seconds') AS acquired;
SELECT clock_timestamp() - :'lim_t0'::timestamptz < interval '10 seconds' AS returned_at_once;
-- acquire waits for the next admission when it comes in time: 1 per 300 ms.
SELECT throttle_jobs.set_rate_limit('lim:acq:wait', 1, '300 milliseconds', 'sliding_window');
SELECT throttle_jobs.try_acquire('lim:acq:wait') AS first, throttle_jobs.try_acquire('lim:acq:wait') AS second;
SELECT throttle_jobs.acquire('lim:acq:wait', 1, '10 seconds') AS acquired_after_waiting;

-- cost: 5 per day: 3 (2 left), 3 refused, 2 (none left), 1 refused; a cost
-- above what the limit ever allows is refused at once by acquire.
SELECT throttle_jobs.set_rate_limit('lim:acq:cost', 5, '1 day');
SELECT throttle_jobs.try_acquire('lim:acq:cost', 3) AS cost3;
SELECT throttle_jobs.try_acquire('lim:acq:cost', 3) AS cost3;
SELECT throttle_jobs.try_acquire('lim:acq:cost', 2) AS cost2;
SELECT throttle_jobs.try_acquire('lim:acq:cost', 1) AS cost1;
SELECT throttle_jobs.acquire('lim:acq:cost', 6, '1 hour') AS cost6;

-- Through a template, each concrete key has its own tokens.
SELECT throttle_jobs.set_rate_limit('lim:acqt:*', 2, '1 day');
SELECT array_agg(throttle_jobs.try_acquire('lim:acqt:x') ORDER BY n) AS x FROM generate_series(1, 3) n;
SELECT throttle_jobs.try_acquire('lim:acqt:y') AS y;

-- A key without a limit is always granted, whatever the cost.
SELECT array_agg(throttle_jobs.try_acquire('lim:acq:free', 1000) ORDER BY n) AS granted FROM generate_series(1, 3) n;
SELECT throttle_jobs.acquire('lim:acq:free', 1000, '0 seconds') AS acquired;

-- On a capped key, try_acquire grants only while a slot is free, and holds
-- one (a cap without a rate: an advisory lock tag on key_limit, not the
-- key's mutex) until the transaction ends: no reservation or try_acquire of
-- another transaction takes that slot meanwhile (shown by the isolation
-- tests).  The same transaction may ask again, and still holds one slot.
SELECT throttle_jobs.set_concurrency_limit('lim:acq:cap', 1);
BEGIN;
SELECT throttle_jobs.try_acquire('lim:acq:cap') AS first;
SELECT throttle_jobs.try_acquire('lim:acq:cap') AS again;
SELECT count(*) AS key_locks FROM pg_locks
WHERE locktype IN ('object', 'advisory') AND classid = 'throttle_jobs.key_limit'::regclass
  AND pid = pg_backend_pid() AND mode = 'ExclusiveLock' AND granted;
COMMIT;
SELECT count(*) AS key_locks FROM pg_locks
WHERE locktype IN ('object', 'advisory') AND classid = 'throttle_jobs.key_limit'::regclass
  AND pid = pg_backend_pid();
-- With its one slot taken by a running job: refused, until it completes.
SELECT throttle_jobs.enqueue('lim_a', '{"n": "acq-job"}', concurrency_key => 'lim:acq:cap') IS NOT NULL AS ok;
SELECT * FROM pg_temp.lim_reserve('lim_a') AS reserved;
SELECT throttle_jobs.try_acquire('lim:acq:cap') AS while_running;
SELECT throttle_jobs.acquire('lim:acq:cap', 1, '0 seconds') AS while_running;
SELECT throttle_jobs.complete(id, token) AS completed FROM lim_lease WHERE job = 'acq-job';
SELECT throttle_jobs.try_acquire('lim:acq:cap') AS after_complete;

------------------------------------------------------------------------------
-- explain_job
------------------------------------------------------------------------------

SELECT throttle_jobs.create_queue('lim_x', max_attempts => 3);
SELECT count(throttle_jobs.enqueue('lim_x', jsonb_build_object('n', 'x' || n))) FROM generate_series(1, 4) n;
SELECT throttle_jobs.enqueue('lim_x', '{"n": "x-later"}', run_at => now() + interval '1 hour') IS NOT NULL AS ok;
-- A job waiting behind 2 others; the first ready one.
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('x3'));
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('x1'));
-- A scheduled job.
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('x-later'));
-- A running job: its worker and attempt.
SELECT * FROM pg_temp.lim_reserve('lim_x', 1, 'w-explain') AS reserved;
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('x1'));
SELECT e->>'worker' AS worker, e->'attempt' AS attempt FROM throttle_jobs.explain_job(pg_temp.lim_id('x1')) e;
-- A job waiting for its retry.
SELECT * FROM pg_temp.lim_reserve('lim_x', 1) AS reserved;
SELECT throttle_jobs.fail(id, token, 'boom', retry_in => '1 hour') AS failed FROM lim_lease WHERE job = 'x2';
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('x2'));
-- A dead job: why, and its last error.
SELECT * FROM pg_temp.lim_reserve('lim_x', 1) AS reserved;
SELECT id AS lim_dead FROM lim_lease WHERE job = 'x3' \gset
SELECT throttle_jobs.fail(id, token, 'fatal', retryable => false) AS failed FROM lim_lease WHERE job = 'x3';
SELECT * FROM pg_temp.lim_explain(:lim_dead);
SELECT e->>'last_error' AS last_error, e->'attempt' AS attempt FROM throttle_jobs.explain_job(:lim_dead) e;
-- A completed (archived) job.
SELECT * FROM pg_temp.lim_reserve('lim_x', 1) AS reserved;
SELECT id AS lim_done FROM lim_lease WHERE job = 'x4' \gset
SELECT throttle_jobs.complete(id, token) AS completed FROM lim_lease WHERE job = 'x4';
SELECT * FROM pg_temp.lim_explain(:lim_done);
-- A cancelled job.
SELECT pg_temp.lim_id('x-later') AS lim_cancelled \gset
SELECT throttle_jobs.cancel(:lim_cancelled) AS cancelled;
SELECT * FROM pg_temp.lim_explain(:lim_cancelled);
-- A job of a paused queue.
SELECT throttle_jobs.create_queue('lim_p');
SELECT throttle_jobs.enqueue('lim_p', '{"n": "p1"}') IS NOT NULL AS ok;
SELECT throttle_jobs.pause_queue('lim_p');
SELECT * FROM pg_temp.lim_explain(pg_temp.lim_id('p1'));
-- An id no job has.
SELECT * FROM pg_temp.lim_explain(-1);
-- NULL id (22004).
SELECT throttle_jobs.explain_job(NULL);
\echo :LAST_ERROR_SQLSTATE

------------------------------------------------------------------------------
-- The rate arithmetic with a fixed clock: _rate_admit
------------------------------------------------------------------------------

-- lim_chain() feeds a sequence of (time, cost) requests to _rate_admit,
-- each with the state the previous one left, starting from a fresh state
-- (stamp 2000-01-01 00:00:00 UTC, which is 0 internally).
CREATE FUNCTION pg_temp.lim_chain(algorithm text, max_per_period integer, period interval,
                                  burst integer, steps jsonb)
RETURNS TABLE (n integer, at timestamptz, cost integer, admitted boolean, tokens numeric,
               stamp timestamptz, log_at text[], log_cost integer[], next_at timestamptz)
LANGUAGE sql AS $$
WITH RECURSIVE s AS (
  SELECT x.ord::integer AS n, (x.e->>0)::timestamptz AS at, (x.e->>1)::integer AS cost
  FROM jsonb_array_elements(steps) WITH ORDINALITY AS x(e, ord)
), r AS (
  SELECT 0 AS n, NULL::timestamptz AS at, NULL::integer AS cost, NULL::boolean AS admitted,
         0::float8 AS tokens, '2000-01-01 00:00:00+00'::timestamptz AS stamp,
         '{}'::timestamptz[] AS log_at, '{}'::integer[] AS log_cost, NULL::timestamptz AS next_at
  UNION ALL
  SELECT s.n, s.at, s.cost, a.admitted, a.tokens_after, a.stamp_after,
         a.log_at_after, a.log_cost_after, a.next_at
  FROM r JOIN s ON s.n = r.n + 1,
       LATERAL throttle_jobs._rate_admit(algorithm, max_per_period, period, burst, s.cost,
                                         s.at, r.tokens, r.stamp, r.log_at, r.log_cost) a
)
SELECT r.n, r.at, r.cost, r.admitted, round(r.tokens::numeric, 3), r.stamp,
       ARRAY(SELECT to_char(t, 'HH24:MI:SS') FROM unnest(r.log_at) t), r.log_cost, r.next_at
FROM r WHERE r.n > 0 ORDER BY r.n
$$;

-- token_bucket, 10 per 10 seconds (one token a second), burst 3.  A fresh
-- bucket is full; three pass at once, the fourth waits a second; half a
-- second later half a token is there; the bucket never holds more than 3;
-- a cost of 4 can never pass (infinity); a cost of 3 with 2 tokens waits
-- one second; a clock that went back refills nothing.
SELECT n, at, cost, admitted, tokens, stamp, next_at
FROM pg_temp.lim_chain('token_bucket', 10, '10 seconds', 3, '[
  ["2030-01-01 00:00:00+00", 1], ["2030-01-01 00:00:00+00", 1], ["2030-01-01 00:00:00+00", 1],
  ["2030-01-01 00:00:00+00", 1], ["2030-01-01 00:00:00.5+00", 1], ["2030-01-01 00:00:01+00", 1],
  ["2030-01-01 00:00:03+00", 2], ["2030-01-01 00:01:00+00", 1], ["2030-01-01 00:01:00+00", 4],
  ["2030-01-01 00:01:00+00", 3], ["2030-01-01 00:00:30+00", 1], ["2030-01-01 00:01:01+00", 3]]');

-- token_bucket without a burst: the capacity is max_per_period (2 per
-- minute): the third waits 30 seconds for a token.
SELECT n, at, cost, admitted, tokens, next_at
FROM pg_temp.lim_chain('token_bucket', 2, '1 minute', NULL, '[
  ["2030-01-01 00:00:00+00", 1], ["2030-01-01 00:00:00+00", 1], ["2030-01-01 00:00:00+00", 1],
  ["2030-01-01 00:00:30+00", 1], ["2030-01-01 00:10:00+00", 2], ["2030-01-01 00:10:00+00", 3]]');

-- fixed_window, 3 per minute: windows are aligned on whole minutes; the
-- fourth request of a window waits for the next one, where the count
-- starts again; the stamp is the window's start.
SELECT n, at, cost, admitted, tokens AS used, stamp AS window_start, next_at
FROM pg_temp.lim_chain('fixed_window', 3, '1 minute', NULL, '[
  ["2030-01-01 00:00:50+00", 1], ["2030-01-01 00:00:55+00", 1], ["2030-01-01 00:00:59+00", 1],
  ["2030-01-01 00:00:59.999999+00", 1], ["2030-01-01 00:01:00+00", 1], ["2030-01-01 00:01:00+00", 2],
  ["2030-01-01 00:01:30+00", 1], ["2030-01-01 00:01:30+00", 4], ["2030-01-01 00:03:10+00", 3]]');

-- Windows are aligned on 2000-01-01 00:00:00 UTC (not on the Unix epoch):
-- with 7-second windows, 2030-01-01 00:00:00 falls in the window that
-- started at 2029-12-31 23:59:56, and a time before 2000 in the window
-- that ends at 2000-01-01 00:00:00.
SELECT n, at, admitted, tokens AS used, stamp AS window_start, next_at
FROM pg_temp.lim_chain('fixed_window', 1, '7 seconds', NULL, '[
  ["2030-01-01 00:00:00+00", 1], ["2030-01-01 00:00:00+00", 1]]');
SELECT n, at, admitted, tokens AS used, stamp AS window_start, next_at
FROM pg_temp.lim_chain('fixed_window', 1, '7 seconds', NULL, '[
  ["1999-12-31 23:59:58+00", 1], ["1999-12-31 23:59:58+00", 1],
  ["2000-01-01 00:00:06+00", 1], ["2000-01-01 00:00:06+00", 1]]');

-- Admission times never go back: a request stamped before the key's last
-- admission (a transaction that started earlier but got to the key later)
-- is judged, and recorded, at that admission's time.
SELECT n, at, cost, admitted, log_at, log_cost, next_at
FROM pg_temp.lim_chain('sliding_window', 2, '10 seconds', NULL, '[
  ["2030-01-01 00:00:05+00", 1], ["2030-01-01 00:00:01+00", 1], ["2030-01-01 00:00:12+00", 1]]');

-- sliding_window, 3 per 10 seconds: at most 3 in any 10 seconds.  The
-- fourth waits until the oldest admission leaves (00:00:10); at 00:00:10
-- the admission of 00:00:00 has left (the window is (now - 10 s, now]);
-- a cost of 2 waits until enough admissions have left (00:00:14); a cost
-- of 4 never passes; old admissions are pruned from the log.
SELECT n, at, cost, admitted, log_at, log_cost, next_at
FROM pg_temp.lim_chain('sliding_window', 3, '10 seconds', NULL, '[
  ["2030-01-01 00:00:00+00", 1], ["2030-01-01 00:00:02+00", 1], ["2030-01-01 00:00:04+00", 1],
  ["2030-01-01 00:00:05+00", 1], ["2030-01-01 00:00:10+00", 1], ["2030-01-01 00:00:11+00", 2],
  ["2030-01-01 00:00:14+00", 2], ["2030-01-01 00:00:15+00", 4], ["2030-01-01 00:00:30+00", 1]]');

-- A log longer than the limit (the limit was lowered) keeps its newest
-- entries.
SELECT admitted, ARRAY(SELECT to_char(t, 'HH24:MI:SS') FROM unnest(log_at_after) t) AS log_at,
       log_cost_after, next_at
FROM throttle_jobs._rate_admit('sliding_window', 2, '1 minute', NULL, 1, '2030-01-01 00:00:30+00', 0,
       '2030-01-01 00:00:20+00',
       ARRAY['2030-01-01 00:00:10+00', '2030-01-01 00:00:15+00', '2030-01-01 00:00:20+00']::timestamptz[],
       ARRAY[1, 1, 1]);

------------------------------------------------------------------------------
-- Edge cases found in review
------------------------------------------------------------------------------

-- The cap and the rate resolve apart: a template's rate still governs a key
-- that has a cap of its own, and a template's cap a key with its own rate.
SELECT throttle_jobs.create_queue('lim_edge');
SELECT throttle_jobs.set_rate_limit('lim:er:*', 1, '1 hour');
SELECT throttle_jobs.set_concurrency_limit('lim:er:1', 5);
SELECT throttle_jobs.set_concurrency_limit('lim:ec:*', 1);
SELECT throttle_jobs.set_rate_limit('lim:ec:1', 100, '1 second');
SELECT count(*) FROM (
  SELECT throttle_jobs.enqueue('lim_edge', jsonb_build_object('k', k), concurrency_key => k, rate_limit_key => k)
  FROM (VALUES ('lim:er:1'), ('lim:er:1'), ('lim:er:1'), ('lim:ec:1'), ('lim:ec:1'), ('lim:ec:1')) v(k)) s;
-- one of lim:er:1 (the template's rate), one of lim:ec:1 (the template's cap)
SELECT payload->>'k' AS key, count(*) FROM throttle_jobs.reserve('lim_edge', 'w', 10) GROUP BY 1 ORDER BY 1;
SELECT throttle_jobs.drop_queue('lim_edge', force => true);

-- A limit set on the key itself governs it before a longer template that
-- covers it too ('lim:ex*' covers 'lim:ex'): key_stats names it, a change
-- of the template's rate keeps the key's rate state, and a change of the
-- key's own rate resets it (one rule, src/limits.c governs_before).
SELECT throttle_jobs.set_rate_limit('lim:ex', 1, '1 hour');
SELECT throttle_jobs.set_rate_limit('lim:ex*', 5, '1 hour');
SELECT throttle_jobs.try_acquire('lim:ex') AS granted;
SELECT key, rate_limit, max_per_period FROM throttle_jobs.key_stats WHERE key = 'lim:ex';
SELECT throttle_jobs.set_rate_limit('lim:ex*', 6, '1 hour');
SELECT count(*) AS state_kept FROM throttle_jobs.key_rate_state WHERE key = 'lim:ex';
SELECT throttle_jobs.set_rate_limit('lim:ex', 2, '1 hour');
SELECT count(*) AS state_reset FROM throttle_jobs.key_rate_state WHERE key = 'lim:ex';
SELECT throttle_jobs.try_acquire('lim:ex') AS granted, throttle_jobs.try_acquire('lim:ex') AS granted_again;

-- A very high token_bucket or fixed_window rate keeps no log: no huge allocation.
SELECT throttle_jobs.set_rate_limit('lim:big', 2000000000, '1 second');
SELECT throttle_jobs.try_acquire('lim:big') AS big_rate_granted;
SELECT throttle_jobs.set_rate_limit('lim:bigfw', 2000000000, '1 second', 'fixed_window');
SELECT throttle_jobs.try_acquire('lim:bigfw') AS big_window_granted;

-- A wait beyond the end of timestamptz is "never" (infinity), not an overflow.
SELECT throttle_jobs.create_queue('lim_ovf');
SELECT throttle_jobs.set_rate_limit('lim:ovf', 1, '100 years', burst => 100000);
SELECT count(throttle_jobs.enqueue('lim_ovf', '{}', rate_limit_key => 'lim:ovf', cost => 100000))
FROM generate_series(1, 2);
SELECT count(*) AS admitted FROM throttle_jobs.reserve('lim_ovf', 'w', 10);
SELECT state, blocked_until FROM throttle_jobs.jobs WHERE queue = 'lim_ovf' AND state <> 'running';
SELECT next_at IS NULL OR next_at <= 'infinity' AS next_at_readable
FROM throttle_jobs.key_rate_state WHERE key = 'lim:ovf';
SELECT throttle_jobs.drop_queue('lim_ovf', force => true);

-- Adaptive: a job too big only for the reduced rate waits for the next
-- evaluation, not forever.
SELECT throttle_jobs.create_queue('lim_adc');
SELECT throttle_jobs.set_rate_limit('lim:adc', 10, '1 hour', 'fixed_window', adaptive => true);
SELECT throttle_jobs.enqueue('lim_adc', '{}', rate_limit_key => 'lim:adc') IS NOT NULL AS enqueued;
SELECT count(*) FROM throttle_jobs.reserve('lim_adc', 'w');
UPDATE throttle_jobs.key_rate_state SET factor = 0.5 WHERE key = 'lim:adc';
SELECT throttle_jobs.enqueue('lim_adc', '{"big": true}', rate_limit_key => 'lim:adc', cost => 8) IS NOT NULL AS enqueued;
SELECT count(*) AS admitted FROM throttle_jobs.reserve('lim_adc', 'w');
SELECT state, blocked_until > now() AS waits, blocked_until < 'infinity' AS not_forever,
       blocked_until <= now() + interval '1 hour' AS within_a_period
FROM throttle_jobs.job WHERE payload = '{"big": true}';
SELECT throttle_jobs.drop_queue('lim_adc', force => true);

------------------------------------------------------------------------------
-- Clean up: later files must start with no limit and no rate state.
------------------------------------------------------------------------------

SELECT name, throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
WHERE name LIKE 'lim\_%' ORDER BY name;
SELECT key, throttle_jobs.drop_limit(key) AS dropped FROM throttle_jobs.limits
WHERE key LIKE 'lim:%' ORDER BY key;
SELECT count(*) AS limits_left FROM throttle_jobs.limits;
SELECT count(*) AS rate_states_left FROM throttle_jobs.key_rate_state;
SELECT count(*) AS jobs_left FROM lim_jobs;
