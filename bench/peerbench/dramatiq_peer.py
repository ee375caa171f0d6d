"""Dramatiq on Redis: ``dramatiq peerbench.jobs.dramatiq_jobs --processes 2 --threads 8``.

Two rows: ``dramatiq`` with Dramatiq's defaults (8 threads a process, which
is also the I/O case's ``--threads 8``; prefetch 2 x threads), and
``dramatiq-p64``, the same with a prefetch of 64 (Dramatiq reads it from the
``dramatiq_queue_prefetch`` environment variable), the reference of the CPU
case. Dramatiq has no eager mode and no bulk send: its "many jobs" API,
``group(...).run()``, sends them one by one, and is what the bulk row measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Send, SendMany, System, executable
from .settings import PROCESSES, THREADS

_ACTOR = {"cpu": "cpu", "io": "io", "async": "aio", "pickup": "pickup", "enqueue": "cpu"}


class DramatiqPeer(System):
    """Dramatiq with its default settings, or with a prefetch of ``prefetch``."""

    family = "dramatiq"
    distribution = module = script = "dramatiq"
    related = ("redis",)
    single_api = "actor.send()"

    def __init__(self, prefetch: int | None = None) -> None:
        self.prefetch = prefetch
        self.name = f"dramatiq-p{prefetch}" if prefetch else "dramatiq"
        if prefetch:
            self.cases = ("cpu",)

    def worker_commands(self, case: str, folder: Path) -> list[list[str]]:
        return [[str(executable("dramatiq")), "peerbench.jobs.dramatiq_jobs",
                 "--processes", str(PROCESSES), "--threads", str(THREADS)]]

    def worker_env(self, case: str) -> dict[str, str]:
        return {"dramatiq_queue_prefetch": str(self.prefetch)} if self.prefetch else {}

    def how(self, case: str) -> str:
        prefetch = f", prefetch {self.prefetch}" if self.prefetch else ""
        asyncio = ", AsyncIO middleware" if case == "async" else ""
        return f"{PROCESSES} processes x {THREADS} threads{prefetch}{asyncio}"

    def _jobs(self) -> Any:
        from .jobs import dramatiq_jobs

        return dramatiq_jobs

    def sender(self, case: str, folder: Path) -> Send:
        return getattr(self._jobs(), _ACTOR[case]).send

    def bulk_sender(self, case: str, folder: Path) -> tuple[str, SendMany]:
        import dramatiq

        actor = getattr(self._jobs(), _ACTOR[case])
        return ("group().run() (one send each)",
                lambda indexes: dramatiq.group(actor.message(index) for index in indexes).run())
