"""A status database that stops answering holds nothing for long: connect and statement timeouts.

The database is reached through a TCP proxy in black-hole mode: connections
stay open and new ones are accepted, but nothing is forwarded either way,
as when a network drops packets. ``.delay()`` of a tracked job raises
StatusStoreError within the timeouts, whether it connects anew or its
connection was open; a worker process logs "status database unavailable"
within them, keeps retrying, and records the job once the proxy forwards
again. On PostgreSQL a slow statement is also cancelled by the server.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest

from sqjobs import Status
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.errors import StatusRowError, StatusStoreError, StatusStorePermanentError
from sqjobs.message import JobMessage, encode, new_job_id
from sqjobs.status.database import ANSWER_GRACE_S, database_errors
from sqjobs.status.store import StatusRecord, StatusStore, forget_stores, get_store, open_database
from tests import jobs_for_tests as jobs
from tests.status_fixtures import MYSQL_URL, POSTGRESQL_URL, use_database
from tests.support import sqlite_config, start_worker, stop_process, wait_until, worker_log
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.faults

#: Timeouts of the URLs under test, in seconds: short, so that the tests are.
CONNECT_S = 1
STATEMENT_S = 1
#: What the client may wait at most for one statement, on each database (PostgreSQL: the watchdog's grace).
LONGEST_WAIT_S = {"postgresql": STATEMENT_S + ANSWER_GRACE_S, "mysql": STATEMENT_S}
#: Slack for a loaded machine.
SLACK_S = 3.0

SERVERS = {"postgresql": POSTGRESQL_URL, "mysql": MYSQL_URL}


@pytest.fixture(params=sorted(SERVERS))
def proxied(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, TcpProxy]]:
    """(kind, URL through a started proxy with short timeouts, the proxy) for each server database."""
    parts = urlsplit(SERVERS[request.param])
    with TcpProxy(parts.port or 0) as proxy:
        proxy.start()
        netloc = f"{parts.netloc.rsplit(':', 1)[0]}:{proxy.port}"
        query = f"connect_timeout={CONNECT_S}&statement_timeout_s={STATEMENT_S}"
        yield request.param, parts._replace(netloc=netloc, query=query).geturl(), proxy
        proxy.forward()
    forget_stores()


class Caller:
    """Runs actions in one thread of its own, so that a connection opened by one is used by the next.

    A thread, so that an action that blocks for good fails the test instead of hanging it.
    """

    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="caller")

    def run(self, action: Callable[[], Any], limit_s: float = 30) -> tuple[float, BaseException | None]:
        """Run ``action``; return how long it took and what it raised. Fail if it takes over ``limit_s``."""
        started = time.monotonic()
        future = self.pool.submit(action)
        try:
            error = future.exception(timeout=limit_s)
        except concurrent.futures.TimeoutError:
            raise AssertionError(f"still blocked after {limit_s:g} s") from None
        return time.monotonic() - started, error


@pytest.fixture()
def caller() -> Iterator[Caller]:
    """A thread to call ``.delay()`` from."""
    caller = Caller()
    yield caller
    caller.pool.shutdown(wait=False)


def test_delay_of_a_tracked_job_fails_within_the_timeouts_while_packets_are_dropped(
        proxied: tuple[str, str, TcpProxy], caller: Caller) -> None:
    kind, url, proxy = proxied
    broker = MemoryBroker()
    use_database(url, broker)

    def delay(n: int) -> None:
        jobs.tracked_add.delay(n, n)

    proxy.black_hole()
    # a new connection: nothing answers its start-up
    took_s, error = caller.run(lambda: delay(1), CONNECT_S + SLACK_S)
    assert isinstance(error, StatusStoreError) and not isinstance(error, (StatusStorePermanentError, StatusRowError))
    assert "\n" not in str(error)
    assert broker.stats("default").visible == 0
    proxy.forward()
    assert caller.run(lambda: delay(2)) == (pytest.approx(0, abs=SLACK_S), None)
    # the connection that thread opened is open: its next statement gets no answer
    proxy.black_hole()
    took_s, error = caller.run(lambda: delay(3), LONGEST_WAIT_S[kind] + SLACK_S)
    assert isinstance(error, StatusStoreError) and not isinstance(error, (StatusStorePermanentError, StatusRowError))
    assert took_s >= STATEMENT_S * 0.9, f"gave up after {took_s:.2f} s, before the statement timeout: {error}"
    assert {"postgresql": "no answer within 3 s", "mysql": "timed out"}[kind] in str(error)
    assert broker.stats("default").visible == 1
    proxy.forward()
    assert caller.run(lambda: delay(4))[1] is None  # the next use reconnects
    assert broker.stats("default").visible == 2


def test_a_worker_logs_a_database_that_drops_packets_and_records_the_job_once_it_answers(
        tmp_path: Path, proxied: tuple[str, str, TcpProxy]) -> None:
    kind, url, proxy = proxied
    config = sqlite_config(tmp_path, database=url)
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    direct = get_store(SERVERS[kind])

    def finished(job_id: str) -> Callable[[], StatusRecord | None]:
        def check() -> StatusRecord | None:
            record = direct.get(job_id)
            return record if record is not None and record.finished else None
        return check

    first, second = new_job_id(), new_job_id()
    broker.send("default", encode(JobMessage(name="tracked_add", args=[1, 2], id=first)))
    worker = start_worker(config, ["default"], "--prefetch", "1")
    try:
        wait_until(finished(first), what="the first job to be recorded")  # the worker's connection is open
        proxy.black_hole()
        dropped_at = time.monotonic()
        broker.send("default", encode(JobMessage(name="tracked_add", args=[20, 22], id=second)))
        wait_until(lambda: "status database unavailable" in worker_log(worker),
                   timeout_s=LONGEST_WAIT_S[kind] + SLACK_S + 2, what="the worker to log the outage")
        assert time.monotonic() - dropped_at < LONGEST_WAIT_S[kind] + SLACK_S + 2
        wait_until(lambda: worker_log(worker).count("status database unavailable") >= 2,
                   what="the worker to keep retrying")
        assert worker.poll() is None, worker_log(worker)
        assert direct.get(second) is None
        proxy.forward()
        record = wait_until(finished(second), what="the second job to be recorded once the database answers")
        assert (record.status, record.result) == (Status.SUCCESS, 42)
    finally:
        code = stop_process(worker)
    log = worker_log(worker)
    assert code == 0, log
    assert "Traceback" not in log


def test_postgresql_cancels_a_statement_that_outlives_the_statement_timeout() -> None:
    database = open_database(f"{POSTGRESQL_URL}?statement_timeout_s=0.5")
    started = time.monotonic()
    with pytest.raises(StatusStoreError) as raised:
        with database_errors(database, "status database", "sleep"):
            database.execute_sql("SELECT pg_sleep(5)")
    assert time.monotonic() - started < 3
    assert "statement timeout" in str(raised.value)
    assert not isinstance(raised.value, (StatusStorePermanentError, StatusRowError))
    with database_errors(database, "status database", "select"):  # the connection still works
        assert database.execute_sql("SELECT 1").fetchone() == (1,)
    database.close()


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_a_statement_timeout_that_is_no_number_of_seconds_is_a_configuration_error(value: str) -> None:
    with pytest.raises(StatusStorePermanentError, match=rf"statement_timeout_s must be .*{value!r}"):
        StatusStore(f"{POSTGRESQL_URL}?statement_timeout_s={value}")
