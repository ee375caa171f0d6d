"""The worker's job process: jobs run in a forked child, so that a bad one cannot take the worker with it.

The worker (the parent) holds the messages, keeps them hidden with its
heartbeat and talks to the broker; it never runs job code. The job process
(the child) decodes each message, runs its job and records its status, and
answers with a :class:`~sqjobs.worker.runner.Settlement` that the worker applies.
So:

- a job that kills its process (``os._exit``, a segfault, the out-of-memory
  killer) kills only the job process: the worker sees it die, starts a new
  one, and has that one record the attempt as failed (retried, or
  dead-lettered after the last attempt); the other messages run as usual;
- a job that holds the GIL, or is stuck in C code, cannot stop the
  heartbeat, which runs in another process;
- a job that outlives its ``timeout`` and cannot be interrupted from inside
  (see :mod:`sqjobs.worker.timelimit`) is killed from outside, and its attempt
  fails with a timeout.

Concurrency: the job process runs up to ``concurrency`` jobs at once. With
1 (the default) its main thread runs them one after the other. With more,
that many threads take them, and ``async def`` jobs run on one event loop
the job process keeps (each occupies one of the threads while it awaits), so
threads and coroutines share the one limit. A thread stuck past its job's
deadline (in ``time.sleep`` or C code, where no interrupt reaches it) cannot
be stopped: TIMEOUT_GRACE_S after the deadline the job process records that
attempt as failed (a timeout), takes no more work, and asks the worker to
replace it once its other jobs finished; should the thread end later, what
it did is dropped (the token table lets one of the two settle it, see
:mod:`sqjobs.worker.tokens`). When the job process cannot do even that (C code
holding the GIL), the worker kills it a little later.

What the worker and the job process say to each other is in :mod:`sqjobs.worker.protocol`;
which token runs, and since when, is in a :class:`~sqjobs.worker.tokens.TokenTable`
both map. The job process ignores SIGTERM and SIGINT (the worker decides
when to stop); SIGUSR1 tells it the worker is stopping, which ends
status-write retries early. It dies with the worker (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

from .. import defaults
from ..brokers.base import ReceivedMessage
from ..errors import JobCrashedError, JobTimeoutError, SQJobsError
from ..identity import WORKER_PID_ENV
from ..message import about
from . import awaiting
from .protocol import Channel, Done, Event, Exit, Fail, Outbox, Ready, Recycle, Run
from .runner import MessageRunner, Settlement
from .tokens import Entry, TokenTable

logger = logging.getLogger("sqjobs.jobprocess")

#: Linux prctl option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
#: How often a job process with threads looks for a thread stuck past its deadline.
MONITOR_INTERVAL_S = 0.1


class JobProcessDied(SQJobsError):
    """The job process died (or was killed); ``description`` says how."""

    def __init__(self, description: str, timed_out: int | None = None) -> None:
        super().__init__(description)
        self.description = description
        #: The token of the job whose deadline made the worker kill the job process, if that was why.
        self.timed_out = timed_out


def describe_exit(status: int) -> str:
    """Say how a process ended from its wait status: ``killed by signal 11 (SIGSEGV)``, ``exited with code 3``."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exited with code {code}"
    number = -code
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "an unknown signal"
    text = f"killed by signal {number} ({name})"
    if number == signal.SIGKILL:
        text += ": the kernel's out-of-memory killer, or an operator"
    elif number in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT):
        text += ": a crash in C code"
    return text


def _logging_handlers() -> list[logging.Handler]:
    """Every logging handler of this process, each once."""
    handlers: list[logging.Handler] = list(logging.getLogger().handlers)
    for logger_object in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger_object, logging.Logger):
            handlers.extend(h for h in logger_object.handlers if h not in handlers)
    return handlers


def fork_quietly() -> int:
    """``os.fork()`` while holding every logging handler's lock, so no other thread is half-way through a line.

    In the child the logging module gives each handler a fresh lock (its
    at-fork hook), so only the parent releases them.
    """
    handlers = _logging_handlers()
    for handler in handlers:
        handler.acquire()
    try:
        pid = os.fork()
    except BaseException:
        for handler in reversed(handlers):
            handler.release()
        raise
    if pid != 0:
        for handler in reversed(handlers):
            handler.release()
    return pid


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux); leave if it already did."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


