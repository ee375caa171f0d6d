"""Unique keys are freed only once the broker confirmed their message settled, and requeues take them again.

Real worker processes on the embedded broker: the delete of a finished job
is held up for real, by another connection holding the broker file's write
lock, and the worker is killed with SIGKILL meanwhile. A status database
outage is made with a real TCP proxy in front of PostgreSQL.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

import sqjobs
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.cli.commands import main
from sqjobs.middleware.unique import UniqueKeys, derived_key
from sqjobs.status.states import Status
from sqjobs.status.store import forget_stores
from sqjobs.web.dashboard.server import create_app
from sqjobs.worker.loop import Worker
from tests import later_jobs_for_tests as later
from tests.status_fixtures import POSTGRESQL_URL
from tests.support import read_lines, sqlite_config, start_worker, stop_process, wait_until, worker_log
from tests.tcp_proxy import TcpProxy

#: The job modules the worker processes of these tests import.
JOBS = "jobs_for_tests, later_jobs_for_tests"


@pytest.fixture(autouse=True)
def fresh_stores() -> Iterator[None]:
    """Each test opens its own databases."""
    yield
    forget_stores()


def holder_of(config_dir: Path, key: str) -> str | None:
    """The id of the job holding ``key`` in the status database of ``config_dir`` (None: free)."""
    found = UniqueKeys.for_url(f"sqlite:///{config_dir / 'status.db'}").holder(key)
    return found[0] if found is not None else None


def test_a_key_stays_taken_until_the_delete_of_its_finished_job_went_through(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    record, release = tmp_path / "record.txt", tmp_path / "release"
    first = later.tracked_wait.apply_async(args=(str(record), "first", str(release)), unique_key="nightly")
    worker = start_worker(config, ["later"])
    lock = sqlite3.connect(str(tmp_path / "queue.db"), isolation_level=None)
    try:
        wait_until(lambda: "start first" in read_lines(record), what="the job to start")
        lock.execute("BEGIN IMMEDIATE")  # the worker can no longer write the broker file: its delete waits
        release.touch()
        wait_until(lambda: first.status is Status.SUCCESS, what="the attempt to succeed")
        assert holder_of(tmp_path, "nightly") == first.id  # the attempt is over; its message is not deleted
        worker.kill()  # between the attempt and the delete
        worker.wait()
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
        stop_process(worker)
    again = later.tracked_wait.apply_async(args=(str(record), "second", str(release)), unique_key="nightly")
    assert again.id == first.id, "a new job got the key while the old one's message is still there"
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    stats = broker.stats("later")
    assert stats.visible + stats.in_flight == 1
    # The old message comes back, is deleted unrun (it succeeded already), and its key goes with it.
    worker = start_worker(config, ["later"], "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    assert [line for line in read_lines(record) if line.startswith("end")] == ["end first"]
    stats = broker.stats("later")
    assert stats.visible + stats.in_flight + stats.dead == 0
    assert holder_of(tmp_path, "nightly") is None
    third = later.tracked_wait.apply_async(args=(str(record), "third", str(release)), unique_key="nightly")
    assert third.id != first.id and holder_of(tmp_path, "nightly") == third.id


def run_dry(app: sqjobs.App) -> None:
    """Run the jobs waiting on ``later`` in this process until the queue is empty."""
    Worker(app, ["later"], wait_s=0, isolation="none", burst=True).run()


def test_a_requeued_dead_letter_takes_its_key_again_and_stays_dead_while_another_job_holds_it(
        tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    app = sqjobs.current_app()
    key = derived_key("later.unique_fails", ["once"], {})
    failing = later.unique_fails.delay("once")
    run_dry(app)
    assert app.broker.stats("later").dead == 1 and holder_of(tmp_path, key) is None  # freed once it was dead

    requeued = CliRunner().invoke(main, ["dead", "-c", str(config), "later", "--requeue"], catch_exceptions=False)
    assert requeued.exit_code == 0 and "requeued 1 message(s)" in requeued.output, requeued.output
    assert holder_of(tmp_path, key) == failing.id  # taken again: a new send gets the requeued job
    assert later.unique_fails.delay("once").id == failing.id
    run_dry(app)
    assert holder_of(tmp_path, key) is None

    newer = later.unique_fails.delay("once")
    assert newer.id != failing.id
    refused = CliRunner().invoke(main, ["dead", "-c", str(config), "later", "--requeue"], catch_exceptions=False)
    assert refused.exit_code == 0, refused.output
    lines = refused.output.splitlines()
    assert len(lines) == 2 and "requeued 0 message(s)" in lines[1], refused.output
    assert lines[0].startswith(f"job {failing.id} later.unique_fails (message "), lines[0]  # the job id first
    assert f"): its unique key {key!r} is held by job {newer.id}" in lines[0]
    assert "left in later-dead (--force sends it anyway)" in lines[0]
    stats = app.broker.stats("later")
    assert (stats.dead, stats.visible) == (1, 1) and holder_of(tmp_path, key) == newer.id

    forced = CliRunner().invoke(main, ["dead", "-c", str(config), "later", "--requeue", "--force"],
                                catch_exceptions=False)
    assert forced.exit_code == 0 and "requeued 1 message(s)" in forced.output, forced.output
    assert "sent anyway: it runs beside that job, which keeps the key" in forced.output
    stats = app.broker.stats("later")
    assert (stats.dead, stats.visible) == (0, 2) and holder_of(tmp_path, key) == newer.id
    run_dry(app)  # both fail for good; the forced one frees nothing of the holder's, the holder frees its key
    assert app.broker.stats("later").dead == 2 and holder_of(tmp_path, key) is None

    misused = CliRunner().invoke(main, ["dead", "-c", str(config), "later", "--force"])
    assert misused.exit_code == 2 and "--force goes with --requeue" in misused.output


def csrf_token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def post_action(client: Any, action: str, **form: str) -> str:
    """Confirm and post a dead-letter action of the dashboard; return the result page."""
    page = client.get(f"/queues/later/dead/confirm?action={action}").get_data(as_text=True)
    response = client.post(f"/queues/later/dead/{action}", data={"confirmed": "yes", "csrf_token": csrf_token(page),
                                                                 **form}, follow_redirects=True,
                           headers={"Origin": "http://localhost"})  # the test client's host
    assert response.status_code == 200
    return str(response.get_data(as_text=True))


def test_the_dashboard_requeue_takes_the_key_again_or_says_why_the_message_stays_dead(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    app = sqjobs.current_app()
    key = derived_key("later.unique_fails", ["web"], {})
    failing = later.unique_fails.delay("web")
    run_dry(app)
    newer = later.unique_fails.delay("web")
    web = create_app(app)
    web.testing = True
    client = web.test_client()
    [letter] = app.broker.peek("later-dead", 10)
    page = post_action(client, "requeue", message_id=letter.message_id)
    assert f"its unique key {key!r} is held by job {newer.id}" in page.replace("&#39;", "'")
    assert "--requeue --force` sends it anyway" in page
    assert app.broker.stats("later").dead == 1
    page = post_action(client, "requeue_all")
    assert "requeued 0 message(s); 1 left for their unique keys" in page
    run_dry(app)  # the holder fails for good: the key is free, and the requeue takes it
    assert holder_of(tmp_path, key) is None
    page = post_action(client, "requeue", message_id=letter.message_id)
    assert f"requeued job {failing.id} later.unique_fails (message {letter.message_id})" in page
    assert holder_of(tmp_path, key) == failing.id


def test_a_key_whose_free_meets_a_database_outage_is_freed_once_the_database_answers(tmp_path: Path) -> None:
    parts = urlsplit(POSTGRESQL_URL)
    with TcpProxy(parts.port or 5432) as proxy:
        proxy.start()
        url = parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{proxy.port}").geturl()
        config = sqlite_config(tmp_path, jobs=JOBS, database=url)
        sqjobs.configure(str(config))
        key = f"outage-{tmp_path.name}"
        UniqueKeys.for_url(POSTGRESQL_URL).free(key)  # other runs share the database
        record = tmp_path / "record.txt"
        handle = later.stamp.apply_async(args=(str(record), "once"), unique_key=key)  # untracked: runs without it
        proxy.stop()
        worker = start_worker(config, ["later"])
        try:
            wait_until(lambda: "error while freeing the unique keys" in worker_log(worker),
                       what="the worker to fail to free the key")
            assert read_lines(record)[0].startswith("once")
            assert SQLiteBroker(str(tmp_path / "queue.db")).stats("later").in_flight == 0  # deleted
            assert UniqueKeys.for_url(POSTGRESQL_URL).holder(key)[0] == handle.id  # type: ignore[index]
            proxy.start()
            wait_until(lambda: UniqueKeys.for_url(POSTGRESQL_URL).holder(key) is None,
                       what="the key to be freed once the database answers")
        finally:
            assert stop_process(worker) == 0
        assert "Traceback" not in worker_log(worker)
