/*-------------------------------------------------------------------------
 *
 * privilege.c
 *		Per-queue privileges: who may produce into, consume from or manage a
 *		queue, and how the entry points learn who called them.
 *
 * A role holds a privilege on a queue when it has the privileges
 * (has_privs_of_role) of
 *	- throttle_jobs_admin: manage on every queue; throttle_jobs_worker:
 *	  consume on every queue; throttle_jobs_producer: produce on every queue;
 *	- the queue's owner: manage;
 *	- the grantee of a row of throttle_jobs.queue_grant for the queue (a
 *	  grantee that no longer exists grants nothing).
 * 'manage' implies 'consume' and 'produce'.
 *
 * The capability roles are tried first: has_privs_of_role reads the
 * backend's role membership cache, so their members (the common case) pay
 * no statement.  Only when that fails are the queue's owner and grants read,
 * in one statement.  The capability roles' oids are looked up once per
 * backend, and again when a check fails (a role dropped and made anew).
 *
 * The C entry points that take a queue or a job (enqueue, reserve, complete,
 * ...) are SECURITY INVOKER: the role to check is the one in effect where
 * they were called (current_user at the call site: the owner of a SECURITY
 * DEFINER function that calls them, a SET ROLE, ...), which a SECURITY
 * DEFINER function could not see.  tj_caller_enter reads it and then runs
 * as the function's owner (the extension owner, who owns the tables), as
 * SECURITY DEFINER would, until tj_caller_leave; an error switches back
 * through the (sub)transaction abort.  With the 0.1.0 declarations (SECURITY
 * DEFINER) the caller seen is the extension owner, who may do everything.
 *
 * grant_queue and revoke_queue are below; the other entry points that
 * manage a queue start with tj_manage_queue (queue.c).
 *
 * run_jobs checks its caller at the top (tj_run_jobs_check), and its job
 * loop asks tj_run_jobs_may_take before it takes a job of a queue, so that
 * run_jobs(NULL) runs only the handler queues its caller may consume.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/pg_list.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "throttle_jobs.h"

PG_FUNCTION_INFO_V1(throttle_jobs_grant_queue);
PG_FUNCTION_INFO_V1(throttle_jobs_revoke_queue);

/* The capability roles, in the order of the privilege bits */
#define CAP_PRODUCER	0
#define CAP_WORKER		1
#define CAP_ADMIN		2
#define NCAPS			3

static const char *const cap_names[NCAPS] = {
	"throttle_jobs_producer", "throttle_jobs_worker", "throttle_jobs_admin"
};
static Oid	cap_oids[NCAPS];	/* InvalidOid: not looked up (or missing) */

/* The caller of the run_jobs() call in progress in this backend, if any */
static Oid	run_jobs_role = InvalidOid;

/*
 * A queue's owner and grants, one row per grant (grantee and privilege NULL
 * for a queue without grants).  Columns: id, name, owner, grantee, privilege.
 */
#define GRANT_ROWS_SQL \
	"SELECT q.id, q.name, q.owner::pg_catalog.oid, g.grantee::pg_catalog.oid, g.privilege" \
	"  FROM throttle_jobs.queue q" \
	"  LEFT JOIN throttle_jobs.queue_grant g ON g.queue_id OPERATOR(pg_catalog.=) q.id"

/* (generic plans: a custom plan costs more to make than to run) */
static TJStatement by_name_stmt = {
	GRANT_ROWS_SQL " WHERE q.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}, NULL, TJ_GENERIC
};

static TJStatement by_id_stmt = {
	GRANT_ROWS_SQL " WHERE q.id OPERATOR(pg_catalog.=) $1",
	1, {INT4OID}, NULL, TJ_GENERIC
};

/* The queue of the live job $1 */
static TJStatement by_job_stmt = {
	GRANT_ROWS_SQL
	"  JOIN throttle_jobs.job j ON j.queue_id OPERATOR(pg_catalog.=) q.id"
	" WHERE j.id OPERATOR(pg_catalog.=) $1",
	1, {INT8OID}, NULL, TJ_GENERIC
};

/* The queues of the live jobs $1, rows of one queue together */
static TJStatement by_jobs_stmt = {
	GRANT_ROWS_SQL
	" WHERE q.id OPERATOR(pg_catalog.=) ANY (ARRAY("
	"   SELECT j.queue_id FROM throttle_jobs.job j"
	"    WHERE j.id OPERATOR(pg_catalog.=) ANY ($1)))"
	" ORDER BY q.id",
	1, {INT8ARRAYOID}, NULL, TJ_GENERIC
};

