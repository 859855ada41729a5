/*-------------------------------------------------------------------------
 *
 * stats.c
 *		Statistics: per-queue event counters, depth gauges, time windows and
 *		wait/run time histograms in shared memory, per-key throttling
 *		and try_acquire/acquire counters, and maintain()'s part (recount,
 *		per-minute rollup).
 *
 * Shared memory (the segment "throttle_jobs stats", set up through
 * shmem.c) exists only when the library is preloaded
 * (shared_preload_libraries); without it every tj_stats_* hook is a no-op
 * and the SQL views fall back to what maintain() writes into tables.
 *
 * Transactions.  Hooks never touch shared memory: they add to deltas kept
 * by the backend, tagged with the (sub)transaction nesting level.  At
 * commit the deltas are applied to shared memory; at abort (or the abort of
 * a subtransaction) the affected deltas are thrown away.  So a rolled-back
 * reservation counts nothing, as pgstat does with its pending entries.
 * The one exception: the outcomes of try_acquire/acquire calls
 * (tj_stats_acquire) count calls, not state, and are added to shared
 * memory when the call returns, whether its transaction commits or not (a
 * refusal is often followed by a rollback).
 *
 * Locking.
 *	- TJStatsShared.lock (LWLock, tranche "throttle_jobs_stats") protects the
 *	  two hash tables' membership: shared mode to find an entry and update
 *	  it, exclusive mode to add or remove entries, to reset, and for the
 *	  recount and rollup bookkeeping (based_at, rolled_minute).
 *	- Each entry's spinlock (mutex) protects its counters; readers copy an
 *	  entry out at once under it and compute outside.
 *
 * Size.  The tables hold at most throttle_jobs.stats_max_queues and
 * stats_max_keys entries (all databases together), the number shared
 * memory was sized for: an entry is added only while the table holds fewer
 * (checked under the exclusive lock).  A shared hash table would otherwise
 * take its extra entries from the server's free shared memory, which the
 * lock manager and other extensions need.  Counts that find no entry and
 * no room are dropped and counted in queues_full / keys_full
 * (stats_state()'s queues_dropped and keys_dropped) until reset_stats().
 *
 * Depth gauges: waiting (available + scheduled + retrying + throttled),
 * running and dead are kept by deltas.  Waiting jobs whose run_at lies in
 * the future are also added to a ring of 30-second slots by run_at (two
 * hours ahead; further out they are counted in `far`), so a reader splits
 * waiting into scheduled, retrying and available without looking at the
 * jobs.  After a restart or reset_stats() the gauges are unknown until
 * maintain() counts the jobs once (tj_stats_maintain).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_stats_queues);
PG_FUNCTION_INFO_V1(throttle_jobs_stats_histograms);
PG_FUNCTION_INFO_V1(throttle_jobs_stats_keys);
PG_FUNCTION_INFO_V1(throttle_jobs_stats_key_acquires);
PG_FUNCTION_INFO_V1(throttle_jobs_stats_state);
PG_FUNCTION_INFO_V1(throttle_jobs_stats_note);
PG_FUNCTION_INFO_V1(throttle_jobs_stats_reset);
PG_FUNCTION_INFO_V1(throttle_jobs_stats_forget);


/* Gauges kept by deltas */
#define G_WAITING	0
#define G_RUNNING	1
#define G_DEAD		2
#define G_COUNT		3
#define G_NONE		(-1)		/* a job enters or leaves the counted states */

/* Future ring: waiting jobs by run_at */
#define FUT_USECS	((int64) 30 * USECS_PER_SEC)
#define FUT_SLOTS	240			/* two hours */
#define F_SCHEDULED 0
#define F_RETRYING	1
#define F_KIND(attempt) ((attempt) > 0 ? F_RETRYING : F_SCHEDULED)

/* Window ring: recent events by commit time */
#define WIN_USECS	((int64) 10 * USECS_PER_SEC)
#define WIN_SLOTS	96			/* 16 minutes */
#define WIN_PER_MINUTE 6
#define W_ENQUEUED	0
#define W_RESERVED	1
#define W_COMPLETED 2
#define W_FAILED	3
#define W_DEAD		4
#define W_THROTTLED 5
#define W_COUNT		6

/* Histograms: bucket i holds values up to 1 ms * 2^(i/2); the last, more */
#define H_WAIT		0
#define H_RUN		1
#define H_BUCKETS	57			/* 56 bounded (up to ~52 hours) + overflow */

/* Queue ids are per database; queue_id 0 is the database's own entry */
typedef struct TJQueueKey
{
	Oid			dbid;
	int32		queue_id;
} TJQueueKey;

typedef struct TJQueueStats
{
	TJQueueKey	k;				/* hash key */
	slock_t		mutex;
	TimestampTz reset_at;
	TimestampTz based_at;		/* database entry: last recount; 0: gauges unknown */
	int64		rolled_minute;	/* database entry: last minute rolled up */
	int64		events[TJ_EV_COUNT];
	int64		gauges[G_COUNT];
	int64		far[2];			/* future jobs beyond the ring */
	int64		far_min_slot;	/* earliest of them; 0: none */
	int32		fut_tag[FUT_SLOTS];
	int32		fut[2][FUT_SLOTS];
	int32		win_tag[WIN_SLOTS];
	int32		win[W_COUNT][WIN_SLOTS];
	int64		hist[2][H_BUCKETS];
	double		hist_sum[2];	/* seconds */
	int64		hist_max[2];	/* usecs */
} TJQueueStats;

typedef struct TJKeyKey
{
	Oid			dbid;
	char		key[TJ_MAX_KEY_LEN + 1];
} TJKeyKey;

typedef struct TJKeyStats
{
	TJKeyKey	k;				/* hash key */
	slock_t		mutex;
	int64		throttled[2];	/* 0: cap, 1: rate */
	TimestampTz last_throttled_at;
	TimestampTz throttled_since;	/* throttled since, without an admission; 0: not */
	TimestampTz last_admitted_at;
	int64		acquires[TJ_ACQ_COUNT];	/* try_acquire/acquire outcomes */
} TJKeyStats;

typedef struct TJStatsShared
{
	LWLock	   *lock;
	TimestampTz started_at;
	int64		queues_full;	/* events lost: no free queue entry */
	int64		keys_full;
} TJStatsShared;

static TJStatsShared *tj_stats = NULL;
static HTAB *queue_hash = NULL;
static HTAB *key_hash = NULL;

/* ---- backend-local pending deltas ---- */

typedef struct PendingQueue
{
	int32		queue_id;
	int			level;
	bool		forget;			/* the queue was dropped */
	int64		events[TJ_EV_COUNT];
	int64		gauges[G_COUNT];
	int32		hist[2][H_BUCKETS];
	double		hist_sum[2];
	int64		hist_max[2];
} PendingQueue;

typedef struct PendingFuture
{
	int32		queue_id;
	int			level;
	int64		slot;
	int			kind;			/* F_SCHEDULED or F_RETRYING */
	int64		delta;
} PendingFuture;

typedef struct PendingKey
{
	char		key[TJ_MAX_KEY_LEN + 1];
	int			level;
	int64		throttled[2];
	bool		admitted;
} PendingKey;

typedef struct PendingArray
{
	int			n;
	int			size;
	Size		elem;
	void	   *items;
} PendingArray;

