"""SIGTERM mid-job with ``--threads 4`` running plain and async jobs (SQLite, real processes).

Each running job finishes; the messages that did not start are handed back
at once (another worker runs them while the stopped one still finishes its
jobs, long before the 300 s visibility timeout); the worker exits 0.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.message import JobMessage, encode
from tests.faults.drain import fault_config, runs
from tests.support import read_lines, start_worker, stop_process, wait_until, worker_log

pytestmark = pytest.mark.faults

#: Messages received behind the four that run: one receive of ten holds them all.
WAITING = 6


def test_sigterm_with_4_threads_finishes_the_running_jobs_and_hands_back_the_rest_at_once(tmp_path: Path) -> None:
    config = fault_config(tmp_path)
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    record, later, release = tmp_path / "record.txt", tmp_path / "later.txt", tmp_path / "release"
    for token, name in [("sync0", "fault.wait"), ("async0", "fault.async_wait"), ("sync1", "fault.wait"),
                        ("async1", "fault.async_wait")]:
        broker.send("default", encode(JobMessage(name, [str(record), token, str(release)])))
    for i in range(WAITING):
        broker.send("default", encode(JobMessage("record", [str(later), f"later{i}"])))
    # --hold 0: nothing is handed back for being slow; only the stop hands messages back.
    worker = start_worker(config, ["default"], "--threads", "4", "--prefetch", "10", "--hold", "0",
                          "--visibility-timeout", "300")
    other = None
    try:
        wait_until(lambda: len(read_lines(record)) == 4, what="four jobs to start")
        stats = broker.stats("default")
        assert (stats.visible, stats.in_flight) == (0, 4 + WAITING), "four running, six received with them"
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: broker.stats("default").visible == WAITING, timeout_s=5,
                   what="the unstarted messages to be visible again at once")
        assert "SIGTERM received: no new receive; jobs " in worker_log(worker)
        assert f"then {WAITING} prefetched message(s) are handed back" in worker_log(worker)
        other = start_worker(config, ["default"])
        wait_until(lambda: len(runs(later)) == WAITING, what="another worker to run the handed-back jobs")
        assert worker.poll() is None, "the stopped worker still finishes its running jobs"
        assert not any(line.startswith("end") for line in read_lines(record))
        release.touch()
        assert worker.wait(30) == 0
    finally:
        release.touch()
        for process in (worker, other):
            if process is not None:
                stop_process(process)
    kinds = Counter(" ".join(line.split()[:2]) for line in read_lines(record))
    assert kinds == Counter({f"{kind} {token}": 1 for kind in ("start", "end")
                             for token in ("sync0", "sync1", "async0", "async1")})
    assert runs(later) == Counter({f"later{i}": 1 for i in range(WAITING)})
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)
    assert broker.stats("default-dead").visible == 0
