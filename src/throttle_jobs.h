/*-------------------------------------------------------------------------
 *
 * throttle_jobs.h
 *		Declarations shared by the throttle_jobs C sources.
 *
 * Every SQL-callable function runs with search_path pinned to pg_catalog,
 * pg_temp, as the extension owner: SECURITY DEFINER, or (the entry points
 * that take a queue or a job) SECURITY INVOKER switching to the owner after
 * reading the calling role (privilege.c); the SQL strings below
 * schema-qualify every name anyway.
 *
 *-------------------------------------------------------------------------
 */
#ifndef THROTTLE_JOBS_H
#define THROTTLE_JOBS_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/lockdefs.h"
#include "storage/spin.h"
#include "utils/array.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "compat.h"

/* Limits that are not settings */
#define TJ_MAX_KEY_LEN			255		/* bytes in a key, worker name */
#define TJ_MAX_ERROR_LEN		8192	/* bytes of an error text kept */
#define TJ_MAX_BACKOFF_FACTOR	1000.0
#define TJ_MAX_INTERVAL_USECS	((int64) 100 * 12 * DAYS_PER_MONTH * USECS_PER_DAY)	/* 100 years of 12 30-day months */
#define TJ_MAX_ATTEMPTS			1000	/* a queue's or a job's max_attempts */
#define TJ_MAX_LEASE_USECS		USECS_PER_DAY	/* a lease, and a heartbeat's extend */
#define TJ_MAX_DELAY_USECS		((int64) 365 * USECS_PER_DAY)	/* snooze's delay, fail's retry_in */

#define TJ_MAX_EXECUTORS		32		/* executor_workers per database */

/* build_stamp.c */
extern const char *const tj_build_stamp;

/* guc.c: every throttle_jobs.* setting */
extern int	tj_max_payload_size;
extern int	tj_max_batch_size;
extern char *tj_databases;
extern int	tj_maintenance_interval;
extern int	tj_executor_workers;
extern int	tj_shutdown_grace;
extern bool tj_allow_superuser_handlers;
extern int	tj_stats_max_queues;
extern int	tj_stats_max_keys;
extern int	tj_stats_history;
extern int	tj_stats_recount_interval;
extern void tj_define_gucs(void);

/* spi_util.c: a statement prepared once per backend and kept */
typedef struct TJStatement
{
	const char *sql;
	int			nargs;
	Oid			argtypes[16];
	SPIPlanPtr	plan;
	int			options;		/* CURSOR_OPT_* planner options; 0: none */
} TJStatement;

/* A hot-path statement: always its generic plan */
#define TJ_GENERIC CURSOR_OPT_GENERIC_PLAN

/*
 * SQL: the number of live jobs j that `cond` picks, counted up to $2 (a
 * bigint) only: enough to compare with a bound, without counting them all.
 */
#define TJ_COUNT_JOBS_SQL(cond) \
	"SELECT pg_catalog.count(*) FROM (SELECT 1 FROM throttle_jobs.job j" \
	" WHERE " cond " LIMIT $2) s"

extern SPIPlanPtr tj_plan(TJStatement *stmt);
extern uint64 tj_execute(TJStatement *stmt, Datum *values, const char *nulls,
						 bool read_only, long count, int expected);
extern uint64 tj_execute_latest(TJStatement *stmt, Datum *values, const char *nulls,
								int expected);
extern ErrorData *tj_catch_in_subxact(MemoryContext cxt, ResourceOwner owner);
extern Datum tj_get_datum(uint64 row, int col, bool *isnull);
extern Datum tj_get_datum_copy(uint64 row, int col, bool *isnull);

/* spi_util.c: our tables by name, and backend copies of small ones */
typedef struct TJTableCache
{
	const char *relname;
	Oid			relid;			/* InvalidOid: not looked up yet */
	bool		loaded;			/* the backend's copy is current */
	bool		callbacks_set;
} TJTableCache;

#define TJ_TABLE_CACHE(relname) {(relname), InvalidOid, false, false}

