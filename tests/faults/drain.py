"""Helpers of the fault suite: draining a queue of recording jobs and counting what ran."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import psutil

from sqjobs.worker.loop import CARRIED_DELETES_MAX, RECEIVES_AHEAD
from tests.support import read_lines


def runs(record: Path) -> Counter:
    """How many times each token was recorded (lines ``TOKEN PID`` written by the ``record`` job)."""
    return Counter(line.split()[0] for line in read_lines(record))


def most_held_and_run(threads: int, prefetch: int) -> int:
    """The most messages a killed worker can have run without deleting them: its duplicates per kill.

    It hands over up to ``threads + RECEIVES_AHEAD * prefetch`` messages to
    its job process (those running, and the receives ahead whose jobs may
    have finished before their answers came back), and deletes finished ones
    in batches (on the embedded broker up to ``CARRIED_DELETES_MAX`` wait for
    the next receive to delete them): a kill -9 can catch all of them run
    and none deleted.
    """
    return threads + RECEIVES_AHEAD * prefetch + CARRIED_DELETES_MAX


def kill_9_tree(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` (the worker, as the out-of-memory killer would) and wait until its children are gone."""
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    # Its job process dies with it (PR_SET_PDEATHSIG); wait so that no orphan records a late line.
    psutil.wait_procs(children, timeout=30)


#: Folder of the fault suite's own job module (``fault_jobs``), for ``[sqjobs] path``.
FAULTS_DIR = Path(__file__).resolve().parent


def fault_config(tmp_path: Path, **sqjobs: object) -> Path:
    """An embedded-broker config in ``tmp_path`` importing the test jobs and the fault suite's."""
    from tests.support import TESTS_DIR, sqlite_config

    values: dict[str, object] = {"jobs": "jobs_for_tests, fault_jobs", "path": f"{TESTS_DIR}, {FAULTS_DIR}"}
    values.update(sqjobs)
    return sqlite_config(tmp_path, **values)


def ends(record: Path) -> Counter:
    """How many times each job ended, for jobs that record ``start TOKEN PID`` and ``end TOKEN PID`` (``slow``)."""
    return Counter(line.split()[1] for line in read_lines(record) if line.startswith("end "))
