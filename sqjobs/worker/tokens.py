"""What the worker and its job process share without messages: the state of each message handed over.

The worker gives each message it hands to its job process a token. A table
in memory both processes map (an anonymous ``mmap`` made before the fork)
holds, per token, whether it is queued in the job process, started (and
when, and its deadline), finished, withdrawn, or timed out. So the worker
knows, without asking a job process that may be stuck in C code or dead:

- which messages were running when the job process died (the suspects) and
  which had not started (run them again elsewhere, they did nothing);
- when a running job passed its hard deadline (kill the job process);
- which queued messages it can still take back (:meth:`TokenTable.withdraw`):
  a message waits behind a long job no longer than the worker's hold time,
  it is handed back for another worker instead.

The deadline written here is the only one: whoever settles an attempt past
it as timed out (the job process's monitor, or the worker that kills the job
process) first takes its token with :meth:`TokenTable.time_out`, and the
thread whose attempt ends takes it with :meth:`TokenTable.end_attempt`; only
one of them gets it, so an attempt is settled once.

Taking a token to start it (the job process) and withdrawing it (the
worker) exclude each other through a lock shared by both processes, as do
the two ways of taking a started one. The job process holds it for a few
instructions only; the worker waits for it with a timeout, so a job process
killed while holding it cannot block the worker.
"""

from __future__ import annotations

import mmap
import multiprocessing
import struct
import time
from typing import NamedTuple

#: Entries in the table: more than a worker ever has handed over at once.
SIZE = 4096
#: How long the worker waits for the lock before it gives up (the job process died holding it).
LOCK_WAIT_S = 1.0

QUEUED, STARTED, FINISHED, WITHDRAWN = 1, 2, 3, 4
#: Settled as timed out by its deadline's owner while its job still ran: whatever the job does next is dropped.
TIMED_OUT = 5

_ENTRY = struct.Struct("qqqq")  # token, state, started (ns, monotonic), deadline (ns, monotonic; 0: none)
_ENTRY_SIZE, _unpack_from, _pack_into = _ENTRY.size, _ENTRY.unpack_from, _ENTRY.pack_into


class Entry(NamedTuple):
    """One token's state as the table holds it."""

    state: int
    started_ns: int
    deadline_ns: int


class TokenTable:
    """The table of one job process (made by the worker before it forks the job process)."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._map = mmap.mmap(-1, size * _ENTRY.size)
        self._lock = multiprocessing.Lock()

    def _read(self, token: int) -> tuple[int, int, int, int]:
        return _unpack_from(self._map, (token % self.size) * _ENTRY_SIZE)

    def _write(self, token: int, state: int, started_ns: int = 0, deadline_ns: int = 0) -> None:
        _pack_into(self._map, (token % self.size) * _ENTRY_SIZE, token, state, started_ns, deadline_ns)

    # -- the worker ----------------------------------------------------------------------

    def queued(self, token: int) -> None:
        """Note that ``token`` is handed to the job process (before it is sent)."""
        self._write(token, QUEUED)

    def get(self, token: int) -> Entry | None:
        """The state of ``token`` (None once its entry holds another token)."""
        stored, state, started_ns, deadline_ns = self._read(token)
        return Entry(state, started_ns, deadline_ns) if stored == token else None

    def withdraw(self, token: int) -> bool:
        """Take ``token`` back if it has not started; True if it was taken back (the job process skips it).

        False when it started already, or when the lock could not be had
        (the job process died holding it: the worker settles its tokens as
        after any death).
        """
        if not self._lock.acquire(timeout=LOCK_WAIT_S):
            return False
        try:
            stored, state, _, _ = self._read(token)
            if stored != token or state != QUEUED:
                return False
            self._write(token, WITHDRAWN)
            return True
        finally:
            self._lock.release()

    def time_out(self, token: int, grace_s: float) -> Entry | None:
        """Take ``token``'s attempt to settle it as timed out, if it runs ``grace_s`` past its deadline.

        Returns its entry as it was (state STARTED) and marks it TIMED_OUT;
        None when it has no deadline, is not past it, ended (its thread took
        it with :meth:`end_attempt`), was taken already, or the lock could not
        be had. Both the worker and the job process's monitor call it.
        """
        limit_ns = time.monotonic_ns() - int(grace_s * 1e9)

        def overdue() -> tuple[int, int] | None:
            stored, state, started_ns, deadline_ns = self._read(token)
            if stored != token or state != STARTED or not deadline_ns or deadline_ns >= limit_ns:
                return None
            return started_ns, deadline_ns

        if overdue() is None:  # a look without the lock first: nearly always the answer
            return None
        if not self._lock.acquire(timeout=LOCK_WAIT_S):
            return None
        try:
            found = overdue()
            if found is None:
                return None
            self._write(token, TIMED_OUT, *found)
            return Entry(STARTED, *found)
        finally:
            self._lock.release()

    # -- the job process -----------------------------------------------------------------

    def start(self, token: int) -> bool:
        """Take ``token`` to run it; False if the worker withdrew it (then it must not run)."""
        with self._lock:
            stored, state, _, _ = self._read(token)
            if stored != token or state != QUEUED:
                return False
            self._write(token, STARTED, time.monotonic_ns())
            return True

    def set_deadline(self, token: int, timeout_s: float | None) -> None:
        """Record the started job's deadline: its ``timeout`` from now (None: no deadline)."""
        if not timeout_s or timeout_s <= 0:
            return
        stored, state, started_ns, _ = self._read(token)
        if stored == token and state == STARTED:
            self._write(token, STARTED, started_ns, time.monotonic_ns() + int(timeout_s * 1e9))

    def end_attempt(self, token: int) -> bool:
        """The job of ``token`` ended (interrupted or not): take it, its deadline dropped, to settle it here.

        False when it was settled as timed out already (:meth:`time_out`):
        then nothing more may be done with that attempt.
        """
        with self._lock:
            stored, state, started_ns, _ = self._read(token)
            if stored != token or state != STARTED:
                return False
            self._write(token, STARTED, started_ns, 0)
            return True

    def finish(self, token: int) -> None:
        """Note that ``token``'s attempt ended (before its settlement is sent)."""
        stored, _, started_ns, _ = self._read(token)
        if stored == token:
            self._write(token, FINISHED, started_ns)