extern Oid	tj_relid(const char *relname);
extern bool tj_table_cache_valid(TJTableCache *c);
extern Oid	tj_table_cache_relid(TJTableCache *c);
extern void tj_table_cache_loaded(TJTableCache *c);
extern void tj_table_cache_changed(TJTableCache *c);

/* validate.c: argument checks that raise clear errors */
extern void tj_require_not_null(FunctionCallInfo fcinfo, int argno, const char *what);
extern int64 tj_interval_usecs(const Interval *iv);
extern void tj_check_interval(const Interval *iv, const char *what, bool allow_zero);
extern void tj_check_timestamp(TimestampTz ts, const char *what);
extern void tj_check_key(text *key, const char *what);
extern void tj_check_job_key(text *key, const char *what);
extern void tj_check_range(double value, const char *what, double lo, double hi);
extern void tj_check_max_attempts(int32 value, const char *hint);
extern void tj_check_lease(const Interval *iv, const char *what);
extern void tj_check_delay(const Interval *iv, const char *what);

/*
 * validate.c: create_queue's and alter_queue's arguments, in order: the
 * queue-option signature, written here once (a new option is a new entry
 * here, in tj_queue_arg_names and in queue.c's statements; one that only
 * create_queue takes, as max_running, goes last and counts as not given
 * where a function has fewer arguments).
 */
typedef enum TJQueueArg
{
	TJ_QA_NAME,
	TJ_QA_MAX_SIZE,
	TJ_QA_ON_FULL,
	TJ_QA_MAX_ATTEMPTS,
	TJ_QA_BACKOFF_BASE,
	TJ_QA_BACKOFF_FACTOR,
	TJ_QA_BACKOFF_MAX,
	TJ_QA_BACKOFF_JITTER,
	TJ_QA_LEASE,
	TJ_QA_RETAIN_COMPLETED,
	TJ_QA_RETAIN_DEAD,
	TJ_QA_HANDLER,
	TJ_QA_FAIRNESS,
	TJ_QA_COUNT,				/* (the options a queue row stores) */
	TJ_QA_MAX_RUNNING = TJ_QA_COUNT /* create_queue only: stored apart
									 * (queue_cap.c) */
} TJQueueArg;

extern const char *const tj_queue_arg_names[TJ_QA_COUNT];
extern void tj_check_queue_options(FunctionCallInfo fcinfo, int first, bool creating);

/* queue.c: a queue's settings, looked up by name */
typedef struct TJQueue
{
	int32		id;
	char	   *name;
	bool		paused;
	int64		max_size;		/* -1: unbounded */
	bool		drop_when_full;
	Interval	lease;
	bool		round_robin;	/* fairness = 'round_robin' */
	bool		has_handler;	/* executors run its jobs */
} TJQueue;

extern void tj_lookup_queue(text *name, TJQueue *queue);
extern void tj_lock_queue(text *name, LOCKMODE mode);

/* privilege.c: per-queue privileges and the calling role (see the file header) */
#define TJ_PRIV_PRODUCE		0x1
#define TJ_PRIV_CONSUME		0x2
#define TJ_PRIV_MANAGE		0x4
#define TJ_PRIV_ALL			(TJ_PRIV_PRODUCE | TJ_PRIV_CONSUME | TJ_PRIV_MANAGE)

typedef struct TJCaller
{
	Oid			role;			/* current_user where the entry point was called */
	Oid			saved_userid;
	int			saved_context;
	int			guc_nestlevel;	/* tj_caller_enter_owner's; 0: none */
} TJCaller;

extern void tj_caller_enter(FunctionCallInfo fcinfo, TJCaller *caller);
extern void tj_caller_enter_owner(TJCaller *caller);
extern void tj_caller_leave(const TJCaller *caller);
extern int	tj_privilege_from_name(const char *name);
extern bool tj_capable(Oid role, int priv);
extern void tj_check_queue(Oid role, text *name, int priv);
extern void tj_check_jobs(Oid role, Datum ids, int priv);
extern void tj_check_job(Oid role, Datum id, int priv);
extern void tj_check_queue_id(Oid role, int32 queue_id, int priv, int64 job);
extern void tj_manage_queue(FunctionCallInfo fcinfo, TJCaller *caller, TJQueue *queue);
extern bool tj_rate_governed_by(const char *key, const char *lk);
extern bool tj_may_queue(Oid role, int32 queue_id, int priv);
extern void tj_assign_run_jobs_caller(const char *newval, void *extra);
extern void tj_run_jobs_check(Oid caller, text *queue);
extern bool tj_run_jobs_may_take(Datum queue);

