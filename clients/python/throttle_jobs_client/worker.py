"""Worker: runs handlers over the complete_and_reserve loop.

Threads and what they own:
- the caller's thread runs Worker.run(): it records outcomes and reserves,
  on the worker connection (self._conn, under self._lock);
- one thread per running job runs its handler and queues its outcome;
- the heartbeat thread extends the leases of running jobs (on the worker
  connection, under self._lock);
- the listener thread LISTENs on each queue's channels on a connection of
  its own (the queue's name, and notify_channel(queue) of 0.2.0, which
  set_queue_notify makes every enqueue notify at commit) and sets
  self._wake on a notification (the fallback poll covers scheduled and
  retried jobs, which nobody notifies).
Against 0.2.0 the loop calls complete_and_reserve_ex, which says which
completions were refused ('stale' or 'cancelled'); against 0.1.0,
complete_and_reserve.
self._state (a lock) protects self._running and self._outcomes.
"""

import json
import logging
import os
import select
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .producer import notify_channel

log = logging.getLogger("throttle_jobs_client")

Seconds = Union[int, float, timedelta]

# Error texts are kept up to 8 kB by the extension; keep the tail of a long
# stack (the frames nearest the error), and the exception line.
_MAX_ERROR = 8000


def _secs(v: Optional[Seconds]) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, timedelta):
        return v.total_seconds()
    return float(v)


def _interval(v: Optional[Seconds]) -> Optional[timedelta]:
    s = _secs(v)
    return None if s is None else timedelta(seconds=s)


class Snooze(Exception):
    """Raise from a handler to put the job back for `delay` (seconds or a
    timedelta; 0 allowed) without consuming its attempt."""

    def __init__(self, delay: Seconds = 0):
        super().__init__("snoozed for %s" % (delay,))
        self.delay = delay