enum
{
	G_ID = 1, G_NAME, G_OWNER, G_GRANTEE, G_PRIVILEGE
};

static const char *
privilege_name(int priv)
{
	switch (priv)
	{
		case TJ_PRIV_PRODUCE:
			return "produce";
		case TJ_PRIV_CONSUME:
			return "consume";
		case TJ_PRIV_MANAGE:
			return "manage";
	}
	elog(ERROR, "throttle_jobs: unknown privilege bit %d", priv);
	return NULL;				/* keep compiler quiet */
}

/*
 * The privilege called `name` ('produce', 'consume' or 'manage'), or an
 * invalid_parameter_value error naming it.
 */
int
tj_privilege_from_name(const char *name)
{
	if (strcmp(name, "produce") == 0)
		return TJ_PRIV_PRODUCE;
	if (strcmp(name, "consume") == 0)
		return TJ_PRIV_CONSUME;
	if (strcmp(name, "manage") == 0)
		return TJ_PRIV_MANAGE;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown queue privilege \"%s\"", name),
			 errhint("The queue privileges are 'produce', 'consume' and 'manage'.")));
	return 0;					/* keep compiler quiet */
}

/* The privilege bits a grant of `name` gives: 'manage' implies the others */
static int
granted_bits(const char *name)
{
	int			priv = tj_privilege_from_name(name);

	return priv == TJ_PRIV_MANAGE ? TJ_PRIV_ALL : priv;
}

/* Whether role has the privileges of capability role i (looked up lazily) */
static bool
has_cap(Oid role, int i)
{
	if (!OidIsValid(cap_oids[i]))
		cap_oids[i] = get_role_oid(cap_names[i], true);
	return OidIsValid(cap_oids[i]) && has_privs_of_role(role, cap_oids[i]);
}

/* Looks the capability roles up again; true if any oid changed. */
static bool
refresh_caps(void)
{
	bool		changed = false;

	for (int i = 0; i < NCAPS; i++)
	{
		Oid			oid = get_role_oid(cap_names[i], true);

		if (oid != cap_oids[i])
			changed = true;
		cap_oids[i] = oid;
	}
	return changed;
}

/*
 * Whether `role` holds privilege `priv` (one bit) on every queue through a
 * capability role.  Costs no statement: the membership cache answers.
 */
bool
tj_capable(Oid role, int priv)
{
	int			cap = priv == TJ_PRIV_PRODUCE ? CAP_PRODUCER
		: priv == TJ_PRIV_CONSUME ? CAP_WORKER : CAP_ADMIN;

	for (int attempt = 0; attempt < 2; attempt++)
	{
		if (attempt == 1 && !refresh_caps())
			break;
		if (has_cap(role, cap) || (cap != CAP_ADMIN && has_cap(role, CAP_ADMIN)))
			return true;
	}
	return false;
}

/*
 * The privilege bits that `role` holds on the queue of rows [from, to) of
 * the current result (GRANT_ROWS_SQL, all of one queue), through its owner
 * and its grants.
 */
static int
bits_of_rows(Oid role, uint64 from, uint64 to)
{
	int			bits = 0;
	bool		isnull;

	if (has_privs_of_role(role, DatumGetObjectId(tj_get_datum(from, G_OWNER, &isnull))))
		return TJ_PRIV_ALL;
	for (uint64 r = from; r < to; r++)
	{
		Oid			grantee = DatumGetObjectId(tj_get_datum(r, G_GRANTEE, &isnull));

		if (isnull || !has_privs_of_role(role, grantee))
			continue;
		bits |= granted_bits(TextDatumGetCString(tj_get_datum(r, G_PRIVILEGE, &isnull)));
	}
	return bits;
}

/* Raises insufficient_privilege for `priv` on queue `queue` (job: 0 or the job in question) */
static void
refuse(Oid role, const char *queue, int priv, int64 job)
{
	const char *rolname = GetUserNameFromId(role, true);

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s queue \"%s\"", privilege_name(priv), queue),
			 job != 0 ? errdetail("Job " INT64_FORMAT " belongs to queue \"%s\".", job, queue) : 0,
			 errhint("A role that manages the queue can grant it: SELECT throttle_jobs.grant_queue('%s', %s, '%s');",
					 queue, quote_literal_cstr(rolname ? quote_identifier(rolname) : "?"),
					 privilege_name(priv))));
}

