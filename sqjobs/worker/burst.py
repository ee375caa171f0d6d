"""When a ``sqjobs worker --burst`` leaves: its queues are empty and nothing is due soon.

A burst run should end with the work it found done, retries included: a job
that failed once and retries in a second is waited for, not left behind. So,
once a receive finds the queues empty, the worker waits for delayed messages
due within :data:`~sqjobs.defaults.BURST_WAIT_S` (a retry's backoff, a short
delay) and leaves when none is; its last line counts the delayed messages it
leaves and says when the next is due.

How soon a message is due comes from the broker (:meth:`Broker.next_due
<sqjobs.brokers.base.Broker.next_due>`: exact on the embedded and memory
brokers) and from the worker's own retries (their backoff is known to it:
SQS counts a retry waiting for its backoff as in flight, and tells no due
time for its delayed messages, so there a burst worker waits for its own
retries due within the bound, and for SQS's delayed messages at most the
bound in all).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Callable, Sequence

from .. import defaults
from ..brokers.base import Broker
from ..clock import duration_text
from ..errors import BrokerError

logger = logging.getLogger("sqjobs.worker")


class BurstEnd:
    """Decides, each time a ``--burst`` worker finds its queues empty, whether it waits or leaves."""

    def __init__(self, broker: Broker, queues: Sequence[str], bound_s: float = defaults.BURST_WAIT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.bound_s = bound_s
        self.clock = clock
        #: When the queues were first found empty since messages last came (None: they came).
        self._empty_since: float | None = None
        #: When the worker's own postponed messages (retries) are due, on its clock.
        self._retries_due: list[float] = []

    def postponed(self, delay_s: float) -> None:
        """The worker postponed a message it ran (a retry) by ``delay_s``."""
        self._retries_due.append(self.clock() + delay_s)

    def received(self) -> None:
        """Messages came: an empty queue found later starts a new wait."""
        self._empty_since = None

    def wait_s(self) -> float | None:
        """Seconds to wait in the next receive for a message due soon; None: leave (the line is logged)."""
        now = self.clock()
        if self._empty_since is None:
            self._empty_since = now
        self._retries_due = [due for due in self._retries_due if due > now]
        count, soonest = 0, None
        for queue in self.queues:
            try:
                delayed, due_in_s = self.broker.next_due(queue)
            except BrokerError as exc:  # leaving is safe: what is delayed stays where it is
                logger.warning("worker %d: cannot count the delayed messages of %s: %s", os.getpid(), queue, exc)
                continue
            count += delayed
            if due_in_s is not None:
                soonest = due_in_s if soonest is None else min(soonest, due_in_s)
        own = min(self._retries_due) - now if self._retries_due else None
        if own is not None and (soonest is None or own < soonest):
            soonest = own  # a retry SQS counts as in flight (on the embedded broker it is among the delayed)
        if soonest is not None and soonest <= self.bound_s:
            return float(math.ceil(soonest))  # whole seconds, as SQS waits; the others claim it when due
        left_s = self.bound_s - (now - self._empty_since)
        if soonest is None and count and left_s > 0:
            return left_s  # delayed, due when the broker does not say: wait out the bound
        self._leave(count or len(self._retries_due), soonest)
        return None

    @staticmethod
    def _leave(count: int, soonest: float | None) -> None:
        if not count:
            logger.info("worker %d: queues empty, leaving (--burst)", os.getpid())
            return
        when = (f"the next due in {duration_text(round(soonest, 1))}" if soonest is not None
                else "the broker does not say when they are due")
        logger.info("worker %d: queues empty; %d delayed message(s) left, %s; leaving (--burst waits only for "
                    "those due within %s)", os.getpid(), count, when, duration_text(defaults.BURST_WAIT_S))
