"""The embedded broker's queue file on a full filesystem (a small tmpfs) and read-only (a read-only bind mount).

Full: ``.delay()`` raises one clear line and stores nothing (not one row of
a batch); a running worker goes on, logs its broker errors on one line each,
and once space returns every job runs, none lost (a finished job whose
delete failed runs again: at most what the worker held). Read-only: ``.delay()``
raises one clear line; a worker refuses to start with one line (exit 1) and
changes nothing; once the file is writable again (a worker started anew, as
supervisord does), every job runs. Both need root (CI runs as root).
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import sqjobs
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.errors import BrokerError
from tests import jobs_for_tests as jobs
from tests.faults.drain import ends, most_held_and_run
from tests.mounts import fill_up, read_only_view, small_tmpfs
from tests.support import read_lines, send_many, sqlite_config, start_worker, stop_process, wait_until, worker_log

pytestmark = pytest.mark.faults

JOBS = 200
PREFETCH = 10


def _intact(path: Path) -> bool:
    """True when SQLite finds nothing wrong in the file at ``path``."""
    with sqlite3.connect(str(path)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _drained(broker: SQLiteBroker) -> bool:
    stats = broker.stats("default")
    return (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)


def test_a_full_filesystem_under_the_queue_file(tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    with small_tmpfs(tmp_path / "small", "2m") as small:
        queue_db = small / "queue.db"
        config = sqlite_config(tmp_path, broker=f"sqlite:///{queue_db}")
        sqjobs.configure(str(config))
        broker = sqjobs.get_broker()
        assert isinstance(broker, SQLiteBroker)
        send_many(broker, jobs.slow_job, [[str(record), f"job{i}", 0.01] for i in range(JOBS)])
        # Finished messages whose delete failed on the full disk are delivered again after the
        # visibility timeout (at-least-once): 2 s here, so that the test sees them run again.
        worker = start_worker(config, ["default"], "--prefetch", str(PREFETCH), "--visibility-timeout", "2")
        try:
            wait_until(lambda: len(ends(record)) >= 20, what="the drain to be under way")
            filler = fill_up(small, leave_bytes=0)
            before = broker.stats("default")
            with pytest.raises(BrokerError) as caught:
                jobs.slow_job.delay(str(record), "big" + "x" * 150_000, 0)
            message = str(caught.value)
            assert message.startswith(f"embedded broker {queue_db}: cannot ") and "\n" not in message
            assert "the disk is full" in message
            with pytest.raises(BrokerError):
                send_many(broker, jobs.slow_job, [[str(record), f"late{i}-" + "x" * 2000, 0] for i in range(200)])
            after = broker.stats("default")
            assert after.visible + after.in_flight <= before.visible + before.in_flight, "nothing half-written"
            wait_until(lambda: "the disk is full" in worker_log(worker), what="the worker to find the disk full")
            assert worker.poll() is None, "the worker goes on"
            filler.unlink()
            wait_until(lambda: len(ends(record)) == JOBS, timeout_s=60, what="every job once space returned")
            wait_until(lambda: _drained(broker), what="the queue to drain")
            assert not any(token.startswith(("big", "late")) for token in ends(record))
            jobs.slow_job.delay(str(record), "after", 0)
            wait_until(lambda: "after" in ends(record), what="a job sent after space returned")
        finally:
            code = stop_process(worker)
        broker.close()
        assert _intact(queue_db)
    assert code == 0
    log = worker_log(worker)
    assert "Traceback" not in log
    full = [line for line in log.splitlines() if "the disk is full" in line]
    # One line per backoff step (receiving, or deleting finished messages that stay held), or a settlement
    # that could not be made: never a traceback.
    known = ("broker error while receiving", "broker error while deleting finished messages", "could not")
    assert full, "the worker says the disk is full"
    assert [line for line in full if not any(part in line for part in known)] == []
    counts = ends(record)
    assert sorted(counts) == sorted([*(f"job{i}" for i in range(JOBS)), "after"]), "none lost"
    assert sum(counts.values()) - len(counts) <= most_held_and_run(1, PREFETCH)


def test_a_read_only_queue_file(tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    writable = tmp_path / "data"
    broker = SQLiteBroker(str(writable / "queue.db"))
    send_many(broker, jobs.record_job, [[str(record), f"job{i}"] for i in range(10)])
    broker.close()
    with read_only_view(writable, tmp_path / "read-only") as folder:
        path = folder / "queue.db"
        config = sqlite_config(tmp_path, broker=f"sqlite:///{path}")
        sqjobs.configure(str(config))
        with pytest.raises(BrokerError) as caught:
            jobs.record_job.delay(str(record), "refused")
        message = str(caught.value)
        assert message.startswith(f"embedded broker {path}: cannot ") and "\n" not in message
        assert "read-only" in message
        worker = start_worker(config, ["default"])
        try:
            assert worker.wait(60) == 1
        except subprocess.TimeoutExpired:
            stop_process(worker)
            raise
        [line] = worker_log(worker).splitlines()
        assert line.startswith(f"Error: embedded broker {path}: cannot ") and "read-only" in line
    assert read_lines(record) == []
    assert _intact(writable / "queue.db")
    config = sqlite_config(tmp_path, broker=f"sqlite:///{writable / 'queue.db'}")
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    assert Counter(line.split()[0] for line in read_lines(record)) == Counter({f"job{i}": 1 for i in range(10)})
