"""The broker contract: a few SQS-shaped operations every broker implements.

A broker stores message bodies (strings) in named queues. Each queue has a
dead-letter queue named ``<queue>-dead`` (``<base>-dead.fifo`` for FIFO
queues). Receiving a message hides it for a visibility timeout; deleting it
with its receipt removes it for good; if it is not deleted in time it is
delivered again with its receive count raised by one. That is all a worker
needs for at-least-once delivery, and all the contract test suite checks.

Subclasses implement the abstract methods; the job-level helpers
(:meth:`Broker.enqueue`, :meth:`Broker.add_job`) are shared.
"""

from __future__ import annotations

import abc
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .. import defaults
from ..errors import BrokerAuthError, BrokerConnectionError, BrokerError, DelayTooLongError, MessageTooLargeError
from ..message import JobMessage, check_size, encode, new_job_id
from .sqs_limits import MAX_QUEUE_NAME_LENGTH, entry_bytes

if TYPE_CHECKING:
    from ..job import Job
    from ..status import JobHandle

logger = logging.getLogger("sqjobs.brokers.base")

#: Message attribute that holds why a message was dead-lettered.
REASON_ATTRIBUTE = "sqjobs-dead-reason"
#: Message attribute that holds the queue a dead message came from.
ORIGIN_ATTRIBUTE = "sqjobs-origin-queue"

#: Bytes of every broker's message limit kept free for what the dead-letter copy adds: the two
#: attributes above, counted as SQS counts them (name, type name, value), with an origin queue name
#: of up to 80 characters and the reason cut to fit. A job ``.delay()`` accepts can therefore always
#: be moved to its dead-letter queue, on SQS too.
DEAD_LETTER_ROOM_BYTES = 1024

#: Longest reason kept with a dead message, in UTF-8 bytes: what the room leaves after the names.
MAX_REASON_BYTES = DEAD_LETTER_ROOM_BYTES - entry_bytes(
    "", {REASON_ATTRIBUTE: "", ORIGIN_ATTRIBUTE: "q" * MAX_QUEUE_NAME_LENGTH})

#: What ends a reason that was cut to fit.
_CUT_MARK = " [...]"
#: Characters an SQS attribute value cannot hold (control characters, lone surrogates): replaced in reasons.
_NOT_ATTRIBUTE_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def cut_reason(reason: str, max_bytes: int = MAX_REASON_BYTES) -> str:
    """Return ``reason`` as attribute text of at most ``max_bytes`` UTF-8 bytes, marked if it was cut.

    It is cut on a character boundary; characters an SQS attribute cannot
    hold (control characters, lone surrogates) become U+FFFD.
    """
    reason = _NOT_ATTRIBUTE_TEXT.sub("\ufffd", reason)
    encoded = reason.encode("utf-8")
    if len(encoded) <= max_bytes:
        return reason
    room = max(max_bytes - len(_CUT_MARK), 0)
    kept = encoded[:room].decode("utf-8", "ignore")
    return (kept + _CUT_MARK) if max_bytes >= len(_CUT_MARK) else kept


def dead_letter_attributes(carried: dict[str, str], queue: str, reason: str,
                           max_reason_bytes: int = MAX_REASON_BYTES) -> dict[str, str]:
    """Return the attributes of the dead-letter copy of a message of ``queue``.

    ``carried`` are the original's attributes (a previous reason and origin
    are replaced); the reason is cut to ``max_reason_bytes``.
    """
    attributes = {name: value for name, value in carried.items() if name not in (REASON_ATTRIBUTE, ORIGIN_ATTRIBUTE)}
    attributes[REASON_ATTRIBUTE] = cut_reason(reason, max_reason_bytes)
    attributes[ORIGIN_ATTRIBUTE] = queue
    return attributes


def _fitted_dead_letter_attributes(body: str, carried: dict[str, str], queue: str, reason: str,
                                   limit_bytes: int) -> dict[str, str] | None:
    """Like :func:`dead_letter_attributes`, the reason cut so that the copy's size (as SQS counts it) is
    within ``limit_bytes``; None if not even the attributes' names and the origin fit."""
    room = limit_bytes - entry_bytes(body, carried) - entry_bytes("", {REASON_ATTRIBUTE: "", ORIGIN_ATTRIBUTE: queue})
    if room < 0:
        return None
    return dead_letter_attributes(carried, queue, reason, min(room, MAX_REASON_BYTES))


def dead_letter_name(queue: str) -> str:
    """Return the dead-letter queue's name for ``queue`` (FIFO names keep their suffix)."""
    if queue.endswith(".fifo"):
        return queue[: -len(".fifo")] + defaults.DEAD_SUFFIX + ".fifo"
    return queue + defaults.DEAD_SUFFIX


