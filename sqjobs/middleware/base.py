"""Middleware: code that runs at each step of a job's life, in the process where that step happens.

Subclass :class:`Middleware` and implement the methods you need; every one
is optional (the base class does nothing). Configure instances with
``[sqjobs] middleware = package.module.ClassName, ...`` (each made with no
arguments) or ``sqjobs.configure(middleware=[...])``. They run in the order
given, after the ones sqjobs ships (the duplicate-delivery guard, status
tracking, the cancellation check, the worker's health file), which are
middleware too. (Unique keys are freed by the worker itself, once the
broker confirmed the delete or dead-letter move: :mod:`sqjobs.middleware.unique`.)

- ``before_enqueue(message)``: in the producer, before the message is sent;
  it may add ``message.headers[...]`` (they travel on the wire). An exception
  here refuses the send: the caller gets it and nothing is sent.
  ``enqueue_failed(message, error)``: the send failed after ``before_enqueue``
  (status tracking removes the PENDING row it wrote).
- ``before_run(job, message)`` and ``after_run(job, message, result=None,
  error=None)``: around each attempt, in the process that runs the job (the
  worker's job process, or the caller in eager mode). ``before_run`` may
  raise :class:`~sqjobs.errors.RejectMessage` (the message goes to the
  dead-letter queue with its reason and the job is never called) or
  :class:`~sqjobs.errors.SkipMessage` (deleted without running). Any other
  exception from a middleware is logged with its name and the job runs on.
- ``runs_for(job_class)``: whether ``before_enqueue``, ``before_run`` and
  ``after_run`` apply to that job at all (asked once per job class and process; False leaves the
  middleware out of its attempts, which keeps a busy worker's per-job cost
  down: status tracking says False for untracked jobs).
- ``after_dead_letter(message, reason)``: in the worker, once a message was
  moved to ``<queue>-dead``; ``message`` is the raw body (a ``str``) when it
  could not be decoded, or when its signature did not verify (then nothing
  it says, its job id included, is to be believed).
- ``worker_started(worker)`` / ``worker_stopped(worker)``: in the worker
  process, when it starts consuming and when it stops.

An exception from ``after_run``, ``after_dead_letter``, ``worker_started``
or ``worker_stopped`` is logged with the middleware's name and never changes
what happens to the message. (Status tracking is the exception that proves
the rule: while the status database is unreachable its hooks raise
:class:`~sqjobs.errors.StatusStoreError`, and the worker keeps the message and
tries again, so that no outcome goes unrecorded.)
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..errors import ConfigError, RejectMessage, SkipMessage, StatusStoreError

if TYPE_CHECKING:
    from ..job import Job
    from ..message import JobMessage

logger = logging.getLogger("sqjobs.middleware")


class Middleware:
    """Base class of middleware: every method is an optional no-op."""

    def before_enqueue(self, message: JobMessage) -> None:
        """Called in the producer before ``message`` is sent; may set ``message.headers[...]``."""

    def enqueue_failed(self, message: JobMessage, error: BaseException) -> None:
        """Called in the producer when the send of ``message`` failed after its ``before_enqueue``."""

    def before_run(self, job: Job, message: JobMessage) -> None:
        """Called before each attempt of ``job``, in the process that runs it."""

    def after_run(self, job: Job, message: JobMessage, result: Any = None, error: BaseException | None = None) -> None:
        """Called after each attempt with its result, or the exception it ended with."""

    def runs_for(self, job_class: type[Job]) -> bool:
        """Whether ``before_enqueue``, ``before_run`` and ``after_run`` apply to ``job_class`` (asked once a class)."""
        return True

    def after_dead_letter(self, message: JobMessage | str, reason: str) -> None:
        """Called in the worker once ``message`` (or a body that could not be decoded) is in ``<queue>-dead``."""

    def worker_started(self, worker: Any) -> None:
        """Called in the worker process when it starts consuming."""

    def worker_stopped(self, worker: Any) -> None:
        """Called in the worker process when it stops."""

    @property
    def name(self) -> str:
        """The middleware's name in logs: its class's module and name."""
        return f"{type(self).__module__}.{type(self).__qualname__}"


#: Exceptions a middleware raises on purpose to steer a message; they are not its failures.
PASSED_THROUGH = (RejectMessage, SkipMessage, StatusStoreError)


class MiddlewareChain:
    """The middleware of one application, called in order, each one's failure kept to itself.

    The hooks around a job are not called from here: the producer calls
    :meth:`announcers`' ``before_enqueue`` and the runner
    :meth:`around`'s ``before_run`` and ``after_run`` itself, so that only
    the middleware that apply to the job class are called.
    """

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self.middleware: list[Middleware] = list(middleware)
        self._around: dict[type[Job], tuple[list[Middleware], list[Middleware]]] = {}
        self._announcers: dict[type[Job] | None, list[Middleware]] = {}

    def around(self, job_class: type[Job]) -> tuple[list[Middleware], list[Middleware]]:
        """The middleware whose ``before_run`` (in order) and ``after_run`` (last first) apply to ``job_class``.

        A middleware that does not override a hook, or whose ``runs_for``
        says False, is left out. Worked out once per job class.
        """
        known = self._around.get(job_class)
        if known is None:
            applying = [item for item in self.middleware if item.runs_for(job_class)]
            before = [item for item in applying if type(item).before_run is not Middleware.before_run]
            after = [item for item in reversed(applying) if type(item).after_run is not Middleware.after_run]
            known = self._around[job_class] = (before, after)
        return known

    def __iter__(self) -> Any:
        return iter(self.middleware)

    def __len__(self) -> int:
        return len(self.middleware)

    def announcers(self, job_class: type[Job] | None) -> list[Middleware]:
        """The middleware whose ``before_enqueue`` applies to ``job_class`` (None: a job unknown here).

        Those that override it and whose ``runs_for`` says True (asked once
        per job class, as for :meth:`around`); an empty list lets a send
        skip the call.
        """
        known = self._announcers.get(job_class)
        if known is None:
            known = self._announcers[job_class] = [
                item for item in self.middleware
                if type(item).before_enqueue is not Middleware.before_enqueue
                and (job_class is None or item.runs_for(job_class))]
        return known

    def enqueue_failed(self, message: JobMessage, error: BaseException) -> None:
        """Call every ``enqueue_failed``; failures are logged (the send's own error is what the caller gets)."""
        for item in self.middleware:
            self.call(item, "enqueue_failed", message, error, passed_through=())

    def after_dead_letter(self, message: JobMessage | str, reason: str) -> None:
        """Call every ``after_dead_letter``; failures are logged."""
        for item in self.middleware:
            self.call(item, "after_dead_letter", message, reason, passed_through=())

    def worker_started(self, worker: Any) -> None:
        """Call every ``worker_started``; failures are logged."""
        for item in self.middleware:
            self.call(item, "worker_started", worker, passed_through=())

    def worker_stopped(self, worker: Any) -> None:
        """Call every ``worker_stopped`` (last first); failures are logged."""
        for item in reversed(self.middleware):
            self.call(item, "worker_stopped", worker, passed_through=())

    @staticmethod
    def call(item: Middleware, hook: str, *args: Any,
             passed_through: tuple[type[BaseException], ...] = PASSED_THROUGH) -> None:
        """Call ``item.hook(*args)``; log its failure with its name unless it is one of ``passed_through``."""
        try:
            getattr(item, hook)(*args)
        except passed_through:
            raise
        except Exception:
            MiddlewareChain.failed(item, hook)

    @staticmethod
    def failed(item: Middleware, hook: str) -> None:
        """Log that ``item.hook`` raised (from an ``except`` block: the line carries the traceback)."""
        logger.exception("middleware %s: %s failed; going on without it", item.name, hook)


def load_middleware(paths: Sequence[str], where: str = "[sqjobs] middleware") -> list[Middleware]:
    """Import and make each ``package.module.ClassName`` in ``paths`` (no arguments); ConfigError naming ``where``."""
    made: list[Middleware] = []
    for path in paths:
        module_name, _, class_name = path.rpartition(".")
        if not module_name:
            raise ConfigError(f"{where}: {path!r} is not a dotted path (package.module.ClassName)")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ConfigError(f"{where}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Middleware)):
            raise ConfigError(f"{where}: {path!r} is not a subclass of sqjobs.Middleware")
        try:
            made.append(cls())
        except Exception as exc:
            raise ConfigError(f"{where}: {path}() failed: {type(exc).__name__}: {exc}") from None
    return made
