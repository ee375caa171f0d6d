"""The status store itself and an unreachable status database.

Store tests run on SQLite, PostgreSQL and MySQL. The unreachable-database
tests reach PostgreSQL through a TCP proxy that is not listening yet (a real
"connection refused", which is transient), use an SQLite file in a folder
that does not exist (a real "unable to open database file", which is
permanent), or a store method made to fail.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from sqjobs import Status, get_job, job
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.errors import StatusStoreError, StatusStorePermanentError
from sqjobs.message import JobMessage, encode, new_job_id
from sqjobs.status import handle as status
from sqjobs.status.store import PRUNE_BATCH_ROWS, STATUS_TABLE, StatusStore, get_store, safe_url
from sqjobs.worker.loop import Worker
from tests.status_fixtures import POSTGRESQL_URL, database_url, store, use_database  # noqa: F401  (fixtures)
from tests.support import wait_until
from tests.tcp_proxy import TcpProxy

ran: list[str] = []


@job(queue="store", name="store.echo", track=True)
def echo(value: Any) -> Any:
    ran.append(f"echo {value!r}")
    return value


@pytest.fixture()
def down_database() -> Iterator[tuple[str, TcpProxy]]:
    """A PostgreSQL URL through a proxy not started yet (connections refused), and the proxy."""
    parts = urlsplit(POSTGRESQL_URL)
    with TcpProxy(parts.port or 5432) as proxy:
        netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
        yield parts._replace(netloc=f"{netloc}:{proxy.port}").geturl(), proxy


@pytest.fixture(autouse=True)
def quick_store_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry status writes after 20 ms instead of a second, so tests reach the retry quickly."""
    monkeypatch.setattr(status, "STORE_RETRY_PAUSE_S", 0.02)
    monkeypatch.setattr(status, "STORE_RETRY_PAUSE_MAX_S", 0.05)
    ran.clear()


# -- the store on each database ------------------------------------------------------------


def test_table_is_prefixed_and_creating_it_again_is_harmless(store: StatusStore) -> None:  # noqa: F811
    assert STATUS_TABLE == "sqjobs_job_status"
    store.create_tables()
    store.create_tables()
    assert STATUS_TABLE in store.database.get_tables()
    assert "sqjobs_job_status_finished_at" in {index.name for index in store.database.get_indexes(STATUS_TABLE)}


def test_a_new_store_creates_the_table_on_first_use(tmp_path: Path) -> None:
    fresh = StatusStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert fresh.get("anything") is None
    assert STATUS_TABLE in fresh.database.get_tables()
    fresh.close()


def test_stores_created_at_once_in_many_threads_all_work(database_url: str) -> None:  # noqa: F811
    stores = [StatusStore(database_url) for _ in range(4)]
    errors: list[BaseException] = []

    def create(one: StatusStore) -> None:
        try:
            one.create_tables()
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(one,)) for one in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for one in stores:
        one.close()


def test_rows_keep_microseconds_large_results_and_unicode(store: StatusStore) -> None:  # noqa: F811
    job_id = new_job_id()
    store.enqueued(job_id, "store.echo", "store")
    store.started(job_id, "store.echo", "store")
    big = "é" * 70_000  # over MySQL's 64 KiB TEXT
    store.ended(job_id, "store.echo", "store", Status.SUCCESS, status.encode_result(big))
    record = store.get(job_id)
    assert record is not None
    assert record.result == big
    assert record.started_at is not None and record.enqueued_at is not None
    assert (record.enqueued_at.microsecond, record.started_at.microsecond) != (0, 0)
    assert timedelta(0) <= record.started_at - record.enqueued_at < timedelta(minutes=5)


def test_started_without_a_pending_row_creates_it(store: StatusStore) -> None:  # noqa: F811
    job_id = new_job_id()  # as from a producer that does not track, or another language
    store.started(job_id, "store.echo", "store")
    store.started(job_id, "store.echo", "store")
    record = store.get(job_id)
    assert record is not None
    assert (record.status, record.attempts, record.enqueued_at) == (Status.STARTED, 2, None)
    assert record.worker_pid == os.getpid()


