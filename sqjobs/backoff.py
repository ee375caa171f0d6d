"""Exponential backoff, written once: the pause doubles from a first value up to a cap.

Used by job retries (with jitter), by loops that wait for a service to come
back (a broker outage, the status database), and by polls that slow down
while nothing happens.
"""

from __future__ import annotations

import random


def exponential(first_s: float, step: int, cap_s: float, jitter: float = 0.0,
                rng: random.Random | None = None) -> float:
    """The pause before try ``step + 1`` (``step`` 0 is the first pause): ``first_s * 2**step``, capped.

    ``jitter`` adds up to that share of the pause at random (0.1: up to 10 %),
    so that many clients failing together do not come back in lockstep; each
    pause is still longer than the one before until the cap.
    """
    pause_s: float = min(float(first_s) * (2 ** max(step, 0)), cap_s)
    if jitter:
        pause_s *= 1 + jitter * (rng or random).random()
    return pause_s


class Backoff:
    """Successive pauses of one wait: ``first_s``, then doubled each time up to ``cap_s``; :meth:`reset` starts over."""

    def __init__(self, first_s: float, cap_s: float, jitter: float = 0.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.jitter = jitter
        self.step = 0

    def next(self) -> float:
        """The next pause (and move on to the one after)."""
        pause_s = exponential(self.first_s, self.step, self.cap_s, self.jitter)
        if pause_s < self.cap_s:
            self.step += 1
        return pause_s

    def reset(self) -> None:
        """Start over from ``first_s``."""
        self.step = 0
