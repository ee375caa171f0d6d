"""Beaters: each fire time sent once, by claims in SQLite, PostgreSQL and MariaDB; real beater processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

import sqjobs
from sqjobs import Job, PeriodicJob
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.config import load
from sqjobs.errors import ConfigError, JobDefinitionError
from sqjobs.message import decode
from sqjobs.schedule.beater import CLAIM_TIMEOUT_S, Beater, BeatStore, periodic_job_id
from tests.status_fixtures import DATABASE_KINDS, database_url_for
from tests.support import (
    TESTS_DIR,
    read_lines,
    sqlite_config,
    start_worker,
    stop_process,
    wait_until,
    write_config,
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


@pytest.fixture(params=DATABASE_KINDS)
def beat_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BeatStore]:
    store = BeatStore(database_url_for(request.param, tmp_path))
    store.create_tables()  # a server that is down fails here, never skips
    yield store
    store.close()


def periodic(schedule: str, catch_up: str = "latest", zone: str = "UTC") -> type[Job]:
    """A fresh periodic job class with a unique name (other test runs may share the database)."""
    return type("Tick", (PeriodicJob,), {"name": f"tick-{uuid.uuid4().hex[:12]}", "queue": "beats",
                                         "schedule": schedule, "timezone": zone, "catch_up": catch_up,
                                         "run": lambda self: self.scheduled_for, "__module__": __name__})


def sent_fire_times(broker: MemoryBroker) -> list[str]:
    return [decode(m.body, m.message_id).extra["scheduled_for"] for m in broker.peek("beats", 1000)]


def test_three_beaters_on_the_same_ticks_send_each_fire_time_once(beat_store: BeatStore) -> None:
    job = periodic("* * * * * */10")
    broker = MemoryBroker()
    beaters = [Beater(broker, [job], BeatStore(beat_store.url)) for _ in range(3)]
    start = utc(2026, 5, 1, 12, 0, 0)
    for beater in beaters:
        beater.tick(start)
    for second in range(1, 61):
        for beater in beaters:
            beater.tick(start + timedelta(seconds=second))
    times = sent_fire_times(broker)
    assert len(times) == 6 and len(set(times)) == 6
    assert times[0] == "2026-05-01T12:00:10+00:00" and times[-1] == "2026-05-01T12:01:00+00:00"
    claims = beat_store.claims(job.name)
    assert len(claims) == 6 and all(c["sent_at"] is not None for c in claims)


def test_a_first_start_sends_nothing_from_the_past(beat_store: BeatStore) -> None:
    job = periodic("* * * * *")
    broker = MemoryBroker()
    assert Beater(broker, [job], beat_store).tick(utc(2026, 5, 1, 12, 0, 30)) == []


def test_the_message_has_a_stable_id_and_the_fire_time(beat_store: BeatStore) -> None:
    job = periodic("* * * * *")
    broker = MemoryBroker()
    beater = Beater(broker, [job], beat_store)
    beater.tick(utc(2026, 5, 1, 12, 0, 30))
    [sent] = beater.tick(utc(2026, 5, 1, 12, 1, 0, ))
    assert sent.job_id == periodic_job_id(job.name, utc(2026, 5, 1, 12, 1))
    [message] = broker.peek("beats")
    decoded = decode(message.body, message.message_id)
    assert decoded.id == sent.job_id and decoded.name == job.name
    assert decoded.extra["scheduled_for"] == "2026-05-01T12:01:00+00:00"


@pytest.mark.faults
def test_a_claim_whose_beater_died_before_sending_is_taken_over(beat_store: BeatStore) -> None:
    job = periodic("0 * * * *")
    broker = MemoryBroker()
    fire = utc(2026, 5, 1, 13)
    assert beat_store.claim(broker.identity, job.name, fire, "dead-beater", fire)  # claimed, never sent
    survivor = Beater(broker, [job], BeatStore(beat_store.url))
    survivor.started_at = utc(2026, 5, 1, 12)
    assert survivor.tick(fire + timedelta(seconds=5)) == []  # the claim is fresh: not ours to send
    [sent] = survivor.tick(fire + timedelta(seconds=CLAIM_TIMEOUT_S + 1))
    assert sent.fire_at == fire
    assert sent_fire_times(broker) == ["2026-05-01T13:00:00+00:00"]
    assert survivor.tick(fire + timedelta(seconds=CLAIM_TIMEOUT_S + 2)) == []


@pytest.mark.parametrize(("catch_up", "expected"), [
    ("latest", ["2026-05-01T15:00:00+00:00", "2026-05-01T15:59:30+00:00"]),
    ("all", ["2026-05-01T13:00:00+00:00", "2026-05-01T14:00:00+00:00", "2026-05-01T15:00:00+00:00",
             "2026-05-01T15:59:30+00:00"]),
    ("none", ["2026-05-01T15:59:30+00:00"]),
])
def test_fire_times_missed_while_no_beater_ran_follow_the_catch_up_choice(
        beat_store: BeatStore, catch_up: str, expected: list[str]) -> None:
    job = periodic("0 * * * *", catch_up)
    extra = periodic("59 15 * * * 30", "latest")  # a second job, to check it is not affected
    broker = MemoryBroker()
    first = Beater(broker, [job], beat_store)
    first.tick(utc(2026, 5, 1, 11, 59))
    first.tick(utc(2026, 5, 1, 12, 0, 1))  # sends 12:00, then every beater stops
    broker.purge("beats")
    later = Beater(broker, [job, extra], BeatStore(beat_store.url))
    later.started_at = utc(2026, 5, 1, 15, 59)
    later.tick(utc(2026, 5, 1, 16, 0, 0) - timedelta(seconds=30))
    assert sorted(sent_fire_times(broker)) == sorted(expected)


def _every_ten_seconds(times: range) -> list[str]:
    """The fire times 12:MM:SS of 2026-05-01 for each second count in ``times`` after 12:00:00."""
    return [(utc(2026, 5, 1, 12) + timedelta(seconds=s)).isoformat() for s in times]


@pytest.mark.parametrize(("grace_s", "catch_up", "expected"), [
    # Back at 12:05:05 after the last send at 12:00:10: 12:00:20 .. 12:05:00 are due.
    (60, "latest", _every_ten_seconds(range(240, 301, 10))),  # 12:04:00 (missed) + 12:04:10 .. 12:05:00
    (60, "none", _every_ten_seconds(range(250, 301, 10))),
    (60, "all", _every_ten_seconds(range(20, 301, 10))),
    (15, "latest", _every_ten_seconds(range(280, 301, 10))),  # 12:04:50 is exactly 15 s old: on time
    (15, "none", _every_ten_seconds(range(290, 301, 10))),
    (5, "latest", _every_ten_seconds(range(290, 301, 10))),
    (5, "none", _every_ten_seconds(range(300, 301, 10))),
    (400, "none", _every_ten_seconds(range(20, 301, 10))),  # nothing is older than the grace
])
def test_the_grace_decides_which_fire_times_count_as_missed(beat_store: BeatStore, grace_s: float, catch_up: str,
                                                             expected: list[str]) -> None:
    job = periodic("* * * * * */10", catch_up)
    broker = MemoryBroker()
    first = Beater(broker, [job], beat_store)
    first.tick(utc(2026, 5, 1, 12, 0, 0))
    assert [s.fire_at for s in first.tick(utc(2026, 5, 1, 12, 0, 10))] == [utc(2026, 5, 1, 12, 0, 10)]
    broker.purge("beats")  # then no beater runs for five minutes
    later = Beater(broker, [job], BeatStore(beat_store.url), catch_up_grace_s=grace_s)
    later.tick(utc(2026, 5, 1, 12, 5, 5))
    assert sorted(sent_fire_times(broker)) == expected
    broker.purge("beats")
    later.tick(utc(2026, 5, 1, 12, 5, 10))  # back on time: the next fire time, and nothing missed again
    assert sent_fire_times(broker) == _every_ten_seconds(range(310, 311))


def test_a_fire_time_seen_late_by_a_running_beater_follows_the_grace_too(beat_store: BeatStore) -> None:
    job = periodic("0 * * * *", "none")
    broker = MemoryBroker()
    beater = Beater(broker, [job], beat_store, catch_up_grace_s=120)
    beater.tick(utc(2026, 5, 1, 12, 59))
    [sent] = beater.tick(utc(2026, 5, 1, 13, 1, 59))  # 13:00 first seen 119 s late (say the database was down)
    assert sent.fire_at == utc(2026, 5, 1, 13)
    assert beater.tick(utc(2026, 5, 1, 14, 2, 1)) == []  # 14:00 first seen 121 s late: missed, and "none"
    assert [s.fire_at for s in beater.tick(utc(2026, 5, 1, 15))] == [utc(2026, 5, 1, 15)]


def test_the_grace_is_a_beater_setting_of_at_least_five_seconds(tmp_path: Path) -> None:
    example = load(str(TESTS_DIR.parent / "etc" / "sqjobs.conf.example"))
    assert example.get("beater", "catch_up_grace_s") == 60
    config = write_config(tmp_path / "c.conf", {"beater": {"catch_up_grace_s": 4.5}})
    with pytest.raises(ConfigError, match=r"c\.conf: \[beater\] catch_up_grace_s = '4\.5': must be at least 5 "):
        load(str(config))


def test_the_beater_command_reads_the_grace_from_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path / "sqjobs.conf", {
        "sqjobs": {"broker": f"sqlite:///{tmp_path / 'queue.db'}", "database": f"sqlite:///{tmp_path / 'beats.db'}",
                   "jobs": "periodic_jobs_for_tests", "path": str(TESTS_DIR)},
        "beater": {"catch_up_grace_s": 20},
    })
    store = BeatStore(f"sqlite:///{tmp_path / 'beats.db'}")
    broker = SQLiteBroker(str(tmp_path / "queue.db")).identity
    ten_minutes_ago = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
    assert store.claim(broker, "test.every_second", ten_minutes_ago, "earlier-beater", ten_minutes_ago)
    store.mark_sent(broker, "test.every_second", ten_minutes_ago, ten_minutes_ago)
    once = subprocess.run([sys.executable, "-m", "sqjobs", "beater", "-c", str(config), "--once"],
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    # Every second of the last 20 (20 or 21 fire times, as the tick falls), plus the latest missed one.
    sent = SQLiteBroker(str(tmp_path / "queue.db")).stats("periodic").visible
    assert 21 <= sent <= 22, once.stderr


def test_periodic_jobs_need_a_valid_schedule() -> None:
    with pytest.raises(JobDefinitionError, match="needs a schedule"):
        type("NoSchedule", (PeriodicJob,), {"name": "x.no_schedule", "run": lambda self: None})
    with pytest.raises(JobDefinitionError, match="not a valid cron expression"):
        sqjobs.job(schedule="every day")(lambda: None)
    with pytest.raises(JobDefinitionError, match="catch_up must be one of"):
        sqjobs.job(schedule="* * * * *", catch_up="sometimes")(lambda: None)


def test_the_seed_periodic_job_works_in_its_modern_form(tmp_path: Path) -> None:
    class DummyPeriodicJob(PeriodicJob):
        name = "dummy_periodic_job"
        queue = "my_queue"
        schedule = "1 0 * * *"
        timezone = "Europe/Madrid"

        def run(self, *args: object, **kwargs: object) -> None:
            pass

    broker = MemoryBroker()
    beater = Beater(broker, [DummyPeriodicJob], BeatStore(f"sqlite:///{tmp_path / 'beats.db'}"))
    beater.tick(utc(2026, 6, 30, 22, 0))
    [sent] = beater.tick(utc(2026, 6, 30, 22, 1, 0))  # 00:01 in Madrid (summer time)
    assert sent.fire_at == utc(2026, 6, 30, 22, 1)
    assert broker.stats("my_queue").visible == 1


def test_schedule_command_prints_iso_times_with_the_offset(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sqjobs.cli.commands import main

    config = write_config(tmp_path / "c.conf", {"sqjobs": {"broker": "memory://", "jobs": "periodic_jobs_for_tests",
                                                           "path": str(TESTS_DIR)}})
    result = CliRunner().invoke(main, ["schedule", "-c", str(config), "test.every_second", "--next", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.split()
    assert len(lines) == 3
    parsed = [datetime.fromisoformat(line) for line in lines]
    assert all(p.utcoffset() in (timedelta(hours=1), timedelta(hours=2)) for p in parsed)
    assert [(b - a).total_seconds() for a, b in zip(parsed, parsed[1:], strict=False)] == [1.0, 1.0]


@pytest.mark.faults
def test_two_beater_processes_send_each_second_once_even_when_one_is_killed(tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    config = sqlite_config(tmp_path, jobs="periodic_jobs_for_tests")
    env = {"SQJOBS_TEST_RECORD": str(record)}
    def start_beater() -> subprocess.Popen:
        log = open(tmp_path / f"beater-{uuid.uuid4().hex[:6]}.log", "wb")
        process = subprocess.Popen([sys.executable, "-m", "sqjobs", "beater", "-c", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT, env={**os.environ, **env})
        log.close()
        return process

    beaters = [start_beater(), start_beater()]
    worker = start_worker(config, ["periodic"], env=env)
    try:
        wait_until(lambda: len(read_lines(record)) >= 3, what="three periodic runs")
        beaters[0].send_signal(signal.SIGKILL)
        assert beaters[0].wait(10) == -signal.SIGKILL
        seen = len(read_lines(record))
        wait_until(lambda: len(read_lines(record)) >= seen + 3, what="runs after one beater was killed")
    finally:
        assert stop_process(beaters[1]) == 0
        stop_process(worker)
    fire_times = Counter(line.split()[0] for line in read_lines(record))
    assert max(fire_times.values()) == 1, "no fire time ran twice"
    ordered = sorted(datetime.fromisoformat(t) for t in fire_times)
    gaps = [(b - a).total_seconds() for a, b in zip(ordered, ordered[1:], strict=False)]
    assert all(gap == 1.0 for gap in gaps), f"no second was skipped: {gaps}"



def test_deployments_sharing_a_database_each_send_every_tick(beat_store: BeatStore, tmp_path: Path) -> None:
    # Two deployments (two broker files), two beaters each, one status database, the same ticks.
    job = periodic("* * * * * */10")
    brokers = [SQLiteBroker(str(tmp_path / f"{name}-queue.db")) for name in ("staging", "production")]
    beaters = [Beater(broker, [job], BeatStore(beat_store.url)) for broker in brokers for _ in range(2)]
    start = utc(2026, 5, 1, 3, 19, 0)
    for second in range(0, 61):
        for beater in beaters:
            beater.tick(start + timedelta(seconds=second))
    expected = [(start + timedelta(seconds=s)).isoformat() for s in range(10, 61, 10)]  # 03:19:10 .. 03:20:00
    for broker in brokers:
        times = [decode(m.body, m.message_id).extra["scheduled_for"] for m in broker.receive("beats", 10, 0)]
        assert sorted(times) == expected, f"each tick once on {broker.identity}"
    claims = beat_store.claims(job.name)
    assert Counter(c["broker"] for c in claims) == {broker.identity: 6 for broker in brokers}
    assert all(c["sent_at"] is not None for c in claims)


def test_one_broker_file_reached_by_two_paths_is_one_deployment(tmp_path: Path) -> None:
    (tmp_path / "releases" / "1").mkdir(parents=True)
    (tmp_path / "current").symlink_to(tmp_path / "releases" / "1")
    job = periodic("* * * * * */10")
    store = f"sqlite:///{tmp_path / 'status.db'}"
    brokers = [SQLiteBroker(str(tmp_path / "releases" / "1" / "queue.db")),
               SQLiteBroker(str(tmp_path / "current" / "queue.db"))]
    beaters = [Beater(broker, [job], BeatStore(store)) for broker in brokers]
    start = utc(2026, 5, 1, 3, 19, 0)
    for second in range(0, 31):
        for beater in beaters:
            beater.tick(start + timedelta(seconds=second))
    assert brokers[0].stats("beats").visible == 3, "each tick sent once"


def test_a_broker_that_refuses_logs_one_line_per_try_and_one_when_back(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    from sqjobs.brokers.sqs import SQSBroker
    from tests.sqs_server import free_port

    # An SQS endpoint where nothing listens: every send is refused.
    broker = SQSBroker(access_key="k", secret_key="s", region="eu-west-1",
                       endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    job = periodic("* * * * * *")
    now = datetime.now(timezone.utc)
    beater = Beater(broker, [job], BeatStore(f"sqlite:///{tmp_path / 'status.db'}"), clock=lambda: now)
    beater.tick(now - timedelta(seconds=2))
    caplog.set_level("INFO", logger="sqjobs.beater")
    beater.run(once=True)
    beater.run(once=True)
    lines = [r for r in caplog.records if r.name == "sqjobs.beater" and "broker error" in r.getMessage()]
    assert [r.getMessage().split(";")[0] for r in lines] == [
        "broker error while sending periodic jobs (failure 1)",
        "broker error while sending periodic jobs (failure 2, failing for 0 s)"]
    assert all(r.exc_info is None for r in lines), "no traceback"
    beater.app = beater.app.with_broker(MemoryBroker())  # the broker answers again (the claims are taken over)
    beater.run(once=True)
    assert [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()] == [
        "broker reachable again after 0 s (2 failed tries)"]
