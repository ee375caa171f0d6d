"""Jobs run in the worker itself (``isolation = none``): one at a time, in its main thread.

:class:`InlineJobs` answers the worker as its job process would (see
:class:`~sqjobs.worker.jobprocess.JobProcess`): it takes the same requests
(:mod:`sqjobs.worker.protocol`), keeps the same token table and runs each request
with the job process's :class:`~sqjobs.worker.jobprocess.Executor`, so the worker's
loop is the same either way; a request runs when the worker asks for events.
It is for debugging with pdb and for tests that step the worker's loop: a
job that crashes the process takes the worker with it.
"""

from __future__ import annotations

import collections

from .jobprocess import Executor
from .protocol import Event, Fail, Run
from .runner import MessageRunner
from .tokens import Entry, TokenTable


class InlineJobs:
    """Runs the handed-over requests in this process, one per :meth:`events` call."""

    concurrency = 1
    #: Never asks to be replaced (nothing can be stuck in another thread).
    recycling = False
    pid = 0

    def __init__(self, runner: MessageRunner) -> None:
        self.runner = runner
        self.table = TokenTable()
        self._executor = Executor(runner, self.table)
        self._queued: collections.deque[Run | Fail] = collections.deque()

    @property
    def alive(self) -> bool:
        """Always True: it lives as long as the worker."""
        return True

    def start(self) -> None:
        """Nothing to start."""

    def submit(self, requests: list[Run | Fail]) -> None:
        """Queue ``requests`` to run on the next :meth:`events` calls (each Run QUEUED in the token table)."""
        for request in requests:
            if isinstance(request, Run):
                self.table.queued(request.token)
        self._queued.extend(requests)

    def events(self, timeout_s: float) -> list[Event]:
        """Run the next queued request now and return its answer (nothing queued, or all withdrawn: nothing)."""
        while self._queued:
            event = self._executor.execute(self._queued.popleft())
            if event is not None:
                return [event]
        return []

    def state(self, token: int) -> Entry | None:
        """Whether ``token`` is queued, running or finished, as the token table says."""
        return self.table.get(token)

    def withdraw(self, token: int) -> bool:
        """Take back ``token`` if it did not start (see :meth:`~sqjobs.worker.tokens.TokenTable.withdraw`)."""
        return self.table.withdraw(token)

    def stop_retrying(self) -> None:
        """Nothing to tell: the runner shares the worker's stop event."""

    def kill(self) -> None:
        """Nothing to kill."""

    def close(self, timeout_s: float = 0) -> None:
        """Nothing to close."""
