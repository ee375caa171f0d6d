"""The worker: receive -> run -> delete, retry or dead-letter, with a visibility heartbeat.

One worker is one process consuming one or more queues in priority order (the
first queue is served first). It holds the messages it received (the running
one and the prefetched ones) and a heartbeat thread keeps them hidden while it
does. SIGTERM or SIGINT stops it gracefully: no new receive, the running job
finishes, the prefetched messages are handed back at once, exit code 0.

Tests drive it without threads or signals through :meth:`Worker.run_once`.
"""

from __future__ import annotations

import json
import logging
import os
import queue as queue_module
import signal
import threading
import time
from typing import Any, Callable, Sequence, TypeVar

from . import defaults
from .brokers.base import Broker, ReceivedMessage
from .errors import BrokerAuthError, MalformedMessageError, StatusStoreError, StatusStorePermanentError, UnknownJobError
from .execution import AttemptResult, Outcome, backoff_delay, run_attempt
from .job import Job, Registry
from .job import registry as default_registry
from .message import JobMessage, decode
from .outage import Outage, traceback_for
from .status import record_dead, record_outcome, record_started, retry_while_unavailable, should_skip

logger = logging.getLogger("sqjobs.worker")

T = TypeVar("T")

#: Pause after a broker error before trying again (doubled up to the cap); see :mod:`sqjobs.outage`.
ERROR_PAUSE_S = 1.0
ERROR_PAUSE_MAX_S = 30.0


def known_jobs_text(registry: Registry, listed: int = 10) -> str:
    """Say which jobs ``registry`` holds: ``3 jobs: a, b, c`` (the first ``listed`` names, then a count)."""
    names = registry.names()
    if not names:
        return "no job at all"
    shown = ", ".join(names[:listed])
    more = f" and {len(names) - listed} more" if len(names) > listed else ""
    return f"{len(names)} job{'s' if len(names) != 1 else ''}: {shown}{more}"


