\set VERBOSITY terse
SET client_min_messages = warning;

SELECT throttle_jobs.create_queue('d_q', max_attempts => 3, backoff_jitter => 0);
SELECT throttle_jobs.create_queue('d_other');

-- Kills the next ready job of a queue: reserve it and fail it for good.
CREATE FUNCTION pg_temp.kill_next(q text, err text) RETURNS bigint
LANGUAGE sql AS $$
  SELECT id FROM (
    SELECT r.id, throttle_jobs.fail(r.id, r.lease_token, err, retryable => false) AS state
    FROM throttle_jobs.reserve(q, 'w-' || q) r) s
$$;

------------------------------------------------------------------------------
-- retry_dead(id)
------------------------------------------------------------------------------

-- A job that failed once (retried) and then for good: two errors.
SELECT throttle_jobs.enqueue('d_q', '{"job": 1}', priority => 4, concurrency_key => 'ck',
                             unique_key => 'd1', cost => 2) AS d1 \gset
SELECT throttle_jobs.fail(id, lease_token, 'first', retry_in => '0') FROM throttle_jobs.reserve('d_q', 'w1');
SELECT pg_temp.kill_next('d_q', 'second') = :d1 AS killed;
SELECT queue, reason, attempt, max_attempts, priority, concurrency_key, unique_key,
       payload, last_error, jsonb_array_length(errors) AS errors
FROM throttle_jobs.dead_letters WHERE id = :d1;

-- retry_dead(id) moves it back: same id, available now, attempt reset to 0,
-- errors kept, other fields unchanged.
BEGIN;
SELECT throttle_jobs.retry_dead(:d1) AS retried;
SELECT id = :d1 AS same_id, queue, state, run_at = now() AS run_now, attempt, max_attempts,
       priority, concurrency_key, unique_key, cost, payload, worker, lease_until,
       jsonb_array_length(errors) AS errors, last_error
FROM throttle_jobs.jobs WHERE id = :d1;
SELECT count(*) AS still_dead FROM throttle_jobs.dead_letters WHERE id = :d1;
COMMIT;
SELECT e->>'attempt' AS attempt, e->>'error' AS error
FROM throttle_jobs.jobs j, jsonb_array_elements(j.errors) e WHERE j.id = :d1;
-- It gets its full number of attempts again.
SELECT attempt, max_attempts FROM throttle_jobs.reserve('d_q', 'w1');
-- retry_dead of a job that is not dead (running, or unknown) returns false
-- and changes nothing.
SELECT throttle_jobs.retry_dead(:d1) AS retried;
SELECT throttle_jobs.retry_dead(-1) AS retried;
SELECT state, attempt FROM throttle_jobs.jobs WHERE id = :d1;

------------------------------------------------------------------------------
-- retry_dead(queue, died_after, max_jobs)
------------------------------------------------------------------------------

-- Five dead jobs in d_q and one in d_other, with known death times.
SELECT throttle_jobs.create_queue('d_many');
SELECT count(throttle_jobs.enqueue('d_many', jsonb_build_object('n', n))) FROM generate_series(1, 5) n;
SELECT count(pg_temp.kill_next('d_many', 'dead ' || n)) FROM generate_series(1, 5) n;
SELECT throttle_jobs.enqueue('d_other', '{"other": true}') IS NOT NULL AS ok;
SELECT pg_temp.kill_next('d_other', 'other') IS NOT NULL AS killed;
UPDATE throttle_jobs.job_dead d
SET died_at = '2020-01-01 00:00:00+00'::timestamptz + (d.payload->>'n')::int * interval '1 hour'
WHERE d.queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'd_many');
SELECT payload->>'n' AS n, died_at - '2020-01-01 00:00:00+00' AS died_at_2020_01_01_plus
FROM throttle_jobs.dead_letters WHERE queue = 'd_many' ORDER BY died_at;

-- died_after limits it to jobs that died after that time (n = 4 and 5).
SELECT throttle_jobs.retry_dead('d_many', died_after => '2020-01-01 03:30:00+00') AS retried;
SELECT payload->>'n' AS n, state, attempt FROM throttle_jobs.jobs WHERE queue = 'd_many' ORDER BY id;
-- max_jobs limits it, oldest deaths first (n = 1 and 2).
SELECT throttle_jobs.retry_dead('d_many', max_jobs => 2) AS retried;
SELECT payload->>'n' AS n FROM throttle_jobs.jobs WHERE queue = 'd_many' ORDER BY id;
-- Without limits it moves all the rest back; other queues are untouched.
SELECT throttle_jobs.retry_dead('d_many') AS retried;
SELECT count(*) AS live, count(*) FILTER (WHERE attempt = 0 AND state = 'available') AS fresh,
       count(*) FILTER (WHERE jsonb_array_length(errors) = 1) AS with_error
FROM throttle_jobs.jobs WHERE queue = 'd_many';
SELECT queue, count(*) FROM throttle_jobs.dead_letters GROUP BY queue ORDER BY queue;
-- Nothing left to retry.
SELECT throttle_jobs.retry_dead('d_many') AS retried;
-- An unknown queue is an error.
SELECT throttle_jobs.retry_dead('d_missing');
\echo :LAST_ERROR_SQLSTATE

------------------------------------------------------------------------------
-- retry_dead and unique_key
------------------------------------------------------------------------------

