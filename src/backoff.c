/*-------------------------------------------------------------------------
 *
 * backoff.c
 *		Capped exponential backoff with jitter, as a pure function.
 *
 *		delay = min(max, min(max, base * factor^(attempt - 1)) * (1 + jitter * (2 * draw - 1)))
 *
 * The random draw is an argument so that tests can check exact values.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_backoff_delay);

/*
 * The delay after failed attempt number `attempt` (1 = the first run).
 * Requires base_usecs > 0, max_usecs > 0, factor >= 1, jitter in [0, 1] and
 * draw in [0, 1]; attempts below 1 count as 1.  Never exceeds max_usecs and
 * never overflows: factor^(attempt-1) may become infinite in double
 * arithmetic, and the minimum with the cap brings it back.
 */
int64
tj_backoff_usecs(int32 attempt, int64 base_usecs, double factor,
				 int64 max_usecs, double jitter, double draw)
{
	double		delay;

	if (attempt < 1)
		attempt = 1;
	delay = (double) base_usecs * pow(factor, (double) (attempt - 1));
	if (!(delay < (double) max_usecs))
		delay = (double) max_usecs;
	delay *= 1.0 + jitter * (2.0 * draw - 1.0);
	if (delay > (double) max_usecs)
		delay = (double) max_usecs;
	if (delay < 0.0)
		delay = 0.0;
	return (int64) rint(delay);
}

/* SQL: backoff_delay(attempt, base, factor, max, jitter, draw) returns interval */
Datum
throttle_jobs_backoff_delay(PG_FUNCTION_ARGS)
{
	int32		attempt = PG_GETARG_INT32(0);
	Interval   *base = PG_GETARG_INTERVAL_P(1);
	double		factor = PG_GETARG_FLOAT8(2);
	Interval   *max = PG_GETARG_INTERVAL_P(3);
	double		jitter = PG_GETARG_FLOAT8(4);
	double		draw = PG_GETARG_FLOAT8(5);
	Interval   *result;

	if (attempt < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("attempt must be at least 1, not %d", attempt)));
	tj_check_interval(base, "base", false);
	tj_check_interval(max, "max", false);
	tj_check_range(factor, "factor", 1.0, TJ_MAX_BACKOFF_FACTOR);
	tj_check_range(jitter, "jitter", 0.0, 1.0);
	tj_check_range(draw, "draw", 0.0, 1.0);

	result = (Interval *) palloc0(sizeof(Interval));
	result->time = tj_backoff_usecs(attempt, tj_interval_usecs(base), factor,
									tj_interval_usecs(max), jitter, draw);
	PG_RETURN_INTERVAL_P(result);
}
