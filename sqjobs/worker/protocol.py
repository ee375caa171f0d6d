"""What the worker and its job process say to each other, and how the job process sends its answers.

The worker hands messages over to run; the job process answers with their
settlements. Each thing said is one of these named types::

    worker -> job process:  Run(token, message) | Fail(token, message, error, duration_s) | Exit()
    job process -> worker:  Ready(pid) | Done(token, settlement) | Recycle(reason)

They go as lists, batched both ways, over a duplex pipe (:class:`Channel`).
Which token runs, and since when, is not said: it is in the
:class:`~sqjobs.worker.tokens.TokenTable` both processes map.

On the pipe each is a plain tuple that ends with its ``kind``: pickling a
named type names its class in every pickle, which costs several times the
tuple itself (a few microseconds a message each way, on the per-job path);
:meth:`Channel.recv` makes the named type again with ``tuple.__new__``, at C
speed. Only this module looks at a message's positions.

The job process sends its answers through one :class:`Outbox`, whatever
its concurrency, with one rule for when they go.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Callable, NamedTuple, Sequence

from ..brokers.base import ReceivedMessage
from .runner import Settlement

logger = logging.getLogger("sqjobs.protocol")

#: Answers the job process keeps before it sends them (it sends at once when it has nothing more to run).
BATCH_SETTLEMENTS = 32
#: Longest time an answer waits in the job process before it is sent, between two jobs.
SETTLEMENT_DELAY_S = 0.01
#: How often the late sender looks for answers kept while long jobs run (it sleeps while none are kept).
LATE_CHECK_S = 0.05


# -- worker -> job process ---------------------------------------------------------------

class Run(NamedTuple):
    """Run the job of ``message``, handed over under ``token`` (QUEUED in the token table)."""

    token: int
    message: ReceivedMessage
    kind: str = "run"


class Fail(NamedTuple):
    """Record a failed attempt of ``message`` with ``error``, without running it (its job process died under it)."""

    token: int
    message: ReceivedMessage
    error: BaseException
    #: How long the attempt ran before it ended so (seconds).
    duration_s: float
    kind: str = "fail"


class Exit(NamedTuple):
    """Exit once what was handed over before ran."""

    kind: str = "exit"


# -- job process -> worker ---------------------------------------------------------------

class Ready(NamedTuple):
    """The job process ``pid`` is ready for work (its first answer)."""

    pid: int
    kind: str = "ready"


class Done(NamedTuple):
    """The outcome of ``token``'s request: the worker applies ``settlement`` to its message."""

    token: int
    settlement: Settlement
    kind: str = "done"


class Recycle(NamedTuple):
    """The job process takes no more work and asks to be replaced once its jobs finished; ``reason`` says why."""

    reason: str
    kind: str = "recycle"


Request = Run | Fail | Exit
Event = Ready | Done | Recycle
Said = Request | Event

#: Each kind's type, to make it again from the tuple that crossed the pipe.
_TYPES: dict[str, type] = {kind._field_defaults["kind"]: kind for kind in (Run, Fail, Exit, Ready, Done, Recycle)}
_make = tuple.__new__


