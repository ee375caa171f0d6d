"""The one exception tree of sqjobs: everything raised on purpose derives from SQJobsError."""

from __future__ import annotations


class SQJobsError(Exception):
    """Root of every error sqjobs raises on purpose."""

    #: Exit code of a command this error stops: 1, or 2 for what retrying cannot fix.
    exit_code = 1


class ConfigError(SQJobsError):
    """The configuration is wrong: the message names the file, section and key."""


class BrokerError(SQJobsError):
    """A broker could not do what was asked (connection, permission, missing queue)."""


class BrokerConnectionError(BrokerError):
    """The broker could not be reached; callers may retry later."""


class BrokerAuthError(BrokerError):
    """The broker refused our credentials or permissions; retrying will not help."""

    exit_code = 2


class UnknownQueueError(BrokerError, LookupError):
    """A command named a queue the broker has never seen (a typo, or the wrong broker or prefix)."""


class MessageError(SQJobsError):
    """A message cannot be built or read."""


class MessageTooLargeError(MessageError, ValueError):
    """An encoded message is over the broker's size limit."""


class DelayTooLongError(MessageError, ValueError):
    """A delay is longer than the broker can hold."""


class InvalidJobIdError(MessageError, ValueError):
    """A job id a producer chose breaks the rule of job ids (``sqjobs.message.ID_RULE``): too long, a '/'..."""


class InvalidQueueNameError(SQJobsError, ValueError):
    """A queue name breaks the one rule of every broker (``sqjobs.brokers.sqs_limits.QUEUE_NAME_RULE``).

    Raised at ``.delay()``, by ``@job(queue=...)`` and the commands, before anything is sent or consumed.
    """

    exit_code = 2


class MalformedMessageError(MessageError):
    """A received body is not a job message; ``reason`` says why (it goes to the dead-letter queue)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoJobsError(ConfigError):
    """A worker or beater was started without any registered job: it could only refuse every message."""

    exit_code = 2


class JobError(SQJobsError):
    """A problem with a job definition or lookup."""


class JobDefinitionError(JobError, TypeError):
    """A job is defined wrongly (unknown decorator option, missing run method...)."""


class UnknownJobError(JobError, LookupError):
    """No job is registered under that name."""


class JobCrashedError(JobError):
    """The process running an attempt died before it ended (a crash, ``os._exit``, a kill, out of memory)."""


class JobTimeoutError(JobError):
    """An attempt ran longer than its job's ``timeout``: the error recorded for that attempt."""


class TimeLimitExceeded(BaseException):
    """Raised inside a job whose attempt outlived its ``timeout``, to interrupt it.

    The one exception sqjobs raises outside the :class:`SQJobsError` tree, on
    purpose: it derives from ``BaseException`` so that ``except Exception`` in
    a job cannot swallow it. The attempt is recorded as failed with a
    :class:`JobTimeoutError` whatever the job does with it.
    """


class DaemonError(SQJobsError):
    """sqjobsd cannot do what was asked (already running, socket path too long, supervisord failed)."""


class DaemonNotRunningError(DaemonError):
    """No supervisord of sqjobsd answers in the configured run directory."""


class StatusError(SQJobsError):
    """A problem with job status: the status database or a job's status row."""


class StatusStoreError(StatusError):
    """The status database could not be reached or refused a query; callers may retry later.

    Raised as it is for transient faults (connection refused or lost,
    timeouts, deadlocks, locks); :class:`StatusStorePermanentError` when the
    database cannot work as configured, :class:`StatusRowError` when it
    refused the values of one row.
    """


class StatusRowError(StatusStoreError):
    """The status database refused the values of one row; the database itself works.

    A value too long for its column, characters the database cannot store,
    a number out of range, a statement over MySQL's ``max_allowed_packet``.
    Writing the same row again fails the same way, so nothing retries it; it
    does not stop a worker either: only that job's message is settled
    without its status (see :mod:`sqjobs.worker.runner`).
    """


class StatusStorePermanentError(StatusStoreError):
    """``[sqjobs] database`` cannot work as configured; retrying cannot help, so nothing retries it.

    A bad URL (unknown scheme, missing driver), refused credentials, a
    database that does not exist, no privilege on the table, an SQLite file
    that cannot be opened or written or is no database. The message starts
    with ``[sqjobs] database URL`` (password masked) and says the cause.
    """

    exit_code = 2


class ResultTooLargeError(StatusError, ValueError):
    """A tracked job returned a result larger than a status row keeps (``sqjobs.status.store.MAX_RESULT_BYTES``)."""


class JobNotFoundError(StatusError, LookupError):
    """No status row has that job id (the job is not tracked, or its row was pruned)."""


class JobNotTrackedError(StatusError):
    """A handle was asked to wait for a job whose status nothing records."""


class JobNotCancellableError(StatusError):
    """``handle.cancel()`` on a job no worker checks for cancellation: untracked, and not sent cancellable.

    Nothing is recorded: such a job runs whatever the database says (see
    ``sqjobs.middleware.cancellation``).
    """


class JobFailedError(StatusError):
    """``JobHandle.wait(raise_error=True)`` found the job FAILURE or DEAD; ``handle`` is the job."""

    def __init__(self, message: str, handle: object) -> None:
        super().__init__(message)
        self.handle = handle


class WaitTimeoutError(StatusError, TimeoutError):
    """``JobHandle.wait`` reached its deadline before the job finished."""


class RejectMessage(SQJobsError):
    """Raised by a middleware's ``before_run`` to refuse a message: it goes to the dead-letter queue with ``reason``.

    The job and its hooks are never called (a message whose signature does
    not verify, for instance).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SkipMessage(SQJobsError):
    """Raised by a middleware's ``before_run`` to settle a message without running it: it is deleted.

    ``reason`` is logged (a duplicate of a job that already succeeded, a job
    cancelled before it started).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Retry(SQJobsError):
    """Raised from inside a job to ask for another attempt after ``delay`` seconds.

    The attempt counts against the job's ``retries``; with none left the
    message goes to the dead-letter queue.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


class SigningError(MessageError):
    """A message cannot be signed, or (eager mode) what was signed does not verify."""