def test_prune_deletes_only_rows_finished_before_the_cutoff(store: StatusStore) -> None:  # noqa: F811
    old_done, new_done, old_pending = new_job_id(), new_job_id(), new_job_id()
    for job_id in (old_done, new_done, old_pending):
        store.enqueued(job_id, "store.echo", "store")
    store.ended(old_done, "store.echo", "store", Status.SUCCESS, "1")
    store.ended(new_done, "store.echo", "store", Status.FAILURE, None, "ValueError: x")
    eight_days_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=8)
    model = store.model
    model.update(finished_at=eight_days_ago).where(model.id == old_done).execute()
    model.update(enqueued_at=eight_days_ago).where(model.id == old_pending).execute()
    assert store.prune(datetime.now(timezone.utc) - timedelta(days=7)) >= 1
    assert store.get(old_done) is None
    assert store.get(new_done) is not None and store.get(old_pending) is not None


def test_prune_deletes_a_batch_at_a_time_until_no_old_row_is_left(tmp_path: Path) -> None:
    pruned = StatusStore(f"sqlite:///{tmp_path / 'prune.db'}")
    pruned.create_tables()
    long_ago = datetime(2000, 1, 1)
    old = 2 * PRUNE_BATCH_ROWS + 5
    rows = [dict(id=new_job_id(), name="n", queue="q", status="SUCCESS", attempts=1, finished_at=long_ago)
            for _ in range(old)]
    recent = [dict(row, id=new_job_id(), finished_at=datetime.now(timezone.utc).replace(tzinfo=None))
              for row in rows[:3]]
    pruned.model.insert_many(rows + recent).execute()
    assert pruned.count_prunable(datetime(2001, 1, 1)) == old
    assert pruned.prune(datetime(2001, 1, 1)) == old
    assert pruned.model.select().count() == 3


def test_a_forked_child_opens_its_own_connection(store: StatusStore) -> None:  # noqa: F811
    job_id = new_job_id()
    store.enqueued(job_id, "store.echo", "store")
    assert store.get(job_id) is not None  # the parent's connection is open
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def child() -> None:
        mine = get_store(store.url)
        record = mine.get(job_id)
        mine.started(job_id, "store.echo", "store")
        results.put((mine is not store, mine.pid, record.status.value if record else None))

    process = context.Process(target=child)
    process.start()
    got = results.get(timeout=30)
    process.join(30)
    assert process.exitcode == 0
    assert got == (True, process.pid, "PENDING")
    record = store.get(job_id)  # the parent's connection still works after the child exited
    assert record is not None and record.status is Status.STARTED and record.worker_pid == process.pid


def test_bad_urls_and_passwords_in_errors() -> None:
    assert safe_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(StatusStoreError, match="unknown scheme 'nosuch'"):
        StatusStore("nosuch://x/y")


# -- an unreachable status database --------------------------------------------------------


def test_delay_of_a_tracked_job_raises_and_sends_nothing_when_the_database_is_unreachable(
        tmp_path: Path) -> None:
    broker = MemoryBroker()
    use_database(f"sqlite:///{tmp_path / 'missing' / 'status.db'}", broker)
    with pytest.raises(StatusStoreError, match="unable to open database file"):
        echo.delay(1)
    assert broker.stats("store").visible == 0


def _run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run_once, daemon=True)
    thread.start()
    return thread


def test_worker_retries_until_the_database_is_back_then_records_and_deletes(
        down_database: tuple[str, TcpProxy], caplog: pytest.LogCaptureFixture) -> None:
    url, proxy = down_database
    broker = MemoryBroker()
    use_database(url, broker)
    job_id = new_job_id()
    broker.send("store", encode(JobMessage(name="store.echo", args=["x"], id=job_id)))
    worker = Worker(broker, ["store"], wait_s=0, isolation="none")
    thread = _run_in_thread(worker)
    wait_until(lambda: caplog.text.count("status database unavailable") >= 2, what="logged retries")
    assert ran == [] and broker.stats("store").in_flight == 1  # not run, not deleted
    proxy.start()
    thread.join(30)
    assert not thread.is_alive()
    assert ran == ["echo 'x'"]
    assert (get_job(job_id).status, get_job(job_id).result) == (Status.SUCCESS, "x")
    stats = broker.stats("store")
    assert (stats.visible, stats.in_flight) == (0, 0)


