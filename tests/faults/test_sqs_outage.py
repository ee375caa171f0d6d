"""SQS cut off (a TCP proxy in front of moto's server, stopped and started again) while jobs drain.

No job is lost; jobs whose delete failed during the outage may run again,
at most what the worker held (:func:`~tests.faults.drain.most_held_and_run`);
the worker logs one line per backoff step of its receives (failure 1, 2, 3...
with pauses 1, 2, 4... s) and one line when SQS answers again.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import sqjobs
from sqjobs.brokers.sqs import SQSBroker
from sqjobs.worker.loop import ERROR_PAUSE_MAX_S, ERROR_PAUSE_S
from tests import jobs_for_tests as jobs
from tests.faults.drain import ends, most_held_and_run
from tests.sqs_server import MotoServer
from tests.support import (
    TESTS_DIR,
    send_many,
    start_worker,
    stop_process,
    wait_until,
    worker_log,
    write_config,
)
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.faults

JOBS = 150
PREFETCH = 10
FAILURES = 3
STEP = re.compile(r"broker error while receiving \(failure (\d+)(?:, failing for \d+ s)?\); trying again in "
                  r"([\d.]+) s")


def test_sqs_down_and_back_while_jobs_drain(tmp_path: Path, sqs_server: MotoServer, sqs_prefix: str,
                                            processes: list) -> None:
    record = tmp_path / "record.txt"
    broker = SQSBroker(**sqs_server.broker_options(sqs_prefix))
    with TcpProxy(urlsplit(sqs_server.endpoint_url).port or 80).start() as proxy:
        config = write_config(tmp_path / "sqjobs.conf", {
            "sqjobs": {"broker": "sqs", "database": f"sqlite:///{tmp_path / 'status.db'}",
                       "jobs": "jobs_for_tests", "path": str(TESTS_DIR)},
            "sqs": sqs_server.sqs_section(sqs_prefix, wait_time_s=1, endpoint_url=f"http://127.0.0.1:{proxy.port}"),
        })
        sqjobs.configure(str(config))
        send_many(broker, jobs.slow_job, [[str(record), f"job{i}", 0.02] for i in range(JOBS)])
        worker = start_worker(config, ["default"], "--prefetch", str(PREFETCH), "--visibility-timeout", "5")
        processes.append(worker)
        wait_until(lambda: len(ends(record)) >= 40, timeout_s=60, what="the drain to be under way")
        proxy.stop()
        down_at = time.monotonic()
        before = len(worker_log(worker))

        def steps() -> list[re.Match]:
            return [m for m in map(STEP.search, worker_log(worker)[before:].splitlines()) if m]

        wait_until(lambda: len(steps()) >= FAILURES, timeout_s=60, what=f"{FAILURES} failed receives")
        proxy.start()
        wait_until(lambda: "reachable again after" in worker_log(worker)[before:], what="the recovery line")
        window_s = time.monotonic() - down_at
        wait_until(lambda: len(ends(record)) == JOBS, timeout_s=90, what="every job to run")

        def drained() -> bool:
            stats = broker.stats("default")
            return (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)

        wait_until(drained, timeout_s=30, what="the queue to drain")
        assert stop_process(worker) == 0
    counts = ends(record)
    assert sorted(counts) == sorted(f"job{i}" for i in range(JOBS)), "none lost"
    twice = sum(count - 1 for count in counts.values())
    assert twice <= most_held_and_run(1, PREFETCH), f"{twice} duplicate runs"
    assert broker.stats("default-dead").visible == 0
    broker.close()
    log = worker_log(worker)[before:]
    found = steps()
    assert [int(m.group(1)) for m in found] == list(range(1, len(found) + 1)), "one line per step, in order"
    pauses = [float(m.group(2)) for m in found]
    expected = [min(ERROR_PAUSE_S * 2 ** i, ERROR_PAUSE_MAX_S) for i in range(len(found))]
    assert pauses == expected
    assert len(found) <= window_s, "no more tries than the backoff allows"
    recovery = [line for line in log.splitlines() if "reachable again after" in line]
    assert len(recovery) == 1 and f"({len(found)} failed tries)" in recovery[0]
    assert "Traceback" not in log
