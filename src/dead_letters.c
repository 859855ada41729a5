/*-------------------------------------------------------------------------
 *
 * dead_letters.c
 *		The dead letters (throttle_jobs.job_dead): how jobs enter them, and
 *		how they leave them at the request of those who manage their queue.
 *
 *		retry_dead(id), retry_dead(queue, died_after, max_jobs) and
 *		retry_dead_matching(queue, error_contains, died_after, died_before,
 *		max_jobs) move dead jobs back to the live table, due now, their
 *		attempts reset and their error history kept (move_back_stmt, the
 *		one statement that does it).  delete_dead(id), purge_dead(queue,
 *		older_than) and purge_dead_matching(queue, error_contains,
 *		died_after, died_before) delete them (purge_stmt).
 *
 * A dead job whose unique_key a live job of its queue holds again stays
 * dead: the batch forms skip it, retry_dead(id) raises unique_violation.
 * The batch forms take the dead rows with SKIP LOCKED, so two concurrent
 * retries never move one job twice.
 *
 * Jobs enter the dead letters here too (tj_dead_letter): a running job
 * whose failure uses up its attempts or is not retryable (tj_fail_locked,
 * complete.c), a waiting job whose cost exceeds what its rate limit can
 * ever admit (tj_dead_letter_if_oversized, limits.c).  The maintenance
 * pass deletes those older than their queue's retain_dead
 * (tj_purge_expired_dead, called by maintain.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_retry_dead);
PG_FUNCTION_INFO_V1(throttle_jobs_retry_dead_queue);
PG_FUNCTION_INFO_V1(throttle_jobs_retry_dead_matching);
PG_FUNCTION_INFO_V1(throttle_jobs_delete_dead);
PG_FUNCTION_INFO_V1(throttle_jobs_purge_dead);
PG_FUNCTION_INFO_V1(throttle_jobs_purge_dead_matching);

/*
 * Moves live job $1 to the dead letters at $2, its error $3 added to its
 * history, for reason $4; only if it is running ($5) or waiting (not $5).
 */
static TJStatement dead_letter_stmt = {
	"WITH d AS (DELETE FROM throttle_jobs.job j"
	"  WHERE j.id = $1 AND (j.state = 'running') = $5"
	"  RETURNING j.*, j.errors || " TJ_ERROR_ENTRY("j") " AS all_errors)"
	" INSERT INTO throttle_jobs.job_dead (id, queue_id, priority, run_at, attempt, max_attempts,"
	"  cost, enqueued_at, worker, concurrency_key, rate_limit_key, unique_key, died_at, reason,"
	"  errors, payload)"
	" SELECT d.id, d.queue_id, d.priority, d.run_at, d.attempt, d.max_attempts, d.cost,"
	"  d.enqueued_at, d.worker, d.concurrency_key, d.rate_limit_key, d.unique_key, $2, $4,"
	"  d.all_errors, d.payload FROM d"
	" RETURNING queue_id, run_at, attempt",
	5, {INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID, BOOLOID}
};

/*
 * The filter every statement here takes as $1 to $5: the dead jobs of
 * queue $1; only job $2; that died after $3; before $4; whose last error's
 * text contains $5 (each NULL: no condition but the queue).
 */
#define DEAD_FILTER_ARGS	INT4OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID
#define DEAD_FILTER \
	" d.queue_id = $1" \
	" AND ($2::pg_catalog.int8 IS NULL OR d.id = $2)" \
	" AND ($3::pg_catalog.timestamptz IS NULL OR d.died_at > $3)" \
	" AND ($4::pg_catalog.timestamptz IS NULL OR d.died_at < $4)" \
	" AND ($5::pg_catalog.text IS NULL" \
	"      OR pg_catalog.strpos((d.errors -> (-1)) ->> 'error', $5) > 0)"

/*
 * Moves the dead jobs that the filter selects, oldest first, at most $6
 * (NULL: all), back to the live table, due at $7 with no attempt made.
 * Dead jobs whose unique_key is live again stay dead.
 */
