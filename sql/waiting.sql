\set VERBOSITY terse
SET client_min_messages = warning;
-- Waiting lists (src/parking.c): a limited key keeps about as many ready
-- jobs as it can admit now; the rest wait in its list and come back, best
-- first, as it can take them: freed slots (complete, fail, snooze, lease
-- expiry), rate tokens (due keys, probed by each reservation), a changed
-- limit, notes left by enqueue, and maintain()'s sweep.  Ready jobs that
-- nobody reserves (a queue no worker consumes, a paused queue, scheduled
-- jobs) hold no slot of their key.  Queues are named wt_*, keys wt:*.

-- wt_state(key): the jobs carrying the key, by state, named by the "n" of
-- their payload, in id order.
CREATE FUNCTION pg_temp.wt_state(k text)
RETURNS TABLE (running text, available text, scheduled text, throttled text)
LANGUAGE sql AS $$
  SELECT string_agg(j.payload->>'n', ',' ORDER BY j.id) FILTER (WHERE j.state = 'running'),
         string_agg(j.payload->>'n', ',' ORDER BY j.id) FILTER (WHERE j.state = 'available'),
         string_agg(j.payload->>'n', ',' ORDER BY j.id) FILTER (WHERE j.state = 'scheduled'),
         string_agg(j.payload->>'n', ',' ORDER BY j.id) FILTER (WHERE j.state = 'throttled')
  FROM throttle_jobs.jobs j WHERE j.concurrency_key = k OR j.rate_limit_key = k
$$;
-- wt_reserve(queue, n): reserves up to n jobs; returns their names.
CREATE TEMP TABLE wt_lease (n text PRIMARY KEY, id bigint, token uuid);
CREATE FUNCTION pg_temp.wt_reserve(queue text, max_jobs integer DEFAULT 10)
RETURNS SETOF text LANGUAGE sql AS $$
  INSERT INTO wt_lease AS l
  SELECT r.payload->>'n', r.id, r.lease_token FROM throttle_jobs.reserve(queue, 'w', max_jobs) r
  ON CONFLICT (n) DO UPDATE SET id = EXCLUDED.id, token = EXCLUDED.token
  RETURNING l.n
$$;
CREATE FUNCTION pg_temp.wt_complete(name text) RETURNS boolean LANGUAGE sql AS $$
  SELECT throttle_jobs.complete(l.id, l.token) FROM wt_lease l WHERE l.n = name
$$;
CREATE FUNCTION pg_temp.wt_enqueue(queue text, name text, ckey text DEFAULT NULL,
                                   rkey text DEFAULT NULL, prio integer DEFAULT 0,
                                   cost integer DEFAULT 1)
RETURNS boolean LANGUAGE sql AS $$
  SELECT throttle_jobs.enqueue(queue, jsonb_build_object('n', name), priority => prio,
                               concurrency_key => ckey, rate_limit_key => rkey,
                               cost => cost) IS NOT NULL
$$;

------------------------------------------------------------------------------
-- Bad input
------------------------------------------------------------------------------

-- _limit_changed (internal): NULL limit key or reset_rate (22004).
SELECT throttle_jobs._limit_changed(NULL, false);
\echo :LAST_ERROR_SQLSTATE
SELECT throttle_jobs._limit_changed('wt:x', NULL);
\echo :LAST_ERROR_SQLSTATE

