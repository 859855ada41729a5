/*-------------------------------------------------------------------------
 *
 * queue_cap.c
 *		set_queue_max_running(queue, n): a cap on the jobs of a whole queue
 *		that run at once, exact like a key's concurrency cap (also set by
 *		create_queue(..., max_running => n), through the same functions).
 *
 * The caps live in queue_max_running (one row per capped queue).  A
 * reservation from a capped queue takes the queue's mutex (a database
 * object lock on queue_max_running and the queue's id, to transaction end)
 * without waiting, counts the queue's running jobs with the latest snapshot
 * and reserves at most the cap minus that count.  When another transaction
 * holds the mutex, the reservation reserves nothing, as for a busy key: the
 * holder's jobs count only once it has committed, and it holds the mutex
 * until then (a reservation that finds the queue full gives its hold back
 * at once).  A completion needs nothing: the next reservation counts one
 * running job fewer.
 *
 * Each backend keeps the names of the capped queues (a few) and forgets
 * them when queue_max_running changes (a relcache invalidation that
 * set_queue_max_running sends), so that reservations from other queues
 * pay nothing.  The list only says where to look: the cap itself is read
 * again under the mutex (a queue dropped since is simply not found).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_set_queue_max_running);

static TJTableCache caps = TJ_TABLE_CACHE("queue_max_running");
static int	cap_n = 0;
static char **cap_names = NULL;	/* in TopMemoryContext */

static TJStatement cap_list_stmt = {
	"SELECT q.name FROM throttle_jobs.queue_max_running m"
	"  JOIN throttle_jobs.queue q ON q.id = m.queue_id", 0, {0}
};

static TJStatement cap_queue_stmt = {
	"SELECT m.queue_id FROM throttle_jobs.queue_max_running m"
	"  JOIN throttle_jobs.queue q ON q.id = m.queue_id WHERE q.name = $1",
	1, {TEXTOID}, NULL, TJ_GENERIC
};

/* The cap of queue $1 and its running jobs (up to the cap), under the mutex */
static TJStatement cap_room_stmt = {
	"SELECT m.max_running,"
	"       (SELECT pg_catalog.count(*) FROM (SELECT 1 FROM throttle_jobs.job j"
	"         WHERE j.queue_id = $1 AND j.state = 'running' LIMIT m.max_running) s)"
	"  FROM throttle_jobs.queue_max_running m WHERE m.queue_id = $1",
	1, {INT4OID}, NULL, TJ_GENERIC
};

static TJStatement cap_set_stmt = {
	"INSERT INTO throttle_jobs.queue_max_running (queue_id, max_running) VALUES ($1, $2)"
	" ON CONFLICT (queue_id) DO UPDATE SET max_running = excluded.max_running",
	2, {INT4OID, INT4OID}
};

static TJStatement cap_clear_stmt = {
	"DELETE FROM throttle_jobs.queue_max_running m WHERE m.queue_id = $1",
	1, {INT4OID}
};

/* throttle_jobs.queue_max_running, or InvalidOid before the 0.2.0 schema */
/* Reads the names of the capped queues, unless known.  Connected to SPI. */
static void
load_caps(void)
{
	uint64		n;

	if (tj_table_cache_valid(&caps))
		return;
	for (int i = 0; i < cap_n; i++)
		pfree(cap_names[i]);
	cap_n = 0;
	if (!OidIsValid(tj_table_cache_relid(&caps)))
		return;					/* a 0.1.0 schema: no caps; look again next time */
	n = tj_execute(&cap_list_stmt, NULL, NULL, true, 0, SPI_OK_SELECT);
	if (cap_names != NULL)
		pfree(cap_names);
	cap_names = MemoryContextAlloc(TopMemoryContext, sizeof(char *) * (n + 1));
	for (uint64 i = 0; i < n; i++)
		cap_names[i] = MemoryContextStrdup(TopMemoryContext,
										   SPI_getvalue(SPI_tuptable->vals[i],
														SPI_tuptable->tupdesc, 1));
	cap_n = (int) n;
	SPI_freetuptable(SPI_tuptable);
	tj_table_cache_loaded(&caps);
}

