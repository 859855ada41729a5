/*-------------------------------------------------------------------------
 *
 * validate.c
 *		Argument checks shared by the SQL-callable functions.  Each raises an
 *		error that names the argument and the bad value, before anything is
 *		changed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_caller);
PG_FUNCTION_INFO_V1(throttle_jobs_check_queue_options);

void
tj_require_not_null(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
}

static char *
interval_text(const Interval *iv)
{
	return DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)));
}

/*
 * An interval's length in microseconds, counting a month as 30 days and a
 * day as 24 hours (as justify_interval does).  Lengths beyond 100 years
 * are refused, which keeps all later arithmetic far from overflow.
 */
int64
tj_interval_usecs(const Interval *iv)
{
	double		usecs = (double) iv->month * DAYS_PER_MONTH * USECS_PER_DAY +
		(double) iv->day * USECS_PER_DAY + (double) iv->time;

	if (fabs(usecs) > (double) TJ_MAX_INTERVAL_USECS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("interval \"%s\" is out of range", interval_text(iv)),
				 errhint("Intervals may be at most 100 years long.")));
	return (int64) usecs;
}

/* Refuses negative (or, unless allow_zero, zero) and oversized intervals. */
void
tj_check_interval(const Interval *iv, const char *what, bool allow_zero)
{
	int64		usecs = tj_interval_usecs(iv);

	if (usecs < 0 || (usecs == 0 && !allow_zero))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %s, not \"%s\"", what,
						allow_zero ? "zero or positive" : "positive",
						interval_text(iv))));
}

void
tj_check_timestamp(TimestampTz ts, const char *what)
{
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a finite time, not \"%s\"", what,
						TIMESTAMP_IS_NOBEGIN(ts) ? "-infinity" : "infinity")));
}

/* Keys and worker names: non-empty and at most TJ_MAX_KEY_LEN bytes. */
void
tj_check_key(text *key, const char *what)
{
	int			len = VARSIZE_ANY_EXHDR(key);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (len > TJ_MAX_KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long (%d bytes)", what, len),
				 errhint("Use at most %d bytes.", TJ_MAX_KEY_LEN)));
}

/* A double in [lo, hi]; NaN is refused. */
void
tj_check_range(double value, const char *what, double lo, double hi)
{
	if (isnan(value) || value < lo || value > hi)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between %g and %g, not %g", what, lo, hi, value)));
}

static bool
valid_queue_name(const char *name)
{
	int			len = strlen(name);

	if (len < 1 || len > 63 || name[0] == '.' || name[0] == ':' || name[0] == '-')
		return false;
	for (int i = 0; i < len; i++)
	{
		char		c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

static void
check_choice(const char *what, const char *value, const char *a, const char *b)
{
	if (strcmp(value, a) != 0 && strcmp(value, b) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s \"%s\"", what, value),
				 errhint("Use '%s' or '%s'.", a, b)));
}

/* The role that called us, seen through any SECURITY DEFINER frames. */
Datum
throttle_jobs_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(GetOuterUserId());
}

/*
 * Checks the options of create_queue/alter_queue; NULL means "not given"
 * here, the callers decide which NULLs are allowed.  The name is required.
 */
Datum
throttle_jobs_check_queue_options(PG_FUNCTION_ARGS)
{
	char	   *name;

	tj_require_not_null(fcinfo, 0, "queue name");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!valid_queue_name(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid queue name \"%s\"", name),
				 errdetail("Queue names are 1 to 63 characters: letters, digits, \"_\", \".\", \":\" and \"-\", not starting with \".\", \":\" or \"-\".")));

	if (!PG_ARGISNULL(1) && PG_GETARG_INT64(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_size must be at least 1, not " INT64_FORMAT, PG_GETARG_INT64(1)),
				 errhint("Pass NULL for a queue without a size limit.")));
	if (!PG_ARGISNULL(2))
		check_choice("on_full", text_to_cstring(PG_GETARG_TEXT_PP(2)), "error", "drop");
	if (!PG_ARGISNULL(3) && PG_GETARG_INT32(3) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be at least 1, not %d", PG_GETARG_INT32(3))));
	if (!PG_ARGISNULL(4))
		tj_check_interval(PG_GETARG_INTERVAL_P(4), "backoff_base", false);
	if (!PG_ARGISNULL(5))
		tj_check_range(PG_GETARG_FLOAT8(5), "backoff_factor", 1.0, TJ_MAX_BACKOFF_FACTOR);
	if (!PG_ARGISNULL(6))
		tj_check_interval(PG_GETARG_INTERVAL_P(6), "backoff_max", false);
	if (!PG_ARGISNULL(7))
		tj_check_range(PG_GETARG_FLOAT8(7), "backoff_jitter", 0.0, 1.0);
	if (!PG_ARGISNULL(8))
		tj_check_interval(PG_GETARG_INTERVAL_P(8), "lease", false);
	if (!PG_ARGISNULL(9))
		tj_check_interval(PG_GETARG_INTERVAL_P(9), "retain_completed", true);
	if (!PG_ARGISNULL(10))
		tj_check_interval(PG_GETARG_INTERVAL_P(10), "retain_dead", true);
	if (!PG_ARGISNULL(11))
		check_choice("fairness", text_to_cstring(PG_GETARG_TEXT_PP(11)), "fifo", "round_robin");
	PG_RETURN_VOID();
}
