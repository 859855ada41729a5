-- throttle_jobs 0.1.0: install script.
--
-- Tables are owned by the extension owner and reachable only through the
-- functions and views below; three capability roles receive the grants.
\echo Use "CREATE EXTENSION throttle_jobs" to load this file. \quit

-- Refuse a schema that another role prepared for us: its owner could plant
-- objects that our SECURITY DEFINER functions would then trust.
DO $tj$
BEGIN
	-- (CREATE EXTENSION makes the schema itself and DROP EXTENSION leaves
	-- it, so an empty one owned by us or another superuser is accepted.)
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n
			   JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
			   WHERE n.nspname = 'throttle_jobs'
				 AND r.rolname <> pg_catalog.current_user() AND NOT r.rolsuper) THEN
		RAISE EXCEPTION 'schema "throttle_jobs" is owned by another role'
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Drop the schema, or create the extension as its owner.';
	END IF;
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c
			   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			   WHERE n.nspname = 'throttle_jobs') THEN
		RAISE EXCEPTION 'schema "throttle_jobs" already holds objects'
			USING ERRCODE = 'duplicate_schema',
				  HINT = 'Create the extension into a new, empty schema.';
	END IF;
END
$tj$;

-- Capability roles are cluster-wide and may outlive the extension, so they
-- are created only where missing (as PgQ does).
DO $tj$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'throttle_jobs_producer') THEN
		CREATE ROLE throttle_jobs_producer NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'throttle_jobs_worker') THEN
		CREATE ROLE throttle_jobs_worker NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'throttle_jobs_admin') THEN
		CREATE ROLE throttle_jobs_admin NOLOGIN;
	END IF;
	IF NOT pg_catalog.pg_has_role('throttle_jobs_admin', 'throttle_jobs_producer', 'MEMBER') THEN
		GRANT throttle_jobs_producer TO throttle_jobs_admin;
	END IF;
	IF NOT pg_catalog.pg_has_role('throttle_jobs_admin', 'throttle_jobs_worker', 'MEMBER') THEN
		GRANT throttle_jobs_worker TO throttle_jobs_admin;
	END IF;
END
$tj$;

REVOKE ALL ON SCHEMA throttle_jobs FROM PUBLIC;
GRANT USAGE ON SCHEMA throttle_jobs TO throttle_jobs_producer, throttle_jobs_worker, throttle_jobs_admin;

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

CREATE TABLE throttle_jobs.queue (
	id					integer NOT NULL CONSTRAINT queue_pkey PRIMARY KEY,
	name				text NOT NULL CONSTRAINT queue_name_key UNIQUE
		CONSTRAINT queue_name_check CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,62}$'),
	max_size			bigint CONSTRAINT queue_max_size_check CHECK (max_size > 0),
	on_full				text NOT NULL DEFAULT 'error'
		CONSTRAINT queue_on_full_check CHECK (on_full IN ('error', 'drop')),
	max_attempts		integer NOT NULL DEFAULT 5
		CONSTRAINT queue_max_attempts_check CHECK (max_attempts >= 1),
	backoff_base		interval NOT NULL DEFAULT '30 seconds',
	backoff_factor		double precision NOT NULL DEFAULT 4
		CONSTRAINT queue_backoff_factor_check CHECK (backoff_factor >= 1 AND backoff_factor <= 1000),
	backoff_max			interval NOT NULL DEFAULT '1 hour',
	backoff_jitter		double precision NOT NULL DEFAULT 0.1
		CONSTRAINT queue_backoff_jitter_check CHECK (backoff_jitter >= 0 AND backoff_jitter <= 1),
	lease				interval NOT NULL DEFAULT '5 minutes',
	retain_completed	interval NOT NULL DEFAULT '1 day',
	retain_dead			interval NOT NULL DEFAULT '14 days',
	handler				regprocedure,
	fairness			text NOT NULL DEFAULT 'fifo'
		CONSTRAINT queue_fairness_check CHECK (fairness IN ('fifo', 'round_robin')),
	paused				boolean NOT NULL DEFAULT false,
	owner				regrole NOT NULL,
	created_at			timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE SEQUENCE throttle_jobs.queue_id_seq AS integer OWNED BY throttle_jobs.queue.id;
ALTER TABLE throttle_jobs.queue ALTER COLUMN id SET DEFAULT pg_catalog.nextval('throttle_jobs.queue_id_seq');
COMMENT ON TABLE throttle_jobs.queue IS 'Queue definitions: retry policy, lease, retention, backpressure, handler.';

-- The hot table holds live jobs only (available or running).  Reservation
-- walks job_ready_idx; lease renewals (heartbeat) change no indexed column,
-- so with the free space left by fillfactor they stay HOT.  Every job is
-- inserted, updated and deleted within minutes, so autovacuum visits the
-- table after 1,000 dead rows plus 1% (not the default 20%), unthrottled
-- (the table is small: live jobs only), and the dead index entries that each
-- reservation would otherwise step over are cleared early.
CREATE TABLE throttle_jobs.job (
	id					bigint NOT NULL,
	queue_id			integer NOT NULL,
	state				text NOT NULL DEFAULT 'available'
		CONSTRAINT job_state_check CHECK (state IN ('available', 'running', 'throttled')),
	priority			smallint NOT NULL DEFAULT 0,
	run_at				timestamptz NOT NULL,
	attempt				integer NOT NULL DEFAULT 0,
	max_attempts		integer,		-- NULL: the queue's max_attempts
	cost				integer NOT NULL DEFAULT 1,
	enqueued_at			timestamptz NOT NULL,
	lease_token			uuid,
	lease_until			timestamptz,
	reserved_at			timestamptz,
	worker				text,
	concurrency_key		text,
	rate_limit_key		text,
	unique_key			text,
	rr_rank				bigint NOT NULL DEFAULT 0,	-- round_robin queues: the job's turn within its key
	blocked_key			text,			-- throttled: the key holding it back
	blocked_until		timestamptz,	-- throttled by a rate: when it may pass
	errors				jsonb NOT NULL DEFAULT '[]',
	payload				jsonb NOT NULL,
	CONSTRAINT job_pkey PRIMARY KEY (id)
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
		autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0.02);
COMMENT ON TABLE throttle_jobs.job IS 'Live jobs (available, scheduled, throttled or running); finished jobs move to job_archive or job_dead.';

CREATE SEQUENCE throttle_jobs.job_id_seq AS bigint;
ALTER SEQUENCE throttle_jobs.job_id_seq OWNED BY throttle_jobs.job.id;
ALTER TABLE throttle_jobs.job ALTER COLUMN id SET DEFAULT pg_catalog.nextval('throttle_jobs.job_id_seq');

-- Reservation order: priority desc, rr_rank (0 in fifo queues), run_at, id;
-- only ready rows are indexed.
CREATE INDEX job_ready_idx ON throttle_jobs.job (queue_id, priority DESC, rr_rank, run_at, id)
	WHERE state = 'available';
-- round_robin queues: the last turn taken by each concurrency key.
CREATE INDEX job_rr_idx ON throttle_jobs.job (queue_id, concurrency_key, rr_rank)
	WHERE rr_rank > 0;
-- Lease expiry scans the running jobs (few: at most one per worker slot).
CREATE INDEX job_running_idx ON throttle_jobs.job (queue_id) WHERE state = 'running';
-- A concurrency cap counts the running jobs of its key.
CREATE INDEX job_running_key_idx ON throttle_jobs.job (concurrency_key)
	WHERE state = 'running' AND concurrency_key IS NOT NULL;
-- Throttled jobs leave job_ready_idx, so reservation never walks them; they
-- come back best first when their key frees a slot or their time comes.
CREATE INDEX job_throttled_idx ON throttle_jobs.job (blocked_key, priority DESC, run_at, id)
	WHERE state = 'throttled';
CREATE INDEX job_throttled_due_idx ON throttle_jobs.job (queue_id, blocked_until)
	WHERE state = 'throttled' AND blocked_until IS NOT NULL;
-- When a key turns out to be blocked, reservation parks all its ready jobs
-- at once through these.
CREATE INDEX job_ready_ckey_idx ON throttle_jobs.job (concurrency_key)
	WHERE state = 'available' AND concurrency_key IS NOT NULL;
CREATE INDEX job_ready_rkey_idx ON throttle_jobs.job (rate_limit_key)
	WHERE state = 'available' AND rate_limit_key IS NOT NULL;
-- At most one live job per (queue, unique_key).
CREATE UNIQUE INDEX job_unique_key_idx ON throttle_jobs.job (queue_id, unique_key)
	WHERE unique_key IS NOT NULL;

-- Finished jobs (completed, cancelled), partitioned by day of finish so that
-- retention drops whole partitions; maintain() creates them ahead of time and
-- the default partition catches anything outside the known range.
CREATE TABLE throttle_jobs.job_archive (
	id					bigint NOT NULL,
	queue_id			integer NOT NULL,
	state				text NOT NULL
		CONSTRAINT job_archive_state_check CHECK (state IN ('completed', 'cancelled')),
	priority			smallint NOT NULL,
	run_at				timestamptz NOT NULL,
	attempt				integer NOT NULL,
	max_attempts		integer,
	cost				integer NOT NULL,
	enqueued_at			timestamptz NOT NULL,
	reserved_at			timestamptz,
	finished_at			timestamptz NOT NULL,
	worker				text,
	concurrency_key		text,
	rate_limit_key		text,
	unique_key			text,
	errors				jsonb NOT NULL,
	payload				jsonb NOT NULL,
	result				jsonb
) PARTITION BY RANGE (finished_at);
CREATE TABLE throttle_jobs.job_archive_default PARTITION OF throttle_jobs.job_archive DEFAULT;
COMMENT ON TABLE throttle_jobs.job_archive_default IS 'Archive rows outside the day partitions that maintain() creates.';
CREATE INDEX job_archive_queue_idx ON throttle_jobs.job_archive (queue_id, finished_at);
CREATE INDEX job_archive_id_idx ON throttle_jobs.job_archive (id);
COMMENT ON TABLE throttle_jobs.job_archive IS 'Completed and cancelled jobs, kept for the queue''s retain_completed.';

-- Dead letters: jobs whose attempts ran out or that failed for good.
CREATE TABLE throttle_jobs.job_dead (
	id					bigint NOT NULL CONSTRAINT job_dead_pkey PRIMARY KEY,
	queue_id			integer NOT NULL,
	priority			smallint NOT NULL,
	run_at				timestamptz NOT NULL,
	attempt				integer NOT NULL,
	max_attempts		integer,
	cost				integer NOT NULL,
	enqueued_at			timestamptz NOT NULL,
	died_at				timestamptz NOT NULL,
	reason				text NOT NULL,
	worker				text,
	concurrency_key		text,
	rate_limit_key		text,
	unique_key			text,
	errors				jsonb NOT NULL,
	payload				jsonb NOT NULL
);
CREATE INDEX job_dead_queue_idx ON throttle_jobs.job_dead (queue_id, died_at);
COMMENT ON TABLE throttle_jobs.job_dead IS 'Dead letters: jobs that failed for good, with their error history.';

-- pg_dump keeps user data: queue definitions, live jobs, dead letters and the
-- archive (its partitions made by maintain() are ordinary tables and dumped as such).
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.queue', '');
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.job', '');
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.job_dead', '');
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.job_archive_default', '');
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.queue_id_seq', '');

REVOKE ALL ON ALL TABLES IN SCHEMA throttle_jobs FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA throttle_jobs FROM PUBLIC;

