/*-------------------------------------------------------------------------
 *
 * validate.c
 *		Argument checks shared by the SQL-callable functions.  Each raises an
 *		error that names the argument and the bad value, before anything is
 *		changed.
 *
 * The bounds (throttle_jobs.h: TJ_MAX_KEY_LEN, TJ_MAX_SLIDING_WINDOW,
 * TJ_MAX_BACKOFF_FACTOR, the queue-name rule below) are written here only:
 * the SQL-written functions and the queue table's constraints call the
 * checks below instead of repeating them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_check_interval);
PG_FUNCTION_INFO_V1(throttle_jobs_check_queue_options);
PG_FUNCTION_INFO_V1(throttle_jobs_check_limit_key);
PG_FUNCTION_INFO_V1(throttle_jobs_check_rate_limit);
PG_FUNCTION_INFO_V1(throttle_jobs_valid_queue_name);
PG_FUNCTION_INFO_V1(throttle_jobs_valid_backoff_factor);

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

	if (usecs < 0 || (usecs == 0 && !allow_zero) ||
		iv->month < 0 || iv->day < 0 || iv->time < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %s, not \"%s\"", what,
						allow_zero ? "zero or positive" : "positive",
						interval_text(iv))));
}

/* A bound of whole days as text ("1 day", "365 days"), whatever IntervalStyle */
static char *
days_text(int64 usecs)
{
	int64		days = usecs / USECS_PER_DAY;

	return psprintf(INT64_FORMAT " %s", days, days == 1 ? "day" : "days");
}

/*
 * A lease (a queue's, reserve()'s) or a heartbeat's extend: positive and at
 * most TJ_MAX_LEASE_USECS.  A job that runs longer keeps its lease with
 * heartbeats; a worker that dies gives its jobs back within that bound.
 */
void
tj_check_lease(const Interval *iv, const char *what)
{
	tj_check_interval(iv, what, false);
	if (tj_interval_usecs(iv) > TJ_MAX_LEASE_USECS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at most %s, not \"%s\"", what,
						days_text(TJ_MAX_LEASE_USECS), interval_text(iv)),
				 errhint("Keep a longer job with heartbeat(): each call extends its lease by up to %s.",
						 days_text(TJ_MAX_LEASE_USECS))));
}

/* A delay before a job is available again (snooze, fail's retry_in): zero up to TJ_MAX_DELAY_USECS. */
void
tj_check_delay(const Interval *iv, const char *what)
{
	tj_check_interval(iv, what, true);
	if (tj_interval_usecs(iv) > TJ_MAX_DELAY_USECS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at most %s, not \"%s\"", what,
						days_text(TJ_MAX_DELAY_USECS), interval_text(iv)),
				 errhint("To run a job much later, enqueue a new one with a later run_at.")));
}

/*
 * A queue's or a job's max_attempts: 1 to TJ_MAX_ATTEMPTS.  hint (may be
 * NULL) is added when the value is below 1.
 */
void
tj_check_max_attempts(int32 value, const char *hint)
{
	if (value < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be at least 1, not %d", value),
				 hint ? errhint("%s", hint) : 0));
	if (value > TJ_MAX_ATTEMPTS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be at most %d, not %d", TJ_MAX_ATTEMPTS, value),
				 errhint("A job that keeps failing goes to the dead letters, from where retry_dead() can send it back.")));
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

/* A job's concurrency or rate key: as tj_check_key, and no "*" (templates are for limits). */
void
tj_check_job_key(text *key, const char *what)
{
	tj_check_key(key, what);
	if (memchr(VARDATA_ANY(key), '*', VARSIZE_ANY_EXHDR(key)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" contains \"*\"", what, text_to_cstring(key)),
				 errhint("\"*\" marks templates in limits; a job carries a concrete key.")));
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

#define TJ_MAX_QUEUE_NAME_LEN	63

/*
 * The queue-name rule: 1 to 63 characters, letters, digits, "_", ".", ":"
 * and "-", not starting with ".", ":" or "-".
 */
static bool
valid_queue_name(const char *name, int len)
{
	if (len < 1 || len > TJ_MAX_QUEUE_NAME_LEN ||
		name[0] == '.' || name[0] == ':' || name[0] == '-')
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

/* SQL: _valid_queue_name(name) returns boolean: queue.name's constraint */
Datum
throttle_jobs_valid_queue_name(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(valid_queue_name(VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name)));
}

/* SQL: _valid_backoff_factor(factor) returns boolean: queue.backoff_factor's constraint */
Datum
throttle_jobs_valid_backoff_factor(PG_FUNCTION_ARGS)
{
	double		factor = PG_GETARG_FLOAT8(0);

	PG_RETURN_BOOL(factor >= 1.0 && factor <= TJ_MAX_BACKOFF_FACTOR);
}

/*
 * SQL: _check_limit_key(key): a limit's key, a concrete key or a template
 * "prefix*": 1 to TJ_MAX_KEY_LEN bytes, with no "*" but a template's last.
 */