/* ready_hint.c: where each priority level's ready jobs begin (see the file header) */
#define TJ_HINT_LEVELS	16		/* priority levels a queue may use with hints */

typedef struct TJReadyKey
{
	int64		rr_rank;
	TimestampTz run_at;
	int64		id;
} TJReadyKey;

typedef struct TJHintLevel
{
	int16		priority;
	TJReadyKey	hint;			/* no ready job of the level below it */
	TimestampTz walked_at;		/* last walked from its start */
} TJHintLevel;

typedef struct TJHintRead
{
	uint64		epoch;			/* the entry read */
	uint64		seq;
	int			nlevels;
	TJHintLevel levels[TJ_HINT_LEVELS];
} TJHintRead;

extern Size tj_hint_shmem_size(void);
extern void tj_hint_shmem_init(void);
extern bool tj_hints_enabled(void);
extern bool tj_hint_read(int32 queue_id, TimestampTz now, TJHintRead *out, bool *discover);
extern bool tj_hint_discovered(int32 queue_id, const int16 *priorities, int n, TJHintRead *out);
extern void tj_hint_raise(int32 queue_id, int16 priority, const TJHintRead *read,
						  const TJReadyKey *claimed, TimestampTz now);
extern void tj_hint_unwalk(int32 queue_id, const TJHintRead *read, int from, TimestampTz now);
extern void tj_hint_note_job(Datum id);
extern void tj_hint_note_jobs(Datum ids);

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
	char	   *concurrency_key;	/* NULL: none */
	char	   *rate_limit_key; /* NULL: none */
	int32		queue_id;
} TJFailedJob;

/* The columns tj_read_failed_job reads, from job j joined with queue q */
#define TJ_FAILED_JOB_COLUMNS \
	"j.id, j.attempt, coalesce(j.max_attempts, q.max_attempts), q.backoff_base," \
	" q.backoff_factor, q.backoff_max, q.backoff_jitter, j.concurrency_key, j.rate_limit_key," \
	" j.queue_id"

/*
 * The entry a failed attempt of job `j` (an alias) adds to its errors: a
 * one-element jsonb array; the statement's $2 is the time, $3 the error.
 */
#define TJ_ERROR_ENTRY(j) \
	"pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(" \
	"'attempt', " j ".attempt, 'at', $2, 'error', $3, 'worker', " j ".worker))"

extern void tj_read_failed_job(uint64 row, TJFailedJob *job);
extern bool tj_fail_locked(const TJFailedJob *job, const char *error,
						   const Interval *retry_in, bool retryable, TimestampTz now);

/*
 * The transitions of a job held under a lease token (complete.c); the
 * caller is connected to SPI and runs as the extension owner (the SQL entry
 * points through tj_caller_enter, the background workers and run_jobs
 * through tj_caller_enter_owner).
 */
typedef enum TJFailOutcome
{
	TJ_FAIL_STALE,				/* the lease token no longer matches: nothing changed */
	TJ_FAIL_RETRY,				/* available again after its backoff */
	TJ_FAIL_DEAD				/* moved to the dead letters */
} TJFailOutcome;

extern void tj_check_result_size(Datum result, int which);
extern bool tj_complete_job(Datum id, Datum lease_token, Datum result, TimestampTz now);
extern TJFailOutcome tj_fail_job(Datum id, Datum lease_token, const char *error,
								 const Interval *retry_in, bool retryable, TimestampTz now);
extern bool tj_snooze_job(Datum id, Datum lease_token, TimestampTz run_at);
extern uint64 tj_complete_many(Datum ids, Datum tokens);
extern uint64 tj_complete_results(Datum ids, Datum tokens, Datum results, int64 **done_ids);
extern bool tj_job_was_cancelled(int64 id, Oid role);

