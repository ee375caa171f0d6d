"""The worker: receive -> run -> delete, retry or dead-letter, with a visibility heartbeat.

One worker consumes one or more queues in priority order (the first queue is
served first). It receives ahead of the jobs it runs, so that they never
wait for the broker, and holds every message it received until it is
settled; a heartbeat thread keeps them hidden while it does. SIGTERM or
SIGINT stops it gracefully: no new receive, the running jobs finish, the
messages that did not start are handed back at once, exit code 0.

With ``isolation="process"`` (the default) the jobs run in a job process the
worker forks and supervises (:mod:`sqjobs.worker.jobprocess`), up to ``threads`` at
once: a job that crashes, hangs in C code or holds the GIL cannot take the
worker, its heartbeat or the other messages it holds with it.
``isolation="none"`` runs them in the worker itself, one at a time
(:mod:`sqjobs.worker.inline`), for debugging with pdb and for tests that step the
loop.

How much it holds: ``threads`` running plus one receive (``prefetch``)
ahead; once its jobs prove quick, two receives ahead (with a job process),
so that the next batch is there before the one running ran out; no more
than it expects to start within ``hold_s`` when they are slow. A message that waited ``hold_s`` unstarted
behind a long job is handed back for another worker (where the broker takes
the receive back, so that it costs no attempt: not on SQS). So ``hold_s``
(``[worker] hold_s``, ``--hold``) is the hand-back timer: how long a message
the worker has in flight (:mod:`sqjobs.worker.heartbeat`) may wait unstarted. It
has nothing to do with jobs *held* in the status database until they are
due (:mod:`sqjobs.schedule.later`).

The pieces, each in its module: what the worker and its job process say
(:mod:`sqjobs.worker.protocol`), where each message stands (:mod:`sqjobs.worker.handover`),
what runs in the job process (:mod:`sqjobs.worker.jobprocess`, or
:mod:`sqjobs.worker.inline`), the deadlines both read (:mod:`sqjobs.worker.tokens`), the
deletes it owes (:mod:`sqjobs.worker.deletes`), the heartbeat (:mod:`sqjobs.worker.heartbeat`).

What to do with each message is decided by :mod:`sqjobs.worker.runner`; the worker
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

from .. import defaults, logs
from ..app import App, current_app
from ..brokers.base import Broker, ReceivedMessage, cut_reason
from ..brokers.sqs_limits import check_queue_name
from ..config import WorkerGroup
from ..errors import BrokerAuthError, JobTimeoutError, MalformedMessageError, StatusStorePermanentError
from ..message import JobMessage, about, decode, glimpse
from ..middleware.base import Middleware, MiddlewareChain
from ..middleware.unique import KeyReleases
from ..outage import Outage, traceback_for
from ..registry import Registry
from ..settings import ISOLATIONS, default
from .burst import BurstEnd
from .deletes import CARRIED_DELETES_MAX, PendingDeletes
from .handover import Handover, Item
from .healthfile import HealthFile
from .heartbeat import InFlight
from .inline import InlineJobs
from .jobprocess import JobProcess, JobProcessDied, crash_error, timed_out_error
from .protocol import Done, Recycle
from .runner import REFUSALS_ATTRIBUTE, Action, MessageRunner, Settlement, known_jobs_text, success_line
from .tokens import QUEUED, STARTED, TIMED_OUT

logger = logging.getLogger("sqjobs.worker")

__all__ = ["CARRIED_DELETES_MAX", "InFlight", "Worker", "known_jobs_text", "ISOLATIONS"]

#: Pause after a broker error before trying again (doubled up to the cap); see :mod:`sqjobs.outage`.
ERROR_PAUSE_S = 1.0
ERROR_PAUSE_MAX_S = 30.0
#: Messages a worker remembers having failed to dead-letter (the oldest are forgotten first).
UNDEAD_MEMORY = 10_000
#: How long a worker remembers the deaths of its job process, for ``sqjobsd status``.
CRASH_MEMORY_S = 600.0
#: Longest wait for the job process's answers before the worker looks at its timers again.
TICK_S = 0.1
#: How often a busy worker looks for messages held back too long and jobs past their hard deadline.
TIMERS_S = 0.05
#: Weight of the newest job duration in the running average that sizes how far ahead the worker receives.
DURATION_WEIGHT = 0.2
#: Receives a worker with a job process holds ahead of its threads once its jobs prove quick: one runs down in
#: the job process while the next is received, so the job process does not wait for the broker (what it
#: gained: docs/explanation/benchmarks.rst, "Two receives ahead").
RECEIVES_AHEAD = 2

Jobs = JobProcess | InlineJobs


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
        threads: int | None = None,
        hold_s: float | None = None,
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
        self.threads = max(1, threads or default("worker", "threads"))
        if isolation == "none" and self.threads > 1:
            raise ValueError(f"{self.threads} threads need isolation = process: isolation = none runs one job at "
                             "a time, in the worker itself")
        self.broker = self.app.broker
        self.registry = self.app.registry
        self.queues = [check_queue_name(queue) for queue in queues]
        self.prefetch = max(1, min(prefetch or default("worker", "prefetch"), defaults.MAX_BATCH))
        self.hold_s = default("worker", "hold_s") if hold_s is None else hold_s
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
        self.in_flight = InFlight(self.broker, self.visibility_timeout_s)
        #: Middleware of this worker only (its health file), after the app's.
        self.own_middleware: list[Middleware] = [HealthFile(status_file)] if status_file else []
        #: Attempts that ran (``--max-jobs`` counts them), and jobs whose last attempt ran (not retried).
        self.jobs_done = 0
        #: When (monotonic) this worker was made: a worker that reached max_jobs lives WORKER_MIN_LIFETIME_S.
        self.made_monotonic = time.monotonic()
        #: True once the worker stops because it ran max_jobs attempts.
        self.max_jobs_reached = False
        self.jobs_finished = 0
        #: With --burst: when the queues are empty, whether to wait for a message due soon or leave.
        self._burst_end = BurstEnd(self.broker, self.queues) if burst else None
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
        #: The messages held: parked here, or handed over to run.
        self.handover = Handover()
        #: Running average of job durations (None until a job ran): how far ahead to receive.
        self._average_s: float | None = None
        #: A busy worker asks the broker again no sooner than this (monotonic) after finding nothing.
        self._next_receive_at = 0.0
        #: When (monotonic) the worker next looks at its hold-back and deadline timers.
        self._timers_at = 0.0
        self._jobs: Jobs | None = None
        #: Broker failures in a row: one line per backoff step, one when a receive works again.
        self.broker_outage = Outage(logger, "broker", "receiving", ERROR_PAUSE_S, ERROR_PAUSE_MAX_S)
        #: Unique keys of finished jobs, freed once the broker confirmed their delete or dead-letter move.
        self.key_releases = KeyReleases(self.app.settings.database_url)
        #: Messages whose job succeeded, deleted together (see :mod:`sqjobs.worker.deletes`).
        self.deletes = PendingDeletes(self.broker, self.in_flight, self.key_releases, logger, ERROR_PAUSE_S,
                                      ERROR_PAUSE_MAX_S)
        #: Messages whose move to the dead-letter queue failed, with their settlement: never run again, only moved.
        self._undead: dict[str, Settlement] = {}
        #: Messages dead-lettered because their signature did not verify (unsigned, forged, unknown key).
        self.refused_unverified = 0
        #: The signer (None: signing off); read now, so that keys it refuses stop the worker at start-up.
        self.signer = self.app.signer
        #: What stopped the worker for good (a status database no retry fixes); :meth:`run` raises it.
        self.fatal_error: StatusStorePermanentError | None = None

    @classmethod
    def for_group(cls, app: App, group: WorkerGroup, queues: Sequence[str] = (), **options: Any) -> Worker:
        """A worker with the options of ``[worker:NAME]`` ``group``; ``options`` given (not None) win."""
        chosen: dict[str, Any] = dict(prefetch=group.prefetch, visibility_timeout_s=group.visibility_timeout_s,
                                      max_jobs=group.max_jobs, unknown_job_refusals=group.unknown_job_refusals,
                                      crash_allowance=group.crash_allowance, isolation=group.isolation,
                                      threads=group.threads, hold_s=group.hold_s)
        chosen.update({key: value for key, value in options.items() if value is not None})
        return cls(app, list(queues) or list(group.queues), **chosen)

    @property
    def job_process(self) -> JobProcess | None:
        """The job process running now (None without isolation, or between two)."""
        return self._jobs if isinstance(self._jobs, JobProcess) else None

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
        """Ask the worker to stop after the running jobs; safe from a signal handler."""
        self._stopping.set()
        self.broker.interrupt()
        if self._jobs is not None:
            self._jobs.stop_retrying()
        if signum is not None:
            self.in_flight.notify(self._stop_notice(signal.Signals(signum).name))

    def _stop_notice(self, what: str) -> str:
        """The line a stop request logs: what runs now and what will be handed back."""
        running = [item for item in list(self.handover.handed.values()) if self._state(item.token) == STARTED]
        waiting = len(self.handover) - len(running)
        back = f"{waiting} prefetched message(s) are handed back"
        if not running:
            return f"{what} received: stopping (no job running)" + (f"; {back}" if waiting else "")
        names = ", ".join(self._describe(item.message) for item in running)
        verb = "finishes" if len(running) == 1 else "finish"
        return (f"{what} received: no new receive; job{'s' if len(running) > 1 else ''} {names} {verb} first, "
                f"then {back} and the worker exits")

    @staticmethod
    def _describe(message: ReceivedMessage) -> str:
        """``<job id> <name> on <queue>`` for a log line (the message id when no job id can be read)."""
        text = about(message, message_id=False)
        return text.removeprefix("job ") if text.startswith("job ") else f"of {text}"

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT graceful stops."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # -- receiving ---------------------------------------------------------------------

    def receive(self, wait_s: float, max_messages: int | None = None) -> list[ReceivedMessage]:
        """Receive from the first queue (in priority order) that has messages; wait on the last.

        Where the broker deletes while it receives, the first receive also
        deletes the messages whose jobs succeeded since the last one (one
        write instead of two; if it fails, neither happened and they stay
        held).
        """
        count = max_messages or self.prefetch
        carried = self.deletes.take_for_receive()
        for index, queue in enumerate(self.queues):
            last = index == len(self.queues) - 1
            wait = wait_s if last else 0
            if carried:
                messages = self.broker.delete_then_receive([m.receipt for m in carried], queue, count, wait,
                                                           self.visibility_timeout_s)
                self.deletes.received(carried)
                carried = []
            else:
                messages = self.broker.receive(queue, count, wait, self.visibility_timeout_s)
            if messages:
                return messages
            if self.stopping:
                break
        return []

    def _capacity(self) -> int:
        """How many messages the worker may hold now: one per thread, and what it expects to start soon.

        Ahead of its threads it holds one receive (``prefetch``); once a job
        duration is known, up to RECEIVES_AHEAD receives (with a job process),
        but no more than its free threads are expected to start within
        ``hold_s`` at the running average job duration; none while every
        thread runs a job that has run longer than ``hold_s`` already.
        ``hold_s`` 0: always one receive ahead.
        """
        ahead = self.prefetch
        if self.hold_s > 0:
            long_ns = time.monotonic_ns() - int(self.hold_s * 1e9)
            received_before = long_ns / 1e9  # a job that started before then was received before then
            long_running = 0
            if self._jobs is not None:
                for item in self.handover.handed.values():
                    if item.received_at >= received_before:
                        continue
                    entry = self._jobs.state(item.token)
                    if entry is not None and entry.state == STARTED and entry.started_ns < long_ns:
                        long_running += 1
            free = self.threads - long_running
            if free <= 0:
                ahead = 0
            elif self._average_s is not None:
                most = self.prefetch * (RECEIVES_AHEAD if self.isolation == "process" else 1)
                ahead = min(most, int(self.hold_s * free / max(self._average_s, 1e-6)))
        capacity = self.threads + ahead
        if self.max_jobs:
            capacity = min(capacity, max(self.max_jobs - self.jobs_done, 0))
        return capacity

    def _wanted(self, now: float) -> int:
        """How many messages to receive now (0: none): a thread is free, or there is room for a whole receive.

        With its threads busy, a worker waits until what it holds ahead of
        them ran down far enough for a full receive: fewer, fuller receives
        cost the broker (and the CPU) less per message.
        """
        if self.stopping or self.handover.has_suspect:
            return 0  # a suspect runs once the messages held with it ran: none are added meanwhile
        capacity = self._capacity()
        held = len(self.handover)
        room = capacity - held
        if room <= 0:
            return 0
        if held and (now < self._next_receive_at or
                     (held >= self.threads and room < max(1, min(self.prefetch, capacity - self.threads)))):
            return 0
        return min(room, self.prefetch)

    def _take_in(self, wait_s: float, max_messages: int) -> int:
        """Receive up to ``max_messages`` and park them; return how many came."""
        self.last_poll_at = self.clock()
        messages = self.receive(wait_s, max_messages)
        self.broker_outage.recovered()
        if not messages:
            return 0
        self.last_received_at = self.clock()
        self.in_flight.add(messages)
        now = time.monotonic()
        items: list[Item] = []
        spare: list[ReceivedMessage] = []
        suspect_held = self.handover.has_suspect
        for message in messages:
            if message.unsettled_before:
                if suspect_held:
                    spare.append(message)
                    continue
                suspect_held = True
                logger.warning("%s comes back from a worker that died while holding it: it runs "
                               "alone, once the jobs handed over before it finished", about(message))
                items.append(Item(message, now, alone=True))
            else:
                items.append(Item(message, now))
        if spare:
            logger.warning("%d other message(s) back from a worker that died are handed back: one runs alone at "
                           "a time", len(spare))
            self.in_flight.hand_back(spare)
        self.handover.park(items)
        return len(messages)

    # -- handing over ------------------------------------------------------------------

    def _jobs_ready(self) -> Jobs:
        """The job process (or the inline runner), started (again) if it is not running."""
        if self._jobs is None or not self._jobs.alive:
            if self.isolation == "none":
                self._jobs = InlineJobs(self._make_runner(self._stopping))
            else:
                process = JobProcess(self._make_runner, self.threads)
                process.start()
                self._jobs = process
        return self._jobs

    def _state(self, token: int) -> int | None:
        """QUEUED, STARTED... for a handed-over token, as its job process's table says."""
        jobs = self._jobs
        if jobs is None:
            return None
        entry = jobs.state(token)
        return entry.state if entry is not None else None

    def _hand_over(self, now: float) -> None:
        """Hand parked messages over to run, as far as the rules and the job process allow."""
        if not self.handover.parked:
            return
        if self._jobs is not None and self._jobs.recycling:
            self._retire_job_process()
            return
        if self.stopping:
            self._give_back_unstarted()
        limit = self.threads + RECEIVES_AHEAD * self.prefetch if self.isolation == "process" else 1
        room = limit - len(self.handover.handed)
        if room <= 0:
            return
        items = self.handover.take(room, now, urgent_only=self.stopping)
        if not items:
            return
        undead = [item for item in items if item.message.message_id in self._undead]
        for item in undead:
            self.handover.settled(item.token)
            self.apply(item.message, self._undead[item.message.message_id])
        items = [item for item in items if item not in undead]
        if not items:
            return
        if items[0].alone:
            self.deletes.flush()  # if it takes the worker down, it takes no finished message with it
        try:
            self._jobs_ready().submit([item.request() for item in items])
        except JobProcessDied as death:
            self._after_death(death)

    def _retire_job_process(self) -> None:
        """The job process asked to be replaced: take back what it did not start; replace it once it is idle."""
        jobs = self._jobs
        assert jobs is not None
        withdrawn = [item.token for item in self.handover.handed.values() if jobs.withdraw(item.token)]
        self.handover.park(self.handover.take_back(withdrawn), front=True)
        if not self.handover.handed:
            logger.warning("job process %d replaced: a job's thread is stuck past its timeout", jobs.pid)
            jobs.close(timeout_s=defaults.TIMEOUT_GRACE_S)
            self._jobs = None

    def _give_back_unstarted(self) -> None:
        """Stopping: hand back every message that did not start (parked, or queued in the job process)."""
        items = self.handover.unpark_all(keep_failures=True)
        jobs = self._jobs
        if jobs is not None:
            withdrawn = [item.token for item in self.handover.handed.values()
                         if item.error is None and jobs.withdraw(item.token)]
            items += self.handover.take_back(withdrawn)
        if items:
            self.in_flight.hand_back([item.message for item in items])

    def _hand_back_overdue(self, now: float) -> None:
        """Hand back, for another worker, the messages that waited ``hold_s`` unstarted behind long jobs.

        Only where the broker takes the receive back (it costs no attempt):
        on SQS the worker only receives less once it knows its jobs are slow.
        """
        if not self.broker.exact_receive_counts or self.hold_s <= 0 or self.isolation == "none":
            return
        cutoff = now - self.hold_s
        items = self.handover.unpark_waiting(cutoff)
        jobs = self._jobs
        if jobs is not None:
            waiting = [item.token for item in self.handover.handed.values()
                       if item.received_at < cutoff and item.error is None and not item.alone
                       and self._state(item.token) == QUEUED]
            items += self.handover.take_back([token for token in waiting if jobs.withdraw(token)])
        if items:
            logger.info("%d message(s) waited over %g s behind running jobs: handed back for another worker",
                        len(items), self.hold_s)
            self.in_flight.hand_back([item.message for item in items])

    # -- answers from the job process -------------------------------------------------

    def _collect(self, timeout_s: float) -> int:
        """Take the job process's answers (waiting up to ``timeout_s``) and settle them; return how many."""
        jobs = self._jobs
        if jobs is None or not self.handover.handed:
            return 0
        try:
            events = jobs.events(timeout_s)
        except JobProcessDied as death:
            self._after_death(death)
            return 0
        settled = 0
        for event in events:
            if isinstance(event, Done):
                item = self.handover.settled(event.token)
                if item is not None:
                    self._settled(item, event.settlement)
                    settled += 1
            elif isinstance(event, Recycle):
                jobs.recycling = True
                logger.error("job process %d: %s; it is replaced once its other jobs finished", jobs.pid, event.reason)
        return settled

    def _settled(self, item: Item, settlement: Settlement) -> None:
        if settlement.ran and settlement.duration_s is not None:
            previous = self._average_s
            self._average_s = settlement.duration_s if previous is None else (
                previous + DURATION_WEIGHT * (settlement.duration_s - previous))
        self.apply(item.message, settlement)
        group = item.group
        if group is not None and settlement.action is not Action.DELETE:
            # The group waits for this one's retry: the rest of it goes back unrun, to keep its order.
            behind = self.handover.unpark_group(group)
            if behind:
                self.in_flight.hand_back([other.message for other in behind])
        if self.max_jobs and self.jobs_done >= self.max_jobs:
            self.max_jobs_reached = True
            self._stopping.set()

    def _check_deadlines(self) -> None:
        """Kill the job process when a job ran past its hard deadline (its timeout and a grace) and none settled it.

        The deadline is the one in the token table. With threads the job
        process's monitor settles such a job first (TIMEOUT_GRACE_S), without
        its neighbours; the worker kills the job process only when it did not
        within TIMEOUT_MONITOR_SLACK_S more (C code holding the GIL). Either
        takes the token in the table first, so the attempt is settled once.
        """
        process = self.job_process
        if process is None or process.table is None:
            return
        grace_s = defaults.TIMEOUT_GRACE_S + (defaults.TIMEOUT_MONITOR_SLACK_S if self.threads > 1 else 0.0)
        for item in list(self.handover.handed.values()):
            entry = process.table.time_out(item.token, grace_s)
            if entry is None:
                continue  # within its deadline and grace, ended, or settled by the job process's monitor
            timeout_s = self._timeout_of(item.message) or (entry.deadline_ns - entry.started_ns) / 1e9
            error = timed_out_error(item.message, timeout_s, f"; its job process was killed {grace_s:g} s after "
                                  "the timeout")
            process.kill()
            self._after_death(JobProcessDied(str(error), timed_out=item.token), timeout_error=error)
            return

    def _timeout_of(self, message: ReceivedMessage) -> float | None:
        """The ``timeout`` of the job ``message`` names (None when unknown here)."""
        try:
            return self.registry.get(decode(message.body, message.message_id).name).timeout
        except Exception:  # noqa: BLE001 - only for a log line; the table's figure serves instead
            return None

    def _after_death(self, death: JobProcessDied, timeout_error: JobTimeoutError | None = None) -> None:
        """The job process died: blame the job that killed it, run the others again.

        The attempt of the one job that was running when it died is
        recorded as failed (by a new job process); jobs queued behind it run
        again. When several were running (threads) and none passed its
        deadline, which one killed it is unknown: each runs again alone. One
        settled as timed out already (its token TIMED_OUT) is recorded as
        timed out, never run again.
        """
        jobs = self._jobs
        self._jobs = None
        handed = list(self.handover.handed.values())
        states = {item.token: (jobs.state(item.token) if jobs is not None else None) for item in handed}
        running = [item for item in handed
                   if item.error is None and (entry := states[item.token]) is not None
                   and entry.state in (STARTED, TIMED_OUT)]
        recording = [item for item in handed if item.error is not None]
        now_ns = time.monotonic_ns()
        ran_s = {item: (now_ns - entry.started_ns) / 1e9 for item in running if (entry := states[item.token])}
        timed_out = [item for item in running if (entry := states[item.token]) and entry.state == TIMED_OUT]
        now = self.clock()
        self.crashes = [t for t in self.crashes if now - t < CRASH_MEMORY_S] + [now]
        culprit: Item | None = None
        if death.timed_out is not None:
            culprit = next((item for item in running if item.token == death.timed_out), None)
        elif len(running) == 1:
            culprit = running[0]
        where = (about(culprit.message) if culprit is not None
                 else f"{len(running)} running job(s)")
        self.last_crash = f"{death.description} ({where})"
        logger.error("%s: the job process %s; starting a new job process", where,
                     death.description.removeprefix("the job process "))
        taken = self.handover.take_back([item.token for item in handed])
        again: list[Item] = []
        for item in taken:
            if item in recording:
                logger.error("%s: the job process died too while recording its failed attempt; the "
                             "message is hidden for its visibility timeout and counted by the crash ceiling",
                             about(item.message))
                self.apply(item.message, Settlement(Action.POSTPONE, delay_s=self.visibility_timeout_s))
            elif item is culprit or item in timed_out:
                item.duration_s = ran_s.get(item, 0.0)
                if item is culprit and timeout_error is not None:
                    item.error = timeout_error
                elif item in timed_out:  # its job process settled it as timed out, and died before it told
                    item.error = timed_out_error(item.message, self._timeout_of(item.message) or 0.0,
                                                 " (its thread cannot be stopped); then its job process "
                                                 f"{death.description.removeprefix('the job process ')}")
                else:
                    item.error = crash_error(death.description)
                again.append(item)
            elif item in running and death.timed_out is None:
                item.alone = True  # one of several that ran when it died: each runs again alone
                again.append(item)
            else:
                again.append(item)
        again.sort(key=lambda item: (item.error is None, item.alone))
        self.handover.park(again, front=True)

    # -- settling ----------------------------------------------------------------------

    def apply(self, message: ReceivedMessage, settlement: Settlement) -> None:
        """Apply ``settlement`` to ``message`` on the broker."""
        if settlement.ran:
            self.jobs_done += 1
            self.jobs_finished += settlement.action is not Action.POSTPONE
            self.last_job = settlement.job_id
        if settlement.fatal:
            logger.error("%s: handed back; the worker stops: %s", about(message), settlement.fatal)
            self.fatal_error = StatusStorePermanentError(settlement.fatal)
            self._stopping.set()
        action = settlement.action
        if action is Action.DELETE:
            if settlement.ran:
                logs.info_line(logger, success_line(message, settlement))
            if settlement.unique_key:
                self.key_releases.expect(message.receipt, settlement.unique_key, settlement.job_id or "")
            self.deletes.add(message)
        elif action is Action.POSTPONE:
            if self._burst_end is not None:
                self._burst_end.postponed(settlement.delay_s)
            self._settle(message, lambda: self.broker.postpone(message.queue, message.receipt, settlement.delay_s))
        elif action is Action.REFUSE:
            attributes = {REFUSALS_ATTRIBUTE: str(settlement.refusals)}
            self._settle(message, lambda: self.broker.requeue(message.queue, message, settlement.delay_s, attributes))
        elif action is Action.DEAD_LETTER:
            self._dead_letter(message, settlement)
        else:
            self.in_flight.hand_back([message], unstarted=False)

    def _dead_letter(self, message: ReceivedMessage, settlement: Settlement) -> None:
        """Move ``message`` to the dead-letter queue; log the move once it happened.

        If the move fails, the message stays in its queue, hidden for
        DEAD_LETTER_RETRY_S, and is remembered: when it comes back to this
        worker it is moved again, never run again. A message whose signature
        did not verify is counted, and the middleware get its raw body (its
        job id is not to be believed: no status row is changed on its word).
        """
        reason = settlement.reason
        copies: list[str | None] = []  # the dead-letter copy's message id, where it is a new message (SQS)
        if self._settle(message, lambda: copies.append(self.broker.dead_letter(message.queue, message, reason))):
            copy = f" (as message {copies[0]})" if copies and copies[0] not in (None, message.message_id) else ""
            self._undead.pop(message.message_id, None)
            if settlement.unverified:
                self.refused_unverified += 1
                claims = glimpse(message.body, message.message_id)  # its id unverified: the message comes first
                logger.error("message %s on %s (claiming job %s %s, unverified) moved to the dead-letter queue%s "
                             "unrun: %s (%d message(s) refused for their signature since the worker started)",
                             message.message_id, message.queue, claims.id or "?", claims.name or "?", copy,
                             cut_reason(reason), self.refused_unverified)
                self.middleware.after_dead_letter(message.body, reason)
                return
            logger.error("%s moved to the dead-letter queue%s: %s", about(message), copy, cut_reason(reason))
            readable = self._readable(message)
            if not isinstance(readable, str):
                self.key_releases.dead_lettered(readable)
            self.middleware.after_dead_letter(readable, reason)
            return
        self._undead[message.message_id] = Settlement(Action.DEAD_LETTER, reason=reason,
                                                      unverified=settlement.unverified)
        while len(self._undead) > UNDEAD_MEMORY:
            self._undead.pop(next(iter(self._undead)))
        try:
            self.broker.change_visibility(message.queue, message.receipt, defaults.DEAD_LETTER_RETRY_S)
        except Exception as exc:
            logger.warning("%s: cannot hide it until the next try to dead-letter it: %s",
                           about(message), exc, exc_info=traceback_for(logger, exc))

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
        self.in_flight.release(message)
        try:
            action()
            return True
        except BrokerAuthError:
            raise
        except Exception as exc:
            logger.error("%s: could not settle it; it will be delivered again: %s",
                         about(message), exc, exc_info=traceback_for(logger, exc))
            return False

    # -- the loop ----------------------------------------------------------------------

    def _work_on(self, now: float, hand_back: bool = True) -> int:
        """One turn with messages held: hand over, take answers, keep the timers; return how many settled."""
        self._hand_over(now)
        timeout_s = TICK_S if self.handover.handed else 0.0
        deletes = self.deletes
        if deletes.messages:
            timeout_s = min(timeout_s, max(deletes.due_at() - now, 0))
        if not self.stopping and self._next_receive_at > now:
            timeout_s = min(timeout_s, self._next_receive_at - now)
        settled = self._collect(timeout_s)
        now = time.monotonic()
        if self.handover.parked and not self.handover.handed:
            self._hand_over(now)
        if now >= self._timers_at:  # a look at every handed message: not on every turn of a busy worker
            self._timers_at = now + TIMERS_S
            if hand_back and not self.stopping:
                self._hand_back_overdue(now)
            self._check_deadlines()
        if deletes.messages and deletes.due(now, running=bool(self.handover.handed), receiving=True):
            deletes.flush()  # else the loop's next receive deletes them
        return settled

    def run_once(self, wait_s: float = 0) -> int:
        """Receive one batch and settle all of it; return how many messages were settled."""
        self._take_in(wait_s, self.prefetch)
        settled = 0
        while self.handover:
            if self.stopping:
                self._give_back_unstarted()
                if not self.handover.handed and not self.handover.parked:
                    break
            settled += self._work_on(time.monotonic(), hand_back=False)
        self.deletes.flush(last=True)
        self.key_releases.retry()
        return settled

    def run(self) -> int:
        """Consume until stopped (signal, --max-jobs, or --burst with empty queues); return exit code 0.

        Raises BrokerAuthError, and StatusStorePermanentError when the status
        database failed in a way no retry fixes (the message was handed back).
        """
        logger.info("worker %d consuming %s%s", os.getpid(), ", ".join(self.queues),
                    f" with {self.threads} threads" if self.threads > 1 else "")
        if self.signer is None:
            logger.info("worker %d: signing is off: messages run without a signature check (set [sqjobs] "
                        "signing_keys or SQJOBS_SIGNING_KEYS to refuse unsigned ones)", os.getpid())
        else:
            logger.info("worker %d: signing is on: only messages signed with key id(s) %s run; others go to the "
                        "dead-letter queue", os.getpid(), ", ".join(self.signer.key_ids))
        middleware = self.middleware
        middleware.worker_started(self)
        self.in_flight.start()
        try:
            self._loop()
        finally:
            try:
                self._give_back_unstarted()
                self.deletes.flush(last=True)
                self.key_releases.retry(last=True)
            finally:
                self.in_flight.stop()
                self.close()
                middleware.worker_stopped(self)
        logger.info("worker %d stopped after %d attempt(s); %d job(s) finished", os.getpid(), self.jobs_done,
                    self.jobs_finished)
        if self.fatal_error is not None:
            raise self.fatal_error
        if self.max_jobs_reached:  # a quick exit would count as a failed start under supervisord
            threading.Event().wait(max(self.made_monotonic + defaults.WORKER_MIN_LIFETIME_S - time.monotonic(), 0.0))
        return 0

    def _loop(self) -> None:
        burst_wait_s = 0.0  # --burst: how long the next receive waits for a message due soon
        while True:
            now = time.monotonic()
            if self.stopping:
                self._give_back_unstarted()
                if not self.handover:
                    return
            wanted = self._wanted(now)
            if self.key_releases.due:
                self.key_releases.retry()  # keys whose free failed, after its pause
            if self.deletes.messages and self.deletes.due(now, running=bool(self.handover.handed),
                                                          receiving=bool(wanted)):
                self.deletes.flush()  # no receive deletes them now (or their delete failed: tried after its pause)
            if not self.handover and self.broker_outage.ongoing and now < self._next_receive_at:
                self._stopping.wait(self._next_receive_at - now)  # the pause the outage's last line announced
                continue
            if wanted:
                idle = not self.handover
                try:
                    got = self._take_in(self.wait_s if idle and not self.burst else burst_wait_s, wanted)
                except BrokerAuthError:
                    raise
                except Exception as exc:
                    pause = self.broker_outage.failed(exc)
                    if idle:
                        self._stopping.wait(pause)
                    else:
                        self._next_receive_at = time.monotonic() + pause
                    continue
                if got:
                    burst_wait_s = 0.0
                    if self._burst_end is not None:
                        self._burst_end.received()
                    self._hand_over(time.monotonic())
                elif idle and self._burst_end is not None:
                    wait_s = self._burst_end.wait_s()
                    if wait_s is None:
                        return
                    burst_wait_s = wait_s
                elif not idle:
                    self._next_receive_at = time.monotonic() + self.broker.busy_poll_s
                continue
            if not self.handover:
                return  # no room and nothing held: --max-jobs reached
            self._work_on(now)

    def close(self) -> None:
        """Stop the job process, if one runs (``run`` does this when it returns)."""
        if self._jobs is not None:
            self._jobs.close()
            self._jobs = None
