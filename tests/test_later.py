"""Jobs for later: long delays and ETAs, unique jobs, cancellation.

Real worker and beater processes on the embedded broker and on SQS (the moto
server); in-process beaters ticking with the instant the test chooses; the
SQLite and PostgreSQL status databases; outages made with a real TCP proxy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

import sqjobs
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.brokers.sqs import SQSBroker
from sqjobs.cli.commands import main
from sqjobs.config import Settings
from sqjobs.errors import JobNotCancellableError, StatusStoreError
from sqjobs.message import decode
from sqjobs.middleware.cancellation import Cancellations
from sqjobs.middleware.unique import UniqueKeys, derived_key
from sqjobs.schedule.beater import Beater, BeatStore
from sqjobs.schedule.later import HeldJobs
from sqjobs.status.states import Status
from sqjobs.status.store import forget_stores, get_store
from sqjobs.web.dashboard.data import queue_stats
from sqjobs.web.metrics import scrape
from sqjobs.worker.loop import Worker
from tests import later_jobs_for_tests as later
from tests.sqs_server import MotoServer
from tests.status_fixtures import POSTGRESQL_URL, database_url_for
from tests.support import (
    TESTS_DIR,
    read_lines,
    sqlite_config,
    start_worker,
    stop_process,
    wait_until,
    worker_log,
    write_config,
)
from tests.tcp_proxy import TcpProxy

#: The job modules the worker processes of these tests import.
JOBS = "jobs_for_tests, later_jobs_for_tests"
#: Status databases these tests run on.
KINDS = ("sqlite", "postgresql")
HOUR_S = 3600.0


@pytest.fixture(params=KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite, then PostgreSQL (a server that is down fails the test)."""
    url = database_url_for(request.param, tmp_path)
    get_store(url).create_tables()
    yield url
    forget_stores()


def use(broker: object, database_url: str, **sqs: object) -> Settings:
    """Point the default app at ``broker`` and ``database_url``."""
    sections: dict[str, dict[str, object]] = {"sqjobs": {"database": database_url}}
    if sqs:
        sections["sqs"] = sqs
    settings = Settings(None, os.getcwd(), sections, ())
    sqjobs.configure(settings=settings, broker=broker)  # type: ignore[arg-type]
    return settings


def sqs_config(tmp_path: Path, server: MotoServer, prefix: str, database_url: str | None = None,
               **sqs: object) -> Path:
    """A config on the moto server that imports the test jobs."""
    return write_config(tmp_path / "sqjobs.conf", {
        "sqjobs": {"broker": "sqs", "database": database_url or f"sqlite:///{tmp_path / 'status.db'}",
                   "jobs": JOBS, "path": str(TESTS_DIR)},
        "sqs": server.sqs_section(prefix, wait_time_s=1, **sqs),
    })


def stamps(path: Path) -> dict[str, float]:
    """Token -> the time it ran, from a record file of ``later.stamp``."""
    return {line.split()[0]: float(line.split()[1]) for line in read_lines(path)}


