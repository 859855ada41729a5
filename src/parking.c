/*-------------------------------------------------------------------------
 *
 * parking.c
 *		The waiting lists of limited keys: parking jobs that a key holds
 *		back, and releasing them as the key can admit them.
 *
 * A key's waiting list is its throttled jobs (state 'throttled',
 * blocked_key = the key), indexed in reservation order per queue:
 * job_waiting_idx (blocked_key, queue_id, priority DESC, rr_rank, run_at,
 * id).  The best n waiting jobs of a key are the best n of the heads of its
 * queues' ranges (one probe per queue holding its jobs, paused queues
 * skipped), never a sort of the list.  A job whose cost its rate key never
 * admits waits outside the list (blocked_until = infinity) until the limit
 * changes.
 *
 * Invariant.  A limited key keeps in the ready set (job_ready_idx) about as
 * many jobs as it can admit now (free slots of its cap, tokens of its
 * rate); the rest wait in its list.  So:
 *  - a reservation that finds a key blocked parks the key's ready jobs of
 *    its queue: few, by the invariant (jobs enqueued while the key was
 *    open, at most its cap or burst, or ENQUEUE_READY_MIN, per enqueueing
 *    transaction: each job is parked O(1) times, amortised);
 *  - an enqueue whose key is blocked, or already has waiting jobs (so that
 *    it does not jump the line), goes straight into the list; so do the
 *    jobs of one transaction beyond what the key admits at once (a backlog
 *    enqueued in one batch never enters the ready set as a whole);
 *  - a release moves the best waiting jobs back to the ready set in
 *    admission-sized amounts: as many as the cap has free slots, as many as
 *    the rate has tokens now (tj_rate_try on a copy of the key's state),
 *    never more than RELEASE_MAX at a time.
 * Cost: O(log n) index work and O(1) row writes per admitted job,
 * amortised (a release writes the job, the reservation writes it again);
 * no statement on the reserve, complete, fail or maintain path reads a
 * key's whole list.
 *
 * Who releases.  Caps: whatever stops a running job (complete, fail,
 * snooze, lease expiry) releases the key's free slots in its own
 * transaction.  Rates: key_rate_state.next_at says when a key's waiting
 * jobs are due (key_rate_state_next_idx); each reservation probes the few
 * earliest due keys, and a release sets next_at again (NULL: nothing more
 * to release by time).  maintain() sweeps every key with waiting jobs (a
 * loose index scan, O(keys log n)) as a safety net, and releases the rest
 * of a dropped limit's jobs, RELEASE_MAX per key and pass.
 *
 * Slots held.  A key's free slots are its cap minus its running jobs and
 * minus the jobs a release made ready less than RELEASE_GRACE ago that no
 * one has reserved yet (released_at); the costs of the latter are taken
 * from a rate key's tokens before a release.  Ready jobs that no one
 * reserves (in a queue no worker consumes, or paused, or scheduled) hold no
 * slot: a job released into such a queue holds one for RELEASE_GRACE at
 * most, after which the next completion or maintain() releases another.
 *
 * Locking: the key mutex of limits.c, never waited for.
 *  - Parkers hold it to the end of their transaction: reservations do (they
 *    admitted under it); an enqueue does not take it, and instead leaves a
 *    note (key_recheck) that commits with its job.
 *  - A release needs it.  A completion takes it without waiting, releases,
 *    and keeps it to commit, so that no reservation parks jobs while the
 *    freed slot is still invisible to it (the lost wakeup).  When the mutex
 *    is busy, the completion leaves a note instead.
 *  - Notes are taken by the next reservation (any queue) or by maintain():
 *    under the mutex, with the latest snapshot, it sees every park and
 *    every freed slot that committed before, and releases; a key still busy
 *    is noted again.  Nobody ever waits for a key, so no deadlock can form.
 *  - Writers of key_rate_state (next_at) keep the mutex to commit, like
 *    every writer of the rate state; other looks give it back at once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_limit_changed);

/* A job in a key's waiting list (job_waiting_idx's predicate) */
#define WAITING \
	"j.state = 'throttled'" \
	" AND (j.blocked_until IS NULL OR j.blocked_until < 'infinity'::pg_catalog.timestamptz)"

#define RELEASE_GRACE	((int64) 10 * USECS_PER_SEC)	/* a released job holds a slot */
#define RELEASE_BATCH	64		/* waiting jobs read at a time */
#define RELEASE_MAX		1000	/* jobs one look at a key releases at most */
#define ENQUEUE_READY_MIN 64	/* a transaction may always make this many ready */
#define NOTES_PER_LOOK	64		/* notes one reservation takes */
#define DUE_PER_LOOK	4		/* due rate keys one reservation releases */
#define DUE_FETCH		8		/* due rate keys it reads (some may be busy) */
#define SWEEP_KEYS		1000	/* keys one maintain() pass looks at */

/* ---- statements ---- */

/*
 * The best RELEASE_BATCH waiting jobs of key $1 in queues that are not
 * paused: the queues holding its jobs (a loose scan), then the head of each
 * queue's range, merged.  (Constant limits: a generic plan's guess for a
 * LIMIT parameter over a long list can cross jit_above_cost.)
 */