class Executor:
    """Runs what the worker hands over, as the token table allows (in the job process and in
    :mod:`sqjobs.worker.inline`)."""

    def __init__(self, runner: MessageRunner, table: TokenTable, concurrency: int = 1) -> None:
        self.runner = runner
        self.table = table
        self.concurrency = max(1, concurrency)
        #: Tokens running in threads with a deadline (in the token table), their message and timeout: the monitor's.
        self.running: dict[int, tuple[ReceivedMessage, float]] = {}
        self.running_lock = threading.Lock()

    # -- running one ---------------------------------------------------------------------

    def execute(self, item: Run | Fail) -> Done | None:
        """Run one handed-over item; return its answer (None when the worker withdrew it)."""
        token, message = item.token, item.message
        if isinstance(item, Fail):
            return Done(token, self.runner.fail(message, item.error, item.duration_s))
        if self.runner.stop.is_set() or not self.table.start(token):
            return None  # the worker stops (it takes back what did not start), or withdrew this one

        def started(decoded: Any, job_class: Any) -> None:
            timeout = job_class.timeout
            if not timeout:
                return
            self.table.set_deadline(token, timeout)
            if self.concurrency > 1:
                with self.running_lock:
                    self.running[token] = (message, timeout)

        def claim_end() -> bool:
            return self.table.end_attempt(token)

        if self.concurrency == 1:  # no monitor to tell
            settlement = self.runner.run(message, on_start=started, claim_end=claim_end)
        else:
            try:
                settlement = self.runner.run(message, on_start=started, claim_end=claim_end)
            finally:
                with self.running_lock:
                    self.running.pop(token, None)
        if settlement is None:
            return None  # settled as timed out already (by the monitor, or by the worker that kills this process)
        self.table.finish(token)
        return Done(token, settlement)

