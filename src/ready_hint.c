/*-------------------------------------------------------------------------
 *
 * ready_hint.c
 *		Skip hints: where a queue's ready jobs begin, so that reservation
 *		does not walk dead index entries that an old snapshot keeps alive.
 *
 * While any session holds an old snapshot (a long report, a client idle in
 * transaction, pg_dump), the index entries of jobs reserved since cannot be
 * killed or vacuumed, and a scan of job_ready_idx from the start of a
 * priority level steps over all of them.  Shared memory keeps, per queue
 * (database, queue id) and priority level, a hint: a key (rr_rank, run_at,
 * id) below which no ready job exists.  Reservation starts its index scan at
 * the hint instead (reserve.c).
 *
 * Correctness rests on three rules.
 *
 * 1. Publishing.  Every row change that makes a job ready records the job's
 *    key (a row trigger on throttle_jobs.job, so that no path, in C or SQL,
 *    can forget it); when the transaction commits, after its rows became
 *    visible, the hint of the job's level is lowered to the key, the queue's
 *    sequence number is bumped and the key is recorded in the queue's ring.
 *    A change that takes a job out of the ready state records its old key
 *    the same way, published when the (sub)transaction aborts, for the job
 *    is then ready again, and a reservation may have skipped it as locked.
 *
 * 2. Raising.  A reservation reads the hints and the sequence number before
 *    its statement takes its snapshot.  After it claimed keys up to k at a
 *    level, the hint may rise to k, but not above any key published at that
 *    level since it read the sequence number (such a job may have committed
 *    after its snapshot), nor above (0, now, max): the jobs of a fifo queue
 *    due later, and those of round-robin turns, sort after that, and a scan
 *    that filters them out by run_at must never step over them.  When more
 *    keys were published than the ring holds, the hint does not move.
 *
 * 3. Discovery.  An entry is made when a reservation first meets its queue
 *    (after a restart too).  From then on publishing adds the levels it
 *    meets; the levels that already held ready jobs are then found by one
 *    statement whose snapshot is taken after the entry exists, and start at
 *    minus infinity.
 *
 * As a safety net against what the rules do not cover (a job made ready by
 * a prepared transaction, whose commit may happen in another session; a
 * database copied as a template), each level is walked from its start again
 * at least every HINT_VERIFY_MS.  Round-robin queues order by turn first,
 * so their hints stay at the start of the fifo turn 0 (rule 2): they walk
 * as before.  Without preloading there is no shared memory and no hint.
 *
 * Locking: one LWLock guards the hash table and every entry; it is held
 * for a few comparisons at a time, never across a statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_job_ready_trigger);

#define HINT_MAX_QUEUES	1024	/* queues (of all databases) with hints: about 1.7 kB each */
#define HINT_RING		32		/* keys published that a raise can still see */
#define HINT_VERIFY_MS	10000	/* a level is walked from its start this often */

typedef struct HintQueueKey
{
	Oid			dbid;
	int32		queue_id;
} HintQueueKey;

typedef struct HintPublished
{
	int16		priority;
	TJReadyKey	key;
} HintPublished;

typedef struct HintQueue
{
	HintQueueKey tag;			/* hash key */
	uint64		epoch;			/* which entry of this queue (one may be evicted) */
	TimestampTz used_at;		/* last read by a reservation */
	bool		discovered;		/* the levels that held ready jobs are known */
	bool		overflow;		/* more levels than TJ_HINT_LEVELS: no hints */
	int			nlevels;
	TJHintLevel levels[TJ_HINT_LEVELS];	/* priority descending */
	uint64		seq;
	HintPublished ring[HINT_RING];
} HintQueue;

typedef struct HintShared
{
	LWLock	   *lock;
	uint64		epochs;			/* entries made so far */
} HintShared;

static HintShared *hint_shared = NULL;
static HTAB *hint_hash = NULL;

static void publish_locked_pending(bool on_abort, int level);


/* ---- keys ---- */

static const TJReadyKey minus_infinity = {PG_INT64_MIN, DT_NOBEGIN, PG_INT64_MIN};

