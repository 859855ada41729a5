\set VERBOSITY terse
SET client_min_messages = warning;

-- Handlers used below: one taking a single jsonb (accepted), and functions
-- with other signatures (refused).
CREATE FUNCTION regress_tj_handler(payload jsonb) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
CREATE PROCEDURE regress_tj_handler_proc(payload jsonb)
LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION regress_tj_text_handler(payload text) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION regress_tj_two_args(payload jsonb, extra int) RETURNS void
LANGUAGE sql AS $$ SELECT $$;

-- Compares a queue with a snapshot of it: the options that differ.
CREATE TEMP TABLE queue_snap AS SELECT * FROM throttle_jobs.queues WITH NO DATA;
CREATE TEMP VIEW queue_changes AS
SELECT now_.key AS option, before.value AS before, now_.value AS after
FROM throttle_jobs.queues q
CROSS JOIN LATERAL jsonb_each(to_jsonb(q)) now_
JOIN queue_snap s ON s.name = q.name
CROSS JOIN LATERAL jsonb_each(to_jsonb(s)) before
WHERE before.key = now_.key AND before.value IS DISTINCT FROM now_.value
ORDER BY 1;

-- create_queue with only a name takes the documented defaults; the queue
-- belongs to the calling role and is not paused.
BEGIN;
SELECT throttle_jobs.create_queue('q_defaults');
SELECT name, paused, max_size, on_full, max_attempts, backoff_base, backoff_factor,
       backoff_max, backoff_jitter, lease, retain_completed, retain_dead, handler,
       fairness, owner = current_user::regrole AS owned_by_caller,
       created_at = now() AS created_now
FROM throttle_jobs.queues WHERE name = 'q_defaults';
COMMIT;

-- create_queue with every option set.
SELECT throttle_jobs.create_queue('q_all', max_size => 10, on_full => 'drop',
    max_attempts => 3, backoff_base => '10 seconds', backoff_factor => 2,
    backoff_max => '10 minutes', backoff_jitter => 0, lease => '1 minute',
    retain_completed => '2 hours', retain_dead => '3 days',
    handler => 'regress_tj_handler(jsonb)', fairness => 'round_robin');
SELECT name, paused, max_size, on_full, max_attempts, backoff_base, backoff_factor,
       backoff_max, backoff_jitter, lease, retain_completed, retain_dead, handler,
       fairness, owner = current_user::regrole AS owned_by_caller
FROM throttle_jobs.queues WHERE name = 'q_all';

-- Queue names may use letters, digits, "_", ".", ":" and "-".
SELECT throttle_jobs.create_queue('Q_2.mail:high-1');
SELECT name FROM throttle_jobs.queues WHERE name = 'Q_2.mail:high-1';
SELECT throttle_jobs.drop_queue('Q_2.mail:high-1');

-- A duplicate queue name is refused and the first queue is unchanged.
SELECT throttle_jobs.create_queue('q_all');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.create_queue('q_all', max_attempts => 9);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*), max(max_attempts) AS max_attempts FROM throttle_jobs.queues WHERE name = 'q_all';

-- alter_queue with no option (all NULL) changes nothing.
INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults');
SELECT * FROM queue_changes;
-- Explicit NULLs leave every option unchanged as well.
SELECT throttle_jobs.alter_queue('q_defaults', max_size => NULL, on_full => NULL,
    max_attempts => NULL, backoff_base => NULL, backoff_factor => NULL,
    backoff_max => NULL, backoff_jitter => NULL, lease => NULL,
    retain_completed => NULL, retain_dead => NULL, handler => NULL, fairness => NULL);
SELECT * FROM queue_changes;

-- alter_queue changes exactly the option it is given, one at a time.
SELECT throttle_jobs.alter_queue('q_defaults', max_size => 100);
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', on_full => 'drop');
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', max_attempts => 7);
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', backoff_base => '5 seconds');
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', backoff_factor => 3);
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', backoff_max => '2 hours');
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', backoff_jitter => 0.25);
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', lease => '30 seconds');
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', retain_completed => '0');
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', retain_dead => '1 day');
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', handler => 'regress_tj_handler_proc(jsonb)');
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';
SELECT throttle_jobs.alter_queue('q_defaults', fairness => 'round_robin');
SELECT * FROM queue_changes;
TRUNCATE queue_snap; INSERT INTO queue_snap SELECT * FROM throttle_jobs.queues WHERE name = 'q_defaults';

