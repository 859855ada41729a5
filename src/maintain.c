/*-------------------------------------------------------------------------
 *
 * maintain.c
 *		maintain(): one maintenance pass.
 *
 *		1. Expired leases count as failed attempts: the job is retried after
 *		   its backoff, or dead-lettered when its attempts are used up.
 *		2. Throttled jobs whose key has free slots again, or whose rate
 *		   admission is due, are released (tj_release_throttled).
 *		3. Dead letters older than their queue's retain_dead are deleted
 *		   (tj_purge_expired_dead).
 *		4. The archive's day partitions are created ahead of time and dropped
 *		   whole once past retention (throttle_jobs._maintain_archive).
 *		5. Rate limiter state of keys idle long enough that a fresh state
 *		   would decide the same is deleted, a bounded batch per pass
 *		   (tj_forget_idle_rate_state).
 *		6. Queue grants to roles that no longer exist are deleted.
 *		7. Queues with notify on that have a job that became ready since the
 *		   last pass (due at its run_at, or released) are notified at commit,
 *		   once each (tj_notify_due).
 *
 * While a dump is being restored into the database, a pass does nothing
 * (tj_restore_pending): the schema is there before its rows are, and a pass
 * would create the partitions that the restore creates next, count the
 * depth gauges from half the rows and judge retention without the queues.
 * The first pass after the restore recounts the gauges.
 *
 * tj_maintain() is the pass; maintain() wraps it and reports what it did
 * as jsonb, and the maintenance worker (dbworker.c) calls it directly.
 *
 * Safe to run concurrently: expired jobs are claimed with SKIP LOCKED, and
 * partition changes are serialised by the row lock of maintenance_lock (an
 * advisory lock under 0.1.0) and a lock_timeout.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_maintain);

#define REAP_BATCH 1000
#define REAP_MAX_BATCHES 100

static TJStatement expired_stmt = {
	"SELECT " TJ_FAILED_JOB_COLUMNS
	"  FROM throttle_jobs.job j JOIN throttle_jobs.queue q ON q.id = j.queue_id"
	" WHERE j.state = 'running' AND j.lease_until < $1"
	" ORDER BY j.id LIMIT " CppAsString2(REAP_BATCH)
	" FOR UPDATE OF j SKIP LOCKED",
	1, {TIMESTAMPTZOID}
};

/*
 * Grants to roles that no longer exist grant nothing; forget them before a
 * new role could be given the same oid.
 */
static TJStatement forget_grants_stmt = {
	"DELETE FROM throttle_jobs.queue_grant g"
	" WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r"
	"                    WHERE r.oid OPERATOR(pg_catalog.=) g.grantee::pg_catalog.oid)",
	0, {InvalidOid}
};

static TJStatement archive_stmt = {
	"SELECT throttle_jobs._maintain_archive($1)",
	1, {TIMESTAMPTZOID}
};

static TJStatement restore_stmt = {
	"SELECT throttle_jobs._restore_state($1)",
	1, {TIMESTAMPTZOID}
};

/*
 * Whether a restore of a dump into this database is in progress (see
 * throttle_jobs._restore_state); when one has just ended, the depth gauges
 * are recounted at the next statistics step.  Connected to SPI by the caller.
 */
bool
tj_restore_pending(TimestampTz now)
{
	Oid			nsp = get_namespace_oid("throttle_jobs", true);
	bool		isnull;
	Datum		state;
	bool		pending = false;
	Datum		values[1];

	/* (restore_marker is new in 0.2.0: this library also serves 0.1.0) */
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("restore_marker", nsp)))
		return false;
	values[0] = TimestampTzGetDatum(now);
	tj_execute(&restore_stmt, values, NULL, false, 1, SPI_OK_SELECT);
	state = tj_get_datum(0, 1, &isnull);
	if (!isnull)
	{
		char	   *s = TextDatumGetCString(state);

		if (strcmp(s, "restoring") == 0)
			pending = true;
		else
			tj_stats_force_recount();
	}
	SPI_freetuptable(SPI_tuptable);
	return pending;
}

/*
 * One maintenance pass at `now` (the steps in the file header).  Fills
 * *result with what the pass did; its parts live in the SPI context.  The
 * caller must have found no restore in progress (tj_restore_pending), be
 * connected to SPI and run as the extension owner (maintain() is SECURITY
 * DEFINER; the maintenance worker uses tj_caller_enter_owner).
 */