static int
key_cmp(const TJReadyKey *a, const TJReadyKey *b)
{
	if (a->rr_rank != b->rr_rank)
		return a->rr_rank < b->rr_rank ? -1 : 1;
	if (a->run_at != b->run_at)
		return a->run_at < b->run_at ? -1 : 1;
	if (a->id != b->id)
		return a->id < b->id ? -1 : 1;
	return 0;
}

/* ---- shared memory (shmem.c calls these) ---- */

Size
tj_hint_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(HintShared)),
					hash_estimate_size(HINT_MAX_QUEUES, sizeof(HintQueue)));
}

/* Creates the segment, or attaches to it (under AddinShmemInitLock) */
void
tj_hint_shmem_init(void)
{
	bool		found;
	HASHCTL		info;

	hint_shared = ShmemInitStruct("throttle_jobs hints", sizeof(HintShared), &found);
	if (!found)
	{
		hint_shared->lock = &(GetNamedLWLockTranche("throttle_jobs_hints"))->lock;
		hint_shared->epochs = 0;
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(HintQueueKey);
	info.entrysize = sizeof(HintQueue);
	hint_hash = ShmemInitHash("throttle_jobs hint queues", HINT_MAX_QUEUES, HINT_MAX_QUEUES,
							  &info, HASH_ELEM | HASH_BLOBS);
}

/*
 * The entry of a queue of this database; with `create`, made if missing,
 * in place of the entry read longest ago when the table is full (its queue
 * then finds its levels again).  Caller holds the lock exclusively.
 */
static HintQueue *
find_queue(int32 queue_id, bool create)
{
	HintQueueKey tag;
	bool		found;
	HintQueue  *q;

	memset(&tag, 0, sizeof(tag));
	tag.dbid = MyDatabaseId;
	tag.queue_id = queue_id;
	q = hash_search(hint_hash, &tag, HASH_FIND, &found);
	if (q == NULL && create)
	{
		/*
		 * Never more entries than the table was sized for: past that, a
		 * shared hash table grows into the server's spare shared memory
		 * (which the lock table needs) until none is left.
		 */
		if (hash_get_num_entries(hint_hash) >= HINT_MAX_QUEUES)
		{
			HASH_SEQ_STATUS scan;
			HintQueue  *e;
			HintQueue  *oldest = NULL;

			hash_seq_init(&scan, hint_hash);
			while ((e = hash_seq_search(&scan)) != NULL)
				if (oldest == NULL || e->used_at < oldest->used_at)
					oldest = e;
			if (oldest != NULL)
				hash_search(hint_hash, &oldest->tag, HASH_REMOVE, NULL);
		}
		q = hash_search(hint_hash, &tag, HASH_ENTER_NULL, &found);
	}
	if (q != NULL && !found)
	{
		q->epoch = ++hint_shared->epochs;
		q->used_at = 0;
		q->discovered = false;
		q->overflow = false;
		q->nlevels = 0;
		q->seq = 0;
	}
	return q;
}

static TJHintLevel *
find_level(HintQueue *q, int16 priority)
{
	for (int i = 0; i < q->nlevels; i++)
		if (q->levels[i].priority == priority)
			return &q->levels[i];
	return NULL;
}

/*
 * The level of `priority`, added (with hint `start`) if the queue has none
 * yet; NULL when the queue has too many levels (it then has no hints).
 */
static TJHintLevel *
add_level(HintQueue *q, int16 priority, const TJReadyKey *start)
{
	TJHintLevel *l = find_level(q, priority);
	int			i;

	if (l != NULL || q->overflow)
		return l;
	if (q->nlevels == TJ_HINT_LEVELS)
	{
		q->overflow = true;
		return NULL;
	}
	/* keep priority descending */
	for (i = q->nlevels; i > 0 && q->levels[i - 1].priority < priority; i--)
		q->levels[i] = q->levels[i - 1];
	q->levels[i].priority = priority;
	q->levels[i].hint = *start;
	q->levels[i].walked_at = 0;
	q->nlevels++;
	return &q->levels[i];
}

/* Lowers the hint of a level to `key` (caller holds the lock) */
static void
publish_locked(HintQueue *q, int16 priority, const TJReadyKey *key)
{
	TJHintLevel *l = add_level(q, priority, key);
	HintPublished *p;

	if (l != NULL && key_cmp(key, &l->hint) < 0)
		l->hint = *key;
	q->seq++;
	p = &q->ring[q->seq % HINT_RING];
	p->priority = priority;
	p->key = *key;
}

/*
 * Whether reservation may use hints in this database: shared memory holds
 * them, and the job table's job_ready_* triggers are there and enabled.
 * The 0.2.0 library also runs a database still at 0.1.0 (between the
 * restart onto it and ALTER EXTENSION UPDATE), which has no triggers:
 * nothing publishes there, and reservation walks as it did without hints.
 * (The relation is found in the relation cache; reservation locks it next.)
 */
bool
tj_hints_enabled(void)
{
	static LocalTransactionId checked_in = InvalidLocalTransactionId;
	static bool enabled = false;
	Oid			relid;
	Relation	rel;
	int			found = 0;

	if (hint_hash == NULL)
		return false;
	/* once a transaction: its reservations then hold a lock on the table */
	if (checked_in == TJ_MY_LXID)
		return enabled;
	relid = tj_relid("job");
	if (!OidIsValid(relid))
		return false;
	rel = relation_open(relid, AccessShareLock);
	for (int i = 0; rel->trigdesc != NULL && i < rel->trigdesc->numtriggers; i++)
	{
		const Trigger *t = &rel->trigdesc->triggers[i];

		if (t->tgenabled != TRIGGER_DISABLED &&
			(strcmp(t->tgname, "job_ready_insert") == 0 ||
			 strcmp(t->tgname, "job_ready_update") == 0 ||
			 strcmp(t->tgname, "job_ready_delete") == 0))
			found++;
	}
	relation_close(rel, AccessShareLock);
	enabled = found == 3;
	checked_in = TJ_MY_LXID;
	return enabled;
}

/*
 * What a reservation starts from: the queue's levels with their hints and
 * the sequence number.  False when the queue has no hints (none in shared
 * memory, too many levels, no room): reservation then walks as it always
 * did.  *discover is set when the caller must find the levels that already
 * hold ready jobs (tj_hint_discovered) before it may use the result.
 * A level not walked from its start for HINT_VERIFY_MS comes back with
 * hint minus infinity, and counts as walked (unless the reservation hands
 * the walk back, tj_hint_unwalk).
 */
bool
tj_hint_read(int32 queue_id, TimestampTz now, TJHintRead *out, bool *discover)
{
	HintQueue  *q;
	bool		ok = false;

	*discover = false;
	if (hint_hash == NULL)
		return false;
	LWLockAcquire(hint_shared->lock, LW_EXCLUSIVE);
	/*
	 * This transaction's own ready jobs are ready to it already (a
	 * reservation that released waiting jobs meets them in its walk).
	 * Publishing before commit only lowers hints, which is always safe.
	 */
	publish_locked_pending(false, 0);
	q = find_queue(queue_id, true);
	if (q != NULL && !q->overflow)
	{
		*discover = !q->discovered;
		q->used_at = now;
		out->epoch = q->epoch;
		out->seq = q->seq;
		out->nlevels = q->nlevels;
		for (int i = 0; i < q->nlevels; i++)
		{
			out->levels[i] = q->levels[i];
			if (TimestampDifferenceExceeds(q->levels[i].walked_at, now, HINT_VERIFY_MS))
			{
				out->levels[i].hint = minus_infinity;
				q->levels[i].walked_at = now;
			}
		}
		ok = true;
	}
	LWLockRelease(hint_shared->lock);
	return ok;
}

/*
 * The levels found holding ready jobs by a statement whose snapshot was
 * taken after tj_hint_read made the entry (*out, read then): they start at
 * minus infinity.  Fills *out again.  False if the queue now has too many
 * levels, or its entry was replaced meanwhile.
 */
bool
tj_hint_discovered(int32 queue_id, const int16 *priorities, int n, TJHintRead *out)
{
	HintQueue  *q;
	bool		ok = false;

	LWLockAcquire(hint_shared->lock, LW_EXCLUSIVE);
	q = find_queue(queue_id, false);
	if (q != NULL && q->epoch == out->epoch)
	{
		for (int i = 0; i < n; i++)
		{
			TJHintLevel *l = add_level(q, priorities[i], &minus_infinity);

			if (l != NULL)
				l->hint = minus_infinity;
		}
		q->discovered = true;
		if (!q->overflow)
		{
			out->seq = q->seq;
			out->nlevels = q->nlevels;
			memcpy(out->levels, q->levels, sizeof(TJHintLevel) * q->nlevels);
			ok = true;
		}
	}
	LWLockRelease(hint_shared->lock);
	return ok;
}

/*
 * After a reservation that read the queue (*read: its entry and sequence
 * number) claimed jobs up to `claimed` at level `priority`: the hint may
 * rise (rule 2).
 */
void
tj_hint_raise(int32 queue_id, int16 priority, const TJHintRead *read, const TJReadyKey *claimed,
			  TimestampTz now)
{
	uint64		seq = read->seq;
	HintQueue  *q;
	TJReadyKey	to = *claimed;
	TJReadyKey	cap = {0, now, PG_INT64_MAX};

	if (key_cmp(&cap, &to) < 0)
		to = cap;
	LWLockAcquire(hint_shared->lock, LW_EXCLUSIVE);
	q = find_queue(queue_id, false);
	if (q != NULL && q->epoch == read->epoch && q->seq - seq <= HINT_RING)
	{
		TJHintLevel *l = find_level(q, priority);

		for (uint64 s = seq + 1; s <= q->seq && l != NULL; s++)
		{
			HintPublished *p = &q->ring[s % HINT_RING];

			if (p->priority == priority && key_cmp(&p->key, &to) < 0)
				to = p->key;
		}
		if (l != NULL && key_cmp(&l->hint, &to) < 0)
			l->hint = to;
	}
	LWLockRelease(hint_shared->lock);
}

/*
 * The levels from the `from`th on of what tj_hint_read gave a reservation
 * that had all its jobs before it reached them: the walk from the start
 * that the read gave them (and counted as made) goes back to the next
 * reservation.  Else, while a higher level has a job each time the walk
 * falls due, a lower level would never be walked.
 */
void
tj_hint_unwalk(int32 queue_id, const TJHintRead *read, int from, TimestampTz now)
{
	HintQueue  *q;

	LWLockAcquire(hint_shared->lock, LW_EXCLUSIVE);
	q = find_queue(queue_id, false);
	for (int i = from; q != NULL && q->epoch == read->epoch && i < read->nlevels; i++)
	{
		TJHintLevel *l = find_level(q, read->levels[i].priority);

		if (l != NULL && l->walked_at == now && read->levels[i].walked_at != now)
			l->walked_at = read->levels[i].walked_at;
	}
	LWLockRelease(hint_shared->lock);
}

/* ---- keys recorded by the trigger, published at transaction end ---- */

typedef struct PendingKey
{
	int32		queue_id;
	int16		priority;
	bool		on_abort;		/* old key of a job taken out of ready */
	int			level;			/* subtransaction nesting level */
	TJReadyKey	key;			/* the lowest of its kind */
} PendingKey;

static PendingKey *pending = NULL;
static int	npending = 0;
static int	pending_size = 0;
static bool callbacks_registered = false;

/* Publishes the pending keys of one kind, from `level` up (lock held) */
static void
publish_locked_pending(bool on_abort, int level)
{
	for (int i = 0; i < npending; i++)
	{
		PendingKey *p = &pending[i];
		HintQueue  *q;

		if (p->on_abort != on_abort || p->level < level)
			continue;
		q = find_queue(p->queue_id, false);
		if (q != NULL)
			publish_locked(q, p->priority, &p->key);
	}
}

static void
publish_pending(bool on_abort, int level)
{
	if (npending == 0 || hint_hash == NULL)
		return;
	LWLockAcquire(hint_shared->lock, LW_EXCLUSIVE);
	publish_locked_pending(on_abort, level);
	LWLockRelease(hint_shared->lock);
}

static void
hint_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			publish_pending(false, 0);
			break;
		case XACT_EVENT_ABORT:
			publish_pending(true, 0);
			break;
		case XACT_EVENT_PREPARE:

			/*
			 * The commit may happen in another session: publish now, and
			 * the walk from the start every HINT_VERIFY_MS finds what a
			 * reservation raced past before COMMIT PREPARED.
			 */
			publish_pending(false, 0);
			publish_pending(true, 0);
			break;
		default:
			return;
	}
	/* (the array lived in TopTransactionContext, gone with it) */
	pending = NULL;
	npending = 0;
	pending_size = 0;
}

