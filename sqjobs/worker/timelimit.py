"""A time limit on one attempt that the job cannot catch with ``except Exception``.

When the limit expires, :class:`~sqjobs.errors.TimeLimitExceeded` is raised
inside the job. It derives from ``BaseException``, so ``except Exception:
pass`` in the job does not swallow it; and it is raised again every
:data:`REPEAT_S` seconds until the attempt ends, so even a job that catches
``BaseException`` once is interrupted again. Whatever the job does with it,
an attempt that outlived its limit counts as failed with a timeout
(:attr:`TimeLimit.expired`).

How it is raised:

- in the main thread, by ``SIGALRM`` (``setitimer``): this also interrupts a
  blocking ``time.sleep``, ``select`` or socket read;
- in any other thread, by a timer that asks the interpreter to raise it in
  that thread (``PyThreadState_SetAsyncExc``): it lands at the thread's next
  Python instruction, so a thread blocked inside a C call is interrupted only
  when the call returns.

A job blocked in C code that never returns cannot be interrupted from inside
its process; its attempt is then settled as timed out from outside, once
(see :mod:`sqjobs.worker.jobprocess` and :mod:`sqjobs.worker.tokens`).
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from types import TracebackType
from typing import Any

from ..errors import TimeLimitExceeded

#: Seconds between two interrupts of an attempt that caught the first one.
REPEAT_S = 1.0


def _raise_in_thread(thread_id: int, exception: type[BaseException]) -> bool:
    """Ask the interpreter to raise ``exception`` in thread ``thread_id``; True if that thread exists."""
    changed: int = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception))
    if changed > 1:  # never expected: undo rather than disturb other threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        return False
    return changed == 1


class TimeLimit:
    """Context manager: interrupt the block with TimeLimitExceeded after ``seconds`` (None: no limit).

    ``what`` names the job in the interrupt's message. After the block,
    ``expired`` says whether the limit was reached while it ran.
    """

    def __init__(self, seconds: float | None, what: str) -> None:
        self.seconds = seconds if seconds and seconds > 0 else None
        self.what = what
        self.expired = False
        self._deadline = 0.0
        self._done: threading.Event | None = None
        #: Held while the timer decides to interrupt, so that none is sent after the block ended.
        self._interrupt_lock: threading.Lock | None = None
        self._timer: threading.Thread | None = None
        self._previous_handler: Any = None
        self._uses_alarm = False

    @property
    def message(self) -> str:
        """What the interrupt and the attempt's error say."""
        return f"{self.what} ran longer than its timeout of {self.seconds or 0:g} s"

    def remaining_s(self) -> float | None:
        """Seconds left before the limit (None without one; never negative)."""
        if self.seconds is None:
            return None
        return max(self._deadline - time.monotonic(), 0.0)

    def __enter__(self) -> TimeLimit:
        if self.seconds is None:
            return self
        self._deadline = time.monotonic() + self.seconds
        if threading.current_thread() is threading.main_thread():
            self._uses_alarm = True
            self._previous_handler = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds, REPEAT_S)
        else:
            self._done, self._interrupt_lock = threading.Event(), threading.Lock()
            target = threading.get_ident()
            self._timer = threading.Thread(target=self._watch, args=(target,), name="sqjobs-time-limit",
                                           daemon=True)
            self._timer.start()
        return self

    def _on_alarm(self, signum: int, frame: Any) -> None:
        self.expired = True
        raise TimeLimitExceeded(self.message)

    def _watch(self, target: int) -> None:
        done, interrupt_lock = self._done, self._interrupt_lock
        assert done is not None and interrupt_lock is not None
        wait_s = self.seconds or 0.0
        while not done.wait(wait_s):
            with interrupt_lock:
                if done.is_set():
                    return
                self.expired = True
                if not _raise_in_thread(target, TimeLimitExceeded):
                    return
            wait_s = REPEAT_S

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.seconds is None:
            return
        while True:
            try:
                self._stop()
                break
            except TimeLimitExceeded:  # one that was on its way when the block ended
                self.expired = True
        if time.monotonic() >= self._deadline:
            self.expired = True

    def _stop(self) -> None:
        """Stop the timer or alarm so that no interrupt arrives after the block."""
        if self._uses_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous_handler)
            return
        assert self._done is not None and self._interrupt_lock is not None
        with self._interrupt_lock:
            self._done.set()
            # An interrupt sent but not yet raised would land after the block: take it back.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
        if self._timer is not None:
            self._timer.join()