/* dead_letters.c */
extern bool tj_dead_letter(int64 id, bool running, TimestampTz now, const char *error,
						   const char *reason);
extern int64 tj_purge_expired_dead(TimestampTz now);

/* maintain.c: one maintenance pass */
typedef struct TJMaintainResult
{
	int64		expired_leases;
	int64		dead_lettered;	/* of the expired leases */
	int64		throttled_released;
	int64		dead_letters_purged;
	int64		rate_states_forgotten;
	Datum		archive;		/* jsonb: _maintain_archive's report */
	char	   *stats;			/* tj_stats_maintain's report (JSON text) */
} TJMaintainResult;

extern void tj_maintain(TimestampTz now, TJMaintainResult *result);
extern bool tj_restore_pending(TimestampTz now);

/* admin.c: retry_now, wake-ups */
extern void tj_notify_enqueued(int32 queue_id);
extern int64 tj_notify_due(TimestampTz now);

/* queue_cap.c: a queue-wide cap on running jobs */
extern int32 tj_queue_cap_room(text *queue_name, int32 max_jobs);
extern void tj_check_queue_max_running(int32 max_running);
extern void tj_store_queue_max_running(Oid role, text *queue_name, int32 max_running);

/* work.c */
extern void tj_refuse_xact_snapshot(void);

/* reserve.c */
extern void tj_check_worker_name(text *worker);
extern void tj_check_max_jobs(int32 max_jobs);
extern void tj_check_reserve_args(text *worker, int32 max_jobs, Interval *lease);
extern void tj_reserve_jobs(ReturnSetInfo *rsinfo, text *queue_name, text *worker,
							int32 max_jobs, Interval *lease);

/* limits.c: per-key concurrency caps and rate limits */
#define TJ_TOKEN_BUCKET		0
#define TJ_SLIDING_WINDOW	1
#define TJ_FIXED_WINDOW		2

typedef struct TJRateLimit
{
	int			algorithm;
	int32		max;			/* admissions (cost units) per period */
	int64		period;			/* microseconds */
	int32		burst;			/* token bucket capacity; 0: max */
} TJRateLimit;

typedef struct TJRateState
{
	double		tokens;			/* bucket level, or the fixed window's count */
	TimestampTz stamp;			/* last refill, or the fixed window's start; 0: fresh */
	int			n;				/* sliding window log: admissions in time order */
	TimestampTz *log_at;
	int32	   *log_cost;
	double		factor;			/* adaptive: the share of the rate in force */
	TimestampTz evaluated_at;	/* adaptive: last evaluation; 0: never */
	TimestampTz next_at;		/* when the key's waiting jobs are due; 0: not by time */
} TJRateState;

#define TJ_MAX_SLIDING_WINDOW	10000	/* admissions a sliding window logs */
#define TJ_ADAPTIVE_MIN_SAMPLES	5
#define TJ_ADAPTIVE_DECREASE	0.5
#define TJ_ADAPTIVE_STEP		0.1

typedef struct TJKeyLimit
{
	char	   *key;			/* the concrete key looked up */
	bool		limited;		/* some limit governs it */
	int32		max_running;	/* 0: no cap */
	bool		has_rate;
	TJRateLimit rate;
	bool		adaptive;
	double		error_threshold;
	double		min_factor;
} TJKeyLimit;

/* Limits looked up during one call */
typedef struct TJLimitCache
{
	int			n;
	int			size;
	TJKeyLimit *items;
} TJLimitCache;

typedef enum TJAdmission
{
	TJ_ADMIT_OK,				/* admitted; rate tokens taken */
	TJ_ADMIT_BUSY,				/* another transaction holds a key: skip, try later */
	TJ_ADMIT_CAP,				/* the concurrency key is at its cap */
	TJ_ADMIT_RATE				/* the rate key admits it only at blocked_until */
} TJAdmission;

/* rate.c: the pure rate arithmetic (no tables, no locks) */
extern void tj_rate_fill_log(TJRateState *state, ArrayType *at, ArrayType *cost, int32 max);
extern bool tj_rate_admit(const TJRateLimit *limit, TJRateState *state,
						  TimestampTz now, int32 cost, TimestampTz *next_at);
