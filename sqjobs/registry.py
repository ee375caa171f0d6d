"""The registry of job names: which class runs the messages that carry a name.

``Job`` subclasses and ``@job`` functions register themselves in the
process-wide :data:`registry` when they are defined; workers look message
names up there.
"""

from __future__ import annotations

import difflib
import os
import sys
import threading
from typing import TYPE_CHECKING

from .errors import JobDefinitionError, UnknownJobError

if TYPE_CHECKING:
    from .job import Job

#: How alike two names must be for one to be suggested for the other (difflib's ratio, 0 to 1; its own default).
_CLOSE_CUTOFF = 0.6
#: How much less alike than the closest name another name may be and still be suggested.
_CLOSE_MARGIN = 0.1


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

    def close_names(self, name: str, most: int = 3) -> list[str]:
        """Return up to ``most`` registered names spelt like ``name`` (a typo's "did you mean"), closest first.

        A name is compared whole and by its last dotted part, so that a name
        given without its module (``refund``) finds ``tickets.refund``. Names
        of one module share their prefix, so a weak match is dropped when a
        much closer one exists (``refnud``: ``refund``, not ``send_ticket``).
        """
        with self._lock:
            known = list(self._jobs)
        ranked = sorted(((_likeness(name, other), other) for other in known), key=lambda pair: (-pair[0], pair[1]))
        close = [(score, other) for score, other in ranked[:most] if score >= _CLOSE_CUTOFF]
        return [other for score, other in close if score >= close[0][0] - _CLOSE_MARGIN]

    def queues(self) -> set[str]:
        """Return the queues the registered jobs are sent to when no other queue is asked for."""
        with self._lock:
            return {job_class.queue for job_class in self._jobs.values()}

    def __contains__(self, name: object) -> bool:
        return name in self._jobs


def _likeness(name: str, other: str) -> float:
    """How alike ``name`` and ``other`` are (0 to 1), whole or by their last dotted parts, whichever is more."""
    whole = difflib.SequenceMatcher(None, name, other).ratio()
    last = difflib.SequenceMatcher(None, name.rpartition(".")[2], other.rpartition(".")[2]).ratio()
    return max(whole, last)


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
