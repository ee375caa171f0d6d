"""Amazon SQS, or any SQS-compatible server, through boto3.

Queues are created on first use, each with its dead-letter queue
``<queue>-dead`` (``<base>-dead.fifo`` for FIFO queues), under the configured
``queue_prefix``. Their URLs are cached per broker instance.

Users pay per request, so the broker keeps requests few:

* sends go out in SendMessageBatch calls of up to 10 entries and 256 KiB;
* receives ask for up to 10 messages with long polling (``wait_time_s``,
  20 s by default: an idle worker makes 3 requests a minute per queue);
* deletes and visibility changes go in batches of 10 (the worker deletes
  the finished messages of one receive with one DeleteMessageBatch).

A long poll runs in a helper thread so that :meth:`Broker.interrupt` (called
from the worker's SIGTERM handler) makes the waiting receive return ``[]`` at
once; messages that the abandoned poll still brings are handed back with
visibility 0, so nothing waits for its visibility timeout. (If the process
leaves before the abandoned poll answers, a message SQS hands to it in that
moment comes back after its visibility timeout: late, never lost.)

Faults: connection errors, timeouts and throttling are retried by botocore's
"standard" retry mode (capped exponential backoff with jitter, at most
:data:`defaults.SQS_MAX_ATTEMPTS` attempts); what still fails raises
BrokerConnectionError, and the worker pauses and tries again. Refused
credentials or permissions raise BrokerAuthError with a one-line message.

IAM permissions used, on ``arn:aws:sqs:REGION:ACCOUNT:PREFIX*``: CreateQueue,
GetQueueUrl, SendMessage, ReceiveMessage, DeleteMessage,
ChangeMessageVisibility, GetQueueAttributes, PurgeQueue; and ListQueues for
``sqjobs queues``. (The batch calls are covered by the single ones.)
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import Counter
from typing import Any, Mapping, Sequence

import boto3
from botocore import exceptions as boto_errors
from botocore.config import Config

from .. import defaults
from ..backoff import exponential
from ..errors import (
    BrokerAuthError,
    BrokerConnectionError,
    BrokerError,
    ConfigError,
    DelayTooLongError,
    MessageTooLargeError,
)
from .base import (
    Broker,
    OutgoingMessage,
    QueueStats,
    ReceivedMessage,
    dead_letter_name,
    is_dead_letter_name,
)
from .sqs_limits import (
    AUTH_CODES,
    DEAD_RETENTION_S,
    MAX_BATCH,
    MAX_BATCH_BYTES,
    MAX_DELAY_S,
    MAX_MESSAGE_ATTRIBUTES,
    MAX_QUEUE_NAME_LENGTH,
    MAX_VISIBILITY_TIMEOUT_S,
    MAX_WAIT_S,
    PURGE_BUSY_CODES,
    QUEUE_EXISTS_CODES,
    QUEUE_MISSING_CODES,
    QUEUE_NAME_PATTERN,
    STALE_RECEIPT_CODES,
    SYSTEM_ATTRIBUTES,
    THROTTLE_CODES,
    check_endpoint_url,
    entry_bytes,
    error_code,
    error_details,
    queue_prefix_problem,
)

logger = logging.getLogger("sqjobs.brokers.sqs")

class _PendingReceive:
    """A long poll running in a helper thread, which its caller may abandon."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.abandoned = False
        self.messages: list[ReceivedMessage] = []
        self.error: BaseException | None = None

    def abandon(self) -> bool:
        """Give up on the poll; return False if it had already finished (use its result then)."""
        with self.lock:
            if self.done.is_set():
                return False
            self.abandoned = True
            return True


