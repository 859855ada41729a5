\set VERBOSITY terse
SET client_min_messages = warning;

-- The SQL API for worker libraries and admins (issue 14).
-- (the statistics' gauges are counted once: maintain() does it)
SELECT m->'stats'->'shared' AS shared FROM throttle_jobs.maintain() m;
SELECT throttle_jobs.create_queue('api_q', retain_completed => '1 day');
SELECT throttle_jobs.create_queue('api_full', max_size => 1, on_full => 'drop');

------------------------------------------------------------------------------
-- enqueue_ex: a new job or the live job of the same unique_key
------------------------------------------------------------------------------

-- A new job: inserted, with its id.
SELECT id AS u1, inserted FROM throttle_jobs.enqueue_ex('api_q', '{"n": 1}', unique_key => 'u') \gset
SELECT :'inserted' AS inserted, count(*) AS live FROM throttle_jobs.job WHERE id = :u1;

-- The same unique_key again (default 'return'): the live job's id, not inserted.
SELECT id = :u1 AS same_id, inserted FROM throttle_jobs.enqueue_ex('api_q', '{"n": 2}', unique_key => 'u');
SELECT id = :u1 AS same_id, inserted
FROM throttle_jobs.enqueue_ex('api_q', '{"n": 2}', unique_key => 'u', on_conflict => 'return');

-- 'skip': no id, not inserted, nothing added.
SELECT id, inserted FROM throttle_jobs.enqueue_ex('api_q', '{"n": 3}', unique_key => 'u', on_conflict => 'skip');
SELECT count(*) AS jobs_with_u FROM throttle_jobs.job WHERE unique_key = 'u';

-- 'error': 23505 naming the queue and the key, and nothing added.
SELECT * FROM throttle_jobs.enqueue_ex('api_q', '{"n": 4}', unique_key => 'u', on_conflict => 'error');
\set VERBOSITY sqlstate
SELECT * FROM throttle_jobs.enqueue_ex('api_q', '{"n": 4}', unique_key => 'u', on_conflict => 'error');
\set VERBOSITY terse
-- (its detail names the live job, its hint the other choices)
CREATE FUNCTION pg_temp.error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; hnt text;
BEGIN
	EXECUTE sql;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
		hnt = PG_EXCEPTION_HINT;
	RETURN concat_ws(' | ', st, msg, det, hnt);
END $$;
SELECT replace(pg_temp.error_of($$SELECT throttle_jobs.enqueue_ex('api_q', unique_key => 'u', on_conflict => 'error')$$),
               'Job ' || :u1 || ' ', 'Job <u1> ') AS error;
SELECT count(*) AS jobs_with_u FROM throttle_jobs.job WHERE unique_key = 'u';

-- A new key under 'error' or 'skip' is simply inserted; jobs without a key always are.
SELECT id IS NOT NULL AS has_id, inserted
FROM throttle_jobs.enqueue_ex('api_q', unique_key => 'v', on_conflict => 'error');
SELECT id IS NOT NULL AS has_id, inserted
FROM throttle_jobs.enqueue_ex('api_q', unique_key => 'w', on_conflict => 'skip');
SELECT id IS NOT NULL AS has_id, inserted FROM throttle_jobs.enqueue_ex('api_q', '{"plain": true}');
SELECT id IS NOT NULL AS has_id, inserted
FROM throttle_jobs.enqueue_ex('api_q', concurrency_key => 'ck', priority => 3, cost => 2);

-- A finished job's key is free again: inserted anew.
SELECT id AS vid, lease_token AS vtok FROM throttle_jobs.reserve('api_q', 'w1', 10) WHERE id = (
  SELECT id FROM throttle_jobs.job WHERE unique_key = 'v') \gset
SELECT throttle_jobs.complete(:vid, :'vtok');
SELECT id <> :vid AS new_id, inserted
FROM throttle_jobs.enqueue_ex('api_q', unique_key => 'v', on_conflict => 'error');
-- (reserve above leased every job of api_q: hand them back)
SELECT count(throttle_jobs.snooze(id, lease_token, '0 s'))
FROM throttle_jobs.job WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'api_q')
  AND state = 'running';

