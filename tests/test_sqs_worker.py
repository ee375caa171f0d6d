"""Worker processes on SQS: real ``sqjobs worker`` processes against moto's server over HTTP.

moto may hand one message to two consumers that poll at the same moment, so
tests with several workers assert no loss and at-least-once; exactly-once is
asserted only where one consumer could have had the message.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import boto3
import pytest

import sqjobs
from sqjobs.brokers.base import DEAD_LETTER_ROOM_BYTES, MAX_REASON_BYTES, REASON_ATTRIBUTE, OutgoingMessage
from sqjobs.brokers.sqs import SQSBroker
from sqjobs.errors import MessageTooLargeError
from sqjobs.message import JobMessage, decode, encode
from sqjobs.worker.loop import ERROR_PAUSE_MAX_S, ERROR_PAUSE_S
from tests.sqs_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer, free_port, start_moto_server
from tests.support import (
    TESTS_DIR,
    read_lines,
    receive_all,
    start_worker,
    stop_process,
    wait_until,
    worker_log,
    write_config,
)
from tests.tcp_proxy import TcpProxy

#: A deadline far below the 20 s long poll: a worker that exits within it was not waiting the poll out.
IDLE_EXIT_DEADLINE_S = 10.0


@pytest.fixture
def broker(sqs_server: MotoServer, sqs_prefix: str) -> Iterator[SQSBroker]:
    """The test's own view of the queues the workers consume."""
    instance = SQSBroker(**sqs_server.broker_options(sqs_prefix))
    yield instance
    instance.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Worker processes started by a test; any still alive at the end are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _polled(status: Path) -> bool:
    """True once the worker's status file tells of a poll (it is written at start-up, before the first one)."""
    try:
        return "last_poll" in json.loads(status.read_text())
    except (OSError, ValueError):
        return False


def sqs_config(tmp_path: Path, server: MotoServer, prefix: str, **sqs: object) -> Path:
    """A config file with ``broker = sqs`` on the test server, importing the test jobs."""
    return write_config(tmp_path / "sqjobs.conf", {
        "sqjobs": {"broker": "sqs", "database": f"sqlite:///{tmp_path / 'status.db'}",
                   "jobs": "jobs_for_tests", "path": str(TESTS_DIR)},
        "sqs": server.sqs_section(prefix, **sqs),
    })


def body(name: str, *args: Any) -> str:
    """A job message body as sqjobs writes it."""
    return encode(JobMessage(name=name, args=list(args)))


def tokens(path: Path, kind: str | None = None) -> list[str]:
    """The tokens recorded in ``path``: lines ``TOKEN PID`` or, with ``kind``, ``KIND TOKEN PID``."""
    lines = [line.split() for line in read_lines(path)]
    if kind is None:
        return [parts[0] for parts in lines]
    return [parts[1] for parts in lines if parts[0] == kind]


def settled(broker: SQSBroker, queue: str, visible: int = 0, in_flight: int = 0) -> bool:
    """True when ``queue`` shows exactly these counts."""
    stats = broker.stats(queue)
    return (stats.visible, stats.in_flight, stats.delayed) == (visible, in_flight, 0)


