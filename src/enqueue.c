/*-------------------------------------------------------------------------
 *
 * enqueue.c
 *		enqueue() and enqueue_batch(): adding jobs in the caller's transaction.
 *
 * A job with a unique_key that is already live in its queue is not added
 * again: the live job's id is returned.  Queues with max_size refuse (or
 * drop) jobs while they hold that many live jobs.
 *
 * Locking: the queue lock in AccessShareLock (tj_lock_queue, see queue.c)
 * to transaction end, so that drop_queue waits for the enqueues in flight;
 * the dropped-job warning's turn is the row lock of the queue's row in
 * queue_warning, taken with SKIP LOCKED (a session never waits for it).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_enqueue);
PG_FUNCTION_INFO_V1(throttle_jobs_enqueue_batch);
PG_FUNCTION_INFO_V1(throttle_jobs_enqueue_ex);

/* enqueue_ex's on_conflict: what a live unique_key makes of the call */
typedef enum OnConflict
{
	ON_CONFLICT_RETURN,			/* the live job's id, inserted false */
	ON_CONFLICT_ERROR,			/* unique_violation */
	ON_CONFLICT_SKIP			/* no id, inserted false */
} OnConflict;

/* One job to add, as given by the caller. */
typedef struct JobArgs
{
	Jsonb	   *payload;
	TimestampTz run_at;
	int32		priority;
	int32		max_attempts;	/* 0: the queue's */
	text	   *concurrency_key;
	text	   *rate_limit_key;
	text	   *unique_key;
	int32		cost;
} JobArgs;

/* One job, every column given ($1..$14, in enqueue_one's order) */
#define INSERT_JOB_SQL \
	"INSERT INTO throttle_jobs.job (queue_id, priority, run_at, max_attempts, cost," \
	" enqueued_at, concurrency_key, rate_limit_key, unique_key, payload," \
	" state, blocked_key, blocked_until, rr_rank)" \
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
#define INSERT_JOB_TYPES \
	{INT4OID, INT2OID, TIMESTAMPTZOID, INT4OID, INT4OID, TIMESTAMPTZOID, \
	 TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INT8OID}

static TJStatement insert_stmt = {
	INSERT_JOB_SQL
	" ON CONFLICT (queue_id, unique_key) WHERE unique_key IS NOT NULL DO NOTHING"
	" RETURNING id",
	14, INSERT_JOB_TYPES, NULL, TJ_GENERIC
};

/* The same without a unique_key: no speculative insertion needed */
static TJStatement insert_plain_stmt = {
	INSERT_JOB_SQL " RETURNING id", 14, INSERT_JOB_TYPES, NULL, TJ_GENERIC
};

/*
 * A whole batch of ready-to-insert jobs in one statement (see
 * enqueue_bulk); ids follow input order because the rows are numbered
 * from the sequence in ordinality order.
 */
static TJStatement insert_bulk_stmt = {
	"INSERT INTO throttle_jobs.job (queue_id, priority, run_at, max_attempts, cost,"
	" enqueued_at, concurrency_key, rate_limit_key, payload)"
	" SELECT $1, u.priority, u.run_at, u.max_attempts, u.cost, $2, u.ckey, u.rkey, u.payload"
	"   FROM ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
	"                   pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
	"                   pg_catalog.unnest($9))"
	"        WITH ORDINALITY AS u(priority, run_at, max_attempts, cost, ckey, rkey, payload, ord)"
	"  ORDER BY u.ord"
	" RETURNING id",
	9, {INT4OID, TIMESTAMPTZOID, INT2ARRAYOID, TIMESTAMPTZARRAYOID, INT4ARRAYOID,
	INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID}, NULL, TJ_GENERIC
};

/*
 * enqueue()'s common case in one statement, queue lookup included: a job
 * without keys into a queue with no max_size in fifo order.  No row: the
 * queue is not such a queue (or unknown), and the general path decides.
 */