class _Host(Executor):
    """The job process's side: takes what the worker hands over, runs it, sends back the settlements."""

    def __init__(self, conn: Channel, runner: MessageRunner, table: TokenTable, concurrency: int) -> None:
        super().__init__(runner, table, concurrency)
        self.conn = conn
        self.pending: collections.deque[Run | Fail] = collections.deque()
        #: Every answer goes through it, whatever the concurrency.
        self.outbox = Outbox(conn.send)
        self.recycling = False
        self.work: queue_module.SimpleQueue[Run | Fail | None] = queue_module.SimpleQueue()

    # -- one at a time -------------------------------------------------------------------

    def serve_alone(self) -> None:
        """Concurrency 1: the main thread reads what comes and runs it, one job after the other."""
        self.outbox.start_late_sender()
        while True:
            # What the worker sent is read once everything read before ran (a withdrawal needs no reading:
            # it is in the token table); so a busy job process makes no read per job.
            if not self.pending and not self._read(block=True):
                return
            if not self.pending:
                continue
            item = self.pending.popleft()
            event = self.execute(item)
            self.outbox.put(event, bool(self.pending), isinstance(item, Fail))

    def _read(self, block: bool) -> bool:
        """Take in what the worker sent (waiting for it when ``block``); False when told to exit."""
        while True:
            if not self.conn.ready(None if block else 0):
                return True
            try:
                requests = self.conn.recv()
            except (EOFError, OSError):
                return False
            if requests and isinstance(requests[-1], Exit):
                return False  # sent alone, once everything handed over was settled
            self.pending.extend(requests)  # type: ignore[arg-type]  # Run and Fail: Exit comes alone
            block = False

    # -- several at once -----------------------------------------------------------------

    def serve_threads(self) -> None:
        """Concurrency N: N threads run what the main thread reads; a monitor finds jobs stuck past deadline."""
        awaiting.start_shared_loop()
        threads = [threading.Thread(target=self._thread_loop, name=f"sqjobs-job-{n}", daemon=True)
                   for n in range(self.concurrency)]
        for thread in threads:
            thread.start()
        monitor = threading.Thread(target=self._monitor, name="sqjobs-job-monitor", daemon=True)
        monitor.start()
        self.outbox.start_late_sender()
        while self._read(block=True):
            while self.pending:
                self.work.put(self.pending.popleft())
        for _ in threads:
            self.work.put(None)

    def _thread_loop(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            if (self.recycling or self.runner.stop.is_set()) and isinstance(item, Run):
                continue  # the worker takes back what was queued when it hears of the recycle or stops
            event = self.execute(item)
            self.outbox.put(event, not self.work.empty(), isinstance(item, Fail))

    def _monitor(self) -> None:
        """Settle, as timed out, a job whose thread is stuck past its deadline; then ask to be replaced.

        It looks every MONITOR_INTERVAL_S; a job that did not end
        TIMEOUT_GRACE_S after its deadline (its interrupts did not reach it)
        is taken from its thread in the token table, so that only this
        settlement counts, whatever the thread does later.
        """
        while True:
            time.sleep(MONITOR_INTERVAL_S)
            with self.running_lock:
                watched = list(self.running.items())
            for token, (message, timeout_s) in watched:
                entry = self.table.time_out(token, defaults.TIMEOUT_GRACE_S)
                if entry is None:
                    continue
                with self.running_lock:
                    self.running.pop(token, None)
                self._settle_stuck(token, message, timeout_s, entry)

    def _settle_stuck(self, token: int, message: ReceivedMessage, timeout_s: float, entry: Entry) -> None:
        """Record the attempt of ``token`` (taken by :meth:`_monitor`) as timed out; send it with a recycle."""
        error = timed_out_error(message, timeout_s, f" (its thread cannot be stopped): settled "
                              f"{defaults.TIMEOUT_GRACE_S:g} s after it; the job process is replaced")
        settlement = self.runner.fail(message, error, (time.monotonic_ns() - entry.started_ns) / 1e9)
        self.table.finish(token)
        events: list[Event] = [Done(token, settlement)]
        if not self.recycling:
            self.recycling = True
            events.append(Recycle(str(error)))
        self.outbox.send_now(events)


def _child_main(conn: Connection, make_runner: Callable[[threading.Event], MessageRunner], parent_pid: int,
                table: TokenTable, concurrency: int) -> None:
    """The job process: answer the worker's requests until it says exit or goes away."""
    _die_with_parent(parent_pid)
    os.environ[WORKER_PID_ENV] = str(parent_pid)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda *_: stopping.set())
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    channel = Channel(conn)
    host = _Host(channel, make_runner(stopping), table, concurrency)
    channel.send([Ready(os.getpid())])
    try:
        if host.concurrency == 1:
            host.serve_alone()
        else:
            host.serve_threads()
    finally:
        with contextlib.suppress(OSError):
            host.outbox.flush()  # the settlements of attempts that ran, even when this process ends on an error


