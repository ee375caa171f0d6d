"""Forks that inherit no half-held SQLite lock.

SQLite guards its memory allocator with a process-wide mutex. A process
forked while another of its threads is inside SQLite inherits that mutex
held, and the child hangs at its first SQLite call. The worker forks its job
process while its heartbeat thread may be renewing messages on the embedded
broker, and an application may run a worker in a thread while other threads
read job statuses. So sqjobs' own SQLite work (the embedded broker, a status
database on SQLite) runs inside :func:`sqlite_section`, and every
``os.fork()`` of the process waits until no thread is in one.
"""

from __future__ import annotations

import os
import threading

#: Held while a thread of this process is inside sqjobs' SQLite calls, and by a fork.
_IN_SQLITE = threading.RLock()


def sqlite_section() -> threading.RLock:
    """The lock to hold around SQLite calls (``with sqlite_section(): ...``); reentrant."""
    return _IN_SQLITE


os.register_at_fork(before=_IN_SQLITE.acquire, after_in_parent=_IN_SQLITE.release,
                    after_in_child=_IN_SQLITE.release)
