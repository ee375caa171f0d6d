"""Running what an ``async def`` job (or hook) returns, so that no coroutine is left un-awaited.

A job's ``run`` (or a hook) that returns an awaitable is awaited to its end
on an event loop, with the attempt's time limit as an asyncio timeout (the
coroutine is cancelled at the deadline). Where the calling thread already
runs an event loop (eager mode inside an async web handler), the awaitable
runs on a fresh loop in a helper thread and the caller waits for it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Awaitable

from .errors import TimeLimitExceeded


async def _bounded(awaitable: Awaitable[Any], timeout_s: float | None, message: str) -> Any:
    if timeout_s is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError:
        raise TimeLimitExceeded(message) from None


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_awaitable(awaitable: Awaitable[Any], timeout_s: float | None = None, message: str = "") -> Any:
    """Await ``awaitable`` to its end and return its value (or raise its exception).

    With ``timeout_s`` it is cancelled at the deadline and TimeLimitExceeded
    (``message``) is raised instead.
    """
    if not _loop_running_here():
        return asyncio.run(_bounded(awaitable, timeout_s, message))
    outcome: dict[str, Any] = {}

    def run_elsewhere() -> None:
        try:
            outcome["value"] = asyncio.run(_bounded(awaitable, timeout_s, message))
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    helper = threading.Thread(target=run_elsewhere, name="sqjobs-await", daemon=True)
    helper.start()
    helper.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def call(function: Any, *args: Any, timeout_s: float | None = None, message: str = "", **kwargs: Any) -> Any:
    """Call ``function``; if it returns an awaitable, await it (see :func:`run_awaitable`)."""
    value = function(*args, **kwargs)
    if inspect.isawaitable(value):
        value = run_awaitable(value, timeout_s, message)
    return value
