"""Stall detection and the watchdog that restarts stalled workers.

Every worker writes a status file (``--status-file``, at most once a second,
before each receive): ``{pid, last_poll, last_job, jobs_done, queues}``. A
worker that supervisord reports RUNNING but whose last poll is older than
``[daemon] stall_timeout_s`` is *stalled*: stuck in a call, or in a job that
runs far longer than it should. Until a new process wrote its first status,
its start time stands in for the last poll (a status file left by an earlier
process of the same name has another pid and is ignored).

A worker that polls but has received nothing for as long while messages wait
on its queues is *starved* (its broker connection went wrong: a queue file
replaced under it, a dead endpoint answering empty); it is treated like a
stalled one. FIFO queues are left out of that count: a locked message group
holds visible messages nobody may take.

A process is *crashing* when it is dying now, again and again: supervisord
has it in BACKOFF (it died within ``startsecs`` of its start and waits to be
started again), or its worker process, or the worker's job process, died
``CRASH_THRESHOLD`` times within ``CRASH_WINDOW_S`` and the last of those
deaths is less than ``CRASH_RECOVERED_S`` old. Deaths are those the worker's
health file tells of (:mod:`sqjobs.healthfile`): a kill, a crash, an exit on
an error; a stop that was asked for (``sqjobsd stop``, ``reload``,
``--max-jobs``) is none. So a worker killed once and running again, or one
stopped and started, is not crashing; one that failed three times and then
ran for ``CRASH_RECOVERED_S`` is not crashing any more.

``sqjobsd status`` reports stalled, starved and crashing workers. The watchdog, a program run by
supervisord itself (``sqjobsd watchdog``), looks every
``[daemon] watchdog_interval_s`` and restarts a stalled worker: SIGTERM (a
graceful stop, in case it can still finish), then SIGKILL to its process group
after a short grace; supervisord starts a new one (autorestart) and the
message it held is delivered again once its visibility timeout runs out.
Each of these steps is one line in the watchdog's log and, in the same
format, appended to the worker's own log file (``Layout.process_log``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from sqjobs.brokers import Broker, create_broker
from sqjobs.config import Settings
from sqjobs.errors import DaemonError
from sqjobs.logs import Formatter
from sqjobs.worker.healthfile import earlier_deaths

from .layout import Layout
from .procs import pid_alive
from .rpc import SupervisorClient
from .supervisor_conf import WORKER_PREFIX

logger = logging.getLogger("sqjobs.daemon")

#: The window in which deaths are counted, and how many make a worker "crashing".
CRASH_WINDOW_S = 300.0
CRASH_THRESHOLD = 3
#: A process whose last death is older than this has recovered: it is no longer crashing.
CRASH_RECOVERED_S = 60.0

#: Counts the messages waiting (visible) on some queues.
Backlog = Callable[[Sequence[str]], int]


def backlog_counter(settings: Settings) -> Backlog:
    """A Backlog over the settings' broker (created on first use; errors count as no backlog)."""
    brokers: list[Broker] = []

    def count(queues: Sequence[str]) -> int:
        try:
            if not brokers:
                brokers.append(create_broker(settings.broker_url, settings.section_values("sqs")))
            return sum(brokers[0].stats(q).visible for q in queues if not q.endswith(".fifo"))
        except Exception as exc:  # the check must never take the daemon down
            logger.warning("cannot count the messages waiting on %s: %s", ", ".join(queues), exc)
            return 0

    return count


