"""The cases the harness measures, their job counts, and what worker processes read from their environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The ``bench/`` folder: put on PYTHONPATH of every worker and producer process.
BENCH_DIR = Path(__file__).resolve().parent.parent
#: The repository the harness is part of (for the sqjobs commit in the report).
REPO_DIR = BENCH_DIR.parent

#: Worker processes per system, as the issue asks (the machine has 2 cores).
PROCESSES = 2
#: Threads per worker process in the I/O case.
THREADS = 8
#: How long each I/O-bound job sleeps, and each async job awaits.
IO_SLEEP_S = 0.020
ASYNC_SLEEP_S = 0.05
#: The prefetch of the "dramatiq-p64" row (Dramatiq's default is 2 x threads).
DRAMATIQ_PREFETCH = 64

#: Redis the job bodies count in: the machine's server, a database number of its own that is
#: emptied (FLUSHDB, that database only) before every run.
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_DB = 9
#: The counter every job increments, and the list pickup jobs push their start time on.
DONE_KEY = "peerbench:done"
STARTED_KEY = "peerbench:started"

#: Environment variables the worker and producer processes read (set by the runner).
ENV_REDIS = "PEERBENCH_REDIS"  # "host:port/db"
ENV_DIR = "PEERBENCH_DIR"  # the run's temporary folder (queue files, config)
ENV_CASE = "PEERBENCH_CASE"  # the case being run (some peers add middleware for "async")
ENV_HUEY = "PEERBENCH_HUEY"  # "sqlite" or "redis"

#: How often the runner reads the counter while a queue drains.
POLL_S = 0.01
#: Idle time before each pickup sample, so that the worker has gone back to waiting.
PICKUP_IDLE_S = (0.3, 0.7)
#: Longest a run may take before it is reported as timed out.
RUN_DEADLINE_S = 600.0
QUICK_RUN_DEADLINE_S = 60.0


@dataclass(frozen=True)
class Case:
    """One thing measured: its name, what it measures, and its default and ``--quick`` counts."""

    name: str
    what: str
    count: int
    quick_count: int
    #: What ``count`` counts.
    unit: str = "jobs"


CASES: dict[str, Case] = {case.name: case for case in (
    Case("cpu", "drain CPU-light jobs (one Redis INCR each), enqueued before the workers start", 20_000, 1_000),
    Case("io", f"drain I/O-bound jobs (sleep {IO_SLEEP_S * 1000:.0f} ms, then INCR), {THREADS} threads a process",
         4_000, 160),
    Case("async", f"drain async def jobs (await asyncio.sleep({ASYNC_SLEEP_S:g}), then INCR)", 500, 40),
    Case("enqueue", "send jobs from one process: one call per job, then one bulk call", 20_000, 1_000),
    Case("pickup", "idle workers: time from the send call to the job's first line", 30, 5, "samples"),
    Case("eager", "eager mode: cost of .delay() beyond a plain call of the same no-op function",
         20_000, 2_000, "calls"),
    Case("sqs", "SQS requests per job on moto, with threads where the worker has them (bench/bench_sqs.py)",
         1_000, 200),
)}

#: Cases measured by draining a queue filled before the workers start.
DRAIN_CASES = ("cpu", "io", "async")


def redis_address() -> str:
    """The ``host:port/db`` string passed to the processes in :data:`ENV_REDIS`."""
    return f"{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


def redis_url(address: str) -> str:
    """``redis://host:port/db`` for an :data:`ENV_REDIS` value (the peers' libraries take URLs)."""
    return f"redis://{address}"
