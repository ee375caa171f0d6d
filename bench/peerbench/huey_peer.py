"""Huey on SQLite or Redis: ``huey_consumer peerbench.jobs.huey_jobs.huey``.

CPU and pickup: one consumer with ``-w 2 -k process`` (two worker
processes). I/O: two consumers with ``-w 8 -k thread`` (two processes of 8
threads). Everything else is Huey's default (results on, polling backoff from
0.1 s to 10 s for SQLite, a blocking pop for Redis). Huey refuses ``async
def`` tasks; its eager mode is ``huey.immediate = True``; ``task.map()``, its
"many jobs" call, enqueues one by one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import NotAvailable, Send, SendMany, System, executable
from .settings import ENV_HUEY, PROCESSES, THREADS

_TASK = {"cpu": "cpu", "io": "io", "pickup": "pickup", "enqueue": "cpu"}


class HueyPeer(System):
    """Huey with the storage ``storage`` ("sqlite" or "redis")."""

    family = "huey"
    distribution = module = "huey"
    script = "huey_consumer"
    related = ("redis",)
    single_api = "task()"

    def __init__(self, storage: str) -> None:
        self.storage = storage
        self.name = f"huey-{storage}"

    def worker_commands(self, case: str, folder: Path) -> list[list[str]]:
        if case == "async":
            raise NotAvailable("Huey refuses async def tasks")
        consumer = [str(executable("huey_consumer")), "peerbench.jobs.huey_jobs.huey"]
        if case == "io":
            return [consumer + ["-w", str(THREADS), "-k", "thread"]] * PROCESSES
        return [consumer + ["-w", str(PROCESSES), "-k", "process"]]

    def worker_env(self, case: str) -> dict[str, str]:
        return {ENV_HUEY: self.storage}

    def how(self, case: str) -> str:
        if case == "io":
            return f"{PROCESSES} consumers x {THREADS} threads"
        return f"1 consumer x {PROCESSES} processes"

    def _jobs(self) -> Any:
        from .jobs import huey_jobs

        return huey_jobs

    def sender(self, case: str, folder: Path) -> Send:
        return getattr(self._jobs(), _TASK[case])

    def bulk_sender(self, case: str, folder: Path) -> tuple[str, SendMany]:
        task = getattr(self._jobs(), _TASK[case])
        return "task.map() (one enqueue each)", task.map

    def eager(self, folder: Path) -> tuple[str, Send]:
        jobs = self._jobs()
        jobs.huey.immediate = True
        return "task() with huey.immediate", jobs.noop