static PendingArray pending_queues = {0, 0, sizeof(PendingQueue), NULL};
static PendingArray pending_futures = {0, 0, sizeof(PendingFuture), NULL};
static PendingArray pending_keys = {0, 0, sizeof(PendingKey), NULL};
static MemoryContext pending_cxt = NULL;
static bool callbacks_registered = false;

#define PITEM(arr, type, i) (&((type *) (arr)->items)[i])

/* ---- shared memory (shmem.c calls these) ---- */

Size
tj_stats_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(TJStatsShared));

	/* (the queues' entries, and one per database) */
	size = add_size(size, hash_estimate_size(tj_stats_max_queues, sizeof(TJQueueStats)));
	size = add_size(size, hash_estimate_size(tj_stats_max_keys, sizeof(TJKeyStats)));
	return size;
}

/* Creates the statistics segment, or attaches to it; under AddinShmemInitLock. */
void
tj_stats_shmem_init(void)
{
	bool		found;
	HASHCTL		info;

	tj_stats = ShmemInitStruct("throttle_jobs stats", sizeof(TJStatsShared), &found);
	if (!found)
	{
		memset(tj_stats, 0, sizeof(TJStatsShared));
		tj_stats->lock = &(GetNamedLWLockTranche("throttle_jobs_stats"))->lock;
		tj_stats->started_at = GetCurrentTimestamp();
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(TJQueueKey);
	info.entrysize = sizeof(TJQueueStats);
	queue_hash = ShmemInitHash("throttle_jobs queue stats", tj_stats_max_queues,
							   tj_stats_max_queues, &info, HASH_ELEM | HASH_BLOBS);
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(TJKeyKey);
	info.entrysize = sizeof(TJKeyStats);
	key_hash = ShmemInitHash("throttle_jobs key stats", tj_stats_max_keys,
							 tj_stats_max_keys, &info, HASH_ELEM | HASH_BLOBS);
}

/* ---- slots and buckets ---- */

static int64
floor_div(int64 a, int64 b)
{
	return a >= 0 ? a / b : -((-a + b - 1) / b);
}

static int64
fut_slot(TimestampTz t)
{
	return floor_div(t, FUT_USECS);
}

static int64
win_slot(TimestampTz t)
{
	return floor_div(t, WIN_USECS);
}

static int
hist_bucket(int64 usecs)
{
	double		b;

	if (usecs <= 1000)
		return 0;
	b = ceil(2.0 * log2((double) usecs / 1000.0) - 1e-9);
	if (b >= H_BUCKETS - 1)
		return H_BUCKETS - 1;
	return (int) b;
}

/* Upper bound of bucket i in seconds (i < H_BUCKETS - 1) */
static double
hist_bound(int i)
{
	return 0.001 * pow(2.0, i / 2.0);
}

/* ---- pending deltas ---- */

static TJKeyStats *key_entry(const char *key, bool create);
static void stats_xact_callback(XactEvent event, void *arg);
static void stats_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
								   SubTransactionId parentSubid, void *arg);

static void *
pending_add(PendingArray *arr)
{
	void	   *item;

	if (!callbacks_registered)
	{
		RegisterXactCallback(stats_xact_callback, NULL);
		RegisterSubXactCallback(stats_subxact_callback, NULL);
		callbacks_registered = true;
	}
	if (pending_cxt == NULL)
		pending_cxt = AllocSetContextCreate(TopMemoryContext, "throttle_jobs pending stats",
											ALLOCSET_SMALL_SIZES);
	if (arr->n == arr->size)
	{
		int			size = Max(8, arr->size * 2);

		arr->items = arr->items ? repalloc(arr->items, arr->elem * size)
			: MemoryContextAlloc(pending_cxt, arr->elem * size);
		arr->size = size;
	}
	item = (char *) arr->items + arr->elem * arr->n;
	memset(item, 0, arr->elem);
	arr->n++;
	return item;
}

static PendingQueue *
pending_queue(int32 queue_id)
{
	int			level = GetCurrentTransactionNestLevel();
	PendingQueue *p;

	for (int i = pending_queues.n - 1; i >= 0; i--)
	{
		p = PITEM(&pending_queues, PendingQueue, i);
		if (p->queue_id == queue_id && p->level == level)
			return p;
	}
	p = pending_add(&pending_queues);
	p->queue_id = queue_id;
	p->level = level;
	return p;
}

static void
pending_future(int32 queue_id, TimestampTz run_at, int kind, int64 delta)
{
	int			level = GetCurrentTransactionNestLevel();
	int64		slot = fut_slot(run_at);
	PendingFuture *f;

	for (int i = pending_futures.n - 1; i >= 0; i--)
	{
		f = PITEM(&pending_futures, PendingFuture, i);
		if (f->queue_id == queue_id && f->level == level && f->slot == slot && f->kind == kind)
		{
			f->delta += delta;
			return;
		}
	}
	f = pending_add(&pending_futures);
	f->queue_id = queue_id;
	f->level = level;
	f->slot = slot;
	f->kind = kind;
	f->delta = delta;
}

static PendingKey *
pending_key(const char *key)
{
	int			level = GetCurrentTransactionNestLevel();
	PendingKey *k;

	for (int i = pending_keys.n - 1; i >= 0; i--)
	{
		k = PITEM(&pending_keys, PendingKey, i);
		if (k->level == level && strcmp(k->key, key) == 0)
			return k;
	}
	k = pending_add(&pending_keys);
	strlcpy(k->key, key, sizeof(k->key));
	k->level = level;
	return k;
}

static void
pending_observe(PendingQueue *p, int kind, int64 usecs)
{
	if (usecs < 0)
		usecs = 0;
	p->hist[kind][hist_bucket(usecs)]++;
	p->hist_sum[kind] += (double) usecs / USECS_PER_SEC;
	p->hist_max[kind] = Max(p->hist_max[kind], usecs);
}

static void
pending_clear(void)
{
	pending_queues.n = 0;
	pending_futures.n = 0;
	pending_keys.n = 0;
}

/*
 * One transition of n jobs of a queue: counts event ev (TJ_EV_COUNT: none)
 * and moves the jobs from gauge `from` to gauge `to` (G_NONE: they come
 * from, or go to, no gauge).  Returns the queue's pending deltas.  The
 * caller has checked that statistics are in shared memory.
 */
static PendingQueue *
pending_move(int32 queue_id, int ev, int from, int to, int64 n)
{
	PendingQueue *p = pending_queue(queue_id);

	if (ev != TJ_EV_COUNT)
		p->events[ev] += n;
	if (from != G_NONE)
		p->gauges[from] -= n;
	if (to != G_NONE)
		p->gauges[to] += n;
	return p;
}

/* ---- hooks called by the job transitions ---- */

void
tj_stats_count(int32 queue_id, TJEvent ev, int64 n)
{
	if (tj_stats == NULL)
		return;
	(void) pending_move(queue_id, ev, G_NONE, G_NONE, n);
}

void
tj_stats_enqueued(int32 queue_id, TimestampTz run_at, const char *blocked_key,
				  TimestampTz blocked_until)
{
	PendingQueue *p;

	if (tj_stats == NULL)
		return;
	p = pending_move(queue_id, TJ_EV_ENQUEUED, G_NONE, G_WAITING, 1);
	pending_future(queue_id, run_at, F_SCHEDULED, 1);
	if (blocked_key)
	{
		int			rate = blocked_until != 0;

		p->events[rate ? TJ_EV_THROTTLED_RATE : TJ_EV_THROTTLED_CAP]++;
		pending_key(blocked_key)->throttled[rate]++;
	}
}

