"""Who is running: this machine's name and the pid of the worker a job runs under."""

from __future__ import annotations

import os
import socket

#: This machine's name, recorded with each started attempt.
HOST_NAME = socket.gethostname()

#: Environment variable a job process gets: the pid of the worker that supervises it.
WORKER_PID_ENV = "SQJOBS_WORKER_PID"


def worker_pid() -> int:
    """The pid of the worker running this code: its job process's parent, or this process itself."""
    try:
        return int(os.environ[WORKER_PID_ENV])
    except (KeyError, ValueError):
        return os.getpid()