static TJStatement best_waiting_stmt = {
	"WITH RECURSIVE qs AS ("
	"  (SELECT j.queue_id FROM throttle_jobs.job j WHERE j.blocked_key = $1 AND " WAITING
	"    ORDER BY j.queue_id LIMIT 1)"
	"  UNION ALL"
	"  SELECT (SELECT j.queue_id FROM throttle_jobs.job j"
	"           WHERE j.blocked_key = $1 AND " WAITING " AND j.queue_id > qs.queue_id"
	"           ORDER BY j.queue_id LIMIT 1)"
	"    FROM qs WHERE qs.queue_id IS NOT NULL)"
	" SELECT w.id, w.concurrency_key, w.rate_limit_key, w.cost"
	"   FROM qs JOIN throttle_jobs.queue q ON q.id = qs.queue_id AND NOT q.paused"
	"   CROSS JOIN LATERAL (SELECT j.id, j.priority, j.rr_rank, j.run_at, j.concurrency_key,"
	"                              j.rate_limit_key, j.cost"
	"         FROM throttle_jobs.job j"
	"        WHERE j.blocked_key = $1 AND j.queue_id = qs.queue_id AND " WAITING
	"        ORDER BY j.priority DESC, j.rr_rank, j.run_at, j.id"
	"        LIMIT " CppAsString2(RELEASE_BATCH) ") w"
	"  ORDER BY w.priority DESC, w.rr_rank, w.run_at, w.id LIMIT " CppAsString2(RELEASE_BATCH),
	1, {TEXTOID}, NULL, TJ_GENERIC
};

/*
 * The 0.2.0 library on a database still at 0.1.0 (between the restart onto
 * the new library and ALTER EXTENSION UPDATE): job.released_at does not
 * exist yet, so the statements that write or read it have a variant without
 * it (released jobs then hold no slot; everything else works as in 0.2.0).
 */
bool
tj_schema_has_released_at(void)
{
	/* once seen it stays (an update adds it, nothing takes it away): no lookups on the hot path */
	static bool seen = false;
	Oid			job;

	if (seen)
		return true;
	job = tj_relid("job");
	seen = OidIsValid(job) && get_attnum(job, "released_at") != InvalidAttrNumber;
	return seen;
}

/* Makes waiting jobs $1 of key $2 ready, released at $3 */
#define RELEASE_SQL(set_released) \
	"WITH l AS MATERIALIZED (" \
	"  SELECT j.id FROM throttle_jobs.job j" \
	"   WHERE j.id = ANY ($1) AND j.blocked_key = $2 AND j.state = 'throttled'" \
	"   FOR UPDATE SKIP LOCKED)" \
	" UPDATE throttle_jobs.job j" \
	"    SET state = 'available', blocked_key = NULL, blocked_until = NULL" set_released \
	"   FROM l WHERE j.id = l.id"

static TJStatement release_stmt = {
	RELEASE_SQL(", released_at = $3"),
	3, {INT8ARRAYOID, TEXTOID, TIMESTAMPTZOID}, NULL, TJ_GENERIC
};

static TJStatement release_010_stmt = {
	RELEASE_SQL(""),
	3, {INT8ARRAYOID, TEXTOID, TIMESTAMPTZOID}, NULL, TJ_GENERIC
};

/* A waiting job of key $2 whose cost the key never admits leaves the list */
static TJStatement oversized_stmt = {
	"UPDATE throttle_jobs.job j SET blocked_until = 'infinity'"
	" WHERE j.id = $1 AND j.blocked_key = $2 AND j.state = 'throttled'",
	2, {INT8OID, TEXTOID}
};

/*
 * The slots of capped key $1 taken (counting stops at cap $2): running
 * jobs, and jobs released since $3 that no one has reserved yet.
 */
static TJStatement claimed_stmt = {
	"SELECT (SELECT pg_catalog.count(*) FROM (SELECT 1 FROM throttle_jobs.job j"
	"         WHERE j.concurrency_key = $1 AND j.state = 'running' LIMIT $2) r)"
	"     + (SELECT pg_catalog.count(*) FROM (SELECT 1 FROM throttle_jobs.job j"
	"         WHERE j.concurrency_key = $1 AND j.state = 'available' AND j.released_at > $3"
	"         LIMIT $2) a)",
	3, {TEXTOID, INT8OID, TIMESTAMPTZOID}, NULL, TJ_GENERIC
};

static TJStatement claimed_010_stmt = {
	"SELECT pg_catalog.count(*) FROM (SELECT 1 FROM throttle_jobs.job j"
	"  WHERE j.concurrency_key = $1 AND j.state = 'running' LIMIT $2) r"
	"  WHERE $3 IS NOT NULL",
	3, {TEXTOID, INT8OID, TIMESTAMPTZOID}, NULL, TJ_GENERIC
};

/* The costs of the jobs of rate key $1 released since $2 and not reserved yet */
static TJStatement pending_stmt = {
	"SELECT j.cost FROM throttle_jobs.job j"
	" WHERE j.rate_limit_key = $1 AND j.state = 'available' AND j.released_at > $2"
	" ORDER BY j.released_at LIMIT " CppAsString2(RELEASE_MAX),
	2, {TEXTOID, TIMESTAMPTZOID}, NULL, TJ_GENERIC
};

