\set VERBOSITY terse
SET client_min_messages = warning;

-- Statistics: the regression server preloads the library, so counters live
-- in shared memory and reach it when a transaction commits.

-- Shared memory is in use.
SELECT shared FROM throttle_jobs.stats_state();

-- A queue with a two-attempt policy and a long backoff (retries stay
-- "retrying" for the rest of the test).
SELECT throttle_jobs.create_queue('st', max_attempts => 2, backoff_base => '1 hour',
                                  backoff_jitter => 0);

-- maintain() reports its statistics step (it counted the jobs when an
-- earlier test first called it: the gauges are unknown until then).
SELECT m->'stats'->'shared' AS shared, jsonb_typeof(m->'stats'->'recounted') AS recounted
FROM throttle_jobs.maintain() m;
SELECT available, scheduled, running, retrying, dead, enqueued, reserved, depth_as_of IS NOT NULL AS counted
FROM throttle_jobs.queue_stats WHERE queue = 'st';

-- Five ready jobs and two scheduled half an hour ahead.
SELECT count(throttle_jobs.enqueue('st', jsonb_build_object('n', g))) FROM generate_series(1, 5) g;
SELECT count(throttle_jobs.enqueue('st', '{}', run_at => now() + interval '30 minutes'))
FROM generate_series(1, 2);

-- A rolled-back enqueue counts nothing.
BEGIN;
SELECT throttle_jobs.enqueue('st', '{}') IS NOT NULL AS enqueued;
ROLLBACK;

-- Of a transaction, a rolled-back savepoint counts nothing, the rest does.
BEGIN;
SELECT throttle_jobs.enqueue('st', '{}') IS NOT NULL AS enqueued;
SAVEPOINT s;
SELECT throttle_jobs.enqueue('st', '{}') IS NOT NULL AS enqueued;
ROLLBACK TO s;
COMMIT;

SELECT available, scheduled, running, retrying, dead, enqueued
FROM throttle_jobs.queue_stats WHERE queue = 'st';

-- A rolled-back reservation counts nothing.
BEGIN;
SELECT count(*) FROM throttle_jobs.reserve('st', 'w0', 3);
ROLLBACK;
SELECT available, running, reserved FROM throttle_jobs.queue_stats WHERE queue = 'st';

-- Four reserved: two complete, one fails and is retried in an hour, one
-- fails for good.
CREATE TEMP TABLE r AS
SELECT row_number() OVER (ORDER BY id) AS n, id, lease_token FROM throttle_jobs.reserve('st', 'w1', 4);
SELECT count(*) FROM r;
SELECT available, running, reserved FROM throttle_jobs.queue_stats WHERE queue = 'st';
SELECT throttle_jobs.complete(id, lease_token) FROM r WHERE n <= 2;
SELECT throttle_jobs.fail(id, lease_token, 'boom') FROM r WHERE n = 3;
SELECT throttle_jobs.fail(id, lease_token, 'fatal', retryable => false) FROM r WHERE n = 4;
SELECT available, scheduled, running, retrying, dead,
       completed, failed, retried, dead_lettered
FROM throttle_jobs.queue_stats WHERE queue = 'st';

-- Recent windows and percentiles: the events just happened.
SELECT completed_1m, completed_5m, completed_15m, failed_1m, failed_15m,
       dead_lettered_1m, dead_lettered_15m
FROM throttle_jobs.queue_stats WHERE queue = 'st';
SELECT wait_p50 IS NOT NULL AND wait_p50 <= wait_p95 AND wait_p95 <= wait_p99
         AND wait_p99 < interval '1 minute' AS wait_ok,
       run_p50 IS NOT NULL AND run_p99 < interval '1 minute' AS run_ok
FROM throttle_jobs.queue_stats WHERE queue = 'st';

-- Cancelling a scheduled job, and retrying the dead one.
SELECT throttle_jobs.cancel(max(id)) FROM throttle_jobs.jobs WHERE queue = 'st' AND state = 'scheduled';
SELECT throttle_jobs.retry_dead('st');
SELECT available, scheduled, running, retrying, dead, cancelled
FROM throttle_jobs.queue_stats WHERE queue = 'st';

-- The depth kept by deltas agrees with a count of the jobs themselves.
SELECT s.available = (SELECT count(*) FROM throttle_jobs.jobs j WHERE j.queue = 'st' AND j.state IN ('available', 'throttled'))
       AND s.scheduled + s.retrying = (SELECT count(*) FROM throttle_jobs.jobs j WHERE j.queue = 'st' AND j.state = 'scheduled')
       AND s.running = (SELECT count(*) FROM throttle_jobs.jobs j WHERE j.queue = 'st' AND j.state = 'running')
       AND s.dead = (SELECT count(*) FROM throttle_jobs.dead_letters d WHERE d.queue = 'st') AS agrees
