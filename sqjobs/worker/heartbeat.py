"""The messages a worker has in flight, and the heartbeat that keeps them hidden while it does.

*In flight* (as SQS says) is what a worker received and has not settled
yet: the jobs running and the messages prefetched. (Jobs *held* in the
status database until they are due are another thing:
:mod:`sqjobs.schedule.later`.) A thread extends their visibility every
third of the visibility timeout, so a long job is not delivered twice. The
thread lives in the worker, which never runs job code (jobs run in its job
process), so a job that holds the GIL cannot stop it. It also logs the lines
a signal handler asks for (:meth:`InFlight.notify`): a handler must not
log itself.
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from typing import Sequence

from .. import defaults
from ..brokers.base import Broker, ReceivedMessage
from ..outage import traceback_for

logger = logging.getLogger("sqjobs.heartbeat")


class InFlight:
    """The messages a worker has in flight (received, not settled), and the heartbeat that keeps them hidden."""

    def __init__(self, broker: Broker, visibility_timeout_s: float) -> None:
        self.broker = broker
        self.visibility_timeout_s = visibility_timeout_s
        self._held: dict[str, ReceivedMessage] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Lines to log from the heartbeat thread (signal handlers must not log themselves).
        self._notices: queue_module.SimpleQueue[str] = queue_module.SimpleQueue()
        self._wake = threading.Event()

    @property
    def interval_s(self) -> float:
        """Seconds between two extensions: a third of the visibility timeout."""
        return max(self.visibility_timeout_s / 3.0, 0.1)

    def add(self, messages: Sequence[ReceivedMessage]) -> None:
        """Start holding ``messages``."""
        with self._lock:
            for message in messages:
                self._held[message.receipt] = message

    def release(self, message: ReceivedMessage) -> None:
        """Stop holding ``message`` (before it is deleted, retried or dead-lettered)."""
        with self._lock:
            self._held.pop(message.receipt, None)

    def release_all(self, messages: Sequence[ReceivedMessage]) -> None:
        """Stop holding every one of ``messages`` (deleted together)."""
        with self._lock:
            for message in messages:
                self._held.pop(message.receipt, None)

    def hand_back(self, messages: Sequence[ReceivedMessage], unstarted: bool = True) -> None:
        """Make ``messages`` visible again at once.

        Unstarted ones are released, so that (where the broker can) the
        receive does not count as an attempt.
        """
        by_queue: dict[str, list[str]] = {}
        with self._lock:
            for message in messages:
                if self._held.pop(message.receipt, None) is not None:
                    by_queue.setdefault(message.queue, []).append(message.receipt)
            for queue, receipts in by_queue.items():
                if unstarted:
                    self.broker.release(queue, receipts)
                else:
                    self.broker.change_visibility_batch(queue, receipts, 0)
        if by_queue:
            logger.info("handed back %d unstarted message(s)", sum(map(len, by_queue.values())))

    def extend(self) -> None:
        """Push the visibility of every held message a full timeout into the future."""
        with self._lock:
            by_queue: dict[str, list[str]] = {}
            for message in self._held.values():
                by_queue.setdefault(message.queue, []).append(message.receipt)
            for queue, receipts in by_queue.items():
                for start in range(0, len(receipts), defaults.MAX_BATCH):
                    self.broker.change_visibility_batch(
                        queue, receipts[start:start + defaults.MAX_BATCH], self.visibility_timeout_s)

    def notify(self, line: str) -> None:
        """Have the heartbeat thread log ``line`` soon; safe from a signal handler."""
        self._notices.put(line)
        self._wake.set()

    def _log_notices(self) -> None:
        while True:
            try:
                logger.warning(self._notices.get_nowait())
            except queue_module.Empty:
                return

    def _beat(self) -> None:
        next_extend = time.monotonic() + self.interval_s
        while not self._stop.is_set():
            self._wake.wait(max(next_extend - time.monotonic(), 0))
            self._wake.clear()
            self._log_notices()
            if self._stop.is_set() or time.monotonic() < next_extend:
                continue
            next_extend = time.monotonic() + self.interval_s
            try:
                self.extend()
            except Exception as exc:
                logger.error("heartbeat could not extend the visibility of held messages: %s", exc,
                             exc_info=traceback_for(logger, exc))
        self._log_notices()

    def start(self) -> None:
        """Run the heartbeat in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="sqjobs-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
