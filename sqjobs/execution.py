"""Running one job attempt: hooks in order, a hard timeout, and the outcome.

Kept apart from the worker so that eager mode, the worker and tests run jobs
the same way. Retries and dead-lettering are the worker's business; this
module only says what happened.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import random
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Iterator

from . import defaults
from .errors import JobTimeoutError, Retry
from .job import Job
from .message import JobMessage

logger = logging.getLogger("sqjobs.execution")


class Outcome(enum.Enum):
    """How one attempt ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    RETRY = "retry"  # the job raised Retry


@dataclass
class AttemptResult:
    """What one attempt produced."""

    outcome: Outcome
    job: Job
    result: Any = None
    error: BaseException | None = None
    traceback: str | None = None
    duration_s: float = 0.0
    #: Delay the job asked for with ``raise Retry(delay=...)``.
    requested_delay_s: float | None = None


def backoff_delay(job_class: type[Job], attempt: int, rng: random.Random | None = None) -> float:
    """Return the delay before attempt ``attempt + 1``: ``retry_delay * 2**(attempt-1)``, capped, plus jitter.

    The jitter adds at most ``RETRY_JITTER`` of the delay, so each delay is
    still longer than the one before until the cap.
    """
    base = float(job_class.retry_delay) * (2 ** max(attempt - 1, 0))
    capped = min(base, defaults.MAX_RETRY_DELAY_S)
    return capped * (1 + defaults.RETRY_JITTER * (rng or random).random())


@contextlib.contextmanager
def hard_timeout(seconds: float | None, what: str) -> Iterator[None]:
    """Raise JobTimeoutError in the block after ``seconds`` (main thread only; elsewhere no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise JobTimeoutError(f"{what} ran longer than its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _call_hook(job: Job, hook: str, *args: Any) -> None:
    """Call a success/failure/retry hook; its own errors are logged, never raised."""
    try:
        getattr(job, hook)(*args)
    except Exception:
        logger.exception("job %s %s: %s hook raised", job.id, job.name, hook)


def run_attempt(job_class: type[Job], message: JobMessage, queue: str, attempt: int,
                last_attempt: bool) -> AttemptResult:
    """Run one attempt of ``message`` as ``job_class``: set_up, run, tear_down, then a hook.

    ``tear_down`` runs even when ``run`` raised. The hard timeout covers
    set_up, run and tear_down. ``on_success`` follows success; after a failure
    ``on_retry`` if attempts are left, else ``on_failure``.
    """
    job = job_class()
    job.id, job.queue_name, job.attempt = message.id, queue, attempt
    job.scheduled_for = message.extra.get("scheduled_for")
    started = time.monotonic()
    try:
        with hard_timeout(job_class.timeout, f"job {message.id} {job_class.name}"):
            job.set_up(*message.args, **message.kwargs)
            try:
                result = job.run(*message.args, **message.kwargs)
            finally:
                job.tear_down(*message.args, **message.kwargs)
    except Retry as exc:
        _call_hook(job, "on_failure" if last_attempt else "on_retry", exc)
        return AttemptResult(Outcome.RETRY, job, error=exc, traceback=traceback.format_exc(),
                             duration_s=time.monotonic() - started, requested_delay_s=exc.delay)
    except Exception as exc:
        _call_hook(job, "on_failure" if last_attempt else "on_retry", exc)
        return AttemptResult(Outcome.FAILURE, job, error=exc, traceback=traceback.format_exc(),
                             duration_s=time.monotonic() - started)
    job.result = result
    _call_hook(job, "on_success", result)
    return AttemptResult(Outcome.SUCCESS, job, result=result, duration_s=time.monotonic() - started)
