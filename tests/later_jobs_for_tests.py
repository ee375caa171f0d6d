"""Jobs for the tests of jobs for later (delays, ETAs, unique keys, cancellation), imported by worker processes."""

from __future__ import annotations

import os
import time

from sqjobs import job


def record(path: str, line: str) -> None:
    """Append ``line`` to ``path`` atomically (small appends with O_APPEND are)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job(queue="later", name="later.stamp")
def stamp(path: str, token: str) -> str:
    """Record ``token`` and the time it ran."""
    record(path, f"{token} {time.time():.3f}")
    return token


@job(queue="later", name="later.tracked_stamp", track=True)
def tracked_stamp(path: str, token: str) -> str:
    """Record ``token`` and the time it ran; tracked."""
    record(path, f"{token} {time.time():.3f}")
    return token


@job(queue="later", name="later.unique_stamp", unique=True)
def unique_stamp(path: str, token: str) -> str:
    """Record ``token``; one at a time per arguments (its key is made from them)."""
    record(path, f"{token} {time.time():.3f}")
    return token


@job(queue="later", name="later.tracked_wait", track=True)
def tracked_wait(path: str, token: str, release: str, limit_s: float = 60) -> str:
    """Record the start, wait until ``release`` exists, record the end; tracked."""
    record(path, f"start {token}")
    deadline = time.monotonic() + limit_s
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    record(path, f"end {token}")
    return token


@job(queue="later", name="later.unique_fails", unique=True)
def unique_fails(token: str) -> None:
    """Always raise (no retries); one at a time per arguments."""
    raise RuntimeError(f"planned failure {token}")


@job(queue="later", name="later.cancellable_stamp", cancellable=True)
def cancellable_stamp(path: str, token: str) -> str:
    """Record ``token`` and the time it ran; untracked, every message may be cancelled."""
    record(path, f"{token} {time.time():.3f}")
    return token