static TJStatement insert_simple_stmt = {
	"INSERT INTO throttle_jobs.job (queue_id, priority, run_at, max_attempts, cost,"
	" enqueued_at, payload)"
	" SELECT q.id, $2, $3, $4, $5, $6, $7 FROM throttle_jobs.queue q"
	"  WHERE q.name = $1 AND q.max_size IS NULL AND q.fairness = 'fifo'"
	" RETURNING id, queue_id, (SELECT q.handler IS NOT NULL FROM throttle_jobs.queue q"
	"                           WHERE q.id = queue_id)",
	7, {TEXTOID, INT2OID, TIMESTAMPTZOID, INT4OID, INT4OID, TIMESTAMPTZOID, JSONBOID},
	NULL, TJ_GENERIC
};

/* insert_bulk_stmt for a batch that gives nothing but payloads */
static TJStatement insert_payloads_stmt = {
	"INSERT INTO throttle_jobs.job (queue_id, run_at, enqueued_at, payload)"
	" SELECT $1, $2, $2, u.payload"
	"   FROM pg_catalog.unnest($3) WITH ORDINALITY AS u(payload, ord)"
	"  ORDER BY u.ord"
	" RETURNING id",
	3, {INT4OID, TIMESTAMPTZOID, JSONBARRAYOID}, NULL, TJ_GENERIC
};

static TJStatement unique_stmt = {
	"SELECT j.id FROM throttle_jobs.job j WHERE j.queue_id = $1 AND j.unique_key = $2",
	2, {INT4OID, TEXTOID}, NULL, TJ_GENERIC
};

/*
 * round_robin queues: a job's turn is one past the last turn of its
 * concurrency key among the queue's live jobs (1 for a key with none), and
 * reservation orders by turn before run_at, so keys take turns.
 */
#define NEXT_TURN_SQL(key_cond) \
	"SELECT coalesce(pg_catalog.max(j.rr_rank), 0) + 1 FROM throttle_jobs.job j" \
	" WHERE j.queue_id = $1 AND " key_cond " AND j.rr_rank > 0"

static TJStatement rr_key_stmt = {
	NEXT_TURN_SQL("j.concurrency_key = $2"), 2, {INT4OID, TEXTOID}
};

static TJStatement rr_null_stmt = {
	NEXT_TURN_SQL("j.concurrency_key IS NULL"), 1, {INT4OID}
};

static TJStatement size_stmt = {
	TJ_COUNT_JOBS_SQL("j.queue_id = $1"),
	2, {INT4OID, INT8OID}
};

/* A full queue's dropped-job WARNING repeats at most this often */
#define DROP_WARNING_EVERY_S	10

/* Tries of an insert with a unique_key whose live job keeps finishing meanwhile */
#define UNIQUE_INSERT_TRIES		5

/* Claims the queue's warning turn if DROP_WARNING_EVERY_S have passed since the last one */
static TJStatement warn_turn_stmt = {
	"UPDATE throttle_jobs.queue_warning w SET warned_at = $2"
	" WHERE w.ctid = (SELECT x.ctid FROM throttle_jobs.queue_warning x"
	"   WHERE x.queue_id = $1"
	"     AND x.warned_at <= $2 - '" CppAsString2(DROP_WARNING_EVERY_S) " seconds'::pg_catalog.interval"
	"   FOR UPDATE SKIP LOCKED)",
	2, {INT4OID, TIMESTAMPTZOID}
};

static void
check_job_args(const JobArgs *job)
{
	int			size = VARSIZE(job->payload) - VARHDRSZ;

	if (size > tj_max_payload_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("payload is too large (%d bytes)", size),
				 errhint("throttle_jobs.max_payload_size allows %d bytes.",
						 tj_max_payload_size)));
	tj_check_timestamp(job->run_at, "run_at");
	if (job->priority < PG_INT16_MIN || job->priority > PG_INT16_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("priority must be between %d and %d, not %d",
						PG_INT16_MIN, PG_INT16_MAX, job->priority)));
	if (job->cost < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cost must be at least 1, not %d", job->cost)));
	if (job->concurrency_key)
		tj_check_job_key(job->concurrency_key, "concurrency_key");
	if (job->rate_limit_key)
		tj_check_job_key(job->rate_limit_key, "rate_limit_key");
	if (job->unique_key)
		tj_check_key(job->unique_key, "unique_key");
}