Datum
throttle_jobs_check_limit_key(PG_FUNCTION_ARGS)
{
	text	   *key;
	int			len;
	const char *data;

	tj_require_not_null(fcinfo, 0, "key");
	key = PG_GETARG_TEXT_PP(0);
	len = VARSIZE_ANY_EXHDR(key);
	data = VARDATA_ANY(key);
	if (len == 0 || len > TJ_MAX_KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid limit key \"%s\"", text_to_cstring(key)),
				 errdetail("Keys are 1 to %d bytes long.", TJ_MAX_KEY_LEN)));
	/* ("*" is one byte that no multibyte character contains) */
	if ((len == 1 && data[0] == '*') || memchr(data, '*', len - 1) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid key template \"%s\"", text_to_cstring(key)),
				 errhint("A template is a prefix followed by one \"*\" at the end, such as 'tenant:*'.")));
	PG_RETURN_VOID();
}

/*
 * SQL: _check_rate_limit(max_per_period, period, algorithm, burst), for
 * set_rate_limit: the rate itself (burst may be NULL).
 */
Datum
throttle_jobs_check_rate_limit(PG_FUNCTION_ARGS)
{
	int32		max;
	char	   *algorithm;
	int			alg;

	tj_require_not_null(fcinfo, 0, "max_per_period");
	tj_require_not_null(fcinfo, 1, "period");
	tj_require_not_null(fcinfo, 2, "algorithm");
	max = PG_GETARG_INT32(0);
	if (max < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_per_period must be at least 1, not %d", max)));
	tj_check_interval(PG_GETARG_INTERVAL_P(1), "period", false);
	algorithm = text_to_cstring(PG_GETARG_TEXT_PP(2));
	alg = tj_rate_algorithm(algorithm);
	if (alg == TJ_SLIDING_WINDOW && max > TJ_MAX_SLIDING_WINDOW)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a sliding_window limit allows at most %d per period, not %d",
						TJ_MAX_SLIDING_WINDOW, max),
				 errhint("It keeps a log of every admission in the window; use token_bucket or fixed_window for higher rates.")));
	if (!PG_ARGISNULL(3) && alg != TJ_TOKEN_BUCKET)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("burst applies to token_bucket only, not to %s", algorithm)));
	if (!PG_ARGISNULL(3) && PG_GETARG_INT32(3) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("burst must be at least 1, not %d", PG_GETARG_INT32(3))));
	PG_RETURN_VOID();
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

/* The names of the queue-option arguments (TJQueueArg order) */
const char *const tj_queue_arg_names[TJ_QA_COUNT] = {
	"name", "max_size", "on_full", "max_attempts", "backoff_base", "backoff_factor",
	"backoff_max", "backoff_jitter", "lease", "retain_completed", "retain_dead",
	"handler", "fairness"
};

/* SQL: _check_interval(value, what, allow_zero) */
Datum
throttle_jobs_check_interval(PG_FUNCTION_ARGS)
{
	char	   *what = text_to_cstring(PG_GETARG_TEXT_PP(1));

	tj_check_interval(PG_GETARG_INTERVAL_P(0), what, PG_GETARG_BOOL(2));
	PG_RETURN_VOID();
}

static TJStatement queue_backoff_stmt = {
	"SELECT q.backoff_base, q.backoff_max FROM throttle_jobs.queue q WHERE q.name = $1",
	1, {TEXTOID}
};

/*
 * backoff_base may not be above backoff_max: the cap would make the base
 * meaningless.  Either may be NULL (alter_queue: unchanged), and is then
 * the queue's current value; a queue that does not exist is checked later.
 */
static void
check_backoff_order(text *name, Interval *base, Interval *max)
{
	if (base == NULL && max == NULL)
		return;
	if (base == NULL || max == NULL)
	{
		Datum		values[1];
		bool		isnull;

		values[0] = PointerGetDatum(name);
		SPI_connect();
		if (tj_execute(&queue_backoff_stmt, values, NULL, true, 1, SPI_OK_SELECT) == 1)
		{
			if (base == NULL)
				base = DatumGetIntervalP(tj_get_datum_copy(0, 1, &isnull));
			else
				max = DatumGetIntervalP(tj_get_datum_copy(0, 2, &isnull));
		}
		SPI_finish();
		if (base == NULL || max == NULL)
			return;
	}
	if (tj_interval_usecs(base) > tj_interval_usecs(max))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("backoff_base \"%s\" is above backoff_max \"%s\"",
						interval_text(base), interval_text(max)),
				 errdetail("Retry delays are capped at backoff_max, so every delay would be backoff_max."),
				 errhint("Lower backoff_base or raise backoff_max (alter_queue checks the queue's resulting values).")));
}

/*
 * Checks the queue options of create_queue or alter_queue (creating says
 * which), whose arguments (the queue-option signature: TJQueueArg) start
 * at argument `first` of fcinfo; options past the last argument count as
 * NULL.  NULL means "not given"; when creating, only max_size and the
 * handler (checked elsewhere) may be NULL.  The name is always required.
 */
