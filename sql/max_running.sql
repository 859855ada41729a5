\set VERBOSITY terse
SET client_min_messages = warning;

-- A queue-wide cap on running jobs: set_queue_max_running (races:
-- isolation/max-running-race).
SELECT throttle_jobs.create_queue('mr_q');
SELECT throttle_jobs.create_queue('mr_free');
SELECT count(throttle_jobs.enqueue('mr_q', jsonb_build_object('n', g))) FROM generate_series(1, 10) g;
SELECT count(throttle_jobs.enqueue('mr_free')) FROM generate_series(1, 3) g;
CREATE TEMP TABLE mr_held (id bigint, token uuid);

-- Cap 2: a reservation of 10 gets 2, the next one nothing.
SELECT throttle_jobs.set_queue_max_running('mr_q', 2);
SELECT q.name, m.max_running FROM throttle_jobs.queue_max_running m JOIN throttle_jobs.queue q ON q.id = m.queue_id;
WITH r AS (SELECT * FROM throttle_jobs.reserve('mr_q', 'w1', 10))
INSERT INTO mr_held SELECT id, lease_token FROM r;
SELECT count(*) AS reserved FROM mr_held;
SELECT count(*) AS reserved_more FROM throttle_jobs.reserve('mr_q', 'w1', 10);
-- other queues are not capped
SELECT count(*) AS free_reserved FROM throttle_jobs.reserve('mr_free', 'w1', 10);

-- Complete one: the next reservation gets 1 (and complete_and_reserve too).
SELECT throttle_jobs.complete(id, token) FROM mr_held ORDER BY id LIMIT 1;
SELECT count(*) AS reserved_after_complete FROM throttle_jobs.reserve('mr_q', 'w1', 10);
SELECT count(*) AS running FROM throttle_jobs.job j JOIN throttle_jobs.queue q ON q.id = j.queue_id
 WHERE q.name = 'mr_q' AND j.state = 'running';
SELECT id, lease_token FROM throttle_jobs.job WHERE state = 'running' ORDER BY id LIMIT 1 \gset
SELECT count(*) AS completed_and_reserved
FROM throttle_jobs.complete_and_reserve('mr_q', 'w1', ARRAY[:id]::bigint[], ARRAY[:'lease_token']::uuid[], 10);

-- In one transaction, reservations see the jobs it already took.
SELECT throttle_jobs.set_queue_max_running('mr_q', 4);
BEGIN;
SELECT count(*) AS first FROM throttle_jobs.reserve('mr_q', 'w2', 1);
SELECT count(*) AS second FROM throttle_jobs.reserve('mr_q', 'w2', 10);
SELECT count(*) AS third FROM throttle_jobs.reserve('mr_q', 'w2', 10);
COMMIT;

-- Lowering the cap below the running jobs reserves nothing (and stops nobody).
SELECT throttle_jobs.set_queue_max_running('mr_q', 1);
SELECT count(*) AS reserved_over_cap FROM throttle_jobs.reserve('mr_q', 'w1', 10);

-- With key limits present (the admitting path), the cap holds as well.
SELECT throttle_jobs.set_concurrency_limit('mr_key', 100);
SELECT throttle_jobs.set_queue_max_running('mr_q', 5);
SELECT count(*) AS limited_path FROM throttle_jobs.reserve('mr_q', 'w1', 10);
SELECT throttle_jobs.drop_limit('mr_key');

-- Clear with 0: no cap; setting again, then clearing with NULL.
SELECT throttle_jobs.set_queue_max_running('mr_q', 0);
SELECT count(*) AS capped FROM throttle_jobs.queue_max_running;
SELECT count(*) AS uncapped_reserved FROM throttle_jobs.reserve('mr_q', 'w1', 10);
SELECT throttle_jobs.set_queue_max_running('mr_q', 3);
SELECT throttle_jobs.set_queue_max_running('mr_q', NULL);
SELECT count(*) AS capped FROM throttle_jobs.queue_max_running;

-- Dropping a queue forgets its cap.
SELECT throttle_jobs.set_queue_max_running('mr_free', 1);
SELECT throttle_jobs.drop_queue('mr_free', force => true);
SELECT count(*) AS capped FROM throttle_jobs.queue_max_running;

-- Bad input: negative (22023, nothing changed), unknown queue, NULL queue.
SELECT throttle_jobs.set_queue_max_running('mr_q', 2);
SELECT throttle_jobs.set_queue_max_running('mr_q', -1);
SELECT max_running FROM throttle_jobs.queue_max_running;
\set VERBOSITY sqlstate
SELECT throttle_jobs.set_queue_max_running('mr_q', -1);
\set VERBOSITY terse
SELECT throttle_jobs.set_queue_max_running('mr_nope', 2);
SELECT throttle_jobs.set_queue_max_running(NULL, 2);

