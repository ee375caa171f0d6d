"""Prometheus metrics of the jobs, recorded by a middleware in every process that runs or moves them.

What is recorded (label values are job names and queue names, never ids or
arguments, so the number of series stays bounded):

- ``sqjobs_jobs_total{job, queue, outcome}``: each settled attempt, once.
  ``success``; ``retry`` (it failed with attempts left); ``failure`` (its
  last attempt failed: the message goes to the dead-letter queue);
  ``dead`` (a message moved to the dead-letter queue without a failed
  attempt behind it: a body that is not a job, a job name no worker knows,
  a middleware's refusal). The four add up to the settled messages. A
  body that is not a job message has no job name and no queue known to the
  middleware: it counts with ``job=""`` and ``queue=""``.
- ``sqjobs_job_duration_seconds{job, queue}``: a histogram of attempt durations.
- ``sqjobs_jobs_in_progress{queue}``: attempts running now.
- ``sqjobs_workers{queues}``: worker processes running now, and
  ``sqjobs_worker_starts_total{queues}`` / ``sqjobs_worker_stops_total{queues}``.
- ``sqjobs_schedule_sent_total{job}``: periodic runs a beater sent.

Many processes record at once (the daemon's workers, each worker's job
process, the beaters), so they use prometheus_client's multiprocess mode:
each process writes its own files in one folder, and a scrape
(:mod:`sqjobs.web.metrics`) adds them up. The folder is ``[metrics] dir``,
or ``<run_dir>/metrics`` under sqjobsd (which passes ``--metrics-dir``); a
worker started by hand without either records nothing, so that a process
nobody scrapes pays nothing. The counters and histograms of processes that
stopped are merged into one file per kind, and their live gauges dropped,
when a process starts recording and at every scrape
(:mod:`sqjobs.middleware.metrics_files`): the folder stays bounded.

prometheus_client chooses multiprocess mode from an environment variable
read when it is first imported; sqjobs chooses it from its configuration,
so :func:`start_recording` sets the variable and the value class itself,
before it makes its first metric.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import defaults
from .base import Middleware
from .metrics_files import merge_gone_if_free

if TYPE_CHECKING:
    from ..job import Job
    from ..message import JobMessage

logger = logging.getLogger("sqjobs.metrics")

#: The variable prometheus_client reads its multiprocess folder from.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Outcomes of ``sqjobs_jobs_total``.
OUTCOMES = ("success", "retry", "failure", "dead")
#: Beginnings of the dead-letter reasons of messages whose last attempt failed (counted as ``failure``).
FAILED_ATTEMPT_REASONS = ("failed after ", "the worker died while running it")


class Recorder:
    """The metrics of this process, written to files in ``directory``."""

    def __init__(self, directory: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        merge_gone_if_free(directory)  # what the processes before this one left (a restarted worker's predecessor)
        os.environ[MULTIPROC_ENV] = directory
        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()
        # A registry of its own: the values live in the files, the scrape reads those.
        registry = CollectorRegistry(auto_describe=False)
        self.jobs = Counter("sqjobs_jobs", "Settled job attempts by outcome: success, retry, failure, dead.",
                            ["job", "queue", "outcome"], registry=registry)
        self.duration = Histogram("sqjobs_job_duration_seconds", "Duration of job attempts in seconds.",
                                  ["job", "queue"], buckets=defaults.DURATION_BUCKETS_S, registry=registry)
        self.in_progress = Gauge("sqjobs_jobs_in_progress", "Job attempts running now.", ["queue"],
                                 multiprocess_mode="livesum", registry=registry)
        self.workers = Gauge("sqjobs_workers", "Worker processes running now.", ["queues"],
                             multiprocess_mode="livesum", registry=registry)
        self.worker_starts = Counter("sqjobs_worker_starts", "Worker processes started.", ["queues"],
                                     registry=registry)
        self.worker_stops = Counter("sqjobs_worker_stops", "Worker processes stopped.", ["queues"],
                                    registry=registry)
        self.schedule_sent = Counter("sqjobs_schedule_sent", "Periodic runs sent by beaters.", ["job"],
                                     registry=registry)


_recorder: Recorder | None = None
_recorder_lock = threading.Lock()


def start_recording(directory: str) -> Recorder:
    """Record this process's metrics in ``directory`` from now on; return the recorder (made once)."""
    global _recorder
    with _recorder_lock:
        if _recorder is None:
            _recorder = Recorder(os.path.abspath(directory))
        elif _recorder.directory != os.path.abspath(directory):
            logger.warning("metrics are recorded in %s already; %s is not used", _recorder.directory, directory)
        return _recorder


def recorder() -> Recorder | None:
    """The recorder of this process, or None when it records no metrics."""
    return _recorder


def schedule_sent(job_name: str) -> None:
    """Count one periodic run of ``job_name`` sent (nothing when this process records no metrics)."""
    if _recorder is not None:
        _recorder.schedule_sent.labels(job_name).inc()


class MetricsMiddleware(Middleware):
    """Records the job metrics in ``directory`` (see the module docstring); sqjobs adds it last."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        #: Attempts running in this process: message id -> (queue, monotonic start).
        self._running: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _recorder(self) -> Recorder:
        return start_recording(self.directory)

    def before_run(self, job: Job, message: JobMessage) -> None:
        """Count the attempt as in progress and start its clock."""
        queue = getattr(job, "queue_name", None) or message.queue or job.queue
        with self._lock:
            self._running[message.id] = (queue, time.monotonic())
        self._recorder().in_progress.labels(queue).inc()

    def after_run(self, job: Job, message: JobMessage, result: Any = None, error: BaseException | None = None) -> None:
        """Count the attempt's outcome and duration (an attempt whose process died has no duration)."""
        recorded = self._recorder()
        with self._lock:
            started = self._running.pop(message.id, None)
        queue = getattr(job, "queue_name", None) or message.queue or job.queue
        if started is not None:
            recorded.in_progress.labels(started[0]).dec()
            recorded.duration.labels(job.name, queue).observe(time.monotonic() - started[1])
        if error is None:
            outcome = "success"
        else:
            outcome = "failure" if getattr(job, "last_attempt", True) else "retry"
        recorded.jobs.labels(job.name, queue, outcome).inc()

    def after_dead_letter(self, message: JobMessage | str, reason: str) -> None:
        """Count a message dead-lettered without a failed attempt behind it as ``dead``."""
        if reason.startswith(FAILED_ATTEMPT_REASONS):
            return  # counted as failure when its last attempt ended
        if isinstance(message, str):
            name, queue = "", ""
        else:
            name, queue = message.name, message.queue or ""
        self._recorder().jobs.labels(name, queue, "dead").inc()

    def worker_started(self, worker: Any) -> None:
        """Count the worker as running."""
        queues = ",".join(worker.queues)
        recorded = self._recorder()
        recorded.workers.labels(queues).inc()
        recorded.worker_starts.labels(queues).inc()

    def worker_stopped(self, worker: Any) -> None:
        """Count the worker as stopped (its files stay until the next scrape or start merges them)."""
        queues = ",".join(worker.queues)
        recorded = self._recorder()
        recorded.workers.labels(queues).dec()
        recorded.worker_stops.labels(queues).inc()