void
tj_check_queue_options(FunctionCallInfo fcinfo, int first, bool creating)
{
#define ARG(a)			(first + (a))
#define ISNULL(a)		(ARG(a) >= PG_NARGS() || PG_ARGISNULL(ARG(a)))
	char	   *name;

	for (int i = 0; i < TJ_QA_COUNT; i++)
		if ((i == TJ_QA_NAME || (creating && i != TJ_QA_MAX_SIZE && i != TJ_QA_HANDLER)) &&
			ISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null", i == TJ_QA_NAME ? "queue name" : tj_queue_arg_names[i])));

	name = text_to_cstring(PG_GETARG_TEXT_PP(ARG(TJ_QA_NAME)));
	if (!valid_queue_name(name, strlen(name)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid queue name \"%s\"", name),
				 errdetail("Queue names are 1 to %d characters: letters, digits, \"_\", \".\", \":\" and \"-\", not starting with \".\", \":\" or \"-\".",
						   TJ_MAX_QUEUE_NAME_LEN)));

	if (!ISNULL(TJ_QA_MAX_SIZE) && PG_GETARG_INT64(ARG(TJ_QA_MAX_SIZE)) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_size must be at least 1, not " INT64_FORMAT,
						PG_GETARG_INT64(ARG(TJ_QA_MAX_SIZE))),
				 errhint("Pass NULL for a queue without a size limit.")));
	if (!ISNULL(TJ_QA_ON_FULL))
		check_choice("on_full", text_to_cstring(PG_GETARG_TEXT_PP(ARG(TJ_QA_ON_FULL))),
					 "error", "drop");
	if (!ISNULL(TJ_QA_MAX_ATTEMPTS))
		tj_check_max_attempts(PG_GETARG_INT32(ARG(TJ_QA_MAX_ATTEMPTS)), NULL);
	if (!ISNULL(TJ_QA_BACKOFF_BASE))
		tj_check_interval(PG_GETARG_INTERVAL_P(ARG(TJ_QA_BACKOFF_BASE)), "backoff_base", false);
	if (!ISNULL(TJ_QA_BACKOFF_FACTOR))
		tj_check_range(PG_GETARG_FLOAT8(ARG(TJ_QA_BACKOFF_FACTOR)), "backoff_factor", 1.0,
					   TJ_MAX_BACKOFF_FACTOR);
	if (!ISNULL(TJ_QA_BACKOFF_MAX))
		tj_check_interval(PG_GETARG_INTERVAL_P(ARG(TJ_QA_BACKOFF_MAX)), "backoff_max", false);
	if (!ISNULL(TJ_QA_BACKOFF_JITTER))
		tj_check_range(PG_GETARG_FLOAT8(ARG(TJ_QA_BACKOFF_JITTER)), "backoff_jitter", 0.0, 1.0);
	if (!ISNULL(TJ_QA_LEASE))
		tj_check_lease(PG_GETARG_INTERVAL_P(ARG(TJ_QA_LEASE)), "lease");
	if (!ISNULL(TJ_QA_RETAIN_COMPLETED))
		tj_check_interval(PG_GETARG_INTERVAL_P(ARG(TJ_QA_RETAIN_COMPLETED)), "retain_completed", true);
	if (!ISNULL(TJ_QA_RETAIN_DEAD))
		tj_check_interval(PG_GETARG_INTERVAL_P(ARG(TJ_QA_RETAIN_DEAD)), "retain_dead", true);
	if (!ISNULL(TJ_QA_FAIRNESS))
		check_choice("fairness", text_to_cstring(PG_GETARG_TEXT_PP(ARG(TJ_QA_FAIRNESS))),
					 "fifo", "round_robin");
	check_backoff_order(PG_GETARG_TEXT_PP(ARG(TJ_QA_NAME)),
						ISNULL(TJ_QA_BACKOFF_BASE) ? NULL : PG_GETARG_INTERVAL_P(ARG(TJ_QA_BACKOFF_BASE)),
						ISNULL(TJ_QA_BACKOFF_MAX) ? NULL : PG_GETARG_INTERVAL_P(ARG(TJ_QA_BACKOFF_MAX)));
#undef ARG
#undef ISNULL
}

/*
 * SQL (0.1.0): _check_queue_options(creating, name, max_size, on_full,
 * max_attempts, backoff_base, backoff_factor, backoff_max, backoff_jitter,
 * lease, retain_completed, retain_dead, fairness), for 0.1.0's
 * _create_queue and _alter_queue; it has no handler argument, so the
 * option after retain_dead is fairness.
 */
Datum
throttle_jobs_check_queue_options(PG_FUNCTION_ARGS)
{
	LOCAL_FCINFO(args, TJ_QA_COUNT);

	/* (spread out to the queue-option signature: a NULL handler) */
	InitFunctionCallInfoData(*args, NULL, TJ_QA_COUNT, InvalidOid, NULL, NULL);
	for (int i = 0; i < TJ_QA_COUNT; i++)
	{
		int			from = i < TJ_QA_HANDLER ? i + 1 : i;

		args->args[i] = i == TJ_QA_HANDLER
			? (NullableDatum) {.value = (Datum) 0, .isnull = true}
			: fcinfo->args[from];
	}
	tj_check_queue_options(args, 0, PG_GETARG_BOOL(0));
	PG_RETURN_VOID();
}