-- A full queue with on_full => 'drop': no id, not inserted; its live key
-- still answers with the live job's id.
SELECT id AS f1, inserted FROM throttle_jobs.enqueue_ex('api_full', unique_key => 'f') \gset
SELECT :'inserted' AS inserted;
SELECT id, inserted FROM throttle_jobs.enqueue_ex('api_full', unique_key => 'g');
SELECT id = :f1 AS same_id, inserted FROM throttle_jobs.enqueue_ex('api_full', unique_key => 'f');

-- enqueue() is unchanged: the live job's id for a repeated key.
SELECT throttle_jobs.enqueue('api_q', unique_key => 'u') = :u1 AS enqueue_same_id;

-- Bad input: on_conflict NULL or unknown, unknown queue, enqueue's own checks.
SELECT * FROM throttle_jobs.enqueue_ex('api_q', on_conflict => NULL);
SELECT * FROM throttle_jobs.enqueue_ex('api_q', on_conflict => 'ignore');
SELECT * FROM throttle_jobs.enqueue_ex('api_nope');
SELECT * FROM throttle_jobs.enqueue_ex('api_q', priority => 40000);
SELECT * FROM throttle_jobs.enqueue_ex(NULL);

------------------------------------------------------------------------------
-- Reservation refuses REPEATABLE READ and SERIALIZABLE
------------------------------------------------------------------------------

-- reserve and complete_and_reserve(_ex) raise 0A000 before they change anything.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM throttle_jobs.reserve('api_q', 'w1');
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM throttle_jobs.complete_and_reserve('api_q', 'w1', '{}', '{}');
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_q', 'w1');
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
\set VERBOSITY default
SELECT * FROM throttle_jobs.reserve('api_q', 'w1');
\set VERBOSITY sqlstate
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_q', 'w1');
\set VERBOSITY terse
ROLLBACK;
-- The session default counts too.
SET default_transaction_isolation = 'serializable';
SELECT * FROM throttle_jobs.reserve('api_q', 'w1');
RESET default_transaction_isolation;
SELECT count(*) AS running FROM throttle_jobs.job WHERE state = 'running';
-- Enqueueing under REPEATABLE READ is fine; READ COMMITTED reserves.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT throttle_jobs.enqueue('api_q') IS NOT NULL AS enqueued;
COMMIT;
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT count(*) AS reserved FROM throttle_jobs.reserve('api_q', 'w1');
ROLLBACK;

------------------------------------------------------------------------------
-- complete_and_reserve_ex: results, and which completions were refused
------------------------------------------------------------------------------

SELECT throttle_jobs.create_queue('api_w', retain_completed => '1 day');
SELECT count(throttle_jobs.enqueue('api_w', jsonb_build_object('n', i), priority => -i))
FROM generate_series(1, 6) i;
CREATE TEMP TABLE held (id bigint, token uuid);

-- Nothing finished: only 'reserved' rows, with reserve()'s columns.
CREATE TEMP TABLE first AS
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1', max_jobs => 3);
SELECT outcome, queue, payload, attempt, lease_token IS NOT NULL AS has_token,
       lease_until > now() AS leased
FROM first ORDER BY id;
INSERT INTO held SELECT id, lease_token FROM first;

-- Completing three with results (one NULL), one of them with a stale token:
-- the stale one is reported, the others archived with their results.
CREATE TEMP TABLE step AS
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1',
       (SELECT array_agg(id ORDER BY id) FROM held),
       (SELECT array_agg(CASE WHEN id = (SELECT max(id) FROM held) THEN gen_random_uuid()
                              ELSE token END ORDER BY id) FROM held),
       (SELECT array_agg(CASE WHEN id = (SELECT min(id) FROM held) THEN '{"ok": 1}'::jsonb
                              ELSE NULL END ORDER BY id) FROM held),
       max_jobs => 2);
