\set VERBOSITY terse
-- fairness => 'round_robin': among ready jobs of equal priority, keys take
-- turns (a job's turn is one past the last turn of its concurrency key in
-- the queue); 'fifo' keeps strict run_at order.

SELECT throttle_jobs.create_queue('fair_rr', fairness => 'round_robin');
SELECT throttle_jobs.create_queue('fair_fifo');

-- Tenant A floods the queue first, then B and C enqueue a few, and some
-- jobs carry no key at all (they take turns as one more "key").
CREATE TEMP TABLE fair_in AS
SELECT q, t, n FROM (VALUES ('fair_rr'), ('fair_fifo')) qs(q),
  LATERAL (SELECT 'A' AS t, n FROM generate_series(1, 6) n
           UNION ALL SELECT 'B', n FROM generate_series(1, 3) n
           UNION ALL SELECT 'C', n FROM generate_series(1, 2) n
           UNION ALL SELECT '-', n FROM generate_series(1, 2) n) s;
SELECT count(*) FROM (
  SELECT throttle_jobs.enqueue(q, jsonb_build_object('t', t, 'n', n),
           concurrency_key => CASE WHEN t = '-' THEN NULL ELSE 'fair:' || t END)
  FROM fair_in ORDER BY q, CASE t WHEN 'A' THEN 1 WHEN 'B' THEN 2 WHEN 'C' THEN 3 ELSE 4 END, n) s;

-- Turns as stored: A 1..6, B 1..3, C 1..2, keyless 1..2; fifo queues keep 0.
SELECT q.name, j.concurrency_key, array_agg(j.rr_rank ORDER BY j.id) AS turns
FROM throttle_jobs.job j JOIN throttle_jobs.queue q ON q.id = j.queue_id
WHERE q.name LIKE 'fair\_%' GROUP BY 1, 2 ORDER BY 1, 2;

-- Round robin: A1 B1 C1 -1 A2 B2 C2 -2 A3 B3 A4 A5 A6 (within a turn, run_at then id).
SELECT string_agg((payload->>'t') || (payload->>'n'), ' ') AS rr_order
FROM throttle_jobs.reserve('fair_rr', 'w', 20);
-- FIFO: A's flood first.
SELECT string_agg((payload->>'t') || (payload->>'n'), ' ') AS fifo_order
FROM throttle_jobs.reserve('fair_fifo', 'w', 20);

-- Priority still comes first; turns only order jobs of equal priority.
SELECT throttle_jobs.enqueue('fair_rr', '{"t": "A", "n": 7}', concurrency_key => 'fair:A') IS NOT NULL AS enqueued;
SELECT throttle_jobs.enqueue('fair_rr', '{"t": "B", "n": 4}', concurrency_key => 'fair:B', priority => 5) IS NOT NULL AS enqueued;
SELECT throttle_jobs.enqueue('fair_rr', '{"t": "D", "n": 1}', concurrency_key => 'fair:D') IS NOT NULL AS enqueued;
-- A's live jobs (running) hold turns 1..6, so A7 gets turn 7; D is new: turn 1.
SELECT payload->>'t' AS t, rr_rank FROM throttle_jobs.job
WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'fair_rr') AND state = 'available'
ORDER BY id;
SELECT string_agg((payload->>'t') || (payload->>'n'), ' ') AS next_order
FROM throttle_jobs.reserve('fair_rr', 'w', 20);

-- Once a key has no live job left, its next job starts at turn 1 again.
SELECT count(throttle_jobs.complete(j.id, j.lease_token)) FROM throttle_jobs.job j
WHERE j.concurrency_key = 'fair:C' AND j.state = 'running';
SELECT throttle_jobs.enqueue('fair_rr', '{"t": "C", "n": 3}', concurrency_key => 'fair:C') IS NOT NULL AS enqueued;
SELECT rr_rank FROM throttle_jobs.job WHERE payload = '{"t": "C", "n": 3}';

-- alter_queue switches fairness; jobs already queued keep their turn (0).
SELECT throttle_jobs.alter_queue('fair_fifo', fairness => 'round_robin');
SELECT fairness FROM throttle_jobs.queues WHERE name = 'fair_fifo';
SELECT throttle_jobs.enqueue('fair_fifo', '{"t": "E", "n": 1}', concurrency_key => 'fair:E') IS NOT NULL AS enqueued;
SELECT rr_rank FROM throttle_jobs.job WHERE payload = '{"t": "E", "n": 1}';

-- Round robin also applies when limits exist (the admitting path).
SELECT throttle_jobs.set_concurrency_limit('fair:cap', 10);
SELECT throttle_jobs.create_queue('fair_rr2', fairness => 'round_robin');
SELECT count(*) FROM (
  SELECT throttle_jobs.enqueue('fair_rr2', jsonb_build_object('t', t, 'n', n), concurrency_key => 'fair:' || t)
  FROM (VALUES ('X'), ('Y')) ts(t), generate_series(1, 3) n ORDER BY t, n) s;
SELECT string_agg((payload->>'t') || (payload->>'n'), ' ') AS rr_order_with_limits
FROM throttle_jobs.reserve('fair_rr2', 'w', 20);
SELECT throttle_jobs.drop_limit('fair:cap');

SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues WHERE name LIKE 'fair\_%';