class Fail(Exception):
    """Raise from a handler to fail the job without retry: it goes to the
    dead letters at once, with `message` as its error."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Retry(Exception):
    """Raise from a handler to fail this attempt with `message` and retry
    after `retry_in` (default: the queue's backoff)."""

    def __init__(self, message: str = "retry requested",
                 retry_in: Optional[Seconds] = None):
        super().__init__(message)
        self.message = message
        self.retry_in = retry_in


@dataclass
class Job:
    """A reserved job, as reserve() returns it, plus the worker's view."""
    id: int
    queue: str
    payload: Any
    attempt: int
    max_attempts: int
    lease_token: Any
    lease_until: datetime
    priority: int
    concurrency_key: Optional[str]
    rate_limit_key: Optional[str]
    enqueued_at: datetime
    # Set when the worker shuts down: a long handler should return soon.
    stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    # True once a heartbeat or the completion was refused: the job may be
    # running elsewhere, or was cancelled.
    lease_lost: bool = False
    handed_back: bool = False
    _hb_due: float = field(default=0.0, repr=False)


Handler = Callable[[Job], Any]

_EX_SIG = ("throttle_jobs.complete_and_reserve_ex(text, text, bigint[], uuid[], "
           "jsonb[], integer, interval)")

_RESERVE_COLS = ("r.id, r.queue, r.payload, r.attempt, r.max_attempts, r.lease_token, "
                 "r.lease_until, r.priority, r.concurrency_key, r.rate_limit_key, "
                 "r.enqueued_at, pg_catalog.date_part('epoch', r.lease_until "
                 "OPERATOR(pg_catalog.-) pg_catalog.now())")


class ConnectionLost(Exception):
    """The worker connection was lost and could not be used (yet)."""


class Worker:
    """Runs `handler(job)` for the jobs of `queue`, or for several queues
    with `handlers={queue: handler, ...}`.

    A handler's return value (JSON-serialisable, or None) is the job's
    result; raising Snooze, Fail or Retry controls the outcome; any other
    exception fails the attempt with its text and stack (retried with the
    queue's backoff, dead once the attempts are spent).

    concurrency: handlers running at once (threads).  lease: the lease asked
    for at each reservation and heartbeat (default: the queue's).
    heartbeat_interval: default a third of the lease.  poll_interval: the
    fallback poll when no notification comes.  grace_period: on stop(),
    SIGTERM or SIGINT, how long running handlers may take before their jobs
    are handed back (snoozed 0: available at once, attempt not counted).
    on_lease_lost(job, reason): called (on a worker thread) when the
    server refused the job's heartbeat ('heartbeat') or its completion
    ('stale': the lease was lost; 'cancelled': cancel(id, running => true);
    against 0.1.0 only refusals of complete(), as 'stale'); the job's
    lease_lost is set and a warning logged either way.
    """

    def __init__(self, conninfo: str, queue: Optional[str] = None,
                 handler: Optional[Handler] = None, *,
                 handlers: Optional[Dict[str, Handler]] = None,
                 concurrency: int = 1, lease: Optional[Seconds] = None,
                 heartbeat_interval: Optional[Seconds] = None,
                 poll_interval: Seconds = 5.0, grace_period: Seconds = 30.0,
                 name: Optional[str] = None, listen: bool = True,
                 reconnect_delay: Tuple[float, float] = (0.1, 5.0),
                 connect_kwargs: Optional[Dict[str, Any]] = None,
                 on_lease_lost: Optional[Callable[["Job", str], Any]] = None):
        self._handlers: Dict[str, Handler] = dict(handlers or {})
        if queue is not None:
            if handler is None:
                raise ValueError("a queue needs a handler")
            self._handlers[queue] = handler
        if not self._handlers:
            raise ValueError("no queue to work on: pass queue and handler, or handlers")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1, not %r" % (concurrency,))
        self.conninfo = conninfo
        self.queues: List[str] = list(self._handlers)
        self.concurrency = concurrency
        self.lease = _interval(lease)
        self.heartbeat_interval = _secs(heartbeat_interval)
        self.poll_interval = _secs(poll_interval)
        self.grace_period = _secs(grace_period)
        self.name = name or "%s:%d" % (socket.gethostname(), os.getpid())
        self.listen = listen
        self.reconnect_delay = reconnect_delay
        self.connect_kwargs = dict(connect_kwargs or {})
        self.connect_kwargs.setdefault("application_name", "throttle_jobs worker")
        self.connect_kwargs.setdefault("connect_timeout", 10)
        self.on_lease_lost = on_lease_lost
        self._has_ex: Optional[bool] = None    # complete_and_reserve_ex exists

        self._lock = threading.Lock()          # the worker connection
        self._conn: Optional[psycopg.Connection] = None
        self._state = threading.Lock()         # _running, _outcomes
        self._running: Dict[int, Job] = {}
        self._outcomes: List[Tuple[Job, str, Any]] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()     # stop reserving
        self._hurry = threading.Event()        # skip the rest of the grace period
        self._closing = threading.Event()      # helper threads exit
        self._next_queue = 0
        self._stop_at = 0.0
        self.stats = {"completed": 0, "failed": 0, "snoozed": 0, "handed_back": 0,
                      "reconnects": 0, "lease_lost": 0}

    # ------------------------------------------------------------ control
    def stop(self, hurry: bool = False) -> None:
        """Stop reserving; run() returns once running handlers finish or the
        grace period ends (hurry: hand the running jobs back now)."""
        if self._stopping.is_set() or hurry:
            self._hurry.set()
        if not self._stopping.is_set():
            self._stop_at = time.monotonic()
        self._stopping.set()
        self._wake.set()

    def run(self, install_signal_handlers: bool = True) -> None:
        """Work until stop() (or SIGTERM/SIGINT; a second signal hands the
        running jobs back at once)."""
        old = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                old[s] = signal.signal(s, lambda *_: self.stop())
        threads = [threading.Thread(target=self._heartbeat_loop, name="tj-heartbeat", daemon=True)]
        if self.listen:
            threads.append(threading.Thread(target=self._listen_loop, name="tj-listen", daemon=True))
        for t in threads:
            t.start()
        try:
            while not self._stopping.is_set():
                full = self._step(reserve=True)
                if full:
                    continue
                self._wake.wait(self.poll_interval)
                self._wake.clear()
            self._drain()
        finally:
            self._closing.set()
            for t in threads:
                t.join(timeout=5)
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            for s, h in old.items():
                signal.signal(s, h)

    # ------------------------------------------------------------ database
    def _grace_over(self) -> bool:
        return (self._stopping.is_set()
                and time.monotonic() > self._stop_at + (self.grace_period or 0))

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True, **self.connect_kwargs)

    def _db(self, fn: Callable[[psycopg.Connection], Any], retry: bool = True) -> Any:
        """Run fn(conn) on the worker connection, reconnecting when it was
        lost (retry: until it works, or until the shutdown hurries)."""
        delay = self.reconnect_delay[0]
        while True:
            with self._lock:
                try:
                    if self._conn is None or self._conn.closed or self._conn.broken:
                        if self._conn is not None:
                            self.stats["reconnects"] += 1
                            self._conn.close()
                        self._conn = None
                        self._has_ex = None
                        self._conn = self._connect()
                    return fn(self._conn)
                except psycopg.Error as e:
                    conn = self._conn
                    if conn is not None and not conn.closed and not conn.broken:
                        raise
                    if conn is not None:
                        conn.close()
                        self.stats["reconnects"] += 1
                    self._conn = None
                    err = e
            if not retry or self._hurry.is_set() or self._grace_over():
                raise ConnectionLost(str(err)) from err
            log.warning("worker connection lost (%s); reconnecting in %.1f s",
                        str(err).strip(), delay)
            self._hurry.wait(delay)
            delay = min(delay * 2, self.reconnect_delay[1])

    # ------------------------------------------------------------ the loop
    def _lost(self, job: Job, reason: str) -> None:
        """The server refused the job's heartbeat or completion."""
        job.lease_lost = True
        self.stats["lease_lost"] += 1
        log.warning("job %d: lease lost (%s)", job.id, reason)
        if self.on_lease_lost is not None:
            try:
                self.on_lease_lost(job, reason)
            except Exception:  # noqa: B902 -- the callback's error is logged
                log.exception("on_lease_lost callback failed for job %d", job.id)

    def _take_outcomes(self) -> List[Tuple[Job, str, Any]]:
        with self._state:
            out, self._outcomes = self._outcomes, []
        return out

    def _settle(self, jobs: List[Job]) -> None:
        with self._state:
            for j in jobs:
                self._running.pop(j.id, None)

    def _record(self, job: Job, kind: str, arg: Any) -> None:
        """Record one outcome other than a plain completion."""
        if kind == "complete":
            def q(c):
                return c.execute("SELECT throttle_jobs.complete(%s, %s, %s::jsonb)",
                                 [job.id, job.lease_token, Jsonb(arg)]).fetchone()[0]
            try:
                if self._db(q):
                    self.stats["completed"] += 1
                else:
                    self._lost(job, "stale")
                return
            except ConnectionLost:
                raise
            except Exception as e:  # a result the server or JSON refused
                kind, arg = "fail", ("result refused: %s" % (e,), None, True)
        if kind == "snooze":
            self._db(lambda c: c.execute("SELECT throttle_jobs.snooze(%s, %s, %s::interval)",
                                         [job.id, job.lease_token, _interval(arg)]))
            self.stats["snoozed"] += 1
        elif kind == "fail":
            text, retry_in, retryable = arg
            self._db(lambda c: c.execute(
                "SELECT throttle_jobs.fail(%s, %s, %s, retry_in => %s::interval, retryable => %s)",
                [job.id, job.lease_token, text, _interval(retry_in), retryable]))
            self.stats["failed"] += 1

    def _jobs_from(self, rows) -> List[Job]:
        now = time.monotonic()
        jobs = []
        for r in rows:
            j = Job(*r[:11])
            lease_secs = max(float(r[11]), 0.1)
            j._hb_due = now + (self.heartbeat_interval or lease_secs / 3)
            jobs.append(j)
        return jobs

    def _check_ex(self, c: psycopg.Connection) -> bool:
        """Whether complete_and_reserve_ex exists (0.2.0), asked once per connection."""
        if self._has_ex is None:
            self._has_ex = c.execute("SELECT pg_catalog.to_regprocedure(%s) IS NOT NULL",
                                     [_EX_SIG]).fetchone()[0]
        return bool(self._has_ex)

    def _split(self, outcomes: List[Tuple[Job, str, Any]]) -> Tuple[List[Job], List[Any]]:
        """The completions that ride on the next call (with their results,
        when complete_and_reserve_ex can take them), and their results;
        records the other outcomes one by one."""
        done: List[Job] = []
        results: List[Any] = []
        for j, k, a in outcomes:
            if k == "complete" and a is not None:
                try:
                    json.dumps(a)
                except (TypeError, ValueError) as e:
                    k, a = "fail", ("result refused: %s" % (e,), None, True)
            if k == "complete" and (a is None or self._db(self._check_ex)):
                done.append(j)
                results.append(a)
            else:
                self._record(j, k, a)
                self._settle([j])
        return done, results

    def _step(self, reserve: bool) -> bool:
        """Record the finished jobs' outcomes and (reserve) fill the free
        slots.  Returns True when every free slot got a job (there may be
        more: do not wait).  The completions, results included (0.2.0),
        ride on the reservation (complete_and_reserve_ex), or on one
        statement when there is nothing to reserve."""
        outcomes = self._take_outcomes()
        done: List[Job] = []
        results: List[Any] = []
        try:
            done, results = self._split(outcomes)
            with self._state:
                free = self.concurrency - (len(self._running) - len(done))
            if not reserve or free <= 0:
                if done:
                    ids = [j.id for j in done]
                    toks = [j.lease_token for j in done]
                    res = [None if r is None else Jsonb(r) for r in results]
                    rows = self._db(lambda c: c.execute(
                        "SELECT t.id, throttle_jobs.complete(t.id, t.tok, t.res) "
                        "FROM ROWS FROM (pg_catalog.unnest(%s::bigint[]), pg_catalog.unnest(%s::uuid[]), "
                        "pg_catalog.unnest(%s::jsonb[])) AS t(id, tok, res)",
                        [ids, toks, res]).fetchall())
                    self._settle(done)
                    self._completed(done, {i: "stale" for i, ok in rows if not ok})
                return False
            got: List[Job] = []
            nq = len(self.queues)
            for i in range(nq):
                queue = self.queues[(self._next_queue + i) % nq]
                want = free - len(got)
                if want <= 0:
                    break
                ids = [j.id for j in done]
                toks = [j.lease_token for j in done]
                # (results only against 0.2.0: _split kept the others apart)
                res = ([None if r is None else Jsonb(r) for r in results]
                       if any(r is not None for r in results) else None)

                def q(c, queue=queue, want=want, ids=ids, toks=toks, res=res):
                    if not self._check_ex(c):
                        return [("reserved",) + tuple(r) for r in c.execute(
                            "SELECT " + _RESERVE_COLS + " FROM throttle_jobs.complete_and_reserve("
                            "%s, %s, %s::bigint[], %s::uuid[], %s, %s::interval) AS r",
                            [queue, self.name, ids, toks, want, self.lease]).fetchall()]
                    return c.execute(
                        "SELECT r.outcome, " + _RESERVE_COLS + " FROM throttle_jobs.complete_and_reserve_ex("
                        "%s, %s, %s::bigint[], %s::uuid[], %s::jsonb[], %s, %s::interval) AS r",
                        [queue, self.name, ids, toks, res, want, self.lease]).fetchall()
                rows = self._db(q)
                if done:
                    self._settle(done)
                    self._completed(done, {r[1]: r[0] for r in rows if r[0] != "reserved"})
                    done, results = [], []
                got.extend(self._jobs_from([r[1:] for r in rows if r[0] == "reserved"]))
            self._next_queue = (self._next_queue + 1) % nq
        except ConnectionLost:
            # Only while hurrying: give the outcomes back for the next try.
            with self._state:
                self._outcomes = [o for o in outcomes if o[0].id in self._running] + self._outcomes
            return False
        except psycopg.Error as e:
            if isinstance(e, psycopg.ProgrammingError):
                raise
            log.warning("worker loop: %s; retrying", str(e).strip())
            # The server may have refused a result (too large): nothing of
            # the statement happened; complete those jobs one by one, so
            # that a refused result fails its own job only.
            for j, r in zip(done, results):
                if r is not None:
                    try:
                        self._record(j, "complete", r)
                    except ConnectionLost:
                        break
                    self._settle([j])
            with self._state:
                self._outcomes = [o for o in outcomes if o[0].id in self._running] + self._outcomes
            self._stopping.wait(min(self.poll_interval, 1.0))
            return False
        for j in got:
            with self._state:
                self._running[j.id] = j
            threading.Thread(target=self._run_job, args=(j,), daemon=True,
                             name="tj-job-%d" % j.id).start()
        return len(got) >= free

    def _completed(self, done: List[Job], refused: Dict[int, str]) -> None:
        """Count the completions of done; report the refused ones."""
        for j in done:
            reason = refused.get(j.id)
            if reason is None:
                self.stats["completed"] += 1
            else:
                self._lost(j, reason)

    def _run_job(self, job: Job) -> None:
        handler = self._handlers[job.queue]
        try:
            result = handler(job)
            outcome: Tuple[str, Any] = ("complete", result)
        except Snooze as s:
            outcome = ("snooze", s.delay)
        except Fail as f:
            outcome = ("fail", (f.message, None, False))
        except Retry as r:
            outcome = ("fail", (r.message, r.retry_in, True))
        except BaseException as e:  # noqa: B902 -- a handler's error is the job's
            text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            head = "%s: %s\n" % (type(e).__name__, e)
            if len(text) > _MAX_ERROR:
                text = text[-(_MAX_ERROR - len(head) - 5):]
            outcome = ("fail", (head + text, None, True))
        with self._state:
            if job.id in self._running and not job.handed_back:
                self._outcomes.append((job, outcome[0], outcome[1]))
        self._wake.set()

    def _drain(self) -> None:
        """Shutdown: let running handlers finish within the grace period,
        then hand the rest back."""
        with self._state:
            for j in self._running.values():
                j.stopping.set()
        deadline = time.monotonic() + (self.grace_period or 0)
        while True:
            self._step(reserve=False)
            with self._state:
                busy = bool(self._running) or bool(self._outcomes)
            left = deadline - time.monotonic()
            if not busy or left <= 0 or self._hurry.is_set():
                break
            self._wake.wait(min(left, 0.2))
            self._wake.clear()
        self._step(reserve=False)
        with self._state:
            back = [j for j in self._running.values()]
            for j in back:
                j.handed_back = True
            self._outcomes = []
        if back:
            self._hurry.clear()   # the hand-back may reconnect once more

            def q(c):
                return c.execute(
                    "SELECT throttle_jobs.snooze(t.id, t.tok, '0'::interval) "
                    "FROM ROWS FROM (pg_catalog.unnest(%s::bigint[]), pg_catalog.unnest(%s::uuid[])) AS t(id, tok)",
                    [[j.id for j in back], [j.lease_token for j in back]]).fetchall()
            try:
                self._db(q, retry=False)
                self.stats["handed_back"] += len(back)
                log.info("handed back %d job(s): %s", len(back), [j.id for j in back])
            except (ConnectionLost, psycopg.Error) as e:
                log.warning("could not hand back %s (%s): their leases will expire",
                            [j.id for j in back], e)
            self._settle(back)

    # ------------------------------------------------------------ helpers
    def _heartbeat_loop(self) -> None:
        while not self._closing.wait(0.2):
            now = time.monotonic()
            with self._state:
                due = [j for j in self._running.values()
                       if not j.lease_lost and not j.handed_back and j._hb_due <= now]
            if not due:
                continue

            def q(c):
                return c.execute(
                    "SELECT t.id, pg_catalog.date_part('epoch', "
                    "throttle_jobs.heartbeat(t.id, t.tok, %s::interval) "
                    "OPERATOR(pg_catalog.-) pg_catalog.now()) "
                    "FROM ROWS FROM (pg_catalog.unnest(%s::bigint[]), pg_catalog.unnest(%s::uuid[])) AS t(id, tok)",
                    [self.lease, [j.id for j in due], [j.lease_token for j in due]]).fetchall()
            try:
                rows = dict(self._db(q, retry=False))
            except (ConnectionLost, psycopg.Error) as e:
                log.warning("heartbeat failed: %s", str(e).strip())
                for j in due:
                    j._hb_due = now + 0.5
                continue
            now = time.monotonic()
            for j in due:
                left = rows.get(j.id)
                if left is None:
                    self._lost(j, "heartbeat")
                else:
                    j._hb_due = now + (self.heartbeat_interval or max(float(left), 0.3) / 3)

    def _listen_loop(self) -> None:
        conn = None
        delay = self.reconnect_delay[0]
        while not self._closing.is_set():
            try:
                if conn is None:
                    conn = self._connect()
                    conn.add_notify_handler(lambda n: self._wake.set())
                    # 0.2.0: the channel set_queue_notify notifies; then
                    # the queue's own name, which producers notify by hand.
                    if conn.execute("SELECT pg_catalog.to_regprocedure("
                                    "'throttle_jobs.notify_channel(text)') IS NOT NULL").fetchone()[0]:
                        for q in self.queues:
                            ch = conn.execute("SELECT throttle_jobs.notify_channel(%s)", [q]).fetchone()[0]
                            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ch)))
                    for q in self.queues:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(q))))
                    self._wake.set()   # notifications may have been missed
                    delay = self.reconnect_delay[0]
                r, _, _ = select.select([conn.fileno()], [], [], 0.5)
                if r:
                    conn.execute("SELECT 1")   # delivers the notifications received
            except (psycopg.Error, OSError, ValueError) as e:
                log.warning("listen connection lost (%s); reconnecting in %.1f s",
                            str(e).strip(), delay)
                if conn is not None:
                    conn.close()
                conn = None
                self._closing.wait(delay)
                delay = min(delay * 2, self.reconnect_delay[1])
        if conn is not None:
            conn.close()
