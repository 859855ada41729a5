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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_complete_and_reserve);

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
 * complete_and_reserve(queue, worker, done bigint[], lease_tokens uuid[],
 *						max_jobs, lease) returns setof reserved_job
 */
Datum
throttle_jobs_complete_and_reserve(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *ids;
	Datum	   *tokens;
	int			nids;
	int			ntokens;
	TJCaller	caller;

	tj_require_not_null(fcinfo, 0, "queue name");
	tj_require_not_null(fcinfo, 1, "worker");
	tj_require_not_null(fcinfo, 2, "done");
	tj_require_not_null(fcinfo, 3, "lease_tokens");
	tj_require_not_null(fcinfo, 4, "max_jobs");
	tj_check_reserve_args(PG_GETARG_TEXT_PP(1), PG_GETARG_INT32(4),
						  PG_ARGISNULL(5) ? NULL : PG_GETARG_INTERVAL_P(5));

	nids = array_elements(PG_GETARG_ARRAYTYPE_P(2), INT8OID, "done", &ids);
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
