/*-------------------------------------------------------------------------
 *
 * spi_util.c
 *		Statements prepared once per backend, kept, and executed with the
 *		result code checked in one place.
 *
 * Kept plans live in CacheMemoryContext through the plan cache, which
 * re-plans them when the tables they name change (or are dropped and made
 * anew by DROP/CREATE EXTENSION), because each is re-analysed from its text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"

#include "executor/spi.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "throttle_jobs.h"

static void
check_result(const char *sql, int rc, int expected)
{
	if (rc != expected)
		elog(ERROR, "throttle_jobs: SPI returned %s, expected %s, for: %s",
			 SPI_result_code_string(rc), SPI_result_code_string(expected), sql);
}

/*
 * The statement's kept plan, prepared on first use with the statement's
 * planner options.  Hot-path statements (TJ_GENERIC) skip the plan cache's
 * custom plans: they would otherwise be planned afresh on every call (the
 * generic plan looks dearer for an unknown LIMIT or key), which costs more
 * than running them.
 */
SPIPlanPtr
tj_plan(TJStatement *stmt)
{
	SPIPlanPtr	plan;

	if (stmt->plan != NULL)
		return stmt->plan;
	plan = SPI_prepare_cursor(stmt->sql, stmt->nargs, stmt->argtypes, stmt->options);
	if (plan == NULL)
		elog(ERROR, "throttle_jobs: SPI_prepare failed (%s) for: %s",
			 SPI_result_code_string(SPI_result), stmt->sql);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "throttle_jobs: SPI_keepplan failed");
	stmt->plan = plan;
	return plan;
}

/*
 * Executes a kept statement, preparing it on first use.  The caller must be
 * connected to SPI.  Returns the number of rows processed.
 */
uint64
tj_execute(TJStatement *stmt, Datum *values, const char *nulls,
		   bool read_only, long count, int expected)
{
	check_result(stmt->sql, SPI_execute_plan(tj_plan(stmt), values, nulls, read_only, count),
				 expected);
	return SPI_processed;
}

/*
 * Executes a kept statement under the latest snapshot rather than the
 * transaction's: for limiter state read and written under a key mutex,
 * which must see every admission committed before the mutex was granted,
 * whatever the isolation level.
 */
uint64
tj_execute_latest(TJStatement *stmt, Datum *values, const char *nulls, int expected)
{
	check_result(stmt->sql,
				 SPI_execute_snapshot(tj_plan(stmt), values, nulls, GetLatestSnapshot(),
									  InvalidSnapshot, false, false, 0),
				 expected);
	return SPI_processed;
}

/* A column of a result row; by-reference values live in the SPI context. */
Datum
tj_get_datum(uint64 row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/* A column of a result row, copied out to the caller's context before SPI_finish. */
Datum
tj_get_datum_copy(uint64 row, int col, bool *isnull)
{
	Datum		d = tj_get_datum(row, col, isnull);
	Oid			typid;
	int16		typlen;
	bool		typbyval;

	if (*isnull)
		return (Datum) 0;
	typid = SPI_gettypeid(SPI_tuptable->tupdesc, col);
	get_typlenbyval(typid, &typlen, &typbyval);
	return SPI_datumTransfer(d, typbyval, typlen);
}

/*
 * For a PG_CATCH block around code that ran in an internal subtransaction
 * begun (BeginInternalSubTransaction) while `cxt` and `owner` were current:
 * copies the error into cxt, rolls the subtransaction back, restores cxt
 * and owner, and returns the error for the caller to re-throw or record.
 */
ErrorData *
tj_catch_in_subxact(MemoryContext cxt, ResourceOwner owner)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

/*
 * Our table `relname` in schema throttle_jobs, or InvalidOid (a database
 * whose schema is older, or has no extension).
 */
Oid
tj_relid(const char *relname)
{
	Oid			nsp = get_namespace_oid("throttle_jobs", true);

	return OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;
}

/*
 * A backend's copy of a small table (TJTableCache): forgotten when the
 * table's relcache entry is invalidated (a change committed by any backend
 * sends one, tj_table_cache_changed), at the end of an aborted transaction
 * (which may have read rows it then lost), and with every relation (the
 * extension may have been made anew).
 */
static void
table_cache_inval(Datum arg, Oid relid)
{
	TJTableCache *c = (TJTableCache *) DatumGetPointer(arg);

	if (relid == InvalidOid || relid == c->relid)
	{
		c->loaded = false;
		if (relid == InvalidOid)
			c->relid = InvalidOid;
	}
}

static void
table_cache_abort(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		table_cache_inval(PointerGetDatum(arg), InvalidOid);
}

/*
 * Whether the backend's copy is current; when not, the caller reads the
 * table (if tj_table_cache_relid finds it) and calls tj_table_cache_loaded.
 */
bool
tj_table_cache_valid(TJTableCache *c)
{
	if (!c->callbacks_set)
	{
		CacheRegisterRelcacheCallback(table_cache_inval, PointerGetDatum(c));
		RegisterXactCallback(table_cache_abort, c);
		c->callbacks_set = true;
	}
	return c->loaded;
}

Oid
tj_table_cache_relid(TJTableCache *c)
{
	if (!OidIsValid(c->relid))
		c->relid = tj_relid(c->relname);
	return c->relid;
}

void
tj_table_cache_loaded(TJTableCache *c)
{
	c->loaded = true;
}

/* After this transaction changed the table: every backend (this one at once) reads it again */
void
tj_table_cache_changed(TJTableCache *c)
{
	c->loaded = false;
	CacheInvalidateRelcacheByRelid(tj_table_cache_relid(c));
}
