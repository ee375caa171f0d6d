"""Counts you can trust: attempts in the log and the row, burst runs, cancelled and unknown jobs.

Real worker processes on the embedded broker; the commands through click's runner.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import sqjobs
from sqjobs.brokers.base import Broker
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.cli.commands import main
from sqjobs.errors import InvalidJobIdError
from sqjobs.message import JobMessage, body_prefix, decode, encode
from sqjobs.middleware.cancellation import Cancellations
from sqjobs.status.states import Status
from sqjobs.web.dashboard.data import queue_stats
from sqjobs.web.metrics import _NowCollector
from tests import counts_jobs_for_tests as counts
from tests import jobs_for_tests as jobs
from tests.support import read_lines, sqlite_config, start_worker, stop_process, wait_until, worker_log

#: The job modules the worker processes of these tests import.
JOBS = "jobs_for_tests, counts_jobs_for_tests"


def test_a_burst_worker_runs_a_retry_due_in_a_second_and_its_last_lines_count_right(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    record = tmp_path / "record.txt"
    counts.retry_in_1s.delay(str(record), "r", 1)
    jobs.record_job.apply_async(args=(str(record), "later"), delay=3600)  # due long after the burst's bound
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    assert [line.split()[0] for line in read_lines(record)] == ["try", "try", "ok"], worker_log(worker)
    log = worker_log(worker)
    assert re.search(r"queues empty; 1 delayed message\(s\) left, the next due in 3\d{3}(\.\d)? s", log), log
    assert "stopped after 2 attempt(s); 1 job(s) finished" in log  # two attempts of one job


def test_a_burst_worker_with_nothing_delayed_leaves_at_once_saying_so(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    jobs.record_job.delay(str(tmp_path / "record.txt"), "now")
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    log = worker_log(worker)
    assert "queues empty, leaving (--burst)" in log and "stopped after 1 attempt(s); 1 job(s) finished" in log


def test_a_requeued_job_s_log_line_and_status_row_say_the_same_attempt(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    record = tmp_path / "record.txt"
    handle = jobs.tracked_flaky_one_retry.delay(str(record), "t", 2)  # fails both its attempts: dead
    worker = start_worker(config, ["default"])
    try:
        wait_until(lambda: sqjobs.get_broker().stats("default").dead == 1, what="the job to be dead-lettered")
    finally:
        assert stop_process(worker) == 0, worker_log(worker)
    row = sqjobs.get_job(handle.id).record
    assert row is not None and (row.status, row.attempts) == (Status.FAILURE, 2)
    requeued = CliRunner().invoke(main, ["dead", "-c", str(config), "default", "--requeue"], catch_exceptions=False)
    assert "requeued 1 message(s)" in requeued.output
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    assert f"job {handle.id} tracked_flaky1 on default: attempt 1 succeeded" in worker_log(worker)
    row = sqjobs.get_job(handle.id).record
    assert row is not None and (row.status, row.attempts) == (Status.SUCCESS, 1)
    shown = CliRunner().invoke(main, ["status", "-c", str(config), handle.id, "--json"], catch_exceptions=False)
    assert json.loads(shown.output)["attempts"] == 1


def test_cancelling_an_id_that_never_existed_stores_nothing_and_exits_1(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    jobs.record_job.delay(str(tmp_path / "record.txt"), "other")  # the broker and database exist, with a job
    result = CliRunner().invoke(main, ["cancel", "-c", str(config), "deadbeef", "--json"])
    shown = json.loads(result.output)
    assert result.exit_code == 1, result.output
    assert (shown["cancelled"], shown["recorded"]) == (False, False) and "unknown" in shown["message"]
    assert Cancellations.for_url(f"sqlite:///{tmp_path / 'status.db'}").cancelled_at("deadbeef") is None
    status = CliRunner().invoke(main, ["status", "-c", str(config), "deadbeef"])
    assert status.exit_code == 1 and "no status row for job deadbeef" in status.output


def test_a_cancelled_delayed_job_is_not_counted_as_delayed(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    record = str(tmp_path / "record.txt")
    kept = jobs.record_job.apply_async(args=(record, "kept"), delay=3600)
    dropped = jobs.record_job.apply_async(args=(record, "dropped"), delay=3600, cancellable=True)
    tracked = jobs.tracked_add.apply_async(args=(1, 2), delay=3600)

    def delayed() -> int:
        shown = CliRunner().invoke(main, ["queues", "-c", str(config), "--json"], catch_exceptions=False)
        return sum(row["delayed"] for row in json.loads(shown.output) if row["queue"] == "default")

    assert delayed() == 3
    for job_id in (dropped.id, tracked.id):
        result = CliRunner().invoke(main, ["cancel", "-c", str(config), job_id])
        assert result.exit_code == 0 and "its message was removed from default" in result.output, result.output
    assert delayed() == 1
    assert [stats.delayed for stats in queue_stats(sqjobs.current_app()) if stats.queue == "default"] == [1]
    metrics = "\n".join(str(sample) for family in _NowCollector(sqjobs.current_app()).collect()
                        for sample in family.samples if family.name == "sqjobs_queue_messages")
    assert "'queue': 'default', 'state': 'delayed'}, value=1" in metrics
    assert kept.id  # still delayed: cancelling another job removes only that job's message


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_broker_that_can_look_finds_a_message_and_withdraws_it_only_while_no_worker_holds_it(
        tmp_path: Path, kind: str) -> None:
    broker: Broker = SQLiteBroker(str(tmp_path / "queue.db")) if kind == "sqlite" else MemoryBroker()
    body = encode(JobMessage(name="record", args=[], kwargs={}, id="ab"))
    broker.send("q", body, 60)
    broker.send("q", encode(JobMessage(name="record", args=[], kwargs={}, id="abc")))  # a longer id, same start
    found = broker.find(body_prefix("ab"))
    assert sorted(decode(m.body, m.message_id).id for m in found) == ["ab", "abc"]  # callers decode to be sure
    [mine] = [m for m in found if m.body == body]
    [other] = broker.receive("q", 10, 0, 30)  # the delayed one is not received; the other is held
    assert [m.received for m in broker.find(body_prefix("abc"))] == [True]
    assert not broker.withdraw("q", other.message_id)  # a worker holds it: it stays
    assert broker.next_due("q")[0] == 1 and broker.withdraw("q", mine.message_id)
    assert broker.next_due("q") == (0, None) and broker.stats("q").in_flight == 1


@pytest.mark.parametrize("job_id", ["a/b", "x" * 129, "nul\x00here"])
def test_cancelling_an_id_no_job_can_have_is_one_line_and_stores_nothing(tmp_path: Path, job_id: str) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    with pytest.raises(InvalidJobIdError, match="a job id is 1 to 128 characters"):
        sqjobs.cancel(job_id)
    result = CliRunner().invoke(main, ["cancel", "-c", str(config), job_id])
    assert result.exit_code != 0 and "a job id is 1 to 128 characters" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "status.db").exists() or Cancellations.for_url(
        f"sqlite:///{tmp_path / 'status.db'}").cancelled_at(job_id[:128]) is None