static void
hint_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	int			kept = 0;

	if (npending == 0)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		/* its rows are back as they were: the jobs it took are ready again */
		publish_pending(true, level);
		for (int i = 0; i < npending; i++)
			if (pending[i].level < level)
				pending[kept++] = pending[i];
		npending = kept;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (int i = 0; i < npending; i++)
			if (pending[i].level >= level)
				pending[i].level = level - 1;
	}
}

static void
note_key(int32 queue_id, int16 priority, bool on_abort, const TJReadyKey *key)
{
	int			level = GetCurrentTransactionNestLevel();

	if (!callbacks_registered)
	{
		RegisterXactCallback(hint_xact_callback, NULL);
		RegisterSubXactCallback(hint_subxact_callback, NULL);
		callbacks_registered = true;
	}
	for (int i = 0; i < npending; i++)
	{
		PendingKey *p = &pending[i];

		if (p->queue_id == queue_id && p->priority == priority &&
			p->on_abort == on_abort && p->level == level)
		{
			if (key_cmp(key, &p->key) < 0)
				p->key = *key;
			return;
		}
	}
	if (npending == pending_size)
	{
		pending_size = Max(8, pending_size * 2);
		pending = pending
			? repalloc(pending, sizeof(PendingKey) * pending_size)
			: MemoryContextAlloc(TopTransactionContext, sizeof(PendingKey) * pending_size);
	}
	pending[npending].queue_id = queue_id;
	pending[npending].priority = priority;
	pending[npending].on_abort = on_abort;
	pending[npending].level = level;
	pending[npending].key = *key;
	npending++;
}

