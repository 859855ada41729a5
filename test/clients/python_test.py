#!/usr/bin/env python3
"""Tests of clients/python against a real server (no mocks).

Run by test/clients/python.sh with PGHOST/PGPORT/PGUSER set and TJ_SCRATCH
for logs.  Works in database tj_clients_py (dropped first and at the end),
runs worker processes (py_worker.py) and prints "ok: NAME" or
"FAILED: NAME: why" per case; exits 1 if any case failed.
"""
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from datetime import timedelta

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))
import psycopg  # noqa: E402
from throttle_jobs_client import enqueue, enqueue_batch  # noqa: E402

DB = "tj_clients_py"
SCRATCH = os.environ.get("TJ_SCRATCH") or "/tmp"
LOGDIR = os.path.join(SCRATCH, "clients-python")
os.makedirs(LOGDIR, exist_ok=True)
PROCS = []


def admin_conn(db=DB):
    return psycopg.connect(dbname=db, autocommit=True)


def q(sql, params=None):
    with admin_conn() as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description else []


def q1(sql, params=None):
    rows = q(sql, params)
    return rows[0][0] if rows else None


def wait_for(pred, timeout, what, each=None, tick=0.2):
    """Poll pred() until true (each() runs between polls, e.g. maintain())."""
    end = time.time() + timeout
    while True:
        if pred():
            return
        if time.time() > end:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        if each:
            each()
        time.sleep(tick)


def maintain():
    q("SELECT throttle_jobs.maintain()")


def start_worker(queue, log, **opts):
    args = [sys.executable, os.path.join(HERE, "py_worker.py"), "--queue", queue, "--log", log]
    for k, v in opts.items():
        args += ["--" + k, str(v)]
    out = open(os.path.join(LOGDIR, "worker-%s-%d.out" % (queue.replace(":", "_"), len(PROCS))), "w")
    p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                         env=dict(os.environ, PGDATABASE=DB))
    PROCS.append(p)
    return p


def stop(p, timeout=20):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    return p.wait(timeout)


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def logpath(name):
    p = os.path.join(LOGDIR, name + ".log")
    if os.path.exists(p):
        os.unlink(p)
    return p


def archived(queue):
    return q1("SELECT count(*) FROM throttle_jobs.archived_jobs WHERE queue = %s AND state = 'completed'", [queue])


def live(queue):
    return q1("SELECT count(*) FROM throttle_jobs.jobs WHERE queue = %s", [queue])


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# ---------------------------------------------------------------- cases
def test_producer():
    """enqueue is transactional; its notification reaches a LISTENer at
    commit, on a quoted channel; enqueue_batch keeps order; unique_key
    returns the live job."""
    queue = "tenant-a:py"
    q("SELECT throttle_jobs.create_queue(%s)", [queue])
    with admin_conn() as listener:
        listener.execute('LISTEN "tenant-a:py"')
        # rolled back: no job, no notification
        with psycopg.connect(dbname=DB) as c:
            enqueue(c, queue, {"n": 0})
            c.rollback()
        check(live(queue) == 0, "a rolled-back enqueue left a job")
        # committed: a job and one notification on the queue's channel, sent
        # at commit
        got = []
        listener.add_notify_handler(lambda n: got.append(n.channel))
        with psycopg.connect(dbname=DB) as c:
            jid = enqueue(c, queue, {"n": 1}, priority=5, concurrency_key="k1",
                          run_at=timedelta(seconds=0))
            time.sleep(0.2)
            listener.execute("SELECT 1")
            check(got == [], "notified before commit")
        wait_for(lambda: listener.execute("SELECT 1") and got, 5, "the notification")
        check(got[0] == queue, "notified on %r, not %r" % (got, queue))
        row = q("SELECT priority, concurrency_key, payload FROM throttle_jobs.jobs WHERE id = %s", [jid])
        check(row == [(5, "k1", {"n": 1})], "enqueued row %r" % (row,))
        with psycopg.connect(dbname=DB) as c:
            ids = enqueue_batch(c, queue, [{"payload": {"n": i}, "priority": i} for i in range(5)])
        check(len(ids) == 5 and ids == sorted(ids), "batch ids %r" % (ids,))
        pl = [r[0] for r in q("SELECT payload->>'n' FROM throttle_jobs.jobs WHERE id = ANY(%s) ORDER BY id", [ids])]
        check(pl == ["0", "1", "2", "3", "4"], "batch payloads %r" % (pl,))
        with psycopg.connect(dbname=DB) as c:
            u1 = enqueue(c, queue, {}, unique_key="u")
            u2 = enqueue(c, queue, {}, unique_key="u")
        check(u1 == u2, "unique_key gave two jobs %s %s" % (u1, u2))
        try:
            with psycopg.connect(dbname=DB) as c:
                enqueue_batch(c, queue, [{"payload": {}, "bogus": 1}])
            raise AssertionError("an unknown batch key was accepted")
        except ValueError:
            pass


