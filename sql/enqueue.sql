\set VERBOSITY terse
SET client_min_messages = warning;

SELECT throttle_jobs.create_queue('e_q');
SELECT throttle_jobs.create_queue('e_other');

-- enqueue with only a queue name: an available job with an empty payload,
-- run_at and enqueued_at now, priority 0, no keys, cost 1, the queue's
-- max_attempts, and no errors.
BEGIN;
SELECT throttle_jobs.enqueue('e_q') AS first_id \gset
SELECT id = :first_id AS same_id, queue, state, priority, run_at = now() AS run_now,
       enqueued_at = now() AS enqueued_now, attempt, max_attempts, worker, lease_until,
       reserved_at, concurrency_key, rate_limit_key, unique_key, cost, payload, errors,
       last_error
FROM throttle_jobs.jobs WHERE id = :first_id;
COMMIT;

-- enqueue with every named argument.
BEGIN;
SELECT throttle_jobs.enqueue('e_q', payload => '{"to": "a@example.com", "n": [1, 2]}',
    run_at => now() - interval '1 hour', priority => -7, max_attempts => 2,
    concurrency_key => 'tenant:1', rate_limit_key => 'smtp', unique_key => 'mail-1',
    cost => 3) AS full_id \gset
SELECT id - :first_id AS rel_id, queue, state, priority,
       run_at = now() - interval '1 hour' AS run_an_hour_ago,
       enqueued_at = now() AS enqueued_now, attempt, max_attempts, worker, lease_until,
       concurrency_key, rate_limit_key, unique_key, cost, payload, errors
FROM throttle_jobs.jobs WHERE id = :full_id;
COMMIT;

-- Positional arguments follow the documented order.
SELECT throttle_jobs.enqueue('e_q', '{"pos": true}', NULL, 5, 4, 'ck', 'rk', NULL, 2) AS pos_id \gset
SELECT id - :first_id AS rel_id, state, priority, max_attempts, concurrency_key,
       rate_limit_key, unique_key, cost, payload
FROM throttle_jobs.jobs WHERE id = :pos_id;

-- Ids grow with each enqueue.
SELECT :pos_id > :full_id AND :full_id > :first_id AS ids_increase;

-- A job with run_at in the future is 'scheduled' in the jobs view (and
-- 'available' in the table); one with run_at in the past is available.
SELECT throttle_jobs.enqueue('e_q', '{"later": true}', run_at => now() + interval '1 hour') AS later_id \gset
SELECT j.state AS view_state, t.state AS table_state, j.run_at > now() AS in_future
FROM throttle_jobs.jobs j JOIN throttle_jobs.job t USING (id) WHERE j.id = :later_id;
SELECT state FROM throttle_jobs.jobs WHERE id = :full_id;

-- unique_key: a second enqueue with a key that is live in the queue returns
-- the live job's id and inserts nothing (the first payload stays).
SELECT throttle_jobs.enqueue('e_q', '{"v": 1}', unique_key => 'u1') AS u1_id \gset
SELECT throttle_jobs.enqueue('e_q', '{"v": 2}', unique_key => 'u1') = :u1_id AS same_id;
SELECT throttle_jobs.enqueue('e_q', '{"v": 3}', unique_key => 'u1', priority => 9) = :u1_id AS same_id;
SELECT count(*) AS jobs_with_u1, max(payload::text) AS payload, max(priority) AS priority
FROM throttle_jobs.jobs WHERE queue = 'e_q' AND unique_key = 'u1';

-- Another queue may use the same unique_key.
SELECT throttle_jobs.enqueue('e_other', '{"v": 4}', unique_key => 'u1') AS other_u1_id \gset
SELECT :other_u1_id <> :u1_id AS different_id;
SELECT queue, count(*) FROM throttle_jobs.jobs WHERE unique_key = 'u1' GROUP BY queue ORDER BY queue;

-- Jobs without a unique_key are never merged.
SELECT count(DISTINCT throttle_jobs.enqueue('e_other', '{"same": true}')) AS distinct_ids
FROM generate_series(1, 3);

