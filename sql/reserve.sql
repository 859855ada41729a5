\set VERBOSITY terse
SET client_min_messages = warning;

-- The same six jobs go into two queues, enqueued out of order; the label
-- in the payload names the expected position.  Order: priority desc, then
-- run_at, then id.
SELECT throttle_jobs.create_queue('r_one');
SELECT throttle_jobs.create_queue('r_batch');
CREATE TEMP TABLE r_jobs (label text, priority int, run_at timestamptz);
INSERT INTO r_jobs VALUES
  ('5th: prio 0, 2000-01-03',          0, '2000-01-03 00:00:00+00'),
  ('1st: prio 5, 2000-01-05, low id',  5, '2000-01-05 00:00:00+00'),
  ('3rd: prio 0, 2000-01-01, low id',  0, '2000-01-01 00:00:00+00'),
  ('2nd: prio 5, 2000-01-05, high id', 5, '2000-01-05 00:00:00+00'),
  ('6th: prio -1, 1999-01-01',        -1, '1999-01-01 00:00:00+00'),
  ('4th: prio 0, 2000-01-01, high id', 0, '2000-01-01 00:00:00+00');
SELECT count(throttle_jobs.enqueue(q, jsonb_build_object('label', label),
                                   run_at => run_at, priority => priority))
FROM (SELECT * FROM r_jobs ORDER BY ctid) j, (VALUES ('r_one'), ('r_batch')) q(q);

-- One by one: each reserve takes the best job left.
SELECT payload->>'label' AS label, priority FROM throttle_jobs.reserve('r_one', 'w1');
SELECT payload->>'label' AS label, priority FROM throttle_jobs.reserve('r_one', 'w1');
SELECT payload->>'label' AS label, priority FROM throttle_jobs.reserve('r_one', 'w1');
SELECT payload->>'label' AS label, priority FROM throttle_jobs.reserve('r_one', 'w1');
SELECT payload->>'label' AS label, priority FROM throttle_jobs.reserve('r_one', 'w1');
SELECT payload->>'label' AS label, priority FROM throttle_jobs.reserve('r_one', 'w1');
-- Nothing left.
SELECT count(*) AS reserved FROM throttle_jobs.reserve('r_one', 'w1');

-- In one batch: the rows come back in the same order.
SELECT r.ord, r.payload->>'label' AS label, r.priority
FROM throttle_jobs.reserve('r_batch', 'w1', max_jobs => 10)
     WITH ORDINALITY AS r(id, queue, payload, attempt, max_attempts, lease_token,
                          lease_until, priority, concurrency_key, rate_limit_key,
                          enqueued_at, ord)
ORDER BY r.ord;
-- The ids of the batch, relative to the smallest, in returned order.
SELECT throttle_jobs.drop_queue('r_batch', force => true);
SELECT throttle_jobs.create_queue('r_batch');
SELECT min(id) AS r_first FROM (
  SELECT throttle_jobs.enqueue('r_batch', jsonb_build_object('label', label),
                               run_at => run_at, priority => priority) AS id
  FROM (SELECT * FROM r_jobs ORDER BY ctid) j) s \gset
SELECT r.ord, r.id - :r_first AS rel_id, r.payload->>'label' AS label
FROM throttle_jobs.reserve('r_batch', 'w1', max_jobs => 10)
     WITH ORDINALITY AS r(id, queue, payload, attempt, max_attempts, lease_token,
                          lease_until, priority, concurrency_key, rate_limit_key,
                          enqueued_at, ord)
ORDER BY r.ord;

-- Scheduled jobs (run_at in the future) are not reserved; ready ones are,
-- whatever their priority.
SELECT throttle_jobs.create_queue('r_sched');
SELECT throttle_jobs.enqueue('r_sched', '{"n": "later"}', run_at => now() + interval '1 hour', priority => 100) IS NOT NULL AS ok;
SELECT throttle_jobs.enqueue('r_sched', '{"n": "now"}', priority => -100) IS NOT NULL AS ok;
SELECT payload FROM throttle_jobs.reserve('r_sched', 'w1', max_jobs => 10);
SELECT count(*) AS reserved FROM throttle_jobs.reserve('r_sched', 'w1', max_jobs => 10);
SELECT payload, state FROM throttle_jobs.jobs WHERE queue = 'r_sched' ORDER BY id;

-- max_jobs caps a batch; a batch takes what is there.
SELECT throttle_jobs.create_queue('r_max');
SELECT count(throttle_jobs.enqueue('r_max', jsonb_build_object('n', n))) FROM generate_series(1, 5) n;
SELECT array_agg((payload->>'n')::int ORDER BY id) AS got FROM throttle_jobs.reserve('r_max', 'w1', max_jobs => 2);
SELECT array_agg((payload->>'n')::int ORDER BY id) AS got FROM throttle_jobs.reserve('r_max', 'w1', max_jobs => 10);
SELECT count(*) AS reserved FROM throttle_jobs.reserve('r_max', 'w1', max_jobs => 10);
-- The default is one job.
SELECT count(throttle_jobs.enqueue('r_max', '{}')) FROM generate_series(1, 2);
SELECT count(*) AS reserved FROM throttle_jobs.reserve('r_max', 'w1');

-- All columns of reserved_job, in order.
SELECT attnum, attname, format_type(atttypid, atttypmod) AS type
FROM pg_attribute
WHERE attrelid = 'throttle_jobs.reserved_job'::regclass AND attnum > 0 AND NOT attisdropped
ORDER BY attnum;

