"""Job status: the handle ``.delay()`` returns, and the rows tracked jobs record.

Which jobs are tracked: ``[sqjobs] track = marked`` (the default) tracks
jobs with ``track = True`` (``@job(track=True)``, subclasses of
:class:`ResultJob`); ``track = all`` tracks every job; ``track = none``
tracks none, marked or not. An untracked job never touches the database.

A tracked job's row (see :mod:`sqjobs.store`) moves through these states:

- ``PENDING``: written by ``.delay()`` before the message is sent.
- ``STARTED``: an attempt began (``attempts`` counts them, with the worker's
  host and pid and ``started_at``).
- ``RETRY``: an attempt failed and another follows (``error`` and
  ``traceback`` say why).
- ``SUCCESS``: the job returned; ``result`` holds the return value as JSON.
- ``FAILURE``: the job itself failed for good: its last attempt raised (or
  timed out, or asked for a retry with none left), or it returned a value
  JSON cannot carry or a result over ``sqjobs.store.MAX_RESULT_BYTES`` of
  JSON (``error`` says so; the message is deleted, not retried, because
  running it again would return the same kind of value). In a worker
  the message of a job that raised on its last attempt is also moved to the
  dead-letter queue; the row says FAILURE because the job's own error is what
  it records.
- ``DEAD``: the message went to the dead-letter queue without this job
  failing: the worker that received it knows no job of that name. Only a row
  that already exists (written by a producer that tracks the job) is set to
  DEAD; nothing is created for unknown names.

SUCCESS, FAILURE and DEAD are final. A job id that already SUCCEEDED and is
delivered again is not run again (:func:`should_skip`); enqueuing it again
with the same ``job_id`` keeps its SUCCESS row, so a job id works as an
idempotency key.

The hooks here raise :class:`~sqjobs.errors.StatusStoreError` when the
database cannot be reached; the worker retries them with backoff
(:func:`retry_while_unavailable`), except
:class:`~sqjobs.errors.StatusStorePermanentError`, which stops it, and
:class:`~sqjobs.errors.StatusRowError` (the database refused one row's
values), which the worker settles that job's message for
(:func:`record_unrecordable`, :mod:`sqjobs.runner`).
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .errors import (
    JobFailedError,
    JobNotFoundError,
    JobNotTrackedError,
    ResultTooLargeError,
    StatusRowError,
    StatusStoreError,
    StatusStorePermanentError,
    UnknownJobError,
    WaitTimeoutError,
)
from .job import Job

if TYPE_CHECKING:
    from .config import Settings
    from .execution import AttemptResult
    from .message import JobMessage
    from .store import StatusRecord

logger = logging.getLogger("sqjobs.status")

T = TypeVar("T")

#: First pause after a failed status write in a worker; doubled up to the cap.
STORE_RETRY_PAUSE_S = 1.0
STORE_RETRY_PAUSE_MAX_S = 30.0
#: Longest pause between two reads of a row in :meth:`JobHandle.wait`.
WAIT_POLL_MAX_S = 0.5
#: Longest error written for a job whose status row the database refused: short, so that it fits.
STATUS_ROW_REASON_MAX_CHARS = 500


class Status(str, enum.Enum):
    """States of a tracked job."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DEAD = "DEAD"


#: States after which no attempt follows.
FINISHED = frozenset({Status.SUCCESS, Status.FAILURE, Status.DEAD})


class ResultJob(Job):
    """Base class of jobs whose status and result are recorded (the seed talk's ResultJob).

    Subclass it like :class:`~sqjobs.job.Job` and implement ``run``; its
    return value must be JSON.
    """

    abstract = True
    track = True


def current_settings() -> Settings:
    """Return the runtime's settings (reading them creates no broker)."""
    from . import runtime

    return runtime.get_settings()


def tracking_mode() -> str:
    """Return ``[sqjobs] track`` of the current settings: ``marked``, ``all`` or ``none``."""
    return str(current_settings().get("sqjobs", "track"))


def is_tracked(job_class: type[Job]) -> bool:
    """Return True if ``job_class``'s status is recorded under the current settings."""
    mode = tracking_mode()
    if mode == "none":
        return False
    return mode == "all" or bool(getattr(job_class, "track", False))


def _store() -> Any:
    from .store import get_store

    return get_store()


