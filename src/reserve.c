/*-------------------------------------------------------------------------
 *
 * reserve.c
 *		reserve(): leasing the best ready jobs of a queue to a worker.
 *
 * One statement locks the chosen rows with FOR UPDATE SKIP LOCKED in a
 * MATERIALIZED CTE, evaluated exactly once, and leases exactly the rows it
 * locked: a locking sub-select with LIMIT inside a join can be re-run and
 * lock more rows than it returns (PostgreSQL bug #15715), a CTE cannot.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_reserve);

static TJStatement reserve_stmt = {
	"WITH picked AS MATERIALIZED ("
	"  SELECT j.id FROM throttle_jobs.job j"
	"   WHERE j.queue_id = $1 AND j.state = 'available' AND j.run_at <= $2"
	"   ORDER BY j.priority DESC, j.run_at, j.id"
	"   LIMIT $3"
	"   FOR UPDATE SKIP LOCKED)"
	" UPDATE throttle_jobs.job j"
	"    SET state = 'running', attempt = j.attempt + 1,"
	"        lease_token = pg_catalog.gen_random_uuid(), lease_until = $4,"
	"        reserved_at = $2, worker = $5"
	"   FROM picked, throttle_jobs.queue q WHERE j.id = picked.id AND q.id = $1"
	" RETURNING j.id, j.payload, j.attempt, coalesce(j.max_attempts, q.max_attempts),"
	"           j.lease_token,"
	"           j.lease_until, j.priority, j.concurrency_key, j.rate_limit_key,"
	"           j.enqueued_at, j.run_at",
	5, {INT4OID, TIMESTAMPTZOID, INT8OID, TIMESTAMPTZOID, TEXTOID}
};

/* Columns of reserve_stmt's result, 1-based */
enum
{
	R_ID = 1, R_PAYLOAD, R_ATTEMPT, R_MAX_ATTEMPTS, R_LEASE_TOKEN,
	R_LEASE_UNTIL, R_PRIORITY, R_CONCURRENCY_KEY, R_RATE_LIMIT_KEY,
	R_ENQUEUED_AT, R_RUN_AT
};

typedef struct ReservedRow
{
	uint64		row;			/* index in SPI_tuptable */
	int16		priority;
	TimestampTz run_at;
	int64		id;
} ReservedRow;

/* Reservation order: priority desc, run_at, id */
static int
reserved_row_cmp(const void *a, const void *b)
{
	const ReservedRow *x = a;
	const ReservedRow *y = b;

	if (x->priority != y->priority)
		return x->priority > y->priority ? -1 : 1;
	if (x->run_at != y->run_at)
		return x->run_at < y->run_at ? -1 : 1;
	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return 0;
}

/* reserve(queue, worker, max_jobs, lease) returns setof reserved_job */
Datum
throttle_jobs_reserve(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TJQueue		queue;
	text	   *worker;
	int32		max_jobs;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	Interval   *lease = NULL;
	Datum		values[5];
	uint64		n;
	ReservedRow *rows;
	Datum		queue_name;

	tj_require_not_null(fcinfo, 0, "queue name");
	tj_require_not_null(fcinfo, 1, "worker");
	tj_require_not_null(fcinfo, 2, "max_jobs");
	worker = PG_GETARG_TEXT_PP(1);
	tj_check_key(worker, "worker");
	max_jobs = PG_GETARG_INT32(2);
	if (max_jobs < 1 || max_jobs > tj_max_batch_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("max_jobs must be between 1 and %d, not %d", tj_max_batch_size, max_jobs),
				 errhint("throttle_jobs.max_batch_size sets the upper bound.")));
	if (!PG_ARGISNULL(3))
	{
		lease = PG_GETARG_INTERVAL_P(3);
		tj_check_interval(lease, "lease", false);
	}

	InitMaterializedSRF(fcinfo, 0);

	SPI_connect();
	tj_lookup_queue(PG_GETARG_TEXT_PP(0), &queue);
	if (queue.paused)
	{
		SPI_finish();
		return (Datum) 0;
	}

	values[0] = Int32GetDatum(queue.id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = Int64GetDatum(max_jobs);
	values[3] = DirectFunctionCall2(timestamptz_pl_interval, TimestampTzGetDatum(now),
									IntervalPGetDatum(lease ? lease : &queue.lease));
	values[4] = PointerGetDatum(worker);
	n = tj_execute(&reserve_stmt, values, NULL, false, 0, SPI_OK_UPDATE_RETURNING);

	/* UPDATE ... RETURNING has no order: sort as the queue orders jobs. */
	rows = palloc(sizeof(ReservedRow) * (n > 0 ? n : 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		rows[i].row = i;
		rows[i].id = DatumGetInt64(tj_get_datum(i, R_ID, &isnull));
		rows[i].priority = DatumGetInt16(tj_get_datum(i, R_PRIORITY, &isnull));
		rows[i].run_at = DatumGetTimestampTz(tj_get_datum(i, R_RUN_AT, &isnull));
	}
	qsort(rows, n, sizeof(ReservedRow), reserved_row_cmp);

	queue_name = CStringGetTextDatum(queue.name);
	for (uint64 i = 0; i < n; i++)
	{
		Datum		out[11];
		bool		outnull[11];
		uint64		r = rows[i].row;

		memset(outnull, 0, sizeof(outnull));
		out[0] = tj_get_datum(r, R_ID, &outnull[0]);
		out[1] = queue_name;
		out[2] = tj_get_datum(r, R_PAYLOAD, &outnull[2]);
		out[3] = tj_get_datum(r, R_ATTEMPT, &outnull[3]);
		out[4] = tj_get_datum(r, R_MAX_ATTEMPTS, &outnull[4]);
		out[5] = tj_get_datum(r, R_LEASE_TOKEN, &outnull[5]);
		out[6] = tj_get_datum(r, R_LEASE_UNTIL, &outnull[6]);
		out[7] = Int32GetDatum((int32) rows[i].priority);
		out[8] = tj_get_datum(r, R_CONCURRENCY_KEY, &outnull[8]);
		out[9] = tj_get_datum(r, R_RATE_LIMIT_KEY, &outnull[9]);
		out[10] = tj_get_datum(r, R_ENQUEUED_AT, &outnull[10]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, outnull);
	}
	SPI_finish();
	return (Datum) 0;
}
