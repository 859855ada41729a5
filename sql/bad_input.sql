\set VERBOSITY terse
SET client_min_messages = warning;

-- Every error path of bad input: each case shows its SQLSTATE, then
-- pg_temp.unchanged(), which compares a digest of every row of the queue
-- table and of every job, dead letter and archived job of the bad_ queues
-- with the one taken by pg_temp.snap() after the last intended change:
-- 'unchanged' means the failed call changed nothing (no queue created,
-- altered, paused or dropped, no job added, moved or touched).
CREATE TEMP TABLE bad_baseline (digest text);
CREATE FUNCTION pg_temp.digest() RETURNS text
LANGUAGE sql STABLE AS $$
SELECT md5(concat_ws('|',
    (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM throttle_jobs.queue t),
    (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM throttle_jobs.job t
     JOIN throttle_jobs.queue q ON q.id = t.queue_id WHERE q.name LIKE 'bad\_%'),
    (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM throttle_jobs.job_dead t
     JOIN throttle_jobs.queue q ON q.id = t.queue_id WHERE q.name LIKE 'bad\_%'),
    (SELECT string_agg(t::text, ',' ORDER BY t::text) FROM throttle_jobs.job_archive t
     JOIN throttle_jobs.queue q ON q.id = t.queue_id WHERE q.name LIKE 'bad\_%')))
$$;
-- What the bad_ queues hold.
CREATE FUNCTION pg_temp.counts() RETURNS text
LANGUAGE sql STABLE AS $$
SELECT format('bad_ queues: %s (paused: %s), live jobs: %s (running: %s), dead: %s, archived: %s',
    (SELECT count(*) FROM throttle_jobs.queue q WHERE q.name LIKE 'bad\_%'),
    (SELECT count(*) FROM throttle_jobs.queue q WHERE q.name LIKE 'bad\_%' AND q.paused),
    (SELECT count(*) FROM throttle_jobs.job j JOIN throttle_jobs.queue q ON q.id = j.queue_id
     WHERE q.name LIKE 'bad\_%'),
    (SELECT count(*) FROM throttle_jobs.job j JOIN throttle_jobs.queue q ON q.id = j.queue_id
     WHERE q.name LIKE 'bad\_%' AND j.state = 'running'),
    (SELECT count(*) FROM throttle_jobs.job_dead d JOIN throttle_jobs.queue q ON q.id = d.queue_id
     WHERE q.name LIKE 'bad\_%'),
    (SELECT count(*) FROM throttle_jobs.job_archive a JOIN throttle_jobs.queue q ON q.id = a.queue_id
     WHERE q.name LIKE 'bad\_%'))
$$;
CREATE FUNCTION pg_temp.snap() RETURNS text
LANGUAGE sql AS $$
DELETE FROM pg_temp.bad_baseline;
INSERT INTO pg_temp.bad_baseline SELECT pg_temp.digest();
SELECT pg_temp.counts();
$$;
CREATE FUNCTION pg_temp.unchanged() RETURNS text
LANGUAGE sql STABLE AS $$
SELECT CASE WHEN pg_temp.digest() = (SELECT b.digest FROM pg_temp.bad_baseline b)
            THEN 'unchanged' ELSE 'CHANGED: ' || pg_temp.counts() END
$$;
-- One value per line, without headers, to keep the cases short.
\pset format unaligned
\pset tuples_only on

-- Setup: bad_q holds a dead job, a running job (its id and lease token are
-- kept in :run_id and :run_tok) and an available job; bad_full may hold
-- one live job and is empty.
SELECT throttle_jobs.create_queue('bad_q');
SELECT throttle_jobs.create_queue('bad_full', max_size => 1);
SELECT throttle_jobs.enqueue('bad_q', '{"n": 1}', priority => 1) IS NOT NULL;
SELECT throttle_jobs.fail(id, lease_token, 'boom', retryable => false) FROM throttle_jobs.reserve('bad_q', 'w1');
SELECT throttle_jobs.enqueue('bad_q', '{"n": 2}', priority => 1) IS NOT NULL;
SELECT id AS run_id, lease_token AS run_tok FROM throttle_jobs.reserve('bad_q', 'w1') \gset
SELECT throttle_jobs.enqueue('bad_q', '{"n": 3}') IS NOT NULL;
SELECT pg_temp.snap();

