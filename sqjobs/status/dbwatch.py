"""A client-side deadline for database statements whose driver has none (PostgreSQL's psycopg2).

psycopg2 waits for a server's answer as long as the connection stays open.
When a network drops packets, a status write would then hold ``.delay()`` or
a worker for the whole outage without a word, and PostgreSQL's own
``statement_timeout`` cannot help: the statement never reaches the server,
or its answer never comes back. So each guarded statement is watched: one
watchdog thread per process shuts down the socket of a connection whose
statement is still unanswered at its deadline. The driver then fails at
once (the server "closed the connection"), and the caller treats it as a
lost connection: closed, reconnected, retried.

MySQL and MariaDB need none of this: PyMySQL has read and write timeouts.

The watchdog holds a duplicate of the socket's descriptor while it watches,
so a descriptor the driver closes and the system hands out again is never
the one shut down.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any


class Deadline:
    """One statement's deadline: a context manager; ``fired`` tells whether the watchdog cut it off."""

    def __init__(self, watchdog: Watchdog, connection: Any, timeout_s: float) -> None:
        self.watchdog = watchdog
        self.connection = connection
        self.timeout_s = timeout_s
        #: True once the watchdog shut the connection down.
        self.fired = False
        self._fd = -1

    def __enter__(self) -> Deadline:
        try:
            self._fd = os.dup(self.connection.fileno())
        except Exception:  # already closed: the statement fails by itself, no need to watch it
            return self
        self.watchdog.add(self, time.monotonic() + self.timeout_s)
        return self

    def __exit__(self, *_: object) -> None:
        if self._fd >= 0:
            self.watchdog.remove(self)
            os.close(self._fd)
            self._fd = -1

    def fire(self) -> None:
        """Shut the watched socket down both ways (the watchdog calls it under its lock)."""
        self.fired = True
        try:
            sock = socket.socket(fileno=self._fd)
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.detach()  # the descriptor stays open: __exit__ closes it


class Watchdog:
    """Fires the deadlines of statements still unanswered when they are due; one daemon thread."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Deadline, float] = {}
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline, due: float) -> None:
        """Watch ``deadline`` until ``due`` (a monotonic time)."""
        with self._cond:
            earliest = min(self._due.values(), default=None)
            self._due[deadline] = due
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sqjobs-db-watchdog", daemon=True)
                self._thread.start()
            elif earliest is None or due < earliest:
                self._cond.notify()

    def remove(self, deadline: Deadline) -> None:
        """Stop watching ``deadline`` (its statement was answered, or failed)."""
        with self._cond:
            self._due.pop(deadline, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for deadline in [d for d, due in self._due.items() if due <= now]:
                    del self._due[deadline]
                    deadline.fire()
                earliest = min(self._due.values(), default=None)
                self._cond.wait(None if earliest is None else earliest - now)


#: This process's watchdog.
watchdog = Watchdog()
# A forked child has no watchdog thread, and nothing to watch of its parent's.
os.register_at_fork(after_in_child=watchdog._reset)


def deadline(connection: Any, timeout_s: float) -> Deadline:
    """Return a context manager that shuts ``connection``'s socket down if its block outlives ``timeout_s``."""
    return Deadline(watchdog, connection, timeout_s)