def test_a_stop_while_the_database_is_unreachable_hands_the_message_back_unrun(
        down_database: tuple[str, TcpProxy], caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker()
    use_database(down_database[0], broker)
    broker.send("store", encode(JobMessage(name="store.echo", args=["y"])))
    worker = Worker(broker, ["store"], wait_s=0, isolation="none")
    thread = _run_in_thread(worker)
    wait_until(lambda: "status database unavailable" in caplog.text, what="a logged retry")
    worker.request_stop()
    thread.join(30)
    assert not thread.is_alive()
    assert ran == []
    assert "message handed back to be delivered again" in caplog.text
    [again] = broker.receive("store", 10, 0)
    assert again.receive_count == 2


def test_an_outcome_that_cannot_be_recorded_keeps_the_message_until_it_is(
        database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    broker = MemoryBroker()
    use_database(database_url, broker)
    handle = echo.delay("z")
    failing = threading.Event()
    failing.set()
    real_ended = StatusStore.ended

    def ended(self: StatusStore, *args: Any, **kwargs: Any) -> None:
        if failing.is_set():
            raise StatusStoreError("status database test: cannot record (made to fail)")
        real_ended(self, *args, **kwargs)

    monkeypatch.setattr(StatusStore, "ended", ended)
    worker = Worker(broker, ["store"], wait_s=0, isolation="none")
    thread = _run_in_thread(worker)
    wait_until(lambda: caplog.text.count("made to fail") >= 2, what="logged retries")
    assert ran == ["echo 'z'"]
    assert handle.status is Status.STARTED
    assert broker.stats("store").in_flight == 1  # the job ran, but its message is kept
    failing.clear()
    thread.join(30)
    assert not thread.is_alive()
    assert (handle.status, handle.result) == (Status.SUCCESS, "z")
    stats = broker.stats("store")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)


def test_an_unrecorded_outcome_at_a_stop_leaves_the_message_to_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker()
    use_database(f"sqlite:///{tmp_path / 'status.db'}", broker)
    handle = echo.delay("w")

    def ended(self: StatusStore, *args: Any, **kwargs: Any) -> None:
        raise StatusStoreError("status database test: cannot record (made to fail)")

    monkeypatch.setattr(StatusStore, "ended", ended)
    worker = Worker(broker, ["store"], wait_s=0, isolation="none")
    thread = _run_in_thread(worker)
    wait_until(lambda: "made to fail" in caplog.text, what="a logged retry")
    worker.request_stop()
    thread.join(30)
    assert not thread.is_alive()
    monkeypatch.undo()
    assert handle.status is Status.STARTED
    [again] = broker.receive("store", 10, 0)
    assert again.receive_count == 2


class RecordingStop(threading.Event):
    """A stop event that records the pauses asked of it instead of waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(float(timeout or 0))
        return self.is_set()


def test_status_writes_are_retried_at_once_then_with_a_doubling_capped_pause() -> None:
    failures = iter(range(5))

    def action() -> str:
        if next(failures, None) is not None:
            raise StatusStoreError("down")
        return "written"

    stop = RecordingStop()
    assert status.retry_while_unavailable(action, "job x", stop) == "written"
    assert stop.pauses == [0.0, 0.02, 0.04, 0.05, 0.05]  # quick_store_retries: 20 ms doubling, 50 ms cap


def test_a_stop_ends_the_retries_with_the_error() -> None:
    stop = RecordingStop()

    def action() -> None:
        stop.set()
        raise StatusStoreError("down")

    with pytest.raises(StatusStoreError, match="down"):
        status.retry_while_unavailable(action, "job x", stop)
    assert stop.pauses == []


def test_a_registered_url_scheme_stands_for_a_database_url(tmp_path: Path) -> None:
    from sqjobs.status.database import register_url_scheme

    def resolve(url: str) -> str:
        if urlsplit(url).netloc != "here":
            raise ValueError(f"no database {urlsplit(url).netloc!r}")
        return f"sqlite:///{tmp_path / 'resolved.db'}"

    register_url_scheme("testalias", resolve)
    try:
        aliased = StatusStore("testalias://here")
        aliased.enqueued("job-1", "a.job", "default")
        assert StatusStore(f"sqlite:///{tmp_path / 'resolved.db'}").status_of("job-1") == Status.PENDING
        with pytest.raises(StatusStorePermanentError, match=r"\[sqjobs\] database testalias://there: no database"):
            StatusStore("testalias://there")
    finally:
        from sqjobs.status import database
        database._url_schemes.pop("testalias")