static bool
find_unique(const TJQueue *queue, text *unique_key, int64 *id)
{
	Datum		values[2];
	bool		isnull;

	values[0] = Int32GetDatum(queue->id);
	values[1] = PointerGetDatum(unique_key);
	if (tj_execute(&unique_stmt, values, NULL, false, 1, SPI_OK_SELECT) == 0)
		return false;
	*id = DatumGetInt64(tj_get_datum(0, 1, &isnull));
	return true;
}

static bool
queue_is_full(const TJQueue *queue)
{
	Datum		values[2];
	bool		isnull;

	values[0] = Int32GetDatum(queue->id);
	values[1] = Int64GetDatum(queue->max_size);
	tj_execute(&size_stmt, values, NULL, false, 1, SPI_OK_SELECT);
	return DatumGetInt64(tj_get_datum(0, 1, &isnull)) >= queue->max_size;
}

/*
 * A WARNING for a dropped job, at most once every DROP_WARNING_EVERY_S per queue across all
 * sessions: the session that claims the queue's row in queue_warning warns;
 * others find it locked or recent and stay silent (they never wait).
 */
static void
warn_dropped(const TJQueue *queue)
{
	Datum		values[2];

	values[0] = Int32GetDatum(queue->id);
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	if (tj_execute(&warn_turn_stmt, values, NULL, false, 0, SPI_OK_UPDATE) == 0)
		return;
	ereport(WARNING,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("queue \"%s\" is full: dropping jobs", queue->name),
			 errdetail("It holds its max_size of " INT64_FORMAT " live jobs; this warning repeats at most every %d seconds.",
					   queue->max_size, DROP_WARNING_EVERY_S)));
}

/* The turn of a new job of key ckey (NULL: no key) in a round_robin queue */
static int64
round_robin_rank(const TJQueue *queue, text *ckey)
{
	Datum		values[2];
	bool		isnull;

	values[0] = Int32GetDatum(queue->id);
	values[1] = PointerGetDatum(ckey);
	tj_execute(ckey ? &rr_key_stmt : &rr_null_stmt, values, NULL, false, 1, SPI_OK_SELECT);
	return DatumGetInt64(tj_get_datum(0, 1, &isnull));
}

/*
 * Adds one validated job; returns false (a dropped job) only for a full
 * queue with on_full = 'drop'.  *inserted tells a new job (true) from the
 * live job of the same unique_key, whose id *id then is (false).  The
 * caller must be connected to SPI.
 */
