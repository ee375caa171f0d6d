"""Jobs that kill their process, hold the GIL or hang in C, on real worker processes (embedded broker).

Each fault is injected for real: a job that calls ``os._exit``, one that
segfaults, one killed by SIGKILL (what the out-of-memory killer does), one
that kills the worker itself, one that sleeps in C holding the GIL, one stuck
in C past its timeout. Nothing may loop forever, hold other jobs hostage, or
disappear: each ends in its queue's dead-letter queue with a reason, or runs.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

import sqjobs
from sqjobs import Status
from sqjobs.brokers.base import REASON_ATTRIBUTE
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.message import JobMessage, encode
from tests import jobs_for_tests as jobs
from tests.support import read_lines, sqlite_config, start_worker, stop_process, wait_until, worker_log

pytestmark = pytest.mark.faults


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, SQLiteBroker, Path]:
    """A config on a fresh embedded broker, the broker, and the file jobs record into."""
    config = sqlite_config(tmp_path)
    sqjobs.configure(str(config))
    broker = sqjobs.get_broker()
    assert isinstance(broker, SQLiteBroker)
    return config, broker, tmp_path / "record.txt"


def dead_reasons(broker: SQLiteBroker, queue: str = "default") -> list[str]:
    return sorted(m.attributes[REASON_ATTRIBUTE] for m in broker.peek(f"{queue}-dead", 100))


def test_jobs_that_kill_their_process_fail_their_attempt_and_their_batch_runs(setup: tuple) -> None:
    config, broker, record = setup
    exits = jobs.exits_hard.delay(str(record), "exit")  # one retry: two attempts
    jobs.segfaults.delay(str(record), "segv")
    jobs.killed.delay(str(record), "oom")
    for i in range(5):
        jobs.record_job.delay(str(record), f"good{i}")
    worker = start_worker(config, ["default"], "--prefetch", "10")
    try:
        wait_until(lambda: broker.stats("default").dead == 3, what="the three crashing jobs to be dead-lettered")
        wait_until(lambda: broker.stats("default").visible + broker.stats("default").in_flight == 0,
                   what="the good jobs to be deleted")
        assert worker.poll() is None, "the worker survived every crash"
    finally:
        assert stop_process(worker) == 0
    tokens = Counter(line.split()[0] if not line.startswith("try") else line for line in read_lines(record))
    assert [tokens[f"good{i}"] for i in range(5)] == [1] * 5
    assert tokens["try exit"] == 2 and tokens["try segv"] == 1 and tokens["try oom"] == 1
    reasons = dead_reasons(broker)
    assert reasons == sorted([
        "failed after 2 attempt(s): JobCrashedError: the job process exited with code 3 while running it",
        "failed after 1 attempt(s): JobCrashedError: the job process killed by signal 11 (SIGSEGV): a crash in "
        "C code while running it",
        "failed after 1 attempt(s): JobCrashedError: the job process killed by signal 9 (SIGKILL): the kernel's "
        "out-of-memory killer, or an operator while running it",
    ])
    assert exits.status is Status.FAILURE and "exited with code 3" in (exits.error or "")
    assert "starting a new job process" in worker_log(worker)


def test_a_job_that_kills_the_worker_itself_runs_last_and_alone_then_hits_the_crash_ceiling(setup: tuple) -> None:
    config, broker, record = setup
    jobs.kills_its_worker.delay(str(record), "bad")  # first in the queue
    for i in range(5):
        jobs.record_job.delay(str(record), f"good{i}")
    codes = []
    for _ in range(6):  # what supervisord does: start the worker again each time it dies
        worker = start_worker(config, ["default"], "--prefetch", "10", "--visibility-timeout", "300", "--burst")
        codes.append(worker.wait(60))
        if broker.stats("default").dead:
            break
    tries = [line for line in read_lines(record) if line.startswith("try")]
    goods = Counter(line.split()[0] for line in read_lines(record) if line.startswith("good"))
    # Without waiting out the 300 s visibility: the dead worker's messages are visible again at once.
    assert codes[:3] == [-signal.SIGKILL] * 3 and codes[3] == 0, codes
    assert len(tries) == 3, "run on its 3 receives (1 attempt + 2 allowed for crashes), not on the 4th"
    assert goods == {f"good{i}": 1 for i in range(5)}, "the good jobs ran once each, none held hostage"
    [reason] = dead_reasons(broker)
    assert reason.startswith("JobCrashedError: the worker died while running it: received 4 times, over its 1 "
                             "attempt(s) plus 2 allowed")
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)


def test_a_job_holding_the_gil_past_the_visibility_timeout_runs_once(setup: tuple) -> None:
    config, broker, record = setup
    jobs.holds_the_gil.delay(str(record), "gil", 4.0)
    workers = [start_worker(config, ["default"], "--visibility-timeout", "1") for _ in range(2)]
    try:
        wait_until(lambda: any(line.startswith("end gil") for line in read_lines(record)), what="the GIL job to end")
        wait_until(lambda: broker.stats("default").in_flight == 0, what="its delete")
    finally:
        for worker in workers:
            assert stop_process(worker) == 0
    assert [line.split()[0] for line in read_lines(record)] == ["start", "end"], "never delivered twice"


def test_a_job_stuck_in_c_past_its_timeout_is_killed_and_fails_with_a_timeout(setup: tuple) -> None:
    config, broker, record = setup
    stuck = jobs.stuck_in_c.delay(str(record), "c")
    after = jobs.record_job.delay(str(record), "after")
    worker = start_worker(config, ["default"], "--prefetch", "10")
    try:
        wait_until(lambda: any(line.startswith("after") for line in read_lines(record)), what="the next job")
        assert worker.poll() is None
    finally:
        assert stop_process(worker) == 0
    assert [line.split()[0] for line in read_lines(record)] == ["start", "after"]
    assert stuck.status is Status.FAILURE
    assert "ran longer than its timeout of 1 s and could not be interrupted" in (stuck.error or "")
    [reason] = dead_reasons(broker)
    assert "JobTimeoutError" in reason and "timeout of 1 s" in reason
    assert after.id not in reason


def test_sys_exit_in_a_job_is_its_failure_and_the_worker_goes_on(tmp_path: Path) -> None:
    (tmp_path / "exiting_jobs.py").write_text(
        "import sys\nfrom sqjobs import job\n\n@job(name='exits_politely')\ndef exits_politely():\n    sys.exit(4)\n")
    config = sqlite_config(tmp_path, jobs="jobs_for_tests, exiting_jobs", path=f"{tmp_path}, {Path(__file__).parent}")
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    broker.send("default", encode(JobMessage(name="exits_politely")))
    broker.send("default", encode(JobMessage(name="record", args=[str(tmp_path / "record.txt"), "next"])))
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0
    assert read_lines(tmp_path / "record.txt")[0].startswith("next")
    assert dead_reasons(broker) == ["failed after 1 attempt(s): SystemExit: 4"]
