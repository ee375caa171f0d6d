"""What is particular to the SQS broker, against a real SQS endpoint (moto's server over HTTP).

The broker contract itself runs on SQS in test_broker_contract.py; these tests
cover batching, request counts, FIFO queues, delays, errors and the
interruptible long poll.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest

import sqjobs
from sqjobs.brokers import create_broker
from sqjobs.brokers.base import ORIGIN_ATTRIBUTE, REASON_ATTRIBUTE, OutgoingMessage
from sqjobs.brokers.sqs import MAX_BATCH_BYTES, SQSBroker
from sqjobs.brokers.sqs_limits import entry_bytes
from sqjobs.config import load
from sqjobs.errors import (
    BrokerAuthError,
    BrokerConnectionError,
    BrokerError,
    ConfigError,
    DelayTooLongError,
    MessageTooLargeError,
)
from sqjobs.message import decode
from sqjobs.worker.loop import Worker
from tests import jobs_for_tests
from tests.sqs_server import REGION, MotoServer, free_port, unique_prefix
from tests.support import read_lines, receive_all, send, send_many, wait_until, write_config


@pytest.fixture
def broker(sqs_server: MotoServer, sqs_prefix: str) -> Iterator[SQSBroker]:
    """A new SQS broker on its own queue prefix."""
    instance = SQSBroker(**sqs_server.broker_options(sqs_prefix))
    yield instance
    instance.close()


def raw_client(server: MotoServer) -> Any:
    """A plain boto3 SQS client on the test server, as a foreign producer would use."""
    options = server.broker_options("")
    return boto3.client("sqs", region_name=REGION, endpoint_url=server.endpoint_url,
                        aws_access_key_id=options["access_key"], aws_secret_access_key=options["secret_key"])


def drain(broker: SQSBroker, queue: str, expected: int, visibility_timeout_s: float = 60) -> list:
    """Receive until ``expected`` messages came, with short polls (request counts stay exact)."""
    return receive_all(broker, queue, expected, visibility_timeout_s, wait_s=0)


def test_send_batch_uses_one_request_per_ten_messages(broker: SQSBroker) -> None:
    broker.ensure_queue("jobs")
    before = broker.requests["SendMessageBatch"]
    ids = broker.send_batch("jobs", [OutgoingMessage(f"m{i}") for i in range(25)])
    assert broker.requests["SendMessageBatch"] - before == 3
    assert len(set(ids)) == 25 and all(ids)
    assert sorted(m.body for m in drain(broker, "jobs", 25)) == sorted(f"m{i}" for i in range(25))


def test_send_batch_splits_at_256_kib(broker: SQSBroker) -> None:
    broker.ensure_queue("big")
    body = "x" * (100 * 1024)
    before = broker.requests["SendMessageBatch"]
    broker.send_batch("big", [OutgoingMessage(body + str(i)) for i in range(5)])
    assert broker.requests["SendMessageBatch"] - before == 3  # 2 + 2 + 1: three do not fit in 256 KiB
    assert len(drain(broker, "big", 5)) == 5


def test_a_message_over_256_kib_is_refused_before_anything_is_sent(broker: SQSBroker) -> None:
    broker.ensure_queue("big")
    with pytest.raises(MessageTooLargeError):
        broker.send_batch("big", [OutgoingMessage("small"), OutgoingMessage("y" * (MAX_BATCH_BYTES + 1))])
    assert broker.requests["SendMessageBatch"] == 0
    sqjobs.configure(broker=broker)
    with pytest.raises(MessageTooLargeError):
        jobs_for_tests.record_job.delay("p", "z" * MAX_BATCH_BYTES)
    assert broker.requests["SendMessageBatch"] == 0


def test_enqueue_many_and_the_worker_use_batches(broker: SQSBroker, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    job_class = jobs_for_tests.record_job.job_class
    send_many(broker, job_class, [((str(out), f"t{i}"), {}) for i in range(30)], queue="work")
    assert broker.requests["SendMessageBatch"] == 3
    consumer = Worker(broker, ["work"], prefetch=10, visibility_timeout_s=30)
    wait_until(lambda: consumer.run_once(0) == 0 and len(read_lines(out)) >= 30, what="30 jobs to run")
    broker.close()
    assert sorted(line.split()[0] for line in read_lines(out)) == sorted(f"t{i}" for i in range(30))
    assert broker.requests["DeleteMessage"] == 0
    assert broker.requests["DeleteMessageBatch"] <= 4
    assert broker.requests["ReceiveMessage"] <= 6
    assert raw_client_count(broker, "work") == 0


def raw_client_count(broker: SQSBroker, queue: str) -> int:
    """Messages left in ``queue`` (visible or in flight), asked with a client of its own."""
    client = boto3.client("sqs", region_name=REGION, endpoint_url=broker.endpoint_url,
                          aws_access_key_id=broker.access_key, aws_secret_access_key=broker.secret_key)
    url = client.get_queue_url(QueueName=broker.queue_prefix + queue)["QueueUrl"]
    values = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(values["ApproximateNumberOfMessages"]) + int(values["ApproximateNumberOfMessagesNotVisible"])


def test_queue_urls_are_cached_per_instance(sqs_server: MotoServer, broker: SQSBroker) -> None:
    for i in range(3):
        broker.send("jobs", f"m{i}")
        broker.receive("jobs", 10, 0, 1)
        broker.stats("jobs")
    assert broker.requests["CreateQueue"] == 2  # the queue and its dead-letter queue, once
    assert broker.requests["GetQueueUrl"] == 0
    other = SQSBroker(**sqs_server.broker_options(broker.queue_prefix))
    other.send("jobs", "again")
    assert other.requests["CreateQueue"] == 2  # nothing shared between instances
    other.close()


def test_an_idle_long_poll_is_one_request(broker: SQSBroker) -> None:
    broker.ensure_queue("idle")
    before = broker.request_count
    assert broker.receive("idle", 10, 1, 30) == []
    assert broker.request_count - before == 1


def test_interrupt_returns_at_once_and_a_late_message_is_handed_back(
        sqs_server: MotoServer, broker: SQSBroker) -> None:
    broker.ensure_queue("idle")
    result: list = []
    receiving = threading.Thread(target=lambda: result.append(broker.receive("idle", 10, 20, 600)))
    receiving.start()
    wait_until(lambda: broker.requests["ReceiveMessage"] >= 1, what="the long poll to start")
    broker.interrupt()
    receiving.join(10)
    assert not receiving.is_alive() and result == [[]]
    # The abandoned poll is still open on the server and takes this message, hidden for 600 s...
    producer = SQSBroker(**sqs_server.broker_options(broker.queue_prefix))
    producer.send("idle", "late")
    # ...and hands it back at once, so another consumer gets it well before that.
    [message] = drain(producer, "idle", 1)
    assert message.body == "late"
    producer.close()


def test_delay_maps_to_delay_seconds_and_over_900_s_is_refused_by_the_broker(broker: SQSBroker) -> None:
    broker.send("later", "x", delay_s=900)
    broker.send("later", "y", delay_s=1)
    assert broker.stats("later").delayed == 2
    [message] = drain(broker, "later", 1)
    assert message.body == "y"
    with pytest.raises(DelayTooLongError):
        broker.send("later", "z", delay_s=901)
    with pytest.raises(DelayTooLongError):
        send(broker, jobs_for_tests.record_job.job_class, ("p", "t"), queue="later", delay_s=400 * 86400)
    stats = broker.stats("later")
    assert (stats.delayed, stats.in_flight, stats.visible) == (1, 1, 0)  # nothing more was sent


def test_fifo_queue_keeps_order_groups_and_deduplication(sqs_server: MotoServer, broker: SQSBroker) -> None:
    job_class = jobs_for_tests.record_job.job_class
    handles = send_many(broker, job_class, [(("p", f"t{i}"), {}) for i in range(12)], queue="orders.fifo")
    send(broker, job_class, ("p", "dup"), queue="orders.fifo", job_id=handles[0].id)  # same dedup id: dropped
    got: list = []

    def take() -> bool:
        batch = broker.receive("orders.fifo", 10, 0, 60)
        got.extend(batch)
        broker.delete_batch("orders.fifo", [m.receipt for m in batch])  # frees the group for the rest
        return len(got) >= 12

    wait_until(take, what="12 FIFO messages")
    assert [decode(m.body, m.message_id).args[1] for m in got] == [f"t{i}" for i in range(12)]
    assert {m.group_id for m in got} == {job_class.name}
    assert broker.receive("orders.fifo", 10, 1) == []
    names = [url.rsplit("/", 1)[-1] for url in raw_client(sqs_server).list_queues(
        QueueNamePrefix=broker.queue_prefix)["QueueUrls"]]
    assert broker.queue_prefix + "orders-dead.fifo" in names
    assert broker.queues() == ["orders.fifo"]


def test_fifo_group_is_blocked_while_one_of_its_messages_is_in_flight(broker: SQSBroker) -> None:
    broker.send_batch("g.fifo", [OutgoingMessage("a1", group_id="a", dedup_id="a1"),
                                 OutgoingMessage("a2", group_id="a", dedup_id="a2"),
                                 OutgoingMessage("b1", group_id="b", dedup_id="b1")])
    first = broker.receive("g.fifo", 1, 0, 60)
    assert [m.body for m in first] == ["a1"]
    rest = drain(broker, "g.fifo", 1)
    assert [m.body for m in rest] == ["b1"]  # a2 waits for a1
    broker.delete_batch("g.fifo", [first[0].receipt])
    assert [m.body for m in drain(broker, "g.fifo", 1)] == ["a2"]


def test_fifo_dead_letter_goes_to_the_fifo_dead_queue_and_fifo_refuses_delays(broker: SQSBroker) -> None:
    broker.send("pay.fifo", "poison", group_id="g", dedup_id="d1")
    [message] = drain(broker, "pay.fifo", 1)
    broker.dead_letter("pay.fifo", message, "malformed message: nope")
    [dead] = drain(broker, "pay-dead.fifo", 1)
    assert dead.body == "poison"
    assert dead.attributes[REASON_ATTRIBUTE] == "malformed message: nope"
    assert dead.attributes[ORIGIN_ATTRIBUTE] == "pay.fifo"
    with pytest.raises(DelayTooLongError, match="FIFO"):
        broker.send("pay.fifo", "later", delay_s=5, group_id="g", dedup_id="d2")


def test_stale_receipts_are_ignored(broker: SQSBroker) -> None:
    broker.send("jobs", "x")
    [message] = drain(broker, "jobs", 1)
    broker.delete_batch("jobs", [message.receipt])
    broker.change_visibility("jobs", message.receipt, 0)
    broker.change_visibility_batch("jobs", [message.receipt], 0)
    broker.delete_batch("jobs", [message.receipt])
    assert broker.receive("jobs", 10, 1) == []


def test_queues_lists_only_this_prefix(sqs_server: MotoServer, broker: SQSBroker) -> None:
    broker.ensure_queue("alpha")
    broker.ensure_queue("beta.fifo")
    other = SQSBroker(**sqs_server.broker_options(unique_prefix("other")))
    other.ensure_queue("gamma")
    assert broker.queues() == ["alpha", "beta.fifo"]
    assert other.queues() == ["gamma"]
    other.close()


def test_a_message_from_a_foreign_producer_is_read(sqs_server: MotoServer, broker: SQSBroker) -> None:
    broker.ensure_queue("php")
    client = raw_client(sqs_server)
    url = client.get_queue_url(QueueName=broker.queue_prefix + "php")["QueueUrl"]
    payload = json.dumps({"name": "adder_job", "args": [1, 2], "kwargs": {}})
    sent = client.send_message(QueueUrl=url, MessageBody=base64.b64encode(payload.encode()).decode())
    [message] = drain(broker, "php", 1)
    decoded = decode(message.body, message.message_id)
    assert (decoded.name, decoded.args, decoded.id) == ("adder_job", [1, 2], sent["MessageId"])


def test_seed_api_and_settings(sqs_server: MotoServer, sqs_prefix: str, tmp_path: Path) -> None:
    options = sqs_server.broker_options(sqs_prefix)
    broker = sqjobs.create_sqs_broker(**options)
    job_id, job = broker.add_job(jobs_for_tests.AdderJob, 1, 2, 3)
    [message] = drain(broker, "default", 1)  # type: ignore[arg-type]
    assert decode(message.body, "").id == job_id and decode(message.body, "").args == [1, 2, 3]
    assert isinstance(job, jobs_for_tests.AdderJob)
    config = write_config(tmp_path / "sqjobs.conf", {
        "sqjobs": {"broker": "sqs"},
        "sqs": sqs_server.sqs_section(sqs_prefix, wait_time_s=7, visibility_timeout_s=42)})
    settings = load(str(config))
    from_config = create_broker(settings.broker_url, settings.section_values("sqs"))
    assert isinstance(from_config, SQSBroker)
    assert (from_config.queue_prefix, from_config.default_wait_s, from_config.visibility_timeout_s) == (
        sqs_prefix, 7.0, 42.0)
    assert from_config.queues() == ["default"]
    # By default a worker long-polls 20 s: an idle worker asks 3 times a minute per queue.
    assert SQSBroker.from_options(None).default_wait_s == 20.0


def test_unreachable_endpoint_raises_broker_connection_error() -> None:
    broker = SQSBroker(access_key="k", secret_key="s", region=REGION,
                       endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1, connect_timeout_s=1)
    with pytest.raises(BrokerConnectionError, match="cannot reach SQS"):
        broker.send("jobs", "x")


def test_wrong_credentials_raise_a_one_line_auth_error(sqs_auth_server: tuple[MotoServer, dict[str, str]]) -> None:
    server, _ = sqs_auth_server
    broker = SQSBroker(access_key="wrong", secret_key="wrong", region=REGION, endpoint_url=server.endpoint_url)
    with pytest.raises(BrokerAuthError) as caught:
        broker.ensure_queue("jobs")
    text = str(caught.value)
    assert "\n" not in text
    assert "InvalidClientTokenId" in text and "credentials" in text


def test_missing_permission_raises_an_auth_error(sqs_auth_server: tuple[MotoServer, dict[str, str]]) -> None:
    server, key = sqs_auth_server
    broker = SQSBroker(access_key=key["access_key"], secret_key=key["secret_key"], region=REGION,
                       endpoint_url=server.endpoint_url)
    with pytest.raises(BrokerAuthError, match="AccessDenied") as caught:
        broker.send("jobs", "x")
    assert "\n" not in str(caught.value)


class FlakyProxy:
    """An HTTP proxy in front of the SQS server that fails the first ``failures`` requests.

    Failures alternate between an HTTP 503 and an SQS throttling error, the
    two kinds of trouble a client must retry. Everything else is forwarded.
    """

    THROTTLED = json.dumps({"__type": "com.amazonaws.sqs#RequestThrottled", "message": "Rate exceeded"}).encode()
    OVER_LIMIT = json.dumps({"__type": "com.amazonaws.sqs#OverLimit", "message": "Too many in flight"}).encode()

    def __init__(self, target_url: str, failures: int, over_limit: bool = False) -> None:
        self.target_url = target_url
        self.failures = failures
        self.over_limit = over_limit
        self.seen = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.seen += 1
                if proxy.seen <= proxy.failures and proxy.over_limit:  # SQS's 403 that is no auth error
                    self.send_response(403)
                    self.send_header("x-amzn-query-error", "AWS.SimpleQueueService.OverLimit;Sender")
                    self.send_header("Content-Type", "application/x-amz-json-1.0")
                    self.send_header("Content-Length", str(len(proxy.OVER_LIMIT)))
                    self.end_headers()
                    self.wfile.write(proxy.OVER_LIMIT)
                    return
                if proxy.seen <= proxy.failures:
                    throttle = proxy.seen % 2 == 0
                    self.send_response(400 if throttle else 503)
                    payload = proxy.THROTTLED if throttle else b"{}"
                    if throttle:
                        self.send_header("x-amzn-query-error", "RequestThrottled;Sender")
                    self.send_header("Content-Type", "application/x-amz-json-1.0")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(proxy.target_url + self.path, data=body, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, answer_headers, payload = answer.status, answer.headers, answer.read()
                except urllib.error.HTTPError as error:
                    status, answer_headers, payload = error.code, error.headers, error.read()
                self.send_response(status)
                for key, value in answer_headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def test_server_errors_and_throttling_are_retried(sqs_server: MotoServer, sqs_prefix: str) -> None:
    proxy = FlakyProxy(sqs_server.endpoint_url, failures=2)
    try:
        broker = SQSBroker(**dict(sqs_server.broker_options(sqs_prefix), endpoint_url=proxy.url), max_attempts=3)
        broker.send("jobs", "survived")
        assert broker.requests["CreateQueue"] == 4  # a 503 and a throttling answer, then the two queues
        [message] = drain(broker, "jobs", 1)
        assert message.body == "survived"
    finally:
        proxy.close()


def test_a_fault_that_outlasts_the_retries_is_a_connection_error(sqs_server: MotoServer, sqs_prefix: str) -> None:
    proxy = FlakyProxy(sqs_server.endpoint_url, failures=1000)
    try:
        broker = SQSBroker(**dict(sqs_server.broker_options(sqs_prefix), endpoint_url=proxy.url), max_attempts=2)
        with pytest.raises(BrokerConnectionError, match="RequestThrottled"):
            broker.ensure_queue("jobs")
        assert broker.requests["CreateQueue"] == 2
    finally:
        proxy.close()


def test_create_sqs_worker_runs_jobs_from_its_queue(sqs_server: MotoServer, sqs_prefix: str, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    worker = sqjobs.create_sqs_worker("jobs", prefetch=5, visibility_timeout_s=30, wait_time_s=1,
                                      **sqs_server.broker_options(sqs_prefix))
    assert isinstance(worker.broker, SQSBroker)
    assert (worker.prefetch, worker.visibility_timeout_s, worker.wait_s) == (5, 30, 1.0)
    send(worker.broker, jobs_for_tests.record_job.job_class, (str(out), "via-create-sqs-worker"), queue="jobs")
    wait_until(lambda: worker.run_once(worker.wait_s) and read_lines(out), what="the job to run")
    assert [line.split()[0] for line in read_lines(out)] == ["via-create-sqs-worker"]
    worker.broker.close()


def test_too_many_in_flight_is_transient_not_an_auth_error(sqs_server: MotoServer, sqs_prefix: str) -> None:
    proxy = FlakyProxy(sqs_server.endpoint_url, failures=1000, over_limit=True)
    try:
        broker = SQSBroker(**dict(sqs_server.broker_options(sqs_prefix), endpoint_url=proxy.url), max_attempts=1)
        with pytest.raises(BrokerConnectionError, match="OverLimit"):
            broker.ensure_queue("jobs")
    finally:
        proxy.close()


def test_fifo_a_failed_job_holds_back_the_rest_of_its_group(broker: SQSBroker, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    flaky = jobs_for_tests.flaky_one_retry.job_class  # fails once, retried 0.3 s later
    record = jobs_for_tests.record_job.job_class
    send(broker, flaky, (str(out), "first", 1), queue="steps.fifo", group_id="g")
    send(broker, record, (str(out), "second"), queue="steps.fifo", group_id="g")
    send(broker, record, (str(out), "other-group"), queue="steps.fifo", group_id="h")
    consumer = Worker(broker, ["steps.fifo"], prefetch=10, visibility_timeout_s=30)
    wait_until(lambda: consumer.run_once(0) >= 0 and len(read_lines(out)) >= 4, what="every job to run")
    events = []
    for line in read_lines(out):
        parts = line.split()
        events.append(" ".join(parts[:2]) if parts[0] in ("try", "ok") else parts[0])
    assert [event for event in events if event != "other-group"] == [
        "try first", "try first", "ok first", "second"]
    assert "other-group" in events


# -- dead letters always fit, or say why ---------------------------------------------------------


def send_raw(server: MotoServer, broker: SQSBroker, queue: str, body: str, attributes: dict[str, str]) -> None:
    """Send as a foreign producer would: any size SQS takes, any attributes."""
    broker.ensure_queue(queue)
    client = raw_client(server)
    client.send_message(QueueUrl=client.get_queue_url(QueueName=broker.physical_name(queue))["QueueUrl"],
                        MessageBody=body, MessageAttributes={
                            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()})


def test_a_dead_letter_reason_is_cut_to_what_fits_under_the_limit(sqs_server: MotoServer, broker: SQSBroker) -> None:
    send_raw(sqs_server, broker, "jobs", "b" * (MAX_BATCH_BYTES - 200), {"trace": "t1"})
    [message] = drain(broker, "jobs", 1)
    broker.dead_letter("jobs", message, "failed: " + "é" * 5000)
    [dead] = drain(broker, "jobs-dead", 1)
    assert dead.attributes["trace"] == "t1" and dead.attributes[ORIGIN_ATTRIBUTE] == "jobs"
    reason = dead.attributes[REASON_ATTRIBUTE]
    assert reason.startswith("failed: éé") and reason.endswith(" [...]")
    assert entry_bytes(dead.body, dead.attributes) <= MAX_BATCH_BYTES < entry_bytes(dead.body, dead.attributes) + 2
    assert broker.stats("jobs").in_flight == 0


def test_a_dead_letter_copy_leaves_out_the_attributes_that_leave_no_room(
        sqs_server: MotoServer, broker: SQSBroker, caplog: pytest.LogCaptureFixture) -> None:
    send_raw(sqs_server, broker, "jobs", "b" * (MAX_BATCH_BYTES - 2000), {"big": "a" * 1980})
    [message] = drain(broker, "jobs", 1)
    broker.dead_letter("jobs", message, "failed after 1 attempt(s): boom")
    [dead] = drain(broker, "jobs-dead", 1)
    assert dead.attributes == {REASON_ATTRIBUTE: "failed after 1 attempt(s): boom", ORIGIN_ATTRIBUTE: "jobs"}
    assert "its 1 attribute(s) were left out of the dead-letter copy" in caplog.text


def test_a_foreign_message_that_leaves_no_room_at_all_is_a_clear_broker_error(
        sqs_server: MotoServer, broker: SQSBroker) -> None:
    send_raw(sqs_server, broker, "jobs", "b" * MAX_BATCH_BYTES, {})
    [message] = drain(broker, "jobs", 1)
    with pytest.raises(BrokerError) as caught:
        broker.dead_letter("jobs", message, "failed after 1 attempt(s): boom")
    assert str(caught.value) == (f"cannot move message {message.message_id} on 'jobs' to 'jobs-dead': the body of "
                                 f"{MAX_BATCH_BYTES} bytes leaves no room for the reason under the broker's limit of "
                                 f"{MAX_BATCH_BYTES} bytes")
    stats = broker.stats("jobs")
    assert (stats.in_flight, stats.dead) == (1, 0), "the original is untouched"


def test_an_endpoint_url_that_is_not_a_url_is_refused_when_the_broker_is_made() -> None:
    with pytest.raises(ConfigError, match=r"^\[sqs\] endpoint_url = 'not a url': must be an http:// or https:// URL"):
        SQSBroker(endpoint_url="not a url")
