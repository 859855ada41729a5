/*-------------------------------------------------------------------------
 *
 * guc.c
 *		The throttle_jobs.* settings.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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

	tj_stats_define_gucs();
	MarkGUCPrefixReserved("throttle_jobs");
}