class JobHandle:
    """A sent job: ``id``, ``name``, ``queue``, and for tracked jobs ``status``, ``result``, ``error``.

    ``status``, ``result`` and ``error`` read the job's row while it is not
    finished (each a small query), and keep it once it is. For an untracked
    job they are None. In eager mode the handle is filled at once, and
    ``job`` is the instance that ran.
    """

    def __init__(self, job_id: str, name: str, queue: str, *, job: Job | None = None,
                 status: Status | None = None, result: Any = None, error: str | None = None) -> None:
        self.id = job_id
        self.name = name
        self.queue = queue
        #: The job instance that ran, in eager mode.
        self.job = job
        self._status = status
        self._result = result
        self._error = error
        self._record: StatusRecord | None = None

    @classmethod
    def from_record(cls, record: StatusRecord) -> JobHandle:
        """Return a handle holding ``record`` (what :func:`get_job` returns)."""
        handle = cls(record.id, record.name, record.queue)
        handle._record = record
        return handle

    # -- reading -----------------------------------------------------------------------

    def _filled(self) -> bool:
        return self._status is not None

    def _tracked(self) -> bool:
        if self._record is not None:
            return True
        from .job import registry

        try:
            return is_tracked(registry.get(self.name))
        except UnknownJobError:
            return True  # not registered here: only the database can tell

    def refresh(self) -> StatusRecord | None:
        """Read the job's row now and return it (None if untracked or without a row).

        Raises StatusStoreError if the database cannot be read.
        """
        if not self._tracked():
            return None
        record = _store().get(self.id)
        if record is not None:
            self._record = record
        return record

    @property
    def record(self) -> StatusRecord | None:
        """The job's whole row (attempts, times, host, traceback...), read unless already finished."""
        if self._record is not None and self._record.finished:
            return self._record
        return self.refresh()

    @property
    def status(self) -> Status | None:
        """The job's state, or None when nothing records it."""
        if self._filled():
            return self._status
        record = self.record
        return record.status if record is not None else None

    @property
    def result(self) -> Any:
        """The job's return value once it succeeded (None before, and for untracked jobs)."""
        if self._filled():
            return self._result
        record = self.record
        return record.result if record is not None else None

    @property
    def error(self) -> str | None:
        """Why the job (or its latest attempt) failed: ``"TypeName: message"``."""
        if self._filled():
            return self._error
        record = self.record
        return record.error if record is not None else None

    @property
    def finished(self) -> bool:
        """True once the job is SUCCESS, FAILURE or DEAD."""
        return self.status in FINISHED

    # -- waiting -----------------------------------------------------------------------

    def wait(self, timeout_s: float | None = None, *, raise_error: bool = False,
             max_poll_s: float = WAIT_POLL_MAX_S) -> Any:
        """Poll the job's row until it is finished; return its result (None if it failed).

        ``timeout_s`` None waits without a deadline. Raises WaitTimeoutError
        (a TimeoutError) at the deadline, JobNotTrackedError for a job nothing
        records, StatusStoreError if the database cannot be read and, only
        with ``raise_error=True``, JobFailedError for a FAILURE or DEAD job.
        """
        if not self._filled():
            if not self._tracked():
                raise JobNotTrackedError(f"job {self.id} {self.name} is not tracked; nothing records its status "
                                         "(use @job(track=True), ResultJob, or [sqjobs] track = all)")
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            poll_s = 0.01
            while True:
                record = self.refresh()
                if record is not None and record.finished:
                    break
                remaining_s = None if deadline is None else deadline - time.monotonic()
                if remaining_s is not None and remaining_s <= 0:
                    state = record.status.value if record is not None else "without a status row"
                    raise WaitTimeoutError(f"job {self.id} {self.name} is still {state} after {timeout_s:g} s")
                time.sleep(poll_s if remaining_s is None else min(poll_s, remaining_s))
                poll_s = min(poll_s * 2, max_poll_s)
        status = self.status
        if raise_error and status in (Status.FAILURE, Status.DEAD):
            raise JobFailedError(f"job {self.id} {self.name} ended {status.value}: {self.error}", self)
        return self.result

    def __repr__(self) -> str:
        return f"<JobHandle {self.name} {self.id} on {self.queue}>"


def get_job(job_id: str) -> JobHandle:
    """Return the handle of the tracked job ``job_id`` from its row.

    Raises JobNotFoundError if no row has that id (untracked, unknown or
    pruned), StatusStoreError if the database cannot be read.
    """
    record = _store().get(job_id)
    if record is None:
        raise JobNotFoundError(f"no status row for job {job_id} (not tracked, unknown, or pruned)")
    return JobHandle.from_record(record)


# -- hooks the broker, the worker and eager mode call -------------------------------------


def record_enqueued(job_class: type[Job], message: JobMessage, queue: str) -> None:
    """Record a tracked job as PENDING before it is sent; untracked jobs touch nothing.

    Raises StatusStoreError if the row cannot be written (the job is then not sent).
    """
    if is_tracked(job_class):
        _store().enqueued(message.id, job_class.name, queue)


def record_started(job_class: type[Job], message: JobMessage, queue: str, attempt: int) -> None:
    """Record that an attempt of a tracked job started: STARTED, one more attempt, host, pid."""
    if is_tracked(job_class):
        _store().started(message.id, job_class.name, queue)


def encode_result(result: Any, where: str = "the result") -> str:
    """Return ``result`` as JSON text of at most ``MAX_RESULT_BYTES`` (``sqjobs.store``) in UTF-8.

    Raises TypeError naming what JSON cannot carry, ResultTooLargeError
    saying the size when the JSON is larger than a status row keeps.
    """
    from .message import check_json_value
    from .store import MAX_RESULT_BYTES

    check_json_value(result, where)
    text = json.dumps(result, ensure_ascii=False, allow_nan=False)
    size = len(text.encode("utf-8"))  # check_json_value refused lone surrogates: this encodes
    if size > MAX_RESULT_BYTES:
        raise ResultTooLargeError(f"{where} is {size:,} bytes of JSON, over the {MAX_RESULT_BYTES:,} bytes a status "
                                  "row keeps; store the data elsewhere and return a reference to it")
    return text


