/*-------------------------------------------------------------------------
 *
 * worker.c
 *		Background workers: the launcher, one maintenance worker per
 *		database in throttle_jobs.databases, and executors for handler
 *		queues.  Registered only when the library is preloaded.
 *
 * The launcher (a static worker, connected to no database, started once
 * recovery has finished, restarted by the postmaster when it dies) starts a
 * maintenance worker for each listed database that has none.  A maintenance
 * worker runs one pass every throttle_jobs.maintenance_interval: it fails
 * the jobs of our own workers that exited while running them, calls
 * maintain(), and keeps up to throttle_jobs.executor_workers executors (per
 * database) while handler queues exist.  Should no executor be able to
 * start (no worker slots left), handler jobs wait for one (or for
 * run_jobs()): the maintenance worker does not run them itself, since lease
 * reaping would then wait behind every handler.
 *
 * Shared state: one WorkerShared in shared memory, every field protected by
 * its spinlock.  Each maintenance worker and executor claims its slot itself
 * at start (so a restarted launcher or maintenance worker never starts a
 * second one) and clears it at exit; a crash restart re-initialises it all.
 * A backend whose transaction enqueued into a handler queue sets, once it
 * has committed, the latch of an idle executor of its database (or of all
 * its executors when none is idle).
 *
 * Every worker connects as the bootstrap superuser, so each pins
 * search_path to pg_catalog, pg_temp right after connecting (pin_search_path,
 * which also pins the timeouts and transaction defaults a database's
 * settings could use to make every pass fail):
 * the database's default ("$user", public) would let any role that may
 * create in public supply an operator or function that our statements pick
 * over pg_catalog's (an exact match for operand types that pg_catalog
 * matches only through a cast).  Our statements here and in execute.c write
 * every operator as OPERATOR(pg_catalog.x) and qualify every function and
 * cast besides.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "utils/rel.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/uuid.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"
#include "utils/wait_event.h"

#include "throttle_jobs.h"

#define TJ_MAX_DATABASES		64
#define LAUNCHER_NAP_MS			1000
#define RESTART_DELAY_MS		5000	/* between starts of one database's worker */
#define ERROR_NAP_MS			10000	/* after a failed maintenance pass */

typedef struct ExecutorSlot
{
	pid_t		pid;			/* 0: free */
	Latch	   *latch;
	bool		idle;			/* waiting on its latch */
} ExecutorSlot;

typedef struct DatabaseSlot
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		worker_pid;		/* the maintenance worker; 0: none */
	Latch	   *worker_latch;
	ExecutorSlot exec[TJ_MAX_EXECUTORS];
} DatabaseSlot;

typedef struct WorkerShared
{
	slock_t		mutex;
	bool		warned_no_slots;	/* the max_worker_processes WARNING was given */
	DatabaseSlot db[TJ_MAX_DATABASES];
} WorkerShared;

static WorkerShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static bool wake_pending = false;
static bool wake_callback_registered = false;

static void
workers_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(WorkerShared)));
}

static void
workers_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("throttle_jobs workers", sizeof(WorkerShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(WorkerShared));
		SpinLockInit(&shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries is processed. */
void
tj_workers_init(void)
{
	BackgroundWorker worker;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = workers_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = workers_shmem_startup;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "throttle_jobs");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "tj_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "throttle_jobs launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "throttle_jobs launcher");
	RegisterBackgroundWorker(&worker);
}

/* The slot of database dboid, or NULL; with create, a free one is taken. */
static DatabaseSlot *
db_slot(Oid dboid, bool create)
{
	DatabaseSlot *free_slot = NULL;

	for (int i = 0; i < TJ_MAX_DATABASES; i++)
	{
		DatabaseSlot *slot = &shared->db[i];
		bool		empty = slot->worker_pid == 0;

		if (slot->dboid == dboid)
			return slot;
		for (int e = 0; e < TJ_MAX_EXECUTORS && empty; e++)
			empty = slot->exec[e].pid == 0;
		if (empty && free_slot == NULL)
			free_slot = slot;
	}
	if (!create || free_slot == NULL)
		return NULL;
	memset(free_slot, 0, sizeof(DatabaseSlot));
	free_slot->dboid = dboid;
	return free_slot;
}