-- Per-key limits.  A key ending in "*" is a template: every concrete key
-- that starts with what precedes the "*" gets a limit of its own of that
-- size.  The most specific limit governs a key: its own, else the longest
-- matching template.
CREATE TABLE throttle_jobs.key_limit (
	key					text NOT NULL CONSTRAINT key_limit_pkey PRIMARY KEY,
	max_running			integer CONSTRAINT key_limit_max_running_check CHECK (max_running >= 1),
	max_per_period		integer CONSTRAINT key_limit_max_per_period_check CHECK (max_per_period >= 1),
	period				interval,
	algorithm			text CONSTRAINT key_limit_algorithm_check
		CHECK (algorithm IN ('token_bucket', 'sliding_window', 'fixed_window')),
	burst				integer CONSTRAINT key_limit_burst_check CHECK (burst >= 1),
	adaptive			boolean NOT NULL DEFAULT false,
	error_threshold		double precision NOT NULL DEFAULT 0.5
		CONSTRAINT key_limit_error_threshold_check CHECK (error_threshold >= 0 AND error_threshold < 1),
	min_factor			double precision NOT NULL DEFAULT 0.1
		CONSTRAINT key_limit_min_factor_check CHECK (min_factor > 0 AND min_factor <= 1),
	updated_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT key_limit_rate_check CHECK ((max_per_period IS NULL) = (period IS NULL)
		AND (max_per_period IS NULL) = (algorithm IS NULL)),
	CONSTRAINT key_limit_some_check CHECK (max_running IS NOT NULL OR max_per_period IS NOT NULL)
);
COMMENT ON TABLE throttle_jobs.key_limit IS 'Concurrency caps and rate limits per key or key template.';

-- Rate limiter state per concrete key, read and written only under the
-- key's mutex (see src/limits.c).  Not dumped: it is recomputed from scratch.
CREATE TABLE throttle_jobs.key_rate_state (
	key					text NOT NULL CONSTRAINT key_rate_state_pkey PRIMARY KEY,
	tokens				double precision NOT NULL,
	stamp				timestamptz NOT NULL,
	log_at				timestamptz[] NOT NULL,
	log_cost			integer[] NOT NULL,
	next_at				timestamptz,
	factor				double precision NOT NULL DEFAULT 1,	-- adaptive: share of the rate in force
	evaluated_at		timestamptz		-- adaptive: when the factor was last set
);

-- When each queue last warned that it dropped jobs (on_full => 'drop'); one
-- row per queue, claimed with SKIP LOCKED by the session that warns.
CREATE TABLE throttle_jobs.queue_warning (
	queue_id			integer NOT NULL CONSTRAINT queue_warning_pkey PRIMARY KEY,
	warned_at			timestamptz NOT NULL DEFAULT '-infinity'
);
COMMENT ON TABLE throttle_jobs.queue_warning IS 'When each queue last logged that it dropped jobs.';
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.queue_warning', '');
REVOKE ALL ON throttle_jobs.queue_warning FROM PUBLIC;

-- Keys whose freed slot a completion could not hand on because a
-- reservation was admitting for the key at that moment (and may have
-- parked jobs the completion could not see yet): the next reservation or
-- maintain() hands it on.  Unlogged: maintain() reconciles after a crash.
CREATE UNLOGGED TABLE throttle_jobs.key_recheck (
	key					text NOT NULL
);
COMMENT ON TABLE throttle_jobs.key_recheck IS 'Capped keys to look at again for free slots and parked jobs.';
REVOKE ALL ON throttle_jobs.key_recheck FROM PUBLIC;

-- Adaptive rate limits: outcomes (success or failure) of the jobs of each
-- adaptive rate key since its last evaluation.  Insert-only on the hot
-- path; the evaluation deletes what it has counted.
CREATE TABLE throttle_jobs.key_outcome (
	key					text NOT NULL,
	at					timestamptz NOT NULL,
	failed				boolean NOT NULL
);
CREATE INDEX key_outcome_key_idx ON throttle_jobs.key_outcome (key, at);
COMMENT ON TABLE throttle_jobs.key_outcome IS 'Recent job outcomes per adaptive rate key, for the next evaluation.';
REVOKE ALL ON throttle_jobs.key_outcome FROM PUBLIC;
COMMENT ON TABLE throttle_jobs.key_rate_state IS 'Rate limiter state per concrete key: bucket level, window count or admission log.';
SELECT pg_catalog.pg_extension_config_dump('throttle_jobs.key_limit', '');
REVOKE ALL ON throttle_jobs.key_limit, throttle_jobs.key_rate_state FROM PUBLIC;

CREATE TYPE throttle_jobs.reserved_job AS (
	id					bigint,
	queue				text,
	payload				jsonb,
	attempt				integer,
	max_attempts		integer,
	lease_token			uuid,
	lease_until			timestamptz,
	priority			integer,
	concurrency_key		text,
	rate_limit_key		text,
	enqueued_at			timestamptz
);
COMMENT ON TYPE throttle_jobs.reserved_job IS 'A job handed to a worker by reserve(), with the lease token that fences it.';

------------------------------------------------------------------------------
-- Internal helpers (not granted to anyone)
------------------------------------------------------------------------------