/*
 * A statement under READ COMMITTED that waited for a job's row lock and then
 * found the row no longer matching its WHERE keeps the row locked without
 * changing it (EvalPlanQual locks the newest version before it rechecks).
 * No trigger sees that, yet reservations skip the row as locked, and one may
 * raise the hint past it; when the lock goes, nothing would publish the job.
 * So a caller whose statement on job `id` changed nothing calls this: if the
 * job is ready now, its key is published when the (sub)transaction ends,
 * commit or abort.  Connected to SPI.
 */
static TJStatement ready_job_stmt = {
	"SELECT j.queue_id, j.priority, j.rr_rank, j.run_at, j.id FROM throttle_jobs.job j"
	" WHERE j.id = $1 AND j.state = 'available'",
	1, {INT8OID}
};

/* ready_job_stmt for the jobs of an int8[] */
static TJStatement ready_jobs_stmt = {
	"SELECT j.queue_id, j.priority, j.rr_rank, j.run_at, j.id FROM throttle_jobs.job j"
	" WHERE j.id = ANY ($1) AND j.state = 'available'",
	1, {INT8ARRAYOID}
};

/* Notes the keys that ready_job(s)_stmt found, for commit and abort */
static void
note_ready_rows(uint64 n)
{
	for (uint64 i = 0; i < n; i++)
	{
		TJReadyKey	key;
		int32		queue_id;
		int16		priority;
		bool		isnull;

		queue_id = DatumGetInt32(tj_get_datum(i, 1, &isnull));
		priority = DatumGetInt16(tj_get_datum(i, 2, &isnull));
		key.rr_rank = DatumGetInt64(tj_get_datum(i, 3, &isnull));
		key.run_at = DatumGetTimestampTz(tj_get_datum(i, 4, &isnull));
		key.id = DatumGetInt64(tj_get_datum(i, 5, &isnull));
		note_key(queue_id, priority, false, &key);
		note_key(queue_id, priority, true, &key);
	}
	SPI_freetuptable(SPI_tuptable);
}

