"""What to do with one received message: decode it, run its job, record its status, decide its fate.

The :class:`MessageRunner` lives in the process that runs jobs (the worker's
job process, or the worker itself without isolation). It never touches the
broker: it returns a :class:`Settlement` that the worker applies to the
message (delete it, postpone it, dead-letter it, or hand it back).

Rules it applies, in order:

- a body that is not a job message is dead-lettered with the reason;
- a job name unknown here is handed back for another worker (a rolling
  deploy), visible again after ``UNKNOWN_JOB_RETRY_DELAY_S``, and
  dead-lettered once it was refused ``unknown_job_refusals`` times;
- the crash ceiling: a message received more times than its job's attempts
  allow plus ``crash_allowance`` is dead-lettered before it runs (its
  workers died while running it, and it would kill the next one too);
- a tracked job that already succeeded is not run again;
- otherwise one attempt runs; success deletes the message, a failure with
  attempts left postpones it for the backoff, the last failure dead-letters
  it. Each step's status is recorded before the message is settled.

Anything that goes wrong while handling one message (decoding, checking,
recording) is that message's problem: it is dead-lettered with the error
as its reason, and the rest of the queue flows. So is a status row the
database refuses (a value it cannot store): the job is recorded as FAILURE
with a short reason if the database takes that, and its message is
dead-lettered ("its status could not be recorded: ..."), whatever the
attempt's outcome, since a row that says FAILURE must not go with a deleted
message.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from . import defaults
from .brokers.base import ReceivedMessage, cut_reason
from .errors import (
    JobCrashedError,
    MalformedMessageError,
    StatusRowError,
    StatusStoreError,
    StatusStorePermanentError,
    UnknownJobError,
)
from .execution import AttemptResult, Outcome, backoff_delay, call_hook, run_attempt
from .job import Job, Registry
from .message import JobMessage, decode
from .status import (
    record_dead,
    record_outcome,
    record_started,
    record_unrecordable,
    retry_while_unavailable,
    should_skip,
)

logger = logging.getLogger("sqjobs.runner")

T = TypeVar("T")

#: Message attribute counting how many workers refused a job name they did not know.
REFUSALS_ATTRIBUTE = "sqjobs-refusals"


class Action(enum.Enum):
    """What the worker does with a message once it was handled."""

    #: The job succeeded (or had already): delete the message.
    DELETE = "delete"
    #: Hide it for ``delay_s`` (a retry's backoff): it is received again later.
    POSTPONE = "postpone"
    #: Hand it back unrun for another worker, its receive not counted, after ``delay_s`` (unknown job name).
    REFUSE = "refuse"
    #: Move it to the dead-letter queue with ``reason``.
    DEAD_LETTER = "dead_letter"
    #: Its outcome could not be recorded before a stop: visible again at once, to be run again.
    HAND_BACK = "hand_back"


@dataclass(frozen=True)
class Settlement:
    """The fate of one message, decided by the runner and applied to the broker by the worker."""

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
    """Handles received messages of the jobs in ``registry``; ``stop`` ends status retries early."""

    def __init__(self, registry: Registry, *, stop: threading.Event | None = None,
                 unknown_job_refusals: int = defaults.UNKNOWN_JOB_REFUSALS,
                 crash_allowance: int = defaults.CRASH_ALLOWANCE,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.stop = stop or threading.Event()
        self.unknown_job_refusals = max(1, unknown_job_refusals)
        self.crash_allowance = max(0, crash_allowance)
        self.clock = clock

    # -- entry points ------------------------------------------------------------------

    def run(self, message: ReceivedMessage,
            on_start: Callable[[JobMessage, type[Job]], None] | None = None) -> Settlement:
        """Handle ``message`` and return its settlement; never raises for a bad message or a failed job.

        ``on_start`` is called just before the job's attempt runs.
        """
        try:
            return self._run(message, on_start)
        except _NotRecorded as exc:
            return Settlement(Action.HAND_BACK, fatal=exc.fatal)
        except _RowRefused as exc:
            return exc.settlement
        except Exception as exc:  # anything else about this one message is its own problem
            logger.exception("message %s on %s: cannot be handled; it goes to the dead-letter queue",
                             message.message_id, message.queue)
            return Settlement(Action.DEAD_LETTER,
                              reason=cut_reason(f"sqjobs could not handle it: {type(exc).__name__}: {exc}"))

    def fail(self, message: ReceivedMessage, error: BaseException) -> Settlement:
        """Settle an attempt that ended without an answer (its process died, or was killed at its timeout).

        The attempt counts as failed with ``error``, exactly as if the job had
        raised it: status, hooks, and a retry or the dead-letter queue.
        """
        try:
            decoded, job_class, early = self._identify(message)
            if early is not None:
                return early
            assert decoded is not None and job_class is not None
            attempt_no, last_attempt = self._attempt_number(message, job_class)
            job = job_class()
            job.id, job.queue_name, job.attempt = decoded.id, message.queue, attempt_no
            attempt = AttemptResult(Outcome.FAILURE, job, error=error, traceback=f"{type(error).__name__}: {error}\n")
            call_hook(job, "on_failure" if last_attempt else "on_retry", error)
            return self._settle_attempt(message, job_class, decoded, attempt, attempt_no, last_attempt)
        except _NotRecorded as exc:
            return Settlement(Action.HAND_BACK, fatal=exc.fatal)
        except _RowRefused as exc:
            return exc.settlement
        except Exception as exc:
            logger.exception("message %s on %s: cannot record its failed attempt", message.message_id, message.queue)
            return Settlement(Action.DEAD_LETTER, reason=f"{type(error).__name__}: {error}; and sqjobs could not "
                                                         f"record it: {type(exc).__name__}: {exc}")

    # -- the steps ---------------------------------------------------------------------

    def _identify(self, message: ReceivedMessage
                  ) -> tuple[JobMessage | None, type[Job] | None, Settlement | None]:
        """Decode and look up the job; a settlement instead when the message cannot run here."""
        try:
            decoded = decode(message.body, message.message_id)
        except MalformedMessageError as exc:
            return None, None, self._dead(message, None, f"malformed message: {exc.reason}")
        try:
            job_class = self.registry.get(decoded.name)
        except UnknownJobError:
            return decoded, None, self._refuse_unknown(message, decoded)
        return decoded, job_class, None

    def _run(self, message: ReceivedMessage, on_start: Callable[[JobMessage, type[Job]], None] | None) -> Settlement:
        decoded, job_class, early = self._identify(message)
        if early is not None:
            return early
        assert decoded is not None and job_class is not None
        ceiling = job_class.retries + 1 + self.crash_allowance
        if message.receive_count > ceiling:
            return self._over_ceiling(message, job_class, decoded, ceiling)
        if self._status(lambda: should_skip(job_class, decoded), message, decoded):
            logger.info("job %s %s on %s: already succeeded, not run again", decoded.id, decoded.name, message.queue)
            return Settlement(Action.DELETE, job_id=decoded.id)
        attempt_no, last_attempt = self._attempt_number(message, job_class)
        logger.info("job %s %s on %s: attempt %d started", decoded.id, decoded.name, message.queue, attempt_no)
        self._status(lambda: record_started(job_class, decoded, message.queue, attempt_no), message, decoded)
        if on_start is not None:
            on_start(decoded, job_class)
        attempt = run_attempt(job_class, decoded, message.queue, attempt_no, last_attempt)
        return self._settle_attempt(message, job_class, decoded, attempt, attempt_no, last_attempt)

    @staticmethod
    def _attempt_number(message: ReceivedMessage, job_class: type[Job]) -> tuple[int, bool]:
        attempt_no = max(message.receive_count, 1)
        return attempt_no, attempt_no > job_class.retries

    def _settle_attempt(self, message: ReceivedMessage, job_class: type[Job], decoded: JobMessage,
                        attempt: AttemptResult, attempt_no: int, last_attempt: bool) -> Settlement:
        final = last_attempt or attempt.outcome is Outcome.SUCCESS
        self._status(lambda: record_outcome(job_class, decoded, attempt, final=final), message, decoded, ran=True)
        where = f"job {decoded.id} {decoded.name} on {message.queue}: attempt {attempt_no}"
        if attempt.outcome is Outcome.SUCCESS:
            logger.info("%s succeeded in %.3f s", where, attempt.duration_s)
            return Settlement(Action.DELETE, job_id=decoded.id, ran=True)
        error = _error_text(attempt.error)
        if last_attempt:
            reason = cut_reason(f"failed after {attempt_no} attempt(s): {error}")
            logger.error("%s failed in %.3f s, no attempts left: %s", where, attempt.duration_s, reason)
            return Settlement(Action.DEAD_LETTER, reason=reason, job_id=decoded.id, ran=True)
        delay_s = attempt.requested_delay_s
        if delay_s is None:
            delay_s = backoff_delay(job_class, attempt_no)
        delay_s = min(delay_s, defaults.MAX_VISIBILITY_TIMEOUT_S)
        logger.warning("%s failed in %.3f s, retry in %.1f s: %s", where, attempt.duration_s, delay_s, error)
        return Settlement(Action.POSTPONE, delay_s=delay_s, job_id=decoded.id, ran=True)

    def _over_ceiling(self, message: ReceivedMessage, job_class: type[Job], decoded: JobMessage,
                      ceiling: int) -> Settlement:
        """Dead-letter, unrun, a message whose workers kept dying while running it."""
        attempts = job_class.retries + 1
        error = JobCrashedError(
            f"the worker died while running it: received {message.receive_count} times, over its {attempts} "
            f"attempt(s) plus {self.crash_allowance} allowed for workers that died (killed, crashed, out of "
            "memory); not run again")
        job = job_class()
        job.id, job.queue_name, job.attempt = decoded.id, message.queue, message.receive_count
        attempt = AttemptResult(Outcome.FAILURE, job, error=error, traceback=None)
        self._status(lambda: record_outcome(job_class, decoded, attempt, final=True), message, decoded)
        reason = _error_text(error)
        logger.error("job %s %s on %s: %s", decoded.id, decoded.name, message.queue, reason)
        return Settlement(Action.DEAD_LETTER, reason=reason, job_id=decoded.id)

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
        record_dead(decoded, message.queue, reason)
        return self._dead(message, decoded, reason)

    @staticmethod
    def _dead(message: ReceivedMessage, decoded: JobMessage | None, reason: str) -> Settlement:
        return Settlement(Action.DEAD_LETTER, reason=reason, job_id=decoded.id if decoded else None)

    def _status(self, action: Callable[[], T], message: ReceivedMessage, decoded: JobMessage,
                ran: bool = False) -> T:
        """Run a status hook, retrying with backoff while the status database is unavailable.

        So a tracked job's message is never settled before its status is
        written. If a stop comes first, _NotRecorded is raised and the
        message is handed back to be delivered again. If the database refuses
        the row's values, _RowRefused is raised: FAILURE is recorded if it can
        be, and the message dead-lettered (``ran``: after its attempt ran).
        Hooks of untracked jobs touch no database and never fail here.
        """
        what = f"job {decoded.id} {decoded.name} on {message.queue}"
        try:
            return retry_while_unavailable(action, what, self.stop)
        except StatusRowError as exc:
            reason = f"its status could not be recorded: {exc}"
            logger.error("%s: %s; the message goes to the dead-letter queue", what, reason)
            record_unrecordable(decoded.name, decoded, message.queue, exc)
            raise _RowRefused(Settlement(Action.DEAD_LETTER, reason=reason, job_id=decoded.id, ran=ran)) from None
        except StatusStorePermanentError as exc:
            logger.error("%s: status not recorded; message handed back: %s", what, exc)
            raise _NotRecorded(str(exc)) from None
        except StatusStoreError:
            logger.error("%s: status not recorded before the stop; message handed back to be delivered again", what)
            raise _NotRecorded() from None


def _error_text(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}" if error is not None else "unknown error"

