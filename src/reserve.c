/*-------------------------------------------------------------------------
 *
 * reserve.c
 *		reserve(): leasing the best ready jobs of a queue to a worker.
 *
 * One statement locks the chosen rows with FOR UPDATE SKIP LOCKED in a
 * MATERIALIZED CTE, evaluated exactly once, and leases exactly the rows it
 * locked: a locking sub-select with LIMIT inside a join can be re-run and
 * lock more rows than it returns (PostgreSQL bug #15715), a CTE cannot.
 * The rows are then found by primary key from an array of their ids, so
 * that the kept generic plan (which cannot know max_jobs) never merges
 * them with a scan of the whole table.
 *
 * When limits exist, reservation walks the ready jobs in order through a
 * cursor and admits them one by one (tj_admit).  When a job's key is at its
 * cap, or its rate key refuses it, the key's ready jobs in the queue move to
 * the key's waiting list (parking.c), so that no later reservation walks
 * them until the key can take them, and this one skips them at no cost.
 * First, the waiting jobs that keys can take now are released
 * (tj_release_pending).  A job whose key another transaction is admitting
 * for right now is skipped.  A job is locked only when it is taken or
 * parked.
 *
 * Either way, each priority level's scan starts at its skip hint, where its
 * ready jobs begin, and not at the start of the level, so that dead index
 * entries kept by an old snapshot are not walked (ready_hint.c states the
 * rules; round-robin queues and queues without hints walk as before).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_reserve);

#define RESERVED_COLUMNS \
	"j.id, j.payload, j.attempt, coalesce(j.max_attempts, q.max_attempts)," \
	" j.lease_token, j.lease_until, j.priority, j.concurrency_key," \
	" j.rate_limit_key, j.enqueued_at, j.run_at, j.rr_rank"

/*
 * Reservation when no limits exist, queue lookup and that test included:
 * nothing when limits exist, or the queue is unknown, paused or has no ready
 * job (the caller tells which).  Only for READ COMMITTED, where the
 * statement's snapshot is as new as tj_limits_exist()'s.
 */
#define RESERVE_SQL(queue_cond, level_cond, order) \
	"WITH q AS MATERIALIZED (" \
	"  SELECT q.id, q.name, q.lease, q.max_attempts FROM throttle_jobs.queue q" \
	"   WHERE " queue_cond " AND NOT q.paused" \
	"     AND NOT EXISTS (SELECT FROM throttle_jobs.key_limit))," \
	" picked AS MATERIALIZED (" \
	"  SELECT j.id FROM throttle_jobs.job j" \
	"   WHERE j.queue_id = (SELECT q.id FROM q)" level_cond " AND j.state = 'available'" \
	"     AND j.run_at <= $2" \
	"   ORDER BY " order \
	"   LIMIT $3" \
	"   FOR UPDATE SKIP LOCKED)" \
	" UPDATE throttle_jobs.job j" \
	"    SET state = 'running', attempt = j.attempt + 1," \
	"        lease_token = pg_catalog.gen_random_uuid(), lease_until = $2 + coalesce($4, q.lease)," \
	"        reserved_at = $2, worker = $5" \
	"   FROM q" \
	"  WHERE j.id = ANY (ARRAY(SELECT picked.id FROM picked))" \
	" RETURNING " RESERVED_COLUMNS ", q.name, q.id"

static TJStatement reserve_stmt = {
	RESERVE_SQL("q.name = $1", "", "j.priority DESC, j.rr_rank, j.run_at, j.id"),
	5, {TEXTOID, TIMESTAMPTZOID, INT8OID, INTERVALOID, TEXTOID}, NULL, TJ_GENERIC
};

/*
 * reserve_stmt for one priority level ($7) of queue $6, its index scan
 * starting at the level's skip hint ($8, $9, $10): equalities on the leading
 * columns of job_ready_idx and a row comparison on the rest, so that the
 * hint is where the scan starts, not a filter (ready_hint.c).
 */
static TJStatement reserve_level_stmt = {
	RESERVE_SQL("q.id = $6 AND q.name = $1",
				" AND j.priority = $7 AND (j.rr_rank, j.run_at, j.id) >= ($8, $9, $10)",
				"j.rr_rank, j.run_at, j.id"),
	10, {TEXTOID, TIMESTAMPTZOID, INT8OID, INTERVALOID, TEXTOID,
		INT4OID, INT2OID, INT8OID, TIMESTAMPTZOID, INT8OID}, NULL, TJ_GENERIC
};

/*
 * The priority levels that hold ready jobs of queue $1, highest first (a
 * walk that jumps from level to level), for a queue that has no skip hints
 * yet.
 */
