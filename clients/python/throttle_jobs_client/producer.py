"""enqueue / enqueue_batch on the caller's connection or transaction."""

from datetime import datetime, timedelta
from typing import Any, Iterable, List, Mapping, Optional, Union

from psycopg import sql
from psycopg.types.json import Jsonb

# enqueue()'s optional arguments and the SQL type each is passed as.
_ENQUEUE_ARGS = {
    "run_at": "timestamptz",
    "priority": "integer",
    "max_attempts": "integer",
    "concurrency_key": "text",
    "rate_limit_key": "text",
    "unique_key": "text",
    "cost": "integer",
}


def notify_channel(queue: str) -> str:
    """The channel enqueue() notifies by hand: the queue's name
    (``LISTEN "tenant-a:emails"``; pg_notify takes the name unquoted).
    A queue with set_queue_notify on (0.2.0) notifies the server's
    throttle_jobs.notify_channel(queue) by itself; the Worker listens on
    both."""
    return queue


def _execute(conn_or_cursor, query, params):
    # Accept a psycopg Connection or Cursor (the caller's transaction).
    if hasattr(conn_or_cursor, "cursor"):
        return conn_or_cursor.execute(query, params)
    conn_or_cursor.execute(query, params)
    return conn_or_cursor


def enqueue(conn, queue: str, payload: Any = None, *,
            run_at: Optional[Union[datetime, timedelta]] = None,
            priority: Optional[int] = None,
            max_attempts: Optional[int] = None,
            concurrency_key: Optional[str] = None,
            rate_limit_key: Optional[str] = None,
            unique_key: Optional[str] = None,
            cost: Optional[int] = None,
            notify: bool = True) -> Optional[int]:
    """Enqueue one job in the caller's transaction; returns its id (the live
    job's id for a repeated unique_key; None when a full 'drop' queue dropped
    it).  With notify (the default) the queue's channel is notified, which
    PostgreSQL delivers at commit: a woken worker always finds the job.
    Pass notify=False for a queue with set_queue_notify on (0.2.0): the
    enqueue itself then notifies at commit, and the hand-made notification
    would only wake the workers twice.
    run_at may be a datetime, or a timedelta from now."""
    given = {"run_at": run_at, "priority": priority,
             "max_attempts": max_attempts, "concurrency_key": concurrency_key,
             "rate_limit_key": rate_limit_key, "unique_key": unique_key,
             "cost": cost}
    parts = [sql.SQL("%s::text"), sql.SQL("%s::jsonb")]
    params: List[Any] = [queue, Jsonb({} if payload is None else payload)]
    for name, value in given.items():
        if value is None:
            continue
        if name == "run_at" and isinstance(value, timedelta):
            parts.append(sql.SQL("run_at => pg_catalog.now() OPERATOR(pg_catalog.+) %s::interval"))
        else:
            parts.append(sql.SQL("{} => %s::{}").format(
                sql.Identifier(name), sql.SQL(_ENQUEUE_ARGS[name])))
        params.append(value)
    query = sql.SQL("SELECT throttle_jobs.enqueue({})").format(sql.SQL(", ").join(parts))
    row = _execute(conn, query, params).fetchone()
    if notify and row[0] is not None:
        _execute(conn, "SELECT pg_catalog.pg_notify(%s, '')", [notify_channel(queue)])
    return row[0]


def _job_object(job: Mapping[str, Any]) -> dict:
    out = {}
    for k, v in job.items():
        if k not in _ENQUEUE_ARGS and k != "payload":
            raise ValueError("unknown job key %r in enqueue_batch" % (k,))
        if isinstance(v, datetime):
            v = v.isoformat()
        elif isinstance(v, timedelta):
            raise ValueError("enqueue_batch takes run_at as a datetime, not a timedelta")
        out[k] = v
    return out


def enqueue_batch(conn, queue: str, jobs: Iterable[Mapping[str, Any]], *,
                  notify: bool = True) -> List[Optional[int]]:
    """Enqueue many jobs in one statement, in the caller's transaction.
    Each job is a mapping with the keys payload, run_at, priority,
    max_attempts, concurrency_key, rate_limit_key, unique_key, cost.
    Returns the ids in input order.  notify: as enqueue()."""
    objs = [_job_object(j) for j in jobs]
    if not objs:
        return []
    cur = _execute(conn, "SELECT throttle_jobs.enqueue_batch(%s::text, %s::jsonb)",
                   [queue, Jsonb(objs)])
    ids = [r[0] for r in cur.fetchall()]
    if notify:
        _execute(conn, "SELECT pg_catalog.pg_notify(%s, '')", [notify_channel(queue)])
    return ids