-- alter_queue with a bad option changes nothing, not even the valid ones.
SELECT throttle_jobs.alter_queue('q_defaults', max_attempts => 2, on_full => 'block');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM queue_changes;

-- alter_queue and the other queue functions refuse an unknown queue.
SELECT throttle_jobs.alter_queue('q_missing', max_attempts => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.pause_queue('q_missing');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.resume_queue('q_missing');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.drop_queue('q_missing');
\echo :LAST_ERROR_SQLSTATE

-- A handler taking one jsonb argument is accepted, as a function or a procedure.
SELECT throttle_jobs.create_queue('q_handler', handler => 'regress_tj_handler(jsonb)');
SELECT handler FROM throttle_jobs.queues WHERE name = 'q_handler';
SELECT throttle_jobs.alter_queue('q_handler', handler => 'regress_tj_handler_proc(jsonb)');
SELECT handler FROM throttle_jobs.queues WHERE name = 'q_handler';

-- A handler with another signature is refused, by create_queue and alter_queue.
SELECT throttle_jobs.create_queue('q_bad_handler', handler => 'regress_tj_text_handler(text)');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.create_queue('q_bad_handler', handler => 'regress_tj_two_args(jsonb, int)');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.create_queue('q_bad_handler', handler => 'now()');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS bad_handler_queues FROM throttle_jobs.queues WHERE name = 'q_bad_handler';
SELECT throttle_jobs.alter_queue('q_handler', handler => 'regress_tj_text_handler(text)');
\echo :LAST_ERROR_SQLSTATE
SELECT handler FROM throttle_jobs.queues WHERE name = 'q_handler';

-- pause_queue: enqueue still works, reserve returns no rows; resume_queue
-- lets the job be reserved.
SELECT throttle_jobs.create_queue('q_pause');
SELECT throttle_jobs.create_queue('q_other');
SELECT throttle_jobs.pause_queue('q_pause');
-- Only the named queue is paused.
SELECT name, paused FROM throttle_jobs.queues WHERE name IN ('q_pause', 'q_other') ORDER BY name;
SELECT throttle_jobs.enqueue('q_pause', '{"n": 1}') IS NOT NULL AS enqueued;
SELECT count(*) AS reserved FROM throttle_jobs.reserve('q_pause', 'w1', 10);
SELECT state, attempt, worker FROM throttle_jobs.jobs WHERE queue = 'q_pause';
-- Pausing twice is harmless.
SELECT throttle_jobs.pause_queue('q_pause');
SELECT count(*) AS reserved FROM throttle_jobs.reserve('q_pause', 'w1', 10);
SELECT throttle_jobs.resume_queue('q_pause');
SELECT paused FROM throttle_jobs.queues WHERE name = 'q_pause';
SELECT payload, attempt FROM throttle_jobs.reserve('q_pause', 'w1', 10);
SELECT state, attempt, worker FROM throttle_jobs.jobs WHERE queue = 'q_pause';
-- Resuming a queue that is not paused is harmless.
SELECT throttle_jobs.resume_queue('q_pause');
SELECT paused FROM throttle_jobs.queues WHERE name = 'q_pause';
-- Resuming one queue leaves another paused.
SELECT throttle_jobs.pause_queue('q_other');
SELECT throttle_jobs.resume_queue('q_pause');
SELECT name, paused FROM throttle_jobs.queues WHERE name IN ('q_pause', 'q_other') ORDER BY name;
SELECT throttle_jobs.enqueue('q_other') IS NOT NULL AS enqueued;
SELECT count(*) AS reserved FROM throttle_jobs.reserve('q_other', 'w1');

-- drop_queue refuses a queue with live jobs (available or running) and
-- changes nothing.
SELECT throttle_jobs.create_queue('q_drop', max_attempts => 1);
SELECT id AS q_drop_id FROM throttle_jobs.queue WHERE name = 'q_drop' \gset
SELECT count(throttle_jobs.enqueue('q_drop', jsonb_build_object('n', n))) FROM generate_series(1, 4) n;
-- one job archived, one dead, one running, one available
SELECT throttle_jobs.complete(id, lease_token, '{"ok": true}') FROM throttle_jobs.reserve('q_drop', 'w1');
SELECT throttle_jobs.fail(id, lease_token, 'boom') FROM throttle_jobs.reserve('q_drop', 'w1');
SELECT count(*) AS reserved FROM throttle_jobs.reserve('q_drop', 'w1');
SELECT state, count(*) FROM throttle_jobs.jobs WHERE queue = 'q_drop' GROUP BY state ORDER BY state;
SELECT throttle_jobs.drop_queue('q_drop');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.drop_queue('q_drop', force => false);
\echo :LAST_ERROR_SQLSTATE
SELECT (SELECT count(*) FROM throttle_jobs.queue WHERE id = :q_drop_id) AS queues,
       (SELECT count(*) FROM throttle_jobs.job WHERE queue_id = :q_drop_id) AS jobs,
       (SELECT count(*) FROM throttle_jobs.job_dead WHERE queue_id = :q_drop_id) AS dead,
       (SELECT count(*) FROM throttle_jobs.job_archive WHERE queue_id = :q_drop_id) AS archived;

-- drop_queue(force => true) removes the queue with its jobs, dead letters
-- and archive rows.
SELECT throttle_jobs.drop_queue('q_drop', force => true);
SELECT (SELECT count(*) FROM throttle_jobs.queue WHERE id = :q_drop_id) AS queues,
       (SELECT count(*) FROM throttle_jobs.job WHERE queue_id = :q_drop_id) AS jobs,
       (SELECT count(*) FROM throttle_jobs.job_dead WHERE queue_id = :q_drop_id) AS dead,
       (SELECT count(*) FROM throttle_jobs.job_archive WHERE queue_id = :q_drop_id) AS archived;
-- The name can be used again at once.
SELECT throttle_jobs.create_queue('q_drop');
SELECT count(*) AS jobs FROM throttle_jobs.jobs WHERE queue = 'q_drop';

-- drop_queue of an empty queue needs no force.
SELECT throttle_jobs.drop_queue('q_drop');
SELECT count(*) AS queues FROM throttle_jobs.queues WHERE name = 'q_drop';

-- The queue table's constraints apply the same rules as create_queue (one
-- source, src/validate.c): a 63-character name and a factor of 1000 pass,
-- a name starting with "-", a 64-character name and a factor above 1000
-- are refused even when written directly (23514).
SELECT throttle_jobs.create_queue(repeat('q', 63), backoff_factor => 1000);
UPDATE throttle_jobs.queue SET name = '-q_bad' WHERE name = repeat('q', 63);
\echo :LAST_ERROR_SQLSTATE
UPDATE throttle_jobs.queue SET name = repeat('q', 64) WHERE name = repeat('q', 63);
\echo :LAST_ERROR_SQLSTATE
UPDATE throttle_jobs.queue SET backoff_factor = 1000.5 WHERE name = repeat('q', 63);
\echo :LAST_ERROR_SQLSTATE
UPDATE throttle_jobs.queue SET backoff_factor = 0.5 WHERE name = repeat('q', 63);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.drop_queue(repeat('q', 63));

-- Clean up.
SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
WHERE name IN ('q_defaults', 'q_all', 'q_handler', 'q_pause', 'q_other') ORDER BY name;
SELECT count(*) AS queues_left FROM throttle_jobs.queues;
DROP FUNCTION regress_tj_handler(jsonb);
DROP PROCEDURE regress_tj_handler_proc(jsonb);
DROP FUNCTION regress_tj_text_handler(text);
DROP FUNCTION regress_tj_two_args(jsonb, int);
