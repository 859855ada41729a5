/*-------------------------------------------------------------------------
 *
 * complete.c
 *		complete(), fail(), snooze() and heartbeat(): what a worker does with
 *		a job it holds, fenced by the lease token.
 *
 * Each statement matches the job by id, lease token and state 'running'.  A
 * token from an earlier reservation (the lease expired and was reaped, or
 * the job was reserved again) matches nothing, so a late worker changes
 * nothing and is told so: that is a normal race, not an error.
 *
 * Locking: the job's row, by each statement (fail() first locks it FOR
 * UPDATE with its queue's retry policy, then writes it).
 *
 * Each transition has a C function (tj_complete_job, tj_fail_job,
 * tj_snooze_job; tj_fail_locked for a job already locked, as lease expiry
 * has it) that the SQL functions wrap after their argument and privilege
 * checks, and that the background workers and run_jobs call directly.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "mb/pg_wchar.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_complete);
PG_FUNCTION_INFO_V1(throttle_jobs_fail);
PG_FUNCTION_INFO_V1(throttle_jobs_snooze);
PG_FUNCTION_INFO_V1(throttle_jobs_heartbeat);

#define JOB_COLUMNS \
	"id, queue_id, priority, run_at, attempt, max_attempts, cost, enqueued_at," \
	" worker, concurrency_key, rate_limit_key, unique_key"

/*
 * Archives the jobs of CTE "done" (unless their queue keeps none) with
 * finished_at $3 and the given result, and returns their keys, queue and
 * reservation time.
 */
#define ARCHIVE_DONE_SQL(result) \
	" archived AS (" \
	"  INSERT INTO throttle_jobs.job_archive (" JOB_COLUMNS ", reserved_at, finished_at," \
	"   state, errors, payload, result)" \
	"  SELECT d.id, d.queue_id, d.priority, d.run_at, d.attempt, d.max_attempts, d.cost," \
	"   d.enqueued_at, d.worker, d.concurrency_key, d.rate_limit_key, d.unique_key," \
	"   d.reserved_at, $3, 'completed', d.errors, d.payload, " result \
	"    FROM done d JOIN throttle_jobs.queue q ON q.id = d.queue_id" \
	"   WHERE q.retain_completed > '0'::pg_catalog.interval)" \
	" SELECT d.concurrency_key, d.rate_limit_key, d.queue_id, d.reserved_at, d.id FROM done d"

/*
 * Moves the running jobs that `match` picks (`using`: the list it joins) to
 * the archive, unless their queue keeps nothing (ARCHIVE_DONE_SQL).  The
 * state test is written so that it matches no partial index: the job is
 * found by its primary key, never by walking job_running_idx, whose dead
 * entries pile up while a long transaction holds back vacuum.
 */
#define COMPLETE_SQL(using, match, returning, result) \
	"WITH done AS (" \
	"  DELETE FROM throttle_jobs.job j" using \
	"   WHERE " match \
	"     AND coalesce(j.state = 'running', false)" \
	"  RETURNING j.*" returning ")," \
	ARCHIVE_DONE_SQL(result)

static TJStatement complete_stmt = {
	COMPLETE_SQL("", "j.id = $1 AND j.lease_token = $2", "", "$4"),
	4, {INT8OID, UUIDOID, TIMESTAMPTZOID, JSONBOID}, NULL, TJ_GENERIC
};

/* complete_stmt for many jobs at once: $1 ids and $2 lease tokens, paired */
static TJStatement complete_many_stmt = {
	COMPLETE_SQL(" USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS f(id, token)",
				 "j.id = f.id AND j.lease_token = f.token", "", "NULL"),
	3, {INT8ARRAYOID, UUIDARRAYOID, TIMESTAMPTZOID}, NULL, TJ_GENERIC
};

/* complete_many_stmt with $4 results (jsonb[], NULL elements: none), paired */
static TJStatement complete_results_stmt = {
	COMPLETE_SQL(" USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
				 " pg_catalog.unnest($4)) AS f(id, token, result)",
				 "j.id = f.id AND j.lease_token = f.token", ", f.result AS done_result",
				 "d.done_result"),
	4, {INT8ARRAYOID, UUIDARRAYOID, TIMESTAMPTZOID, JSONBARRAYOID}, NULL, TJ_GENERIC
};