FROM throttle_jobs.queue_stats s WHERE s.queue = 'st';

-- Throttling: a cap of 1 holds back the other two jobs of its key, a rate of
-- 1 per hour the other job of its key.
SELECT throttle_jobs.create_queue('st_lim');
SELECT throttle_jobs.set_concurrency_limit('st:c:*', 1);
SELECT throttle_jobs.set_rate_limit('st:r', 1, '1 hour');
SELECT count(throttle_jobs.enqueue('st_lim', '{}', concurrency_key => 'st:c:1')) FROM generate_series(1, 3);
SELECT count(throttle_jobs.enqueue('st_lim', '{}', rate_limit_key => 'st:r')) FROM generate_series(1, 2);
SELECT count(*) FROM throttle_jobs.reserve('st_lim', 'w', 10);
SELECT available, running, reserved, throttled_cap, throttled_rate, throttled_1m
FROM throttle_jobs.queue_stats WHERE queue = 'st_lim';

-- key_stats: the template expands to the live key; holders, tokens, the
-- next admission and the throttled counts.
SELECT key, cap_limit, max_running, running, rate_limit, max_per_period, algorithm,
       tokens < 0.01 AS bucket_empty, next_admission_at > now() AS waits,
       throttled_cap, throttled_rate, throttled_since IS NOT NULL AS throttled_now
FROM throttle_jobs.key_stats WHERE key LIKE 'st:%' ORDER BY key;

-- Backpressure: a full queue that drops counts the dropped job.
SELECT throttle_jobs.create_queue('st_small', max_size => 1, on_full => 'drop');
SELECT throttle_jobs.enqueue('st_small', '{}') IS NOT NULL AS first,
       throttle_jobs.enqueue('st_small', '{}') IS NULL AS second_dropped;
SELECT enqueued, dropped, available FROM throttle_jobs.queue_stats WHERE queue = 'st_small';

-- An expired lease counts as lease_expired and failed; with one attempt the
-- job is dead-lettered.
SELECT throttle_jobs.create_queue('st_lease', max_attempts => 1);
SELECT throttle_jobs.enqueue('st_lease', '{}') IS NOT NULL AS enqueued;
SELECT count(*) FROM throttle_jobs.reserve('st_lease', 'w', 1, lease => '1 microsecond');
SELECT pg_sleep(0.01);
SELECT m->'expired_leases' AS expired FROM throttle_jobs.maintain() m;
SELECT running, dead, lease_expired, failed, dead_lettered
FROM throttle_jobs.queue_stats WHERE queue = 'st_lease';

-- Snoozing puts a running job back as scheduled.
SELECT throttle_jobs.create_queue('st_snooze');
SELECT throttle_jobs.enqueue('st_snooze', '{}') IS NOT NULL AS enqueued;
SELECT throttle_jobs.snooze(id, lease_token, '10 minutes') FROM throttle_jobs.reserve('st_snooze', 'w');
SELECT available, scheduled, running, snoozed FROM throttle_jobs.queue_stats WHERE queue = 'st_snooze';

-- Lag: the age of the oldest ready job, read from the ready index.
SELECT throttle_jobs.create_queue('st_lag');
SELECT throttle_jobs.enqueue('st_lag', '{}', run_at => now() - interval '1 hour', priority => 1) IS NOT NULL,
       throttle_jobs.enqueue('st_lag', '{}', run_at => now() - interval '2 hours', priority => -1) IS NOT NULL,
       throttle_jobs.enqueue('st_lag', '{}', run_at => now() + interval '1 hour', priority => 5) IS NOT NULL;
SELECT lag >= interval '2 hours' AND lag < interval '2 hours 1 minute' AS lag_2h
FROM throttle_jobs.queue_stats WHERE queue = 'st_lag';
SELECT lag FROM throttle_jobs.queue_stats WHERE queue = 'st_lease';

-- The functions behind the views, called by name, agree with the views:
-- stats_queues() has the shared-memory row of every queue, stats_lag() the
-- lag of queue_stats, stats_keys() the throttled keys of key_stats, and
-- stats_key_rows() is key_stats row for row.
SELECT q.name, s.enqueued, s.completed, s.dead_lettered
FROM throttle_jobs.stats_queues() s JOIN throttle_jobs.queue q ON q.id = s.queue_id
WHERE q.name IN ('st', 'st_lim', 'st_lease') ORDER BY q.name;
SELECT throttle_jobs.stats_lag(q.id, now()) = v.lag AS lag_agrees,
       throttle_jobs.stats_lag(q.id, now() + interval '1 hour') - v.lag AS one_hour_later