class JobProcess:
    """The worker's handle on one job process running up to ``concurrency`` jobs at once."""

    def __init__(self, make_runner: Callable[[threading.Event], MessageRunner], concurrency: int = 1) -> None:
        self.make_runner = make_runner
        self.concurrency = max(1, concurrency)
        self.pid = 0
        self.table: TokenTable | None = None
        self._conn: Channel | None = None
        #: True once the job process asked to be replaced (a thread stuck past its deadline): the worker sets it
        #: when it reads the Recycle (it reads every event anyway: no second look per event here).
        self.recycling = False

    def start(self) -> None:
        """Fork the job process and wait until it is ready; raise JobProcessDied if it is not."""
        parent_conn, child_conn = multiprocessing.Pipe(duplex=True)
        table = TokenTable()
        parent_pid = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = fork_quietly()
        if pid == 0:  # the job process: it never returns from here
            code = 0
            try:
                parent_conn.close()
                _child_main(child_conn, self.make_runner, parent_pid, table, self.concurrency)
            except BaseException:  # noqa: B036 - nothing may escape into the worker's code path
                logger.exception("job process %d failed", os.getpid())
                code = 70
            finally:
                with contextlib.suppress(Exception):
                    logging.shutdown()
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        child_conn.close()
        self.pid, self._conn, self.table = pid, Channel(parent_conn), table
        deadline = time.monotonic() + defaults.JOB_PROCESS_START_S
        while time.monotonic() < deadline:
            events = self.events(min(0.5, max(deadline - time.monotonic(), 0)))
            if events:
                if isinstance(events[0], Ready):
                    logger.debug("job process %d ready", pid)
                    return
                break
        self.kill()
        raise JobProcessDied(f"the job process did not start within {defaults.JOB_PROCESS_START_S:g} s")

    @property
    def alive(self) -> bool:
        """True while the job process runs."""
        return self._conn is not None

    def submit(self, requests: list[Run | Fail]) -> None:
        """Hand over ``requests`` (each Run is QUEUED in the token table before it is sent).

        Raises JobProcessDied if the job process is gone.
        """
        assert self._conn is not None and self.table is not None, "the job process is not running"
        for request in requests:
            if isinstance(request, Run):
                self.table.queued(request.token)
        try:
            self._conn.send(requests)
        except OSError:
            raise self._died() from None

    def events(self, timeout_s: float) -> list[Event]:
        """What the job process sent, waiting up to ``timeout_s`` for something; JobProcessDied if it died."""
        conn = self._conn
        assert conn is not None
        received: list[Any] = []
        try:
            if conn.ready(timeout_s):
                received.extend(conn.recv())
                while conn.ready(0):
                    received.extend(conn.recv())
        except (EOFError, OSError):
            if received:
                return received
            raise self._died() from None
        if not received:
            ended = self._reap(block=False)
            if ended is not None:
                raise JobProcessDied(f"the job process {ended}")
        return received

    def state(self, token: int) -> Entry | None:
        """Whether ``token`` is queued, started (since when, until when) or finished, as the table says."""
        return self.table.get(token) if self.table is not None else None

    def withdraw(self, token: int) -> bool:
        """Take ``token`` back if it has not started (see :meth:`~sqjobs.worker.tokens.TokenTable.withdraw`)."""
        return self.table is not None and self.table.withdraw(token)

    def _reap(self, block: bool) -> str | None:
        """Collect the job process if it ended; return how it ended (None while it runs)."""
        if not self.pid:
            return "was gone"
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self._forget()
            return "was gone"
        if pid == 0:
            return None
        self._forget()
        return describe_exit(status)

    def _died(self) -> JobProcessDied:
        return JobProcessDied(f"the job process {self._reap(block=True) or 'died'}")

    def _forget(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
        self._conn, self.pid = None, 0

    def stop_retrying(self) -> None:
        """Tell the job process the worker is stopping (ends status-write retries); safe from a signal handler."""
        if self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGUSR1)

    def kill(self) -> None:
        """Kill the job process at once and collect it."""
        if self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            self._reap(block=True)
        self._forget()

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask the job process to exit, wait ``timeout_s`` for it, then kill it."""
        if self._conn is None:
            return
        with contextlib.suppress(OSError):
            self._conn.send([Exit()])
        deadline = time.monotonic() + timeout_s
        while self.pid and time.monotonic() < deadline:
            if self._reap(block=False) is not None:
                return
            time.sleep(0.01)
        self.kill()


def timed_out_error(message: ReceivedMessage, timeout_s: float, then: str) -> JobTimeoutError:
    """The error of an attempt settled as timed out from outside its thread: job id, timeout, what ``then`` happens."""
    return JobTimeoutError(f"{about(message, message_id=False)} ran longer than its timeout of {timeout_s:g} s and "
                           f"could not be interrupted{then}")


def crash_error(description: str) -> JobCrashedError:
    """The error an attempt fails with when its job process died under it."""
    return JobCrashedError(f"{description} while running it")


__all__ = ["JobProcess", "JobProcessDied", "Settlement", "crash_error", "describe_exit", "fork_quietly",
           "timed_out_error"]