------------------------------------------------------------------------------
-- NULL where a value is required: 22004
------------------------------------------------------------------------------

-- create_queue: queue name
SELECT throttle_jobs.create_queue(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- create_queue: on_full
SELECT throttle_jobs.create_queue('bad_new', on_full => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- create_queue: max_attempts
SELECT throttle_jobs.create_queue('bad_new', max_attempts => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- create_queue: backoff_base
SELECT throttle_jobs.create_queue('bad_new', backoff_base => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- create_queue: backoff_factor
SELECT throttle_jobs.create_queue('bad_new', backoff_factor => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- create_queue: backoff_max
SELECT throttle_jobs.create_queue('bad_new', backoff_max => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- create_queue: backoff_jitter
SELECT throttle_jobs.create_queue('bad_new', backoff_jitter => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- create_queue: lease
SELECT throttle_jobs.create_queue('bad_new', lease => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- create_queue: retain_completed
SELECT throttle_jobs.create_queue('bad_new', retain_completed => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- create_queue: retain_dead
SELECT throttle_jobs.create_queue('bad_new', retain_dead => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- create_queue: fairness
SELECT throttle_jobs.create_queue('bad_new', fairness => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- alter_queue: queue name
SELECT throttle_jobs.alter_queue(NULL, max_attempts => 3);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- drop_queue: queue name
SELECT throttle_jobs.drop_queue(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- drop_queue: force
SELECT throttle_jobs.drop_queue('bad_q', force => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- pause_queue: queue name
SELECT throttle_jobs.pause_queue(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- resume_queue: queue name
SELECT throttle_jobs.resume_queue(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- enqueue: queue name
SELECT throttle_jobs.enqueue(NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- enqueue: payload
SELECT throttle_jobs.enqueue('bad_q', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- enqueue: priority
SELECT throttle_jobs.enqueue('bad_q', priority => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- enqueue: cost
SELECT throttle_jobs.enqueue('bad_q', cost => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- enqueue_batch: queue name
SELECT throttle_jobs.enqueue_batch(NULL, '[{}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- enqueue_batch: jobs array
SELECT throttle_jobs.enqueue_batch('bad_q', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- reserve: queue name
SELECT * FROM throttle_jobs.reserve(NULL, 'w1');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- reserve: worker
SELECT * FROM throttle_jobs.reserve('bad_q', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- reserve: max_jobs
SELECT * FROM throttle_jobs.reserve('bad_q', 'w1', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- complete: job id
SELECT throttle_jobs.complete(NULL, :'run_tok');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- complete: lease_token
SELECT throttle_jobs.complete(:run_id, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- fail: job id
SELECT throttle_jobs.fail(NULL, :'run_tok', 'e');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- fail: lease_token
SELECT throttle_jobs.fail(:run_id, NULL, 'e');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- fail: error
SELECT throttle_jobs.fail(:run_id, :'run_tok', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- fail: retryable
SELECT throttle_jobs.fail(:run_id, :'run_tok', 'e', retryable => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- snooze: job id
SELECT throttle_jobs.snooze(NULL, :'run_tok', '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- snooze: lease_token
SELECT throttle_jobs.snooze(:run_id, NULL, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- snooze: delay
SELECT throttle_jobs.snooze(:run_id, :'run_tok', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- heartbeat: job id
SELECT throttle_jobs.heartbeat(NULL, :'run_tok');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- heartbeat: lease_token
SELECT throttle_jobs.heartbeat(:run_id, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- cancel: job id
SELECT throttle_jobs.cancel(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- retry_dead(bigint): job id
SELECT throttle_jobs.retry_dead(NULL::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- retry_dead(text, ...): queue name
SELECT throttle_jobs.retry_dead(NULL::text);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- purge_dead: queue name
SELECT throttle_jobs.purge_dead(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- purge_dead: older_than
SELECT throttle_jobs.purge_dead('bad_q', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_delay is a pure STRICT function: a NULL argument gives NULL, not an error.
SELECT throttle_jobs.backoff_delay(NULL) IS NULL AS null_attempt,
       throttle_jobs.backoff_delay(1, base => NULL) IS NULL AS null_base,
       throttle_jobs.backoff_delay(1, draw => NULL) IS NULL AS null_draw;
-- NULL for an option that has a default is not an error where NULL means
-- "the default": enqueue's run_at and max_attempts, reserve's lease,
-- heartbeat's extend, fail's retry_in (shown in their own tests).

------------------------------------------------------------------------------
-- Unknown queue: 42704
------------------------------------------------------------------------------

-- enqueue
SELECT throttle_jobs.enqueue('bad_missing');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- enqueue_batch
SELECT throttle_jobs.enqueue_batch('bad_missing', '[{}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- reserve
SELECT * FROM throttle_jobs.reserve('bad_missing', 'w1');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- alter_queue
SELECT throttle_jobs.alter_queue('bad_missing', max_attempts => 3);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- drop_queue
SELECT throttle_jobs.drop_queue('bad_missing');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- drop_queue with force
SELECT throttle_jobs.drop_queue('bad_missing', force => true);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- pause_queue (must not pause any other queue)
SELECT throttle_jobs.pause_queue('bad_missing');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- resume_queue (must not resume any other queue)
SELECT throttle_jobs.resume_queue('bad_missing');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- retry_dead(text, ...)
SELECT throttle_jobs.retry_dead('bad_missing');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- purge_dead
SELECT throttle_jobs.purge_dead('bad_missing');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- Names are matched exactly: another case is another (unknown) queue.
SELECT throttle_jobs.enqueue('BAD_Q');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- A name that no queue can have is simply unknown to the lookups.
SELECT throttle_jobs.enqueue('bad q');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- A queue that already exists cannot be created again: 42710
SELECT throttle_jobs.create_queue('bad_q', max_attempts => 9);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();

------------------------------------------------------------------------------
-- Invalid queue names in create_queue: 42602
------------------------------------------------------------------------------

-- empty
SELECT throttle_jobs.create_queue('');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- a space
SELECT throttle_jobs.create_queue('bad new');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- too long: 64 characters
SELECT throttle_jobs.create_queue('bad_' || repeat('x', 60));
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- starting with '-'
SELECT throttle_jobs.create_queue('-bad');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- starting with '.'
SELECT throttle_jobs.create_queue('.bad');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- starting with ':'
SELECT throttle_jobs.create_queue(':bad');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- non-ASCII
SELECT throttle_jobs.create_queue('bad_café');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- other punctuation
SELECT throttle_jobs.create_queue('bad/q');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- a trailing space
SELECT throttle_jobs.create_queue('bad_q ');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- The longest valid name, 63 characters, is accepted (rolled back).
BEGIN;
SELECT throttle_jobs.create_queue('bad_' || repeat('x', 59));
SELECT length(name) FROM throttle_jobs.queues WHERE name LIKE 'bad\_xxx%';
ROLLBACK;
SELECT pg_temp.unchanged();

------------------------------------------------------------------------------
-- Queue options: 22023 (create_queue and alter_queue)
------------------------------------------------------------------------------

-- max_size 0
SELECT throttle_jobs.create_queue('bad_new', max_size => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- max_size negative (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', max_size => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- on_full not 'error' or 'drop'
SELECT throttle_jobs.create_queue('bad_new', on_full => 'block');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- on_full is case-sensitive (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', on_full => 'DROP');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- fairness not 'fifo' or 'round_robin'
SELECT throttle_jobs.create_queue('bad_new', fairness => 'lifo');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- fairness empty (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', fairness => '');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- max_attempts 0 (create_queue)
SELECT throttle_jobs.create_queue('bad_new', max_attempts => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- max_attempts 0 (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', max_attempts => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- max_attempts negative (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', max_attempts => -3);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_base zero
SELECT throttle_jobs.create_queue('bad_new', backoff_base => '0');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_base negative (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', backoff_base => '-30 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_base zero in sum: 1 month = 30 days
SELECT throttle_jobs.create_queue('bad_new', backoff_base => '1 month -30 days');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_base over 100 years
SELECT throttle_jobs.create_queue('bad_new', backoff_base => '200 years');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_max zero
SELECT throttle_jobs.create_queue('bad_new', backoff_max => '0');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_max negative (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', backoff_max => '-1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_max over 100 years (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', backoff_max => '101 years');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_factor below 1
SELECT throttle_jobs.create_queue('bad_new', backoff_factor => 0.5);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_factor above 1000
SELECT throttle_jobs.create_queue('bad_new', backoff_factor => 1000.5);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_factor NaN
SELECT throttle_jobs.create_queue('bad_new', backoff_factor => 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_factor infinite (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', backoff_factor => 'Infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_factor NaN (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', backoff_factor => 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_jitter below 0
SELECT throttle_jobs.create_queue('bad_new', backoff_jitter => -0.1);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_jitter above 1
SELECT throttle_jobs.create_queue('bad_new', backoff_jitter => 1.1);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_jitter NaN
SELECT throttle_jobs.create_queue('bad_new', backoff_jitter => 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- backoff_jitter NaN (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', backoff_jitter => 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- lease zero
SELECT throttle_jobs.create_queue('bad_new', lease => '0');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- lease negative
SELECT throttle_jobs.create_queue('bad_new', lease => '-5 minutes');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- lease over 100 years
SELECT throttle_jobs.create_queue('bad_new', lease => '200 years');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- lease zero (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', lease => '0');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- retain_completed negative
SELECT throttle_jobs.create_queue('bad_new', retain_completed => '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- retain_completed over 100 years (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', retain_completed => '200 years');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- retain_dead negative
SELECT throttle_jobs.create_queue('bad_new', retain_dead => '-1 day');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- retain_dead negative in sum (alter_queue)
SELECT throttle_jobs.alter_queue('bad_q', retain_dead => '1 day -25 hours');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- handler with the wrong signature
SELECT throttle_jobs.create_queue('bad_new', handler => 'now()');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- alter_queue with one good and one bad option changes neither
SELECT throttle_jobs.alter_queue('bad_q', max_attempts => 2, lease => '-1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- the invalid name is refused before any bad option is looked at
SELECT throttle_jobs.create_queue('bad new', max_attempts => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();

------------------------------------------------------------------------------
-- enqueue: 22023 unless said otherwise
------------------------------------------------------------------------------

-- run_at infinity
SELECT throttle_jobs.enqueue('bad_q', run_at => 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- run_at -infinity
SELECT throttle_jobs.enqueue('bad_q', run_at => '-infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- priority above the smallint range
SELECT throttle_jobs.enqueue('bad_q', priority => 40000);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- priority below the smallint range
SELECT throttle_jobs.enqueue('bad_q', priority => -40000);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- priority just out of range
SELECT throttle_jobs.enqueue('bad_q', priority => 32768);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- max_attempts 0
SELECT throttle_jobs.enqueue('bad_q', max_attempts => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- max_attempts negative
SELECT throttle_jobs.enqueue('bad_q', max_attempts => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- cost 0
SELECT throttle_jobs.enqueue('bad_q', cost => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- cost negative
SELECT throttle_jobs.enqueue('bad_q', cost => -5);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- concurrency_key empty
SELECT throttle_jobs.enqueue('bad_q', concurrency_key => '');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- concurrency_key of 256 bytes
SELECT throttle_jobs.enqueue('bad_q', concurrency_key => repeat('k', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- rate_limit_key empty
SELECT throttle_jobs.enqueue('bad_q', rate_limit_key => '');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- rate_limit_key of 256 bytes
SELECT throttle_jobs.enqueue('bad_q', rate_limit_key => repeat('k', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- unique_key empty
SELECT throttle_jobs.enqueue('bad_q', unique_key => '');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- unique_key of 256 bytes
SELECT throttle_jobs.enqueue('bad_q', unique_key => repeat('k', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- a key's limit is in bytes: 128 two-byte characters are 256 bytes
SELECT throttle_jobs.enqueue('bad_q', unique_key => repeat('é', 128));
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- The limits themselves are accepted (rolled back): priority 32767 and
-- -32768, keys of 255 bytes, cost 1, max_attempts 1.
BEGIN;
SELECT count(throttle_jobs.enqueue('bad_q', priority => p, max_attempts => 1, cost => 1,
           concurrency_key => repeat('c', 255), rate_limit_key => repeat('r', 255),
           unique_key => repeat('u', 255 - length(p::text)) || p))
FROM unnest(ARRAY[32767, -32768]) p;
ROLLBACK;
SELECT pg_temp.unchanged();
-- A full queue (on_full = 'error') refuses a job: 53400
SELECT throttle_jobs.enqueue('bad_full', '{"n": 1}') IS NOT NULL;
SELECT pg_temp.snap();
SELECT throttle_jobs.enqueue('bad_full', '{"n": 2}');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();

------------------------------------------------------------------------------
-- Payload size (throttle_jobs.max_payload_size): 54000
------------------------------------------------------------------------------

SET throttle_jobs.max_payload_size = 100;
SHOW throttle_jobs.max_payload_size;
-- a payload of about 200 bytes: enqueue
SELECT throttle_jobs.enqueue('bad_q', jsonb_build_object('data', repeat('x', 200)));
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- the same payload in a batch
SELECT throttle_jobs.enqueue_batch('bad_q', jsonb_build_array(jsonb_build_object('payload', jsonb_build_object('data', repeat('x', 200)))));
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- a small payload still goes in (rolled back)
BEGIN;
SELECT throttle_jobs.enqueue('bad_q', '{"small": true}') IS NOT NULL;
ROLLBACK;
RESET throttle_jobs.max_payload_size;
SELECT pg_temp.unchanged();
-- Settings out of their range are refused by SET: 22023 (only the SQLSTATE
-- is shown for the first: the message writes the range's unit from 18 on)
\set VERBOSITY sqlstate
SET throttle_jobs.max_payload_size = 10;
\set VERBOSITY terse
\echo :LAST_ERROR_SQLSTATE
SET throttle_jobs.max_batch_size = 0;
\echo :LAST_ERROR_SQLSTATE
SHOW throttle_jobs.max_payload_size;
SHOW throttle_jobs.max_batch_size;
-- A role that is not a superuser cannot change the settings: 42501
CREATE ROLE tj_bad_settings NOLOGIN;
SET ROLE tj_bad_settings;
SET throttle_jobs.max_payload_size = 100000000;
\echo :LAST_ERROR_SQLSTATE
SET throttle_jobs.max_batch_size = 1000000;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE tj_bad_settings;
SHOW throttle_jobs.max_payload_size;
SHOW throttle_jobs.max_batch_size;

------------------------------------------------------------------------------
-- enqueue_batch.  Errors about one job name it in a CONTEXT line, so the
-- messages are shown in full here.  Every job is checked before any is
-- added: a bad job anywhere leaves the whole batch out.
------------------------------------------------------------------------------
\set VERBOSITY default

-- jobs is an object, not an array: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '{"payload": {}}');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- jobs is a scalar: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '1');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- jobs is JSON null: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', 'null');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- an empty array: 54000
SELECT throttle_jobs.enqueue_batch('bad_q', '[]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- more jobs than throttle_jobs.max_batch_size: 54000
SET throttle_jobs.max_batch_size = 3;
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {}, {}, {}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
RESET throttle_jobs.max_batch_size;
-- job 2 is not an object: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, [1, 2], {}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 3 is a string: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {}, "job"]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 1 is null: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[null, {}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 3 has an unknown field: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {}, {"payload": {}, "queue": "bad_full"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has priority as a string: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"priority": "high"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has priority out of the integer range: 22003
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"priority": 1e10}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has a fractional priority, cost and max_attempts: 22023, not rounded
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"priority": 1.5}]');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"cost": 2.5}]');
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"max_attempts": 0.6}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has priority out of the smallint range: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"priority": 40000}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has run_at that is not a timestamp: 22007
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"run_at": "soon"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has run_at as a number: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"run_at": 1700000000}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has run_at infinity: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"run_at": "infinity"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has max_attempts 0: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"max_attempts": 0}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has max_attempts as a string: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"max_attempts": "3"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has cost 0: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"cost": 0}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has an empty concurrency_key: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"concurrency_key": ""}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has a rate_limit_key that is not a string: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', '[{}, {"rate_limit_key": ["a"]}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- job 2 has a unique_key of 256 bytes: 22023
SELECT throttle_jobs.enqueue_batch('bad_q', jsonb_build_array('{}'::jsonb, jsonb_build_object('unique_key', repeat('k', 256))));
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- a bad job is found before the queue is looked up
SELECT throttle_jobs.enqueue_batch('bad_missing', '[{}, {"cost": 0}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- an unknown queue is about no job in particular: no CONTEXT line
SELECT throttle_jobs.enqueue_batch('bad_missing', '[{}, {}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- a batch that does not fit a full queue: 53400, and the jobs before the
-- one refused are not kept either
SELECT throttle_jobs.alter_queue('bad_full', max_size => 2);
SELECT pg_temp.snap();
SELECT throttle_jobs.enqueue_batch('bad_full', '[{"payload": {"n": 2}}, {"payload": {"n": 3}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
\set VERBOSITY terse

------------------------------------------------------------------------------
-- reserve
------------------------------------------------------------------------------

-- worker empty: 22023
SELECT * FROM throttle_jobs.reserve('bad_q', '');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- worker of 256 bytes: 22023
SELECT * FROM throttle_jobs.reserve('bad_q', repeat('w', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- max_jobs 0: 54000
SELECT * FROM throttle_jobs.reserve('bad_q', 'w1', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- max_jobs negative: 54000
SELECT * FROM throttle_jobs.reserve('bad_q', 'w1', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- max_jobs above the default max_batch_size (1000): 54000
SELECT * FROM throttle_jobs.reserve('bad_q', 'w1', 1001);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- max_jobs above a lowered max_batch_size: 54000
SET throttle_jobs.max_batch_size = 3;
SELECT * FROM throttle_jobs.reserve('bad_q', 'w1', 4);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
RESET throttle_jobs.max_batch_size;
-- lease zero: 22023
SELECT * FROM throttle_jobs.reserve('bad_q', 'w1', lease => '0');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- lease negative: 22023
SELECT * FROM throttle_jobs.reserve('bad_q', 'w1', lease => '-1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- lease over 100 years: 22023
SELECT * FROM throttle_jobs.reserve('bad_q', 'w1', lease => '200 years');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();

------------------------------------------------------------------------------
-- fail, snooze, heartbeat on the running job: 22023; the job keeps its
-- lease, attempt and errors
------------------------------------------------------------------------------

-- fail: retry_in negative
SELECT throttle_jobs.fail(:run_id, :'run_tok', 'e', retry_in => '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- fail: retry_in over 100 years
SELECT throttle_jobs.fail(:run_id, :'run_tok', 'e', retry_in => '200 years');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- snooze: delay negative
SELECT throttle_jobs.snooze(:run_id, :'run_tok', '-1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- snooze: delay over 100 years
SELECT throttle_jobs.snooze(:run_id, :'run_tok', '200 years');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- heartbeat: extend zero
SELECT throttle_jobs.heartbeat(:run_id, :'run_tok', '0');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- heartbeat: extend negative
SELECT throttle_jobs.heartbeat(:run_id, :'run_tok', '-10 minutes');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- heartbeat: extend over 100 years
SELECT throttle_jobs.heartbeat(:run_id, :'run_tok', '200 years');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- The job is still running under the same lease.
SELECT state, attempt, jsonb_array_length(errors) FROM throttle_jobs.job WHERE id = :run_id AND lease_token = :'run_tok';

------------------------------------------------------------------------------
-- Dead letters and dropping
------------------------------------------------------------------------------

-- retry_dead(text, ...): max_jobs 0: 22023
SELECT throttle_jobs.retry_dead('bad_q', max_jobs => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- retry_dead(text, ...): max_jobs negative: 22023
SELECT throttle_jobs.retry_dead('bad_q', max_jobs => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- purge_dead: older_than negative: 22023
SELECT throttle_jobs.purge_dead('bad_q', '-1 day');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- drop_queue of a queue with live jobs, without force: 55006
SELECT throttle_jobs.drop_queue('bad_q');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();
-- the same with force => false
SELECT throttle_jobs.drop_queue('bad_q', force => false);
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.unchanged();

------------------------------------------------------------------------------
-- backoff_delay: 22023
------------------------------------------------------------------------------

-- attempt 0
SELECT throttle_jobs.backoff_delay(0);
\echo :LAST_ERROR_SQLSTATE
-- attempt negative
SELECT throttle_jobs.backoff_delay(-1);
\echo :LAST_ERROR_SQLSTATE
-- base zero
SELECT throttle_jobs.backoff_delay(1, base => '0');
\echo :LAST_ERROR_SQLSTATE
-- base over 100 years
SELECT throttle_jobs.backoff_delay(1, base => '200 years');
\echo :LAST_ERROR_SQLSTATE
-- max negative
SELECT throttle_jobs.backoff_delay(1, max => '-1 hour');
\echo :LAST_ERROR_SQLSTATE
-- factor below 1
SELECT throttle_jobs.backoff_delay(1, factor => 0.5);
\echo :LAST_ERROR_SQLSTATE
-- factor NaN
SELECT throttle_jobs.backoff_delay(1, factor => 'NaN');
\echo :LAST_ERROR_SQLSTATE
-- jitter above 1
SELECT throttle_jobs.backoff_delay(1, jitter => 1.5);
\echo :LAST_ERROR_SQLSTATE
-- draw below 0
SELECT throttle_jobs.backoff_delay(1, draw => -0.1);
\echo :LAST_ERROR_SQLSTATE
-- draw above 1
SELECT throttle_jobs.backoff_delay(1, draw => 1.1);
\echo :LAST_ERROR_SQLSTATE
-- draw NaN
SELECT throttle_jobs.backoff_delay(1, draw => 'NaN');
\echo :LAST_ERROR_SQLSTATE
-- the ends of the draw's range are accepted
SELECT throttle_jobs.backoff_delay(1, draw => 0), throttle_jobs.backoff_delay(1, draw => 1);

------------------------------------------------------------------------------
-- After all of the above, the bad_ queues hold what the setup put there.
------------------------------------------------------------------------------
\pset format aligned
\pset tuples_only off
SELECT pg_temp.counts();
SELECT name, paused, max_size, on_full, max_attempts, backoff_base, backoff_factor,
       backoff_max, backoff_jitter, lease, retain_completed, retain_dead, fairness
FROM throttle_jobs.queues WHERE name LIKE 'bad\_%' ORDER BY name;
SELECT queue, state, priority, attempt, payload, jsonb_array_length(errors)
FROM throttle_jobs.jobs WHERE queue LIKE 'bad\_%' ORDER BY queue, payload::text;

-- Clean up.
SELECT count(*) AS dropped
FROM (SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
      WHERE name LIKE 'bad\_%') d;
SELECT pg_temp.counts();

-- An interval with parts of both signs is refused even when its total is
-- positive (lease would depend on the calendar month): 22023
SELECT throttle_jobs.create_queue('bad_mixed', lease => '1 mon -29 days');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS mixed_queues FROM throttle_jobs.queues WHERE name = 'bad_mixed';