FROM throttle_jobs.queue q JOIN throttle_jobs.queue_stats v ON v.queue = q.name
WHERE q.name = 'st_lag';
SELECT k.key, k.throttled_cap, k.throttled_rate FROM throttle_jobs.stats_keys() k
WHERE k.key LIKE 'st:%' ORDER BY k.key;
SELECT (SELECT count(*) FROM throttle_jobs.stats_key_rows()) = (SELECT count(*) FROM throttle_jobs.key_stats)
       AS same_count,
       NOT EXISTS (SELECT key, cap_limit, max_running, running, rate_limit, throttled_cap
                   FROM throttle_jobs.stats_key_rows()
                   EXCEPT SELECT key, cap_limit, max_running, running, rate_limit, throttled_cap
                   FROM throttle_jobs.key_stats) AS same_rows;

-- throughput: maintain() rolls finished minutes up and drops those past
-- throttle_jobs.stats_history (a row planted a week back goes).
INSERT INTO throttle_jobs.stats_minute (queue_id, minute, completed)
SELECT id, date_trunc('minute', now() - interval '7 days'), 3 FROM throttle_jobs.queue WHERE name = 'st';
SELECT queue, completed FROM throttle_jobs.throughput WHERE minute < now() - interval '1 day';
SELECT m->'stats'->'minutes_expired' AS expired FROM throttle_jobs.maintain() m;
SELECT count(*) FROM throttle_jobs.throughput WHERE minute < now() - interval '1 day';

-- metrics(): HELP and TYPE lines, counters ending in _total, and the labels.
SELECT line FROM regexp_split_to_table(throttle_jobs.metrics(), E'\n') line
WHERE line LIKE '%queue="st"%' AND (line LIKE 'throttle_jobs_jobs%' OR line LIKE 'throttle_jobs_events_total%')
ORDER BY line;
SELECT line FROM regexp_split_to_table(throttle_jobs.metrics(), E'\n') line
WHERE line LIKE '# TYPE %' ORDER BY line;
SELECT line FROM regexp_split_to_table(throttle_jobs.metrics(), E'\n') line
WHERE line LIKE '%key="st:%' AND line NOT LIKE 'throttle_jobs_key_throttled_seconds%'
  AND line NOT LIKE 'throttle_jobs_key_tokens%' ORDER BY line;
-- Both keys have been holding jobs back for a moment now.
SELECT count(*) FROM regexp_split_to_table(throttle_jobs.metrics(), E'\n') line
WHERE line ~ '^throttle_jobs_key_throttled_seconds\{key="st:(c:1|r)"\} [0-9.e-]+$'
  AND split_part(line, ' ', 2)::float8 > 0;
SELECT line FROM regexp_split_to_table(throttle_jobs.metrics(), E'\n') line
WHERE line LIKE 'throttle_jobs_wait_seconds_count{queue="st"}%'
   OR line LIKE 'throttle_jobs_run_seconds_count{queue="st"}%'
   OR line LIKE 'throttle_jobs_run_seconds_bucket{queue="st",le="+Inf"}%';
-- Label values are escaped.
SELECT throttle_jobs._prom_label(E'a"b\\c\nd');

-- reset_stats(queue) zeroes that queue's counters (not its depth);
-- reset_stats() all of them and the key counters.
SELECT throttle_jobs.reset_stats('st');
SELECT available, retrying, enqueued, completed, failed, completed_1m, wait_p50
FROM throttle_jobs.queue_stats WHERE queue = 'st';
SELECT enqueued FROM throttle_jobs.queue_stats WHERE queue = 'st_lim';
SELECT throttle_jobs.reset_stats();
SELECT sum(enqueued) AS enqueued, sum(throttled_cap) AS throttled_cap FROM throttle_jobs.queue_stats;
SELECT count(*) FROM throttle_jobs.key_stats WHERE throttled_cap > 0 OR throttled_rate > 0;

-- Errors: an unknown queue; the internal note refuses an unknown kind and nulls.
SELECT throttle_jobs.reset_stats('no_such_queue');
SELECT throttle_jobs._stats_note(1, 'bogus', 1);
SELECT throttle_jobs._stats_note(NULL, 'cancelled', 1);

