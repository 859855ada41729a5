/*-------------------------------------------------------------------------
 *
 * admin.c
 *		cancel(id, running) and retry_now(id): an admin's moves of one live
 *		job, for those who manage its queue.
 *
 * cancel(id, running => true) also cancels a running job: the job leaves
 * the hot table for the archive (state 'cancelled'), its concurrency slot
 * goes to the key's best waiting job, and its worker's lease token matches
 * nothing any more, so the worker's next heartbeat returns NULL, complete
 * and snooze return false, and fail and complete_and_reserve_ex say
 * 'cancelled' (tj_job_was_cancelled).  retry_now(id) makes a job that waits
 * for its run_at (scheduled, or in backoff after a failure) due at once;
 * a job held back by a limit keeps waiting for its key.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_cancel_job);
PG_FUNCTION_INFO_V1(throttle_jobs_retry_now);

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

/* Locks job $1 if it waits for its run_at, later than $2 */
static TJStatement waiting_stmt = {
	"SELECT j.queue_id, j.run_at, j.attempt FROM throttle_jobs.job j"
	" WHERE j.id = $1 AND j.state = 'available' AND j.run_at > $2"
	" FOR UPDATE",
	2, {INT8OID, TIMESTAMPTZOID}
};

static TJStatement run_now_stmt = {
	"UPDATE throttle_jobs.job j SET run_at = $2 WHERE j.id = $1",
	2, {INT8OID, TIMESTAMPTZOID}
};

/* cancel(id, running) returns boolean: true if the job was cancelled */
Datum
throttle_jobs_cancel_job(PG_FUNCTION_ARGS)
{
	Datum		values[3];
	TJCaller	caller;
	bool		cancelled;

	tj_require_not_null(fcinfo, 0, "job id");
	tj_require_not_null(fcinfo, 1, "running");
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
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

/* retry_now(id) returns boolean: true if a waiting job was made due now */
Datum
throttle_jobs_retry_now(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	TJCaller	caller;
	bool		moved;

	tj_require_not_null(fcinfo, 0, "job id");
	values[0] = PG_GETARG_DATUM(0);
	values[1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	tj_check_job(caller.role, PG_GETARG_DATUM(0), TJ_PRIV_MANAGE);
	moved = tj_execute(&waiting_stmt, values, NULL, false, 0, SPI_OK_SELECT) > 0;
	if (moved)
	{
		bool		isnull;
		int32		queue_id = DatumGetInt32(tj_get_datum(0, 1, &isnull));
		TimestampTz old_run_at = DatumGetTimestampTz(tj_get_datum(0, 2, &isnull));
		int32		attempt = DatumGetInt32(tj_get_datum(0, 3, &isnull));

		SPI_freetuptable(SPI_tuptable);
		tj_execute(&run_now_stmt, values, NULL, false, 0, SPI_OK_UPDATE);
		tj_stats_run_now(queue_id, old_run_at, attempt);
		/* executors of a handler queue sleep until woken */
		tj_wake_executors_at_commit();
	}
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_BOOL(moved);
}
