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
	tj_define_gucs();
	if (process_shared_preload_libraries_in_progress)
	{
		tj_shmem_register();
		tj_launcher_register();
	}
}
