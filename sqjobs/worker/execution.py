"""Running one job attempt: hooks in order, a hard timeout, and the outcome.

Kept apart from the worker so that eager mode, the worker and tests run jobs
the same way. Retries and dead-lettering are the worker's business; this
module only says what happened.
"""

from __future__ import annotations

import enum
import inspect
import logging
import random
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .. import defaults, logs
from ..backoff import exponential
from ..errors import JobTimeoutError, Retry
from . import awaiting
from .timelimit import TimeLimit

if TYPE_CHECKING:
    from ..job import Job
    from ..message import JobMessage

logger = logging.getLogger("sqjobs.execution")


class Outcome(enum.Enum):
    """How one attempt ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    RETRY = "retry"  # the job raised Retry
    SKIPPED = "skipped"  # a middleware settled it without running it (SkipMessage)
    REJECTED = "rejected"  # a middleware refused it (RejectMessage): to the dead-letter queue, never run
    ABANDONED = "abandoned"  # it ended after its deadline's owner settled it as timed out: nothing more is done


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
    #: Why a middleware skipped or rejected the message (SKIPPED, REJECTED).
    reason: str = ""


def backoff_delay(job_class: type[Job], attempt: int, rng: random.Random | None = None) -> float:
    """Return the delay before attempt ``attempt + 1``: ``retry_delay * 2**(attempt-1)``, capped, plus jitter.

    The jitter adds at most ``RETRY_JITTER`` of the delay, so each delay is
    still longer than the one before until the cap.
    """
    return exponential(float(job_class.retry_delay), attempt - 1, defaults.MAX_RETRY_DELAY_S, defaults.RETRY_JITTER,
                       rng)


#: The hooks a job class may override; the base class's are no-ops, not called.
HOOKS = ("set_up", "tear_down", "on_success", "on_retry", "on_failure")
#: Hook name -> the base class's no-op (:func:`base_hook` marks them; ``sqjobs.job`` imports this module,
#: never the reverse).
_BASE_HOOKS: dict[str, Callable[..., Any]] = {}
#: The hooks each job class overrides, worked out on its first attempt (a class gets its hooks when it is made).
_OVERRIDDEN: dict[type[Job], frozenset[str]] = {}

F = TypeVar("F", bound=Callable[..., Any])


def base_hook(function: F) -> F:
    """Mark ``function`` as the base class's no-op hook of its name: a class that keeps it is not called for it."""
    _BASE_HOOKS[function.__name__] = function
    return function


def overridden_hooks(job_class: type[Job]) -> frozenset[str]:
    """The names of the HOOKS ``job_class`` has its own of (set_up, on_success...), not the base class's no-op."""
    known = _OVERRIDDEN.get(job_class)
    if known is None:
        known = _OVERRIDDEN[job_class] = frozenset(
            hook for hook in HOOKS if getattr(job_class, hook) is not _BASE_HOOKS.get(hook))
    return known


def call_hook(job: Job, hook: str, *args: Any) -> None:
    """Call a success/failure/retry hook (awaited if async); its own errors are logged, never raised."""
    if hook not in overridden_hooks(type(job)):
        return  # the base class's no-op: nothing to call
    try:
        awaiting.call(getattr(job, hook), *args)
    except BaseException:  # a hook's SystemExit must not end the worker either
        logger.exception("job %s %s: %s hook raised", job.id, job.name, hook)


def _call(function: Any, args: list[Any], kwargs: dict[str, Any], limit: TimeLimit | None) -> Any:
    """Call ``function``; if it returns an awaitable, await it within what is left of ``limit`` (None: none)."""
    value = function(*args, **kwargs)
    if value is not None and inspect.isawaitable(value):
        if limit is None:
            value = awaiting.run_awaitable(value)
        else:
            value = awaiting.run_awaitable(value, limit.remaining_s(), limit.message)
    return value