static bool
enqueue_one(const TJQueue *queue, const JobArgs *job, TJLimitCache *limits,
			bool limits_exist, int64 *id, bool *inserted)
{
	Datum		values[14];
	char		nulls[14];
	bool		isnull;
	const char *blocked_key = NULL;
	TimestampTz blocked_until = 0;

	/* a cost that the rate key's limit never admits would wait forever */
	*inserted = false;
	if (limits_exist && job->rate_limit_key && job->cost > 1)
		tj_check_cost(limits, text_to_cstring(job->rate_limit_key), job->cost);

	if (queue->max_size > 0 && queue_is_full(queue))
	{
		if (job->unique_key && find_unique(queue, job->unique_key, id))
			return true;
		if (queue->drop_when_full)
		{
			tj_stats_count(queue->id, TJ_EV_DROPPED, 1);
			warn_dropped(queue);
			return false;
		}
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("queue \"%s\" is full", queue->name),
				 errdetail("It holds its max_size of " INT64_FORMAT " live jobs.",
						   queue->max_size),
				 errhint("Retry later, or raise max_size with throttle_jobs.alter_queue().")));
	}

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(queue->id);
	values[1] = Int16GetDatum((int16) job->priority);
	values[2] = TimestampTzGetDatum(job->run_at);
	values[3] = Int32GetDatum(job->max_attempts);
	nulls[3] = job->max_attempts > 0 ? ' ' : 'n';
	values[4] = Int32GetDatum(job->cost);
	values[5] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	values[6] = PointerGetDatum(job->concurrency_key);
	nulls[6] = job->concurrency_key ? ' ' : 'n';
	values[7] = PointerGetDatum(job->rate_limit_key);
	nulls[7] = job->rate_limit_key ? ' ' : 'n';
	values[8] = PointerGetDatum(job->unique_key);
	nulls[8] = job->unique_key ? ' ' : 'n';
	values[9] = JsonbPGetDatum(job->payload);
	values[13] = Int64GetDatum(queue->round_robin ? round_robin_rank(queue, job->concurrency_key) : 0);

	/*
	 * A job whose key would only hold it back, or whose key already has
	 * jobs waiting, joins the key's waiting list (parking.c), so that
	 * reservations never walk it (a ready job needs its time to have come).
	 */
	if (limits_exist && job->run_at <= GetCurrentTransactionStartTimestamp() &&
		(job->concurrency_key || job->rate_limit_key) &&
		tj_enqueue_waits(limits,
						 job->concurrency_key ? text_to_cstring(job->concurrency_key) : NULL,
						 job->rate_limit_key ? text_to_cstring(job->rate_limit_key) : NULL,
						 job->cost, GetCurrentTransactionStartTimestamp(),
						 &blocked_key, &blocked_until))
	{
		values[10] = CStringGetTextDatum("throttled");
		values[11] = CStringGetTextDatum(blocked_key);
		values[12] = TimestampTzGetDatum(blocked_until);
		nulls[12] = blocked_until == 0 ? 'n' : ' ';
	}
	else
	{
		values[10] = CStringGetTextDatum("available");
		nulls[11] = 'n';
		nulls[12] = 'n';
	}

	/*
	 * ON CONFLICT DO NOTHING leaves no row when the unique key is live; the
	 * live job can finish before we look it up, so try again a few times.
	 */
	if (job->unique_key == NULL)
	{
		tj_execute(&insert_plain_stmt, values, nulls, false, 0, SPI_OK_INSERT_RETURNING);
		*id = DatumGetInt64(tj_get_datum(0, 1, &isnull));
		*inserted = true;
		tj_stats_enqueued(queue->id, job->run_at, blocked_key, blocked_until);
		return true;
	}
	for (int tries = 0; tries < UNIQUE_INSERT_TRIES; tries++)
	{
		if (tj_execute(&insert_stmt, values, nulls, false, 0, SPI_OK_INSERT_RETURNING) == 1)
		{
			*id = DatumGetInt64(tj_get_datum(0, 1, &isnull));
			*inserted = true;
			tj_stats_enqueued(queue->id, job->run_at, blocked_key, blocked_until);
			return true;
		}
		Assert(job->unique_key != NULL);
		if (find_unique(queue, job->unique_key, id))
			return true;
		CHECK_FOR_INTERRUPTS();
	}
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not enqueue a job with unique_key \"%s\" into queue \"%s\"",
					text_to_cstring(job->unique_key), queue->name),
			 errdetail("Live jobs with that key kept appearing and finishing concurrently."),
			 errhint("Retry the transaction.")));
	return false;				/* keep compiler quiet */
}

/*
 * enqueue()'s arguments (the first nine of fcinfo): adds the job, or finds
 * the live job of its unique_key (*inserted false).  Returns false for a
 * job dropped by a full queue.
 */