static TJStatement ready_levels_stmt = {
	"WITH RECURSIVE p AS ("
	"  (SELECT j.priority FROM throttle_jobs.job j"
	"    WHERE j.queue_id = $1 AND j.state = 'available' ORDER BY j.priority DESC LIMIT 1)"
	"  UNION ALL"
	"  SELECT (SELECT j.priority FROM throttle_jobs.job j"
	"           WHERE j.queue_id = $1 AND j.state = 'available' AND j.priority < p.priority"
	"           ORDER BY j.priority DESC LIMIT 1)"
	"    FROM p WHERE p.priority IS NOT NULL)"
	" SELECT p.priority FROM p WHERE p.priority IS NOT NULL"
	" LIMIT " CppAsString2(TJ_HINT_LEVELS) " + 1",
	1, {INT4OID}, NULL, TJ_GENERIC
};

/*
 * The ready jobs of a queue, best first (read through a cursor, of which
 * reservation reads the first few rows: planned for them, it walks
 * job_ready_idx instead of sorting every ready job).
 */
#define CANDIDATE_COLUMNS \
	"j.id, j.concurrency_key, j.rate_limit_key, j.cost, j.rr_rank, j.run_at"
#define CANDIDATE_NCOLUMNS 6

static TJStatement candidates_stmt = {
	"SELECT " CANDIDATE_COLUMNS " FROM throttle_jobs.job j"
	" WHERE j.queue_id = $1 AND j.state = 'available' AND j.run_at <= $2"
	" ORDER BY j.priority DESC, j.rr_rank, j.run_at, j.id",
	2, {INT4OID, TIMESTAMPTZOID}, NULL, CURSOR_OPT_FAST_PLAN | TJ_GENERIC
};

/* candidates_stmt for one priority level ($3) from its skip hint ($4-$6) */
static TJStatement level_candidates_stmt = {
	"SELECT " CANDIDATE_COLUMNS " FROM throttle_jobs.job j"
	" WHERE j.queue_id = $1 AND j.priority = $3 AND j.state = 'available'"
	"   AND (j.rr_rank, j.run_at, j.id) >= ($4, $5, $6) AND j.run_at <= $2"
	" ORDER BY j.rr_rank, j.run_at, j.id",
	6, {INT4OID, TIMESTAMPTZOID, INT2OID, INT8OID, TIMESTAMPTZOID, INT8OID}, NULL,
	CURSOR_OPT_FAST_PLAN | TJ_GENERIC
};

/*
 * The first $3 of them, in one statement (no cursor), and whether notes or
 * due rate keys wait to be looked at (tj_release_pending) first.
 */
#define PENDING_COLUMN \
	"(SELECT EXISTS (SELECT FROM throttle_jobs.key_recheck))" \
	" OR (SELECT EXISTS (SELECT FROM throttle_jobs.key_rate_state s WHERE s.next_at <= $2))"

static TJStatement first_candidates_stmt = {
	"SELECT " CANDIDATE_COLUMNS ", " PENDING_COLUMN
	"  FROM throttle_jobs.job j"
	" WHERE j.queue_id = $1 AND j.state = 'available' AND j.run_at <= $2"
	" ORDER BY j.priority DESC, j.rr_rank, j.run_at, j.id LIMIT $3",
	3, {INT4OID, TIMESTAMPTZOID, INT8OID}, NULL, TJ_GENERIC
};

/* first_candidates_stmt for one priority level ($4) from its skip hint ($5-$7) */
static TJStatement level_first_candidates_stmt = {
	"SELECT " CANDIDATE_COLUMNS ", " PENDING_COLUMN
	"  FROM throttle_jobs.job j"
	" WHERE j.queue_id = $1 AND j.priority = $4 AND j.state = 'available'"
	"   AND (j.rr_rank, j.run_at, j.id) >= ($5, $6, $7) AND j.run_at <= $2"
	" ORDER BY j.rr_rank, j.run_at, j.id LIMIT $3",
	7, {INT4OID, TIMESTAMPTZOID, INT8OID, INT2OID, INT8OID, TIMESTAMPTZOID, INT8OID}, NULL,
	TJ_GENERIC
};

/* Takes one admitted job, if it is still ready and nobody holds it */
#define TAKE_SQL(set_released) \
	"WITH l AS MATERIALIZED (" \
	"  SELECT j.id FROM throttle_jobs.job j" \
	"   WHERE j.id = $1 AND j.state = 'available' AND j.run_at <= $2" \
	"   FOR UPDATE SKIP LOCKED)" \
	" UPDATE throttle_jobs.job j" \
	"    SET state = 'running', attempt = j.attempt + 1," \
	"        lease_token = pg_catalog.gen_random_uuid(), lease_until = $3," \
	"        reserved_at = $2, worker = $4" set_released \
	"   FROM l, throttle_jobs.queue q WHERE j.id = l.id AND q.id = $5" \
	" RETURNING " RESERVED_COLUMNS

static TJStatement take_stmt = {
	TAKE_SQL(", released_at = NULL"),
	5, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, INT4OID}, NULL, TJ_GENERIC
};

/* take_stmt on a database still at 0.1.0 (see tj_schema_has_released_at) */
static TJStatement take_010_stmt = {
	TAKE_SQL(""),
	5, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, INT4OID}, NULL, TJ_GENERIC
};

#define SCAN_BATCH 32