def record_outcome(job_class: type[Job], message: JobMessage, attempt: AttemptResult,
                   final: bool) -> StatusRecord | None:
    """Record how an attempt of a tracked job ended; return what was written (None if untracked).

    ``final`` is True when no attempt follows. Success becomes SUCCESS with
    the result as JSON, or FAILURE if the result is not JSON or larger than
    a row keeps; a failure becomes RETRY, or FAILURE when final. Raises
    StatusStoreError when the row cannot be written (StatusRowError when
    the database refused its values).
    """
    if not is_tracked(job_class):
        return None
    from .execution import Outcome
    from .store import StatusRecord

    queue = attempt.job.queue_name or job_class.queue
    result_json = error = traceback = None
    result: Any = None
    if attempt.outcome is Outcome.SUCCESS:
        try:
            result_json = encode_result(attempt.result, f"the result of job {message.id} {job_class.name}")
            status, result = Status.SUCCESS, attempt.result
        except (TypeError, ResultTooLargeError) as exc:
            status, error = Status.FAILURE, f"{type(exc).__name__}: {exc}"
            logger.error("job %s %s on %s: returned a result a status row cannot keep; recorded as FAILURE: %s",
                         message.id, job_class.name, queue, exc)
    else:
        status = Status.FAILURE if final else Status.RETRY
        error = f"{type(attempt.error).__name__}: {attempt.error}" if attempt.error is not None else "unknown error"
        traceback = attempt.traceback
    _store().ended(message.id, job_class.name, queue, status, result_json, error, traceback)
    return StatusRecord(message.id, job_class.name, queue, status, result, error, traceback)


def should_skip(job_class: type[Job], message: JobMessage) -> bool:
    """Return True if a tracked job with this id already succeeded (a duplicate delivery)."""
    if not is_tracked(job_class):
        return False
    return bool(_store().status_of(message.id) is Status.SUCCESS)


def record_dead(message: JobMessage, queue: str, reason: str) -> None:
    """Set the existing, unfinished row of a message a worker dead-letters unrun to DEAD (best effort).

    Used for names the worker does not know, so it cannot tell whether they
    are tracked: it only updates a row a producer wrote, never creates one,
    and does nothing under ``track = none``. Database errors are logged, not
    raised: the message is kept in the dead-letter queue either way.
    """
    if tracking_mode() == "none":
        return
    try:
        if _store().mark_dead(message.id, reason):
            logger.info("job %s %s on %s: recorded as DEAD", message.id, message.name, queue)
    except StatusStoreError as exc:
        logger.warning("job %s %s on %s: cannot record it as DEAD: %s", message.id, message.name, queue, exc)


def record_unrecordable(name: str, message: JobMessage, queue: str, error: StatusRowError) -> bool:
    """Record as FAILURE a job whose status row the database refused; return True if that could be written.

    The row gets only a short error naming the refusal (which fits any
    column); if even that is refused, or the database fails now, it is
    logged and False returned: the caller settles the message without a row.
    """
    from .store import get_store

    reason = f"StatusRowError: its status could not be recorded: {error}"[:STATUS_ROW_REASON_MAX_CHARS]
    try:
        get_store().ended(message.id, name, queue, Status.FAILURE, None, reason, None)
    except StatusStoreError as exc:
        logger.warning("job %s %s on %s: cannot record it as FAILURE either: %s", message.id, name, queue, exc)
        return False
    return True


def retry_while_unavailable(action: Callable[[], T], what: str, stop: threading.Event) -> T:
    """Return ``action()``; while it raises StatusStoreError, log it and try again with backoff.

    StatusStorePermanentError (a bad URL, refused credentials, a missing
    database...) and StatusRowError (the database refused one row's values)
    are raised at once: no retry fixes them.

    The first retry comes at once (a connection the server dropped while
    idle is simply opened again, with a warning); then the pause starts at
    STORE_RETRY_PAUSE_S and doubles up to STORE_RETRY_PAUSE_MAX_S, each
    failure logged as an error. Raises the last StatusStoreError once
    ``stop`` is set (the wait is cut short by it).
    """
    pause_s = 0.0
    while True:
        try:
            return action()
        except (StatusStorePermanentError, StatusRowError):
            raise  # no retry fixes it
        except StatusStoreError as exc:
            if stop.is_set():
                raise
            logger.log(logging.WARNING if pause_s == 0 else logging.ERROR,
                       "%s: status database unavailable, trying again in %.1f s: %s", what, pause_s, exc)
            if stop.wait(pause_s):
                raise
            pause_s = min(max(pause_s * 2, STORE_RETRY_PAUSE_S), STORE_RETRY_PAUSE_MAX_S)
