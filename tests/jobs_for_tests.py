"""Jobs that test worker processes import (``[sqjobs] jobs = jobs_for_tests``).

Each job records what it did by appending one line to a file named in its
arguments; small appends with O_APPEND are atomic between processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from sqjobs import Job, ResultJob, Retry, get_job, job
from sqjobs.identity import worker_pid


def record(path: str, line: str) -> None:
    """Append ``line`` to ``path`` atomically."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job(queue="default", name="record")
def record_job(path: str, token: str) -> str:
    """Record ``token`` and return it."""
    record(path, f"{token} {worker_pid()}")
    return token


@job(queue="default", name="chatty")
def chatty_job(text: str) -> None:
    """Log ``text`` through a logger of its own (the worker's lines then say which job logged it)."""
    logging.getLogger("tests.chatty").warning("chatty says %s", text)


@job(queue="default", name="slow")
def slow_job(path: str, token: str, seconds: float) -> str:
    """Record the start, sleep ``seconds``, record the end."""
    record(path, f"start {token} {worker_pid()}")
    time.sleep(seconds)
    record(path, f"end {token} {worker_pid()}")
    return token


@job(queue="default", name="wait_for_file")
def wait_for_file_job(path: str, token: str, release: str, limit_s: float = 60) -> str:
    """Record the start, wait until ``release`` exists, record the end (lets tests act mid-job)."""
    record(path, f"start {token} {worker_pid()}")
    deadline = time.monotonic() + limit_s
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    record(path, f"end {token} {worker_pid()}")
    return token


def _flaky(path: str, token: str, failures: int) -> str:
    done = sum(1 for line in Path(path).read_text().splitlines() if line.startswith(f"try {token} ")) \
        if os.path.exists(path) else 0
    record(path, f"try {token} {time.time():.3f}")
    if done < failures:
        raise RuntimeError(f"planned failure {done + 1} of {failures}")
    record(path, f"ok {token}")
    return token


@job(queue="default", name="flaky2", retries=2, retry_delay=0.5)
def flaky_two_retries(path: str, token: str, failures: int) -> str:
    """Fail ``failures`` times, then succeed; two retries allowed."""
    return _flaky(path, token, failures)


@job(queue="default", name="flaky1", retries=1, retry_delay=0.3)
def flaky_one_retry(path: str, token: str, failures: int) -> str:
    """Fail ``failures`` times, then succeed; one retry allowed."""
    return _flaky(path, token, failures)


@job(queue="default", name="asks_retry", retries=3)
def asks_retry(path: str, token: str) -> str:
    """Ask for a retry in 0.2 s once, then succeed."""
    if not os.path.exists(path):
        record(path, f"retry {token}")
        raise Retry(delay=0.2)
    record(path, f"ok {token}")
    return token


@job(queue="default", name="too_slow", timeout=0.5)
def too_slow(path: str, token: str) -> str:
    """Run past its 0.5 s timeout."""
    record(path, f"start {token}")
    time.sleep(30)
    record(path, f"end {token}")
    return token


class AdderJob(Job):
    """The seed talk's AdderJob."""

    name = "adder_job"
    queue = "default"

    def run(self, *args: int, **kwargs: object) -> int:
        return sum(args)


# -- tracked jobs (job status, tests/test_status*.py) ------------------------------------------


@job(queue="default", name="tracked_add", track=True)
def tracked_add(a: int, b: int) -> int:
    """Return ``a + b``; its status and result are recorded."""
    return a + b


@job(queue="default", name="tracked_flaky1", track=True, retries=1, retry_delay=0.05)
def tracked_flaky_one_retry(path: str, token: str, failures: int) -> str:
    """Fail ``failures`` times, then succeed; one retry allowed; tracked."""
    return _flaky(path, token, failures)


@job(queue="default", name="tracked_fails", track=True)
def tracked_fails(token: str) -> None:
    """Always raise ValueError naming ``token``; no retries; tracked."""
    raise ValueError(f"boom {token}")


@job(queue="default", name="tracked_not_json", track=True)
def tracked_not_json() -> object:
    """Return a set, which JSON cannot carry; tracked."""
    return {1, 2}


class DummyResultJob(ResultJob):
    """The seed talk's DummyResultJob."""

    name = "dummy_result_job"
    queue = "dummy_queue"

    def run(self, *args: object, **kwargs: object) -> None:
        pass


class SeesOwnStatus(ResultJob):
    """Return the state and attempt count its own row shows while it runs."""

    name = "sees_own_status"
    queue = "default"

    def run(self) -> list:
        record = get_job(str(self.id)).record
        assert record is not None
        return [record.status.value, record.attempts, record.worker_pid]


# -- async jobs and time limits (tests/test_async_and_timeouts.py) ------------------------------


