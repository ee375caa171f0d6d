"""Signed messages, in one process: the canonical form, rotation, refused keys, the producer and the runner."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
from pathlib import Path

import pytest

import sqjobs
from sqjobs.app import App
from sqjobs.brokers.base import REASON_ATTRIBUTE
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.config import load
from sqjobs.errors import ConfigError
from sqjobs.message import JobMessage, decode, encode
from sqjobs.middleware.base import Middleware
from sqjobs.signing import (
    KEY_ID_HEADER,
    KEYS_ENV,
    SIGNATURE_HEADER,
    Signer,
    as_signing_keys,
    canonical_form,
    configured_keys,
    key_id,
)
from sqjobs.status.store import get_store
from sqjobs.worker.loop import Worker
from tests import jobs_for_tests as jobs
from tests.support import read_lines, sqlite_config

OLD_KEY = "old-key-" + "o" * 32
NEW_KEY = "new-key-" + "n" * 32
OTHER_KEY = "someone-else-" + "x" * 32


def signed(signer: Signer, message: JobMessage) -> JobMessage:
    """``message`` signed, then sent through the wire format and read back as a worker reads it."""
    signer.sign(message)
    return decode(encode(message), "broker-id")


# -- the canonical form --------------------------------------------------------------------


def test_the_canonical_form_is_sorted_ascii_json_without_the_signature_and_the_version() -> None:
    message = JobMessage(name="send", args=[1, "é😀", 1.5, {"b": 1, "a": []}], kwargs={"z": "\x7f"}, id="j1",
                         extra={"scheduled_for": "2026-01-01T00:00:00+00:00", "v": 1},
                         headers={"trace": "t", SIGNATURE_HEADER: "x", KEY_ID_HEADER: "y"})
    assert canonical_form(message) == (
        b'{"args":[1,"\\u00e9\\ud83d\\ude00",1.5,{"a":[],"b":1}],"headers":{"trace":"t"},"id":"j1",'
        b'"kwargs":{"z":"\\u007f"},"name":"send","scheduled_for":"2026-01-01T00:00:00+00:00"}')


def test_without_other_headers_the_canonical_form_has_no_headers_and_absent_fields_are_their_defaults() -> None:
    body = json.dumps({"id": "j2", "name": "n", "kwargs": []})  # PHP's empty kwargs; no args
    assert canonical_form(decode(body, "x")) == b'{"args":[],"id":"j2","kwargs":{},"name":"n"}'


def test_the_signature_is_hmac_sha256_of_the_canonical_form_and_the_key_id_the_start_of_its_sha256() -> None:
    message = JobMessage(name="n", args=[1], id="j3")
    Signer([NEW_KEY]).sign(message)
    assert message.headers[KEY_ID_HEADER] == hashlib.sha256(NEW_KEY.encode()).hexdigest()[:8] == key_id(
        NEW_KEY.encode())
    expected = hmac.new(NEW_KEY.encode(), b'{"args":[1],"id":"j3","kwargs":{},"name":"n"}', hashlib.sha256)
    assert message.headers[SIGNATURE_HEADER] == expected.hexdigest()


@pytest.mark.parametrize("change", ["name", "args", "kwargs", "id", "scheduled_for", "header", "signature"])
def test_any_change_to_a_signed_message_is_a_bad_signature(change: str) -> None:
    signer = Signer([NEW_KEY])
    message = signed(signer, JobMessage(name="pay", args=[10], kwargs={"to": "a"}, id="j4",
                                        extra={"scheduled_for": "t1"}, headers={"trace": "t"}))
    assert signer.verify(message) is None
    if change == "name":
        message.name = "refund"
    elif change == "args":
        message.args = [10_000]
    elif change == "kwargs":
        message.kwargs["to"] = "b"
    elif change == "id":
        message.id = "j5"
    elif change == "scheduled_for":
        message.extra["scheduled_for"] = "t2"
    elif change == "header":
        message.headers["trace"] = "u"
    else:
        message.headers[SIGNATURE_HEADER] = "0" * 64
    reason = signer.verify(message)
    assert reason is not None and reason.startswith("bad signature")


def test_unsigned_and_unknown_key_messages_are_refused_with_reasons_that_say_which() -> None:
    worker_side = Signer([NEW_KEY])
    unsigned = decode(encode(JobMessage(name="n", id="j6")), "x")
    assert (worker_side.verify(unsigned) or "").startswith("unsigned")
    foreign = signed(Signer([OTHER_KEY]), JobMessage(name="n", id="j7"))
    reason = worker_side.verify(foreign) or ""
    assert reason.startswith(f'unknown key id "{key_id(OTHER_KEY.encode())}"')
    assert key_id(NEW_KEY.encode()) in reason


def test_the_signature_is_compared_in_constant_time() -> None:
    """verify() compares with hmac.compare_digest, and never with == or != on the signature."""
    source = Path(sqjobs.signing.__file__).read_text()
    verify = next(node for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.FunctionDef) and node.name == "verify")
    calls = [ast.unparse(node.func) for node in ast.walk(verify) if isinstance(node, ast.Call)]
    assert "hmac.compare_digest" in calls
    compared = [ast.unparse(node) for node in ast.walk(verify) if isinstance(node, ast.Compare)
                and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops)]
    assert not [text for text in compared if "given" in text or "expected" in text], compared


# -- keys: rotation, refusal ---------------------------------------------------------------------


def test_rotation_the_first_key_signs_and_every_key_verifies() -> None:
    before, during, after = Signer([OLD_KEY]), Signer([OLD_KEY, NEW_KEY]), Signer([NEW_KEY, OLD_KEY])
    final = Signer([NEW_KEY])
    from_old = signed(before, JobMessage(name="n", id="a"))
    from_new = signed(after, JobMessage(name="n", id="b"))
    assert from_old.headers[KEY_ID_HEADER] == key_id(OLD_KEY.encode())
    assert from_new.headers[KEY_ID_HEADER] == key_id(NEW_KEY.encode())
    # step 1: the new key second everywhere -- old messages verify everywhere, new ones too
    assert during.verify(from_old) is None and during.verify(from_new) is None
    # step 2: the new key first -- what old-key producers still send verifies
    assert after.verify(from_old) is None
    # step 3: the old key dropped -- its messages are refused by key id
    assert (final.verify(from_old) or "").startswith("unknown key id")
    assert final.verify(from_new) is None


def test_keys_shorter_than_32_bytes_are_refused_by_position_never_shown() -> None:
    with pytest.raises(ValueError, match="key 2 of 2 is 31 bytes; a signing key must be at least 32 bytes"):
        as_signing_keys(f"{NEW_KEY}, {'s' * 31}")
    assert as_signing_keys(f"{NEW_KEY},\n{OLD_KEY}") == (NEW_KEY, OLD_KEY)
    assert as_signing_keys("") == ()
    assert len("é" * 16) < 32 and as_signing_keys("é" * 16) == ("é" * 16,)  # bytes, not characters


def test_a_short_key_in_the_config_file_names_file_section_and_key_and_not_the_key(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, signing_keys=f"{NEW_KEY}, tooshortsecret")
    with pytest.raises(ConfigError) as caught:
        load(str(config))
    text = str(caught.value)
    assert text.startswith(f"{config}: [sqjobs] signing_keys = (not shown: a secret): key 2 of 2 is 14 bytes")
    assert "tooshortsecret" not in text and NEW_KEY not in text


def test_the_environment_wins_over_the_file_and_a_short_key_there_names_the_variable() -> None:
    assert configured_keys((OLD_KEY,), {KEYS_ENV: f"{NEW_KEY}, {OLD_KEY}"}) == (NEW_KEY, OLD_KEY)
    assert configured_keys((OLD_KEY,), {KEYS_ENV: "  "}) == (OLD_KEY,)
    with pytest.raises(ConfigError, match=f"^environment variable {KEYS_ENV}: key 1 of 1 is 5 bytes"):
        configured_keys((OLD_KEY,), {KEYS_ENV: "short"})


# -- the producer and eager mode -------------------------------------------------------------------


class AddsHeader(Middleware):
    """A middleware that adds a header at enqueue: the signature must cover it."""

    def before_enqueue(self, message: JobMessage) -> None:
        message.headers["trace"] = "from-middleware"


def test_the_producer_signs_after_the_middleware_so_their_headers_are_covered(tmp_path: Path) -> None:
    settings = load(str(sqlite_config(tmp_path, signing_keys=f"{NEW_KEY}, {OLD_KEY}", track="none")))
    broker = MemoryBroker()
    app = App(settings, broker=broker, middleware=[AddsHeader()])
    app.producer.send(jobs.record_job.job_class, ["path", "t"])
    (received,) = broker.receive("default", 10, 0, 30)
    message = decode(received.body, received.message_id)
    assert message.headers["trace"] == "from-middleware"
    assert message.headers[KEY_ID_HEADER] == key_id(NEW_KEY.encode())
    checker = Signer([OLD_KEY, NEW_KEY])
    assert checker.verify(message) is None
    message.headers["trace"] = "changed on the way"
    assert (checker.verify(message) or "").startswith("bad signature")


def test_without_keys_nothing_is_signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    broker = MemoryBroker()
    app = App(load(str(sqlite_config(tmp_path, track="none"))), broker=broker)
    assert app.signer is None
    app.producer.send(jobs.record_job.job_class, ["path", "t"])
    (received,) = broker.receive("default", 10, 0, 30)
    assert SIGNATURE_HEADER not in decode(received.body, received.message_id).headers


def test_eager_mode_signs_and_verifies_what_it_runs(tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    sqjobs.configure(str(sqlite_config(tmp_path, broker="eager://", signing_keys=NEW_KEY)))
    jobs.record_job.delay(str(record), "eager")
    assert [line.split()[0] for line in read_lines(record)] == ["eager"]


# -- the runner: what a worker with keys does ----------------------------------------------------------


class Watches(Middleware):
    """Notes every before_run and after_dead_letter it sees."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.dead: list[object] = []

    def before_run(self, job: object, message: JobMessage) -> None:
        self.runs.append(message.id)

    def after_dead_letter(self, message: JobMessage | str, reason: str) -> None:
        self.dead.append(message)


