"""A middleware that records every event it sees (``[sqjobs] middleware = middleware_for_tests.Recorder``).

Each event is one JSON line appended to the file named by $SQJOBS_TEST_EVENTS
(small appends with O_APPEND are atomic between processes).
"""

from __future__ import annotations

import json
import os
from typing import Any

from sqjobs import Middleware


def record(**event: Any) -> None:
    """Append one event, with the pid that saw it, to $SQJOBS_TEST_EVENTS."""
    event["pid"] = os.getpid()
    fd = os.open(os.environ["SQJOBS_TEST_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(event, default=str) + "\n").encode())
    finally:
        os.close(fd)


class Recorder(Middleware):
    """Records each hook; its before_enqueue adds a ``trace`` header the other hooks read back."""

    def before_enqueue(self, message: Any) -> None:
        message.headers["trace"] = f"trace-{message.id}"
        record(event="before_enqueue", id=message.id, name=message.name, queue=message.queue)

    def before_run(self, job: Any, message: Any) -> None:
        record(event="before_run", id=message.id, name=job.name, attempt=job.attempt,
               trace=message.headers.get("trace"))

    def after_run(self, job: Any, message: Any, result: Any = None, error: BaseException | None = None) -> None:
        record(event="after_run", id=message.id, name=job.name, result=result,
               error=type(error).__name__ if error is not None else None)

    def after_dead_letter(self, message: Any, reason: str) -> None:
        record(event="after_dead_letter", id=getattr(message, "id", None), reason=reason)

    def worker_started(self, worker: Any) -> None:
        record(event="worker_started", queues=list(worker.queues))

    def worker_stopped(self, worker: Any) -> None:
        record(event="worker_stopped", jobs_done=worker.jobs_done)


class Broken(Middleware):
    """Fails in every hook: its failures are logged and change nothing."""

    def before_run(self, job: Any, message: Any) -> None:
        raise RuntimeError("broken before_run")

    def after_run(self, job: Any, message: Any, result: Any = None, error: BaseException | None = None) -> None:
        raise RuntimeError("broken after_run")

    def after_dead_letter(self, message: Any, reason: str) -> None:
        raise RuntimeError("broken after_dead_letter")
