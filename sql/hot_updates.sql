\set VERBOSITY terse
-- Lease renewals must be HOT updates: heartbeat changes only lease_until,
-- which no index of throttle_jobs.job covers, and the table keeps free space
-- on each page (fillfactor 80) for the new row version.

-- No index of the hot table covers lease_until.
SELECT i.indexrelid::regclass AS index, pg_get_indexdef(i.indexrelid) ~ 'lease_until' AS covers_lease_until
FROM pg_index i WHERE i.indrelid = 'throttle_jobs.job'::regclass ORDER BY i.indexrelid::regclass::text;

-- The table keeps room for HOT updates.
SELECT reloptions FROM pg_class WHERE oid = 'throttle_jobs.job'::regclass;

SELECT throttle_jobs.create_queue('hot_q');
SELECT count(*) FROM (SELECT throttle_jobs.enqueue('hot_q', jsonb_build_object('n', n))
                      FROM generate_series(1, 50) n) s;
CREATE TEMP TABLE hot_leases AS SELECT id, lease_token FROM throttle_jobs.reserve('hot_q', 'w', 50);
-- A first round of renewals, not measured: it meets pages that the
-- reservations filled, whose free space depends on what earlier tests left
-- in the table; it prunes them.
SELECT count(throttle_jobs.heartbeat(id, lease_token, '9 minutes')) FROM hot_leases;

SELECT pg_stat_force_next_flush();
SELECT n_tup_upd AS upd_before, n_tup_hot_upd AS hot_before
FROM pg_stat_user_tables WHERE relid = 'throttle_jobs.job'::regclass \gset

-- 50 jobs x 4 heartbeats, each in its own transaction (now() moves on).
SELECT count(throttle_jobs.heartbeat(id, lease_token, '10 minutes')) FROM hot_leases;
SELECT count(throttle_jobs.heartbeat(id, lease_token, '11 minutes')) FROM hot_leases;
SELECT count(throttle_jobs.heartbeat(id, lease_token, '12 minutes')) FROM hot_leases;
SELECT count(throttle_jobs.heartbeat(id, lease_token, '13 minutes')) FROM hot_leases;

SELECT pg_stat_force_next_flush();
-- The 200 renewals were updates, and HOT ones (all of them once pages have
-- been pruned; a fresh table spends some of its free space on the
-- reservations themselves, so the test asks for most rather than all).
SELECT n_tup_upd - :upd_before AS updates,
       (n_tup_hot_upd - :hot_before) * 10 >= (n_tup_upd - :upd_before) * 8 AS at_least_80_percent_hot
FROM pg_stat_user_tables WHERE relid = 'throttle_jobs.job'::regclass;

SELECT throttle_jobs.drop_queue('hot_q', force => true);
