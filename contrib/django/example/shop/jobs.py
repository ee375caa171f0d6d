"""The example's jobs: found by sqjobs_django because the file is an installed app's ``jobs.py``."""

import time

from sqjobs import ResultJob, job


@job(queue="default", track=True)
def slow_square(number: int, seconds: float = 1.0) -> int:
    """Square ``number`` after ``seconds``: long enough to watch the status page change."""
    time.sleep(seconds)
    return number * number


class AdderJob(ResultJob):
    """The seed talk's class-based job: its status and result are recorded."""

    name = "adder_job"
    queue = "default"

    def run(self, *args: int) -> int:
        return sum(args)