void
tj_hint_note_job(Datum id)
{
	if (hint_hash != NULL)
		note_ready_rows(tj_execute(&ready_job_stmt, &id, NULL, false, 0, SPI_OK_SELECT));
}

/* tj_hint_note_job for each job of `ids`, an int8[] */
void
tj_hint_note_jobs(Datum ids)
{
	if (hint_hash != NULL)
		note_ready_rows(tj_execute(&ready_jobs_stmt, &ids, NULL, false, 0, SPI_OK_SELECT));
}

/* Columns of throttle_jobs.job the trigger reads, found once by name */
static Oid	job_relid = InvalidOid;
static AttrNumber att_queue_id, att_state, att_priority, att_rr_rank, att_run_at, att_id;

static AttrNumber
job_attnum(Relation rel, const char *name, Oid type)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			n = SPI_fnumber(desc, name);

	if (n <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("throttle_jobs._job_ready_trigger() runs on throttle_jobs.job only, not on \"%s\"",
						RelationGetRelationName(rel)),
				 errdetail("The table has no column \"%s\".", name)));
	if (TupleDescAttr(desc, n - 1)->atttypid != type)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("throttle_jobs._job_ready_trigger() runs on throttle_jobs.job only, not on \"%s\"",
						RelationGetRelationName(rel)),
				 errdetail("Its column \"%s\" is of type %s, not %s.", name,
						   format_type_be(TupleDescAttr(desc, n - 1)->atttypid),
						   format_type_be(type))));
	return (AttrNumber) n;
}