def read_worker_status(path: str) -> dict[str, Any] | None:
    """The worker status file at ``path`` as a dict; None when it is missing or not readable JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class ProcessHealth:
    """What sqjobsd knows about one supervised process."""

    #: ``group:name`` as supervisord names it.
    full_name: str
    name: str
    state: str
    pid: int
    uptime_s: float | None
    #: Seconds since the worker's last poll (None: not a worker, or no poll yet).
    last_poll_age_s: float | None
    last_job: str | None
    jobs_done: int | None
    stalled: bool
    #: A worker that polls but receives nothing while messages wait on its queues.
    starved: bool = False
    #: Seconds since the worker last received a message (None: not a worker, or not known).
    last_received_age_s: float | None = None
    #: Deaths of the worker's job process, and of the worker processes before this one, within CRASH_WINDOW_S.
    job_process_deaths: int = 0
    worker_deaths: int = 0
    last_death: str | None = None
    #: Either of them died CRASH_THRESHOLD times in the window, the last time within CRASH_RECOVERED_S.
    dying_again: bool = False

    @property
    def crashing(self) -> bool:
        """True when the process is crashing now: in BACKOFF, or running (or starting) and dying again and again."""
        return self.state == "BACKOFF" or (self.state in ("RUNNING", "STARTING") and self.dying_again)

    @property
    def healthy(self) -> bool:
        """True when the process runs and is neither stalled, starved nor crashing."""
        return self.state == "RUNNING" and not self.stalled and not self.starved and not self.crashing


def is_worker(info: Mapping[str, Any]) -> bool:
    """True when the supervisord process ``info`` is a worker."""
    return str(info.get("group", "")).startswith(WORKER_PREFIX)


def _starved(own: Mapping[str, Any] | None, now: float, stall_timeout_s: float, backlog: Backlog | None) -> bool:
    """True when the worker received nothing for ``stall_timeout_s`` while its queues hold messages."""
    if own is None or backlog is None:
        return False
    received = own.get("last_received")
    if not isinstance(received, (int, float)) or now - float(received) <= stall_timeout_s:
        return False
    queues = [str(q) for q in own.get("queues") or []]
    return bool(queues) and backlog(queues) > 0


def _recent(times: Any, now: float) -> list[float]:
    """Those of ``times`` (Unix times) that fall within CRASH_WINDOW_S before ``now``."""
    if not isinstance(times, list):
        return []
    return [float(t) for t in times if isinstance(t, (int, float)) and now - float(t) <= CRASH_WINDOW_S]


def _dying_again(deaths: list[float], now: float) -> bool:
    """True when ``deaths`` (recent ones) are CRASH_THRESHOLD or more and the last is within CRASH_RECOVERED_S."""
    return len(deaths) >= CRASH_THRESHOLD and now - max(deaths) <= CRASH_RECOVERED_S


def assess(info: Mapping[str, Any], status: Mapping[str, Any] | None, now: float,
           stall_timeout_s: float, backlog: Backlog | None = None) -> ProcessHealth:
    """Combine supervisord's ``info`` and the worker's ``status`` into a ProcessHealth at time ``now``.

    ``backlog`` counts waiting messages, to tell starved workers; without it none is.
    """
    state = str(info.get("statename", "UNKNOWN"))
    pid = int(info.get("pid") or 0)
    start = float(info.get("start") or 0)
    running = state == "RUNNING" and pid > 0
    uptime_s = max(0.0, now - start) if running and start else None
    own = status if status is not None and status.get("pid") == pid else None
    last_poll_age_s = last_received_age_s = None
    if own is not None and isinstance(own.get("last_poll"), (int, float)):
        last_poll_age_s = max(0.0, now - float(own["last_poll"]))
    if own is not None and isinstance(own.get("last_received"), (int, float)):
        last_received_age_s = max(0.0, now - float(own["last_received"]))
    # The job process deaths of this worker; the deaths of the worker processes before it, also
    # while this one has not written its file yet (then the file is its predecessor's).
    deaths = _recent(own.get("job_process_deaths"), now) if own is not None else []
    worker_deaths = _recent(earlier_deaths(dict(status), pid, now), now) if status is not None else []
    stalled = starved = False
    if running and is_worker(info) and stall_timeout_s > 0:
        silence_s = last_poll_age_s if last_poll_age_s is not None else uptime_s
        stalled = silence_s is not None and silence_s > stall_timeout_s
        starved = not stalled and _starved(own, now, stall_timeout_s, backlog)
    return ProcessHealth(
        full_name=f"{info.get('group')}:{info.get('name')}",
        name=str(info.get("name")),
        state=state,
        pid=pid,
        uptime_s=uptime_s,
        last_poll_age_s=last_poll_age_s,
        last_job=own.get("last_job") if own else None,
        jobs_done=own.get("jobs_done") if own else None,
        stalled=stalled,
        starved=starved,
        last_received_age_s=last_received_age_s,
        job_process_deaths=len(deaths),
        worker_deaths=len(worker_deaths),
        last_death=str(own.get("last_death")) if own and own.get("last_death") else None,
        dying_again=_dying_again(deaths, now) or _dying_again(worker_deaths, now),
    )


def survey(client: SupervisorClient, layout: Layout, stall_timeout_s: float,
           backlog: Backlog | None = None) -> list[ProcessHealth]:
    """The health of every process of the daemon, in supervisord's order."""
    result = []
    for info in client.processes():
        status = read_worker_status(layout.status_file(str(info.get("name")))) if is_worker(info) else None
        result.append(assess(info, status, time.time(), stall_timeout_s, backlog))
    return result


