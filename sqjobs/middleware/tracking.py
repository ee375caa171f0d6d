"""Status tracking and the duplicate-delivery guard: middleware sqjobs ships and installs itself.

Which jobs are tracked is ``[sqjobs] track``: ``marked`` (the default) tracks
jobs with ``track = True`` (``@job(track=True)``, subclasses of
:class:`~sqjobs.ResultJob`), ``all`` every job, ``none`` none (and then
neither middleware is installed). An untracked job has no status row and
never touches the database (it runs while the database is down), unless it
was sent cancellable (``@job(cancellable=True)``,
``apply_async(cancellable=True)``): then a worker reads the database once
per attempt to check that it was not cancelled (:mod:`sqjobs.middleware.cancellation`;
tracked jobs are always checked).

A tracked job's row (see :mod:`sqjobs.status.store`) moves through these states:

- ``PENDING``: written by the producer's ``before_enqueue``, before the
  message is sent (a send that fails removes it again), with the job's
  arguments (the JSON the body carries, made once for both; a worker that
  creates the row of a job another producer sent writes them then);
- ``STARTED``: an attempt began (``attempts`` is its number, the one the
  worker's lines about it show: the message's receive count, which decides
  the retries left, so after ``sqjobs dead --requeue`` it starts again at 1;
  with the worker's host and pid);
- ``RETRY``: an attempt failed and another follows (``error``,
  ``traceback``);
- ``SUCCESS``: the job returned; ``result`` holds the return value as JSON;
- ``FAILURE``: its last attempt failed (raised, timed out, killed its
  process), or it returned a value JSON cannot carry, or one over the size a
  row keeps (``error`` says so; then the message is deleted, not retried);
- ``DEAD``: the message went to the dead-letter queue without this job
  failing (no worker knew the job's name). Only a row that already exists is
  set to DEAD; nothing is created for unknown names;
- ``CANCELLED``: cancelled before it started (:mod:`sqjobs.middleware.cancellation`
  writes it, at the cancel and again when a worker deletes the message).

The duplicate guard: a tracked job id that already SUCCEEDED and is
delivered again is not run again (:class:`~sqjobs.errors.SkipMessage`), and
enqueuing it again with the same ``job_id`` keeps its SUCCESS row, so a job
id works as an idempotency key.

The hooks raise :class:`~sqjobs.errors.StatusStoreError` while the database
cannot be reached: ``.delay()`` then fails and sends nothing, and a worker
retries with backoff and keeps the message until the outcome is recorded.
"""

from __future__ import annotations

import logging
from traceback import format_exception
from typing import TYPE_CHECKING, Any

from ..errors import SkipMessage, StatusStoreError
from ..message import arguments_json
from ..status.handle import Status, encode_result, outcome_error
from .base import Middleware

if TYPE_CHECKING:
    from ..app import App
    from ..job import Job
    from ..message import JobMessage

logger = logging.getLogger("sqjobs.tracking")


def _arguments(message: JobMessage) -> str:
    """The JSON of the message's arguments: the producer's (made once with the body), or made here."""
    return message.arguments_text or arguments_json(message.args, message.kwargs)


class StatusTracking(Middleware):
    """Records each tracked job's status row at every step of its life."""

    def __init__(self, app: App) -> None:
        self.app = app

    def _job_class(self, message: JobMessage) -> type[Job] | None:
        return self.app.registry.find(message.name)

    def _tracked(self, message: JobMessage) -> bool:
        return self.app.is_tracked(self._job_class(message))

    def before_enqueue(self, message: JobMessage) -> None:
        """Record a tracked job as PENDING (a SUCCESS row of the same id is kept)."""
        if self._tracked(message):
            self.app.store.enqueued(message.id, message.name, message.queue, _arguments(message))

    def enqueue_failed(self, message: JobMessage, error: BaseException) -> None:
        """The send failed: remove the PENDING row written for it, so no row waits for a job never sent."""
        if self._tracked(message):
            try:
                self.app.store.forget_pending(message.id)
            except StatusStoreError as exc:
                logger.warning("job %s %s: its send failed and its PENDING row stays: %s", message.id, message.name,
                               exc)

    def runs_for(self, job_class: type[Job]) -> bool:
        """Only tracked jobs have a row to write."""
        return self.app.is_tracked(job_class)

    def before_run(self, job: Job, message: JobMessage) -> None:
        """Record that an attempt started: STARTED, the attempt's number (as its log lines say), host and pid."""
        if self.app.is_tracked(type(job)):
            self.app.store.started(message.id, job.name, job.queue_name or message.queue, job.attempt or None,
                                   lambda: _arguments(message))

    def after_run(self, job: Job, message: JobMessage, result: Any = None, error: BaseException | None = None) -> None:
        """Record how the attempt ended: SUCCESS with the result, RETRY, or FAILURE on the last attempt."""
        if not self.app.is_tracked(type(job)):
            return
        queue = job.queue_name or message.queue
        result_json = error_text = traceback = None
        if error is None:
            try:
                result_json = encode_result(result, f"the result of job {message.id} {job.name}")
                status = Status.SUCCESS
            except (TypeError, ValueError) as exc:
                status, error_text = Status.FAILURE, f"{type(exc).__name__}: {exc}"
                logger.error("job %s %s on %s: its result cannot be recorded; recorded as FAILURE: %s", message.id,
                             job.name, queue, exc)
        else:
            status = Status.FAILURE if job.last_attempt else Status.RETRY
            error_text = outcome_error(error)
            traceback = "".join(format_exception(type(error), error, error.__traceback__))
        self.app.store.ended(message.id, job.name, queue, status, result_json, error_text, traceback)

    def after_dead_letter(self, message: JobMessage | str, reason: str) -> None:
        """Set the existing, unfinished row of a message dead-lettered unrun to DEAD (best effort)."""
        if isinstance(message, str):
            return
        try:
            if self.app.store.mark_dead(message.id, reason):
                logger.info("job %s %s on %s: recorded as DEAD", message.id, message.name, message.queue)
        except StatusStoreError as exc:
            logger.warning("job %s %s on %s: cannot record it as DEAD: %s", message.id, message.name, message.queue,
                           exc)


class DuplicateGuard(Middleware):
    """Skips a tracked job whose id already succeeded: a duplicate delivery, at-least-once's price."""

    def __init__(self, app: App) -> None:
        self.app = app

    def runs_for(self, job_class: type[Job]) -> bool:
        """Only tracked jobs have a row that can say SUCCESS."""
        return self.app.is_tracked(job_class)

    def before_run(self, job: Job, message: JobMessage) -> None:
        """Raise SkipMessage when the job's row already says SUCCESS."""
        if self.app.is_tracked(type(job)) and self.app.store.status_of(message.id) is Status.SUCCESS:
            raise SkipMessage(f"job {message.id} {job.name} on {message.queue}: already succeeded, not run again")
