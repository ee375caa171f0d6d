"""The worker's job process: jobs run in a forked child, so that a bad one cannot take the worker with it.

The worker (the parent) holds the messages, keeps them hidden with its
heartbeat and talks to the broker; it never runs job code. The job process
(the child) decodes each message, runs its job and records its status, and
answers with a :class:`~sqjobs.runner.Settlement` that the worker applies.
So:

- a job that kills its process (``os._exit``, a segfault, the out-of-memory
  killer) kills only the job process: the worker sees it die, starts a new
  one, and has that one record the attempt as failed (retried, or
  dead-lettered after the last attempt); the other messages it holds run as
  usual;
- a job that holds the GIL, or is stuck in C code, cannot stop the
  heartbeat, which runs in another process;
- a job that outlives its ``timeout`` and cannot be interrupted from inside
  (see :mod:`sqjobs.timelimit`) is killed from outside
  ``TIMEOUT_KILL_GRACE_S`` seconds after it, and its attempt fails with a
  timeout.

The cost: one fork when the worker starts (and after each death), and two
small pickled messages per job over a pipe.

Protocol (pickled tuples over a duplex pipe)::

    worker -> job process:  ("run", message) | ("fail", message, error) | ("exit",)
    job process -> worker:  ("ready", pid) | ("started", job id, name, timeout_s) | ("done", settlement)

The job process ignores SIGTERM and SIGINT (a terminal's Ctrl-C or
supervisord signal the whole process group; the worker decides when to
stop); SIGUSR1 tells it that the worker is stopping, which ends status-write
retries early. It dies with the worker (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

from . import defaults
from .brokers.base import ReceivedMessage
from .errors import JobCrashedError, JobTimeoutError, SQJobsError
from .identity import WORKER_PID_ENV
from .runner import MessageRunner, Settlement

logger = logging.getLogger("sqjobs.jobprocess")

#: Longest wait for the job process between two looks at the worker's own affairs (status file, stop).
WAIT_SLICE_S = 0.5
#: Linux prctl option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


class JobProcessDied(SQJobsError):
    """The job process died (or was killed) before it answered; ``error`` is what the attempt failed with."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


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


def _child_main(conn: Connection, make_runner: Callable[[threading.Event], MessageRunner], parent_pid: int) -> None:
    """The job process: answer the worker's requests until it says exit or goes away."""
    _die_with_parent(parent_pid)
    os.environ[WORKER_PID_ENV] = str(parent_pid)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda *_: stopping.set())
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    runner = make_runner(stopping)

    def started(decoded: Any, job_class: Any) -> None:
        conn.send(("started", decoded.id, decoded.name, job_class.timeout))

    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request[0] == "run":
            settlement = runner.run(request[1], on_start=started)
        elif request[0] == "fail":
            settlement = runner.fail(request[1], request[2])
        else:
            return
        conn.send(("done", settlement))


class JobProcess:
    """The worker's handle on one job process; ``on_wait`` is called while the worker waits for it."""

    def __init__(self, make_runner: Callable[[threading.Event], MessageRunner],
                 on_wait: Callable[[], None] = lambda: None) -> None:
        self.make_runner = make_runner
        self.on_wait = on_wait
        self.pid = 0
        self._conn: Connection | None = None
        #: "id name on queue" of the job running now, once the job process said it started.
        self.running: str | None = None
        self._timeout_s = 0.0

    def start(self) -> None:
        """Fork the job process and wait until it is ready; raise JobProcessDied if it is not."""
        parent_conn, child_conn = multiprocessing.Pipe(duplex=True)
        parent_pid = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = fork_quietly()
        if pid == 0:  # the job process: it never returns from here
            code = 0
            try:
                parent_conn.close()
                _child_main(child_conn, self.make_runner, parent_pid)
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
        self.pid, self._conn = pid, parent_conn
        answer = self._next(None, start_deadline=time.monotonic() + defaults.JOB_PROCESS_START_S)
        if answer[0] != "ready":
            self.kill()
            raise JobProcessDied(JobCrashedError(f"the job process answered {answer[0]!r} instead of ready"))
        logger.debug("job process %d ready", pid)

    @property
    def alive(self) -> bool:
        """True while the job process runs."""
        return self._conn is not None

    def run(self, message: ReceivedMessage) -> Settlement:
        """Have the job process handle ``message``; return its settlement.

        Raises JobProcessDied when it died (or was killed at the job's hard
        deadline) before it answered.
        """
        return self._request(("run", message))

    def fail(self, message: ReceivedMessage, error: BaseException) -> Settlement:
        """Have the job process record ``message``'s attempt as failed with ``error``; return the settlement."""
        return self._request(("fail", message, error))

    def _request(self, request: tuple[Any, ...]) -> Settlement:
        assert self._conn is not None, "the job process is not running"
        self.running = None
        try:
            self._conn.send(request)
        except OSError:
            raise self._died() from None
        kill_at: float | None = None
        try:
            while True:
                answer = self._next(kill_at)
                if answer[0] == "done":
                    return answer[1]
                if answer[0] == "started":
                    _, job_id, name, timeout_s = answer
                    self.running = f"{job_id} {name} on {request[1].queue}"
                    if timeout_s:
                        kill_at = time.monotonic() + float(timeout_s) + defaults.TIMEOUT_KILL_GRACE_S
                        self._timeout_s = float(timeout_s)
        finally:
            self.running = None

    def _next(self, kill_at: float | None, start_deadline: float | None = None) -> tuple[Any, ...]:
        """The job process's next answer; JobProcessDied if it dies first or ``kill_at`` passes.

        ``start_deadline``: when a starting job process must have said it is ready.
        """
        conn = self._conn
        assert conn is not None
        while True:
            self.on_wait()
            slice_s = WAIT_SLICE_S
            if kill_at is not None:
                slice_s = max(min(slice_s, kill_at - time.monotonic()), 0)
            if start_deadline is not None and time.monotonic() > start_deadline:
                self.kill()
                raise JobProcessDied(JobCrashedError(
                    f"the job process did not start within {defaults.JOB_PROCESS_START_S:g} s"))
            try:
                if conn.poll(slice_s):
                    return conn.recv()
            except (EOFError, OSError):
                raise self._died() from None
            if kill_at is not None and time.monotonic() >= kill_at:
                self.kill()
                raise JobProcessDied(JobTimeoutError(
                    f"job {self.running} ran longer than its timeout of {self._timeout_s:g} s and could not be "
                    f"interrupted; its job process was killed {defaults.TIMEOUT_KILL_GRACE_S:g} s after the timeout"))
            ended = self._reap(block=False)
            if ended is not None:
                raise JobProcessDied(JobCrashedError(f"the job process {ended} while running it"))

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
        ended = self._reap(block=True) or "died"
        return JobProcessDied(JobCrashedError(f"the job process {ended} while running it"))

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
            self._conn.send(("exit",))
        deadline = time.monotonic() + timeout_s
        while self.pid and time.monotonic() < deadline:
            if self._reap(block=False) is not None:
                return
            time.sleep(0.01)
        self.kill()
