#!/usr/bin/env python3
"""A worker process for test/clients/python_test.py.

The handler does what the job's payload says, and logs one JSON line per
start and end to --log:
  {"sleep": S}               sleep S seconds (on every attempt, or only on
                             the attempts listed in "sleep_attempts")
  {"raise": MSG}             raise RuntimeError(MSG)
  {"fail": MSG}              raise Fail(MSG) (no retry)
  {"snooze_once": S}         raise Snooze(S) the first time this process
                             runs the job (a snooze does not count an
                             attempt, so the attempt cannot tell)
  {"result": X}              return X (the job's result)
  {"result_pad": N}          return {"pad": N x's} (a result larger than
                             the payload may be)
and a line {"ev": "lost", "reason": R} when the worker reports the job's
lease lost (on_lease_lost).
"""
import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "clients", "python"))
from throttle_jobs_client import Fail, Snooze, Worker  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--queue", required=True)
p.add_argument("--log", required=True)
p.add_argument("--concurrency", type=int, default=1)
p.add_argument("--lease", type=float)
p.add_argument("--heartbeat", type=float)
p.add_argument("--poll", type=float, default=5.0)
p.add_argument("--grace", type=float, default=10.0)
p.add_argument("--app", default="tj-test-worker")
a = p.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s worker[%(process)d] %(message)s")


def note(ev, job, **extra):
    line = json.dumps(dict({"ev": ev, "id": job.id, "attempt": job.attempt,
                            "pid": os.getpid(), "t": time.time()}, **extra)) + "\n"
    fd = os.open(a.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


SNOOZED = set()


def handler(job):
    p = job.payload or {}
    note("start", job)
    try:
        if "sleep" in p and job.attempt in p.get("sleep_attempts", [job.attempt]):
            time.sleep(p["sleep"])
        if "raise" in p:
            raise RuntimeError(p["raise"])
        if "fail" in p:
            raise Fail(p["fail"])
        if "snooze_once" in p and job.id not in SNOOZED:
            SNOOZED.add(job.id)
            raise Snooze(p["snooze_once"])
        if "result_pad" in p:
            return {"pad": "x" * p["result_pad"]}
        return p.get("result")
    finally:
        note("end", job)


w = Worker("", a.queue, handler, concurrency=a.concurrency, lease=a.lease,
           heartbeat_interval=a.heartbeat, poll_interval=a.poll,
           grace_period=a.grace, name="py-%d" % os.getpid(),
           connect_kwargs={"application_name": a.app},
           on_lease_lost=lambda job, reason: note("lost", job, reason=reason))
w.run()
logging.info("stopped: %s", w.stats)