------------------------------------------------------------------------------
-- Jobs nobody will reserve hold no slot (security review: a producer could
-- stall another tenant's key with one job in a queue nobody consumes)
------------------------------------------------------------------------------

-- wt:victim allows 1 running job.  The victim's queue wt_v is consumed;
-- nobody reserves from wt_dead.
SELECT throttle_jobs.set_concurrency_limit('wt:victim', 1);
SELECT throttle_jobs.create_queue('wt_v');
SELECT throttle_jobs.create_queue('wt_dead');

-- A job of the key enqueued into wt_dead while the key is free is ready
-- there, and holds nothing: the victim's v1 runs, v2 and v3 wait for it.
SELECT pg_temp.wt_enqueue('wt_dead', 'a1', 'wt:victim');
SELECT pg_temp.wt_enqueue('wt_v', 'v' || n, 'wt:victim') FROM generate_series(1, 3) n;
SELECT * FROM pg_temp.wt_reserve('wt_v') AS reserved;
SELECT * FROM pg_temp.wt_state('wt:victim');
-- v1 completes: its slot goes to v2 at once, whatever a1 does.
SELECT pg_temp.wt_complete('v1') AS completed;
SELECT * FROM pg_temp.wt_state('wt:victim');
SELECT * FROM pg_temp.wt_reserve('wt_v') AS reserved;

-- A job of the key that waits with a higher priority than the victim's is
-- released first, into wt_dead, where nobody takes it.  It holds the slot
-- while it may still be reserved (10 seconds): maintain() leaves v3 waiting.
SELECT pg_temp.wt_enqueue('wt_dead', 'a2', 'wt:victim', prio => 100);
SELECT pg_temp.wt_complete('v2') AS completed;
SELECT * FROM pg_temp.wt_state('wt:victim');
SELECT jsonb_typeof(throttle_jobs.maintain()) AS maintain;
SELECT * FROM pg_temp.wt_state('wt:victim');
SELECT key, max_running, running FROM throttle_jobs.key_stats WHERE key = 'wt:victim';
-- Once that time has passed (simulated), the next maintain() releases v3,
-- and the victim reserves it.
UPDATE throttle_jobs.job SET released_at = released_at - interval '1 minute'
WHERE payload->>'n' = 'a2';
SELECT jsonb_typeof(throttle_jobs.maintain()) AS maintain;
SELECT * FROM pg_temp.wt_state('wt:victim');
SELECT * FROM pg_temp.wt_reserve('wt_v') AS reserved;

-- A paused queue: its waiting jobs are passed over by releases (p1 is the
-- best waiting job, but its queue is paused: v4 gets the slot).  Neither a
-- scheduled job nor a2, released long ago, holds a slot.
SELECT throttle_jobs.create_queue('wt_p');
SELECT pg_temp.wt_enqueue('wt_p', 'p1', 'wt:victim', prio => 50);
SELECT throttle_jobs.pause_queue('wt_p');
SELECT pg_temp.wt_enqueue('wt_v', 'v4', 'wt:victim');
SELECT pg_temp.wt_enqueue('wt_v', 'v5', 'wt:victim');
SELECT throttle_jobs.enqueue('wt_v', '{"n": "v-later"}', concurrency_key => 'wt:victim',
                             run_at => now() + interval '1 hour') IS NOT NULL AS ok;
SELECT * FROM pg_temp.wt_state('wt:victim');
SELECT pg_temp.wt_complete('v3') AS completed;
SELECT * FROM pg_temp.wt_state('wt:victim');
SELECT * FROM pg_temp.wt_reserve('wt_v') AS reserved;
-- Resumed, the paused queue's job is first in line again.
SELECT throttle_jobs.resume_queue('wt_p');
SELECT pg_temp.wt_complete('v4') AS completed;
SELECT * FROM pg_temp.wt_state('wt:victim');
SELECT * FROM pg_temp.wt_reserve('wt_p') AS reserved;

------------------------------------------------------------------------------
-- Release order: the best waiting jobs of a key in any queue
------------------------------------------------------------------------------

-- wt:order allows 1; while o0 runs, jobs wait in two queues with mixed
-- priorities.  Each completion releases the best one: priority first, then
-- (within a priority) the earlier, across queues.
SELECT throttle_jobs.set_concurrency_limit('wt:order', 1);
SELECT throttle_jobs.create_queue('wt_o1');
SELECT throttle_jobs.create_queue('wt_o2');
SELECT pg_temp.wt_enqueue('wt_o1', 'o0', 'wt:order');
SELECT * FROM pg_temp.wt_reserve('wt_o1') AS reserved;
SELECT pg_temp.wt_enqueue(q, n, 'wt:order', prio => p)
FROM (VALUES ('wt_o1', 'o1', 1), ('wt_o2', 'o2', 5), ('wt_o1', 'o3', 3), ('wt_o1', 'o4', 5),
             ('wt_o2', 'o5', 3)) v(q, n, p);
SELECT * FROM pg_temp.wt_state('wt:order');
CREATE TEMP TABLE wt_order (step serial, n text);
DO $$
DECLARE
	running text := 'o0';
	next text;
BEGIN
	FOR i IN 1..5 LOOP
		PERFORM pg_temp.wt_complete(running);
		SELECT j.payload->>'n' INTO next FROM throttle_jobs.jobs j
		WHERE j.concurrency_key = 'wt:order' AND j.state = 'available';
		INSERT INTO wt_order (n) VALUES (next);
		PERFORM pg_temp.wt_reserve(j.queue) FROM throttle_jobs.jobs j WHERE j.payload->>'n' = next;
		running := next;
	END LOOP;
END
$$;
SELECT string_agg(n, ' ' ORDER BY step) AS release_order FROM wt_order;

------------------------------------------------------------------------------
-- Rate keys: released in admission-sized amounts when due
------------------------------------------------------------------------------

-- wt:rate: a token bucket of 3 per day (burst 3).  r1..r3 start; r4..r10
-- wait, and the key knows when its next token comes (8 hours).
SELECT throttle_jobs.set_rate_limit('wt:rate', 3, '1 day');
SELECT throttle_jobs.create_queue('wt_r');
SELECT pg_temp.wt_enqueue('wt_r', 'r' || n, rkey => 'wt:rate') FROM generate_series(1, 10) n;
SELECT * FROM pg_temp.wt_reserve('wt_r') AS reserved;
SELECT * FROM pg_temp.wt_state('wt:rate');
SELECT round((extract(epoch FROM next_at - now()) / 3600)::numeric, 2) AS next_in_hours
FROM throttle_jobs.key_rate_state WHERE key = 'wt:rate';
-- 16 hours later (simulated: the bucket last refilled 16 hours earlier, and
-- the key is due), the next reservation releases as many waiting jobs as
-- there are tokens (two) and admits them; the rest keep waiting, due again
-- when the next token comes.
UPDATE throttle_jobs.key_rate_state SET stamp = stamp - interval '16 hours',
       next_at = now() - interval '1 second' WHERE key = 'wt:rate';
SELECT * FROM pg_temp.wt_reserve('wt_r') AS reserved;
SELECT * FROM pg_temp.wt_state('wt:rate');
SELECT round((extract(epoch FROM next_at - now()) / 3600)::numeric, 2) AS next_in_hours
FROM throttle_jobs.key_rate_state WHERE key = 'wt:rate';
-- A waiting job judged when the key was due sooner (simulated: its
-- blocked_until an hour ahead): explain_job gives the key's time, when it
-- admits next, not the job's older one.
UPDATE throttle_jobs.job SET blocked_until = now() + interval '1 hour' WHERE payload->>'n' = 'r7';
SELECT (throttle_jobs.explain_job(j.id)->>'blocked_until')::timestamptz = s.next_at AS explain_says_key_time,
       round((extract(epoch FROM (throttle_jobs.explain_job(j.id)->>'blocked_until')::timestamptz - now()) / 3600)::numeric, 2) AS in_hours
FROM throttle_jobs.job j, throttle_jobs.key_rate_state s
WHERE j.payload->>'n' = 'r7' AND s.key = 'wt:rate';
-- A key whose waiting jobs lost their due time (next_at) is found by
-- maintain()'s sweep, which releases what the tokens allow (none yet) and
-- sets it again.
UPDATE throttle_jobs.key_rate_state SET next_at = NULL WHERE key = 'wt:rate';
SELECT m->'throttled_released' AS released FROM throttle_jobs.maintain() m;
SELECT round((extract(epoch FROM next_at - now()) / 3600)::numeric, 2) AS next_in_hours
FROM throttle_jobs.key_rate_state WHERE key = 'wt:rate';
-- Released jobs that nobody reserves yet take their tokens first: with 3
-- tokens (simulated) and r6 released but not reserved, a release lets out
-- two more (r7, r8), not three.
UPDATE throttle_jobs.key_rate_state SET stamp = stamp - interval '1 day',
       next_at = now() - interval '1 second' WHERE key = 'wt:rate';
UPDATE throttle_jobs.job SET state = 'available', blocked_key = NULL, blocked_until = NULL,
       released_at = now()
WHERE payload->>'n' = 'r6';
SELECT throttle_jobs.create_queue('wt_other');
SELECT * FROM pg_temp.wt_reserve('wt_other') AS reserved_elsewhere;
SELECT * FROM pg_temp.wt_state('wt:rate');

-- A job whose cost the rate never admits is refused at enqueue (22023).
-- One admitted before its limit shrank comes back from a failed attempt
-- too big: the reservation that meets it moves it to the dead letters,
-- with the reason in its last error (it would wait forever otherwise).
SELECT throttle_jobs.create_queue('wt_h');
SELECT throttle_jobs.set_rate_limit('wt:huge', 3, '1 day');
SELECT pg_temp.wt_enqueue('wt_h', 'r-huge', rkey => 'wt:huge', cost => 5);
SELECT throttle_jobs.set_rate_limit('wt:huge', 3, '1 day', burst => 5);
SELECT pg_temp.wt_enqueue('wt_h', 'r-huge', rkey => 'wt:huge', cost => 5);
SELECT * FROM pg_temp.wt_reserve('wt_h') AS reserved;
SELECT throttle_jobs.set_rate_limit('wt:huge', 3, '1 day');
SELECT throttle_jobs.fail(j.id, j.lease_token, 'try again', retry_in => '0') AS failed
FROM throttle_jobs.job j WHERE j.payload->>'n' = 'r-huge';
SELECT count(*) AS reserved FROM pg_temp.wt_reserve('wt_h');
SELECT count(*) AS live FROM throttle_jobs.jobs WHERE payload->>'n' = 'r-huge';
SELECT reason, last_error, attempt FROM throttle_jobs.dead_letters WHERE payload->>'n' = 'r-huge';

------------------------------------------------------------------------------
-- Enqueue: straight into the list, with a note for the next reservation
------------------------------------------------------------------------------

-- wt:note allows 1; n1 runs.  Enqueued while the key is at its cap, n2 and
-- n3 wait, and their transaction leaves one note for the key (the key's
-- state was read without its mutex: a slot freed before the enqueue commits
-- must still reach them).
SELECT throttle_jobs.set_concurrency_limit('wt:note', 1);
SELECT throttle_jobs.create_queue('wt_n');
SELECT pg_temp.wt_enqueue('wt_n', 'n1', 'wt:note');
SELECT * FROM pg_temp.wt_reserve('wt_n') AS reserved;
DELETE FROM throttle_jobs.key_recheck;
BEGIN;
SELECT pg_temp.wt_enqueue('wt_n', 'n2', 'wt:note'), pg_temp.wt_enqueue('wt_n', 'n3', 'wt:note');
SELECT key, count(*) AS notes FROM throttle_jobs.key_recheck GROUP BY key;
COMMIT;
SELECT * FROM pg_temp.wt_state('wt:note');
-- A job of a key that has jobs waiting waits too, even with a slot free
-- (it does not jump the line): with n1 gone without a completion (its
-- queue was dropped), n4 waits behind n2 and n3, and the next reservation
-- takes the note and releases n2, the first in line.
SELECT throttle_jobs.create_queue('wt_n2');
UPDATE throttle_jobs.job SET queue_id = (SELECT id FROM throttle_jobs.queue WHERE name = 'wt_n2')
WHERE payload->>'n' = 'n1';
SELECT throttle_jobs.drop_queue('wt_n2', force => true);
SELECT pg_temp.wt_enqueue('wt_n', 'n4', 'wt:note');
SELECT * FROM pg_temp.wt_state('wt:note');
SELECT * FROM pg_temp.wt_reserve('wt_n') AS reserved;
SELECT count(*) AS notes_left FROM throttle_jobs.key_recheck;

------------------------------------------------------------------------------
-- A backlog enqueued in one transaction while its key is open
------------------------------------------------------------------------------

-- wt:bulk allows 2 running; nothing runs.  One transaction enqueues 300 of
-- its jobs: the first 64 (more than the cap: small batches behave as if
-- every job were ready) are ready, the other 236 join the list at once
-- instead of being parked, each of them, by the first reservation.  One
-- note for the key, not one per job.
SELECT throttle_jobs.set_concurrency_limit('wt:bulk', 2);
SELECT throttle_jobs.create_queue('wt_bulk');
DELETE FROM throttle_jobs.key_recheck;
SELECT count(*) FROM (SELECT pg_temp.wt_enqueue('wt_bulk', 'b' || n, 'wt:bulk')
                      FROM generate_series(1, 300) n) s;
SELECT count(*) FILTER (WHERE state = 'available') AS ready,
       count(*) FILTER (WHERE state = 'throttled') AS waiting,
       (array_agg(payload->>'n' ORDER BY id) FILTER (WHERE state = 'throttled'))[1] AS first_waiting
FROM throttle_jobs.jobs WHERE concurrency_key = 'wt:bulk';
SELECT count(*) AS notes FROM throttle_jobs.key_recheck WHERE key = 'wt:bulk';
-- The cap holds: two are reserved, and the reservation parks the other 62
-- ready jobs once; every completion then releases one, first in line.
SELECT count(*) AS reserved FROM pg_temp.wt_reserve('wt_bulk', 10);
SELECT count(*) FILTER (WHERE state = 'running') AS running,
       count(*) FILTER (WHERE state = 'available') AS ready,
       count(*) FILTER (WHERE state = 'throttled') AS waiting
FROM throttle_jobs.jobs WHERE concurrency_key = 'wt:bulk';
SELECT pg_temp.wt_complete('b1');
SELECT * FROM pg_temp.wt_reserve('wt_bulk', 10) AS reserved;

-- wt:bulkrate: a token bucket of 100 per day, burst 100.  A transaction
-- enqueues 150 jobs of cost 1: 100 (the burst) are ready, 50 wait.  With a
-- burst of 10 the first 64 would be ready: small batches are left alone.
SELECT throttle_jobs.set_rate_limit('wt:bulkrate', 100, '1 day', burst => 100);
SELECT count(*) FROM (SELECT pg_temp.wt_enqueue('wt_bulk', 'r' || n, NULL, 'wt:bulkrate')
                      FROM generate_series(1, 150) n) s;
SELECT count(*) FILTER (WHERE state = 'available') AS ready,
       count(*) FILTER (WHERE state = 'throttled') AS waiting
FROM throttle_jobs.jobs WHERE rate_limit_key = 'wt:bulkrate';
-- The burst counts cost: of jobs of cost 30, three are ready (90), a fourth
-- would make 120.
SELECT throttle_jobs.set_rate_limit('wt:bulkcost', 1000, '1 day', burst => 100);
SELECT count(*) FROM (SELECT pg_temp.wt_enqueue('wt_bulk', 'c' || n, NULL, 'wt:bulkcost', 0, 30)
                      FROM generate_series(1, 6) n) s;
SELECT string_agg(payload->>'n', ',' ORDER BY id) FILTER (WHERE state = 'available') AS ready,
       string_agg(payload->>'n', ',' ORDER BY id) FILTER (WHERE state = 'throttled') AS waiting
FROM throttle_jobs.jobs WHERE rate_limit_key = 'wt:bulkcost';

------------------------------------------------------------------------------
-- A dropped limit: its waiting jobs come back in bounded batches
------------------------------------------------------------------------------

-- 1,200 jobs wait for wt:drop (cap 1).  drop_limit releases 1,000 at once
-- and leaves a note; the next reservation releases the other 200.
SELECT throttle_jobs.set_concurrency_limit('wt:drop', 1);
SELECT throttle_jobs.create_queue('wt_d');
SELECT pg_temp.wt_enqueue('wt_d', 'd0', 'wt:drop');
SELECT * FROM pg_temp.wt_reserve('wt_d', 1) AS reserved;
SELECT count(*) FROM (SELECT pg_temp.wt_enqueue('wt_d', 'd' || n, 'wt:drop')
                      FROM generate_series(1, 1200) n) s;
SELECT count(*) FILTER (WHERE state = 'throttled') AS waiting FROM throttle_jobs.jobs
WHERE concurrency_key = 'wt:drop';
SELECT throttle_jobs.drop_limit('wt:drop');
SELECT count(*) FILTER (WHERE state = 'throttled') AS waiting,
       count(*) FILTER (WHERE state = 'available') AS ready
FROM throttle_jobs.jobs WHERE concurrency_key = 'wt:drop';
SELECT count(*) AS reserved FROM pg_temp.wt_reserve('wt_d', 5);
SELECT count(*) FILTER (WHERE state = 'throttled') AS waiting,
       count(*) FILTER (WHERE state = 'available') AS ready
FROM throttle_jobs.jobs WHERE concurrency_key = 'wt:drop';

------------------------------------------------------------------------------
-- Clean up
------------------------------------------------------------------------------

SELECT name, throttle_jobs.drop_queue(name, force => true) FROM throttle_jobs.queues
WHERE name LIKE 'wt\_%' ORDER BY name;
SELECT key, throttle_jobs.drop_limit(key) AS dropped FROM throttle_jobs.limits
WHERE key LIKE 'wt:%' ORDER BY key;
DELETE FROM throttle_jobs.key_recheck;
SELECT count(*) AS rate_states_left FROM throttle_jobs.key_rate_state WHERE key LIKE 'wt:%';