static TJStatement move_back_stmt = {
	"WITH pick AS ("
	"  SELECT d.id FROM throttle_jobs.job_dead d"
	"   WHERE" DEAD_FILTER
	"     AND (d.unique_key IS NULL OR NOT EXISTS ("
	"          SELECT FROM throttle_jobs.job j"
	"           WHERE j.queue_id = d.queue_id AND j.unique_key = d.unique_key))"
	"   ORDER BY d.died_at, d.id"
	"   LIMIT $6"
	"   FOR UPDATE SKIP LOCKED),"
	" d AS (DELETE FROM throttle_jobs.job_dead d USING pick WHERE d.id = pick.id RETURNING d.*)"
	" INSERT INTO throttle_jobs.job (id, queue_id, state, priority, run_at, attempt,"
	"  max_attempts, cost, enqueued_at, concurrency_key, rate_limit_key, unique_key, errors,"
	"  payload)"
	" SELECT d.id, d.queue_id, 'available', d.priority, $7, 0, d.max_attempts, d.cost,"
	"  d.enqueued_at, d.concurrency_key, d.rate_limit_key, d.unique_key, d.errors, d.payload"
	"  FROM d",
	7, {DEAD_FILTER_ARGS, INT4OID, TIMESTAMPTZOID}
};

/* Deletes the dead jobs that the filter selects and that died at $6 or before (NULL: any). */
static TJStatement purge_stmt = {
	"DELETE FROM throttle_jobs.job_dead d"
	" WHERE" DEAD_FILTER
	"   AND ($6::pg_catalog.timestamptz IS NULL OR d.died_at <= $6)",
	6, {DEAD_FILTER_ARGS, TIMESTAMPTZOID}
};

/* Dead letters older than their queue's retain_dead at $1, counted per queue (the gauge) */
static TJStatement purge_expired_stmt = {
	"WITH p AS (DELETE FROM throttle_jobs.job_dead d USING throttle_jobs.queue q"
	"  WHERE q.id = d.queue_id AND d.died_at < $1 - q.retain_dead RETURNING d.queue_id)"
	" SELECT p.queue_id, pg_catalog.count(*) FROM p GROUP BY p.queue_id",
	1, {TIMESTAMPTZOID}
};

/* The queue of dead job $1 */
static TJStatement queue_of_stmt = {
	"SELECT d.queue_id FROM throttle_jobs.job_dead d WHERE d.id = $1",
	1, {INT8OID}
};

/* Whether a live job of its queue holds dead job $1's unique_key */
static TJStatement unique_taken_stmt = {
	"SELECT FROM throttle_jobs.job_dead d JOIN throttle_jobs.job j"
	"    ON j.queue_id = d.queue_id AND j.unique_key = d.unique_key"
	" WHERE d.id = $1",
	1, {INT8OID}
};

/* What a call selects: the filter's parameters, each NULL unless set */
typedef struct DeadFilter
{
	int32		queue_id;
	Datum		values[7];
	char		nulls[8];		/* "nnnnnnn", one per parameter */
} DeadFilter;

static void
filter_init(DeadFilter *f, int32 queue_id)
{
	memset(f, 0, sizeof(*f));
	memset(f->nulls, 'n', 7);
	f->queue_id = queue_id;
	f->values[0] = Int32GetDatum(queue_id);
	f->nulls[0] = ' ';
}

/* Sets parameter $param (1-based) of the filter from argument argno, if not NULL. */
static void
filter_arg(DeadFilter *f, int param, FunctionCallInfo fcinfo, int argno)
{
	if (argno >= PG_NARGS() || PG_ARGISNULL(argno))
		return;
	f->values[param - 1] = PG_GETARG_DATUM(argno);
	f->nulls[param - 1] = ' ';
}

static void
filter_set(DeadFilter *f, int param, Datum value)
{
	f->values[param - 1] = value;
	f->nulls[param - 1] = ' ';
}

/*
 * Moves live job `id` to the dead letters at `now`, `error` added to its
 * error history, for `reason`; returns whether it did.
 *  - running: a job that failed for good, which the caller has locked
 *	  (tj_fail_locked: the caller frees its slot and records the outcome);
 *  - not running: a job that waits, which the caller has not locked: it is
 *	  read in the latest snapshot, and a job that a reservation took
 *	  meanwhile is left alone.  Its attempt is not counted.
 * Connected to SPI.
 */
