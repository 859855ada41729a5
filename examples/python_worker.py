#!/usr/bin/env python3
"""A throttle_jobs worker in Python (clients/python, on psycopg 3).

    python3 examples/python_worker.py                  # work until SIGTERM/Ctrl-C
    python3 examples/python_worker.py enqueue 'a@example.com'

Connection settings come from the usual libpq variables (PGHOST,
PGDATABASE, ...) or DATABASE_URL.  The queues are created if missing;
creating queues is for admins, so in production create them in a migration.
"""
import logging
import os
import sys
import time

# In an application: pip install ./clients/python, then just import it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
import psycopg  # noqa: E402
from throttle_jobs_client import Fail, Retry, Snooze, Worker, enqueue  # noqa: E402

DSN = os.environ.get("DATABASE_URL", "")
EMAILS = os.environ.get("EXAMPLE_QUEUE", "emails")
REPORTS = EMAILS + "-reports"


def send_email(job):
    """One handler per queue.  Return a JSON value to store it as the job's
    result; raise to fail the attempt (retried with the queue's backoff)."""
    to = job.payload.get("to")
    if not to or "@" not in to:
        raise Fail("no valid recipient in %r" % (job.payload,))   # dead at once, no retry
    if job.payload.get("smtp_busy"):
        raise Retry("SMTP 451", retry_in=60)                         # retry in a minute
    if job.payload.get("not_before") and time.time() < job.payload["not_before"]:
        raise Snooze(job.payload["not_before"] - time.time())        # attempt not counted
    logging.info("sending to %s (job %d, attempt %d)", to, job.id, job.attempt)
    return {"sent": True}


def build_report(job):
    # A long job: the worker heartbeats its lease while it runs; job.stopping
    # is set at shutdown, so a loop can return early (or finish in the grace).
    for _ in range(job.payload.get("steps", 3)):
        if job.stopping.is_set():
            raise Snooze(0)
        time.sleep(0.1)
    return {"rows": 42}


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with psycopg.connect(DSN, autocommit=True) as conn:
        for q in (EMAILS, REPORTS):
            if conn.execute("SELECT count(*) FROM throttle_jobs.queues WHERE name = %s", [q]).fetchone()[0] == 0:
                conn.execute("SELECT throttle_jobs.create_queue(%s, max_attempts => 5)", [q])
    if sys.argv[1:2] == ["enqueue"]:
        # The producer: in the caller's transaction (here one of its own); the
        # notification that wakes the workers is delivered at commit.
        with psycopg.connect(DSN) as conn:
            job_id = enqueue(conn, EMAILS, {"to": sys.argv[2]}, concurrency_key="smtp")
        print(job_id)
        return
    worker = Worker(DSN, handlers={EMAILS: send_email, REPORTS: build_report},
                    concurrency=4, lease=60, grace_period=20)
    worker.run()          # returns after SIGTERM/SIGINT and the hand-back
    logging.info("stopped: %s", worker.stats)


if __name__ == "__main__":
    main()
