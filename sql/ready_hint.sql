\set VERBOSITY terse
-- Skip hints (src/ready_hint.c): reservation without limits starts each
-- priority level's scan where its ready jobs begin, and every path that
-- makes a job ready behind that point publishes it.  One session here; the
-- races between sessions are in test/isolation/specs/hint-publish.spec.

SELECT throttle_jobs.create_queue('hint_q');
SELECT throttle_jobs.enqueue('hint_q', jsonb_build_object('n', n), run_at => now() - n * interval '1 hour') > 0 AS enqueued
  FROM generate_series(1, 3) n ORDER BY n DESC;

-- The first reservation learns the queue (a full walk); the second starts at
-- the hint and raises it past job 2.
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');

-- A job enqueued behind the hint (due 5 hours ago) is the next one taken.
SELECT throttle_jobs.enqueue('hint_q', '{"n": "early"}', run_at => now() - interval '5 hours') > 0 AS enqueued;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');

-- A reservation rolled back gives its job back: the hint it raised is
-- lowered again (the job is taken again, not job 1 after it).
SELECT throttle_jobs.enqueue('hint_q', '{"n": "early2"}', run_at => now() - interval '6 hours') > 0 AS enqueued;
BEGIN;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');
ROLLBACK;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');

-- The same for a subtransaction rolled back.
SELECT throttle_jobs.enqueue('hint_q', '{"n": "early3"}', run_at => now() - interval '7 hours') > 0 AS enqueued;
BEGIN;
SAVEPOINT s;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');
ROLLBACK TO SAVEPOINT s;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');
COMMIT;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');
SELECT count(*) AS left FROM throttle_jobs.job j JOIN throttle_jobs.queue q ON q.id = j.queue_id
 WHERE q.name = 'hint_q' AND j.state = 'available';

-- A job due later in a fifo queue is never stepped over: it sorts after
-- every job due now, and the hint never rises past now.
SELECT throttle_jobs.enqueue('hint_q', '{"n": "soon"}', run_at => clock_timestamp() + interval '1 second') > 0 AS enqueued;
SELECT throttle_jobs.enqueue('hint_q', '{"n": "now"}') > 0 AS enqueued;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');
SELECT count(*) AS none_due FROM throttle_jobs.reserve('hint_q', 'w');
SELECT pg_sleep(1.1);
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');

-- Priority levels are walked highest first, each from its own hint, and one
-- call may span levels in queue order; a new level published behind the
-- others comes first when it is the highest.
SELECT throttle_jobs.enqueue('hint_q', jsonb_build_object('n', 'p' || p), priority => p,
                             run_at => now() - interval '1 hour') > 0 AS enqueued
  FROM unnest(ARRAY[0, 5, 0, 5]) p;
SELECT payload->>'n' AS n, priority FROM throttle_jobs.reserve('hint_q', 'w', 3);
SELECT throttle_jobs.enqueue('hint_q', '{"n": "p9"}', priority => 9, run_at => now() - interval '9 hours') > 0 AS enqueued;
SELECT payload->>'n' AS n, priority FROM throttle_jobs.reserve('hint_q', 'w', 2);

-- A queue dropped and made again under the same name: the id this session
-- remembered is stale, and the reservation still finds the new queue's job.
SELECT throttle_jobs.drop_queue('hint_q', force => true);
SELECT throttle_jobs.create_queue('hint_q');
SELECT throttle_jobs.enqueue('hint_q', '{"n": "again"}') > 0 AS enqueued;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');

-- More priority levels than a queue keeps hints for (16): reservation walks
-- as without hints, in priority order.
SELECT throttle_jobs.enqueue('hint_q', jsonb_build_object('n', p), priority => p) > 0 AS enqueued
  FROM generate_series(1, 18) p;
SELECT string_agg(payload->>'n', ' ') AS taken FROM throttle_jobs.reserve('hint_q', 'w', 5);
SELECT string_agg(payload->>'n', ' ') AS taken FROM throttle_jobs.reserve('hint_q', 'w', 5);
SELECT string_agg(payload->>'n', ' ') AS taken FROM throttle_jobs.reserve('hint_q', 'w', 10);

