/*-------------------------------------------------------------------------
 *
 * limits.c
 *		Per-key limits: concurrency caps and rate limits, the admission
 *		check that reserve() makes for each job, and try_acquire()/acquire()
 *		for any SQL.  The arithmetic of the rates themselves is rate.c's.
 *
 * Locking.  Each concrete key has a mutex: a heavyweight lock on the object
 * (throttle_jobs.key_limit, hash of the key), taken in ExclusiveLock with
 * ConditionalLockDatabaseObject and held to the end of the transaction.
 * Whoever admits a job for a key (or takes its tokens) holds it, so:
 *  - a cap is checked by counting the key's running jobs under a fresh
 *    snapshot: every other admission for the key has committed or rolled
 *    back before we get the mutex, so the count is exact, and completions
 *    in flight only make it conservative;
 *  - rate state rows (key_rate_state) are read and written only under it;
 *  - nobody ever waits for it (a reservation skips a job whose key is
 *    busy), so no two reservations can deadlock, whatever order they meet
 *    keys in.  Keys that share a hash merely skip each other more often.
 * A finishing job just stops counting.  Parking and releasing the jobs that
 * wait for a key live in parking.c.  A job whose cost exceeds its rate
 * limit's capacity is refused at enqueue, and dead-lettered when a changed
 * limit makes it so (tj_check_cost, tj_dead_letter_oversized).  try_acquire()/acquire() decide in a
 * subtransaction and roll it back when they refuse, so a refused caller
 * holds neither the mutex nor a rate state row (see acquire_once).  On a
 * key with a cap N and no rate limit, a granted caller gives the mutex back
 * and holds one of the key's N holder slots instead (count_holders), so N
 * transactions may hold the key at once (or sessions: try_acquire_session,
 * release); the cap check of an admission counts those holders with the
 * running jobs, and a key whose holders fill its cap is busy (skipped).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_try_acquire);
PG_FUNCTION_INFO_V1(throttle_jobs_acquire);
PG_FUNCTION_INFO_V1(throttle_jobs_try_acquire_session);
PG_FUNCTION_INFO_V1(throttle_jobs_release);
PG_FUNCTION_INFO_V1(throttle_jobs_governing_limit);
PG_FUNCTION_INFO_V1(throttle_jobs_rate_governed_by);

/* ---- limit lookup ---- */

static Oid	key_limit_relid(void);

/*
 * The limits among the keys $1 (a key and its templates): the rule that
 * picks the governing ones is governs_before.
 */
static TJStatement lookup_limit_stmt = {
	"SELECT l.key, l.max_running, l.max_per_period, l.period, l.algorithm, l.burst,"
	"       l.adaptive, l.error_threshold, l.min_factor"
	"  FROM throttle_jobs.key_limit l WHERE l.key = ANY ($1)",
	1, {TEXTARRAYOID}
};

/*
 * The rule "the most specific limit governs": whether limit key a, set on
 * concrete key `key` or a template that covers it, governs the key before
 * limit key b (another such): a limit set on the key itself first, then
 * the longest template ("prefix*").  The cap and the rate are governed
 * apart: the first limit with a cap governs the cap, the first one with a
 * rate the rate.
 */
static bool
governs_before(const char *key, const char *a, const char *b)
{
	if (strcmp(a, key) == 0)
		return true;
	if (strcmp(b, key) == 0)
		return false;
	return strlen(a) > strlen(b);
}

/*
 * The limits that govern a concrete key (see governs_before), read with
 * the latest snapshot.  The lookup probes the primary key with the key and
 * each of its prefixes + '*', so it costs O(key length) index probes
 * however many limits exist.  cap_key and rate_key (each may be NULL) get
 * the governing limits' own keys (the key or a template; NULL where none
 * governs), palloc'd.
 */
static void
lookup_limit(const char *key, TJKeyLimit *out, char **cap_key, char **rate_key)
{
	int			len = strlen(key);
	Datum	   *probes = palloc(sizeof(Datum) * (len + 1));
	int			n = 0;
	Datum		values[1];
	bool		isnull;
	uint64		rows;
	char	   *cap_by = NULL;
	char	   *rate_by = NULL;
	uint64		rate_row = 0;

	probes[n++] = CStringGetTextDatum(key);
	for (int i = 0; i <= len; i += pg_mblen(key + i))
	{
		if (i == 0)
			continue;
		probes[n++] = PointerGetDatum(cstring_to_text(psprintf("%.*s*", i, key)));
	}
	values[0] = PointerGetDatum(construct_array(probes, n, TEXTOID, -1, false, TYPALIGN_INT));

	memset(out, 0, sizeof(*out));
	out->key = pstrdup(key);
	rows = tj_execute_latest(&lookup_limit_stmt, values, NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < rows; r++)
	{
		char	   *lkey = TextDatumGetCString(tj_get_datum(r, 1, &isnull));
		int32		max_running = DatumGetInt32(tj_get_datum(r, 2, &isnull));

		if (!isnull && (cap_by == NULL || governs_before(key, lkey, cap_by)))
		{
			cap_by = lkey;
			out->max_running = max_running;
		}
		(void) tj_get_datum(r, 3, &isnull);
		if (!isnull && (rate_by == NULL || governs_before(key, lkey, rate_by)))
		{
			rate_by = lkey;
			rate_row = r;
		}
	}
	if (rate_by != NULL)
	{
		out->has_rate = true;
		out->rate.max = DatumGetInt32(tj_get_datum(rate_row, 3, &isnull));
		out->rate.period = tj_interval_usecs(DatumGetIntervalP(tj_get_datum(rate_row, 4, &isnull)));
		out->rate.algorithm = tj_rate_algorithm(TextDatumGetCString(tj_get_datum(rate_row, 5, &isnull)));
		out->rate.burst = DatumGetInt32(tj_get_datum(rate_row, 6, &isnull));
		if (isnull)
			out->rate.burst = 0;
		out->adaptive = DatumGetBool(tj_get_datum(rate_row, 7, &isnull));
		out->error_threshold = DatumGetFloat8(tj_get_datum(rate_row, 8, &isnull));
		out->min_factor = DatumGetFloat8(tj_get_datum(rate_row, 9, &isnull));
	}
	out->limited = out->max_running > 0 || out->has_rate;
	if (cap_key)
		*cap_key = cap_by;
	if (rate_key)
		*rate_key = rate_by;
	SPI_freetuptable(SPI_tuptable);
}

/*
 * SQL: _governing_limit(key text, rate boolean) returns text: the own key
 * of the limit that governs the rate (rate) or the cap (not rate) of
 * concrete key `key`, or NULL when none does.  For the views and
 * explain_job.
 */
