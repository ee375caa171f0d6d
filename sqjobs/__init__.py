"""sqjobs: Simple Queue Jobs. Plain functions become background jobs.

    from sqjobs import job

    @job(queue="emails", retries=5)
    def send_welcome(user_id): ...

    send_welcome.delay(42)

The names below are imported when first used, so that importing one part
(``sqjobs.brokers.sqlite``, say) does not load the rest.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "App": "app", "configure": "app", "current_app": "app", "get_broker": "app",
    "Job": "job", "PeriodicJob": "job", "ResultJob": "job", "job": "job", "JobFunction": "job", "SendOptions": "job",
    "registry": "registry", "cancel": "app", "Cancellation": "middleware.cancellation",
    "Middleware": "middleware.base",
    "JobHandle": "status.handle", "Status": "status.handle", "get_job": "app",
    "create_eager_broker": "compat", "create_sqs_broker": "compat",
    "create_sqs_worker": "compat",
    "ConfigError": "errors", "JobTimeoutError": "errors", "MessageTooLargeError": "errors",
    "RejectMessage": "errors", "Retry": "errors", "SQJobsError": "errors", "SkipMessage": "errors",
    "TimeLimitExceeded": "errors", "UnknownJobError": "errors", "JobNotCancellableError": "errors",
}

__all__ = ["App", "Cancellation", "ConfigError", "Job", "JobFunction", "JobHandle", "JobNotCancellableError",
    "JobTimeoutError",
    "MessageTooLargeError", "Middleware", "PeriodicJob", "RejectMessage", "ResultJob", "Retry", "SQJobsError",
    "SendOptions", "SkipMessage", "Status", "TimeLimitExceeded", "UnknownJobError", "cancel", "configure",
    "create_eager_broker", "create_sqs_broker", "create_sqs_worker", "current_app", "get_broker", "get_job", "job",
    "registry"]

if TYPE_CHECKING:
    from .app import App, cancel, configure, current_app, get_broker, get_job
    from .compat import create_eager_broker, create_sqs_broker, create_sqs_worker
    from .errors import (
        ConfigError,
        JobNotCancellableError,
        JobTimeoutError,
        MessageTooLargeError,
        RejectMessage,
        Retry,
        SkipMessage,
        SQJobsError,
        TimeLimitExceeded,
        UnknownJobError,
    )
    from .job import Job, JobFunction, PeriodicJob, ResultJob, SendOptions, job
    from .middleware.base import Middleware
    from .middleware.cancellation import Cancellation
    from .registry import registry
    from .status.handle import JobHandle, Status


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sqjobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


#: Submodules named like the public object they define: ``sqjobs.job`` is the decorator, as it always was.
_SAME_NAMED = {"job", "registry"}


class _Package(types.ModuleType):
    """The ``sqjobs`` package: when the import system binds the submodule ``job`` (or ``registry``) on it,
    the name keeps pointing at the decorator (the registry) that ``from sqjobs import job`` means."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SAME_NAMED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
