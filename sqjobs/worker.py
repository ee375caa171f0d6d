"""The worker: receive -> run -> delete, retry or dead-letter, with a visibility heartbeat.

One worker consumes one or more queues in priority order (the first queue is
served first). It holds the messages it received (the running one and the
prefetched ones) and a heartbeat thread keeps them hidden while it does.
SIGTERM or SIGINT stops it gracefully: no new receive, the running job
finishes, the prefetched messages are handed back at once, exit code 0.

With ``isolation="process"`` (the default) the jobs run in a job process the
worker forks and supervises (:mod:`sqjobs.jobprocess`): a job that crashes,
hangs in C code or holds the GIL cannot take the worker, its heartbeat or the
other messages it holds with it. ``isolation="none"`` runs them in the worker
itself, for debugging with pdb and for tests that step the loop.

What to do with each message is decided by :mod:`sqjobs.runner`; the worker
applies the decision to the broker. Tests drive it without threads or
signals through :meth:`Worker.run_once`.
"""

from __future__ import annotations

import json
import logging
import os
import queue as queue_module
import signal
import threading
import time
from typing import Any, Callable, Sequence

from . import defaults
from .brokers.base import Broker, ReceivedMessage, cut_reason
from .errors import BrokerAuthError, StatusStorePermanentError
from .job import Registry
from .job import registry as default_registry
from .jobprocess import JobProcess, JobProcessDied
from .outage import Outage, traceback_for
from .runner import REFUSALS_ATTRIBUTE, Action, MessageRunner, Settlement, known_jobs_text

logger = logging.getLogger("sqjobs.worker")

__all__ = ["HeldMessages", "Worker", "known_jobs_text", "ISOLATIONS"]

#: Pause after a broker error before trying again (doubled up to the cap); see :mod:`sqjobs.outage`.
ERROR_PAUSE_S = 1.0
ERROR_PAUSE_MAX_S = 30.0
#: How a worker runs jobs: in a supervised job process, or in the worker itself.
ISOLATIONS = ("process", "none")
#: Messages a worker remembers having failed to dead-letter (the oldest are forgotten first).
UNDEAD_MEMORY = 10_000
#: How long a worker remembers the deaths of its job process, for ``sqjobsd status``.
CRASH_MEMORY_S = 600.0

