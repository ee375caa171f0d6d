"""Job status in-process, on SQLite, PostgreSQL and MySQL: states, the handle, get_job, eager mode, tracking.

The worker is stepped with ``Worker.run_once`` on the memory broker and a
clock the tests move, so retries need no waiting.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import sqjobs
from sqjobs import Job, ResultJob, Retry, Status, get_job, job
from sqjobs.brokers.base import REASON_ATTRIBUTE
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.cli.commands import main
from sqjobs.errors import JobFailedError, JobNotFoundError, JobNotTrackedError, WaitTimeoutError
from sqjobs.job import Registry
from sqjobs.message import JobMessage, encode, new_job_id
from sqjobs.status.handle import encode_result
from sqjobs.status.store import StatusStore
from sqjobs.worker.loop import Worker
from tests.status_fixtures import database_url, store, use_database  # noqa: F401  (fixtures)
from tests.support import Clock, sqlite_config

calls: list[str] = []


@job(queue="status", name="status.add", track=True)
def add(a: int, b: int) -> int:
    calls.append(f"add {a} {b}")
    return a + b


@job(queue="status", name="status.plain")
def plain(a: int, b: int) -> int:
    calls.append(f"plain {a} {b}")
    return a + b


@job(queue="status", name="status.flaky", track=True, retries=1, retry_delay=10)
def flaky(failures: int) -> str:
    calls.append("try")
    if calls.count("try") <= failures:
        raise RuntimeError(f"planned failure {calls.count('try')}")
    return "done"


@job(queue="status", name="status.asks_retry", track=True, retries=0)
def asks_retry() -> None:
    raise Retry(delay=5, reason="not yet")


@job(queue="status", name="status.not_json", track=True)
def not_json() -> Any:
    calls.append("not_json")
    return {"when": object()}


@job(queue="status", name="status.too_deep", track=True)
def too_deep() -> Any:
    calls.append("too_deep")
    result: list = []
    for _ in range(5000):
        result = [result]
    return result


class SeesItself(ResultJob):
    """Returns what its own row says while it runs."""

    name = "status.sees_itself"
    queue = "status"

    def run(self) -> dict:
        record = get_job(str(self.id)).record
        assert record is not None
        return {"status": record.status.value, "attempts": record.attempts, "pid": record.worker_pid,
                "host": record.worker_host, "started": record.started_at is not None,
                "finished": record.finished_at is not None}


@pytest.fixture()
def broker(clock: Clock) -> MemoryBroker:
    calls.clear()
    return MemoryBroker(clock=clock)


@pytest.fixture()
def tracked(database_url: str, broker: MemoryBroker) -> MemoryBroker:  # noqa: F811
    """The memory broker, with ``database_url`` as the status database and ``track = marked``."""
    use_database(database_url, broker)
    return broker


def make_worker(broker: MemoryBroker, **options: Any) -> Worker:
    return Worker(broker, ["status"], wait_s=0, isolation="none", **options)


# -- states ----------------------------------------------------------------------------------


def test_delay_records_pending_before_any_worker_runs(tracked: MemoryBroker) -> None:
    handle = add.delay(2, 3)
    assert handle.status is Status.PENDING
    record = get_job(handle.id).record
    assert record is not None
    assert (record.name, record.queue, record.attempts) == ("status.add", "status", 0)
    assert record.enqueued_at is not None and record.enqueued_at.tzinfo is timezone.utc
    assert (record.started_at, record.finished_at, record.result, record.error) == (None, None, None, None)
    assert handle.result is None and not handle.finished


def test_a_running_job_sees_itself_started_and_success_stores_the_result(tracked: MemoryBroker) -> None:
    handle = SeesItself.delay()
    assert make_worker(tracked).run_once() == 1
    assert handle.status is Status.SUCCESS
    assert handle.result == {"status": "STARTED", "attempts": 1, "pid": os.getpid(),
                             "host": socket.gethostname(), "started": True, "finished": False}
    record = handle.record
    assert record is not None
    assert record.attempts == 1 and record.error is None
    assert record.enqueued_at <= record.started_at <= record.finished_at
    assert tracked.stats("status").visible + tracked.stats("status").in_flight == 0


def test_failed_attempt_with_attempts_left_is_retry_then_success(tracked: MemoryBroker, clock: Clock) -> None:
    handle = flaky.delay(1)
    worker = make_worker(tracked)
    worker.run_once()
    record = get_job(handle.id).record
    assert record is not None
    assert (record.status, record.attempts, record.finished_at) == (Status.RETRY, 1, None)
    assert record.error == "RuntimeError: planned failure 1"
    assert record.traceback is not None and "RuntimeError: planned failure 1" in record.traceback
    clock.now += 12  # past the 10 s backoff (+ at most 10 % jitter)
    assert worker.run_once() == 1
    record = get_job(handle.id).record
    assert record is not None
    assert (record.status, record.attempts, record.result) == (Status.SUCCESS, 2, "done")
    assert (record.error, record.traceback) == (None, None)
    assert record.finished_at is not None


def test_failure_on_the_last_attempt_is_failure_and_the_message_is_dead_lettered(tracked: MemoryBroker,
                                                                                   clock: Clock) -> None:
    handle = flaky.delay(5)
    worker = make_worker(tracked)
    worker.run_once()
    clock.now += 12
    worker.run_once()
    assert calls == ["try", "try"]
    assert handle.status is Status.FAILURE
    assert handle.error == "RuntimeError: planned failure 2"
    assert handle.wait(timeout_s=5) is None  # re-raises nothing by default
    with pytest.raises(JobFailedError, match="FAILURE: RuntimeError: planned failure 2"):
        handle.wait(timeout_s=5, raise_error=True)
    assert tracked.stats("status").dead == 1
    record = handle.record
    assert record is not None and record.attempts == 2 and record.finished_at is not None


def test_retry_asked_with_no_attempts_left_is_failure(tracked: MemoryBroker) -> None:
    handle = asks_retry.delay()
    make_worker(tracked).run_once()
    assert handle.status is Status.FAILURE
    assert handle.error == "Retry: not yet"


def test_unknown_job_name_dead_letters_a_tracked_message_as_dead(tracked: MemoryBroker,
                                                                 store: StatusStore) -> None:  # noqa: F811
    handle = add.delay(1, 1)
    # This worker knows no job and gives up on an unknown name at its first refusal.
    worker = Worker(tracked, ["status"], wait_s=0, registry=Registry(), unknown_job_refusals=1,
                    isolation="none")
    worker.run_once()
    assert handle.status is Status.DEAD
    assert handle.error is not None and handle.error.startswith('unknown job name "status.add": refused 1 times')
    assert [m.attributes[REASON_ATTRIBUTE] for m in tracked.peek("status-dead")] == [handle.error]
    untracked_id = sqjobs.message.new_job_id()
    tracked.send("status", encode(JobMessage(name="nobody.knows", id=untracked_id)))
    worker.run_once()
    assert store.get(untracked_id) is None  # no row is created for names nobody tracked


def test_a_result_json_cannot_carry_is_failure_and_not_run_again(tracked: MemoryBroker) -> None:
    handle = not_json.delay()
    worker = make_worker(tracked)
    worker.run_once()
    assert handle.status is Status.FAILURE
    assert handle.error is not None
    assert handle.error.startswith(f"TypeError: the result of job {handle.id} status.not_json['when'] is of type "
                                   "object")
    stats = tracked.stats("status")
    assert (stats.visible, stats.in_flight, stats.dead, calls) == (0, 0, 0, ["not_json"])


def test_a_result_5000_levels_deep_is_failure_naming_the_limit_not_a_recursion_error(tracked: MemoryBroker) -> None:
    handle = too_deep.delay()
    worker = make_worker(tracked)
    assert worker.run_once() == 1
    assert handle.status is Status.FAILURE
    assert handle.error == (f"TypeError: the result of job {handle.id} status.too_deep is nested deeper than 500 "
                            "levels of lists and objects")
    stats = tracked.stats("status")
    assert (stats.visible, stats.in_flight, stats.dead, calls) == (0, 0, 0, ["too_deep"])


def test_encode_result_refuses_what_json_cannot_carry_with_a_type_error() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(TypeError, match="^the result is nested deeper than 500 levels"):
        encode_result(deep)
    with pytest.raises(TypeError, match="lone surrogate"):
        encode_result({"text": "\udc00"})
    assert encode_result({"ok": [1, "é"]}) == '{"ok": [1, "é"]}'


# -- duplicate deliveries and re-enqueued ids ------------------------------------------------


def test_a_succeeded_job_delivered_again_is_deleted_without_running(tracked: MemoryBroker,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    handle = add.delay(4, 5)
    worker = make_worker(tracked)
    worker.run_once()
    assert handle.status is Status.SUCCESS
    tracked.send("status", encode(JobMessage(name="status.add", args=[4, 5], id=handle.id)))  # a duplicate
    caplog.set_level("INFO", logger="sqjobs")
    assert worker.run_once() == 1
    assert calls == ["add 4 5"]
    assert f"job {handle.id} status.add on status: already succeeded, not run again" in caplog.text
    stats = tracked.stats("status")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)
    assert get_job(handle.id).record.attempts == 1  # type: ignore[union-attr]


def test_enqueuing_a_succeeded_job_id_again_keeps_its_row_and_does_not_run(tracked: MemoryBroker) -> None:
    first = add.delay(1, 2)
    worker = make_worker(tracked)
    worker.run_once()
    again = add.apply_async(args=(1, 2), job_id=first.id)
    assert again.status is Status.SUCCESS and again.result == 3
    worker.run_once()
    assert calls == ["add 1 2"]


def test_enqueuing_a_failed_job_id_again_starts_it_over(tracked: MemoryBroker, clock: Clock) -> None:
    first = asks_retry.delay()
    worker = make_worker(tracked)
    worker.run_once()
    assert first.status is Status.FAILURE
    again = asks_retry.apply_async(job_id=first.id)
    record = again.record
    assert record is not None
    assert (record.status, record.attempts, record.error, record.finished_at) == (Status.PENDING, 0, None, None)


# -- the handle and get_job ------------------------------------------------------------------


def test_wait_raises_timeout_error_at_its_deadline(tracked: MemoryBroker) -> None:
    handle = add.delay(1, 1)
    with pytest.raises(TimeoutError, match=f"job {handle.id} status.add is still PENDING after 0.2 s"):
        handle.wait(timeout_s=0.2)
    with pytest.raises(WaitTimeoutError):
        handle.wait(timeout_s=0)


def test_wait_returns_the_result_a_worker_thread_records(database_url: str) -> None:  # noqa: F811
    import threading

    broker = MemoryBroker()
    use_database(database_url, broker)
    handle = add.delay(20, 22)
    # The job runs in the worker thread itself: this test is about wait() across threads, not isolation.
    worker = Worker(broker, ["status"], wait_s=0.05, isolation="none")
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert handle.wait(timeout_s=30) == 42
    finally:
        worker.request_stop()
        thread.join()
    assert handle.status is Status.SUCCESS


def test_get_job_returns_a_handle_and_unknown_ids_raise(tracked: MemoryBroker) -> None:
    handle = add.delay(3, 4)
    make_worker(tracked).run_once()
    again = get_job(handle.id)
    assert (again.id, again.name, again.queue, again.status, again.result) == (
        handle.id, "status.add", "status", Status.SUCCESS, 7)
    assert again.wait(timeout_s=1) == 7
    with pytest.raises(JobNotFoundError, match="no status row for job nope"):
        get_job("nope")
    with pytest.raises(LookupError):
        sqjobs.get_job("nope")


# -- what is tracked -------------------------------------------------------------------------


def test_untracked_jobs_touch_no_database(tmp_path: Path, broker: MemoryBroker) -> None:
    missing = tmp_path / "never" / "status.db"
    use_database(f"sqlite:///{missing}", broker)
    handle = plain.delay(1, 2)
    make_worker(broker).run_once()
    assert calls == ["plain 1 2"]
    assert handle.status is None and handle.result is None and handle.record is None
    with pytest.raises(JobNotTrackedError):
        handle.wait(timeout_s=1)
    assert not missing.parent.exists()


def test_track_all_records_unmarked_jobs(database_url: str, broker: MemoryBroker) -> None:  # noqa: F811
    use_database(database_url, broker, track="all")
    handle = plain.delay(2, 2)
    assert handle.status is Status.PENDING
    make_worker(broker).run_once()
    assert (handle.status, handle.result) == (Status.SUCCESS, 4)


def test_track_none_records_nothing_even_for_marked_jobs(tmp_path: Path, broker: MemoryBroker) -> None:
    missing = tmp_path / "never" / "status.db"
    use_database(f"sqlite:///{missing}", broker, track="none")
    handle = SeesItself.delay()
    assert handle.status is None
    assert not missing.parent.exists()


def test_result_job_is_exported_tracked_and_not_registered_itself() -> None:
    assert sqjobs.ResultJob is ResultJob
    assert ResultJob.track is True and issubclass(ResultJob, Job)
    assert "status.sees_itself" in sqjobs.registry
    assert ResultJob.__name__ not in sqjobs.registry.names()


# -- eager mode ------------------------------------------------------------------------------


def test_eager_mode_fills_the_handle_and_records_the_row(database_url: str) -> None:  # noqa: F811
    calls.clear()
    use_database(database_url, "eager://")
    handle = add.delay(5, 6)
    assert (handle.status, handle.result) == (Status.SUCCESS, 11)
    assert handle.job is not None and handle.job.result == 11
    record = get_job(handle.id).record
    assert record is not None
    assert (record.status, record.result, record.attempts) == (Status.SUCCESS, 11, 1)
    assert record.worker_pid == os.getpid()


def test_eager_mode_records_failure_and_raises(database_url: str) -> None:  # noqa: F811
    calls.clear()
    use_database(database_url, "eager://")
    handle_id = "eager-" + sqjobs.message.new_job_id()
    with pytest.raises(RuntimeError, match="planned failure 1"):
        flaky.apply_async(args=(1,), job_id=handle_id)
    failed = get_job(handle_id)
    assert (failed.status, failed.error) == (Status.FAILURE, "RuntimeError: planned failure 1")
    not_json_handle = not_json.delay()
    assert not_json_handle.status is Status.FAILURE
    assert not_json_handle.error is not None and "JSON cannot carry" in not_json_handle.error


def test_the_seed_result_job_in_eager_mode(database_url: str) -> None:  # noqa: F811
    from tests.jobs_for_tests import DummyResultJob

    use_database(database_url, "memory://")
    broker = sqjobs.create_eager_broker()  # keeps the database chosen above
    job_id, instance = broker.add_job(DummyResultJob)
    assert isinstance(instance, DummyResultJob)
    my_job = get_job(job_id)
    assert my_job.status == Status.SUCCESS
    assert (my_job.name, my_job.queue, my_job.result) == ("dummy_result_job", "dummy_queue", None)


# -- sqjobs prune ----------------------------------------------------------------------------


def _finished(store: StatusStore, ago: timedelta) -> str:  # noqa: F811
    """A SUCCESS row that finished ``ago`` before now; return its job id."""
    job_id = new_job_id()
    store.enqueued(job_id, "status.add", "status")
    store.ended(job_id, "status.add", "status", Status.SUCCESS, "3")
    finished_at = datetime.now(timezone.utc).replace(tzinfo=None) - ago
    store.model.update(finished_at=finished_at).where(store.model.id == job_id).execute()
    return job_id


def test_prune_refuses_a_duration_without_a_unit_and_deletes_nothing(tmp_path: Path, database_url: str,  # noqa: F811
                                                                     store: StatusStore) -> None:  # noqa: F811
    config = sqlite_config(tmp_path, database=database_url)
    ten_seconds_old = _finished(store, timedelta(seconds=10))
    result = CliRunner().invoke(main, ["prune", "-c", str(config), "--older-than", "7"])
    assert result.exit_code == 2, result.output
    assert "'7' has no unit" in result.output
    assert "45s, 30m, 12h, 7d" in result.output
    assert "Traceback" not in result.output
    assert store.get(ten_seconds_old) is not None


def test_prune_dry_run_counts_the_rows_that_would_go_and_deletes_none(tmp_path: Path, database_url: str,  # noqa: F811
                                                                      store: StatusStore) -> None:  # noqa: F811
    config = sqlite_config(tmp_path, database=database_url)
    # Older than any other test's rows, so that only these two are due on a shared server database.
    ancient = [_finished(store, timedelta(weeks=1100)) for _ in range(2)]
    recent = _finished(store, timedelta(days=1))
    result = CliRunner().invoke(main, ["prune", "-c", str(config), "--older-than", "1000w", "--dry-run"])
    assert result.exit_code == 0, result.output
    match = re.fullmatch(r"would prune (\d+) finished row\(s\) that finished before (\S+)\n", result.output)
    assert match, result.output
    cutoff = datetime.fromisoformat(match.group(2))
    assert abs(cutoff - (datetime.now(timezone.utc) - timedelta(weeks=1000))) < timedelta(minutes=1)
    would = int(match.group(1))
    assert would >= 2 and (would == 2 or not database_url.startswith("sqlite"))
    assert all(store.get(job_id) is not None for job_id in (*ancient, recent))
    pruned = CliRunner().invoke(main, ["prune", "-c", str(config), "--older-than", "1000w"])
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.startswith(f"pruned {would} finished row(s)")
    assert all(store.get(job_id) is None for job_id in ancient)
    assert store.get(recent) is not None