void
tj_stats_reserved(int32 queue_id, TimestampTz run_at, TimestampTz at,
				  const char *ckey, const char *rkey)
{
	if (tj_stats == NULL)
		return;
	pending_observe(pending_move(queue_id, TJ_EV_RESERVED, G_WAITING, G_RUNNING, 1),
					H_WAIT, at - run_at);
	if (ckey)
		pending_key(ckey)->admitted = true;
	if (rkey && (ckey == NULL || strcmp(ckey, rkey) != 0))
		pending_key(rkey)->admitted = true;
}

/*
 * One call of try_acquire, acquire or try_acquire_session on a key that a
 * limit governs ended with `ev`.  Added to shared memory at once (see the
 * file header), under the key's entry, made if missing and there is room.
 */
void
tj_stats_acquire(const char *key, TJAcquireEvent ev)
{
	TJKeyStats *e;

	if (tj_stats == NULL)
		return;
	LWLockAcquire(tj_stats->lock, LW_SHARED);
	e = key_entry(key, false);
	if (e == NULL)
	{
		LWLockRelease(tj_stats->lock);
		LWLockAcquire(tj_stats->lock, LW_EXCLUSIVE);
		e = key_entry(key, true);
		if (e == NULL)
		{
			tj_stats->keys_full++;
			LWLockRelease(tj_stats->lock);
			return;
		}
	}
	SpinLockAcquire(&e->mutex);
	e->acquires[ev]++;
	SpinLockRelease(&e->mutex);
	LWLockRelease(tj_stats->lock);
}

/*
 * Jobs parked by a blocked key: column 1 of each of the nrows rows of
 * `rows` is the queue id of one parked job.
 */
void
tj_stats_throttled_rows(const char *key, bool cap, SPITupleTable *rows, uint64 nrows)
{
	if (tj_stats == NULL || nrows == 0)
		return;
	for (uint64 i = 0; i < nrows; i++)
	{
		bool		isnull;
		int32		qid = DatumGetInt32(SPI_getbinval(rows->vals[i], rows->tupdesc, 1, &isnull));

		(void) pending_move(qid, cap ? TJ_EV_THROTTLED_CAP : TJ_EV_THROTTLED_RATE,
							G_NONE, G_NONE, 1);
	}
	pending_key(key)->throttled[cap ? 0 : 1] += nrows;
}

void
tj_stats_completed(int32 queue_id, TimestampTz reserved_at, TimestampTz now)
{
	if (tj_stats == NULL)
		return;
	pending_observe(pending_move(queue_id, TJ_EV_COMPLETED, G_RUNNING, G_NONE, 1),
					H_RUN, now - reserved_at);
}

void
tj_stats_failed(int32 queue_id, bool dead, TimestampTz run_at)
{
	if (tj_stats == NULL)
		return;
	(void) pending_move(queue_id, TJ_EV_FAILED, G_NONE, G_NONE, 1);
	if (dead)
		(void) pending_move(queue_id, TJ_EV_DEAD_LETTERED, G_RUNNING, G_DEAD, 1);
	else
	{
		(void) pending_move(queue_id, TJ_EV_RETRIED, G_RUNNING, G_WAITING, 1);
		pending_future(queue_id, run_at, F_RETRYING, 1);
	}
}

void
tj_stats_snoozed(int32 queue_id, TimestampTz run_at, int32 attempt)
{
	if (tj_stats == NULL)
		return;
	(void) pending_move(queue_id, TJ_EV_SNOOZED, G_RUNNING, G_WAITING, 1);
	pending_future(queue_id, run_at, F_KIND(attempt), 1);
}

/* A job was cancelled (admin.c): a running one, or a waiting one due at run_at */
void
tj_stats_cancelled(int32 queue_id, bool running, TimestampTz run_at, int32 attempt)
{
	if (tj_stats == NULL)
		return;
	(void) pending_move(queue_id, TJ_EV_CANCELLED, running ? G_RUNNING : G_WAITING, G_NONE, 1);
	if (!running)
		pending_future(queue_id, run_at, F_KIND(attempt), -1);
}

/* A waiting job due at old_run_at was made due now (retry_now, admin.c) */
void
tj_stats_run_now(int32 queue_id, TimestampTz old_run_at, int32 attempt)
{
	if (tj_stats == NULL)
		return;
	pending_future(queue_id, old_run_at, F_KIND(attempt), -1);
}

/* A waiting job (not running) went to the dead letters without an attempt */
void
tj_stats_dead_lettered_waiting(int32 queue_id, TimestampTz run_at, int32 attempt)
{
	if (tj_stats == NULL)
		return;
	(void) pending_move(queue_id, TJ_EV_DEAD_LETTERED, G_WAITING, G_DEAD, 1);
	pending_future(queue_id, run_at, F_KIND(attempt), -1);
}

void
tj_stats_dead_removed(int32 queue_id, int64 n)
{
	if (tj_stats == NULL)
		return;
	(void) pending_move(queue_id, TJ_EV_COUNT, G_DEAD, G_NONE, n);
}

/* n dead jobs went back to the live table (dead_letters.c) */
void
tj_stats_dead_retried(int32 queue_id, int64 n)
{
	if (tj_stats == NULL)
		return;
	(void) pending_move(queue_id, TJ_EV_COUNT, G_DEAD, G_WAITING, n);
}

/* A queue was dropped: its entry goes at commit */
void
tj_stats_queue_dropped(int32 queue_id)
{
	if (tj_stats == NULL)
		return;
	pending_queue(queue_id)->forget = true;
}

/*
 * _stats_note(queue_id, what, n, run_at, attempt): the 0.1.0 script's
 * SQL-written transitions (cancel, retry_dead, purge_dead, drop_queue)
 * report here in a database not yet updated; 0.2.0 makes them C, which
 * calls the hooks above directly.
 */
Datum
throttle_jobs_stats_note(PG_FUNCTION_ARGS)
{
	int32		qid;
	char	   *what;
	int64		n;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue_id, what and n must not be null")));
	qid = PG_GETARG_INT32(0);
	what = text_to_cstring(PG_GETARG_TEXT_PP(1));
	n = PG_GETARG_INT64(2);
	if (strcmp(what, "cancelled") == 0)
	{
		/* (0.1.0's cancel reports one waiting job at a time) */
		for (int64 i = 0; i < n; i++)
			tj_stats_cancelled(qid, false, PG_ARGISNULL(3) ? 0 : PG_GETARG_TIMESTAMPTZ(3),
							   PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4));
	}
	else if (strcmp(what, "dead_retried") == 0)
		tj_stats_dead_retried(qid, n);
	else if (strcmp(what, "dead_purged") == 0)
		tj_stats_dead_removed(qid, n);
	else if (strcmp(what, "queue_dropped") == 0)
		tj_stats_queue_dropped(qid);
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown statistics note \"%s\"", what)));
	PG_RETURN_VOID();
}

/* ---- applying deltas at commit ---- */

/*
 * Finds (or, if create, adds) the entry of key k in hash, an entry of
 * entrysize bytes that begins with a key of keysize bytes.  Returns NULL
 * when it is missing and the table already holds max_entries (full: the
 * table keeps what it was sized for, never more; see the file header).  A
 * new entry is zeroed past its key and *created set.  Hold the lock
 * (exclusive to create).
 */
