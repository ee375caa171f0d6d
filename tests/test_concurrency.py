"""Several jobs at once in one worker process: threads, asyncio, timeouts, SIGTERM, hold-back, FIFO groups.

Real worker processes on the embedded broker. The jobs record their start
and end with a monotonic time (tests/jobs_for_tests.py), so a
test counts how many ran at once from the records, never from a stopwatch.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import sqjobs
from sqjobs.brokers.base import REASON_ATTRIBUTE
from sqjobs.brokers.sqlite import SQLiteBroker
from tests import jobs_for_tests as jobs
from tests.support import read_lines, sqlite_config, start_worker, stop_process, wait_until, worker_log, write_config

JOB_MODULES = "jobs_for_tests"


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, SQLiteBroker, Path]:
    """A config on a fresh embedded broker importing both job modules, the broker, the record file."""
    config = sqlite_config(tmp_path, jobs=JOB_MODULES)
    sqjobs.configure(str(config))
    broker = sqjobs.get_broker()
    assert isinstance(broker, SQLiteBroker)
    return config, broker, tmp_path / "record.txt"


def spans(record: Path) -> dict[str, tuple[float, float, str]]:
    """Each finished job's token: (start time, end time, worker pid), from the record's lines."""
    starts: dict[str, tuple[float, str]] = {}
    done: dict[str, tuple[float, float, str]] = {}
    for line in read_lines(record):
        what, token, pid, at = line.split()[:4]
        if what == "start":
            starts[token] = (float(at), pid)
        elif what == "end":
            done[token] = (starts[token][0], float(at), pid)
    return done


def most_at_once(intervals: list[tuple[float, float, str]]) -> int:
    """The largest number of intervals that overlap at one moment."""
    events = sorted([(start, 1) for start, _, _ in intervals] + [(end, -1) for _, end, _ in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_threads_8_run_8_io_jobs_at_once_in_one_process_each_once(setup: tuple) -> None:
    config, broker, record = setup
    jobs.io_wait.delay_many([(str(record), f"io{i}", 0.4) for i in range(24)])
    worker = start_worker(config, ["default"], "--threads", "8")
    try:
        wait_until(lambda: len(spans(record)) == 24, what="24 I/O jobs")
        wait_until(lambda: broker.stats("default").in_flight == 0, what="the last deletes")
    finally:
        assert stop_process(worker) == 0
    done = spans(record)
    assert most_at_once(list(done.values())) == 8
    assert {pid for _, _, pid in done.values()} == {str(worker.pid)}
    assert Counter(line.split()[1] for line in read_lines(record) if line.startswith("end")).most_common(1)[0][1] == 1
    assert "with 8 threads" in worker_log(worker)


def test_threads_from_the_worker_section_of_the_config_cap_the_jobs_at_once(setup: tuple, tmp_path: Path) -> None:
    _, broker, record = setup
    config = write_config(tmp_path / "threads.conf", {
        "sqjobs": {"broker": f"sqlite:///{tmp_path / 'queue.db'}", "database": f"sqlite:///{tmp_path / 'status.db'}",
                   "jobs": JOB_MODULES, "path": str(Path(jobs.__file__).parent)},
        "worker:default": {"queues": "default", "threads": 3},
    })
    jobs.io_wait.delay_many([(str(record), f"c{i}", 0.3) for i in range(12)])
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    done = spans(record)
    assert len(done) == 12
    assert most_at_once(list(done.values())) == 3


def test_async_jobs_share_the_event_loop_up_to_the_thread_count(setup: tuple) -> None:
    config, broker, record = setup
    jobs.async_wait.delay_many([(str(record), f"a{i}", 0.3) for i in range(32)])
    worker = start_worker(config, ["default"], "--threads", "8", "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    done = spans(record)
    assert len(done) == 32
    assert most_at_once(list(done.values())) == 8
    assert broker.stats("default").visible == 0 and broker.stats("default").dead == 0


def test_a_thread_stuck_past_its_timeout_fails_the_attempt_and_the_job_process_is_replaced(setup: tuple) -> None:
    config, broker, record = setup
    stuck = jobs.thread_stuck.delay(str(record), "stuck")
    worker = start_worker(config, ["default"], "--threads", "2")
    try:
        wait_until(lambda: broker.stats("default").dead == 1, what="the stuck job to be dead-lettered")
        [dead] = broker.peek("default-dead")
        assert dead.message_id and "JobTimeoutError" in dead.attributes[REASON_ATTRIBUTE]
        assert "could not be interrupted" in dead.attributes[REASON_ATTRIBUTE]
        # The worker goes on with a new job process: the next job runs, in another process.
        after = jobs.record_job.delay(str(record), "after")
        wait_until(lambda: any(line.startswith("after ") for line in read_lines(record)), what="the next job")
    finally:
        assert stop_process(worker) == 0
    assert after.id and stuck.id in worker_log(worker)
    assert not any(line.startswith("end stuck") for line in read_lines(record))
    assert "replaced" in worker_log(worker)


def test_an_async_job_past_its_timeout_is_cancelled_while_its_neighbours_finish(setup: tuple) -> None:
    config, broker, record = setup
    jobs.async_too_slow.delay(str(record), "slow")
    jobs.async_wait.delay_many([(str(record), f"n{i}", 0.8) for i in range(3)])
    worker = start_worker(config, ["default"], "--threads", "4", "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    [dead] = broker.peek("default-dead")
    assert "timed out" in dead.attributes[REASON_ATTRIBUTE] or "timeout" in dead.attributes[REASON_ATTRIBUTE]
    assert sorted(spans(record)) == ["n0", "n1", "n2"], "the neighbours finished; the slow one never ended"
    assert not any(line.startswith("end slow") for line in read_lines(record))


def test_sigterm_with_threads_finishes_the_running_jobs_and_hands_back_the_rest_at_once(setup: tuple) -> None:
    config, broker, record = setup
    release = record.parent / "release"
    for i in range(3):
        jobs.wait_for_file_job.delay(str(record), f"run{i}", str(release))
    for i in range(6):
        jobs.record_job.delay(str(record), f"later{i}")
    worker = start_worker(config, ["default"], "--threads", "3", "--prefetch", "10", "--visibility-timeout", "300",
                          "--hold", "0")
    wait_until(lambda: len([line for line in read_lines(record) if line.startswith("start run")]) == 3,
               what="three jobs to run at once")
    worker.send_signal(signal.SIGTERM)
    wait_until(lambda: "SIGTERM received" in worker_log(worker), what="the SIGTERM line")
    assert "finish first" in worker_log(worker)
    release.touch()
    assert worker.wait(30) == 0, worker_log(worker)
    assert sorted(line.split()[1] for line in read_lines(record) if line.startswith("end run")) == \
        ["run0", "run1", "run2"]
    assert not any(line.startswith("later") for line in read_lines(record))
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.dead) == (6, 0, 0), "handed back at once, not left hidden"


def test_messages_held_behind_a_long_job_are_handed_back_to_an_idle_worker(setup: tuple) -> None:
    config, broker, record = setup
    release = record.parent / "release"
    jobs.wait_for_file_job.delay(str(record), "long", str(release))
    busy = start_worker(config, ["default"], "--prefetch", "10", "--hold", "0.3")
    try:
        wait_until(lambda: any(line.startswith("start long") for line in read_lines(record)), what="the long job")
        for i in range(5):
            jobs.record_job.delay(str(record), f"short{i}")
        idle = start_worker(config, ["default"])
        try:
            wait_until(lambda: len([line for line in read_lines(record) if line.startswith("short")]) == 5,
                       what="the short jobs to run while the long one still runs")
            assert not any(line.startswith("end long") for line in read_lines(record))
        finally:
            release.touch()
            assert stop_process(idle) == 0
        wait_until(lambda: any(line.startswith("end long") for line in read_lines(record)), what="the long job")
    finally:
        assert stop_process(busy) == 0
    shorts = [line.split() for line in read_lines(record) if line.startswith("short")]
    assert len(shorts) == 5 and len({token for token, _ in shorts}) == 5
    assert any(pid == str(idle.pid) for _, pid in shorts), "the idle worker took what the busy one held back"
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)


def test_a_fifo_group_never_runs_two_at_once_and_keeps_its_order_while_groups_overlap(setup: tuple) -> None:
    config, broker, record = setup
    for i in range(4):
        for group in ("g", "h"):
            jobs.grouped.apply_async((str(record), f"{group}{i}", 0.2), queue="work.fifo", group=group)
    worker = start_worker(config, ["work.fifo"], "--threads", "4", "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    done = spans(record)
    assert len(done) == 8
    for group in ("g", "h"):
        mine = [done[f"{group}{i}"] for i in range(4)]
        assert most_at_once(mine) == 1, f"group {group} ran two at once"
        assert [start for start, _, _ in mine] == sorted(start for start, _, _ in mine), f"group {group} order"
    assert most_at_once(list(done.values())) == 2, "the two groups ran side by side"


def test_threads_without_a_job_process_is_a_one_line_usage_error(setup: tuple) -> None:
    config, broker, record = setup
    result = subprocess.run([sys.executable, "-m", "sqjobs", "worker", "-c", str(config), "--threads", "4",
                             "--isolation", "none"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: 4 threads need isolation = process: isolation = none runs one job at a time, in the worker itself")
    assert "Traceback" not in result.stderr


def test_log_level_from_the_config_file(setup: tuple, tmp_path: Path) -> None:
    _, broker, record = setup
    config = sqlite_config(tmp_path, jobs=JOB_MODULES, log_level="debug")
    handle = jobs.record_job.delay(str(record), "debugged")
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(30) == 0
    assert f"job {handle.id} record on default: attempt 1 started" in worker_log(worker)