bool
tj_dead_letter(int64 id, bool running, TimestampTz now, const char *error, const char *reason)
{
	Datum		values[5];
	bool		isnull;
	bool		dead;

	values[0] = Int64GetDatum(id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = CStringGetTextDatum(error);
	values[3] = CStringGetTextDatum(reason);
	values[4] = BoolGetDatum(running);
	if (running)
		dead = tj_execute(&dead_letter_stmt, values, NULL, false, 0,
						  SPI_OK_INSERT_RETURNING) == 1;
	else
		dead = tj_execute_latest(&dead_letter_stmt, values, NULL, SPI_OK_INSERT_RETURNING) == 1;
	if (dead && running)
		tj_stats_failed(DatumGetInt32(tj_get_datum(0, 1, &isnull)), true, 0);
	else if (dead)
		tj_stats_dead_lettered_waiting(DatumGetInt32(tj_get_datum(0, 1, &isnull)),
									   DatumGetTimestampTz(tj_get_datum(0, 2, &isnull)),
									   DatumGetInt32(tj_get_datum(0, 3, &isnull)));
	SPI_freetuptable(SPI_tuptable);
	return dead;
}

/*
 * Moves the dead jobs that f selects back (at most max_jobs: NULL in f's
 * $6); returns how many.  Connected to SPI.
 */
static int64
move_back(DeadFilter *f)
{
	int64		n;

	filter_set(f, 7, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()));
	n = (int64) tj_execute(&move_back_stmt, f->values, f->nulls, false, 0, SPI_OK_INSERT);
	tj_stats_dead_retried(f->queue_id, n);
	return n;
}

/* Deletes the dead jobs that f selects; returns how many.  Connected to SPI. */
static int64
purge(DeadFilter *f)
{
	int64		n = (int64) tj_execute(&purge_stmt, f->values, f->nulls, false, 0, SPI_OK_DELETE);

	tj_stats_dead_removed(f->queue_id, n);
	return n;
}

/*
 * The queue of dead job `id` (argument 0), after checking that the caller
 * manages it; -1 when there is no such dead job.  Connected to SPI.
 */
static int32
dead_job_queue(FunctionCallInfo fcinfo, const TJCaller *caller)
{
	Datum		values[1];
	bool		isnull;
	int32		queue_id = -1;

	values[0] = PG_GETARG_DATUM(0);
	if (tj_execute(&queue_of_stmt, values, NULL, false, 1, SPI_OK_SELECT) > 0)
		queue_id = DatumGetInt32(tj_get_datum(0, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	if (queue_id >= 0)
		tj_check_queue_id(caller->role, queue_id, TJ_PRIV_MANAGE, PG_GETARG_INT64(0));
	return queue_id;
}

/* The id of the queue named by argument 0, after checking that the caller manages it.  Connected to SPI. */
static int32
managed_queue(FunctionCallInfo fcinfo, const TJCaller *caller)
{
	TJQueue		queue;

	tj_check_queue(caller->role, PG_GETARG_TEXT_PP(0), TJ_PRIV_MANAGE);
	tj_lookup_queue(PG_GETARG_TEXT_PP(0), &queue);
	return queue.id;
}

static void
check_max_jobs(FunctionCallInfo fcinfo, int argno)
{
	if (argno < PG_NARGS() && !PG_ARGISNULL(argno) && PG_GETARG_INT32(argno) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_jobs must be at least 1, not %d", PG_GETARG_INT32(argno))));
}

/*
 * The filter of the _matching forms (arguments 1 to 3: error_contains,
 * died_after, died_before): refuses an empty error text and an empty time
 * range.
 */
static void
check_dead_filter(FunctionCallInfo fcinfo)
{
	if (!PG_ARGISNULL(1) && VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("error_contains must not be empty"),
				 errhint("Pass NULL to match any error.")));
	if (!PG_ARGISNULL(2) && !PG_ARGISNULL(3) &&
		PG_GETARG_TIMESTAMPTZ(2) >= PG_GETARG_TIMESTAMPTZ(3))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("died_after (%s) must be earlier than died_before (%s)",
						DatumGetCString(DirectFunctionCall1(timestamptz_out, PG_GETARG_DATUM(2))),
						DatumGetCString(DirectFunctionCall1(timestamptz_out, PG_GETARG_DATUM(3))))));
}

/* The SQL functions here, each a form of dead_letters_call */
typedef enum DeadForm
{
	RETRY_ID,					/* retry_dead(id) */
	RETRY_QUEUE,				/* retry_dead(queue, died_after, max_jobs) */
	RETRY_MATCHING,				/* retry_dead_matching(queue, error_contains,
								 * died_after, died_before, max_jobs) */
	DELETE_ID,					/* delete_dead(id) */
	PURGE_QUEUE,				/* purge_dead(queue, older_than) */
	PURGE_MATCHING				/* purge_dead_matching(queue, error_contains,
								 * died_after, died_before) */
} DeadForm;

