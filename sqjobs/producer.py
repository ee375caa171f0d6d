"""The one way jobs are sent: (job, arguments, options) -> a checked message on the broker, and a handle.

``.delay()``, ``apply_async``, ``delay_many``, ``sqjobs enqueue``, the
beaters and the seed talk's ``broker.add_job`` all go through
:class:`Producer`. For each job it:

1. builds the message (strict JSON arguments: a value JSON cannot carry is a
   TypeError naming the argument, before anything happens);
2. calls the middleware's ``before_enqueue`` (which may add headers; status
   tracking records the job as PENDING there, and refuses the send if it
   cannot);
3. signs it, when signing keys are set (:mod:`sqjobs.signing`): after the
   middleware, so that what they changed is covered too;
4. encodes it and checks it against the broker's limits (size, delay);
5. sends it, or, in eager mode, hands it to the ``run_now`` the app plugged
   in (:func:`sqjobs.worker.eager.run_now`), which runs it at once on the body read
   back (the arguments the worker would get: tuples become lists) and through
   the same middleware as a worker (a signed message is verified first, as a
   worker would, so eager tests show a message that would not verify).

Jobs for later: ``delay_s`` (seconds or a timedelta) or ``eta`` (an aware
datetime; a naive one is refused) up to ``MAX_LATER_S``. A delay the broker
holds (any, on the embedded broker; up to ``[sqs] max_delay_s`` on SQS) is
the message's own delay; a longer one is held in the database and sent by a
beater when due (:mod:`sqjobs.schedule.later`). ``unique_key`` (or a job with
``unique = True``) is taken in the database before anything else happens
(:mod:`sqjobs.middleware.unique`): when another job holds it, nothing is sent and that
job's handle is returned. ``cancellable=True`` (or a job with
``cancellable = True``) marks the message with the header
``sqjobs-cancellable``, so that a worker checks it for cancellation
(:mod:`sqjobs.middleware.cancellation`; tracked jobs are checked without it). Eager
mode runs the job at once: it neither waits nor takes a key, and nothing is
left to cancel.

A bulk send builds and checks every message before it sends any, and sends
them in one ``send_batch`` (one transaction on the embedded broker). When a
send fails, the middleware's ``enqueue_failed`` is called for each message
(status tracking removes the PENDING rows it wrote).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from . import defaults
from .brokers.base import OutgoingMessage
from .brokers.sqs_limits import check_queue_name
from .clock import duration_text, utc_now
from .errors import DelayTooLongError, StatusStoreError
from .message import CANCELLABLE_HEADER, JobMessage, arguments_json, check_arguments, check_job_id, encode, new_job_id
from .middleware.unique import KEY_FIELD, UniqueKeys, check_key, derived_key
from .schedule.later import HeldJob, HeldJobs
from .status.handle import JobHandle

if TYPE_CHECKING:
    from .app import App
    from .job import Job
    from .middleware.base import Middleware
    from .signing import Signer

logger = logging.getLogger("sqjobs.producer")

#: One call of a bulk send: its positional arguments, or ``(args, kwargs)``.
Call = Sequence[Any] | tuple[Sequence[Any], Mapping[str, Any]]
#: Eager mode's send: runs a built and checked message at once and returns its handle
#: (:func:`sqjobs.worker.eager.run_now`).
RunNow = Callable[["App", "type[Job] | None", JobMessage, OutgoingMessage], "JobHandle[Any]"]


def later_delay_s(delay_s: float | timedelta = 0, eta: datetime | None = None, now: datetime | None = None) -> float:
    """Return the delay in seconds of a job sent with ``delay_s`` or ``eta`` at ``now``.

    An ``eta`` in the past means now. Raises ValueError for both at once, a
    naive ``eta`` (it names no single instant) or a negative delay;
    DelayTooLongError past ``MAX_LATER_S``.
    """
    if isinstance(delay_s, timedelta):
        delay_s = delay_s.total_seconds()
    if eta is not None:
        if delay_s:
            raise ValueError("give delay or eta, not both")
        if not isinstance(eta, datetime):
            raise TypeError(f"eta must be a datetime with a time zone, got {type(eta).__name__}")
        if eta.tzinfo is None or eta.utcoffset() is None:
            raise ValueError(f"eta {eta.isoformat()} has no time zone, so it names no single instant; "
                             "give an aware datetime, e.g. datetime(..., tzinfo=timezone.utc)")
        delay_s = max((eta - (now or utc_now())).total_seconds(), 0.0)
    if delay_s < 0:
        raise ValueError(f"delay must not be negative, got {delay_s:g}")
    if delay_s > defaults.MAX_LATER_S:
        raise DelayTooLongError(f"delay of {duration_text(delay_s)} is over the longest sqjobs accepts, "
                                f"{duration_text(defaults.MAX_LATER_S)}")
    return float(delay_s)


def split_call(call: Call) -> tuple[Sequence[Any], dict[str, Any]]:
    """``(args, kwargs)`` of one call of a bulk send."""
    if (isinstance(call, tuple) and len(call) == 2 and isinstance(call[0], (list, tuple))
            and isinstance(call[1], Mapping)):
        return call[0], dict(call[1])
    if isinstance(call, (list, tuple)):
        return call, {}
    raise TypeError(f"a call of delay_many is a list of arguments or an (args, kwargs) pair, got {call!r:.60}")


class Producer:
    """Sends jobs for ``app``; in eager mode hands each message to ``run_now`` instead (the app plugs it in)."""

    def __init__(self, app: App, *, run_now: RunNow) -> None:
        self.app = app
        #: Eager mode's send (the producer does not import the worker side: the app gives it).
        self.run_now = run_now

    # -- one job ------------------------------------------------------------------------

    def send(self, job_class: type[Job] | None, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
             *, name: str | None = None, queue: str | None = None, delay_s: float | timedelta = 0,
             eta: datetime | None = None, job_id: str | None = None, group: str | None = None,
             dedup_id: str | None = None, extra: Mapping[str, Any] | None = None,
             headers: Mapping[str, Any] | None = None, unique_key: str | None = None,
             cancellable: bool = False) -> JobHandle[Any]:
        """Send one job; return its handle.

        ``job_class`` None sends ``name``, a job this process does not know
        (another service runs it), to ``queue`` (default ``"default"``).
        ``extra`` adds optional wire fields (``scheduled_for``), ``headers``
        envelope headers. ``delay_s``/``eta``, ``unique_key`` and
        ``cancellable``: see the module docstring. Raises TypeError for
        arguments JSON cannot carry, InvalidQueueNameError and InvalidJobIdError
        for a queue name or job id that breaks its rule, ValueError for a naive ``eta``, MessageTooLargeError and
        DelayTooLongError for what cannot be held, StatusStoreError when a
        key or a held job cannot be written, and whatever a middleware's
        ``before_enqueue`` raises (then nothing is sent).
        """
        delay = later_delay_s(delay_s, eta)
        cancellable = cancellable or (job_class is not None and job_class.cancellable)
        if cancellable:
            headers = {**(headers or {}), CANCELLABLE_HEADER: True}
        if self.app.eager:
            message, out = self.prepare(job_class, args, kwargs, name=name, queue=queue, delay_s=delay,
                                        job_id=job_id, group=group, dedup_id=dedup_id, extra=extra, headers=headers)
            return self.run_now(self.app, job_class, message, out)
        job_name = job_class.name if job_class is not None else str(name or "")
        derive = unique_key is None and job_class is not None and job_class.unique
        if derive:
            check_arguments(args, dict(kwargs or {}))  # a clear error before the digest of the arguments
            unique_key = derived_key(job_name, args, dict(kwargs or {}))
        if unique_key is None:
            message, out = self.prepare(job_class, args, kwargs, name=name, queue=queue, delay_s=delay,
                                        job_id=job_id, group=group, dedup_id=dedup_id, extra=extra, headers=headers)
            self._send([message], [out])
            return JobHandle(message.id, message.name, message.queue, app=self.app, cancellable=cancellable)
        key = check_key(unique_key)
        if not derive:
            check_arguments(args, dict(kwargs or {}))  # before the key is taken
        job_id = check_job_id(job_id) if job_id else new_job_id()  # before the key row is written with it
        target = self._queue(job_class, queue)
        keys = UniqueKeys.for_url(self.app.settings.database_url)
        holder = keys.take(key, job_id, job_name, target)
        if holder is not None:
            logger.info("job %s: unique key %r is held by job %s on %s; nothing sent", job_name, key, holder[0],
                        holder[2])
            return JobHandle(holder[0], holder[1], holder[2], app=self.app)  # how it was sent is not known here
        try:
            message, out = self.prepare(job_class, args, kwargs, name=name, queue=target, delay_s=delay,
                                        job_id=job_id, group=group, dedup_id=dedup_id,
                                        extra={**(extra or {}), KEY_FIELD: key}, headers=headers)
            self._send([message], [out])
        except BaseException:
            try:
                keys.free(key, job_id)
            except StatusStoreError as exc:
                logger.warning("job %s %s: not sent, and its unique key %r stays taken: %s", job_id, job_name, key,
                               exc)
            raise
        return JobHandle(message.id, message.name, message.queue, app=self.app, cancellable=cancellable)

    def send_many(self, job_class: type[Job], calls: Iterable[Call], queue: str | None = None) -> list[JobHandle[Any]]:
        """Send one job per call (positional arguments, or ``(args, kwargs)``); return their handles.

        Every message is built and checked before any is sent, then they go
        in one ``send_batch``: all or none on the embedded broker, requests of
        ten on SQS. In eager mode each runs in turn.
        """
        if job_class.unique and not self.app.eager:  # each takes its own key
            return [self.send(job_class, *split_call(call), queue=queue) for call in calls]
        headers = {CANCELLABLE_HEADER: True} if job_class.cancellable else None
        announcing = self._announcing(job_class)  # the same for every message of the batch: looked up once
        prepared = [self.prepare(job_class, *split_call(call), queue=queue, headers=headers, announcing=announcing)
                    for call in calls]
        if self.app.eager:
            return [self.run_now(self.app, job_class, message, out) for message, out in prepared]
        if prepared:
            self._send([message for message, _ in prepared], [out for _, out in prepared])
        return [JobHandle(message.id, message.name, message.queue, app=self.app, cancellable=job_class.cancellable)
                for message, _ in prepared]

    # -- the steps -----------------------------------------------------------------------

    @staticmethod
    def _queue(job_class: type[Job] | None, queue: str | None) -> str:
        """The queue a job goes to: the call's, else (None) the job's, else the default.

        Raises InvalidQueueNameError for a name that breaks the one rule of
        every broker (``sqjobs.brokers.sqs_limits.QUEUE_NAME_RULE``), before
        anything is written or sent.
        """
        if queue is None:
            queue = job_class.queue if job_class is not None else defaults.QUEUE
        return check_queue_name(queue)

    def prepare(self, job_class: type[Job] | None, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                *, name: str | None = None, queue: str | None = None, delay_s: float = 0, job_id: str | None = None,
                group: str | None = None, dedup_id: str | None = None, extra: Mapping[str, Any] | None = None,
                headers: Mapping[str, Any] | None = None,
                announcing: tuple[list[Middleware], Signer | None] | None = None,
                ) -> tuple[JobMessage, OutgoingMessage]:
        """Build, check and announce (``before_enqueue``) one message; return it and what the broker is sent.

        ``announcing`` is :meth:`_announcing`'s answer when the caller has it
        already (a bulk send asks once for all its messages).
        """
        if job_class is None and not name:
            raise ValueError("send needs a job class or a job name")
        job_name = job_class.name if job_class is not None else str(name)
        target = self._queue(job_class, queue)
        kwargs = dict(kwargs or {})
        check_arguments(args, kwargs)
        message = JobMessage(name=job_name, args=list(args), kwargs=kwargs, id=job_id or new_job_id(),
                             extra=dict(extra or {}), headers=dict(headers or {}), queue=target)
        broker = self.app.broker
        if delay_s <= broker.max_delay_s or self.app.eager:
            broker.check_delay(delay_s)
        else:
            later_delay_s(delay_s)  # held in the database until it is due: the longest sqjobs accepts
        announcers, signer = announcing or self._announcing(job_class)
        if announcers:  # the body and what middleware records (status tracking: the row) share the JSON
            message.arguments_text = arguments_json(args, kwargs)
        body = encode(message, arguments_checked=True)
        broker.check_body(body)  # before any middleware acts on a message that cannot be sent
        if announcers or signer is not None:
            headers_before = dict(message.headers)
            for item in announcers:
                item.before_enqueue(message)
            if signer is not None:
                signer.sign(message)
            if message.headers != headers_before:
                body = encode(message, arguments_checked=True)
                broker.check_body(body)  # headers (a signature) may have grown it
        if target.endswith(".fifo"):
            group = group or (job_class.group if job_class is not None else None) or job_name
            dedup_id = dedup_id or message.id
        else:
            group = dedup_id = None
        return message, OutgoingMessage(body, delay_s, {}, group, dedup_id)

    def _announcing(self, job_class: type[Job] | None) -> tuple[list[Middleware], Signer | None]:
        """The middleware whose ``before_enqueue`` applies to ``job_class``, and the signer (None: signing off)."""
        return self.app.middleware.announcers(job_class), self.app.signer

    def _send(self, messages: list[JobMessage], outgoing: list[OutgoingMessage]) -> None:
        """Send prepared messages (all to the same queue); on failure tell the middleware, then raise."""
        try:
            if len(outgoing) == 1 and outgoing[0].delay_s > self.app.broker.max_delay_s:
                self._hold(messages[0], outgoing[0])
            elif len(outgoing) == 1:
                one = outgoing[0]
                self.app.broker.send(messages[0].queue, one.body, one.delay_s, None, one.group_id, one.dedup_id)
            else:
                self.app.broker.send_batch(messages[0].queue, outgoing)
        except BaseException as exc:
            for message in messages:
                self.app.middleware.enqueue_failed(message, exc)
            raise

    def _hold(self, message: JobMessage, out: OutgoingMessage) -> None:
        """Keep a message whose delay is over the broker's in the database, for a beater to send when due."""
        now = utc_now()
        due_at = now + timedelta(seconds=out.delay_s)
        HeldJobs.for_url(self.app.settings.database_url).hold(
            HeldJob(message.id, message.queue, out.body, due_at, out.group_id, out.dedup_id,
                    self.app.broker.identity), now)
        logger.debug("job %s %s on %s: held until %s (over the broker's %g s delay)", message.id, message.name,
                     message.queue, due_at.isoformat(), self.app.broker.max_delay_s)