static void
unknown_queue(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("queue \"%s\" does not exist", name),
			 errhint("Create it with throttle_jobs.create_queue().")));
}

/*
 * Raises insufficient_privilege unless `role` holds `priv` (one bit) on the
 * queue called `name`; undefined_object for an unknown queue when the
 * capability roles do not answer.  Connected to SPI, running as the
 * function's owner (tj_caller_enter).
 */
void
tj_check_queue(Oid role, text *name, int priv)
{
	Datum		values[1];
	uint64		n;

	if (tj_capable(role, priv))
		return;
	values[0] = PointerGetDatum(name);
	n = tj_execute(&by_name_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	if (n == 0)
		unknown_queue(text_to_cstring(name));
	if ((bits_of_rows(role, 0, n) & priv) == 0)
		refuse(role, text_to_cstring(name), priv, 0);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * The rows of the current result (GRANT_ROWS_SQL, rows of one queue
 * together): insufficient_privilege unless `role` holds `priv` on each
 * queue.  job: the one job asked about, or 0.
 */
static void
check_result_queues(Oid role, uint64 n, int priv, int64 job)
{
	uint64		from = 0;
	bool		isnull;

	for (uint64 r = 1; r <= n; r++)
	{
		if (r < n && DatumGetInt32(tj_get_datum(r, G_ID, &isnull)) ==
			DatumGetInt32(tj_get_datum(from, G_ID, &isnull)))
			continue;
		if ((bits_of_rows(role, from, r) & priv) == 0)
			refuse(role, TextDatumGetCString(tj_get_datum(from, G_NAME, &isnull)), priv, job);
		from = r;
	}
	SPI_freetuptable(SPI_tuptable);
}

/* check_result_queues of the rows stmt (GRANT_ROWS_SQL) selects for arg */
static void
check_queues_of(TJStatement *stmt, Oid role, Datum arg, int priv, int64 job)
{
	Datum		values[1];

	if (tj_capable(role, priv))
		return;
	values[0] = arg;
	check_result_queues(role, tj_execute(stmt, values, NULL, false, 0, SPI_OK_SELECT), priv, job);
}

/*
 * Raises insufficient_privilege unless `role` holds `priv` on the queue of
 * every live job among `ids` (an int8[]; ids that are not live are
 * skipped: the call they are given to finds them stale).  Connected to SPI,
 * running as the function's owner.
 */
void
tj_check_jobs(Oid role, Datum ids, int priv)
{
	check_queues_of(&by_jobs_stmt, role, ids, priv, 0);
}

/* tj_check_jobs for one job (an int8 datum) */
void
tj_check_job(Oid role, Datum id, int priv)
{
	check_queues_of(&by_job_stmt, role, id, priv, DatumGetInt64(id));
}

/* The owner of the function fcinfo calls (SECURITY DEFINER's user) */
static Oid
function_owner(FunctionCallInfo fcinfo)
{
	HeapTuple	tup;
	Oid			owner;

	if (fcinfo->flinfo == NULL || !OidIsValid(fcinfo->flinfo->fn_oid))
		elog(ERROR, "throttle_jobs: entry point called without a function oid");
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Records the calling role in caller->role and runs as the owner of the
 * function fcinfo calls, as SECURITY DEFINER would, until tj_caller_leave.
 * Whatever runs in between may raise errors: the transaction or
 * subtransaction abort restores the user.
 */
void
tj_caller_enter(FunctionCallInfo fcinfo, TJCaller *caller)
{
	Oid			owner = function_owner(fcinfo);

	GetUserIdAndSecContext(&caller->saved_userid, &caller->saved_context);
	caller->role = caller->saved_userid;
	caller->guc_nestlevel = 0;
	if (owner != caller->saved_userid)
		SetUserIdAndSecContext(owner, caller->saved_context | SECURITY_LOCAL_USERID_CHANGE);
}

/* The owner of the throttle_jobs extension in this database */
static Oid
extension_owner(void)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			owner;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("throttle_jobs"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"throttle_jobs\" is not installed in this database")));
	owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return owner;
}

/*
 * For the C callers of the job transitions (the background workers and
 * run_jobs), which call the C API where a client calls the SQL entry
 * points: records the current user in caller->role, then runs as the
 * extension owner with search_path = pg_catalog, pg_temp in a GUC nest
 * level of its own, as the entry points do (SECURITY DEFINER under 0.1.0,
 * tj_caller_enter and their SET search_path under 0.2.0), until
 * tj_caller_leave.  Needs a transaction; an error undoes both through the
 * (sub)transaction abort.
 */
