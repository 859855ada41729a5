/*-------------------------------------------------------------------------
 *
 * executor.c
 *		Executors: background workers that run the jobs of handler queues
 *		(handler.c runs each job), and the wake-up of an executor when a
 *		job is enqueued into a handler queue.
 *
 * The maintenance worker of a database (dbworker.c) keeps up to
 * throttle_jobs.executor_workers executors there while handler queues
 * exist.  An executor takes jobs until none is ready, then waits on its
 * latch (at most throttle_jobs.maintenance_interval, TJ_ERROR_NAP_MS after an
 * error outside a handler).  A backend whose transaction enqueued into a
 * handler queue sets, once it has committed, the latch of an idle executor
 * of its database (or of all its executors when none is idle).
 *
 * SIGTERM (tj_sigterm_handler): outside a job it is die(); with a job in
 * hand, the job gets throttle_jobs.shutdown_grace to finish (handler.c's
 * tick timer enforces it), and the executor exits after it.
 *
 * Locking: each executor claims a slot of its database (shmem.c) under
 * tj_workers->mutex at start, clears it at exit, and marks itself idle
 * there while it waits; the wake-up reads the slots under the same mutex.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "throttle_jobs.h"

/* Shared with the signal handler */
static volatile sig_atomic_t got_sigterm = false;
static volatile TimestampTz sigterm_at = 0;

static bool wake_pending = false;
static bool wake_callback_registered = false;

/*
 * SIGTERM in our background workers: outside a job it is die(); with a job
 * in hand, the job gets throttle_jobs.shutdown_grace to finish, and the
 * worker exits after it (the caller checks tj_shutdown_requested()).
 * handler.c's tick timer enforces the grace: a cancel at its end, die()
 * HARD_GRACE_MS later.
 */
void
tj_sigterm_handler(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	if (tj_job_in_hand())
	{
		if (sigterm_at == 0)
			sigterm_at = GetCurrentTimestamp();
		SetLatch(MyLatch);
	}
	else
		die(postgres_signal_arg);
	errno = save_errno;
}

bool
tj_shutdown_requested(void)
{
	return got_sigterm;
}

/* When the shutdown grace of the job in hand began; 0: no SIGTERM yet. */
TimestampTz
tj_shutdown_grace_began(void)
{
	return sigterm_at;
}

/*
 * A job starts at `now`: after a SIGTERM that came between two jobs, its
 * shutdown grace begins now.
 */
void
tj_shutdown_grace_job_started(TimestampTz now)
{
	if (got_sigterm && sigterm_at == 0)
		sigterm_at = now;
}

static void
release_executor(int code, Datum arg)
{
	TJDatabaseSlot *slot;
	int			i = DatumGetInt32(arg);

	SpinLockAcquire(&tj_workers->mutex);
	slot = tj_db_slot(MyDatabaseId, false);
	if (slot && slot->exec[i].pid == MyProcPid)
		memset(&slot->exec[i], 0, sizeof(TJExecutorSlot));
	SpinLockRelease(&tj_workers->mutex);
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
tj_executor_main(Datum arg)
{
	MemoryContext scratch;
	TJDatabaseSlot *slot;
	volatile int me = -1;
	char	   *name;

	tj_worker_connect(arg);

	SpinLockAcquire(&tj_workers->mutex);
	slot = tj_db_slot(MyDatabaseId, true);
	for (int i = 0; slot && i < tj_executor_workers && i < TJ_MAX_EXECUTORS && me < 0; i++)
		if (slot->exec[i].pid == 0)
		{
			me = i;
			slot->exec[i].pid = MyProcPid;
			slot->exec[i].latch = MyLatch;
			slot->exec[i].idle = false;
		}
	SpinLockRelease(&tj_workers->mutex);
	if (me < 0)
		proc_exit(0);			/* enough executors run already */
	before_shmem_exit(release_executor, Int32GetDatum(me));

	scratch = AllocSetContextCreate(TopMemoryContext, "throttle_jobs executor",
									ALLOCSET_DEFAULT_SIZES);
	name = MemoryContextStrdup(TopMemoryContext,
							   psprintf(TJ_EXECUTOR_NAME, MyProcPid));

	for (;;)
	{
		bool		ran;
		bool		failed;

		CHECK_FOR_INTERRUPTS();
		if (tj_worker_reload_config())
		{
			bool		listed;

			StartTransactionCommand();
			listed = tj_database_listed();
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

		SpinLockAcquire(&tj_workers->mutex);
		slot->exec[me].idle = true;
		SpinLockRelease(&tj_workers->mutex);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 failed ? TJ_ERROR_NAP_MS : tj_maintenance_interval, PG_WAIT_EXTENSION);
		SpinLockAcquire(&tj_workers->mutex);
		slot->exec[me].idle = false;
		SpinLockRelease(&tj_workers->mutex);
	}
}

/* ------------------------------------------------------------------ wake-up */

static void
wake_executors(void)
{
	Latch	   *latches[1 + TJ_MAX_EXECUTORS];
	int			n = 0;
	TJDatabaseSlot *slot;

	SpinLockAcquire(&tj_workers->mutex);
	slot = tj_db_slot(MyDatabaseId, false);
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
	SpinLockRelease(&tj_workers->mutex);
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
	if (tj_workers == NULL)
		return;
	if (!wake_callback_registered)
	{
		RegisterXactCallback(wake_callback, NULL);
		wake_callback_registered = true;
	}
	wake_pending = true;
}