-- A running job still holds its key.
SELECT throttle_jobs.create_queue('e_uniq');
SELECT throttle_jobs.enqueue('e_uniq', '{"v": 1}', unique_key => 'k') AS k1 \gset
SELECT id = :k1 AS reserved_it, lease_token AS k1_token FROM throttle_jobs.reserve('e_uniq', 'w1') \gset
SELECT :'reserved_it'::boolean AS reserved_it;
SELECT throttle_jobs.enqueue('e_uniq', '{"v": 2}', unique_key => 'k') = :k1 AS same_id_while_running;

-- Once the job completes, the key can be used again: a new job.
SELECT throttle_jobs.complete(:k1, :'k1_token');
SELECT throttle_jobs.enqueue('e_uniq', '{"v": 3}', unique_key => 'k') AS k2 \gset
SELECT :k2 <> :k1 AS new_id;
SELECT id = :k2 AS is_new_job, payload, state FROM throttle_jobs.jobs WHERE queue = 'e_uniq';

-- enqueue_batch returns the ids in input order; every field is taken, an
-- element without payload gets '{}', and null fields mean "not given".
BEGIN;
CREATE TEMP TABLE batch AS
SELECT b.id, b.ord
FROM throttle_jobs.enqueue_batch('e_q', '[
  {"payload": {"n": 1}},
  {"payload": {"n": 2}, "priority": 5, "max_attempts": 2, "cost": 4,
   "concurrency_key": "ck", "rate_limit_key": "rk", "unique_key": "b1"},
  {},
  {"payload": {"n": 4}, "run_at": "2100-01-01 00:00:00+00"},
  {"payload": {"n": 5}, "priority": null, "unique_key": null, "run_at": null}
]') WITH ORDINALITY AS b(id, ord);
SELECT b.ord, b.id - min(b.id) OVER () AS rel_id, j.state, j.priority,
       j.run_at = now() AS run_now, j.run_at = '2100-01-01 00:00:00+00' AS run_2100,
       j.enqueued_at = now() AS enqueued_now, j.attempt, j.max_attempts, j.concurrency_key,
       j.rate_limit_key, j.unique_key, j.cost, j.payload, j.errors
FROM batch b JOIN throttle_jobs.jobs j USING (id)
ORDER BY b.ord;
COMMIT;
-- Ids come back strictly increasing with the input order.
SELECT bool_and(id > prev) AS in_input_order
FROM (SELECT id, lag(id) OVER (ORDER BY ord) AS prev FROM batch) s WHERE prev IS NOT NULL;

-- Unique keys inside a batch: a repeated key returns the first job's id, and
-- a key already live in the queue returns the live job's id.
SELECT b.ord,
       CASE WHEN b.id = :u1_id THEN 'live u1 job'
            WHEN b.id = first_value(b.id) OVER (ORDER BY b.ord) THEN 'first of batch'
            ELSE 'new' END AS which
FROM throttle_jobs.enqueue_batch('e_q', '[
  {"payload": {"x": 1}, "unique_key": "bk"},
  {"payload": {"x": 2}, "unique_key": "bk"},
  {"payload": {"x": 3}, "unique_key": "u1"},
  {"payload": {"x": 4}}
]') WITH ORDINALITY AS b(id, ord)
ORDER BY b.ord;
SELECT unique_key, count(*), max(payload::text) AS payload
FROM throttle_jobs.jobs WHERE queue = 'e_q' AND unique_key IN ('bk', 'u1')
GROUP BY unique_key ORDER BY unique_key;

