"""A tracked job's status row keeps its arguments; a table of an earlier version gains the column in place.

On SQLite, PostgreSQL and MariaDB: ``.delay()`` writes the arguments with
the PENDING row (the JSON the body carries), a worker writes them when it
creates the row of a job another producer sent, long ones are cut and
marked. A status table of the earlier shape (no ``arguments`` column, with a
row) is upgraded by the processes that first use it, all at once; its old
row reads "not recorded", and a process of the earlier version still writes
rows after the upgrade.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from pathlib import Path
from typing import Any, Iterator

import peewee
import pytest

from sqjobs import Status, defaults
from sqjobs import app as runtime
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.message import JobMessage, _encode_whole, arguments_json, decode, encode, new_job_id
from sqjobs.status.database import open_database
from sqjobs.status.store import (
    ARGUMENTS_CUT_MARK,
    ARGUMENTS_NOT_RECORDED,
    STATUS_TABLE,
    StatusRecord,
    StatusStore,
    _make_model,
    arguments_text,
    forget_stores,
    get_store,
)
from tests import jobs_for_tests as jobs
from tests.scratch_databases import scratch_database
from tests.status_fixtures import DATABASE_KINDS, MYSQL_URL, POSTGRESQL_URL, database_url  # noqa: F401
from tests.support import sqlite_config, start_worker, stop_process, worker_log


@pytest.fixture(autouse=True)
def closed_stores() -> Iterator[None]:
    yield None
    forget_stores()


def _row(url: str, job_id: str) -> StatusRecord:
    record = get_store(url).get(job_id)
    assert record is not None, f"no row for {job_id}"
    return record


def test_a_tracked_jobs_row_keeps_its_arguments_from_delay_and_from_a_foreign_producer(
        database_url: str, tmp_path: Path) -> None:  # noqa: F811
    config = sqlite_config(tmp_path, database=database_url)
    runtime.configure(str(config))
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    sent = jobs.tracked_add.apply_async(args=(2,), kwargs={"b": 40})
    assert json.loads(_row(database_url, sent.id).arguments or "") == {"args": [2], "kwargs": {"b": 40}}
    pending = _row(database_url, sent.id)
    assert pending.status is Status.PENDING and pending.to_json()["arguments"] == {"args": [2], "kwargs": {"b": 40}}

    # A producer of another language sends a tracked job: no PENDING row, the worker creates it.
    foreign = new_job_id()
    body = {"id": foreign, "name": "tracked_add", "args": [1], "kwargs": {"b": "é"}}
    broker.send("default", base64.b64encode(json.dumps(body).encode()).decode())
    long_text = "x" * (defaults.STATUS_ARGUMENTS_MAX_CHARS + 10)
    too_long = jobs.tracked_fails.delay(long_text)
    worker = start_worker(config, ["default"], "--burst")
    try:
        assert worker.wait(60) == 0, worker_log(worker)
    finally:
        stop_process(worker)

    done = _row(database_url, sent.id)
    assert (done.status, done.result) == (Status.SUCCESS, 42)
    assert json.loads(done.arguments or "") == {"args": [2], "kwargs": {"b": 40}}, "kept through the run"
    row = _row(database_url, foreign)
    assert row.status is Status.FAILURE  # "1" + "é" fails; the row is the worker's own
    assert json.loads(row.arguments or "") == {"args": [1], "kwargs": {"b": "é"}}
    cut = _row(database_url, too_long.id).arguments or ""
    assert len(cut) == defaults.STATUS_ARGUMENTS_MAX_CHARS and cut.endswith(ARGUMENTS_CUT_MARK)
    assert cut.startswith('{"args":["xxx') and arguments_text(cut) == cut
    assert _row(database_url, too_long.id).to_json()["arguments"] == cut


# -- a table of the earlier shape ------------------------------------------------------------------


@pytest.fixture(params=DATABASE_KINDS)
def scratch_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of each kind, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'status.db'}"
        return
    with scratch_database({"postgresql": POSTGRESQL_URL, "mysql": MYSQL_URL}[request.param]) as url:
        yield url


def _old_model(database: peewee.Database) -> Any:
    """The status-row model as the earlier version had it: every column but ``arguments``."""
    model = _make_model(database)
    model._meta.remove_field("arguments")
    return model


def test_a_status_table_of_the_earlier_shape_gains_the_arguments_column_in_place(scratch_url: str) -> None:
    database = open_database(scratch_url)
    old = _old_model(database)
    database.create_tables([old])
    old.insert(id="old-row", name="report", queue="default", status="SUCCESS", attempts=1, result="7").execute()
    assert "arguments" not in {column.name for column in database.get_columns(STATUS_TABLE)}

    # Three processes start at once and each upgrades the table (threads: one connection each).
    stores = [StatusStore(scratch_url) for _ in range(3)]
    barrier, errors = threading.Barrier(len(stores)), []

    def upgrade(store: StatusStore) -> None:
        barrier.wait(10)
        try:
            store.create_tables()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []

    columns = [column.name for column in database.get_columns(STATUS_TABLE)]
    assert columns.count("arguments") == 1
    record = stores[0].get("old-row")
    assert record is not None and (record.status, record.result, record.arguments) == (Status.SUCCESS, 7, None)
    assert arguments_text(record.arguments) == ARGUMENTS_NOT_RECORDED == "not recorded"
    assert record.to_json()["arguments"] is None

    # A process of the earlier version goes on writing rows: the column is NULL there.
    old.insert(id="old-worker", name="report", queue="default", status="STARTED", attempts=1).execute()
    written = stores[1].get("old-worker")
    assert written is not None and (written.status, written.arguments) == (Status.STARTED, None)
    # And the new version writes it.
    stores[2].enqueued("new-row", "report", "default", '{"args":[1],"kwargs":{}}')
    assert arguments_text(stores[0].get("new-row").arguments) == '{\n  "args": [\n    1\n  ],\n  "kwargs": {}\n}'
    database.close()


# -- the body spells the arguments as the row keeps them ---------------------------------------------


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.randint(-10**6, 10**6)
    if kind == 1:
        return rng.choice(["", "plain", "é ü", "quote \" and \\", "line\nbreak", "\u2028", "emoji 🎉"])
    if kind == 2:
        return rng.choice([None, True, False, 1.5, -0.0, 1e300])
    if kind == 3:
        return rng.random()
    if kind in (4, 5):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["a", "b", "é", "k y"]): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_the_spliced_body_is_the_body_encoded_whole_whatever_the_message() -> None:
    rng = random.Random(2026)
    for _ in range(2000):
        args = [_random_value(rng) for _ in range(rng.randrange(4))]
        kwargs = {rng.choice(["x", "y", "ü"]): _random_value(rng) for _ in range(rng.randrange(3))}
        extra = rng.choice([{}, {"scheduled_for": "2026-05-01T00:00:00+00:00"}, {"unique_key": "k", "eta": 1}])
        headers = rng.choice([{}, {"trace": "t"}, {"sqjobs-cancellable": True, "sig": "abc"}])
        message = JobMessage(name=rng.choice(["add", "shop.jobs.é"]), args=args, kwargs=kwargs,
                             extra=dict(extra), headers=dict(headers), arguments_text=arguments_json(args, kwargs))
        call_extra = rng.choice([None, {}, {"scheduled_for": "later"}, {"v": 2}])
        whole = _encode_whole(message, call_extra)
        assert encode(message, call_extra) == whole
        assert decode(whole, "m") == decode(encode(message, call_extra), "m")
