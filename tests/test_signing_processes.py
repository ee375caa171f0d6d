"""Signed messages end to end: real worker processes, and real PHP, Node and shell producers.

A worker with keys (``SQJOBS_SIGNING_KEYS``, as in production) never runs an
unsigned, forged or unknown-key message: the job's record file proves it,
``<queue>-dead`` holds each with its reason, the log counts them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from sqjobs.app import App
from sqjobs.brokers.base import REASON_ATTRIBUTE
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.brokers.sqs import SQSBroker
from sqjobs.config import load
from sqjobs.message import JobMessage, decode, encode
from sqjobs.signing import KEYS_ENV, Signer, key_id
from sqjobs.status.store import get_store
from tests import jobs_for_tests as jobs
from tests.sqs_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from tests.support import TESTS_DIR, read_lines, receive_all, sqlite_config, start_worker, worker_log, write_config

KEY = "the-workers-key-" + "k" * 24
OLD_KEY = "the-previous-key-" + "p" * 24
WRONG_KEY = "a-producer-with-the-wrong-key-" + "w" * 10
PRODUCERS = TESTS_DIR.parent / "contrib" / "producers"
#: Arguments that exercise the canonical form: non-ASCII, astral characters, nested objects, a slash, DEL.
ODD_TEXT = "é/😀\x7f"


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test started; any still alive at the end are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def tokens(record: Path) -> list[str]:
    """The tokens the record job wrote (one line each: ``TOKEN PID``)."""
    return [line.split()[0] for line in read_lines(record)]


def dead_reasons(broker: Any, queue: str, expected: int) -> dict[str, str]:
    """Job id -> dead-letter reason of the ``expected`` messages in ``queue``'s dead-letter queue."""
    found = receive_all(broker, f"{queue}-dead", expected)
    return {decode(m.body, m.message_id).id: m.attributes[REASON_ATTRIBUTE] for m in found}


def run_worker(config: Path, queues: list[str], processes: list, keys: str | None) -> subprocess.Popen:
    """A ``sqjobs worker --burst`` with ``keys`` in SQJOBS_SIGNING_KEYS (none: signing off); wait for it to end."""
    env = {KEYS_ENV: keys or ""}
    worker = start_worker(config, queues, "--burst", env=env)
    processes.append(worker)
    assert worker.wait(60) == 0, worker_log(worker)
    return worker


