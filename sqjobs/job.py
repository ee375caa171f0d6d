"""Jobs: the ``Job`` base class, the ``@job`` decorator and the registry of job names.

A job is a class with a ``run`` method and a few optional hooks. ``@job``
turns a plain function into such a class. Either way the class is registered
under its ``name``, which is what messages carry and workers look up.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Generic,
    Iterable,
    Mapping,
    ParamSpec,
    Protocol,
    Sequence,
    TypeVar,
    overload,
)

from . import defaults
from .app import current_app
from .brokers.sqs_limits import check_queue_name
from .errors import ConfigError, JobDefinitionError
from .message import check_arguments, new_job_id
from .registry import Registry, registry
from .schedule.cron import Schedule
from .worker.execution import base_hook

if TYPE_CHECKING:
    from .status.handle import JobHandle

__all__ = ["Job", "JobFunction", "PeriodicJob", "Registry", "ResultJob", "SendOptions", "job", "registry"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class _JobClass(Protocol[P, R_co]):
    """For type checkers only: what a Job class's sending classmethods need of ``cls``.

    ``Job.delay`` and friends annotate ``cls`` with it, so mypy reads ``P``
    and ``R`` off the class's ``run``: ``AdderJob.delay(1, 2)`` is checked
    against ``AdderJob.run`` and returns a ``JobHandle[int]``. A ``run(self,
    *args, **kwargs)`` without annotations gives ``JobHandle[Any]``, as
    before. ``apply_async`` mirrors :meth:`Job.apply_async`.
    """

    def run(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    @classmethod
    def apply_async(cls, args: Sequence[Any] = ..., kwargs: dict[str, Any] | None = ..., queue: str | None = ...,
                    delay: float | timedelta = ..., job_id: str | None = ..., group: str | None = ...,
                    dedup_id: str | None = ..., *, eta: datetime | None = ..., unique_key: str | None = ...,
                    cancellable: bool = ...) -> JobHandle[Any]: ...


class Job:
    """Base class of every job. Subclass it and implement :meth:`run`.

    Class attributes configure the job; a subclass without ``run`` of its own
    (an abstract base such as ``TimedJob``) is not registered.

    While a job runs, the instance carries ``id``, ``queue``, ``attempt``
    (1 for the first) and, after success, ``result``.
    """

    #: Registered name; messages carry it. Default: ``module.ClassName``.
    name: ClassVar[str] = ""
    #: Queue the job is sent to unless the call names another.
    queue: ClassVar[str] = defaults.QUEUE
    #: Extra attempts after a failure.
    retries: ClassVar[int] = defaults.RETRIES
    #: First backoff delay in seconds, doubled at each attempt, capped and jittered.
    retry_delay: ClassVar[float] = defaults.RETRY_DELAY_S
    #: Hard limit in seconds for one attempt; None for no limit.
    timeout: ClassVar[float | None] = None
    #: Record status and result in the database (see ``sqjobs.status.handle``).
    track: ClassVar[bool] = False
    #: FIFO queues: message group (default: the job name).
    group: ClassVar[str | None] = None
    #: At most one job with these arguments waiting or running: the unique key is made from the job's
    #: name and arguments (see ``sqjobs.middleware.unique``); ``apply_async(unique_key=...)`` names one instead.
    unique: ClassVar[bool] = False
    #: Untracked jobs: every message may be cancelled (:mod:`sqjobs.middleware.cancellation`): the worker reads
    #: the status database before each attempt. ``apply_async(cancellable=True)`` asks it for one message; tracked
    #: jobs always may.
    cancellable: ClassVar[bool] = False
    #: Periodic jobs: a cron expression and the IANA time zone it is read in.
    schedule: ClassVar[str | None] = None
    timezone: ClassVar[str] = "UTC"
    #: Periodic jobs: what to do with fire times missed while no beater ran:
    #: "latest" runs the most recent one once, "all" runs each, "none" skips them.
    catch_up: ClassVar[str] = "latest"
    #: True on classes that only provide behaviour for other jobs (not registered).
    abstract: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract", False) or "run" not in _methods_defined_below_job(cls):
            return
        if not cls.__dict__.get("name"):
            cls.name = f"{cls.__module__}.{cls.__qualname__}"
        check_queue_name(cls.queue, f"job {cls.name}: ")
        _check_schedule(cls)
        registry.register(cls)

    def __init__(self) -> None:
        self.id: str | None = None
        self.queue_name: str | None = None
        self.attempt: int = 0
        #: True when no attempt follows this one (its failure goes to the dead-letter queue).
        self.last_attempt: bool = False
        self.result: Any = None
        #: Periodic jobs: the ISO 8601 fire time this run serves (None for other jobs).
        self.scheduled_for: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- hooks ------------------------------------------------------------------------

    @base_hook
    def set_up(self, *args: Any, **kwargs: Any) -> None:
        """Called before :meth:`run` with the same arguments."""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Do the work; the return value is the job's result (JSON if tracked)."""
        raise NotImplementedError

    @base_hook
    def tear_down(self, *args: Any, **kwargs: Any) -> None:
        """Called after :meth:`run`, also when it raised."""

    @base_hook
    def on_success(self, result: Any) -> None:
        """Called after a successful attempt with its result."""

    @base_hook
    def on_failure(self, exc: BaseException) -> None:
        """Called when the last attempt failed (the message goes to the dead-letter queue)."""

    @base_hook
    def on_retry(self, exc: BaseException) -> None:
        """Called when an attempt failed and another one is scheduled."""

    # -- sending ----------------------------------------------------------------------

    @classmethod
    def delay(cls: type[_JobClass[P, R]], *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue this job with these arguments on the configured broker; return a JobHandle.

        Type checkers check the arguments against ``run``'s and type the
        handle's result as ``run``'s return type.
        """
        return cls.apply_async(args=args, kwargs=kwargs)

    @classmethod
    def options(cls: type[_JobClass[P, R]], *, queue: str | None = None, delay: float | timedelta = 0,
                eta: datetime | None = None, job_id: str | None = None, unique_key: str | None = None,
                group: str | None = None, dedup_id: str | None = None,
                cancellable: bool = False) -> SendOptions[P, R]:
        """The options of :meth:`apply_async`, kept for a typed ``.delay(...)``: ``Job.options(queue="x").delay(1, 2)``.

        Sends nothing itself; see :class:`SendOptions`.
        """
        return SendOptions(cls, queue=queue, delay=delay, eta=eta, job_id=job_id, unique_key=unique_key,
                           group=group, dedup_id=dedup_id, cancellable=cancellable)

    @classmethod
    def delay_on_commit(cls: type[_JobClass[P, R]], *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue this job when the surrounding database transaction commits; return the id it will have.

        Nothing is sent if the transaction rolls back. Needs the application's
        ``on_commit`` hook (the Django integration sets Django's
        ``transaction.on_commit``); without one it raises ConfigError. The
        arguments are checked now: a value JSON cannot carry is a TypeError here.
        """
        app = current_app()
        if app.on_commit is None:
            raise ConfigError("delay_on_commit needs a transaction hook (App.on_commit): add 'sqjobs_django' to "
                              "Django's INSTALLED_APPS, or use .delay()")
        check_arguments(args, kwargs)
        job_id = new_job_id()
        app.on_commit(functools.partial(cls.apply_async, args=args, kwargs=kwargs, job_id=job_id))
        return job_id

    @classmethod
    def delay_many(cls, calls: Iterable[Sequence[Any] | tuple[Sequence[Any], Mapping[str, Any]]],
                   queue: str | None = None) -> list[JobHandle[Any]]:
        """Enqueue one job per call, in batches (all or nothing on the embedded broker); return their handles.

        Each call is a sequence of positional arguments, or an ``(args,
        kwargs)`` pair.
        """
        return current_app().producer.send_many(cls, calls, queue=queue)

    @classmethod
    def apply_async(
        cls,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        delay: float | timedelta = 0,
        job_id: str | None = None,
        group: str | None = None,
        dedup_id: str | None = None,
        *,
        eta: datetime | None = None,
        unique_key: str | None = None,
        cancellable: bool = False,
    ) -> JobHandle[Any]:
        """Enqueue with options: ``queue``, ``delay`` (seconds or a timedelta) or ``eta`` (an aware datetime),
        ``unique_key``, ``cancellable`` (this message of an untracked job may be cancelled), FIFO
        ``group``/``dedup_id``.

        Returns a JobHandle (with a ``unique_key`` already taken: the handle of
        the job that holds it, and nothing is sent). Raises TypeError for
        arguments JSON cannot carry, ValueError for a naive ``eta``,
        DelayTooLongError past the longest delay (see the README, Jobs for later).
        """
        return current_app().producer.send(cls, args, kwargs, queue=queue, delay_s=delay, eta=eta, job_id=job_id,
                                           group=group, dedup_id=dedup_id, unique_key=unique_key,
                                           cancellable=cancellable)


class SendOptions(Generic[P, R]):
    """A job and the options of one sending, whose ``delay`` is typed like the job's own.

    What ``add.options(queue="other", delay=30)`` returns (for a class job,
    ``AdderJob.options(...)``): ``.delay(1, 2)`` then sends as
    ``add.apply_async(args=(1, 2), queue="other", delay=30)`` would, with
    the arguments checked by type checkers against the job's signature and a
    ``JobHandle[R]`` back. ``apply_async(args=...)`` takes a plain sequence,
    which no type checker can hold to the signature.
    """

    def __init__(self, job_class: type[_JobClass[P, R]], *, queue: str | None = None, delay: float | timedelta = 0,
                 eta: datetime | None = None, job_id: str | None = None, unique_key: str | None = None,
                 group: str | None = None, dedup_id: str | None = None, cancellable: bool = False) -> None:
        self.job_class = job_class
        self.queue = queue
        self.delay_s = delay
        self.eta = eta
        self.job_id = job_id
        self.unique_key = unique_key
        self.group = group
        self.dedup_id = dedup_id
        self.cancellable = cancellable

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Send the job with these arguments and the kept options; return its handle (see :meth:`Job.apply_async`)."""
        return self.job_class.apply_async(args=args, kwargs=kwargs, queue=self.queue, delay=self.delay_s,
                                          eta=self.eta, job_id=self.job_id, unique_key=self.unique_key,
                                          group=self.group, dedup_id=self.dedup_id, cancellable=self.cancellable)

    def __repr__(self) -> str:
        return f"<SendOptions of {getattr(self.job_class, 'name', self.job_class)!s} queue={self.queue!r}>"


class PeriodicJob(Job):
    """Base class of jobs a beater sends on a cron ``schedule`` read in ``timezone`` (the seed's PeriodicJob)."""

    abstract = True


class ResultJob(Job):
    """Base class of jobs whose status and result are recorded (the seed talk's ResultJob).

    Subclass it like :class:`Job` and implement ``run``; its return value
    must be JSON.
    """

    abstract = True
    track = True


_CATCH_UP_CHOICES = ("latest", "all", "none")


def _check_schedule(cls: type[Job]) -> None:
    """Raise JobDefinitionError for a bad schedule, time zone or catch-up choice."""
    if cls.catch_up not in _CATCH_UP_CHOICES:
        raise JobDefinitionError(f"job {cls.name}: catch_up must be one of {', '.join(_CATCH_UP_CHOICES)}, "
                                 f"got {cls.catch_up!r}")
    if issubclass(cls, PeriodicJob) and not cls.schedule:
        raise JobDefinitionError(f"periodic job {cls.name} needs a schedule (a cron expression)")
    if cls.schedule:
        Schedule(cls.schedule, cls.timezone)


def _methods_defined_below_job(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is Job:
            break
        names.update(klass.__dict__)
    return names


#: Options ``@job`` takes that become class attributes.
_ATTRIBUTE_OPTIONS = {"queue", "name", "retries", "retry_delay", "timeout", "track", "group",
                      "schedule", "timezone", "catch_up", "unique", "cancellable"}
#: Options ``@job`` takes that become hook methods (called with the job instance first).
_HOOK_OPTIONS = {"set_up", "tear_down", "on_success", "on_failure", "on_retry"}


class JobFunction(Generic[P, R]):
    """What ``@job`` returns: the function, still callable inline, plus ``delay`` and friends."""

    def __init__(self, fn: Callable[P, R], job_class: type[Job]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.job_class = job_class

    @property
    def name(self) -> str:
        """The registered job name."""
        return self.job_class.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue ``fn(*args, **kwargs)``; return its JobHandle."""
        return self.job_class.apply_async(args=args, kwargs=kwargs)

    def options(self, *, queue: str | None = None, delay: float | timedelta = 0, eta: datetime | None = None,
                job_id: str | None = None, unique_key: str | None = None, group: str | None = None,
                dedup_id: str | None = None, cancellable: bool = False) -> SendOptions[P, R]:
        """The options of :meth:`apply_async`, kept for a typed ``.delay(...)``: ``fn.options(queue="x").delay(1)``."""
        return SendOptions(self.job_class, queue=queue, delay=delay, eta=eta, job_id=job_id, unique_key=unique_key,
                           group=group, dedup_id=dedup_id, cancellable=cancellable)

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue ``fn(*args, **kwargs)`` when the surrounding transaction commits (:meth:`Job.delay_on_commit`)."""
        return self.job_class.delay_on_commit(*args, **kwargs)

    def apply_async(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, *,
                    queue: str | None = None, delay: float | timedelta = 0, eta: datetime | None = None,
                    job_id: str | None = None, unique_key: str | None = None,
                    group: str | None = None, dedup_id: str | None = None,
                    cancellable: bool = False) -> JobHandle[R]:
        """Enqueue with options (``queue``, ``delay`` or ``eta``, ``job_id``, ``unique_key``, ``cancellable``,
        FIFO ``group``/``dedup_id``); see :meth:`Job.apply_async`. Type checkers do not check ``args`` and
        ``kwargs`` against the function: :meth:`options` is the typed way."""
        return self.job_class.apply_async(args=args, kwargs=kwargs, queue=queue, delay=delay, eta=eta,
                                          job_id=job_id, unique_key=unique_key, group=group, dedup_id=dedup_id,
                                          cancellable=cancellable)

    def delay_many(self, calls: Iterable[Sequence[Any] | tuple[Sequence[Any], Mapping[str, Any]]],
                   queue: str | None = None) -> list[JobHandle[R]]:
        """Enqueue ``fn`` once per call, in batches; each call is its positional arguments or ``(args, kwargs)``."""
        return self.job_class.delay_many(calls, queue=queue)

    def __repr__(self) -> str:
        return f"<job {self.name}>"


@overload
def job(fn: Callable[P, R], /) -> JobFunction[P, R]: ...


@overload
def job(*, base: type[Job] = ..., queue: str = ..., name: str = ..., retries: int = ..., retry_delay: float = ...,
        timeout: float | None = ..., track: bool = ..., group: str | None = ..., unique: bool = ...,
        cancellable: bool = ..., schedule: str | None = ...,
        timezone: str = ..., catch_up: str = ..., set_up: Callable[..., Any] = ...,
        tear_down: Callable[..., Any] = ..., on_success: Callable[..., Any] = ...,
        on_failure: Callable[..., Any] = ..., on_retry: Callable[..., Any] = ...,
        ) -> Callable[[Callable[P, R]], JobFunction[P, R]]: ...


def job(fn: Callable[..., Any] | None = None, /, *, base: type[Job] = Job, **options: Any) -> Any:
    """Turn a function into a registered job.

    ``@job`` or ``@job(queue=..., name=..., retries=..., retry_delay=...,
    timeout=..., track=..., group=..., unique=..., cancellable=..., schedule=..., timezone=...,
    catch_up=..., base=..., set_up=..., tear_down=..., on_success=..., on_failure=..., on_retry=...)``.
    Hook functions are called with the job instance first, like methods:
    ``on_failure(job, exc)``. Unknown options raise JobDefinitionError at once.
    ``async def`` functions are awaited when the job runs.
    """
    unknown = set(options) - _ATTRIBUTE_OPTIONS - _HOOK_OPTIONS
    if unknown:
        known = ", ".join(sorted(_ATTRIBUTE_OPTIONS | _HOOK_OPTIONS | {"base"}))
        raise JobDefinitionError(f"@job got unknown option(s) {', '.join(sorted(unknown))}; known: {known}")
    if not (isinstance(base, type) and issubclass(base, Job)):
        raise JobDefinitionError(f"@job base= must be a Job subclass, got {base!r}")
    for hook in _HOOK_OPTIONS & set(options):
        if not callable(options[hook]):
            raise JobDefinitionError(f"@job {hook}= must be callable, got {options[hook]!r}")

    def decorate(func: Callable[..., Any]) -> JobFunction[Any, Any]:
        attributes: dict[str, Any] = {key: options[key] for key in _ATTRIBUTE_OPTIONS & set(options)}
        attributes.setdefault("name", f"{func.__module__}.{func.__qualname__}")
        for hook in _HOOK_OPTIONS & set(options):
            attributes[hook] = options[hook]

        def run(self: Job, *args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        attributes["run"] = run
        attributes["__module__"] = func.__module__
        attributes["__doc__"] = func.__doc__
        job_class = type(func.__name__, (base,), attributes)
        return JobFunction(func, job_class)

    if fn is not None:
        if not callable(fn):
            raise JobDefinitionError("@job takes keyword options only, e.g. @job(queue='emails')")
        return decorate(fn)
    return decorate
