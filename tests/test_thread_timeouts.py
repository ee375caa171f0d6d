"""A job past its timeout in a worker with threads is settled once: interrupted where Python can, else from outside.

Real worker processes (``--threads 2``) on the embedded broker, with a status
database and a metrics folder. Times come from the status rows (started_at,
finished_at), with margins for a loaded machine: each bound is well below
what the code did before (a stuck thread was settled 5 s after its deadline,
and its thread settled it again when it ended; C code holding the GIL was
killed 10 s after it).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import sqjobs
from sqjobs.brokers.base import REASON_ATTRIBUTE
from sqjobs.status.handle import JobHandle
from sqjobs.web.metrics import scrape
from sqjobs.worker.tokens import STARTED, TIMED_OUT, TokenTable
from tests import timeout_jobs_for_tests as jobs
from tests.support import read_lines, sqlite_config, start_worker, stop_process, wait_until, worker_log

#: The jobs' timeout (tests/timeout_jobs_for_tests.py).
TIMEOUT_S = 1.0


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    """A config on a fresh embedded broker and status database, recording metrics."""
    path = sqlite_config(tmp_path, jobs="timeout_jobs_for_tests")
    path.write_text(path.read_text() + f"\n[metrics]\ndir = {tmp_path / 'metrics'}\n")
    sqjobs.configure(str(path))
    return path


def past_deadline_s(handle: JobHandle) -> float:
    """How long after its deadline the job's attempt was settled, from its status row."""
    row = handle.refresh()
    assert row is not None and row.started_at is not None and row.finished_at is not None
    return (row.finished_at - row.started_at).total_seconds() - TIMEOUT_S


def reports(log: str, handle: JobHandle) -> list[float]:
    """The durations of the "no attempts left" lines about ``handle``'s job, one per line."""
    pattern = rf"job {handle.id} \S+ on default: attempt 1 failed in ([0-9.]+) s, no attempts left"
    return [float(seconds) for seconds in re.findall(pattern, log)]


def counted(name: str, **labels: str) -> float:
    """The value of one sample of a scrape of the metrics (0 when absent)."""
    for family in text_string_to_metric_families(scrape(sqjobs.current_app()).decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def pid_of(record: Path, token: str) -> str:
    """The job process pid recorded with ``token`` (``start TOKEN PID`` or ``TOKEN PID``)."""
    for line in read_lines(record):
        words = line.split()
        if token in words[:2]:
            return words[-1]
    raise AssertionError(f"{token} not recorded")


def test_a_thread_blocked_in_sleep_is_settled_once_as_timed_out_within_3_s_and_its_process_replaced(
        config: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    stuck = jobs.sleeps_past_timeout.delay(str(record), "stuck", 8)
    worker = start_worker(config, ["default"], "--threads", "2")
    try:
        stuck.wait(timeout_s=30)
        error = stuck.error
        assert error is not None and error.startswith("JobTimeoutError: ") and stuck.id in error, error
        assert past_deadline_s(stuck) < 4.5
        [reported_s] = wait_until(lambda: reports(worker_log(worker), stuck), what="the report")
        assert TIMEOUT_S <= reported_s < TIMEOUT_S + 4.5, "the report says how long the attempt ran"
        # The thread wakes up at 8 s: what it did then is dropped, not recorded a second time.
        wait_until(lambda: "once it had been settled as timed out" in worker_log(worker)
                   or len(reports(worker_log(worker), stuck)) > 1, what="the stuck thread to end")
        assert len(reports(worker_log(worker), stuck)) == 1, worker_log(worker)
        assert stuck.refresh().error == error, "the row was written again after wait() returned"  # type: ignore
        assert counted("sqjobs_jobs_total", job="sleeps_past_timeout", queue="default", outcome="failure") == 1
        assert counted("sqjobs_job_duration_seconds_count", job="sleeps_past_timeout", queue="default") == 1
        [dead] = sqjobs.get_broker().peek("default-dead")  # the dashboard's "why it died" beside the row's error
        assert dead.attributes[REASON_ATTRIBUTE] == f"failed after 1 attempt(s): {error}"
        # Later jobs run, in a new job process.
        after = jobs.record_process.delay(str(record), "after")
        assert after.wait(timeout_s=30) == "after"
        assert pid_of(record, "after") != pid_of(record, "stuck")
    finally:
        assert stop_process(worker) == 0
    assert "replaced" in worker_log(worker)


def test_a_python_loop_past_its_timeout_is_interrupted_at_it_and_reported_once(config: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    looping = jobs.loops_past_timeout.delay(str(record), "loop")
    worker = start_worker(config, ["default"], "--threads", "2")
    try:
        looping.wait(timeout_s=30)
        assert past_deadline_s(looping) < 2.5
        [reported_s] = wait_until(lambda: reports(worker_log(worker), looping), what="the report")
        assert TIMEOUT_S <= reported_s < TIMEOUT_S + 2.5
        after = jobs.record_process.delay(str(record), "after")
        assert after.wait(timeout_s=30) == "after"
        assert pid_of(record, "after") == pid_of(record, "loop"), "an interrupted job needs no new job process"
    finally:
        assert stop_process(worker) == 0
    assert len(reports(worker_log(worker), looping)) == 1
    assert counted("sqjobs_jobs_total", job="loops_past_timeout", queue="default", outcome="failure") == 1
    assert not any(line.startswith("end loop") for line in read_lines(record))


def test_c_code_holding_the_gil_past_its_timeout_is_killed_and_settled_once_within_3_s(
        config: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    stuck = jobs.holds_the_gil_past_timeout.delay(str(record), "gil", 30)
    worker = start_worker(config, ["default"], "--threads", "2")
    try:
        stuck.wait(timeout_s=30)
        assert stuck.error is not None and "could not be interrupted" in stuck.error and stuck.id in stuck.error
        assert past_deadline_s(stuck) < 4.5
        [reported_s] = wait_until(lambda: reports(worker_log(worker), stuck), what="the report")
        assert TIMEOUT_S <= reported_s < TIMEOUT_S + 4.5
        after = jobs.record_process.delay(str(record), "after")
        assert after.wait(timeout_s=30) == "after"
        assert pid_of(record, "after") != pid_of(record, "gil")
    finally:
        assert stop_process(worker) == 0
    assert len(reports(worker_log(worker), stuck)) == 1
    assert counted("sqjobs_jobs_total", job="holds_the_gil_past_timeout", queue="default", outcome="failure") == 1


def test_the_token_table_lets_either_the_thread_or_the_deadline_owner_settle_an_attempt_never_both() -> None:
    table = TokenTable()
    for token in (1, 2):
        table.queued(token)
        assert table.start(token)
        table.set_deadline(token, 0.001)
    # Its deadline's owner first: the thread, ending later, is told its attempt was settled already.
    taken = wait_until(lambda: table.time_out(1, 0.0), what="token 1 past its deadline")
    assert taken.state == STARTED and taken.deadline_ns
    assert table.time_out(1, 0.0) is None, "taken once"
    assert not table.end_attempt(1)
    assert table.get(1).state == TIMED_OUT  # type: ignore[union-attr]
    # The thread first: its deadline is dropped, so no owner times it out, however late.
    entry = table.get(2)
    assert entry is not None and entry.deadline_ns
    assert table.end_attempt(2)
    wait_until(lambda: time.monotonic_ns() > entry.deadline_ns, what="token 2's deadline")
    assert table.time_out(2, 0.0) is None
