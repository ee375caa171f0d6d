"""An outage logged so that a person can follow it: one line per try, no traceback, one line at the end.

While a service (the broker, for a worker) keeps failing, its caller pauses
between tries, the pause doubling from ``first_pause_s`` up to
``max_pause_s``. Each failed try logs one WARNING line with the error, how
long the service has been failing and the next pause. The traceback is
logged only when the logger is at DEBUG (``sqjobs -v``), or for an error
sqjobs did not expect (not an :class:`~sqjobs.errors.SQJobsError`, so a
bug), once per outage. The first success after failures logs one INFO line:
``... reachable again after N s``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from .backoff import Backoff
from .errors import SQJobsError


def traceback_for(logger: logging.Logger, error: BaseException) -> BaseException | None:
    """Return ``error`` as the ``exc_info`` to log it with: its traceback at DEBUG or if unexpected, else None."""
    if logger.isEnabledFor(logging.DEBUG) or not isinstance(error, SQJobsError):
        return error
    return None


class Outage:
    """The failures of one service in a row, their backoff and their log lines.

    ``name`` is the service (``"broker"``), ``action`` what failed
    (``"receiving"``). Call :meth:`failed` on each failed try (it returns the
    pause before the next) and :meth:`recovered` after each success.
    """

    def __init__(self, logger: logging.Logger, name: str, action: str, first_pause_s: float, max_pause_s: float,
                 clock: Callable[[], float] = time.monotonic, announce_recovery: bool = True) -> None:
        self.logger = logger
        #: Whether :meth:`recovered` logs its line (False: the caller says what recovered itself).
        self.announce_recovery = announce_recovery
        self.name = name
        self.action = action
        self.first_pause_s = first_pause_s
        self.max_pause_s = max_pause_s
        self.clock = clock
        #: Failed tries in a row (0: the service works).
        self.failures = 0
        self._since = 0.0
        self._pauses = Backoff(first_pause_s, max_pause_s)
        self._unexpected_logged = False

    @property
    def ongoing(self) -> bool:
        """True while the last try failed."""
        return self.failures > 0

    def failed(self, error: BaseException) -> float:
        """Log one failed try (one line) and return the seconds to pause before the next one."""
        now = self.clock()
        if not self.failures:
            self._since = now
            self._pauses.reset()
            self._unexpected_logged = False
        self.failures += 1
        pause_s = self._pauses.next()
        exc_info = traceback_for(self.logger, error)
        if exc_info is not None and not self.logger.isEnabledFor(logging.DEBUG):
            exc_info = None if self._unexpected_logged else exc_info
            self._unexpected_logged = True
        since = f", failing for {now - self._since:.0f} s" if self.failures > 1 else ""
        self.logger.warning("%s error while %s (failure %d%s); trying again in %g s: %s: %s", self.name, self.action,
                            self.failures, since, pause_s, type(error).__name__, error, exc_info=exc_info)
        return pause_s

    def recovered(self) -> None:
        """Note a successful try; after failures, log one line saying how long the outage lasted."""
        if not self.failures:
            return
        if not self.announce_recovery:
            self.failures = 0
            return
        self.logger.info("%s reachable again after %.0f s (%d failed %s)", self.name, self.clock() - self._since,
                         self.failures, "try" if self.failures == 1 else "tries")
        self.failures = 0
