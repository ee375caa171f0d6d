"""The broker contract: a few SQS-shaped operations every broker implements.

A broker stores message bodies (strings) in named queues. Each queue has a
dead-letter queue named ``<queue>-dead`` (``<base>-dead.fifo`` for FIFO
queues). Receiving a message hides it for a visibility timeout; deleting it
with its receipt removes it for good; if it is not deleted in time it is
delivered again with its receive count raised by one. That is all a worker
needs for at-least-once delivery, and all the contract test suite checks.

Brokers move bytes: they know nothing of jobs, status or workers (a test
parses their imports). Subclasses implement the abstract methods and say
what they can do with class attributes (:attr:`Broker.default_wait_s`,
:attr:`Broker.supports_fifo`, :attr:`Broker.max_delay_s`...). Moving a
message from one queue to another (to its dead-letter queue, back from it,
back to its own queue unrun) is written once here, on the :meth:`Broker._move`
primitive: a copy then a delete by default, in place on brokers that can.
"""

from __future__ import annotations

import abc
import logging
import re
import threading
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, Callable, Sequence, TypeVar

from .. import defaults
from ..clock import duration_text
from ..errors import BrokerAuthError, BrokerConnectionError, BrokerError, DelayTooLongError, MessageTooLargeError
from ..message import about, check_size
from .sqs_limits import MAX_QUEUE_NAME_LENGTH, entry_bytes

logger = logging.getLogger("sqjobs.brokers.base")

T = TypeVar("T")

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

#: Seconds a dead message stays hidden while :meth:`Broker.requeue_dead` works through its queue.
REQUEUE_HOLD_S = 60.0

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
class StoredMessage:
    """A message :meth:`Broker.find` found: its queue, its broker id, its body, and whether a worker holds it."""

    queue: str
    message_id: str
    body: str
    #: True while a worker holds it (received, not yet deleted, handed back or postponed): not withdrawn.
    received: bool


def pickled_by_fields(cls: type[T]) -> type[T]:
    """Give the dataclass ``cls`` a ``__reduce__`` that pickles the values of its declared fields.

    The fields are those :func:`dataclasses.fields` declares, passed back to
    the constructor in their order when unpickled: a field added to the class
    crosses a pipe with no other change. The method is written out for the
    class's fields (``(cls, (self.a, self.b, ...))``): as cheap as a tuple
    written by hand, cheaper than a dataclass's default pickling. Raises
    TypeError for a field the constructor does not take positionally.
    """
    names = _positional_fields(cls)
    namespace: dict[str, Any] = {"cls": cls}
    exec(f"def __reduce__(self):\n    return (cls, ({''.join(f'self.{name}, ' for name in names)}))", namespace)
    reduce = namespace["__reduce__"]
    reduce.__qualname__ = f"{cls.__qualname__}.__reduce__"
    reduce.__doc__ = "Pickled as the values of its declared fields (see :func:`pickled_by_fields`)."
    cls.__reduce__ = reduce  # type: ignore[method-assign]
    return cls


def _positional_fields(cls: type) -> list[str]:
    """The names of ``cls``'s dataclass fields, in the order its constructor takes them; TypeError if it cannot."""
    names = []
    for declared in fields(cls):
        if not declared.init or declared.kw_only:
            raise TypeError(f"{cls.__qualname__}.{declared.name} is not a positional constructor argument")
        names.append(declared.name)
    return names


#: The field getter of each subclass of ReceivedMessage pickled in this process.
_FIELD_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _reduce_by_fields(self: Any) -> tuple[Any, ...]:
    """``__reduce__`` of a subclass of a class made by :func:`pickled_by_fields`: the same rule, found at first use."""
    cls = type(self)
    getter = _FIELD_GETTERS.get(cls)
    if getter is None:
        names = _positional_fields(cls)
        single = attrgetter(names[0])
        getter = _FIELD_GETTERS[cls] = attrgetter(*names) if len(names) > 1 else lambda item: (single(item),)
    return (cls, getter(self))


@pickled_by_fields
@dataclass(slots=True)
class ReceivedMessage:
    """A message handed to a consumer; ``receipt`` is what delete and change_visibility take.

    Read-only by convention, not frozen: one is made per message received and
    pickled to the job process, and a frozen dataclass costs more to make and
    to read back (a worker's CPU per job counts).
    """

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

    def __init_subclass__(cls) -> None:
        """A subclass may declare fields of its own: it is pickled by :func:`_reduce_by_fields`."""
        cls.__reduce__ = _reduce_by_fields  # type: ignore[method-assign]


@dataclass(frozen=True)
class QueueStats:
    """Counts for one queue, as ``sqjobs queues`` shows them (approximate on SQS)."""

    queue: str
    visible: int
    in_flight: int
    delayed: int
    dead: int