@job(queue="default", name="async_record", track=True)
async def async_record(path: str, token: str) -> str:
    """Record ``token`` after awaiting; return it (tracked, so its result is stored)."""
    import asyncio

    await asyncio.sleep(0.01)
    record(path, f"{token} {worker_pid()}")
    return token


@job(queue="default", name="swallows_timeout", timeout=0.5, track=True)
def swallows_timeout(path: str, token: str) -> str:
    """Catch every Exception around a long sleep, as careless code does; must still time out."""
    record(path, f"start {token}")
    try:
        time.sleep(30)
    except Exception:
        record(path, f"swallowed {token}")
    record(path, f"end {token}")
    return token


# -- jobs that take their process down (tests/test_crashes.py) ----------------------------------


@job(queue="default", name="exits_hard", retries=1, retry_delay=0.2, track=True)
def exits_hard(path: str, token: str) -> None:
    """End the process at once, as os._exit in a library does."""
    record(path, f"try {token}")
    os._exit(3)


@job(queue="default", name="segfaults")
def segfaults(path: str, token: str) -> None:
    """Crash the interpreter in C code (a segmentation fault)."""
    import ctypes

    record(path, f"try {token}")
    ctypes.string_at(0)


@job(queue="default", name="killed")
def killed(path: str, token: str) -> None:
    """Die by SIGKILL, as the out-of-memory killer kills."""
    import signal

    record(path, f"try {token}")
    os.kill(os.getpid(), signal.SIGKILL)


@job(queue="default", name="kills_its_worker")
def kills_its_worker(path: str, token: str) -> None:
    """Kill the worker process itself (not only the job process), as a whole-worker OOM kill would."""
    import signal

    record(path, f"try {token}")
    os.kill(worker_pid(), signal.SIGKILL)
    time.sleep(30)


@job(queue="default", name="holds_the_gil")
def holds_the_gil(path: str, token: str, seconds: float) -> str:
    """Sleep in C without releasing the GIL (ctypes.PyDLL keeps it), as a long C extension call does."""
    import ctypes

    record(path, f"start {token} {worker_pid()}")
    ctypes.PyDLL(None).usleep(int(seconds * 1_000_000))
    record(path, f"end {token} {worker_pid()}")
    return token


@job(queue="default", name="stuck_in_c", timeout=1, track=True)
def stuck_in_c(path: str, token: str) -> str:
    """Block in C for 30 s, past its 1 s timeout, with signals blocked (as some C libraries do) and the GIL held."""
    import ctypes
    import signal

    record(path, f"start {token}")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    ctypes.PyDLL(None).usleep(30_000_000)
    record(path, f"end {token}")
    return token


# -- status rows the database cannot keep (tests/test_status_rows.py) ----------------------------


@job(queue="default", name="tracked_big_result", track=True)
def tracked_big_result(size: int) -> str:
    """Return a string of ``size`` characters: its JSON is ``size + 2`` bytes; tracked."""
    return "x" * size


# -- several jobs at once (tests/test_concurrency.py): each records start and end with a monotonic time --


@job(queue="default", name="io_wait")
def io_wait(path: str, token: str, seconds: float) -> str:
    """Record start and end around a ``seconds`` sleep (an I/O-bound job: the GIL is free meanwhile)."""
    record(path, f"start {token} {worker_pid()} {time.monotonic()}")
    time.sleep(seconds)
    record(path, f"end {token} {worker_pid()} {time.monotonic()}")
    return token


@job(queue="default", name="async_wait")
async def async_wait(path: str, token: str, seconds: float) -> str:
    """Like io_wait, awaiting ``asyncio.sleep`` instead."""
    record(path, f"start {token} {worker_pid()} {time.monotonic()}")
    await asyncio.sleep(seconds)
    record(path, f"end {token} {worker_pid()} {time.monotonic()}")
    return token


@job(queue="default", name="thread_stuck", timeout=0.5, retries=0)
def thread_stuck(path: str, token: str) -> str:
    """Ignore the timeout's interruption by sleeping in C-level waits for 30 s (a thread cannot be stopped)."""
    record(path, f"start {token} {worker_pid()} {os.getpid()}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException:  # careless code swallowing everything, as stuck jobs do
            continue
    record(path, f"end {token} {worker_pid()}")
    return token


@job(queue="default", name="async_too_slow", timeout=0.5, retries=0)
async def async_too_slow(path: str, token: str) -> str:
    """Await far past its 0.5 s timeout (cancelled by the worker)."""
    record(path, f"start {token} {worker_pid()} {time.monotonic()}")
    await asyncio.sleep(30)
    record(path, f"end {token} {worker_pid()}")
    return token


@job(queue="fifo", name="grouped")
def grouped(path: str, token: str, seconds: float) -> str:
    """Record start/end around a sleep (used with message groups)."""
    record(path, f"start {token} {worker_pid()} {time.monotonic()}")
    time.sleep(seconds)
    record(path, f"end {token} {worker_pid()} {time.monotonic()}")
    return token