extern bool tj_rate_try(const TJKeyLimit *l, TJRateState *state, TimestampTz now,
						int32 cost, TimestampTz *next_at);
extern int	tj_rate_algorithm(const char *name);
extern double tj_adaptive_factor(double factor, int64 ok, int64 failed,
								 double threshold, double min_factor);
extern double tj_round_factor(double factor);
extern int32 tj_rate_capacity(const TJRateLimit *limit);

/* limits.c: lookups, admissions, costs, acquire */
extern void tj_check_cost(TJLimitCache *cache, const char *rkey, int32 cost);
extern int64 tj_dead_letter_oversized(const char *limit_key, TimestampTz now);
extern bool tj_dead_letter_if_oversized(TJLimitCache *cache, int64 id, const char *rkey,
										int32 cost, TimestampTz now);
extern void tj_record_outcome(const char *rkey, bool failed, TimestampTz now);
extern TJKeyLimit *tj_key_limit(TJLimitCache *cache, const char *key);
extern bool tj_limits_exist(void);
extern void tj_limits_changed(void);
extern bool tj_try_lock_key(const char *key);
extern int64 tj_forget_idle_rate_state(TimestampTz now);
extern void tj_unlock_key(const char *key);
extern int64 tj_count_running(const char *key, int32 cap);
extern void tj_load_rate(const char *key, const TJRateLimit *limit, TJRateState *state);
extern void tj_free_rate_state(TJRateState *state);
extern TJAdmission tj_admit(TJLimitCache *cache, const char *ckey, const char *rkey,
							int32 cost, TimestampTz now, const char **blocked_key,
							TimestampTz *blocked_until, TimestampTz *admitted_at);

/* parking.c: the waiting lists of limited keys (see its header) */
extern bool tj_schema_has_released_at(void);
extern void tj_slot_freed(const char *ckey);
extern void tj_release_pending(TJLimitCache *cache, TimestampTz now);
extern void tj_park_ready(const char *key, bool cap, TimestampTz until, int32 queue_id,
						  TimestampTz now);
extern void tj_park_oversized(int64 id, const char *key, int32 queue_id);
extern bool tj_enqueue_waits(TJLimitCache *cache, const char *ckey, const char *rkey,
							 int32 cost, TimestampTz now, const char **blocked_key,
							 TimestampTz *blocked_until);
extern int64 tj_release_throttled(TimestampTz now);

/* handler.c: running handler jobs (executors and run_jobs) */
#define TJ_WORKER_PREFIX	"throttle_jobs/"	/* worker names of our own processes */
#define TJ_EXECUTOR_NAME	TJ_WORKER_PREFIX "executor/%d"	/* printf format: the pid */
#define TJ_MAINTENANCE_NAME TJ_WORKER_PREFIX "maintenance/%d"	/* printf format: the pid */

extern bool tj_job_in_hand(void);
extern bool tj_run_next_job(const char *worker, const char *only_queue, bool own_transactions);
extern void tj_discard_session_state(void);

/* shmem.c: shared memory (see its header), and the workers' slots in it */
#define TJ_MAX_DATABASES	64		/* databases with workers */

typedef struct TJExecutorSlot
{
	pid_t		pid;			/* 0: free */
	struct Latch *latch;
	bool		idle;			/* waiting on its latch */
} TJExecutorSlot;

typedef struct TJDatabaseSlot
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		worker_pid;		/* the maintenance worker; 0: none */
	struct Latch *worker_latch;
	TJExecutorSlot exec[TJ_MAX_EXECUTORS];
} TJDatabaseSlot;

/* Every field under mutex */
typedef struct TJWorkerShared
{
	slock_t		mutex;
	bool		warned_no_slots;	/* the max_worker_processes WARNING was given */
	TJDatabaseSlot db[TJ_MAX_DATABASES];
} TJWorkerShared;

extern TJWorkerShared *tj_workers;	/* NULL: the library is not preloaded */
extern void tj_shmem_register(void);
extern TJDatabaseSlot *tj_db_slot(Oid dboid, bool create);

