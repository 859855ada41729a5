/*-------------------------------------------------------------------------
 *
 * guc.c
 *		Every throttle_jobs.* setting.
 *
 * Defined once from _PG_init.  The shared memory sizes
 * (stats_max_queues, stats_max_keys) exist only while preloading:
 * PostgreSQL refuses (FATAL) to define a PGC_POSTMASTER setting once the
 * server runs, and without preloading there is no shared memory to size.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "throttle_jobs.h"

int			tj_max_payload_size = 1024 * 1024;
int			tj_max_batch_size = 1000;
char	   *tj_databases = NULL;
int			tj_maintenance_interval = 1000;
int			tj_executor_workers = 2;
int			tj_shutdown_grace = 5000;
bool		tj_allow_superuser_handlers = false;
int			tj_stats_max_queues = 1000;
int			tj_stats_max_keys = 10000;
int			tj_stats_history = 360;		/* minutes */
int			tj_stats_recount_interval = 60; /* minutes; 0: only when needed */

static char *build_stamp_setting = NULL;
static char *run_jobs_caller_setting = NULL;

void
tj_define_gucs(void)
{
	DefineCustomIntVariable("throttle_jobs.max_payload_size",
							"Largest job payload accepted by enqueue, in bytes.",
							NULL,
							&tj_max_payload_size,
							1024 * 1024,
							16,
							MaxAllocSize / 2,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("throttle_jobs.max_batch_size",
							"Most jobs one enqueue_batch or reserve call may handle.",
							NULL,
							&tj_max_batch_size,
							1000,
							1,
							1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("throttle_jobs.databases",
							   "Databases in which background workers maintain queues and run handler jobs.",
							   "A comma-separated list of database names; empty: none.  Needs the library in shared_preload_libraries.",
							   &tj_databases,
							   "",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("throttle_jobs.maintenance_interval",
							"Time between two maintenance passes of a background worker.",
							NULL,
							&tj_maintenance_interval,
							1000,
							10,
							3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("throttle_jobs.executor_workers",
							"Background workers running handler jobs, per database.",
							NULL,
							&tj_executor_workers,
							2,
							0,
							TJ_MAX_EXECUTORS,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("throttle_jobs.shutdown_grace",
							"Time a background worker lets the job in hand finish after SIGTERM before handing it back.",
							NULL,
							&tj_shutdown_grace,
							5000,
							0,
							3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("throttle_jobs.allow_superuser_handlers",
							 "Whether handlers of queues owned by a superuser may run.",
							 NULL,
							 &tj_allow_superuser_handlers,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("throttle_jobs.stats_max_queues",
								"Queues whose statistics shared memory holds.",
								NULL, &tj_stats_max_queues, 1000, 16, 100000,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
		DefineCustomIntVariable("throttle_jobs.stats_max_keys",
								"Limited keys whose throttling counters shared memory holds.",
								NULL, &tj_stats_max_keys, 10000, 16, 1000000,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
	}
	DefineCustomIntVariable("throttle_jobs.stats_history",
							"How long maintain() keeps the per-minute throughput history.",
							NULL, &tj_stats_history, 360, 1, 60 * 24 * 366,
							PGC_SUSET, GUC_UNIT_MIN, NULL, NULL, NULL);
	DefineCustomIntVariable("throttle_jobs.stats_recount_interval",
							"How often maintain() recounts the live and dead jobs to correct the depth gauges (0: only when they are unknown).",
							NULL, &tj_stats_recount_interval, 60, 0, 60 * 24 * 366,
							PGC_SUSET, GUC_UNIT_MIN, NULL, NULL, NULL);

	/* see build_stamp.c */
	DefineCustomStringVariable("throttle_jobs.build_stamp",
							   "Build stamp of the loaded throttle_jobs library.",
							   "Set when the library was compiled; it cannot be changed.",
							   &build_stamp_setting,
							   tj_build_stamp,
							   PGC_INTERNAL,
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, NULL, NULL);

	/* see privilege.c, "run_jobs" */
	DefineCustomStringVariable("throttle_jobs.run_jobs_caller",
							   "The role that called the run_jobs() in progress (internal).",
							   NULL,
							   &run_jobs_caller_setting,
							   "0",
							   PGC_INTERNAL,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE |
							   GUC_NO_RESET_ALL,
							   NULL, tj_assign_run_jobs_caller, NULL);

	MarkGUCPrefixReserved("throttle_jobs");
}