Datum
throttle_jobs_governing_limit(PG_FUNCTION_ARGS)
{
	TJKeyLimit	limit;
	char	   *cap_key;
	char	   *rate_key;
	char	   *governing;

	SPI_connect();
	lookup_limit(text_to_cstring(PG_GETARG_TEXT_PP(0)), &limit, &cap_key, &rate_key);
	governing = PG_GETARG_BOOL(1) ? rate_key : cap_key;
	if (governing != NULL)
		governing = strcpy(SPI_palloc(strlen(governing) + 1), governing);
	SPI_finish();
	if (governing == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(governing));
}

/*
 * Whether the rate of concrete key k is governed (or, lk just dropped,
 * was) by limit key lk: lk covers k and no limit with a rate that governs
 * before it exists.  Connected to SPI by the caller.  SQL:
 * _rate_governed_by(k text, lk text) returns boolean.
 */
bool
tj_rate_governed_by(const char *key, const char *lk)
{
	size_t		lklen = strlen(lk);
	TJKeyLimit	limit;
	char	   *rate_key;

	/* (the coverage rule of _key_matches: the key itself, or a template's prefix) */
	if (strcmp(key, lk) != 0 &&
		!(lklen > 0 && lk[lklen - 1] == '*' && strncmp(key, lk, lklen - 1) == 0))
		return false;
	lookup_limit(key, &limit, NULL, &rate_key);
	return rate_key == NULL || strcmp(rate_key, lk) == 0 || !governs_before(key, rate_key, lk);
}

Datum
throttle_jobs_rate_governed_by(PG_FUNCTION_ARGS)
{
	bool		governed;

	SPI_connect();
	governed = tj_rate_governed_by(text_to_cstring(PG_GETARG_TEXT_PP(0)),
								   text_to_cstring(PG_GETARG_TEXT_PP(1)));
	SPI_finish();
	PG_RETURN_BOOL(governed);
}

/*
 * Limits looked up by this backend, kept across calls and transactions:
 * every change of key_limit goes through _limit_changed, which sends a
 * relcache invalidation of key_limit, and the callback below forgets them
 * all (as it does on any invalidation of the table, or of every relation).
 * A transaction sees a change committed before it started, and its own.
 */
typedef struct CachedLimit
{
	char		key[TJ_MAX_KEY_LEN + 1];	/* hash key */
	TJKeyLimit	limit;			/* (limit.key points to key above) */
} CachedLimit;

#define LIMIT_CACHE_MAX 10000	/* keys kept; beyond, the cache starts afresh */

static HTAB *limit_cache = NULL;
static int	limits_exist_cached = -1;	/* -1: unknown */
static Oid	limit_cache_relid = InvalidOid;
static bool limit_callback_set = false;

static void
forget_limits(Datum arg, Oid relid)
{
	if (OidIsValid(relid) && relid != limit_cache_relid)
		return;
	if (limit_cache)
		hash_destroy(limit_cache);
	limit_cache = NULL;
	limits_exist_cached = -1;
	limit_cache_relid = InvalidOid;
}

/* A rolled-back change of key_limit may have been looked up: forget it. */
static void
forget_limits_at_abort(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		forget_limits((Datum) 0, InvalidOid);
}

static void
forget_limits_at_subabort(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		forget_limits((Datum) 0, InvalidOid);
}