def test_once():
    """300 jobs, 3 worker processes x 4 threads: each job done exactly once.
    The workers are idle when the jobs arrive and poll only every 60 s, so
    the jobs are picked up through LISTEN."""
    queue = "py_once"
    q("SELECT throttle_jobs.create_queue(%s)", [queue])
    log = logpath("once")
    ws = [start_worker(queue, log, concurrency=4, poll=60) for _ in range(3)]
    wait_for(lambda: q1("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE query = %s",
                        ['LISTEN "py_once"']) == 3, 20, "3 listening workers")
    with psycopg.connect(dbname=DB) as c:
        enqueue_batch(c, queue, [{"payload": {"sleep": 0.01}} for _ in range(300)])
    wait_for(lambda: archived(queue) == 300, 30, "300 completed jobs")
    for w in ws:
        check(stop(w) == 0, "a worker exited with %s" % w.returncode)
    ends = [e["id"] for e in read_log(log) if e["ev"] == "end"]
    check(len(ends) == 300 and len(set(ends)) == 300,
          "%d handler runs for %d distinct jobs" % (len(ends), len(set(ends))))
    check(q1("SELECT count(*) FROM throttle_jobs.archived_jobs WHERE queue = %s AND attempt = 1", [queue]) == 300,
          "some job took more than one attempt")
    pids = {e["pid"] for e in read_log(log)}
    check(len(pids) == 3, "only %d of 3 workers got jobs" % len(pids))


def test_sigkill():
    """A worker killed (SIGKILL) mid-job: after its lease expires the job is
    retried by another worker (attempt 2, error 'lease expired')."""
    queue = "py_kill"
    q("SELECT throttle_jobs.create_queue(%s, lease => '2 s', backoff_base => '100 ms')", [queue])
    log = logpath("kill")
    w1 = start_worker(queue, log)
    with psycopg.connect(dbname=DB) as c:
        jid = enqueue(c, queue, {"sleep": 60, "sleep_attempts": [1]})
    wait_for(lambda: any(e["ev"] == "start" for e in read_log(log)), 20, "the job to start")
    w1.kill()
    w1.wait()
    check(q1("SELECT state FROM throttle_jobs.jobs WHERE id = %s", [jid]) == "running",
          "the killed worker's job is not running")
    w2 = start_worker(queue, log, poll=0.3)
    wait_for(lambda: archived(queue) == 1, 30, "the job retried and completed", each=maintain, tick=0.3)
    check(stop(w2) == 0, "worker exit status")
    row = q("SELECT attempt, errors->0->>'error' FROM throttle_jobs.archived_jobs WHERE id = %s", [jid])
    check(row == [(2, "lease expired")], "archived %r" % (row,))


def test_sigterm():
    """SIGTERM: a handler that ends within the grace period completes its
    job; one that does not has its job handed back (available at once,
    attempt not counted) and the worker exits 0 soon after the grace."""
    queue = "py_term"
    q("SELECT throttle_jobs.create_queue(%s)", [queue])
    log = logpath("term")
    w = start_worker(queue, log, concurrency=2, grace=1.5)
    with psycopg.connect(dbname=DB) as c:
        short = enqueue(c, queue, {"sleep": 0.8})
        long_ = enqueue(c, queue, {"sleep": 60})
    wait_for(lambda: len([e for e in read_log(log) if e["ev"] == "start"]) == 2, 20, "both jobs to start")
    t0 = time.time()
    w.send_signal(signal.SIGTERM)
    rc = w.wait(20)
    took = time.time() - t0
    check(rc == 0, "worker exit status %s" % rc)
    check(took < 8, "the worker took %.1f s to stop" % took)
    check(q1("SELECT state FROM throttle_jobs.archived_jobs WHERE id = %s", [short]) == "completed",
          "the short job was not completed")
    row = q("SELECT state, attempt, worker FROM throttle_jobs.jobs WHERE id = %s", [long_])
    check(row == [("available", 0, None)], "the long job is %r, not handed back" % (row,))


