"""Celery on Redis: ``celery -A peerbench.jobs.celery_jobs worker``.

CPU and pickup: one worker with ``-c 2`` (the default prefork pool, two child
processes). I/O: two workers with ``-P threads -c 8`` (two processes of 8
threads). No result backend, Celery's defaults otherwise (prefetch multiplier
4). Celery does not await ``async def`` tasks; its eager mode is
``task_always_eager``; ``group(...).apply_async()`` sends one message a task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import NotAvailable, Send, SendMany, System, executable
from .settings import PROCESSES, THREADS

_TASK = {"cpu": "cpu", "io": "io", "pickup": "pickup", "enqueue": "cpu"}


class CeleryPeer(System):
    """Celery with its default settings."""

    name = family = "celery"
    distribution = module = script = "celery"
    related = ("kombu", "redis")
    single_api = "task.delay()"

    def worker_commands(self, case: str, folder: Path) -> list[list[str]]:
        if case == "async":
            raise NotAvailable("Celery does not await async def tasks")
        worker = [str(executable("celery")), "-A", "peerbench.jobs.celery_jobs", "worker"]
        if case == "io":
            return [worker + ["-P", "threads", "-c", str(THREADS), "-n", f"peerbench{number}@%h"]
                    for number in range(PROCESSES)]
        return [worker + ["-c", str(PROCESSES)]]

    def how(self, case: str) -> str:
        if case == "io":
            return f"{PROCESSES} workers x {THREADS} threads"
        return f"1 worker, prefork pool of {PROCESSES}"

    def _jobs(self) -> Any:
        from .jobs import celery_jobs

        return celery_jobs

    def sender(self, case: str, folder: Path) -> Send:
        return getattr(self._jobs(), _TASK[case]).delay

    def bulk_sender(self, case: str, folder: Path) -> tuple[str, SendMany]:
        import celery

        task = getattr(self._jobs(), _TASK[case])
        return ("group().apply_async() (one send each)",
                lambda indexes: celery.group(task.s(index) for index in indexes).apply_async())

    def eager(self, folder: Path) -> tuple[str, Send]:
        jobs = self._jobs()
        jobs.app.conf.task_always_eager = True
        return "task.delay() with task_always_eager", jobs.noop.delay