/* When key $1's waiting jobs are next due ($2, NULL: not by time) */
static TJStatement set_next_at_stmt = {
	"INSERT INTO throttle_jobs.key_rate_state AS s (key, tokens, stamp, log_at, log_cost, next_at)"
	" VALUES ($1, 0, '2000-01-01 00:00:00+00', '{}', '{}', $2)"
	" ON CONFLICT (key) DO UPDATE SET next_at = EXCLUDED.next_at",
	2, {TEXTOID, TIMESTAMPTZOID}
};

static TJStatement next_at_stmt = {
	"SELECT s.next_at FROM throttle_jobs.key_rate_state s WHERE s.key = $1",
	1, {TEXTOID}, NULL, TJ_GENERIC
};

/* Rate keys whose waiting jobs are due by $1, earliest first */
static TJStatement due_stmt = {
	"SELECT s.key FROM throttle_jobs.key_rate_state s WHERE s.next_at <= $1"
	" ORDER BY s.next_at LIMIT " CppAsString2(DUE_FETCH),
	1, {TIMESTAMPTZOID}, NULL, TJ_GENERIC
};

/*
 * (In index order: with a LIMIT alone, a generic plan may expect a match
 * early in a table scan, as when one key has most of the waiting jobs.)
 */
static TJStatement has_waiting_stmt = {
	"SELECT 1 FROM throttle_jobs.job j WHERE j.blocked_key = $1 AND " WAITING
	" ORDER BY j.blocked_key, j.queue_id LIMIT 1",
	1, {TEXTOID}, NULL, TJ_GENERIC
};

/*
 * Parks the ready jobs of queue $4 that `cond` picks and nobody holds:
 * blocked_key $1, blocked_until $2, $3 for cond; `released` is the
 * assignment that clears released_at (empty on a 0.1.0 schema, which has
 * no such column: see tj_schema_has_released_at).
 */
#define PARK_SQL(cond, released) \
	"WITH l AS MATERIALIZED (" \
	"  SELECT j.id FROM throttle_jobs.job j" \
	"   WHERE " cond " AND j.queue_id = $4 AND j.state = 'available'" \
	"   FOR UPDATE SKIP LOCKED)" \
	" UPDATE throttle_jobs.job j" \
	"    SET state = 'throttled', blocked_key = $1, blocked_until = $2" released \
	"   FROM l WHERE j.id = l.id RETURNING j.queue_id"

/* A PARK_SQL statement NAME_stmt ($3 of type arg3), and its twin NAME_010_stmt for 0.1.0 */
#define PARK_STMTS(name, cond, arg3, options) \
	static TJStatement name##_stmt = { \
		PARK_SQL(cond, ", released_at = NULL"), \
		4, {TEXTOID, TIMESTAMPTZOID, arg3, INT4OID}, NULL, options}; \
	static TJStatement name##_010_stmt = { \
		PARK_SQL(cond, ""), \
		4, {TEXTOID, TIMESTAMPTZOID, arg3, INT4OID}, NULL, options}

/* The ready jobs of a blocked key in one queue ($3: now) */
PARK_STMTS(park_ckey, "j.concurrency_key = $1 AND j.run_at <= $3", TIMESTAMPTZOID, TJ_GENERIC);
PARK_STMTS(park_rkey, "j.rate_limit_key = $1 AND j.run_at <= $3", TIMESTAMPTZOID, TJ_GENERIC);

/* One job ($3: its id) */
PARK_STMTS(park_one, "j.id = $3", INT8OID, 0);

static TJStatement note_stmt = {
	"INSERT INTO throttle_jobs.key_recheck (key) VALUES ($1)",
	1, {TEXTOID}
};

static TJStatement take_notes_stmt = {
	"WITH d AS (DELETE FROM throttle_jobs.key_recheck r WHERE r.ctid = ANY (ARRAY("
	"   SELECT k.ctid FROM throttle_jobs.key_recheck k LIMIT " CppAsString2(NOTES_PER_LOOK)
	"    FOR UPDATE SKIP LOCKED)) RETURNING r.key)"
	" SELECT DISTINCT d.key FROM d",
	0, {InvalidOid}
};

/*
 * The keys with waiting jobs, in key order from the first that `first` (a
 * condition on j.blocked_key) admits: a loose index scan, one index probe
 * per key.  The statement's WHERE clause may go on.
 */
#define WAITING_KEYS_SQL(first) \
	"WITH RECURSIVE k AS (" \
	"  (SELECT j.blocked_key FROM throttle_jobs.job j WHERE " first " AND " WAITING \
	"    ORDER BY j.blocked_key LIMIT 1)" \
	"  UNION ALL" \
	"  SELECT (SELECT j.blocked_key FROM throttle_jobs.job j" \
	"           WHERE j.blocked_key > k.blocked_key AND " WAITING \
	"           ORDER BY j.blocked_key LIMIT 1)" \
	"    FROM k WHERE k.blocked_key IS NOT NULL)" \
	" SELECT k.blocked_key FROM k WHERE k.blocked_key IS NOT NULL"

