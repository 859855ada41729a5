/*-------------------------------------------------------------------------
 *
 * queue.c
 *		Looking up a queue's settings by name, and the queue lock.
 *
 * The queue lock is a heavyweight lock on the object (throttle_jobs.queue,
 * hash of the queue name): enqueue takes it in AccessShareLock before it
 * looks the queue up and keeps it to commit, drop_queue takes it in
 * AccessExclusiveLock, so a job can never land in a queue being dropped.
 * Names that share a hash only wait for each other.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_lock_queue);
PG_FUNCTION_INFO_V1(throttle_jobs_create_queue);
PG_FUNCTION_INFO_V1(throttle_jobs_alter_queue);

#define QUEUE_OPTION_TYPES \
	"pg_catalog.text, pg_catalog.int8, pg_catalog.text, pg_catalog.int4," \
	" pg_catalog.interval, pg_catalog.float8, pg_catalog.interval, pg_catalog.float8," \
	" pg_catalog.interval, pg_catalog.interval, pg_catalog.interval," \
	" pg_catalog.regprocedure, pg_catalog.text"
#define QUEUE_OPTION_COUNT 13

/*
 * Calls the internal SECURITY DEFINER function `target` with the current
 * role (the one in effect where our caller called us: these wrappers are not
 * SECURITY DEFINER) followed by our first `nargs` arguments.  The call goes
 * through fmgr directly, so the internal function needs no EXECUTE grant,
 * and no one can call it by name to claim another role.
 */
static Datum
call_with_role(FunctionCallInfo fcinfo, const char *target, int nargs)
{
	Oid			fn = DatumGetObjectId(DirectFunctionCall1(regprocedurein,
														  CStringGetDatum(target)));
	FmgrInfo	flinfo;
	LOCAL_FCINFO(call, FUNC_MAX_ARGS);

	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*call, &flinfo, nargs + 1, InvalidOid, NULL, NULL);
	call->args[0].value = ObjectIdGetDatum(GetUserId());
	call->args[0].isnull = false;
	for (int i = 0; i < nargs; i++)
		call->args[i + 1] = fcinfo->args[i];
	(void) FunctionCallInvoke(call);
	PG_RETURN_VOID();
}

/*
 * create_queue(name, options..., max_running => NULL): the calling role
 * becomes the owner.  max_running (0.2.0; the 0.1.0 function has no such
 * argument) is set as set_queue_max_running sets it, in the same
 * transaction: a refused cap leaves no queue behind.
 */
Datum
throttle_jobs_create_queue(PG_FUNCTION_ARGS)
{
	bool		capped = PG_NARGS() > QUEUE_OPTION_COUNT && !PG_ARGISNULL(QUEUE_OPTION_COUNT);
	int32		max_running = capped ? PG_GETARG_INT32(QUEUE_OPTION_COUNT) : 0;
	TJCaller	caller;

	if (capped)
		tj_check_queue_max_running(max_running);
	(void) call_with_role(fcinfo,
						  "throttle_jobs._create_queue(pg_catalog.oid, " QUEUE_OPTION_TYPES ")",
						  QUEUE_OPTION_COUNT);
	if (capped && max_running > 0)
	{
		tj_caller_enter(fcinfo, &caller);
		tj_store_queue_max_running(caller.role, PG_GETARG_TEXT_PP(0), max_running);
		tj_caller_leave(&caller);
	}
	PG_RETURN_VOID();
}

/* alter_queue(name, options...): only the owner may change the handler */
Datum
throttle_jobs_alter_queue(PG_FUNCTION_ARGS)
{
	return call_with_role(fcinfo,
						  "throttle_jobs._alter_queue(pg_catalog.oid, " QUEUE_OPTION_TYPES ")",
						  PG_NARGS());
}

/* Locks the queue called `name` (it need not exist) until transaction end. */
void
tj_lock_queue(text *name, LOCKMODE mode)
{
	Oid			nsp = get_namespace_oid("throttle_jobs", false);
	Oid			queue_table = get_relname_relid("queue", nsp);

	if (!OidIsValid(queue_table))
		elog(ERROR, "throttle_jobs: table throttle_jobs.queue is missing");
	LockDatabaseObject(queue_table,
					   DatumGetUInt32(hash_any((unsigned char *) VARDATA_ANY(name),
											   VARSIZE_ANY_EXHDR(name))),
					   0, mode);
}

/* SQL: _lock_queue(name), for drop_queue */
Datum
throttle_jobs_lock_queue(PG_FUNCTION_ARGS)
{
	tj_lock_queue(PG_GETARG_TEXT_PP(0), AccessExclusiveLock);
	PG_RETURN_VOID();
}

static TJStatement lookup_stmt = {
	"SELECT q.id, q.paused, q.max_size, q.on_full = 'drop', q.lease, q.fairness = 'round_robin',"
	"       q.handler IS NOT NULL"
	"  FROM throttle_jobs.queue q WHERE q.name = $1",
	1, {TEXTOID}, NULL, TJ_GENERIC
};

/*
 * Fills *queue for the queue called `name`, or raises undefined_object.
 * The caller must be connected to SPI; queue->name is palloc'd in the
 * caller's (upper) context.
 */
void
tj_lookup_queue(text *name, TJQueue *queue)
{
	Datum		values[1];
	bool		isnull;

	values[0] = PointerGetDatum(name);
	if (tj_execute(&lookup_stmt, values, NULL, false, 1, SPI_OK_SELECT) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", text_to_cstring(name)),
				 errhint("Create it with throttle_jobs.create_queue().")));

	queue->id = DatumGetInt32(tj_get_datum(0, 1, &isnull));
	queue->paused = DatumGetBool(tj_get_datum(0, 2, &isnull));
	queue->max_size = DatumGetInt64(tj_get_datum(0, 3, &isnull));
	if (isnull)
		queue->max_size = -1;
	queue->drop_when_full = DatumGetBool(tj_get_datum(0, 4, &isnull));
	queue->lease = *DatumGetIntervalP(tj_get_datum(0, 5, &isnull));
	queue->round_robin = DatumGetBool(tj_get_datum(0, 6, &isnull));
	queue->has_handler = DatumGetBool(tj_get_datum(0, 7, &isnull));
	queue->name = SPI_palloc(VARSIZE_ANY_EXHDR(name) + 1);
	text_to_cstring_buffer(name, queue->name, VARSIZE_ANY_EXHDR(name) + 1);
}
