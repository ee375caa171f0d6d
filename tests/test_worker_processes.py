"""Workers as real processes on the embedded SQLite broker: signals, kill -9, heartbeat, poison, retries."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import sqjobs
from sqjobs.brokers.base import REASON_ATTRIBUTE
from sqjobs.brokers.sqlite import SQLiteBroker
from tests import jobs_for_tests as jobs
from tests.support import read_lines, send_many, sqlite_config, start_worker, stop_process, wait_until, worker_log


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, SQLiteBroker, Path]:
    """A config on a fresh embedded broker, the broker, and the file jobs record into."""
    config = sqlite_config(tmp_path)
    sqjobs.configure(str(config))
    broker = sqjobs.get_broker()
    assert isinstance(broker, SQLiteBroker)
    return config, broker, tmp_path / "record.txt"


def test_a_thousand_jobs_through_two_workers_each_run_exactly_once(setup: tuple) -> None:
    config, broker, record = setup
    workers = [start_worker(config, ["default"]) for _ in range(2)]
    # Both consume before the jobs come: a worker that starts late on a busy machine could find them all run.
    wait_until(lambda: all(" consuming default" in worker_log(w) for w in workers), what="both workers to start")
    send_many(broker, jobs.record_job.job_class, (((str(record), f"t{i}"), {}) for i in range(1000)))
    try:
        wait_until(lambda: len(read_lines(record)) >= 1000, timeout_s=120, what="1,000 jobs to run")
        wait_until(lambda: broker.stats("default").in_flight == 0, what="the last deletes")
    finally:
        codes = [stop_process(w) for w in workers]
    assert codes == [0, 0]
    tokens = Counter(line.split()[0] for line in read_lines(record))
    assert set(tokens) == {f"t{i}" for i in range(1000)}
    assert max(tokens.values()) == 1
    pids = {line.split()[1] for line in read_lines(record)}
    assert len(pids) == 2, "both workers took jobs"
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)


@pytest.mark.faults
def test_kill_9_mid_job_the_message_comes_back_and_another_worker_completes_it(setup: tuple) -> None:
    config, broker, record = setup
    release = record.parent / "release"
    jobs.wait_for_file_job.delay(str(record), "victim", str(release))
    first = start_worker(config, ["default"], "--visibility-timeout", "1", "--prefetch", "1")
    wait_until(lambda: any(line.startswith("start victim") for line in read_lines(record)), what="the job to start")
    first.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    release.touch()
    second = start_worker(config, ["default"], "--visibility-timeout", "1")
    try:
        wait_until(lambda: any(line.startswith("end victim") for line in read_lines(record)), what="the redelivery")
    finally:
        assert stop_process(second) == 0
    lines = read_lines(record)
    assert [line.split()[0] for line in lines] == ["start", "start", "end"]
    assert lines[1].split()[2] == str(second.pid)
    assert broker.stats("default").in_flight == 0 and broker.stats("default").visible == 0


def test_jobs_finished_before_a_long_one_are_settled_while_it_runs(setup: tuple) -> None:
    config, broker, record = setup
    release = record.parent / "release"
    for i in range(3):
        jobs.record_job.delay(str(record), f"quick{i}")
    jobs.wait_for_file_job.delay(str(record), "long", str(release))
    worker = start_worker(config, ["default"])
    try:
        wait_until(lambda: any(line.startswith("start long") for line in read_lines(record)), what="the long job")
        # Received together, run by one job process: the three before it are deleted while it runs, not when
        # it ends (a kill -9 of the long one would run them again).
        wait_until(lambda: broker.stats("default").in_flight == 1, what="the finished jobs' deletes")
        assert worker_log(worker).count(" succeeded in ") == 3
        assert not any(line.startswith("end long") for line in read_lines(record))
    finally:
        release.touch()
        wait_until(lambda: worker_log(worker).count(" succeeded in ") == 4, what="the long job's line")
        assert stop_process(worker) == 0
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)


@pytest.mark.faults
def test_sigterm_mid_job_finishes_the_job_exits_0_and_hands_back_prefetched_messages(setup: tuple) -> None:
    config, broker, record = setup
    release = record.parent / "release"
    running = jobs.wait_for_file_job.delay(str(record), "running", str(release))
    for i in range(5):
        jobs.record_job.delay(str(record), f"later{i}")
    worker = start_worker(config, ["default"], "--prefetch", "10", "--visibility-timeout", "300")
    wait_until(lambda: any(line.startswith("start running") for line in read_lines(record)), what="the job to start")
    assert broker.stats("default").in_flight == 6  # the running job and five prefetched
    worker.send_signal(signal.SIGTERM)
    # The worker says at once, while the job still runs, what the signal will do.
    wait_until(lambda: "SIGTERM received" in worker_log(worker), what="the SIGTERM line")
    assert (f"SIGTERM received: no new receive; job {running.id} wait_for_file on default finishes first, "
            "then 5 prefetched message(s) are handed back") in worker_log(worker)
    release.touch()
    assert worker.wait(30) == 0
    assert any(line.startswith("end running") for line in read_lines(record))
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight) == (5, 0), "prefetched messages are available at once"
    assert not any(line.startswith("later") for line in read_lines(record))


def test_an_idle_worker_exits_0_promptly_on_sigterm_and_sigint(setup: tuple) -> None:
    config, broker, record = setup
    for sig in (signal.SIGTERM, signal.SIGINT):
        worker = start_worker(config, ["default"])
        wait_until(lambda w=worker: "consuming default" in worker_log(w), what="the worker to start")
        worker.send_signal(sig)
        assert worker.wait(5) == 0


@pytest.mark.faults
def test_a_job_longer_than_the_visibility_timeout_runs_once_thanks_to_the_heartbeat(setup: tuple) -> None:
    config, broker, record = setup
    jobs.slow_job.delay(str(record), "long", 3.0)
    workers = [start_worker(config, ["default"], "--visibility-timeout", "1") for _ in range(2)]
    try:
        wait_until(lambda: any(line.startswith("end long") for line in read_lines(record)), what="the long job")
        wait_until(lambda: broker.stats("default").in_flight == 0, what="the delete")
    finally:
        for worker in workers:
            assert stop_process(worker) == 0
    assert [line.split()[0] for line in read_lines(record)] == ["start", "end"]


def _b64(data: object) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


@pytest.mark.faults
def test_poison_messages_go_to_the_dead_letter_queue_and_a_good_message_still_runs(setup: tuple) -> None:
    config, broker, record = setup
    poison = {
        "not base64": "this is ~ not base64 ~",
        "not json": base64.b64encode(b"{nope").decode(),
        "no name": _b64({"args": [1]}),
        "args not a list": _b64({"name": "record", "args": {"a": 1}}),
        "kwargs not an object": _b64({"name": "record", "args": [], "kwargs": [1]}),
    }
    for body in poison.values():
        broker.send("default", body)
    good = jobs.record_job.delay(str(record), "good")
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0
    assert read_lines(record)[0].split()[0] == "good"
    dead = broker.peek("default-dead", 20)
    reasons = sorted(m.attributes[REASON_ATTRIBUTE] for m in dead)
    assert len(reasons) == 5
    for expected in ["neither base64 nor JSON", "not valid JSON", "no job 'name'",
                     "'args' is a JSON dict", "'kwargs' is a JSON list"]:
        assert any(expected in reason for reason in reasons), expected
    assert "moved to the dead-letter queue" in worker_log(worker)
    assert good.id not in {m.message_id for m in dead}


def test_retries_two_failures_then_success_and_one_retry_too_few_ends_dead(setup: tuple) -> None:
    config, broker, record = setup
    jobs.flaky_two_retries.delay(str(record), "two", 2)
    jobs.flaky_one_retry.delay(str(record), "one", 2)
    worker = start_worker(config, ["default"])
    try:
        wait_until(lambda: any(line == "ok two" for line in read_lines(record)), what="attempt 3 to succeed")
        wait_until(lambda: broker.stats("default").dead == 1, what="the one-retry job to die")
    finally:
        assert stop_process(worker) == 0
    lines = read_lines(record)
    tries_two = [float(line.split()[2]) for line in lines if line.startswith("try two ")]
    assert len(tries_two) == 3
    assert len([line for line in lines if line.startswith("try one ")]) == 2 and "ok one" not in lines
    gaps = [b - a for a, b in zip(tries_two, tries_two[1:], strict=False)]
    assert gaps[1] > gaps[0] >= 0.5, f"backoff grows: {gaps}"
    [dead] = broker.peek("default-dead")
    assert dead.attributes[REASON_ATTRIBUTE] == "failed after 2 attempt(s): RuntimeError: planned failure 2 of 2"


def test_max_jobs_exits_0_after_n_jobs(setup: tuple) -> None:
    config, broker, record = setup
    for i in range(5):
        jobs.record_job.delay(str(record), f"m{i}")
    worker = start_worker(config, ["default"], "--max-jobs", "3", "--prefetch", "10")
    assert worker.wait(30) == 0
    assert len(read_lines(record)) == 3
    assert broker.stats("default").visible == 2


def test_worker_logs_one_info_line_per_attempt_and_the_job_id_on_the_lines_a_job_logs(setup: tuple) -> None:
    config, broker, record = setup
    handle = jobs.record_job.delay(str(record), "logged")
    chatty = jobs.chatty_job.delay("hello")
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(30) == 0
    log = worker_log(worker)
    [done] = [line for line in log.splitlines() if f"job {handle.id} record on default: attempt 1 succeeded" in line]
    # Written by the worker, once the job process's settlement reached it.
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO sqjobs\.worker\[" + str(worker.pid) +
                        r"\]: job \w+ record on default: attempt 1 succeeded in \d+\.\d{3} s", done), done
    assert "started" not in log, "the started line is DEBUG"
    [line] = [line for line in log.splitlines() if "chatty says hello" in line]
    assert " WARNING tests.chatty[" in line and f"] job {chatty.id}: chatty says hello" in line
    # The level comes from the command line (or [sqjobs] log_level): DEBUG shows the started line.
    again = jobs.record_job.delay(str(record), "debug")
    debug = subprocess.run([sys.executable, "-m", "sqjobs", "--log-level", "debug", "worker", "-c", str(config),
                            "--burst"], capture_output=True, text=True, timeout=60, cwd=str(config.parent))
    assert debug.returncode == 0, debug.stderr
    assert f"job {again.id} record on default: attempt 1 started" in debug.stderr


def test_bad_config_stops_the_worker_with_the_file_section_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.conf"
    config.write_text("[worker:default]\nprocesses = many\n")
    result = subprocess.run([sys.executable, "-m", "sqjobs", "worker", "-c", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"{config}: [worker:default] processes = 'many'" in result.stderr
    assert "Traceback" not in result.stderr


#: The seed talk's PHP producer, word for word but for the SQS call: plain arrays, json_encode, base64.
SEED_PHP = """
$task_name = 'record';
$args = array($argv[1], 'from-seed-php');
$kwargs = array();
$payload = array(
    'name' => $task_name,
    'args' => $args,
    'kwargs' => $kwargs
);
$json_payload = json_encode($payload);
echo base64_encode($json_payload);
"""


@pytest.mark.tools("php")
def test_the_seed_talks_php_producer_with_empty_kwargs_runs(setup: tuple) -> None:
    config, broker, record = setup
    made = subprocess.run(["php", "-r", SEED_PHP, str(record)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert '"kwargs":[]' in base64.b64decode(made.stdout).decode()  # what PHP really sends
    broker.send("default", made.stdout.strip())
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0
    assert [line.split()[0] for line in read_lines(record)] == ["from-seed-php"]
    assert broker.stats("default").dead == 0


def test_a_worker_or_beater_without_any_job_refuses_to_start_and_receives_nothing(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs="")
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    broker.send("default", _b64({"name": "record", "args": ["x", "y"]}))
    for command in (["worker", "default"], ["beater", "--once"]):
        result = subprocess.run([sys.executable, "-m", "sqjobs", *command, "-c", str(config)],
                                capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("Error: no job is registered")
        assert "[sqjobs] jobs" in line and "--import" in line
    [waiting] = broker.peek("default")
    assert waiting.receive_count == 0  # nothing was received
    assert broker.stats("default").dead == 0


@pytest.mark.faults
def test_an_unknown_job_name_is_handed_back_by_a_worker_process_not_buried(setup: tuple) -> None:
    config, broker, record = setup
    broker.send("default", _b64({"name": "only.the.new.code.knows", "args": []}))
    worker = start_worker(config, ["default"])
    try:
        wait_until(lambda: "refusal 1 of 20" in worker_log(worker), what="the refusal")
        stats = broker.stats("default")
        assert (stats.visible, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 1, 0)
    finally:
        assert stop_process(worker) == 0
    log = worker_log(worker)
    assert "handed back for another worker, visible again in 15 s" in log
    assert "jobs: " in log  # it says which jobs it knows
