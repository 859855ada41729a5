/*-------------------------------------------------------------------------
 *
 * handler.c
 *		Running handler jobs: the executors' path (executor.c), and
 *		run_jobs().
 *
 * A handler job is reserved as reserve() reserves (tj_reserve_jobs), so
 * every limit applies, and its outcome is recorded through the C API of
 * complete(), fail() and snooze() (complete.c), each as the extension owner
 * with search_path pinned (tj_caller_enter_owner).  Its handler is then called through fmgr as the queue's
 * owner inside a security-restricted operation (call_handler), with
 * every setting back at its session default and search_path pinned, in a
 * GUC nest level so that nothing it SETs outlives the job, with the
 * queue's lease as its time limit.  Success completes the job in the
 * handler's own (sub)transaction, so a SQL handler's writes and the
 * completion commit together, and a lost lease rolls the writes back.  An
 * error fails the job (backoff, then dead letters).
 *
 * Why a security-restricted operation: the job's transaction commits after
 * the switch back to the executor's own user (the bootstrap superuser), or
 * to run_jobs' caller.  Anything the handler could leave to run at commit
 * (a deferred trigger event, a WITH HOLD cursor, a temporary table ON
 * COMMIT) would run as that user.  Inside the operation PostgreSQL refuses
 * all of them, and role changes, LISTEN and temporary objects, as it does
 * for index expressions run by VACUUM.  Constraints are set IMMEDIATE
 * before the handler runs (and again after it), so deferrable constraints
 * are checked at the end of each of its statements, as the owner.
 *
 * Executors (own_transactions) commit the reservation before the handler
 * runs: a handler that crashes the server has had its attempt counted, and
 * the maintenance worker fails the orphaned job (dbworker.c's sweep), so a
 * poison job ends dead instead of crash-looping.  After every job an
 * executor drops what a handler may leave in the session
 * (tj_discard_session_state).  run_jobs() runs in its caller's
 * transaction, each job in a subtransaction, and refuses a session that has
 * temporary objects or dblink connections; after each job it closes the
 * cursors and large object descriptors the handler left
 * (close_handler_leftovers).  After every job, both
 * close the dblink connections the handler left and re-seed random()
 * (clear_extension_state).
 *
 * Time limits: while a job is in hand, a TICK_MS timer checks the handler's
 * deadline and, after SIGTERM, the shutdown grace; past either it cancels the
 * handler, whose job then fails (deadline) or is handed back (shutdown).  A
 * handler still running HARD_GRACE_MS after its cancel (it caught
 * query_canceled) gets die(): the process ends (an executor is restarted
 * and its job failed by the orphan sweep; run_jobs' caller loses its
 * session).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "commands/extension.h"
#include "commands/prepare.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "libpq/be-fsstubs.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_run_jobs);
PG_FUNCTION_INFO_V1(throttle_jobs_handler_signature);

#define TICK_MS 100

/*
 * How long a handler may go on after its cancel (at its deadline, or at the
 * end of the shutdown grace) before its process gets die(), which no
 * exception block can catch.  A handler that lets the cancel through
 * unwinds in well under this; one that catches query_canceled would
 * otherwise hold its executor (and starve every other handler queue of the
 * database), or run_jobs' caller, for ever.
 */
#define HARD_GRACE_MS 1000

/*
 * Given with a handler's error of class 42 (undefined table, function,
 * column, ...) when the handler has no search_path of its own.
 */
#define HANDLER_PATH_HINT \
	"Handlers run with search_path = pg_catalog, pg_temp: schema-qualify the names the handler uses, or give it its own (ALTER FUNCTION ... SET search_path = <its schemas>, pg_temp)."

#define CANCEL_DEADLINE 1
#define CANCEL_SHUTDOWN 2

typedef struct HandlerJob
{
	int64		id;
	Datum		lease_token;	/* uuid */
	char	   *queue;
	char	   *signature;		/* queue.handler: schema.name(pg_catalog.jsonb) */
	Oid			handler_owner;	/* queue.handler_owner; InvalidOid under 0.1.0 */
	Oid			handler;		/* the signature resolved (handler_refusal) */
	bool		own_path;		/* the handler sets its own search_path */
	Oid			owner;
	int64		timeout_ms;		/* the queue's lease */
	Datum		payload;		/* jsonb */
} HandlerJob;

/* Shared with signal handlers and the tick timer */
static volatile sig_atomic_t in_job = false;
static volatile sig_atomic_t cancel_reason = 0;
static volatile sig_atomic_t die_sent = false;
static volatile TimestampTz cancel_at = 0;
static TimestampTz handler_deadline = 0;
static TimeoutId tick_timeout = MAX_TIMEOUTS;
static const HandlerJob *current_job = NULL;	/* the job in hand, for the exit log */
static uint32 next_queue = 0;

/*
 * Operators are written OPERATOR(pg_catalog.x): see the file header of
 * launcher.c.  queue.handler is text since 0.2.0 (a regprocedure under 0.1.0,
 * whose text form, under our pinned search_path, names the same function).
 */
#define PICK_SQL(handler_owner) \
	"SELECT q.name, q.handler::pg_catalog.text, q.owner::pg_catalog.oid, q.lease, " handler_owner \
	"  FROM throttle_jobs.queue q" \
	" WHERE q.handler IS NOT NULL AND NOT q.paused" \
	"   AND ($1::pg_catalog.text IS NULL OR q.name OPERATOR(pg_catalog.=) $1::pg_catalog.text)" \
	"   AND EXISTS (SELECT FROM throttle_jobs.job j" \
	"                WHERE j.queue_id OPERATOR(pg_catalog.=) q.id" \
	"                  AND j.state OPERATOR(pg_catalog.=) 'available'::pg_catalog.text" \
	"                  AND j.run_at OPERATOR(pg_catalog.<=) pg_catalog.statement_timestamp())" \
	" ORDER BY q.id"