/* Keys with waiting jobs after $1 */
static TJStatement waiting_keys_stmt = {
	WAITING_KEYS_SQL("j.blocked_key > $1") " LIMIT " CppAsString2(SWEEP_KEYS),
	1, {TEXTOID}
};

/* ---- helpers ---- */

/* Column 1 of every row of the current result, as C strings. */
static char **
result_strings(uint64 n)
{
	char	  **out = palloc(sizeof(char *) * (n + 1));

	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		out[i] = TextDatumGetCString(tj_get_datum(i, 1, &isnull));
	}
	return out;
}

/*
 * Keys noted by the current (sub)transaction: one note per key is enough
 * for everything it parks.  A rolled-back subtransaction's notes are gone,
 * so the list is kept per subtransaction.
 */
/*
 * What this transaction's enqueues learnt of a key, so that a batch of a
 * key's jobs costs O(1) statements per job (memo_get):
 *  - waiting: the key has waiting jobs (found once, or this transaction put
 *    one there): later jobs join the list behind them;
 *  - ready: how much this transaction made ready (jobs for a cap, cost
 *    units for a rate): no more than the key admits at once (its cap, its
 *    burst), or ENQUEUE_READY_MIN if more, is made ready, the rest joins
 *    the list: parking a backlog later would write every job twice and
 *    leave a dead ready-index entry per job that every reservation walks
 *    until vacuum;
 *  - next_at: the rate key's stored next_at, read once;
 *  - noted_subxid: the (sub)transaction that left a note for the key.
 * A subtransaction rolled back leaves it too pessimistic, never wrong: a
 * job that joins the list needlessly is noted, and released by the next
 * reservation.  Keys longer than TJ_MAX_KEY_LEN have no memo.
 */
typedef struct EnqueueMemo
{
	char		key[TJ_MAX_KEY_LEN + 1];	/* the hash key */
	bool		waiting_known;
	bool		waiting;
	bool		next_at_known;
	TimestampTz next_at;
	int64		ready;
	SubTransactionId noted_subxid;
} EnqueueMemo;

static HTAB *memo_htab = NULL;	/* in TopTransactionContext */
static LocalTransactionId memo_lxid = InvalidLocalTransactionId;

