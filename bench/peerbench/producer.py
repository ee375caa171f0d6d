"""The producer child: sends jobs for one system and prints one JSON line with what it measured.

    python -m peerbench.producer SYSTEM ACTION CASE COUNT FOLDER

Actions: ``fill`` (send COUNT jobs of CASE before the workers start, in bulk
where the system can), ``enqueue`` (COUNT single sends, timed), ``bulk`` (one
bulk call of COUNT, timed), ``pickup`` (one warm-up job, then COUNT samples
of send-to-start latency, each after an idle pause), ``eager`` (COUNT eager
``.delay()`` calls and COUNT plain calls, timed). Each timed action sends one
untimed job first, so that connecting and creating queues is not counted.

It runs in a process of its own so that the runner never imports the peers'
libraries (the sqjobs and raw rows need none of them). A case the system
cannot run prints ``{"na": "why"}``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from . import bodies
from .base import NotAvailable, System
from .counter import for_this_thread
from .settings import PICKUP_IDLE_S, STARTED_KEY
from .systems import by_name

#: How long a pickup sample may wait for its job to start (the first one: for the workers to start too).
PICKUP_TIMEOUT_S = 30.0
FIRST_PICKUP_TIMEOUT_S = 60.0


def fill(system: System, case: str, count: int, folder: Path) -> dict[str, Any]:
    """Send ``count`` jobs of ``case`` as fast as the system can (not measured: the drain is)."""
    try:
        api, send_many = system.bulk_sender(case, folder)
        for start in range(0, count, 5000):
            send_many(range(start, min(start + 5000, count)))
    except NotAvailable:
        api, send = system.single_api, system.sender(case, folder)
        for index in range(count):
            send(index)
    return {"api": api}


def enqueue(system: System, count: int, folder: Path) -> dict[str, Any]:
    """Time ``count`` single sends of the CPU job."""
    send = system.sender("enqueue", folder)
    send(-1)
    started = time.perf_counter()
    for index in range(count):
        send(index)
    return {"api": system.single_api, "seconds": time.perf_counter() - started}


def bulk(system: System, count: int, folder: Path) -> dict[str, Any]:
    """Time one bulk call sending ``count`` CPU jobs."""
    api, send_many = system.bulk_sender("enqueue", folder)
    send_many(range(-1, 0))
    started = time.perf_counter()
    send_many(range(count))
    return {"api": api, "seconds": time.perf_counter() - started}


def pickup(system: System, count: int, folder: Path) -> dict[str, Any]:
    """One warm-up job (its latency includes the workers' start), then ``count`` timed ones."""
    send, redis = system.sender("pickup", folder), for_this_thread()

    def one(index: int, timeout_s: float) -> float:
        sent = time.time()
        send(index)
        started = redis.blpop(STARTED_KEY, timeout_s)
        if started is None:
            raise SystemExit(f"job {index} did not start within {timeout_s:g} s")
        return float(started) - sent

    first = one(-1, FIRST_PICKUP_TIMEOUT_S)
    pauses = random.Random(count)  # the same idle pauses on every system
    latencies = []
    for index in range(count):
        time.sleep(pauses.uniform(*PICKUP_IDLE_S))  # the workers go back to waiting
        latencies.append(one(index, PICKUP_TIMEOUT_S))
    return {"first_s": first, "latencies_s": latencies}


def eager(system: System, count: int, folder: Path) -> dict[str, Any]:
    """Time ``count`` eager sends of the no-op job, and ``count`` plain calls of the same function."""
    api, send = system.eager(folder)
    send(-1)
    started = time.perf_counter()
    for index in range(count):
        send(index)
    sent_s = time.perf_counter() - started
    started = time.perf_counter()
    for index in range(count):
        bodies.noop(index)
    plain_s = time.perf_counter() - started
    return {"api": api, "delay_s": sent_s / count, "plain_s": plain_s / count}


def main(argv: list[str]) -> None:
    """Run one action; print its JSON line."""
    name, action, case, count, folder = argv[0], argv[1], argv[2], int(argv[3]), Path(argv[4])
    system = by_name(name)
    try:
        if action == "fill":
            result = fill(system, case, count, folder)
        elif action in ("enqueue", "bulk", "pickup", "eager"):
            result = {"enqueue": enqueue, "bulk": bulk, "pickup": pickup, "eager": eager}[action](
                system, count, folder)
        else:
            raise SystemExit(f"unknown action {action}")
    except NotAvailable as exc:
        result = {"na": str(exc)}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