static bool
enqueue_call(FunctionCallInfo fcinfo, int64 *id, bool *inserted)
{
	JobArgs		job;
	TJQueue		queue;
	TJLimitCache limits = {0};
	TJCaller	caller;
	bool		added;

	tj_require_not_null(fcinfo, 0, "queue name");
	tj_require_not_null(fcinfo, 1, "payload");
	tj_require_not_null(fcinfo, 3, "priority");
	tj_require_not_null(fcinfo, 8, "cost");

	job.payload = PG_GETARG_JSONB_P(1);
	job.run_at = PG_ARGISNULL(2) ? GetCurrentTransactionStartTimestamp() : PG_GETARG_TIMESTAMPTZ(2);
	job.priority = PG_GETARG_INT32(3);
	job.max_attempts = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);
	if (!PG_ARGISNULL(4))
		tj_check_max_attempts(job.max_attempts, "Pass NULL to use the queue's max_attempts.");
	job.concurrency_key = PG_ARGISNULL(5) ? NULL : PG_GETARG_TEXT_PP(5);
	job.rate_limit_key = PG_ARGISNULL(6) ? NULL : PG_GETARG_TEXT_PP(6);
	job.unique_key = PG_ARGISNULL(7) ? NULL : PG_GETARG_TEXT_PP(7);
	job.cost = PG_GETARG_INT32(8);
	check_job_args(&job);

	tj_caller_enter(fcinfo, &caller);
	tj_lock_queue(PG_GETARG_TEXT_PP(0), AccessShareLock);
	SPI_connect();
	tj_check_queue(caller.role, PG_GETARG_TEXT_PP(0), TJ_PRIV_PRODUCE);
	added = false;
	*inserted = false;
	if (!job.concurrency_key && !job.rate_limit_key && !job.unique_key)
	{
		Datum		values[7];
		char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
		bool		isnull;

		values[0] = PG_GETARG_DATUM(0);
		values[1] = Int16GetDatum((int16) job.priority);
		values[2] = TimestampTzGetDatum(job.run_at);
		values[3] = Int32GetDatum(job.max_attempts);
		nulls[3] = job.max_attempts > 0 ? ' ' : 'n';
		values[4] = Int32GetDatum(job.cost);
		values[5] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		values[6] = JsonbPGetDatum(job.payload);
		if (tj_execute(&insert_simple_stmt, values, nulls, false, 0, SPI_OK_INSERT_RETURNING) == 1)
		{
			int32		queue_id = DatumGetInt32(tj_get_datum(0, 2, &isnull));

			*id = DatumGetInt64(tj_get_datum(0, 1, &isnull));
			tj_stats_enqueued(queue_id, job.run_at, NULL, 0);
			if (DatumGetBool(tj_get_datum(0, 3, &isnull)))
				tj_wake_executors_at_commit();
			tj_notify_enqueued(queue_id);
			added = true;
			*inserted = true;
		}
	}
	if (!added)
	{
		tj_lookup_queue(PG_GETARG_TEXT_PP(0), &queue);
		if (queue.has_handler)
			tj_wake_executors_at_commit();
		added = enqueue_one(&queue, &job, &limits,
							(job.concurrency_key || job.rate_limit_key) && tj_limits_exist(),
							id, inserted);
		if (added && *inserted)
			tj_notify_enqueued(queue.id);
	}
	SPI_finish();
	tj_caller_leave(&caller);
	return added;
}

/* enqueue(queue, payload, run_at, priority, max_attempts, concurrency_key,
 *		   rate_limit_key, unique_key, cost) returns bigint */
Datum
throttle_jobs_enqueue(PG_FUNCTION_ARGS)
{
	int64		id;
	bool		inserted;

	if (!enqueue_call(fcinfo, &id, &inserted))
		PG_RETURN_NULL();
	PG_RETURN_INT64(id);
}

/*
 * enqueue_ex(enqueue's arguments, on_conflict) returns (id bigint,
 * inserted boolean): enqueue() that tells a new job from a live one of the
 * same unique_key.  on_conflict 'return' gives the live job's id, 'skip'
 * no id, 'error' raises unique_violation; a job dropped by a full queue
 * has no id either.
 */