def test_a_php_shaped_message_sent_with_plain_boto3_runs(sqs_server: MotoServer, sqs_prefix: str,
                                                         broker: SQSBroker, tmp_path: Path,
                                                         processes: list) -> None:
    out = tmp_path / "out.txt"
    broker.ensure_queue("php")
    client = boto3.client("sqs", region_name=REGION, endpoint_url=sqs_server.endpoint_url,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    url = client.get_queue_url(QueueName=sqs_prefix + "php")["QueueUrl"]
    payload = json.dumps({"name": "record", "args": [str(out), "from-php"], "kwargs": {}})
    client.send_message(QueueUrl=url, MessageBody=base64.b64encode(payload.encode()).decode())
    worker = start_worker(sqs_config(tmp_path, sqs_server, sqs_prefix), ["php"], "--burst")
    processes.append(worker)
    assert worker.wait(60) == 0, worker_log(worker)
    assert tokens(out) == ["from-php"]
    wait_until(lambda: settled(broker, "php"), what="the message to be deleted")


@pytest.mark.faults
def test_poison_messages_reach_the_dead_letter_queue_and_the_next_job_runs(
        sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker, tmp_path: Path, processes: list) -> None:
    out = tmp_path / "out.txt"

    def b64(value: Any) -> str:
        return base64.b64encode(json.dumps(value).encode()).decode()

    poison = {
        "not base64 nor JSON": "%%% definitely not a job %%%",
        "no name": b64({"args": [1], "kwargs": {}}),
        "args not a list": b64({"name": "record", "args": {"a": 1}, "kwargs": {}}),
        "kwargs not an object": b64({"name": "record", "args": [], "kwargs": [1, 2]}),
    }
    expected_reasons = {
        "not base64 nor JSON": "neither base64 nor JSON",
        "no name": "no job 'name'",
        "args not a list": "'args' is a JSON dict",
        "kwargs not an object": "'kwargs' is a JSON list",
    }
    broker.send_batch("intake", [OutgoingMessage(text) for text in poison.values()]
                      + [OutgoingMessage(body("record", str(out), "good"))])
    config = sqs_config(tmp_path, sqs_server, sqs_prefix)
    worker = start_worker(config, ["intake"], "--burst")
    processes.append(worker)
    assert worker.wait(60) == 0, worker_log(worker)
    assert tokens(out) == ["good"]
    wait_until(lambda: broker.stats("intake").dead == len(poison), what="four dead letters counted")
    # What an operator sees: `sqjobs dead` lists each with its reason.
    listed = subprocess.run([sys.executable, "-m", "sqjobs", "dead", "-c", str(config), "intake", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sorted(row["reason"].split(":")[0] for row in json.loads(listed.stdout)) == sorted(
        ["malformed message"] * 4)
    dead: list = []

    def all_dead() -> bool:
        batch = broker.receive("intake-dead", 10, 0, 60)
        dead.extend(batch)
        return len(dead) >= len(poison)

    wait_until(all_dead, what="four dead letters")
    reasons = {message.body: message.attributes[REASON_ATTRIBUTE] for message in dead}
    assert set(reasons) == set(poison.values())
    for label, text in poison.items():
        assert expected_reasons[label] in reasons[text], (label, reasons[text])
    wait_until(lambda: settled(broker, "intake"), what="the intake queue to be empty")


@pytest.mark.faults
def test_kill_9_mid_job_the_job_is_delivered_again_and_completed(
        sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker, tmp_path: Path, processes: list) -> None:
    out, release = tmp_path / "out.txt", tmp_path / "release"
    config = sqs_config(tmp_path, sqs_server, sqs_prefix)
    broker.send("crash", body("wait_for_file", str(out), "t1", str(release)))
    first = start_worker(config, ["crash"], "--visibility-timeout", "2", "--prefetch", "1")
    processes.append(first)
    wait_until(lambda: tokens(out, "start") == ["t1"], what="the job to start")
    first.send_signal(signal.SIGKILL)
    first.wait()
    release.touch()
    second = start_worker(config, ["crash"], "--visibility-timeout", "2", "--prefetch", "1")
    processes.append(second)
    wait_until(lambda: tokens(out, "end") == ["t1"], what="the job to be delivered again and completed")
    assert stop_process(second) == 0
    pids = [line.split()[2] for line in read_lines(out)]
    assert pids[0] == str(first.pid) and pids[-1] == str(second.pid)
    wait_until(lambda: settled(broker, "crash"), what="the message to be deleted")


@pytest.mark.faults
def test_sigterm_finishes_the_running_job_and_hands_back_the_prefetched_ones(
        sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker, tmp_path: Path, processes: list) -> None:
    out, release = tmp_path / "out.txt", tmp_path / "release"
    broker.send_batch("graceful", [OutgoingMessage(body("wait_for_file", str(out), f"t{i}", str(release)))
                                   for i in range(5)])
    worker = start_worker(sqs_config(tmp_path, sqs_server, sqs_prefix), ["graceful"], "--prefetch", "10",
                          "--visibility-timeout", "300")
    processes.append(worker)
    [started] = wait_until(lambda: tokens(out, "start"), what="the first job to start")
    worker.send_signal(signal.SIGTERM)
    # Released once the worker took the signal in (on a loaded machine that can take a while).
    wait_until(lambda: "SIGTERM received" in worker_log(worker), what="the SIGTERM line")
    release.touch()
    assert worker.wait(60) == 0, worker_log(worker)
    assert tokens(out, "end") == [started], worker_log(worker)
    assert "handed back 4 unstarted message(s)" in worker_log(worker)
    # Hidden for 300 s had they not been handed back: they are visible again at once.
    wait_until(lambda: settled(broker, "graceful", visible=4), what="4 messages back in the queue")


def test_fifo_messages_of_a_group_run_in_order(sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker,
                                               tmp_path: Path, processes: list) -> None:
    out = tmp_path / "out.txt"
    messages = []
    for i in range(25):
        for group in ("a", "b"):
            messages.append(OutgoingMessage(body("record", str(out), f"{group}{i}"), group_id=group,
                                            dedup_id=f"{group}{i}"))
    for start in range(0, len(messages), 10):
        broker.send_batch("seq.fifo", messages[start:start + 10])
    worker = start_worker(sqs_config(tmp_path, sqs_server, sqs_prefix, wait_time_s=1), ["seq.fifo"], "--burst")
    processes.append(worker)
    assert worker.wait(60) == 0, worker_log(worker)
    done = tokens(out)
    for group in ("a", "b"):
        assert [t for t in done if t[0] == group] == [f"{group}{i}" for i in range(25)]


@pytest.mark.faults
def test_the_heartbeat_keeps_a_long_job_from_running_twice(
        sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker, tmp_path: Path, processes: list) -> None:
    out = tmp_path / "out.txt"
    config = sqs_config(tmp_path, sqs_server, sqs_prefix, wait_time_s=1)
    broker.send("long", body("slow", str(out), "t1", 7))  # 7 s of work, hidden 3 s at a time
    first = start_worker(config, ["long"], "--visibility-timeout", "3", "--prefetch", "1")
    processes.append(first)
    wait_until(lambda: tokens(out, "start") == ["t1"], what="the long job to start")
    # Only now a second consumer: it would take the message if its visibility ever lapsed.
    second = start_worker(config, ["long"], "--visibility-timeout", "3", "--prefetch", "1")
    processes.append(second)
    wait_until(lambda: tokens(out, "end") == ["t1"], what="the long job to end")
    wait_until(lambda: settled(broker, "long"), what="the message to be deleted")
    assert stop_process(first) == 0 and stop_process(second) == 0
    assert tokens(out, "start") == ["t1"]


def test_two_workers_lose_nothing(sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker, tmp_path: Path,
                                  processes: list) -> None:
    out = tmp_path / "out.txt"
    wanted = [f"t{i}" for i in range(60)]
    for start in range(0, 60, 10):
        broker.send_batch("pair", [OutgoingMessage(body("record", str(out), t)) for t in wanted[start:start + 10]])
    config = sqs_config(tmp_path, sqs_server, sqs_prefix)
    workers = [start_worker(config, ["pair"]) for _ in range(2)]
    processes.extend(workers)
    wait_until(lambda: set(tokens(out)) == set(wanted), what="every job to run at least once")
    wait_until(lambda: settled(broker, "pair"), what="every message to be deleted")
    assert [stop_process(worker) for worker in workers] == [0, 0]


def test_an_idle_worker_leaves_at_once_on_sigterm(sqs_server: MotoServer, sqs_prefix: str, tmp_path: Path,
                                                   processes: list) -> None:
    status = tmp_path / "status.json"
    worker = start_worker(sqs_config(tmp_path, sqs_server, sqs_prefix, wait_time_s=20), ["idle"],
                          "--status-file", str(status))
    processes.append(worker)
    wait_until(lambda: _polled(status), what="the worker to poll")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(IDLE_EXIT_DEADLINE_S) == 0, worker_log(worker)
    assert "stopped after 0 attempt(s); 0 job(s) finished" in worker_log(worker)


def test_refused_credentials_stop_the_worker_with_one_line_and_exit_2(
        sqs_auth_server: tuple[MotoServer, dict[str, str]], tmp_path: Path, processes: list) -> None:
    server, _ = sqs_auth_server
    config = sqs_config(tmp_path, server, "auth-", access_key="wrong", secret_key="wrong")
    worker = start_worker(config, ["jobs"])
    processes.append(worker)
    assert worker.wait(60) == 2
    log = worker_log(worker)
    assert "Traceback" not in log
    [line] = [line for line in log.splitlines() if line.startswith("Error:")]
    assert "InvalidClientTokenId" in line


def test_the_aws_cli_producer_example_sends_a_job_a_worker_runs(
        sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker, tmp_path: Path, processes: list) -> None:
    out = tmp_path / "out.txt"
    broker.ensure_queue("cli")
    script = TESTS_DIR.parent / "contrib" / "producers" / "aws-cli" / "send_job.sh"
    # The AWS CLI comes with the test dependencies, next to this Python.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL=sqs_server.endpoint_url, PATH=path)
    sent = subprocess.run([str(script), sqs_prefix + "cli", "record", json.dumps([str(out), "from-cli"])],
                          env=env, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    worker = start_worker(sqs_config(tmp_path, sqs_server, sqs_prefix), ["cli"], "--burst")
    processes.append(worker)
    assert worker.wait(60) == 0, worker_log(worker)
    assert tokens(out) == ["from-cli"]
    job_id = sent.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), f"it prints the job id, not SQS's message id: {sent.stdout!r}"
    assert f"job {job_id} record on cli: attempt 1 succeeded" in worker_log(worker)


@pytest.mark.faults
def test_a_worker_started_while_sqs_is_down_waits_for_it_then_consumes(tmp_path: Path, processes: list) -> None:
    out = tmp_path / "out.txt"
    port = free_port()
    config = write_config(tmp_path / "sqjobs.conf", {
        "sqjobs": {"broker": "sqs", "jobs": "jobs_for_tests", "path": str(TESTS_DIR)},
        "sqs": {"region": REGION, "endpoint_url": f"http://127.0.0.1:{port}", "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY, "queue_prefix": "late-", "wait_time_s": 1},
    })
    worker = start_worker(config, ["jobs"])
    processes.append(worker)
    wait_until(lambda: "broker error while receiving" in worker_log(worker), what="the worker to find SQS down")
    assert worker.poll() is None, "the worker keeps running while SQS is down"
    server = start_moto_server(tmp_path, port=port)
    try:
        SQSBroker(**server.broker_options("late-")).send("jobs", body("record", str(out), "late"))
        wait_until(lambda: tokens(out) == ["late"], what="the job to run once SQS is up")
        assert stop_process(worker) == 0
    finally:
        server.stop()


@pytest.mark.faults
def test_the_worker_keeps_going_through_an_sqs_outage(tmp_path: Path, processes: list) -> None:
    out = tmp_path / "out.txt"
    server = start_moto_server(tmp_path)
    port = int(server.endpoint_url.rsplit(":", 1)[1])
    status = tmp_path / "status.json"
    try:
        worker = start_worker(sqs_config(tmp_path, server, "outage-", wait_time_s=1), ["jobs"],
                              "--status-file", str(status))
        processes.append(worker)
        wait_until(lambda: _polled(status), what="the worker to poll")
        first_poll = json.loads(status.read_text())["last_poll"]
        # A later poll means a receive went through: the worker knows its queue.
        wait_until(lambda: json.loads(status.read_text())["last_poll"] != first_poll, what="a second poll")
        server.stop()
        wait_until(lambda: "broker error while receiving" in worker_log(worker), what="the worker to see the outage")
        # SQS comes back, empty: the worker finds its queue gone and creates it again.
        server = start_moto_server(tmp_path, port=port)
        wait_until(lambda: "QueueDoesNotExist" in worker_log(worker) or "NonExistentQueue" in worker_log(worker),
                   what="the worker to find its queue gone")
        broker = SQSBroker(**server.broker_options("outage-"))
        broker.send("jobs", body("record", str(out), "after-outage"))
        wait_until(lambda: tokens(out) == ["after-outage"], what="the job sent after the outage to run")
        assert stop_process(worker) == 0
    finally:
        server.stop()


def _most_tries(window_s: float) -> int:
    """The most failed receives a worker can make in ``window_s``: one per backoff step, pauses doubling."""
    tries, elapsed_s, pause_s = 1, 0.0, ERROR_PAUSE_S
    while elapsed_s + pause_s <= window_s:
        tries += 1
        elapsed_s += pause_s
        pause_s = min(pause_s * 2, ERROR_PAUSE_MAX_S)
    return tries


@pytest.mark.faults
def test_an_sqs_outage_logs_one_warning_per_backoff_step_and_one_line_when_it_ends(
        tmp_path: Path, sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker, processes: list) -> None:
    out = tmp_path / "out.txt"
    status = tmp_path / "status.json"
    with TcpProxy(urlsplit(sqs_server.endpoint_url).port or 80).start() as proxy:
        config = sqs_config(tmp_path, sqs_server, sqs_prefix, wait_time_s=1,
                            endpoint_url=f"http://127.0.0.1:{proxy.port}")
        worker = start_worker(config, ["jobs"], "--status-file", str(status))
        processes.append(worker)
        wait_until(lambda: _polled(status), what="the worker to poll")
        first_poll = json.loads(status.read_text())["last_poll"]
        wait_until(lambda: json.loads(status.read_text())["last_poll"] != first_poll, what="a second poll")
        before = len(worker_log(worker))
        proxy.stop()  # SQS cut off: its connections closed, its port refusing
        down_at = time.monotonic()

        def outage_lines() -> list[str]:
            return worker_log(worker)[before:].splitlines()

        wait_until(lambda: sum("broker error while receiving" in line for line in outage_lines()) >= 3,
                   timeout_s=120, what="three failed receives")
        # Sent only now: the long poll cut off by the outage may have gone on in SQS for its
        # wait_time_s and taken a message sent earlier (hidden then for its visibility timeout).
        broker.send("jobs", body("record", str(out), "sent-during-outage"))
        proxy.start()
        wait_until(lambda: any("reachable again after" in line for line in outage_lines()),
                   what="the worker to log that SQS is back")
        window_s = time.monotonic() - down_at
        wait_until(lambda: tokens(out) == ["sent-during-outage"], what="the job sent during the outage to run")
        assert stop_process(worker) == 0
    lines = outage_lines()
    recovery = next(index for index, line in enumerate(lines) if "reachable again after" in line)
    during = lines[:recovery + 1]
    warnings = [line for line in during if "WARNING" in line and "broker error while receiving" in line]
    assert len(warnings) >= 3
    assert len(during) <= _most_tries(window_s) + 2, "\n".join(during)
    assert len(during) == len(warnings) + 1, "\n".join(during)  # nothing but the warnings and the recovery line
    assert "INFO" in lines[recovery] and f"({len(warnings)} failed tries)" in lines[recovery]
    assert "trying again in 1 s" in warnings[0] and "trying again in 2 s" in warnings[1]
    assert "Traceback" not in worker_log(worker)


@pytest.mark.tools("php")
def test_the_body_of_the_php_producer_example_runs(sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker,
                                                   tmp_path: Path, processes: list) -> None:
    out = tmp_path / "out.txt"
    example = TESTS_DIR.parent / "contrib" / "producers" / "php" / "send_job.php"
    code = f"include {json.dumps(str(example))}; echo sqjobs_body('record', [{json.dumps(str(out))}, 'from-php']);"
    made = subprocess.run(["php", "-r", code], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    broker.send("php-example", made.stdout.strip())  # what sqjobs_send() hands to SendMessage
    worker = start_worker(sqs_config(tmp_path, sqs_server, sqs_prefix), ["php-example"], "--burst")
    processes.append(worker)
    assert worker.wait(60) == 0, worker_log(worker)
    assert tokens(out) == ["from-php"]


def payload_filling(limit_bytes: int, path: str) -> str:
    """The payload that makes ``poison.fails_loudly(path, payload)``'s body exactly ``limit_bytes`` long."""
    empty = encode(JobMessage(name="poison.fails_loudly", args=[path, ""], id="0" * 32))
    text_bytes = len(base64.b64decode(empty))
    assert limit_bytes % 4 == 0, "base64 of a JSON text whose length is a multiple of 3"
    return "x" * (limit_bytes // 4 * 3 - text_bytes)


@pytest.mark.faults
def test_a_failed_job_just_under_the_size_limit_is_dead_lettered_once_with_its_reason(
        sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker, tmp_path: Path, processes: list) -> None:
    from tests import poison_jobs_for_tests

    out = tmp_path / "runs.txt"
    config = write_config(tmp_path / "sqjobs.conf", {
        "sqjobs": {"broker": "sqs", "database": f"sqlite:///{tmp_path / 'status.db'}",
                   "jobs": "poison_jobs_for_tests", "path": str(TESTS_DIR)},
        "sqs": sqs_server.sqs_section(sqs_prefix),
    })
    sqjobs.configure(str(config))
    limit = broker.max_body_bytes
    assert limit == 256 * 1024 - DEAD_LETTER_ROOM_BYTES
    payload = payload_filling(limit, str(out))
    with pytest.raises(MessageTooLargeError, match=f"over the limit of {limit} bytes \\(the broker's limit of "
                                                   f"262144 bytes less {DEAD_LETTER_ROOM_BYTES} kept for the reason"):
        poison_jobs_for_tests.fails_loudly.delay(str(out), payload + "x")
    handle = poison_jobs_for_tests.fails_loudly.delay(str(out), payload)
    worker = start_worker(config, ["default"], "--burst")
    processes.append(worker)
    assert worker.wait(120) == 0, worker_log(worker)
    assert len(read_lines(out)) == 1, "run exactly once"
    [dead] = receive_all(broker, "default-dead", 1)
    assert decode(dead.body, "").id == handle.id and len(dead.body) == limit
    reason = dead.attributes[REASON_ATTRIBUTE]
    assert reason.startswith("failed after 1 attempt(s): ValueError: cannot use xxx") and reason.endswith(" [...]")
    assert len(reason.encode()) <= MAX_REASON_BYTES
    assert "could not settle" not in worker_log(worker)
    wait_until(lambda: settled(broker, "default"), what="the original to be deleted")


def oversized_job_body(path: str) -> str:
    """A plain-JSON ``poison.fails_loudly`` message exactly SQS's 256 KiB: a foreign producer may send it,
    but no dead-letter copy of it can carry a reason."""
    empty = json.dumps({"name": "poison.fails_loudly", "args": [path, ""]})
    text = json.dumps({"name": "poison.fails_loudly", "args": [path, "x" * (256 * 1024 - len(empty))]})
    assert len(text) == 256 * 1024
    return text


def poison_config(tmp_path: Path, server: MotoServer, prefix: str) -> Path:
    """A config on the test server importing the test jobs and the poison jobs."""
    return write_config(tmp_path / "sqjobs.conf", {
        "sqjobs": {"broker": "sqs", "database": f"sqlite:///{tmp_path / 'status.db'}",
                   "jobs": "jobs_for_tests, poison_jobs_for_tests", "path": str(TESTS_DIR)},
        "sqs": server.sqs_section(prefix),
    })


@pytest.mark.faults
def test_a_dead_letter_move_that_failed_is_not_logged_as_moved(
        sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker, tmp_path: Path, processes: list) -> None:
    runs = tmp_path / "runs.txt"
    broker.send("default", oversized_job_body(str(runs)))
    worker = start_worker(poison_config(tmp_path, sqs_server, sqs_prefix), ["default"], "--burst")
    processes.append(worker)
    assert worker.wait(120) == 0, worker_log(worker)
    assert len(read_lines(runs)) == 1
    assert "leaves no room for the reason" in worker_log(worker)
    assert "moved to the dead-letter queue" not in worker_log(worker)


@pytest.mark.faults
def test_a_message_whose_dead_lettering_failed_is_not_run_again(
        sqs_server: MotoServer, sqs_prefix: str, broker: SQSBroker, tmp_path: Path, processes: list) -> None:
    runs, out = tmp_path / "runs.txt", tmp_path / "out.txt"
    broker.send("default", oversized_job_body(str(runs)))
    # Visible 3 s later: by then the poison message was delivered again twice (visibility 1 s).
    broker.send("default", body("record", str(out), "good"), delay_s=3)
    worker = start_worker(poison_config(tmp_path, sqs_server, sqs_prefix), ["default"], "--visibility-timeout", "1",
                          "--max-jobs", "2")
    processes.append(worker)
    assert worker.wait(120) == 0, worker_log(worker)
    assert len(read_lines(runs)) == 1, "the failed job ran again:\n" + worker_log(worker)[-3000:]
    assert tokens(out) == ["good"]
    stats = broker.stats("default")
    assert stats.visible + stats.in_flight + stats.delayed + stats.dead >= 1, "the poison message is not lost"
