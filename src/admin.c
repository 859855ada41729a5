/*-------------------------------------------------------------------------
 *
 * admin.c
 *		retry_now(id): an admin's move of one live job, for those who manage
 *		its queue (cancel is in cancel.c, the dead letters' moves in
 *		dead_letters.c); and the wake-ups of queues with notify on.
 *
 * retry_now(id) makes a job that waits for its run_at (scheduled, or in
 * backoff after a failure) due at once; a job held back by a limit keeps
 * waiting for its key.
 *
 * Wake-ups: set_queue_notify(queue, true) makes every enqueue of a new job
 * into the queue NOTIFY the queue's channel (notify_channel(queue), kept in
 * queue_notify) at commit, with an empty payload, so a transaction sends
 * one notification per queue however many jobs it adds.  Each backend
 * keeps the list of such queues (a few ids) and forgets it when
 * queue_notify changes (a relcache invalidation that set_queue_notify
 * sends), so that enqueues into other queues pay nothing.  Jobs that become
 * ready later (due at their run_at, or released from throttling) are
 * notified by maintain(): tj_notify_due.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_retry_now);
PG_FUNCTION_INFO_V1(throttle_jobs_set_queue_notify);

/* The queues that notify, as this backend last read them */
typedef struct NotifyQueue
{
	int32		queue_id;
	char	   *channel;
} NotifyQueue;

static TJTableCache notifying = TJ_TABLE_CACHE("queue_notify");
static int	notify_n = 0;
static NotifyQueue *notify_queues = NULL;	/* in TopMemoryContext */

static TJStatement notify_list_stmt = {
	"SELECT n.queue_id, n.channel FROM throttle_jobs.queue_notify n", 0, {0}
};

static TJStatement notify_on_stmt = {
	"INSERT INTO throttle_jobs.queue_notify (queue_id, channel)"
	" VALUES ($1, throttle_jobs.notify_channel($2))"
	" ON CONFLICT (queue_id) DO NOTHING",
	2, {INT4OID, TEXTOID}
};

static TJStatement notify_off_stmt = {
	"DELETE FROM throttle_jobs.queue_notify n WHERE n.queue_id = $1",
	1, {INT4OID}
};

/* Locks job $1 if it waits for its run_at, later than $2 */
static TJStatement waiting_stmt = {
	"SELECT j.queue_id, j.run_at, j.attempt FROM throttle_jobs.job j"
	" WHERE j.id = $1 AND j.state = 'available' AND j.run_at > $2"
	" FOR UPDATE",
	2, {INT8OID, TIMESTAMPTZOID}
};

static TJStatement run_now_stmt = {
	"UPDATE throttle_jobs.job j SET run_at = $2 WHERE j.id = $1",
	2, {INT8OID, TIMESTAMPTZOID}
};