static void *
shared_entry(HTAB *hash, const void *k, Size keysize, Size entrysize, int max_entries,
			 bool create, bool *created)
{
	void	   *e = hash_search(hash, k, HASH_FIND, NULL);
	bool		found;

	*created = false;
	if (e || !create || hash_get_num_entries(hash) >= max_entries)
		return e;
	e = hash_search(hash, k, HASH_ENTER_NULL, &found);
	if (e && !found)
	{
		memset((char *) e + keysize, 0, entrysize - keysize);
		*created = true;
	}
	return e;
}

/*
 * The entry of a queue of this database (0: of the database itself), up to
 * throttle_jobs.stats_max_queues (shared_entry); the caller counts what it
 * could not keep.
 */
static TJQueueStats *
queue_entry(int32 queue_id, bool create)
{
	TJQueueKey	k = {MyDatabaseId, queue_id};
	bool		created;
	TJQueueStats *e = shared_entry(queue_hash, &k, sizeof(TJQueueKey), sizeof(TJQueueStats),
								   tj_stats_max_queues, create, &created);

	if (created)
	{
		SpinLockInit(&e->mutex);
		e->reset_at = GetCurrentTimestamp();
	}
	return e;
}

/* The same for a key of this database, up to throttle_jobs.stats_max_keys. */
static TJKeyStats *
key_entry(const char *key, bool create)
{
	TJKeyKey	k;
	bool		created;
	TJKeyStats *e;

	memset(&k, 0, sizeof(k));
	k.dbid = MyDatabaseId;
	strlcpy(k.key, key, sizeof(k.key));
	e = shared_entry(key_hash, &k, sizeof(TJKeyKey), sizeof(TJKeyStats), tj_stats_max_keys,
					 create, &created);
	if (created)
		SpinLockInit(&e->mutex);
	return e;
}

/* Adds delta to a ring slot, resetting a slot left from an earlier lap. */
static void
fut_add(TJQueueStats *e, int kind, int64 slot, int64 delta, int64 now_slot)
{
	int			i;

	if (slot <= now_slot)
		return;					/* due already: it counts as available */
	if (slot >= now_slot + FUT_SLOTS)
	{
		e->far[kind] += delta;
		if (delta > 0 && (e->far_min_slot == 0 || slot < e->far_min_slot))
			e->far_min_slot = slot;
		if (e->far[kind] < 0)
			e->far[kind] = 0;
		return;
	}
	i = (int) (slot % FUT_SLOTS);
	if (e->fut_tag[i] != (int32) slot)
	{
		if (delta < 0)
			return;				/* it was counted elsewhere (far): the recount fixes it */
		e->fut_tag[i] = (int32) slot;
		e->fut[F_SCHEDULED][i] = 0;
		e->fut[F_RETRYING][i] = 0;
	}
	e->fut[kind][i] = Max(0, e->fut[kind][i] + (int32) delta);
}

static void
win_add(TJQueueStats *e, int w, int64 slot, int64 delta)
{
	int			i = (int) (slot % WIN_SLOTS);

	if (delta == 0)
		return;
	if (e->win_tag[i] != (int32) slot)
	{
		e->win_tag[i] = (int32) slot;
		for (int k = 0; k < W_COUNT; k++)
			e->win[k][i] = 0;
	}
	e->win[w][i] += (int32) delta;
}

static void
apply_queue(TJQueueStats *e, const PendingQueue *p, int64 wslot)
{
	for (int i = 0; i < TJ_EV_COUNT; i++)
		e->events[i] += p->events[i];
	for (int i = 0; i < G_COUNT; i++)
		e->gauges[i] = Max(0, e->gauges[i] + p->gauges[i]);
	for (int k = 0; k < 2; k++)
	{
		for (int i = 0; i < H_BUCKETS; i++)
			e->hist[k][i] += p->hist[k][i];
		e->hist_sum[k] += p->hist_sum[k];
		e->hist_max[k] = Max(e->hist_max[k], p->hist_max[k]);
	}
	win_add(e, W_ENQUEUED, wslot, p->events[TJ_EV_ENQUEUED]);
	win_add(e, W_RESERVED, wslot, p->events[TJ_EV_RESERVED]);
	win_add(e, W_COMPLETED, wslot, p->events[TJ_EV_COMPLETED]);
	win_add(e, W_FAILED, wslot, p->events[TJ_EV_FAILED]);
	win_add(e, W_DEAD, wslot, p->events[TJ_EV_DEAD_LETTERED]);
	win_add(e, W_THROTTLED, wslot,
			p->events[TJ_EV_THROTTLED_CAP] + p->events[TJ_EV_THROTTLED_RATE]);
}

static void
apply_pending(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		wslot = win_slot(now);
	int64		fslot = fut_slot(now);
	bool		forget = false;

	/* entries missing: add them first, in exclusive mode */
	LWLockAcquire(tj_stats->lock, LW_SHARED);
	for (int i = 0; i < pending_queues.n; i++)
	{
		PendingQueue *p = PITEM(&pending_queues, PendingQueue, i);

		if (p->forget || !queue_entry(p->queue_id, false))
			forget = true;		/* (reused as "needs exclusive") */
	}
	for (int i = 0; i < pending_keys.n && !forget; i++)
	{
		PendingKey *k = PITEM(&pending_keys, PendingKey, i);

		if ((k->throttled[0] || k->throttled[1]) && !key_entry(k->key, false))
			forget = true;
	}
	if (forget)
	{
		LWLockRelease(tj_stats->lock);
		LWLockAcquire(tj_stats->lock, LW_EXCLUSIVE);
	}

	for (int i = 0; i < pending_queues.n; i++)
	{
		PendingQueue *p = PITEM(&pending_queues, PendingQueue, i);
		TJQueueStats *e;

		if (p->forget)
		{
			TJQueueKey	k = {MyDatabaseId, p->queue_id};

			hash_search(queue_hash, &k, HASH_REMOVE, NULL);
			continue;
		}
		e = queue_entry(p->queue_id, forget);
		if (e == NULL)
		{
			if (forget)
				tj_stats->queues_full++;
			continue;
		}
		SpinLockAcquire(&e->mutex);
		apply_queue(e, p, wslot);
		SpinLockRelease(&e->mutex);
	}
	for (int i = 0; i < pending_futures.n; i++)
	{
		PendingFuture *f = PITEM(&pending_futures, PendingFuture, i);
		TJQueueStats *e = queue_entry(f->queue_id, false);

		if (e == NULL)
			continue;
		SpinLockAcquire(&e->mutex);
		fut_add(e, f->kind, f->slot, f->delta, fslot);
		SpinLockRelease(&e->mutex);
	}
	for (int i = 0; i < pending_keys.n; i++)
	{
		PendingKey *k = PITEM(&pending_keys, PendingKey, i);
		bool		throttled = k->throttled[0] || k->throttled[1];
		TJKeyStats *e = key_entry(k->key, throttled && forget);

		if (e == NULL)
		{
			if (throttled)
				tj_stats->keys_full++;
			continue;
		}
		SpinLockAcquire(&e->mutex);
		e->throttled[0] += k->throttled[0];
		e->throttled[1] += k->throttled[1];
		if (throttled)
		{
			e->last_throttled_at = now;
			if (e->throttled_since == 0)
				e->throttled_since = now;
		}
		if (k->admitted && !throttled)
		{
			e->last_admitted_at = now;
			e->throttled_since = 0;
		}
		SpinLockRelease(&e->mutex);
	}
	LWLockRelease(tj_stats->lock);
}

