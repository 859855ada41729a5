\set VERBOSITY terse
SET client_min_messages = warning;

-- complete_and_reserve: a worker's loop step (complete what it finished,
-- reserve what comes next) in one transaction.
SELECT throttle_jobs.create_queue('w_q', retain_completed => '1 day');
SELECT throttle_jobs.create_queue('w_other');
SELECT count(throttle_jobs.enqueue('w_q', jsonb_build_object('n', i), priority => -i))
FROM generate_series(1, 5) i;
CREATE TEMP TABLE held (id bigint, token uuid);

-- Nothing finished yet: empty arrays only reserve, best first.
INSERT INTO held SELECT id, lease_token
FROM throttle_jobs.complete_and_reserve('w_q', 'w1', '{}', '{}', max_jobs => 2);
SELECT j.payload->>'n' AS n, j.state, j.attempt, j.worker
FROM held h JOIN throttle_jobs.jobs j USING (id) ORDER BY n;

-- Completing both and reserving the next two: the finished jobs are
-- archived, the new ones leased under fresh tokens, in one call.
CREATE TEMP TABLE done AS SELECT * FROM held;
TRUNCATE held;
INSERT INTO held SELECT id, lease_token
FROM throttle_jobs.complete_and_reserve('w_q', 'w1',
       (SELECT array_agg(id ORDER BY id) FROM done),
       (SELECT array_agg(token ORDER BY id) FROM done), max_jobs => 2, lease => '1 minute');
SELECT a.payload->>'n' AS n, a.state FROM done d JOIN throttle_jobs.archived_jobs a USING (id) ORDER BY n;
SELECT j.payload->>'n' AS n, j.state, j.lease_until - j.reserved_at = '1 minute' AS lease_given
FROM held h JOIN throttle_jobs.jobs j USING (id) ORDER BY n;
SELECT count(*) AS tokens_reused FROM held h JOIN done d ON d.token = h.token;

-- The same completions again are stale: nothing is completed twice, and the
-- call still reserves (the last job).
SELECT count(*) AS reserved FROM throttle_jobs.complete_and_reserve('w_q', 'w1',
       (SELECT array_agg(id) FROM done), (SELECT array_agg(token) FROM done));
SELECT count(*) AS archived_once FROM throttle_jobs.job_archive
WHERE id IN (SELECT id FROM done);

-- A mix of a stale and a current token: only the current one completes.
SELECT count(*) AS reserved FROM throttle_jobs.complete_and_reserve('w_q', 'w1',
       (SELECT array_agg(id ORDER BY id) FROM held),
       (SELECT array_agg(CASE WHEN id = (SELECT min(id) FROM held) THEN token
                              ELSE gen_random_uuid() END ORDER BY id) FROM held));
SELECT j.id IS NULL AS completed, count(*)
FROM held h LEFT JOIN throttle_jobs.job j USING (id) GROUP BY 1 ORDER BY 1;

-- Jobs of another queue complete too (a token names its job); an empty
-- queue reserves nothing.
SELECT throttle_jobs.enqueue('w_other') AS other_id \gset
SELECT id AS oid, lease_token AS otok FROM throttle_jobs.reserve('w_other', 'w2') \gset
SELECT count(*) AS reserved FROM throttle_jobs.complete_and_reserve('w_other', 'w2',
       ARRAY[:oid]::bigint[], ARRAY[:'otok']::uuid[]);
SELECT count(*) AS left_in_other FROM throttle_jobs.job WHERE id = :other_id;

-- A paused queue still completes, and reserves nothing.
SELECT throttle_jobs.enqueue('w_other') AS p_id \gset
SELECT id AS pid, lease_token AS ptok FROM throttle_jobs.reserve('w_other', 'w2') \gset
SELECT throttle_jobs.enqueue('w_other') AS p2_id \gset
SELECT throttle_jobs.pause_queue('w_other');
SELECT count(*) AS reserved FROM throttle_jobs.complete_and_reserve('w_other', 'w2',
       ARRAY[:pid]::bigint[], ARRAY[:'ptok']::uuid[]);
SELECT (SELECT count(*) FROM throttle_jobs.job WHERE id = :p_id) AS p_live,
       (SELECT state FROM throttle_jobs.job WHERE id = :p2_id) AS p2_state;
SELECT throttle_jobs.resume_queue('w_other');

-- A concurrency slot freed by a completion is taken by the same call.
SELECT throttle_jobs.set_concurrency_limit('w:key', 1);
SELECT throttle_jobs.enqueue('w_other', '{"k": 1}', concurrency_key => 'w:key') AS k1 \gset
SELECT throttle_jobs.enqueue('w_other', '{"k": 2}', concurrency_key => 'w:key') AS k2 \gset
SELECT throttle_jobs.cancel(:p2_id);
SELECT id AS kid, lease_token AS ktok FROM throttle_jobs.reserve('w_other', 'w3') \gset
SELECT count(*) AS reserved_while_full FROM throttle_jobs.reserve('w_other', 'w4');
SELECT id = :k2 AS got_the_freed_slot FROM throttle_jobs.complete_and_reserve('w_other', 'w3',
       ARRAY[:kid]::bigint[], ARRAY[:'ktok']::uuid[]);