def _attempt(job: Job, message: JobMessage, limit: TimeLimit | None) -> Any:
    """set_up, run and tear_down (each awaited if it returns an awaitable); return run's value."""
    args, kwargs = message.args, message.kwargs
    hooks = overridden_hooks(type(job))
    if "set_up" in hooks:
        _call(job.set_up, args, kwargs, limit)
    try:
        return _call(job.run, args, kwargs, limit)
    finally:
        if "tear_down" in hooks:
            _call(job.tear_down, args, kwargs, limit)


def new_job(job_class: type[Job], message: JobMessage, queue: str, attempt: int, last_attempt: bool = False) -> Job:
    """An instance of ``job_class`` for one attempt of ``message``: ``id``, ``queue_name``, ``attempt`` set."""
    job = job_class()
    job.id, job.queue_name, job.attempt, job.last_attempt = message.id, queue, attempt, last_attempt
    job.scheduled_for = message.extra.get("scheduled_for")
    return job


def run_attempt(job_class: type[Job], message: JobMessage, queue: str, attempt: int,
                last_attempt: bool, job: Job | None = None,
                claim_end: Callable[[], bool] | None = None) -> AttemptResult:
    """Run one attempt of ``message`` as ``job_class``: set_up, run, tear_down, then a hook.

    ``tear_down`` runs even when ``run`` raised. The job's ``timeout`` covers
    set_up, run and tear_down, and cannot be caught by the job
    (:mod:`sqjobs.worker.timelimit`): an attempt that outlived it fails with
    JobTimeoutError whatever it returned. ``async def`` jobs and hooks are
    awaited. Anything the job raises is the attempt's failure, ``SystemExit``
    and ``KeyboardInterrupt`` included. ``on_success`` follows success; after
    a failure ``on_retry`` if attempts are left, else ``on_failure``.

    ``claim_end`` (a job with a timeout, in a job process) is called once the
    job ended, before any hook: False means the attempt was settled as timed
    out already (it ran past its deadline and a grace, see
    :mod:`sqjobs.worker.tokens`); its outcome is then ABANDONED and no hook runs.
    """
    token = logs.current_job.set(message.id)
    try:
        return _run_attempt(job or new_job(job_class, message, queue, attempt, last_attempt), job_class, message,
                            last_attempt, claim_end)
    finally:
        logs.current_job.reset(token)


def _run_attempt(job: Job, job_class: type[Job], message: JobMessage, last_attempt: bool,
                 claim_end: Callable[[], bool] | None) -> AttemptResult:
    started = time.monotonic()
    timeout = job_class.timeout
    # No limit to keep: no TimeLimit at all (most jobs; an attempt's every step counts, see sqjobs.runner).
    limit = TimeLimit(timeout, f"job {message.id} {job_class.name}") if timeout and timeout > 0 else None
    error: BaseException | None = None
    trace: str | None = None
    result: Any = None
    try:
        if limit is None:
            result = _attempt(job, message, None)
        else:
            with limit:
                result = _attempt(job, message, limit)
    except BaseException as exc:  # the job's failure, whatever it raised
        error, trace = exc, traceback.format_exc()
    duration_s = time.monotonic() - started
    if limit is not None and claim_end is not None and not claim_end():
        return AttemptResult(Outcome.ABANDONED, job, error=error, duration_s=duration_s)
    if limit is not None and limit.expired:
        timeout_error = JobTimeoutError(limit.message)
        call_hook(job, "on_failure" if last_attempt else "on_retry", timeout_error)
        return AttemptResult(Outcome.FAILURE, job, error=timeout_error,
                             traceback=trace or f"{type(timeout_error).__name__}: {timeout_error}\n",
                             duration_s=duration_s)
    if isinstance(error, Retry):
        call_hook(job, "on_failure" if last_attempt else "on_retry", error)
        return AttemptResult(Outcome.RETRY, job, error=error, traceback=trace, duration_s=duration_s,
                             requested_delay_s=error.delay)
    if error is not None:
        call_hook(job, "on_failure" if last_attempt else "on_retry", error)
        return AttemptResult(Outcome.FAILURE, job, error=error, traceback=trace, duration_s=duration_s)
    job.result = result
    call_hook(job, "on_success", result)
    return AttemptResult(Outcome.SUCCESS, job, result=result, duration_s=duration_s)