static TJStatement pick_stmt = {
	PICK_SQL("q.handler_owner::pg_catalog.oid"), 1, {TEXTOID}
};

/* pick_stmt on a database still at 0.1.0 (no queue.handler_owner) */
static TJStatement pick_010_stmt = {
	PICK_SQL("NULL::pg_catalog.oid"), 1, {TEXTOID}
};

/*
 * How many times a job may be handed back at shutdown without counting the
 * attempt.  A handler whose run makes its executor receive SIGTERM (it
 * terminates its own backend, or an outside watchdog terminates every
 * long-running one) would otherwise be handed back, and started again by
 * the next executor, for ever; from the (HAND_BACK_MAX + 1)th shutdown on,
 * an interrupted run fails its attempt (backoff, then the dead letters).
 * Each hand-back is noted in the job's errors (with "handed_back": true).
 */
#define HAND_BACK_MAX 3

/* How many times a job in hand was handed back before */
static TJStatement hand_backs_stmt = {
	"SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_array_elements(j.errors) e(v)"
	"         WHERE e.v OPERATOR(pg_catalog.?) 'handed_back'::pg_catalog.text)"
	"  FROM throttle_jobs.job j"
	" WHERE j.id OPERATOR(pg_catalog.=) $1::pg_catalog.int8"
	"   AND j.lease_token OPERATOR(pg_catalog.=) $2::pg_catalog.uuid"
	"   AND j.state OPERATOR(pg_catalog.=) 'running'::pg_catalog.text",
	2, {INT8OID, UUIDOID}
};

/* Notes a hand-back in the job's errors (the attempt is not counted) */
static TJStatement hand_back_note_stmt = {
	"UPDATE throttle_jobs.job j"
	"   SET errors = j.errors OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object("
	"         'attempt', j.attempt, 'at', $3::pg_catalog.timestamptz, 'error', $4::pg_catalog.text,"
	"         'worker', j.worker, 'handed_back', true))"
	" WHERE j.id OPERATOR(pg_catalog.=) $1::pg_catalog.int8"
	"   AND j.lease_token OPERATOR(pg_catalog.=) $2::pg_catalog.uuid"
	"   AND j.state OPERATOR(pg_catalog.=) 'running'::pg_catalog.text",
	4, {INT8OID, UUIDOID, TIMESTAMPTZOID, TEXTOID}
};

/* Whether a job is in hand (its handler may be running); signal-safe. */
bool
tj_job_in_hand(void)
{
	return in_job;
}

/*
 * The tick timer, in signal context: cancel the handler once it is due, and
 * end the process if the handler is still running HARD_GRACE_MS after that.
 */