/* retry_now(id) returns boolean: true if a waiting job was made due now */
Datum
throttle_jobs_retry_now(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	TJCaller	caller;
	bool		moved;

	tj_require_not_null(fcinfo, 0, "job id");
	values[0] = PG_GETARG_DATUM(0);
	values[1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	tj_caller_enter(fcinfo, &caller);
	SPI_connect();
	tj_check_job(caller.role, PG_GETARG_DATUM(0), TJ_PRIV_MANAGE);
	moved = tj_execute(&waiting_stmt, values, NULL, false, 0, SPI_OK_SELECT) > 0;
	if (moved)
	{
		bool		isnull;
		int32		queue_id = DatumGetInt32(tj_get_datum(0, 1, &isnull));
		TimestampTz old_run_at = DatumGetTimestampTz(tj_get_datum(0, 2, &isnull));
		int32		attempt = DatumGetInt32(tj_get_datum(0, 3, &isnull));

		SPI_freetuptable(SPI_tuptable);
		tj_execute(&run_now_stmt, values, NULL, false, 0, SPI_OK_UPDATE);
		tj_stats_run_now(queue_id, old_run_at, attempt);
		/* executors of a handler queue sleep until woken */
		tj_wake_executors_at_commit();
	}
	else
		tj_hint_note_job(values[0]);	/* it may be locked, and ready */
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_BOOL(moved);
}

/* ---- wake-ups ---- */

/* throttle_jobs.queue_notify, or InvalidOid before the 0.2.0 schema */
/* Reads the queues that notify, unless known.  Connected to SPI. */
static void
load_notify(void)
{
	uint64		n;

	if (tj_table_cache_valid(&notifying))
		return;
	for (int i = 0; i < notify_n; i++)
		pfree(notify_queues[i].channel);
	notify_n = 0;
	if (!OidIsValid(tj_table_cache_relid(&notifying)))
		return;					/* a 0.1.0 schema: nothing notifies; look again next time */
	n = tj_execute(&notify_list_stmt, NULL, NULL, true, 0, SPI_OK_SELECT);
	if (notify_queues != NULL)
		pfree(notify_queues);
	notify_queues = MemoryContextAlloc(TopMemoryContext, sizeof(NotifyQueue) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		notify_queues[i].queue_id = DatumGetInt32(tj_get_datum(i, 1, &isnull));
		notify_queues[i].channel =
			MemoryContextStrdup(TopMemoryContext,
								SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
	}
	notify_n = (int) n;
	SPI_freetuptable(SPI_tuptable);
	tj_table_cache_loaded(&notifying);
}

/*
 * A new job went into queue queue_id in this transaction: if the queue
 * notifies, its channel is notified at commit (NOTIFY folds repeats within
 * a transaction into one).  Connected to SPI.
 */
void
tj_notify_enqueued(int32 queue_id)
{
	load_notify();
	for (int i = 0; i < notify_n; i++)
		if (notify_queues[i].queue_id == queue_id)
		{
			Async_Notify(notify_queues[i].channel, "");
			return;
		}
}

/*
 * The queues that notify, locked for this pass (a concurrent pass skips
 * them), with the channel and up to when they were notified; their
 * notified_until moves on to $1; those with a job that became ready in
 * (notified_until, $1] come back.  A job became ready at its run_at when
 * that is after its enqueue (scheduled, retried, snoozed, or made due by
 * retry_now), or at its release from throttling (released_at), whichever
 * is later: job_became_ready_idx, one probe per queue.
 */
static TJStatement notify_due_stmt = {
	"WITH l AS MATERIALIZED ("
	"  SELECT n.queue_id, n.channel, n.notified_until FROM throttle_jobs.queue_notify n"
	"   WHERE n.notified_until < $1 FOR UPDATE SKIP LOCKED),"
	" u AS (UPDATE throttle_jobs.queue_notify n SET notified_until = $1"
	"        FROM l WHERE n.queue_id = l.queue_id)"
	" SELECT l.channel FROM l CROSS JOIN LATERAL ("
	"  SELECT FROM throttle_jobs.job j"
	"   WHERE j.queue_id = l.queue_id AND j.state = 'available'"
	"     AND (j.run_at > j.enqueued_at OR j.released_at IS NOT NULL)"
	"     AND GREATEST(j.run_at, j.released_at) > l.notified_until"
	"     AND GREATEST(j.run_at, j.released_at) <= $1"
	"   LIMIT 1) d",
	1, {TIMESTAMPTZOID}
};

/*
 * maintain(): notifies, at commit, each queue that notifies and has a ready
 * job that became ready since the last pass (see notify_due_stmt); the
 * pass itself has reaped leases and released throttled jobs by then.
 * Returns how many queues it notified.  Connected to SPI.
 */
int64
tj_notify_due(TimestampTz now)
{
	Datum		values[1];
	uint64		n;

	load_notify();
	if (notify_n == 0)
		return 0;
	values[0] = TimestampTzGetDatum(now);
	n = tj_execute(&notify_due_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		char	   *channel = TextDatumGetCString(tj_get_datum(i, 1, &isnull));

		Async_Notify(channel, "");
	}
	SPI_freetuptable(SPI_tuptable);
	return (int64) n;
}

/* set_queue_notify(queue, enabled) returns void */
Datum
throttle_jobs_set_queue_notify(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	TJCaller	caller;
	TJQueue		queue;

	tj_require_not_null(fcinfo, 0, "queue name");
	tj_require_not_null(fcinfo, 1, "enabled");
	tj_manage_queue(fcinfo, &caller, &queue);
	values[0] = Int32GetDatum(queue.id);
	values[1] = PG_GETARG_DATUM(0);
	if (PG_GETARG_BOOL(1))
		tj_execute(&notify_on_stmt, values, NULL, false, 0, SPI_OK_INSERT);
	else
		tj_execute(&notify_off_stmt, values, NULL, false, 0, SPI_OK_DELETE);
	/* every backend (this one at once) reads the list again */
	tj_table_cache_changed(&notifying);
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_VOID();
}
