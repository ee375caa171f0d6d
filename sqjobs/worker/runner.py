"""What to do with one received message: decode it, run its job through the middleware, decide its fate.

The :class:`MessageRunner` lives in the process that runs jobs (the worker's
job process, or the worker itself without isolation). It never touches the
broker: it returns a :class:`Settlement` that the worker applies to the
message (delete it, postpone it, dead-letter it, or hand it back).

Rules it applies, in order:

- a body that is not a job message is dead-lettered with the reason;
- with signing keys (:mod:`sqjobs.signing`), a message that is unsigned,
  signed with an unknown key or whose signature does not match is
  dead-lettered with the reason, before anything else looks at it: no
  middleware, no status row, no hook, no job (so it covers the crash ceiling
  and the unknown-name path too);
- a job name unknown here is handed back for another worker (a rolling
  deploy), visible again after ``UNKNOWN_JOB_RETRY_DELAY_S``, and
  dead-lettered once it was refused ``unknown_job_refusals`` times;
- the crash ceiling: a message received more times than its job's attempts
  allow plus ``crash_allowance`` is dead-lettered before it runs (its
  workers died while running it, and it would kill the next one too);
- otherwise one attempt runs, between the middleware's ``before_run`` and
  ``after_run`` (status tracking and the duplicate guard among them): a
  middleware may skip the message (deleted unrun) or reject it
  (dead-lettered unrun); success deletes the message, a failure with
  attempts left postpones it for the backoff, the last failure
  dead-letters it; an attempt settled as timed out from outside while its
  job still ran (:mod:`sqjobs.worker.tokens`) is not settled again when the job
  ends (no hook, no middleware: :meth:`MessageRunner.run` returns None).

Status writes are never skipped: while the status database is unreachable
the runner retries them with backoff and keeps the message; a configuration
the database refuses for good hands the message back and stops the worker;
a row the database refuses (a value it cannot store) is recorded as FAILURE
with a short reason and its message dead-lettered ("its status could not be
recorded"). Anything else that goes wrong with one message is that
message's problem: it is dead-lettered with the error, and the queue flows.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol, TypeVar

from .. import defaults
from ..brokers.base import ReceivedMessage, cut_reason
from ..errors import (
    JobCrashedError,
    MalformedMessageError,
    RejectMessage,
    SkipMessage,
    StatusRowError,
    StatusStoreError,
    StatusStorePermanentError,
    UnknownJobError,
)
from ..message import JobMessage, about, decode
from ..middleware.base import PASSED_THROUGH, Middleware, MiddlewareChain
from ..middleware.unique import KEY_FIELD
from ..settings import default
from ..status.handle import Status, retry_while_unavailable
from .execution import AttemptResult, Outcome, backoff_delay, call_hook, new_job, run_attempt

if TYPE_CHECKING:
    from ..app import App
    from ..job import Job
    from ..registry import Registry

logger = logging.getLogger("sqjobs.runner")

T = TypeVar("T")

#: Message attribute counting how many workers refused a job name they did not know.
REFUSALS_ATTRIBUTE = "sqjobs-refusals"
#: Longest error written for a job whose status row the database refused: short, so that it fits.
STATUS_ROW_REASON_MAX_CHARS = 500

class Guard(Protocol):
    """Runs a status-writing call (see :meth:`MessageRunner._guard`); eager mode calls it as it is."""

    def __call__(self, action: Callable[[], T], /) -> T: ...


class Action(enum.Enum):
    """What the worker does with a message once it was handled."""

    #: The job succeeded (or had already, or a middleware skipped it): delete the message.
    DELETE = "delete"
    #: Hide it for ``delay_s`` (a retry's backoff): it is received again later.
    POSTPONE = "postpone"
    #: Hand it back unrun for another worker, its receive not counted, after ``delay_s`` (unknown job name).
    REFUSE = "refuse"
    #: Move it to the dead-letter queue with ``reason``.
    DEAD_LETTER = "dead_letter"
    #: Its outcome could not be recorded before a stop: visible again at once, to be run again.
    HAND_BACK = "hand_back"


class Settlement(NamedTuple):
    """The fate of one message, decided by the runner and applied to the broker by the worker.

    A named tuple: one is made per job and crosses the pipe from the job
    process, and a tuple is the cheapest immutable record to make and to pickle.
    """

    action: Action
    delay_s: float = 0.0
    reason: str = ""
    #: The job id, once known.
    job_id: str | None = None
    #: True when an attempt of the job ran (it counts towards ``--max-jobs``).
    ran: bool = False
    #: Refusals so far (REFUSE only): carried by the message handed back.
    refusals: int = 0
    #: Set with HAND_BACK when the status database fails in a way no retry fixes: the worker must stop.
    fatal: str = ""
    #: How long the attempt ran, when one ran here (the worker sizes its prefetch with it).
    duration_s: float | None = None
    #: Set with DEAD_LETTER when the message's signature did not verify: nothing it says is to be believed
    #: (the worker hands the middleware its raw body, so no status row is touched on its word).
    unverified: bool = False
    #: The job's name and the attempt's number, when one ran (for the worker's line about it).
    name: str = ""
    attempt: int = 0
    #: With DELETE: the message's unique key, which the worker frees once the delete went through ("": none).
    unique_key: str = ""


def success_line(message: ReceivedMessage, settlement: Settlement) -> str:
    """The INFO line about an attempt that succeeded: id, name, queue, attempt, duration.

    The worker writes it once the settlement reached it (:meth:`Worker.apply
    <sqjobs.worker.Worker.apply>`), not the job process: there it would be
    written with cold caches, a job at a time, and cost a busy job process
    about a tenth of its CPU.
    """
    return (f"job {settlement.job_id} {settlement.name} on {message.queue}: attempt {settlement.attempt} "
            f"succeeded in {settlement.duration_s or 0:.3f} s")


def known_jobs_text(registry: Registry, listed: int = 10) -> str:
    """Say which jobs ``registry`` holds: ``3 jobs: a, b, c`` (the first ``listed`` names, then a count)."""
    names = registry.names()
    if not names:
        return "no job at all"
    shown = ", ".join(names[:listed])
    more = f" and {len(names) - listed} more" if len(names) > listed else ""
    return f"{len(names)} job{'s' if len(names) != 1 else ''}: {shown}{more}"


def refusals_of(message: ReceivedMessage) -> int:
    """How many workers refused ``message`` before this receive.

    Its refusals attribute, where the broker could carry one; else (a FIFO
    queue on SQS) its earlier receives.
    """
    try:
        carried = max(int(message.attributes.get(REFUSALS_ATTRIBUTE, "0")), 0)
    except ValueError:
        carried = 0
    return max(carried, message.receive_count - 1)


def _direct(action: Callable[[], T]) -> T:
    return action()


def _call_guarded(guard: Guard, item: Middleware, hook: str, *args: Any) -> None:
    """``item.hook(*args)`` as the chain calls it; after a status-database error, again through ``guard``.

    ``guard`` retries while the database is unavailable; the first try goes
    without it, as nearly every call works at once. Other failures are
    logged as :meth:`MiddlewareChain.call` logs them.
    """
    try:
        getattr(item, hook)(*args)
    except StatusStoreError:
        guard(lambda: MiddlewareChain.call(item, hook, *args))
    except PASSED_THROUGH:
        raise
    except Exception:
        MiddlewareChain.failed(item, hook)


def attempt_with_middleware(app: App, job_class: type[Job], message: JobMessage, queue: str, attempt_no: int,
                            last_attempt: bool, guard: Guard = _direct,
                            on_start: Callable[[JobMessage, type[Job]], None] | None = None,
                            claim_end: Callable[[], bool] | None = None) -> AttemptResult:
    """One attempt between the middleware's ``before_run`` and ``after_run`` (the worker's way and eager mode's).

    Each middleware call goes through ``guard`` on its own (status writes are
    retried one by one, never re-calling the others). A SkipMessage or
    RejectMessage from ``before_run`` ends it before the job is made to run:
    the result's outcome is SKIPPED or REJECTED. An attempt settled as timed
    out while it ran (``claim_end``, see :func:`~sqjobs.worker.execution.run_attempt`)
    comes back ABANDONED, without ``after_run``: its settlement recorded it.
    """
    job = new_job(job_class, message, queue, attempt_no, last_attempt)
    before, after = app.middleware.around(job_class)
    for item in before:
        try:
            _call_guarded(guard, item, "before_run", job, message)
        except SkipMessage as exc:
            return AttemptResult(Outcome.SKIPPED, job, reason=exc.reason)
        except RejectMessage as exc:
            return AttemptResult(Outcome.REJECTED, job, error=exc, reason=exc.reason)
    if on_start is not None:
        on_start(message, job_class)
    attempt = run_attempt(job_class, message, queue, attempt_no, last_attempt, job=job, claim_end=claim_end)
    if attempt.outcome is Outcome.ABANDONED:
        return attempt
    for item in after:
        _call_guarded(guard, item, "after_run", job, message, attempt.result, attempt.error)
    return attempt


class _NotRecorded(Exception):
    """A status write could not be made (before a stop, or ever): the message is handed back."""

    def __init__(self, fatal: str = "") -> None:
        super().__init__(fatal)
        self.fatal = fatal


class _RowRefused(Exception):
    """The database refused a status row's values: the message is settled by ``settlement`` instead."""

    def __init__(self, settlement: Settlement) -> None:
        super().__init__(settlement.reason)
        self.settlement = settlement


