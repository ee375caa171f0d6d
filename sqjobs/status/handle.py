"""Job status, read: the handle ``.delay()`` and ``get_job(id)`` return.

A tracked job's status row (see :mod:`sqjobs.middleware.tracking` for what writes it
and when, :mod:`sqjobs.status.store` for the table) is read through a
:class:`JobHandle`: ``status``, ``result``, ``error``, ``wait()``. Untracked
jobs have none: their handle says None.

Also here, for the writers: :func:`encode_result` (a result as a row keeps
it) and :func:`retry_while_unavailable` (a status write retried with backoff
while the database is unreachable; never a row error nor a permanent one).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Generic, Literal, TypeVar, overload

from ..backoff import Backoff
from ..defaults import STORE_RETRY_PAUSE_MAX_S, STORE_RETRY_PAUSE_S
from ..errors import (
    JobFailedError,
    JobNotCancellableError,
    JobNotTrackedError,
    ResultTooLargeError,
    StatusRowError,
    StatusStoreError,
    StatusStorePermanentError,
    WaitTimeoutError,
)
from ..message import check_json_value
from ..middleware.cancellation import Cancellation, cancel_job
from .states import FINISHED, Status
from .store import MAX_RESULT_BYTES, StatusRecord

if TYPE_CHECKING:
    from ..app import App
    from ..job import Job

__all__ = ["FINISHED", "JobHandle", "Status", "encode_result", "outcome_error", "retry_while_unavailable"]

logger = logging.getLogger("sqjobs.status")

T = TypeVar("T")
#: A job's result type: what its function (or ``run``) returns.
R = TypeVar("R")

#: Longest pause between two reads of a row in :meth:`JobHandle.wait`.
WAIT_POLL_MAX_S = 0.5


class JobHandle(Generic[R]):
    """A sent job: ``id``, ``name``, ``queue``, and for tracked jobs ``status``, ``result``, ``error``.

    Generic in the job's result type ``R`` (for type checkers only: the
    class is never subscripted at run time): ``add.delay(1, 2)`` is a
    ``JobHandle[int]`` when ``add`` returns an int, so ``result`` is
    ``int | None`` and ``wait(raise_error=True)`` an ``int``. A tracked job's
    result comes back through JSON: a tuple returns as a list.

    ``status``, ``result`` and ``error`` read the job's row while it is not
    finished (each a small query), and keep it once it is. For an untracked
    job they are None. In eager mode the handle is filled at once, and
    ``job`` is the instance that ran. ``cancellable`` says whether the
    message was sent cancellable (None: not known, e.g. the handle of the job
    holding a unique key).
    """

    def __init__(self, job_id: str, name: str, queue: str, *, app: App, job: Job | None = None,
                 status: Status | None = None, result: Any = None, error: str | None = None,
                 cancellable: bool | None = None) -> None:
        #: The application whose status database holds the job's row.
        self.app = app
        self.id = job_id
        self.name = name
        self.queue = queue
        #: The job instance that ran, in eager mode.
        self.job = job
        #: Whether the message was sent cancellable (None: not known here).
        self.cancellable = cancellable
        self._status = status
        self._result: R | None = result
        self._error = error
        self._record: StatusRecord | None = None

    @classmethod
    def from_record(cls, record: StatusRecord, app: App) -> JobHandle[Any]:
        """Return a handle holding ``record`` (what :func:`get_job` returns)."""
        handle = cls(record.id, record.name, record.queue, app=app)
        handle._record = record
        return handle

    def fill(self, status: Status, result: Any = None, error: str | None = None) -> None:
        """Set what the handle says without reading a row (eager mode, untracked jobs)."""
        self._status, self._result, self._error = status, result, error

    # -- reading -----------------------------------------------------------------------

    def _filled(self) -> bool:
        return self._status is not None

    def _tracked(self) -> bool:
        if self._record is not None:
            return True
        job_class = self.app.registry.find(self.name)
        if job_class is None:
            return self.app.tracking != "none"  # not registered here: only the database can tell
        return self.app.is_tracked(job_class)

    def refresh(self) -> StatusRecord | None:
        """Read the job's row now and return it (None if untracked or without a row).

        Raises StatusStoreError if the database cannot be read.
        """
        if not self._tracked():
            return None
        record = self.app.store.get(self.id)
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
    def result(self) -> R | None:
        """The job's return value once it succeeded (None before, and for untracked jobs)."""
        if self._filled():
            return self._result
        record = self.record
        if record is None:
            return None
        result: R | None = record.result  # the row's JSON, decoded: what the job returned
        return result

    @property
    def error(self) -> str | None:
        """Why the job (or its latest attempt) failed: ``"TypeName: message"``."""
        if self._filled():
            return self._error
        record = self.record
        return record.error if record is not None else None

    @property
    def finished(self) -> bool:
        """True once the job is SUCCESS, FAILURE, DEAD or CANCELLED."""
        return self.status in FINISHED

    def cancel(self) -> Cancellation:
        """Cancel the job if it has not started (see :mod:`sqjobs.middleware.cancellation`); return what happened.

        A running or finished job is not cancelled (``bool(result)`` is
        False and ``result.message`` says why). Raises JobNotCancellableError
        (recording nothing) for a job that is untracked and was not sent
        cancellable: no worker checks it, so it would run anyway;
        StatusStoreError when the database cannot be reached.
        """
        job_class = self.app.registry.find(self.name)
        sent_cancellable = bool(self.cancellable) or bool(job_class is not None and job_class.cancellable)
        if self.cancellable is False and not sent_cancellable and not self._tracked():
            raise JobNotCancellableError(
                f"job {self.id} {self.name} cannot be cancelled: it is untracked and was not sent cancellable, so "
                "no worker checks it and it runs anyway; send it with apply_async(..., cancellable=True), or "
                "declare @job(cancellable=True) or track=True")
        known = self._status  # set in eager mode, where the job already ran
        if known is not None and known in FINISHED:
            return Cancellation(self.id, False, known,
                                f"job {self.id}: not cancelled, it already finished ({known.value}); nothing changed")
        outcome = cancel_job(self.app, self.id, sent_cancellable=sent_cancellable)
        if outcome.cancelled and self._record is not None:
            self._record = None  # read again: the row changed
        if outcome.cancelled and self._filled():
            self._status = outcome.status or self._status
        return outcome

    # -- waiting -----------------------------------------------------------------------

    @overload
    def wait(self, timeout_s: float | None = None, *, raise_error: Literal[True],
             max_poll_s: float = WAIT_POLL_MAX_S) -> R: ...

    @overload
    def wait(self, timeout_s: float | None = None, *, raise_error: bool = False,
             max_poll_s: float = WAIT_POLL_MAX_S) -> R | None: ...

    def wait(self, timeout_s: float | None = None, *, raise_error: bool = False,
             max_poll_s: float = WAIT_POLL_MAX_S) -> R | None:
        """Poll the job's row until it is finished; return its result (None if it failed).

        Typed ``R | None`` (``R``: what the job returns); with
        ``raise_error=True`` a failed job raises instead, so it is ``R``.

        ``timeout_s`` None waits without a deadline. Raises WaitTimeoutError
        (a TimeoutError) at the deadline, JobNotTrackedError for a job nothing
        records, StatusStoreError if the database cannot be read and, only
        with ``raise_error=True``, JobFailedError for a FAILURE, DEAD or CANCELLED job.
        """
        if not self._filled():
            if not self._tracked():
                raise JobNotTrackedError(f"job {self.id} {self.name} is not tracked; nothing records its status "
                                         "(use @job(track=True), ResultJob, or [sqjobs] track = all)")
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            polls = Backoff(0.01, max_poll_s)
            while True:
                record = self.refresh()
                if record is not None and record.finished:
                    break
                remaining_s = None if deadline is None else deadline - time.monotonic()
                if remaining_s is not None and remaining_s <= 0:
                    state = record.status.value if record is not None else "without a status row"
                    raise WaitTimeoutError(f"job {self.id} {self.name} is still {state} after {timeout_s:g} s")
                poll_s = polls.next()
                time.sleep(poll_s if remaining_s is None else min(poll_s, remaining_s))
        status = self.status
        if raise_error and status in (Status.FAILURE, Status.DEAD, Status.CANCELLED):
            raise JobFailedError(f"job {self.id} {self.name} ended {status.value}: {self.error}", self)
        return self.result

    def __repr__(self) -> str:
        return f"<JobHandle {self.name} {self.id} on {self.queue}>"


def outcome_error(error: BaseException) -> str:
    """How a row states an attempt's error: ``"TypeName: message"``."""
    return f"{type(error).__name__}: {error}"


def encode_result(result: Any, where: str = "the result") -> str:
    """Return ``result`` as JSON text of at most ``MAX_RESULT_BYTES`` (``sqjobs.status.store``) in UTF-8.

    Raises TypeError naming what JSON cannot carry, ResultTooLargeError
    saying the size when the JSON is larger than a status row keeps.
    """
    check_json_value(result, where)
    text = json.dumps(result, ensure_ascii=False, allow_nan=False)
    size = len(text.encode("utf-8"))  # check_json_value refused lone surrogates: this encodes
    if size > MAX_RESULT_BYTES:
        raise ResultTooLargeError(f"{where} is {size:,} bytes of JSON, over the {MAX_RESULT_BYTES:,} bytes a status "
                                  "row keeps; store the data elsewhere and return a reference to it")
    return text


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
    pauses: Backoff | None = None  # made on the first failure: the common case needs none
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
            pauses = pauses or Backoff(STORE_RETRY_PAUSE_S, STORE_RETRY_PAUSE_MAX_S)
            pause_s = pauses.next()
