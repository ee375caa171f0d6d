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

import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Sequence

from . import defaults
from .app import App, current_app
from .brokers.base import Broker, ReceivedMessage, cut_reason
from .config import WorkerGroup
from .errors import BrokerAuthError, MalformedMessageError, StatusStorePermanentError
from .healthfile import HealthFile
from .heartbeat import HeldMessages
from .jobprocess import JobProcess, JobProcessDied
from .message import JobMessage, decode
from .middleware import Middleware, MiddlewareChain
from .outage import Outage, traceback_for
from .registry import Registry
from .runner import REFUSALS_ATTRIBUTE, Action, MessageRunner, Settlement, known_jobs_text
from .settings import ISOLATIONS, default

logger = logging.getLogger("sqjobs.worker")

__all__ = ["HeldMessages", "Worker", "known_jobs_text", "ISOLATIONS"]

#: Pause after a broker error before trying again (doubled up to the cap); see :mod:`sqjobs.outage`.
ERROR_PAUSE_S = 1.0
ERROR_PAUSE_MAX_S = 30.0
#: Messages a worker remembers having failed to dead-letter (the oldest are forgotten first).
UNDEAD_MEMORY = 10_000
#: How long a worker remembers the deaths of its job process, for ``sqjobsd status``.
CRASH_MEMORY_S = 600.0

#: Pause after a broker error before trying again (doubled up to the cap).
ERROR_PAUSE_S = 1.0
ERROR_PAUSE_MAX_S = 30.0


class Worker:
    """Consumes ``queues`` and runs the jobs their messages name.

    ``source`` is the :class:`~sqjobs.app.App` whose broker, registry,
    settings and middleware the worker uses, or a bare Broker (then the
    default app's settings and registry go with it). Options left out take
    their ``[worker]`` defaults (see :mod:`sqjobs.settings`).
    """

    def __init__(
        self,
        source: App | Broker,
        queues: Sequence[str],
        *,
        prefetch: int | None = None,
        visibility_timeout_s: float | None = None,
        wait_s: float | None = None,
        max_jobs: int | None = None,
        burst: bool = False,
        registry: Registry | None = None,
        status_file: str | None = None,
        clock: Callable[[], float] = time.time,
        unknown_job_refusals: int | None = None,
        crash_allowance: int | None = None,
        isolation: str | None = None,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if isinstance(source, App):
            self.app = source if registry is None or registry is source.registry else App(
                source.settings, broker=source.broker, registry=registry)
        else:
            self.app = current_app().with_broker(source)
            if registry is not None and registry is not self.app.registry:
                self.app = App(self.app.settings, broker=source, registry=registry,
                               middleware=self.app.user_middleware)
        isolation = isolation or default("worker", "isolation")
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
        self.broker = self.app.broker
        self.registry = self.app.registry
        self.queues = list(queues)
        self.prefetch = max(1, min(prefetch or default("worker", "prefetch"), defaults.MAX_BATCH))
        self.visibility_timeout_s = visibility_timeout_s or default("worker", "visibility_timeout_s")
        self.wait_s = self.broker.default_wait_s if wait_s is None else wait_s
        self.max_jobs = default("worker", "max_jobs") if max_jobs is None else max_jobs
        self.burst = burst
        self.status_file = status_file
        self.clock = clock
        self.isolation = isolation
        #: Receives of a message naming a job unknown here before it is dead-lettered.
        self.unknown_job_refusals = max(1, unknown_job_refusals or default("worker", "unknown_job_refusals"))
        self.crash_allowance = max(0, default("worker", "crash_allowance") if crash_allowance is None
                                   else crash_allowance)
        self.held = HeldMessages(self.broker, self.visibility_timeout_s)
        #: Middleware of this worker only (its health file), after the app's.
        self.own_middleware: list[Middleware] = [HealthFile(status_file)] if status_file else []
        self.jobs_done = 0
        self.last_job: str | None = None
        self._stopping = threading.Event()
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
        #: Broker failures in a row in :meth:`run`: one line per backoff step, one when a receive works again.
        self.broker_outage = Outage(logger, "broker", "receiving", ERROR_PAUSE_S, ERROR_PAUSE_MAX_S)
        #: Messages whose move to the dead-letter queue failed, with their reason: never run again, only moved.
        self._undead: dict[str, str] = {}
        #: What stopped the worker for good (a status database no retry fixes); :meth:`run` raises it.
        self.fatal_error: StatusStorePermanentError | None = None

    @classmethod
    def for_group(cls, app: App, group: WorkerGroup, queues: Sequence[str] = (), **options: Any) -> Worker:
        """A worker with the options of ``[worker:NAME]`` ``group``; ``options`` given (not None) win."""
        chosen: dict[str, Any] = dict(prefetch=group.prefetch, visibility_timeout_s=group.visibility_timeout_s,
                      max_jobs=group.max_jobs, unknown_job_refusals=group.unknown_job_refusals,
                      crash_allowance=group.crash_allowance, isolation=group.isolation)
        chosen.update({key: value for key, value in options.items() if value is not None})
        return cls(app, list(queues) or list(group.queues), **chosen)

    @property
    def job_process(self) -> JobProcess | None:
        """The job process running now (None without isolation, or between two)."""
        return self._job_process

    @property
    def middleware(self) -> MiddlewareChain:
        """The app's middleware, then the worker's own."""
        return MiddlewareChain([*self.app.middleware, *self.own_middleware])

    def _make_runner(self, stop: threading.Event) -> MessageRunner:
        return MessageRunner(self.app, stop=stop, unknown_job_refusals=self.unknown_job_refusals,
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
            process = JobProcess(self._make_runner)
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
            self.middleware.after_dead_letter(self._readable(message), reason)
            return
        self._undead[message.message_id] = reason
        while len(self._undead) > UNDEAD_MEMORY:
            self._undead.pop(next(iter(self._undead)))
        try:
            self.broker.change_visibility(message.queue, message.receipt, defaults.DEAD_LETTER_RETRY_S)
        except Exception as exc:
            logger.warning("message %s on %s: cannot hide it until the next try to dead-letter it: %s",
                           message.message_id, message.queue, exc, exc_info=traceback_for(logger, exc))

    @staticmethod
    def _readable(message: ReceivedMessage) -> JobMessage | str:
        """The message decoded for the middleware, or its raw body when it cannot be."""
        try:
            decoded = decode(message.body, message.message_id)
        except MalformedMessageError:
            return message.body
        decoded.queue = message.queue
        return decoded

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

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Consume until stopped (signal, --max-jobs, or --burst with empty queues); return exit code 0.

        Raises BrokerAuthError, and StatusStorePermanentError when the status
        database failed in a way no retry fixes (the message was handed back).
        """
        logger.info("worker %d consuming %s", os.getpid(), ", ".join(self.queues))
        middleware = self.middleware
        middleware.worker_started(self)
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
            middleware.worker_stopped(self)
        logger.info("worker %d stopped after %d job(s)", os.getpid(), self.jobs_done)
        if self.fatal_error is not None:
            raise self.fatal_error
        return 0

    def close(self) -> None:
        """Stop the job process, if one runs (``run`` does this when it returns)."""
        if self._job_process is not None:
            self._job_process.close()
            self._job_process = None