/* Whether this backend's last reservation found limits (it then looks for them first) */
static bool limits_seen = false;
#define TJ_MAX_WALK 200000		/* rows one limited reservation walks at most */

/*
 * The jobs one limited reservation of max_jobs judges at most (walks to
 * the admission check; each costs statements under its keys' mutexes):
 * VISIT_BASE, so that a call for a few jobs still gets past a crowd of
 * jobs whose keys other transactions are admitting for, plus VISIT_PER_JOB
 * for each job asked for, so that the bound grows with the call.
 */
#define VISIT_BASE		1000
#define VISIT_PER_JOB	10

/*
 * Keys found blocked during one reservation, with when they may pass, each
 * as a concurrency key or as a rate key: one string may be both, for
 * different jobs, and parking a concurrency key leaves the jobs that have
 * it as their rate key ready (and the other way round).
 */
typedef struct BlockedKeys
{
	int			n;
	int			size;
	char	  **keys;
	bool	   *rate;			/* a rate key (else a concurrency key) */
	TimestampTz *until;			/* 0: at its cap; DT_NOEND: busy (skip, don't
								 * park); else rate-blocked until then */
} BlockedKeys;

static TimestampTz *
blocked_find(BlockedKeys *b, const char *key, bool rate)
{
	if (key == NULL)
		return NULL;
	for (int i = 0; i < b->n; i++)
		if (b->rate[i] == rate && strcmp(b->keys[i], key) == 0)
			return &b->until[i];
	return NULL;
}

static void
blocked_add(BlockedKeys *b, const char *key, bool rate, TimestampTz until)
{
	if (b->n == b->size)
	{
		b->size = Max(8, b->size * 2);
		b->keys = b->keys ? repalloc(b->keys, sizeof(char *) * b->size)
			: palloc(sizeof(char *) * b->size);
		b->rate = b->rate ? repalloc(b->rate, sizeof(bool) * b->size)
			: palloc(sizeof(bool) * b->size);
		b->until = b->until ? repalloc(b->until, sizeof(TimestampTz) * b->size)
			: palloc(sizeof(TimestampTz) * b->size);
	}
	b->keys[b->n] = pstrdup(key);
	b->rate[b->n] = rate;
	b->until[b->n] = until;
	b->n++;
}

/* Columns of reserve_stmt's result, 1-based */
enum
{
	R_ID = 1, R_PAYLOAD, R_ATTEMPT, R_MAX_ATTEMPTS, R_LEASE_TOKEN,
	R_LEASE_UNTIL, R_PRIORITY, R_CONCURRENCY_KEY, R_RATE_LIMIT_KEY,
	R_ENQUEUED_AT, R_RUN_AT, R_RR_RANK, R_QUEUE_NAME, R_QUEUE_ID
};

typedef struct ReservedRow
{
	uint64		row;			/* index in SPI_tuptable */
	int16		priority;
	int64		rr_rank;
	TimestampTz run_at;
	int64		id;
} ReservedRow;

/* Reservation order: priority desc, rr_rank, run_at, id */
static int
reserved_row_cmp(const void *a, const void *b)
{
	const ReservedRow *x = a;
	const ReservedRow *y = b;

	if (x->priority != y->priority)
		return x->priority > y->priority ? -1 : 1;
	if (x->rr_rank != y->rr_rank)
		return x->rr_rank < y->rr_rank ? -1 : 1;
	if (x->run_at != y->run_at)
		return x->run_at < y->run_at ? -1 : 1;
	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return 0;
}

/* Adds row `r` of the current SPI result (RESERVED_COLUMNS) to the output. */
static void
emit_row(ReturnSetInfo *rsinfo, uint64 r, Datum queue_name)
{
	Datum		out[11];
	bool		outnull[11];
	bool		isnull;

	memset(outnull, 0, sizeof(outnull));
	out[0] = tj_get_datum(r, R_ID, &outnull[0]);
	out[1] = queue_name;
	out[2] = tj_get_datum(r, R_PAYLOAD, &outnull[2]);
	out[3] = tj_get_datum(r, R_ATTEMPT, &outnull[3]);
	out[4] = tj_get_datum(r, R_MAX_ATTEMPTS, &outnull[4]);
	out[5] = tj_get_datum(r, R_LEASE_TOKEN, &outnull[5]);
	out[6] = tj_get_datum(r, R_LEASE_UNTIL, &outnull[6]);
	out[7] = Int32GetDatum((int32) DatumGetInt16(tj_get_datum(r, R_PRIORITY, &isnull)));
	out[8] = tj_get_datum(r, R_CONCURRENCY_KEY, &outnull[8]);
	out[9] = tj_get_datum(r, R_RATE_LIMIT_KEY, &outnull[9]);
	out[10] = tj_get_datum(r, R_ENQUEUED_AT, &outnull[10]);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, outnull);
}

/* One candidate read from the ready jobs */
typedef struct Candidate
{
	int64		id;
	char	   *ckey;
	char	   *rkey;
	int32		cost;
	TJReadyKey	key;			/* where it stands in its priority level */
} Candidate;

