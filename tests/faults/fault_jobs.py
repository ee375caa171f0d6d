"""Jobs of the fault suite, imported by its worker processes (``[sqjobs] jobs = fault_jobs``).

Each records every run by appending a line to a file (O_APPEND: atomic between processes).
"""

from __future__ import annotations

import asyncio
import os
import time

from sqjobs import job


def record(path: str, line: str) -> None:
    """Append ``line`` to ``path`` in one write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job(queue="default", name="fault.wait")
def wait(path: str, token: str, release: str) -> None:
    """Record the start, wait (at most a minute) until ``release`` exists, record the end."""
    record(path, f"start {token} {os.getpid()}")
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    record(path, f"end {token} {os.getpid()}")


@job(queue="default", name="fault.async_wait")
async def async_wait(path: str, token: str, release: str) -> None:
    """The same, awaiting: an async job on the job process's event loop."""
    record(path, f"start {token} {os.getpid()}")
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    record(path, f"end {token} {os.getpid()}")


@job(queue="default", name="fault.tracked_wait", track=True)
def tracked_wait(path: str, token: str, release: str) -> str:
    """A tracked :func:`wait`: its row in the status database records each attempt and the outcome."""
    wait(path, token, release)
    return token
