/*-------------------------------------------------------------------------
 *
 * explain.c
 *		explain_job(id): why a job is where it is, for those who may consume
 *		its queue.
 *
 * The C part finds the job's queue (live, dead or archived), checks the
 * caller's privilege on it (privilege.c), and asks the C API what the
 * report needs from the extension's own functions: the limits that govern
 * the job's keys (limits.c, the one home of the governing-limit rule) and
 * which queues' running jobs the caller may see among the holders of its
 * concurrency key.  The internal function _explain_job (PL/pgSQL, in the
 * upgrade script) only reads the tables and words the report: it calls no
 * function of ours, and is called through fmgr, so it needs no EXECUTE
 * grant.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "nodes/pg_list.h"
#include "parser/parse_func.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_explain_job);

/* limits.c's SQL-callable governing-limit lookup, called directly below */
extern Datum throttle_jobs_governing_limit(PG_FUNCTION_ARGS);

/*
 * Job $1: its queue, concurrency key, whether it waits for a rate
 * (throttled with a time), and its blocked key; live first, then dead, then
 * archived.
 */
static TJStatement find_stmt = {
	"SELECT f.queue_id, f.concurrency_key, f.rate_wait, f.blocked_key FROM ("
	"  SELECT 1 AS o, x.queue_id, x.concurrency_key,"
	"         x.state = 'throttled' AND x.blocked_until IS NOT NULL AS rate_wait, x.blocked_key"
	"    FROM throttle_jobs.job x WHERE x.id = $1"
	"  UNION ALL"
	"  SELECT 2, d.queue_id, NULL, false, NULL FROM throttle_jobs.job_dead d WHERE d.id = $1"
	"  UNION ALL"
	"  (SELECT 3, a.queue_id, NULL, false, NULL FROM throttle_jobs.job_archive a"
	"    WHERE a.id = $1 LIMIT 1)) f"
	" ORDER BY f.o LIMIT 1",
	1, {INT8OID}
};

/* The queues of the running jobs that hold concurrency key $1 */
static TJStatement holder_queues_stmt = {
	"SELECT DISTINCT r.queue_id FROM throttle_jobs.job r"
	" WHERE r.state = 'running' AND r.concurrency_key = $1",
	1, {TEXTOID}
};

/* The own key of the limit that governs key's rate (rate) or cap, or NULL */
static Datum
governing_limit(Datum key, bool rate, bool *isnull)
{
	LOCAL_FCINFO(call, 2);
	Datum		result;

	InitFunctionCallInfoData(*call, NULL, 2, InvalidOid, NULL, NULL);
	call->args[0].value = key;
	call->args[0].isnull = false;
	call->args[1].value = BoolGetDatum(rate);
	call->args[1].isnull = false;
	result = throttle_jobs_governing_limit(call);
	*isnull = call->isnull;
	return result;
}

/*
 * The queues (an int4[]) among those of the running holders of concurrency
 * key `key` that `role` may consume.  Connected to SPI.
 */
static Datum
visible_holder_queues(Oid role, Datum key)
{
	Datum		values[1];
	uint64		n;
	int32	   *ids;
	Datum	   *items;
	int			nitems = 0;
	bool		isnull;

	values[0] = key;
	n = tj_execute(&holder_queues_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	ids = palloc(sizeof(int32) * (n + 1));
	for (uint64 i = 0; i < n; i++)
		ids[i] = DatumGetInt32(tj_get_datum(i, 1, &isnull));
	items = palloc(sizeof(Datum) * (n + 1));
	for (uint64 i = 0; i < n; i++)
		if (tj_may_queue(role, ids[i], TJ_PRIV_CONSUME))
			items[nitems++] = Int32GetDatum(ids[i]);
	return PointerGetDatum(construct_array(items, nitems, INT4OID, sizeof(int32), true,
										   TYPALIGN_INT));
}

/*
 * explain_job(id) returns jsonb: the job's state and the reasons it waits
 * (or how it ended), for those who may consume its queue; state 'unknown'
 * for an id no job has.
 */
Datum
throttle_jobs_explain_job(PG_FUNCTION_ARGS)
{
	FmgrInfo   *report = (FmgrInfo *) fcinfo->flinfo->fn_extra;
	TJCaller	caller;
	Datum		values[1];
	bool		isnull;
	NullableDatum cap = {(Datum) 0, true};
	NullableDatum rate = {(Datum) 0, true};
	NullableDatum visible = {(Datum) 0, true};
	Datum		result;
	LOCAL_FCINFO(call, 4);

	tj_require_not_null(fcinfo, 0, "job id");
	if (report == NULL)
	{
		Oid			argtypes[4] = {INT8OID, TEXTOID, TEXTOID, INT4ARRAYOID};
		List	   *name = list_make2(makeString("throttle_jobs"), makeString("_explain_job"));

		report = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(FmgrInfo));
		fmgr_info_cxt(LookupFuncName(name, 4, argtypes, false), report,
					  fcinfo->flinfo->fn_mcxt);
		fcinfo->flinfo->fn_extra = report;
	}
	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	values[0] = PG_GETARG_DATUM(0);
	if (tj_execute(&find_stmt, values, NULL, false, 1, SPI_OK_SELECT) > 0)
	{
		int32		queue_id = DatumGetInt32(tj_get_datum(0, 1, &isnull));
		Datum		ckey = tj_get_datum(0, 2, &cap.isnull);
		bool		rate_wait = DatumGetBool(tj_get_datum(0, 3, &isnull));
		Datum		bkey = tj_get_datum(0, 4, &rate.isnull);

		ckey = cap.isnull ? (Datum) 0 : PointerGetDatum(DatumGetTextPCopy(ckey));
		bkey = rate.isnull ? (Datum) 0 : PointerGetDatum(DatumGetTextPCopy(bkey));
		tj_check_queue_id(caller.role, queue_id, TJ_PRIV_CONSUME, PG_GETARG_INT64(0));
		if (!cap.isnull)
			cap.value = governing_limit(ckey, false, &cap.isnull);
		if (!cap.isnull)
		{
			visible.value = visible_holder_queues(caller.role, ckey);
			visible.isnull = false;
		}
		rate.isnull = rate.isnull || !rate_wait;
		if (!rate.isnull)
			rate.value = governing_limit(bkey, true, &rate.isnull);
	}
	/* (made in SPI's memory, which SPI_finish frees) */
	if (!cap.isnull)
		cap.value = SPI_datumTransfer(cap.value, false, -1);
	if (!rate.isnull)
		rate.value = SPI_datumTransfer(rate.value, false, -1);
	if (!visible.isnull)
		visible.value = SPI_datumTransfer(visible.value, false, -1);
	SPI_finish();

	InitFunctionCallInfoData(*call, report, 4, fcinfo->fncollation, NULL, NULL);
	call->args[0].value = PG_GETARG_DATUM(0);
	call->args[0].isnull = false;
	call->args[1] = cap;
	call->args[2] = rate;
	call->args[3] = visible;
	result = FunctionCallInvoke(call);
	fcinfo->isnull = call->isnull;
	tj_caller_leave(&caller);
	return result;
}