/* Gives the out-of-slots WARNING once per server start. */
static void
warn_no_slots(const char *what)
{
	bool		warn;

	SpinLockAcquire(&shared->mutex);
	warn = !shared->warned_no_slots;
	shared->warned_no_slots = true;
	SpinLockRelease(&shared->mutex);
	if (warn)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("throttle_jobs: out of background worker slots, could not start %s", what),
				 errdetail("This warning is given once; throttle_jobs keeps retrying quietly. Handler jobs wait until an executor starts (or run_jobs() runs them)."),
				 errhint("Raise max_worker_processes: allow 1 + (1 + throttle_jobs.executor_workers) per database in throttle_jobs.databases, plus the logical replication launcher and other extensions' workers.")));
}

static bool
register_worker(const char *function, const char *name, Oid dboid,
				BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "throttle_jobs");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", name);
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/* Whether a handle's worker may still be (or become) running. */
static bool
handle_live(BackgroundWorkerHandle *handle)
{
	pid_t		pid;
	BgwHandleStatus status;

	if (handle == NULL)
		return false;
	status = GetBackgroundWorkerPid(handle, &pid);
	return status == BGWH_NOT_YET_STARTED || status == BGWH_STARTED;
}

/* Processes a pending SIGHUP; returns whether the configuration was reloaded. */
static bool
reload_config(void)
{
	int			old_interval = tj_maintenance_interval;

	if (!ConfigReloadPending)
		return false;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	if (old_interval != tj_maintenance_interval)
		ereport(LOG,
				(errmsg("throttle_jobs: maintenance interval is now %d ms",
						tj_maintenance_interval)));
	return true;
}

/*
 * search_path = pg_catalog, pg_temp for the whole life of this worker (see
 * the file header).  Set as if the client had asked for it at connection
 * (PGC_S_CLIENT): it is then also the value that RESET ALL returns to, and
 * function SET clauses and GUC nest levels (PGC_S_SESSION, a higher
 * priority) still apply over it.
 */
static void
pin_search_path(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_CLIENT);

	/*
	 * Nor may a database's own settings (ALTER DATABASE ... SET, which its
	 * owner controls) make every maintenance pass or job fail: a timeout of
	 * 1 ms, read-only transactions, or an isolation level under which
	 * reservations raise serialization failures.
	 */
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_CLIENT);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_CLIENT);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_CLIENT);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_CLIENT);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_CLIENT);
	SetConfigOption("default_transaction_deferrable", "off", PGC_SUSET, PGC_S_CLIENT);
	/* where and how the archive's day partitions are made */
	SetConfigOption("default_tablespace", "", PGC_SUSET, PGC_S_CLIENT);
	SetConfigOption("default_table_access_method", "heap", PGC_SUSET, PGC_S_CLIENT);
}

/*
 * The database names in throttle_jobs.databases (identifiers: quote names
 * that are not lower case), or NIL after a WARNING on bad syntax.
 */
static List *
listed_databases(void)
{
	char	   *raw = pstrdup(tj_databases);
	List	   *names;

	if (!SplitIdentifierString(raw, ',', &names))
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("throttle_jobs: invalid list syntax in throttle_jobs.databases: \"%s\"", tj_databases),
				 errhint("List database names separated by commas; double-quote names that are not lower case.")));
		return NIL;
	}
	return names;
}

/* ---------------------------------------------------------------- launcher */

/*
 * The oid of the database called name, or InvalidOid.  The launcher is
 * connected to no database, so (as autovacuum's launcher does) it reads the
 * shared catalog pg_database with a plain heap scan.  Needs a transaction.
 */
static Oid
database_oid(const char *name)
{
	Relation	rel = table_open(DatabaseRelationId, AccessShareLock);
	TableScanDesc scan = table_beginscan_catalog(rel, 0, NULL);
	HeapTuple	tup;
	Oid			result = InvalidOid;

	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (strcmp(NameStr(db->datname), name) == 0 && db->datallowconn)
		{
			result = db->oid;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return result;
}

typedef struct LaunchState
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
	TimestampTz next_start;
} LaunchState;

