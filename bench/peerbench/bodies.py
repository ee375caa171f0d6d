"""The job bodies, the same for every system; each peer's jobs module wraps them in its own decorator.

Every body takes the job's index (so that each message carries an argument,
as real jobs do) and ends with the Redis work the runner watches: one INCR of
:data:`~peerbench.settings.DONE_KEY`, or, for pickup, one RPUSH of the time
the job started.
"""

from __future__ import annotations

import asyncio
import time

from .counter import for_this_thread
from .settings import ASYNC_SLEEP_S, DONE_KEY, IO_SLEEP_S, STARTED_KEY


def cpu(index: int) -> None:
    """CPU-light: one Redis INCR."""
    for_this_thread().incr(DONE_KEY)


def io(index: int) -> None:
    """I/O-bound: sleep IO_SLEEP_S (a slow HTTP call, say), then INCR."""
    time.sleep(IO_SLEEP_S)
    for_this_thread().incr(DONE_KEY)


async def aio(index: int) -> None:
    """Async: await ASYNC_SLEEP_S, then INCR (a blocking ~50 us call, the same for every system)."""
    await asyncio.sleep(ASYNC_SLEEP_S)
    for_this_thread().incr(DONE_KEY)


def pickup(index: int) -> None:
    """Record when this job started (wall clock, read by the sender on the same machine)."""
    for_this_thread().rpush(STARTED_KEY, repr(time.time()))


def noop(index: int) -> None:
    """Nothing: for eager mode, whose cost beyond this call is what is measured."""