static void
handler_tick(void)
{
	TimestampTz now;

	if (!in_job)
		return;
	now = GetCurrentTimestamp();
	if (cancel_reason == 0)
	{
		if (now >= handler_deadline)
			cancel_reason = CANCEL_DEADLINE;
		else if (tj_shutdown_grace_began() != 0 &&
				 now >= tj_shutdown_grace_began() + (int64) tj_shutdown_grace * 1000)
			cancel_reason = CANCEL_SHUTDOWN;
		else
			return;
		cancel_at = now;
		QueryCancelPending = true;
	}
	else if (!die_sent && now >= cancel_at + (int64) HARD_GRACE_MS * 1000)
	{
		die_sent = true;
		ProcDiePending = true;
	}
	else
		return;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/* At exit: says which job's handler made the tick timer end the process. */
static void
log_ended_job(int code, Datum arg)
{
	if (die_sent && in_job && current_job != NULL)
		ereport(LOG,
				(errmsg("throttle_jobs: ended the process running job %lld of queue \"%s\": its handler went on %d ms after it was cancelled",
						(long long) current_job->id, current_job->queue, HARD_GRACE_MS),
				 errdetail("The cancel came %s.",
						   cancel_reason == CANCEL_DEADLINE ? "at the handler's deadline (the queue's lease)"
						   : "at the end of throttle_jobs.shutdown_grace")));
}

static void
start_job_clock(const HandlerJob *job)
{
	TimestampTz now = GetCurrentTimestamp();

	if (tick_timeout == MAX_TIMEOUTS)
	{
		tick_timeout = RegisterTimeout(USER_TIMEOUT, handler_tick);
		before_shmem_exit(log_ended_job, (Datum) 0);
	}
	handler_deadline = now + job->timeout_ms * 1000;
	current_job = job;
	cancel_reason = 0;
	die_sent = false;
	in_job = true;
	tj_shutdown_grace_job_started(now);
	enable_timeout_every(tick_timeout, TimestampTzPlusMilliseconds(now, TICK_MS), TICK_MS);
}

static void
stop_job_clock(void)
{
	in_job = false;
	current_job = NULL;
	if (tick_timeout != MAX_TIMEOUTS)
		disable_timeout(tick_timeout, false);
}

/* A transaction of a background worker; switches back to cxt. */
static void
begin_xact(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_xact(MemoryContext cxt)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	/* a background worker reports its table statistics itself (autovacuum reads them) */
	pgstat_report_stat(false);
	MemoryContextSwitchTo(cxt);
}

/*
 * The 0.2.0 library on a database still at 0.1.0: queue.handler_owner does
 * not exist yet (see tj_schema_has_released_at).
 */
static bool
schema_has_handler_owner(void)
{
	static bool seen = false;
	Oid			queue;

	if (seen)
		return true;
	queue = tj_relid("queue");
	seen = OidIsValid(queue) && get_attnum(queue, "handler_owner") != InvalidAttrNumber;
	return seen;
}

/*
 * Reserves one job of the queue called `queue` (a text datum) for `worker`,
 * as reserve(queue, worker, 1) does, and copies its id, lease token and
 * payload into job, in cxt.  Returns false when none was ready.  Runs in
 * the current transaction, in an SPI connection of its own.
 */
static bool
reserve_one(Datum queue, const char *worker, HandlerJob *job, MemoryContext cxt)
{
	text	   *worker_text = cstring_to_text(worker);
	Oid			nsp = get_namespace_oid("throttle_jobs", false);
	Oid			typid;
	ReturnSetInfo rsinfo;
	TupleTableSlot *slot;
	TJCaller	caller;
	bool		found;

	tj_check_reserve_args(worker_text, 1, NULL);
	typid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("reserved_job"),
							ObjectIdGetDatum(nsp));
	if (!OidIsValid(typid))
		elog(ERROR, "throttle_jobs: type throttle_jobs.reserved_job is missing");
	memset(&rsinfo, 0, sizeof(rsinfo));
	rsinfo.type = T_ReturnSetInfo;
	rsinfo.setDesc = lookup_rowtype_tupdesc_copy(typid, -1);
	rsinfo.setResult = tuplestore_begin_heap(false, false, work_mem);

	tj_caller_enter_owner(&caller);
	SPI_connect();
	tj_check_queue(caller.role, DatumGetTextPP(queue), TJ_PRIV_CONSUME);
	tj_reserve_jobs(&rsinfo, DatumGetTextPP(queue), worker_text, 1, NULL);
	SPI_finish();
	tj_caller_leave(&caller);

	slot = MakeSingleTupleTableSlot(rsinfo.setDesc, &TTSOpsMinimalTuple);
	found = tuplestore_gettupleslot(rsinfo.setResult, true, false, slot);
	if (found)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);
		bool		isnull;

		/* reserved_job: id, queue, payload, attempt, max_attempts, lease_token, ... */
		job->id = DatumGetInt64(slot_getattr(slot, 1, &isnull));
		job->payload = datumCopy(slot_getattr(slot, 3, &isnull), false, -1);
		job->lease_token = datumCopy(slot_getattr(slot, 6, &isnull), false, UUID_LEN);
		MemoryContextSwitchTo(old);
	}
	ExecDropSingleTupleTableSlot(slot);
	tuplestore_end(rsinfo.setResult);
	return found;
}

/*
 * Reserves one job of a handler queue (only_queue, or any in turn) for
 * `worker`, copying it into cxt.  Runs in the current transaction.
 */
static bool
reserve_handler_job(const char *worker, const char *only_queue, HandlerJob *job,
					MemoryContext cxt)
{
	Datum		values[3];
	char		nulls[3] = "   ";
	uint64		nqueues;
	SPITupleTable *queues;
	bool		found = false;
	bool		isnull;

	SPI_connect();
	if (only_queue)
		values[0] = CStringGetTextDatum(only_queue);
	else
		nulls[0] = 'n';
	nqueues = tj_execute(schema_has_handler_owner() ? &pick_stmt : &pick_010_stmt,
						 values, nulls, false, 0, SPI_OK_SELECT);
	queues = SPI_tuptable;
	for (uint64 i = 0; i < nqueues && !found; i++)
	{
		uint64		row = (next_queue + i) % nqueues;
		HeapTuple	q = queues->vals[row];
		TupleDesc	qdesc = queues->tupdesc;
		Datum		name = SPI_getbinval(q, qdesc, 1, &isnull);

		if (!tj_run_jobs_may_take(name))
			continue;			/* run_jobs(NULL): a queue its caller may not consume */
		if (!reserve_one(name, worker, job, cxt))
			continue;
		found = true;
		next_queue = row + 1;

		MemoryContextSwitchTo(cxt);
		job->queue = TextDatumGetCString(name);
		job->signature = TextDatumGetCString(SPI_getbinval(q, qdesc, 2, &isnull));
		job->owner = DatumGetObjectId(SPI_getbinval(q, qdesc, 3, &isnull));
		job->timeout_ms = tj_interval_usecs(DatumGetIntervalP(SPI_getbinval(q, qdesc, 4, &isnull))) / 1000;
		job->handler_owner = DatumGetObjectId(SPI_getbinval(q, qdesc, 5, &isnull));
		if (isnull)
			job->handler_owner = InvalidOid;
		job->handler = InvalidOid;
		job->own_path = false;
	}
	SPI_finish();
	MemoryContextSwitchTo(cxt);
	return found;
}

/*
 * Whether a handler's names are its own business: it sets search_path
 * itself (proconfig), has a SQL-standard body (bound when it was created),
 * or is written in C.  Otherwise it runs with our pinned search_path =
 * pg_catalog, pg_temp, and its unqualified names are not found.
 */
static bool
handler_sets_search_path(HeapTuple tup)
{
	Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(tup);
	bool		isnull;
	Datum		config;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (proc->prolang == ClanguageId || proc->prolang == INTERNALlanguageId)
		return true;
	(void) SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosqlbody, &isnull);
	if (!isnull)
		return true;
	config = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_proconfig, &isnull);
	if (isnull)
		return false;
	deconstruct_array(DatumGetArrayTypeP(config), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i] && strncmp(TextDatumGetCString(elems[i]), "search_path=", 12) == 0)
			return true;
	return false;
}

