/*-------------------------------------------------------------------------
 *
 * rate.c
 *		The pure rate arithmetic of rate limits: token bucket, sliding and
 *		fixed windows, the adaptive factor.  Every function takes `now` as
 *		an argument and touches no table, no lock and no shared state, so
 *		that tests can check it exactly (_rate_admit, _adaptive_factor);
 *		limits.c loads and saves the state around it, under the key mutex.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_rate_admit);
PG_FUNCTION_INFO_V1(throttle_jobs_adaptive_factor);

/* ---- pure rate arithmetic ---- */

/* now + usecs, or DT_NOEND when that is past the end of timestamptz */
static TimestampTz
time_after(TimestampTz now, double usecs)
{
	double		t = (double) now + ceil(usecs);

	if (!(t < (double) END_TIMESTAMP))
		return DT_NOEND;
	return (TimestampTz) t;
}

/*
 * Decides whether `cost` admissions may pass now, updating *state if so;
 * otherwise sets *next_at to the earliest time they could (may be
 * DT_NOEND: never, the cost exceeds what the limit ever allows).
 *
 *  token_bucket:	capacity burst (default max), refilled continuously at
 *					max per period; any window of length T admits at most
 *					burst + max * T / period.
 *  fixed_window:	at most max per period-long window aligned on the
 *					PostgreSQL epoch (2000-01-01 UTC).
 *  sliding_window: at most max in any window of length period (an exact
 *					log of recent admissions).
 *
 * A fresh state (stamp 0) is a full bucket or an empty window.  The log
 * arrays must have room for max + 1 entries.  On admission, state->stamp is
 * the admission time: `now`, or the previous admission's time if later.
 */
bool
tj_rate_admit(const TJRateLimit *limit, TJRateState *state, TimestampTz now,
			  int32 cost, TimestampTz *next_at)
{
	/*
	 * Admission times never go back: a transaction that started before the
	 * key's last admission is admitted at that admission's time.  Without
	 * this, a late-starting transaction's entries could be pruned from the
	 * sliding log before an early-starting one is judged.
	 */
	if (state->stamp != 0 && now < state->stamp)
		now = state->stamp;
	*next_at = 0;
	switch (limit->algorithm)
	{
		case TJ_TOKEN_BUCKET:
			{
				double		capacity = limit->burst > 0 ? limit->burst : limit->max;
				double		per_usec = (double) limit->max / (double) limit->period;

				if (state->stamp == 0)
				{
					state->tokens = capacity;
					state->stamp = now;
				}
				else if (now > state->stamp)
				{
					state->tokens = Min(capacity,
										state->tokens + (double) (now - state->stamp) * per_usec);
					state->stamp = now;
				}
				if (state->tokens + 1e-9 >= cost)
				{
					state->tokens = Max(state->tokens - cost, 0.0);
					return true;
				}
				if (cost > capacity)
					*next_at = DT_NOEND;
				else
					*next_at = time_after(now, (cost - state->tokens) / per_usec);
				return false;
			}
		case TJ_FIXED_WINDOW:
			{
				TimestampTz start = now - (((now % limit->period) + limit->period) % limit->period);

				if (state->stamp != start)
				{
					state->stamp = start;
					state->tokens = 0;
				}
				if (state->tokens + cost <= limit->max)
				{
					state->tokens += cost;
					return true;
				}
				*next_at = cost > limit->max ? DT_NOEND : time_after(start, (double) limit->period);
				return false;
			}
		case TJ_SLIDING_WINDOW:
			{
				int			keep = 0;
				int64		used = 0;

				/* drop admissions that left the window (now - period, now] */
				for (int i = 0; i < state->n; i++)
				{
					if (state->log_at[i] > now - limit->period)
					{
						state->log_at[keep] = state->log_at[i];
						state->log_cost[keep] = state->log_cost[i];
						used += state->log_cost[keep];
						keep++;
					}
				}
				state->n = keep;
				state->stamp = now;
				if (used + cost <= limit->max)
				{
					state->log_at[state->n] = now;
					state->log_cost[state->n] = cost;
					state->n++;
					return true;
				}
				if (cost > limit->max)
				{
					*next_at = DT_NOEND;
					return false;
				}
				/* the oldest entries leave first (the log is in time order) */
				for (int i = 0; i < state->n; i++)
				{
					used -= state->log_cost[i];
					if (used + cost <= limit->max)
					{
						*next_at = time_after(state->log_at[i], (double) limit->period);
						break;
					}
				}
				return false;
			}
	}
	elog(ERROR, "throttle_jobs: unknown rate algorithm %d", limit->algorithm);
	return false;
}

