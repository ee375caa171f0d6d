"""The deletes a worker owes: messages whose jobs succeeded, deleted together.

A succeeded message is not deleted at once: deletes go ten at a time (one
write, one request), at most DELETE_DELAY_S after the first of them. Where
the broker deletes while it receives (:attr:`~sqjobs.brokers.base.Broker.deletes_while_receiving`),
the worker's next receive carries them (one write for both), unless more
than CARRIED_DELETES_MAX wait. Until its delete is done a message stays
held: the heartbeat keeps it hidden, and a crash before then runs it again,
which at-least-once delivery allows.

A delete that fails (the broker is down, its disk full) keeps the messages
held; it is tried again after a pause that doubles (one log line per try),
so a finished job does not run again because of an outage. Only the
``last`` flush, when the worker stops, gives up on them.

:class:`PendingDeletes` owns all of that; the worker only says when a job
succeeded (:meth:`~PendingDeletes.add`), asks whether the deletes are due
(:meth:`~PendingDeletes.due`), and hands them to its receive
(:meth:`~PendingDeletes.take_for_receive`). Only the worker's main thread uses it.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

from .. import defaults
from ..brokers.base import Broker, ReceivedMessage
from ..errors import BrokerAuthError
from ..middleware.unique import KeyReleases
from ..outage import Outage, traceback_for
from .heartbeat import InFlight

#: Longest time a succeeded message waits for its delete (they are deleted ten at a time).
DELETE_DELAY_S = 0.2
#: Finished messages a worker whose broker deletes while it receives leaves to its next receive; more are
#: deleted at once.
CARRIED_DELETES_MAX = 2 * defaults.MAX_BATCH


class PendingDeletes:
    """The succeeded messages a worker still has to delete, and when it deletes them."""

    def __init__(self, broker: Broker, in_flight: InFlight, key_releases: KeyReleases, logger: logging.Logger,
                 pause_s: float, pause_max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.broker = broker
        self.in_flight = in_flight
        self.key_releases = key_releases
        self.logger = logger
        self.clock = clock
        #: True when the next receive carries the deletes (the broker deletes while it receives).
        self.carried = broker.deletes_while_receiving
        self._limit = CARRIED_DELETES_MAX if self.carried else defaults.MAX_BATCH
        self.messages: list[ReceivedMessage] = []
        #: When the first of ``messages`` succeeded (``clock`` seconds).
        self.first_at = 0.0
        #: No delete before then: the last one failed (``clock`` seconds).
        self.retry_at = 0.0
        #: Deletes that failed in a row: one line per backoff step, paused ``pause_s`` doubled up to ``pause_max_s``.
        self.outage = Outage(logger, "broker", "deleting finished messages (they stay held)", pause_s, pause_max_s,
                             announce_recovery=False)

    def __len__(self) -> int:
        """Messages waiting for their delete."""
        return len(self.messages)

    def add(self, message: ReceivedMessage) -> None:
        """``message``'s job succeeded: delete it with the next ones (at once when enough wait)."""
        if not self.messages:
            self.first_at = self.clock()
        self.messages.append(message)
        if len(self.messages) >= self._limit:
            self.flush()

    def due_at(self) -> float:
        """When the deletes are due by their age (``clock`` seconds; infinity: nothing waits)."""
        if not self.messages:
            return math.inf
        return max(self.first_at + DELETE_DELAY_S, self.retry_at)

    def due(self, now: float, running: bool, receiving: bool) -> bool:
        """True when the deletes should go now, on their own.

        They go when the first waited DELETE_DELAY_S, or when no job runs
        (``running`` False: nothing more will join them soon) and no receive
        will carry them (``receiving`` False, or the broker cannot); never
        before the pause after a failed delete ends.
        """
        if not self.messages or now < self.retry_at:
            return False
        return now - self.first_at >= DELETE_DELAY_S or (not running and not (receiving and self.carried))

    def take_for_receive(self) -> list[ReceivedMessage]:
        """The messages the next receive deletes (none where the broker cannot): confirm with :meth:`received`.

        They stay owed until then: if the receive fails, neither it nor the
        deletes happened.
        """
        return list(self.messages) if self.carried else []

    def received(self, messages: list[ReceivedMessage]) -> None:
        """``messages``, from :meth:`take_for_receive`, were deleted by a receive: stop holding them."""
        self.messages = self.messages[len(messages):]
        self.in_flight.release_all(messages)
        self.key_releases.deleted(messages)
        self._worked(len(messages))

    def flush(self, last: bool = False) -> None:
        """Delete the messages owed, in batches per queue, then stop holding them.

        Not before the pause after a failed delete ends, unless ``last``
        (the worker stops: a failure then gives up on them, they will be
        delivered again).
        """
        if not self.messages or (not last and self.clock() < self.retry_at):
            return
        owed, self.messages = self.messages, []
        by_queue: dict[str, list[ReceivedMessage]] = {}
        for message in owed:
            by_queue.setdefault(message.queue, []).append(message)
        kept: list[ReceivedMessage] = []
        for queue, messages in by_queue.items():
            try:
                self.broker.delete_batch(queue, [m.receipt for m in messages])
            except BrokerAuthError:
                raise
            except Exception as exc:
                if last:
                    self.logger.error("could not delete %d finished message(s) on %s; they will be delivered "
                                      "again: %s", len(messages), queue, exc, exc_info=traceback_for(self.logger, exc))
                    self.key_releases.forget(messages)
                else:
                    kept.extend(messages)
                    self.retry_at = self.clock() + self.outage.failed(exc)
                    continue
            self.in_flight.release_all(messages)
            self.key_releases.deleted(messages)
        if kept:
            self.messages = kept + self.messages
        else:
            self._worked(len(owed))

    def _worked(self, count: int) -> None:
        if self.outage.ongoing:
            self.logger.info("deleted %d finished message(s) held since their delete failed (%d failed %s)",
                             count, self.outage.failures, "try" if self.outage.failures == 1 else "tries")
            self.outage.recovered()
