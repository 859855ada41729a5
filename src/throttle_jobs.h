/*-------------------------------------------------------------------------
 *
 * throttle_jobs.h
 *		Declarations shared by the throttle_jobs C sources.
 *
 * Every SQL-callable function runs as SECURITY DEFINER with search_path
 * pinned to pg_catalog, pg_temp; the SQL strings below schema-qualify every
 * name anyway.
 *
 *-------------------------------------------------------------------------
 */
#ifndef THROTTLE_JOBS_H
#define THROTTLE_JOBS_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "storage/lockdefs.h"
#include "utils/timestamp.h"

/* Limits that are not settings */
#define TJ_MAX_KEY_LEN			255		/* bytes in a key, worker name */
#define TJ_MAX_ERROR_LEN		8192	/* bytes of an error text kept */
#define TJ_MAX_BACKOFF_FACTOR	1000.0
#define TJ_MAX_INTERVAL_USECS	((int64) 100 * 12 * DAYS_PER_MONTH * USECS_PER_DAY)	/* 100 years of 12 30-day months */

/* guc.c */
extern int	tj_max_payload_size;
extern int	tj_max_batch_size;
extern void tj_define_gucs(void);

/* spi_util.c: a statement prepared once per backend and kept */
typedef struct TJStatement
{
	const char *sql;
	int			nargs;
	Oid			argtypes[12];
	SPIPlanPtr	plan;
} TJStatement;

extern uint64 tj_execute(TJStatement *stmt, Datum *values, const char *nulls,
						 bool read_only, long count, int expected);
extern void tj_execute_sql(const char *sql, int expected);
extern Datum tj_get_datum(uint64 row, int col, bool *isnull);
extern Datum tj_get_datum_copy(uint64 row, int col, bool *isnull);

/* validate.c: argument checks that raise clear errors */
extern void tj_require_not_null(FunctionCallInfo fcinfo, int argno, const char *what);
extern int64 tj_interval_usecs(const Interval *iv);
extern void tj_check_interval(const Interval *iv, const char *what, bool allow_zero);
extern void tj_check_timestamp(TimestampTz ts, const char *what);
extern void tj_check_key(text *key, const char *what);
extern void tj_check_range(double value, const char *what, double lo, double hi);

/* queue.c: a queue's settings, looked up by name */
typedef struct TJQueue
{
	int32		id;
	char	   *name;
	bool		paused;
	int64		max_size;		/* -1: unbounded */
	bool		drop_when_full;
	Interval	lease;
} TJQueue;

extern void tj_lookup_queue(text *name, TJQueue *queue);
extern void tj_lock_queue(text *name, LOCKMODE mode);

/* backoff.c */
extern int64 tj_backoff_usecs(int32 attempt, int64 base_usecs, double factor,
							  int64 max_usecs, double jitter, double draw);

/* complete.c: the failure transition, shared with lease expiry */
typedef struct TJFailedJob
{
	int64		id;
	int32		attempt;
	int32		max_attempts;
	int64		backoff_base;
	double		backoff_factor;
	int64		backoff_max;
	double		backoff_jitter;
} TJFailedJob;

/* The columns tj_read_failed_job reads, from job j joined with queue q */
#define TJ_FAILED_JOB_COLUMNS \
	"j.id, j.attempt, coalesce(j.max_attempts, q.max_attempts), q.backoff_base," \
	" q.backoff_factor, q.backoff_max, q.backoff_jitter"

extern void tj_read_failed_job(uint64 row, TJFailedJob *job);
extern bool tj_fail_locked(const TJFailedJob *job, const char *error,
						   const Interval *retry_in, bool retryable,
						   const char *dead_reason, TimestampTz now);

#endif							/* THROTTLE_JOBS_H */