/* The queue of job $1, no longer live, if it was cancelled (cancel(id, running => true)) */
static TJStatement cancelled_stmt = {
	"SELECT a.queue_id FROM throttle_jobs.job_archive a"
	" WHERE a.id = $1 AND a.state = 'cancelled' LIMIT 1",
	1, {INT8OID}, NULL, TJ_GENERIC
};

/* Locks a running job under a given lease, with its queue's retry policy. */
static TJStatement fail_lock_stmt = {
	"SELECT " TJ_FAILED_JOB_COLUMNS
	"  FROM throttle_jobs.job j JOIN throttle_jobs.queue q ON q.id = j.queue_id"
	" WHERE j.id = $1 AND j.lease_token = $2 AND j.state = 'running'"
	" FOR UPDATE OF j",
	2, {INT8OID, UUIDOID}, NULL, TJ_GENERIC
};


static TJStatement retry_stmt = {
	"UPDATE throttle_jobs.job j"
	"   SET state = 'available', run_at = $4, lease_token = NULL, lease_until = NULL,"
	"       reserved_at = NULL, worker = NULL, errors = j.errors || " TJ_ERROR_ENTRY("j")
	" WHERE j.id = $1",
	4, {INT8OID, TIMESTAMPTZOID, TEXTOID, TIMESTAMPTZOID}, NULL, TJ_GENERIC
};

static TJStatement snooze_stmt = {
	"UPDATE throttle_jobs.job j"
	"   SET state = 'available', run_at = $3, attempt = j.attempt - 1,"
	"       lease_token = NULL, lease_until = NULL, reserved_at = NULL, worker = NULL"
	" WHERE j.id = $1 AND j.lease_token = $2 AND j.state = 'running'"
	" RETURNING j.concurrency_key, j.queue_id, j.run_at, j.attempt",
	3, {INT8OID, UUIDOID, TIMESTAMPTZOID}, NULL, TJ_GENERIC
};

static TJStatement heartbeat_stmt = {
	"UPDATE throttle_jobs.job j"
	"   SET lease_until = $3 + coalesce($4, q.lease)"
	"  FROM throttle_jobs.queue q"
	" WHERE q.id = j.queue_id AND j.id = $1 AND j.lease_token = $2 AND j.state = 'running'"
	" RETURNING j.lease_until",
	4, {INT8OID, UUIDOID, TIMESTAMPTZOID, INTERVALOID}, NULL, TJ_GENERIC
};

/*
 * A job left the running state: if it carried a concurrency key (column 1
 * of row `row` of the current result), the key's free slot goes to its best
 * waiting job (tj_slot_freed).
 */
static void
release_slot(uint64 row)
{
	char	   *ckey = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 1);

	if (ckey != NULL)
		tj_slot_freed(ckey);
}

/* A job completed: as release_slot, and its rate key (column 2) records a success. */
static void
completed(uint64 row)
{
	char	   *rkey = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 2);

	release_slot(row);
	if (rkey != NULL)
		tj_record_outcome(rkey, false, GetCurrentTransactionStartTimestamp());
}

/*
 * Records a failed attempt of a job that the caller has locked (it is
 * running, under the caller's view of its lease): the job goes back to
 * 'available' after its backoff (or retry_in), or to the dead letters when
 * its attempts are used up or retryable is false.  Returns true if dead.
 * The caller must be connected to SPI.
 */
bool
tj_fail_locked(const TJFailedJob *job, const char *error,
			   const Interval *retry_in, bool retryable, TimestampTz now)
{
	Datum		values[4];
	bool		dead = !retryable || job->attempt >= job->max_attempts;

	values[0] = Int64GetDatum(job->id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = CStringGetTextDatum(error);
	if (dead)
		tj_dead_letter(job->id, true, now, error,
					   retryable ? "attempts exhausted" : "failed without retry");
	else
	{
		int64		delay;

		if (retry_in)
			delay = tj_interval_usecs(retry_in);
		else
			delay = tj_backoff_usecs(job->attempt, job->backoff_base, job->backoff_factor,
									 job->backoff_max, job->backoff_jitter,
									 pg_prng_double(&pg_global_prng_state));
		values[3] = TimestampTzGetDatum(now + delay);
		tj_execute(&retry_stmt, values, NULL, false, 0, SPI_OK_UPDATE);
		tj_stats_failed(job->queue_id, false, DatumGetTimestampTz(values[3]));
	}
	if (job->concurrency_key)
		tj_slot_freed(job->concurrency_key);
	if (job->rate_limit_key)
		tj_record_outcome(job->rate_limit_key, true, now);
	return dead;
}

/*
 * Refuses a result larger than throttle_jobs.max_payload_size: a result is
 * kept in the archive as a payload is kept in the job, under the same bound.
 * which: the result's position among several (1-based), or 0 for one.
 */
void
tj_check_result_size(Datum result, int which)
{
	Size		size = toast_raw_datum_size(result) - VARHDRSZ;

	if (size <= (Size) tj_max_payload_size)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 which > 0 ? errmsg("result %d is too large (%zu bytes)", which, size)
			 : errmsg("result is too large (%zu bytes)", size),
			 errhint("throttle_jobs.max_payload_size allows %d bytes.",
					 tj_max_payload_size)));
}

