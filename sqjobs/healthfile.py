"""The worker's health file: middleware that writes, once a second, what the daemon needs to judge a worker.

``sqjobs worker --status-file PATH`` (sqjobsd passes one per process) installs
:class:`HealthFile`. From ``worker_started`` to ``worker_stopped`` a thread
writes PATH atomically every second:

- ``pid``, ``queues``, ``started_at``;
- ``last_poll``: when the worker last asked the broker for messages (a job
  that runs long stops the polls; that is how the daemon tells a stall);
- ``alive_at``: when this file was written (also while a job runs);
- ``last_received``, ``last_job``, ``jobs_done``;
- ``job_process_pid``, ``job_process_deaths`` (recent Unix times) and
  ``last_death``; ``recent_starts``: the start times of this process and of
  the ones that wrote the same file before it in the last ten minutes (so
  ``sqjobsd status`` sees a worker that supervisord keeps restarting).

The thread writes a file and nothing else (no logging, no broker), so it
cannot disturb the worker's job process when the worker forks one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from .files import atomic_write
from .middleware import Middleware

logger = logging.getLogger("sqjobs.healthfile")

#: How long starts and deaths are remembered.
MEMORY_S = 600.0
#: Seconds between two writes.
INTERVAL_S = 1.0


class HealthFile(Middleware):
    """Writes the health file of one worker at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._earlier_starts = self._read_earlier_starts()
        self._failed_once = False

    def _read_earlier_starts(self) -> list[float]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            starts = [float(t) for t in data.get("recent_starts", [])]
        except (OSError, ValueError, TypeError, AttributeError):
            return []
        now = time.time()
        return [t for t in starts if now - t < MEMORY_S]

    def snapshot(self, worker: Any) -> dict[str, Any]:
        """What the file says about ``worker`` now."""
        now = time.time()
        process = worker.job_process
        return {"pid": os.getpid(), "queues": list(worker.queues), "started_at": worker.started_at,
                "last_poll": worker.last_poll_at, "alive_at": now, "last_received": worker.last_received_at,
                "last_job": worker.last_job, "jobs_done": worker.jobs_done,
                "recent_starts": self._earlier_starts + [worker.started_at],
                "job_process_pid": process.pid if process is not None else None,
                "job_process_deaths": [t for t in worker.crashes if now - t < MEMORY_S],
                "last_death": worker.last_crash}

    def write(self, worker: Any) -> None:
        """Write the file now; a failure is logged once, not at every second."""
        try:
            atomic_write(self.path, json.dumps(self.snapshot(worker)))
            self._failed_once = False
        except OSError as exc:
            if not self._failed_once:
                logger.error("cannot write the worker status file %s: %s", self.path, exc)
            self._failed_once = True

    def worker_started(self, worker: Any) -> None:
        """Write the file, then keep writing it every second in a thread."""
        self.write(worker)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(worker,), name="sqjobs-health-file", daemon=True)
        self._thread.start()

    def _loop(self, worker: Any) -> None:
        while not self._stop.wait(INTERVAL_S):
            self.write(worker)

    def worker_stopped(self, worker: Any) -> None:
        """Stop the thread and write the file a last time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.write(worker)
