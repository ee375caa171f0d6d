"""Jobs for the tests of messages that cannot run (``[sqjobs] jobs = poison_jobs_for_tests``)."""

from __future__ import annotations

import os

from sqjobs import job


@job(queue="default", name="poison.fails_loudly")
def fails_loudly(path: str, payload: str) -> None:
    """Record the run in ``path``, then fail with an error that quotes the whole ``payload`` (no retries)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"run {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    raise ValueError(f"cannot use {payload}")