/*
 * The SQL functions: those that take a job id return whether they moved
 * or deleted it, the others how many dead jobs they moved or deleted.
 */
static Datum
dead_letters_call(FunctionCallInfo fcinfo, DeadForm form)
{
	bool		by_id = form == RETRY_ID || form == DELETE_ID;
	bool		retry = form == RETRY_ID || form == RETRY_QUEUE || form == RETRY_MATCHING;
	TJCaller	caller;
	DeadFilter	f;
	int32		queue_id;
	int64		n = 0;

	tj_require_not_null(fcinfo, 0, by_id ? "job id" : "queue name");
	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	queue_id = by_id ? dead_job_queue(fcinfo, &caller) : managed_queue(fcinfo, &caller);
	filter_init(&f, queue_id);
	switch (form)
	{
		case RETRY_ID:
		case DELETE_ID:
			filter_arg(&f, 2, fcinfo, 0);
			break;
		case RETRY_QUEUE:
			check_max_jobs(fcinfo, 2);
			filter_arg(&f, 3, fcinfo, 1);	/* died_after */
			filter_arg(&f, 6, fcinfo, 2);	/* max_jobs */
			break;
		case RETRY_MATCHING:
		case PURGE_MATCHING:
			check_dead_filter(fcinfo);
			if (form == RETRY_MATCHING)
			{
				check_max_jobs(fcinfo, 4);
				filter_arg(&f, 6, fcinfo, 4);	/* max_jobs */
			}
			filter_arg(&f, 5, fcinfo, 1);	/* error_contains */
			filter_arg(&f, 3, fcinfo, 2);	/* died_after */
			filter_arg(&f, 4, fcinfo, 3);	/* died_before */
			break;
		case PURGE_QUEUE:
			tj_require_not_null(fcinfo, 1, "older_than");
			tj_check_interval(PG_GETARG_INTERVAL_P(1), "older_than", true);
			filter_set(&f, 6, DirectFunctionCall2(timestamptz_mi_interval,
												  TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
												  PG_GETARG_DATUM(1)));
			break;
	}
	if (queue_id >= 0)
		n = retry ? move_back(&f) : purge(&f);
	if (form == RETRY_ID && queue_id >= 0 && n == 0 &&
		tj_execute(&unique_taken_stmt, f.values + 1, NULL, false, 1, SPI_OK_SELECT) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("dead job " INT64_FORMAT " has a unique_key that a live job of its queue holds",
						PG_GETARG_INT64(0)),
				 errhint("Wait for the live job to finish, or purge the dead one.")));
	SPI_finish();
	tj_caller_leave(&caller);
	if (by_id)
		PG_RETURN_BOOL(n > 0);
	PG_RETURN_INT64(n);
}

/*
 * Deletes the dead letters older than their queue's retain_dead at `now`
 * (a step of the maintenance pass); returns how many.  Connected to SPI,
 * as the extension owner.
 */
int64
tj_purge_expired_dead(TimestampTz now)
{
	Datum		values[1];
	uint64		nqueues;
	int64		purged = 0;

	values[0] = TimestampTzGetDatum(now);
	nqueues = tj_execute(&purge_expired_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	for (uint64 i = 0; i < nqueues; i++)
	{
		bool		isnull;
		int64		n = DatumGetInt64(tj_get_datum(i, 2, &isnull));

		tj_stats_dead_removed(DatumGetInt32(tj_get_datum(i, 1, &isnull)), n);
		purged += n;
	}
	return purged;
}

/* Each SQL function named is the form of dead_letters_call given */
#define DEAD_LETTERS_ENTRY(name, form) \
	Datum name(PG_FUNCTION_ARGS) { return dead_letters_call(fcinfo, form); }

DEAD_LETTERS_ENTRY(throttle_jobs_retry_dead, RETRY_ID)
DEAD_LETTERS_ENTRY(throttle_jobs_retry_dead_queue, RETRY_QUEUE)
DEAD_LETTERS_ENTRY(throttle_jobs_retry_dead_matching, RETRY_MATCHING)
DEAD_LETTERS_ENTRY(throttle_jobs_delete_dead, DELETE_ID)
DEAD_LETTERS_ENTRY(throttle_jobs_purge_dead, PURGE_QUEUE)
DEAD_LETTERS_ENTRY(throttle_jobs_purge_dead_matching, PURGE_MATCHING)