SELECT outcome, id = (SELECT max(id) FROM held) AS is_the_stale_one, payload, lease_token IS NULL AS no_token
FROM step WHERE outcome <> 'reserved';
SELECT outcome, payload FROM step WHERE outcome = 'reserved' ORDER BY id;
SELECT a.state, a.result FROM throttle_jobs.job_archive a WHERE a.id IN (SELECT id FROM held) ORDER BY a.id;
SELECT j.state FROM throttle_jobs.job j WHERE j.id = (SELECT max(id) FROM held);

-- Stale rows come in done's order, once per id, before the reserved rows.
SELECT array_agg(outcome ORDER BY n) AS outcomes,
       array_agg(id ORDER BY n) FILTER (WHERE outcome = 'stale')
         = ARRAY[(SELECT max(id) FROM held), (SELECT min(id) FROM held)] AS ids_in_done_order
FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1',
       ARRAY[(SELECT max(id) FROM held), (SELECT min(id) FROM held), (SELECT max(id) FROM held)],
       ARRAY[gen_random_uuid(), gen_random_uuid(), gen_random_uuid()], max_jobs => 1)
       WITH ORDINALITY AS s(outcome, id, queue, payload, attempt, max_attempts, lease_token,
                            lease_until, priority, concurrency_key, rate_limit_key, enqueued_at, n);

-- complete_and_reserve() keeps working as before.
SELECT count(*) AS reserved FROM throttle_jobs.complete_and_reserve('api_w', 'w1', '{}', '{}');

-- Bad input: mismatched arrays, NULLs, an oversized result, bounds.
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1', '{1,2}', ARRAY[gen_random_uuid()]);
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1', '{1}', ARRAY[gen_random_uuid()], '{}');
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1', '{1}', ARRAY[gen_random_uuid()], '{{null}}');
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1', '{NULL}', ARRAY[gen_random_uuid()]);
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1', NULL, '{}');
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', NULL);
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1', max_jobs => 0);
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1', max_jobs => NULL);
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_nope', 'w1');
SET throttle_jobs.max_payload_size = 100;
SELECT * FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w1', '{1}', ARRAY[gen_random_uuid()],
       ARRAY[jsonb_build_object('big', repeat('x', 200))]);
RESET throttle_jobs.max_payload_size;

------------------------------------------------------------------------------
-- cancel(id, running => true): a running job's worker is told
------------------------------------------------------------------------------

SELECT throttle_jobs.create_queue('api_c', retain_completed => '0 s');
SELECT throttle_jobs.set_concurrency_limit('api_ck', 1);
SELECT throttle_jobs.enqueue('api_c', '{"n": 1}', concurrency_key => 'api_ck') AS c1 \gset
SELECT throttle_jobs.enqueue('api_c', '{"n": 2}', concurrency_key => 'api_ck') AS c2 \gset
SELECT id AS r1, lease_token AS t1 FROM throttle_jobs.reserve('api_c', 'wc') \gset
SELECT :r1 = :c1 AS first_reserved;
SELECT id = :c1 AS is_c1, state FROM throttle_jobs.jobs WHERE queue = 'api_c' ORDER BY id;

-- cancel(id) of 0.1.0 leaves a running job alone; so does running => false.
SELECT throttle_jobs.cancel(:c1) AS cancelled, throttle_jobs.cancel(:c1, false) AS cancelled_not_running;
SELECT state FROM throttle_jobs.job WHERE id = :c1;

-- running => true cancels it: archived as cancelled (even with
-- retain_completed 0) with its worker, and its slot goes to the waiting job.
SELECT throttle_jobs.cancel(:c1, running => true) AS cancelled;
SELECT state, worker, reserved_at IS NOT NULL AS was_reserved
FROM throttle_jobs.job_archive WHERE id = :c1;
SELECT count(*) AS live FROM throttle_jobs.job WHERE id = :c1;
SELECT id = :c2 AS next_one FROM throttle_jobs.reserve('api_c', 'wc2');