class Channel:
    """One end of the pipe between the worker and its job process: lists of messages, pickled as tuples.

    Readiness is asked of a poller made once (``Connection.poll`` builds a
    selector per call, and a busy worker asks several times per job).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._poller = select.poll()
        self._poller.register(conn.fileno(), select.POLLIN)

    def ready(self, timeout_s: float | None) -> bool:
        """True when something (or the end of the pipe) can be read, waiting up to ``timeout_s`` (None: forever)."""
        return bool(self._poller.poll(None if timeout_s is None else max(timeout_s, 0.0) * 1000))

    def send(self, items: Sequence[Said]) -> None:
        """Send ``items``; OSError when the other end is gone."""
        self.conn.send_bytes(pickle.dumps(list(map(tuple, items)), pickle.HIGHEST_PROTOCOL))

    def recv(self) -> list[Said]:
        """The next list sent, each made its named type again; EOFError or OSError when the other end is gone."""
        raw = pickle.loads(self.conn.recv_bytes())  # noqa: S301 - our own process, over our own pipe
        return [_make(_TYPES[item[-1]], item) for item in raw]

    def close(self) -> None:
        """Close this end."""
        self.conn.close()


class Outbox:
    """The job process's answers to the worker, kept to be sent together; one rule for when they go.

    :meth:`put` sends what is kept at once when the answer is urgent (a
    recorded failure: the next job may kill the process, and an attempt
    recorded already must not be lost), when nothing more waits to run,
    when BATCH_SETTLEMENTS are kept, or when the first kept waited
    SETTLEMENT_DELAY_S; else it is kept. The late sender
    (:meth:`send_late`, a thread) sends what waited SETTLEMENT_DELAY_S
    while long jobs run, so a finished job's message is deleted while the
    job after it runs for minutes. Any thread may put; one sends at a time.
    """

    def __init__(self, send: Callable[[Sequence[Said]], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self.clock = clock
        self.kept: list[Event] = []
        #: When the first kept answer was kept (``clock`` seconds).
        self.first_kept_at = 0.0
        #: Held while sending, and while ``kept`` changes.
        self._lock = threading.Lock()
        #: Set while something is kept: the late sender sleeps until then.
        self._unsent = threading.Event()

    def put(self, event: Event | None, more_to_run: bool, urgent: bool = False) -> None:
        """Keep ``event`` (None: nothing new); send everything kept if the rule says so (see the class)."""
        with self._lock:
            kept = self.kept
            if event is not None:
                if not kept:
                    self.first_kept_at = self.clock()
                kept.append(event)
            elif not kept:
                return
            if urgent or not more_to_run or len(kept) >= BATCH_SETTLEMENTS or \
                    self.clock() - self.first_kept_at >= SETTLEMENT_DELAY_S:
                self.kept = []
                self._send(kept)
                return
        if not self._unsent.is_set():  # a busy job process wakes its late sender only when it went to sleep
            self._unsent.set()

    def send_now(self, events: list[Event]) -> None:
        """Send ``events``, after what is kept, at once."""
        with self._lock:
            kept, self.kept = self.kept + events, []
            self._send(kept)

    def flush(self) -> None:
        """Send what is kept now."""
        with self._lock:
            if self.kept:
                kept, self.kept = self.kept, []
                self._send(kept)

    def flush_late(self) -> None:
        """Send what is kept if the first waited SETTLEMENT_DELAY_S (the late sender's look)."""
        with self._lock:
            if not self.kept:
                self._unsent.clear()
            elif self.clock() - self.first_kept_at >= SETTLEMENT_DELAY_S:
                kept, self.kept = self.kept, []
                self._unsent.clear()
                self._send(kept)

    def send_late(self) -> None:
        """A thread: every LATE_CHECK_S while something is kept, :meth:`flush_late`; it sleeps while nothing is.

        Ends when the worker is gone. Any other failure ends the job
        process: the worker then runs again what it did not hear of, rather
        than wait for answers that would never come.
        """
        # Signals meant for the job's thread (its time limit, the worker's stop) never land here.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1})
        try:
            while True:
                self._unsent.wait()
                time.sleep(LATE_CHECK_S)
                self.flush_late()
        except OSError:
            return  # the worker is gone
        except BaseException:  # noqa: B036 - settlements taken and not sent: the worker must see a death
            logger.exception("job process %d: its late sender failed; the job process ends", os.getpid())
            os._exit(70)

    def start_late_sender(self) -> None:
        """Start :meth:`send_late` in a daemon thread (without one, answers go only with the next ``put``)."""
        try:
            threading.Thread(target=self.send_late, name="sqjobs-late-sender", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had (a limit)
            logger.warning("job process %d: no late sender (%s); a finished job's settlement waits for the job "
                           "after it", os.getpid(), exc)


__all__ = ["BATCH_SETTLEMENTS", "Channel", "Done", "Event", "Exit", "Fail", "LATE_CHECK_S", "Outbox", "Ready",
           "Recycle", "Request", "Run", "SETTLEMENT_DELAY_S"]