void
tj_launcher_main(Datum arg)
{
	LaunchState state[TJ_MAX_DATABASES];
	List	   *warned = NIL;	/* names already reported missing */
	MemoryContext scratch;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pin_search_path();
	memset(state, 0, sizeof(state));
	scratch = AllocSetContextCreate(TopMemoryContext, "throttle_jobs launcher",
									ALLOCSET_DEFAULT_SIZES);
	ereport(LOG, (errmsg("throttle_jobs launcher started")));

	for (;;)
	{
		List	   *names;
		List	   *oids = NIL;
		ListCell   *lc;
		TimestampTz now = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		reload_config();
		MemoryContextReset(scratch);
		MemoryContextSwitchTo(scratch);

		names = listed_databases();
		if (names != NIL)
		{
			StartTransactionCommand();
			foreach(lc, names)
			{
				char	   *name = lfirst(lc);
				Oid			dboid = database_oid(name);

				if (OidIsValid(dboid))
					oids = lappend_oid(oids, dboid);
				else if (!list_member(warned, makeString(name)))
				{
					MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

					warned = lappend(warned, makeString(pstrdup(name)));
					MemoryContextSwitchTo(old);
					ereport(WARNING,
							(errcode(ERRCODE_UNDEFINED_DATABASE),
							 errmsg("throttle_jobs: database \"%s\" in throttle_jobs.databases does not exist", name)));
				}
			}
			CommitTransactionCommand();
			MemoryContextSwitchTo(scratch);
		}

		foreach(lc, oids)
		{
			Oid			dboid = lfirst_oid(lc);
			LaunchState *ls = NULL;
			DatabaseSlot *slot;
			bool		running;

			for (int i = 0; i < TJ_MAX_DATABASES && ls == NULL; i++)
				if (state[i].dboid == dboid)
					ls = &state[i];
			for (int i = 0; i < TJ_MAX_DATABASES && ls == NULL; i++)
				if (!OidIsValid(state[i].dboid))
				{
					ls = &state[i];
					ls->dboid = dboid;
				}
			if (ls == NULL)
				break;			/* more than TJ_MAX_DATABASES listed */

			SpinLockAcquire(&shared->mutex);
			slot = db_slot(dboid, false);
			running = slot != NULL && slot->worker_pid != 0;
			SpinLockRelease(&shared->mutex);
			if (running || handle_live(ls->handle) || now < ls->next_start)
				continue;

			if (ls->handle)
				pfree(ls->handle);
			ls->handle = NULL;
			MemoryContextSwitchTo(TopMemoryContext);
			if (register_worker("tj_dbworker_main", "throttle_jobs maintenance", dboid, &ls->handle))
				ls->next_start = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
			else
			{
				ls->handle = NULL;
				warn_no_slots("a maintenance worker");
			}
			MemoryContextSwitchTo(scratch);
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAP_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ---------------------------------------------------- maintenance worker */

static void
release_db_worker(int code, Datum arg)
{
	DatabaseSlot *slot;

	SpinLockAcquire(&shared->mutex);
	slot = db_slot(MyDatabaseId, false);
	if (slot && slot->worker_pid == MyProcPid)
	{
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
	}
	SpinLockRelease(&shared->mutex);
}

static void
release_executor(int code, Datum arg)
{
	DatabaseSlot *slot;
	int			i = DatumGetInt32(arg);

	SpinLockAcquire(&shared->mutex);
	slot = db_slot(MyDatabaseId, false);
	if (slot && slot->exec[i].pid == MyProcPid)
		memset(&slot->exec[i], 0, sizeof(ExecutorSlot));
	SpinLockRelease(&shared->mutex);
}

/* Whether this database is still listed; needs a transaction. */
static bool
database_listed(void)
{
	char	   *mine = get_database_name(MyDatabaseId);
	ListCell   *lc;

	foreach(lc, listed_databases())
		if (mine && strcmp(mine, lfirst(lc)) == 0)
			return true;
	return false;
}

/* The running jobs of our workers other than the live ones $1, reserved before $2 */
static TJStatement orphans_stmt = {
	"SELECT j.id, j.lease_token, j.worker"
	"  FROM throttle_jobs.job j"
	" WHERE j.state OPERATOR(pg_catalog.=) 'running'::pg_catalog.text"
	"   AND pg_catalog.starts_with(j.worker, '" TJ_WORKER_PREFIX "'::pg_catalog.text)"
	"   AND j.worker OPERATOR(pg_catalog.<>) ALL ($1::pg_catalog.text[])"
	"   AND j.reserved_at OPERATOR(pg_catalog.<) $2::pg_catalog.timestamptz",
	2, {TEXTARRAYOID, TIMESTAMPTZOID}
};

static TJStatement handler_queues_stmt = {
	"SELECT EXISTS (SELECT FROM throttle_jobs.queue q WHERE q.handler IS NOT NULL)",
	0, {InvalidOid}
};

typedef struct Orphan
{
	Datum		id;				/* int8 */
	Datum		lease_token;	/* uuid */
	char	   *worker;
} Orphan;

/*
 * Fails the running jobs of our workers in this database that are gone: the
 * server crashed or restarted, or the worker died, while a job was in hand.
 * The attempt was counted at reservation, so a job that keeps killing its
 * worker ends in the dead letters.  A worker started after the set of live
 * ones was read reserves only later, hence the reserved_at bound.  Needs a
 * transaction and SPI.
 */
void
tj_sweep_orphans(void)
{
	Datum		live[1 + TJ_MAX_EXECUTORS];
	int			n = 0;
	DatabaseSlot *slot;
	Datum		values[2];
	uint64		norphans;
	Orphan	   *orphans;
	TJCaller	caller;

	SpinLockAcquire(&shared->mutex);
	slot = db_slot(MyDatabaseId, false);
	if (slot)
	{
		pid_t		pids[1 + TJ_MAX_EXECUTORS];
		int			npids = 0;

		if (slot->worker_pid)
			pids[npids++] = slot->worker_pid;
		for (int i = 0; i < TJ_MAX_EXECUTORS; i++)
			if (slot->exec[i].pid)
				pids[npids++] = -slot->exec[i].pid;
		SpinLockRelease(&shared->mutex);
		for (int i = 0; i < npids; i++)
			live[n++] = CStringGetTextDatum(pids[i] > 0
											? psprintf(TJ_WORKER_PREFIX "maintenance/%d", pids[i])
											: psprintf(TJ_WORKER_PREFIX "executor/%d", -pids[i]));
	}
	else
		SpinLockRelease(&shared->mutex);

	values[0] = PointerGetDatum(construct_array(live, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	norphans = tj_execute(&orphans_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	if (norphans == 0)
		return;
	/* read them all before tj_fail_job replaces SPI_tuptable */
	orphans = palloc(sizeof(Orphan) * norphans);
	for (uint64 i = 0; i < norphans; i++)
	{
		bool		isnull;

		orphans[i].id = tj_get_datum(i, 1, &isnull);
		orphans[i].lease_token = datumCopy(tj_get_datum(i, 2, &isnull), false, UUID_LEN);
		orphans[i].worker = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
	}
	/* fail() of each, as its SQL entry point would run it */
	tj_caller_enter_owner(&caller);
	for (uint64 i = 0; i < norphans; i++)
	{
		tj_check_job(caller.role, orphans[i].id, TJ_PRIV_CONSUME);
		(void) tj_fail_job(orphans[i].id, orphans[i].lease_token,
						   psprintf("worker %s exited while the job ran (a crash or a restart)",
									orphans[i].worker),
						   NULL, true, GetCurrentTransactionStartTimestamp());
	}
	tj_caller_leave(&caller);
}

typedef enum PassResult
{
	PASS_STOP,					/* database no longer listed */
	PASS_IDLE,					/* extension not installed */
	PASS_DONE,					/* maintained; no handler queue */
	PASS_HANDLERS,				/* maintained; handler queues exist */
	PASS_FAILED					/* the pass raised an error */
} PassResult;

static PassResult
maintenance_pass(MemoryContext cxt)
{
	volatile PassResult result = PASS_DONE;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "throttle_jobs: maintenance");
		if (!database_listed())
			result = PASS_STOP;
		else if (!OidIsValid(get_extension_oid("throttle_jobs", true)))
			result = PASS_IDLE;
		else
		{
			bool		isnull;
			bool		restoring;
			TJCaller	caller;
			TJMaintainResult report;

			SPI_connect();
			/* nothing but maintain() while a dump is restored (see maintain.c) */
			restoring = tj_restore_pending(GetCurrentTimestamp());
			if (!restoring)
				tj_sweep_orphans();
			/* maintain(), as its SQL entry point (SECURITY DEFINER) would run it */
			tj_caller_enter_owner(&caller);
			(void) tj_maintain(GetCurrentTransactionStartTimestamp(), &report);
			tj_caller_leave(&caller);
			tj_execute(&handler_queues_stmt, NULL, NULL, false, 0, SPI_OK_SELECT);
			if (DatumGetBool(tj_get_datum(0, 1, &isnull)) && !restoring)
				result = PASS_HANDLERS;
			SPI_finish();
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		result = PASS_FAILED;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	/* a background worker reports its table statistics itself (autovacuum reads them) */
	pgstat_report_stat(false);
	return result;
}

/*
 * Starts executors up to throttle_jobs.executor_workers; returns how many
 * run or are starting.
 */
static int
start_executors(BackgroundWorkerHandle **handles)
{
	DatabaseSlot *slot;
	int			alive = 0;
	int			pending = 0;

	SpinLockAcquire(&shared->mutex);
	slot = db_slot(MyDatabaseId, false);
	for (int i = 0; slot && i < TJ_MAX_EXECUTORS; i++)
		if (slot->exec[i].pid != 0)
			alive++;
	SpinLockRelease(&shared->mutex);

	for (int i = 0; i < TJ_MAX_EXECUTORS; i++)
	{
		if (handles[i] == NULL)
			continue;
		if (handle_live(handles[i]))
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(handles[i], &pid) == BGWH_NOT_YET_STARTED)
				pending++;
			continue;
		}
		pfree(handles[i]);
		handles[i] = NULL;
	}

	for (int i = 0; i < TJ_MAX_EXECUTORS && alive + pending < tj_executor_workers; i++)
	{
		MemoryContext old;
		bool		ok;

		if (handles[i] != NULL)
			continue;
		old = MemoryContextSwitchTo(TopMemoryContext);
		ok = register_worker("tj_executor_main", "throttle_jobs executor", MyDatabaseId, &handles[i]);
		MemoryContextSwitchTo(old);
		if (!ok)
		{
			handles[i] = NULL;
			warn_no_slots("an executor");
			break;
		}
		pending++;
	}
	return alive + pending;
}

/*
 * Signal handling and the database connection of a maintenance worker or
 * executor (bgw_main_arg: the database's oid).
 */
static void
connect_database_worker(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, tj_sigterm_handler);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	pin_search_path();
}

/*
 * Runs the next handler job as `name` (tj_run_next_job in own
 * transactions), logging and cleaning up after an error outside the
 * handler, then drops what the handler left in the session.  Returns
 * whether a job was taken; *failed tells of such an error.
 */
static bool
run_next_job_caught(const char *name, MemoryContext scratch, bool *failed)
{
	volatile bool ran = false;

	*failed = false;
	PG_TRY();
	{
		ran = tj_run_next_job(name, NULL, true);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(scratch);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		*failed = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(scratch);
	if (ran || *failed)
		tj_discard_session_state();
	return ran;
}

void
tj_dbworker_main(Datum arg)
{
	BackgroundWorkerHandle *handles[TJ_MAX_EXECUTORS];
	MemoryContext scratch;
	DatabaseSlot *slot;
	bool		claimed = false;

	connect_database_worker(arg);

	SpinLockAcquire(&shared->mutex);
	slot = db_slot(MyDatabaseId, true);
	if (slot && slot->worker_pid == 0)
	{
		slot->worker_pid = MyProcPid;
		slot->worker_latch = MyLatch;
		claimed = true;
	}
	SpinLockRelease(&shared->mutex);
	if (!claimed)
		proc_exit(0);			/* another one runs, or no slot is left */
	before_shmem_exit(release_db_worker, (Datum) 0);

	memset(handles, 0, sizeof(handles));
	scratch = AllocSetContextCreate(TopMemoryContext, "throttle_jobs maintenance",
									ALLOCSET_DEFAULT_SIZES);
	ereport(LOG, (errmsg("throttle_jobs maintenance worker started")));

	for (;;)
	{
		PassResult	pass;
		long		nap = tj_maintenance_interval;

		CHECK_FOR_INTERRUPTS();
		reload_config();
		if (tj_shutdown_requested())
			proc_exit(0);
		ResetLatch(MyLatch);
		MemoryContextReset(scratch);
		MemoryContextSwitchTo(scratch);

		pass = maintenance_pass(scratch);
		if (pass == PASS_STOP)
		{
			ereport(LOG, (errmsg("throttle_jobs maintenance worker exiting: database no longer in throttle_jobs.databases")));
			proc_exit(0);
		}
		if (pass == PASS_FAILED)
			nap = ERROR_NAP_MS;
		/*
		 * Handler jobs are the executors' alone: run here, each would hold
		 * back the next pass (lease reaping, orphans) for as long as it ran.
		 */
		if (pass == PASS_HANDLERS)
			(void) start_executors(handles);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 nap, PG_WAIT_EXTENSION);
	}
}

/* ----------------------------------------------------------------- executor */

void
tj_executor_main(Datum arg)
{
	MemoryContext scratch;
	DatabaseSlot *slot;
	volatile int me = -1;
	char	   *name;

	connect_database_worker(arg);

	SpinLockAcquire(&shared->mutex);
	slot = db_slot(MyDatabaseId, true);
	for (int i = 0; slot && i < tj_executor_workers && i < TJ_MAX_EXECUTORS && me < 0; i++)
		if (slot->exec[i].pid == 0)
		{
			me = i;
			slot->exec[i].pid = MyProcPid;
			slot->exec[i].latch = MyLatch;
			slot->exec[i].idle = false;
		}
	SpinLockRelease(&shared->mutex);
	if (me < 0)
		proc_exit(0);			/* enough executors run already */
	before_shmem_exit(release_executor, Int32GetDatum(me));

	scratch = AllocSetContextCreate(TopMemoryContext, "throttle_jobs executor",
									ALLOCSET_DEFAULT_SIZES);
	name = MemoryContextStrdup(TopMemoryContext,
							   psprintf(TJ_WORKER_PREFIX "executor/%d", MyProcPid));

	for (;;)
	{
		bool		ran;
		bool		failed;

		CHECK_FOR_INTERRUPTS();
		if (reload_config())
		{
			bool		listed;

			StartTransactionCommand();
			listed = database_listed();
			CommitTransactionCommand();
			MemoryContextSwitchTo(scratch);
			if (!listed)
			{
				ereport(LOG, (errmsg("throttle_jobs executor exiting: database no longer in throttle_jobs.databases")));
				proc_exit(0);
			}
		}
		if (tj_shutdown_requested() || me >= tj_executor_workers)
			proc_exit(0);
		ResetLatch(MyLatch);
		MemoryContextReset(scratch);
		MemoryContextSwitchTo(scratch);

		ran = run_next_job_caught(name, scratch, &failed);
		if (failed)
		{
			bool		present;

			StartTransactionCommand();
			present = OidIsValid(get_extension_oid("throttle_jobs", true));
			CommitTransactionCommand();
			if (!present)
				proc_exit(0);
		}
		if (ran)
			continue;

		SpinLockAcquire(&shared->mutex);
		slot->exec[me].idle = true;
		SpinLockRelease(&shared->mutex);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 failed ? ERROR_NAP_MS : tj_maintenance_interval, PG_WAIT_EXTENSION);
		SpinLockAcquire(&shared->mutex);
		slot->exec[me].idle = false;
		SpinLockRelease(&shared->mutex);
	}
}

/* ------------------------------------------------------------------ wakeup */

static void
wake_executors(void)
{
	Latch	   *latches[1 + TJ_MAX_EXECUTORS];
	int			n = 0;
	DatabaseSlot *slot;

	SpinLockAcquire(&shared->mutex);
	slot = db_slot(MyDatabaseId, false);
	if (slot)
	{
		/* one idle executor; or, when none is idle, all of them */
		for (int i = 0; i < TJ_MAX_EXECUTORS && n == 0; i++)
			if (slot->exec[i].pid != 0 && slot->exec[i].idle)
			{
				slot->exec[i].idle = false;
				latches[n++] = slot->exec[i].latch;
			}
		if (n == 0)
			for (int i = 0; i < TJ_MAX_EXECUTORS; i++)
				if (slot->exec[i].pid != 0)
					latches[n++] = slot->exec[i].latch;
	}
	SpinLockRelease(&shared->mutex);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

static void
wake_callback(XactEvent event, void *arg)
{
	if (!wake_pending)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			wake_pending = false;
			wake_executors();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = false;
			break;
		default:
			break;
	}
}

/*
 * Called by enqueue when the job goes to a handler queue: once the
 * transaction commits, an executor of this database is woken.  No-op when
 * the library is not preloaded (there are no executors to wake).
 */
void
tj_wake_executors_at_commit(void)
{
	if (shared == NULL)
		return;
	if (!wake_callback_registered)
	{
		RegisterXactCallback(wake_callback, NULL);
		wake_callback_registered = true;
	}
	wake_pending = true;
}
