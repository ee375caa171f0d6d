"""One run of one system on one case, and how the rounds of a row are summed up.

Drain cases (cpu, io, async): the queue is filled first (Redis database
emptied, fresh folder), then the workers start and the runner reads the
Redis counter every :data:`~peerbench.settings.POLL_S` until it reaches N.
Nothing is subtracted, but the worker start-up is kept apart: the rate is the
jobs done between the first look that saw a job done and the look that saw
the last, over the time between those two looks. Start-up is the time from
starting the workers to that first look.

Enqueue, pickup and eager are timed inside the producer child
(:mod:`peerbench.producer`), pickup with the workers running.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .base import NotAvailable, System
from .counter import Redis
from .processes import WorkerGroup
from .settings import BENCH_DIR, DONE_KEY, ENV_CASE, ENV_DIR, ENV_REDIS, POLL_S, THREADS

#: How often the runner looks for new descendants of the workers (to kill them all at the end).
WATCH_S = 0.5


class RunError(Exception):
    """A run failed (the workers died, a deadline passed, the producer failed); the message says how."""


@dataclass
class Outcome:
    """What one run of one row gave: a value (in the row's unit), or why there is none."""

    value: float | None = None
    na: str | None = None
    error: str | None = None
    #: Seconds from starting the workers to the first job seen done (drain and pickup rows).
    startup_s: float | None = None
    #: Pickup latencies in seconds.
    samples: list[float] = field(default_factory=list)
    #: What was used or seen (the API measured, duplicates...): the same text every round.
    note: str = ""
    #: Secondary numbers by unit ("calls/s"), summed up as medians in the notes.
    extras: dict[str, float] = field(default_factory=dict)


def environment(system: System, case: str, folder: Path, redis_address: str) -> dict[str, str]:
    """The environment of the workers and the producer of one run."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env[ENV_REDIS], env[ENV_DIR], env[ENV_CASE] = redis_address, str(folder), case
    env.update(system.worker_env(case))
    return env


def produce(system: System, action: str, case: str, count: int, folder: Path, env: dict[str, str],
            timeout_s: float) -> dict:
    """Run the producer child; return its JSON answer. Raises NotAvailable or RunError."""
    command = [sys.executable, "-m", "peerbench.producer", system.name, action, case, str(count), str(folder)]
    try:
        done = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RunError(f"the producer ({action}) took over {timeout_s:g} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RunError(f"the producer ({action}) failed: {last}")
    answer = json.loads(lines[-1])
    if "na" in answer:
        raise NotAvailable(answer["na"])
    return answer


def watch_drain(redis: Redis, group: WorkerGroup, count: int, deadline_s: float) -> Outcome:
    """Read the counter until it reaches ``count``; return jobs/s from first to last and the start-up."""
    started = time.monotonic()
    first: tuple[float, int] | None = None
    watched = started
    while True:
        done = redis.get_int(DONE_KEY)
        now = time.monotonic()
        if done and first is None:
            first = (now, done)
        if done >= count:
            break
        if now - watched > WATCH_S:
            group.watch()
            watched = now
        if not group.running():
            raise RunError(f"the workers exited {group.exit_codes()} after {done} of {count} jobs: "
                           f"{group.log_tail()}")
        if now - started > deadline_s:
            raise RunError(f"timed out: {done} of {count} jobs done in {deadline_s:g} s")
        time.sleep(POLL_S)
    assert first is not None
    if first[1] < count and now > first[0]:
        return Outcome((count - first[1]) / (now - first[0]), startup_s=first[0] - started)
    return Outcome(count / (now - started), startup_s=first[0] - started,
                   note="all done by the first look: rate from the workers' start")


class Run:
    """Runs of one system: each in a fresh folder, on an emptied Redis database."""

    def __init__(self, system: System, redis: Redis, redis_address: str, deadline_s: float) -> None:
        self.system = system
        self.redis = redis
        self.redis_address = redis_address
        self.deadline_s = deadline_s

    def _fresh(self, case: str) -> tuple[Path, dict[str, str]]:
        self.redis.flushdb()
        folder = Path(tempfile.mkdtemp(prefix=f"peerbench-{self.system.name}-"))
        self.system.prepare(folder)
        return folder, environment(self.system, case, folder, self.redis_address)

    def drain(self, case: str, count: int) -> Outcome:
        """Fill the queue with ``count`` jobs of ``case``, start the workers, time the drain."""
        folder, env = self._fresh(case)
        try:
            commands = self.system.worker_commands(case, folder)
            produce(self.system, "fill", case, count, folder, env, self.deadline_s)
            with WorkerGroup(commands, env, folder) as group:
                outcome = watch_drain(self.redis, group, count, self.deadline_s)
            ran = self.redis.get_int(DONE_KEY)
            if ran > count:
                outcome.note = "; ".join(filter(None, [outcome.note, f"{ran - count} job(s) ran twice"]))
            return outcome
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def enqueue(self, action: str, count: int) -> Outcome:
        """Time ``count`` single sends (``action="enqueue"``) or one bulk send (``"bulk"``)."""
        folder, env = self._fresh("enqueue")
        try:
            answer = produce(self.system, action, "enqueue", count, folder, env, self.deadline_s)
            return Outcome(count / answer["seconds"], note=answer["api"])
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def pickup(self, count: int) -> Outcome:
        """Start the workers, then take ``count`` send-to-start samples from the producer."""
        folder, env = self._fresh("pickup")
        try:
            with WorkerGroup(self.system.worker_commands("pickup", folder), env, folder):
                answer = produce(self.system, "pickup", "pickup", count, folder, env, self.deadline_s)
            samples = answer["latencies_s"]
            return Outcome(statistics.median(samples), startup_s=answer["first_s"], samples=samples)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def eager(self, count: int) -> Outcome:
        """Time ``count`` eager sends; the value is microseconds per send beyond a plain call."""
        folder, env = self._fresh("eager")
        try:
            answer = produce(self.system, "eager", "eager", count, folder, env, self.deadline_s)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if answer["api"] == "plain call":
            return Outcome(answer["plain_s"] * 1e6, note="plain call")
        return Outcome((answer["delay_s"] - answer["plain_s"]) * 1e6, note=answer["api"],
                       extras={"calls/s": 1 / answer["delay_s"]})

    def sqs(self, count: int) -> Outcome:
        """Run ``bench/bench_sqs.py`` (moto, no idle watch) for ``count`` jobs; the value is requests per job."""
        if importlib.util.find_spec("moto") is None:
            raise NotAvailable("moto is not installed (pip install -e '.[test]')")
        command = [sys.executable, str(BENCH_DIR / "bench_sqs.py"), "--no-idle", "--jobs", str(count),
                   "--threads", str(THREADS)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.deadline_s)
        except subprocess.TimeoutExpired:
            raise RunError(f"bench_sqs.py took over {self.deadline_s:g} s") from None
        per_job = re.search(r"requests per job at steady state: ([0-9.]+)", done.stdout)
        if done.returncode != 0 or per_job is None:
            raise RunError("bench_sqs.py failed: " + (done.stderr.strip().splitlines() or ["no output"])[-1])
        threads = re.search(r"worker threads: (.*)", done.stdout)
        speed = re.search(r"enqueue \+ drain \(jobs/s\) +([0-9]+)", done.stdout)
        return Outcome(float(per_job.group(1)), note=f"threads {threads.group(1)}" if threads else "",
                       extras={"jobs/s through moto": float(speed.group(1))} if speed else {})


def guarded(measure: Callable[..., Outcome], *args: object) -> Outcome:
    """Call ``measure(*args)``; turn NotAvailable and RunError (and any other failure) into an Outcome."""
    try:
        return measure(*args)
    except NotAvailable as exc:
        return Outcome(na=str(exc))
    except RunError as exc:
        return Outcome(error=str(exc))
    except Exception as exc:  # a row reports its failure, and the run goes on
        return Outcome(error=f"{type(exc).__name__}: {exc}")


def percentile(values: list[float], share: float) -> float:
    """The ``share`` (0..1) percentile of ``values``, nearest rank."""
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]
