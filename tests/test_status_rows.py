"""Status rows a database cannot keep: refused at the door, made to fit, or settled without a row.

Against the real PostgreSQL and MariaDB servers of this machine and real
worker processes: a foreign message whose id is too long for the row's key
is malformed; NUL characters and lone surrogates are taken out of texts; a
result over MAX_RESULT_BYTES is a FAILURE on every database; what a database
still refuses (a 20 MiB statement over MariaDB's max_allowed_packet, an
emoji in a utf8mb3 table) is a StatusRowError, which nothing retries and
which stops nothing: the job is recorded as FAILURE with a short reason and
its message dead-lettered.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sqjobs import Status
from sqjobs import app as runtime
from sqjobs.brokers.base import REASON_ATTRIBUTE
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.errors import StatusRowError, StatusStorePermanentError
from sqjobs.message import ID_RULE, new_job_id
from sqjobs.status import handle as status
from sqjobs.status.store import MAX_RESULT_BYTES, StatusRecord, StatusStore, forget_stores, get_store, open_database
from sqjobs.worker import runner
from tests import jobs_for_tests as jobs
from tests.status_fixtures import (  # noqa: F401  (fixtures)
    MYSQL_URL,
    POSTGRESQL_URL,
    database_url,
    store,
    use_database,
)
from tests.support import sqlite_config, start_worker, stop_process, worker_log

#: A MariaDB database whose tables take the 3-byte utf8 of older installations (no emoji).
UTF8MB3_DATABASE = "sqjobs_test_utf8mb3"


@pytest.fixture(autouse=True)
def closed_stores() -> object:
    """Close what the test process opened."""
    yield None
    forget_stores()


def _b64(data: dict) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def _burst(tmp_path: Path, database: str) -> tuple[Path, SQLiteBroker]:
    config = sqlite_config(tmp_path, database=database)
    runtime.configure(str(config))
    return config, SQLiteBroker(str(tmp_path / "queue.db"))


def _run_burst(config: Path) -> str:
    """Run a ``--burst`` worker until the queue is empty; fail if it does not end by itself. Return its log."""
    worker = start_worker(config, ["default"], "--burst")
    try:
        code = worker.wait(60)
    finally:
        stop_process(worker)
    log = worker_log(worker)
    assert code == 0, log
    return log


def _row(url: str, job_id: str) -> StatusRecord:
    record = get_store(url).get(job_id)
    assert record is not None, f"no row for {job_id}"
    return record


# -- refused at the door ---------------------------------------------------------------------


def test_a_tracked_message_with_a_200_character_id_is_dead_lettered_as_malformed(tmp_path: Path) -> None:
    config, broker = _burst(tmp_path, POSTGRESQL_URL)
    broker.send("default", _b64({"id": "x" * 200, "name": "tracked_add", "args": [1, 2]}))
    good = jobs.tracked_add.delay(20, 22)
    log = _run_burst(config)
    [dead] = broker.peek("default-dead")
    assert dead.attributes[REASON_ATTRIBUTE] == f"malformed message: 'id' is 200 characters, over 128; {ID_RULE}"
    assert "status database unavailable" not in log
    assert (_row(POSTGRESQL_URL, good.id).status, good.result) == (Status.SUCCESS, 42)


# -- made to fit -----------------------------------------------------------------------------


def test_nul_characters_are_taken_out_of_every_text(store: StatusStore) -> None:  # noqa: F811
    job_id = new_job_id()
    store.started(job_id, "name\x00with nul", "queue\x00")
    store.ended(job_id, "name\x00with nul", "queue\x00", Status.FAILURE, None, "ValueError: a\x00b",
                "Traceback\x00...\nValueError: a\x00b\n")
    record = store.get(job_id)
    assert record is not None
    assert (record.name, record.queue, record.error) == ("namewith nul", "queue", "ValueError: ab")
    assert record.traceback == "Traceback...\nValueError: ab\n"


def test_lone_surrogates_are_replaced_in_texts_and_refused_in_results(store: StatusStore) -> None:  # noqa: F811
    job_id = new_job_id()
    name = b"report-\xff.csv".decode("utf-8", "surrogateescape")  # a file name that is not UTF-8
    with pytest.raises(TypeError, match="lone surrogate"):  # like an argument: UTF-8 JSON cannot carry it
        status.encode_result([name])
    store.ended(job_id, "n", "q", Status.FAILURE, None, f"OSError: {name}")
    record = store.get(job_id)
    assert record is not None
    assert record.error == "OSError: report-?.csv"


def test_an_error_with_nul_on_postgresql_is_recorded_as_failure_without_it(tmp_path: Path) -> None:
    config, broker = _burst(tmp_path, POSTGRESQL_URL)
    handle = jobs.tracked_fails.delay("a\x00b")
    log = _run_burst(config)
    record = _row(POSTGRESQL_URL, handle.id)
    assert (record.status, record.error) == (Status.FAILURE, "ValueError: boom ab"), log
    assert record.traceback is not None and "ValueError: boom ab" in record.traceback
    [dead] = broker.peek("default-dead")
    assert dead.attributes[REASON_ATTRIBUTE].startswith("failed after 1 attempt(s): ValueError: boom a")


# -- results over MAX_RESULT_BYTES -----------------------------------------------------------------


def test_a_20_mib_result_on_mariadb_is_a_failure_saying_its_size_and_is_not_retried(tmp_path: Path) -> None:
    config, broker = _burst(tmp_path, MYSQL_URL)
    big = jobs.tracked_big_result.delay(20 * 1024 * 1024)
    small = jobs.tracked_big_result.delay(MAX_RESULT_BYTES - 2)  # its JSON is exactly the limit
    after = jobs.tracked_add.delay(1, 2)
    log = _run_burst(config)
    record = _row(MYSQL_URL, big.id)
    assert record.status is Status.FAILURE, log
    assert record.error == (f"ResultTooLargeError: the result of job {big.id} tracked_big_result is 20,971,522 "
                            "bytes of JSON, over the 1,048,576 bytes a status row keeps; store the data elsewhere "
                            "and return a reference to it")
    assert (record.attempts, record.result) == (1, None)
    assert len(_row(MYSQL_URL, small.id).result) == MAX_RESULT_BYTES - 2
    assert _row(MYSQL_URL, after.id).result == 3
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)  # deleted like a result JSON cannot carry
    assert "status database unavailable" not in log


def test_a_result_over_the_limit_is_a_failure_on_every_database(database_url: str) -> None:  # noqa: F811
    use_database(database_url, "eager://")
    handle = jobs.tracked_big_result.delay(MAX_RESULT_BYTES - 1)  # one byte over, once quoted
    assert (handle.status, handle.result) == (Status.FAILURE, None)
    assert "is 1,048,577 bytes of JSON, over the 1,048,576 bytes a status row keeps" in (handle.error or "")
    record = _row(database_url, handle.id)
    assert (record.status, record.error, record.result) == (Status.FAILURE, handle.error, None)


# -- what a database still refuses -----------------------------------------------------------------


@pytest.mark.parametrize("url", [POSTGRESQL_URL, MYSQL_URL])
def test_a_value_too_long_for_its_column_is_a_row_error(url: str) -> None:
    with pytest.raises(StatusRowError) as raised:
        get_store(url).started("k" * 200, "n", "q")
    assert "too long" in str(raised.value).lower()
    assert not isinstance(raised.value, StatusStorePermanentError)
    get_store(url).started(new_job_id(), "n", "q")  # the database itself works


def test_a_statement_over_max_allowed_packet_is_a_row_error_not_a_lost_connection() -> None:
    mysql = get_store(MYSQL_URL)
    mysql.create_tables()
    assert mysql.packet_limit is not None and mysql.packet_limit < 20 * 1024 * 1024
    job_id = new_job_id()
    mysql.started(job_id, "n", "q")
    with pytest.raises(StatusRowError, match="gone away|Lost connection|max_allowed_packet"):
        mysql.ended(job_id, "n", "q", Status.SUCCESS, json.dumps("y" * (20 * 1024 * 1024)))
    mysql.ended(job_id, "n", "q", Status.SUCCESS, "1")  # reconnects: the database itself works
    assert _row(MYSQL_URL, job_id).result == 1


def test_a_row_error_is_not_retried() -> None:
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise StatusRowError("status database x: cannot record job y as FAILURE: value too long")

    with pytest.raises(StatusRowError):
        status.retry_while_unavailable(action, "job y", threading.Event())
    assert calls == [1]


@pytest.fixture(scope="module")
def utf8mb3_url() -> str:
    """A MariaDB database created with the 3-byte utf8 character set (created once if missing)."""
    database = open_database(MYSQL_URL)
    database.execute_sql(f"CREATE DATABASE IF NOT EXISTS {UTF8MB3_DATABASE} CHARACTER SET utf8mb3")
    database.close()
    return urlsplit(MYSQL_URL)._replace(path=f"/{UTF8MB3_DATABASE}").geturl()


def test_rows_a_database_refuses_are_failures_and_their_messages_dead_lettered(tmp_path: Path,
                                                                               utf8mb3_url: str) -> None:
    config, broker = _burst(tmp_path, utf8mb3_url)
    raised = jobs.tracked_fails.delay("\N{GRINNING FACE}")  # its error text cannot be stored
    returned = jobs.tracked_add.delay("\N{GRINNING FACE}", "!")  # succeeds; its result cannot be stored
    good = jobs.tracked_add.delay(20, 22)
    foreign = new_job_id()  # another producer's: the worker writes its row, arguments included
    broker.send("default", _b64({"id": foreign, "name": "tracked_add", "args": ["\N{GRINNING FACE}", "?"]}))
    log = _run_burst(config)
    assert "status database unavailable" not in log
    assert "Traceback" not in log
    for job_id in (raised.id, returned.id, foreign):
        record = _row(utf8mb3_url, job_id)
        assert record.status is Status.FAILURE, log
        assert record.error is not None and record.error.startswith(
            "StatusRowError: its status could not be recorded: status database ")
        assert "Incorrect string value" in record.error and len(record.error) <= runner.STATUS_ROW_REASON_MAX_CHARS
    assert (_row(utf8mb3_url, good.id).status, good.result) == (Status.SUCCESS, 42)
    # The arguments the table's character set cannot hold are kept in JSON escapes: the same value.
    assert json.loads(_row(utf8mb3_url, returned.id).arguments or "") == {"args": ["\N{GRINNING FACE}", "!"],
                                                                          "kwargs": {}}
    assert json.loads(_row(utf8mb3_url, foreign).arguments or "") == {"args": ["\N{GRINNING FACE}", "?"],
                                                                      "kwargs": {}}
    dead = {message.message_id: message.attributes[REASON_ATTRIBUTE] for message in broker.peek("default-dead")}
    assert len(dead) == 3
    assert all(reason.startswith("its status could not be recorded: ") for reason in dead.values()), dead
    assert broker.stats("default").visible == broker.stats("default").in_flight == 0


def test_a_row_error_from_delay_sends_nothing(tmp_path: Path, utf8mb3_url: str) -> None:
    config, broker = _burst(tmp_path, utf8mb3_url)
    with pytest.raises(StatusRowError, match="Incorrect string value"):  # an id (a letter) the table cannot hold
        jobs.tracked_add.apply_async(args=(1, 2), job_id="\N{CJK UNIFIED IDEOGRAPH-20000}")
    assert broker.stats("default").visible == 0

