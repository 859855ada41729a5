/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The launcher, and how every background worker of ours is started
 *		and set up.  Registered only when the library is preloaded.
 *
 * The launcher (a static worker, connected to no database, started once
 * recovery has finished, restarted by the postmaster when it dies) starts a
 * maintenance worker (dbworker.c) for each database listed in
 * throttle_jobs.databases that has none, at most one start per database
 * every RESTART_DELAY_MS.
 *
 * Also here, for the maintenance workers and executors: registering a
 * dynamic worker (tj_register_worker; out of slots, one WARNING per server
 * start), connecting to a database with pinned settings (tj_worker_connect),
 * configuration reload, and whether this database is still listed.
 *
 * Every worker connects as the bootstrap superuser, so each pins
 * search_path to pg_catalog, pg_temp right after connecting (pin_settings,
 * which also pins the timeouts and transaction defaults a database's
 * settings could use to make every pass fail): the database's default
 * ("$user", public) would let any role that may create in public supply an
 * operator or function that our statements pick over pg_catalog's (an exact
 * match for operand types that pg_catalog matches only through a cast).
 * Our statements write every operator as OPERATOR(pg_catalog.x) and
 * qualify every function and cast besides.
 *
 * Locking: the workers' slots (shmem.c) under tj_workers->mutex.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"
#include "utils/wait_event.h"

#include "throttle_jobs.h"

#define LAUNCHER_NAP_MS			1000	/* between two looks at the listed databases */
#define RESTART_DELAY_MS		5000	/* between starts of one database's worker */

/* Called from _PG_init while shared_preload_libraries is processed. */
void
tj_launcher_register(void)
{
	BackgroundWorker worker;

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

/* ------------------------------------------------ starting our workers */

/* Gives the out-of-slots WARNING once per server start. */
void
tj_warn_no_worker_slots(const char *what)
{
	bool		warn;

	SpinLockAcquire(&tj_workers->mutex);
	warn = !tj_workers->warned_no_slots;
	tj_workers->warned_no_slots = true;
	SpinLockRelease(&tj_workers->mutex);
	if (warn)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("throttle_jobs: out of background worker slots, could not start %s", what),
				 errdetail("This warning is given once; throttle_jobs keeps retrying quietly. Handler jobs wait until an executor starts (or run_jobs() runs them)."),
				 errhint("Raise max_worker_processes: allow 1 + (1 + throttle_jobs.executor_workers) per database in throttle_jobs.databases, plus the logical replication launcher and other extensions' workers.")));
}

/*
 * Registers a dynamic worker running `function` in database dboid, its
 * handle in *handle (allocated in the current context); false when no
 * worker slot is left.
 */
bool
tj_register_worker(const char *function, const char *name, Oid dboid,
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
bool
tj_worker_handle_live(BackgroundWorkerHandle *handle)
{
	pid_t		pid;
	BgwHandleStatus status;

	if (handle == NULL)
		return false;
	status = GetBackgroundWorkerPid(handle, &pid);
	return status == BGWH_NOT_YET_STARTED || status == BGWH_STARTED;
}

/* ------------------------------------------- setting our workers up */

/* Processes a pending SIGHUP; returns whether the configuration was reloaded. */
bool
tj_worker_reload_config(void)
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
pin_settings(void)
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

/* Whether this database is still listed; needs a transaction. */
bool
tj_database_listed(void)
{
	char	   *mine = get_database_name(MyDatabaseId);
	ListCell   *lc;

	foreach(lc, listed_databases())
		if (mine && strcmp(mine, lfirst(lc)) == 0)
			return true;
	return false;
}

/*
 * Signal handling and the database connection of a maintenance worker or
 * executor (bgw_main_arg: the database's oid).
 */
void
tj_worker_connect(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, tj_sigterm_handler);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	pin_settings();
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
	pin_settings();
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
		tj_worker_reload_config();
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
			TJDatabaseSlot *slot;
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

			SpinLockAcquire(&tj_workers->mutex);
			slot = tj_db_slot(dboid, false);
			running = slot != NULL && slot->worker_pid != 0;
			SpinLockRelease(&tj_workers->mutex);
			if (running || tj_worker_handle_live(ls->handle) || now < ls->next_start)
				continue;

			if (ls->handle)
				pfree(ls->handle);
			ls->handle = NULL;
			MemoryContextSwitchTo(TopMemoryContext);
			if (tj_register_worker("tj_dbworker_main", "throttle_jobs maintenance", dboid, &ls->handle))
				ls->next_start = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
			else
			{
				ls->handle = NULL;
				tj_warn_no_worker_slots("a maintenance worker");
			}
			MemoryContextSwitchTo(scratch);
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAP_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
