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
-- so with the free space left by fillfactor they stay HOT.
CREATE TABLE throttle_jobs.job (
	id					bigint NOT NULL,
	queue_id			integer NOT NULL,
	state				text NOT NULL DEFAULT 'available'
		CONSTRAINT job_state_check CHECK (state IN ('available', 'running')),
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
	errors				jsonb NOT NULL DEFAULT '[]',
	payload				jsonb NOT NULL,
	CONSTRAINT job_pkey PRIMARY KEY (id)
) WITH (fillfactor = 80);
COMMENT ON TABLE throttle_jobs.job IS 'Live jobs (available, scheduled or running); finished jobs move to job_archive or job_dead.';

CREATE SEQUENCE throttle_jobs.job_id_seq AS bigint;
ALTER SEQUENCE throttle_jobs.job_id_seq OWNED BY throttle_jobs.job.id;
ALTER TABLE throttle_jobs.job ALTER COLUMN id SET DEFAULT pg_catalog.nextval('throttle_jobs.job_id_seq');

-- Reservation order: priority desc, run_at, id; only ready rows are indexed.
CREATE INDEX job_ready_idx ON throttle_jobs.job (queue_id, priority DESC, run_at, id)
	WHERE state = 'available';
-- Lease expiry scans the running jobs (few: at most one per worker slot).
CREATE INDEX job_running_idx ON throttle_jobs.job (queue_id) WHERE state = 'running';
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
		EXCEPTION WHEN lock_not_available THEN
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
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION 'job id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- Only a job that is not running can be cancelled; a running job's worker
	-- holds its row lock only briefly, so skip rather than wait.
	WITH c AS (
		DELETE FROM throttle_jobs.job j
		WHERE j.id = cancel.id AND j.state = 'available'
		RETURNING j.*
	)
	INSERT INTO throttle_jobs.job_archive (id, queue_id, state, priority, run_at, attempt,
		max_attempts, cost, enqueued_at, reserved_at, finished_at, worker,
		concurrency_key, rate_limit_key, unique_key, errors, payload, result)
	SELECT c.id, c.queue_id, 'cancelled', c.priority, c.run_at, c.attempt,
		c.max_attempts, c.cost, c.enqueued_at, c.reserved_at, pg_catalog.now(), c.worker,
		c.concurrency_key, c.rate_limit_key, c.unique_key, c.errors, c.payload, NULL
	FROM c;
	RETURN FOUND;
END
$$;

CREATE FUNCTION throttle_jobs.retry_dead(id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
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
	FROM d;
	RETURN FOUND;
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
	RETURN n;
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
	   (j.errors -> (-1)) ->> 'error' AS last_error
FROM throttle_jobs.job j
JOIN throttle_jobs.queue q ON q.id = j.queue_id;
COMMENT ON VIEW throttle_jobs.jobs IS 'Live jobs: available, scheduled (run_at in the future) or running.';

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
					   throttle_jobs.fail(bigint, uuid, text, interval, boolean),
					   throttle_jobs.snooze(bigint, uuid, interval),
					   throttle_jobs.heartbeat(bigint, uuid, interval)
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
					   throttle_jobs.backoff_delay(integer, interval, double precision, interval, double precision, double precision)
	TO throttle_jobs_admin;

GRANT SELECT ON throttle_jobs.queues, throttle_jobs.jobs, throttle_jobs.running_jobs,
				throttle_jobs.dead_letters, throttle_jobs.archived_jobs
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
COMMENT ON FUNCTION throttle_jobs.fail(bigint, uuid, text, interval, boolean) IS 'Records a failed attempt; returns the new state (available or dead), or stale.';
COMMENT ON FUNCTION throttle_jobs.snooze(bigint, uuid, interval) IS 'Puts a reserved job back for later without consuming its attempt.';
COMMENT ON FUNCTION throttle_jobs.heartbeat(bigint, uuid, interval) IS 'Extends a lease; returns the new lease end, or NULL when the token is stale.';
COMMENT ON FUNCTION throttle_jobs.maintain() IS 'One maintenance pass: expire leases, enforce retention, manage archive partitions.';
COMMENT ON FUNCTION throttle_jobs.backoff_delay(integer, interval, double precision, interval, double precision, double precision) IS 'The retry delay after attempt n: min(max, base * factor^(n-1)) jittered by +-jitter, for a draw in [0, 1).';
COMMENT ON FUNCTION throttle_jobs.cancel(bigint) IS 'Cancels a job that is not running; true if it was cancelled.';
COMMENT ON FUNCTION throttle_jobs.retry_dead(bigint) IS 'Moves one dead job back to its queue with its attempts reset.';
COMMENT ON FUNCTION throttle_jobs.retry_dead(text, timestamptz, integer) IS 'Moves a queue''s dead jobs (those died after died_after, at most max_jobs) back; returns how many.';
COMMENT ON FUNCTION throttle_jobs.purge_dead(text, interval) IS 'Deletes a queue''s dead jobs older than older_than; returns how many.';
