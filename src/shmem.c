/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		The library's shared memory: one request hook and one startup hook
 *		for every part that keeps state there, and the workers' slots.
 *
 * Shared memory exists only when the library is preloaded
 * (shared_preload_libraries).  Each part adds one line to `parts`: the size
 * of its segment, the LWLock tranche it needs (if any), and the function
 * that creates its segment, or attaches to it in a process started after
 * the postmaster made it.  The startup hook calls every init function
 * under AddinShmemInitLock.
 *
 * Segments, and the lock that protects each:
 *	- "throttle_jobs stats" (stats.c): tranche "throttle_jobs_stats" and
 *	  per-entry spinlocks; see stats.c's header.
 *	- "throttle_jobs hints" and its hash of queues (ready_hint.c): tranche
 *	  "throttle_jobs_hints", one LWLock over all of it.
 *	- "throttle_jobs workers" (below): the slots of each database's
 *	  maintenance worker (dbworker.c) and executors (executor.c), and the
 *	  out-of-slots warning flag; every field under tj_workers->mutex, a
 *	  spinlock held only to copy or set a few fields.  A crash restart
 *	  initialises it all again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "throttle_jobs.h"

TJWorkerShared *tj_workers = NULL;

static Size
workers_shmem_size(void)
{
	return MAXALIGN(sizeof(TJWorkerShared));
}

static void
workers_shmem_init(void)
{
	bool		found;

	tj_workers = ShmemInitStruct("throttle_jobs workers", sizeof(TJWorkerShared), &found);
	if (!found)
	{
		memset(tj_workers, 0, sizeof(TJWorkerShared));
		SpinLockInit(&tj_workers->mutex);
	}
}

/* A part of the library that keeps a segment in shared memory */
typedef struct ShmemPart
{
	Size		(*size) (void);
	const char *tranche;		/* LWLock tranche to request; NULL: none */
	int			nlocks;
	void		(*init) (void);	/* called under AddinShmemInitLock */
} ShmemPart;

static const ShmemPart parts[] = {
	{tj_stats_shmem_size, "throttle_jobs_stats", 1, tj_stats_shmem_init},
	{workers_shmem_size, NULL, 0, workers_shmem_init},
	{tj_hint_shmem_size, "throttle_jobs_hints", 1, tj_hint_shmem_init},
};

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	for (int i = 0; i < lengthof(parts); i++)
	{
		RequestAddinShmemSpace(parts[i].size());
		if (parts[i].tranche != NULL)
			RequestNamedLWLockTranche(parts[i].tranche, parts[i].nlocks);
	}
}

static void
shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (int i = 0; i < lengthof(parts); i++)
		parts[i].init();
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries is processed. */
void
tj_shmem_register(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
}

/*
 * The slot of database dboid, or NULL; with create, a free one is taken.
 * The caller holds tj_workers->mutex.
 */
TJDatabaseSlot *
tj_db_slot(Oid dboid, bool create)
{
	TJDatabaseSlot *free_slot = NULL;

	for (int i = 0; i < TJ_MAX_DATABASES; i++)
	{
		TJDatabaseSlot *slot = &tj_workers->db[i];
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
	memset(free_slot, 0, sizeof(TJDatabaseSlot));
	free_slot->dboid = dboid;
	return free_slot;
}