class MessageRunner:
    """Handles received messages for ``app``; ``stop`` ends status retries early."""

    def __init__(self, app: App, *, stop: threading.Event | None = None, unknown_job_refusals: int | None = None,
                 crash_allowance: int | None = None, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.registry = app.registry
        self.stop = stop or threading.Event()
        self.unknown_job_refusals = max(1, unknown_job_refusals or default("worker", "unknown_job_refusals"))
        self.crash_allowance = max(0, default("worker", "crash_allowance") if crash_allowance is None
                                   else crash_allowance)
        self.clock = clock
        #: Checks signatures (None: signing off); read once, so a worker's keys are fixed at its start.
        self.signer = app.signer
        #: Whether the attempt being handled got to run (a refused status row after it still counts it).
        self._attempt_ran = False

    # -- entry points ------------------------------------------------------------------

    def run(self, message: ReceivedMessage,
            on_start: Callable[[JobMessage, type[Job]], None] | None = None,
            claim_end: Callable[[], bool] | None = None) -> Settlement | None:
        """Handle ``message`` and return its settlement; never raises for a bad message or a failed job.

        ``on_start`` is called just before the job's attempt runs;
        ``claim_end`` once it ended (see :func:`~sqjobs.worker.execution.run_attempt`).
        None only when ``claim_end`` said the attempt was settled as timed out
        already: nothing is recorded or settled for it again.
        """
        try:
            return self._run(message, on_start, claim_end)
        except _NotRecorded as exc:
            return Settlement(Action.HAND_BACK, fatal=exc.fatal)
        except _RowRefused as exc:
            return exc.settlement
        except Exception as exc:  # anything else about this one message is its own problem
            logger.exception("%s: cannot be handled; it goes to the dead-letter queue", about(message))
            return Settlement(Action.DEAD_LETTER,
                              reason=cut_reason(f"sqjobs could not handle it: {type(exc).__name__}: {exc}"))

    def fail(self, message: ReceivedMessage, error: BaseException, duration_s: float = 0.0) -> Settlement:
        """Settle an attempt that ended without an answer (its process died, or it was settled at its timeout).

        The attempt counts as failed with ``error``, exactly as if the job had
        raised it: hooks, middleware (status), and a retry or the dead-letter
        queue. ``duration_s``: how long it ran until then.
        """
        try:
            decoded, job_class, early = self._identify(message)
            if early is not None:
                return early
            assert decoded is not None and job_class is not None
            attempt_no, last_attempt = self._attempt_number(message, job_class)
            return self._record_failure(message, job_class, decoded, error, attempt_no, last_attempt,
                                        duration_s=duration_s)
        except _NotRecorded as exc:
            return Settlement(Action.HAND_BACK, fatal=exc.fatal)
        except _RowRefused as exc:
            return exc.settlement
        except Exception as exc:
            logger.exception("%s: cannot record its failed attempt", about(message))
            return Settlement(Action.DEAD_LETTER, reason=cut_reason(
                f"{type(error).__name__}: {error}; and sqjobs could not record it: {type(exc).__name__}: {exc}"))

    # -- the steps ---------------------------------------------------------------------

    def _identify(self, message: ReceivedMessage
                  ) -> tuple[JobMessage | None, type[Job] | None, Settlement | None]:
        """Decode and look up the job; a settlement instead when the message cannot run here."""
        try:
            decoded = decode(message.body, message.message_id)
        except MalformedMessageError as exc:
            return None, None, Settlement(Action.DEAD_LETTER, reason=f"malformed message: {exc.reason}")
        decoded.queue = message.queue
        signer = self.signer
        if signer is not None:
            problem = signer.verify(decoded)
            if problem is not None:  # the worker logs it, counted, once it is in the dead-letter queue
                return None, None, Settlement(Action.DEAD_LETTER, reason=cut_reason(problem), unverified=True)
        try:
            job_class = self.registry.get(decoded.name)
        except UnknownJobError:
            return decoded, None, self._refuse_unknown(message, decoded)
        return decoded, job_class, None

    def _run(self, message: ReceivedMessage, on_start: Callable[[JobMessage, type[Job]], None] | None,
             claim_end: Callable[[], bool] | None) -> Settlement | None:
        decoded, job_class, early = self._identify(message)
        if early is not None:
            return early
        assert decoded is not None and job_class is not None
        ceiling = job_class.retries + 1 + self.crash_allowance
        if message.receive_count > ceiling:
            error = JobCrashedError(
                f"the worker died while running it: received {message.receive_count} times, over its "
                f"{job_class.retries + 1} attempt(s) plus {self.crash_allowance} allowed for workers that died "
                "(killed, crashed, out of memory); not run again")
            self._record_failure(message, job_class, decoded, error, message.receive_count, True, call_hooks=False)
            logger.error("job %s %s on %s: %s", decoded.id, decoded.name, message.queue, _error_text(error))
            return Settlement(Action.DEAD_LETTER, reason=cut_reason(_error_text(error)), job_id=decoded.id)
        attempt_no, last_attempt = self._attempt_number(message, job_class)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("job %s %s on %s: attempt %d started", decoded.id, decoded.name, message.queue, attempt_no)
        self._attempt_ran = False

        def started(started_message: JobMessage, started_class: type[Job]) -> None:
            self._attempt_ran = True
            if on_start is not None:
                on_start(started_message, started_class)

        attempt = attempt_with_middleware(self.app, job_class, decoded, message.queue, attempt_no, last_attempt,
                                          guard=self._guard_for(message, decoded), on_start=started,
                                          claim_end=claim_end)
        if attempt.outcome is Outcome.ABANDONED:
            logger.warning("job %s %s on %s: attempt %d ended after %.3f s, once it had been settled as timed out: "
                           "what it did is not recorded", decoded.id, decoded.name, message.queue, attempt_no,
                           attempt.duration_s)
            return None
        return self._settle_attempt(message, decoded, attempt, attempt_no, last_attempt)

    @staticmethod
    def _attempt_number(message: ReceivedMessage, job_class: type[Job]) -> tuple[int, bool]:
        attempt_no = max(message.receive_count, 1)
        return attempt_no, attempt_no > job_class.retries

    def _record_failure(self, message: ReceivedMessage, job_class: type[Job], decoded: JobMessage,
                        error: BaseException, attempt_no: int, last_attempt: bool,
                        call_hooks: bool = True, duration_s: float = 0.0) -> Settlement:
        """An attempt that failed with ``error`` without running here: hooks, middleware, then its settlement."""
        job = new_job(job_class, decoded, message.queue, attempt_no, last_attempt)
        if call_hooks:
            call_hook(job, "on_failure" if last_attempt else "on_retry", error)
        guard = self._guard_for(message, decoded)
        for item in self.app.middleware.around(job_class)[1]:
            _call_guarded(guard, item, "after_run", job, decoded, None, error)
        attempt = AttemptResult(Outcome.FAILURE, job, error=error, duration_s=duration_s)
        return self._settle_attempt(message, decoded, attempt, attempt_no, last_attempt)

    def _settle_attempt(self, message: ReceivedMessage, decoded: JobMessage, attempt: AttemptResult,
                        attempt_no: int, last_attempt: bool) -> Settlement:
        if attempt.outcome is Outcome.SUCCESS:  # first: nearly every attempt; the worker logs it (success_line)
            return Settlement(Action.DELETE, job_id=decoded.id, ran=True, duration_s=attempt.duration_s,
                              name=decoded.name, attempt=attempt_no, unique_key=_key_of(decoded))
        where = f"job {decoded.id} {decoded.name} on {message.queue}: attempt {attempt_no}"
        if attempt.outcome is Outcome.SKIPPED:
            logger.info("%s", attempt.reason)
            return Settlement(Action.DELETE, job_id=decoded.id, unique_key=_key_of(decoded))
        if attempt.outcome is Outcome.REJECTED:
            logger.error("job %s %s on %s: refused unrun: %s", decoded.id, decoded.name, message.queue, attempt.reason)
            return Settlement(Action.DEAD_LETTER, reason=cut_reason(attempt.reason), job_id=decoded.id)
        error = _error_text(attempt.error)
        if last_attempt:
            reason = cut_reason(f"failed after {attempt_no} attempt(s): {error}")
            logger.error("%s failed in %.3f s, no attempts left: %s", where, attempt.duration_s, reason)
            return Settlement(Action.DEAD_LETTER, reason=reason, job_id=decoded.id, ran=True,
                              duration_s=attempt.duration_s)
        delay_s = attempt.requested_delay_s
        if delay_s is None:
            delay_s = backoff_delay(type(attempt.job), attempt_no)
        delay_s = min(delay_s, defaults.MAX_VISIBILITY_TIMEOUT_S)
        logger.warning("%s failed in %.3f s, retry in %.1f s: %s", where, attempt.duration_s, delay_s, error)
        return Settlement(Action.POSTPONE, delay_s=delay_s, job_id=decoded.id, ran=True, duration_s=attempt.duration_s)

    def _refuse_unknown(self, message: ReceivedMessage, decoded: JobMessage) -> Settlement:
        """Hand back a message whose job this worker does not know; dead-letter it after enough refusals.

        In a rolling deploy an old worker may receive a job only the new code
        knows: another worker should get it.
        """
        name = json.dumps(decoded.name)
        refusals = refusals_of(message) + 1
        if refusals < self.unknown_job_refusals:
            delay_s = defaults.UNKNOWN_JOB_RETRY_DELAY_S
            logger.warning("job %s %s on %s: no job of that name is registered here (%s); handed back for another "
                           "worker, visible again in %.0f s (refusal %d of %d)", decoded.id, name, message.queue,
                           known_jobs_text(self.registry), delay_s, refusals, self.unknown_job_refusals)
            return Settlement(Action.REFUSE, delay_s=delay_s, job_id=decoded.id, refusals=refusals)
        age = f" over {(self.clock() - message.sent_at) / 60:.1f} min" if message.sent_at else ""
        reason = (f"unknown job name {name}: refused {refusals} times{age} by workers that do not know it; "
                  f"this worker knows {known_jobs_text(self.registry)}")
        return Settlement(Action.DEAD_LETTER, reason=cut_reason(reason), job_id=decoded.id)

    def _guard_for(self, message: ReceivedMessage, decoded: JobMessage) -> Guard:
        """A guard for the status-writing calls about ``message`` (see :meth:`_guard`)."""
        def guard(action: Callable[[], T]) -> T:
            return self._guard(action, message, decoded)

        return guard

    def _guard(self, action: Callable[[], T], message: ReceivedMessage, decoded: JobMessage) -> T:
        """Run a middleware call, retrying it with backoff while the status database is unavailable.

        So a tracked job's message is never settled before its status is
        written. If a stop comes first, or the database refuses the
        configuration for good, _NotRecorded hands the message back (and
        stops the worker in the second case). A row the database refuses
        raises _RowRefused with the settlement that replaces it.
        """
        what = f"job {decoded.id} {decoded.name} on {message.queue}"
        try:
            return retry_while_unavailable(action, what, self.stop)
        except StatusStorePermanentError as exc:
            logger.error("%s: status not recorded; message handed back: %s", what, exc)
            raise _NotRecorded(str(exc)) from None
        except StatusRowError as exc:
            raise _RowRefused(self._row_refused(decoded, exc)) from None
        except StatusStoreError:
            logger.error("%s: status not recorded before the stop; message handed back to be delivered again", what)
            raise _NotRecorded() from None

    def _row_refused(self, decoded: JobMessage, error: StatusRowError) -> Settlement:
        """The database refused this job's row: record FAILURE with a short reason if it takes that; dead-letter."""
        reason = f"its status could not be recorded: {error}"
        try:
            self.app.store.ended(decoded.id, decoded.name, decoded.queue, Status.FAILURE, None,
                                 f"StatusRowError: {reason}"[:STATUS_ROW_REASON_MAX_CHARS], None)
        except StatusStoreError as exc:
            logger.warning("job %s %s on %s: cannot record it as FAILURE either: %s", decoded.id, decoded.name,
                           decoded.queue, exc)
        logger.error("job %s %s on %s: %s; its message goes to the dead-letter queue", decoded.id, decoded.name,
                     decoded.queue, reason)
        return Settlement(Action.DEAD_LETTER, reason=cut_reason(reason), job_id=decoded.id, ran=self._attempt_ran)


def _key_of(message: JobMessage) -> str:
    """The unique key ``message`` carries ("" if none: nearly every message, one dict look-up)."""
    key = message.extra.get(KEY_FIELD) if message.extra else None
    return key if isinstance(key, str) else ""


def _error_text(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}" if error is not None else "unknown error"