-- create_queue(..., max_running => n) sets the cap at creation, as
-- set_queue_max_running does: a reservation of 10 gets 3.
SELECT throttle_jobs.create_queue('mr_made', max_running => 3);
SELECT q.name, m.max_running FROM throttle_jobs.queue_max_running m JOIN throttle_jobs.queue q ON q.id = m.queue_id
 WHERE q.name = 'mr_made';
SELECT count(throttle_jobs.enqueue('mr_made')) FROM generate_series(1, 5) g;
SELECT count(*) AS made_reserved FROM throttle_jobs.reserve('mr_made', 'w1', 10);
SELECT count(*) AS made_reserved_more FROM throttle_jobs.reserve('mr_made', 'w1', 10);
SELECT throttle_jobs.drop_queue('mr_made', force => true);
-- with the other options, by position (max_size 7) and by name
SELECT throttle_jobs.create_queue('mr_made', 7, max_attempts => 2, max_running => 1);
SELECT q.max_size, q.max_attempts, m.max_running FROM throttle_jobs.queue q
  JOIN throttle_jobs.queue_max_running m ON m.queue_id = q.id WHERE q.name = 'mr_made';
SELECT throttle_jobs.drop_queue('mr_made');
-- 0 and NULL (the default) make no cap; a 0.1.0-style call is unchanged
SELECT throttle_jobs.create_queue('mr_made0', max_running => 0);
SELECT throttle_jobs.create_queue('mr_madenull', max_running => NULL);
SELECT throttle_jobs.create_queue('mr_made01', 5, 'drop');
SELECT q.name, q.max_size, q.on_full, m.max_running FROM throttle_jobs.queue q
  LEFT JOIN throttle_jobs.queue_max_running m ON m.queue_id = q.id
 WHERE q.name IN ('mr_made0', 'mr_madenull', 'mr_made01') ORDER BY q.name;
SELECT throttle_jobs.drop_queue('mr_made0');
SELECT throttle_jobs.drop_queue('mr_madenull');
SELECT throttle_jobs.drop_queue('mr_made01');
-- a negative cap is refused (22023, the setter's message) and no queue is made
SELECT throttle_jobs.create_queue('mr_made', max_running => -2);
\set VERBOSITY sqlstate
SELECT throttle_jobs.create_queue('mr_made', max_running => -2);
\set VERBOSITY terse
SELECT count(*) AS made FROM throttle_jobs.queue WHERE name = 'mr_made';
-- a bad option with a good cap: no queue and no cap either
SELECT throttle_jobs.create_queue('mr_made', max_attempts => 0, max_running => 2);
SELECT count(*) AS made FROM throttle_jobs.queue WHERE name = 'mr_made';
SELECT count(*) AS capped FROM throttle_jobs.queue_max_running m JOIN throttle_jobs.queue q ON q.id = m.queue_id
 WHERE q.name NOT IN ('mr_q');
-- an admin (not a superuser) makes a capped queue and owns it
CREATE ROLE mr_admin;
GRANT throttle_jobs_admin TO mr_admin;
SET ROLE mr_admin;
SELECT throttle_jobs.create_queue('mr_made', max_running => 2);
RESET ROLE;
SELECT q.owner, m.max_running FROM throttle_jobs.queue q
  JOIN throttle_jobs.queue_max_running m ON m.queue_id = q.id WHERE q.name = 'mr_made';
-- a worker may not create queues, capped or not
CREATE ROLE mr_w2;
GRANT throttle_jobs_worker TO mr_w2;
SET ROLE mr_w2;
SELECT throttle_jobs.create_queue('mr_made2', max_running => 2);
RESET ROLE;
SELECT throttle_jobs.drop_queue('mr_made');
DROP ROLE mr_admin;
DROP ROLE mr_w2;

-- Privileges: manage is needed; a worker may not, a manage grantee may.
CREATE ROLE mr_worker;
GRANT throttle_jobs_worker TO mr_worker;
CREATE ROLE mr_manager;
GRANT throttle_jobs_user TO mr_manager;
SET ROLE mr_worker;
SELECT throttle_jobs.set_queue_max_running('mr_q', 3);
RESET ROLE;
SET ROLE mr_manager;
SELECT throttle_jobs.set_queue_max_running('mr_q', 3);
RESET ROLE;
SELECT throttle_jobs.grant_queue('mr_q', 'mr_manager', 'manage');
SET ROLE mr_manager;
SELECT throttle_jobs.set_queue_max_running('mr_q', 3);
SELECT throttle_jobs.set_queue_max_running('mr_q', 0);
RESET ROLE;
SELECT count(*) AS capped FROM throttle_jobs.queue_max_running;
SELECT throttle_jobs.revoke_queue('mr_q', 'mr_manager', 'manage');
DROP ROLE mr_worker;
DROP ROLE mr_manager;

SELECT throttle_jobs.drop_queue('mr_q', force => true);