-- The cancelled job's worker: heartbeat NULL, complete and snooze false,
-- fail 'cancelled', complete_and_reserve_ex 'cancelled'; nothing changes.
SELECT throttle_jobs.heartbeat(:c1, :'t1') AS heartbeat;
SELECT throttle_jobs.complete(:c1, :'t1') AS completed;
SELECT throttle_jobs.snooze(:c1, :'t1', '1 s') AS snoozed;
SELECT throttle_jobs.fail(:c1, :'t1', 'boom') AS failed;
SELECT outcome, id = :c1 AS is_c1
FROM throttle_jobs.complete_and_reserve_ex('api_c', 'wc', ARRAY[:c1]::bigint[], ARRAY[:'t1']::uuid[]);
SELECT count(*) AS archived_once FROM throttle_jobs.job_archive WHERE id = :c1;
-- (a token that was never right is only 'stale')
SELECT throttle_jobs.fail(:c2, gen_random_uuid(), 'boom') AS failed;

-- A waiting job: cancel(id, true) cancels it as cancel(id) does; a second
-- cancel, or an unknown id, returns false.
SELECT throttle_jobs.enqueue('api_c', run_at => now() + '1 hour') AS c3 \gset
SELECT throttle_jobs.cancel(:c3, true) AS cancelled, throttle_jobs.cancel(:c3, true) AS again,
       throttle_jobs.cancel(-1, true) AS unknown;
SELECT throttle_jobs.cancel(NULL, true);
SELECT throttle_jobs.cancel(:c3, NULL);

-- The statistics count the cancellations, and no running job is left counted.
SELECT available, scheduled, running, cancelled FROM throttle_jobs.queue_stats WHERE queue = 'api_c';

------------------------------------------------------------------------------
-- retry_now(id): a job in backoff or scheduled runs now
------------------------------------------------------------------------------

SELECT throttle_jobs.create_queue('api_r', backoff_base => '1 hour');
SELECT throttle_jobs.enqueue('api_r', '{"n": "failed"}') AS b1 \gset
SELECT id AS rb1, lease_token AS tb1 FROM throttle_jobs.reserve('api_r', 'wr') \gset
SELECT throttle_jobs.fail(:b1, :'tb1', 'transient');
SELECT throttle_jobs.enqueue('api_r', '{"n": "scheduled"}', run_at => now() + '1 day') AS s1 \gset
SELECT count(*) AS reserved FROM throttle_jobs.reserve('api_r', 'wr', 10);
SELECT available, scheduled, retrying FROM throttle_jobs.queue_stats WHERE queue = 'api_r';

-- Both become due now (a retried job keeps its attempt and errors).
SELECT throttle_jobs.retry_now(:b1) AS backoff_now, throttle_jobs.retry_now(:s1) AS scheduled_now;
SELECT available, scheduled, retrying FROM throttle_jobs.queue_stats WHERE queue = 'api_r';
SELECT id = :b1 AS is_b1, run_at <= now() AS due_now, attempt, jsonb_array_length(errors) AS errors
FROM throttle_jobs.job WHERE id IN (:b1, :s1) ORDER BY id;
SELECT array_agg(payload->>'n' ORDER BY id) AS reserved FROM throttle_jobs.reserve('api_r', 'wr', 10);

-- Running, ready, finished and unknown jobs: false, nothing changes.
SELECT throttle_jobs.retry_now(:b1) AS running;
SELECT throttle_jobs.enqueue('api_r') AS ready \gset
SELECT throttle_jobs.retry_now(:ready) AS ready, throttle_jobs.retry_now(-1) AS unknown;
SELECT throttle_jobs.retry_now(NULL);

-- A job held back by its key's cap is not released by retry_now.
SELECT throttle_jobs.enqueue('api_c', concurrency_key => 'api_ck') AS held_back \gset
SELECT state FROM throttle_jobs.job WHERE id = :held_back;
SELECT throttle_jobs.retry_now(:held_back) AS released;

------------------------------------------------------------------------------
-- Dead letters: delete_dead(id), retry_dead_matching, purge_dead_matching
------------------------------------------------------------------------------

