/*-------------------------------------------------------------------------
 *
 * queue.c
 *		create_queue, alter_queue (with the handler check), drop_queue,
 *		pause_queue, resume_queue and reset_queue_options; looking up a
 *		queue's settings by name, and the queue lock.
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
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_lock_queue);
PG_FUNCTION_INFO_V1(throttle_jobs_create_queue);
PG_FUNCTION_INFO_V1(throttle_jobs_alter_queue);
PG_FUNCTION_INFO_V1(throttle_jobs_drop_queue);
PG_FUNCTION_INFO_V1(throttle_jobs_pause_queue);
PG_FUNCTION_INFO_V1(throttle_jobs_resume_queue);
PG_FUNCTION_INFO_V1(throttle_jobs_reset_queue_options);

/* 0.1.0's internal functions behind create_queue and alter_queue */
#define QUEUE_OPTION_TYPES \
	"pg_catalog.text, pg_catalog.int8, pg_catalog.text, pg_catalog.int4," \
	" pg_catalog.interval, pg_catalog.float8, pg_catalog.interval, pg_catalog.float8," \
	" pg_catalog.interval, pg_catalog.interval, pg_catalog.interval," \
	" pg_catalog.regprocedure, pg_catalog.text"

/*
 * The parameters of the statements below: $1 to $13 are create_queue's
 * and alter_queue's arguments (TJQueueArg order) but for the handler $12,
 * given as its qualified signature (as queue.handler stores it); $14 a
 * role or a queue id; $15 the handler function's owner (check_handler).
 */
#define QUEUE_ARG_TYPES \
	TEXTOID, INT8OID, TEXTOID, INT4OID, INTERVALOID, FLOAT8OID, INTERVALOID, FLOAT8OID, \
	INTERVALOID, INTERVALOID, INTERVALOID, TEXTOID, TEXTOID
#define QUEUE_NPARAMS		(TJ_QA_COUNT + 2)

/* A new queue owned by role $14 */
static TJStatement insert_queue_stmt = {
	"INSERT INTO throttle_jobs.queue (name, max_size, on_full, max_attempts, backoff_base,"
	"  backoff_factor, backoff_max, backoff_jitter, lease, retain_completed, retain_dead,"
	"  handler, handler_owner, fairness, owner)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $15::pg_catalog.regrole,"
	"  $13, $14::pg_catalog.regrole)"
	" RETURNING id",
	QUEUE_NPARAMS, {QUEUE_ARG_TYPES, OIDOID, OIDOID}
};

/* Queue $14's options that are given (not NULL) */
static TJStatement update_queue_stmt = {
	"UPDATE throttle_jobs.queue q SET"
	"  max_size = coalesce($2, q.max_size), on_full = coalesce($3, q.on_full),"
	"  max_attempts = coalesce($4, q.max_attempts), backoff_base = coalesce($5, q.backoff_base),"
	"  backoff_factor = coalesce($6, q.backoff_factor), backoff_max = coalesce($7, q.backoff_max),"
	"  backoff_jitter = coalesce($8, q.backoff_jitter), lease = coalesce($9, q.lease),"
	"  retain_completed = coalesce($10, q.retain_completed),"
	"  retain_dead = coalesce($11, q.retain_dead),"
	"  handler = coalesce($12, q.handler),"
	"  handler_owner = CASE WHEN $12 IS NULL THEN q.handler_owner"
	"                  ELSE $15::pg_catalog.regrole END,"
	"  fairness = coalesce($13, q.fairness)"
	" WHERE q.id = $14",
	QUEUE_NPARAMS, {QUEUE_ARG_TYPES, INT4OID, OIDOID}
};

static TJStatement queue_exists_stmt = {
	"SELECT FROM throttle_jobs.queue q WHERE q.name = $1", 1, {TEXTOID}
};

static TJStatement queue_warning_stmt = {
	"INSERT INTO throttle_jobs.queue_warning (queue_id) VALUES ($1)", 1, {INT4OID}
};

static TJStatement lock_owner_stmt = {
	"SELECT q.owner::pg_catalog.oid FROM throttle_jobs.queue q WHERE q.id = $1 FOR UPDATE",
	1, {INT4OID}
};

/*
 * Calls the internal SECURITY DEFINER function `target` with the current
 * role (the one in effect where our caller called us: these wrappers are not
 * SECURITY DEFINER) followed by our first `nargs` arguments.  The call goes
 * through fmgr directly, so the internal function needs no EXECUTE grant,
 * and no one can call it by name to claim another role.  For a 0.1.0
 * schema.
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
 * Whether the schema is 0.1.0's (not updated yet): its queue table has no
 * handler_owner, and its internal functions do the work.
 */
