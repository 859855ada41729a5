/*-------------------------------------------------------------------------
 *
 * queue.c
 *		Looking up a queue's settings by name.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

#include "throttle_jobs.h"

static TJStatement lookup_stmt = {
	"SELECT q.id, q.paused, q.max_size, q.on_full = 'drop', q.lease"
	"  FROM throttle_jobs.queue q WHERE q.name = $1",
	1, {TEXTOID}
};

/*
 * Fills *queue for the queue called `name`, or raises undefined_object.
 * The caller must be connected to SPI; queue->name is palloc'd in the
 * caller's (upper) context.
 */
void
tj_lookup_queue(text *name, TJQueue *queue)
{
	Datum		values[1];
	bool		isnull;

	values[0] = PointerGetDatum(name);
	if (tj_execute(&lookup_stmt, values, NULL, true, 1, SPI_OK_SELECT) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", text_to_cstring(name)),
				 errhint("Create it with throttle_jobs.create_queue().")));

	queue->id = DatumGetInt32(tj_get_datum(0, 1, &isnull));
	queue->paused = DatumGetBool(tj_get_datum(0, 2, &isnull));
	queue->max_size = DatumGetInt64(tj_get_datum(0, 3, &isnull));
	if (isnull)
		queue->max_size = -1;
	queue->drop_when_full = DatumGetBool(tj_get_datum(0, 4, &isnull));
	queue->lease = *DatumGetIntervalP(tj_get_datum(0, 5, &isnull));
	queue->name = SPI_palloc(VARSIZE_ANY_EXHDR(name) + 1);
	text_to_cstring_buffer(name, queue->name, VARSIZE_ANY_EXHDR(name) + 1);
}
