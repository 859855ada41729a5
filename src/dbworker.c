/*-------------------------------------------------------------------------
 *
 * dbworker.c
 *		The maintenance worker: one per database in throttle_jobs.databases,
 *		started by the launcher.
 *
 * It runs one pass every throttle_jobs.maintenance_interval (TJ_ERROR_NAP_MS
 * after a pass that failed), each in a transaction of its own: it fails
 * the jobs of our own workers that exited while running them (the orphan
 * sweep), runs maintain.c's pass, and keeps up to
 * throttle_jobs.executor_workers executors (executor.c) while handler
 * queues exist.  Should no executor be able to start (no worker slots
 * left), handler jobs wait for one (or for run_jobs()): the maintenance
 * worker does not run them itself, since lease reaping would then wait
 * behind every handler.
 *
 * The job transitions are called through their C API as the extension
 * owner with search_path pinned (tj_caller_enter_owner), as their SQL
 * entry points would run them.
 *
 * Locking: it claims its database's slot (shmem.c) under
 * tj_workers->mutex at start, so a restarted launcher never starts a
 * second one, and clears it at exit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/wait_event.h"

#include "throttle_jobs.h"

static void
release_db_worker(int code, Datum arg)
{
	TJDatabaseSlot *slot;

	SpinLockAcquire(&tj_workers->mutex);
	slot = tj_db_slot(MyDatabaseId, false);
	if (slot && slot->worker_pid == MyProcPid)
	{
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
	}
	SpinLockRelease(&tj_workers->mutex);
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
static void
sweep_orphans(void)
{
	Datum		live[1 + TJ_MAX_EXECUTORS];
	int			n = 0;
	TJDatabaseSlot *slot;
	Datum		values[2];
	uint64		norphans;
	Orphan	   *orphans;
	TJCaller	caller;

	SpinLockAcquire(&tj_workers->mutex);
	slot = tj_db_slot(MyDatabaseId, false);
	if (slot)
	{
		pid_t		pids[1 + TJ_MAX_EXECUTORS];
		int			npids = 0;

		if (slot->worker_pid)
			pids[npids++] = slot->worker_pid;
		for (int i = 0; i < TJ_MAX_EXECUTORS; i++)
			if (slot->exec[i].pid)
				pids[npids++] = -slot->exec[i].pid;
		SpinLockRelease(&tj_workers->mutex);
		for (int i = 0; i < npids; i++)
			live[n++] = CStringGetTextDatum(pids[i] > 0
											? psprintf(TJ_MAINTENANCE_NAME, pids[i])
											: psprintf(TJ_EXECUTOR_NAME, -pids[i]));
	}
	else
		SpinLockRelease(&tj_workers->mutex);

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
		if (!tj_database_listed())
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
			/* no pass while a dump is restored (see maintain.c) */
			restoring = tj_restore_pending(GetCurrentTimestamp());
			if (!restoring)
			{
				sweep_orphans();
				/* maintain(), as its SQL entry point (SECURITY DEFINER) would run it */
				tj_caller_enter_owner(&caller);
				tj_maintain(GetCurrentTransactionStartTimestamp(), &report);
				tj_caller_leave(&caller);
			}
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
	TJDatabaseSlot *slot;
	int			alive = 0;
	int			pending = 0;

	SpinLockAcquire(&tj_workers->mutex);
	slot = tj_db_slot(MyDatabaseId, false);
	for (int i = 0; slot && i < TJ_MAX_EXECUTORS; i++)
		if (slot->exec[i].pid != 0)
			alive++;
	SpinLockRelease(&tj_workers->mutex);

	for (int i = 0; i < TJ_MAX_EXECUTORS; i++)
	{
		if (handles[i] == NULL)
			continue;
		if (tj_worker_handle_live(handles[i]))
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
		ok = tj_register_worker("tj_executor_main", "throttle_jobs executor", MyDatabaseId, &handles[i]);
		MemoryContextSwitchTo(old);
		if (!ok)
		{
			handles[i] = NULL;
			tj_warn_no_worker_slots("an executor");
			break;
		}
		pending++;
	}
	return alive + pending;
}

void
tj_dbworker_main(Datum arg)
{
	BackgroundWorkerHandle *handles[TJ_MAX_EXECUTORS];
	MemoryContext scratch;
	TJDatabaseSlot *slot;
	bool		claimed = false;

	tj_worker_connect(arg);

	SpinLockAcquire(&tj_workers->mutex);
	slot = tj_db_slot(MyDatabaseId, true);
	if (slot && slot->worker_pid == 0)
	{
		slot->worker_pid = MyProcPid;
		slot->worker_latch = MyLatch;
		claimed = true;
	}
	SpinLockRelease(&tj_workers->mutex);
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
		tj_worker_reload_config();
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
			nap = TJ_ERROR_NAP_MS;
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
