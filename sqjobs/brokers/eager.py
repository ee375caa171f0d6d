"""Eager mode: ``.delay()`` runs the job at once, in the caller, for development and tests.

The message still goes through the real encoder and decoder, so arguments
that would break in production (not JSON, too large) break here too. A job
that raises propagates its exception to the caller; there are no retries.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

from ..execution import Outcome, run_attempt
from ..message import decode
from .memory import MemoryBroker

if TYPE_CHECKING:
    from ..job import Job
    from ..status import JobHandle

logger = logging.getLogger("sqjobs.brokers.eager")


class EagerBroker(MemoryBroker):
    """Runs jobs inside ``enqueue``; raw ``send`` stores messages like the memory broker."""

    scheme = "eager"
    runs_inline = True

    def enqueue(
        self,
        job_class: type[Job],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        delay_s: float = 0,
        job_id: str | None = None,
        group_id: str | None = None,
        dedup_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> JobHandle:
        """Encode, decode and run the job now; return a handle holding its result.

        Raises whatever the job raised.
        """
        from ..status import JobHandle, Status, record_outcome, record_started

        target = queue or job_class.queue
        message, out = self._outgoing(job_class, args, kwargs, target, delay_s, job_id, group_id, dedup_id,
                                      extra)
        decoded = decode(out.body, message.id)
        record_started(job_class, decoded, target, attempt=1)
        attempt = run_attempt(job_class, decoded, target, attempt=1, last_attempt=True)
        recorded = record_outcome(job_class, decoded, attempt, final=True)
        if attempt.outcome is not Outcome.SUCCESS:
            assert attempt.error is not None
            raise attempt.error
        if recorded is not None:  # tracked: the handle shows the row (FAILURE for a result JSON cannot carry)
            return JobHandle(decoded.id, job_class.name, target, job=attempt.job, status=recorded.status,
                             result=recorded.result, error=recorded.error)
        return JobHandle(decoded.id, job_class.name, target, job=attempt.job, status=Status.SUCCESS,
                         result=attempt.result)

    def enqueue_many(self, job_class: type[Job], calls: Any, queue: str | None = None) -> list[JobHandle]:
        """Run each call at once, in order."""
        return [self.enqueue(job_class, args, kwargs, queue) for args, kwargs in calls]