-- Who may read: pg_monitor members read the views and metrics(), but may
-- not reset; a role without grants reads nothing.
CREATE ROLE st_monitor NOLOGIN IN ROLE pg_monitor;
CREATE ROLE st_nobody NOLOGIN;
SET ROLE st_monitor;
SELECT count(*) > 0 AS reads FROM throttle_jobs.queue_stats;
SELECT count(*) >= 0 AS reads FROM throttle_jobs.key_stats;
SELECT count(*) >= 0 AS reads FROM throttle_jobs.throughput;
SELECT throttle_jobs.metrics() LIKE '# HELP %' AS reads;
SELECT throttle_jobs.reset_stats();
RESET ROLE;
SET ROLE st_nobody;
SELECT count(*) FROM throttle_jobs.queue_stats;
SELECT throttle_jobs.metrics();
RESET ROLE;
DROP ROLE st_monitor;
DROP ROLE st_nobody;

-- drop_queue forgets the queue's statistics and history.
SELECT throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queue
WHERE name LIKE 'st%' ORDER BY name;
SELECT count(*) FROM throttle_jobs.stats_minute;
SELECT throttle_jobs.drop_limit('st:c:*'), throttle_jobs.drop_limit('st:r');

-- try_acquire/acquire/try_acquire_session: their outcomes per limited key,
-- in key_stats (acquire_* columns) and metrics(), counted when the call
-- returns.
SELECT throttle_jobs.set_concurrency_limit('st:acq', 1);
SELECT throttle_jobs.set_rate_limit('st:acqr', 1, '1 hour');
SELECT throttle_jobs.set_rate_limit('st:acqw', 1, '1 s', 'fixed_window');
-- cap 1, held by a running job: try_acquire and try_acquire_session are
-- refused, acquire waits and times out; once it completes, both are admitted
SELECT throttle_jobs.create_queue('st_acq');
SELECT throttle_jobs.enqueue('st_acq', concurrency_key => 'st:acq') IS NOT NULL AS enqueued;
SELECT id AS acq_id, lease_token AS acq_token FROM throttle_jobs.reserve('st_acq', 'w') \gset
SELECT throttle_jobs.try_acquire('st:acq') AS refused;
SELECT throttle_jobs.try_acquire_session('st:acq') AS refused;
SELECT throttle_jobs.acquire('st:acq', 1, '300 ms') AS waited_timed_out;
SELECT throttle_jobs.complete(:acq_id, :'acq_token');
SELECT throttle_jobs.try_acquire('st:acq') AS admitted;
SELECT throttle_jobs.try_acquire_session('st:acq') AS admitted;
SELECT throttle_jobs.release('st:acq');
SELECT throttle_jobs.drop_queue('st_acq');
-- rate 1 an hour: one admitted, one refused, and a refusal rolled back
-- counts too; acquire gives up at once (the next token is past its
-- timeout): timed out, not waited
SELECT throttle_jobs.try_acquire('st:acqr') AS admitted;
SELECT throttle_jobs.try_acquire('st:acqr') AS refused;
BEGIN;
SELECT throttle_jobs.try_acquire('st:acqr') AS refused;
ROLLBACK;
SELECT throttle_jobs.acquire('st:acqr', 1, '1 s') AS timed_out;
-- a 1 s window: after an admission, acquire waits for the next window and
-- is admitted
SELECT throttle_jobs.try_acquire('st:acqw') AS admitted,
       throttle_jobs.acquire('st:acqw', 1, '10 s') AS waited_admitted;
-- a key without a limit is always granted and not counted
SELECT throttle_jobs.try_acquire('st:acqfree') AS admitted;
SELECT key, acquire_admitted, acquire_refused, acquire_waited, acquire_timed_out
FROM throttle_jobs.key_stats WHERE key LIKE 'st:acq%' ORDER BY key;
SELECT count(*) AS free_counted FROM throttle_jobs._stats_key_acquires() WHERE key = 'st:acqfree';
SELECT line FROM regexp_split_to_table(throttle_jobs.metrics(), E'\n') line
WHERE line LIKE '%throttle_jobs_key_acquires_total%'
  AND (line LIKE '#%' OR line LIKE '%key="st:acq%');
-- reset_stats() zeroes them
SELECT throttle_jobs.reset_stats();
SELECT key, acquire_admitted, acquire_refused, acquire_waited, acquire_timed_out
FROM throttle_jobs.key_stats WHERE key LIKE 'st:acq%' ORDER BY key;
SELECT throttle_jobs.drop_limit('st:acq'), throttle_jobs.drop_limit('st:acqr'),
       throttle_jobs.drop_limit('st:acqw');