class SQSBroker(Broker):
    """Queues in Amazon SQS or an SQS-compatible server (``endpoint_url``).

    Empty ``access_key``/``secret_key`` use the standard AWS credential chain
    (environment, profile, instance role); an empty ``region`` the chain's
    region. ``queue_prefix`` is put before every queue name. ``wait_time_s``
    is the worker's long poll; ``visibility_timeout_s`` the default visibility
    of the queues this broker creates. Raises ConfigError for options that
    cannot work.
    """

    scheme = "sqs"
    supports_fifo = True
    #: A message handed back still counts as received: SQS cannot take a receive back.
    exact_receive_counts = False
    #: Each receive is a paid request: a busy worker asks again once a second at most.
    busy_poll_s = defaults.SQS_BUSY_POLL_S
    max_message_bytes = MAX_BATCH_BYTES
    max_delay_s: float = MAX_DELAY_S
    #: A dead-letter copy keeps 8 of the original's attributes: with the reason and origin, the SQS maximum.
    max_carried_attributes = MAX_MESSAGE_ATTRIBUTES - 2
    dead_letter_group = defaults.SQS_DEFAULT_GROUP

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        queue_prefix: str = "",
        wait_time_s: float = MAX_WAIT_S,
        visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S,
        *,
        max_attempts: int = defaults.SQS_MAX_ATTEMPTS,
        connect_timeout_s: float = defaults.SQS_CONNECT_TIMEOUT_S,
        max_delay_s: float = MAX_DELAY_S,
    ) -> None:
        super().__init__()
        #: Longest delay sent as DelaySeconds (``[sqs] max_delay_s``); sqjobs holds longer ones in its database.
        self.max_delay_s = float(min(max(max_delay_s, 0), MAX_DELAY_S))
        if bool(access_key) != bool(secret_key):
            raise ConfigError("[sqs] access_key and secret_key go together: set both or neither")
        if endpoint_url:
            try:
                check_endpoint_url(endpoint_url)
            except ValueError as exc:
                raise ConfigError(f"[sqs] endpoint_url = {endpoint_url!r}: {exc}") from None
        prefix_problem = queue_prefix_problem(queue_prefix or "")
        if prefix_problem:
            raise ConfigError(f"[sqs] queue_prefix = {queue_prefix!r}: {prefix_problem}")
        self.access_key = access_key or None
        self.secret_key = secret_key or None
        self.region = region or None
        self.endpoint_url = endpoint_url or None
        self.queue_prefix = queue_prefix or ""
        #: The worker's long poll (read by Worker as ``default_wait_s``).
        self.default_wait_s = float(min(max(wait_time_s, 0), MAX_WAIT_S))
        self.visibility_timeout_s = float(min(max(visibility_timeout_s, 0), MAX_VISIBILITY_TIMEOUT_S))
        self.max_attempts = max(1, max_attempts)
        self.connect_timeout_s = connect_timeout_s
        #: Requests sent, by operation name (retries included), counted by a botocore event hook.
        self.requests: Counter[str] = Counter()
        self._requests_lock = threading.Lock()
        self._client_obj: Any = None
        self._client_pid = 0
        self._client_lock = threading.Lock()
        self._system_attributes_key = "MessageSystemAttributeNames"
        self._urls: dict[str, str] = {}
        self._urls_lock = threading.RLock()

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> SQSBroker:
        """Build the broker from the values of an ``[sqs]`` config section (empty ones mean the default)."""
        values = dict(options or {})

        def get(key: str, default: Any = None) -> Any:
            value = values.get(key)
            return default if value in (None, "") else value

        return cls(access_key=get("access_key"), secret_key=get("secret_key"), region=get("region"),
                   endpoint_url=get("endpoint_url"), queue_prefix=get("queue_prefix", ""),
                   wait_time_s=get("wait_time_s", MAX_WAIT_S),
                   visibility_timeout_s=get("visibility_timeout_s", defaults.VISIBILITY_TIMEOUT_S),
                   max_delay_s=get("max_delay_s", MAX_DELAY_S))

    @property
    def identity(self) -> str:
        """The endpoint (or AWS region) and the queue prefix: two deployments sharing a database stay apart."""
        return f"sqs://{self.endpoint_url or 'aws'}/{self.region or ''}/{self.queue_prefix}"

    def __repr__(self) -> str:
        where = self.endpoint_url or f"AWS {self.region or '(default region)'}"
        return f"<SQSBroker {where} prefix={self.queue_prefix!r}>"

    # -- the client ------------------------------------------------------------------

    def _client(self) -> Any:
        """Return the boto3 SQS client, made on first use (and again in a forked child)."""
        if self._client_obj is not None and self._client_pid == os.getpid():
            return self._client_obj
        with self._client_lock:
            if self._client_obj is None or self._client_pid != os.getpid():
                config = Config(
                    connect_timeout=self.connect_timeout_s,
                    read_timeout=MAX_WAIT_S + defaults.SQS_READ_MARGIN_S,
                    retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                    max_pool_connections=20,
                )
                session = boto3.session.Session(aws_access_key_id=self.access_key,
                                                aws_secret_access_key=self.secret_key, region_name=self.region)
                try:
                    client = session.client("sqs", endpoint_url=self.endpoint_url, config=config)
                except boto_errors.NoRegionError:
                    raise ConfigError("[sqs] region is empty and the AWS configuration names none; "
                                      "set [sqs] region or AWS_DEFAULT_REGION") from None
                client.meta.events.register("before-send.sqs", self._count_request)
                # botocore before 1.34.90 only knows the older name of this ReceiveMessage parameter.
                members = client.meta.service_model.operation_model("ReceiveMessage").input_shape.members
                self._system_attributes_key = ("MessageSystemAttributeNames" if "MessageSystemAttributeNames"
                                               in members else "AttributeNames")
                self._client_obj, self._client_pid = client, os.getpid()
        return self._client_obj

    def _count_request(self, event_name: str = "", **_: Any) -> None:
        with self._requests_lock:
            self.requests[event_name.rsplit(".", 1)[-1]] += 1

    @property
    def request_count(self) -> int:
        """Requests sent to SQS so far by this broker (retries included)."""
        with self._requests_lock:
            return sum(self.requests.values())

    def _call(self, operation: str, queue: str = "", **params: Any) -> Any:
        """Call ``operation`` and turn botocore's errors into sqjobs' BrokerError tree."""
        try:
            return getattr(self._client(), operation)(**params)
        except boto_errors.ClientError as exc:
            raise self._client_error(exc.response, operation, queue) from exc
        except (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError) as exc:
            raise BrokerAuthError(f"no usable AWS credentials for SQS ({exc}); set [sqs] access_key and "
                                  "secret_key or configure the AWS credential chain") from None
        except (boto_errors.ConnectionError, boto_errors.HTTPClientError) as exc:
            raise BrokerConnectionError(f"cannot reach SQS at {self.endpoint_url or 'AWS'} "
                                        f"({operation}): {exc}") from exc
        except boto_errors.BotoCoreError as exc:
            raise BrokerError(f"SQS {operation} failed: {exc}") from exc

    def _client_error(self, response: dict[str, Any], operation: str, queue: str) -> BrokerError:
        code, message, status = error_details(response)
        where = f" on queue {queue!r}" if queue else ""
        error: BrokerError
        if code in THROTTLE_CODES or status >= 500 or status == 429:
            error = BrokerConnectionError(f"SQS {operation}{where} failed after {self.max_attempts} "
                                          f"attempt(s): {code or status}: {message}")
        elif code in AUTH_CODES or status in (401, 403):
            error = BrokerAuthError(f"SQS refused {operation}{where}: {code or status}: {message} "
                                    "(check the credentials and the IAM permissions)")
        else:
            if code in QUEUE_MISSING_CODES:
                self._forget(queue)
            error = BrokerError(f"SQS {operation}{where}: {code or status}: {message}")
        error.sqs_code = code  # type: ignore[attr-defined]
        return error

    # -- queues ----------------------------------------------------------------------

    def physical_name(self, queue: str) -> str:
        """Return the SQS name of ``queue`` (the prefix put before it); raise BrokerError if invalid."""
        name = self.queue_prefix + queue
        if not QUEUE_NAME_PATTERN.match(name) or len(name) > MAX_QUEUE_NAME_LENGTH:
            raise BrokerError(f"{name!r} cannot be an SQS queue name: up to {MAX_QUEUE_NAME_LENGTH} letters, "
                              "digits, '-' or '_' (and '.fifo' at the end for FIFO queues)")
        return name

    def _create_one(self, queue: str, dead: bool) -> str:
        name = self.physical_name(queue)
        attributes = {"VisibilityTimeout": str(int(self.visibility_timeout_s))}
        if dead:
            attributes["MessageRetentionPeriod"] = str(DEAD_RETENTION_S)
        if queue.endswith(".fifo"):
            # Content-based deduplication lets foreign producers send without a deduplication id.
            attributes.update({"FifoQueue": "true", "ContentBasedDeduplication": "true"})
        try:
            url = self._call("create_queue", queue, QueueName=name, Attributes=attributes)["QueueUrl"]
        except BrokerError as exc:
            if error_code(exc) not in QUEUE_EXISTS_CODES:
                raise
            # The queue exists with other attributes (made by hand): use it as it is.
            url = self._call("get_queue_url", queue, QueueName=name)["QueueUrl"]
        logger.debug("queue %s is %s", queue, url)
        return str(url)

    def _create_queue(self, queue: str) -> None:
        with self._urls_lock:
            if is_dead_letter_name(queue):
                self._urls[queue] = self._create_one(queue, dead=True)
                return
            dead = dead_letter_name(queue)
            if dead not in self._urls:
                self._urls[dead] = self._create_one(dead, dead=True)
            self._urls[queue] = self._create_one(queue, dead=False)

    def _queue_url(self, queue: str) -> str:
        """Return the cached URL of ``queue``, creating the queue (and its dead-letter queue) once."""
        url = self._urls.get(queue)
        if url is not None:
            return url
        self.ensure_queue(queue)
        url = self._urls.get(queue)
        if url is None:  # known before, but forgotten because it had been deleted: create it again
            self._create_queue(queue)
            url = self._urls[queue]
        return url

    def _forget(self, queue: str) -> None:
        """Drop the cached URLs of a queue SQS no longer has (and of its dead-letter queue): made again on use."""
        with self._urls_lock:
            for name in (queue, dead_letter_name(queue)):
                self._urls.pop(name, None)
                self._ensured.discard(name)

    def queues(self) -> list[str]:
        """Return the queues under this broker's prefix, dead-letter queues excluded, sorted."""
        names: list[str] = []
        params: dict[str, Any] = {"MaxResults": 1000}
        if self.queue_prefix:
            params["QueueNamePrefix"] = self.queue_prefix
        while True:
            page = self._call("list_queues", **params)
            for url in page.get("QueueUrls", []) or []:
                name = url.rstrip("/").rsplit("/", 1)[-1]
                if name.startswith(self.queue_prefix):
                    names.append(name[len(self.queue_prefix):])
            token = page.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
        return sorted(name for name in set(names) if name and not is_dead_letter_name(name))

    # -- sending ---------------------------------------------------------------------

    def send(self, queue: str, body: str, delay_s: float = 0, attributes: dict[str, str] | None = None,
             group_id: str | None = None, dedup_id: str | None = None) -> str:
        """Send one message (one request); return its SQS message id."""
        return self.send_batch(queue, [OutgoingMessage(body, delay_s, attributes or {}, group_id, dedup_id)])[0]

    def _entry(self, index: int, message: OutgoingMessage, fifo: bool) -> tuple[dict[str, Any], int]:
        size = entry_bytes(message.body, message.attributes)
        if size > MAX_BATCH_BYTES:
            raise MessageTooLargeError(f"message is {size} bytes with its attributes, over the SQS limit of "
                                       f"{MAX_BATCH_BYTES} bytes")
        if len(message.attributes) > MAX_MESSAGE_ATTRIBUTES:
            raise BrokerError(f"a message may carry {MAX_MESSAGE_ATTRIBUTES} attributes on SQS, "
                              f"not {len(message.attributes)}")
        self.check_delay(message.delay_s)
        entry: dict[str, Any] = {"Id": str(index), "MessageBody": message.body}
        if message.delay_s > 0:
            if fifo:
                raise DelayTooLongError("FIFO queues cannot delay single messages on SQS; "
                                        "send without a delay or use a standard queue")
            entry["DelaySeconds"] = min(int(math.ceil(message.delay_s)), int(MAX_DELAY_S))
        if message.attributes:
            entry["MessageAttributes"] = {name: {"DataType": "String", "StringValue": value}
                                          for name, value in message.attributes.items()}
        if fifo:
            entry["MessageGroupId"] = message.group_id or defaults.SQS_DEFAULT_GROUP
            if message.dedup_id:
                entry["MessageDeduplicationId"] = message.dedup_id
        return entry, size

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Send ``messages`` in as few SendMessageBatch requests as the limits allow; return their ids.

        Raises MessageTooLargeError/DelayTooLongError before sending anything
        if one message cannot go, and BrokerError if SQS refuses an entry.
        """
        if not messages:
            return []
        url = self._queue_url(queue)
        fifo = queue.endswith(".fifo")
        entries = [self._entry(index, message, fifo) for index, message in enumerate(messages)]
        ids = [""] * len(entries)
        chunk: list[dict[str, Any]] = []
        chunk_bytes = 0
        for entry, size in entries:
            if chunk and (len(chunk) == MAX_BATCH or chunk_bytes + size > MAX_BATCH_BYTES):
                self._send_chunk(url, queue, chunk, ids)
                chunk, chunk_bytes = [], 0
            chunk.append(entry)
            chunk_bytes += size
        self._send_chunk(url, queue, chunk, ids)
        return ids

    def _send_chunk(self, url: str, queue: str, chunk: list[dict[str, Any]], ids: list[str]) -> None:
        pending = chunk
        for attempt in range(1, defaults.SQS_BATCH_ENTRY_ATTEMPTS + 1):
            answer = self._call("send_message_batch", queue, QueueUrl=url, Entries=pending)
            for done in answer.get("Successful", []) or []:
                ids[int(done["Id"])] = done["MessageId"]
            failed = answer.get("Failed", []) or []
            if not failed:
                return
            for failure in failed:
                if failure.get("SenderFault"):
                    raise BrokerError(f"SQS refused a message for queue {queue!r}: {failure.get('Code')}: "
                                      f"{failure.get('Message', '')}")
            failed_ids = {failure["Id"] for failure in failed}
            pending = [entry for entry in pending if entry["Id"] in failed_ids]
            logger.warning("SQS failed %d of a batch for queue %s on its side; attempt %d of %d",
                           len(pending), queue, attempt, defaults.SQS_BATCH_ENTRY_ATTEMPTS)
            time.sleep(exponential(0.1, attempt, 2.0, jitter=0.5))
        raise BrokerConnectionError(f"SQS kept failing {len(pending)} message(s) for queue {queue!r}")

    # -- receiving -------------------------------------------------------------------

    def receive(self, queue: str, max_messages: int = 1, wait_s: float = 0,
                visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S) -> list[ReceivedMessage]:
        """Receive up to 10 messages with one ReceiveMessage, long polling ``wait_s`` (whole seconds).

        A long poll is cut short by :meth:`interrupt`: it then returns ``[]``,
        and whatever the poll still brings is handed back with visibility 0.
        """
        wait = max(0, min(int(wait_s), MAX_WAIT_S))
        if self.wakeup.is_set():
            wait = 0
        params = self._receive_params(queue, max_messages, visibility_timeout_s, wait)
        return self._receive_now(queue, params) if wait == 0 else self._receive_interruptible(queue, params)

    def _receive_params(self, queue: str, max_messages: int, visibility_timeout_s: float,
                        wait_s: int) -> dict[str, Any]:
        url = self._queue_url(queue)
        self._client()  # knows which name the system attributes parameter has
        return {"QueueUrl": url, "MaxNumberOfMessages": max(1, min(int(max_messages), MAX_BATCH)),
                "VisibilityTimeout": self._visibility(visibility_timeout_s), "WaitTimeSeconds": wait_s,
                self._system_attributes_key: SYSTEM_ATTRIBUTES, "MessageAttributeNames": ["All"]}

    def _receive_now(self, queue: str, params: dict[str, Any]) -> list[ReceivedMessage]:
        answer = self._call("receive_message", queue, **params)
        return [self._received(queue, raw) for raw in answer.get("Messages", []) or []]

    @staticmethod
    def _received(queue: str, raw: dict[str, Any]) -> ReceivedMessage:
        system = raw.get("Attributes", {}) or {}
        attributes = {name: str(value.get("StringValue", ""))
                      for name, value in (raw.get("MessageAttributes", {}) or {}).items()
                      if "StringValue" in value}
        return ReceivedMessage(
            queue=queue,
            message_id=raw["MessageId"],
            receipt=raw["ReceiptHandle"],
            body=raw.get("Body", ""),
            receive_count=int(system.get("ApproximateReceiveCount", 1)),
            attributes=attributes,
            sent_at=int(system.get("SentTimestamp", 0)) / 1000.0,
            group_id=system.get("MessageGroupId"),
        )

    def _receive_interruptible(self, queue: str, params: dict[str, Any]) -> list[ReceivedMessage]:
        pending = _PendingReceive()
        thread = threading.Thread(target=self._poll_in_background, args=(queue, params, pending),
                                  name="sqjobs-sqs-receive", daemon=True)
        thread.start()
        try:
            while not pending.done.wait(defaults.SQS_INTERRUPT_CHECK_S):
                if self.wakeup.is_set() and pending.abandon():
                    logger.debug("long poll on %s interrupted", queue)
                    return []
        except BaseException:
            pending.abandon()
            raise
        if pending.error is not None:
            raise pending.error
        return pending.messages

    def _poll_in_background(self, queue: str, params: dict[str, Any], pending: _PendingReceive) -> None:
        messages: list[ReceivedMessage] = []
        error: BaseException | None = None
        try:
            messages = self._receive_now(queue, params)
        except BaseException as exc:  # handed to the caller's thread
            error = exc
        with pending.lock:
            abandoned = pending.abandoned
            pending.messages, pending.error = messages, error
            pending.done.set()
        if abandoned and messages:
            try:
                self.change_visibility_batch(queue, [m.receipt for m in messages], 0)
                logger.info("handed back %d message(s) on %s that arrived after the receive was interrupted",
                            len(messages), queue)
            except Exception:
                logger.exception("could not hand back %d message(s) on %s; they return after their "
                                 "visibility timeout", len(messages), queue)

    def peek(self, queue: str, max_messages: int = 10) -> list[ReceivedMessage]:
        """Return up to ``max_messages`` visible messages, received with visibility 0.

        SQS has no true peek: each message looked at has its receive count
        raised by one (harmless on dead-letter queues, which is what this is for).
        """
        seen: dict[str, ReceivedMessage] = {}
        for _ in range(max(1, math.ceil(max_messages / MAX_BATCH)) + 2):
            batch = self._receive_now(queue, self._receive_params(queue, max_messages - len(seen), 0, 0))
            fresh = [m for m in batch if m.message_id not in seen]
            for message in fresh:
                seen[message.message_id] = ReceivedMessage(
                    queue, message.message_id, "", message.body, message.receive_count, message.attributes,
                    message.sent_at, message.group_id)
            if not fresh or len(seen) >= max_messages:
                break
        return list(seen.values())[:max_messages]

    # -- settling --------------------------------------------------------------------

    def delete(self, queue: str, receipt: str) -> None:
        """Delete a received message (one request; the worker deletes finished jobs with delete_batch)."""
        self.delete_batch(queue, [receipt])

    def delete_batch(self, queue: str, receipts: Sequence[str]) -> None:
        """Delete received messages now, 10 per DeleteMessageBatch; stale receipts are ignored."""
        self._in_batches("delete_message_batch", queue, [{"ReceiptHandle": receipt} for receipt in receipts])

    def _in_batches(self, operation: str, queue: str, entries: list[dict[str, Any]]) -> None:
        """Send ``entries`` with a batch ``operation``, 10 at a time; log entries that failed."""
        url = self._queue_url(queue)
        for start in range(0, len(entries), MAX_BATCH):
            chunk = [dict(entry, Id=str(i)) for i, entry in enumerate(entries[start:start + MAX_BATCH])]
            answer = self._call(operation, queue, QueueUrl=url, Entries=chunk)
            for failure in answer.get("Failed", []) or []:
                code = failure.get("Code", "")
                level = logging.DEBUG if code in STALE_RECEIPT_CODES else logging.WARNING
                logger.log(level, "%s of a message on %s failed: %s: %s", operation, queue, code,
                           failure.get("Message", ""))

    def change_visibility(self, queue: str, receipt: str, timeout_s: float) -> None:
        """Hide a received message ``timeout_s`` more seconds (0: visible now); a stale receipt is ignored."""
        url = self._queue_url(queue)
        try:
            self._call("change_message_visibility", queue, QueueUrl=url, ReceiptHandle=receipt,
                       VisibilityTimeout=self._visibility(timeout_s))
        except (BrokerAuthError, BrokerConnectionError):
            raise
        except BrokerError as exc:
            if error_code(exc) not in STALE_RECEIPT_CODES:
                raise
            logger.debug("visibility of a message on %s not changed: %s", queue, exc)

    def change_visibility_batch(self, queue: str, receipts: Sequence[str], timeout_s: float) -> None:
        """Change the visibility of received messages, 10 per request; stale receipts are ignored."""
        visibility = self._visibility(timeout_s)
        self._in_batches("change_message_visibility_batch", queue,
                         [{"ReceiptHandle": receipt, "VisibilityTimeout": visibility} for receipt in receipts])

    @staticmethod
    def _visibility(timeout_s: float) -> int:
        return max(0, min(int(math.ceil(timeout_s)), MAX_VISIBILITY_TIMEOUT_S))

    # -- inspection ------------------------------------------------------------------

    def _counts(self, queue: str) -> tuple[int, int, int]:
        answer = self._call("get_queue_attributes", queue, QueueUrl=self._queue_url(queue), AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed"])
        values = answer.get("Attributes", {}) or {}
        return (int(values.get("ApproximateNumberOfMessages", 0)),
                int(values.get("ApproximateNumberOfMessagesNotVisible", 0)),
                int(values.get("ApproximateNumberOfMessagesDelayed", 0)))

    def stats(self, queue: str) -> QueueStats:
        """Return SQS's approximate counts for ``queue``; ``dead`` counts every message of its dead-letter queue."""
        visible, in_flight, delayed = self._counts(queue)
        dead = sum(self._counts(dead_letter_name(queue))) if not is_dead_letter_name(queue) else 0
        return QueueStats(queue=queue, visible=visible, in_flight=in_flight, delayed=delayed, dead=dead)

    def purge(self, queue: str) -> None:
        """Delete every message of ``queue``; if SQS is still purging it (one purge a minute), drain it instead."""
        url = self._queue_url(queue)
        try:
            self._call("purge_queue", queue, QueueUrl=url)
            return
        except (BrokerAuthError, BrokerConnectionError):
            raise
        except BrokerError as exc:
            if error_code(exc) not in PURGE_BUSY_CODES:
                raise
        while True:
            batch = self._receive_now(queue, self._receive_params(queue, MAX_BATCH, 60, 0))
            if not batch:
                return
            self.delete_batch(queue, [m.receipt for m in batch])

    def close(self) -> None:
        """Release the HTTP connections (a later call makes a new client)."""
        client, self._client_obj = self._client_obj, None
        if client is not None and hasattr(client, "close"):
            client.close()