Datum
throttle_jobs_enqueue_ex(PG_FUNCTION_ARGS)
{
	OnConflict	on_conflict;
	char	   *mode;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	int64		id = 0;
	bool		inserted = false;
	bool		added;

	tj_require_not_null(fcinfo, 9, "on_conflict");
	mode = text_to_cstring(PG_GETARG_TEXT_PP(9));
	if (strcmp(mode, "return") == 0)
		on_conflict = ON_CONFLICT_RETURN;
	else if (strcmp(mode, "error") == 0)
		on_conflict = ON_CONFLICT_ERROR;
	else if (strcmp(mode, "skip") == 0)
		on_conflict = ON_CONFLICT_SKIP;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid on_conflict \"%s\"", mode),
				 errhint("on_conflict is 'return', 'error' or 'skip'.")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "throttle_jobs: enqueue_ex must return a record");

	added = enqueue_call(fcinfo, &id, &inserted);
	if (added && !inserted && on_conflict == ON_CONFLICT_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("queue \"%s\" already holds a live job with unique_key \"%s\"",
						text_to_cstring(PG_GETARG_TEXT_PP(0)),
						text_to_cstring(PG_GETARG_TEXT_PP(7))),
				 errdetail("Job " INT64_FORMAT " holds it.", id),
				 errhint("Pass on_conflict => 'return' to get its id, or 'skip'.")));
	values[0] = Int64GetDatum(id);
	nulls[0] = !added || (!inserted && on_conflict == ON_CONFLICT_SKIP);
	values[1] = BoolGetDatum(inserted);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* ---- enqueue_batch ---- */

typedef struct BatchContext
{
	int			index;			/* 1-based position of the job being read */
} BatchContext;

static void
batch_error_context(void *arg)
{
	BatchContext *ctx = (BatchContext *) arg;

	if (ctx->index > 0)
		errcontext("job %d of the batch", ctx->index);
}

static int32
jbv_int32(const JsonbValue *v, const char *key)
{
	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" must be a number", key)));
	if (!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(v->val.numeric),
										  DirectFunctionCall2(numeric_trunc,
															  NumericGetDatum(v->val.numeric),
															  Int32GetDatum(0)))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" must be a whole number, not %s", key,
						DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v->val.numeric))))));
	if (DatumGetBool(DirectFunctionCall2(numeric_gt, NumericGetDatum(v->val.numeric),
										 DirectFunctionCall1(int4_numeric, Int32GetDatum(PG_INT32_MAX)))) ||
		DatumGetBool(DirectFunctionCall2(numeric_lt, NumericGetDatum(v->val.numeric),
										 DirectFunctionCall1(int4_numeric, Int32GetDatum(PG_INT32_MIN)))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is out of range: %s", key,
						DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v->val.numeric))))));
	return DatumGetInt32(DirectFunctionCall1(numeric_int4, NumericGetDatum(v->val.numeric)));
}

static text *
jbv_text(const JsonbValue *v, const char *key)
{
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" must be a string", key)));
	return cstring_to_text_with_len(v->val.string.val, v->val.string.len);
}

/* Reads one element of the jobs array into *job (defaults as enqueue's). */
static void
read_batch_job(JsonbValue *elem, JobArgs *job)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k,
				v;

	memset(job, 0, sizeof(*job));
	job->run_at = GetCurrentTransactionStartTimestamp();
	job->cost = 1;
	job->payload = NULL;

	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("each job must be a JSON object"),
				 errhint("Pass [{\"payload\": {...}, \"priority\": 1}, ...].")));

	it = JsonbIteratorInit(elem->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(k.val.string.val, k.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		if (v.type == jbvNull)
			continue;			/* null stands for "not given" */
		if (strcmp(key, "payload") == 0)
		{
			job->payload = JsonbValueToJsonb(&v);
			continue;
		}
		if (strcmp(key, "run_at") == 0)
		{
			char	   *s = text_to_cstring(jbv_text(&v, key));

			job->run_at = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																  CStringGetDatum(s),
																  ObjectIdGetDatum(InvalidOid),
																  Int32GetDatum(-1)));
		}
		else if (strcmp(key, "priority") == 0)
			job->priority = jbv_int32(&v, key);
		else if (strcmp(key, "max_attempts") == 0)
		{
			job->max_attempts = jbv_int32(&v, key);
			tj_check_max_attempts(job->max_attempts, NULL);
		}
		else if (strcmp(key, "concurrency_key") == 0)
			job->concurrency_key = jbv_text(&v, key);
		else if (strcmp(key, "rate_limit_key") == 0)
			job->rate_limit_key = jbv_text(&v, key);
		else if (strcmp(key, "unique_key") == 0)
			job->unique_key = jbv_text(&v, key);
		else if (strcmp(key, "cost") == 0)
			job->cost = jbv_int32(&v, key);
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown job field \"%s\"", key),
					 errhint("Job fields are payload, run_at, priority, max_attempts, concurrency_key, rate_limit_key, unique_key and cost.")));
	}
	if (job->payload == NULL)
		job->payload = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	check_job_args(job);
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

