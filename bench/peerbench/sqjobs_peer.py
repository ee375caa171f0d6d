"""sqjobs: ``sqjobs worker -c CONF default``, twice, on a fresh embedded broker file.

Options the installed sqjobs may not have yet are detected, never assumed:
``--threads`` (the I/O case; without it that row says "n/a (no --threads
yet)") from ``sqjobs worker --help``, and ``delay_many`` (the bulk enqueue;
without it ``broker.enqueue_many`` is used, and the row says so).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

from .base import NotAvailable, Send, SendMany, System, executable
from .settings import BENCH_DIR, PROCESSES, THREADS

#: Extra worker options per case. ``async def`` jobs share the job process's event loop up to
#: the same limit as threads (``--threads``; the default is one job at a time, as RQ and Huey do).
CASE_OPTIONS: dict[str, list[str]] = {"io": ["--threads", str(THREADS)], "async": ["--threads", str(THREADS)]}


@functools.cache
def worker_help() -> str:
    """What ``sqjobs worker --help`` prints (read once)."""
    command = executable("sqjobs")
    if command is None:
        return ""
    return subprocess.run([command, "worker", "--help"], capture_output=True, text=True, timeout=60).stdout


def has_threads_option() -> bool:
    """True when this sqjobs' worker takes ``--threads``."""
    return "--threads" in worker_help()


def config_path(folder: Path) -> Path:
    """The run's config file."""
    return folder / "sqjobs.conf"


class SqjobsPeer(System):
    """sqjobs on the embedded broker, default settings."""

    name = family = "sqjobs"
    distribution = module = script = "sqjobs"
    cases = System.cases + ("sqs",)
    single_api = "fn.delay()"

    def prepare(self, folder: Path) -> None:
        config_path(folder).write_text(
            "[sqjobs]\n"
            f"broker = sqlite:///{folder / 'queue.db'}\n"
            f"database = sqlite:///{folder / 'status.db'}\n"
            "jobs = peerbench.jobs.sqjobs_jobs\n"
            f"path = {BENCH_DIR}\n")

    def worker_commands(self, case: str, folder: Path) -> list[list[str]]:
        options = CASE_OPTIONS.get(case, [])
        if "--threads" in options and not has_threads_option():
            raise NotAvailable("no --threads yet")
        command = [str(executable("sqjobs")), "worker", "-c", str(config_path(folder)), "default", *options]
        return [command] * PROCESSES

    def how(self, case: str) -> str:
        options = " ".join(CASE_OPTIONS.get(case, []))
        return f"{PROCESSES} x sqjobs worker {options}".rstrip()

    def _jobs(self, folder: Path) -> Any:
        import sqjobs

        from .jobs import sqjobs_jobs

        sqjobs.configure(str(config_path(folder)))
        return sqjobs_jobs

    def sender(self, case: str, folder: Path) -> Send:
        return getattr(self._jobs(folder), _JOB[case]).delay

    def bulk_sender(self, case: str, folder: Path) -> tuple[str, SendMany]:
        fn = getattr(self._jobs(folder), _JOB[case])
        if hasattr(fn, "delay_many"):
            # Each item is the positional arguments of one call, as the issue describes the API.
            return "fn.delay_many()", lambda indexes: fn.delay_many((index,) for index in indexes)
        import sqjobs

        broker = sqjobs.get_broker()
        return ("broker.enqueue_many() (no delay_many yet)",
                lambda indexes: broker.enqueue_many(fn.job_class, (((index,), {}) for index in indexes)))

    def eager(self, folder: Path) -> tuple[str, Send]:
        import sqjobs

        jobs = self._jobs(folder)
        sqjobs.configure(broker="eager://")
        return "fn.delay() on eager://", jobs.noop.delay


#: The job each case sends.
_JOB = {"cpu": "cpu", "io": "io", "async": "aio", "pickup": "pickup", "enqueue": "cpu"}