def test_errors():
    """A handler exception is retried, then dead-lettered with its text and
    stack; Fail dead-letters at once; Snooze does not count the attempt;
    a returned value is the job's result."""
    queue = "py_err"
    q("SELECT throttle_jobs.create_queue(%s, max_attempts => 3, backoff_base => '50 ms', backoff_factor => 1)", [queue])
    log = logpath("err")
    w = start_worker(queue, log, concurrency=2, poll=0.2)
    with psycopg.connect(dbname=DB) as c:
        boom = enqueue(c, queue, {"raise": "boom"})
        nope = enqueue(c, queue, {"fail": "nope"})
        snz = enqueue(c, queue, {"snooze_once": 0.1})
        res = enqueue(c, queue, {"result": {"x": 1}})
    wait_for(lambda: q1("SELECT count(*) FROM throttle_jobs.dead_letters WHERE queue = %s", [queue]) == 2
             and archived(queue) == 2, 30, "2 dead and 2 completed jobs")
    check(stop(w) == 0, "worker exit status")
    row = q("SELECT reason, attempt, pg_catalog.jsonb_array_length(errors), last_error "
            "FROM throttle_jobs.dead_letters WHERE id = %s", [boom])[0]
    check(row[:3] == ("attempts exhausted", 3, 3), "boom: %r" % (row[:3],))
    check("RuntimeError: boom" in row[3] and "Traceback" in row[3] and "py_worker.py" in row[3],
          "boom's error lacks its text or stack: %r" % row[3])
    row = q("SELECT reason, attempt, last_error FROM throttle_jobs.dead_letters WHERE id = %s", [nope])
    check(row == [("failed without retry", 1, "nope")], "nope: %r" % (row,))
    row = q("SELECT attempt, result FROM throttle_jobs.archived_jobs WHERE id = ANY(%s) ORDER BY id", [[snz, res]])
    check(row == [(1, None), (1, {"x": 1})], "snoozed/result jobs: %r" % (row,))
    runs = [e for e in read_log(log) if e["ev"] == "start" and e["id"] == snz]
    check(len(runs) == 2, "the snoozed job ran %d times" % len(runs))


def test_results():
    """Results ride on the next reservation: 20 jobs' results are kept
    while complete() runs only for the other jobs of the batch whose
    statement the server refused; a result over max_payload_size fails its
    own job."""
    queue = "py_res"
    q("SELECT throttle_jobs.create_queue(%s, max_attempts => 1)", [queue])
    # (for the worker's sessions, which connect later)
    q("ALTER DATABASE %s SET track_functions = 'all'" % DB)
    q("ALTER DATABASE %s SET throttle_jobs.max_payload_size = 4096" % DB)
    try:
        with psycopg.connect(dbname=DB) as c:
            ids = [enqueue(c, queue, {"result": {"n": i}}) for i in range(20)]
            big = enqueue(c, queue, {"result_pad": 10000})
        w = start_worker(queue, logpath("res"), concurrency=4, poll=0.2)
        wait_for(lambda: archived(queue) == 20
                 and q1("SELECT count(*) FROM throttle_jobs.dead_letters WHERE queue = %s", [queue]) == 1,
                 30, "20 completed jobs and 1 dead")
        check(stop(w) == 0, "worker exit status")
    finally:
        q("ALTER DATABASE %s RESET track_functions" % DB)
        q("ALTER DATABASE %s RESET throttle_jobs.max_payload_size" % DB)
    rows = q("SELECT id, result FROM throttle_jobs.archived_jobs WHERE queue = %s ORDER BY id", [queue])
    check(rows == [(j, {"n": i}) for i, j in enumerate(ids)], "results: %r" % (rows,))
    err = q1("SELECT last_error FROM throttle_jobs.dead_letters WHERE id = %s", [big])
    check(err is not None and err.startswith("result refused"), "the big result's job: %r" % (err,))

    def calls():
        return dict(q("SELECT funcname, calls FROM pg_catalog.pg_stat_user_functions "
                      "WHERE schemaname = 'throttle_jobs' AND funcname IN ('complete', 'complete_and_reserve_ex')"))
    # (the worker's backend reports its counts when idle and when it exits;
    # a call that raised an error is not counted)
    wait_for(lambda: calls().get("complete_and_reserve_ex", 0) > 0, 10, "the worker's function counts")
    n = calls().get("complete", 0)
    check(n <= 3, "complete() ran %d times for 20 jobs with results (4 at once)" % n)


