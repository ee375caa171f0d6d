"""Eager mode's way of sending: run the job at once, in the caller, as a worker would.

The producer knows nothing of the worker side: the application plugs
:func:`run_now` into it (:class:`~sqjobs.producer.Producer`'s ``run_now``),
and the producer calls it, in eager mode, with each message it built and
checked instead of sending it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import SigningError, UnknownJobError
from ..message import CANCELLABLE_HEADER, decode_own
from ..status.handle import JobHandle, Status
from .execution import Outcome
from .runner import attempt_with_middleware

if TYPE_CHECKING:
    from ..app import App
    from ..brokers.base import OutgoingMessage
    from ..job import Job
    from ..message import JobMessage


def run_now(app: App, job_class: type[Job] | None, message: JobMessage, out: OutgoingMessage) -> JobHandle[Any]:
    """Decode what would have been sent and run it here; the job's exception reaches the caller.

    The job runs on the body read back (the arguments a worker would get:
    tuples become lists) and through the same middleware as in a worker; a
    signed message is verified first, as a worker would, so that eager tests
    show a message that would not verify.
    """
    if job_class is None:
        raise UnknownJobError(f"eager mode runs jobs at once, and no job is registered as {message.name!r}")
    decoded = decode_own(out.body)
    decoded.queue = message.queue
    signer = app.signer
    problem = signer.verify(decoded) if signer is not None else None
    if problem is not None:
        raise SigningError(f"job {decoded.id} {decoded.name}: its signed message would not verify: {problem}")
    attempt = attempt_with_middleware(app, job_class, decoded, message.queue, 1, last_attempt=True)
    if attempt.error is not None and attempt.outcome is not Outcome.SKIPPED:
        raise attempt.error
    handle: JobHandle[Any] = JobHandle(decoded.id, job_class.name, message.queue, app=app, job=attempt.job,
                       cancellable=bool(decoded.headers.get(CANCELLABLE_HEADER)))
    if app.is_tracked(job_class):
        handle.refresh()
    else:
        handle.fill(Status.SUCCESS, attempt.result)
    return handle
