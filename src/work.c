/*-------------------------------------------------------------------------
 *
 * work.c
 *		complete_and_reserve(): a worker's loop step in one transaction.
 *
 * A worker that completes the jobs it finished and reserves its next ones
 * in the same call commits once per step instead of twice, and delivery
 * stays at-least-once: the completions and the new leases commit together
 * or not at all.  Completion is complete()'s, fenced by each lease token (a
 * stale token changes nothing); reservation is reserve()'s, and sees the
 * slots the completions freed.
 *
 * complete_and_reserve_ex() also takes a result for each completed job and
 * tells the worker which completions were refused: 'stale' (the lease was
 * lost: reaped, or the job reserved again) or 'cancelled'.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_complete_and_reserve);
PG_FUNCTION_INFO_V1(throttle_jobs_complete_and_reserve_ex);

/*
 * Reservation runs in READ COMMITTED only.  Under a transaction snapshot
 * (REPEATABLE READ, SERIALIZABLE) a reservation that meets a job or a
 * limiter row changed since its snapshot fails with a serialization error,
 * and workers racing for one queue meet such rows all the time; so it is
 * refused up front, before it changes anything.
 */
void
tj_refuse_xact_snapshot(void)
{
	if (!IsolationUsesXactSnapshot())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot reserve jobs in a %s transaction",
					IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
			 errdetail("Reservations that race under a transaction snapshot fail with serialization errors."),
			 errhint("Reserve in a READ COMMITTED transaction (BEGIN ISOLATION LEVEL READ COMMITTED).")));
}

/* Deconstructs a one-dimensional array without NULLs (an empty one is fine). */
static int
array_elements(ArrayType *arr, Oid elemtype, const char *what, Datum **elems)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	bool	   *nulls;
	int			n;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array, not %d-dimensional",
						what, ARR_NDIM(arr))));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, elemtype, typlen, typbyval, typalign, elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain NULL (element %d)", what, i + 1)));
	return n;
}

/*
 * Checks the arguments that both forms of complete_and_reserve take: queue
 * (argument 0), worker (1), done (2) and lease_tokens (3), max_jobs (at
 * max_jobs_arg) and lease (the next one, NULL: the queue's).  done and
 * lease_tokens: equal lengths within max_batch_size, no NULLs.  Returns
 * the number of jobs and, in *ids, done's elements.
 */
static int
check_work_args(FunctionCallInfo fcinfo, int max_jobs_arg, Datum **ids)
{
	Datum	   *tokens;
	int			nids;
	int			ntokens;

	tj_require_not_null(fcinfo, 0, "queue name");
	tj_require_not_null(fcinfo, 1, "worker");
	tj_require_not_null(fcinfo, 2, "done");
	tj_require_not_null(fcinfo, 3, "lease_tokens");
	tj_require_not_null(fcinfo, max_jobs_arg, "max_jobs");
	tj_check_reserve_args(PG_GETARG_TEXT_PP(1), PG_GETARG_INT32(max_jobs_arg),
						  PG_ARGISNULL(max_jobs_arg + 1) ? NULL
						  : PG_GETARG_INTERVAL_P(max_jobs_arg + 1));
	nids = array_elements(PG_GETARG_ARRAYTYPE_P(2), INT8OID, "done", ids);
	ntokens = array_elements(PG_GETARG_ARRAYTYPE_P(3), UUIDOID, "lease_tokens", &tokens);
	if (nids != ntokens)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("done has %d elements but lease_tokens has %d", nids, ntokens),
				 errdetail("Each finished job's id needs the lease token it was reserved with.")));
	if (nids > tj_max_batch_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("done may hold at most %d jobs, not %d", tj_max_batch_size, nids),
				 errhint("throttle_jobs.max_batch_size sets the upper bound.")));
	return nids;
}

/*
 * complete_and_reserve(queue, worker, done bigint[], lease_tokens uuid[],
 *						max_jobs, lease) returns setof reserved_job
 */
Datum
throttle_jobs_complete_and_reserve(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *ids;
	int			nids;
	TJCaller	caller;

	nids = check_work_args(fcinfo, 4, &ids);

	InitMaterializedSRF(fcinfo, 0);

	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	/* consume on the queue, and on the queue of every job it completes */
	tj_check_queue(caller.role, PG_GETARG_TEXT_PP(0), TJ_PRIV_CONSUME);
	if (nids > 0)
	{
		tj_check_jobs(caller.role, PG_GETARG_DATUM(2), TJ_PRIV_CONSUME);
		(void) tj_complete_many(PG_GETARG_DATUM(2), PG_GETARG_DATUM(3));
	}
	tj_reserve_jobs(rsinfo, PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1), PG_GETARG_INT32(4),
					PG_ARGISNULL(5) ? NULL : PG_GETARG_INTERVAL_P(5));
	SPI_finish();
	tj_caller_leave(&caller);
	return (Datum) 0;
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