/*
 * The complete transition: completes running job `id` (int8) under
 * `lease_token` (uuid) at `now` with `result` (jsonb, or (Datum) 0 for
 * none, at most max_payload_size: tj_check_result_size); false when the
 * token is stale.  The caller must be connected to SPI, running as the
 * extension owner, and have checked the caller's privilege on the job.
 */
bool
tj_complete_job(Datum id, Datum lease_token, Datum result, TimestampTz now)
{
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		done;
	bool		isnull;

	if (result != (Datum) 0)
		tj_check_result_size(result, 0);
	values[0] = id;
	values[1] = lease_token;
	values[2] = TimestampTzGetDatum(now);
	values[3] = result;
	if (result == (Datum) 0)
		nulls[3] = 'n';
	done = tj_execute(&complete_stmt, values, nulls, false, 0, SPI_OK_SELECT) > 0;
	if (done)
	{
		tj_stats_completed(DatumGetInt32(tj_get_datum(0, 3, &isnull)),
						   DatumGetTimestampTz(tj_get_datum(0, 4, &isnull)), now);
		completed(0);
	}
	SPI_freetuptable(SPI_tuptable);
	if (!done)
		tj_hint_note_job(values[0]);	/* it may be locked, and ready */
	return done;
}

/*
 * Whether a job whose lease token no longer matches was cancelled (rather
 * than reaped, reserved again or finished): what a worker is told in place
 * of 'stale'.  Only a role that may consume the job's queue learns it.
 * The caller must be connected to SPI.
 */