class HeldMessages:
    """The messages a worker holds, and the heartbeat that keeps them hidden."""

    def __init__(self, broker: Broker, visibility_timeout_s: float) -> None:
        self.broker = broker
        self.visibility_timeout_s = visibility_timeout_s
        self._held: dict[str, ReceivedMessage] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Lines to log from the heartbeat thread (signal handlers must not log themselves).
        self._notices: queue_module.SimpleQueue[str] = queue_module.SimpleQueue()
        self._wake = threading.Event()

    @property
    def interval_s(self) -> float:
        """Seconds between two extensions: a third of the visibility timeout."""
        return max(self.visibility_timeout_s / 3.0, 0.1)

    def add(self, messages: Sequence[ReceivedMessage]) -> None:
        """Start holding ``messages``."""
        with self._lock:
            for message in messages:
                self._held[message.receipt] = message

    def release(self, message: ReceivedMessage) -> None:
        """Stop holding ``message`` (before it is deleted, retried or dead-lettered)."""
        with self._lock:
            self._held.pop(message.receipt, None)

    def hand_back(self, messages: Sequence[ReceivedMessage], unstarted: bool = True) -> None:
        """Make ``messages`` visible again at once.

        Unstarted ones are released, so that (where the broker can) the
        receive does not count as an attempt.
        """
        by_queue: dict[str, list[str]] = {}
        with self._lock:
            for message in messages:
                if self._held.pop(message.receipt, None) is not None:
                    by_queue.setdefault(message.queue, []).append(message.receipt)
            for queue, receipts in by_queue.items():
                if unstarted:
                    self.broker.release(queue, receipts)
                else:
                    self.broker.change_visibility_batch(queue, receipts, 0)
        if by_queue:
            logger.info("handed back %d unstarted message(s)", sum(map(len, by_queue.values())))

    def extend(self) -> None:
        """Push the visibility of every held message a full timeout into the future."""
        with self._lock:
            by_queue: dict[str, list[str]] = {}
            for message in self._held.values():
                by_queue.setdefault(message.queue, []).append(message.receipt)
            for queue, receipts in by_queue.items():
                for start in range(0, len(receipts), defaults.MAX_BATCH):
                    self.broker.change_visibility_batch(
                        queue, receipts[start:start + defaults.MAX_BATCH], self.visibility_timeout_s)

    def notify(self, line: str) -> None:
        """Have the heartbeat thread log ``line`` soon; safe from a signal handler."""
        self._notices.put(line)
        self._wake.set()

    def _log_notices(self) -> None:
        while True:
            try:
                logger.warning(self._notices.get_nowait())
            except queue_module.Empty:
                return

    def _beat(self) -> None:
        next_extend = time.monotonic() + self.interval_s
        while not self._stop.is_set():
            self._wake.wait(max(next_extend - time.monotonic(), 0))
            self._wake.clear()
            self._log_notices()
            if self._stop.is_set() or time.monotonic() < next_extend:
                continue
            next_extend = time.monotonic() + self.interval_s
            try:
                self.extend()
            except Exception as exc:
                logger.error("heartbeat could not extend the visibility of held messages: %s", exc,
                             exc_info=traceback_for(logger, exc))
        self._log_notices()

    def start(self) -> None:
        """Run the heartbeat in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="sqjobs-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class Worker:
    """Consumes ``queues`` of ``broker`` and runs the jobs their messages name."""

    def __init__(
        self,
        broker: Broker,
        queues: Sequence[str],
        *,
        prefetch: int = defaults.PREFETCH,
        visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S,
        wait_s: float | None = None,
        max_jobs: int = 0,
        burst: bool = False,
        registry: Registry = default_registry,
        status_file: str | None = None,
        clock: Callable[[], float] = time.time,
        unknown_job_refusals: int = defaults.UNKNOWN_JOB_REFUSALS,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        self.broker = broker
        self.queues = list(queues)
        self.prefetch = max(1, min(prefetch, defaults.MAX_BATCH))
        self.visibility_timeout_s = visibility_timeout_s
        self.wait_s = getattr(broker, "default_wait_s", defaults.SQLITE_WAIT_S) if wait_s is None else wait_s
        self.max_jobs = max_jobs
        self.burst = burst
        self.registry = registry
        self.status_file = status_file
        self.clock = clock
        #: Receives of a message naming a job unknown here before it is dead-lettered.
        self.unknown_job_refusals = max(1, unknown_job_refusals)
        self.held = HeldMessages(broker, visibility_timeout_s)
        self.jobs_done = 0
        self.last_job: str | None = None
        self._stopping = threading.Event()
        self._last_status_write = 0.0
        #: When a receive last returned messages (start time until then): the daemon
        #: tells a worker that polls but gets nothing while messages wait by it.
        self.last_received_at = clock()
        #: Messages whose job succeeded, deleted together when the batch is done.
        self._succeeded: list[ReceivedMessage] = []
        #: "id name on queue" of the job running now (for the stop notice), and the batch's progress.
        self._running: str | None = None
        self._batch_size = 0
        self._batch_started = 0
        #: Broker failures in a row in :meth:`run`: one line per backoff step, one when a receive works again.
        self.broker_outage = Outage(logger, "broker", "receiving", ERROR_PAUSE_S, ERROR_PAUSE_MAX_S)
        #: What stopped the worker for good (a status database no retry fixes); :meth:`run` raises it.
        self.fatal_error: StatusStorePermanentError | None = None

    # -- stopping ----------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for (signal, --max-jobs reached)."""
        return self._stopping.is_set()

    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        """Ask the worker to stop after the running job; safe from a signal handler."""
        self._stopping.set()
        self.broker.interrupt()
        if signum is not None:
            self.held.notify(self._stop_notice(signal.Signals(signum).name))

    def _stop_notice(self, what: str) -> str:
        """The line a stop request logs: what runs now and what will be handed back."""
        running = self._running
        if running is None:
            return f"{what} received: stopping (no job running)"
        waiting = max(self._batch_size - self._batch_started, 0)
        return (f"{what} received: no new receive; job {running} finishes first, then {waiting} prefetched "
                "message(s) are handed back and the worker exits")

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT graceful stops."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # -- one step ----------------------------------------------------------------------

    def receive(self, wait_s: float) -> list[ReceivedMessage]:
        """Receive from the first queue (in priority order) that has messages; wait on the last."""
        for index, queue in enumerate(self.queues):
            last = index == len(self.queues) - 1
            messages = self.broker.receive(queue, self.prefetch, wait_s if last else 0, self.visibility_timeout_s)
            if messages:
                return messages
            if self.stopping:
                break
        return []

    def run_once(self, wait_s: float = 0) -> int:
        """Receive one batch and process it; return how many messages were handled."""
        self._write_status()
        messages = self.receive(wait_s)
        self.broker_outage.recovered()
        if messages:
            self.last_received_at = self.clock()
        self.held.add(messages)
        handled = 0
        # FIFO queues: once a message of a group did not succeed (it waits for a retry), the rest of
        # its group in this batch is handed back unrun, so the group keeps its order.
        blocked_groups: set[tuple[str, str]] = set()
        held_back: list[ReceivedMessage] = []
        self._batch_size, self._batch_started = len(messages), 0
        try:
            for message in messages:
                if self.stopping:
                    break
                handled += 1
                self._batch_started = handled
                group = (message.queue, message.group_id) if message.group_id is not None else None
                if group is not None and group in blocked_groups:
                    held_back.append(message)
                    continue
                self.process(message)
                if group is not None and message not in self._succeeded:
                    blocked_groups.add(group)
                if self.max_jobs and self.jobs_done >= self.max_jobs:
                    self._stopping.set()
        finally:
            self.held.hand_back(held_back + messages[handled:])
            self._flush_deletes()
        return handled

    def process(self, message: ReceivedMessage) -> None:
        """Decode, run and settle one message; never raises for a bad message or a failed job."""
        try:
            decoded = decode(message.body, message.message_id)
            job_class = self.registry.get(decoded.name)
        except MalformedMessageError as exc:
            self._dead_letter(message, f"malformed message: {exc.reason}")
            return
        except UnknownJobError:
            self._refuse_unknown(message, decoded)
            return
        try:
            skip = self._status_call(lambda: should_skip(job_class, decoded), message, decoded)
        except StatusStoreError:
            return
        if skip:
            logger.info("job %s %s on %s: already succeeded, not run again", decoded.id, decoded.name,
                        message.queue)
            self._succeeded.append(message)
            return
        self._run(message, job_class, decoded)

    # -- internals ---------------------------------------------------------------------

    def _refuse_unknown(self, message: ReceivedMessage, decoded: JobMessage) -> None:
        """Hand back a message whose job this worker does not know; dead-letter it after enough refusals.

        In a rolling deploy an old worker may receive a job only the new code
        knows: another worker should get it. After ``unknown_job_refusals``
        receives (each one at least UNKNOWN_JOB_RETRY_DELAY_S apart), nobody
        knows it and it goes to the dead-letter queue.
        """
        name = json.dumps(decoded.name)
        refusals = message.receive_count
        if refusals < self.unknown_job_refusals:
            delay_s = defaults.UNKNOWN_JOB_RETRY_DELAY_S
            logger.warning("job %s %s on %s: no job of that name is registered here (%s); handed back for another "
                           "worker, visible again in %.0f s (refusal %d of %d)", decoded.id, name, message.queue,
                           known_jobs_text(self.registry), delay_s, refusals, self.unknown_job_refusals)
            self._settle(message, lambda: self.broker.postpone(message.queue, message.receipt, delay_s))
            return
        age = f" over {(self.clock() - message.sent_at) / 60:.1f} min" if message.sent_at else ""
        reason = (f"unknown job name {name}: refused {refusals} times{age} by workers that do not know it; "
                  f"this worker knows {known_jobs_text(self.registry)}")
        self._dead_letter(message, reason)
        record_dead(decoded, message.queue, reason)

    def _run(self, message: ReceivedMessage, job_class: type[Job], decoded: JobMessage) -> None:
        attempt_no = message.receive_count
        last_attempt = attempt_no > job_class.retries
        logger.info("job %s %s on %s: attempt %d started", decoded.id, decoded.name, message.queue, attempt_no)
        try:
            self._status_call(lambda: record_started(job_class, decoded, message.queue, attempt_no), message, decoded)
        except StatusStoreError:
            return
        self._running = f"{decoded.id} {decoded.name} on {message.queue}"
        try:
            attempt = run_attempt(job_class, decoded, message.queue, attempt_no, last_attempt)
        finally:
            self._running = None
        self.jobs_done += 1
        self.last_job = decoded.id
        final = last_attempt or attempt.outcome is Outcome.SUCCESS
        try:
            self._status_call(lambda: record_outcome(job_class, decoded, attempt, final=final), message, decoded)
        except StatusStoreError:
            return
        if attempt.outcome is Outcome.SUCCESS:
            logger.info("job %s %s on %s: attempt %d succeeded in %.3f s", decoded.id, decoded.name,
                        message.queue, attempt_no, attempt.duration_s)
            self._succeeded.append(message)
        elif last_attempt:
            reason = self._failure_reason(attempt, attempt_no)
            logger.error("job %s %s on %s: attempt %d failed in %.3f s, no attempts left: %s", decoded.id,
                         decoded.name, message.queue, attempt_no, attempt.duration_s, reason)
            self._dead_letter(message, reason)
        else:
            delay_s = attempt.requested_delay_s
            if delay_s is None:
                delay_s = backoff_delay(job_class, attempt_no)
            delay_s = min(delay_s, defaults.MAX_VISIBILITY_TIMEOUT_S)
            logger.warning("job %s %s on %s: attempt %d failed in %.3f s, retry in %.1f s: %s", decoded.id,
                           decoded.name, message.queue, attempt_no, attempt.duration_s, delay_s,
                           self._error_text(attempt))
            self._settle(message, lambda: self.broker.postpone(message.queue, message.receipt, delay_s))

    def _status_call(self, action: Callable[[], T], message: ReceivedMessage, decoded: JobMessage) -> T:
        """Run a status hook, retrying with backoff while the status database is unavailable.

        So a tracked job's message is never settled before its status is
        written. If a stop comes first, the message is handed back to be
        delivered again and StatusStoreError is raised. A permanent error
        (StatusStorePermanentError) hands it back too and stops the worker:
        :meth:`run` then raises it. Hooks of untracked
        jobs touch no database and never fail here.
        """
        what = f"job {decoded.id} {decoded.name} on {message.queue}"
        try:
            return retry_while_unavailable(action, what, self._stopping)
        except StatusStorePermanentError as exc:
            logger.error("%s: status not recorded; message handed back, worker stopping: %s", what, exc)
            self.held.hand_back([message], unstarted=False)
            self.fatal_error = exc
            self._stopping.set()
            raise
        except StatusStoreError:
            logger.error("%s: status not recorded before the stop; message handed back to be delivered again", what)
            self.held.hand_back([message], unstarted=False)
            raise

    @staticmethod
    def _error_text(attempt: AttemptResult) -> str:
        error = attempt.error
        return f"{type(error).__name__}: {error}" if error is not None else "unknown error"

    def _failure_reason(self, attempt: AttemptResult, attempt_no: int) -> str:
        return f"failed after {attempt_no} attempt(s): {self._error_text(attempt)}"

    def _flush_deletes(self) -> None:
        """Delete the messages whose jobs succeeded, in batches per queue, then stop holding them.

        Until then the heartbeat keeps them hidden; a crash before the flush
        runs them again, which at-least-once delivery allows.
        """
        succeeded, self._succeeded = self._succeeded, []
        by_queue: dict[str, list[ReceivedMessage]] = {}
        for message in succeeded:
            by_queue.setdefault(message.queue, []).append(message)
        for queue, messages in by_queue.items():
            for message in messages:
                self.held.release(message)
            try:
                self.broker.delete_batch(queue, [m.receipt for m in messages])
            except BrokerAuthError:
                raise
            except Exception as exc:
                logger.error("could not delete %d finished message(s) on %s; they will be delivered again: %s",
                             len(messages), queue, exc, exc_info=traceback_for(logger, exc))

    def _dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        logger.error("message %s on %s moved to the dead-letter queue: %s", message.message_id, message.queue,
                     reason)
        self._settle(message, lambda: self.broker.dead_letter(message.queue, message, reason))

    def _settle(self, message: ReceivedMessage, action: Callable[[], None]) -> None:
        """Stop holding ``message`` and apply ``action``; a broker error leaves it to be redelivered."""
        self.held.release(message)
        try:
            action()
        except BrokerAuthError:
            raise
        except Exception as exc:
            logger.error("message %s on %s: could not settle it; it will be delivered again: %s",
                         message.message_id, message.queue, exc, exc_info=traceback_for(logger, exc))

    def _write_status(self) -> None:
        """Write the status file (last poll, last receive, last job) at most once a second, atomically."""
        if not self.status_file:
            return
        now = self.clock()
        if now - self._last_status_write < 1.0:
            return
        self._last_status_write = now
        temporary = f"{self.status_file}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump({"pid": os.getpid(), "last_poll": now, "last_received": self.last_received_at,
                           "last_job": self.last_job, "jobs_done": self.jobs_done, "queues": self.queues}, handle)
            os.replace(temporary, self.status_file)
        except OSError:
            logger.exception("cannot write the worker status file %s", self.status_file)

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Consume until stopped (signal, --max-jobs, or --burst with empty queues); return exit code 0.

        Raises BrokerAuthError, and StatusStorePermanentError when the status
        database failed in a way no retry fixes (the message was handed back).
        """
        logger.info("worker %d consuming %s", os.getpid(), ", ".join(self.queues))
        self.held.start()
        try:
            while not self.stopping:
                try:
                    handled = self.run_once(0 if self.burst else self.wait_s)
                except BrokerAuthError:
                    raise
                except Exception as exc:
                    self._stopping.wait(self.broker_outage.failed(exc))
                    continue
                if self.burst and handled == 0:
                    logger.info("worker %d: queues empty, leaving (--burst)", os.getpid())
                    break
        finally:
            self.held.stop()
        logger.info("worker %d stopped after %d job(s)", os.getpid(), self.jobs_done)
        if self.fatal_error is not None:
            raise self.fatal_error
        return 0