SELECT throttle_jobs.drop_limit('w:key');

-- Error paths change nothing.
SELECT * FROM throttle_jobs.complete_and_reserve('no_such_queue', 'w', '{}', '{}');
SELECT * FROM throttle_jobs.complete_and_reserve(NULL, 'w', '{}', '{}');
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', NULL, '{}', '{}');
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', NULL, '{}');
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{}', NULL);
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{}', '{}', max_jobs => NULL);
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{1}', '{}');
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{1,2}', ARRAY[gen_random_uuid()]);
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{1,NULL}', ARRAY[gen_random_uuid(), gen_random_uuid()]);
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{1}', ARRAY[NULL]::uuid[]);
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{{1},{2}}', '{}');
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{}', '{}', max_jobs => 0);
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{}', '{}', max_jobs => 1001);
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{}', '{}', lease => '-1 minute');
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', '', '{}', '{}');
SET throttle_jobs.max_batch_size = 2;
SELECT * FROM throttle_jobs.complete_and_reserve('w_q', 'w', '{1,2,3}',
       ARRAY[gen_random_uuid(), gen_random_uuid(), gen_random_uuid()]);
RESET throttle_jobs.max_batch_size;
-- An unknown queue rolls back the completions it was given.
SELECT throttle_jobs.enqueue('w_q') AS u_id \gset
SELECT id AS uid, lease_token AS utok FROM throttle_jobs.reserve('w_q', 'w5') \gset
CREATE TEMP TABLE before AS SELECT id, state, attempt, lease_token FROM throttle_jobs.job;
SELECT * FROM throttle_jobs.complete_and_reserve('no_such_queue', 'w5', ARRAY[:uid]::bigint[], ARRAY[:'utok']::uuid[]);
SELECT count(*) AS changed FROM throttle_jobs.job j FULL JOIN before b USING (id)
WHERE j.id IS DISTINCT FROM b.id OR j.state IS DISTINCT FROM b.state
   OR j.attempt IS DISTINCT FROM b.attempt OR j.lease_token IS DISTINCT FROM b.lease_token;
SELECT id = :u_id AS same_job, state FROM throttle_jobs.job WHERE id = :uid;

-- enqueue_batch adds a batch in one statement: ids come back in input
-- order, every field is kept, and per-job checks still name the job.
SELECT array_agg(id) = array_agg(id ORDER BY id) AS ids_ascending, count(*)
FROM (SELECT * FROM throttle_jobs.enqueue_batch('w_other',
        (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('i', i), 'priority', i % 3))
         FROM generate_series(1, 50) i))) b(id);
-- The same for a batch of payloads only (a shorter statement).
BEGIN;
CREATE TEMP TABLE pbatch AS SELECT * FROM throttle_jobs.enqueue_batch('w_other',
       (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('i', i)))
        FROM generate_series(1, 20) i)) WITH ORDINALITY AS b(id, n);
SELECT count(*), array_agg(b.id ORDER BY b.n) = array_agg(b.id ORDER BY b.id) AS ids_in_order,
       bool_and((j.payload->>'i')::bigint = b.n) AS payloads_in_order,
       bool_and(j.priority = 0 AND j.run_at = now() AND j.enqueued_at = now()
                AND j.max_attempts IS NULL AND j.cost = 1 AND j.state = 'available') AS defaults
FROM pbatch b JOIN throttle_jobs.job j USING (id);
COMMIT;
CREATE TEMP TABLE batch AS SELECT * FROM throttle_jobs.enqueue_batch('w_other', $$[
  {"payload": {"i": "a"}, "run_at": "2100-01-01 00:00+00", "max_attempts": 2, "cost": 3},
  {"payload": {"i": "b"}, "concurrency_key": "ck", "rate_limit_key": "rk"},
  {}]$$) WITH ORDINALITY AS b(id, n);
SELECT b.n, j.payload, j.priority, j.run_at > now() AS later, j.max_attempts, j.cost,
       j.concurrency_key, j.rate_limit_key, j.state
FROM batch b JOIN throttle_jobs.job j USING (id) ORDER BY b.n;
SELECT array_agg(id ORDER BY n) = array_agg(id ORDER BY id) AS in_input_order FROM batch;
SELECT * FROM throttle_jobs.enqueue_batch('w_other', '[{}, {"priority": 40000}]');
SELECT drop_queue FROM throttle_jobs.drop_queue('w_q', force => true);
SELECT drop_queue FROM throttle_jobs.drop_queue('w_other', force => true);