void
tj_maintain(TimestampTz now, TJMaintainResult *result)
{
	Datum		values[1];
	bool		isnull;

	memset(result, 0, sizeof(*result));
	values[0] = TimestampTzGetDatum(now);
	for (int batch = 0; batch < REAP_MAX_BATCHES; batch++)
	{
		uint64		n = tj_execute(&expired_stmt, values, NULL, false, 0, SPI_OK_SELECT);
		TJFailedJob *jobs = palloc(sizeof(TJFailedJob) * (n > 0 ? n : 1));

		/* read them all before tj_fail_locked replaces SPI_tuptable */
		for (uint64 i = 0; i < n; i++)
			tj_read_failed_job(i, &jobs[i]);
		SPI_freetuptable(SPI_tuptable);
		for (uint64 i = 0; i < n; i++)
		{
			tj_stats_count(jobs[i].queue_id, TJ_EV_LEASE_EXPIRED, 1);
			if (tj_fail_locked(&jobs[i], "lease expired", NULL, true, now))
				result->dead_lettered++;
			result->expired_leases++;
			SPI_freetuptable(SPI_tuptable);
		}
		pfree(jobs);
		CHECK_FOR_INTERRUPTS();
		if (n < REAP_BATCH)
			break;
	}

	result->throttled_released = tj_release_throttled(now);
	/* after the reaping and the releases, which make jobs ready */
	tj_notify_due(now);
	result->rate_states_forgotten = tj_forget_idle_rate_state(now);

	result->dead_letters_purged = tj_purge_expired_dead(now);

	/* (queue_grant is new in 0.2.0: this library also serves 0.1.0) */
	if (OidIsValid(get_relname_relid("queue_grant", get_namespace_oid("throttle_jobs", false))))
		tj_execute(&forget_grants_stmt, NULL, NULL, false, 0, SPI_OK_DELETE);

	tj_execute(&archive_stmt, values, NULL, false, 1, SPI_OK_SELECT);
	result->archive = tj_get_datum(0, 1, &isnull);
	result->stats = tj_stats_maintain(now);
}

/* Adds "key": value (a scalar, or jbvBinary: a whole jsonb) to the object being built. */
static void
push_pair(JsonbParseState **state, const char *key, JsonbValue *value)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	(void) pushJsonbValue(state, WJB_KEY, &k);
	(void) pushJsonbValue(state, WJB_VALUE, value);
}

static void
push_int64(JsonbParseState **state, const char *key, int64 value)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(value);
	push_pair(state, key, &v);
}

static void
push_jsonb(JsonbParseState **state, const char *key, Jsonb *value)
{
	JsonbValue	v;

	v.type = jbvBinary;
	v.val.binary.data = &value->root;
	v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	push_pair(state, key, &v);
}

/* maintain() returns jsonb: what the pass did */
Datum
throttle_jobs_maintain(PG_FUNCTION_ARGS)
{
	MemoryContext cxt = CurrentMemoryContext;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TJMaintainResult r;
	JsonbParseState *state = NULL;
	JsonbValue *out;
	Jsonb	   *result;

	SPI_connect();
	/* the result is built before SPI_finish, in the caller's context */
	if (tj_restore_pending(now))
	{
		JsonbValue	v;

		MemoryContextSwitchTo(cxt);
		(void) pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		v.type = jbvBool;
		v.val.boolean = true;
		push_pair(&state, "restore_in_progress", &v);
	}
	else
	{
		Jsonb	   *stats;

		tj_maintain(now, &r);
		MemoryContextSwitchTo(cxt);
		stats = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(r.stats)));
		(void) pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		push_int64(&state, "expired_leases", r.expired_leases);
		push_int64(&state, "retried", r.expired_leases - r.dead_lettered);
		push_int64(&state, "dead_lettered", r.dead_lettered);
		push_int64(&state, "throttled_released", r.throttled_released);
		push_int64(&state, "dead_letters_purged", r.dead_letters_purged);
		push_int64(&state, "rate_states_forgotten", r.rate_states_forgotten);
		push_jsonb(&state, "archive", DatumGetJsonbP(r.archive));
		push_jsonb(&state, "stats", stats);
	}
	out = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	result = JsonbValueToJsonb(out);
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}