-- A dead job whose unique_key is live again is not retried by id: 23505,
-- and nothing changes.
SELECT throttle_jobs.enqueue('d_q', '{"job": "u-old"}', unique_key => 'u') AS u_old \gset
SELECT pg_temp.kill_next('d_q', 'died') = :u_old AS killed;
SELECT throttle_jobs.enqueue('d_q', '{"job": "u-new"}', unique_key => 'u') AS u_new \gset
SELECT :u_new <> :u_old AS new_job_took_the_key;
-- (the message names the job id, which depends on earlier tests: show the
-- SQLSTATE only)
\set VERBOSITY sqlstate
SELECT throttle_jobs.retry_dead(:u_old);
\set VERBOSITY terse
\echo :LAST_ERROR_SQLSTATE
SELECT (SELECT count(*) FROM throttle_jobs.dead_letters WHERE id = :u_old) AS still_dead,
       (SELECT count(*) FROM throttle_jobs.jobs WHERE unique_key = 'u') AS live_with_key,
       (SELECT payload FROM throttle_jobs.jobs WHERE unique_key = 'u') AS live_payload;
-- retry_dead(queue) skips it too (and says so in its count).
SELECT throttle_jobs.retry_dead('d_q') AS retried;
SELECT count(*) AS still_dead FROM throttle_jobs.dead_letters WHERE id = :u_old;
-- Once the live job is gone, it can be retried.
SELECT throttle_jobs.cancel(:u_new);
SELECT throttle_jobs.retry_dead(:u_old) AS retried;
SELECT id = :u_old AS is_old_job, payload FROM throttle_jobs.jobs WHERE unique_key = 'u';

------------------------------------------------------------------------------
-- purge_dead(queue, older_than)
------------------------------------------------------------------------------

SELECT throttle_jobs.create_queue('d_purge');
SELECT count(throttle_jobs.enqueue('d_purge', jsonb_build_object('n', n))) FROM generate_series(1, 4) n;
SELECT count(pg_temp.kill_next('d_purge', 'x')) FROM generate_series(1, 4);
UPDATE throttle_jobs.job_dead d SET died_at = now() - ((d.payload->>'n')::int - 1) * interval '1 day'
WHERE d.queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'd_purge');
-- Deaths 0, 1, 2 and 3 days ago: older than 36 hours are the last two.
SELECT throttle_jobs.purge_dead('d_purge', older_than => '36 hours') AS purged;
SELECT payload->>'n' AS n FROM throttle_jobs.dead_letters WHERE queue = 'd_purge' ORDER BY 1;
-- Again: nothing more that old.
SELECT throttle_jobs.purge_dead('d_purge', '36 hours') AS purged;
-- The default (0) purges every dead job of the queue, and only of that queue.
SELECT throttle_jobs.purge_dead('d_purge') AS purged;
SELECT queue, count(*) FROM throttle_jobs.dead_letters GROUP BY queue ORDER BY queue;
-- Errors: unknown queue, negative age.
SELECT throttle_jobs.purge_dead('d_missing', '1 day');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.purge_dead('d_purge', '-1 day');
\echo :LAST_ERROR_SQLSTATE

------------------------------------------------------------------------------
-- cancel(id)
------------------------------------------------------------------------------

-- cancel of an available job archives it as 'cancelled'.
BEGIN;
SELECT throttle_jobs.enqueue('d_q', '{"job": "cancel me"}', unique_key => 'cx') AS cx \gset
SELECT throttle_jobs.cancel(:cx) AS cancelled;
SELECT count(*) AS live FROM throttle_jobs.jobs WHERE id = :cx;
SELECT queue, state, finished_at = now() AS finished_now, attempt, worker, unique_key,
       payload, result, errors
FROM throttle_jobs.archived_jobs WHERE id = :cx;
COMMIT;
-- Its unique_key is free again.
SELECT throttle_jobs.enqueue('d_q', '{"job": "after cancel"}', unique_key => 'cx') <> :cx AS new_job;
-- A scheduled job can be cancelled too.
SELECT throttle_jobs.enqueue('d_q', '{"job": "scheduled"}', run_at => now() + interval '1 day') AS sc \gset
SELECT throttle_jobs.cancel(:sc) AS cancelled;
SELECT state FROM throttle_jobs.archived_jobs WHERE id = :sc;
-- A job that failed once and waits for its retry keeps its errors when cancelled.
SELECT throttle_jobs.enqueue('d_other', '{"job": "failed once"}') AS fo \gset
SELECT throttle_jobs.fail(id, lease_token, 'oops') FROM throttle_jobs.reserve('d_other', 'w1');
SELECT throttle_jobs.cancel(:fo) AS cancelled;
SELECT state, attempt, jsonb_array_length(errors) AS errors FROM throttle_jobs.archived_jobs WHERE id = :fo;

-- cancel of a running job returns false and leaves it running.
SELECT throttle_jobs.enqueue('d_other', '{"job": "running"}') AS rn \gset
SELECT lease_token AS rn_token FROM throttle_jobs.reserve('d_other', 'w-run') \gset
SELECT throttle_jobs.cancel(:rn) AS cancelled;
SELECT state, worker FROM throttle_jobs.jobs WHERE id = :rn;
SELECT throttle_jobs.complete(:rn, :'rn_token') AS completed;
-- cancel of a finished, dead or unknown job returns false.
SELECT throttle_jobs.cancel(:rn) AS cancelled_completed;
SELECT throttle_jobs.cancel(:cx) AS cancelled_twice;
SELECT throttle_jobs.enqueue('d_other', '{"job": "dead"}') AS dj \gset
SELECT pg_temp.kill_next('d_other', 'dead') = :dj AS killed;
SELECT throttle_jobs.cancel(:dj) AS cancelled_dead;
SELECT count(*) AS still_dead FROM throttle_jobs.dead_letters WHERE id = :dj;
SELECT throttle_jobs.cancel(-1) AS cancelled_unknown;

-- Clean up.
SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
WHERE name IN ('d_q', 'd_other', 'd_many', 'd_purge') ORDER BY name;
SELECT count(*) AS queues_left FROM throttle_jobs.queues;