/* What one limited reservation has done so far */
typedef struct LimitedCall
{
	ReturnSetInfo *rsinfo;
	const TJQueue *queue;
	text	   *worker;
	int32		max_jobs;
	TimestampTz now;
	TimestampTz lease_until;
	Datum		queue_name;
	TJLimitCache cache;
	BlockedKeys blocked;
	int32		taken;
	int64		visited;		/* jobs judged (each costs statements) */
	int64		walked;			/* jobs looked at */
	/* the level being walked from its skip hint: how far no job is left ready */
	bool		passing;		/* every candidate so far left ready, or is locked */
	bool		passed_any;
	TJReadyKey	passed;			/* the last such candidate */
} LimitedCall;

/*
 * Reads the candidates of the current SPI result (id, concurrency key,
 * rate key, cost) into out[].
 */
static uint64
read_candidates(Candidate *out)
{
	uint64		n = SPI_processed;

	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		out[i].id = DatumGetInt64(tj_get_datum(i, 1, &isnull));
		out[i].ckey = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		out[i].rkey = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
		out[i].cost = DatumGetInt32(tj_get_datum(i, 4, &isnull));
		out[i].key.rr_rank = DatumGetInt64(tj_get_datum(i, 5, &isnull));
		out[i].key.run_at = DatumGetTimestampTz(tj_get_datum(i, 6, &isnull));
		out[i].key.id = out[i].id;
	}
	return n;
}

/*
 * After judging candidate c: while every candidate of the level so far was
 * taken, parked, dead-lettered, gone or locked by another transaction, the
 * skip hint may rise past c; a candidate left ready (its key busy) stops it.
 */
static void
note_passed(LimitedCall *call, const Candidate *c, bool passable)
{
	if (!passable)
		call->passing = false;
	else if (call->passing)
	{
		call->passed = c->key;
		call->passed_any = true;
	}
}

static bool read_hints(int32 queue_id, TimestampTz now, TJHintRead *hints);

/* Judges candidates in order, taking the admitted ones, until max_jobs. */
static void
judge(LimitedCall *call, Candidate *batch, uint64 n)
{
	Datum		values[5];

	for (uint64 i = 0; i < n && call->taken < call->max_jobs; i++)
	{
		Candidate  *c = &batch[i];
		TimestampTz *known;
		const char *blocked_key = NULL;
		TimestampTz blocked_until = 0;
		TimestampTz admitted_at;
		TJAdmission r;
		bool		isnull;

		/* jobs of a key already parked in this call cost nothing more */
		call->walked++;
		if (((known = blocked_find(&call->blocked, c->ckey, false)) != NULL && *known != DT_NOEND) ||
			((known = blocked_find(&call->blocked, c->rkey, true)) != NULL && *known != DT_NOEND))
		{
			note_passed(call, c, true);
			continue;
		}
		call->visited++;
		/* a key another transaction is admitting for right now: skip */
		if (blocked_find(&call->blocked, c->ckey, false) || blocked_find(&call->blocked, c->rkey, true))
		{
			note_passed(call, c, false);
			continue;
		}

		r = tj_admit(&call->cache, c->ckey, c->rkey, c->cost, call->now, &blocked_key,
					 &blocked_until, &admitted_at);
		if (r == TJ_ADMIT_OK)
		{
			/* reserved_at is the admission time the rate limiter recorded */
			values[0] = Int64GetDatum(c->id);
			values[1] = TimestampTzGetDatum(admitted_at);
			values[2] = TimestampTzGetDatum(call->lease_until + (admitted_at - call->now));
			values[3] = PointerGetDatum(call->worker);
			values[4] = Int32GetDatum(call->queue->id);
			if (tj_execute(tj_schema_has_released_at() ? &take_stmt : &take_010_stmt,
						   values, NULL, false, 0, SPI_OK_UPDATE_RETURNING) == 1)
			{
				emit_row(call->rsinfo, 0, call->queue_name);
				tj_stats_reserved(call->queue->id,
								  DatumGetTimestampTz(tj_get_datum(0, R_RUN_AT, &isnull)),
								  admitted_at, c->ckey, c->rkey);
				call->taken++;
			}
			SPI_freetuptable(SPI_tuptable);
		}
		else if (r == TJ_ADMIT_BUSY)
		{
			if (c->ckey)
				blocked_add(&call->blocked, c->ckey, false, DT_NOEND);
			if (c->rkey)
				blocked_add(&call->blocked, c->rkey, true, DT_NOEND);
			note_passed(call, c, false);
			continue;
		}
		else if (r == TJ_ADMIT_RATE && blocked_until == DT_NOEND)
		{
			/*
			 * Only this job is too big for its key (it was enqueued, or
			 * running, before its limit shrank): the others may pass.  It
			 * goes to the dead letters, as the limit change sent the others.
			 */
			if (!tj_dead_letter_if_oversized(&call->cache, c->id, blocked_key, c->cost, call->now))
				tj_park_oversized(c->id, blocked_key, call->queue->id);
		}
		else
		{
			/* a cap parks with no time; a rate until its next admission */
			blocked_add(&call->blocked, blocked_key, r == TJ_ADMIT_RATE,
						r == TJ_ADMIT_CAP ? 0 : blocked_until);
			tj_park_ready(blocked_key, r == TJ_ADMIT_CAP, blocked_until, call->queue->id,
						  call->now);
		}
		note_passed(call, c, true);
	}
}