static EnqueueMemo *
memo_get(const char *key)
{
	EnqueueMemo *m;
	bool		found;

	if (strlen(key) > TJ_MAX_KEY_LEN)
		return NULL;
	if (memo_htab == NULL || memo_lxid != TJ_MY_LXID)
	{
		HASHCTL		ctl;

		ctl.keysize = TJ_MAX_KEY_LEN + 1;
		ctl.entrysize = sizeof(EnqueueMemo);
		ctl.hcxt = TopTransactionContext;
		memo_htab = hash_create("throttle_jobs enqueue memo", 16, &ctl,
								HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		memo_lxid = TJ_MY_LXID;
	}
	m = hash_search(memo_htab, key, HASH_ENTER, &found);
	if (!found)
	{
		m->waiting_known = false;
		m->waiting = false;
		m->next_at_known = false;
		m->next_at = 0;
		m->ready = 0;
		m->noted_subxid = InvalidSubTransactionId;
	}
	return m;
}

/*
 * Leaves a note (key_recheck) that the next reservation or maintain() is to
 * look at the key's waiting jobs; it commits with the caller's
 * (sub)transaction.  Once per key and subtransaction.
 */
static void
note_key(const char *key)
{
	Datum		values[1];
	EnqueueMemo *m = memo_get(key);

	if (m && m->noted_subxid == GetCurrentSubTransactionId())
		return;
	values[0] = CStringGetTextDatum(key);
	tj_execute(&note_stmt, values, NULL, false, 0, SPI_OK_INSERT);
	if (m)
		m->noted_subxid = GetCurrentSubTransactionId();
}

/* The key's next_at as stored (0: none), read without its mutex. */
static TimestampTz
stored_next_at(const char *key)
{
	Datum		values[1];
	bool		isnull;
	TimestampTz t;

	values[0] = CStringGetTextDatum(key);
	if (tj_execute_latest(&next_at_stmt, values, NULL, SPI_OK_SELECT) == 0)
		return 0;
	t = DatumGetTimestampTz(tj_get_datum(0, 1, &isnull));
	return isnull ? 0 : t;
}

static void
save_next_at(const char *key, TimestampTz next_at)
{
	Datum		values[2];
	char		nulls[2] = {' ', ' '};

	values[0] = CStringGetTextDatum(key);
	values[1] = TimestampTzGetDatum(next_at);
	nulls[1] = next_at == 0 ? 'n' : ' ';
	tj_execute_latest(&set_next_at_stmt, values, nulls, SPI_OK_INSERT);
}

/*
 * Whether the key has waiting jobs, for enqueue: looked up once per key and
 * transaction (a batch of jobs of one key probes the list once, however
 * many dead entries a long transaction leaves in it).
 */
static bool
has_waiting(const char *key, EnqueueMemo *m)
{
	Datum		values[1];
	bool		waiting;

	if (m && m->waiting_known)
		return m->waiting;
	values[0] = CStringGetTextDatum(key);
	waiting = tj_execute_latest(&has_waiting_stmt, values, NULL, SPI_OK_SELECT) > 0;
	if (m)
	{
		m->waiting_known = true;
		m->waiting = waiting;
	}
	return waiting;
}

/* One waiting job as a release reads it */
typedef struct Waiting
{
	int64		id;
	char	   *ckey;
	char	   *rkey;
	int32		cost;
} Waiting;

/* The best n (at most RELEASE_BATCH) waiting jobs of the key, into out[]. */
static int
fetch_waiting(const char *key, int n, Waiting *out)
{
	Datum		values[1];
	uint64		got;

	values[0] = CStringGetTextDatum(key);
	got = tj_execute_latest(&best_waiting_stmt, values, NULL, SPI_OK_SELECT);
	got = Min(got, (uint64) n);
	for (uint64 i = 0; i < got; i++)
	{
		bool		isnull;

		out[i].id = DatumGetInt64(tj_get_datum(i, 1, &isnull));
		out[i].ckey = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		out[i].rkey = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
		out[i].cost = DatumGetInt32(tj_get_datum(i, 4, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	return (int) got;
}

static int64
release_ids(const char *key, int64 *ids, int n, TimestampTz now)
{
	Datum		values[3];
	Datum	   *elems = palloc(sizeof(Datum) * n);

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	values[0] = PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = CStringGetTextDatum(key);
	values[2] = TimestampTzGetDatum(now);
	return (int64) tj_execute_latest(tj_schema_has_released_at() ? &release_stmt : &release_010_stmt,
									 values, NULL, SPI_OK_UPDATE);
}

/* Capped key: its free slots (see the file header). */
static int64
free_slots(const char *key, int32 cap, TimestampTz now)
{
	Datum		values[3];
	bool		isnull;
	int64		claimed;

	values[0] = CStringGetTextDatum(key);
	values[1] = Int64GetDatum(cap);
	values[2] = TimestampTzGetDatum(now - RELEASE_GRACE);
	tj_execute_latest(tj_schema_has_released_at() ? &claimed_stmt : &claimed_010_stmt,
					  values, NULL, SPI_OK_SELECT);
	claimed = DatumGetInt64(tj_get_datum(0, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return cap - claimed;
}

/*
 * Rate key: the jobs released recently and not reserved yet will take
 * their tokens soon; take them from *state first.
 */
static void
take_pending(const char *key, const TJKeyLimit *l, TJRateState *state, TimestampTz now)
{
	Datum		values[2];
	uint64		n;
	int32	   *costs;

	values[0] = CStringGetTextDatum(key);
	values[1] = TimestampTzGetDatum(now - RELEASE_GRACE);
	if (!tj_schema_has_released_at())
		return;
	n = tj_execute_latest(&pending_stmt, values, NULL, SPI_OK_SELECT);
	if (n == 0)
		return;
	costs = palloc(sizeof(int32) * n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		costs[i] = DatumGetInt32(tj_get_datum(i, 1, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	for (uint64 i = 0; i < n; i++)
	{
		TimestampTz next_at;

		(void) tj_rate_try(l, state, now, costs[i], &next_at);
	}
	pfree(costs);
}

/* ---- releasing ---- */

/*
 * Releases the best waiting jobs of `key` that it admits now, in list
 * order, stopping at the first one it does not admit: as many as the cap
 * has free slots (for jobs whose concurrency key it is), as many as the
 * rate's tokens pay for (for jobs whose rate key it is), at most
 * RELEASE_MAX.  A key without a limit releases RELEASE_MAX.  For a rate
 * key, sets when its waiting jobs are due next; *wrote_state tells whether
 * key_rate_state was written.  The caller holds the key mutex and is
 * connected to SPI.  Returns how many jobs were released.
 */
static int64
release_key(const char *key, const TJKeyLimit *l, TimestampTz now, bool *wrote_state)
{
	bool		capped = l->limited && l->max_running > 0;
	bool		rated = l->limited && l->has_rate;
	int64		slots = 0;
	TJRateState state;
	TimestampTz due = 0;		/* rate: when to look again; 0: not by time */
	int64		passed = 0;
	int64		released = 0;
	bool		stopped = false;
	bool		more = false;
	Waiting    *batch;
	int64	   *ids;

	*wrote_state = false;
	if (capped)
	{
		slots = free_slots(key, l->max_running, now);
		if (slots <= 0 && !rated)
			return 0;
	}
	if (rated)
	{
		tj_load_rate(key, &l->rate, &state);
		take_pending(key, l, &state, now);
	}

	batch = palloc(sizeof(Waiting) * RELEASE_BATCH);
	ids = palloc(sizeof(int64) * RELEASE_BATCH);
	while (!stopped)
	{
		int			want = (int) Min(RELEASE_BATCH, RELEASE_MAX - passed);
		int			n;
		int			k = 0;

		if (want <= 0)
		{
			more = true;
			break;
		}
		if (capped && !rated)
			want = (int) Min(want, Max(slots, 0));
		if (want <= 0)
			break;
		n = fetch_waiting(key, want, batch);
		for (int i = 0; i < n; i++)
		{
			Waiting    *w = &batch[i];
			bool		uses_slot = capped && w->ckey && strcmp(w->ckey, key) == 0;
			bool		uses_rate = rated && w->rkey && strcmp(w->rkey, key) == 0;
			TimestampTz next_at;

			if (uses_slot && slots <= 0)
			{
				stopped = true;
				break;
			}
			if (uses_rate && !tj_rate_try(l, &state, now, w->cost, &next_at))
			{
				if (next_at == DT_NOEND)
				{
					Datum		values[2];

					values[0] = Int64GetDatum(w->id);
					values[1] = CStringGetTextDatum(key);
					tj_execute_latest(&oversized_stmt, values, NULL, SPI_OK_UPDATE);
					continue;
				}
				due = next_at;
				stopped = true;
				break;
			}
			ids[k++] = w->id;
			if (uses_slot)
				slots--;
		}
		passed += k;
		if (k > 0)
		{
			int64		r = release_ids(key, ids, k, now);

			released += r;
			if (r < k)
				stopped = true; /* some are being cancelled: look again later */
		}
		if (n < want)
			break;				/* no more waiting (in queues not paused) */
	}

	if (rated)
	{
		if (more)
			due = now;
		if (due != state.next_at)
		{
			save_next_at(key, due);
			*wrote_state = true;
		}
		tj_free_rate_state(&state);
	}
	else if (more)
		note_key(key);
	return released;
}

/*
 * Looks at the key's waiting jobs under its mutex, taken without waiting,
 * and releases what the key admits now.  The mutex is kept to the end of
 * the transaction when `freed` (the caller freed a slot of the key that
 * others cannot see until it commits: a reservation parking jobs meanwhile,
 * blind to that slot, could leave them waiting beside it; jobs released
 * here are no safe claim on it, as such a reservation may park them again)
 * or when the rate state was written; otherwise it is given back at once.
 * Returns how many jobs were released, or -1 when the mutex is busy.  The
 * caller must be connected to SPI.
 */
static int64
look_at_key(TJLimitCache *cache, const char *key, TimestampTz now, bool freed)
{
	TJKeyLimit *l = tj_key_limit(cache, key);
	bool		wrote;
	int64		n;

	if (!tj_try_lock_key(key))
		return -1;
	n = release_key(key, l, now, &wrote);
	if (!freed && !wrote)
		tj_unlock_key(key);
	return n;
}

/* ---- the hooks of reserve, complete, enqueue and maintain ---- */

/*
 * A running job of concurrency key `ckey` stopped running (completed,
 * failed, snoozed, reaped): if the key has a cap, its free slots go to its
 * best waiting jobs now, in this transaction, which keeps the key's mutex
 * to its end; if the mutex is busy, a note hands the work to the next
 * reservation.  Never waits.  The caller must be connected to SPI.
 */
void
tj_slot_freed(const char *ckey)
{
	TJLimitCache cache = {0};
	TJKeyLimit *l = tj_key_limit(&cache, ckey);

	if (!(l->limited && l->max_running > 0))
		return;
	if (look_at_key(&cache, ckey, GetCurrentTransactionStartTimestamp(), true) < 0)
		note_key(ckey);
}

/*
 * At the start of a reservation (when limits exist): takes the notes left
 * since the last one, and releases the jobs of the rate keys that are due,
 * a few of each.  Keys busy right now are noted again (notes) or left for
 * the next reservation (due keys).  The caller must be connected to SPI.
 */
void
tj_release_pending(TJLimitCache *cache, TimestampTz now)
{
	uint64		n;
	char	  **keys;
	Datum		values[1];
	int			done = 0;

	n = tj_execute(&take_notes_stmt, NULL, NULL, false, 0, SPI_OK_SELECT);
	if (n > 0)
	{
		keys = result_strings(n);
		SPI_freetuptable(SPI_tuptable);
		for (uint64 i = 0; i < n; i++)
			if (look_at_key(cache, keys[i], now, false) < 0)
				note_key(keys[i]);
	}

	values[0] = TimestampTzGetDatum(now);
	n = tj_execute(&due_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	if (n == 0)
		return;
	keys = result_strings(n);
	SPI_freetuptable(SPI_tuptable);
	for (uint64 i = 0; i < n && done < DUE_PER_LOOK; i++)
	{
		TJKeyLimit *l = tj_key_limit(cache, keys[i]);

		/* a rate limit that is gone leaves nothing to be due */
		if (!(l->limited && l->has_rate))
		{
			if (tj_try_lock_key(keys[i]))
				save_next_at(keys[i], 0);	/* (the mutex stays: we wrote) */
			continue;
		}
		if (look_at_key(cache, keys[i], now, false) >= 0)
			done++;
	}
}

/*
 * A reservation found `key` blocked (a cap, or a rate until `until`) while
 * it holds the key's mutex: parks the key's ready jobs in the reserving
 * queue.  The caller must be connected to SPI.
 */
void
tj_park_ready(const char *key, bool cap, TimestampTz until, int32 queue_id, TimestampTz now)
{
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = CStringGetTextDatum(key);
	values[1] = TimestampTzGetDatum(until);
	nulls[1] = cap ? 'n' : ' ';
	values[2] = TimestampTzGetDatum(now);
	values[3] = Int32GetDatum(queue_id);
	if (tj_schema_has_released_at())
		tj_execute(cap ? &park_ckey_stmt : &park_rkey_stmt, values, nulls, false, 0,
				   SPI_OK_UPDATE_RETURNING);
	else
		tj_execute(cap ? &park_ckey_010_stmt : &park_rkey_010_stmt, values, nulls, false, 0,
				   SPI_OK_UPDATE_RETURNING);
	tj_stats_throttled_rows(key, cap, SPI_tuptable, SPI_processed);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * A reservation found job `id` too big for its rate key `key`, ever: it
 * waits outside the key's list until the limit changes.
 */
void
tj_park_oversized(int64 id, const char *key, int32 queue_id)
{
	Datum		values[4];

	values[0] = CStringGetTextDatum(key);
	values[1] = TimestampTzGetDatum(DT_NOEND);
	values[2] = Int64GetDatum(id);
	values[3] = Int32GetDatum(queue_id);
	tj_execute(tj_schema_has_released_at() ? &park_one_stmt : &park_one_010_stmt,
			   values, NULL, false, 0, SPI_OK_UPDATE_RETURNING);
	tj_stats_throttled_rows(key, false, SPI_tuptable, SPI_processed);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Whether a job about to be enqueued (ready now) should wait in a key's
 * list: its capped concurrency key has waiting jobs, is at its cap, or was
 * given by this transaction as many ready jobs as its cap (or
 * ENQUEUE_READY_MIN); or its rate key has waiting jobs, refused an
 * admission that is not due yet, or was given by this transaction as much
 * cost as it admits at once (its burst, or its rate per period, or
 * ENQUEUE_READY_MIN; one job at least).  Sets *blocked_key and, for a
 * rate, *blocked_until, and notes the key (see the file header): the state
 * was read without the key's mutex, and a slot freed (or a token earned)
 * before our commit must still reach the job.  The caller must be
 * connected to SPI.
 */
bool
tj_enqueue_waits(TJLimitCache *cache, const char *ckey, const char *rkey, int32 cost,
				 TimestampTz now, const char **blocked_key, TimestampTz *blocked_until)
{
	EnqueueMemo *cm = NULL;
	EnqueueMemo *rm = NULL;

	*blocked_key = NULL;
	*blocked_until = 0;
	if (ckey)
	{
		TJKeyLimit *cl = tj_key_limit(cache, ckey);

		if (cl->limited && cl->max_running > 0)
		{
			cm = memo_get(ckey);
			if (has_waiting(ckey, cm) ||
				(cm && cm->ready >= Max(cl->max_running, ENQUEUE_READY_MIN)) ||
				tj_count_running(ckey, cl->max_running) >= cl->max_running)
			{
				*blocked_key = ckey;
				goto wait;
			}
		}
	}
	if (rkey)
	{
		TJKeyLimit *rl = tj_key_limit(cache, rkey);

		if (rl->limited && rl->has_rate)
		{
			TimestampTz next_at;
			int64		at_once = Max(rl->rate.burst > 0 ? rl->rate.burst : rl->rate.max,
								  ENQUEUE_READY_MIN);

			rm = memo_get(rkey);
			if (rm && rm->next_at_known)
				next_at = rm->next_at;
			else
			{
				next_at = stored_next_at(rkey);
				if (rm)
				{
					rm->next_at_known = true;
					rm->next_at = next_at;
				}
			}
			if (next_at > now || has_waiting(rkey, rm) ||
				(rm && rm->ready > 0 && rm->ready + cost > at_once))
			{
				*blocked_key = rkey;
				*blocked_until = Max(next_at, now);
				goto wait;
			}
		}
	}
	/* ready: it takes a slot and some of the tokens */
	if (cm)
		cm->ready++;
	if (rm)
		rm->ready += cost;
	return false;

wait:
	{
		EnqueueMemo *m = (*blocked_key == ckey) ? cm : rm;

		if (m)
		{
			m->waiting_known = true;
			m->waiting = true;
		}
		note_key(*blocked_key);
	}
	return true;
}

/* Where the next maintain() sweep of this session resumes ("": the start) */
static char *sweep_after = NULL;

/*
 * maintain(): looks at up to SWEEP_KEYS keys with waiting jobs (resuming
 * where the last pass of the session stopped), after the notes: whatever
 * the event-driven releases left (a released job no one reserved, a queue
 * resumed, the rest of a dropped limit's jobs) is released here.  Rate keys
 * not due yet, and keys busy right now, are left for later.  Returns how
 * many jobs were released.
 */
int64
tj_release_throttled(TimestampTz now)
{
	TJLimitCache cache = {0};
	Datum		values[2];
	uint64		n;
	uint64		notes;
	char	  **keys;
	int64		released = 0;
	MemoryContext old;

	notes = tj_execute(&take_notes_stmt, NULL, NULL, false, 0, SPI_OK_SELECT);
	if (notes > 0)
	{
		keys = result_strings(notes);
		SPI_freetuptable(SPI_tuptable);
		for (uint64 i = 0; i < notes; i++)
		{
			int64		r = look_at_key(&cache, keys[i], now, false);

			if (r < 0)
				note_key(keys[i]);
			else
				released += r;
		}
	}

	values[0] = CStringGetTextDatum(sweep_after ? sweep_after : "");
	n = tj_execute_latest(&waiting_keys_stmt, values, NULL, SPI_OK_SELECT);
	keys = result_strings(n);
	SPI_freetuptable(SPI_tuptable);
	for (uint64 i = 0; i < n; i++)
	{
		TJKeyLimit *l = tj_key_limit(&cache, keys[i]);
		int64		r;

		if (l->limited && l->has_rate)
		{
			TimestampTz next_at = stored_next_at(keys[i]);

			if (next_at > now)
				continue;
		}
		r = look_at_key(&cache, keys[i], now, false);
		if (r > 0)
			released += r;
	}

	/* resume after the last key, or from the start when the end was reached */
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (sweep_after)
		pfree(sweep_after);
	sweep_after = n == SWEEP_KEYS ? pstrdup(keys[n - 1]) : NULL;
	MemoryContextSwitchTo(old);
	return released;
}

/* ---- after a limit changed ---- */

/*
 * The keys with rate state or outcomes that limit key $1 covers; of them,
 * reset_rate_keys forgets those whose rate it governs (tj_rate_governed_by).
 */
static TJStatement rate_keys_stmt = {
	"SELECT s.key FROM throttle_jobs.key_rate_state s WHERE throttle_jobs._key_matches(s.key, $1)"
	" UNION SELECT o.key FROM throttle_jobs.key_outcome o WHERE throttle_jobs._key_matches(o.key, $1)",
	1, {TEXTOID}
};

static TJStatement reset_rate_stmt = {
	"WITH s AS (DELETE FROM throttle_jobs.key_rate_state s WHERE s.key = ANY ($1))"
	" DELETE FROM throttle_jobs.key_outcome o WHERE o.key = ANY ($1)",
	1, {TEXTARRAYOID}
};

/* Forgets the rate state and outcomes of the keys whose rate limit_key governs */
static void
reset_rate_keys(Datum limit_key)
{
	Datum		values[1] = {limit_key};
	const char *lk = TextDatumGetCString(limit_key);
	uint64		n = tj_execute(&rate_keys_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	char	  **keys = result_strings(n);
	Datum	   *governed = palloc(sizeof(Datum) * Max(n, 1));
	int			ngoverned = 0;

	SPI_freetuptable(SPI_tuptable);
	for (uint64 i = 0; i < n; i++)
		if (tj_rate_governed_by(keys[i], lk))
			governed[ngoverned++] = CStringGetTextDatum(keys[i]);
	if (ngoverned == 0)
		return;
	values[0] = PointerGetDatum(construct_array(governed, ngoverned, TEXTOID, -1, false,
												TYPALIGN_INT));
	tj_execute(&reset_rate_stmt, values, NULL, false, 0, SPI_OK_DELETE);
}

/* Jobs waiting outside the lists (oversized) of keys under limit key $1 */
static TJStatement release_oversized_stmt = {
	"UPDATE throttle_jobs.job j"
	"   SET state = 'available', blocked_key = NULL, blocked_until = NULL"
	" WHERE j.state = 'throttled' AND j.blocked_until = 'infinity'::pg_catalog.timestamptz"
	"   AND throttle_jobs._key_matches(j.blocked_key, $1)",
	1, {TEXTOID}
};

/* Keys with waiting jobs that limit key $1 (a key, or a template) covers */
static TJStatement covered_keys_stmt = {
	WAITING_KEYS_SQL("j.blocked_key IS NOT NULL")
	" AND throttle_jobs._key_matches(k.blocked_key, $1)",
	1, {TEXTOID}
};

/*
 * SQL: _limit_changed(limit_key, reset_rate), called by set_concurrency_limit,
 * set_rate_limit and drop_limit once key_limit holds the new limit.  When
 * the rate itself changed, forgets the rate state of the keys this limit
 * governs (not of keys that a more specific limit governs).  Then each key
 * it covers releases what the new limit admits now (a key without a limit
 * any more: RELEASE_MAX now, the rest by the next reservations and
 * maintain()), and jobs that were too big for a rate go back to be judged
 * again.  A key busy right now is noted for the next reservation.
 */
Datum
throttle_jobs_limit_changed(PG_FUNCTION_ARGS)
{
	TJLimitCache cache = {0};
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	Datum		values[1];
	uint64		n;
	char	  **keys;

	tj_require_not_null(fcinfo, 0, "limit key");
	tj_require_not_null(fcinfo, 1, "reset_rate");
	values[0] = PG_GETARG_DATUM(0);

	SPI_connect();
	tj_limits_changed();
	if (PG_GETARG_BOOL(1))
	{
		reset_rate_keys(values[0]);
	}
	(void) tj_dead_letter_oversized(text_to_cstring(PG_GETARG_TEXT_PP(0)), now);
	tj_execute(&release_oversized_stmt, values, NULL, false, 0, SPI_OK_UPDATE);
	n = tj_execute_latest(&covered_keys_stmt, values, NULL, SPI_OK_SELECT);
	keys = result_strings(n);
	SPI_freetuptable(SPI_tuptable);
	/* (a raised cap frees slots that reservations cannot see yet) */
	for (uint64 i = 0; i < n; i++)
		if (look_at_key(&cache, keys[i], now, true) < 0)
			note_key(keys[i]);
	SPI_finish();
	PG_RETURN_VOID();
}
