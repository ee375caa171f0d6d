"""What every system adapter provides: how to start its workers, and how to send it jobs.

The runner uses the first half (:meth:`System.prepare`,
:meth:`System.worker_commands`, :meth:`System.worker_env`) and never imports
the system's library; the producer child process (:mod:`peerbench.producer`)
uses the second half (:meth:`System.sender`, :meth:`System.bulk_sender`,
:meth:`System.eager`), which imports it.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Callable

from .settings import PROCESSES

Send = Callable[[int], object]
SendMany = Callable[[range], object]


class NotAvailable(Exception):
    """This system cannot run this case here; the message says why (the table shows "n/a (why)")."""


def executable(name: str) -> str | None:
    """The path of console script ``name``: beside this Python first (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


class System:
    """One row family of the table. Subclasses set the class attributes and override what they run."""

    #: The row's name (``--only`` takes it, or the family).
    name = ""
    #: The family ``--only`` also matches (``huey`` runs both Huey rows).
    family = ""
    #: The distribution whose version is reported; None for the raw loops.
    distribution: str | None = None
    #: Other distributions whose versions matter to the row (its Redis client, its transport).
    related: tuple[str, ...] = ()
    #: Importable module and console script the system needs here.
    module: str | None = None
    script: str | None = None
    #: Cases this row runs; the others are left out of the table (only sqjobs runs "sqs").
    cases: tuple[str, ...] = ("cpu", "io", "async", "enqueue", "pickup", "eager")
    #: Share of a drain case's jobs this system drains unless ``--jobs`` says otherwise (the row says so).
    drain_share = 1.0
    #: The single-call API the enqueue row measures.
    single_api = ""

    def missing(self) -> str | None:
        """Why this system cannot run here (not installed), or None."""
        if self.module and importlib.util.find_spec(self.module) is None:
            return f"{self.distribution or self.module} is not installed (pip install -e '.[bench]')"
        if self.script and executable(self.script) is None:
            return f"no {self.script} command"
        return None

    # -- the runner's side --------------------------------------------------------------

    def prepare(self, folder: Path) -> None:
        """Create what a run needs in its fresh ``folder`` (config file, database file)."""

    def worker_commands(self, case: str, folder: Path) -> list[list[str]]:
        """The commands that start this system's :data:`PROCESSES` worker processes for ``case``.

        Raises NotAvailable when the system has no way to run the case.
        """
        raise NotAvailable("no workers")

    def worker_env(self, case: str) -> dict[str, str]:
        """Environment variables the workers and the producer need on top of the runner's."""
        return {}

    def how(self, case: str) -> str:
        """One line saying how the workers run for ``case`` (shown in the notes)."""
        return f"{PROCESSES} processes"

    # -- the producer's side (imports the system's library) ----------------------------

    def sender(self, case: str, folder: Path) -> Send:
        """A function that sends one job of ``case`` (``cpu``, ``io``, ``async``, ``pickup``) by index."""
        raise NotAvailable("no sender")

    def bulk_sender(self, case: str, folder: Path) -> tuple[str, SendMany]:
        """(the API's name, a function that sends one job per index in a range in one call)."""
        raise NotAvailable("no bulk enqueue API")

    def eager(self, folder: Path) -> tuple[str, Send]:
        """(the API's name, a function that runs the no-op job eagerly through ``.delay()`` or the like)."""
        raise NotAvailable("no eager mode")