static bool
schema_is_010(void)
{
	Oid			queue = get_relname_relid("queue", get_namespace_oid("throttle_jobs", false));

	return get_attnum(queue, "handler_owner") == InvalidAttrNumber;
}

/*
 * Checks the handler `handler` for a queue owned by `owner`: a function or
 * procedure taking one jsonb argument, not in a temporary schema, that the
 * owner may execute (handlers run as the owner).  A NOTICE when it has no
 * search_path of its own: handlers run with search_path = pg_catalog,
 * pg_temp, where the unqualified names of an ordinary function (insert into
 * hlog ...) are not found.  Returns the function's owner.
 */
static Oid
check_handler(Oid handler, Oid owner)
{
	char	   *name = DatumGetCString(DirectFunctionCall1(regprocedureout,
														   ObjectIdGetDatum(handler)));
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	Form_pg_proc p;
	Datum		config;
	bool		isnull;
	bool		no_config;
	bool		own_path = false;
	Oid			proowner;

	p = HeapTupleIsValid(tup) ? (Form_pg_proc) GETSTRUCT(tup) : NULL;
	if (p == NULL || p->pronargs != 1 || p->proargtypes.values[0] != JSONBOID ||
		(p->prokind != PROKIND_FUNCTION && p->prokind != PROKIND_PROCEDURE))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("handler %s must take exactly one jsonb argument", name),
				 errhint("Declare it as FUNCTION name(payload jsonb) or PROCEDURE name(payload jsonb).")));
	if (isAnyTempNamespace(p->pronamespace))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("handler pg_temp.%s(...) is a temporary function", NameStr(p->proname)),
				 errhint("Handlers outlive the session: create the function in a permanent schema.")));
	if (tj_proc_aclcheck(handler, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not execute handler %s",
						DatumGetCString(DirectFunctionCall1(regroleout, ObjectIdGetDatum(owner))),
						name),
				 errhint("Handlers run as the queue's owner, who needs EXECUTE on them.")));
	/*
	 * SQL-standard bodies (BEGIN ATOMIC, RETURN) bind their names when
	 * created, and C functions have none to look up
	 */
	(void) SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosqlbody, &isnull);
	config = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_proconfig, &no_config);
	if (!no_config)
	{
		Datum	   *settings;
		bool	   *setting_nulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(config), TEXTOID, -1, false, TYPALIGN_INT,
						  &settings, &setting_nulls, &n);
		for (int i = 0; i < n && !own_path; i++)
			own_path = !setting_nulls[i] &&
				strncmp(TextDatumGetCString(settings[i]), "search_path=", 12) == 0;
	}
	if (isnull && p->prolang != ClanguageId && p->prolang != INTERNALlanguageId && !own_path)
		ereport(NOTICE,
				(errmsg("handler %s has no SET search_path of its own", name),
				 errdetail("Handlers run with search_path = pg_catalog, pg_temp: an unqualified table or function name in its body will not be found (SQLSTATE 42P01 or 42883)."),
				 errhint("Schema-qualify every name in it, or ALTER FUNCTION %s SET search_path = <its schemas>, pg_temp.", name)));
	proowner = p->proowner;
	ReleaseSysCache(tup);
	return proowner;
}

/*
 * The statements' parameters (QUEUE_NPARAMS): the queue-option arguments
 * (NULL past the last argument; the handler checked, for a queue owned by
 * `owner`, and given as its signature), `last`, the handler's owner.
 */
static void
queue_args(FunctionCallInfo fcinfo, Oid owner, Datum last, Datum *values, char *nulls)
{
	if (PG_NARGS() > TJ_QA_MAX_RUNNING + 1)
		elog(ERROR, "throttle_jobs: queue options called with %d arguments", PG_NARGS());
	for (int i = 0; i < TJ_QA_COUNT; i++)
	{
		bool		given = i < PG_NARGS() && !PG_ARGISNULL(i);

		values[i] = given ? PG_GETARG_DATUM(i) : (Datum) 0;
		nulls[i] = given ? ' ' : 'n';
	}
	values[TJ_QA_COUNT] = last;
	nulls[TJ_QA_COUNT] = ' ';
	values[TJ_QA_COUNT + 1] = (Datum) 0;
	nulls[TJ_QA_COUNT + 1] = nulls[TJ_QA_HANDLER];
	if (nulls[TJ_QA_HANDLER] == 'n')
		return;
	values[TJ_QA_COUNT + 1] = ObjectIdGetDatum(check_handler(PG_GETARG_OID(TJ_QA_HANDLER), owner));
	values[TJ_QA_HANDLER] =
		CStringGetTextDatum(format_procedure_qualified(PG_GETARG_OID(TJ_QA_HANDLER)));
}

/*
 * For the entry points that manage the queue named by their first
 * argument: checks it is not NULL, records the caller and runs as the
 * function's owner (tj_caller_enter), connects to SPI, checks the caller
 * manages the queue and looks it up.  The caller ends with SPI_finish()
 * and tj_caller_leave().
 */