/*
 * Judges the candidates that a cursor over `stmt` returns, in batches,
 * until max_jobs are taken or a bound is reached: jobs judged (each costs
 * statements), and jobs walked past because their key was parked earlier
 * in this call (nearly free, but a cursor opened before the parking still
 * shows them all once).
 */
static void
walk_cursor(LimitedCall *call, TJStatement *stmt, Datum *values, Candidate *batch,
			int64 max_visit)
{
	Portal		portal = SPI_cursor_open(NULL, tj_plan(stmt), values, NULL, false);

	while (call->taken < call->max_jobs && call->visited < max_visit && call->walked < TJ_MAX_WALK)
	{
		uint64		n;

		SPI_cursor_fetch(portal, true, SCAN_BATCH);
		n = SPI_processed;
		if (n == 0)
			break;
		read_candidates(batch);
		SPI_freetuptable(SPI_tuptable);
		judge(call, batch, n);
	}
	SPI_cursor_close(portal);
}

/*
 * The limited walk over all ready jobs of the queue, best first, for a
 * queue without skip hints.  The first few candidates come from one
 * statement that also tells whether notes or due rate keys wait; only then,
 * or when those few were not enough, does the reservation release waiting
 * jobs first and walk the ready jobs through a cursor.
 */
static void
walk_limited(LimitedCall *call, Candidate *batch, int32 first, int64 max_visit)
{
	Datum		values[3];
	uint64		n;
	bool		isnull;

	values[0] = Int32GetDatum(call->queue->id);
	values[1] = TimestampTzGetDatum(call->now);
	values[2] = Int64GetDatum(first);
	n = tj_execute(&first_candidates_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	if (n > 0 && !DatumGetBool(tj_get_datum(0, CANDIDATE_NCOLUMNS + 1, &isnull)))
	{
		read_candidates(batch);
		SPI_freetuptable(SPI_tuptable);
		judge(call, batch, n);
		if (call->taken == call->max_jobs || n < first)
			return;
	}
	else
	{
		/* waiting jobs whose keys can take them now come back first */
		SPI_freetuptable(SPI_tuptable);
		tj_release_pending(&call->cache, call->now);
	}

	/* jobs skipped above are met again, and passed over at once */
	walk_cursor(call, &candidates_stmt, values, batch, max_visit);
}

/*
 * Releases the waiting jobs that keys can take now, and reads the hints
 * anew (which publishes them at once), so that this call's walk, started
 * again, meets them.  The levels from the `from`th on were not walked: the
 * walks from their start that the first read gave go back first, for the
 * new read to give again.  False when the queue has no hints any more.
 */
static bool
release_waiting(LimitedCall *call, TJHintRead *hints, int from)
{
	tj_release_pending(&call->cache, call->now);
	tj_hint_unwalk(call->queue->id, hints, from, call->now);
	return read_hints(call->queue->id, call->now, hints);
}

/*
 * The limited walk level by level, each from its skip hint (ready_hint.c),
 * as walk_limited does it over the whole queue; the hint of each level then
 * rises past the candidates that no longer wait there (note_passed).
 * Waiting jobs released by this call are published at once, so that the
 * walk, started again from the new hints, meets them.  False when the
 * queue turned out to have no hints (the caller walks without them).
 */
static bool
walk_limited_levels(LimitedCall *call, TJHintRead *hints, Candidate *batch, int32 first,
					int64 max_visit)
{
	Datum		values[7];
	bool		released = false;
	bool		seen_any = false;
	uint64		n;
	bool		isnull;
	int			i;

	values[0] = Int32GetDatum(call->queue->id);
	values[1] = TimestampTzGetDatum(call->now);
	for (i = 0; i < hints->nlevels && call->taken < call->max_jobs; i++)
	{
		const TJHintLevel *level = &hints->levels[i];

		call->passing = true;
		call->passed_any = false;
		values[2] = Int64GetDatum(first);
		values[3] = Int16GetDatum(level->priority);
		values[4] = Int64GetDatum(level->hint.rr_rank);
		values[5] = TimestampTzGetDatum(level->hint.run_at);
		values[6] = Int64GetDatum(level->hint.id);
		n = tj_execute(&level_first_candidates_stmt, values, NULL, false, 0, SPI_OK_SELECT);
		if (n > 0 && !released && DatumGetBool(tj_get_datum(0, CANDIDATE_NCOLUMNS + 1, &isnull)))
		{
			/* waiting jobs whose keys can take them now come back first */
			SPI_freetuptable(SPI_tuptable);
			released = true;
			if (!release_waiting(call, hints, i))
				return false;
			i = -1;
			continue;
		}
		seen_any |= n > 0;
		read_candidates(batch);
		SPI_freetuptable(SPI_tuptable);
		judge(call, batch, n);
		if (call->taken < call->max_jobs && n == (uint64) first &&
			call->visited < max_visit && call->walked < TJ_MAX_WALK)
		{
			/* (level_candidates_stmt's parameters: those of the first without $3) */
			Datum		cvalues[6] = {values[0], values[1], values[3], values[4], values[5], values[6]};

			call->passing = true;
			walk_cursor(call, &level_candidates_stmt, cvalues, batch, max_visit);
		}
		if (call->passed_any)
			tj_hint_raise(call->queue->id, level->priority, hints, &call->passed, call->now);

		if (i == hints->nlevels - 1 && !seen_any && !released)
		{
			/* nothing ready: waiting jobs may come back, then walk again */
			released = true;
			if (!release_waiting(call, hints, hints->nlevels))
				return false;
			i = -1;
		}
	}
	/* the levels not scanned keep their walk from the start */
	if (i < hints->nlevels)
		tj_hint_unwalk(call->queue->id, hints, i, call->now);
	if (hints->nlevels == 0 && !released)
	{
		if (!release_waiting(call, hints, 0))
			return false;
		if (hints->nlevels > 0)
			return walk_limited_levels(call, hints, batch, first, max_visit);
	}
	return true;
}

/*
 * Reservation when limits exist (see the file header).  The number of jobs
 * it looks at is bounded, so a crowd of jobs whose keys are busy elsewhere
 * cannot make one call slow.  Connected to SPI by the caller.
 */
static void
reserve_limited(ReturnSetInfo *rsinfo, const TJQueue *queue, text *worker,
				int32 max_jobs, TimestampTz now, TimestampTz lease_until)
{
	LimitedCall call = {0};
	int64		max_visit = VISIT_BASE + VISIT_PER_JOB * (int64) max_jobs;
	int32		first = Min(SCAN_BATCH, max_jobs + 3);
	Candidate  *batch = palloc(sizeof(Candidate) * SCAN_BATCH);
	TJHintRead	hints;

	call.rsinfo = rsinfo;
	call.queue = queue;
	call.worker = worker;
	call.max_jobs = max_jobs;
	call.now = now;
	call.lease_until = lease_until;
	call.queue_name = CStringGetTextDatum(queue->name);

	if (tj_hints_enabled() && read_hints(queue->id, now, &hints) &&
		walk_limited_levels(&call, &hints, batch, first, max_visit))
		return;
	walk_limited(&call, batch, first, max_visit);
}

/*
 * Adds the n rows of the current SPI result (RESERVED_COLUMNS, queue name
 * and id) to the output in queue order; *last gets the last one's key.
 */
static void
emit_reserved(ReturnSetInfo *rsinfo, uint64 n, TimestampTz now, TJReadyKey *last)
{
	ReservedRow *rows = palloc(sizeof(ReservedRow) * n);
	Datum		queue_name;
	bool		isnull;

	/* UPDATE ... RETURNING has no order: sort as the queue orders jobs. */
	for (uint64 i = 0; i < n; i++)
	{
		rows[i].row = i;
		rows[i].id = DatumGetInt64(tj_get_datum(i, R_ID, &isnull));
		rows[i].priority = DatumGetInt16(tj_get_datum(i, R_PRIORITY, &isnull));
		rows[i].run_at = DatumGetTimestampTz(tj_get_datum(i, R_RUN_AT, &isnull));
		rows[i].rr_rank = DatumGetInt64(tj_get_datum(i, R_RR_RANK, &isnull));
	}
	qsort(rows, n, sizeof(ReservedRow), reserved_row_cmp);

	queue_name = tj_get_datum(0, R_QUEUE_NAME, &isnull);
	for (uint64 i = 0; i < n; i++)
	{
		emit_row(rsinfo, rows[i].row, queue_name);
		tj_stats_reserved(DatumGetInt32(tj_get_datum(rows[i].row, R_QUEUE_ID, &isnull)),
						  rows[i].run_at, now, NULL, NULL);
	}
	last->rr_rank = rows[n - 1].rr_rank;
	last->run_at = rows[n - 1].run_at;
	last->id = rows[n - 1].id;
	pfree(rows);
}

/*
 * The ids of the queues this backend reserved from lately, by name, so that
 * reservation finds a queue's skip hints before its statement runs.  A
 * stale entry (a queue dropped and made again) only makes the statement
 * find nothing once: the lookup that follows corrects it.
 */
#define QUEUE_IDS	16

static struct
{
	char	   *name;
	int32		id;
}			queue_ids[QUEUE_IDS];
static int	queue_ids_next = 0;

static int32
cached_queue_id(text *name)
{
	char	   *s = text_to_cstring(name);

	for (int i = 0; i < QUEUE_IDS; i++)
		if (queue_ids[i].name != NULL && strcmp(queue_ids[i].name, s) == 0)
			return queue_ids[i].id;
	return 0;
}

static void
remember_queue_id(text *name, int32 id)
{
	char	   *s = text_to_cstring(name);

	for (int i = 0; i < QUEUE_IDS; i++)
		if (queue_ids[i].name != NULL && strcmp(queue_ids[i].name, s) == 0)
		{
			queue_ids[i].id = id;
			return;
		}
	if (queue_ids[queue_ids_next].name != NULL)
		pfree(queue_ids[queue_ids_next].name);
	queue_ids[queue_ids_next].name = MemoryContextStrdup(TopMemoryContext, s);
	queue_ids[queue_ids_next].id = id;
	queue_ids_next = (queue_ids_next + 1) % QUEUE_IDS;
}

/*
 * The queue's priority levels with their skip hints, read before the
 * statements that use them take their snapshots (ready_hint.c); for a
 * queue met for the first time, the levels that hold ready jobs are found
 * first.  False when the queue has no hints: walk as without them.
 */
static bool
read_hints(int32 queue_id, TimestampTz now, TJHintRead *hints)
{
	bool		discover;
	int16		levels[TJ_HINT_LEVELS + 1];
	Datum		values[1];
	uint64		n;
	bool		isnull;

	if (!tj_hint_read(queue_id, now, hints, &discover))
		return false;
	if (!discover)
		return true;
	values[0] = Int32GetDatum(queue_id);
	n = tj_execute(&ready_levels_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	for (uint64 i = 0; i < n; i++)
		levels[i] = DatumGetInt16(tj_get_datum(i, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return tj_hint_discovered(queue_id, levels, (int) n, hints);
}

/*
 * reserve_level_stmt level by level, highest priority first, each scan
 * starting at its level's skip hint, which then rises past the jobs taken.
 * -1 when the queue has no hints (the caller walks as without them), else
 * the number of jobs reserved.  Connected to SPI by the caller.
 */
static int64
reserve_hinted(ReturnSetInfo *rsinfo, text *queue_name_arg, int32 queue_id, text *worker,
			   int32 max_jobs, Interval *lease, TimestampTz now)
{
	TJHintRead	hints;
	Datum		values[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int64		taken = 0;
	int			i;

	if (!read_hints(queue_id, now, &hints))
		return -1;

	values[0] = PointerGetDatum(queue_name_arg);
	values[1] = TimestampTzGetDatum(now);
	values[3] = PointerGetDatum(lease);
	nulls[3] = lease ? ' ' : 'n';
	values[4] = PointerGetDatum(worker);
	values[5] = Int32GetDatum(queue_id);
	for (i = 0; i < hints.nlevels && taken < max_jobs; i++)
	{
		const TJHintLevel *level = &hints.levels[i];
		TJReadyKey	last;
		uint64		n;

		values[2] = Int64GetDatum(max_jobs - taken);
		values[6] = Int16GetDatum(level->priority);
		values[7] = Int64GetDatum(level->hint.rr_rank);
		values[8] = TimestampTzGetDatum(level->hint.run_at);
		values[9] = Int64GetDatum(level->hint.id);
		n = tj_execute(&reserve_level_stmt, values, nulls, false, 0, SPI_OK_UPDATE_RETURNING);
		if (n > 0)
		{
			emit_reserved(rsinfo, n, now, &last);
			tj_hint_raise(queue_id, level->priority, &hints, &last, now);
			taken += n;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	/* the levels not scanned keep their walk from the start */
	if (i < hints.nlevels)
		tj_hint_unwalk(queue_id, &hints, i, now);
	return taken;
}

/*
 * Reservation while no limits exist: true if it reserved jobs (added to
 * rsinfo), false if it found none, the admitting path is needed, or the
 * queue is unknown or paused.  Connected to SPI by the caller.
 */
static bool
reserve_fast(ReturnSetInfo *rsinfo, text *queue_name_arg, text *worker,
			 int32 max_jobs, Interval *lease, TimestampTz now)
{
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int32		queue_id = tj_hints_enabled() ? cached_queue_id(queue_name_arg) : 0;
	uint64		n;
	TJReadyKey	last;
	bool		isnull;

	if (queue_id != 0)
	{
		int64		taken = reserve_hinted(rsinfo, queue_name_arg, queue_id, worker,
										   max_jobs, lease, now);

		if (taken >= 0)
			return taken > 0;
	}

	values[0] = PointerGetDatum(queue_name_arg);
	values[1] = TimestampTzGetDatum(now);
	values[2] = Int64GetDatum(max_jobs);
	values[3] = PointerGetDatum(lease);
	nulls[3] = lease ? ' ' : 'n';
	values[4] = PointerGetDatum(worker);
	n = tj_execute(&reserve_stmt, values, nulls, false, 0, SPI_OK_UPDATE_RETURNING);
	if (n == 0)
		return false;
	if (tj_hints_enabled())
		remember_queue_id(queue_name_arg, DatumGetInt32(tj_get_datum(0, R_QUEUE_ID, &isnull)));
	emit_reserved(rsinfo, n, now, &last);
	return true;
}

/*
 * Worker names that start with TJ_WORKER_PREFIX are the extension's own:
 * the maintenance worker fails the running jobs of such a name once its
 * process is gone, so a worker that took one would lose its jobs.  Only the
 * background worker of that very name (this process) may use it.
 */
void
tj_check_worker_name(text *worker)
{
	char	   *name = text_to_cstring(worker);

	if (strncmp(name, TJ_WORKER_PREFIX, strlen(TJ_WORKER_PREFIX)) != 0)
		return;
	if (TJ_AM_BGWORKER &&
		(strcmp(name, psprintf(TJ_EXECUTOR_NAME, MyProcPid)) == 0 ||
		 strcmp(name, psprintf(TJ_MAINTENANCE_NAME, MyProcPid)) == 0))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("worker name \"%s\" is reserved", name),
			 errdetail("Names that start with \"%s\" belong to the extension's own background workers.",
					   TJ_WORKER_PREFIX),
			 errhint("Choose another worker name, such as host/pid.")));
}

/* max_jobs of reserve() and run_jobs(): 1 to throttle_jobs.max_batch_size */
void
tj_check_max_jobs(int32 max_jobs)
{
	if (max_jobs < 1 || max_jobs > tj_max_batch_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("max_jobs must be between 1 and %d, not %d", tj_max_batch_size, max_jobs),
				 errhint("throttle_jobs.max_batch_size sets the upper bound.")));
}

/*
 * Checks reserve()'s worker, max_jobs and lease arguments (lease may be
 * NULL: the queue's).
 */
void
tj_check_reserve_args(text *worker, int32 max_jobs, Interval *lease)
{
	tj_refuse_xact_snapshot();	/* work.c */
	tj_check_key(worker, "worker");
	tj_check_worker_name(worker);
	tj_check_max_jobs(max_jobs);
	if (lease)
		tj_check_lease(lease, "lease");
}

/*
 * Leases up to max_jobs of the queue's best ready jobs to the worker and
 * adds them to rsinfo's tuplestore, in queue order.  The arguments must
 * have passed tj_check_reserve_args; the caller must be connected to SPI.
 */
void
tj_reserve_jobs(ReturnSetInfo *rsinfo, text *queue_name_arg, text *worker,
				int32 max_jobs, Interval *lease)
{
	TJQueue		queue;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz lease_until;
	bool		xact_snapshot = IsolationUsesXactSnapshot();
	bool		tried_fast = false;

	/* a queue-wide cap (queue_cap.c) may allow fewer, or none */
	max_jobs = tj_queue_cap_room(queue_name_arg, max_jobs);
	if (max_jobs == 0)
		return;

	/*
	 * Under READ COMMITTED one statement does it all while no limits exist;
	 * a backend that found limits last time looks for them first.  Under
	 * REPEATABLE READ limits are looked for under the latest snapshot first
	 * (reserve_stmt may then still see, and stop at, a limit dropped since
	 * the transaction began: it reserves nothing, harmlessly).
	 */
	if (!xact_snapshot && !limits_seen)
	{
		tried_fast = true;
		if (reserve_fast(rsinfo, queue_name_arg, worker, max_jobs, lease, now))
			return;
	}
	limits_seen = tj_limits_exist();
	if (limits_seen)
	{
		tj_lookup_queue(queue_name_arg, &queue);
		if (queue.paused)
			return;
		lease_until = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
															  TimestampTzGetDatum(now),
															  IntervalPGetDatum(lease ? lease : &queue.lease)));
		reserve_limited(rsinfo, &queue, worker, max_jobs, now, lease_until);
		return;
	}
	if (!tried_fast && reserve_fast(rsinfo, queue_name_arg, worker, max_jobs, lease, now))
		return;
	/* unknown (an error), paused or empty */
	tj_lookup_queue(queue_name_arg, &queue);
	if (tj_hints_enabled() && cached_queue_id(queue_name_arg) != queue.id)
	{
		/* the hinted statements looked for another queue of that name */
		remember_queue_id(queue_name_arg, queue.id);
		if (!queue.paused)
			(void) reserve_fast(rsinfo, queue_name_arg, worker, max_jobs, lease, now);
	}
}

/* reserve(queue, worker, max_jobs, lease) returns setof reserved_job */
Datum
throttle_jobs_reserve(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TJCaller	caller;

	tj_require_not_null(fcinfo, 0, "queue name");
	tj_require_not_null(fcinfo, 1, "worker");
	tj_require_not_null(fcinfo, 2, "max_jobs");
	tj_check_reserve_args(PG_GETARG_TEXT_PP(1), PG_GETARG_INT32(2),
						  PG_ARGISNULL(3) ? NULL : PG_GETARG_INTERVAL_P(3));

	InitMaterializedSRF(fcinfo, 0);

	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	tj_check_queue(caller.role, PG_GETARG_TEXT_PP(0), TJ_PRIV_CONSUME);
	tj_reserve_jobs(rsinfo, PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1), PG_GETARG_INT32(2),
					PG_ARGISNULL(3) ? NULL : PG_GETARG_INTERVAL_P(3));
	SPI_finish();
	tj_caller_leave(&caller);
	return (Datum) 0;
}