def test_a_worker_with_keys_dead_letters_what_does_not_verify_before_any_middleware_or_status_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    record = tmp_path / "record.txt"
    config = sqlite_config(tmp_path, signing_keys=NEW_KEY, track="all")
    settings = load(str(config))
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    watcher = Watches()
    worker_app = App(settings, broker=broker, middleware=[watcher])
    good = worker_app.producer.send(jobs.record_job.job_class, [str(record), "good"], job_id="good")
    forged = JobMessage(name="record", args=[str(record), "forged"], id="forged")
    Signer([NEW_KEY]).sign(forged)
    forged.args = [str(record), "forged-changed"]
    broker.send("default", encode(forged))
    # a genuine job's id: a forged message that names it must not change its row
    get_store(settings.database_url).enqueued("victim", "record", "default")
    broker.send("default", encode(JobMessage(name="record", args=[str(record), "unsigned"], id="victim")))
    other = JobMessage(name="record", args=[str(record), "other-key"], id="other")
    Signer([OTHER_KEY]).sign(other)
    broker.send("default", encode(other))
    worker = Worker(worker_app, ["default"], isolation="none", wait_s=0)
    assert worker.run_once() == 4
    assert [line.split()[0] for line in read_lines(record)] == ["good"]
    assert watcher.runs == [good.id]
    dead = {decode(m.body, m.message_id).id: m.attributes[REASON_ATTRIBUTE]
            for m in broker.receive("default-dead", 10, 0, 30)}
    assert sorted(dead) == ["forged", "other", "victim"]
    assert dead["forged"].startswith("bad signature")
    assert dead["victim"].startswith("unsigned")
    assert dead["other"].startswith("unknown key id")
    assert all(isinstance(item, str) for item in watcher.dead), "raw bodies, not messages to be believed"
    assert worker.refused_unverified == 3
    store = get_store(settings.database_url)
    assert store.status_of("victim").value == "PENDING"
    assert store.status_of("forged") is None and store.status_of("other") is None