/*
 * How many of max_jobs a reservation from the queue may take: max_jobs
 * when the queue has no cap; else at most the cap minus its running jobs,
 * and 0 when another transaction holds the queue's mutex.  Takes the mutex
 * (to transaction end) when the queue has a cap.  Connected to SPI.
 */
int32
tj_queue_cap_room(text *queue_name, int32 max_jobs)
{
	char	   *name;
	bool		capped = false;
	Datum		values[1];
	bool		isnull;
	int32		queue_id;
	int64		cap;
	int64		running;

	load_caps();
	if (cap_n == 0)
		return max_jobs;
	name = text_to_cstring(queue_name);
	for (int i = 0; i < cap_n && !capped; i++)
		capped = strcmp(cap_names[i], name) == 0;
	pfree(name);
	if (!capped)
		return max_jobs;

	values[0] = PointerGetDatum(queue_name);
	if (tj_execute(&cap_queue_stmt, values, NULL, false, 0, SPI_OK_SELECT) == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return max_jobs;
	}
	queue_id = DatumGetInt32(tj_get_datum(0, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);

	/* another transaction is reserving from the queue right now: skip it */
	if (!ConditionalLockDatabaseObject(tj_table_cache_relid(&caps), (Oid) queue_id, 0, ExclusiveLock))
		return 0;

	values[0] = Int32GetDatum(queue_id);
	if (tj_execute_latest(&cap_room_stmt, values, NULL, SPI_OK_SELECT) == 0)
	{
		/* the cap was cleared since */
		SPI_freetuptable(SPI_tuptable);
		return max_jobs;
	}
	cap = DatumGetInt32(tj_get_datum(0, 1, &isnull));
	running = DatumGetInt64(tj_get_datum(0, 2, &isnull));
	SPI_freetuptable(SPI_tuptable);
	if (running >= cap)
	{
		/*
		 * Full: this hold takes nothing, so it is given back at once and
		 * other reservations need not wait for this transaction's end to
		 * find a slot that frees up.  A hold taken earlier in the
		 * transaction (by a reservation that took jobs) stays.
		 */
		UnlockDatabaseObject(tj_table_cache_relid(&caps), (Oid) queue_id, 0, ExclusiveLock);
		return 0;
	}
	return (int32) Min((int64) max_jobs, cap - running);
}

/* Refuses a negative cap (22023); 0 means no cap. */
void
tj_check_queue_max_running(int32 max_running)
{
	if (max_running < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_running must not be negative, not %d", max_running),
				 errhint("Pass a positive number of jobs, or NULL or 0 to remove the cap.")));
}

/*
 * Sets (max_running > 0) or clears (0) the cap of the queue called
 * queue_name, for `role`, who must manage the queue.  The caller has
 * checked max_running (tj_check_queue_max_running) and runs as the
 * extension's owner (tj_caller_enter); not connected to SPI.
 */
void
tj_store_queue_max_running(Oid role, text *queue_name, int32 max_running)
{
	Datum		values[2];
	TJQueue		queue;

	SPI_connect();
	tj_check_queue(role, queue_name, TJ_PRIV_MANAGE);
	tj_lookup_queue(queue_name, &queue);
	values[0] = Int32GetDatum(queue.id);
	values[1] = Int32GetDatum(max_running);
	if (max_running > 0)
		tj_execute(&cap_set_stmt, values, NULL, false, 0, SPI_OK_INSERT);
	else
		tj_execute(&cap_clear_stmt, values, NULL, false, 0, SPI_OK_DELETE);
	/* every backend (this one at once) reads the list again */
	tj_table_cache_changed(&caps);
	SPI_finish();
}

/* set_queue_max_running(queue, max_running) returns void: NULL or 0 clears */
Datum
throttle_jobs_set_queue_max_running(PG_FUNCTION_ARGS)
{
	TJCaller	caller;
	int32		max_running = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);

	tj_require_not_null(fcinfo, 0, "queue name");
	tj_check_queue_max_running(max_running);
	tj_caller_enter(fcinfo, &caller);
	tj_store_queue_max_running(caller.role, PG_GETARG_TEXT_PP(0), max_running);
	tj_caller_leave(&caller);
	PG_RETURN_VOID();
}
