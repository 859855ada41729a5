/*-------------------------------------------------------------------------
 *
 * build_stamp.c
 *		The build stamp of the library: SHOW throttle_jobs.build_stamp.
 *
 * make writes src/build_stamp.h (the UTC time and random hex digits)
 * whenever any other object of the library was rebuilt, so each build has
 * its own stamp.  test/run and test/bench/run compare the stamp a server
 * shows with the one of the build they just made: a server that loaded some
 * other copy of the library (a stale one in the system tree, say) fails the
 * suite.  The stamp is not a version: two builds of the same source differ.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "throttle_jobs.h"
#include "build_stamp.h"

/* The value of throttle_jobs.build_stamp (guc.c) */
const char *const tj_build_stamp = TJ_BUILD_STAMP;