static void
stats_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			if (tj_stats != NULL &&
				(pending_queues.n > 0 || pending_futures.n > 0 || pending_keys.n > 0))
				apply_pending();
			pending_clear();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			pending_clear();
			break;
		default:
			break;
	}
}

/* Drops the deltas of an aborted subtransaction; a committed one's join its parent's. */
static void
subxact_filter(PendingArray *arr, int level, bool abort)
{
	int			keep = 0;

	for (int i = 0; i < arr->n; i++)
	{
		int		   *lvl = (int *) ((char *) arr->items + arr->elem * i +
								   (arr == &pending_queues ? offsetof(PendingQueue, level)
									: arr == &pending_futures ? offsetof(PendingFuture, level)
									: offsetof(PendingKey, level)));

		if (*lvl >= level)
		{
			if (abort)
				continue;
			*lvl = level - 1;
		}
		if (keep != i)
			memcpy((char *) arr->items + arr->elem * keep,
				   (char *) arr->items + arr->elem * i, arr->elem);
		keep++;
	}
	arr->n = keep;
}

static void
stats_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	subxact_filter(&pending_queues, level, event == SUBXACT_EVENT_ABORT_SUB);
	subxact_filter(&pending_futures, level, event == SUBXACT_EVENT_ABORT_SUB);
	subxact_filter(&pending_keys, level, event == SUBXACT_EVENT_ABORT_SUB);
}

/* ---- reading ---- */

/* A copy of every queue entry of this database (palloc'd), taken under the lock */
static TJQueueStats *
copy_queues(int *n)
{
	HASH_SEQ_STATUS seq;
	TJQueueStats *e;
	TJQueueStats *out;
	int			i = 0;

	LWLockAcquire(tj_stats->lock, LW_SHARED);
	out = palloc(sizeof(TJQueueStats) * Max(1, hash_get_num_entries(queue_hash)));
	hash_seq_init(&seq, queue_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->k.dbid != MyDatabaseId || e->k.queue_id == 0)
			continue;
		SpinLockAcquire(&e->mutex);
		memcpy(&out[i++], e, sizeof(TJQueueStats));
		SpinLockRelease(&e->mutex);
	}
	LWLockRelease(tj_stats->lock);
	*n = i;
	return out;
}

/*
 * The rows of a set-returning function over the key entries of this
 * database: put_row adds the row of one entry, a copy taken under its
 * spinlock, to rsinfo's tuplestore.  (Up to stats_max_keys entries: rows
 * are made one at a time, under the lock, rather than from a copy of all.)
 */
static Datum
key_rows(FunctionCallInfo fcinfo, void (*put_row) (ReturnSetInfo *rsinfo, const TJKeyStats *c))
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS seq;
	TJKeyStats *e;

	InitMaterializedSRF(fcinfo, 0);
	if (tj_stats == NULL)
		return (Datum) 0;
	LWLockAcquire(tj_stats->lock, LW_SHARED);
	hash_seq_init(&seq, key_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		TJKeyStats	c;

		if (e->k.dbid != MyDatabaseId)
			continue;
		SpinLockAcquire(&e->mutex);
		memcpy(&c, e, sizeof(c));
		SpinLockRelease(&e->mutex);
		put_row(rsinfo, &c);
	}
	LWLockRelease(tj_stats->lock);
	return (Datum) 0;
}

static int64
win_sum(const TJQueueStats *e, int w, int64 now_slot, int nslots)
{
	int64		sum = 0;

	for (int64 s = now_slot - nslots + 1; s <= now_slot; s++)
	{
		int			i = (int) (s % WIN_SLOTS);

		if (e->win_tag[i] == (int32) s)
			sum += e->win[w][i];
	}
	return sum;
}

static int64
fut_sum(const TJQueueStats *e, int kind, int64 now_slot)
{
	int64		sum = e->far[kind];

	for (int i = 0; i < FUT_SLOTS; i++)
		if (e->fut_tag[i] > (int32) now_slot && e->fut_tag[i] < (int32) (now_slot + FUT_SLOTS))
			sum += e->fut[kind][i];
	return sum;
}

/* The q-quantile of a histogram in usecs; -1 when it is empty */
static int64
hist_quantile(const TJQueueStats *e, int kind, double q)
{
	int64		total = 0,
				seen = 0;

	for (int i = 0; i < H_BUCKETS; i++)
		total += e->hist[kind][i];
	if (total == 0)
		return -1;
	for (int i = 0; i < H_BUCKETS; i++)
	{
		seen += e->hist[kind][i];
		if ((double) seen >= q * (double) total)
		{
			if (i == H_BUCKETS - 1)
				return e->hist_max[kind];
			return Min((int64) rint(hist_bound(i) * USECS_PER_SEC), e->hist_max[kind]);
		}
	}
	return e->hist_max[kind];
}

static Datum
interval_datum(int64 usecs)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = usecs;
	return IntervalPGetDatum(iv);
}

#define QS_COLS (1 + 5 + TJ_EV_COUNT + 12 + 6 + 1)

/*
 * stats_queues(): one row per queue in shared memory: queue_id; available,
 * scheduled, running, retrying, dead (NULL until counted); the event
 * counters in TJEvent order; completed, failed, dead_lettered, throttled in
 * the last 1, 5, 15 minutes; wait p50/p95/p99, run p50/p95/p99; reset_at.
 * No rows when the library is not preloaded.
 */
Datum
throttle_jobs_stats_queues(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TJQueueStats *all;
	int			n;
	bool		based;
	TimestampTz now = GetCurrentTimestamp();
	int64		wslot = win_slot(now);
	int64		fslot = fut_slot(now);
	static const int wins[4] = {W_COMPLETED, W_FAILED, W_DEAD, W_THROTTLED};
	static const int mins[3] = {1, 5, 15};
	static const double qs[3] = {0.5, 0.95, 0.99};

	InitMaterializedSRF(fcinfo, 0);
	if (tj_stats == NULL)
		return (Datum) 0;
	all = copy_queues(&n);
	LWLockAcquire(tj_stats->lock, LW_SHARED);
	based = queue_entry(0, false) != NULL && queue_entry(0, false)->based_at != 0;
	LWLockRelease(tj_stats->lock);

	for (int r = 0; r < n; r++)
	{
		TJQueueStats *e = &all[r];
		Datum		v[QS_COLS];
		bool		nulls[QS_COLS];
		int			c = 0;
		int64		sched = fut_sum(e, F_SCHEDULED, fslot);
		int64		retry = fut_sum(e, F_RETRYING, fslot);
		int64		waiting = e->gauges[G_WAITING];

		memset(nulls, 0, sizeof(nulls));
		v[c++] = Int32GetDatum(e->k.queue_id);
		/* future jobs cannot outnumber the waiting ones */
		sched = Min(sched, waiting);
		retry = Min(retry, waiting - sched);
		v[c++] = Int64GetDatum(waiting - sched - retry);
		v[c++] = Int64GetDatum(sched);
		v[c++] = Int64GetDatum(e->gauges[G_RUNNING]);
		v[c++] = Int64GetDatum(retry);
		v[c++] = Int64GetDatum(e->gauges[G_DEAD]);
		if (!based)
			for (int i = 1; i <= 5; i++)
				nulls[i] = true;
		for (int i = 0; i < TJ_EV_COUNT; i++)
			v[c++] = Int64GetDatum(e->events[i]);
		for (int w = 0; w < 4; w++)
			for (int m = 0; m < 3; m++)
				v[c++] = Int64GetDatum(win_sum(e, wins[w], wslot, mins[m] * WIN_PER_MINUTE));
		for (int k = 0; k < 2; k++)
			for (int i = 0; i < 3; i++)
			{
				int64		us = hist_quantile(e, k, qs[i]);

				nulls[c] = us < 0;
				v[c++] = us < 0 ? (Datum) 0 : interval_datum(us);
			}
		v[c++] = TimestampTzGetDatum(e->reset_at);
		Assert(c == QS_COLS);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nulls);
	}
	return (Datum) 0;
}