void
tj_manage_queue(FunctionCallInfo fcinfo, TJCaller *caller, TJQueue *queue)
{
	tj_require_not_null(fcinfo, 0, "queue name");
	tj_caller_enter(fcinfo, caller);
	SPI_connect();
	tj_check_queue(caller->role, PG_GETARG_TEXT_PP(0), TJ_PRIV_MANAGE);
	tj_lookup_queue(PG_GETARG_TEXT_PP(0), queue);
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
	bool		capped = PG_NARGS() > TJ_QA_MAX_RUNNING && !PG_ARGISNULL(TJ_QA_MAX_RUNNING);
	int32		max_running = capped ? PG_GETARG_INT32(TJ_QA_MAX_RUNNING) : 0;
	TJCaller	caller;
	Datum		values[QUEUE_NPARAMS];
	char		nulls[QUEUE_NPARAMS];
	bool		isnull;

	if (capped)
		tj_check_queue_max_running(max_running);
	if (schema_is_010())
		return call_with_role(fcinfo,
							  "throttle_jobs._create_queue(pg_catalog.oid, " QUEUE_OPTION_TYPES ")",
							  TJ_QA_COUNT);
	tj_caller_enter(fcinfo, &caller);
	tj_check_queue_options(fcinfo, 0, true);
	SPI_connect();
	queue_args(fcinfo, caller.role, ObjectIdGetDatum(caller.role), values, nulls);
	if (tj_execute(&queue_exists_stmt, values, NULL, false, 1, SPI_OK_SELECT) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("queue \"%s\" already exists",
						text_to_cstring(PG_GETARG_TEXT_PP(TJ_QA_NAME)))));
	tj_execute(&insert_queue_stmt, values, nulls, false, 0, SPI_OK_INSERT_RETURNING);
	values[0] = tj_get_datum(0, 1, &isnull);
	tj_execute(&queue_warning_stmt, values, NULL, false, 0, SPI_OK_INSERT);
	SPI_finish();
	if (capped && max_running > 0)
		tj_store_queue_max_running(caller.role, PG_GETARG_TEXT_PP(TJ_QA_NAME), max_running);
	tj_caller_leave(&caller);
	PG_RETURN_VOID();
}

/*
 * alter_queue(name, options...): the options given (not NULL) change, for
 * those who manage the queue; only the owner may change the handler (it
 * runs as the owner).
 */
Datum
throttle_jobs_alter_queue(PG_FUNCTION_ARGS)
{
	TJCaller	caller;
	TJQueue		queue;
	Datum		values[QUEUE_NPARAMS];
	char		nulls[QUEUE_NPARAMS];
	bool		isnull;
	Oid			owner;

	if (schema_is_010())
		return call_with_role(fcinfo,
							  "throttle_jobs._alter_queue(pg_catalog.oid, " QUEUE_OPTION_TYPES ")",
							  PG_NARGS());
	tj_manage_queue(fcinfo, &caller, &queue);
	tj_check_queue_options(fcinfo, 0, false);
	values[0] = Int32GetDatum(queue.id);
	tj_execute(&lock_owner_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	owner = DatumGetObjectId(tj_get_datum(0, 1, &isnull));
	if (TJ_QA_HANDLER < PG_NARGS() && !PG_ARGISNULL(TJ_QA_HANDLER) &&
		!has_privs_of_role(caller.role, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only the owner of queue \"%s\" may set its handler", queue.name),
				 errhint("The queue is owned by %s; handlers run as that role.",
						 DatumGetCString(DirectFunctionCall1(regroleout, ObjectIdGetDatum(owner))))));
	queue_args(fcinfo, owner, Int32GetDatum(queue.id), values, nulls);
	tj_execute(&update_queue_stmt, values, nulls, false, 0, SPI_OK_UPDATE);
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_VOID();
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

/* ---- drop_queue ---- */

static TJStatement live_jobs_stmt = {
	"SELECT FROM throttle_jobs.job j WHERE j.queue_id = $1 LIMIT 1", 1, {INT4OID}
};

/* What a dropped queue $1 leaves, deleted in this order; the queue last */
#define DROP_QUEUE_STMT(table, column) \
	{"DELETE FROM throttle_jobs." table " t WHERE t." column " = $1", 1, {INT4OID}}

static TJStatement drop_queue_stmts[] = {
	DROP_QUEUE_STMT("job", "queue_id"),
	DROP_QUEUE_STMT("job_dead", "queue_id"),
	DROP_QUEUE_STMT("job_archive", "queue_id"),
	DROP_QUEUE_STMT("queue_warning", "queue_id"),
	DROP_QUEUE_STMT("stats_minute", "queue_id"),
	DROP_QUEUE_STMT("stats_snapshot", "queue_id"),
	/* (its queue_grant rows go with it: ON DELETE CASCADE) */
	DROP_QUEUE_STMT("queue", "id"),
};

/*
 * drop_queue(name, force) returns void: deletes the queue, with its jobs
 * (live only with force), dead letters, archive and statistics, for those
 * who manage it.
 */
Datum
throttle_jobs_drop_queue(PG_FUNCTION_ARGS)
{
	TJCaller	caller;
	TJQueue		queue;
	Datum		values[1];

	tj_manage_queue(fcinfo, &caller, &queue);
	tj_require_not_null(fcinfo, 1, "force");
	/*
	 * Enqueues hold this lock in shared mode from before they look the
	 * queue up until they commit: once we have it, no job can still arrive.
	 */
	tj_lock_queue(PG_GETARG_TEXT_PP(0), AccessExclusiveLock);
	values[0] = Int32GetDatum(queue.id);
	if (!PG_GETARG_BOOL(1) &&
		tj_execute(&live_jobs_stmt, values, NULL, false, 1, SPI_OK_SELECT) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("queue \"%s\" still holds live jobs", queue.name),
				 errhint("Wait for them to finish, or call drop_queue(name, force => true) to delete them.")));
	for (int i = 0; i < lengthof(drop_queue_stmts); i++)
		tj_execute(&drop_queue_stmts[i], values, NULL, false, 0, SPI_OK_DELETE);
	tj_stats_queue_dropped(queue.id);
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_VOID();
}

