"""Producer and worker for the throttle_jobs PostgreSQL extension (psycopg 3).

Producer: enqueue() and enqueue_batch() run on the caller's connection, so
the job commits or rolls back with the caller's transaction.  Worker: runs
handlers in threads over the complete_and_reserve loop, woken by LISTEN on
the queue's channel with a fallback poll, heartbeating running jobs, and
handing unfinished jobs back on SIGTERM/SIGINT.
"""

from .producer import enqueue, enqueue_batch, notify_channel
from .worker import Job, Worker, Snooze, Fail, Retry

__all__ = ["enqueue", "enqueue_batch", "notify_channel", "Job", "Worker",
           "Snooze", "Fail", "Retry"]
__version__ = "0.2.0"
