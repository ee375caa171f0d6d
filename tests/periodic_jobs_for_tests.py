"""Periodic jobs for the beater process tests (imported only by configs that name this module)."""

from __future__ import annotations

import os

from jobs_for_tests import record

from sqjobs import PeriodicJob
from sqjobs.identity import worker_pid


class EverySecond(PeriodicJob):
    """Records the fire time it serves into $SQJOBS_TEST_RECORD."""

    name = "test.every_second"
    queue = "periodic"
    schedule = "* * * * * *"
    timezone = "Europe/Madrid"

    def run(self) -> None:
        record(os.environ["SQJOBS_TEST_RECORD"], f"{self.scheduled_for} {worker_pid()}")


class _OutageTick(PeriodicJob):
    """Every second, on the queue the status-database outage test reads (no worker runs them)."""

    abstract = True
    queue = "periodic-outage"
    schedule = "* * * * * *"
    timezone = "UTC"

    def run(self) -> None:
        pass


class OutageAll(_OutageTick):
    """Sends every fire time missed during an outage."""

    name = "test.outage_all"
    catch_up = "all"


class OutageLatest(_OutageTick):
    """Sends only the latest fire time missed during an outage."""

    name = "test.outage_latest"
    catch_up = "latest"


class OutageNone(_OutageTick):
    """Sends none of the fire times missed during an outage."""

    name = "test.outage_none"
    catch_up = "none"