/* An array of n values of elemtype; nulls may be NULL (none are null). */
static Datum
make_array(Datum *elems, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

/*
 * Whether enqueue_bulk may add the batch: no job needs a check that depends
 * on the jobs added before it (a bounded queue, a unique_key, a round-robin
 * turn) or a limit lookup (a key, when limits exist).
 */
static bool
bulk_allowed(const TJQueue *queue, const JobArgs *args, int njobs, bool limits_exist)
{
	if (queue->max_size > 0 || queue->round_robin)
		return false;
	for (int i = 0; i < njobs; i++)
		if (args[i].unique_key ||
			(limits_exist && (args[i].concurrency_key || args[i].rate_limit_key)))
			return false;
	return true;
}

/*
 * Adds every job of a batch that bulk_allowed() accepted in one INSERT and
 * puts their ids, in input order, into the result.  Connected to SPI.
 */
static void
enqueue_bulk(ReturnSetInfo *rsinfo, const TJQueue *queue, const JobArgs *args, int njobs)
{
	Datum		values[9];
	Datum	   *prio = palloc(sizeof(Datum) * njobs);
	Datum	   *run_at = palloc(sizeof(Datum) * njobs);
	Datum	   *max_att = palloc(sizeof(Datum) * njobs);
	bool	   *max_att_null = palloc(sizeof(bool) * njobs);
	Datum	   *cost = palloc(sizeof(Datum) * njobs);
	Datum	   *ckey = palloc(sizeof(Datum) * njobs);
	bool	   *ckey_null = palloc(sizeof(bool) * njobs);
	Datum	   *rkey = palloc(sizeof(Datum) * njobs);
	bool	   *rkey_null = palloc(sizeof(bool) * njobs);
	Datum	   *payload = palloc(sizeof(Datum) * njobs);
	int64	   *ids;
	uint64		n;
	bool		payloads_only = true;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	for (int i = 0; i < njobs; i++)
	{
		if (args[i].priority != 0 || args[i].run_at != now || args[i].max_attempts != 0 ||
			args[i].cost != 1 || args[i].concurrency_key || args[i].rate_limit_key)
			payloads_only = false;
		prio[i] = Int16GetDatum((int16) args[i].priority);
		run_at[i] = TimestampTzGetDatum(args[i].run_at);
		max_att[i] = Int32GetDatum(args[i].max_attempts);
		max_att_null[i] = args[i].max_attempts == 0;
		cost[i] = Int32GetDatum(args[i].cost);
		ckey[i] = PointerGetDatum(args[i].concurrency_key);
		ckey_null[i] = args[i].concurrency_key == NULL;
		rkey[i] = PointerGetDatum(args[i].rate_limit_key);
		rkey_null[i] = args[i].rate_limit_key == NULL;
		payload[i] = JsonbPGetDatum(args[i].payload);
	}
	values[0] = Int32GetDatum(queue->id);
	values[1] = TimestampTzGetDatum(now);
	if (payloads_only)
	{
		values[2] = make_array(payload, NULL, njobs, JSONBOID);
		n = tj_execute(&insert_payloads_stmt, values, NULL, false, 0, SPI_OK_INSERT_RETURNING);
	}
	else
	{
		values[2] = make_array(prio, NULL, njobs, INT2OID);
		values[3] = make_array(run_at, NULL, njobs, TIMESTAMPTZOID);
		values[4] = make_array(max_att, max_att_null, njobs, INT4OID);
		values[5] = make_array(cost, NULL, njobs, INT4OID);
		values[6] = make_array(ckey, ckey_null, njobs, TEXTOID);
		values[7] = make_array(rkey, rkey_null, njobs, TEXTOID);
		values[8] = make_array(payload, NULL, njobs, JSONBOID);
		n = tj_execute(&insert_bulk_stmt, values, NULL, false, 0, SPI_OK_INSERT_RETURNING);
	}
	if (n != njobs)
		elog(ERROR, "throttle_jobs: bulk insert added " UINT64_FORMAT " of %d jobs", n, njobs);
	for (int i = 0; i < njobs; i++)
		tj_stats_enqueued(queue->id, args[i].run_at, NULL, 0);
	ids = palloc(sizeof(int64) * njobs);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(tj_get_datum(i, 1, &isnull));
	}
	qsort(ids, njobs, sizeof(int64), cmp_int64);
	for (int i = 0; i < njobs; i++)
	{
		Datum		value = Int64GetDatum(ids[i]);
		bool		isnull = false;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &isnull);
	}
}