/*
 * _stats_histograms(): queue_id, kind ('wait' or 'run'), le (seconds,
 * 'Infinity' for the last), cumulative count, sum of seconds: the
 * Prometheus histogram, at every other bucket (a factor of 2 apart).
 */
Datum
throttle_jobs_stats_histograms(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TJQueueStats *all;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	if (tj_stats == NULL)
		return (Datum) 0;
	all = copy_queues(&n);
	for (int r = 0; r < n; r++)
	{
		for (int k = 0; k < 2; k++)
		{
			int64		cum = 0;

			for (int i = 0; i < H_BUCKETS; i++)
			{
				Datum		v[5];
				bool		nulls[5] = {false, false, false, false, false};

				cum += all[r].hist[k][i];
				if (i < H_BUCKETS - 1 && i % 2 != 0)
					continue;
				v[0] = Int32GetDatum(all[r].k.queue_id);
				v[1] = CStringGetTextDatum(k == H_WAIT ? "wait" : "run");
				v[2] = Float8GetDatum(i == H_BUCKETS - 1 ? get_float8_infinity() : hist_bound(i));
				v[3] = Int64GetDatum(cum);
				v[4] = Float8GetDatum(all[r].hist_sum[k]);
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nulls);
			}
		}
	}
	return (Datum) 0;
}

/*
 * stats_keys(): key, throttled by its cap, throttled by its rate,
 * last_throttled_at, throttled_since, last_admitted_at, for each key that
 * was throttled since the server started or the counters were reset.
 */
static void
put_key_throttled(ReturnSetInfo *rsinfo, const TJKeyStats *c)
{
	Datum		v[6];
	bool		nulls[6] = {false, false, false, false, false, false};

	v[0] = CStringGetTextDatum(c->k.key);
	v[1] = Int64GetDatum(c->throttled[0]);
	v[2] = Int64GetDatum(c->throttled[1]);
	v[3] = TimestampTzGetDatum(c->last_throttled_at);
	nulls[3] = c->last_throttled_at == 0;
	v[4] = TimestampTzGetDatum(c->throttled_since);
	nulls[4] = c->throttled_since == 0;
	v[5] = TimestampTzGetDatum(c->last_admitted_at);
	nulls[5] = c->last_admitted_at == 0;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nulls);
}

Datum
throttle_jobs_stats_keys(PG_FUNCTION_ARGS)
{
	return key_rows(fcinfo, put_key_throttled);
}

/*
 * _stats_key_acquires(): key, admitted, refused, waited, timed_out: the
 * outcomes of try_acquire/acquire/try_acquire_session calls, for each key
 * that has an entry (throttled or acquired since start or reset).
 */
static void
put_key_acquires(ReturnSetInfo *rsinfo, const TJKeyStats *c)
{
	Datum		v[1 + TJ_ACQ_COUNT];
	bool		nulls[1 + TJ_ACQ_COUNT] = {false};

	v[0] = CStringGetTextDatum(c->k.key);
	for (int i = 0; i < TJ_ACQ_COUNT; i++)
		v[1 + i] = Int64GetDatum(c->acquires[i]);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nulls);
}

Datum
throttle_jobs_stats_key_acquires(PG_FUNCTION_ARGS)
{
	return key_rows(fcinfo, put_key_acquires);
}

/*
 * stats_state(): (shared, started_at, reset_at, counted_at,
 * queues_dropped, keys_dropped): whether statistics live in shared memory,
 * and their bookkeeping.
 */
Datum
throttle_jobs_stats_state(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		v[6];
	bool		nulls[6] = {false, false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	v[0] = BoolGetDatum(tj_stats != NULL);
	if (tj_stats == NULL)
	{
		for (int i = 1; i < 6; i++)
			nulls[i] = true;
	}
	else
	{
		TJQueueStats *db;

		LWLockAcquire(tj_stats->lock, LW_SHARED);
		db = queue_entry(0, false);
		v[1] = TimestampTzGetDatum(tj_stats->started_at);
		v[2] = TimestampTzGetDatum(db ? db->reset_at : tj_stats->started_at);
		v[3] = TimestampTzGetDatum(db ? db->based_at : 0);
		nulls[3] = db == NULL || db->based_at == 0;
		v[4] = Int64GetDatum(tj_stats->queues_full);
		v[5] = Int64GetDatum(tj_stats->keys_full);
		LWLockRelease(tj_stats->lock);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), v, nulls)));
}

/*
 * _reset_stats(queue_id): zeroes the event counters, windows and histograms
 * of one queue (NULL: of every queue, and the key counters too).  Depth
 * gauges are not counters: they stay.
 */
Datum
throttle_jobs_stats_reset(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS seq;
	TJQueueStats *e;
	TimestampTz now = GetCurrentTimestamp();
	bool		all = PG_ARGISNULL(0);
	int32		qid = all ? 0 : PG_GETARG_INT32(0);

	if (tj_stats == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("throttle_jobs statistics are not in shared memory"),
				 errhint("Add throttle_jobs to shared_preload_libraries and restart the server.")));
	LWLockAcquire(tj_stats->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, queue_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->k.dbid != MyDatabaseId || e->k.queue_id == 0 || (!all && e->k.queue_id != qid))
			continue;
		SpinLockAcquire(&e->mutex);
		memset(e->events, 0, sizeof(e->events));
		memset(e->win_tag, 0, sizeof(e->win_tag));
		memset(e->win, 0, sizeof(e->win));
		memset(e->hist, 0, sizeof(e->hist));
		memset(e->hist_sum, 0, sizeof(e->hist_sum));
		memset(e->hist_max, 0, sizeof(e->hist_max));
		e->reset_at = now;
		SpinLockRelease(&e->mutex);
	}
	if (all)
	{
		TJKeyStats *k;

		hash_seq_init(&seq, key_hash);
		while ((k = hash_seq_search(&seq)) != NULL)
			if (k->k.dbid == MyDatabaseId)
				hash_search(key_hash, &k->k, HASH_REMOVE, NULL);
		e = queue_entry(0, true);
		if (e)
			e->reset_at = now;
		tj_stats->queues_full = 0;
		tj_stats->keys_full = 0;
	}
	LWLockRelease(tj_stats->lock);
	PG_RETURN_VOID();
}

/*
 * _stats_forget(): drops every entry of this database.  The install script
 * calls it, so that a re-created extension (whose queue ids start again at
 * 1) inherits nothing from a dropped one.
 */
