"""sqjobs: Simple Queue Jobs. Plain functions become background jobs.

    from sqjobs import job

    @job(queue="emails", retries=5)
    def send_welcome(user_id): ...

    send_welcome.delay(42)
"""

from .errors import ConfigError, JobTimeoutError, MessageTooLargeError, Retry, SQJobsError, UnknownJobError
from .job import Job, PeriodicJob, job, registry
from .runtime import configure, create_eager_broker, create_sqs_broker, create_sqs_worker, get_broker
from .status import JobHandle, ResultJob, Status, get_job

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Job",
    "JobHandle",
    "ResultJob",
    "JobTimeoutError",
    "MessageTooLargeError",
    "PeriodicJob",
    "Retry",
    "SQJobsError",
    "Status",
    "UnknownJobError",
    "configure",
    "create_eager_broker",
    "create_sqs_broker",
    "create_sqs_worker",
    "get_broker",
    "get_job",
    "job",
    "registry",
]
