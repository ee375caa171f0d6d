"""kill -9 of supervisord and its whole tree under ``sqjobsd`` while jobs drain, then ``sqjobsd start``.

Everything dies at once (supervisord, its workers, their job processes), as
when a machine's OOM killer or an operator's ``kill -9 -PGID`` strikes; the
unix socket and pidfile stay behind. ``sqjobsd start`` must start one fresh
set of workers (no duplicate children from the stale socket), lose no job,
and report healthy.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

import psutil
import pytest
from sqjobsd.procs import marked_processes, pid_alive

from sqjobs.message import JobMessage
from tests.faults.drain import most_held_and_run
from tests.support import wait_until
from tests.test_daemon import SLOW_S, Daemon

pytestmark = pytest.mark.faults

JOBS = 1_000
WORKERS = 2
PREFETCH = 10


def _counts(daemon: Daemon) -> Counter:
    """How many times each job ended (``slow`` records ``start TOKEN PID`` and ``end TOKEN PID``)."""
    return Counter(line.split()[1] for line in daemon.recorded() if line.startswith("end "))


def test_kill_9_of_supervisord_and_its_tree_then_start_loses_nothing(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": WORKERS, "prefetch": PREFETCH}})
    daemon.start()
    old = daemon.wait_running(WORKERS, f"{WORKERS} workers")
    supervisord = daemon.supervisord_pid()
    assert supervisord is not None
    # 5 ms each: the drain lasts a few seconds, so that the kill comes in the middle of it.
    daemon.enqueue("default", [JobMessage("slow", [str(daemon.records), f"job{i}", 0.005]) for i in range(JOBS)])
    wait_until(lambda: len(_counts(daemon)) >= JOBS // 5, SLOW_S, what="the drain to be under way")

    tree = [psutil.Process(supervisord), *psutil.Process(supervisord).children(recursive=True)]
    assert {p.pid for p in tree} >= set(old.values())
    for process in tree:
        os.kill(process.pid, signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)
    assert not any(pid_alive(p.pid) for p in tree)
    assert os.path.exists(daemon.layout.socket), "the dead supervisord's socket is left behind"
    assert len(_counts(daemon)) < JOBS, "killed mid-drain"

    daemon.start()
    new = daemon.wait_running(WORKERS, f"{WORKERS} new workers")
    assert not set(new.values()) & set(old.values())
    wait_until(lambda: len(_counts(daemon)) == JOBS, SLOW_S, what="every job to run")
    assert daemon.broker is not None

    def drained() -> bool:
        stats = daemon.broker.stats("default")  # type: ignore[union-attr]
        return (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)

    wait_until(drained, SLOW_S, what="the queue to drain")
    status = daemon.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    new_supervisord = daemon.supervisord_pid()
    assert new_supervisord is not None and new_supervisord != supervisord
    children = psutil.Process(new_supervisord).children()
    assert sorted(p.pid for p in children) == sorted(new.values()), "one set of workers, no duplicates"
    job_processes = [p.pid for pid in new.values() for p in psutil.Process(pid).children()]
    assert len(job_processes) <= WORKERS, "one job process per worker"
    assert marked_processes(str(daemon.run_dir)) == sorted([*new.values(), *job_processes]), "no orphan"
    assert [p.pid for p in psutil.process_iter(["cmdline"])
            if daemon.layout.supervisord_conf in " ".join(p.info["cmdline"] or [])] == [new_supervisord]
    counts = _counts(daemon)
    assert sorted(counts) == sorted(f"job{i}" for i in range(JOBS)), "none lost"
    twice = sum(count - 1 for count in counts.values())
    assert twice <= WORKERS * most_held_and_run(1, PREFETCH), f"{twice} duplicate runs"
    assert daemon.broker.stats("default-dead").visible == 0