/*
 * The function that a stored signature names now, or InvalidOid.  The
 * signature is qualified (schema and argument type), so no search_path
 * takes part; regprocedurein runs in an internal subtransaction, and any
 * error (no such function, schema or type, a malformed text) means that
 * the handler does not resolve.  A bare number (what 0.1.0 left of a
 * handler dropped before the update) resolves to nothing.
 */
static Oid
resolve_handler(const char *signature)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile Oid fn = InvalidOid;

	if (signature[strspn(signature, "0123456789")] == '\0')
		return InvalidOid;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn = DatumGetObjectId(DirectFunctionCall1(regprocedurein, CStringGetDatum(signature)));
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		(void) tj_catch_in_subxact(cxt, owner);
		fn = InvalidOid;
	}
	PG_END_TRY();
	return fn;
}

/*
 * Resolves job->signature into job->handler and checks it; returns why the
 * handler may not run now, or NULL.  Handlers are re-checked at every run:
 * the function may have been dropped (or replaced by another role's), the
 * owner dropped, lost EXECUTE, or become a superuser since the queue was
 * set up.
 */
static char *
handler_refusal(HandlerJob *job)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	Oid			proowner;
	bool		shape_ok;

	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(job->owner)))
		return psprintf("the owner (role %u) of queue \"%s\" no longer exists",
						job->owner, job->queue);
	job->handler = resolve_handler(job->signature);
	tup = OidIsValid(job->handler) ? SearchSysCache1(PROCOID, ObjectIdGetDatum(job->handler)) : NULL;
	if (!HeapTupleIsValid(tup))
		return psprintf("handler %s of queue \"%s\" does not exist (SQLSTATE 42883): it was dropped or renamed; set it again with alter_queue()",
						job->signature, job->queue);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	proowner = proc->proowner;
	shape_ok = proc->pronargs == 1 && proc->proargtypes.values[0] == JSONBOID &&
		(proc->prokind == PROKIND_FUNCTION || proc->prokind == PROKIND_PROCEDURE);
	job->own_path = handler_sets_search_path(tup);
	ReleaseSysCache(tup);
	if (!shape_ok)
		return psprintf("handler %s of queue \"%s\" is no longer a function or procedure taking one jsonb argument (SQLSTATE 42883)",
						job->signature, job->queue);
	if (OidIsValid(job->handler_owner) && proowner != job->handler_owner)
		return psprintf("handler %s of queue \"%s\" changed: it is owned by role \"%s\", not by the role that owned it when it was set (%s) (SQLSTATE 42883); set it again with alter_queue()",
						job->signature, job->queue, GetUserNameFromId(proowner, false),
						SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(job->handler_owner))
						? GetUserNameFromId(job->handler_owner, false)
						: psprintf("role %u", job->handler_owner));
	if (superuser_arg(job->owner) && !tj_allow_superuser_handlers)
		return psprintf("queue \"%s\" is owned by superuser \"%s\", and throttle_jobs.allow_superuser_handlers is off",
						job->queue, GetUserNameFromId(job->owner, false));
	if (tj_proc_aclcheck(job->handler, job->owner, ACL_EXECUTE) != ACLCHECK_OK)
		return psprintf("role \"%s\" may not execute handler %s of queue \"%s\"",
						GetUserNameFromId(job->owner, false),
						format_procedure(job->handler), job->queue);
	return NULL;
}

/*
 * SET CONSTRAINTS ALL IMMEDIATE: from now on in this transaction (until
 * someone sets them deferred again) deferrable constraints are checked at
 * the end of each statement; deferred trigger events already queued fire
 * now, as the current user.
 */
static void
constraints_immediate(void)
{
	ConstraintsSetStmt *stmt = makeNode(ConstraintsSetStmt);

	stmt->constraints = NIL;
	stmt->deferred = false;
	AfterTriggerSetState(stmt);
}

/*
 * Under run_jobs: drops the cursors (portals) that the handler left open,
 * those created in the job's subtransaction `subid` or later, and closes
 * its large object descriptors (as the abort of that subtransaction would).
 * Both were opened with the owner's privileges, and the caller's
 * transaction goes on: the caller, who may only consume the queue, could
 * otherwise FETCH the rest of a table, or loread/lowrite a large object,
 * that only the owner may read.  The caller's own cursors and descriptors
 * (opened before the job) stay.  Runs in the job's subtransaction.
 */
static TJStatement cursors_stmt = {
	"SELECT c.name FROM pg_catalog.pg_cursor() c", 0, {InvalidOid}
};

static void
close_handler_leftovers(SubTransactionId subid)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *names = NIL;
	ListCell   *lc;
	uint64		n;

	SPI_connect();
	n = tj_execute(&cursors_stmt, NULL, NULL, true, 0, SPI_OK_SELECT);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		name = tj_get_datum(i, 1, &isnull);
		MemoryContext old;

		if (isnull)
			continue;
		old = MemoryContextSwitchTo(cxt);
		names = lappend(names, TextDatumGetCString(name));
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	MemoryContextSwitchTo(cxt);
	foreach(lc, names)
	{
		Portal		portal = GetPortalByName((const char *) lfirst(lc));

		if (PortalIsValid(portal) && portal->createSubid != InvalidSubTransactionId &&
			portal->createSubid >= subid && portal->status != PORTAL_ACTIVE &&
			!portal->portalPinned)
			PortalDrop(portal, false);
	}
	AtEOSubXact_LargeObject(false, subid, InvalidSubTransactionId);
}

