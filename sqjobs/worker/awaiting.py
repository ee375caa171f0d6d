"""Running what an ``async def`` job (or hook) returns, so that no coroutine is left un-awaited.

A job's ``run`` (or a hook) that returns an awaitable is awaited to its end
on an event loop, with the attempt's time limit as an asyncio timeout (the
coroutine is cancelled at the deadline).

- In a worker's job process with threads (:func:`start_shared_loop`), every
  awaitable runs on the one event loop of the process: coroutines of
  different jobs overlap, each keeping its thread waiting, so threads and
  coroutines share the worker's concurrency limit.
- Elsewhere (one job at a time, eager mode), each awaitable gets a loop of
  its own; where the calling thread already runs an event loop (eager mode
  inside an async web handler), that loop runs in a helper thread and the
  caller waits for it.

Context variables (the job id the log lines carry) follow the awaitable.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from typing import Any, Awaitable

from ..errors import TimeLimitExceeded


async def _bounded(awaitable: Awaitable[Any], timeout_s: float | None, message: str) -> Any:
    if timeout_s is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError:
        raise TimeLimitExceeded(message) from None


#: The event loop every awaitable of this process runs on, once :func:`start_shared_loop` made one.
_shared_loop: asyncio.AbstractEventLoop | None = None


def start_shared_loop() -> asyncio.AbstractEventLoop:
    """Run one event loop in a thread of this process; from now on awaitables of jobs run on it."""
    global _shared_loop
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="sqjobs-event-loop", daemon=True).start()
    _shared_loop = loop
    return loop


async def _in_context(context: contextvars.Context, awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable`` with the values of ``context``'s variables set (they do not cross threads alone)."""
    for variable, value in context.items():
        variable.set(value)
    return await awaitable


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
    shared = _shared_loop
    if shared is not None and not _loop_running_here():
        context = contextvars.copy_context()
        future = asyncio.run_coroutine_threadsafe(_bounded(_in_context(context, awaitable), timeout_s, message),
                                                  shared)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # the thread was interrupted (its time limit): the coroutine is cancelled too
            raise
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
