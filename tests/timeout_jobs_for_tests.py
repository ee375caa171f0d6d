"""Jobs that run past their timeout in a worker with threads (``[sqjobs] jobs = timeout_jobs_for_tests``).

Each records its job process's pid, so a test sees that the job process was
replaced. All are tracked: their status row tells when they started and when
their attempt was settled.
"""

from __future__ import annotations

import os
import time

from sqjobs import job


def record(path: str, line: str) -> None:
    """Append ``line`` to ``path`` atomically (O_APPEND)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job(queue="default", name="sleeps_past_timeout", timeout=1, retries=0, track=True)
def sleeps_past_timeout(path: str, token: str, seconds: float) -> str:
    """Block in one ``time.sleep(seconds)``, past the 1 s timeout: no interrupt reaches a thread there."""
    record(path, f"start {token} {os.getpid()}")
    time.sleep(seconds)
    record(path, f"end {token} {os.getpid()}")
    return token


@job(queue="default", name="loops_past_timeout", timeout=1, retries=0, track=True)
def loops_past_timeout(path: str, token: str) -> str:
    """Compute in a Python loop for 30 s, past the 1 s timeout: the interpreter interrupts it there."""
    record(path, f"start {token} {os.getpid()}")
    deadline = time.monotonic() + 30
    count = 0
    while time.monotonic() < deadline:
        count += 1
    record(path, f"end {token} {os.getpid()}")
    return token


@job(queue="default", name="holds_the_gil_past_timeout", timeout=1, retries=0, track=True)
def holds_the_gil_past_timeout(path: str, token: str, seconds: float) -> str:
    """Block in C for ``seconds`` holding the GIL, past the 1 s timeout: nothing in its process runs meanwhile."""
    import ctypes

    record(path, f"start {token} {os.getpid()}")
    ctypes.PyDLL(None).usleep(int(seconds * 1_000_000))
    record(path, f"end {token} {os.getpid()}")
    return token


@job(queue="default", name="record_process", track=True)
def record_process(path: str, token: str) -> str:
    """Record ``token`` and the pid of the job process that ran it."""
    record(path, f"{token} {os.getpid()}")
    return token