-- A batch with a bad element adds nothing at all.
SELECT count(*) AS jobs_before FROM throttle_jobs.jobs WHERE queue = 'e_q' \gset
SELECT * FROM throttle_jobs.enqueue_batch('e_q', '[{"payload": {"ok": 1}}, {"priority": "high"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) - :jobs_before AS jobs_added FROM throttle_jobs.jobs WHERE queue = 'e_q';

-- max_size with on_full 'error': the enqueue that would pass max_size fails
-- with SQLSTATE 53400 and a message naming the queue.
SELECT throttle_jobs.create_queue('e_full', max_size => 2);
SELECT throttle_jobs.enqueue('e_full', '{"n": 1}', unique_key => 'f1') IS NOT NULL AS ok;
SELECT throttle_jobs.enqueue('e_full', '{"n": 2}') IS NOT NULL AS ok;
SELECT throttle_jobs.enqueue('e_full', '{"n": 3}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM throttle_jobs.enqueue_batch('e_full', '[{"payload": {"n": 4}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS jobs FROM throttle_jobs.jobs WHERE queue = 'e_full';
-- A unique_key that is already live is not a new job: it still returns the id.
SELECT throttle_jobs.enqueue('e_full', '{"n": 5}', unique_key => 'f1') =
       (SELECT id FROM throttle_jobs.jobs WHERE queue = 'e_full' AND unique_key = 'f1') AS same_id;
-- Running jobs count against max_size too.
SELECT count(*) AS reserved FROM throttle_jobs.reserve('e_full', 'w1');
SELECT throttle_jobs.enqueue('e_full', '{"n": 6}');
\echo :LAST_ERROR_SQLSTATE
-- Once a job has finished there is room again.
SELECT throttle_jobs.complete(id, lease_token) FROM throttle_jobs.reserve('e_full', 'w1');
SELECT throttle_jobs.enqueue('e_full', '{"n": 7}') IS NOT NULL AS ok;
-- Raising max_size makes room.
SELECT throttle_jobs.alter_queue('e_full', max_size => 3);
SELECT throttle_jobs.enqueue('e_full', '{"n": 8}') IS NOT NULL AS ok;
SELECT count(*) AS live_jobs FROM throttle_jobs.jobs WHERE queue = 'e_full';

-- max_size with on_full 'drop': the job is dropped, enqueue returns NULL and
-- warns (at most once every 10 seconds per queue and session).
SELECT throttle_jobs.create_queue('e_drop', max_size => 1, on_full => 'drop');
SELECT throttle_jobs.enqueue('e_drop', '{"n": 1}') IS NOT NULL AS ok;
SELECT throttle_jobs.enqueue('e_drop', '{"n": 2}') IS NULL AS dropped;
SELECT throttle_jobs.enqueue('e_drop', '{"n": 3}') IS NULL AS dropped_without_warning;
SELECT id IS NULL AS dropped FROM throttle_jobs.enqueue_batch('e_drop', '[{"payload": {"n": 4}}]') AS b(id);
SELECT count(*) AS jobs, max(payload::text) AS payload FROM throttle_jobs.jobs WHERE queue = 'e_drop';

-- Transactional enqueue: a rolled-back transaction leaves no job behind.
BEGIN;
SELECT throttle_jobs.enqueue('e_q', '{"rolled": "back"}') AS rb_id \gset
SELECT count(*) AS visible_inside FROM throttle_jobs.jobs WHERE id = :rb_id;
ROLLBACK;
SELECT count(*) AS after_rollback FROM throttle_jobs.jobs WHERE id = :rb_id;
SELECT count(*) AS payload_left FROM throttle_jobs.jobs WHERE payload = '{"rolled": "back"}';
-- A batch in a rolled-back transaction leaves nothing either.
BEGIN;
SELECT count(*) FROM throttle_jobs.enqueue_batch('e_q', '[{"payload": {"rolled": "batch"}}, {}]');
ROLLBACK;
SELECT count(*) AS payload_left FROM throttle_jobs.jobs WHERE payload = '{"rolled": "batch"}';
-- A rolled-back enqueue frees its unique_key.
BEGIN;
SELECT throttle_jobs.enqueue('e_q', unique_key => 'rb') IS NOT NULL AS ok;
ROLLBACK;
SELECT count(*) AS rb_jobs FROM throttle_jobs.jobs WHERE unique_key = 'rb';

-- Enqueue into an unknown queue fails and adds nothing.
SELECT throttle_jobs.enqueue('e_missing');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM throttle_jobs.enqueue_batch('e_missing', '[{}]');
\echo :LAST_ERROR_SQLSTATE

-- Clean up.
SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
WHERE name IN ('e_q', 'e_other', 'e_uniq', 'e_full', 'e_drop') ORDER BY name;
SELECT count(*) AS queues_left FROM throttle_jobs.queues;