Datum
throttle_jobs_stats_forget(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS seq;
	TJQueueStats *e;
	TJKeyStats *k;

	if (tj_stats == NULL)
		PG_RETURN_VOID();
	LWLockAcquire(tj_stats->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, queue_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (e->k.dbid == MyDatabaseId)
			hash_search(queue_hash, &e->k, HASH_REMOVE, NULL);
	hash_seq_init(&seq, key_hash);
	while ((k = hash_seq_search(&seq)) != NULL)
		if (k->k.dbid == MyDatabaseId)
			hash_search(key_hash, &k->k, HASH_REMOVE, NULL);
	LWLockRelease(tj_stats->lock);
	PG_RETURN_VOID();
}

/* ---- maintain(): recount and rollup ---- */

static TJStatement count_live_stmt = {
	"SELECT j.queue_id, pg_catalog.count(*) FILTER (WHERE j.state <> 'running'),"
	"  pg_catalog.count(*) FILTER (WHERE j.state = 'running')"
	"  FROM throttle_jobs.job j GROUP BY j.queue_id",
	0, {0}
};

static TJStatement count_future_stmt = {
	"SELECT j.queue_id, j.attempt > 0, j.run_at, pg_catalog.count(*)"
	"  FROM throttle_jobs.job j WHERE j.state = 'available' AND j.run_at > $1"
	" GROUP BY 1, 2, 3",
	1, {TIMESTAMPTZOID}
};

static TJStatement count_dead_stmt = {
	"SELECT d.queue_id, pg_catalog.count(*) FROM throttle_jobs.job_dead d GROUP BY 1",
	0, {0}
};

static TJStatement queue_ids_stmt = {
	"SELECT q.id FROM throttle_jobs.queue q",
	0, {0}
};

static TJStatement rollup_stmt = {
	"INSERT INTO throttle_jobs.stats_minute AS m (queue_id, minute, enqueued, reserved,"
	"  completed, failed, dead_lettered, throttled)"
	" SELECT x.queue_id, x.minute, x.enqueued, x.reserved, x.completed, x.failed,"
	"  x.dead_lettered, x.throttled"
	"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
	"   pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6),"
	"   pg_catalog.unnest($7), pg_catalog.unnest($8))"
	"   AS x(queue_id, minute, enqueued, reserved, completed, failed, dead_lettered, throttled)"
	"  WHERE EXISTS (SELECT 1 FROM throttle_jobs.queue q WHERE q.id = x.queue_id)"
	" ON CONFLICT ON CONSTRAINT stats_minute_pkey DO UPDATE SET"
	"  enqueued = m.enqueued + EXCLUDED.enqueued, reserved = m.reserved + EXCLUDED.reserved,"
	"  completed = m.completed + EXCLUDED.completed, failed = m.failed + EXCLUDED.failed,"
	"  dead_lettered = m.dead_lettered + EXCLUDED.dead_lettered,"
	"  throttled = m.throttled + EXCLUDED.throttled",
	8, {INT4ARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
	INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID}
};

static TJStatement history_stmt = {
	"DELETE FROM throttle_jobs.stats_minute m WHERE m.minute < $1",
	1, {TIMESTAMPTZOID}
};

/* Without shared memory: the depth of every queue, counted now */
static TJStatement snapshot_stmt = {
	"INSERT INTO throttle_jobs.stats_snapshot AS s (queue_id, counted_at, available,"
	"  scheduled, running, retrying, dead)"
	" SELECT q.id, $1, coalesce(l.available, 0), coalesce(l.scheduled, 0),"
	"  coalesce(l.running, 0), coalesce(l.retrying, 0),"
	"  (SELECT pg_catalog.count(*) FROM throttle_jobs.job_dead d WHERE d.queue_id = q.id)"
	"  FROM throttle_jobs.queue q LEFT JOIN ("
	"   SELECT j.queue_id,"
	"    pg_catalog.count(*) FILTER (WHERE j.state <> 'running' AND j.run_at <= $1) AS available,"
	"    pg_catalog.count(*) FILTER (WHERE j.state = 'available' AND j.run_at > $1 AND j.attempt = 0) AS scheduled,"
	"    pg_catalog.count(*) FILTER (WHERE j.state = 'running') AS running,"
	"    pg_catalog.count(*) FILTER (WHERE j.state = 'available' AND j.run_at > $1 AND j.attempt > 0) AS retrying"
	"   FROM throttle_jobs.job j GROUP BY j.queue_id) l ON l.queue_id = q.id"
	" ON CONFLICT ON CONSTRAINT stats_snapshot_pkey DO UPDATE SET counted_at = EXCLUDED.counted_at,"
	"  available = EXCLUDED.available, scheduled = EXCLUDED.scheduled,"
	"  running = EXCLUDED.running, retrying = EXCLUDED.retrying, dead = EXCLUDED.dead",
	1, {TIMESTAMPTZOID}
};

static TJStatement snapshot_gc_stmt = {
	"DELETE FROM throttle_jobs.stats_snapshot s"
	" WHERE NOT EXISTS (SELECT 1 FROM throttle_jobs.queue q WHERE q.id = s.queue_id)",
	0, {0}
};

/* Whether the gauges need a recount now */
static bool
recount_due(TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	TJQueueStats *e;
	bool		due;
	int64		soon = fut_slot(now) + FUT_SLOTS / 2;

	LWLockAcquire(tj_stats->lock, LW_SHARED);
	e = queue_entry(0, false);
	due = e == NULL || e->based_at == 0 ||
		(tj_stats_recount_interval > 0 &&
		 now - e->based_at >= (int64) tj_stats_recount_interval * USECS_PER_MINUTE);
	if (!due)
	{
		/* jobs beyond the ring come close: count them into it */
		hash_seq_init(&seq, queue_hash);
		while ((e = hash_seq_search(&seq)) != NULL)
		{
			if (e->k.dbid == MyDatabaseId && e->far_min_slot != 0 && e->far_min_slot <= soon)
				due = true;
		}
	}
	LWLockRelease(tj_stats->lock);
	return due;
}

/* The entry of a queue that exists, made if missing (counted when there is no room) */
static TJQueueStats *
recount_entry(int32 qid)
{
	TJQueueStats *e = queue_entry(qid, true);

	if (e == NULL)
		tj_stats->queues_full++;
	return e;
}

/* Column col of a row of a count's result (counts are never NULL) */
static Datum
count_column(SPITupleTable *rows, uint64 row, int col)
{
	bool		isnull;

	return SPI_getbinval(rows->vals[row], rows->tupdesc, col, &isnull);
}

/* The entry of the queue a count's row names (its column 1), or NULL */
static TJQueueStats *
counted_entry(SPITupleTable *rows, uint64 row)
{
	return queue_entry(DatumGetInt32(count_column(rows, row, 1)), false);
}

/* Sets a gauge to the count in column col of a row (see counted_entry) */
static void
recount_gauge(SPITupleTable *rows, uint64 row, int col, int gauge)
{
	TJQueueStats *e = counted_entry(rows, row);

	if (e == NULL)
		return;
	SpinLockAcquire(&e->mutex);
	e->gauges[gauge] = DatumGetInt64(count_column(rows, row, col));
	SpinLockRelease(&e->mutex);
}

/*
 * Recounts the gauges from the tables (under the latest snapshot).  A
 * transaction that commits while this runs may be counted twice or not at
 * all; the next recount corrects that.  Connected to SPI by the caller.
 */
static void
recount(TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	TJQueueStats *e;
	int64		fslot = fut_slot(now);
	uint64		n;
	Datum		values[1];
	SPITupleTable *live,
			   *future,
			   *dead,
			   *ids;
	uint64		nlive,
				nfuture,
				ndead,
				nids;

	values[0] = TimestampTzGetDatum(now);

	/*
	 * The counts see this transaction's own changes (maintain() reaped
	 * leases, the worker handed back orphaned jobs, dead letters were
	 * purged): its gauge deltas must not be applied on top of them at commit,
	 * or each such job counts twice (after a crash, every job that the
	 * executors held).  The event counters stay.
	 */
	for (int i = 0; i < pending_queues.n; i++)
		memset(PITEM(&pending_queues, PendingQueue, i)->gauges, 0, sizeof(int64) * G_COUNT);
	pending_futures.n = 0;

	nids = tj_execute_latest(&queue_ids_stmt, NULL, NULL, SPI_OK_SELECT);
	ids = SPI_tuptable;
	nlive = tj_execute_latest(&count_live_stmt, NULL, NULL, SPI_OK_SELECT);
	live = SPI_tuptable;
	nfuture = tj_execute_latest(&count_future_stmt, values, NULL, SPI_OK_SELECT);
	future = SPI_tuptable;
	ndead = tj_execute_latest(&count_dead_stmt, NULL, NULL, SPI_OK_SELECT);
	dead = SPI_tuptable;

	LWLockAcquire(tj_stats->lock, LW_EXCLUSIVE);
	/* forget queues that no longer exist; zero the gauges of the others */
	hash_seq_init(&seq, queue_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		bool		exists = false;

		if (e->k.dbid != MyDatabaseId || e->k.queue_id == 0)
			continue;
		for (uint64 i = 0; i < nids && !exists; i++)
			exists = DatumGetInt32(count_column(ids, i, 1)) == e->k.queue_id;
		if (!exists)
		{
			hash_search(queue_hash, &e->k, HASH_REMOVE, NULL);
			continue;
		}
		SpinLockAcquire(&e->mutex);
		memset(e->gauges, 0, sizeof(e->gauges));
		memset(e->far, 0, sizeof(e->far));
		e->far_min_slot = 0;
		memset(e->fut_tag, 0, sizeof(e->fut_tag));
		memset(e->fut, 0, sizeof(e->fut));
		SpinLockRelease(&e->mutex);
	}
	for (uint64 i = 0; i < nids; i++)
		(void) recount_entry(DatumGetInt32(count_column(ids, i, 1)));
	for (n = 0; n < nlive; n++)
	{
		recount_gauge(live, n, 2, G_WAITING);
		recount_gauge(live, n, 3, G_RUNNING);
	}
	for (n = 0; n < nfuture; n++)
	{
		bool		retry = DatumGetBool(count_column(future, n, 2));
		TimestampTz run_at = DatumGetTimestampTz(count_column(future, n, 3));
		int64		count = DatumGetInt64(count_column(future, n, 4));

		e = counted_entry(future, n);
		if (e == NULL)
			continue;
		SpinLockAcquire(&e->mutex);
		fut_add(e, retry ? F_RETRYING : F_SCHEDULED, fut_slot(run_at), count, fslot);
		SpinLockRelease(&e->mutex);
	}
	for (n = 0; n < ndead; n++)
		recount_gauge(dead, n, 2, G_DEAD);
	e = recount_entry(0);
	if (e)
		e->based_at = now;
	LWLockRelease(tj_stats->lock);
}

/*
 * Rolls the finished minutes that the windows still hold (at most 15) into
 * stats_minute.  Returns the number of queue-minutes written.
 */
static int64
rollup(TimestampTz now)
{
	TJQueueStats *all;
	int			n;
	int64		now_minute = floor_div(now, USECS_PER_MINUTE);
	int64		from,
				to = now_minute - 1;
	int			cap;
	int			rows = 0;
	TJQueueStats *db;
	Datum	   *cols[8];
	Datum		values[8];
	static const int ws[6] = {W_ENQUEUED, W_RESERVED, W_COMPLETED, W_FAILED, W_DEAD, W_THROTTLED};

	/* claim the minutes to roll up */
	LWLockAcquire(tj_stats->lock, LW_EXCLUSIVE);
	db = queue_entry(0, true);
	if (db == NULL)
	{
		LWLockRelease(tj_stats->lock);
		return 0;
	}
	from = Max(db->rolled_minute + 1, now_minute - 15);
	if (from <= to)
		db->rolled_minute = to;
	LWLockRelease(tj_stats->lock);
	if (from > to)
		return 0;

	all = copy_queues(&n);
	cap = Max(1, n * (int) (to - from + 1));
	for (int c = 0; c < 8; c++)
		cols[c] = palloc(sizeof(Datum) * cap);
	for (int r = 0; r < n; r++)
	{
		for (int64 m = from; m <= to; m++)
		{
			int64		sums[6] = {0, 0, 0, 0, 0, 0};
			bool		any = false;

			for (int64 s = m * WIN_PER_MINUTE; s < (m + 1) * WIN_PER_MINUTE; s++)
			{
				int			i = (int) (s % WIN_SLOTS);

				if (all[r].win_tag[i] != (int32) s)
					continue;
				for (int w = 0; w < 6; w++)
				{
					sums[w] += all[r].win[ws[w]][i];
					any |= all[r].win[ws[w]][i] != 0;
				}
			}
			if (!any)
				continue;
			cols[0][rows] = Int32GetDatum(all[r].k.queue_id);
			cols[1][rows] = TimestampTzGetDatum(m * USECS_PER_MINUTE);
			for (int w = 0; w < 6; w++)
				cols[2 + w][rows] = Int64GetDatum(sums[w]);
			rows++;
		}
	}
	if (rows == 0)
		return 0;
	values[0] = PointerGetDatum(construct_array(cols[0], rows, INT4OID, 4, true, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(cols[1], rows, TIMESTAMPTZOID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	for (int c = 2; c < 8; c++)
		values[c] = PointerGetDatum(construct_array(cols[c], rows, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	return (int64) tj_execute(&rollup_stmt, values, NULL, false, 0, SPI_OK_INSERT);
}

/*
 * Marks the gauges of this database unknown, so that the next statistics
 * step recounts them (after a restore loaded the rows behind them).
 */
void
tj_stats_force_recount(void)
{
	TJQueueStats *e;

	if (tj_stats == NULL)
		return;
	LWLockAcquire(tj_stats->lock, LW_EXCLUSIVE);
	e = queue_entry(0, false);
	if (e)
		e->based_at = 0;
	LWLockRelease(tj_stats->lock);
}

/*
 * maintain()'s statistics step; returns a JSON object (text) saying what it
 * did.  Connected to SPI by the caller.
 */
char *
tj_stats_maintain(TimestampTz now)
{
	Datum		values[1];
	int64		rolled = 0,
				expired;
	bool		counted = false;

	if (tj_stats != NULL)
	{
		if (recount_due(now))
		{
			recount(now);
			counted = true;
		}
		rolled = rollup(now);
	}
	else
	{
		values[0] = TimestampTzGetDatum(now);
		tj_execute(&snapshot_stmt, values, NULL, false, 0, SPI_OK_INSERT);
		tj_execute(&snapshot_gc_stmt, NULL, NULL, false, 0, SPI_OK_DELETE);
		counted = true;
	}
	values[0] = TimestampTzGetDatum(now - (int64) tj_stats_history * USECS_PER_MINUTE);
	expired = tj_execute(&history_stmt, values, NULL, false, 0, SPI_OK_DELETE);
	return psprintf("{\"shared\": %s, \"recounted\": %s, \"minutes_rolled_up\": " INT64_FORMAT
					", \"minutes_expired\": " INT64_FORMAT "}",
					tj_stats != NULL ? "true" : "false", counted ? "true" : "false",
					rolled, expired);
}
