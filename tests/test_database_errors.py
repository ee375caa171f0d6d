"""A status database that cannot work as configured stops a command at once; one that is down is waited for.

Against the real PostgreSQL and MariaDB servers of this machine (and of CI)
and real SQLite files: a database that does not exist, refused credentials,
no privilege, a misspelt scheme, an SQLite file that cannot be opened or is
no database are permanent (StatusStorePermanentError, never retried; a real
``sqjobs`` process exits 2 with one line naming ``[sqjobs] database``, and
nothing is received or sent); a port nothing listens on is transient (the
worker goes on and records the job once the database is reachable).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import pytest

from sqjobs import Status, job
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.errors import StatusStoreError, StatusStorePermanentError
from sqjobs.message import JobMessage, encode, new_job_id
from sqjobs.schedule.beater import Beater, BeatStore
from sqjobs.status import handle as status
from sqjobs.status.store import StatusRecord, StatusStore, forget_stores, get_store, open_database
from sqjobs.worker.loop import Worker
from tests.scratch_databases import scratch_database
from tests.status_fixtures import MYSQL_URL, POSTGRESQL_URL, use_database
from tests.support import sqlite_config, start_worker, stop_process, wait_until, worker_log
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.faults


def _with(url: str, **parts: str) -> str:
    """``url`` with some of its parts replaced (``netloc``, ``path``, ``scheme``)."""
    return urlsplit(url)._replace(**parts).geturl()


def _host(url: str) -> str:
    return urlsplit(url).hostname or "127.0.0.1"


#: Status database URLs no retry can fix, and what the one line must say.
PERMANENT = {
    "no such PostgreSQL database": (_with(POSTGRESQL_URL, path="/no_such_db"), 'database "no_such_db" does not exist'),
    "wrong MariaDB password": (_with(MYSQL_URL, netloc=f"nobody:wrong@{_host(MYSQL_URL)}:{urlsplit(MYSQL_URL).port}"),
                               "Access denied"),
    "misspelt scheme": (_with(POSTGRESQL_URL, scheme="postgresq"), "unknown scheme 'postgresq'"),
}


#: A user that may log in to the test databases but not create the status table.
UNPRIVILEGED_USER = "sqjobs_no_create"

ran: list[str] = []


@job(queue="errors", name="database_errors.echo", track=True)
def echo(value: str) -> str:
    """Return ``value`` (a tracked job)."""
    ran.append(value)
    return value


@job(queue="errors", name="database_errors.every_minute", schedule="* * * * *")
def every_minute() -> None:
    """A periodic job for the beater."""


@pytest.fixture(autouse=True)
def closed_stores() -> object:
    """Close what the test process opened."""
    ran.clear()
    yield None
    forget_stores()


@pytest.fixture(scope="module")
def unprivileged() -> dict[str, str]:
    """URLs of a PostgreSQL role and a MariaDB user without privilege on the test database's tables.

    Created once if missing (they change nothing other tests use).
    """
    postgresql = open_database(POSTGRESQL_URL)
    postgresql.execute_sql(f"DO $$ BEGIN CREATE ROLE {UNPRIVILEGED_USER} LOGIN; "
                           "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    assert not postgresql.execute_sql("SELECT has_schema_privilege(%s, 'public', 'CREATE')",
                                      (UNPRIVILEGED_USER,)).fetchone()[0]
    postgresql.close()
    mysql = open_database(MYSQL_URL)
    for host in ("%", "localhost", _host(MYSQL_URL)):
        mysql.execute_sql("CREATE USER IF NOT EXISTS %s@%s", (UNPRIVILEGED_USER, host))
    mysql.close()
    return {kind: _with(url, netloc=f"{UNPRIVILEGED_USER}@{_host(url)}:{urlsplit(url).port}")
            for kind, url in (("postgresql", POSTGRESQL_URL), ("mysql", MYSQL_URL))}


def _garbage_file(tmp_path: Path) -> str:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is a text file, not an SQLite database\n" * 200)
    return f"sqlite:///{path}"


#: Case -> (function of (tmp_path, unprivileged urls) returning a URL, text the error must contain).
PERMANENT_STORE_CASES: dict[str, tuple[Callable[[Path, dict[str, str]], str], str]] = {
    "PostgreSQL database missing": (lambda _, __: _with(POSTGRESQL_URL, path="/no_such_db"), "does not exist"),
    "PostgreSQL role unknown": (lambda _, __: _with(POSTGRESQL_URL, netloc=f"nobody:secret@{_host(POSTGRESQL_URL)}"
                                                    f":{urlsplit(POSTGRESQL_URL).port}"), 'role "nobody"'),
    "PostgreSQL bad option": (lambda _, __: POSTGRESQL_URL + "?no_such_option=1", "invalid"),
    "PostgreSQL no privilege": (lambda _, urls: urls["postgresql"], "permission denied"),
    "MariaDB database missing": (lambda _, __: _with(MYSQL_URL, path="/no_such_db"), "1049"),
    "MariaDB wrong password": (lambda _, __: PERMANENT["wrong MariaDB password"][0], "Access denied"),
    "MariaDB no privilege": (lambda _, urls: urls["mysql"], "1044"),
    "SQLite folder missing": (lambda tmp, __: f"sqlite:///{tmp / 'missing' / 'status.db'}", "unable to open"),
    "SQLite file no database": (lambda tmp, __: _garbage_file(tmp), "not a database"),
    "unknown scheme": (lambda _, __: "postgresq://u:secret@127.0.0.1/test", "unknown scheme"),
}


@pytest.mark.parametrize("case", sorted(PERMANENT_STORE_CASES))
def test_errors_no_retry_fixes_are_permanent_and_name_the_setting(tmp_path: Path, unprivileged: dict[str, str],
                                                                  case: str) -> None:
    make_url, cause = PERMANENT_STORE_CASES[case]
    with pytest.raises(StatusStorePermanentError) as raised:
        StatusStore(make_url(tmp_path, unprivileged)).create_tables()
    text = str(raised.value)
    assert text.startswith("[sqjobs] database ") and cause in text
    assert "\n" not in text and "secret" not in text and "wrong" not in text


@pytest.mark.parametrize("url", [POSTGRESQL_URL, MYSQL_URL])
def test_a_refused_connection_is_transient(url: str) -> None:
    with TcpProxy(urlsplit(url).port or 0) as proxy:  # never started: nothing listens on its port
        down = _with(url, netloc=f"{urlsplit(url).netloc.rsplit(':', 1)[0]}:{proxy.port}")
        with pytest.raises(StatusStoreError) as raised:
            StatusStore(down).create_tables()
    assert not isinstance(raised.value, StatusStorePermanentError)
    assert "\n" not in str(raised.value)


def test_a_permanent_error_is_not_retried() -> None:
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise StatusStorePermanentError("[sqjobs] database x: refused")

    with pytest.raises(StatusStorePermanentError):
        status.retry_while_unavailable(action, "job x", threading.Event())
    assert calls == [1]


def test_a_permanent_error_stops_a_running_worker_and_hands_the_message_back(tmp_path: Path) -> None:
    broker = MemoryBroker()
    use_database(f"sqlite:///{tmp_path / 'missing' / 'status.db'}", broker)
    broker.send("errors", encode(JobMessage(name="database_errors.echo", args=["x"])))
    worker = Worker(broker, ["errors"], wait_s=0)
    with pytest.raises(StatusStorePermanentError, match=r"\[sqjobs\] database .*unable to open database file"):
        worker.run()
    assert ran == []
    stats = broker.stats("errors")
    assert (stats.visible, stats.in_flight, stats.dead) == (1, 0, 0)


def test_a_permanent_error_stops_a_running_beater(tmp_path: Path) -> None:
    beater = Beater(MemoryBroker(), [every_minute.job_class], BeatStore(f"sqlite:///{tmp_path / 'no' / 'beats.db'}"))
    with pytest.raises(StatusStorePermanentError, match=r"\[sqjobs\] database "):
        beater.run()


def _only_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("case", sorted(PERMANENT))
def test_a_worker_stops_at_start_on_a_permanent_database_error(tmp_path: Path, case: str) -> None:
    url, cause = PERMANENT[case]
    config = sqlite_config(tmp_path, database=url)
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    broker.send("default", encode(JobMessage(name="tracked_add", args=[1, 2])))
    worker = start_worker(config, ["default"])
    try:
        code = worker.wait(60)
    finally:
        stop_process(worker)
    line = _only_line(worker_log(worker))
    assert code == 2, line
    assert line.startswith(f"Error: {config}: [sqjobs] database "), line
    assert cause in line
    assert "wrong" not in line  # the password is masked
    assert (broker.stats("default").visible, broker.stats("default").in_flight) == (1, 0)  # nothing received
    [message] = broker.peek("default")
    assert message.receive_count <= 1


def test_the_beater_stops_at_start_on_a_permanent_database_error(tmp_path: Path) -> None:
    url, cause = PERMANENT["no such PostgreSQL database"]
    config = sqlite_config(tmp_path, database=url, jobs="periodic_jobs_for_tests")
    done = subprocess.run([sys.executable, "-m", "sqjobs", "beater", "-c", str(config), "--once"],
                          capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    line = _only_line(done.stdout + done.stderr)
    assert done.returncode == 2, line
    assert "[sqjobs] database" in line and cause in line


def test_enqueue_of_a_tracked_job_stops_on_a_permanent_database_error_and_sends_nothing(tmp_path: Path) -> None:
    url, cause = PERMANENT["wrong MariaDB password"]
    config = sqlite_config(tmp_path, database=url)
    done = subprocess.run([sys.executable, "-m", "sqjobs", "enqueue", "-c", str(config), "tracked_add",
                           "--args", "[1, 2]"], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    line = _only_line(done.stdout + done.stderr)
    assert done.returncode == 2, line
    assert "[sqjobs] database" in line and cause in line and "wrong" not in line
    assert SQLiteBroker(str(tmp_path / "queue.db")).stats("default").visible == 0


def test_a_worker_started_while_the_database_is_down_goes_on_and_records_once_it_is_back(tmp_path: Path) -> None:
    parts = urlsplit(POSTGRESQL_URL)
    with TcpProxy(parts.port or 5432) as proxy:
        url = _with(POSTGRESQL_URL, netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{proxy.port}")
        config = sqlite_config(tmp_path, database=url)
        job_id = new_job_id()
        SQLiteBroker(str(tmp_path / "queue.db")).send(
            "default", encode(JobMessage(name="tracked_add", args=[20, 22], id=job_id)))
        worker = start_worker(config, ["default"])
        try:
            wait_until(lambda: worker_log(worker).count("status database unavailable") >= 2,
                       what="the worker to retry the status database")
            log = worker_log(worker)
            assert worker.poll() is None, log
            assert "not reachable at start-up" in log and "Connection refused" in log
            proxy.start()
            store = get_store(url)

            def finished() -> StatusRecord | None:
                row = store.get(job_id)
                return row if row is not None and row.finished else None

            record = wait_until(finished, what="the job to be recorded")
            assert (record.status, record.result) == (Status.SUCCESS, 42)
        finally:
            code = stop_process(worker)
    assert code == 0, worker_log(worker)



def test_a_beater_started_while_the_database_is_down_goes_on_and_sends_once_it_is_back(tmp_path: Path) -> None:
    log = tmp_path / "beater.log"
    # A database of its own: on the shared one, another test's open transaction on the claims table could keep
    # this beater's first statements waiting (and SIGTERM with them) for the statement timeout.
    with scratch_database(POSTGRESQL_URL) as own, TcpProxy(urlsplit(own).port or 5432) as proxy:
        parts = urlsplit(own)
        url = _with(own, netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{proxy.port}")
        config = sqlite_config(tmp_path, database=url, jobs="periodic_jobs_for_tests")
        env = dict(os.environ, SQJOBS_TEST_RECORD=str(tmp_path / "beats.txt"))
        with open(log, "wb") as output:
            beater = subprocess.Popen([sys.executable, "-m", "sqjobs", "beater", "-c", str(config)],
                                      cwd=str(tmp_path), stdout=output, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until(lambda: "the beater starts anyway and tries again" in log.read_text(),
                       what="the beater to start without its database")
            assert beater.poll() is None, log.read_text()
            proxy.start()
            broker = SQLiteBroker(str(tmp_path / "queue.db"))
            wait_until(lambda: "periodic" in broker.queues() and broker.stats("periodic").visible >= 1,
                       what="the beater to send once the database is up")
        finally:
            code = stop_process(beater)
    assert code == 0, log.read_text()
