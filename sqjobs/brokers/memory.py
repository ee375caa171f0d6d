"""An in-process broker for tests: thread-safe, with ``join(queue)`` to wait until a queue is drained."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Sequence

from .. import defaults
from ..errors import BrokerError
from .base import (
    Broker,
    OutgoingMessage,
    QueueStats,
    ReceivedMessage,
    StoredMessage,
    dead_letter_name,
    is_dead_letter_name,
)

#: How often a waiting receive looks again for delayed messages whose time came (a send wakes it at once).
DELAYED_POLL_S = 0.05


@dataclass
class _Stored:
    message_id: str
    body: str
    attributes: dict[str, str]
    group_id: str | None
    sent_at: float
    visible_at: float
    sequence: int
    receive_count: int = 0
    receipt: str | None = None


class MemoryBroker(Broker):
    """Queues in this process's memory. ``join(queue)`` blocks until the queue is empty."""

    scheme = "memory"
    moves_in_place = True
    #: Holds any delay sqjobs accepts (a timestamp in the row): no database hand-over.
    max_delay_s = defaults.MAX_LATER_S

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        self._queues: dict[str, list[_Stored]] = {}
        self._changed = threading.Condition()
        self._sequence = itertools.count()

    def _create_queue(self, queue: str) -> None:
        with self._changed:
            self._queues.setdefault(queue, [])
            self._queues.setdefault(dead_letter_name(queue), [])

    def _messages(self, queue: str) -> list[_Stored]:
        self.ensure_queue(queue)
        return self._queues[queue]

    def send(self, queue: str, body: str, delay_s: float = 0, attributes: dict[str, str] | None = None,
             group_id: str | None = None, dedup_id: str | None = None) -> str:
        return self.send_batch(queue, [OutgoingMessage(body, delay_s, attributes or {}, group_id, dedup_id)])[0]

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        stored = self._messages(queue)
        now = self.clock()
        ids = []
        with self._changed:
            for message in messages:
                item = _Stored(uuid.uuid4().hex, message.body, dict(message.attributes), message.group_id, now,
                               now + max(message.delay_s, 0), next(self._sequence))
                stored.append(item)
                ids.append(item.message_id)
            self._changed.notify_all()
        return ids

    def receive(self, queue: str, max_messages: int = 1, wait_s: float = 0,
                visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S) -> list[ReceivedMessage]:
        stored = self._messages(queue)
        deadline = time.monotonic() + wait_s
        with self._changed:
            while True:
                now = self.clock()
                ready = sorted((m for m in stored if m.visible_at <= now),
                               key=lambda m: (m.visible_at, m.sequence))[:max(1, max_messages)]
                if ready or time.monotonic() >= deadline or self.wakeup.is_set():
                    break
                self._changed.wait(min(DELAYED_POLL_S, max(deadline - time.monotonic(), 0)))
            claimed = []
            for item in ready:
                unsettled = item.receipt is not None
                item.receive_count += 1
                item.receipt = uuid.uuid4().hex
                item.visible_at = now + visibility_timeout_s
                claimed.append(ReceivedMessage(queue, item.message_id, item.receipt, item.body,
                                               item.receive_count, dict(item.attributes), item.sent_at,
                                               item.group_id, unsettled))
            return claimed

    def _find(self, queue: str, receipt: str) -> _Stored | None:
        for item in self._messages(queue):
            if item.receipt == receipt:
                return item
        return None

    def delete(self, queue: str, receipt: str) -> None:
        with self._changed:
            item = self._find(queue, receipt)
            if item is not None:
                self._queues[queue].remove(item)
            self._changed.notify_all()

    def change_visibility(self, queue: str, receipt: str, timeout_s: float) -> None:
        with self._changed:
            item = self._find(queue, receipt)
            if item is not None:
                item.visible_at = self.clock() + max(timeout_s, 0)
            self._changed.notify_all()

    def postpone(self, queue: str, receipt: str, delay_s: float) -> None:
        """Hide the message for ``delay_s`` and end its hold: it counts as delayed, not in flight."""
        with self._changed:
            item = self._find(queue, receipt)
            if item is not None:
                item.visible_at, item.receipt = self.clock() + max(delay_s, 0), None
            self._changed.notify_all()

    def release(self, queue: str, receipts: Sequence[str]) -> None:
        """Make unstarted messages visible at once and take their receive back."""
        with self._changed:
            for receipt in receipts:
                item = self._find(queue, receipt)
                if item is not None:
                    item.visible_at, item.receipt = self.clock(), None
                    item.receive_count = max(item.receive_count - 1, 0)
            self._changed.notify_all()

    def _move(self, source: str, message: ReceivedMessage, target: str, attributes: dict[str, str], delay_s: float,
              receive_count: int) -> None:
        """Move the stored message under one lock; BrokerError if its receipt is stale."""
        with self._changed:
            item = self._find(source, message.receipt)
            if item is None:
                raise BrokerError(f"message {message.message_id} on {source!r} was not moved to {target!r}: its "
                                  "receipt is stale")
            self._queues[source].remove(item)
            item.attributes = dict(attributes)
            item.receive_count, item.receipt, item.visible_at = receive_count, None, self.clock() + max(delay_s, 0)
            self._messages(target).append(item)
            self._changed.notify_all()

    def stats(self, queue: str) -> QueueStats:
        now = self.clock()
        with self._changed:
            stored = self._messages(queue)
            return QueueStats(
                queue=queue,
                visible=sum(1 for m in stored if m.visible_at <= now),
                in_flight=sum(1 for m in stored if m.visible_at > now and m.receipt is not None),
                delayed=sum(1 for m in stored if m.visible_at > now and m.receipt is None),
                dead=len(self._messages(dead_letter_name(queue))),
            )

    can_find = True

    def find(self, body_prefix: str) -> list[StoredMessage]:
        """Every stored message whose body starts with ``body_prefix``."""
        with self._changed:
            return [StoredMessage(queue, m.message_id, m.body, m.receipt is not None)
                    for queue, stored in sorted(self._queues.items()) for m in stored if m.body.startswith(body_prefix)]

    def withdraw(self, queue: str, message_id: str) -> bool:
        """Delete the message unless a worker holds it; True if it was deleted."""
        with self._changed:
            stored = self._messages(queue)
            for index, item in enumerate(stored):
                if item.message_id == message_id and item.receipt is None:
                    del stored[index]
                    return True
        return False

    def next_due(self, queue: str) -> tuple[int, float | None]:
        """The delayed messages of ``queue``: how many, and seconds until the soonest is due."""
        now = self.clock()
        with self._changed:
            due = [m.visible_at - now for m in self._messages(queue) if m.visible_at > now and m.receipt is None]
        return len(due), (min(due) if due else None)

    def purge(self, queue: str) -> None:
        with self._changed:
            self._messages(queue).clear()
            self._changed.notify_all()

    def queues(self) -> list[str]:
        with self._changed:
            return sorted(name for name in self._queues if not is_dead_letter_name(name))

    def peek(self, queue: str, max_messages: int = 10) -> list[ReceivedMessage]:
        now = self.clock()
        with self._changed:
            ready = sorted((m for m in self._messages(queue) if m.visible_at <= now),
                           key=lambda m: (m.visible_at, m.sequence))[:max_messages]
            return [ReceivedMessage(queue, m.message_id, "", m.body, m.receive_count, dict(m.attributes),
                                    m.sent_at, m.group_id) for m in ready]

    def join(self, queue: str, timeout_s: float | None = None) -> None:
        """Block until ``queue`` holds no message (visible, delayed or in flight).

        Raises TimeoutError after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            while self._messages(queue):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"queue {queue!r} still holds {len(self._queues[queue])} message(s)")
                self._changed.wait(0.05 if remaining is None else min(remaining, 0.05))