def test_heartbeat():
    """Heartbeats keep a 4 s job alive under a 1 s lease while maintain()
    runs; without them (heartbeat every 100 s) the lease expires."""
    queue = "py_hb"
    q("SELECT throttle_jobs.create_queue(%s, lease => '1 s', backoff_base => '100 ms')", [queue])
    log = logpath("hb")
    w = start_worker(queue, log)
    with psycopg.connect(dbname=DB) as c:
        jid = enqueue(c, queue, {"sleep": 4})
    wait_for(lambda: archived(queue) == 1, 30, "the long job to complete", each=maintain, tick=0.2)
    check(stop(w) == 0, "worker exit status")
    row = q("SELECT attempt, errors FROM throttle_jobs.archived_jobs WHERE id = %s", [jid])
    check(row == [(1, [])], "heartbeated job: %r" % (row,))
    # the control case: the same job without heartbeats loses its lease
    w = start_worker(queue, log, heartbeat=100, poll=0.3)
    with psycopg.connect(dbname=DB) as c:
        jid = enqueue(c, queue, {"sleep": 3, "sleep_attempts": [1]})
    wait_for(lambda: archived(queue) == 2, 30, "the job to complete", each=maintain, tick=0.2)
    check(stop(w) == 0, "worker exit status")
    row = q("SELECT attempt, errors->0->>'error' FROM throttle_jobs.archived_jobs WHERE id = %s", [jid])
    check(row == [(2, "lease expired")], "job without heartbeats: %r" % (row,))


def test_reconnect():
    """pg_terminate_backend on the worker's connections (worker and LISTEN)
    while a job runs: the job still completes (attempt 1) and later jobs are
    still woken and done."""
    queue = "py_conn"
    q("SELECT throttle_jobs.create_queue(%s)", [queue])
    log = logpath("conn")
    w = start_worker(queue, log, concurrency=2, poll=60, app="tj-test-conn")
    with psycopg.connect(dbname=DB) as c:
        first = enqueue(c, queue, {"sleep": 2})
    wait_for(lambda: any(e["ev"] == "start" for e in read_log(log)), 20, "the job to start")
    n = q1("SELECT count(*) FROM (SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
           "WHERE application_name = 'tj-test-conn') t")
    check(n == 2, "%d worker connections terminated, not 2" % n)
    wait_for(lambda: archived(queue) == 1, 30, "the running job to complete after the reconnect")
    check(q1("SELECT attempt FROM throttle_jobs.archived_jobs WHERE id = %s", [first]) == 1, "attempt")
    wait_for(lambda: q1("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name = 'tj-test-conn'") == 2,
             20, "the worker to reconnect both connections")
    with psycopg.connect(dbname=DB) as c:
        enqueue_batch(c, queue, [{"payload": {}} for _ in range(5)])
    wait_for(lambda: archived(queue) == 6, 20, "jobs enqueued after the reconnect (woken by LISTEN)")
    check(stop(w) == 0, "worker exit status")


def test_throttled():
    """A key capped at 2: 3 worker processes x 3 threads never run more
    than 2 of its jobs at once, and do run 2 at once."""
    queue = "py_cap"
    q("SELECT throttle_jobs.create_queue(%s)", [queue])
    q("SELECT throttle_jobs.set_concurrency_limit('py:cap', 2)")
    log = logpath("cap")
    ws = [start_worker(queue, log, concurrency=3, poll=0.2) for _ in range(3)]
    with psycopg.connect(dbname=DB) as c:
        enqueue_batch(c, queue, [{"payload": {"sleep": 0.3}, "concurrency_key": "py:cap"} for _ in range(16)])
    wait_for(lambda: archived(queue) == 16, 60, "16 completed jobs")
    for w in ws:
        check(stop(w) == 0, "worker exit status")
    events = sorted((e["t"], 1 if e["ev"] == "start" else -1) for e in read_log(log))
    # at equal times count the end first: intervals that touch do not overlap
    events.sort(key=lambda x: (x[0], x[1]))
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    check(peak == 2, "at most %d jobs of the capped key ran at once, not 2" % peak)


def test_example():
    """examples/python_worker.py: its producer enqueues, its worker completes
    the job with the handler's result, dead-letters a bad recipient without
    retry, and stops with status 0 on SIGTERM."""
    ex = os.path.join(HERE, "..", "..", "examples", "python_worker.py")
    env = dict(os.environ, PGDATABASE=DB, EXAMPLE_QUEUE="ex-py")
    out = open(os.path.join(LOGDIR, "example.out"), "w")
    w = subprocess.Popen([sys.executable, ex], stdout=out, stderr=subprocess.STDOUT, env=env)
    PROCS.append(w)
    wait_for(lambda: q1("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE query = 'LISTEN \"ex-py-reports\"'") == 1,
             20, "the example worker to listen on its queues")
    ok = subprocess.run([sys.executable, ex, "enqueue", "a@example.com"], env=env, capture_output=True, text=True, timeout=30)
    bad = subprocess.run([sys.executable, ex, "enqueue", "nobody"], env=env, capture_output=True, text=True, timeout=30)
    check(ok.returncode == 0 and bad.returncode == 0, "enqueue: %s %s" % (ok.stderr, bad.stderr))
    wait_for(lambda: archived("ex-py") == 1 and
             q1("SELECT count(*) FROM throttle_jobs.dead_letters WHERE queue = 'ex-py'") == 1, 20, "both jobs done")
    check(q1("SELECT result FROM throttle_jobs.archived_jobs WHERE id = %s", [int(ok.stdout)]) == {"sent": True}, "result")
    check(q1("SELECT reason FROM throttle_jobs.dead_letters WHERE id = %s", [int(bad.stdout)]) == "failed without retry",
          "the bad recipient")
    check(stop(w) == 0, "example exit status")


