/*-------------------------------------------------------------------------
 *
 * cancel.c
 *		cancel(id) and cancel(id, running): a job leaves the live table for
 *		the archive, in state 'cancelled', for those who manage its queue.
 *
 * A waiting job (available, scheduled, throttled) can always be cancelled.
 * A running one only with running => true: its concurrency slot goes to
 * the key's best waiting job, and its worker's lease token matches nothing
 * any more, so the worker's next heartbeat returns NULL, complete and
 * snooze return false, and fail and complete_and_reserve_ex say
 * 'cancelled' (tj_job_was_cancelled, complete.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_cancel_job);

/*
 * Cancels job $1 if it waits (or, with $2, runs) and archives it as
 * cancelled at $3.  Returns its queue, former state, run_at, attempt and
 * concurrency key.
 */
static TJStatement cancel_stmt = {
	"WITH c AS ("
	"  DELETE FROM throttle_jobs.job j"
	"   WHERE j.id = $1"
	"     AND (j.state = 'available' OR j.state = 'throttled' OR ($2 AND j.state = 'running'))"
	"  RETURNING j.*),"
	" archived AS ("
	"  INSERT INTO throttle_jobs.job_archive (id, queue_id, state, priority, run_at, attempt,"
	"   max_attempts, cost, enqueued_at, reserved_at, finished_at, worker,"
	"   concurrency_key, rate_limit_key, unique_key, errors, payload, result)"
	"  SELECT c.id, c.queue_id, 'cancelled', c.priority, c.run_at, c.attempt,"
	"   c.max_attempts, c.cost, c.enqueued_at, c.reserved_at, $3, c.worker,"
	"   c.concurrency_key, c.rate_limit_key, c.unique_key, c.errors, c.payload, NULL"
	"    FROM c)"
	" SELECT c.queue_id, c.state, c.run_at, c.attempt, c.concurrency_key FROM c",
	3, {INT8OID, BOOLOID, TIMESTAMPTZOID}
};

/*
 * cancel(id) and cancel(id, running) return boolean: true if the job was
 * cancelled.  cancel(id) leaves a running job alone.
 */
Datum
throttle_jobs_cancel_job(PG_FUNCTION_ARGS)
{
	Datum		values[3];
	TJCaller	caller;
	bool		cancelled;

	tj_require_not_null(fcinfo, 0, "job id");
	values[0] = PG_GETARG_DATUM(0);
	if (PG_NARGS() > 1)
	{
		tj_require_not_null(fcinfo, 1, "running");
		values[1] = PG_GETARG_DATUM(1);
	}
	else
		values[1] = BoolGetDatum(false);
	values[2] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	tj_check_job(caller.role, PG_GETARG_DATUM(0), TJ_PRIV_MANAGE);
	cancelled = tj_execute(&cancel_stmt, values, NULL, false, 0, SPI_OK_SELECT) > 0;
	if (cancelled)
	{
		bool		isnull;
		int32		queue_id = DatumGetInt32(tj_get_datum(0, 1, &isnull));
		char	   *state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		TimestampTz run_at = DatumGetTimestampTz(tj_get_datum(0, 3, &isnull));
		int32		attempt = DatumGetInt32(tj_get_datum(0, 4, &isnull));
		char	   *ckey = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5);
		bool		running = strcmp(state, "running") == 0;

		SPI_freetuptable(SPI_tuptable);
		tj_stats_cancelled(queue_id, running, run_at, attempt);
		/* a running job held a slot of its key: the best waiting job gets it */
		if (running && ckey != NULL)
			tj_slot_freed(ckey);
	}
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_BOOL(cancelled);
}