SELECT throttle_jobs.create_queue('api_d', max_attempts => 1);
CREATE TEMP TABLE dead_ids (n int, id bigint);
-- six dead jobs: errors 'timeout A', 'timeout B', 'refused' (x2), 'timeout C', 'other'
INSERT INTO dead_ids SELECT n, throttle_jobs.enqueue('api_d', jsonb_build_object('n', n))
FROM generate_series(1, 6) n;
SELECT count(throttle_jobs.fail(r.id, r.lease_token,
       (ARRAY['timeout A', 'timeout B', 'refused', 'refused', 'timeout C', 'other'])[(r.payload->>'n')::int]))
FROM throttle_jobs.reserve('api_d', 'wd', 10) r;
-- their deaths spread over time, for the time filters
UPDATE throttle_jobs.job_dead d SET died_at = now() - (7 - i.n) * interval '1 hour'
FROM dead_ids i WHERE i.id = d.id;

-- delete_dead(id): one dead letter gone; again, or unknown: false.
SELECT throttle_jobs.delete_dead((SELECT id FROM dead_ids WHERE n = 6)) AS deleted,
       throttle_jobs.delete_dead((SELECT id FROM dead_ids WHERE n = 6)) AS again,
       throttle_jobs.delete_dead(-1) AS unknown;
SELECT throttle_jobs.delete_dead(NULL);

-- retry by error text (substring of the last error), oldest first, max_jobs.
SELECT throttle_jobs.retry_dead_matching('api_d', error_contains => 'timeout', max_jobs => 2) AS retried;
SELECT i.n FROM dead_ids i JOIN throttle_jobs.job j USING (id) ORDER BY i.n;
-- by time: died before 2.5 hours ago and after 4.5 hours ago (n = 3, 4)
SELECT throttle_jobs.retry_dead_matching('api_d', died_after => now() - interval '4.5 hours',
       died_before => now() - interval '2.5 hours') AS retried;
SELECT i.n FROM dead_ids i JOIN throttle_jobs.job j USING (id) ORDER BY i.n;
-- a filter that matches nothing
SELECT throttle_jobs.retry_dead_matching('api_d', error_contains => 'no such error') AS retried;

-- purge by error text: 'timeout C' (n = 5) goes; nothing else is dead now.
SELECT throttle_jobs.purge_dead_matching('api_d', error_contains => 'other') AS purged_none,
       throttle_jobs.purge_dead_matching('api_d', error_contains => 'timeout') AS purged;
SELECT count(*) AS dead_left FROM throttle_jobs.job_dead WHERE queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'api_d');

-- Bad filters and arguments.
SELECT throttle_jobs.retry_dead_matching('api_d', error_contains => '');
SELECT throttle_jobs.retry_dead_matching('api_d', died_after => '2026-01-02 00:00+00', died_before => '2026-01-01 00:00+00');
SELECT throttle_jobs.retry_dead_matching('api_d', max_jobs => 0);
SELECT throttle_jobs.purge_dead_matching('api_nope');
SELECT throttle_jobs.purge_dead_matching(NULL);

------------------------------------------------------------------------------
-- Privileges: manage on the job's queue for the admin operations
------------------------------------------------------------------------------

CREATE ROLE api_worker;
GRANT throttle_jobs_worker TO api_worker;
CREATE ROLE api_grantee;
GRANT throttle_jobs_user TO api_grantee;
SELECT throttle_jobs.enqueue('api_r', run_at => now() + '1 day') AS p1 \gset
SET ROLE api_worker;
-- a worker consumes every queue but manages none
SELECT throttle_jobs.retry_now(:p1);
SELECT throttle_jobs.cancel(:p1, true);
SELECT throttle_jobs.delete_dead(-1);
SELECT throttle_jobs.retry_dead_matching('api_d');
SELECT throttle_jobs.purge_dead_matching('api_d');
SELECT count(*) AS reserved_ok FROM throttle_jobs.complete_and_reserve_ex('api_w', 'w9');
SELECT * FROM throttle_jobs.enqueue_ex('api_q');
RESET ROLE;
-- a role granted manage on one queue may act on its jobs only
SELECT throttle_jobs.grant_queue('api_r', 'api_grantee', 'manage');
SET ROLE api_grantee;
SELECT throttle_jobs.retry_now(:p1) AS retried_now;
-- nor is it told that a job of a queue it may not consume was cancelled
SELECT throttle_jobs.fail(:c1, :'t1', 'x') AS fail_elsewhere;
SELECT outcome FROM throttle_jobs.complete_and_reserve_ex('api_r', 'g1', ARRAY[:c1]::bigint[],
       ARRAY[:'t1']::uuid[], max_jobs => 1) WHERE outcome <> 'reserved';
