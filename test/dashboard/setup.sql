-- test/dashboard/setup.sql -- the data the browser tests look at.
-- Run by test/dashboard/run as the superuser in a fresh database, with
-- psql variables admin_role, viewer_role and nostats_role (created by the
-- caller) and
-- big_jobs (how many jobs the big queue gets).
\set ON_ERROR_STOP 1
CREATE EXTENSION throttle_jobs;

-- An admin (may act) and a viewer: it reaches the functions and views
-- (throttle_jobs_user), reads the statistics (pg_monitor) and may consume
-- every queue (below), so it sees everything, but manages none: it may act
-- on nothing.
GRANT throttle_jobs_admin, pg_monitor TO :"admin_role";
GRANT throttle_jobs_user, pg_monitor TO :"viewer_role";
-- A role without pg_monitor: no statistics, the queues it may consume.
GRANT throttle_jobs_user TO :"nostats_role";

SELECT throttle_jobs.create_queue('emails', lease => '10 min');
SELECT throttle_jobs.create_queue('webhooks', max_attempts => 2, backoff_base => '1 s', backoff_max => '1 s');
SELECT throttle_jobs.create_queue('reports');
SELECT throttle_jobs.create_queue('big');
SELECT throttle_jobs.grant_queue(q, :'viewer_role', 'consume')
FROM unnest(ARRAY['emails', 'webhooks', 'reports', 'big']) q;
SELECT throttle_jobs.grant_queue(q, :'nostats_role', 'consume')
FROM unnest(ARRAY['emails', 'reports']) q;
SELECT throttle_jobs.set_concurrency_limit('tenant:*', 2);
SELECT throttle_jobs.set_rate_limit('api:stripe', 10, '1 s');

-- emails: 40 jobs of 4 tenants; 2 tenants' jobs throttled by the cap.
SELECT count(*) FROM throttle_jobs.enqueue_batch('emails',
    (SELECT jsonb_agg(jsonb_build_object(
         'payload', jsonb_build_object('to', 'user' || i || '@example.com', 'template', CASE WHEN i % 3 = 0 THEN 'welcome' ELSE 'receipt' END),
         'priority', i % 3,
         'concurrency_key', 'tenant:' || (i % 4)))
     FROM generate_series(1, 40) i));
-- Workers take some (a short lease for two of them: about to expire).
SELECT count(*) FROM throttle_jobs.reserve('emails', 'worker-a', 5);
SELECT count(*) FROM throttle_jobs.reserve('emails', 'worker-b', 2, lease => '20 s');
-- The four tenants now hold 7 of their 8 slots: this takes the last one and
-- parks the rest of their jobs (throttled).
SELECT count(*) FROM throttle_jobs.reserve('emails', 'worker-a', 5);
-- A finished job and a scheduled one.
SELECT count(*) FROM (SELECT throttle_jobs.complete(r.id, r.lease_token)
                      FROM throttle_jobs.reserve('emails', 'worker-c', 1) r) c;
SELECT throttle_jobs.enqueue('emails', '{"to": "later@example.com", "template": "reminder"}', run_at => now() + interval '1 hour');

-- webhooks: jobs that fail twice end in the dead letters.
SELECT count(*) FROM throttle_jobs.enqueue_batch('webhooks',
    (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('url', 'https://hooks.example.com/' || i, 'event', 'order.paid'),
                                         'rate_limit_key', 'api:stripe'))
     FROM generate_series(1, 6) i));
SELECT count(*) FROM (SELECT throttle_jobs.fail(r.id, r.lease_token, 'HTTP 503 from hooks.example.com', retry_in => '0')
                      FROM throttle_jobs.reserve('webhooks', 'hook-worker', 6) r) f;
SELECT count(*) FROM (SELECT throttle_jobs.fail(r.id, r.lease_token, 'HTTP 410 Gone: endpoint removed')
                      FROM throttle_jobs.reserve('webhooks', 'hook-worker', 6) r) f;
SELECT throttle_jobs.enqueue('reports', '{"report": "monthly"}');
SELECT throttle_jobs.pause_queue('reports');

-- big: :big_jobs jobs inserted directly (as the superuser: a test shortcut;
-- enqueue_batch would take minutes), spread over priorities and tenants.
INSERT INTO throttle_jobs.job (queue_id, state, priority, run_at, enqueued_at, concurrency_key, payload)
SELECT q.id, 'available', (i % 5)::smallint, now() - interval '1 minute', now() - interval '1 minute',
       'bigtenant:' || (i % 100), jsonb_build_object('n', i, 'kind', CASE WHEN i % 1000 = 0 THEN 'rare' ELSE 'bulk' END)
FROM throttle_jobs.queue q, generate_series(1, :big_jobs) i
WHERE q.name = 'big';
ANALYZE throttle_jobs.job;

-- A past hour of throughput for the charts (the extension rolls up only
-- finished minutes, so a fresh database has none yet).
INSERT INTO throttle_jobs.stats_minute (queue_id, minute, enqueued, reserved, completed, failed, dead_lettered)
SELECT q.id, date_trunc('minute', now()) - m * interval '1 minute',
       20 + (m * 7) % 13, 18 + (m * 5) % 11, 18 + (m * 5) % 11, CASE WHEN m % 9 = 0 THEN 3 ELSE 0 END, 0
FROM throttle_jobs.queue q, generate_series(1, 59) m
WHERE q.name IN ('emails', 'webhooks')
ON CONFLICT DO NOTHING;
SELECT throttle_jobs.maintain() IS NOT NULL AS maintained;