int
tj_rate_algorithm(const char *name)
{
	if (strcmp(name, "token_bucket") == 0)
		return TJ_TOKEN_BUCKET;
	if (strcmp(name, "sliding_window") == 0)
		return TJ_SLIDING_WINDOW;
	if (strcmp(name, "fixed_window") == 0)
		return TJ_FIXED_WINDOW;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown rate limit algorithm \"%s\"", name),
			 errhint("Use 'token_bucket', 'sliding_window' or 'fixed_window'.")));
	return -1;
}

/*
 * An adaptive factor is kept to four decimals: each step
 * rounds, so that steps of 0.1 land on 0.8 exactly (the nearest double), and
 * not on 0.7999999999999999, which floor() would turn into one admission
 * fewer.  A stored factor written before 0.2.0 is rounded when read.
 */
#define FACTOR_SCALE	10000.0		/* four decimals */

double
tj_round_factor(double factor)
{
	return rint(factor * FACTOR_SCALE) / FACTOR_SCALE;
}

/*
 * Adaptive rate limits: the next factor from the outcomes of the key's jobs
 * since the last evaluation (one evaluation per period).  With at least
 * TJ_ADAPTIVE_MIN_SAMPLES outcomes and an error rate above the threshold,
 * the factor halves, down to min_factor; with an error rate at or below it
 * (and at least one outcome), it recovers by TJ_ADAPTIVE_STEP, up to 1.
 * Otherwise it stays.  Every result is rounded (tj_round_factor).
 */
double
tj_adaptive_factor(double factor, int64 ok, int64 failed, double threshold,
				   double min_factor)
{
	int64		n = ok + failed;

	factor = tj_round_factor(factor);
	if (n >= TJ_ADAPTIVE_MIN_SAMPLES && (double) failed / (double) n > threshold)
		return Max(min_factor, tj_round_factor(factor * TJ_ADAPTIVE_DECREASE));
	if (n >= 1 && (double) failed / (double) n <= threshold)
		return Min(1.0, tj_round_factor(factor + TJ_ADAPTIVE_STEP));
	return factor;
}

/*
 * The limit scaled by an adaptive factor: never below one admission.  The
 * factor has at most four decimals, so limit * factor is an integer or at
 * least 0.0001 away from one: the small
 * addend absorbs the rounding error of the product (60 * 0.8 may come out
 * a hair below 48), and nothing else.
 */
static TJRateLimit
scaled_limit(const TJRateLimit *limit, double factor)
{
	TJRateLimit scaled = *limit;

	if (factor < 1.0)
	{
		scaled.max = Max(1, (int32) floor(limit->max * factor + 1e-6));
		if (limit->burst > 0)
			scaled.burst = Max(1, (int32) floor(limit->burst * factor + 1e-6));
	}
	return scaled;
}

/*
 * The most cost units the limit admits at once at its full rate: a token
 * bucket's capacity (burst, default max), a window's max.  A job that costs
 * more can never start.
 */
int32
tj_rate_capacity(const TJRateLimit *limit)
{
	if (limit->algorithm == TJ_TOKEN_BUCKET && limit->burst > 0)
		return limit->burst;
	return limit->max;
}

/*
 * The rate decision for `cost` admissions of a key governed by `l` at `now`
 * under *state, as tj_rate_admit, with the limit scaled by the state's
 * adaptive factor.  A cost too big only for the reduced rate may pass once
 * the rate recovers: *next_at is then the next evaluation, not "never".
 * Reads and writes no table.
 */
bool
tj_rate_try(const TJKeyLimit *l, TJRateState *state, TimestampTz now, int32 cost,
			TimestampTz *next_at)
{
	TJRateLimit effective = scaled_limit(&l->rate, state->factor);
	TJRateState probe;

	if (tj_rate_admit(&effective, state, now, cost, next_at))
		return true;
	if (*next_at != DT_NOEND || state->factor >= 1.0)
		return false;
	/* a fresh state under the full rate, with a log of its own */
	memset(&probe, 0, sizeof(probe));
	probe.factor = 1.0;
	if (l->rate.algorithm == TJ_SLIDING_WINDOW)
	{
		probe.log_at = palloc(sizeof(TimestampTz) * (l->rate.max + 1));
		probe.log_cost = palloc(sizeof(int32) * (l->rate.max + 1));
	}
	if (tj_rate_admit(&l->rate, &probe, now, cost, next_at) || *next_at != DT_NOEND)
		*next_at = time_after(Max(now, state->evaluated_at), (double) l->rate.period);
	tj_free_rate_state(&probe);
	return false;
}