SELECT throttle_jobs.retry_dead_matching('api_r') AS retried;
SELECT throttle_jobs.retry_dead_matching('api_d');
SELECT throttle_jobs.cancel(:held_back, true);
SELECT id IS NOT NULL AS has_id, inserted FROM throttle_jobs.enqueue_ex('api_r');
RESET ROLE;
SELECT throttle_jobs.revoke_queue('api_r', 'api_grantee', 'manage');
DROP ROLE api_worker;
DROP ROLE api_grantee;

------------------------------------------------------------------------------
-- Wake-ups: set_queue_notify and notify_channel (delivery: isolation/notify)
------------------------------------------------------------------------------

-- The channel: 'tj:' and the name; the name's md5 past 60 bytes.
SELECT throttle_jobs.notify_channel('emails') AS plain,
       throttle_jobs.notify_channel('tenant-a:emails') AS quoted,
       throttle_jobs.notify_channel(repeat('q', 60)) = 'tj:' || repeat('q', 60) AS sixty_kept,
       throttle_jobs.notify_channel(repeat('q', 61)) = 'tj:' || md5(repeat('q', 61)) AS longer_hashed,
       octet_length(throttle_jobs.notify_channel(repeat('q', 63))) AS hashed_length,
       throttle_jobs.notify_channel(NULL) AS null_name;

-- On, on again (no change), off, off again; the queue's channel is kept.
SELECT throttle_jobs.create_queue('api_n:tenant-a');
SELECT throttle_jobs.set_queue_notify('api_n:tenant-a', true);
SELECT throttle_jobs.set_queue_notify('api_n:tenant-a', true);
SELECT q.name, n.channel FROM throttle_jobs.queue_notify n JOIN throttle_jobs.queue q ON q.id = n.queue_id;
-- (enqueueing into it works, and so does a batch)
SELECT throttle_jobs.enqueue('api_n:tenant-a') IS NOT NULL AS enqueued;
SELECT count(*) AS batch FROM throttle_jobs.enqueue_batch('api_n:tenant-a', '[{}, {}]');
SELECT throttle_jobs.set_queue_notify('api_n:tenant-a', false);
SELECT throttle_jobs.set_queue_notify('api_n:tenant-a', false);
SELECT count(*) AS notifying FROM throttle_jobs.queue_notify;
-- dropping a queue forgets its setting
SELECT throttle_jobs.set_queue_notify('api_n:tenant-a', true);
SELECT throttle_jobs.drop_queue('api_n:tenant-a', force => true);
SELECT count(*) AS notifying FROM throttle_jobs.queue_notify;

-- Bad input: unknown queue, NULLs; manage needed.
SELECT throttle_jobs.set_queue_notify('api_nope', true);
SELECT throttle_jobs.set_queue_notify(NULL, true);
SELECT throttle_jobs.set_queue_notify('api_q', NULL);
CREATE ROLE api_producer;
GRANT throttle_jobs_producer TO api_producer;
SET ROLE api_producer;
SELECT throttle_jobs.set_queue_notify('api_q', true);
SELECT throttle_jobs.notify_channel('api_q') AS producers_may_compute_it;
RESET ROLE;
DROP ROLE api_producer;

SELECT count(throttle_jobs.drop_queue(name, force => true))
FROM throttle_jobs.queue WHERE name LIKE 'api\_%';
SELECT throttle_jobs.drop_limit('api_ck');
