"""Wrong passwords slow their sender down: the dashboard's defence against password guessing.

Each client address may give :data:`~sqjobs.defaults.DASHBOARD_LOGIN_FREE_FAILURES`
wrong passwords; after that it must wait before its next login is even
looked at, :data:`~sqjobs.defaults.DASHBOARD_LOGIN_DELAY_S` after the last
wrong one, doubled at each further wrong one up to
:data:`~sqjobs.defaults.DASHBOARD_LOGIN_MAX_DELAY_S`. Until then every request
of that address that carries a password, right or wrong, is answered 429 with
``Retry-After`` (no server thread sleeps). A right password resets the
address; so does a quiet spell of :data:`~sqjobs.defaults.DASHBOARD_LOGIN_FORGET_S`.
Other addresses are not affected. One warning line per burst: when an
address reaches the limit.

Behind a reverse proxy every client has the proxy's address, so one guesser
slows everybody down: the dashboard does not trust forwarded headers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ... import defaults

logger = logging.getLogger("sqjobs.dashboard")


@dataclass
class _Failures:
    """One address's wrong passwords since it was last reset."""

    count: int
    last_s: float


class LoginThrottle:
    """Counts wrong passwords per client address and says how long each must wait (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 free_failures: int = defaults.DASHBOARD_LOGIN_FREE_FAILURES,
                 delay_s: float = defaults.DASHBOARD_LOGIN_DELAY_S,
                 max_delay_s: float = defaults.DASHBOARD_LOGIN_MAX_DELAY_S,
                 forget_s: float = defaults.DASHBOARD_LOGIN_FORGET_S,
                 max_clients: int = defaults.DASHBOARD_LOGIN_CLIENTS) -> None:
        self._clock = clock
        self._free_failures = free_failures
        self._delay_s = delay_s
        self._max_delay_s = max_delay_s
        self._forget_s = forget_s
        self._max_clients = max_clients
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    @property
    def clients(self) -> int:
        """How many addresses with wrong passwords are remembered."""
        with self._lock:
            return len(self._failures)

    def attempt(self, client: str, correct: bool) -> float:
        """Record one login of ``client``; return the seconds it must wait first (0: answer it as it deserves).

        A login that must wait is not counted, whether its password was right or wrong.
        """
        with self._lock:
            now = self._clock()
            failures = self._failures.get(client)
            if failures is not None and now - failures.last_s >= self._forget_s:
                del self._failures[client]
                failures = None
            if failures is None:
                if not correct:
                    self._failures[client] = _Failures(1, now)
                    self._log_if_limit(client, self._failures[client])
                    self._bound()
                return 0.0
            wait_s = failures.last_s + self._wait_after(failures.count) - now
            if wait_s > 0:
                return wait_s
            if correct:
                del self._failures[client]
            else:
                failures.count += 1
                failures.last_s = now
                self._log_if_limit(client, failures)
            return 0.0

    def _wait_after(self, count: int) -> float:
        """Seconds an address with ``count`` wrong passwords waits after its last one."""
        if count < self._free_failures:
            return 0.0
        return min(self._delay_s * 2.0 ** min(count - self._free_failures, 64), self._max_delay_s)

    def _log_if_limit(self, client: str, failures: _Failures) -> None:
        if failures.count == self._free_failures:
            logger.warning("dashboard: %d wrong passwords from %s: its logins are refused (429) for %g s, "
                           "twice as long after each further wrong one (up to %g s)",
                           failures.count, client, self._wait_after(failures.count), self._max_delay_s)

    def _bound(self) -> None:
        """Forget the oldest addresses when too many are remembered (many addresses must not fill the memory)."""
        if len(self._failures) <= self._max_clients:
            return
        now = self._clock()
        for client in [client for client, failures in self._failures.items()
                       if now - failures.last_s >= self._forget_s]:
            del self._failures[client]
        while len(self._failures) > self._max_clients:
            del self._failures[min(self._failures, key=lambda client: self._failures[client].last_s)]