/*
 * Copies a stored admission log (parallel arrays of times and costs) into
 * state, keeping the newest `max` entries when it is longer (the limit was
 * lowered).  state->log_at/log_cost must hold max + 1 entries.
 */
void
tj_rate_fill_log(TJRateState *state, ArrayType *at, ArrayType *cost, int32 max)
{
	Datum	   *ats,
			   *costs;
	int			n,
				m;

	deconstruct_array(at, TIMESTAMPTZOID, sizeof(TimestampTz), true, TYPALIGN_DOUBLE,
					  &ats, NULL, &n);
	deconstruct_array(cost, INT4OID, sizeof(int32), true, TYPALIGN_INT,
					  &costs, NULL, &m);
	for (int i = Max(0, Min(n, m) - max); i < Min(n, m); i++)
	{
		state->log_at[state->n] = DatumGetTimestampTz(ats[i]);
		state->log_cost[state->n] = DatumGetInt32(costs[i]);
		state->n++;
	}
	pfree(ats);
	pfree(costs);
}

/*
 * SQL: _rate_admit(algorithm, max, period, burst, cost, now, tokens, stamp,
 * log_at, log_cost): the pure rate arithmetic, for tests with a fixed clock.
 * Returns (admitted, tokens, stamp, log_at, log_cost, next_at).
 */
Datum
throttle_jobs_rate_admit(PG_FUNCTION_ARGS)
{
	TJRateLimit limit;
	TJRateState state = {0};
	TupleDesc	tupdesc;
	Datum		out[6];
	bool		outnull[6] = {false, false, false, false, false, false};
	TimestampTz next_at;
	bool		admitted;
	Datum	   *ats,
			   *costs;

	for (int i = 0; i < 8; i++)
		if (PG_ARGISNULL(i) && i != 3)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("only burst may be null")));
	limit.algorithm = tj_rate_algorithm(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	limit.max = PG_GETARG_INT32(1);
	tj_check_interval(PG_GETARG_INTERVAL_P(2), "period", false);
	limit.period = tj_interval_usecs(PG_GETARG_INTERVAL_P(2));
	limit.burst = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);
	if (limit.max < 1 || limit.burst < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max must be positive and burst not negative")));

	state.tokens = PG_GETARG_FLOAT8(6);
	state.stamp = PG_GETARG_TIMESTAMPTZ(7);
	if (limit.algorithm == TJ_SLIDING_WINDOW)
	{
		if (limit.max > TJ_MAX_SLIDING_WINDOW)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a sliding_window allows at most %d per period, not %d",
							TJ_MAX_SLIDING_WINDOW, limit.max)));
		state.log_at = palloc(sizeof(TimestampTz) * (limit.max + 1));
		state.log_cost = palloc(sizeof(int32) * (limit.max + 1));
	}
	if (!PG_ARGISNULL(8) && !PG_ARGISNULL(9) && limit.algorithm == TJ_SLIDING_WINDOW)
		tj_rate_fill_log(&state, PG_GETARG_ARRAYTYPE_P(8), PG_GETARG_ARRAYTYPE_P(9), limit.max);
	admitted = tj_rate_admit(&limit, &state, PG_GETARG_TIMESTAMPTZ(5),
							 PG_GETARG_INT32(4), &next_at);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	ats = palloc(sizeof(Datum) * (state.n + 1));
	costs = palloc(sizeof(Datum) * (state.n + 1));
	for (int i = 0; i < state.n; i++)
	{
		ats[i] = TimestampTzGetDatum(state.log_at[i]);
		costs[i] = Int32GetDatum(state.log_cost[i]);
	}
	out[0] = BoolGetDatum(admitted);
	out[1] = Float8GetDatum(state.tokens);
	out[2] = TimestampTzGetDatum(state.stamp);
	out[3] = PointerGetDatum(construct_array(ats, state.n, TIMESTAMPTZOID,
											 sizeof(TimestampTz), true, TYPALIGN_DOUBLE));
	out[4] = PointerGetDatum(construct_array(costs, state.n, INT4OID, sizeof(int32),
											 true, TYPALIGN_INT));
	out[5] = TimestampTzGetDatum(next_at);
	outnull[5] = admitted;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), out, outnull)));
}

/* SQL: _adaptive_factor(factor, ok, failed, error_threshold, min_factor) */
Datum
throttle_jobs_adaptive_factor(PG_FUNCTION_ARGS)
{
	PG_RETURN_FLOAT8(tj_adaptive_factor(PG_GETARG_FLOAT8(0), PG_GETARG_INT64(1),
										PG_GETARG_INT64(2), PG_GETARG_FLOAT8(3),
										PG_GETARG_FLOAT8(4)));
}