/*
 * Calls the handler as the queue's owner inside a security-restricted
 * operation (see the file header), with every setting reset to its session
 * default (RESET ALL) and search_path pinned to pg_catalog, pg_temp, in a
 * GUC nest level whose changes are all undone when it returns: a handler's
 * SET, even without LOCAL, never reaches the next job, and the handler sees
 * none of the settings that run_jobs' caller made with SET.  Constraints
 * are IMMEDIATE before and after the call (a handler's SET CONSTRAINTS ...
 * DEFERRED ends with it).  Executors also close every portal the handler
 * left open, still as the owner.  On error, the (sub)transaction abort
 * restores the user, the security context and the settings.
 */
static Datum
call_handler(const HandlerJob *job, bool own_transactions, bool *isnull)
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	FmgrInfo	flinfo;
	Datum		result;
	SubTransactionId subid = GetCurrentSubTransactionId();
	LOCAL_FCINFO(call, 1);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(job->owner, save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	ResetAllOptions();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	constraints_immediate();

	fmgr_info(job->handler, &flinfo);
	InitFunctionCallInfoData(*call, &flinfo, 1, InvalidOid, NULL, NULL);
	call->args[0].value = job->payload;
	call->args[0].isnull = false;
	result = FunctionCallInvoke(call);
	*isnull = call->isnull;

	constraints_immediate();
	if (own_transactions)
		PortalHashTableDeleteAll();
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (!own_transactions)
		close_handler_leftovers(subid);
	return result;
}

/* Runs the handler and completes the job; errors propagate. */
static void
run_and_complete(const HandlerJob *job, bool own_transactions)
{
	bool		isnull;
	Datum		result;
	TJCaller	caller;
	bool		done;

	result = call_handler(job, own_transactions, &isnull);
	if (cancel_reason == CANCEL_DEADLINE)
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("handler of job %lld returned after its deadline", (long long) job->id)));
	if (isnull || get_func_rettype(job->handler) != JSONBOID)
		result = (Datum) 0;

	/* complete(), as its SQL entry point would run it */
	tj_caller_enter_owner(&caller);
	SPI_connect();
	tj_check_job(caller.role, Int64GetDatum(job->id), TJ_PRIV_CONSUME);
	done = tj_complete_job(Int64GetDatum(job->id), job->lease_token, result,
						   GetCurrentTransactionStartTimestamp());
	SPI_finish();
	tj_caller_leave(&caller);
	if (!done)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("lease of job %lld was lost while its handler ran", (long long) job->id),
				 errdetail("The handler's work is rolled back; the job belongs to whoever holds it now.")));
}

/*
 * Records the outcome of a job whose handler did not complete it: a failed
 * attempt, or (hand_back, at shutdown) the job handed back without counting
 * the attempt, at most HAND_BACK_MAX times per job.
 */
static void
record_failure(const HandlerJob *job, const char *error, bool hand_back)
{
	Datum		values[4];
	TJCaller	caller;

	values[0] = Int64GetDatum(job->id);
	values[1] = job->lease_token;
	SPI_connect();
	if (hand_back)
	{
		bool		isnull;
		int64		before = 0;

		if (tj_execute(&hand_backs_stmt, values, NULL, false, 0, SPI_OK_SELECT) > 0)
			before = DatumGetInt64(tj_get_datum(0, 1, &isnull));
		if (before >= HAND_BACK_MAX)
		{
			error = psprintf("the run was interrupted by a shutdown of its worker (SIGTERM) after %lld hand-backs; counted as a failed attempt (a handler whose run ends its worker, or a watchdog that terminates it, would otherwise start again for ever)",
							 (long long) before);
			hand_back = false;
		}
		else
		{
			values[2] = TimestampTzGetDatum(GetCurrentTimestamp());
			values[3] = CStringGetTextDatum(psprintf("handed back: its worker was shut down (SIGTERM) and the handler did not finish within throttle_jobs.shutdown_grace (hand-back %lld of %d that do not count the attempt)",
													 (long long) before + 1, HAND_BACK_MAX));
			tj_execute(&hand_back_note_stmt, values, NULL, false, 0, SPI_OK_UPDATE);
		}
	}

	/* fail(), or snooze() by 0 s, as its SQL entry point would run it */
	tj_caller_enter_owner(&caller);
	tj_check_job(caller.role, values[0], TJ_PRIV_CONSUME);
	if (hand_back)
		(void) tj_snooze_job(values[0], values[1], GetCurrentTransactionStartTimestamp());
	else
		(void) tj_fail_job(values[0], values[1], error, NULL, true,
						   GetCurrentTransactionStartTimestamp());
	tj_caller_leave(&caller);
	SPI_finish();
}

/*
 * Session state of other extensions that a handler may leave behind.
 *
 * dblink: a connection (named or unnamed) outlives the job, authenticated as
 * whoever opened it: the next job's handler, or run_jobs' caller, could
 * send its own statements through it.  Its functions are found as members
 * of the dblink extension (pg_depend), never by name through search_path,
 * and called directly, as the executor's (or run_jobs') own user, outside
 * the security-restricted operation.
 *
 * random(): setseed() makes it predictable until the session ends.
 */
typedef struct DblinkFuncs
{
	Oid			get_connections;	/* dblink_get_connections() */
	Oid			disconnect_named;	/* dblink_disconnect(text) */
	Oid			disconnect_unnamed; /* dblink_disconnect() */
} DblinkFuncs;

