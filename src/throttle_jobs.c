/*-------------------------------------------------------------------------
 *
 * throttle_jobs.c
 *		Module magic and initialisation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "throttle_jobs.h"

TJ_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	tj_define_build_stamp_guc();
	tj_define_gucs();
	tj_privilege_define_gucs();
	if (process_shared_preload_libraries_in_progress)
	{
		tj_workers_init();
		tj_stats_shmem_init();
		tj_hint_shmem_init();
	}
}
