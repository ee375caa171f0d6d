"""The registry of job names: which class runs the messages that carry a name.

``Job`` subclasses and ``@job`` functions register themselves in the
process-wide :data:`registry` when they are defined; workers look message
names up there.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

from .errors import JobDefinitionError, UnknownJobError

if TYPE_CHECKING:
    from .job import Job


class Registry:
    """Job classes by name. Workers resolve message names here."""

    def __init__(self) -> None:
        self._jobs: dict[str, type[Job]] = {}
        self._lock = threading.Lock()

    def register(self, job_class: type[Job]) -> None:
        """Add ``job_class`` under its name; a different class under a taken name is an error."""
        with self._lock:
            existing = self._jobs.get(job_class.name)
            if existing is not None and _definition_site(existing) != _definition_site(job_class):
                raise JobDefinitionError(
                    f"job name {job_class.name!r} is taken by {existing.__module__}.{existing.__qualname__}; "
                    f"give {job_class.__module__}.{job_class.__qualname__} another name="
                )
            self._jobs[job_class.name] = job_class

    def get(self, name: str) -> type[Job]:
        """Return the job class registered as ``name``; raise UnknownJobError otherwise."""
        try:
            return self._jobs[name]
        except KeyError:
            raise UnknownJobError(f"no job is registered as {name!r}") from None

    def find(self, name: str) -> type[Job] | None:
        """Return the job class registered as ``name``, or None."""
        return self._jobs.get(name)

    def names(self) -> list[str]:
        """Return every registered name, sorted."""
        return sorted(self._jobs)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs


def _definition_site(job_class: type) -> tuple[str | None, str]:
    """Where a class was defined: its source file and qualified name.

    A module imported twice under two names (``tests.jobs`` and ``jobs``)
    defines the same jobs again; those may replace each other.
    """
    module = sys.modules.get(job_class.__module__)
    source = getattr(module, "__file__", None)
    return (os.path.realpath(source) if source else job_class.__module__), job_class.__qualname__


#: The process-wide registry that ``Job`` subclasses and ``@job`` add to.
registry = Registry()