/* ---- pause_queue, resume_queue, reset_queue_options ---- */

static TJStatement set_paused_stmt = {
	"UPDATE throttle_jobs.queue q SET paused = $2 WHERE q.id = $1", 2, {INT4OID, BOOLOID}
};

static Datum set_paused(FunctionCallInfo fcinfo, bool paused);

/* pause_queue(name) returns void: reserve takes no job of it; for those who manage it */
Datum
throttle_jobs_pause_queue(PG_FUNCTION_ARGS)
{
	return set_paused(fcinfo, true);
}

static Datum
set_paused(FunctionCallInfo fcinfo, bool paused)
{
	TJCaller	caller;
	TJQueue		queue;
	Datum		values[2];

	tj_manage_queue(fcinfo, &caller, &queue);
	values[0] = Int32GetDatum(queue.id);
	values[1] = BoolGetDatum(paused);
	tj_execute(&set_paused_stmt, values, NULL, false, 0, SPI_OK_UPDATE);
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_VOID();
}

/* resume_queue(name) returns void: pause_queue undone */
Datum
throttle_jobs_resume_queue(PG_FUNCTION_ARGS)
{
	return set_paused(fcinfo, false);
}

/* $2: clear max_size; $3: clear the handler (and its owner) */
static TJStatement reset_options_stmt = {
	"UPDATE throttle_jobs.queue q SET"
	"  max_size = CASE WHEN $2 THEN NULL ELSE q.max_size END,"
	"  handler = CASE WHEN $3 THEN NULL ELSE q.handler END,"
	"  handler_owner = CASE WHEN $3 THEN NULL ELSE q.handler_owner END"
	" WHERE q.id = $1",
	3, {INT4OID, BOOLOID, BOOLOID}
};

/*
 * reset_queue_options(queue, VARIADIC options) returns void: clears the
 * options that alter_queue cannot (NULL there means "unchanged"): max_size
 * (unbounded again) and handler (external workers take the jobs).  Manage,
 * like alter_queue; clearing a handler makes nothing run as the owner, so
 * it does not need the owner as setting one does.
 */
Datum
throttle_jobs_reset_queue_options(PG_FUNCTION_ARGS)
{
	TJCaller	caller;
	TJQueue		queue;
	Datum		values[3] = {0, BoolGetDatum(false), BoolGetDatum(false)};
	Datum	   *options;
	bool	   *option_nulls;
	int			n;

	tj_manage_queue(fcinfo, &caller, &queue);
	tj_require_not_null(fcinfo, 1, "options");
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), TEXTOID, -1, false, TYPALIGN_INT,
					  &options, &option_nulls, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *option;

		if (option_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("option names must not be null")));
		option = TextDatumGetCString(options[i]);
		if (strcmp(option, "max_size") == 0)
			values[1] = BoolGetDatum(true);
		else if (strcmp(option, "handler") == 0)
			values[2] = BoolGetDatum(true);
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("queue option \"%s\" cannot be reset", option),
					 errhint("reset_queue_options() clears max_size and handler; alter_queue() sets the other options.")));
	}
	values[0] = Int32GetDatum(queue.id);
	tj_execute(&reset_options_stmt, values, NULL, false, 0, SPI_OK_UPDATE);
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_VOID();
}