-- Every column of a reserved job is filled in; the default lease is the
-- queue's lease; attempt counts this run.
SELECT throttle_jobs.create_queue('r_cols', lease => '7 minutes', max_attempts => 4);
BEGIN;
SELECT throttle_jobs.enqueue('r_cols', '{"k": "v"}', priority => 3, concurrency_key => 'ck',
                             rate_limit_key => 'rk', run_at => now() - interval '1 minute') AS c_id \gset
SELECT id = :c_id AS same_id, queue, payload, attempt, max_attempts,
       lease_token IS NOT NULL AS has_token, lease_until - now() AS lease,
       priority, concurrency_key, rate_limit_key, enqueued_at = now() AS enqueued_now
FROM throttle_jobs.reserve('r_cols', 'w-cols');
-- The jobs and running_jobs views show the lease and the worker.
SELECT state, attempt, worker, lease_until - now() AS lease, reserved_at = now() AS reserved_now
FROM throttle_jobs.jobs WHERE id = :c_id;
SELECT worker, attempt, max_attempts, lease_until - now() AS lease, lease_expired
FROM throttle_jobs.running_jobs WHERE id = :c_id;
COMMIT;
-- A job's own max_attempts wins over the queue's.
SELECT throttle_jobs.enqueue('r_cols', max_attempts => 9) IS NOT NULL AS ok;
SELECT attempt, max_attempts FROM throttle_jobs.reserve('r_cols', 'w1');

-- lease => overrides the queue's lease for this reservation.
BEGIN;
SELECT throttle_jobs.enqueue('r_cols', '{"lease": "override"}') IS NOT NULL AS ok;
SELECT lease_until - now() = interval '42 minutes' AS lease_is_42_minutes
FROM throttle_jobs.reserve('r_cols', 'w1', lease => '42 minutes');
COMMIT;
-- Changing the queue's lease changes the default of later reservations.
SELECT throttle_jobs.alter_queue('r_cols', lease => '3 hours');
BEGIN;
SELECT throttle_jobs.enqueue('r_cols', '{"lease": "queue"}') IS NOT NULL AS ok;
SELECT lease_until - now() AS lease FROM throttle_jobs.reserve('r_cols', 'w1');
COMMIT;

-- attempt increments with each reservation (fail with retry_in => '0'
-- makes the job ready again at once), and the job keeps its id.
SELECT throttle_jobs.create_queue('r_attempt', max_attempts => 5);
SELECT throttle_jobs.enqueue('r_attempt') AS a_id \gset
SELECT id = :a_id AS same_id, attempt, throttle_jobs.fail(id, lease_token, 'e1', retry_in => '0') FROM throttle_jobs.reserve('r_attempt', 'w1');
SELECT id = :a_id AS same_id, attempt, throttle_jobs.fail(id, lease_token, 'e2', retry_in => '0') FROM throttle_jobs.reserve('r_attempt', 'w1');
SELECT id = :a_id AS same_id, attempt FROM throttle_jobs.reserve('r_attempt', 'w1');
SELECT attempt FROM throttle_jobs.jobs WHERE id = :a_id;

-- Each reservation issues a new lease token: let a 1 ms lease expire,
-- reap it with maintain(), reserve again, and the tokens differ; the old
-- token is stale.
SELECT throttle_jobs.create_queue('r_token', backoff_base => '1 millisecond', backoff_jitter => 0);
SELECT throttle_jobs.enqueue('r_token') AS t_id \gset
SELECT lease_token AS token1 FROM throttle_jobs.reserve('r_token', 'w1', lease => '1 millisecond') \gset
SELECT pg_sleep(0.01);
SELECT jsonb_typeof(throttle_jobs.maintain()) AS maintain;
-- The expired lease counted as a failed attempt; the job is ready again
-- after its 1 ms backoff.
SELECT state, attempt, worker, lease_token, lease_until, errors->0->>'error' AS error
FROM throttle_jobs.job WHERE id = :t_id;
SELECT pg_sleep(0.01);
SELECT lease_token AS token2, attempt AS attempt2 FROM throttle_jobs.reserve('r_token', 'w2') \gset
SELECT :'token1'::uuid <> :'token2'::uuid AS tokens_differ, :attempt2 AS attempt;
SELECT throttle_jobs.complete(:t_id, :'token1') AS complete_with_old_token;
SELECT worker FROM throttle_jobs.running_jobs WHERE id = :t_id;
SELECT throttle_jobs.complete(:t_id, :'token2') AS complete_with_new_token;

-- Tokens are unique across a batch too.
SELECT count(throttle_jobs.enqueue('r_token')) FROM generate_series(1, 5);
SELECT count(*) AS jobs, count(DISTINCT lease_token) AS tokens
FROM throttle_jobs.reserve('r_token', 'w1', max_jobs => 5);

-- A rolled-back reservation leaves the job as it was.
SELECT throttle_jobs.create_queue('r_rollback');
SELECT throttle_jobs.enqueue('r_rollback') AS rb_id \gset
BEGIN;
SELECT count(*) AS reserved FROM throttle_jobs.reserve('r_rollback', 'w1');
ROLLBACK;
SELECT state, attempt, worker, lease_until FROM throttle_jobs.jobs WHERE id = :rb_id;

-- Reserving from an unknown queue fails.
SELECT * FROM throttle_jobs.reserve('r_missing', 'w1');
\echo :LAST_ERROR_SQLSTATE

-- Clean up.
SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
WHERE name IN ('r_one', 'r_batch', 'r_sched', 'r_max', 'r_cols', 'r_attempt', 'r_token', 'r_rollback')
ORDER BY name;
SELECT count(*) AS queues_left FROM throttle_jobs.queues;