void
tj_caller_enter_owner(TJCaller *caller)
{
	Oid			owner = extension_owner();

	GetUserIdAndSecContext(&caller->saved_userid, &caller->saved_context);
	caller->role = caller->saved_userid;
	if (owner != caller->saved_userid)
		SetUserIdAndSecContext(owner, caller->saved_context | SECURITY_LOCAL_USERID_CHANGE);
	caller->guc_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

void
tj_caller_leave(const TJCaller *caller)
{
	if (caller->guc_nestlevel > 0)
		AtEOXact_GUC(true, caller->guc_nestlevel);
	SetUserIdAndSecContext(caller->saved_userid, caller->saved_context);
}

static int
privilege_arg(FunctionCallInfo fcinfo, int argno)
{
	tj_require_not_null(fcinfo, argno, "privilege");
	return tj_privilege_from_name(text_to_cstring(PG_GETARG_TEXT_PP(argno)));
}

/*
 * Whether caller holds priv on queue id; refuse (naming job, if not 0)
 * instead of returning false when `raise`.  Connects to SPI.
 */
static bool
queue_id_allows(Oid caller, int32 id, int priv, bool raise, int64 job)
{
	Datum		values[1];
	uint64		n;
	bool		ok;
	bool		isnull;

	if (tj_capable(caller, priv))
		return true;
	values[0] = Int32GetDatum(id);
	SPI_connect();
	n = tj_execute(&by_id_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	ok = n > 0 && (bits_of_rows(caller, 0, n) & priv) != 0;
	if (!ok && raise && n > 0)
		refuse(caller, TextDatumGetCString(tj_get_datum(0, G_NAME, &isnull)), priv, job);
	SPI_finish();
	return ok;
}

/*
 * Raises insufficient_privilege (naming job, if not 0) unless `role` holds
 * `priv` on the queue whose id is queue_id (an unknown queue passes: the
 * caller finds nothing to do).  Connects to SPI.
 */
void
tj_check_queue_id(Oid role, int32 queue_id, int priv, int64 job)
{
	(void) queue_id_allows(role, queue_id, priv, true, job);
}

/* Whether `role` holds `priv` (one bit) on queue `queue_id`; connects to SPI. */
bool
tj_may_queue(Oid role, int32 queue_id, int priv)
{
	return queue_id_allows(role, queue_id, priv, false, 0);
}

/* ---- grant_queue, revoke_queue ---- */

static TJStatement grant_stmt = {
	"INSERT INTO throttle_jobs.queue_grant AS g (queue_id, grantee, privilege, granted_by)"
	" VALUES ($1, $2::pg_catalog.regrole, $3, $4::pg_catalog.regrole)"
	" ON CONFLICT ON CONSTRAINT queue_grant_pkey DO NOTHING",
	4, {INT4OID, OIDOID, TEXTOID, OIDOID}
};

static TJStatement revoke_stmt = {
	"DELETE FROM throttle_jobs.queue_grant g"
	" WHERE g.queue_id OPERATOR(pg_catalog.=) $1"
	"   AND g.grantee::pg_catalog.oid OPERATOR(pg_catalog.=) $2"
	"   AND g.privilege OPERATOR(pg_catalog.=) $3",
	3, {INT4OID, OIDOID, TEXTOID}
};

/*
 * grant_queue and revoke_queue (queue, role, privilege): the privilege
 * name is checked first, then the queue (manage), then the role.  Fills
 * values with the statements' parameters; returns connected to SPI, as the
 * function's owner.
 */
static void
grant_args(FunctionCallInfo fcinfo, TJCaller *caller, Datum *values)
{
	TJQueue		queue;

	(void) privilege_arg(fcinfo, 2);
	tj_manage_queue(fcinfo, caller, &queue);
	tj_require_not_null(fcinfo, 1, "role");
	values[0] = Int32GetDatum(queue.id);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = ObjectIdGetDatum(caller->role);
}

/* The regrole output of role (its name, quoted where needed) */
static char *
role_text(Oid role)
{
	return DatumGetCString(DirectFunctionCall1(regroleout, ObjectIdGetDatum(role)));
}

/*
 * grant_queue(queue, role, privilege) returns void: grants the privilege
 * on the queue to the role (and its members); a NOTICE when the role
 * cannot use the functions that need it yet.
 */
Datum
throttle_jobs_grant_queue(PG_FUNCTION_ARGS)
{
	TJCaller	caller;
	Datum		values[4];
	Oid			role;
	const char *probe;
	int			priv;

	grant_args(fcinfo, &caller, values);
	role = PG_GETARG_OID(1);
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(role)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", role)));
	tj_execute(&grant_stmt, values, NULL, false, 0, SPI_OK_INSERT);
	SPI_finish();
	/* a grantee needs EXECUTE on the functions that use the privilege */
	priv = privilege_arg(fcinfo, 2);
	probe = priv == TJ_PRIV_PRODUCE ?
		"throttle_jobs.enqueue(text, jsonb, timestamptz, integer, integer, text, text, text, integer)" :
		priv == TJ_PRIV_CONSUME ? "throttle_jobs.reserve(text, text, integer, interval)" :
		"throttle_jobs.pause_queue(text)";
	if (!DatumGetBool(DirectFunctionCall3(has_schema_privilege_id_id, ObjectIdGetDatum(role),
										  ObjectIdGetDatum(get_namespace_oid("throttle_jobs", false)),
										  CStringGetTextDatum("USAGE"))) ||
		tj_proc_aclcheck(DatumGetObjectId(DirectFunctionCall1(regprocedurein,
															  CStringGetDatum(probe))),
						 role, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(NOTICE,
				(errmsg("role %s cannot use the throttle_jobs functions yet", role_text(role)),
				 errhint("GRANT throttle_jobs_user TO %s;", role_text(role))));
	tj_caller_leave(&caller);
	PG_RETURN_VOID();
}

/*
 * revoke_queue(queue, role, privilege) returns boolean: revokes a grant of
 * grant_queue; whether there was one.
 */
Datum
throttle_jobs_revoke_queue(PG_FUNCTION_ARGS)
{
	TJCaller	caller;
	Datum		values[4];
	uint64		n;

	grant_args(fcinfo, &caller, values);
	n = tj_execute(&revoke_stmt, values, NULL, false, 0, SPI_OK_DELETE);
	SPI_finish();
	tj_caller_leave(&caller);
	PG_RETURN_BOOL(n > 0);
}

/* ---- run_jobs ---- */

/*
 * The role that called the run_jobs() in progress in this backend is kept
 * in an internal setting (which no one can SET), set with GUC_ACTION_SAVE
 * in run_jobs' own GUC nest level (it has SET search_path): PostgreSQL
 * restores the outer value when run_jobs returns, when it fails, and when a
 * nested run_jobs (from a handler) returns, so no stale caller survives an
 * error.  "0" outside run_jobs (the executors).  Defined in guc.c.
 */
/* The assign hook of throttle_jobs.run_jobs_caller (guc.c) */
void
tj_assign_run_jobs_caller(const char *newval, void *extra)
{
	run_jobs_role = newval ? atooid(newval) : InvalidOid;
}

/*
 * run_jobs' argument check, for `caller` (the role that called run_jobs):
 * insufficient_privilege unless it may consume `queue` (NULL: run_jobs of
 * every handler queue, which tj_run_jobs_may_take then filters); records
 * the caller for tj_run_jobs_may_take until run_jobs returns.  Call it at
 * the top of run_jobs, running as the function's owner, outside SPI.
 */
void
tj_run_jobs_check(Oid caller, text *queue)
{
	if (queue != NULL)
	{
		SPI_connect();
		tj_check_queue(caller, queue, TJ_PRIV_CONSUME);
		SPI_finish();
	}
	(void) set_config_option("throttle_jobs.run_jobs_caller", psprintf("%u", caller),
							 PGC_INTERNAL, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

/*
 * Whether the job loop may take jobs of the queue called `queue` (a text
 * datum): outside run_jobs always; within it, when run_jobs' caller may
 * consume the queue (run_jobs(NULL) runs only those queues).  Connects to
 * SPI when the capability roles do not answer.
 */
bool
tj_run_jobs_may_take(Datum queue)
{
	Datum		values[1];
	uint64		n;
	bool		ok;

	if (!OidIsValid(run_jobs_role) || tj_capable(run_jobs_role, TJ_PRIV_CONSUME))
		return true;
	values[0] = queue;
	SPI_connect();
	n = tj_execute(&by_name_stmt, values, NULL, false, 0, SPI_OK_SELECT);
	ok = n > 0 && (bits_of_rows(run_jobs_role, 0, n) & TJ_PRIV_CONSUME) != 0;
	SPI_finish();
	return ok;
}
