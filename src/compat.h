/*-------------------------------------------------------------------------
 *
 * compat.h
 *		The differences between the PostgreSQL majors the library supports,
 *		15 to 18.  Every PG_VERSION_NUM test of the library is here; the
 *		code uses the names below, which mean the same thing on each major.
 *		Included by throttle_jobs.h, after postgres.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TJ_COMPAT_H
#define TJ_COMPAT_H

#if PG_VERSION_NUM < 150000
#error "throttle_jobs needs PostgreSQL 15 or later"
#endif

/*
 * The module's magic block: 18 can name the module and its version (shown
 * by pg_get_loaded_modules()).  TJ_EXTVERSION comes from the Makefile.
 */
#if PG_VERSION_NUM >= 180000
#define TJ_MODULE_MAGIC \
	PG_MODULE_MAGIC_EXT(.name = "throttle_jobs", .version = TJ_EXTVERSION)
#else
#define TJ_MODULE_MAGIC PG_MODULE_MAGIC
#endif

/*
 * tj_proc_aclcheck(proc, role, mode): the ACL check of a function
 * (utils/acl.h); 16 replaced pg_proc_aclcheck by object_aclcheck.
 */
#if PG_VERSION_NUM >= 160000
#include "catalog/pg_proc_d.h"
#define tj_proc_aclcheck(proc, role, mode) \
	object_aclcheck(ProcedureRelationId, (proc), (role), (mode))
#else
#define tj_proc_aclcheck(proc, role, mode) \
	pg_proc_aclcheck((proc), (role), (mode))
#endif

/*
 * TJ_MY_LXID: this backend's local transaction id (storage/proc.h); 17 moved
 * it into PGPROC.vxid.
 */
#if PG_VERSION_NUM >= 170000
#define TJ_MY_LXID (MyProc->vxid.lxid)
#else
#define TJ_MY_LXID (MyProc->lxid)
#endif

/*
 * TJ_AM_BGWORKER: whether this process is a background worker
 * (miscadmin.h); 17 replaced the IsBackgroundWorker flag by a backend type.
 */
#if PG_VERSION_NUM >= 170000
#define TJ_AM_BGWORKER AmBackgroundWorkerProcess()
#else
#define TJ_AM_BGWORKER IsBackgroundWorker
#endif

/*
 * tj_local_beentry(i): the i-th (1-based) backend status entry of the
 * local snapshot (utils/backend_status.h); renamed in 17.
 */
#if PG_VERSION_NUM >= 170000
#define tj_local_beentry(i) pgstat_get_local_beentry_by_index(i)
#else
#define tj_local_beentry(i) pgstat_fetch_stat_local_beentry(i)
#endif

/*
 * tj_lock_held_by_me(tag, mode): whether this backend holds the lock in
 * exactly that mode (storage/lock.h); 17 added the "or stronger" argument.
 */
#if PG_VERSION_NUM >= 170000
#define tj_lock_held_by_me(tag, mode) LockHeldByMe((tag), (mode), false)
#else
#define tj_lock_held_by_me(tag, mode) LockHeldByMe((tag), (mode))
#endif

#endif							/* TJ_COMPAT_H */
