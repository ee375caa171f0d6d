"""Job status: the handle ``.delay()`` returns, and where tracked jobs record their state.

Status rows in a database arrive with job tracking; until a job is tracked,
its handle knows its id, name and queue, and in eager mode its result.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import Job
    from .message import JobMessage


class Status(str, enum.Enum):
    """States of a tracked job."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DEAD = "DEAD"


class JobHandle:
    """A sent job: ``id``, ``name``, ``queue``; in eager mode also ``status``, ``result`` and ``job``."""

    def __init__(self, job_id: str, name: str, queue: str, *, job: Job | None = None,
                 status: Status | None = None, result: Any = None, error: str | None = None) -> None:
        self.id = job_id
        self.name = name
        self.queue = queue
        #: The job instance that ran, in eager mode.
        self.job = job
        self._status = status
        self._result = result
        self._error = error

    @property
    def status(self) -> Status | None:
        """The job's state, or None when nothing records it."""
        return self._status

    @property
    def result(self) -> Any:
        """The job's return value once it succeeded (None before)."""
        return self._result

    @property
    def error(self) -> str | None:
        """The error of a failed job."""
        return self._error

    def __repr__(self) -> str:
        return f"<JobHandle {self.name} {self.id} on {self.queue}>"


def record_enqueued(job_class: type[Job], message: JobMessage, queue: str) -> None:
    """Record a tracked job as PENDING before it is sent (nothing yet for untracked jobs)."""


def record_started(job_class: type[Job], message: JobMessage, queue: str, attempt: int) -> None:
    """Record that an attempt of a tracked job started (nothing yet for untracked jobs)."""


def record_outcome(job_class: type[Job], message: JobMessage, attempt: Any, final: bool) -> None:
    """Record how an attempt ended; ``final`` when no attempt follows (nothing yet for untracked jobs)."""


def should_skip(job_class: type[Job], message: JobMessage) -> bool:
    """Return True if a tracked job with this id already succeeded (a duplicate delivery)."""
    return False
