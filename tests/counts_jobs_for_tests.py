"""Jobs for the tests of counts (tests/test_counts.py), imported by worker processes."""

from __future__ import annotations

import time
from pathlib import Path

from sqjobs import job


@job(queue="default", name="counts.retry_in_1s", retries=2, retry_delay=1.0)
def retry_in_1s(path: str, token: str, failures: int) -> str:
    """Fail ``failures`` times, then succeed; the first retry comes about a second later."""
    record = Path(path)
    done = sum(1 for line in record.read_text().splitlines() if line.startswith(f"try {token} ")) \
        if record.exists() else 0
    with record.open("a") as out:
        out.write(f"try {token} {time.time():.3f}\n")
    if done < failures:
        raise RuntimeError(f"planned failure {done + 1} of {failures}")
    with record.open("a") as out:
        out.write(f"ok {token}\n")
    return token