class Broker(abc.ABC):
    """Base class of every broker: the contract, what the broker can do, and the moves written once.

    Why each part beyond the SQS-shaped core (``send``, ``receive``,
    ``delete``, ``change_visibility``, ``stats``, ``purge``) exists:

    - only for a worker's speed, each with a default that is correct
      without it: ``send_batch``, ``delete_batch``,
      ``change_visibility_batch`` (one request or write for several; SQS
      takes 10), ``delete_then_receive`` with ``deletes_while_receiving``
      (the worker's finished messages deleted by its next receive, one
      write for both: :mod:`sqjobs.worker.deletes`), ``busy_poll_s``;
    - for the promise (nothing lost, attempts counted right): ``release``
      and ``exact_receive_counts`` (a message handed back unstarted costs
      no attempt), ``postpone``, ``requeue``, ``dead_letter`` and ``_move``;
    - for the tools and the CLI: ``find``/``withdraw`` (``can_find``:
      cancelling), ``next_due`` (``--burst``), ``peek``, ``queues``,
      ``requeue_dead``; ``interrupt`` makes a stop prompt.
    """

    #: URL scheme this broker is chosen by.
    scheme: str = ""
    #: Largest body accepted by send, in bytes.
    max_message_bytes: int = defaults.MAX_MESSAGE_BYTES
    #: Longest delay accepted by send, in seconds.
    max_delay_s: float = defaults.MAX_DELAY_S
    #: How long a worker's receive waits for a message on this broker (a long poll on SQS).
    default_wait_s: float = defaults.SQLITE_WAIT_S
    #: How soon a busy worker with room asks again after a receive that found nothing.
    busy_poll_s: float = defaults.BUSY_POLL_S
    #: True when queues named ``*.fifo`` deliver each message group in order, one message at a time.
    supports_fifo: bool = False
    #: True when :meth:`release` takes the receive back, so receive counts are exact attempt counts.
    exact_receive_counts: bool = True
    #: How many of a message's own attributes its dead-letter copy keeps (None: all).
    max_carried_attributes: int | None = None
    #: FIFO message group of a copy whose original had none.
    dead_letter_group: str = "dead"
    #: True when :meth:`delete_then_receive` deletes and claims in one step (both happen, or neither).
    deletes_while_receiving: bool = False
    #: True when :meth:`_move` changes the stored message in place (no copy, its receive count set).
    moves_in_place: bool = False

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

    def delete_then_receive(
        self,
        deletes: Sequence[str],
        queue: str,
        max_messages: int = 1,
        wait_s: float = 0,
        visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S,
    ) -> list[ReceivedMessage]:
        """Delete the received messages of receipts ``deletes`` (of any queue), then :meth:`receive`, in one step.

        Only where :attr:`deletes_while_receiving` says so: the deletes and
        the claim commit together, or (an error raised) neither happened. A
        worker hands in the messages that finished since its last receive.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot delete while it receives")

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

        ``attributes`` are added to its own. Where the broker moves in place,
        the receive is taken back; otherwise a copy is sent and the original
        deleted (a crash in between duplicates it, never loses it). FIFO
        queues cannot take a copy without losing their order: on a broker that
        only copies, the message is then only hidden for ``delay_s``, its
        receive counted and the attributes not kept.
        """
        if queue.endswith(".fifo") and not self.moves_in_place:
            self.change_visibility(queue, message.receipt, delay_s)
            return
        merged = dict(message.attributes)
        merged.update(attributes or {})
        self._move(queue, message, queue, merged, delay_s, max(message.receive_count - 1, 0))

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

    #: True when the broker can look at every message it stores (:meth:`find`, :meth:`withdraw`): SQS
    #: cannot, it shows a message only to a receive, and a delayed one to none.
    can_find = False

    def find(self, body_prefix: str) -> list[StoredMessage]:
        """Every stored message whose body starts with ``body_prefix``, in any queue (dead-letter queues too).

        Raises NotImplementedError where :attr:`can_find` is False.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot look at the messages it stores")

    def withdraw(self, queue: str, message_id: str) -> bool:
        """Delete message ``message_id`` of ``queue`` unless a worker holds it; True if it was deleted.

        For a job cancelled before any worker received it (the caller
        recorded the cancellation first), so that no count shows it.
        Raises NotImplementedError where :attr:`can_find` is False.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot look at the messages it stores")

    def next_due(self, queue: str) -> tuple[int, float | None]:
        """The delayed messages of ``queue``: how many, and seconds until the soonest is due (None: not known).

        This default knows only the count (:meth:`stats`); brokers that
        store a message's due time say when (``--burst`` waits for one due
        soon).
        """
        return self.stats(queue).delayed, None

    @abc.abstractmethod
    def purge(self, queue: str) -> None:
        """Delete every message of ``queue`` (not of its dead-letter queue)."""

    @abc.abstractmethod
    def queues(self) -> list[str]:
        """Return the names of the known queues, dead-letter queues excluded, sorted."""

    @abc.abstractmethod
    def peek(self, queue: str, max_messages: int = 10) -> list[ReceivedMessage]:
        """Return up to ``max_messages`` visible messages without claiming them (for inspection)."""

    def dead_letter(self, queue: str, message: ReceivedMessage, reason: str) -> str | None:
        """Move a received message to the queue's dead-letter queue, recording ``reason``.

        Returns once the move happened: the message id of the dead-letter copy
        where it is a new message (SQS), None where the message moved in
        place and kept its id. Raises BrokerError if it did not (the
        message is then untouched in ``queue``). The reason is cut to
        :data:`MAX_REASON_BYTES`. The copy keeps the original's attributes (up
        to :attr:`max_carried_attributes`) and the reason cut to what fits
        under :attr:`max_message_bytes`; if it still cannot be stored, it is
        tried without the original's attributes, and only if that fails too
        BrokerError is raised.
        """
        dead = dead_letter_name(queue)
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
                copy_id = self._move(queue, message, dead, attributes, 0, 0)
            except (BrokerAuthError, BrokerConnectionError):
                raise
            except (BrokerError, MessageTooLargeError) as exc:
                problems.append(str(exc))
                continue
            if attempt is not kept:
                logger.warning("%s: its %d attribute(s) were left out of the dead-letter copy so that it fits (%s)",
                               about(message), len(kept), problems[-1])
            return copy_id
        raise BrokerError(f"cannot move message {message.message_id} on {queue!r} to {dead!r}: "
                          + "; without its attributes: ".join(problems))

    def requeue_dead(self, queue: str, keep: Callable[[ReceivedMessage], bool] | None = None) -> tuple[int, int]:
        """Move every message of ``queue``'s dead-letter queue back to ``queue``; return (moved, left).

        Their reason and origin attributes are dropped and their receive
        counts start over. ``keep(message)`` True leaves a message where it
        is (an unreadable one, whose stored bytes must not be copied).
        """
        dead = dead_letter_name(queue)
        moved, left = 0, []
        while True:
            batch = self.receive(dead, defaults.MAX_BATCH, 0, REQUEUE_HOLD_S)
            if not batch:
                break
            for message in batch:
                if keep is not None and keep(message):
                    left.append(message.receipt)
                    continue
                kept = {k: v for k, v in message.attributes.items() if k not in (REASON_ATTRIBUTE, ORIGIN_ATTRIBUTE)}
                self._move(dead, message, queue, kept, 0, 0)
                moved += 1
        if left:
            self.change_visibility_batch(dead, left, 0)
        return moved, len(left)

    def requeue_dead_message(self, queue: str, message_id: str) -> bool:
        """Move the one message ``message_id`` of ``queue``'s dead-letter queue back to ``queue``.

        True if it was found and moved (as :meth:`requeue_dead` moves them);
        False if no visible dead letter has that id. The others stay.
        """
        moved, _ = self.requeue_dead(queue, keep=lambda message: message.message_id != message_id)
        return moved > 0

    def _move(self, source: str, message: ReceivedMessage, target: str, attributes: dict[str, str], delay_s: float,
              receive_count: int) -> str | None:
        """Put ``message`` (received from ``source``) into ``target`` with ``attributes``, visible after ``delay_s``.

        Return the message id of the copy, or None where it moved in place.

        Brokers that move in place (:attr:`moves_in_place`) also set its
        receive count to ``receive_count``. This default sends a copy (its
        count starts at 0) and then deletes the original, so a crash in
        between duplicates the message rather than losing it.
        """
        fifo = target.endswith(".fifo")
        group = (message.group_id or self.dead_letter_group) if fifo else None
        copy_id = self.send(target, message.body, min(delay_s, self.max_delay_s), attributes, group_id=group,
                            dedup_id=message.message_id if fifo else None)
        self.delete(source, message.receipt)
        return copy_id

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

    @property
    def identity(self) -> str:
        """Which queues this broker reaches, as text: rows kept for it elsewhere (held jobs) name it."""
        return f"{self.scheme}://{id(self):x}"

    def check_delay(self, delay_s: float) -> None:
        """Raise DelayTooLongError/ValueError if ``delay_s`` cannot be held by this broker."""
        if delay_s < 0:
            raise ValueError(f"delay must not be negative, got {delay_s}")
        if delay_s > self.max_delay_s:
            raise DelayTooLongError(
                f"delay of {duration_text(delay_s)} is over this broker's limit of {duration_text(self.max_delay_s)}"
            )

    @property
    def max_body_bytes(self) -> int:
        """Largest job message body accepted at enqueue: the broker's limit less :data:`DEAD_LETTER_ROOM_BYTES`."""
        return self.max_message_bytes - DEAD_LETTER_ROOM_BYTES

    def check_body(self, body: str) -> None:
        """Raise MessageTooLargeError if ``body`` is over :attr:`max_body_bytes` (the limit is named)."""
        check_size(body, self.max_body_bytes, f"the broker's limit of {self.max_message_bytes} bytes less "
                                              f"{DEAD_LETTER_ROOM_BYTES} kept for the reason a dead letter carries")