/* Whether dblink is installed in this database; if so, fills *f. */
static bool
find_dblink(DblinkFuncs *f)
{
	Oid			extoid = get_extension_oid("dblink", true);
	Relation	rel;
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;

	memset(f, 0, sizeof(*f));
	if (!OidIsValid(extoid))
		return false;
	rel = table_open(DependRelationId, AccessShareLock);
	ScanKeyInit(&key[0], Anum_pg_depend_refclassid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ExtensionRelationId));
	ScanKeyInit(&key[1], Anum_pg_depend_refobjid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, DependReferenceIndexId, true, NULL, 2, key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_depend dep = (Form_pg_depend) GETSTRUCT(tup);
		HeapTuple	proctup;
		Form_pg_proc proc;
		const char *name;

		if (dep->classid != ProcedureRelationId || dep->deptype != DEPENDENCY_EXTENSION)
			continue;
		proctup = SearchSysCache1(PROCOID, ObjectIdGetDatum(dep->objid));
		if (!HeapTupleIsValid(proctup))
			continue;
		proc = (Form_pg_proc) GETSTRUCT(proctup);
		name = NameStr(proc->proname);
		if (proc->prolang == ClanguageId)
		{
			if (strcmp(name, "dblink_get_connections") == 0 && proc->pronargs == 0 &&
				proc->prorettype == TEXTARRAYOID)
				f->get_connections = dep->objid;
			else if (strcmp(name, "dblink_disconnect") == 0 && proc->pronargs == 0)
				f->disconnect_unnamed = dep->objid;
			else if (strcmp(name, "dblink_disconnect") == 0 && proc->pronargs == 1 &&
					 proc->proargtypes.values[0] == TEXTOID)
				f->disconnect_named = dep->objid;
		}
		ReleaseSysCache(proctup);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!OidIsValid(f->get_connections) || !OidIsValid(f->disconnect_named) ||
		!OidIsValid(f->disconnect_unnamed))
		elog(ERROR, "extension dblink has no dblink_get_connections(), dblink_disconnect(text) or dblink_disconnect()");
	return true;
}

/* The names of this session's named dblink connections (text[]), or NULL. */
static ArrayType *
dblink_connections(const DblinkFuncs *f)
{
	FmgrInfo	flinfo;
	Datum		result;
	LOCAL_FCINFO(call, 0);

	fmgr_info(f->get_connections, &flinfo);
	InitFunctionCallInfoData(*call, &flinfo, 0, InvalidOid, NULL, NULL);
	result = FunctionCallInvoke(call);
	return call->isnull ? NULL : DatumGetArrayTypeP(result);
}

/*
 * Closes the unnamed dblink connection; returns whether there was one.
 * dblink_disconnect() raises 08003 when there is none: it runs in an
 * internal subtransaction, and only that error is ignored.
 */
static bool
disconnect_unnamed(const DblinkFuncs *f)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool closed = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		(void) OidFunctionCall0(f->disconnect_unnamed);
		closed = true;
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata = tj_catch_in_subxact(cxt, owner);

		if (edata->sqlerrcode != ERRCODE_CONNECTION_DOES_NOT_EXIST)
			ReThrowError(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return closed;
}

/*
 * After a job: closes every dblink connection of the session and re-seeds
 * random() from pg_strong_random.  Runs in a transaction, as our own user.
 */