/*
 * complete_and_reserve_ex(queue, worker, done bigint[], lease_tokens uuid[],
 *						   results jsonb[], max_jobs, lease)
 *		returns setof work_item
 *
 * A work_item is ('stale' or 'cancelled', id, NULL...) for each job of done
 * whose completion was refused, in done's order, then ('reserved', the
 * reserved_job's columns) for each job reserved.
 */
Datum
throttle_jobs_complete_and_reserve_ex(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ReturnSetInfo inner;
	TupleDesc	jobdesc;
	TupleTableSlot *slot;
	Datum	   *ids;
	int			nids;
	int64	   *done_ids = NULL;
	uint64		ndone = 0;
	Datum		results = (Datum) 0;
	TJCaller	caller;
	Datum		values[12];
	bool		nulls[12];

	nids = check_work_args(fcinfo, 5, &ids);
	if (!PG_ARGISNULL(4))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(4);
		Datum	   *elems;
		bool	   *elnulls;
		int			n;

		if (ARR_NDIM(arr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("results must be a one-dimensional array, not %d-dimensional",
							ARR_NDIM(arr))));
		deconstruct_array(arr, JSONBOID, -1, false, TYPALIGN_INT, &elems, &elnulls, &n);
		if (n != nids)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("done has %d elements but results has %d", nids, n),
					 errhint("Pass one result (or NULL) per finished job, or results => NULL.")));
		/* each result is kept in the archive as complete()'s is: the same bound */
		for (int i = 0; i < n; i++)
			if (!elnulls[i])
				tj_check_result_size(elems[i], i + 1);
		results = PointerGetDatum(arr);
	}

	InitMaterializedSRF(fcinfo, 0);

	/* reserve() fills a tuplestore of reserved_job rows, copied out below */
	jobdesc = CreateTemplateTupleDesc(rsinfo->setDesc->natts - 1);
	for (int i = 1; i < rsinfo->setDesc->natts; i++)
		TupleDescCopyEntry(jobdesc, i, rsinfo->setDesc, i + 1);
	memset(&inner, 0, sizeof(inner));
	inner.type = T_ReturnSetInfo;
	inner.setDesc = jobdesc;
	{
		MemoryContext old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);

		inner.setResult = tuplestore_begin_heap(false, false, work_mem);
		MemoryContextSwitchTo(old);
	}

	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	/* consume on the queue, and on the queue of every job it completes */
	tj_check_queue(caller.role, PG_GETARG_TEXT_PP(0), TJ_PRIV_CONSUME);
	if (nids > 0)
	{
		tj_check_jobs(caller.role, PG_GETARG_DATUM(2), TJ_PRIV_CONSUME);
		ndone = tj_complete_results(PG_GETARG_DATUM(2), PG_GETARG_DATUM(3), results, &done_ids);
		qsort(done_ids, ndone, sizeof(int64), cmp_int64);
	}
	/* the refused completions, in done's order */
	memset(nulls, true, sizeof(nulls));
	nulls[0] = nulls[1] = false;
	for (int i = 0; i < nids; i++)
	{
		int64		id = DatumGetInt64(ids[i]);
		bool		dup = false;

		if (ndone > 0 && bsearch(&id, done_ids, ndone, sizeof(int64), cmp_int64))
			continue;
		for (int k = 0; k < i && !dup; k++)
			dup = DatumGetInt64(ids[k]) == id;
		if (dup)
			continue;
		values[0] = CStringGetTextDatum(tj_job_was_cancelled(id, caller.role) ? "cancelled" : "stale");
		values[1] = Int64GetDatum(id);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	tj_reserve_jobs(&inner, PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1), PG_GETARG_INT32(5),
					PG_ARGISNULL(6) ? NULL : PG_GETARG_INTERVAL_P(6));
	SPI_finish();
	tj_caller_leave(&caller);

	slot = MakeSingleTupleTableSlot(jobdesc, &TTSOpsMinimalTuple);
	values[0] = CStringGetTextDatum("reserved");
	nulls[0] = false;
	while (tuplestore_gettupleslot(inner.setResult, true, false, slot))
	{
		slot_getallattrs(slot);
		for (int i = 0; i < jobdesc->natts; i++)
		{
			values[i + 1] = slot->tts_values[i];
			nulls[i + 1] = slot->tts_isnull[i];
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	ExecDropSingleTupleTableSlot(slot);
	tuplestore_end(inner.setResult);
	return (Datum) 0;
}