static HTAB *
limit_cache_table(void)
{
	HASHCTL		ctl;

	if (!limit_callback_set)
	{
		CacheRegisterRelcacheCallback(forget_limits, (Datum) 0);
		RegisterXactCallback(forget_limits_at_abort, NULL);
		RegisterSubXactCallback(forget_limits_at_subabort, NULL);
		limit_callback_set = true;
	}
	if (!OidIsValid(limit_cache_relid))
	{
		forget_limits((Datum) 0, InvalidOid);
		limit_cache_relid = key_limit_relid();
	}
	if (limit_cache == NULL)
	{
		ctl.keysize = TJ_MAX_KEY_LEN + 1;
		ctl.entrysize = sizeof(CachedLimit);
		limit_cache = hash_create("throttle_jobs limits", 256, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	return limit_cache;
}

/*
 * Tells every backend (and this one, at once) that key_limit changed: they
 * forget the limits they looked up.  Called by _limit_changed.
 */
void
tj_limits_changed(void)
{
	forget_limits((Datum) 0, InvalidOid);
	CacheInvalidateRelcacheByRelid(key_limit_relid());
}

/* The limit of `key`, from the caches or looked up (and cached). */
TJKeyLimit *
tj_key_limit(TJLimitCache *cache, const char *key)
{
	TJKeyLimit *out;
	CachedLimit *c;
	bool		found;

	for (int i = 0; i < cache->n; i++)
		if (strcmp(cache->items[i].key, key) == 0)
			return &cache->items[i];
	if (cache->n == cache->size)
	{
		cache->size = Max(16, cache->size * 2);
		cache->items = cache->items
			? repalloc(cache->items, sizeof(TJKeyLimit) * cache->size)
			: palloc(sizeof(TJKeyLimit) * cache->size);
	}
	out = &cache->items[cache->n++];
	if (strlen(key) <= TJ_MAX_KEY_LEN &&
		(c = hash_search(limit_cache_table(), key, HASH_FIND, NULL)) != NULL)
	{
		*out = c->limit;
		out->key = pstrdup(key);
		return out;
	}
	lookup_limit(key, out, NULL, NULL);
	if (strlen(key) <= TJ_MAX_KEY_LEN)
	{
		if (hash_get_num_entries(limit_cache_table()) >= LIMIT_CACHE_MAX)
			forget_limits((Datum) 0, InvalidOid);
		c = hash_search(limit_cache_table(), key, HASH_ENTER, &found);
		c->limit = *out;
		c->limit.key = c->key;
	}
	return out;
}

static TJStatement any_limit_stmt = {
	"SELECT 1 FROM throttle_jobs.key_limit LIMIT 1", 0, {InvalidOid}
};

/* Whether any limit is defined at all (none: every key is free). */
bool
tj_limits_exist(void)
{
	(void) limit_cache_table();
	if (limits_exist_cached < 0)
		limits_exist_cached = tj_execute_latest(&any_limit_stmt, NULL, NULL, SPI_OK_SELECT) > 0;
	return limits_exist_cached > 0;
}

/* ---- the key mutex ---- */

static Oid
key_limit_relid(void)
{
	Oid			relid;

	if (OidIsValid(limit_cache_relid))
		return limit_cache_relid;
	relid = get_relname_relid("key_limit", get_namespace_oid("throttle_jobs", false));

	if (!OidIsValid(relid))
		elog(ERROR, "throttle_jobs: table throttle_jobs.key_limit is missing");
	return relid;
}

/* Takes the key's mutex (to transaction end) if nobody holds it. */
bool
tj_try_lock_key(const char *key)
{
	return ConditionalLockDatabaseObject(key_limit_relid(),
										 DatumGetUInt32(hash_any((const unsigned char *) key,
																 strlen(key))),
										 0, ExclusiveLock);
}

/*
 * Gives back one hold of the key's mutex before the transaction ends.  Only
 * for holders that admitted nothing under it: releasing capacity early is
 * safe, taking it is not (a cap count must see the admission committed).
 * A hold taken earlier in the transaction (by an admission) stays.
 */
void
tj_unlock_key(const char *key)
{
	UnlockDatabaseObject(key_limit_relid(),
						 DatumGetUInt32(hash_any((const unsigned char *) key, strlen(key))),
						 0, ExclusiveLock);
}

/* ---- holders of a capped key (try_acquire/acquire) ---- */

/*
 * A transaction that try_acquire() admits on a key with a concurrency cap
 * N (and no rate limit) holds one of the key's N slots to its end instead
 * of its mutex; try_acquire_session() holds one until release(key) or the
 * session ends.  A slot is an ExclusiveLock on an advisory lock tag
 * (database, key_limit, hash of the key, 2 + slot), slots 1..N (at most
 * HOLDER_SLOTS), and a holder also holds the key's holder mark (the same
 * tag, HOLDER_MARK) in ShareLock, which says that the key has holders at
 * all.  Advisory tags, because their lock method keeps session locks when
 * a transaction aborts; the last field, above the 1 and 2 that
 * pg_advisory_lock() uses, keeps them apart from SQL's advisory locks.
 * Its running jobs and its holders together stay within N: both are
 * counted under the mutex (tj_admit), and a slot, unlike a job, counts from
 * the moment it is taken.
 */
#define HOLDER_MARK		PG_UINT16_MAX
#define HOLDER_SLOTS	(PG_UINT16_MAX - 3)

static void
holder_tag(LOCKTAG *tag, const char *key, int32 slot)
{
	uint32		hash = DatumGetUInt32(hash_any((const unsigned char *) key, strlen(key)));

	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, key_limit_relid(), hash,
						 slot == HOLDER_MARK ? HOLDER_MARK : (uint16) (slot + 2));
}

/* the first free slot that the last count_holders() saw (0: none) */
static int32 admit_free_slot = 0;

/*
 * How many slots of the key other transactions or sessions hold, counting
 * stops at `enough`; remembers the first free slot in admit_free_slot.
 * Never waits: a slot is probed with a conditional lock, given back at
 * once.  Our own slot is not counted, and is the one remembered (a holder
 * that asks again keeps one slot).
 */
static int32
count_holders(const char *key, int32 cap, int32 enough)
{
	int32		slots = Min(cap, HOLDER_SLOTS);
	int32		held = 0;
	LOCKTAG		tag;

	admit_free_slot = 0;
	holder_tag(&tag, key, HOLDER_MARK);
	if (!tj_lock_held_by_me(&tag, ShareLock) &&
		LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL)
	{
		/* nobody (else) holds a slot: the common case costs one lock */
		LockRelease(&tag, ExclusiveLock, false);
		admit_free_slot = 1;
		return 0;
	}
	for (int32 i = 1; i <= slots && held < enough; i++)
	{
		holder_tag(&tag, key, i);
		if (tj_lock_held_by_me(&tag, ExclusiveLock))
			admit_free_slot = i;	/* ours: taken again, not a second one */
		else if (LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL)
		{
			LockRelease(&tag, ExclusiveLock, false);
			if (admit_free_slot == 0)
				admit_free_slot = i;
		}
		else
			held++;
	}
	/* a cap above HOLDER_SLOTS: the slots beyond are never taken */
	return held;
}

/* the slots this session holds beyond its transactions (try_acquire_session) */
typedef struct SessionHold
{
	char	   *key;			/* NULL: a free entry */
	int32		slot;
} SessionHold;

static SessionHold *session_holds = NULL;
static int	n_session_holds = 0;

/*
 * This session's entry for key, or NULL.  An entry whose slot is no longer
 * held (pg_advisory_unlock_all() and DISCARD ALL give back every session
 * lock of the advisory lock method, ours too) is forgotten.
 */
static SessionHold *
session_hold(const char *key)
{
	for (int i = 0; i < n_session_holds; i++)
		if (session_holds[i].key && strcmp(session_holds[i].key, key) == 0)
		{
			LOCKTAG		tag;

			holder_tag(&tag, key, session_holds[i].slot);
			if (tj_lock_held_by_me(&tag, ExclusiveLock))
				return &session_holds[i];
			pfree(session_holds[i].key);
			session_holds[i].key = NULL;
			return NULL;
		}
	return NULL;
}

/* a free entry (made room for in TopMemoryContext before any lock is taken) */
static SessionHold *
session_hold_free_entry(void)
{
	for (int i = 0; i < n_session_holds; i++)
		if (session_holds[i].key == NULL)
			return &session_holds[i];
	if (session_holds == NULL)
		session_holds = MemoryContextAllocZero(TopMemoryContext, sizeof(SessionHold) * 4);
	else if (n_session_holds % 4 == 0)
	{
		session_holds = repalloc(session_holds, sizeof(SessionHold) * (n_session_holds + 4));
		memset(&session_holds[n_session_holds], 0, sizeof(SessionHold) * 4);
	}
	return &session_holds[n_session_holds++];
}

/*
 * Takes slot admit_free_slot of the key and its holder mark, held to the
 * end of the transaction, or with `session` until release() or the end of
 * the session.  Only right after tj_admit granted the key (its mutex held,
 * so nobody took the slot since).  Returns false if no slot is free (a cap
 * above HOLDER_SLOTS, all slots held).
 */
static bool
take_holder_slot(const char *key, bool session)
{
	LOCKTAG		tag;
	SessionHold *h = NULL;
	char	   *kcopy = NULL;

	if (admit_free_slot == 0)
		return false;
	if (session)
	{
		h = session_hold_free_entry();
		kcopy = MemoryContextStrdup(TopMemoryContext, key);
	}
	holder_tag(&tag, key, admit_free_slot);
	if (LockAcquire(&tag, ExclusiveLock, session, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		if (kcopy)
			pfree(kcopy);
		return false;
	}
	/* the mark in ShareLock: only a counter's momentary probe conflicts, under the mutex we hold */
	holder_tag(&tag, key, HOLDER_MARK);
	(void) LockAcquire(&tag, ShareLock, session, false);
	if (h)
	{
		h->key = kcopy;
		h->slot = admit_free_slot;
	}
	return true;
}

/* ---- state under the mutex (read and written with the latest snapshot) ---- */

static TJStatement count_running_stmt = {
	TJ_COUNT_JOBS_SQL("j.concurrency_key = $1 AND j.state = 'running'"),
	2, {TEXTOID, INT8OID}
};

static TJStatement load_rate_stmt = {
	"SELECT s.tokens, s.stamp, s.log_at, s.log_cost, s.factor, s.evaluated_at, s.next_at"
	"  FROM throttle_jobs.key_rate_state s WHERE s.key = $1",
	1, {TEXTOID}
};

static TJStatement save_rate_stmt = {
	"INSERT INTO throttle_jobs.key_rate_state AS s"
	" (key, tokens, stamp, log_at, log_cost, next_at, factor, evaluated_at)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
	" ON CONFLICT (key) DO UPDATE SET tokens = EXCLUDED.tokens, stamp = EXCLUDED.stamp,"
	"  log_at = EXCLUDED.log_at, log_cost = EXCLUDED.log_cost, next_at = EXCLUDED.next_at,"
	"  factor = EXCLUDED.factor, evaluated_at = EXCLUDED.evaluated_at",
	8, {TEXTOID, FLOAT8OID, TIMESTAMPTZOID, TIMESTAMPTZARRAYOID, INT4ARRAYOID, TIMESTAMPTZOID,
	FLOAT8OID, TIMESTAMPTZOID}
};

/*
 * Running jobs of the key (counting stops at cap).  Exact only under the
 * key mutex (see the file header).
 */
int64
tj_count_running(const char *key, int32 cap)
{
	Datum		values[2];
	bool		isnull;
	int64		n;

	values[0] = CStringGetTextDatum(key);
	values[1] = Int64GetDatum(cap);

	tj_execute_latest(&count_running_stmt, values, NULL, SPI_OK_SELECT);
	n = DatumGetInt64(tj_get_datum(0, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return n;
}

/*
 * Reads the key's rate state (a fresh one if it has none) into *state,
 * with log arrays of its own (release with tj_free_rate_state).  Exact only
 * under the key mutex.
 */
void
tj_load_rate(const char *key, const TJRateLimit *limit, TJRateState *state)
{
	Datum		values[1];
	bool		isnull;

	memset(state, 0, sizeof(*state));
	state->factor = 1.0;
	if (limit->algorithm == TJ_SLIDING_WINDOW)
	{
		state->log_at = palloc(sizeof(TimestampTz) * (limit->max + 1));
		state->log_cost = palloc(sizeof(int32) * (limit->max + 1));
	}
	values[0] = CStringGetTextDatum(key);
	if (tj_execute_latest(&load_rate_stmt, values, NULL, SPI_OK_SELECT) == 0)
		return;
	state->tokens = DatumGetFloat8(tj_get_datum(0, 1, &isnull));
	state->stamp = DatumGetTimestampTz(tj_get_datum(0, 2, &isnull));
	state->factor = tj_round_factor(DatumGetFloat8(tj_get_datum(0, 5, &isnull)));
	state->evaluated_at = DatumGetTimestampTz(tj_get_datum(0, 6, &isnull));
	if (isnull)
		state->evaluated_at = 0;
	state->next_at = DatumGetTimestampTz(tj_get_datum(0, 7, &isnull));
	if (isnull)
		state->next_at = 0;
	if (limit->algorithm == TJ_SLIDING_WINDOW)
		tj_rate_fill_log(state, DatumGetArrayTypeP(tj_get_datum(0, 3, &isnull)),
				 DatumGetArrayTypeP(tj_get_datum(0, 4, &isnull)), limit->max);
	/* one reservation may admit many jobs: keep no copy of the log around */
	SPI_freetuptable(SPI_tuptable);
}

void
tj_free_rate_state(TJRateState *state)
{
	if (state->log_at)
		pfree(state->log_at);
	if (state->log_cost)
		pfree(state->log_cost);
	state->log_at = NULL;
	state->log_cost = NULL;
}

static void
save_rate(const char *key, const TJRateState *state, TimestampTz next_at)
{
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Datum	   *ats = palloc(sizeof(Datum) * (state->n + 1));
	Datum	   *costs = palloc(sizeof(Datum) * (state->n + 1));

	for (int i = 0; i < state->n; i++)
	{
		ats[i] = TimestampTzGetDatum(state->log_at[i]);
		costs[i] = Int32GetDatum(state->log_cost[i]);
	}
	values[0] = CStringGetTextDatum(key);
	values[1] = Float8GetDatum(state->tokens);
	values[2] = TimestampTzGetDatum(state->stamp);
	values[3] = PointerGetDatum(construct_array(ats, state->n, TIMESTAMPTZOID,
												sizeof(TimestampTz), true, TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_array(costs, state->n, INT4OID,
												sizeof(int32), true, TYPALIGN_INT));
	values[5] = TimestampTzGetDatum(next_at);
	nulls[5] = next_at == 0 ? 'n' : ' ';
	values[6] = Float8GetDatum(state->factor);
	values[7] = TimestampTzGetDatum(state->evaluated_at);
	nulls[7] = state->evaluated_at == 0 ? 'n' : ' ';
	tj_execute_latest(&save_rate_stmt, values, nulls, SPI_OK_INSERT);
	pfree(DatumGetPointer(values[3]));
	pfree(DatumGetPointer(values[4]));
	pfree(ats);
	pfree(costs);
}

static TJStatement tally_stmt = {
	"SELECT pg_catalog.count(*) FILTER (WHERE NOT o.failed), pg_catalog.count(*) FILTER (WHERE o.failed)"
	"  FROM throttle_jobs.key_outcome o WHERE o.key = $1 AND o.at < $2",
	2, {TEXTOID, TIMESTAMPTZOID}
};

static TJStatement prune_outcomes_stmt = {
	"DELETE FROM throttle_jobs.key_outcome o WHERE o.key = $1 AND o.at < $2",
	2, {TEXTOID, TIMESTAMPTZOID}
};

/*
 * Adaptive keys: once a period has passed since the last evaluation, tally
 * the outcomes recorded since and move the factor (tj_adaptive_factor).
 * Hold the key mutex.
 */
static void
evaluate_adaptive(const char *key, const TJKeyLimit *limit, TJRateState *state,
				  TimestampTz now)
{
	Datum		values[2];
	bool		isnull;
	int64		ok,
				failed;

	if (state->evaluated_at == 0)
	{
		state->evaluated_at = now;
		return;
	}
	if (now < state->evaluated_at + limit->rate.period)
		return;
	values[0] = CStringGetTextDatum(key);
	values[1] = TimestampTzGetDatum(now);
	tj_execute_latest(&tally_stmt, values, NULL, SPI_OK_SELECT);
	ok = DatumGetInt64(tj_get_datum(0, 1, &isnull));
	failed = DatumGetInt64(tj_get_datum(0, 2, &isnull));
	state->factor = tj_adaptive_factor(state->factor, ok, failed,
									   limit->error_threshold, limit->min_factor);
	state->evaluated_at = now;
	tj_execute_latest(&prune_outcomes_stmt, values, NULL, SPI_OK_DELETE);
}

static TJStatement outcome_stmt = {
	"INSERT INTO throttle_jobs.key_outcome (key, at, failed) VALUES ($1, $2, $3)",
	3, {TEXTOID, TIMESTAMPTZOID, BOOLOID}
};

/*
 * A job with rate key `rkey` succeeded or failed: if the key's limit is
 * adaptive, record it for the next evaluation.  Insert-only, never waits.
 */
void
tj_record_outcome(const char *rkey, bool failed, TimestampTz now)
{
	TJLimitCache cache = {0};
	TJKeyLimit *l = tj_key_limit(&cache, rkey);
	Datum		values[3];

	if (!(l->limited && l->has_rate && l->adaptive))
		return;
	values[0] = CStringGetTextDatum(rkey);
	values[1] = TimestampTzGetDatum(now);
	values[2] = BoolGetDatum(failed);
	tj_execute(&outcome_stmt, values, NULL, false, 0, SPI_OK_INSERT);
}

/*
 * The admission check for one job (or one try_acquire): takes the mutex of
 * each limited key without waiting, then checks the cap and the rate, and
 * takes the rate tokens only if both pass.  *admitted_at is the admission
 * time the rate limiter recorded: `now`, or later when another admission
 * for the key was recorded later than `now` (see tj_rate_admit).  On TJ_ADMIT_CAP or _RATE,
 * *blocked_key (and for a rate, *blocked_until) say what holds the job
 * back.  The caller must be connected to SPI.
 */
TJAdmission
tj_admit(TJLimitCache *cache, const char *ckey, const char *rkey, int32 cost,
		 TimestampTz now, const char **blocked_key, TimestampTz *blocked_until,
		 TimestampTz *admitted_at)
{
	TJKeyLimit *cl = ckey ? tj_key_limit(cache, ckey) : NULL;
	TJKeyLimit *rl = rkey ? tj_key_limit(cache, rkey) : NULL;
	TJRateState state;
	TimestampTz next_at;

	if (cl && !(cl->limited && cl->max_running > 0))
		cl = NULL;
	if (rl && !(rl->limited && rl->has_rate))
		rl = NULL;
	*blocked_key = NULL;
	*blocked_until = 0;
	*admitted_at = now;
	if (cl == NULL && rl == NULL)
		return TJ_ADMIT_OK;

	/* conditional locks: the order does not matter, nobody waits */
	if (cl && !tj_try_lock_key(ckey))
		return TJ_ADMIT_BUSY;
	if (rl && (cl == NULL || strcmp(ckey, rkey) != 0) && !tj_try_lock_key(rkey))
		return TJ_ADMIT_BUSY;

	if (cl)
	{
		int64		running = tj_count_running(ckey, cl->max_running);

		if (running >= cl->max_running)
		{
			*blocked_key = ckey;
			return TJ_ADMIT_CAP;
		}
		/*
		 * try_acquire holders fill the rest: the key is busy (skipped, not
		 * waited for: nothing would release a job parked behind a holder)
		 */
		if (count_holders(ckey, cl->max_running, (int32) (cl->max_running - running)) >=
			cl->max_running - running)
			return TJ_ADMIT_BUSY;
	}
	if (rl)
	{
		tj_load_rate(rkey, &rl->rate, &state);
		if (rl->adaptive)
			evaluate_adaptive(rkey, rl, &state, now);
		*admitted_at = (state.stamp != 0 && state.stamp > now) ? state.stamp : now;
		if (!tj_rate_try(rl, &state, now, cost, &next_at))
		{
			/*
			 * The key next admits at next_at; a cost it never admits
			 * (DT_NOEND) leaves the time its waiting jobs are due alone.
			 */
			save_rate(rkey, &state, next_at == DT_NOEND ? state.next_at : next_at);
			tj_free_rate_state(&state);
			*blocked_key = rkey;
			*blocked_until = next_at;
			return TJ_ADMIT_RATE;
		}
		/* when the key's waiting jobs are due again is the release's business */
		save_rate(rkey, &state, state.next_at);
		tj_free_rate_state(&state);
	}
	return TJ_ADMIT_OK;
}

/* ---- costs a rate limit never admits ---- */

/*
 * Why a job of rate key `rkey` that costs `cost` can never start, or NULL
 * when it can (no rate limit governs the key, or the cost fits its
 * capacity at the full rate: a reduced adaptive rate recovers).  The text
 * names the cost, the capacity and the governing limit's own key.
 */
static char *
cost_refusal(TJLimitCache *cache, const char *rkey, int32 cost)
{
	TJKeyLimit *l = tj_key_limit(cache, rkey);
	TJKeyLimit	governing;
	char	   *limit_key;
	int32		capacity;

	if (!(l->limited && l->has_rate))
		return NULL;
	capacity = tj_rate_capacity(&l->rate);
	if (cost <= capacity)
		return NULL;
	/* the same lookup (and rule) that found the limit, for its key */
	lookup_limit(rkey, &governing, NULL, &limit_key);
	if (l->rate.algorithm == TJ_TOKEN_BUCKET)
		return psprintf("cost %d exceeds the burst %d of rate limit \"%s\"",
						cost, capacity, limit_key ? limit_key : rkey);
	return psprintf("cost %d exceeds the %d per period of rate limit \"%s\"",
					cost, capacity, limit_key ? limit_key : rkey);
}

/*
 * enqueue and enqueue_batch: refuses a job whose cost its rate key never
 * admits (it would wait forever).  Connected to SPI.
 */
void
tj_check_cost(TJLimitCache *cache, const char *rkey, int32 cost)
{
	char	   *refusal;

	if (cost <= 1)
		return;
	refusal = cost_refusal(cache, rkey, cost);
	if (refusal)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", refusal),
				 errdetail("A job's cost is what its start takes of the rate of its rate_limit_key \"%s\"; this limit never admits that much at once.",
						   rkey),
				 errhint("Lower the job's cost, or raise the limit's burst (token_bucket) or max_per_period with throttle_jobs.set_rate_limit().")));
}

/*
 * Waiting jobs (available or throttled: not running) whose rate key limit
 * key $1 covers and whose cost is above 1 (job_costly_idx).  The limit that
 * governs each one is looked up apart (the most specific governs).
 */
static TJStatement costly_stmt = {
	"SELECT j.id, j.rate_limit_key, j.cost FROM throttle_jobs.job j"
	" WHERE j.cost > 1 AND j.rate_limit_key IS NOT NULL"
	"   AND throttle_jobs._key_matches(j.rate_limit_key, $1)"
	"   AND j.state = ANY ('{available,throttled}'::pg_catalog.text[])"
	" ORDER BY j.id",
	1, {TEXTOID}
};

/*
 * After limit key `limit_key` changed (set or dropped): the waiting jobs of
 * the keys it covers that the limit now governing them can never admit
 * (their cost exceeds its capacity) move to the dead letters, the reason
 * in their last error.  Returns how many.  Call it once key_limit holds the
 * change and the cached limits are forgotten (tj_limits_changed).
 * Connected to SPI.
 */
int64
tj_dead_letter_oversized(const char *limit_key, TimestampTz now)
{
	TJLimitCache cache = {0};
	Datum		values[3];
	uint64		n;
	int64	   *ids;
	char	  **keys;
	int32	   *costs;
	int64		dead = 0;

	values[0] = CStringGetTextDatum(limit_key);
	n = tj_execute_latest(&costly_stmt, values, NULL, SPI_OK_SELECT);
	if (n == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return 0;
	}
	ids = palloc(sizeof(int64) * n);
	keys = palloc(sizeof(char *) * n);
	costs = palloc(sizeof(int32) * n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(tj_get_datum(i, 1, &isnull));
		keys[i] = TextDatumGetCString(tj_get_datum(i, 2, &isnull));
		costs[i] = DatumGetInt32(tj_get_datum(i, 3, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);

	for (uint64 i = 0; i < n; i++)
		if (tj_dead_letter_if_oversized(&cache, ids[i], keys[i], costs[i], now))
			dead++;
	return dead;
}

/*
 * Moves waiting job `id` (rate key `rkey`, cost `cost`) to the dead letters
 * if the limit governing its rate key never admits its cost; returns
 * whether it did (false also for a job a reservation took meanwhile).
 * Connected to SPI.
 */
bool
tj_dead_letter_if_oversized(TJLimitCache *cache, int64 id, const char *rkey, int32 cost,
							TimestampTz now)
{
	char	   *refusal = cost_refusal(cache, rkey, cost);

	if (refusal == NULL)
		return false;
	return tj_dead_letter(id, false, now, refusal, "cost exceeds rate limit");
}

/* ---- try_acquire / acquire ---- */

/* acquire()'s wait: a busy key (no time given) is polled this often (ms) */
#define ACQUIRE_POLL_MS		10
/* and wakes up at least this often (ms), even when a refused rate names a later time */
#define ACQUIRE_MAX_SLEEP_MS 1000

/* A positive span in microseconds as milliseconds, rounded up */
static long
usecs_to_ms_up(int64 usecs)
{
	return (long) ((usecs + 999) / 1000);
}

/* The key argument (0) of try_acquire_session and release */
static char *
session_key_arg(FunctionCallInfo fcinfo)
{
	tj_require_not_null(fcinfo, 0, "key");
	tj_check_job_key(PG_GETARG_TEXT_PP(0), "key");
	return text_to_cstring(PG_GETARG_TEXT_PP(0));
}

/*
 * Counts the outcome of one try on a key (in the statistics when a limit
 * governs the key: see acquire_once) and returns it.
 */
static bool
count_try(const char *key, bool limited, bool granted)
{
	if (limited)
		tj_stats_acquire(key, granted ? TJ_ACQ_ADMITTED : TJ_ACQ_REFUSED);
	return granted;
}

static void
check_acquire_args(FunctionCallInfo fcinfo, char **key, int32 *cost)
{
	text	   *k;

	tj_require_not_null(fcinfo, 0, "key");
	tj_require_not_null(fcinfo, 1, "cost");
	k = PG_GETARG_TEXT_PP(0);
	tj_check_job_key(k, "key");
	*key = text_to_cstring(k);
	*cost = PG_GETARG_INT32(1);
	if (*cost < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cost must be at least 1, not %d", *cost)));
}

/*
 * One attempt; *wait_until says when another could succeed (0: soon), and
 * *limited whether a limit governs the key (the calls on keys without one,
 * always granted, are not counted in the statistics).
 *
 * The decision runs in a subtransaction.  A grant releases it into the
 * caller's transaction: the tokens taken and the key's mutex stay until that
 * ends, as the admission of a job does.  A refusal rolls it back, which
 * gives back the mutex (a lock taken by the subtransaction) and undoes the
 * rate state written for the decision (its row would otherwise stay locked
 * by the caller's transaction, and reservations would wait for it): a
 * caller that was refused, and then idles in its transaction, holds
 * nothing, and so cannot stall the key's reservations.  A mutex that the
 * caller's transaction already held (an earlier grant) stays held.
 */
static bool
acquire_once(const char *key, int32 cost, bool session, TimestampTz *wait_until,
			 bool *limited)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	TJLimitCache cache = {0};
	const char *blocked_key;
	TimestampTz blocked_until = 0;
	TimestampTz admitted_at;
	volatile TJAdmission r = TJ_ADMIT_BUSY;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		/* the key is both the concurrency and the rate key; tj_admit skips what is not limited */
		SPI_connect();
		r = tj_admit(&cache, key, key, cost, GetCurrentTimestamp(), &blocked_key,
					 &blocked_until, &admitted_at);
		*limited = r != TJ_ADMIT_OK || tj_key_limit(&cache, key)->limited;
		if (r == TJ_ADMIT_OK)
		{
			TJKeyLimit *l = tj_key_limit(&cache, key);

			/*
			 * A cap without a rate: hold a slot instead of the mutex, so
			 * that up to max_running transactions hold the key at once.  A
			 * rate's tokens must commit before anyone counts them (its
			 * state row stays locked), so a rate-limited key keeps the mutex.
			 */
			if (l->limited && l->max_running > 0 && !l->has_rate)
			{
				if (take_holder_slot(key, session))
					tj_unlock_key(key);
				else
					r = TJ_ADMIT_BUSY;
			}
			else if (session)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("key \"%s\" cannot be held for the session", key),
						 errdetail("Only a key with a concurrency limit and no rate limit has slots that a session can hold."),
						 errhint("Use try_acquire() in a transaction, or set a concurrency limit on the key with throttle_jobs.set_concurrency_limit().")));
		}
		SPI_finish();
	}
	PG_CATCH();
	{
		/* leave the subtransaction before the error reaches the caller's handlers */
		ReThrowError(tj_catch_in_subxact(cxt, owner));
	}
	PG_END_TRY();

	if (r == TJ_ADMIT_OK)
		ReleaseCurrentSubTransaction();
	else
		RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;

	*wait_until = r == TJ_ADMIT_RATE ? blocked_until : 0;
	return r == TJ_ADMIT_OK;
}

/*
 * try_acquire(key, cost) returns boolean: takes `cost` tokens of the key's
 * rate limit now, or returns false.  On a key with a concurrency cap N
 * (and no rate limit) it holds one of the key's N slots until the calling
 * transaction ends, and only while the key's running jobs and holders leave
 * one free: up to N transactions hold the key at once (cap 1: a leader
 * election).  A key with a rate limit is held by one transaction at a time
 * (its mutex).  A key without a limit is always granted.  A refusal leaves
 * nothing held (see acquire_once).
 */
Datum
throttle_jobs_try_acquire(PG_FUNCTION_ARGS)
{
	char	   *key;
	int32		cost;
	TimestampTz wait_until;
	bool		limited;
	bool		granted;

	check_acquire_args(fcinfo, &key, &cost);
	granted = acquire_once(key, cost, false, &wait_until, &limited);
	PG_RETURN_BOOL(count_try(key, limited, granted));
}

/*
 * try_acquire_session(key) returns boolean: try_acquire on a key with a
 * concurrency cap and no rate limit, holding its slot past the transaction,
 * until release(key) or the session ends (a session lock).  A session that
 * holds the key already is granted again, and still holds one slot.
 */
Datum
throttle_jobs_try_acquire_session(PG_FUNCTION_ARGS)
{
	char	   *key;
	TimestampTz wait_until;
	bool		limited = true;	/* a key held for the session has a cap */
	bool		granted;

	key = session_key_arg(fcinfo);
	granted = session_hold(key) != NULL ||
		acquire_once(key, 1, true, &wait_until, &limited);
	PG_RETURN_BOOL(count_try(key, limited, granted));
}

/*
 * release(key) returns boolean: gives back the slot that this session holds
 * of the key (try_acquire_session); false when it holds none.  Holds of a
 * transaction end with it.
 */
Datum
throttle_jobs_release(PG_FUNCTION_ARGS)
{
	char	   *key;
	SessionHold *h;
	LOCKTAG		tag;

	key = session_key_arg(fcinfo);
	h = session_hold(key);
	if (h == NULL)
		PG_RETURN_BOOL(false);
	/* a slot also held by the current transaction (try_acquire) stays to its end */
	holder_tag(&tag, key, h->slot);
	LockRelease(&tag, ExclusiveLock, true);
	holder_tag(&tag, key, HOLDER_MARK);
	if (tj_lock_held_by_me(&tag, ShareLock))
		LockRelease(&tag, ShareLock, true);
	pfree(h->key);
	h->key = NULL;
	PG_RETURN_BOOL(true);
}

/* acquire(key, cost, timeout) returns boolean: try_acquire, waiting up to timeout */
Datum
throttle_jobs_acquire(PG_FUNCTION_ARGS)
{
	char	   *key;
	int32		cost;
	TimestampTz deadline;

	check_acquire_args(fcinfo, &key, &cost);
	tj_require_not_null(fcinfo, 2, "timeout");
	tj_check_interval(PG_GETARG_INTERVAL_P(2), "timeout", true);
	deadline = GetCurrentTimestamp() + tj_interval_usecs(PG_GETARG_INTERVAL_P(2));

	for (bool waited = false;; waited = true)
	{
		TimestampTz wait_until;
		TimestampTz now;
		long		sleep_ms;
		bool		limited;

		if (acquire_once(key, cost, false, &wait_until, &limited))
		{
			if (limited)
				tj_stats_acquire(key, TJ_ACQ_ADMITTED);
			PG_RETURN_BOOL(true);
		}
		now = GetCurrentTimestamp();
		if (now >= deadline || wait_until == DT_NOEND || wait_until > deadline)
		{
			tj_stats_acquire(key, TJ_ACQ_TIMED_OUT);
			PG_RETURN_BOOL(false);
		}
		if (!waited)
			tj_stats_acquire(key, TJ_ACQ_WAITED);
		/* a refused rate says when; a busy key is polled */
		sleep_ms = wait_until > now ? usecs_to_ms_up(wait_until - now) : ACQUIRE_POLL_MS;
		sleep_ms = Min(sleep_ms, usecs_to_ms_up(deadline - now));
		sleep_ms = Min(sleep_ms, ACQUIRE_MAX_SLEEP_MS);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(sleep_ms, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* ---- forgetting idle rate state (maintain()) ---- */

/*
 * key_rate_state keeps a row per key that a rate limit ever admitted or
 * refused.  maintain() deletes the rows whose deletion changes no decision:
 * for every transaction that may still reach the key, a fresh state (a full
 * bucket, an empty window) decides exactly as the stored one would.  It
 * walks the table in key order, RATE_GC_SCAN rows per pass, resuming where
 * the previous pass of the session stopped (a new session starts at a
 * random row), and deletes at most RATE_GC_BATCH rows per pass, each under
 * its key's mutex, held to commit like any writer of the state.
 */
#define RATE_GC_SCAN	100
#define RATE_GC_BATCH	64

/* Where the next pass of this session resumes (NULL: not started) */
static char *rate_gc_next = NULL;

#define RATE_GC_COLUMNS \
	"s.key, s.tokens, s.stamp," \
	" (SELECT pg_catalog.max(a.at) FROM pg_catalog.unnest(s.log_at) a(at))," \
	" s.next_at, s.factor, s.evaluated_at," \
	" EXISTS (SELECT FROM throttle_jobs.key_outcome o WHERE o.key = s.key)"

static TJStatement rate_gc_after_stmt = {
	"SELECT " RATE_GC_COLUMNS " FROM throttle_jobs.key_rate_state s"
	" WHERE s.key > $1 ORDER BY s.key LIMIT $2",
	2, {TEXTOID, INT8OID}
};

static TJStatement rate_gc_upto_stmt = {
	"SELECT " RATE_GC_COLUMNS " FROM throttle_jobs.key_rate_state s"
	" WHERE s.key <= $1 ORDER BY s.key LIMIT $2",
	2, {TEXTOID, INT8OID}
};

static TJStatement rate_gc_start_stmt = {
	"SELECT s.key FROM throttle_jobs.key_rate_state s TABLESAMPLE pg_catalog.system (1) LIMIT 1",
	0, {InvalidOid}
};

static TJStatement rate_gc_one_stmt = {
	"SELECT " RATE_GC_COLUMNS ","
	" EXISTS (SELECT FROM throttle_jobs.job j WHERE j.state = 'running' AND j.rate_limit_key = s.key)"
	" FROM throttle_jobs.key_rate_state s WHERE s.key = $1",
	1, {TEXTOID}
};

/* (the row is locked first, so that a writer that holds no mutex is skipped, not waited for) */
static TJStatement rate_gc_delete_stmt = {
	"DELETE FROM throttle_jobs.key_rate_state s WHERE s.key = $1 AND s.key IN"
	" (SELECT k.key FROM throttle_jobs.key_rate_state k WHERE k.key = $1 FOR UPDATE SKIP LOCKED)",
	1, {TEXTOID}
};

/* One row of key_rate_state as the clean-up reads it */
typedef struct RateGCRow
{
	char	   *key;
	double		tokens;
	TimestampTz stamp;
	TimestampTz newest_at;		/* the sliding log's newest admission; 0: empty */
	TimestampTz next_at;		/* 0: none */
	double		factor;
	TimestampTz evaluated_at;	/* 0: never */
	bool		has_outcomes;
	bool		has_running;	/* (read only under the mutex) */
} RateGCRow;

static void
read_gc_row(uint64 i, RateGCRow *row, bool with_running)
{
	bool		isnull;
	Datum		d;

	row->key = TextDatumGetCString(tj_get_datum(i, 1, &isnull));
	row->tokens = DatumGetFloat8(tj_get_datum(i, 2, &isnull));
	row->stamp = DatumGetTimestampTz(tj_get_datum(i, 3, &isnull));
	d = tj_get_datum(i, 4, &isnull);
	row->newest_at = isnull ? 0 : DatumGetTimestampTz(d);
	d = tj_get_datum(i, 5, &isnull);
	row->next_at = isnull ? 0 : DatumGetTimestampTz(d);
	row->factor = DatumGetFloat8(tj_get_datum(i, 6, &isnull));
	d = tj_get_datum(i, 7, &isnull);
	row->evaluated_at = isnull ? 0 : DatumGetTimestampTz(d);
	row->has_outcomes = DatumGetBool(tj_get_datum(i, 8, &isnull));
	row->has_running = with_running ? DatumGetBool(tj_get_datum(i, 9, &isnull)) : false;
}

/*
 * Whether deleting the row changes no decision for any admission judged at
 * a time >= horizon (the earliest start of a transaction that may still
 * reach the key).  That holds when no rate limit governs the key any more
 * (a row that no limit reads), or when: no refusal is still pending (next_at), the last admission is not
 * after the horizon (so no later admission is moved to it), the rate is
 * not reduced (factor 1) and, for an adaptive limit, no outcome waits to be
 * tallied, no job admitted under the state still runs (it would record
 * one) and its evaluation period is over; and by the horizon a token bucket
 * has refilled to full, a fixed window has ended, and every admission of a
 * sliding log has left the window.  `checked` says whether has_running was
 * read; without it an adaptive row is only a candidate.
 */
static bool
rate_state_idle(const TJKeyLimit *limit, const RateGCRow *row, TimestampTz horizon,
				bool checked)
{
	const TJRateLimit *rate = &limit->rate;

	if (!limit->limited || !limit->has_rate)
		return true;
	if (row->next_at > horizon || row->stamp > horizon || row->factor < 1.0)
		return false;
	if (limit->adaptive &&
		(row->has_outcomes || (checked && row->has_running) ||
		 (row->evaluated_at != 0 && row->evaluated_at > horizon - rate->period)))
		return false;
	switch (rate->algorithm)
	{
		case TJ_TOKEN_BUCKET:
			{
				double		capacity = rate->burst > 0 ? rate->burst : rate->max;
				double		per_usec = (double) rate->max / (double) rate->period;

				return row->tokens + (double) (horizon - row->stamp) * per_usec + 1e-9 >= capacity;
			}
		case TJ_FIXED_WINDOW:
			return row->stamp <= horizon - rate->period;
		case TJ_SLIDING_WINDOW:
			return row->newest_at <= horizon - rate->period;
	}
	return false;
}

/*
 * The earliest start of a transaction of this database that is running now
 * (at most `now`), or 0 when some backend of the database does not report
 * its transactions (track_activities off): then nothing is known to be idle.
 */
static TimestampTz
transaction_horizon(TimestampTz now)
{
	TimestampTz horizon = now;
	int			n = pgstat_fetch_stat_numbackends();

	for (int i = 1; i <= n; i++)
	{
		LocalPgBackendStatus *l = tj_local_beentry(i);
		PgBackendStatus *b = l ? &l->backendStatus : NULL;

		if (b == NULL || b->st_databaseid != MyDatabaseId)
			continue;
		if (b->st_state == STATE_DISABLED)
			return 0;
		if (b->st_xact_start_timestamp != 0 && b->st_xact_start_timestamp < horizon)
			horizon = b->st_xact_start_timestamp;
	}
	return horizon;
}

/* Reads up to `max` rows of the current result into rows[*n ...]. */
static void
read_gc_rows(uint64 got, RateGCRow *rows, int *n)
{
	for (uint64 i = 0; i < got; i++)
		read_gc_row(i, &rows[(*n)++], false);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * maintain(): deletes idle key_rate_state rows (see above); returns how
 * many.  `now` is maintain()'s transaction start.  The caller must be
 * connected to SPI.
 */
int64
tj_forget_idle_rate_state(TimestampTz now)
{
	TimestampTz horizon = transaction_horizon(Min(now, GetCurrentTransactionStartTimestamp()));
	RateGCRow  *rows;
	int			n = 0;
	int			i;
	int64		deleted = 0;
	char	   *start;
	Datum		values[2];
	TJLimitCache cache = {0};
	MemoryContext old;

	if (horizon == 0)
		return 0;
	if (rate_gc_next != NULL)
		start = rate_gc_next;
	else if (tj_execute_latest(&rate_gc_start_stmt, NULL, NULL, SPI_OK_SELECT) > 0)
	{
		bool		isnull;

		start = TextDatumGetCString(tj_get_datum(0, 1, &isnull));
	}
	else
		start = "";

	rows = palloc(sizeof(RateGCRow) * RATE_GC_SCAN);
	values[0] = CStringGetTextDatum(start);
	values[1] = Int64GetDatum(RATE_GC_SCAN);
	read_gc_rows(tj_execute_latest(&rate_gc_after_stmt, values, NULL, SPI_OK_SELECT), rows, &n);
	if (n < RATE_GC_SCAN && start[0] != '\0')
	{
		/* at the end of the table: go on from its beginning up to where we started */
		values[1] = Int64GetDatum(RATE_GC_SCAN - n);
		read_gc_rows(tj_execute_latest(&rate_gc_upto_stmt, values, NULL, SPI_OK_SELECT), rows, &n);
	}

	for (i = 0; i < n && deleted < RATE_GC_BATCH; i++)
	{
		TJKeyLimit *limit;
		RateGCRow	row;
		bool		idle;

		/* (cheap tests first: the limit lookup is a query) */
		if (rows[i].next_at > horizon || rows[i].stamp > horizon || rows[i].factor < 1.0)
			continue;
		limit = tj_key_limit(&cache, rows[i].key);
		if (!rate_state_idle(limit, &rows[i], horizon, false) || !tj_try_lock_key(rows[i].key))
			continue;
		/* under the mutex every admission of the key has committed: look again */
		values[0] = CStringGetTextDatum(rows[i].key);
		idle = false;
		if (tj_execute_latest(&rate_gc_one_stmt, values, NULL, SPI_OK_SELECT) > 0)
		{
			read_gc_row(0, &row, true);
			idle = rate_state_idle(limit, &row, horizon, true);
		}
		SPI_freetuptable(SPI_tuptable);
		if (idle && tj_execute_latest(&rate_gc_delete_stmt, values, NULL, SPI_OK_DELETE) > 0)
			deleted++;			/* the mutex stays held until commit */
		else
			tj_unlock_key(rows[i].key);	/* nothing changed under it */
	}

	/*
	 * The next pass resumes after the last row looked at, or at the start
	 * when this pass reached the end of the table (having wrapped around).
	 */
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (rate_gc_next)
		pfree(rate_gc_next);
	rate_gc_next = pstrdup(i < n || n == RATE_GC_SCAN ? rows[i - 1].key : "");
	MemoryContextSwitchTo(old);
	return deleted;
}
