"""Jobs run in the worker itself (``isolation = none``): one at a time, in its main thread.

:class:`InlineJobs` answers the worker as its job process would (see
:class:`~sqjobs.jobprocess.JobProcess`), so the worker's loop is the same
either way; a request runs when the worker asks for events. It is for
debugging with pdb and for tests that step the worker's loop: a job that
crashes the process takes the worker with it.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from .runner import MessageRunner
from .tokens import QUEUED, STARTED, Entry


class InlineJobs:
    """Runs the handed-over requests in this process, one per :meth:`events` call."""

    concurrency = 1
    #: Never asks to be replaced (nothing can be stuck in another thread).
    recycling = False
    pid = 0

    def __init__(self, runner: MessageRunner) -> None:
        self.runner = runner
        self._queued: collections.deque[tuple[Any, ...]] = collections.deque()
        self._running: tuple[int, int] | None = None  # token, started (monotonic ns)

    @property
    def alive(self) -> bool:
        """Always True: it lives as long as the worker."""
        return True

    def start(self) -> None:
        """Nothing to start."""

    def submit(self, requests: list[tuple[Any, ...]]) -> None:
        """Queue ``requests`` to run on the next :meth:`events` calls."""
        self._queued.extend(requests)

    def events(self, timeout_s: float) -> list[tuple[Any, ...]]:
        """Run the next queued request now and return its ``done`` event (nothing queued: nothing)."""
        if not self._queued:
            return []
        request = self._queued.popleft()
        token, message = request[1], request[2]
        if request[0] == "fail":
            return [("done", token, self.runner.fail(message, request[3], request[4]))]
        self._running = (token, time.monotonic_ns())
        try:
            settlement = self.runner.run(message)
        finally:
            self._running = None
        return [("done", token, settlement)]

    def state(self, token: int) -> Entry | None:
        """Whether ``token`` is queued or running (as a job process's token table says it)."""
        if self._running is not None and self._running[0] == token:
            return Entry(STARTED, self._running[1], 0)
        if any(request[1] == token for request in self._queued):
            return Entry(QUEUED, 0, 0)
        return None

    def withdraw(self, token: int) -> bool:
        """Take back ``token`` if it is still queued."""
        for request in self._queued:
            if request[1] == token and request[0] == "run":
                self._queued.remove(request)
                return True
        return False

    def stop_retrying(self) -> None:
        """Nothing to tell: the runner shares the worker's stop event."""

    def kill(self) -> None:
        """Nothing to kill."""

    def close(self, timeout_s: float = 0) -> None:
        """Nothing to close."""
