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
