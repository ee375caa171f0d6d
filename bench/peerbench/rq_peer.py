"""RQ: ``rq worker --url redis://... default``, twice.

RQ's default worker forks a work horse per job, and has no threads: the I/O
case runs the same two workers (one job at a time each). At about 100 jobs/s
a drain of 20,000 would take minutes a round, so it drains a tenth of each
drain case's jobs (2,000 of the CPU case's 20,000; the row says so) unless
``--jobs`` is given. It runs ``async
def`` jobs with ``asyncio.run``, one at a time. Its eager mode is
``Queue(is_async=False)``; ``Queue.enqueue_many`` sends many jobs in one
Redis pipeline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import Send, SendMany, System, executable
from .settings import ENV_REDIS, PROCESSES, redis_address, redis_url

_FUNCTION = {"cpu": "cpu", "io": "io", "async": "aio", "pickup": "pickup", "enqueue": "cpu"}


class RqPeer(System):
    """RQ with its default settings."""

    name = family = "rq"
    distribution = module = script = "rq"
    related = ("redis",)
    single_api = "queue.enqueue()"
    drain_share = 0.1

    def worker_commands(self, case: str, folder: Path) -> list[list[str]]:
        url = redis_url(os.environ.get(ENV_REDIS) or redis_address())
        return [[str(executable("rq")), "worker", "--url", url, "default"]] * PROCESSES

    def how(self, case: str) -> str:
        return f"{PROCESSES} workers, a forked work horse per job" + (" (no threads)" if case == "io" else "")

    def _queue(self, is_async: bool = True) -> Any:
        from redis import Redis
        from rq import Queue

        url = redis_url(os.environ.get(ENV_REDIS) or redis_address())
        return Queue("default", connection=Redis.from_url(url), is_async=is_async)

    def sender(self, case: str, folder: Path) -> Send:
        from .jobs import rq_jobs

        queue, function = self._queue(), getattr(rq_jobs, _FUNCTION[case])
        return lambda index: queue.enqueue(function, index)

    def bulk_sender(self, case: str, folder: Path) -> tuple[str, SendMany]:
        from rq import Queue

        from .jobs import rq_jobs

        queue, function = self._queue(), getattr(rq_jobs, _FUNCTION[case])
        return ("queue.enqueue_many() (one pipeline)",
                lambda indexes: queue.enqueue_many([Queue.prepare_data(function, (index,)) for index in indexes]))

    def eager(self, folder: Path) -> tuple[str, Send]:
        from .jobs import rq_jobs

        queue = self._queue(is_async=False)
        return "queue.enqueue() with is_async=False", lambda index: queue.enqueue(rq_jobs.noop, index)
