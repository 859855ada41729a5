/*-------------------------------------------------------------------------
 *
 * maintain.c
 *		maintain(): one maintenance pass.
 *
 *		1. Expired leases count as failed attempts: the job is retried after
 *		   its backoff, or dead-lettered when its attempts are used up.
 *		2. Throttled jobs whose key has free slots again, or whose rate
 *		   admission is due, are released (tj_release_throttled).
 *		3. Dead letters older than their queue's retain_dead are deleted.
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

/* (counted per queue for the dead-letter gauge) */
static TJStatement purge_dead_stmt = {
	"WITH p AS (DELETE FROM throttle_jobs.job_dead d USING throttle_jobs.queue q"
	"  WHERE q.id = d.queue_id AND d.died_at < $1 - q.retain_dead RETURNING d.queue_id)"
	" SELECT p.queue_id, pg_catalog.count(*) FROM p GROUP BY p.queue_id",
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
	"SELECT throttle_jobs._maintain_archive($1)::pg_catalog.text",
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

/* maintain() returns jsonb: what the pass did */
Datum
throttle_jobs_maintain(PG_FUNCTION_ARGS)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	Datum		values[1];
	int64		expired = 0,
				dead = 0,
				released,
				purged,
				forgotten;
	char	   *archive;
	char	   *stats;
	uint64		npurged;
	bool		isnull;
	StringInfoData out;

	values[0] = TimestampTzGetDatum(now);
	/* made before SPI_connect so that it outlives SPI_finish */
	initStringInfo(&out);

	SPI_connect();
	if (tj_restore_pending(now))
	{
		SPI_finish();
		PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in,
											CStringGetDatum("{\"restore_in_progress\": true}")));
	}
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
				dead++;
			expired++;
			SPI_freetuptable(SPI_tuptable);
		}
		pfree(jobs);
		CHECK_FOR_INTERRUPTS();
		if (n < REAP_BATCH)
			break;
	}

	released = tj_release_throttled(now);
	/* after the reaping and the releases, which make jobs ready */
	tj_notify_due(now);
	forgotten = tj_forget_idle_rate_state(now);

	purged = 0;
	npurged = tj_execute(&purge_dead_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	for (uint64 i = 0; i < npurged; i++)
	{
		int64		n = DatumGetInt64(tj_get_datum(i, 2, &isnull));

		tj_stats_dead_removed(DatumGetInt32(tj_get_datum(i, 1, &isnull)), n);
		purged += n;
	}

	/* (queue_grant is new in 0.2.0: this library also serves 0.1.0) */
	if (OidIsValid(get_relname_relid("queue_grant", get_namespace_oid("throttle_jobs", false))))
		tj_execute(&forget_grants_stmt, NULL, NULL, false, 0, SPI_OK_DELETE);

	tj_execute(&archive_stmt, values, NULL, false, 1, SPI_OK_SELECT);
	archive = TextDatumGetCString(tj_get_datum(0, 1, &isnull));
	stats = tj_stats_maintain(now);

	appendStringInfo(&out,
					 "{\"expired_leases\": " INT64_FORMAT ", \"retried\": " INT64_FORMAT
					 ", \"dead_lettered\": " INT64_FORMAT ", \"throttled_released\": " INT64_FORMAT
					 ", \"dead_letters_purged\": " INT64_FORMAT ", \"rate_states_forgotten\": " INT64_FORMAT
					 ", \"archive\": %s, \"stats\": %s}",
					 expired, expired - dead, dead, released, purged, forgotten, archive, stats);
	SPI_finish();

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
