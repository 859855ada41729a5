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

	tj_stats_define_gucs();
	MarkGUCPrefixReserved("throttle_jobs");
}