static void
clear_extension_state(void)
{
	DblinkFuncs f;
	uint64		r;

	if (!pg_strong_random(&r, sizeof(r)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random seed")));
	/* 53 random bits, as a float8 in [-1, 1) */
	(void) DirectFunctionCall1(setseed,
							   Float8GetDatum((double) (r >> 11) / (double) (UINT64CONST(1) << 53) * 2.0 - 1.0));

	if (find_dblink(&f))
	{
		ArrayType  *names = dblink_connections(&f);

		if (names != NULL)
		{
			Datum	   *elems;
			bool	   *nulls;
			int			n;

			deconstruct_array(names, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
			for (int i = 0; i < n; i++)
				if (!nulls[i])
					(void) OidFunctionCall1(f.disconnect_named, elems[i]);
		}
		(void) disconnect_unnamed(&f);
	}
}

/*
 * Reserves the next handler job for `worker` (of only_queue, or of any
 * handler queue in turn) and runs it.  Returns false when no job was ready.
 *
 * own_transactions: the caller is a background worker outside any
 * transaction, and each step gets its own; it must call
 * tj_discard_session_state() after the job.  Otherwise the job runs in a
 * subtransaction of the caller's, and a cancel that is not ours propagates.
 */
bool
tj_run_next_job(const char *worker, const char *only_queue, bool own_transactions)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	HandlerJob	job;
	char	   *refusal;
	ErrorData  *volatile edata = NULL;
	int			reason;

	/*
	 * Not from inside a handler (a handler calling run_jobs()): the job
	 * clock and its deadline belong to the job in hand, and a nested job
	 * would take them over.
	 */
	if (in_job)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run_jobs cannot be called from a handler"),
				 errdetail("Job %lld of queue \"%s\" is running in this session.",
						   current_job ? (long long) current_job->id : 0LL,
						   current_job ? current_job->queue : "?"),
				 errhint("Enqueue the work instead: the executors, or another run_jobs() call, will run it.")));

	if (own_transactions)
	{
		begin_xact("throttle_jobs: reserving");

		/*
		 * The extension may have been dropped since the last job, and the
		 * schema made again by someone else: call nothing by name unless
		 * it is still there (the caller exits when it is not).
		 */
		if (!OidIsValid(get_extension_oid("throttle_jobs", true)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("extension \"throttle_jobs\" is not installed in this database")));
	}
	if (!reserve_handler_job(worker, only_queue, &job, cxt))
	{
		if (own_transactions)
			end_xact(cxt);
		return false;
	}
	if (own_transactions)
	{
		end_xact(cxt);
		begin_xact(psprintf("throttle_jobs: job %lld of queue %s", (long long) job.id, job.queue));
	}
	else
	{
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);
	}

	refusal = handler_refusal(&job);
	/* (an executor's job transaction ends before the refusal is recorded) */
	if (refusal != NULL)
		refusal = MemoryContextStrdup(cxt, refusal);
	if (refusal == NULL)
	{
		PG_TRY();
		{
			start_job_clock(&job);
			run_and_complete(&job, own_transactions);
			if (own_transactions)
				end_xact(cxt);
			else
			{
				ReleaseCurrentSubTransaction();
				MemoryContextSwitchTo(cxt);
				CurrentResourceOwner = owner;
			}
			stop_job_clock();
		}
		PG_CATCH();
		{
			stop_job_clock();
			if (own_transactions)
			{
				MemoryContextSwitchTo(cxt);
				edata = CopyErrorData();
				FlushErrorState();
				AbortCurrentTransaction();
				MemoryContextSwitchTo(cxt);
			}
			else
				edata = tj_catch_in_subxact(cxt, owner);
		}
		PG_END_TRY();
		/* before anything else runs in the caller's session */
		if (!own_transactions)
			clear_extension_state();
		if (edata == NULL)
			return true;
	}
	else if (own_transactions)
		end_xact(cxt);
	else
	{
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}

	reason = cancel_reason;
	cancel_reason = 0;
	/*
	 * The caller's statement was cancelled (a cancel request, its
	 * statement_timeout): that propagates.  Only an interrupt counts: a
	 * handler that merely raises query_canceled (57014) itself fails its job
	 * like any other error; re-thrown, it would roll back every job this
	 * run_jobs() ran and, never counted, stop every later call at the same
	 * job.
	 */
	if (edata && edata->sqlerrcode == ERRCODE_QUERY_CANCELED && reason == 0 && !own_transactions &&
		edata->funcname != NULL && strcmp(edata->funcname, "ProcessInterrupts") == 0)
		ReThrowError(edata);

	if (own_transactions)
		begin_xact("throttle_jobs: recording a failure");
	if (refusal)
	{
		ereport(WARNING,
				(errmsg("throttle_jobs: job %lld not run: %s", (long long) job.id, refusal)));
		record_failure(&job, refusal, false);
	}
	else if (reason == CANCEL_SHUTDOWN)
		record_failure(&job, NULL, true);
	else if (reason == CANCEL_DEADLINE)
		record_failure(&job, psprintf("handler ran past the queue's lease (%lld ms)",
									  (long long) job.timeout_ms), false);
	else
	{
		/* the search_path trap: a name the pinned path does not find */
		bool		path_hint = !job.own_path &&
			ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION &&
			edata->sqlerrcode != ERRCODE_INSUFFICIENT_PRIVILEGE;

		if (own_transactions)
			ereport(LOG,
					(errmsg("throttle_jobs: handler of job %lld in queue \"%s\" failed: %s",
							(long long) job.id, job.queue, edata->message),
					 path_hint ? errhint(HANDLER_PATH_HINT) : 0));
		record_failure(&job, psprintf("%s (SQLSTATE %s)%s", edata->message,
									  unpack_sql_state(edata->sqlerrcode),
									  path_hint ? " HINT: " HANDLER_PATH_HINT : ""), false);
	}
	if (own_transactions)
		end_xact(cxt);
	return true;
}

/* This session's temporary schema, or InvalidOid while it has none */
static Oid
session_temp_namespace(void)
{
	Oid			temp_nsp;
	Oid			temp_toast_nsp;

	GetTempNamespaceState(&temp_nsp, &temp_toast_nsp);
	return temp_nsp;
}

/*
 * After every job an executor drops what a handler may have left in its
 * session, as DISCARD ALL would, so that the next job, perhaps of another
 * owner, finds none of it: session
 * advisory locks, prepared statements, sequence values (currval), dblink
 * connections, the seed of random() (setseed).  Settings
 * are undone by call_handler's GUC nest level, open portals closed there
 * (and by the commit); LISTEN, PREPARE, WITH HOLD cursors, role changes and
 * temporary objects are refused by the security-restricted operation.
 * Should a temporary schema exist all the same, the process exits (its
 * maintenance worker starts another).  Runs outside any transaction.
 *
 * Unlike DISCARD ALL this keeps cached plans: a plan grants nothing
 * (privileges are checked at every execution; a plan that depends on the
 * role, through row security, or on search_path is only reused under the
 * same), and re-planning every statement of reserve() and complete() after
 * each job would add about 0.8 ms to the next job's pickup.
 */
void
tj_discard_session_state(void)
{
	if (OidIsValid(session_temp_namespace()))
	{
		ereport(LOG,
				(errmsg("throttle_jobs: worker exiting: a handler left a temporary schema in its session")));
		proc_exit(1);
	}
	LockReleaseSession(USER_LOCKMETHOD);
	DropAllPreparedStatements();
	ResetSequenceCaches();

	/* dblink connections and the random seed; on any error, start afresh */
	PG_TRY();
	{
		StartTransactionCommand();
		clear_extension_state();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
		ereport(LOG,
				(errmsg("throttle_jobs: worker exiting: could not close the dblink connections or reset the random seed after a job")));
		proc_exit(1);
	}
	PG_END_TRY();
}