/* Notes the key of `tuple` if the job it holds is ready */
static void
note_tuple(Relation rel, HeapTuple tuple, bool on_abort)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			natts = desc->natts;
	Datum	   *values = palloc(sizeof(Datum) * natts);
	bool	   *nulls = palloc(sizeof(bool) * natts);
	text	   *state;
	TJReadyKey	key;

	/* one pass over the row: the columns it reads follow varlena ones */
	heap_deform_tuple(tuple, desc, values, nulls);
	if (nulls[att_state - 1])
		return;
	state = DatumGetTextPP(values[att_state - 1]);
	if (VARSIZE_ANY_EXHDR(state) != strlen("available") ||
		memcmp(VARDATA_ANY(state), "available", strlen("available")) != 0)
		return;
	key.rr_rank = DatumGetInt64(values[att_rr_rank - 1]);
	key.run_at = DatumGetTimestampTz(values[att_run_at - 1]);
	key.id = DatumGetInt64(values[att_id - 1]);
	note_key(DatumGetInt32(values[att_queue_id - 1]), DatumGetInt16(values[att_priority - 1]),
			 on_abort, &key);
}

/*
 * _job_ready_trigger(): BEFORE INSERT OR UPDATE OR DELETE FOR EACH ROW on
 * throttle_jobs.job (with WHEN clauses that let only rows that are, or
 * were, ready through).  Records the keys of jobs made ready (published at
 * commit) and of ready jobs changed or deleted (published at abort).
 */
Datum
throttle_jobs_job_ready_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("throttle_jobs._job_ready_trigger() must be called as a BEFORE ROW trigger")));
	rel = td->tg_relation;
	if (RelationGetRelid(rel) != job_relid)
	{
		/* (all found before any is kept: a wrong table changes nothing) */
		AttrNumber	queue_id = job_attnum(rel, "queue_id", INT4OID);
		AttrNumber	state = job_attnum(rel, "state", TEXTOID);
		AttrNumber	priority = job_attnum(rel, "priority", INT2OID);
		AttrNumber	rr_rank = job_attnum(rel, "rr_rank", INT8OID);
		AttrNumber	run_at = job_attnum(rel, "run_at", TIMESTAMPTZOID);
		AttrNumber	id = job_attnum(rel, "id", INT8OID);

		att_queue_id = queue_id;
		att_state = state;
		att_priority = priority;
		att_rr_rank = rr_rank;
		att_run_at = run_at;
		att_id = id;
		job_relid = RelationGetRelid(rel);
	}

	if (hint_hash != NULL)
	{
		if (!TRIGGER_FIRED_BY_INSERT(td->tg_event))
			note_tuple(rel, td->tg_trigtuple, true);
		if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
			note_tuple(rel, td->tg_trigtuple, false);
		else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
			note_tuple(rel, td->tg_newtuple, false);
	}

	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		return PointerGetDatum(td->tg_newtuple);
	return PointerGetDatum(td->tg_trigtuple);
}
