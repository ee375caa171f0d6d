"""A poison flood: 10,000 malformed bodies ahead of 10 good jobs, on one real worker process (SQLite).

The good jobs run; every poison body is in ``default-dead`` with the reason
its kind calls for; the worker's memory (its process and its job process)
stays flat between the 2,000th and the 10,000th body.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import psutil
import pytest

import sqjobs
from sqjobs.brokers.base import REASON_ATTRIBUTE, OutgoingMessage
from sqjobs.brokers.sqlite import SQLiteBroker
from tests import jobs_for_tests as jobs
from tests.faults.drain import runs
from tests.support import send_many, sqlite_config, start_worker, stop_process, wait_until

pytestmark = pytest.mark.faults

POISON = 10_000
GOOD = 10
#: Growth of the worker's resident memory allowed from the 2,000th to the 10,000th body. Generous:
#: allocator noise is a few MiB; a leak of even 2 KiB per message would be 16 MiB.
RSS_GROWTH_BYTES = 12 * 1024 * 1024


def _b64(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


#: Each kind of malformed body (made from its index) and a part of the reason it must be dead-lettered with.
KINDS = [
    (lambda i: f"this is ~ not base64 ~ {i}", "neither base64 nor JSON"),
    (lambda i: base64.b64encode(b"{nope %d" % i).decode(), "not valid JSON"),
    (lambda i: _b64({"args": [i]}), "no job 'name'"),
    (lambda i: _b64({"name": "record", "args": {"a": i}}), "'args' is a JSON dict"),
    (lambda i: _b64({"name": "record", "args": [i], "kwargs": [1]}), "'kwargs' is a JSON list"),
]


def _rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and its children (the job process)."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def test_10000_malformed_bodies_ahead_of_10_good_jobs(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    sqjobs.configure(str(config))
    broker = sqjobs.get_broker()
    assert isinstance(broker, SQLiteBroker)
    record = tmp_path / "record.txt"
    bodies = {KINDS[i % len(KINDS)][0](i): KINDS[i % len(KINDS)][1] for i in range(POISON)}
    assert len(bodies) == POISON
    items = list(bodies)
    for start in range(0, POISON, 10):
        broker.send_batch("default", [OutgoingMessage(body) for body in items[start:start + 10]])
    send_many(broker, jobs.record_job, [[str(record), f"good{i}"] for i in range(GOOD)])
    worker = start_worker(config, ["default"], "--prefetch", "10")
    try:
        wait_until(lambda: broker.stats("default-dead").visible >= 2_000, timeout_s=120,
                   what="2,000 bodies dead-lettered")
        early = _rss(worker.pid)
        wait_until(lambda: broker.stats("default-dead").visible >= POISON, timeout_s=120,
                   what="every body dead-lettered")
        late = _rss(worker.pid)
        wait_until(lambda: len(runs(record)) == GOOD, what="the good jobs to run")
        assert worker.poll() is None
    finally:
        assert stop_process(worker) == 0
    assert runs(record) == Counter({f"good{i}": 1 for i in range(GOOD)})
    dead = broker.peek("default-dead", POISON + 1)
    assert len(dead) == POISON
    assert {message.body for message in dead} == set(bodies), "every poison body, unchanged"
    wrong = [(m.body, m.attributes.get(REASON_ATTRIBUTE)) for m in dead
             if bodies[m.body] not in m.attributes.get(REASON_ATTRIBUTE, "")]
    assert wrong == [], wrong[:3]
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)
    assert late - early < RSS_GROWTH_BYTES, f"RSS grew by {(late - early) / 2**20:.1f} MiB"