/*
 * The role that called run_jobs: the current user at its entry (0.2.0
 * declares it SECURITY INVOKER), or, under the 0.1.0 declaration (SECURITY
 * DEFINER, the caller's role is not known there), the session's current
 * role, which is the user that the caller's deferred triggers would run as
 * at commit.  *definer: the function's owner (the extension's owner).
 */
static Oid
run_jobs_caller(FunctionCallInfo fcinfo, Oid *definer)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	Form_pg_proc proc;
	Oid			caller;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	*definer = proc->proowner;
	caller = proc->prosecdef ? GetOuterUserId() : GetUserId();
	ReleaseSysCache(tup);
	return caller;
}

/*
 * run_jobs refuses a session that has a temporary schema: its objects
 * would shadow the names that a handler uses (pg_temp comes first in a
 * search_path that does not list it), and triggers on them would run the
 * caller's code in the handler's place.  A session that has once created a
 * temporary object keeps its temporary schema until it ends.
 */
static void
refuse_temp_namespace(void)
{
	Oid			temp_nsp = session_temp_namespace();

	if (OidIsValid(temp_nsp))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run_jobs cannot run handlers in a session that has temporary objects"),
				 errdetail("This session has the temporary schema \"%s\"; its objects would shadow the names that handlers use.",
						   get_namespace_name(temp_nsp)),
				 errhint("Call run_jobs from a session of its own, such as a pg_cron job.")));
}

/*
 * run_jobs refuses a session that has dblink connections open: a handler
 * could send statements through them as the user who opened them (a
 * superuser calling run_jobs from pg_cron).  Named connections are listed
 * by dblink_get_connections(); the unnamed one can only be found by
 * closing it, which is done (and the call refused all the same).
 */
static void
refuse_dblink_connections(void)
{
	DblinkFuncs f;
	ArrayType  *names;

	if (!find_dblink(&f))
		return;
	names = dblink_connections(&f);
	if (names != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run_jobs cannot run handlers in a session that has dblink connections open"),
				 errdetail("This session has the named dblink connections %s; a handler could use them.",
						   TextDatumGetCString(OidFunctionCall2(F_ARRAY_TO_STRING_ANYARRAY_TEXT,
																PointerGetDatum(names),
																CStringGetTextDatum(", ")))),
				 errhint("Close them with dblink_disconnect(), or call run_jobs from a session of its own, such as a pg_cron job.")));
	if (disconnect_unnamed(&f))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run_jobs cannot run handlers in a session that has dblink connections open"),
				 errdetail("This session had an unnamed dblink connection open; a handler could have used it. It has been closed."),
				 errhint("Call run_jobs from a session of its own, such as a pg_cron job.")));
}

/* run_jobs(queue, max_jobs, max_time) returns integer: jobs run */
Datum
throttle_jobs_run_jobs(PG_FUNCTION_ARGS)
{
	char	   *queue = NULL;
	int32		max_jobs;
	int64		max_usecs;
	TimestampTz start;
	char	   *worker;
	int32		n = 0;
	Oid			caller;
	Oid			definer;
	Oid			save_userid;
	int			save_sec_context;

	tj_require_not_null(fcinfo, 1, "max_jobs");
	tj_require_not_null(fcinfo, 2, "max_time");
	max_jobs = PG_GETARG_INT32(1);
	tj_check_max_jobs(max_jobs);
	tj_check_interval(PG_GETARG_INTERVAL_P(2), "max_time", false);
	max_usecs = tj_interval_usecs(PG_GETARG_INTERVAL_P(2));
	refuse_temp_namespace();
	refuse_dblink_connections();

	/*
	 * The caller's pending deferred trigger events fire now, as the caller:
	 * the handlers' SET CONSTRAINTS ALL IMMEDIATE would otherwise fire them
	 * as a queue's owner.  Constraints stay IMMEDIATE for the rest of the
	 * caller's transaction.  Then our own statements run as the extension's
	 * owner (run_jobs is SECURITY INVOKER since 0.2.0).
	 */
	caller = run_jobs_caller(fcinfo, &definer);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	if (caller != save_userid)
		SetUserIdAndSecContext(caller, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	constraints_immediate();
	SetUserIdAndSecContext(definer, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	/* per-queue privileges: consume on the queue; run_jobs(NULL) filters */
	tj_run_jobs_check(caller, PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));

	if (!PG_ARGISNULL(0))
	{
		TJQueue		q;

		SPI_connect();
		tj_lookup_queue(PG_GETARG_TEXT_PP(0), &q);
		SPI_finish();
		if (!q.has_handler)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("queue \"%s\" has no handler", q.name),
					 errhint("Set one with alter_queue(name, handler => ...), or take its jobs with reserve().")));
		queue = q.name;
	}

	worker = psprintf("run_jobs/%d", MyProcPid);
	start = GetCurrentTimestamp();
	while (n < max_jobs && GetCurrentTimestamp() - start < max_usecs)
	{
		CHECK_FOR_INTERRUPTS();
		if (!tj_run_next_job(worker, queue, false))
			break;
		n++;
	}
	SetUserIdAndSecContext(save_userid, save_sec_context);
	PG_RETURN_INT32(n);
}

/*
 * _handler_signature(regprocedure) returns text: the qualified signature
 * that queue.handler stores (schema.name(pg_catalog.jsonb)); for an OID
 * that names no function, the number.
 */
Datum
throttle_jobs_handler_signature(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(format_procedure_qualified(PG_GETARG_OID(0))));
}
