#!/usr/bin/env python3
"""P1 with clients/python (group W of test/bench/run): one Worker, an
instant handler, on QUEUE, until SIGTERM (the library's own shutdown).

    lib_worker.py QUEUE APPLICATION_NAME PIDFILE

Connects with the PG* environment; writes its pid to PIDFILE.  Run with
Debian's /usr/bin/python3 (python3-psycopg), as test/clients/python.sh runs
the library's tests, from a tree that holds clients/python.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "clients", "python"))
from throttle_jobs_client import Worker  # noqa: E402

queue, app, pidfile = sys.argv[1:4]
with open(pidfile, "w") as f:
    f.write("%d\n" % os.getpid())
# no LISTEN: the backlog is full while measured; the poll only matters at
# the start (the queue is resumed while the workers wait)
w = Worker("", queue, lambda job: None, concurrency=1, poll_interval=0.05,
           listen=False, grace_period=5, connect_kwargs={"application_name": app})
w.run()
print("stopped: %s" % (w.stats,))