def queues_json(config: Path) -> dict[str, dict[str, int]]:
    result = CliRunner().invoke(main, ["queues", "-c", str(config), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {row["queue"]: row for row in json.loads(result.output)}


def start_beater(config: Path, tmp_path: Path, name: str) -> subprocess.Popen:
    with open(tmp_path / f"beater-{name}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "sqjobs", "beater", "-c", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(tmp_path))


def _send_later_jobs(config: Path, record: Path) -> float:
    """Send an hours-delayed job, one with an ETA days ahead, and a 3 s delay; return when they were sent."""
    sqjobs.configure(str(config))
    sent_at = time.time()
    later.stamp.apply_async(args=(str(record), "hours"), delay=5 * HOUR_S)
    later.stamp.apply_async(args=(str(record), "days"), eta=datetime.now(timezone.utc) + timedelta(days=3))
    later.stamp.apply_async(args=(str(record), "soon"), delay=3)
    return sent_at


def _check_only_the_3_s_job_ran(worker: subprocess.Popen, record: Path, sent_at: float) -> None:
    ran = wait_until(lambda: stamps(record).get("soon"), what="the 3 s job")
    assert ran - sent_at >= 3.0 - 0.05, f"ran {ran - sent_at:.2f} s after it was sent"
    # the worker logs the success once the settlement reached it, a moment after the job wrote its stamp
    wait_until(lambda: worker_log(worker).count("succeeded"), what="the worker's line about the 3 s job")
    # the worker keeps polling: one more second in which nothing else may run
    wait_until(lambda: time.time() >= ran + 1.0, what="a second")
    assert set(stamps(record)) == {"soon"}
    assert worker_log(worker).count("succeeded") == 1


# -- long delays and ETAs ----------------------------------------------------------------------


def test_on_the_embedded_broker_hours_and_days_wait_and_3_s_runs_after_3_s(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    record = tmp_path / "record.txt"
    worker = start_worker(config, ["later"])
    try:
        sent_at = _send_later_jobs(config, record)
        broker = SQLiteBroker(str(tmp_path / "queue.db"))
        assert broker.stats("later").delayed == 3  # the embedded broker holds them all itself
        assert HeldJobs.for_url(f"sqlite:///{tmp_path / 'status.db'}").counts(broker.identity) == {}
        _check_only_the_3_s_job_ran(worker, record, sent_at)
        assert broker.stats("later").delayed == 2
        assert queues_json(config)["later"]["delayed"] == 2
    finally:
        assert stop_process(worker) == 0, worker_log(worker)


def test_on_sqs_hours_and_days_are_held_counted_as_delayed_and_3_s_runs_after_3_s(
        tmp_path: Path, sqs_server: MotoServer, sqs_prefix: str) -> None:
    config = sqs_config(tmp_path, sqs_server, sqs_prefix)
    record = tmp_path / "record.txt"
    sqjobs.configure(str(config))
    sqjobs.get_broker().ensure_queue("later")
    worker = start_worker(config, ["later"])
    try:
        sent_at = _send_later_jobs(config, record)
        held = HeldJobs.for_url(f"sqlite:///{tmp_path / 'status.db'}")
        assert held.counts(sqjobs.get_broker().identity) == {"later": 2}
        assert [row["queue"] for row in held.rows()] == ["later", "later"]
        _check_only_the_3_s_job_ran(worker, record, sent_at)
        stats = queues_json(config)["later"]
        assert (stats["delayed"], stats["visible"], stats["in_flight"]) == (2, 0, 0)
        # the dashboard and the metric count them as `sqjobs queues` does
        [shown] = [row for row in queue_stats(sqjobs.current_app()) if row.queue == "later"]
        assert shown.delayed == 2
        assert 'sqjobs_queue_messages{queue="later",state="delayed"} 2.0' in scrape(sqjobs.current_app()).decode()
    finally:
        assert stop_process(worker) == 0, worker_log(worker)


def test_two_beaters_send_each_held_sqs_job_exactly_once_when_due(
        database_url: str, sqs_server: MotoServer, sqs_prefix: str) -> None:
    broker = SQSBroker(**sqs_server.broker_options(sqs_prefix))
    use(broker, database_url)
    handles = [later.stamp.apply_async(args=("-", f"t{i}"), delay=1000 + i) for i in range(12)]
    assert broker.stats("later").delayed + broker.stats("later").visible == 0  # all held in the database
    now = datetime.now(timezone.utc)
    app = sqjobs.current_app()
    beaters = [Beater(app, [], BeatStore(database_url), beater_id=f"beater-{n}") for n in range(2)]
    assert [b.tick(now + timedelta(seconds=900)) for b in beaters] == [[], []]  # not due yet
    due = now + timedelta(seconds=1100)
    results: list[list] = [[], []]
    start = threading.Barrier(2)

    def tick(n: int) -> None:
        start.wait()
        results[n] = beaters[n].tick(due)

    threads = [threading.Thread(target=tick, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    sent_ids = [sent.job_id for result in results for sent in result]
    assert sorted(sent_ids) == sorted(h.id for h in handles), "each held job sent by exactly one beater"
    assert all(sent.held and sent.job == "later.stamp" for result in results for sent in result)
    got: list = []

    def receive() -> bool:
        got.extend(broker.receive("later", 10, 1, 60))
        return len(got) >= 12

    wait_until(receive, what="the 12 held jobs on SQS")
    assert sorted(decode(m.body, m.message_id).id for m in got) == sorted(h.id for h in handles)
    assert broker.receive("later", 10, 1, 60) == []  # and nothing twice
    assert HeldJobs.for_url(database_url).counts(broker.identity) == {}
    assert [b.tick(due + timedelta(hours=1)) for b in beaters] == [[], []]


def test_two_beater_processes_hand_a_held_job_to_sqs_once_and_a_worker_runs_it(
        tmp_path: Path, sqs_server: MotoServer, sqs_prefix: str) -> None:
    config = sqs_config(tmp_path, sqs_server, sqs_prefix, max_delay_s=1)  # a 3 s delay is held here
    record = tmp_path / "record.txt"
    sqjobs.configure(str(config))
    sent_at = time.time()
    handle = later.stamp.apply_async(args=(str(record), "held"), delay=3)
    assert HeldJobs.for_url(f"sqlite:///{tmp_path / 'status.db'}").counts(sqjobs.get_broker().identity) == {
        "later": 1}
    processes = [start_beater(config, tmp_path, "a"), start_beater(config, tmp_path, "b"),
                 start_worker(config, ["later"])]
    try:
        ran = wait_until(lambda: stamps(record).get("held"), what="the held job to run")
        assert ran - sent_at >= 3.0 - 0.05
        wait_until(lambda: time.time() >= ran + 2.0, what="two more seconds")
        assert read_lines(record) == [f"held {ran:.3f}"]
    finally:
        codes = [stop_process(process) for process in processes]
    assert codes == [0, 0, 0]
    logs = "".join((tmp_path / f"beater-{n}.log").read_text() for n in "ab")
    assert logs.count(f"job {handle.id} on later: held job sent") == 1, logs


def test_a_naive_eta_is_refused_in_one_line(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    with pytest.raises(ValueError, match="has no time zone") as caught:
        later.stamp.apply_async(args=("-", "x"), eta=datetime(2030, 1, 1, 12, 0))
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="not both"):
        later.stamp.apply_async(args=("-", "x"), delay=5, eta=datetime.now(timezone.utc))
    result = CliRunner().invoke(main, ["enqueue", "-c", str(config), "later.stamp", "--args", '["-", "x"]',
                                       "--eta", "2027-01-01T12:00:00"])
    assert result.exit_code == 2 and "has no UTC offset" in result.output
    soon = (datetime.now(timezone.utc) + timedelta(days=10)).replace(tzinfo=None).isoformat(timespec="seconds")
    result = CliRunner().invoke(main, ["enqueue", "-c", str(config), "later.stamp", "--args", '["-", "x"]',
                                       "--eta", soon + "Z"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(result.output.strip()) == 32
    assert SQLiteBroker(str(tmp_path / "queue.db")).stats("later").delayed == 1


def test_a_held_job_waits_out_a_database_outage_and_is_sent_after_it(
        tmp_path: Path, sqs_server: MotoServer, sqs_prefix: str) -> None:
    parts = urlsplit(POSTGRESQL_URL)
    with TcpProxy(parts.port or 5432) as proxy:
        proxy.start()
        url = parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{proxy.port}").geturl()
        broker = SQSBroker(**sqs_server.broker_options(sqs_prefix))
        use(broker, url)
        handle = later.stamp.apply_async(args=("-", "outage"), delay=1000)
        beater = Beater(sqjobs.current_app(), [], BeatStore(url), beater_id="lonely")
        due = datetime.now(timezone.utc) + timedelta(seconds=1001)
        proxy.stop()
        with pytest.raises(StatusStoreError):
            beater.tick(due)
        assert broker.receive("later", 10, 0, 60) == []
        proxy.start()
        [sent] = wait_until(lambda: _tick_quietly(beater, due), what="the beater to send once the database is up")
        assert sent.job_id == handle.id
        [message] = wait_until(lambda: broker.receive("later", 10, 1, 60), what="the held job on SQS")
        assert decode(message.body, message.message_id).id == handle.id


def _tick_quietly(beater: Beater, now: datetime) -> list:
    try:
        return beater.tick(now)
    except StatusStoreError:
        return []


# -- unique jobs -------------------------------------------------------------------------------

_PRODUCER = """
import os, sys, time
sys.path.insert(0, {tests!r})
import sqjobs
from tests import later_jobs_for_tests as later
sqjobs.configure({config!r})
sqjobs.current_app().store.create_tables()
open({go!r} + ".ready" + str(os.getpid()), "w").close()
while not os.path.exists({go!r}):
    time.sleep(0.001)
print(later.stamp.apply_async(args=({record!r}, "once"), unique_key="report-42").id)
"""


def test_a_unique_key_taken_by_two_producer_processes_at_once_sends_one_message(
        tmp_path: Path, database_url: str) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS, database=database_url)
    record = tmp_path / "record.txt"
    go = tmp_path / "go"
    UniqueKeys.for_url(database_url).free("report-42")  # other runs share the PostgreSQL database
    code = _PRODUCER.format(tests=str(TESTS_DIR.parent), config=str(config), go=str(go), record=str(record))
    producers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=str(tmp_path)) for _ in range(2)]
    wait_until(lambda: len(list(tmp_path.glob("go.ready*"))) == 2, what="both producers to be ready")
    go.touch()
    outputs = [process.communicate(timeout=60) for process in producers]
    assert [process.returncode for process in producers] == [0, 0], outputs
    ids = {out.strip() for out, _ in outputs}
    assert len(ids) == 1, f"both got the same job: {outputs}"
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    assert broker.stats("later").visible == 1
    assert UniqueKeys.for_url(database_url).holder("report-42")[0] == ids.pop()  # type: ignore[index]
    worker = start_worker(config, ["later"], "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    assert [line.split()[0] for line in read_lines(record)] == ["once"]
    assert UniqueKeys.for_url(database_url).holder("report-42") is None  # freed once it finished
    sqjobs.configure(str(config))
    again = later.stamp.apply_async(args=(str(record), "again"), unique_key="report-42")
    assert broker.stats("later").visible == 1 and again.id not in outputs[0][0]
    UniqueKeys.for_url(database_url).free("report-42")


def test_a_unique_job_derives_its_key_from_its_arguments_and_frees_it_when_it_fails_for_good(
        tmp_path: Path, database_url: str) -> None:
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    use(broker, database_url)
    token = f"u{time.time_ns()}"  # other runs share the PostgreSQL database
    path = str(tmp_path / "record.txt")
    first = later.unique_stamp.delay(path, token)
    assert later.unique_stamp.delay(path, token).id == first.id
    other = later.unique_stamp.delay(path, token + "-other")
    assert other.id != first.id and broker.stats("later").visible == 2
    key = derived_key("later.unique_stamp", [path, token], {})
    assert UniqueKeys.for_url(database_url).holder(key)[0] == first.id  # type: ignore[index]
    worker = Worker(broker, ["later"], wait_s=0, isolation="none", burst=True)
    worker.run()
    assert UniqueKeys.for_url(database_url).holder(key) is None
    failing = later.unique_fails.delay(token)
    assert later.unique_fails.delay(token).id == failing.id
    Worker(broker, ["later"], wait_s=0, isolation="none", burst=True).run()
    assert broker.stats("later").dead == 1
    assert UniqueKeys.for_url(database_url).holder(derived_key("later.unique_fails", [token], {})) is None
    assert later.unique_fails.delay(token).id != failing.id  # free again once it failed for good


def test_the_unique_command_names_the_holder_and_frees_a_key(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS)
    sqjobs.configure(str(config))
    handle = later.stamp.apply_async(args=("-", "x"), unique_key="nightly-export")
    shown = CliRunner().invoke(main, ["unique", "-c", str(config), "nightly-export"], catch_exceptions=False)
    assert shown.exit_code == 0 and f"held by job {handle.id}" in shown.output
    freed = CliRunner().invoke(main, ["unique", "-c", str(config), "nightly-export", "--free"])
    assert freed.exit_code == 0 and "freed" in freed.output
    shown = CliRunner().invoke(main, ["unique", "-c", str(config), "nightly-export"])
    assert shown.exit_code == 1 and "is free" in shown.output
    sent = CliRunner().invoke(main, ["enqueue", "-c", str(config), "later.stamp", "--args", '["-", "y"]',
                                     "--unique-key", "nightly-export"], catch_exceptions=False)
    again = CliRunner().invoke(main, ["enqueue", "-c", str(config), "later.stamp", "--args", '["-", "z"]',
                                      "--unique-key", "nightly-export"], catch_exceptions=False)
    assert sent.output == again.output and sent.output.strip() != handle.id
    assert SQLiteBroker(str(tmp_path / "queue.db")).stats("later").visible == 2


# -- cancellation ------------------------------------------------------------------------------


def test_jobs_cancelled_before_delivery_never_run_and_show_cancelled(tmp_path: Path, database_url: str) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS, database=database_url)
    record = tmp_path / "record.txt"
    sqjobs.configure(str(config))
    tracked = later.tracked_stamp.delay(str(record), "tracked")
    untracked = later.stamp.apply_async(args=(str(record), "untracked"), cancellable=True)
    by_class = later.cancellable_stamp.delay(str(record), "by-class")
    held = later.cancellable_stamp.delay(str(record), "held")
    later.stamp.delay(str(record), "kept")
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    received = broker.receive("later", 10, 0, 0.5)  # a worker that holds the message of `held`, then dies
    broker.release("later", [m.receipt for m in received if decode(m.body, m.message_id).id != held.id])
    assert tracked.status is Status.PENDING
    outcome = tracked.cancel()
    assert outcome and outcome.status is Status.CANCELLED and "cancelled (was PENDING)" in outcome.message
    assert "its message was removed from later" in outcome.message  # none of them is counted any more
    assert tracked.status is Status.CANCELLED and tracked.finished
    outcome = untracked.cancel()  # no status row, but the embedded broker shows its message: removed
    assert outcome and outcome.recorded and "(its message was removed from later); it will not run" in outcome.message
    by_id = sqjobs.cancel(by_class.id)  # from the id alone, the same
    assert by_id and by_id.recorded and "removed" in by_id.message
    assert broker.stats("later").visible == 1  # only "kept": "held" is held
    held_outcome = sqjobs.cancel(held.id)  # a worker holds its message: recorded, not confirmed
    assert not held_outcome and held_outcome.recorded and "a worker holds its message" in held_outcome.message
    result = CliRunner().invoke(main, ["cancel", "-c", str(config), held.id, "--json"])
    shown = json.loads(result.output)
    assert result.exit_code == 3 and (shown["cancelled"], shown["recorded"]) == (False, True)
    assert "cancellation was already recorded, NOT confirmed" in shown["message"]
    # The dead worker's hold runs out: a burst worker started before then could leave without seeing it.
    wait_until(lambda: broker.stats("later").visible == 2, what="the held message to be visible again")
    worker = start_worker(config, ["later"], "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    assert [line.split()[0] for line in read_lines(record)] == ["kept"]
    assert broker.stats("later").visible == 0  # deleted, not dead-lettered
    assert broker.stats("later").dead == 0
    log = worker_log(worker)
    assert f"job {held.id} later.cancellable_stamp on later: cancelled; deleted unrun" in log
    row = sqjobs.get_job(tracked.id).record
    assert row is not None and (row.status, row.attempts) == (Status.CANCELLED, 0)
    for job_id in (tracked.id, untracked.id):
        shown = CliRunner().invoke(main, ["status", "-c", str(config), job_id, "--json"], catch_exceptions=False)
        assert json.loads(shown.output)["status"] == "CANCELLED"
    untracked_shown = CliRunner().invoke(main, ["status", "-c", str(config), untracked.id, "--json"])
    assert "only if it was sent cancellable" in json.loads(untracked_shown.output)["note"]
    text = CliRunner().invoke(main, ["status", "-c", str(config), tracked.id]).output
    assert "CANCELLED" in text


def test_an_untracked_job_not_sent_cancellable_is_refused_at_once_and_runs_anyway(
        tmp_path: Path, database_url: str) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS, database=database_url)
    record = tmp_path / "record.txt"
    sqjobs.configure(str(config))
    plain = later.stamp.delay(str(record), "plain")
    marked = later.stamp.apply_async(args=(str(record), "marked"), cancellable=True)
    by_class = later.cancellable_stamp.delay(str(record), "by-class")
    sent = CliRunner().invoke(main, ["enqueue", "-c", str(config), "later.stamp", "--args",
                                     json.dumps([str(record), "by-cli"]), "--cancellable"], catch_exceptions=False)
    assert sent.exit_code == 0, sent.output
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    received = broker.receive("later", 10, 0, 60)
    broker.release("later", [m.receipt for m in received])
    headers = {message.id: message.headers for message in (decode(m.body, m.message_id) for m in received)}
    assert headers == {plain.id: {}, marked.id: {"sqjobs-cancellable": True},
                       by_class.id: {"sqjobs-cancellable": True}, sent.output.strip(): {"sqjobs-cancellable": True}}
    assert (plain.cancellable, marked.cancellable, by_class.cancellable) == (False, True, True)
    with pytest.raises(JobNotCancellableError) as refused:
        plain.cancel()
    assert "\n" not in str(refused.value) and "was not sent cancellable" in str(refused.value)
    assert Cancellations.for_url(database_url).cancelled_at(plain.id) is None  # nothing recorded
    worker = start_worker(config, ["later"], "--burst")
    assert worker.wait(60) == 0, worker_log(worker)
    assert sorted(line.split()[0] for line in read_lines(record)) == ["by-class", "by-cli", "marked", "plain"]


def test_cancelling_a_running_or_finished_job_is_refused_and_changes_nothing(
        tmp_path: Path, database_url: str) -> None:
    config = sqlite_config(tmp_path, jobs=JOBS, database=database_url)
    record, release = tmp_path / "record.txt", tmp_path / "release"
    sqjobs.configure(str(config))
    handle = later.tracked_wait.delay(str(record), "busy", str(release))
    worker = start_worker(config, ["later"])
    try:
        wait_until(lambda: "start busy" in read_lines(record), what="the job to start")
        outcome = handle.cancel()
        assert not outcome and outcome.status is Status.STARTED
        assert "not cancelled, it is running (STARTED); nothing changed" in outcome.message
        result = CliRunner().invoke(main, ["cancel", "-c", str(config), handle.id])
        assert result.exit_code == 1 and "it is running" in result.output
        assert handle.status is Status.STARTED
        release.touch()
        assert handle.wait(30) == "busy"
        assert read_lines(record) == ["start busy", "end busy"]
        finished = sqjobs.cancel(handle.id)
        assert not finished and "already finished (SUCCESS)" in finished.message
        assert handle.status is Status.SUCCESS
    finally:
        assert stop_process(worker) == 0, worker_log(worker)


def test_a_cancelled_held_job_leaves_the_database_and_is_never_sent(
        tmp_path: Path, sqs_server: MotoServer, sqs_prefix: str) -> None:
    broker = SQSBroker(**sqs_server.broker_options(sqs_prefix))
    url = f"sqlite:///{tmp_path / 'status.db'}"
    use(broker, url)
    handle = later.tracked_stamp.apply_async(args=("-", "held"), delay=2 * HOUR_S)
    assert HeldJobs.for_url(url).counts(broker.identity) == {"later": 1}
    outcome = handle.cancel()
    assert outcome and "held for later; removed" in outcome.message
    assert HeldJobs.for_url(url).counts(broker.identity) == {}
    beater = Beater(sqjobs.current_app(), [], BeatStore(url))
    assert beater.tick(datetime.now(timezone.utc) + timedelta(hours=3)) == []
    assert handle.status is Status.CANCELLED


def test_while_the_database_is_down_untracked_jobs_run_and_cancellable_ones_wait_and_stay_cancelled(
        tmp_path: Path) -> None:
    parts = urlsplit(POSTGRESQL_URL)
    record = tmp_path / "record.txt"
    with TcpProxy(parts.port or 5432) as proxy:  # not started: the worker's database does not answer
        url = parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{proxy.port}").geturl()
        config = sqlite_config(tmp_path, jobs=JOBS, database=url)
        sqjobs.configure(str(config))
        later.stamp.delay(str(record), "free")  # untracked, not cancellable: needs no database
        later.stamp.apply_async(args=(str(record), "waits"), cancellable=True)
        dropped = later.cancellable_stamp.delay(str(record), "dropped")
        # cancelled straight in the database (not through the proxy), while a worker that died held its message
        broker = SQLiteBroker(str(tmp_path / "queue.db"))
        received = broker.receive("later", 10, 0, 0.5)
        broker.release("later", [m.receipt for m in received if decode(m.body, m.message_id).id != dropped.id])
        use(broker, POSTGRESQL_URL)
        assert dropped.cancel()
        worker = start_worker(config, ["later"])
        try:
            wait_until(lambda: "free" in stamps(record), what="the untracked job to run with the database down")
            wait_until(lambda: worker_log(worker).count("status database unavailable") >= 2,
                       what="the worker to retry the cancellation checks")
            assert set(stamps(record)) == {"free"}
            assert worker.poll() is None
            proxy.start()
            wait_until(lambda: "waits" in stamps(record), what="the cancellable job to run once the database answers")
            wait_until(lambda: f"job {dropped.id} later.cancellable_stamp on later: cancelled; deleted unrun"
                       in worker_log(worker), what="the cancelled job to be deleted unrun")
        finally:
            assert stop_process(worker) == 0, worker_log(worker)
    assert sorted(stamps(record)) == ["free", "waits"]
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    assert (broker.stats("later").visible, broker.stats("later").in_flight, broker.stats("later").dead) == (0, 0, 0)


def test_in_eager_mode_a_cancellable_job_has_already_run_and_is_not_cancelled(tmp_path: Path) -> None:
    sqjobs.configure(settings=Settings(None, str(tmp_path), {"sqjobs": {
        "broker": "eager://", "database": f"sqlite:///{tmp_path / 'status.db'}"}}, ()))
    record = tmp_path / "record.txt"
    handle = later.stamp.apply_async(args=(str(record), "eager"), cancellable=True)
    assert read_lines(record)[0].startswith("eager ")  # it ran inside the call
    outcome = handle.cancel()
    assert not outcome and not outcome.recorded and "already finished (SUCCESS)" in outcome.message
    with pytest.raises(JobNotCancellableError):
        later.stamp.delay(str(record), "plain").cancel()
    assert not (tmp_path / "status.db").exists()  # neither touched the database
