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
  ``last_death``;
- ``recent_deaths``: when the processes that wrote the same file before this
  one died in the last ten minutes (so ``sqjobsd status`` sees a worker that
  keeps dying), and ``stopped_at``, written last by a worker that stopped as
  asked (SIGTERM, ``--max-jobs``, ``--burst``).

A process that left the file without ``stopped_at`` died: killed, crashed, or
ended by an error (a job module that does not import, a broker that refuses
its credentials). Its successor counts that death once, at the time of the
file's last write. Stops that were asked for (``sqjobsd stop``, ``reload``,
``--max-jobs``) are not deaths. :func:`record_start` writes the file before
the job modules are imported, so that a worker failing at import is counted
too.

The thread writes a file and nothing else (no logging, no broker), so it
cannot disturb the worker's job process when the worker forks one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any

from ..files import atomic_write
from ..middleware.base import Middleware

logger = logging.getLogger("sqjobs.healthfile")

#: How long starts and deaths are remembered.
MEMORY_S = 600.0
#: Seconds between two writes.
INTERVAL_S = 1.0


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _times(values: Any) -> list[float]:
    return [float(t) for t in values if isinstance(t, (int, float))] if isinstance(values, list) else []


def earlier_deaths(data: dict[str, Any], pid: int, now: float) -> list[float]:
    """The deaths of the processes before ``pid`` that the health file ``data`` tells of, within MEMORY_S of ``now``.

    Those it carries (``recent_deaths``), and the death of the process that
    wrote it, unless that process is ``pid`` itself or it stopped as asked.
    """
    deaths = _times(data.get("recent_deaths"))
    writer = data.get("pid")
    if isinstance(writer, int) and writer != pid and not data.get("stopped_at"):
        died_at = data.get("alive_at") or data.get("started_at")
        deaths.append(float(died_at) if isinstance(died_at, (int, float)) else now)
    return sorted(t for t in deaths if now - t < MEMORY_S)


def record_start(path: str) -> None:
    """Write the health file of a worker that is starting (before its job modules are imported).

    The deaths of the processes before it are carried over; a failure to write
    is left to :class:`HealthFile` to report.
    """
    now = time.time()
    pid = os.getpid()
    with contextlib.suppress(OSError):
        atomic_write(path, json.dumps({"pid": pid, "started_at": now, "alive_at": now,
                                       "recent_deaths": earlier_deaths(_read(path), pid, now)}))


class HealthFile(Middleware):
    """Writes the health file of one worker at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._earlier_deaths = earlier_deaths(_read(path), os.getpid(), time.time())
        self._failed_once = False

    def snapshot(self, worker: Any) -> dict[str, Any]:
        """What the file says about ``worker`` now."""
        now = time.time()
        process = worker.job_process
        return {"pid": os.getpid(), "queues": list(worker.queues), "started_at": worker.started_at,
                "last_poll": worker.last_poll_at, "alive_at": now, "last_received": worker.last_received_at,
                "last_job": worker.last_job, "jobs_done": worker.jobs_done,
                "recent_deaths": [t for t in self._earlier_deaths if now - t < MEMORY_S],
                "job_process_pid": process.pid if process is not None else None,
                "job_process_deaths": [t for t in worker.crashes if now - t < MEMORY_S],
                "last_death": worker.last_crash}

    def write(self, worker: Any, stopped: bool = False) -> None:
        """Write the file now (``stopped``: the last time, by a worker that stopped as asked); a failure is
        logged once, not at every second."""
        snapshot = self.snapshot(worker)
        if stopped:
            snapshot["stopped_at"] = snapshot["alive_at"]
        try:
            atomic_write(self.path, json.dumps(snapshot))
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
        """Stop the thread and write the file a last time, saying whether the worker stopped as asked."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        asked = getattr(worker, "stopping", False) or getattr(worker, "burst", False)
        self.write(worker, stopped=bool(asked) and getattr(worker, "fatal_error", None) is None)