def _clock_time(timestamp: float) -> str:
    """``timestamp`` as local time, the way the log lines show theirs."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def describe(health: ProcessHealth) -> str:
    """One status line: name, state, pid, uptime, and the last job or last poll of a worker."""
    state = ("STALLED" if health.stalled else "STARVED" if health.starved else "CRASHING" if health.crashing
             else health.state)
    parts = [f"{health.name:<24}", f"{state:<9}"]
    if health.state == "RUNNING":
        parts.append(f"pid {health.pid:<7}")
        parts.append(f"uptime {_duration(health.uptime_s or 0)}")
    if health.last_poll_age_s is not None:
        parts.append(f"last poll {health.last_poll_age_s:.1f} s ago")
        if health.last_job:
            parts.append(f"last job {health.last_job} ({health.jobs_done} done)")
    elif health.name.startswith(WORKER_PREFIX) and health.state == "RUNNING":
        parts.append("no poll yet")
    if health.job_process_deaths or health.worker_deaths:
        window = f"{CRASH_WINDOW_S / 60:.0f} min"
        counts = []
        if health.job_process_deaths:
            counts.append(f"{health.job_process_deaths} job process death(s)")
        if health.worker_deaths:
            counts.append(f"{health.worker_deaths} worker death(s)")
        parts.append(f"{' and '.join(counts)} in the last {window}")
        if health.last_death:
            parts.append(f"last: {health.last_death}")
    return "  ".join(parts).rstrip()


class Watchdog:
    """Restarts the stalled workers of one daemon; runs inside supervisord as ``sqjobsd watchdog``."""

    def __init__(self, layout: Layout, stall_timeout_s: float, interval_s: float, grace_s: float,
                 backlog: Backlog | None = None) -> None:
        self.layout = layout
        self.backlog = backlog
        self.stall_timeout_s = stall_timeout_s
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.client = SupervisorClient(layout)
        self._stop = threading.Event()
        self._parent = os.getppid()
        self._formatter = Formatter()

    def request_stop(self, *_: Any) -> None:
        """Stop the loop; safe from a signal handler."""
        self._stop.set()

    def check_once(self) -> list[str]:
        """Restart every stalled or starved worker once; return their names."""
        restarted = []
        for health in survey(self.client, self.layout, self.stall_timeout_s, self.backlog):
            if health.stalled or health.starved:
                self.restart(health)
                restarted.append(health.name)
        return restarted

    def restart(self, health: ProcessHealth) -> None:
        """SIGTERM the stalled worker, SIGKILL its process group after the grace; supervisord restarts it.

        Each step is logged both in the watchdog's log and in the worker's own
        log file, so whoever reads the worker's log sees why it was stopped.
        """
        now = time.time()
        if health.starved:
            silence_s = health.last_received_age_s or self.stall_timeout_s
            self.tell(health, "worker %s (pid %d) starved: polls but received nothing since %s (%.0f s, limit "
                      "%.0f s) while messages wait; the sqjobsd watchdog sends SIGTERM and restarts it",
                      health.name, health.pid, _clock_time(now - silence_s), silence_s, self.stall_timeout_s)
        else:
            silence_s = (health.last_poll_age_s if health.last_poll_age_s is not None else health.uptime_s) or 0
            since = "no poll since" if health.last_poll_age_s is not None else "no poll since it started at"
            self.tell(health, "worker %s (pid %d) stalled: %s %s (%.0f s, limit %.0f s); the sqjobsd watchdog "
                      "sends SIGTERM and restarts it", health.name, health.pid, since, _clock_time(now - silence_s),
                      silence_s, self.stall_timeout_s)
        try:
            self.client.call("signalProcess", health.full_name, "TERM")
        except DaemonError as exc:
            logger.warning("cannot send SIGTERM to %s: %s", health.name, exc)
        deadline = time.monotonic() + self.grace_s
        while pid_alive(health.pid) and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.05)
        if pid_alive(health.pid):
            self.tell(health, "worker %s (pid %d) did not stop within %.0f s of SIGTERM: the sqjobsd watchdog "
                      "sends SIGKILL to its process group", health.name, health.pid, self.grace_s)
            try:
                os.killpg(health.pid, signal.SIGKILL)
            except OSError:
                try:
                    os.kill(health.pid, signal.SIGKILL)
                except OSError:
                    pass

    def tell(self, health: ProcessHealth, message: str, *args: Any) -> None:
        """Log a warning here and append it, in the same format, to the worker's own log file."""
        logger.warning(message, *args)
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, message, args, None)
        path = self.layout.process_log(health.name)
        try:
            # supervisord appends to the same file (O_APPEND): one short write lands whole after its lines.
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(self._formatter.format(record) + "\n")
        except OSError as exc:
            logger.warning("cannot write to the log of worker %s (%s): %s", health.name, path, exc)

    def run(self) -> int:
        """Check every ``interval_s`` until SIGTERM or until supervisord goes away; return exit code 0."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        logger.info("watchdog %d: restarting workers that do not poll for %.0f s, checking every %.1f s",
                    os.getpid(), self.stall_timeout_s, self.interval_s)
        while not self._stop.wait(self.interval_s):
            if os.getppid() != self._parent:
                logger.warning("watchdog %d: supervisord is gone; leaving", os.getpid())
                break
            try:
                self.check_once()
            except DaemonError as exc:
                logger.warning("watchdog: %s", exc)
            except Exception:
                logger.exception("watchdog: unexpected error; going on")
        return 0
