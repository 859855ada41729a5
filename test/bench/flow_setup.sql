-- test/bench/flow_setup.sql: the database of the flow benchmarks K3 and K4
-- (run by test/bench/run as a superuser, once, after CREATE EXTENSION
-- throttle_jobs in the database bench_flow).  test/bench/README.md says
-- what is measured and how.
--
-- bench_flow is deliberately not in throttle_jobs.databases: no background
-- worker maintains it.  pgbench client 0 of every K3/K4 run (flow.pgbench)
-- calls maintain() once a second instead, as the worker would.  The reason
-- is the row-write figure: PostgreSQL 15 moves a backend's table statistics
-- to shared memory only when the backend goes idle (at most once a second,
-- or at once after pg_stat_force_next_flush()) or exits, and the
-- maintenance worker never goes idle in that sense, so the rows its
-- maintain() passes write would never show in pg_stat_user_tables.
\set ON_ERROR_STOP 1
CREATE SCHEMA bench;

-- What client 0 does on each tick, and its bookkeeping (one row).
CREATE TABLE bench.flow_state (
	queue				text NOT NULL,				-- the queue it fills (and the workers drain)
	lkey				text,						-- the limited key, NULL: none
	lkind				text,						-- 'cap' (a concurrency_key) or 'rate' (a rate_limit_key)
	depth				integer NOT NULL DEFAULT 0,	-- the limited key's backlog to keep
	free_depth			integer NOT NULL DEFAULT 0,	-- free jobs to keep queued (top-up mode)
	free_rate			double precision NOT NULL DEFAULT 0,	-- > 0: free jobs per second instead
	started				timestamptz,				-- first tick (the steady rate counts from it)
	free_made			bigint NOT NULL DEFAULT 0,	-- free jobs enqueued since then
	pending_free		integer NOT NULL DEFAULT 0,	-- free jobs enqueued and not yet seen gone
	pending_limited		integer NOT NULL DEFAULT 0,
	gone_free			integer NOT NULL DEFAULT 0,	-- seen gone on the last tick (sizes the next look)
	gone_limited		integer NOT NULL DEFAULT 0,
	ticks				integer NOT NULL DEFAULT 0,
	dry_ticks			integer NOT NULL DEFAULT 0,	-- ticks that found every free job taken
	maintained_at		timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO bench.flow_state (queue) VALUES ('flow');

-- The ids of the jobs the producer enqueued and has not yet seen leave the
-- job table (finished), oldest first.  Unlogged: scratch bookkeeping.
CREATE UNLOGGED TABLE bench.flow_pending (
	limited				boolean NOT NULL,
	id					bigint NOT NULL,
	PRIMARY KEY (limited, id)
);

-- Enqueues n jobs through enqueue_batch (in batches of max_batch_size):
-- free jobs at priority 0 without keys, or the limited key's jobs at
-- priority 10, and notes their ids as pending.
CREATE FUNCTION bench.flow_enqueue(is_limited boolean, n integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	s			bench.flow_state;
	job			jsonb;
	batch		integer := current_setting('throttle_jobs.max_batch_size')::integer;
	m			integer;
	left_n		integer := n;
BEGIN
	SELECT * INTO s FROM bench.flow_state;
	IF is_limited THEN
		job := jsonb_build_object('payload', jsonb_build_object('k', 1), 'priority', 10,
								  CASE s.lkind WHEN 'cap' THEN 'concurrency_key' ELSE 'rate_limit_key' END,
								  s.lkey);
	ELSE
		job := '{"payload": {"f": 1}, "priority": 0}';
	END IF;
	WHILE left_n > 0 LOOP
		m := least(left_n, batch);
		INSERT INTO bench.flow_pending (limited, id)
		SELECT is_limited, i
		  FROM throttle_jobs.enqueue_batch(s.queue, (SELECT jsonb_agg(job) FROM generate_series(1, m))) i;
		left_n := left_n - m;
	END LOOP;
	IF is_limited THEN
		UPDATE bench.flow_state SET pending_limited = pending_limited + n;
	ELSE
		UPDATE bench.flow_state SET pending_free = pending_free + n, free_made = free_made + n;
	END IF;
END $$;

-- How many of the producer's pending jobs of one kind have left the job
-- table; forgets them.  Workers take each kind oldest first, so it looks at
-- the oldest `first` pending ids, and at twice as many more while all of
-- them are gone: a handful of primary-key probes per finished job, however
-- deep the backlog.
CREATE FUNCTION bench.flow_gone(is_limited boolean, first integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	chunk		integer := greatest(first, 16);
	g			integer;
	total		integer := 0;
BEGIN
	LOOP
		WITH c AS (SELECT p.id FROM bench.flow_pending p WHERE p.limited = is_limited
				   ORDER BY p.id LIMIT chunk),
		d AS (DELETE FROM bench.flow_pending p USING c
			   WHERE p.limited = is_limited AND p.id = c.id
				 AND NOT EXISTS (SELECT FROM throttle_jobs.job j WHERE j.id = c.id)
			  RETURNING 1)
		SELECT count(*) INTO g FROM d;
		total := total + g;
		EXIT WHEN g < chunk;
		chunk := chunk * 2;
	END LOOP;
	RETURN total;
END $$;

-- One tick of client 0: keeps the limited key's backlog at its depth and
-- the free jobs flowing (topped up to free_depth, or free_rate per second),
-- then asks the next statement to run maintain() when a second has passed
-- since the last pass (returns 1).  Its own statistics are flushed when the
-- session next goes idle (pg_stat_force_next_flush), so they are at most
-- one tick behind.
CREATE FUNCTION bench.flow_tick() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	s			bench.flow_state;
	now_ts		timestamptz := clock_timestamp();
	g			integer;
	n			bigint;
	due			integer := 0;
BEGIN
	SELECT * INTO s FROM bench.flow_state;
	IF s.started IS NULL THEN
		UPDATE bench.flow_state SET started = now_ts;
		s.started := now_ts;
	END IF;
	IF s.free_depth > 0 OR s.free_rate > 0 THEN
		g := bench.flow_gone(false, s.gone_free + 50);
		UPDATE bench.flow_state SET pending_free = pending_free - g, gone_free = g,
			   dry_ticks = dry_ticks + (s.pending_free > 0 AND g = s.pending_free)::integer;
		IF s.free_rate > 0 THEN
			n := floor(s.free_rate * extract(epoch FROM now_ts - s.started))::bigint - s.free_made;
		ELSE
			n := s.free_depth - (s.pending_free - g);
		END IF;
		IF n > 0 THEN
			PERFORM bench.flow_enqueue(false, n::integer);
		END IF;
	END IF;
	IF s.depth > 0 THEN
		g := bench.flow_gone(true, s.gone_limited + 50);
		UPDATE bench.flow_state SET pending_limited = pending_limited - g, gone_limited = g;
		n := s.depth - (s.pending_limited - g);
		IF n > 0 THEN
			PERFORM bench.flow_enqueue(true, n::integer);
		END IF;
	END IF;
	IF now_ts >= s.maintained_at + interval '1 s' THEN
		due := 1;
		UPDATE bench.flow_state SET maintained_at = now_ts;
	END IF;
	UPDATE bench.flow_state SET ticks = ticks + 1;
	PERFORM pg_stat_force_next_flush();
	RETURN due;
END $$;

-- Drops the bench limits and queues (through the API, so that whatever
-- per-key state the extension keeps stays right) and creates the queue
-- again, retaining completed jobs: their archive rows (finished_at,
-- reserved_at, keys) are what the benchmarks count.
CREATE FUNCTION bench.queue_reset(queue text, fairness text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM throttle_jobs.drop_limit(l.key) FROM throttle_jobs.key_limit l
	 WHERE l.key LIKE 'flow:%' OR l.key = 'tenant:*';
	PERFORM throttle_jobs.drop_queue(q.name, force => true) FROM throttle_jobs.queue q
	 WHERE q.name IN ('flow', 'tenants');
	PERFORM throttle_jobs.create_queue(queue, retain_completed => '1 day', fairness => fairness);
	TRUNCATE bench.flow_pending;
	UPDATE bench.flow_state
	   SET queue = queue_reset.queue, lkey = NULL, lkind = NULL, depth = 0, free_depth = 0,
		   free_rate = 0, started = NULL, free_made = 0, pending_free = 0, pending_limited = 0,
		   gone_free = 0, gone_limited = 0, ticks = 0, dry_ticks = 0, maintained_at = '-infinity';
END $$;

-- K3: queue "flow" with `backlog` jobs of the key flow:key (lkind 'cap':
-- capped at 2; 'rate': 50 per second by `algorithm`, or token_bucket with
-- adaptive => true for 'adaptive'; NULL: no limited key) and free_depth free
-- jobs, for a producer that keeps both at those depths (or enqueues free
-- jobs at free_rate per second when free_rate > 0).
CREATE FUNCTION bench.flow_reset(lkind text, algorithm text, backlog integer,
								 free_depth integer, free_rate double precision) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM bench.queue_reset('flow', 'fifo');
	IF lkind = 'cap' THEN
		PERFORM throttle_jobs.set_concurrency_limit('flow:key', 2);
	ELSIF lkind = 'rate' THEN
		PERFORM throttle_jobs.set_rate_limit('flow:key', 50, '1 s',
			CASE WHEN algorithm = 'adaptive' THEN 'token_bucket' ELSE algorithm END,
			adaptive => algorithm = 'adaptive');
	END IF;
	UPDATE bench.flow_state
	   SET lkey = CASE WHEN flow_reset.lkind IS NULL THEN NULL ELSE 'flow:key' END,
		   lkind = flow_reset.lkind,
		   depth = CASE WHEN flow_reset.lkind IS NULL THEN 0 ELSE backlog END,
		   free_depth = flow_reset.free_depth, free_rate = flow_reset.free_rate;
	IF lkind IS NOT NULL AND backlog > 0 THEN
		PERFORM bench.flow_enqueue(true, backlog);
	END IF;
	PERFORM bench.flow_enqueue(false, CASE WHEN free_rate > 0 THEN 0 ELSE free_depth END);
END $$;

-- K3 figures for the window [t0, t1]: jobs finished (free, and of the
-- limited key), the limited key's admissions in the whole seconds of the
-- window (its rate is measured over whole seconds: a fixed or sliding
-- window admits in bursts, a partial second would count a burst or miss
-- one), and the producer's dry ticks.
CREATE FUNCTION bench.flow_result(t0 timestamptz, t1 timestamptz,
	OUT free bigint, OUT limited bigint, OUT admitted bigint,
	OUT limited_whole bigint, OUT whole_seconds integer, OUT dry_ticks integer)
LANGUAGE sql AS $$
	WITH w AS (SELECT to_timestamp(ceil(extract(epoch FROM t0))) AS lo,
					  to_timestamp(floor(extract(epoch FROM t1))) AS hi),
	a AS (SELECT coalesce(a.concurrency_key, a.rate_limit_key) AS k, a.reserved_at, a.finished_at
			FROM throttle_jobs.job_archive a JOIN throttle_jobs.queue q ON q.id = a.queue_id
		   WHERE q.name = 'flow' AND a.finished_at >= t0 AND a.finished_at <= t1)
	SELECT count(a.finished_at) FILTER (WHERE a.k IS NULL),
		   count(a.finished_at) FILTER (WHERE a.k = 'flow:key'),
		   count(a.finished_at) FILTER (WHERE a.reserved_at >= t0),
		   count(a.finished_at) FILTER (WHERE a.k = 'flow:key' AND a.reserved_at >= w.lo
											AND a.reserved_at < w.hi),
		   greatest(extract(epoch FROM w.hi - w.lo), 0)::integer,
		   (SELECT s.dry_ticks FROM bench.flow_state s)
	  FROM w LEFT JOIN a ON true GROUP BY w.lo, w.hi
$$;

-- K4: queue "tenants" (round_robin) with `per_key` jobs for each of `keys`
-- keys tenant:1 .. tenant:<keys>, enqueued key after key (the order that
-- plain FIFO would serve worst), under the template tenant:* capped at 1.
CREATE FUNCTION bench.tenants_reset(keys integer, per_key integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	batch		integer := current_setting('throttle_jobs.max_batch_size')::integer;
	total		integer := keys * per_key;
BEGIN
	PERFORM bench.queue_reset('tenants', 'round_robin');
	PERFORM throttle_jobs.set_concurrency_limit('tenant:*', 1);
	FOR c IN 0 .. (total - 1) / batch LOOP
		PERFORM count(*) FROM throttle_jobs.enqueue_batch('tenants', (
			SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('i', i),
					 'concurrency_key', 'tenant:' || ((i - 1) / per_key + 1)) ORDER BY i)
			  FROM generate_series(c * batch + 1, least((c + 1) * batch, total)) i));
	END LOOP;
END $$;

-- K4 figures for [t0, t1]: jobs finished and admitted, and Jain's fairness
-- index over the `keys` keys' completions in each whole second from t0,
-- (sum x)^2 / (n sum x^2), averaged over those seconds; and the same for
-- the most even split of each second's completions (x = floor or ceil of
-- total / n): the best that whole jobs allow when a second's completions
-- are not a multiple of n.
CREATE FUNCTION bench.tenants_result(t0 timestamptz, t1 timestamptz, keys integer,
	OUT done bigint, OUT admitted bigint, OUT jain double precision,
	OUT jain_even double precision, OUT seconds integer)
LANGUAGE sql AS $$
	WITH a AS (SELECT a.concurrency_key AS k, a.reserved_at, a.finished_at
				 FROM throttle_jobs.job_archive a JOIN throttle_jobs.queue q ON q.id = a.queue_id
				WHERE q.name = 'tenants' AND a.finished_at >= t0 AND a.finished_at <= t1),
	per_key AS (SELECT floor(extract(epoch FROM a.finished_at - t0))::integer AS sec, a.k,
					   count(*)::double precision AS x
				  FROM a WHERE a.finished_at < t0 + floor(extract(epoch FROM t1 - t0)) * interval '1 s'
				 GROUP BY 1, 2),
	per_sec AS (SELECT sec, sum(x) AS total, sum(x * x) AS squares FROM per_key GROUP BY sec),
	even AS (SELECT sec, total, squares, floor(total / keys) AS q,
					total - floor(total / keys) * keys AS r FROM per_sec)
	SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM a WHERE a.reserved_at >= t0),
		   avg(total * total / (keys * squares)),
		   avg(total * total / (keys * (r * (q + 1) ^ 2 + (keys - r) * q ^ 2))),
		   count(*)::integer
	  FROM even
$$;

-- The cumulative row counts of throttle_jobs.job: "ins upd hot_upd del".
-- The caller makes sure every backend that wrote has flushed its pending
-- statistics (test/bench/run waits until they have exited); clearing the
-- snapshot makes this read shared memory now, not a copy cached earlier in
-- the transaction (stats_fetch_consistency = cache).
CREATE FUNCTION bench.job_writes() RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_stat_clear_snapshot();
	RETURN (SELECT concat_ws(' ', n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del)
			  FROM pg_stat_user_tables WHERE relid = 'throttle_jobs.job'::regclass);
END $$;
