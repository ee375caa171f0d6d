"""The README's tour jobs, in their modern form (the seed talk's examples included)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqjobs import Job, job

logger = logging.getLogger("sqjobs.examples")


@job(queue="default", retries=3, retry_delay=5)
def add(a: int, b: int) -> int:
    """Add two numbers and log the sum."""
    logger.info("%d + %d = %d", a, b, a + b)
    return a + b


class AdderJob(Job):
    """The seed talk's class-based job."""

    name = "adder_job"
    queue = "default"

    def run(self, *args: int, **kwargs: Any) -> int:
        return sum(args)


class TimedJob(Job):
    """The seed talk's TimedJob: a base class that logs how long each job took."""

    abstract = True

    def set_up(self, *args: Any, **kwargs: Any) -> None:
        super().set_up(*args, **kwargs)
        self.start_time = datetime.now()

    def tear_down(self, *args: Any, **kwargs: Any) -> None:
        delta = datetime.now() - self.start_time
        logger.info("%s finished in %.3f seconds", self.name, delta.total_seconds())
        super().tear_down(*args, **kwargs)


class LoggerJob(Job):
    """The seed talk's LoggerJob: a base class that logs success and failure."""

    abstract = True

    def on_success(self, result: Any) -> None:
        logger.info("Successfully finished job %s", self.name)

    def on_failure(self, exc: BaseException) -> None:
        logger.error("Failed job %s: %s", self.name, exc)


@job(base=TimedJob, queue="default")
def slow_report(rows: int) -> int:
    """A job timed by TimedJob."""
    return rows