def test_a_signing_worker_runs_signed_jobs_only_and_dead_letters_the_rest_with_their_reasons(
        tmp_path: Path, processes: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    record = tmp_path / "record.txt"
    config = sqlite_config(tmp_path)
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    plain = load(str(config))
    (tmp_path / "producer").mkdir()
    producer_config = sqlite_config(tmp_path / "producer", signing_keys=OLD_KEY, track="none")
    signing = App(load(str(producer_config)), broker=broker)
    unsigned_app = App(plain, broker=broker)
    signing.producer.send(jobs.record_job.job_class, [str(record), "good"], job_id="good")
    unsigned_app.producer.send(jobs.record_job.job_class, [str(record), "unsigned"], job_id="unsigned")
    # a tracked job enqueued unsigned: its PENDING row must not become STARTED
    unsigned_app.producer.send(jobs.tracked_add.job_class, [1, 2], job_id="tracked")
    forged = JobMessage(name="record", args=[str(record), "forged"], id="forged")
    Signer([OLD_KEY]).sign(forged)
    forged.args = [str(record), "forged-altered"]
    broker.send("default", encode(forged))
    stranger = JobMessage(name="record", args=[str(record), "stranger"], id="stranger")
    Signer([WRONG_KEY]).sign(stranger)
    broker.send("default", encode(stranger))

    worker = run_worker(config, ["default"], processes, f"{KEY}, {OLD_KEY}")  # rotation: old key second

    assert tokens(record) == ["good"]
    reasons = dead_reasons(broker, "default", 4)
    assert sorted(reasons) == ["forged", "stranger", "tracked", "unsigned"]
    assert reasons["unsigned"].startswith("unsigned: no sqjobs-signature header")
    assert reasons["tracked"].startswith("unsigned")
    assert reasons["forged"].startswith("bad signature: the message does not match its signature")
    assert reasons["stranger"].startswith(f'unknown key id "{key_id(WRONG_KEY.encode())}"')
    log = worker_log(worker)
    assert f"signing is on: only messages signed with key id(s) {key_id(KEY.encode())}, " in log
    assert "(4 message(s) refused for their signature since the worker started)" in log
    assert get_store(plain.database_url).status_of("tracked").value == "PENDING"
    assert broker.stats("default").visible == 0


def test_a_worker_without_keys_runs_signed_messages_and_says_signing_is_off(
        tmp_path: Path, processes: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    record = tmp_path / "record.txt"
    config = sqlite_config(tmp_path)
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    message = JobMessage(name="record", args=[str(record), "signed"])
    Signer([KEY]).sign(message)
    broker.send("default", encode(message))
    worker = run_worker(config, ["default"], processes, None)
    assert tokens(record) == ["signed"]
    assert "signing is off: messages run without a signature check" in worker_log(worker)


@pytest.mark.parametrize("command", ["sqjobs", "sqjobsd"])
def test_a_key_shorter_than_32_bytes_stops_the_worker_and_the_daemon_at_start_up(
        tmp_path: Path, command: str) -> None:
    config = sqlite_config(tmp_path)
    args = ["worker", "-c", str(config), "--burst"] if command == "sqjobs" else ["start", "-c", str(config)]
    env = dict(os.environ, **{KEYS_ENV: f"{KEY}, short-key"})
    done = subprocess.run([sys.executable, "-m", command, *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"Error: environment variable {KEYS_ENV}: key 2 of 2 is 9 bytes; a signing key "
                                   "must be at least 32 bytes (make one with: python3 -c 'import secrets; "
                                   "print(secrets.token_urlsafe(32))')")
    assert "short-key" not in done.stdout + done.stderr
    assert not (tmp_path / "run").exists(), "sqjobsd wrote nothing"


# -- producers in other languages ------------------------------------------------------------------


def foreign_body(producer: str, key: str, name: str, args: list, kwargs: dict) -> str:
    """The body the PHP, Node or shell example makes, signed with ``key``, from a real process."""
    env = dict(os.environ, SQJOBS_SIGNING_KEY=key)
    if producer == "php":
        code = ("include $argv[1]; echo sqjobs_body($argv[2], json_decode($argv[3], true), "
                "json_decode($argv[4], true), getenv('SQJOBS_SIGNING_KEY'));")
        command = ["php", "-r", code, "--", str(PRODUCERS / "php" / "send_job.php")]
    elif producer == "node":
        command = ["node", str(PRODUCERS / "node" / "job_body.mjs")]
    else:
        command = ["sh", str(PRODUCERS / "aws-cli" / "job_body.sh")]
    made = subprocess.run([*command, name, json.dumps(args), json.dumps(kwargs)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.mark.parametrize("producer", [pytest.param("php", marks=pytest.mark.tools("php")),
                                      pytest.param("node", marks=pytest.mark.tools("node")),
                                      pytest.param("shell", marks=pytest.mark.tools("jq", "openssl"))])
def test_a_foreign_producer_signs_as_the_worker_checks_and_a_wrong_key_is_dead_lettered(
        producer: str, tmp_path: Path, processes: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    record = tmp_path / "record.txt"
    config = sqlite_config(tmp_path)
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    token = f"from-{producer}"
    good = foreign_body(producer, KEY, "record_kwargs", [str(record)],
                        {"token": token, "extra": {"b": [1, 2.5, ODD_TEXT], "a": None}})
    wrong = foreign_body(producer, WRONG_KEY, "record", [str(record), "wrong-key"], {})
    broker.send("default", good)
    broker.send("default", wrong)
    run_worker(config, ["default"], processes, KEY)
    assert tokens(record) == [token]
    (reason,) = dead_reasons(broker, "default", 1).values()
    assert reason.startswith(f'unknown key id "{key_id(WRONG_KEY.encode())}"')


@pytest.mark.tools("jq", "openssl")
def test_on_sqs_the_aws_cli_example_signs_and_a_forged_message_is_dead_lettered(
        sqs_server: MotoServer, sqs_prefix: str, tmp_path: Path, processes: list,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    record = tmp_path / "record.txt"
    broker = SQSBroker(**sqs_server.broker_options(sqs_prefix))
    broker.ensure_queue("signed")
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL=sqs_server.endpoint_url, PATH=path,
               SQJOBS_SIGNING_KEY=KEY)
    sent = subprocess.run([str(PRODUCERS / "aws-cli" / "send_job.sh"), sqs_prefix + "signed", "record",
                           json.dumps([str(record), "from-cli"])], env=env, capture_output=True, text=True,
                          timeout=60)
    assert sent.returncode == 0, sent.stderr
    forged = JobMessage(name="record", args=[str(record), "forged"], id="forged")
    Signer([KEY]).sign(forged)
    forged.args = [str(record), "forged-altered"]
    broker.send("signed", encode(forged))
    config = write_config(tmp_path / "sqjobs.conf", {
        "sqjobs": {"broker": "sqs", "database": f"sqlite:///{tmp_path / 'status.db'}", "jobs": "jobs_for_tests",
                   "path": str(TESTS_DIR)},
        "sqs": sqs_server.sqs_section(sqs_prefix, wait_time_s=1),
    })
    try:
        run_worker(config, ["signed"], processes, KEY)
        assert tokens(record) == ["from-cli"]
        assert list(dead_reasons(broker, "signed", 1).items()) == [
            ("forged", f"bad signature: the message does not match its signature (key id {key_id(KEY.encode())}): "
                       "forged or altered")]
    finally:
        broker.close()