def is_dead_letter_name(queue: str) -> bool:
    """Return True if ``queue`` is named like a dead-letter queue."""
    base = queue[: -len(".fifo")] if queue.endswith(".fifo") else queue
    return base.endswith(defaults.DEAD_SUFFIX)


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to send, as given to :meth:`Broker.send_batch`."""

    body: str
    delay_s: float = 0
    attributes: dict[str, str] = field(default_factory=dict)
    #: FIFO queues only: messages of one group are delivered in order, one at a time.
    group_id: str | None = None
    #: FIFO queues only: a second send with the same id within 5 minutes is dropped.
    dedup_id: str | None = None


@dataclass(frozen=True)
class ReceivedMessage:
    """A message handed to a consumer; ``receipt`` is what delete and change_visibility take."""

    queue: str
    message_id: str
    receipt: str
    body: str
    #: How many times the message has been received, this time included: the attempt number.
    receive_count: int
    attributes: dict[str, str] = field(default_factory=dict)
    sent_at: float = 0.0
    group_id: str | None = None
    #: True when the broker knows that the previous receive ended unsettled: whoever held the message
    #: died (the embedded and memory brokers tell; SQS cannot, and always says False).
    unsettled_before: bool = False


@dataclass(frozen=True)
class QueueStats:
    """Counts for one queue, as ``sqjobs queues`` shows them (approximate on SQS)."""

    queue: str
    visible: int
    in_flight: int
    delayed: int
    dead: int


class Broker(abc.ABC):
    """Base class of every broker: the contract plus shared job-level helpers."""

    #: URL scheme this broker is chosen by.
    scheme: str = ""
    #: Largest body accepted by send, in bytes.
    max_message_bytes: int = defaults.MAX_MESSAGE_BYTES
    #: Longest delay accepted by send, in seconds.
    max_delay_s: float = defaults.MAX_DELAY_S
    #: True when enqueuing runs the job at once (eager mode).
    runs_inline: bool = False
    #: True when :meth:`release` takes the receive back, so receive counts are exact attempt counts.
    exact_receive_counts: bool = True
    #: How many of a message's own attributes its dead-letter copy keeps (None: all).
    max_carried_attributes: int | None = None
    #: FIFO message group of a dead-letter copy whose original had none.
    dead_letter_group: str = "dead"

    def __init__(self) -> None:
        self._ensured: set[str] = set()
        self._ensure_lock = threading.Lock()
        #: Set by :meth:`interrupt` to cut a waiting receive short.
        self.wakeup = threading.Event()

    # -- the contract ---------------------------------------------------------------

    @abc.abstractmethod
    def _create_queue(self, queue: str) -> None:
        """Create ``queue`` and its dead-letter queue if they do not exist (idempotent)."""

    @abc.abstractmethod
    def send(
        self,
        queue: str,
        body: str,
        delay_s: float = 0,
        attributes: dict[str, str] | None = None,
        group_id: str | None = None,
        dedup_id: str | None = None,
    ) -> str:
        """Store one message; return its message id. It becomes visible after ``delay_s``."""

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Store several messages; return their ids in order. Brokers override this to batch."""
        return [
            self.send(queue, m.body, m.delay_s, m.attributes, m.group_id, m.dedup_id) for m in messages
        ]

    @abc.abstractmethod
    def receive(
        self,
        queue: str,
        max_messages: int = 1,
        wait_s: float = 0,
        visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S,
    ) -> list[ReceivedMessage]:
        """Claim up to ``max_messages`` visible messages, hiding them for ``visibility_timeout_s``.

        Waits up to ``wait_s`` for the first one; returns ``[]`` if none came
        (or :meth:`interrupt` was called).
        """

    @abc.abstractmethod
    def delete(self, queue: str, receipt: str) -> None:
        """Remove a received message for good. A stale receipt is ignored."""

    def delete_batch(self, queue: str, receipts: Sequence[str]) -> None:
        """Remove several received messages. Brokers override this to batch."""
        for receipt in receipts:
            self.delete(queue, receipt)

    @abc.abstractmethod
    def change_visibility(self, queue: str, receipt: str, timeout_s: float) -> None:
        """Hide a received message for ``timeout_s`` more seconds from now (0: visible at once)."""

    def change_visibility_batch(self, queue: str, receipts: Sequence[str], timeout_s: float) -> None:
        """Change the visibility of several received messages. Brokers override this to batch."""
        for receipt in receipts:
            self.change_visibility(queue, receipt, timeout_s)

    def postpone(self, queue: str, receipt: str, delay_s: float) -> None:
        """Hand a received message back to be delivered again after ``delay_s`` (a retry's backoff).

        The consumer stops holding it: where the broker can tell, it counts
        as delayed rather than in flight, and its receipt is no longer valid.
        This default only changes its visibility (SQS cannot tell the two apart).
        """
        self.change_visibility(queue, receipt, delay_s)

    def requeue(self, queue: str, message: ReceivedMessage, delay_s: float = 0,
                attributes: dict[str, str] | None = None) -> None:
        """Put a received message back unrun, as if it had not been received: again after ``delay_s``.

        ``attributes`` are added to its own. Brokers that can change a
        message in place do so and take the receive back; this default sends
        a copy and then deletes the original (a crash in between duplicates
        it, never loses it). FIFO queues cannot take a copy without losing
        their order: there the message is only hidden for ``delay_s``, its
        receive counted and the attributes not kept.
        """
        if queue.endswith(".fifo"):
            self.change_visibility(queue, message.receipt, delay_s)
            return
        merged = dict(message.attributes)
        merged.update(attributes or {})
        self.send(queue, message.body, min(delay_s, self.max_delay_s), merged)
        self.delete(queue, message.receipt)

    def release(self, queue: str, receipts: Sequence[str]) -> None:
        """Hand back received messages that were never started: visible again at once.

        Brokers that can also take the receive back, so that it does not
        count as an attempt (:attr:`exact_receive_counts`); SQS cannot, and
        this default only changes the visibility to 0.
        """
        self.change_visibility_batch(queue, receipts, 0)

    @abc.abstractmethod
    def stats(self, queue: str) -> QueueStats:
        """Return the counts for ``queue`` and its dead-letter queue."""

    @abc.abstractmethod
    def purge(self, queue: str) -> None:
        """Delete every message of ``queue`` (not of its dead-letter queue)."""

    @abc.abstractmethod
    def queues(self) -> list[str]:
        """Return the names of the known queues, dead-letter queues excluded, sorted."""

    @abc.abstractmethod
    def peek(self, queue: str, max_messages: int = 10) -> list[ReceivedMessage]:
        """Return up to ``max_messages`` visible messages without claiming them (for inspection)."""

    def dead_letter(self, queue: str, message: ReceivedMessage, reason: str) -> None:
        """Move a received message to the queue's dead-letter queue, recording ``reason``.

        Returns once the move happened; raises BrokerError if it did not (the
        message is then untouched in ``queue``). The reason is cut to
        :data:`MAX_REASON_BYTES`. This default sends a copy, then deletes the
        original, so a crash in between duplicates the message rather than
        losing it. The copy keeps the original's attributes (up to
        :attr:`max_carried_attributes`) and the reason cut to what fits under
        :attr:`max_message_bytes`; if it still cannot be sent, a copy without
        the original's attributes is tried, and only if that fails too
        BrokerError is raised.
        """
        dead = dead_letter_name(queue)
        fifo = dead.endswith(".fifo")
        self.ensure_queue(queue)
        carried = [(k, v) for k, v in message.attributes.items() if k not in (REASON_ATTRIBUTE, ORIGIN_ATTRIBUTE)]
        kept = dict(carried[:self.max_carried_attributes])
        problems: list[str] = []
        for attempt in [kept, {}] if kept else [kept]:
            attributes = _fitted_dead_letter_attributes(message.body, attempt, queue, reason, self.max_message_bytes)
            if attributes is None:
                problems.append(f"the body of {len(message.body.encode('utf-8'))} bytes leaves no room for the "
                                f"reason under the broker's limit of {self.max_message_bytes} bytes")
                continue
            try:
                self.send(dead, message.body, 0, attributes, group_id=(message.group_id or self.dead_letter_group)
                          if fifo else None, dedup_id=message.message_id if fifo else None)
            except (BrokerAuthError, BrokerConnectionError):
                raise
            except (BrokerError, MessageTooLargeError) as exc:
                problems.append(str(exc))
                continue
            if attempt is not kept:
                logger.warning("message %s on %s: its %d attribute(s) were left out of the dead-letter copy so "
                               "that it fits (%s)", message.message_id, queue, len(kept), problems[-1])
            self.delete(queue, message.receipt)
            return
        raise BrokerError(f"cannot move message {message.message_id} on {queue!r} to {dead!r}: "
                          + "; without its attributes: ".join(problems))

    def close(self) -> None:  # noqa: B027 - optional for brokers that hold nothing
        """Release connections. The broker may not be used afterwards."""

    # -- shared helpers -------------------------------------------------------------

    def ensure_queue(self, queue: str) -> None:
        """Create ``queue`` and its dead-letter queue once per broker instance."""
        if queue in self._ensured:
            return
        with self._ensure_lock:
            if queue not in self._ensured:
                self._create_queue(queue)
                self._ensured.add(queue)
                self._ensured.add(dead_letter_name(queue))

    def interrupt(self) -> None:
        """Make a receive that is waiting return early (called from signal handlers)."""
        self.wakeup.set()

    def check_delay(self, delay_s: float) -> None:
        """Raise DelayTooLongError/ValueError if ``delay_s`` cannot be held by this broker."""
        if delay_s < 0:
            raise ValueError(f"delay must not be negative, got {delay_s}")
        if delay_s > self.max_delay_s:
            raise DelayTooLongError(
                f"delay of {delay_s:g} s is over this broker's limit of {self.max_delay_s:g} s"
            )

    @property
    def max_body_bytes(self) -> int:
        """Largest job message body accepted at enqueue: the broker's limit less :data:`DEAD_LETTER_ROOM_BYTES`."""
        return self.max_message_bytes - DEAD_LETTER_ROOM_BYTES

    def check_body(self, body: str) -> None:
        """Raise MessageTooLargeError if ``body`` is over :attr:`max_body_bytes` (the limit is named)."""
        check_size(body, self.max_body_bytes, f"the broker's limit of {self.max_message_bytes} bytes less "
                                              f"{DEAD_LETTER_ROOM_BYTES} kept for the reason a dead letter carries")

    def _outgoing(
        self,
        job_class: type[Job],
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        queue: str,
        delay_s: float = 0,
        job_id: str | None = None,
        group_id: str | None = None,
        dedup_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[JobMessage, OutgoingMessage]:
        """Build, check and record one job message before it is sent; ``extra`` adds optional wire fields."""
        from ..status import record_enqueued

        message = JobMessage(name=job_class.name, args=list(args), kwargs=dict(kwargs or {}),
                             id=job_id or new_job_id(), extra=dict(extra or {}))
        body = encode(message)
        self.check_body(body)
        self.check_delay(delay_s)
        if queue.endswith(".fifo"):
            group_id = group_id or job_class.group or job_class.name
            dedup_id = dedup_id or message.id
        else:
            group_id = dedup_id = None
        record_enqueued(job_class, message, queue)
        return message, OutgoingMessage(body, delay_s, {}, group_id, dedup_id)

    def enqueue(
        self,
        job_class: type[Job],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        delay_s: float = 0,
        job_id: str | None = None,
        group_id: str | None = None,
        dedup_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> JobHandle:
        """Send one job; return its handle. ``extra`` adds optional wire fields (``scheduled_for``).

        Raises TypeError for arguments JSON cannot carry, MessageTooLargeError
        and DelayTooLongError for what the broker cannot hold.
        """
        from ..status import JobHandle

        target = queue or job_class.queue
        message, out = self._outgoing(job_class, args, kwargs, target, delay_s, job_id, group_id, dedup_id,
                                      extra)
        self.send(target, out.body, out.delay_s, None, out.group_id, out.dedup_id)
        return JobHandle(message.id, job_class.name, target)

    def enqueue_many(
        self,
        job_class: type[Job],
        calls: Iterable[tuple[Sequence[Any], dict[str, Any]]],
        queue: str | None = None,
    ) -> list[JobHandle]:
        """Send one job per ``(args, kwargs)`` in ``calls``; return their handles.

        Every message is built and checked before any is sent, so a bad
        argument anywhere sends nothing; they then go in one
        :meth:`send_batch`, which the embedded broker stores in one
        transaction (all or none) and SQS in requests of 10. Raises TypeError,
        MessageTooLargeError or DelayTooLongError for what cannot be sent, and
        BrokerError when the broker fails (a full disk, a read-only file).
        """
        from ..status import JobHandle

        target = queue or job_class.queue
        handles: list[JobHandle] = []
        batch: list[OutgoingMessage] = []
        for args, kwargs in calls:
            message, out = self._outgoing(job_class, args, kwargs, target)
            batch.append(out)
            handles.append(JobHandle(message.id, job_class.name, target))
        if batch:
            self.send_batch(target, batch)
        return handles

    def add_job(self, job_class: type[Job], *args: Any, **kwargs: Any) -> tuple[str, Job]:
        """The seed talk's API: enqueue ``job_class(*args, **kwargs)``; return ``(job_id, job)``.

        In eager mode ``job.result`` holds the return value.
        """
        handle = self.enqueue(job_class, args, kwargs)
        instance = handle.job if handle.job is not None else job_class()
        return handle.id, instance

    def add_job_by_name(self, name: str, *args: Any, **kwargs: Any) -> tuple[str, Job]:
        """Like :meth:`add_job`, finding the job class by its registered name."""
        from ..job import registry

        return self.add_job(registry.get(name), *args, **kwargs)