/* launcher.c: the launcher; starting and setting up our workers */
#define TJ_ERROR_NAP_MS		10000	/* a worker's wait after a failed pass or job */

struct BackgroundWorkerHandle;
extern void tj_launcher_register(void);
extern void tj_warn_no_worker_slots(const char *what);
extern bool tj_register_worker(const char *function, const char *name, Oid dboid,
							   struct BackgroundWorkerHandle **handle);
extern bool tj_worker_handle_live(struct BackgroundWorkerHandle *handle);
extern bool tj_worker_reload_config(void);
extern bool tj_database_listed(void);
extern void tj_worker_connect(Datum dboid);
extern PGDLLEXPORT void tj_launcher_main(Datum arg);

/* dbworker.c: the maintenance worker of a database */
extern PGDLLEXPORT void tj_dbworker_main(Datum arg);

/* executor.c: executors, their SIGTERM handling and wake-up */
extern void tj_sigterm_handler(SIGNAL_ARGS);
extern bool tj_shutdown_requested(void);
extern TimestampTz tj_shutdown_grace_began(void);
extern void tj_shutdown_grace_job_started(TimestampTz now);
extern void tj_wake_executors_at_commit(void);
extern PGDLLEXPORT void tj_executor_main(Datum arg);

/* stats.c: statistics (see the file header); every hook is one call */
typedef enum TJEvent
{
	TJ_EV_ENQUEUED,
	TJ_EV_RESERVED,
	TJ_EV_COMPLETED,
	TJ_EV_FAILED,				/* every failed attempt, lease expiries included */
	TJ_EV_RETRIED,
	TJ_EV_DEAD_LETTERED,
	TJ_EV_LEASE_EXPIRED,
	TJ_EV_THROTTLED_CAP,
	TJ_EV_THROTTLED_RATE,
	TJ_EV_DROPPED,
	TJ_EV_SNOOZED,
	TJ_EV_CANCELLED,
	TJ_EV_COUNT
} TJEvent;

/* Outcomes of try_acquire/acquire/try_acquire_session calls, per key */
typedef enum TJAcquireEvent
{
	TJ_ACQ_ADMITTED,			/* returned true */
	TJ_ACQ_REFUSED,				/* try_acquire(_session) returned false */
	TJ_ACQ_WAITED,				/* acquire was refused at first and waited */
	TJ_ACQ_TIMED_OUT,			/* acquire returned false */
	TJ_ACQ_COUNT
} TJAcquireEvent;

extern Size tj_stats_shmem_size(void);
extern void tj_stats_shmem_init(void);
extern void tj_stats_count(int32 queue_id, TJEvent ev, int64 n);
extern void tj_stats_acquire(const char *key, TJAcquireEvent ev);
extern void tj_stats_enqueued(int32 queue_id, TimestampTz run_at, const char *blocked_key,
							  TimestampTz blocked_until);
extern void tj_stats_reserved(int32 queue_id, TimestampTz run_at, TimestampTz at,
							  const char *ckey, const char *rkey);
extern void tj_stats_throttled_rows(const char *key, bool cap, SPITupleTable *rows,
									uint64 nrows);
extern void tj_stats_completed(int32 queue_id, TimestampTz reserved_at, TimestampTz now);
extern void tj_stats_failed(int32 queue_id, bool dead, TimestampTz run_at);
extern void tj_stats_snoozed(int32 queue_id, TimestampTz run_at, int32 attempt);
extern void tj_stats_dead_removed(int32 queue_id, int64 n);
extern void tj_stats_dead_retried(int32 queue_id, int64 n);
extern void tj_stats_queue_dropped(int32 queue_id);
extern void tj_stats_cancelled(int32 queue_id, bool running, TimestampTz run_at, int32 attempt);
extern void tj_stats_run_now(int32 queue_id, TimestampTz old_run_at, int32 attempt);
extern void tj_stats_dead_lettered_waiting(int32 queue_id, TimestampTz run_at, int32 attempt);
extern char *tj_stats_maintain(TimestampTz now);
extern void tj_stats_force_recount(void);

#endif							/* THROTTLE_JOBS_H */