def test_queue_notify():
    """set_queue_notify (0.2.0): a worker that polls only every 60 s is woken
    by an enqueue with notify=False (no hand-made notification), through
    notify_channel(queue): 'tj:' + a short name, an md5 for a long one (62 bytes).  A
    job enqueued while the queue's notify is off waits (the control)."""
    for queue in ["py-qn", "py-qn-" + "x" * 56]:
        q("SELECT throttle_jobs.create_queue(%s)", [queue])
        log = logpath("qn")
        w = start_worker(queue, log, poll=60)
        # the worker LISTENs on notify_channel(queue) before the queue's name
        wait_for(lambda: q1("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE query = %s",
                            ['LISTEN "%s"' % queue]) == 1, 20, "the worker listening")
        with psycopg.connect(dbname=DB) as c:
            first = enqueue(c, queue, {"n": 1}, notify=False)
        time.sleep(2)
        check(live(queue) == 1 and not read_log(log),
              "a job without any notification was taken before the poll")
        q("SELECT throttle_jobs.set_queue_notify(%s, true)", [queue])
        with psycopg.connect(dbname=DB) as c:
            second = enqueue_batch(c, queue, [{"payload": {"n": 2}}], notify=False)[0]
        wait_for(lambda: archived(queue) == 2, 10, "the woken worker to run both jobs")
        ids = {e["id"] for e in read_log(log) if e["ev"] == "end"}
        check(ids == {first, second}, "the worker ran %s" % (ids,))
        check(stop(w) == 0, "worker exit status")


def test_lease_lost():
    """A running job cancelled (cancel(id, running => true)): the handler's
    completion is refused, and complete_and_reserve_ex tells the worker,
    which calls on_lease_lost(job, 'cancelled'); nothing is completed."""
    queue = "py_lost"
    q("SELECT throttle_jobs.create_queue(%s)", [queue])
    log = logpath("lost")
    w = start_worker(queue, log, lease=60, poll=0.5)
    with psycopg.connect(dbname=DB) as c:
        jid = enqueue(c, queue, {"sleep": 3})
    wait_for(lambda: any(e["ev"] == "start" for e in read_log(log)), 20, "the job to start")
    check(q1("SELECT throttle_jobs.cancel(%s, running => true)", [jid]) is True, "cancel refused")
    wait_for(lambda: any(e["ev"] == "lost" for e in read_log(log)), 20, "the lease-lost report")
    lost = [(e["id"], e["reason"]) for e in read_log(log) if e["ev"] == "lost"]
    check(lost == [(jid, "cancelled")], "reported %s" % (lost,))
    check(archived(queue) == 0, "the cancelled job was completed")
    check(q1("SELECT state FROM throttle_jobs.archived_jobs WHERE id = %s", [jid]) == "cancelled",
          "the job is not archived as cancelled")
    check(stop(w) == 0, "worker exit status")


CASES = [test_producer, test_once, test_sigkill, test_sigterm, test_errors,
         test_results, test_heartbeat, test_reconnect, test_throttled, test_example,
         test_queue_notify, test_lease_lost]


def main():
    only = sys.argv[1:]
    with admin_conn("postgres") as c:
        c.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB)
        c.execute("CREATE DATABASE %s" % DB)
    q("CREATE EXTENSION throttle_jobs")
    failed = 0
    try:
        for case in CASES:
            if only and case.__name__ not in only:
                continue
            t0 = time.time()
            try:
                case()
                print("ok: python/%s (%.1f s)" % (case.__name__[5:], time.time() - t0), flush=True)
            except Exception as e:
                failed += 1
                print("FAILED: python/%s: %s" % (case.__name__[5:], e), flush=True)
                traceback.print_exc()
            finally:
                for p in PROCS:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
                PROCS.clear()
    finally:
        with admin_conn("postgres") as c:
            c.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
