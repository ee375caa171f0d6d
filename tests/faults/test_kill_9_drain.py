"""kill -9 of a worker three times while 2,000 jobs drain, on SQLite and on SQS (moto over HTTP).

After each kill a new worker starts (what supervisord does). None may be
lost, none dead-lettered, and a job runs twice only if the killed worker
held it, run and not yet deleted: at most
:func:`~tests.faults.drain.most_held_and_run` per kill.

On SQS the jobs are sent while they drain, at most ``SQS_BACKLOG`` ahead of
the runs: moto's server spends time proportional to the queue's length on
each message it hands out (it recounts the queue's attributes per message),
so a backlog of 2,000 would make the drain quadratic in the test, never in SQS.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

import sqjobs
from sqjobs.brokers.base import Broker
from sqjobs.brokers.sqs import SQSBroker
from tests import jobs_for_tests as jobs
from tests.faults.drain import kill_9_tree, most_held_and_run, runs
from tests.sqs_server import MotoServer
from tests.support import (
    TESTS_DIR,
    send_many,
    sqlite_config,
    start_worker,
    stop_process,
    wait_until,
    worker_log,
    write_config,
)

pytestmark = pytest.mark.faults

JOBS = 2_000
KILLS = 3
THREADS = 2
PREFETCH = 10
#: Most jobs sent to SQS and not yet run (see the module's docstring).
SQS_BACKLOG = 60


class Feeder(threading.Thread):
    """Sends the jobs ``batch`` at a time, keeping at most ``backlog`` of them sent and not yet run."""

    def __init__(self, broker: Broker, record: Path, backlog: int, batch: int = 20) -> None:
        super().__init__(name="feeder", daemon=True)
        self.broker, self.record, self.backlog, self.batch = broker, record, backlog, batch
        self.sent = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.sent < JOBS and not self.stop.is_set():
                if self.sent - len(runs(self.record)) >= self.backlog:
                    self.stop.wait(0.02)  # paces the producer; the test itself waits with deadlines
                    continue
                calls = [[str(self.record), f"job{i}"] for i in range(self.sent, min(self.sent + self.batch, JOBS))]
                send_many(self.broker, jobs.record_job, calls)
                self.sent += len(calls)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _drain_with_kills(config: Path, broker: Broker, record: Path, processes: list, *options: str,
                      backlog: int = JOBS) -> None:
    sqjobs.configure(str(config))
    feeder = Feeder(broker, record, backlog)
    feeder.start()

    def start() -> subprocess.Popen:
        worker = start_worker(config, ["default"], "--threads", str(THREADS), "--prefetch", str(PREFETCH),
                              *options)
        processes.append(worker)
        return worker

    worker = start()
    for kill in range(1, KILLS + 1):
        # Spread the kills over the drain, each after the new worker made progress of its own.
        progress = kill * JOBS // (KILLS + 1)

        def progressed(count: int = progress) -> bool:
            return len(runs(record)) >= count

        wait_until(progressed, timeout_s=120, what=f"{progress} jobs before kill {kill}")
        kill_9_tree(worker)
        worker = start()
    wait_until(lambda: len(runs(record)) == JOBS or feeder.error, timeout_s=120, what="every job to run")
    feeder.stop.set()
    feeder.join(30)
    assert feeder.error is None and feeder.sent == JOBS, feeder.error

    def drained() -> bool:
        stats = broker.stats("default")
        return (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)

    wait_until(drained, timeout_s=60, what="the queue to drain")
    # The last kill may come after the last job ran: then the queue is empty before the new worker is up,
    # and a SIGTERM while it still imports would end it before it could take it gracefully.
    wait_until(lambda: " consuming default" in worker_log(worker), what="the last worker to start")
    assert stop_process(worker) == 0
    counts = runs(record)
    assert sorted(counts) == sorted(f"job{i}" for i in range(JOBS)), "none lost"
    twice = sum(count - 1 for count in counts.values())
    assert twice <= most_held_and_run(THREADS, PREFETCH) * KILLS, f"{twice} duplicate runs"
    assert sum(counts.values()) == JOBS + twice
    dead = broker.stats("default-dead")
    assert (dead.visible, dead.in_flight, dead.delayed) == (0, 0, 0), "nothing dead"


def test_kill_9_three_times_while_2000_jobs_drain_on_sqlite(tmp_path: Path, processes: list) -> None:
    config = sqlite_config(tmp_path)
    sqjobs.configure(str(config))
    _drain_with_kills(config, sqjobs.get_broker(), tmp_path / "record.txt", processes)


def test_kill_9_three_times_while_2000_jobs_drain_on_sqs(tmp_path: Path, sqs_server: MotoServer, sqs_prefix: str,
                                                         processes: list) -> None:
    config = write_config(tmp_path / "sqjobs.conf", {
        "sqjobs": {"broker": "sqs", "database": f"sqlite:///{tmp_path / 'status.db'}",
                   "jobs": "jobs_for_tests", "path": str(TESTS_DIR)},
        "sqs": sqs_server.sqs_section(sqs_prefix, wait_time_s=1),
    })
    broker = SQSBroker(**sqs_server.broker_options(sqs_prefix))
    broker.ensure_queue("default-dead")
    try:
        # A short visibility timeout: what a killed worker held is visible again within 5 s (not
        # shorter: the heartbeat renews it every third of it, and moto answers slowly on a busy machine).
        _drain_with_kills(config, broker, tmp_path / "record.txt", processes, "--visibility-timeout", "5",
                          backlog=SQS_BACKLOG)
    finally:
        broker.close()