-- The interval checks of the C functions, for the SQL ones.
CREATE FUNCTION throttle_jobs._check_interval(value interval, what text, allow_zero boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_check_interval'
LANGUAGE C IMMUTABLE STRICT;
REVOKE ALL ON FUNCTION throttle_jobs._check_interval(interval, text, boolean) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._check_interval(interval, text, boolean) IS 'Internal: refuses a negative (or zero) interval, or one over 100 years.';

-- Waits for every transaction that enqueued into the queue to end, and keeps
-- new enqueues out until the caller's transaction ends.
CREATE FUNCTION throttle_jobs._lock_queue(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_lock_queue'
LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION throttle_jobs._lock_queue(text) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._lock_queue(text) IS 'Internal: takes a queue''s lock in exclusive mode (drop_queue).';

-- Validates queue options; raises a clear error for the first bad one.
-- When creating, only max_size may be NULL.
CREATE FUNCTION throttle_jobs._check_queue_options(
	creating boolean, name text, max_size bigint, on_full text, max_attempts integer,
	backoff_base interval, backoff_factor double precision, backoff_max interval,
	backoff_jitter double precision, lease interval, retain_completed interval,
	retain_dead interval, fairness text)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_check_queue_options'
LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION throttle_jobs._check_queue_options(boolean, text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, text) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._check_queue_options(boolean, text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, text) IS 'Internal: validates queue options.';

-- Returns the id of a queue, or raises undefined_object.
CREATE FUNCTION throttle_jobs._queue_id(queue text)
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	qid integer;
BEGIN
	IF queue IS NULL THEN
		RAISE EXCEPTION 'queue name must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT q.id INTO qid FROM throttle_jobs.queue q WHERE q.name = queue;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'queue "%" does not exist', queue
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with throttle_jobs.create_queue().';
	END IF;
	RETURN qid;
END
$$;
REVOKE ALL ON FUNCTION throttle_jobs._queue_id(text) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._queue_id(text) IS 'Internal: the id of a queue by name, or an error.';

-- Checks a handler: a function or procedure taking one jsonb argument that
-- the queue's owner may execute (handlers run as the owner).
CREATE FUNCTION throttle_jobs._check_handler(handler regprocedure, owner oid)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF handler IS NULL THEN
		RETURN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
				   WHERE p.oid = handler AND p.pronargs = 1
					 AND p.proargtypes[0] = 'pg_catalog.jsonb'::pg_catalog.regtype
					 AND p.prokind IN ('f', 'p')) THEN
		RAISE EXCEPTION 'handler % must take exactly one jsonb argument', handler
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Declare it as FUNCTION name(payload jsonb) or PROCEDURE name(payload jsonb).';
	END IF;
	IF NOT pg_catalog.has_function_privilege(owner, handler, 'EXECUTE') THEN
		RAISE EXCEPTION 'role "%" may not execute handler %', owner::pg_catalog.regrole, handler
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Handlers run as the queue''s owner, who needs EXECUTE on them.';
	END IF;
END
$$;
REVOKE ALL ON FUNCTION throttle_jobs._check_handler(regprocedure, oid) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._check_handler(regprocedure, oid) IS 'Internal: checks a queue handler''s signature and the owner''s right to run it.';

-- Archive upkeep for maintain(): day partitions (UTC) are created two days
-- ahead and dropped whole once every row in them is past the longest
-- retain_completed of any queue.  Rows of a queue with a shorter retention
-- are deleted one by one once they are a day past it (until then the
-- archived_jobs view hides them), and so are rows that landed in the
-- default partition.  DDL waits at most lock_timeout for the archive's lock
-- and is skipped (and retried next pass) rather than queue completions
-- behind it; an advisory lock keeps two passes from doing it at once.
CREATE FUNCTION throttle_jobs._maintain_archive(now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $$
DECLARE
	day date;
	part text;
	lo timestamptz;
	hi timestamptz;
	longest interval;
	created integer := 0;
	dropped integer := 0;
	skipped integer := 0;
	deleted bigint := 0;
BEGIN
	IF NOT pg_catalog.pg_try_advisory_xact_lock(
			pg_catalog.hashtext('throttle_jobs._maintain_archive')) THEN
		RETURN pg_catalog.jsonb_build_object('busy', true);
	END IF;

	FOR i IN 0..2 LOOP
		day := (now AT TIME ZONE 'UTC')::date + i;
		part := 'job_archive_p' || pg_catalog.to_char(day, 'YYYYMMDD');
		lo := day::timestamp AT TIME ZONE 'UTC';
		hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
		CONTINUE WHEN pg_catalog.to_regclass('throttle_jobs.' || part) IS NOT NULL;
		-- rows of that day already in the default partition would block it
		CONTINUE WHEN EXISTS (SELECT 1 FROM throttle_jobs.job_archive_default a
							  WHERE a.finished_at >= lo AND a.finished_at < hi);
		BEGIN
			EXECUTE pg_catalog.format(
				'CREATE TABLE throttle_jobs.%I PARTITION OF throttle_jobs.job_archive FOR VALUES FROM (%L) TO (%L)',
				part, lo, hi);
			EXECUTE pg_catalog.format('REVOKE ALL ON throttle_jobs.%I FROM PUBLIC', part);
			EXECUTE pg_catalog.format('COMMENT ON TABLE throttle_jobs.%I IS %L', part,
				'Archive rows finished on ' || day || ' (UTC); dropped whole by maintain().');
			created := created + 1;
		EXCEPTION WHEN lock_not_available OR check_violation THEN
			-- busy, or rows of that day reached the default partition meanwhile
			skipped := skipped + 1;
		END;
	END LOOP;

	SELECT pg_catalog.max(q.retain_completed) INTO longest FROM throttle_jobs.queue q;
	FOR part, hi IN
		SELECT c.relname,
			   (pg_catalog.to_date(pg_catalog.substr(c.relname, 14), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
		FROM pg_catalog.pg_inherits i
		JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'throttle_jobs.job_archive'::pg_catalog.regclass
		  AND c.relname OPERATOR(pg_catalog.~) '^job_archive_p[0-9]{8}$'
		ORDER BY c.relname
	LOOP
		CONTINUE WHEN hi > now - coalesce(longest, '0'::interval);
		BEGIN
			EXECUTE pg_catalog.format('DROP TABLE throttle_jobs.%I', part);
			dropped := dropped + 1;
		EXCEPTION WHEN lock_not_available THEN
			skipped := skipped + 1;
		END;
	END LOOP;

	DELETE FROM throttle_jobs.job_archive a
	USING throttle_jobs.queue q
	WHERE q.id = a.queue_id
	  AND a.finished_at < now - q.retain_completed - '1 day'::interval;
	GET DIAGNOSTICS deleted = ROW_COUNT;

	RETURN pg_catalog.jsonb_build_object('partitions_created', created,
		'partitions_dropped', dropped, 'partitions_skipped', skipped,
		'rows_deleted', deleted);
END
$$;
REVOKE ALL ON FUNCTION throttle_jobs._maintain_archive(timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._maintain_archive(timestamptz) IS 'Internal: archive partitions and retention, for maintain().';

------------------------------------------------------------------------------
-- Queues
------------------------------------------------------------------------------

-- create_queue and alter_queue are not SECURITY DEFINER: the C wrapper
-- reads the role in effect at the call (the queue's owner-to-be, or the role
-- asking for a change) and hands it to the internal function below, which
-- only the extension owner can call by name.
CREATE FUNCTION throttle_jobs.create_queue(
	name				text,
	max_size			bigint DEFAULT NULL,
	on_full				text DEFAULT 'error',
	max_attempts		integer DEFAULT 5,
	backoff_base		interval DEFAULT '30 seconds',
	backoff_factor		double precision DEFAULT 4,
	backoff_max			interval DEFAULT '1 hour',
	backoff_jitter		double precision DEFAULT 0.1,
	lease				interval DEFAULT '5 minutes',
	retain_completed	interval DEFAULT '1 day',
	retain_dead			interval DEFAULT '14 days',
	handler				regprocedure DEFAULT NULL,
	fairness			text DEFAULT 'fifo')
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_create_queue'
LANGUAGE C VOLATILE;

CREATE FUNCTION throttle_jobs._create_queue(
	caller				oid,
	name				text,
	max_size			bigint,
	on_full				text,
	max_attempts		integer,
	backoff_base		interval,
	backoff_factor		double precision,
	backoff_max			interval,
	backoff_jitter		double precision,
	lease				interval,
	retain_completed	interval,
	retain_dead			interval,
	handler				regprocedure,
	fairness			text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM throttle_jobs._check_queue_options(true, name, max_size, on_full, max_attempts,
		backoff_base, backoff_factor, backoff_max, backoff_jitter, lease,
		retain_completed, retain_dead, fairness);
	PERFORM throttle_jobs._check_handler(handler, caller);
	IF EXISTS (SELECT 1 FROM throttle_jobs.queue q WHERE q.name = _create_queue.name) THEN
		RAISE EXCEPTION 'queue "%" already exists', name
			USING ERRCODE = 'duplicate_object';
	END IF;
	INSERT INTO throttle_jobs.queue AS q (name, max_size, on_full, max_attempts,
		backoff_base, backoff_factor, backoff_max, backoff_jitter, lease,
		retain_completed, retain_dead, handler, fairness, owner)
	VALUES (name, max_size, on_full, max_attempts, backoff_base, backoff_factor,
		backoff_max, backoff_jitter, lease, retain_completed, retain_dead,
		handler, fairness, caller::pg_catalog.regrole);
	INSERT INTO throttle_jobs.queue_warning (queue_id)
	SELECT q.id FROM throttle_jobs.queue q WHERE q.name = _create_queue.name;
END
$$;

CREATE FUNCTION throttle_jobs.alter_queue(
	name				text,
	max_size			bigint DEFAULT NULL,
	on_full				text DEFAULT NULL,
	max_attempts		integer DEFAULT NULL,
	backoff_base		interval DEFAULT NULL,
	backoff_factor		double precision DEFAULT NULL,
	backoff_max			interval DEFAULT NULL,
	backoff_jitter		double precision DEFAULT NULL,
	lease				interval DEFAULT NULL,
	retain_completed	interval DEFAULT NULL,
	retain_dead			interval DEFAULT NULL,
	handler				regprocedure DEFAULT NULL,
	fairness			text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_alter_queue'
LANGUAGE C VOLATILE;

CREATE FUNCTION throttle_jobs._alter_queue(
	caller				oid,
	name				text,
	max_size			bigint,
	on_full				text,
	max_attempts		integer,
	backoff_base		interval,
	backoff_factor		double precision,
	backoff_max			interval,
	backoff_jitter		double precision,
	lease				interval,
	retain_completed	interval,
	retain_dead			interval,
	handler				regprocedure,
	fairness			text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	qid integer := throttle_jobs._queue_id(name);
	queue_owner oid;
BEGIN
	PERFORM throttle_jobs._check_queue_options(false, name, max_size, on_full, max_attempts,
		backoff_base, backoff_factor, backoff_max, backoff_jitter, lease,
		retain_completed, retain_dead, fairness);
	SELECT q.owner INTO queue_owner FROM throttle_jobs.queue q WHERE q.id = qid FOR UPDATE;
	IF handler IS NOT NULL THEN
		-- the handler runs as the owner: only the owner may choose it
		IF NOT pg_catalog.pg_has_role(caller, queue_owner, 'USAGE') THEN
			RAISE EXCEPTION 'only the owner of queue "%" may set its handler', name
				USING ERRCODE = 'insufficient_privilege',
					  HINT = pg_catalog.format('The queue is owned by %s; handlers run as that role.',
											   queue_owner::pg_catalog.regrole);
		END IF;
		PERFORM throttle_jobs._check_handler(handler, queue_owner);
	END IF;
	UPDATE throttle_jobs.queue q SET
		max_size = coalesce(_alter_queue.max_size, q.max_size),
		on_full = coalesce(_alter_queue.on_full, q.on_full),
		max_attempts = coalesce(_alter_queue.max_attempts, q.max_attempts),
		backoff_base = coalesce(_alter_queue.backoff_base, q.backoff_base),
		backoff_factor = coalesce(_alter_queue.backoff_factor, q.backoff_factor),
		backoff_max = coalesce(_alter_queue.backoff_max, q.backoff_max),
		backoff_jitter = coalesce(_alter_queue.backoff_jitter, q.backoff_jitter),
		lease = coalesce(_alter_queue.lease, q.lease),
		retain_completed = coalesce(_alter_queue.retain_completed, q.retain_completed),
		retain_dead = coalesce(_alter_queue.retain_dead, q.retain_dead),
		handler = coalesce(_alter_queue.handler, q.handler),
		fairness = coalesce(_alter_queue.fairness, q.fairness)
	WHERE q.id = qid;
END
$$;

REVOKE ALL ON FUNCTION throttle_jobs._create_queue(oid, text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text),
				   throttle_jobs._alter_queue(oid, text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text)
	FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._create_queue(oid, text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text) IS 'Internal: create_queue for a given owner.';
COMMENT ON FUNCTION throttle_jobs._alter_queue(oid, text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text) IS 'Internal: alter_queue on behalf of a given role.';

CREATE FUNCTION throttle_jobs.drop_queue(name text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	qid integer := throttle_jobs._queue_id(name);
BEGIN
	IF force IS NULL THEN
		RAISE EXCEPTION 'force must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- Enqueues hold this lock in shared mode from before they look the queue
	-- up until they commit: once we have it, no job can still arrive.
	PERFORM throttle_jobs._lock_queue(name);
	IF NOT force AND EXISTS (SELECT 1 FROM throttle_jobs.job j WHERE j.queue_id = qid) THEN
		RAISE EXCEPTION 'queue "%" still holds live jobs', name
			USING ERRCODE = 'object_in_use',
				  HINT = 'Wait for them to finish, or call drop_queue(name, force => true) to delete them.';
	END IF;
	DELETE FROM throttle_jobs.job j WHERE j.queue_id = qid;
	DELETE FROM throttle_jobs.job_dead d WHERE d.queue_id = qid;
	DELETE FROM throttle_jobs.job_archive a WHERE a.queue_id = qid;
	DELETE FROM throttle_jobs.queue_warning w WHERE w.queue_id = qid;
	DELETE FROM throttle_jobs.stats_minute m WHERE m.queue_id = qid;
	DELETE FROM throttle_jobs.stats_snapshot s WHERE s.queue_id = qid;
	PERFORM throttle_jobs._stats_note(qid, 'queue_dropped', 0);
	DELETE FROM throttle_jobs.queue q WHERE q.id = qid;
END
$$;

CREATE FUNCTION throttle_jobs.pause_queue(name text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	UPDATE throttle_jobs.queue SET paused = true WHERE id = throttle_jobs._queue_id(pause_queue.name);
END;

CREATE FUNCTION throttle_jobs.resume_queue(name text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	UPDATE throttle_jobs.queue SET paused = false WHERE id = throttle_jobs._queue_id(resume_queue.name);
END;

------------------------------------------------------------------------------
-- Jobs (C)
------------------------------------------------------------------------------

CREATE FUNCTION throttle_jobs.enqueue(
	queue				text,
	payload				jsonb DEFAULT '{}',
	run_at				timestamptz DEFAULT NULL,
	priority			integer DEFAULT 0,
	max_attempts		integer DEFAULT NULL,
	concurrency_key		text DEFAULT NULL,
	rate_limit_key		text DEFAULT NULL,
	unique_key			text DEFAULT NULL,
	cost				integer DEFAULT 1)
RETURNS bigint
AS 'MODULE_PATHNAME', 'throttle_jobs_enqueue'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION throttle_jobs.enqueue_batch(queue text, jobs jsonb)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'throttle_jobs_enqueue_batch'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION throttle_jobs.reserve(
	queue				text,
	worker				text,
	max_jobs			integer DEFAULT 1,
	lease				interval DEFAULT NULL)
RETURNS SETOF throttle_jobs.reserved_job
AS 'MODULE_PATHNAME', 'throttle_jobs_reserve'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION throttle_jobs.complete(id bigint, lease_token uuid, result jsonb DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_complete'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- A worker's loop step: completes the jobs it finished (as complete() with
-- no result) and reserves its next ones, in one transaction and one commit.
CREATE FUNCTION throttle_jobs.complete_and_reserve(
	queue				text,
	worker				text,
	done				bigint[],
	lease_tokens		uuid[],
	max_jobs			integer DEFAULT 1,
	lease				interval DEFAULT NULL)
RETURNS SETOF throttle_jobs.reserved_job
AS 'MODULE_PATHNAME', 'throttle_jobs_complete_and_reserve'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION throttle_jobs.fail(
	id					bigint,
	lease_token			uuid,
	error				text,
	retry_in			interval DEFAULT NULL,
	retryable			boolean DEFAULT true)
RETURNS text
AS 'MODULE_PATHNAME', 'throttle_jobs_fail'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION throttle_jobs.snooze(id bigint, lease_token uuid, delay interval)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_snooze'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION throttle_jobs.heartbeat(id bigint, lease_token uuid, extend interval DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'throttle_jobs_heartbeat'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION throttle_jobs.maintain()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'throttle_jobs_maintain'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Runs handler jobs in the calling session, each in a subtransaction of the
-- caller's transaction, as the queue's owner: what the executors do, for
-- servers where the library cannot be preloaded (pg_cron calls it).
CREATE FUNCTION throttle_jobs.run_jobs(
	queue				text DEFAULT NULL,
	max_jobs			integer DEFAULT 100,
	max_time			interval DEFAULT '10 seconds')
RETURNS integer
AS 'MODULE_PATHNAME', 'throttle_jobs_run_jobs'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Pure: the retry delay after a failed attempt, for a given random draw in [0, 1).
CREATE FUNCTION throttle_jobs.backoff_delay(
	attempt				integer,
	base				interval DEFAULT '30 seconds',
	factor				double precision DEFAULT 4,
	max					interval DEFAULT '1 hour',
	jitter				double precision DEFAULT 0.1,
	draw				double precision DEFAULT 0.5)
RETURNS interval
AS 'MODULE_PATHNAME', 'throttle_jobs_backoff_delay'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

------------------------------------------------------------------------------
-- Jobs (SQL): administrative transitions, not on the hot path
------------------------------------------------------------------------------

CREATE FUNCTION throttle_jobs.cancel(id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c_queue integer;
	c_run_at timestamptz;
	c_attempt integer;
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION 'job id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- Only a job that is not running can be cancelled; a running job's worker
	-- holds its row lock only briefly, so skip rather than wait.
	WITH c AS (
		DELETE FROM throttle_jobs.job j
		WHERE j.id = cancel.id AND j.state IN ('available', 'throttled')
		RETURNING j.*
	)
	INSERT INTO throttle_jobs.job_archive (id, queue_id, state, priority, run_at, attempt,
		max_attempts, cost, enqueued_at, reserved_at, finished_at, worker,
		concurrency_key, rate_limit_key, unique_key, errors, payload, result)
	SELECT c.id, c.queue_id, 'cancelled', c.priority, c.run_at, c.attempt,
		c.max_attempts, c.cost, c.enqueued_at, c.reserved_at, pg_catalog.now(), c.worker,
		c.concurrency_key, c.rate_limit_key, c.unique_key, c.errors, c.payload, NULL
	FROM c
	RETURNING queue_id, run_at, attempt INTO c_queue, c_run_at, c_attempt;
	IF c_queue IS NOT NULL THEN
		PERFORM throttle_jobs._stats_note(c_queue, 'cancelled', 1, c_run_at, c_attempt);
	END IF;
	RETURN c_queue IS NOT NULL;
END
$$;

CREATE FUNCTION throttle_jobs.retry_dead(id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	qid integer;
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION 'job id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	WITH d AS (
		DELETE FROM throttle_jobs.job_dead d WHERE d.id = retry_dead.id RETURNING d.*
	)
	INSERT INTO throttle_jobs.job (id, queue_id, state, priority, run_at, attempt,
		max_attempts, cost, enqueued_at, concurrency_key, rate_limit_key,
		unique_key, errors, payload)
	SELECT d.id, d.queue_id, 'available', d.priority, pg_catalog.now(), 0,
		d.max_attempts, d.cost, d.enqueued_at, d.concurrency_key, d.rate_limit_key,
		d.unique_key, d.errors, d.payload
	FROM d
	RETURNING queue_id INTO qid;
	IF qid IS NOT NULL THEN
		PERFORM throttle_jobs._stats_note(qid, 'dead_retried', 1);
	END IF;
	RETURN qid IS NOT NULL;
EXCEPTION WHEN unique_violation THEN
	RAISE EXCEPTION 'dead job % has a unique_key that a live job of its queue holds', id
		USING ERRCODE = 'unique_violation',
			  HINT = 'Wait for the live job to finish, or purge the dead one.';
END
$$;

CREATE FUNCTION throttle_jobs.retry_dead(
	queue				text,
	died_after			timestamptz DEFAULT NULL,
	max_jobs			integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	qid integer := throttle_jobs._queue_id(queue);
	n bigint;
BEGIN
	IF max_jobs IS NOT NULL AND max_jobs < 1 THEN
		RAISE EXCEPTION 'max_jobs must be at least 1, not %', max_jobs
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- Dead jobs whose unique_key is live again stay dead.
	WITH pick AS (
		SELECT d.id FROM throttle_jobs.job_dead d
		WHERE d.queue_id = qid
		  AND (died_after IS NULL OR d.died_at > died_after)
		  AND (d.unique_key IS NULL OR NOT EXISTS (
				SELECT 1 FROM throttle_jobs.job j
				WHERE j.queue_id = qid AND j.unique_key = d.unique_key))
		ORDER BY d.died_at, d.id
		LIMIT max_jobs
		FOR UPDATE SKIP LOCKED
	), d AS (
		DELETE FROM throttle_jobs.job_dead d USING pick WHERE d.id = pick.id RETURNING d.*
	)
	INSERT INTO throttle_jobs.job (id, queue_id, state, priority, run_at, attempt,
		max_attempts, cost, enqueued_at, concurrency_key, rate_limit_key,
		unique_key, errors, payload)
	SELECT d.id, d.queue_id, 'available', d.priority, pg_catalog.now(), 0,
		d.max_attempts, d.cost, d.enqueued_at, d.concurrency_key, d.rate_limit_key,
		d.unique_key, d.errors, d.payload
	FROM d;
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM throttle_jobs._stats_note(qid, 'dead_retried', n);
	RETURN n;
END
$$;

CREATE FUNCTION throttle_jobs.purge_dead(queue text, older_than interval DEFAULT '0 seconds')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	qid integer := throttle_jobs._queue_id(queue);
	n bigint;
BEGIN
	IF older_than IS NULL THEN
		RAISE EXCEPTION 'older_than must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM throttle_jobs._check_interval(older_than, 'older_than', true);
	DELETE FROM throttle_jobs.job_dead d
	WHERE d.queue_id = qid AND d.died_at <= pg_catalog.now() - older_than;
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM throttle_jobs._stats_note(qid, 'dead_purged', n);
	RETURN n;
END
$$;

------------------------------------------------------------------------------
-- Limits
------------------------------------------------------------------------------

-- Checks a limit's key: a concrete key, or a template "prefix*".
CREATE FUNCTION throttle_jobs._check_limit_key(key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF key IS NULL THEN
		RAISE EXCEPTION 'key must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF key = '' OR pg_catalog.octet_length(key) > 255 THEN
		RAISE EXCEPTION 'invalid limit key "%"', key
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Keys are 1 to 255 bytes long.';
	END IF;
	IF key = '*' OR pg_catalog.strpos(pg_catalog.left(key, -1), '*') > 0 THEN
		RAISE EXCEPTION 'invalid key template "%"', key
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A template is a prefix followed by one "*" at the end, such as ''tenant:*''.';
	END IF;
END
$$;
REVOKE ALL ON FUNCTION throttle_jobs._check_limit_key(text) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._check_limit_key(text) IS 'Internal: checks a limit key or template.';

-- Whether a concrete key falls under a limit key (itself, or a template).
CREATE FUNCTION throttle_jobs._key_matches(key text, limit_key text)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN key = limit_key
	OR (pg_catalog.right(limit_key, 1) = '*'
		AND pg_catalog.starts_with(key, pg_catalog.left(limit_key, -1)));
REVOKE ALL ON FUNCTION throttle_jobs._key_matches(text, text) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._key_matches(text, text) IS 'Internal: whether a key falls under a limit key or template.';

-- Whether the rate of a concrete key k is (or, just dropped, was) governed
-- by limit key lk: it matches, and no more specific rate limit exists.
CREATE FUNCTION throttle_jobs._rate_governed_by(k text, lk text)
RETURNS boolean
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN throttle_jobs._key_matches(k, lk)
	AND NOT EXISTS (SELECT 1 FROM throttle_jobs.key_limit l
					WHERE l.key <> lk AND l.max_per_period IS NOT NULL
					  AND throttle_jobs._key_matches(k, l.key)
					  AND (l.key = k OR pg_catalog.length(l.key) > pg_catalog.length(lk)));
REVOKE ALL ON FUNCTION throttle_jobs._rate_governed_by(text, text) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._rate_governed_by(text, text) IS 'Internal: whether a limit (not a more specific one) governs a key''s rate.';

-- After a limit changed: send the throttled jobs of the keys it covers back
-- to be judged again by the next reserve, and, when the rate itself changed
-- (reset_rate), forget the rate state of the keys this limit governs (not
-- of keys that a more specific limit governs).
CREATE FUNCTION throttle_jobs._limit_changed(limit_key text, reset_rate boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF reset_rate THEN
		DELETE FROM throttle_jobs.key_rate_state s
		WHERE throttle_jobs._rate_governed_by(s.key, limit_key);
		DELETE FROM throttle_jobs.key_outcome o
		WHERE throttle_jobs._rate_governed_by(o.key, limit_key);
	END IF;
	UPDATE throttle_jobs.job j SET state = 'available', blocked_key = NULL, blocked_until = NULL
	WHERE j.state = 'throttled' AND throttle_jobs._key_matches(j.blocked_key, limit_key);
END
$$;
REVOKE ALL ON FUNCTION throttle_jobs._limit_changed(text, boolean) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._limit_changed(text, boolean) IS 'Internal: releases throttled jobs under a changed limit and, if its rate changed, resets the rate state it governs.';

CREATE FUNCTION throttle_jobs.set_concurrency_limit(key text, max_running integer)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM throttle_jobs._check_limit_key(key);
	IF max_running IS NULL THEN
		RAISE EXCEPTION 'max_running must not be null' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'Use drop_limit() to remove a limit.';
	END IF;
	IF max_running < 1 THEN
		RAISE EXCEPTION 'max_running must be at least 1, not %', max_running
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pause the queue to stop a key entirely.';
	END IF;
	INSERT INTO throttle_jobs.key_limit AS l (key, max_running)
	VALUES (key, max_running)
	ON CONFLICT ON CONSTRAINT key_limit_pkey
	DO UPDATE SET max_running = EXCLUDED.max_running, updated_at = pg_catalog.now();
	PERFORM throttle_jobs._limit_changed(key, false);
END
$$;

CREATE FUNCTION throttle_jobs.set_rate_limit(
	key					text,
	max_per_period		integer,
	period				interval,
	algorithm			text DEFAULT 'token_bucket',
	burst				integer DEFAULT NULL,
	adaptive			boolean DEFAULT false,
	error_threshold		double precision DEFAULT 0.5,
	min_factor			double precision DEFAULT 0.1)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old throttle_jobs.key_limit;
BEGIN
	PERFORM throttle_jobs._check_limit_key(key);
	IF max_per_period IS NULL OR period IS NULL OR algorithm IS NULL THEN
		RAISE EXCEPTION '% must not be null',
			CASE WHEN max_per_period IS NULL THEN 'max_per_period'
				 WHEN period IS NULL THEN 'period' ELSE 'algorithm' END
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF max_per_period < 1 THEN
		RAISE EXCEPTION 'max_per_period must be at least 1, not %', max_per_period
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM throttle_jobs._check_interval(period, 'period', false);
	IF algorithm NOT IN ('token_bucket', 'sliding_window', 'fixed_window') THEN
		RAISE EXCEPTION 'unknown rate limit algorithm "%"', algorithm
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use ''token_bucket'', ''sliding_window'' or ''fixed_window''.';
	END IF;
	IF algorithm = 'sliding_window' AND max_per_period > 10000 THEN
		RAISE EXCEPTION 'a sliding_window limit allows at most 10000 per period, not %', max_per_period
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'It keeps a log of every admission in the window; use token_bucket or fixed_window for higher rates.';
	END IF;
	IF burst IS NOT NULL AND algorithm <> 'token_bucket' THEN
		RAISE EXCEPTION 'burst applies to token_bucket only, not to %', algorithm
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF burst < 1 THEN
		RAISE EXCEPTION 'burst must be at least 1, not %', burst
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF adaptive IS NULL OR error_threshold IS NULL OR min_factor IS NULL THEN
		RAISE EXCEPTION '% must not be null',
			CASE WHEN adaptive IS NULL THEN 'adaptive'
				 WHEN error_threshold IS NULL THEN 'error_threshold' ELSE 'min_factor' END
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT (error_threshold >= 0 AND error_threshold < 1) THEN
		RAISE EXCEPTION 'error_threshold must be at least 0 and below 1, not %', error_threshold
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT (min_factor > 0 AND min_factor <= 1) THEN
		RAISE EXCEPTION 'min_factor must be above 0 and at most 1, not %', min_factor
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT l.* INTO old FROM throttle_jobs.key_limit l WHERE l.key = set_rate_limit.key;
	INSERT INTO throttle_jobs.key_limit AS l (key, max_per_period, period, algorithm, burst,
		adaptive, error_threshold, min_factor)
	VALUES (key, max_per_period, period, algorithm, burst, adaptive, error_threshold, min_factor)
	ON CONFLICT ON CONSTRAINT key_limit_pkey
	DO UPDATE SET max_per_period = EXCLUDED.max_per_period, period = EXCLUDED.period,
				  algorithm = EXCLUDED.algorithm, burst = EXCLUDED.burst,
				  adaptive = EXCLUDED.adaptive, error_threshold = EXCLUDED.error_threshold,
				  min_factor = EXCLUDED.min_factor, updated_at = pg_catalog.now();
	-- the same rate set again (a configuration push) keeps the state it has
	PERFORM throttle_jobs._limit_changed(key,
		(old.max_per_period, old.period, old.algorithm, old.burst)
		IS DISTINCT FROM (max_per_period, period, algorithm, burst));
END
$$;

CREATE FUNCTION throttle_jobs.drop_limit(key text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM throttle_jobs._check_limit_key(key);
	DELETE FROM throttle_jobs.key_limit l WHERE l.key = drop_limit.key;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	PERFORM throttle_jobs._limit_changed(key, true);
	RETURN true;
END
$$;

CREATE FUNCTION throttle_jobs.try_acquire(key text, cost integer DEFAULT 1)
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_try_acquire'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION throttle_jobs.acquire(key text, cost integer DEFAULT 1, timeout interval DEFAULT '10 seconds')
RETURNS boolean
AS 'MODULE_PATHNAME', 'throttle_jobs_acquire'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- The rate arithmetic as a pure function of its state and a given "now".
CREATE FUNCTION throttle_jobs._rate_admit(
	algorithm text, max_per_period integer, period interval, burst integer,
	cost integer, now timestamptz, tokens double precision, stamp timestamptz,
	log_at timestamptz[], log_cost integer[],
	OUT admitted boolean, OUT tokens_after double precision, OUT stamp_after timestamptz,
	OUT log_at_after timestamptz[], OUT log_cost_after integer[], OUT next_at timestamptz)
AS 'MODULE_PATHNAME', 'throttle_jobs_rate_admit'
LANGUAGE C IMMUTABLE;
REVOKE ALL ON FUNCTION throttle_jobs._rate_admit(text, integer, interval, integer, integer, timestamptz, double precision, timestamptz, timestamptz[], integer[]) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._rate_admit(text, integer, interval, integer, integer, timestamptz, double precision, timestamptz, timestamptz[], integer[]) IS 'Internal: one rate limiter decision on a given state at a given time (for tests).';

CREATE FUNCTION throttle_jobs._adaptive_factor(factor double precision, ok bigint, failed bigint,
	error_threshold double precision, min_factor double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'throttle_jobs_adaptive_factor'
LANGUAGE C IMMUTABLE STRICT;
REVOKE ALL ON FUNCTION throttle_jobs._adaptive_factor(double precision, bigint, bigint, double precision, double precision) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._adaptive_factor(double precision, bigint, bigint, double precision, double precision) IS 'Internal: the next adaptive factor from one evaluation window''s outcomes (for tests).';

CREATE FUNCTION throttle_jobs.explain_job(id bigint)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j throttle_jobs.job;
	q throttle_jobs.queue;
	d throttle_jobs.job_dead;
	a record;
	lim throttle_jobs.key_limit;
	reasons jsonb := '[]';
	ahead bigint;
	holders jsonb;
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION 'job id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO j FROM throttle_jobs.job x WHERE x.id = explain_job.id;
	IF NOT FOUND THEN
		SELECT * INTO d FROM throttle_jobs.job_dead x WHERE x.id = explain_job.id;
		IF FOUND THEN
			RETURN pg_catalog.jsonb_build_object('id', id, 'state', 'dead',
				'reasons', pg_catalog.jsonb_build_array(pg_catalog.format('dead because %s', d.reason)),
				'died_at', d.died_at, 'attempt', d.attempt,
				'last_error', (d.errors -> (-1)) ->> 'error');
		END IF;
		SELECT x.state, x.finished_at INTO a FROM throttle_jobs.job_archive x
		WHERE x.id = explain_job.id LIMIT 1;
		IF FOUND THEN
			RETURN pg_catalog.jsonb_build_object('id', id, 'state', a.state,
				'reasons', pg_catalog.jsonb_build_array(pg_catalog.format('%s at %s', a.state, a.finished_at)),
				'finished_at', a.finished_at);
		END IF;
		RETURN pg_catalog.jsonb_build_object('id', id, 'state', 'unknown',
			'reasons', pg_catalog.jsonb_build_array('no live, dead or archived job has this id'));
	END IF;
	SELECT * INTO q FROM throttle_jobs.queue x WHERE x.id = j.queue_id;

	IF j.state = 'running' THEN
		RETURN pg_catalog.jsonb_build_object('id', id, 'queue', q.name, 'state', 'running',
			'reasons', pg_catalog.jsonb_build_array(pg_catalog.format('running on worker %s, attempt %s of %s, lease until %s',
				j.worker, j.attempt, coalesce(j.max_attempts, q.max_attempts), j.lease_until)),
			'worker', j.worker, 'lease_until', j.lease_until, 'attempt', j.attempt);
	END IF;

	IF q.paused THEN
		reasons := reasons || pg_catalog.jsonb_build_array(pg_catalog.format('queue %s is paused', q.name));
	END IF;
	IF j.run_at > pg_catalog.now() THEN
		reasons := reasons || pg_catalog.jsonb_build_array(CASE WHEN j.attempt > 0
			THEN pg_catalog.format('retrying after attempt %s failed (%s): scheduled until %s',
								   j.attempt, (j.errors -> (-1)) ->> 'error', j.run_at)
			ELSE pg_catalog.format('scheduled until %s', j.run_at) END);
	END IF;

	-- the concurrency cap of its key, whether or not it is parked yet
	IF j.concurrency_key IS NOT NULL THEN
		SELECT * INTO lim FROM throttle_jobs.key_limit l
		WHERE throttle_jobs._key_matches(j.concurrency_key, l.key) AND l.max_running IS NOT NULL
		ORDER BY l.key = j.concurrency_key DESC, pg_catalog.length(l.key) DESC LIMIT 1;
		IF FOUND THEN
			SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('id', r.id, 'worker', r.worker) ORDER BY r.id)
			INTO holders FROM throttle_jobs.job r
			WHERE r.state = 'running' AND r.concurrency_key = j.concurrency_key;
			IF pg_catalog.jsonb_array_length(coalesce(holders, '[]')) >= lim.max_running THEN
				reasons := reasons || pg_catalog.jsonb_build_array(pg_catalog.format(
					'concurrency key %s is at its cap of %s (limit %s), held by %s',
					j.concurrency_key, lim.max_running, lim.key, holders));
			END IF;
		END IF;
	END IF;
	IF j.state = 'throttled' AND j.blocked_until IS NOT NULL THEN
		SELECT * INTO lim FROM throttle_jobs.key_limit l
		WHERE throttle_jobs._key_matches(j.blocked_key, l.key) AND l.max_per_period IS NOT NULL
		ORDER BY l.key = j.blocked_key DESC, pg_catalog.length(l.key) DESC LIMIT 1;
		reasons := reasons || pg_catalog.jsonb_build_array(CASE
			WHEN j.blocked_until = 'infinity' THEN pg_catalog.format(
				'its cost %s exceeds what rate key %s ever admits (%s per %s, limit %s)',
				j.cost, j.blocked_key, lim.max_per_period, lim.period, lim.key)
			ELSE pg_catalog.format('rate key %s (%s per %s, limit %s%s) next admits it at %s',
				j.blocked_key, lim.max_per_period, lim.period, lim.key,
				(SELECT pg_catalog.format(', adaptive: %s%% of the rate after errors', pg_catalog.round((st.factor * 100)::numeric))
				 FROM throttle_jobs.key_rate_state st
				 WHERE lim.adaptive AND st.key = j.blocked_key AND st.factor < 1),
				j.blocked_until) END);
	ELSIF j.state = 'throttled' AND pg_catalog.jsonb_array_length(reasons) = 0 THEN
		reasons := reasons || pg_catalog.jsonb_build_array(pg_catalog.format(
			'throttled by key %s: waiting for a slot to free', j.blocked_key));
	END IF;

	IF j.state = 'available' AND j.run_at <= pg_catalog.now() THEN
		SELECT pg_catalog.count(*) INTO ahead FROM throttle_jobs.job x
		WHERE x.queue_id = j.queue_id AND x.state = 'available' AND x.run_at <= pg_catalog.now()
		  AND (x.priority > j.priority
			   OR (x.priority = j.priority AND (x.rr_rank, x.run_at, x.id) < (j.rr_rank, j.run_at, j.id)));
		IF ahead > 0 THEN
			reasons := reasons || pg_catalog.jsonb_build_array(pg_catalog.format(
				'waiting behind %s ready jobs of higher or equal priority', ahead));
		ELSIF pg_catalog.jsonb_array_length(reasons) = 0 THEN
			reasons := reasons || pg_catalog.jsonb_build_array('ready: the next reserve on this queue takes it');
		END IF;
	END IF;

	RETURN pg_catalog.jsonb_build_object('id', id, 'queue', q.name,
		'state', CASE WHEN j.state = 'available' AND j.run_at > pg_catalog.now() THEN 'scheduled' ELSE j.state END,
		'reasons', reasons, 'attempt', j.attempt, 'run_at', j.run_at, 'priority', j.priority,
		'concurrency_key', j.concurrency_key, 'rate_limit_key', j.rate_limit_key,
		'blocked_key', j.blocked_key, 'blocked_until', j.blocked_until);
END
$$;

------------------------------------------------------------------------------
-- Views
------------------------------------------------------------------------------

CREATE VIEW throttle_jobs.queues AS
SELECT q.name, q.paused, q.max_size, q.on_full, q.max_attempts, q.backoff_base,
	   q.backoff_factor, q.backoff_max, q.backoff_jitter, q.lease,
	   q.retain_completed, q.retain_dead, q.handler, q.fairness,
	   q.owner, q.created_at
FROM throttle_jobs.queue q;
COMMENT ON VIEW throttle_jobs.queues IS 'Queue definitions.';

CREATE VIEW throttle_jobs.jobs AS
SELECT j.id, q.name AS queue,
	   CASE WHEN j.state = 'available' AND j.run_at > pg_catalog.now() THEN 'scheduled'
			ELSE j.state END AS state,
	   j.priority, j.run_at, j.attempt, coalesce(j.max_attempts, q.max_attempts) AS max_attempts, j.worker, j.lease_until,
	   j.reserved_at, j.enqueued_at, j.concurrency_key, j.rate_limit_key,
	   j.unique_key, j.cost, j.payload, j.errors,
	   (j.errors -> (-1)) ->> 'error' AS last_error,
	   j.blocked_key, j.blocked_until
FROM throttle_jobs.job j
JOIN throttle_jobs.queue q ON q.id = j.queue_id;
COMMENT ON VIEW throttle_jobs.jobs IS 'Live jobs: available, scheduled (run_at in the future), throttled (held back by a limit) or running.';

CREATE VIEW throttle_jobs.running_jobs AS
SELECT j.id, q.name AS queue, j.worker, j.attempt,
	   coalesce(j.max_attempts, q.max_attempts) AS max_attempts, j.reserved_at,
	   j.lease_until, j.lease_until < pg_catalog.now() AS lease_expired,
	   j.priority, j.concurrency_key, j.rate_limit_key, j.payload
FROM throttle_jobs.job j
JOIN throttle_jobs.queue q ON q.id = j.queue_id
WHERE j.state = 'running';
COMMENT ON VIEW throttle_jobs.running_jobs IS 'Jobs under a lease now, with the worker holding each.';

CREATE VIEW throttle_jobs.dead_letters AS
SELECT d.id, q.name AS queue, d.reason, d.died_at, d.attempt,
	   coalesce(d.max_attempts, q.max_attempts) AS max_attempts,
	   d.priority, d.enqueued_at, d.worker, d.concurrency_key, d.rate_limit_key,
	   d.unique_key, d.payload, d.errors,
	   (d.errors -> (-1)) ->> 'error' AS last_error
FROM throttle_jobs.job_dead d
JOIN throttle_jobs.queue q ON q.id = d.queue_id;
COMMENT ON VIEW throttle_jobs.dead_letters IS 'Jobs that failed for good, with every error they met.';

CREATE VIEW throttle_jobs.archived_jobs AS
SELECT a.id, q.name AS queue, a.state, a.finished_at, a.attempt,
	   coalesce(a.max_attempts, q.max_attempts) AS max_attempts,
	   a.priority, a.enqueued_at, a.reserved_at, a.worker, a.concurrency_key,
	   a.rate_limit_key, a.unique_key, a.payload, a.result, a.errors
FROM throttle_jobs.job_archive a
JOIN throttle_jobs.queue q ON q.id = a.queue_id
WHERE a.finished_at >= now() - q.retain_completed;
CREATE VIEW throttle_jobs.limits AS
SELECT l.key, pg_catalog.right(l.key, 1) = '*' AS template, l.max_running,
	   l.max_per_period, l.period, l.algorithm, l.burst,
	   l.adaptive, l.error_threshold, l.min_factor, l.updated_at
FROM throttle_jobs.key_limit l;
COMMENT ON VIEW throttle_jobs.limits IS 'Concurrency caps and rate limits, per key or template.';

COMMENT ON VIEW throttle_jobs.archived_jobs IS 'Completed and cancelled jobs within their queue''s retention.';

------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC; capabilities through the three roles
------------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA throttle_jobs FROM PUBLIC;

GRANT EXECUTE ON FUNCTION throttle_jobs.enqueue(text, jsonb, timestamptz, integer, integer, text, text, text, integer),
					   throttle_jobs.enqueue_batch(text, jsonb)
	TO throttle_jobs_producer;

GRANT EXECUTE ON FUNCTION throttle_jobs.reserve(text, text, integer, interval),
					   throttle_jobs.complete(bigint, uuid, jsonb),
					   throttle_jobs.complete_and_reserve(text, text, bigint[], uuid[], integer, interval),
					   throttle_jobs.fail(bigint, uuid, text, interval, boolean),
					   throttle_jobs.snooze(bigint, uuid, interval),
					   throttle_jobs.heartbeat(bigint, uuid, interval),
					   throttle_jobs.run_jobs(text, integer, interval)
	TO throttle_jobs_worker;

GRANT EXECUTE ON FUNCTION throttle_jobs.create_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text),
					   throttle_jobs.alter_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text),
					   throttle_jobs.drop_queue(text, boolean),
					   throttle_jobs.pause_queue(text),
					   throttle_jobs.resume_queue(text),
					   throttle_jobs.cancel(bigint),
					   throttle_jobs.retry_dead(bigint),
					   throttle_jobs.retry_dead(text, timestamptz, integer),
					   throttle_jobs.purge_dead(text, interval),
					   throttle_jobs.maintain(),
					   throttle_jobs.backoff_delay(integer, interval, double precision, interval, double precision, double precision),
					   throttle_jobs.set_concurrency_limit(text, integer),
					   throttle_jobs.set_rate_limit(text, integer, interval, text, integer, boolean, double precision, double precision),
					   throttle_jobs.drop_limit(text),
					   throttle_jobs.explain_job(bigint)
	TO throttle_jobs_admin;

GRANT EXECUTE ON FUNCTION throttle_jobs.try_acquire(text, integer),
					   throttle_jobs.acquire(text, integer, interval)
	TO throttle_jobs_producer, throttle_jobs_worker, throttle_jobs_admin;

GRANT SELECT ON throttle_jobs.queues, throttle_jobs.jobs, throttle_jobs.running_jobs,
				throttle_jobs.dead_letters, throttle_jobs.archived_jobs, throttle_jobs.limits
	TO throttle_jobs_admin;

------------------------------------------------------------------------------
-- Comments
------------------------------------------------------------------------------

COMMENT ON FUNCTION throttle_jobs.create_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text) IS 'Creates a queue with its retry policy, lease, retention, backpressure and optional SQL handler.';
COMMENT ON FUNCTION throttle_jobs.alter_queue(text, bigint, text, integer, interval, double precision, interval, double precision, interval, interval, interval, regprocedure, text) IS 'Changes a queue''s options; NULL leaves an option unchanged.';
COMMENT ON FUNCTION throttle_jobs.drop_queue(text, boolean) IS 'Drops a queue with its dead letters and archive; refuses while it holds live jobs unless force => true.';
COMMENT ON FUNCTION throttle_jobs.pause_queue(text) IS 'Stops reservations from a queue; enqueues still land.';
COMMENT ON FUNCTION throttle_jobs.resume_queue(text) IS 'Lets reservations from a paused queue resume.';
COMMENT ON FUNCTION throttle_jobs.enqueue(text, jsonb, timestamptz, integer, integer, text, text, text, integer) IS 'Adds a job to a queue in the caller''s transaction; returns its id (the live job''s id for a repeated unique_key).';
COMMENT ON FUNCTION throttle_jobs.enqueue_batch(text, jsonb) IS 'Adds an array of jobs (objects with enqueue''s argument names) and returns their ids in order.';
COMMENT ON FUNCTION throttle_jobs.reserve(text, text, integer, interval) IS 'Leases up to max_jobs ready jobs to a worker, best first, skipping rows other reservers hold.';
COMMENT ON FUNCTION throttle_jobs.complete(bigint, uuid, jsonb) IS 'Finishes a reserved job; false when the lease token is stale.';
COMMENT ON FUNCTION throttle_jobs.complete_and_reserve(text, text, bigint[], uuid[], integer, interval) IS 'Completes the finished jobs (done with their lease_tokens; stale ones change nothing) and reserves up to max_jobs more, in one transaction.';
COMMENT ON FUNCTION throttle_jobs.fail(bigint, uuid, text, interval, boolean) IS 'Records a failed attempt; returns the new state (available or dead), or stale.';
COMMENT ON FUNCTION throttle_jobs.snooze(bigint, uuid, interval) IS 'Puts a reserved job back for later without consuming its attempt.';
COMMENT ON FUNCTION throttle_jobs.heartbeat(bigint, uuid, interval) IS 'Extends a lease; returns the new lease end, or NULL when the token is stale.';
COMMENT ON FUNCTION throttle_jobs.maintain() IS 'One maintenance pass: expire leases, enforce retention, manage archive partitions.';
COMMENT ON FUNCTION throttle_jobs.run_jobs(text, integer, interval) IS 'Runs up to max_jobs ready handler jobs (of one queue, or of every handler queue) for at most max_time in this session, each in a subtransaction, as the queue owner; returns how many ran.';
COMMENT ON FUNCTION throttle_jobs.backoff_delay(integer, interval, double precision, interval, double precision, double precision) IS 'The retry delay after attempt n: min(max, base * factor^(n-1)) jittered by +-jitter, for a draw in [0, 1).';
COMMENT ON FUNCTION throttle_jobs.cancel(bigint) IS 'Cancels a job that is not running; true if it was cancelled.';
COMMENT ON FUNCTION throttle_jobs.retry_dead(bigint) IS 'Moves one dead job back to its queue with its attempts reset.';
COMMENT ON FUNCTION throttle_jobs.retry_dead(text, timestamptz, integer) IS 'Moves a queue''s dead jobs (those died after died_after, at most max_jobs) back; returns how many.';
COMMENT ON FUNCTION throttle_jobs.purge_dead(text, interval) IS 'Deletes a queue''s dead jobs older than older_than; returns how many.';
COMMENT ON FUNCTION throttle_jobs.set_concurrency_limit(text, integer) IS 'At most max_running running jobs carrying this concurrency key (or each key matching a template), across all queues.';
COMMENT ON FUNCTION throttle_jobs.set_rate_limit(text, integer, interval, text, integer, boolean, double precision, double precision) IS 'At most max_per_period admissions (job starts, weighted by cost) per period for this rate key (or each key matching a template).';
COMMENT ON FUNCTION throttle_jobs.drop_limit(text) IS 'Removes the limits set on a key or template; true if there were any.';
COMMENT ON FUNCTION throttle_jobs.try_acquire(text, integer) IS 'Takes cost tokens of a key''s rate limit now (and, on a capped key, holds it to transaction end), or returns false.';
COMMENT ON FUNCTION throttle_jobs.acquire(text, integer, interval) IS 'try_acquire, waiting up to timeout; false if the time ran out.';
COMMENT ON FUNCTION throttle_jobs.explain_job(bigint) IS 'Why a job is not running now: scheduled, paused, throttled by a cap or a rate, waiting behind others, running, dead.';

------------------------------------------------------------------------------
-- Statistics (src/stats.c): counters in shared memory when the library is
-- preloaded, read through C set-returning functions and thin views, as
-- pg_stat_statements does; without preloading, depth comes from the last
-- maintain() (stats_snapshot) and counters are NULL.  No read path counts
-- the jobs: see README.md, Monitoring.
------------------------------------------------------------------------------

-- Per-minute history, rolled up from shared memory by maintain() and kept
-- for throttle_jobs.stats_history.  Not dumped: statistics, not user data.
CREATE TABLE throttle_jobs.stats_minute (
	queue_id			integer NOT NULL,
	minute				timestamptz NOT NULL,
	enqueued			bigint NOT NULL DEFAULT 0,
	reserved			bigint NOT NULL DEFAULT 0,
	completed			bigint NOT NULL DEFAULT 0,
	failed				bigint NOT NULL DEFAULT 0,
	dead_lettered		bigint NOT NULL DEFAULT 0,
	throttled			bigint NOT NULL DEFAULT 0,
	CONSTRAINT stats_minute_pkey PRIMARY KEY (queue_id, minute)
);
COMMENT ON TABLE throttle_jobs.stats_minute IS 'Per-minute event counts per queue, rolled up by maintain() (backs the throughput view).';
REVOKE ALL ON throttle_jobs.stats_minute FROM PUBLIC;

-- Without preloading: each maintain() pass counts every queue's depth here.
-- Not dumped: recomputed by the next pass.
CREATE TABLE throttle_jobs.stats_snapshot (
	queue_id			integer NOT NULL CONSTRAINT stats_snapshot_pkey PRIMARY KEY,
	counted_at			timestamptz NOT NULL,
	available			bigint NOT NULL,
	scheduled			bigint NOT NULL,
	running				bigint NOT NULL,
	retrying			bigint NOT NULL,
	dead				bigint NOT NULL
);
COMMENT ON TABLE throttle_jobs.stats_snapshot IS 'Queue depth counted by the last maintain(), used by queue_stats when the library is not preloaded.';
REVOKE ALL ON throttle_jobs.stats_snapshot FROM PUBLIC;

CREATE FUNCTION throttle_jobs.stats_queues(
	OUT queue_id integer,
	OUT available bigint,
	OUT scheduled bigint,
	OUT running bigint,
	OUT retrying bigint,
	OUT dead bigint,
	OUT enqueued bigint,
	OUT reserved bigint,
	OUT completed bigint,
	OUT failed bigint,
	OUT retried bigint,
	OUT dead_lettered bigint,
	OUT lease_expired bigint,
	OUT throttled_cap bigint,
	OUT throttled_rate bigint,
	OUT dropped bigint,
	OUT snoozed bigint,
	OUT cancelled bigint,
	OUT completed_1m bigint,
	OUT completed_5m bigint,
	OUT completed_15m bigint,
	OUT failed_1m bigint,
	OUT failed_5m bigint,
	OUT failed_15m bigint,
	OUT dead_lettered_1m bigint,
	OUT dead_lettered_5m bigint,
	OUT dead_lettered_15m bigint,
	OUT throttled_1m bigint,
	OUT throttled_5m bigint,
	OUT throttled_15m bigint,
	OUT wait_p50 interval,
	OUT wait_p95 interval,
	OUT wait_p99 interval,
	OUT run_p50 interval,
	OUT run_p95 interval,
	OUT run_p99 interval,
	OUT stats_reset timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'throttle_jobs_stats_queues'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION throttle_jobs.stats_queues() IS 'The per-queue statistics in shared memory behind queue_stats (no rows without preloading).';

CREATE FUNCTION throttle_jobs._stats_histograms(
	OUT queue_id integer, OUT kind text, OUT le double precision, OUT count bigint,
	OUT sum double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'throttle_jobs_stats_histograms'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION throttle_jobs._stats_histograms() IS 'Internal: cumulative wait and run time histograms per queue, for metrics().';

CREATE FUNCTION throttle_jobs.stats_keys(
	OUT key text, OUT throttled_cap bigint, OUT throttled_rate bigint,
	OUT last_throttled_at timestamptz, OUT throttled_since timestamptz,
	OUT last_admitted_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'throttle_jobs_stats_keys'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION throttle_jobs.stats_keys() IS 'Throttling counters behind key_stats: the keys throttled since start or reset.';

CREATE FUNCTION throttle_jobs.stats_state(
	OUT shared boolean, OUT started_at timestamptz, OUT reset_at timestamptz,
	OUT counted_at timestamptz, OUT queues_dropped bigint, OUT keys_dropped bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'throttle_jobs_stats_state'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION throttle_jobs.stats_state() IS 'Whether statistics live in shared memory, when they started, were reset and were last recounted.';

CREATE FUNCTION throttle_jobs._stats_note(queue_id integer, what text, n bigint,
	run_at timestamptz DEFAULT NULL, attempt integer DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_stats_note'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION throttle_jobs._stats_note(integer, text, bigint, timestamptz, integer) IS 'Internal: the SQL-written transitions (cancel, retry_dead, purge_dead, drop_queue) report to the statistics at commit.';

CREATE FUNCTION throttle_jobs._stats_forget()
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_stats_forget'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION throttle_jobs._stats_forget() IS 'Internal: drops this database''s statistics from shared memory (run by the install script).';
-- A re-created extension starts its queue ids at 1 again: forget the old ones.
SELECT throttle_jobs._stats_forget();

CREATE FUNCTION throttle_jobs._reset_stats(queue_id integer)
RETURNS void
AS 'MODULE_PATHNAME', 'throttle_jobs_stats_reset'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION throttle_jobs._reset_stats(integer) IS 'Internal: zeroes the counters of one queue, or of all queues and keys (NULL).';

-- Age of the oldest ready job, from job_ready_idx only: one probe per
-- priority level present (a loose index scan), then the head of each level
-- (in fifo queues the level's earliest run_at; in round_robin queues the
-- head of the turn order).  Throttled jobs are not ready.
CREATE FUNCTION throttle_jobs.stats_lag(queue_id integer, now timestamptz)
RETURNS interval
LANGUAGE sql STABLE STRICT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
WITH RECURSIVE p AS (
	(SELECT j.priority FROM throttle_jobs.job j
	 WHERE j.queue_id = $1 AND j.state = 'available'
	 ORDER BY j.priority DESC LIMIT 1)
	UNION ALL
	SELECT (SELECT j.priority FROM throttle_jobs.job j
			WHERE j.queue_id = $1 AND j.state = 'available' AND j.priority < p.priority
			ORDER BY j.priority DESC LIMIT 1)
	FROM p WHERE p.priority IS NOT NULL
)
SELECT coalesce(pg_catalog.max($2 OPERATOR(pg_catalog.-) h.run_at), '0'::interval)
FROM p CROSS JOIN LATERAL (
	SELECT j.run_at FROM throttle_jobs.job j
	WHERE j.queue_id = $1 AND j.state = 'available' AND j.priority = p.priority
	ORDER BY j.rr_rank, j.run_at LIMIT 1) h
WHERE p.priority IS NOT NULL AND h.run_at <= $2
$$;
COMMENT ON FUNCTION throttle_jobs.stats_lag(integer, timestamptz) IS 'Age of the oldest ready job of a queue, read from the ready index (O(priority levels)).';

CREATE FUNCTION throttle_jobs.reset_stats(queue text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM throttle_jobs._reset_stats(CASE WHEN queue IS NOT NULL THEN throttle_jobs._queue_id(queue) END);
END
$$;
COMMENT ON FUNCTION throttle_jobs.reset_stats(text) IS 'Zeroes the event counters, windows and histograms of one queue, or of every queue and key (NULL); depth is not reset.';

CREATE VIEW throttle_jobs.queue_stats AS
SELECT q.name AS queue, q.paused, q.max_size,
	CASE WHEN st.shared THEN coalesce(s.available, CASE WHEN st.counted_at IS NOT NULL THEN 0 END)
		 ELSE snap.available END AS available,
	CASE WHEN st.shared THEN coalesce(s.scheduled, CASE WHEN st.counted_at IS NOT NULL THEN 0 END)
		 ELSE snap.scheduled END AS scheduled,
	CASE WHEN st.shared THEN coalesce(s.running, CASE WHEN st.counted_at IS NOT NULL THEN 0 END)
		 ELSE snap.running END AS running,
	CASE WHEN st.shared THEN coalesce(s.retrying, CASE WHEN st.counted_at IS NOT NULL THEN 0 END)
		 ELSE snap.retrying END AS retrying,
	CASE WHEN st.shared THEN coalesce(s.dead, CASE WHEN st.counted_at IS NOT NULL THEN 0 END)
		 ELSE snap.dead END AS dead,
	CASE WHEN st.shared THEN CASE WHEN st.counted_at IS NOT NULL THEN pg_catalog.now() END
		 ELSE snap.counted_at END AS depth_as_of,
	throttle_jobs.stats_lag(q.id, pg_catalog.now()) AS lag,
	CASE WHEN st.shared THEN coalesce(s.enqueued, 0) END AS enqueued,
	CASE WHEN st.shared THEN coalesce(s.reserved, 0) END AS reserved,
	CASE WHEN st.shared THEN coalesce(s.completed, 0) END AS completed,
	CASE WHEN st.shared THEN coalesce(s.failed, 0) END AS failed,
	CASE WHEN st.shared THEN coalesce(s.retried, 0) END AS retried,
	CASE WHEN st.shared THEN coalesce(s.dead_lettered, 0) END AS dead_lettered,
	CASE WHEN st.shared THEN coalesce(s.lease_expired, 0) END AS lease_expired,
	CASE WHEN st.shared THEN coalesce(s.throttled_cap, 0) END AS throttled_cap,
	CASE WHEN st.shared THEN coalesce(s.throttled_rate, 0) END AS throttled_rate,
	CASE WHEN st.shared THEN coalesce(s.dropped, 0) END AS dropped,
	CASE WHEN st.shared THEN coalesce(s.snoozed, 0) END AS snoozed,
	CASE WHEN st.shared THEN coalesce(s.cancelled, 0) END AS cancelled,
	CASE WHEN st.shared THEN coalesce(s.completed_1m, 0) END AS completed_1m,
	CASE WHEN st.shared THEN coalesce(s.completed_5m, 0) END AS completed_5m,
	CASE WHEN st.shared THEN coalesce(s.completed_15m, 0) END AS completed_15m,
	CASE WHEN st.shared THEN coalesce(s.failed_1m, 0) END AS failed_1m,
	CASE WHEN st.shared THEN coalesce(s.failed_5m, 0) END AS failed_5m,
	CASE WHEN st.shared THEN coalesce(s.failed_15m, 0) END AS failed_15m,
	CASE WHEN st.shared THEN coalesce(s.dead_lettered_1m, 0) END AS dead_lettered_1m,
	CASE WHEN st.shared THEN coalesce(s.dead_lettered_5m, 0) END AS dead_lettered_5m,
	CASE WHEN st.shared THEN coalesce(s.dead_lettered_15m, 0) END AS dead_lettered_15m,
	CASE WHEN st.shared THEN coalesce(s.throttled_1m, 0) END AS throttled_1m,
	CASE WHEN st.shared THEN coalesce(s.throttled_5m, 0) END AS throttled_5m,
	CASE WHEN st.shared THEN coalesce(s.throttled_15m, 0) END AS throttled_15m,
	s.wait_p50,
	s.wait_p95,
	s.wait_p99,
	s.run_p50,
	s.run_p95,
	s.run_p99,
	CASE WHEN st.shared THEN coalesce(s.stats_reset, st.reset_at) END AS stats_reset
FROM throttle_jobs.queue q
CROSS JOIN throttle_jobs.stats_state() st
LEFT JOIN throttle_jobs.stats_queues() s ON s.queue_id = q.id
LEFT JOIN throttle_jobs.stats_snapshot snap ON snap.queue_id = q.id AND NOT st.shared;
COMMENT ON VIEW throttle_jobs.queue_stats IS 'Per queue: depth by state, lag, event counters since reset, events in the last 1/5/15 minutes, wait and run time percentiles; O(queues), from shared memory.';

-- The rows of key_stats.  A function so that it can turn JIT off: the
-- per-key lookups are cheap, but their estimated cost on small, never
-- analyzed limit tables crosses jit_above_cost, and compiling the plan took
-- 15 ms of a 16 ms read.  SECURITY DEFINER: readers (pg_monitor) see the
-- statistics without rights on the tables.
CREATE TYPE throttle_jobs.key_stats_row AS (key text, cap_limit text, max_running integer, running bigint, rate_limit text, max_per_period integer, period interval, algorithm text, tokens double precision, window_used bigint, next_admission_at timestamptz, throttled_cap bigint, throttled_rate bigint, throttled_since timestamptz, last_throttled_at timestamptz, last_admitted_at timestamptz, adaptive_factor double precision);
COMMENT ON TYPE throttle_jobs.key_stats_row IS 'A row of key_stats.';

CREATE FUNCTION throttle_jobs.stats_key_rows()
RETURNS SETOF throttle_jobs.key_stats_row
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
WITH ks AS (
	SELECT * FROM throttle_jobs.stats_keys()
), keys AS (
	SELECT l.key FROM throttle_jobs.key_limit l WHERE pg_catalog.right(l.key, 1) <> '*'
	UNION SELECT s.key FROM throttle_jobs.key_rate_state s
	UNION SELECT j.concurrency_key FROM throttle_jobs.job j
		  WHERE j.state = 'running' AND j.concurrency_key IS NOT NULL
	UNION SELECT ks.key FROM ks
), gov AS (
	SELECT k.key, c.key AS cap_limit, c.max_running, r.key AS rate_limit, r.max_per_period,
		   r.period, r.algorithm, r.burst, r.adaptive
	FROM keys k
	LEFT JOIN LATERAL (
		SELECT l.key, l.max_running FROM throttle_jobs.key_limit l
		WHERE l.max_running IS NOT NULL
		  AND throttle_jobs._key_matches(k.key, l.key)
		ORDER BY l.key = k.key DESC, pg_catalog.length(l.key) DESC LIMIT 1) c ON true
	LEFT JOIN LATERAL (
		SELECT l.key, l.max_per_period, l.period, l.algorithm, l.burst, l.adaptive
		FROM throttle_jobs.key_limit l
		WHERE l.max_per_period IS NOT NULL
		  AND throttle_jobs._key_matches(k.key, l.key)
		ORDER BY l.key = k.key DESC, pg_catalog.length(l.key) DESC LIMIT 1) r ON true
	WHERE c.key IS NOT NULL OR r.key IS NOT NULL
)
SELECT g.key, g.cap_limit, g.max_running,
	CASE WHEN g.max_running IS NOT NULL THEN
		(SELECT pg_catalog.count(*) FROM throttle_jobs.job j
		 WHERE j.state = 'running' AND j.concurrency_key = g.key) END AS running,
	g.rate_limit, g.max_per_period, g.period, g.algorithm,
	CASE WHEN g.algorithm = 'token_bucket' THEN
		CASE WHEN s.key IS NULL THEN coalesce(g.burst, g.max_per_period)::double precision
			 ELSE LEAST(coalesce(g.burst, g.max_per_period)::double precision,
						s.tokens + pg_catalog.date_part('epoch', GREATEST(pg_catalog.now() - s.stamp, '0'::interval))
								 * g.max_per_period * s.factor / pg_catalog.date_part('epoch', g.period)) END
	END AS tokens,
	CASE g.algorithm
		WHEN 'fixed_window' THEN CASE WHEN s.stamp + g.period > pg_catalog.now() THEN s.tokens::bigint ELSE 0 END
		WHEN 'sliding_window' THEN coalesce((SELECT pg_catalog.sum(u.c) FROM ROWS FROM (pg_catalog.unnest(s.log_at), pg_catalog.unnest(s.log_cost)) u(a, c)
											 WHERE u.a > pg_catalog.now() - g.period), 0)::bigint
	END AS window_used,
	CASE WHEN s.next_at > pg_catalog.now() THEN s.next_at END AS next_admission_at,
	CASE WHEN st.shared THEN coalesce(ks.throttled_cap, 0) END AS throttled_cap,
	CASE WHEN st.shared THEN coalesce(ks.throttled_rate, 0) END AS throttled_rate,
	ks.throttled_since, ks.last_throttled_at, ks.last_admitted_at,
	CASE WHEN g.adaptive THEN coalesce(s.factor, 1) END AS adaptive_factor
FROM gov g
CROSS JOIN throttle_jobs.stats_state() st
LEFT JOIN throttle_jobs.key_rate_state s ON s.key = g.key
LEFT JOIN ks ON ks.key = g.key
$$;
COMMENT ON FUNCTION throttle_jobs.stats_key_rows() IS 'The rows of key_stats (each limited key, templates expanded to live keys).';

CREATE VIEW throttle_jobs.key_stats AS
SELECT * FROM throttle_jobs.stats_key_rows();
COMMENT ON VIEW throttle_jobs.key_stats IS 'Each limited key (templates expanded to live keys): cap and holders, rate, tokens or window use, next admission, throttled counts, adaptive factor.';

CREATE VIEW throttle_jobs.throughput AS
SELECT q.name AS queue, m.minute, m.enqueued, m.reserved, m.completed, m.failed,
	   m.dead_lettered, m.throttled
FROM throttle_jobs.stats_minute m
JOIN throttle_jobs.queue q ON q.id = m.queue_id;
COMMENT ON VIEW throttle_jobs.throughput IS 'Per-minute event counts per queue for the last throttle_jobs.stats_history, rolled up by maintain().';

-- A Prometheus label value: backslash, double quote and newline escaped.
CREATE FUNCTION throttle_jobs._prom_label(value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(value, E'\\', E'\\\\'),
	'"', E'\\"'), E'\n', E'\\n');
COMMENT ON FUNCTION throttle_jobs._prom_label(text) IS 'Internal: escapes a Prometheus label value.';

-- A Prometheus sample value.
CREATE FUNCTION throttle_jobs._prom_value(value double precision)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN value = 'Infinity' THEN '+Inf' WHEN value = '-Infinity' THEN '-Inf'
			ELSE value::text END;
COMMENT ON FUNCTION throttle_jobs._prom_value(double precision) IS 'Internal: formats a Prometheus sample value.';

-- One histogram of metrics(): the buckets, sum and count of every queue for
-- the wait or run times (kind), in Prometheus text format.
CREATE FUNCTION throttle_jobs._prom_histogram(kind text, metric text, help text)
RETURNS text[]
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT ARRAY['# HELP ' || metric || ' ' || help, '# TYPE ' || metric || ' histogram']
		|| ARRAY(
		SELECT x.line FROM (
			SELECT q.name, 1 AS part, h.le,
				   pg_catalog.format('%s_bucket{queue="%s",le="%s"} %s', metric,
									 throttle_jobs._prom_label(q.name), throttle_jobs._prom_value(h.le), h.count) AS line
			FROM throttle_jobs._stats_histograms() h JOIN throttle_jobs.queue q ON q.id = h.queue_id
			WHERE h.kind = _prom_histogram.kind
			UNION ALL
			SELECT q.name, 2, NULL, pg_catalog.format('%s_sum{queue="%s"} %s', metric,
									 throttle_jobs._prom_label(q.name), h.sum)
			FROM throttle_jobs._stats_histograms() h JOIN throttle_jobs.queue q ON q.id = h.queue_id
			WHERE h.kind = _prom_histogram.kind AND h.le = 'Infinity'
			UNION ALL
			SELECT q.name, 3, NULL, pg_catalog.format('%s_count{queue="%s"} %s', metric,
									 throttle_jobs._prom_label(q.name), h.count)
			FROM throttle_jobs._stats_histograms() h JOIN throttle_jobs.queue q ON q.id = h.queue_id
			WHERE h.kind = _prom_histogram.kind AND h.le = 'Infinity') x
		ORDER BY x.name, x.part, x.le)
$$;
REVOKE ALL ON FUNCTION throttle_jobs._prom_histogram(text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION throttle_jobs._prom_histogram(text, text, text) IS 'Internal: one histogram of metrics() (wait or run times).';

CREATE FUNCTION throttle_jobs.metrics()
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	qs throttle_jobs.queue_stats[] := ARRAY(SELECT s FROM throttle_jobs.queue_stats s ORDER BY s.queue);
	ks throttle_jobs.key_stats[] := ARRAY(SELECT k FROM throttle_jobs.key_stats k ORDER BY k.key);
	shared boolean := (SELECT st.shared FROM throttle_jobs.stats_state() st);
	out text[] := '{}';
	g record;
BEGIN
	out := out || ARRAY[
		'# HELP throttle_jobs_stats_shared Whether statistics are kept in shared memory (the library is preloaded).',
		'# TYPE throttle_jobs_stats_shared gauge',
		'throttle_jobs_stats_shared ' || CASE WHEN shared THEN '1' ELSE '0' END];

	out := out || ARRAY['# HELP throttle_jobs_jobs Jobs per queue and state (available includes throttled jobs).',
						'# TYPE throttle_jobs_jobs gauge'];
	out := out || ARRAY(
		SELECT pg_catalog.format('throttle_jobs_jobs{queue="%s",state="%s"} %s',
								 throttle_jobs._prom_label(s.queue), v.state, v.n)
		FROM pg_catalog.unnest(qs) s,
			 LATERAL (VALUES (1, 'available', s.available), (2, 'scheduled', s.scheduled),
							 (3, 'running', s.running), (4, 'retrying', s.retrying),
							 (5, 'dead', s.dead)) v(o, state, n)
		WHERE v.n IS NOT NULL ORDER BY s.queue, v.o);

	out := out || ARRAY['# HELP throttle_jobs_lag_seconds Age of the oldest ready job.',
						'# TYPE throttle_jobs_lag_seconds gauge'];
	out := out || ARRAY(
		SELECT pg_catalog.format('throttle_jobs_lag_seconds{queue="%s"} %s',
								 throttle_jobs._prom_label(s.queue),
								 pg_catalog.date_part('epoch', s.lag))
		FROM pg_catalog.unnest(qs) s ORDER BY s.queue);

	out := out || ARRAY['# HELP throttle_jobs_queue_paused Whether the queue is paused (1) or not (0).',
						'# TYPE throttle_jobs_queue_paused gauge'];
	out := out || ARRAY(
		SELECT pg_catalog.format('throttle_jobs_queue_paused{queue="%s"} %s',
								 throttle_jobs._prom_label(s.queue), CASE WHEN s.paused THEN 1 ELSE 0 END)
		FROM pg_catalog.unnest(qs) s ORDER BY s.queue);

	out := out || ARRAY['# HELP throttle_jobs_queue_max_size The queue''s max_size (queues without one are left out).',
						'# TYPE throttle_jobs_queue_max_size gauge'];
	out := out || ARRAY(
		SELECT pg_catalog.format('throttle_jobs_queue_max_size{queue="%s"} %s',
								 throttle_jobs._prom_label(s.queue), s.max_size)
		FROM pg_catalog.unnest(qs) s WHERE s.max_size IS NOT NULL ORDER BY s.queue);

	IF shared THEN
		out := out || ARRAY['# HELP throttle_jobs_events_total Job events per queue since the server started or reset_stats().',
							'# TYPE throttle_jobs_events_total counter'];
		out := out || ARRAY(
			SELECT pg_catalog.format('throttle_jobs_events_total{queue="%s",event="%s"} %s',
									 throttle_jobs._prom_label(s.queue), v.event, v.n)
			FROM pg_catalog.unnest(qs) s,
				 LATERAL (VALUES (0, 'enqueued', s.enqueued), (1, 'reserved', s.reserved), (2, 'completed', s.completed), (3, 'failed', s.failed), (4, 'retried', s.retried), (5, 'dead_lettered', s.dead_lettered), (6, 'lease_expired', s.lease_expired), (7, 'throttled_cap', s.throttled_cap), (8, 'throttled_rate', s.throttled_rate), (9, 'dropped', s.dropped), (10, 'snoozed', s.snoozed), (11, 'cancelled', s.cancelled)) v(o, event, n)
			ORDER BY s.queue, v.o);

		out := out || throttle_jobs._prom_histogram('wait', 'throttle_jobs_wait_seconds',
													'Time from ready (run_at) to start (reservation).');
		out := out || throttle_jobs._prom_histogram('run', 'throttle_jobs_run_seconds',
													'Time from start (reservation) to completion, of completed jobs.');

		out := out || ARRAY['# HELP throttle_jobs_key_throttled_total Jobs held back by a key, by its cap (event="throttled_cap") or its rate (event="throttled_rate").',
							'# TYPE throttle_jobs_key_throttled_total counter'];
		out := out || ARRAY(
			SELECT pg_catalog.format('throttle_jobs_key_throttled_total{key="%s",event="%s"} %s',
									 throttle_jobs._prom_label(k.key), v.event, v.n)
			FROM pg_catalog.unnest(ks) k,
				 LATERAL (VALUES (1, 'throttled_cap', k.throttled_cap), (2, 'throttled_rate', k.throttled_rate)) v(o, event, n)
			ORDER BY k.key, v.o);

		out := out || ARRAY['# HELP throttle_jobs_key_throttled_seconds How long the key has held jobs back without admitting one (0: not throttled).',
							'# TYPE throttle_jobs_key_throttled_seconds gauge'];
		out := out || ARRAY(
			SELECT pg_catalog.format('throttle_jobs_key_throttled_seconds{key="%s"} %s',
									 throttle_jobs._prom_label(k.key),
									 coalesce(pg_catalog.date_part('epoch', pg_catalog.now() - k.throttled_since), 0))
			FROM pg_catalog.unnest(ks) k ORDER BY k.key);
	END IF;

	-- one gauge per key_stats column, for the keys where it applies
	FOR g IN SELECT * FROM (VALUES
			(1, 'running', 'throttle_jobs_key_running', 'Running jobs holding a capped key.'),
			(2, 'max_running', 'throttle_jobs_key_max_running', 'The concurrency cap in force for a key.'),
			(3, 'tokens', 'throttle_jobs_key_tokens', 'Tokens left in a token bucket key.'),
			(4, 'window_used', 'throttle_jobs_key_window_used', 'Admissions (cost units) used in a window key''s current window.'),
			(5, 'adaptive_factor', 'throttle_jobs_key_adaptive_factor', 'Share of an adaptive rate limit in force.')
		) v(o, col, metric, help) ORDER BY v.o
	LOOP
		out := out || ARRAY['# HELP ' || g.metric || ' ' || g.help, '# TYPE ' || g.metric || ' gauge'];
		out := out || ARRAY(
			SELECT pg_catalog.format('%s{key="%s"} %s', g.metric, throttle_jobs._prom_label(k.key),
									 pg_catalog.to_jsonb(k) ->> g.col)
			FROM pg_catalog.unnest(ks) k
			WHERE pg_catalog.to_jsonb(k) ->> g.col IS NOT NULL
			ORDER BY k.key);
	END LOOP;
	RETURN pg_catalog.array_to_string(out, E'\n') || E'\n';
END
$$;
COMMENT ON FUNCTION throttle_jobs.metrics() IS 'The statistics in Prometheus text exposition format (queue, key, state and event labels).';

REVOKE ALL ON throttle_jobs.queue_stats, throttle_jobs.key_stats, throttle_jobs.throughput FROM PUBLIC;
REVOKE ALL ON FUNCTION throttle_jobs.stats_queues(), throttle_jobs._stats_histograms(),
	throttle_jobs.stats_keys(), throttle_jobs.stats_state(), throttle_jobs.stats_key_rows(),
	throttle_jobs._stats_note(integer, text, bigint, timestamptz, integer),
	throttle_jobs._reset_stats(integer), throttle_jobs._stats_forget(), throttle_jobs.stats_lag(integer, timestamptz),
	throttle_jobs.reset_stats(text), throttle_jobs._prom_label(text),
	throttle_jobs._prom_value(double precision), throttle_jobs.metrics() FROM PUBLIC;
-- Functions that a view calls run with the privileges of the reader, who
-- therefore needs EXECUTE on them; they reveal only statistics.
GRANT EXECUTE ON FUNCTION throttle_jobs.stats_queues(), throttle_jobs.stats_keys(),
	throttle_jobs.stats_state(), throttle_jobs.stats_lag(integer, timestamptz),
	throttle_jobs.stats_key_rows(), throttle_jobs.metrics()
	TO pg_monitor, throttle_jobs_admin;
GRANT SELECT ON throttle_jobs.queue_stats, throttle_jobs.key_stats, throttle_jobs.throughput
	TO pg_monitor, throttle_jobs_admin;
GRANT USAGE ON SCHEMA throttle_jobs TO pg_monitor;
GRANT EXECUTE ON FUNCTION throttle_jobs.reset_stats(text) TO throttle_jobs_admin;