/* enqueue_batch(queue, jobs jsonb) returns setof bigint, in input order */
Datum
throttle_jobs_enqueue_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Jsonb	   *jobs;
	int			njobs;
	JobArgs    *args;
	TJQueue		queue;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	BatchContext ctx = {0};
	ErrorContextCallback errcb;
	TJLimitCache limits = {0};
	TJCaller	caller;
	bool		limits_exist;
	int			i;

	tj_require_not_null(fcinfo, 0, "queue name");
	tj_require_not_null(fcinfo, 1, "jobs");
	jobs = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_ARRAY(jobs) || JB_ROOT_IS_SCALAR(jobs))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("jobs must be a JSON array of job objects")));
	njobs = JB_ROOT_COUNT(jobs);
	if (njobs < 1 || njobs > tj_max_batch_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a batch must hold 1 to %d jobs, not %d", tj_max_batch_size, njobs),
				 errhint("throttle_jobs.max_batch_size sets the upper bound.")));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	/* Read and check every job before adding any. */
	errcb.callback = batch_error_context;
	errcb.arg = &ctx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	args = palloc(sizeof(JobArgs) * njobs);
	it = JsonbIteratorInit(&jobs->root);
	i = 0;
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		ctx.index = i + 1;
		read_batch_job(&v, &args[i]);
		i++;
	}

	ctx.index = 0;				/* errors from here on are the queue's */
	tj_caller_enter(fcinfo, &caller);
	tj_lock_queue(PG_GETARG_TEXT_PP(0), AccessShareLock);
	SPI_connect();
	tj_check_queue(caller.role, PG_GETARG_TEXT_PP(0), TJ_PRIV_PRODUCE);
	tj_lookup_queue(PG_GETARG_TEXT_PP(0), &queue);
	if (queue.has_handler)
		tj_wake_executors_at_commit();
	limits_exist = tj_limits_exist();
	if (bulk_allowed(&queue, args, njobs, limits_exist))
	{
		enqueue_bulk(rsinfo, &queue, args, njobs);
		tj_notify_enqueued(queue.id);
		njobs = 0;
	}
	for (i = 0; i < njobs; i++)
	{
		int64		id;
		Datum		value;
		bool		isnull = false;
		bool		inserted;

		ctx.index = i + 1;
		if (enqueue_one(&queue, &args[i], &limits, limits_exist, &id, &inserted))
		{
			value = Int64GetDatum(id);
			if (inserted)
				tj_notify_enqueued(queue.id);
		}
		else
		{
			value = (Datum) 0;
			isnull = true;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &isnull);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_finish();
	tj_caller_leave(&caller);
	error_context_stack = errcb.previous;
	return (Datum) 0;
}