bool
tj_job_was_cancelled(int64 id, Oid role)
{
	Datum		values[1];
	int32		queue_id = 0;
	bool		found;
	bool		isnull;

	/* a 0.1.0 schema (the library before ALTER EXTENSION UPDATE) cancels no running job */
	if (!tj_schema_has_released_at())
		return false;
	values[0] = Int64GetDatum(id);
	/* not read-only: a fresh snapshot sees a cancel that a lock wait just saw commit */
	found = tj_execute(&cancelled_stmt, values, NULL, false, 1, SPI_OK_SELECT) > 0;
	if (found)
		queue_id = DatumGetInt32(tj_get_datum(0, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return found && tj_may_queue(role, queue_id, TJ_PRIV_CONSUME);
}

/*
 * Completes each running job ids[i] under lease token tokens[i] with
 * result results[i] (one-dimensional bigint[], uuid[] and, unless results
 * is (Datum) 0, jsonb[] of equal length; ids and tokens without NULLs);
 * stale pairs change nothing.  Returns how many were completed and, if
 * done_ids is not NULL, their ids (palloc'd, in no order).  The caller
 * must be connected to SPI.
 */
uint64
tj_complete_results(Datum ids, Datum tokens, Datum results, int64 **done_ids)
{
	Datum		values[4];
	uint64		n;
	char	  **ckeys;
	char	  **rkeys;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	values[0] = ids;
	values[1] = tokens;
	values[2] = TimestampTzGetDatum(now);
	values[3] = results;
	if (results != (Datum) 0)
		n = tj_execute(&complete_results_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	else
		n = tj_execute(&complete_many_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	if (done_ids)
		*done_ids = palloc(sizeof(int64) * (n + 1));
	if (n == 0)
	{
		tj_hint_note_jobs(ids); /* stale pairs: locked, maybe, and ready */
		return 0;
	}
	/* the keys, read before unparking runs statements of its own */
	ckeys = palloc(sizeof(char *) * n);
	rkeys = palloc(sizeof(char *) * n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ckeys[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		rkeys[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		tj_stats_completed(DatumGetInt32(tj_get_datum(i, 3, &isnull)),
						   DatumGetTimestampTz(tj_get_datum(i, 4, &isnull)), now);
		if (done_ids)
			(*done_ids)[i] = DatumGetInt64(tj_get_datum(i, 5, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	for (uint64 i = 0; i < n; i++)
	{
		if (ckeys[i] != NULL)
			tj_slot_freed(ckeys[i]);
		if (rkeys[i] != NULL)
			tj_record_outcome(rkeys[i], false, now);
	}
	if (n < (uint64) ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(ids)),
									ARR_DIMS(DatumGetArrayTypeP(ids))))
		tj_hint_note_jobs(ids); /* stale pairs: locked, maybe, and ready */
	return n;
}

/*
 * Completes, with no result, each running job ids[i] under lease token
 * tokens[i] (one-dimensional bigint[] and uuid[] of equal length, without
 * NULLs); stale pairs change nothing.  Returns how many were completed.
 * The caller must be connected to SPI.
 */
uint64
tj_complete_many(Datum ids, Datum tokens)
{
	return tj_complete_results(ids, tokens, (Datum) 0, NULL);
}

/* complete(id, lease_token, result) returns boolean: false when stale */
Datum
throttle_jobs_complete(PG_FUNCTION_ARGS)
{
	bool		done;
	TJCaller	caller;

	tj_require_not_null(fcinfo, 0, "job id");
	tj_require_not_null(fcinfo, 1, "lease_token");
	if (!PG_ARGISNULL(2))
		tj_check_result_size(PG_GETARG_DATUM(2), 0);

	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	tj_check_job(caller.role, PG_GETARG_DATUM(0), TJ_PRIV_CONSUME);
	done = tj_complete_job(PG_GETARG_DATUM(0), PG_GETARG_DATUM(1),
						   PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
						   GetCurrentTransactionStartTimestamp());
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_BOOL(done);
}

/* Reads row `row` of a result whose columns are TJ_FAILED_JOB_COLUMNS. */
void
tj_read_failed_job(uint64 row, TJFailedJob *job)
{
	bool		isnull;

	job->id = DatumGetInt64(tj_get_datum(row, 1, &isnull));
	job->attempt = DatumGetInt32(tj_get_datum(row, 2, &isnull));
	job->max_attempts = DatumGetInt32(tj_get_datum(row, 3, &isnull));
	job->backoff_base = tj_interval_usecs(DatumGetIntervalP(tj_get_datum(row, 4, &isnull)));
	job->backoff_factor = DatumGetFloat8(tj_get_datum(row, 5, &isnull));
	job->backoff_max = tj_interval_usecs(DatumGetIntervalP(tj_get_datum(row, 6, &isnull)));
	job->backoff_jitter = DatumGetFloat8(tj_get_datum(row, 7, &isnull));
	job->concurrency_key = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 8);
	job->rate_limit_key = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 9);
	job->queue_id = DatumGetInt32(tj_get_datum(row, 10, &isnull));
}

/*
 * The fail transition of running job `id` (int8) under `lease_token`
 * (uuid): locks it and records the failed attempt (tj_fail_locked), its
 * error cut to TJ_MAX_ERROR_LEN bytes.  Returns TJ_FAIL_STALE, changing
 * nothing, when the token no longer matches.  The caller must be connected
 * to SPI, running as the extension owner, and have checked the caller's
 * privilege on the job.
 */
TJFailOutcome
tj_fail_job(Datum id, Datum lease_token, const char *error, const Interval *retry_in,
			bool retryable, TimestampTz now)
{
	Datum		values[2];
	TJFailedJob job;
	char	   *text = pstrdup(error);

	if (strlen(text) > TJ_MAX_ERROR_LEN)
		text[pg_mbcliplen(text, strlen(text), TJ_MAX_ERROR_LEN)] = '\0';
	values[0] = id;
	values[1] = lease_token;
	if (tj_execute(&fail_lock_stmt, values, NULL, false, 0, SPI_OK_SELECT) == 0)
	{
		tj_hint_note_job(id);	/* it may be locked, and ready */
		return TJ_FAIL_STALE;
	}
	tj_read_failed_job(0, &job);
	return tj_fail_locked(&job, text, retry_in, retryable, now) ? TJ_FAIL_DEAD : TJ_FAIL_RETRY;
}

/* fail(id, lease_token, error, retry_in, retryable) returns text */
Datum
throttle_jobs_fail(PG_FUNCTION_ARGS)
{
	Interval   *retry_in = NULL;
	TJFailOutcome outcome;
	const char *state;
	TJCaller	caller;

	tj_require_not_null(fcinfo, 0, "job id");
	tj_require_not_null(fcinfo, 1, "lease_token");
	tj_require_not_null(fcinfo, 2, "error");
	tj_require_not_null(fcinfo, 4, "retryable");
	if (!PG_ARGISNULL(3))
	{
		retry_in = PG_GETARG_INTERVAL_P(3);
		tj_check_delay(retry_in, "retry_in");
	}

	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	tj_check_job(caller.role, PG_GETARG_DATUM(0), TJ_PRIV_CONSUME);
	outcome = tj_fail_job(PG_GETARG_DATUM(0), PG_GETARG_DATUM(1),
						  text_to_cstring(PG_GETARG_TEXT_PP(2)), retry_in, PG_GETARG_BOOL(4),
						  GetCurrentTransactionStartTimestamp());
	if (outcome == TJ_FAIL_STALE)
		state = tj_job_was_cancelled(PG_GETARG_INT64(0), caller.role) ? "cancelled" : "stale";
	else
		state = outcome == TJ_FAIL_DEAD ? "dead" : "available";
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_TEXT_P(cstring_to_text(state));
}

/*
 * The snooze transition: puts running job `id` (int8) held under
 * `lease_token` (uuid) back, due at run_at, without counting its attempt;
 * false when the token is stale.  The caller must be connected to SPI,
 * running as the extension owner, and have checked the caller's privilege
 * on the job.
 */
bool
tj_snooze_job(Datum id, Datum lease_token, TimestampTz run_at)
{
	Datum		values[3];
	bool		isnull;
	bool		snoozed;

	values[0] = id;
	values[1] = lease_token;
	values[2] = TimestampTzGetDatum(run_at);
	snoozed = tj_execute(&snooze_stmt, values, NULL, false, 0, SPI_OK_UPDATE_RETURNING) > 0;
	if (snoozed)
	{
		tj_stats_snoozed(DatumGetInt32(tj_get_datum(0, 2, &isnull)),
						 DatumGetTimestampTz(tj_get_datum(0, 3, &isnull)),
						 DatumGetInt32(tj_get_datum(0, 4, &isnull)));
		release_slot(0);
	}
	else
		tj_hint_note_job(id);	/* it may be locked, and ready */
	SPI_freetuptable(SPI_tuptable);
	return snoozed;
}

/* snooze(id, lease_token, delay) returns boolean: false when stale */
Datum
throttle_jobs_snooze(PG_FUNCTION_ARGS)
{
	Interval   *delay;
	TimestampTz run_at;
	bool		snoozed;
	TJCaller	caller;

	tj_require_not_null(fcinfo, 0, "job id");
	tj_require_not_null(fcinfo, 1, "lease_token");
	tj_require_not_null(fcinfo, 2, "delay");
	delay = PG_GETARG_INTERVAL_P(2);
	tj_check_delay(delay, "delay");
	run_at = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													 TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
													 IntervalPGetDatum(delay)));

	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	tj_check_job(caller.role, PG_GETARG_DATUM(0), TJ_PRIV_CONSUME);
	snoozed = tj_snooze_job(PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), run_at);
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_BOOL(snoozed);
}

/* heartbeat(id, lease_token, extend) returns timestamptz: NULL when stale */
Datum
throttle_jobs_heartbeat(PG_FUNCTION_ARGS)
{
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	TimestampTz until = 0;
	uint64		n;
	bool		isnull;
	TJCaller	caller;

	tj_require_not_null(fcinfo, 0, "job id");
	tj_require_not_null(fcinfo, 1, "lease_token");
	if (!PG_ARGISNULL(2))
		tj_check_lease(PG_GETARG_INTERVAL_P(2), "extend");

	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	values[3] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[3] = PG_ARGISNULL(2) ? 'n' : ' ';

	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	tj_check_job(caller.role, PG_GETARG_DATUM(0), TJ_PRIV_CONSUME);
	n = tj_execute(&heartbeat_stmt, values, nulls, false, 0, SPI_OK_UPDATE_RETURNING);
	if (n > 0)
		until = DatumGetTimestampTz(tj_get_datum(0, 1, &isnull));
	else
		tj_hint_note_job(values[0]);	/* it may be locked, and ready */
	SPI_finish();
	tj_caller_leave(&caller);
	if (n == 0)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(until);
}