-- A transaction's own jobs made ready behind the hint are ready to its own
-- reservations before it commits.
SELECT throttle_jobs.enqueue('hint_q', '{"n": "x1"}', run_at => now() - interval '1 hour') > 0 AS enqueued;
SELECT throttle_jobs.enqueue('hint_q', '{"n": "x2"}', run_at => now() - interval '1 hour') > 0 AS enqueued;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');
BEGIN;
SELECT throttle_jobs.enqueue('hint_q', '{"n": "own"}', run_at => now() - interval '3 hours') > 0 AS enqueued;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');
COMMIT;
SELECT payload->>'n' AS n FROM throttle_jobs.reserve('hint_q', 'w');

-- More queues than shared memory keeps hints for (1,024): the entry read
-- longest ago makes room, and its queue finds its levels again.  Each
-- queue gets two jobs; one reservation each raises its hint; then a job
-- behind the hint; then every job left is reserved (2,060 of them).
CREATE FUNCTION pg_temp.hint_many(action text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  i integer;
  got bigint := 0;
BEGIN
  FOR i IN 1..1030 LOOP
    CASE action
      WHEN 'make' THEN
        PERFORM throttle_jobs.create_queue('hint_many_' || i);
        PERFORM throttle_jobs.enqueue('hint_many_' || i, '{}', run_at => now() - interval '1 hour')
          FROM generate_series(1, 2);
      WHEN 'reserve1' THEN
        got := got + (SELECT count(*) FROM throttle_jobs.reserve('hint_many_' || i, 'w'));
      WHEN 'behind' THEN
        PERFORM throttle_jobs.enqueue('hint_many_' || i, '{}', run_at => now() - interval '2 hours');
      WHEN 'reserve5' THEN
        got := got + (SELECT count(*) FROM throttle_jobs.reserve('hint_many_' || i, 'w', 5));
      WHEN 'drop' THEN
        PERFORM throttle_jobs.drop_queue('hint_many_' || i, force => true);
    END CASE;
  END LOOP;
  RETURN got;
END
$$;
SELECT pg_temp.hint_many('make');
SELECT pg_temp.hint_many('reserve1') AS reserved;
SELECT pg_temp.hint_many('reserve1') AS reserved;
SELECT pg_temp.hint_many('behind');
SELECT pg_temp.hint_many('reserve5') AS reserved;
SELECT pg_temp.hint_many('drop');

-- The publishing triggers: BEFORE ROW, only for rows that are or were ready.
SELECT tgname, pg_get_triggerdef(t.oid) LIKE '%BEFORE%FOR EACH ROW WHEN%' AS before_row_when
  FROM pg_trigger t WHERE tgrelid = 'throttle_jobs.job'::regclass AND NOT tgisinternal ORDER BY tgname;

-- The trigger function refuses any other use (39P01), changing nothing.
CREATE TABLE hint_other (state text);
CREATE TRIGGER hint_other_after AFTER INSERT ON hint_other FOR EACH ROW
  EXECUTE FUNCTION throttle_jobs._job_ready_trigger();
INSERT INTO hint_other VALUES ('available');
DROP TRIGGER hint_other_after ON hint_other;
CREATE TRIGGER hint_other_before BEFORE INSERT ON hint_other FOR EACH ROW
  EXECUTE FUNCTION throttle_jobs._job_ready_trigger();
INSERT INTO hint_other VALUES ('available');
SELECT count(*) AS rows FROM hint_other;
DROP TABLE hint_other;
-- A table with every column the trigger reads, but of other types: refused
-- too, not read as if it were the job table (a text read from an integer
-- would crash the backend).
CREATE TABLE hint_typed (id bigint, queue_id integer, state integer, priority smallint,
                         rr_rank bigint, run_at timestamptz);
CREATE TRIGGER hint_typed_before BEFORE INSERT ON hint_typed FOR EACH ROW
  EXECUTE FUNCTION throttle_jobs._job_ready_trigger();
INSERT INTO hint_typed VALUES (1, 1, 7, 0, 0, now());
SELECT count(*) AS rows FROM hint_typed;
DROP TABLE hint_typed;

SELECT throttle_jobs.drop_queue('hint_q', force => true);