#: Pause after a broker error before trying again (doubled up to the cap).
ERROR_PAUSE_S = 1.0
ERROR_PAUSE_MAX_S = 30.0


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
        crash_allowance: int = defaults.CRASH_ALLOWANCE,
        isolation: str = defaults.ISOLATION,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
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
        self.isolation = isolation
        #: Receives of a message naming a job unknown here before it is dead-lettered.
        self.unknown_job_refusals = max(1, unknown_job_refusals)
        self.crash_allowance = max(0, crash_allowance)
        self.held = HeldMessages(broker, visibility_timeout_s)
        self.jobs_done = 0
        self.last_job: str | None = None
        self._stopping = threading.Event()
        self._last_status_write = 0.0
        #: When a receive last returned messages (start time until then): the daemon
        #: tells a worker that polls but gets nothing while messages wait by it.
        self.last_received_at = clock()
        self.started_at = clock()
        #: When the worker last asked the broker for messages (the daemon's stall detection reads it).
        self.last_poll_at = clock()
        #: When the job process died (recent ones only), and why the last time.
        self.crashes: list[float] = []
        self.last_crash: str | None = None
        #: Messages whose job succeeded, deleted together when the batch is done.
        self._succeeded: list[ReceivedMessage] = []
        #: The job running in this process (isolation "none"), for the stop notice; and the batch's progress.
        self._running: str | None = None
        self._batch_size = 0
        self._batch_started = 0
        self._inline_runner = self._make_runner(self._stopping)
        self._job_process: JobProcess | None = None
        #: Start times of the earlier processes that wrote the same status file (restarts by supervisord).
        self._earlier_starts = self._read_earlier_starts()
        #: Broker failures in a row in :meth:`run`: one line per backoff step, one when a receive works again.
        self.broker_outage = Outage(logger, "broker", "receiving", ERROR_PAUSE_S, ERROR_PAUSE_MAX_S)
        #: Messages whose move to the dead-letter queue failed, with their reason: never run again, only moved.
        self._undead: dict[str, str] = {}
        #: What stopped the worker for good (a status database no retry fixes); :meth:`run` raises it.
        self.fatal_error: StatusStorePermanentError | None = None

    def _make_runner(self, stop: threading.Event) -> MessageRunner:
        return MessageRunner(self.registry, stop=stop, unknown_job_refusals=self.unknown_job_refusals,
                             crash_allowance=self.crash_allowance, clock=self.clock)

    # -- stopping ----------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for (signal, --max-jobs reached)."""
        return self._stopping.is_set()

    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        """Ask the worker to stop after the running job; safe from a signal handler."""
        self._stopping.set()
        self.broker.interrupt()
        if self._job_process is not None:
            self._job_process.stop_retrying()
        if signum is not None:
            self.held.notify(self._stop_notice(signal.Signals(signum).name))

    def _stop_notice(self, what: str) -> str:
        """The line a stop request logs: what runs now and what will be handed back."""
        running = self._running or (self._job_process.running if self._job_process is not None else None)
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
        self.last_poll_at = self.clock()
        self._write_status()
        messages = self.receive(wait_s)
        self.broker_outage.recovered()
        if messages:
            self.last_received_at = self.clock()
        self.held.add(messages)
        messages = self._suspects_last(messages)
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
                if message.unsettled_before:
                    self._flush_deletes()
                self.process(message)
                if group is not None and message not in self._succeeded:
                    blocked_groups.add(group)
                if self.max_jobs and self.jobs_done >= self.max_jobs:
                    self._stopping.set()
        finally:
            self.held.hand_back(held_back + messages[handled:])
            self._flush_deletes()
        return handled

    def _suspects_last(self, messages: list[ReceivedMessage]) -> list[ReceivedMessage]:
        """Order a batch so that a message whose last worker died with it runs last, and alone.

        Such a message (a suspect) may kill this worker too. The other
        messages run first; only the first suspect is kept, after them, and
        the other suspects are handed back unstarted at once (their receive
        taken back where the broker can). The finished messages are deleted
        before the suspect starts (see :meth:`run_once`), so if it kills the
        worker it takes no other message with it.
        """
        suspects = [m for m in messages if m.unsettled_before]
        if not suspects:
            return messages
        suspect, spare = suspects[0], suspects[1:]
        logger.warning("message %s on %s comes back from a worker that died while holding it: it runs last and "
                       "alone%s", suspect.message_id, suspect.queue,
                       f"; {len(spare)} other such message(s) handed back" if spare else "")
        if spare:
            self.held.hand_back(spare)
        return [m for m in messages if not m.unsettled_before] + [suspect]

    def process(self, message: ReceivedMessage) -> None:
        """Run and settle one message; never raises for a bad message or a failed job.

        A message this worker already tried and failed to dead-letter is not
        run again: it is only moved (again).
        """
        reason = self._undead.get(message.message_id)
        if reason is not None:
            self.apply(message, Settlement(Action.DEAD_LETTER, reason=reason))
            return
        self.apply(message, self.execute(message))

    def execute(self, message: ReceivedMessage) -> Settlement:
        """Have ``message`` handled (in the job process, or here) and return its settlement."""
        if self.isolation == "none":
            def note_running(decoded: Any, job_class: Any) -> None:
                self._running = f"{decoded.id} {decoded.name} on {message.queue}"

            return self._inline_runner.run(message, on_start=note_running)
        try:
            return self._job_process_ready().run(message)
        except JobProcessDied as death:
            return self._after_death(message, death)

    def _job_process_ready(self) -> JobProcess:
        """The job process, started (again) if it is not running."""
        if self._job_process is None or not self._job_process.alive:
            process = JobProcess(self._make_runner, on_wait=self._write_status)
            process.start()
            self._job_process = process
        return self._job_process

    def _after_death(self, message: ReceivedMessage, death: JobProcessDied) -> Settlement:
        """The job process died running ``message``: have a new one record the failed attempt."""
        now = self.clock()
        self.crashes = [t for t in self.crashes if now - t < CRASH_MEMORY_S] + [now]
        self.last_crash = f"{death.error} (message {message.message_id} on {message.queue})"
        logger.error("message %s on %s: %s; starting a new job process", message.message_id, message.queue,
                     death.error)
        try:
            return self._job_process_ready().fail(message, death.error)
        except JobProcessDied as again:
            logger.error("message %s on %s: the new job process died too while recording the failure (%s); "
                         "the message is hidden for its visibility timeout and counted by the crash ceiling",
                         message.message_id, message.queue, again.error)
            return Settlement(Action.POSTPONE, delay_s=self.visibility_timeout_s)

    def apply(self, message: ReceivedMessage, settlement: Settlement) -> None:
        """Apply ``settlement`` to ``message`` on the broker."""
        if settlement.ran:
            self.jobs_done += 1
            self.last_job = settlement.job_id
        self._running = None
        if settlement.fatal:
            logger.error("message %s on %s: handed back; the worker stops: %s", message.message_id, message.queue,
                         settlement.fatal)
            self.fatal_error = StatusStorePermanentError(settlement.fatal)
            self._stopping.set()
        action = settlement.action
        if action is Action.DELETE:
            self._succeeded.append(message)
        elif action is Action.POSTPONE:
            self._settle(message, lambda: self.broker.postpone(message.queue, message.receipt, settlement.delay_s))
        elif action is Action.REFUSE:
            attributes = {REFUSALS_ATTRIBUTE: str(settlement.refusals)}
            self._settle(message, lambda: self.broker.requeue(message.queue, message, settlement.delay_s, attributes))
        elif action is Action.DEAD_LETTER:
            self._dead_letter(message, settlement.reason)
        else:
            self.held.hand_back([message], unstarted=False)

    # -- internals ---------------------------------------------------------------------

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
        """Move ``message`` to the dead-letter queue; log the move once it happened.

        If the move fails, the message stays in its queue, hidden for
        DEAD_LETTER_RETRY_S, and is remembered: when it comes back to this
        worker it is moved again, never run again.
        """
        if self._settle(message, lambda: self.broker.dead_letter(message.queue, message, reason)):
            self._undead.pop(message.message_id, None)
            logger.error("message %s on %s moved to the dead-letter queue: %s", message.message_id, message.queue,
                         cut_reason(reason))
            return
        self._undead[message.message_id] = reason
        while len(self._undead) > UNDEAD_MEMORY:
            self._undead.pop(next(iter(self._undead)))
        try:
            self.broker.change_visibility(message.queue, message.receipt, defaults.DEAD_LETTER_RETRY_S)
        except Exception as exc:
            logger.warning("message %s on %s: cannot hide it until the next try to dead-letter it: %s",
                           message.message_id, message.queue, exc, exc_info=traceback_for(logger, exc))

    def _settle(self, message: ReceivedMessage, action: Callable[[], None]) -> bool:
        """Stop holding ``message`` and apply ``action``; True if it worked.

        A broker error leaves the message to be delivered again (and, for a
        message that should have been dead-lettered, to the crash ceiling).
        """
        self.held.release(message)
        try:
            action()
            return True
        except BrokerAuthError:
            raise
        except Exception as exc:
            logger.error("message %s on %s: could not settle it; it will be delivered again: %s",
                         message.message_id, message.queue, exc, exc_info=traceback_for(logger, exc))
            return False

    def _read_earlier_starts(self) -> list[float]:
        """Start times of the recent processes that wrote the same status file before this one."""
        if not self.status_file:
            return []
        try:
            with open(self.status_file, encoding="utf-8") as handle:
                data = json.load(handle)
            starts = [float(t) for t in data.get("recent_starts", [])]
        except (OSError, ValueError, TypeError, AttributeError):
            return []
        now = self.clock()
        return [t for t in starts if now - t < CRASH_MEMORY_S]

    def _write_status(self) -> None:
        """Write the status file at most once a second, atomically.

        It holds the last poll (a job that runs long stops the polls, which is
        how the daemon tells a stall), the last receive, the last job, when the
        worker last wrote it (``alive_at``: also while a job runs), and the
        recent deaths of its job process and restarts of the worker.
        """
        if not self.status_file:
            return
        now = self.clock()
        if now - self._last_status_write < 1.0:
            return
        self._last_status_write = now
        temporary = f"{self.status_file}.{os.getpid()}.tmp"
        recent = [t for t in self.crashes if now - t < CRASH_MEMORY_S]
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump({"pid": os.getpid(), "last_poll": self.last_poll_at, "alive_at": now,
                           "last_received": self.last_received_at,
                           "last_job": self.last_job, "jobs_done": self.jobs_done, "queues": self.queues,
                           "started_at": self.started_at,
                           "recent_starts": self._earlier_starts + [self.started_at],
                           "job_process_pid": self._job_process.pid if self._job_process is not None else None,
                           "job_process_deaths": recent, "last_death": self.last_crash}, handle)
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
            self.close()
        logger.info("worker %d stopped after %d job(s)", os.getpid(), self.jobs_done)
        if self.fatal_error is not None:
            raise self.fatal_error
        return 0

    def close(self) -> None:
        """Stop the job process, if one runs (``run`` does this when it returns)."""
        if self._job_process is not None:
            self._job_process.close()
            self._job_process = None
