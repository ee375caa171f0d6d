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
5. sends it, or, in eager mode, runs it at once through the real decoder and
   the same middleware as a worker (a signed message is verified first, as a
   worker would, so eager tests show a message that would not verify).

A bulk send builds and checks every message before it sends any, and sends
them in one ``send_batch`` (one transaction on the embedded broker). When a
send fails, the middleware's ``enqueue_failed`` is called for each message
(status tracking removes the PENDING rows it wrote).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from . import defaults
from .brokers.base import OutgoingMessage
from .errors import SigningError, UnknownJobError
from .execution import Outcome
from .message import JobMessage, check_arguments, decode, encode, new_job_id
from .runner import attempt_with_middleware
from .status import JobHandle, Status

if TYPE_CHECKING:
    from .app import App
    from .job import Job

#: One call of a bulk send: its positional arguments, or ``(args, kwargs)``.
Call = Sequence[Any] | tuple[Sequence[Any], Mapping[str, Any]]


def split_call(call: Call) -> tuple[Sequence[Any], dict[str, Any]]:
    """``(args, kwargs)`` of one call of a bulk send."""
    if (isinstance(call, tuple) and len(call) == 2 and isinstance(call[0], (list, tuple))
            and isinstance(call[1], Mapping)):
        return call[0], dict(call[1])
    if isinstance(call, (list, tuple)):
        return call, {}
    raise TypeError(f"a call of delay_many is a list of arguments or an (args, kwargs) pair, got {call!r:.60}")


class Producer:
    """Sends jobs for ``app``."""

    def __init__(self, app: App) -> None:
        self.app = app

    # -- one job ------------------------------------------------------------------------

    def send(self, job_class: type[Job] | None, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
             *, name: str | None = None, queue: str | None = None, delay_s: float = 0, job_id: str | None = None,
             group: str | None = None, dedup_id: str | None = None, extra: Mapping[str, Any] | None = None,
             headers: Mapping[str, Any] | None = None) -> JobHandle:
        """Send one job; return its handle.

        ``job_class`` None sends ``name``, a job this process does not know
        (another service runs it), to ``queue`` (default ``"default"``).
        ``extra`` adds optional wire fields (``scheduled_for``), ``headers``
        envelope headers. Raises TypeError for arguments JSON cannot carry,
        MessageTooLargeError and DelayTooLongError for what the broker cannot
        hold, and whatever a middleware's ``before_enqueue`` raises (then
        nothing is sent).
        """
        message, out = self.prepare(job_class, args, kwargs, name=name, queue=queue, delay_s=delay_s, job_id=job_id,
                                    group=group, dedup_id=dedup_id, extra=extra, headers=headers)
        if self.app.eager:
            return self._run_now(job_class, message, out)
        self._send([message], [out])
        return JobHandle(message.id, message.name, message.queue, app=self.app)

    def send_many(self, job_class: type[Job], calls: Iterable[Call], queue: str | None = None) -> list[JobHandle]:
        """Send one job per call (positional arguments, or ``(args, kwargs)``); return their handles.

        Every message is built and checked before any is sent, then they go
        in one ``send_batch``: all or none on the embedded broker, requests of
        ten on SQS. In eager mode each runs in turn.
        """
        prepared = [self.prepare(job_class, *split_call(call), queue=queue) for call in calls]
        if self.app.eager:
            return [self._run_now(job_class, message, out) for message, out in prepared]
        if prepared:
            self._send([message for message, _ in prepared], [out for _, out in prepared])
        return [JobHandle(message.id, message.name, message.queue, app=self.app) for message, _ in prepared]

    # -- the steps -----------------------------------------------------------------------

    def prepare(self, job_class: type[Job] | None, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                *, name: str | None = None, queue: str | None = None, delay_s: float = 0, job_id: str | None = None,
                group: str | None = None, dedup_id: str | None = None, extra: Mapping[str, Any] | None = None,
                headers: Mapping[str, Any] | None = None) -> tuple[JobMessage, OutgoingMessage]:
        """Build, check and announce (``before_enqueue``) one message; return it and what the broker is sent."""
        if job_class is None and not name:
            raise ValueError("send needs a job class or a job name")
        job_name = job_class.name if job_class is not None else str(name)
        target = queue or (job_class.queue if job_class is not None else defaults.QUEUE)
        kwargs = dict(kwargs or {})
        check_arguments(args, kwargs)
        message = JobMessage(name=job_name, args=list(args), kwargs=kwargs, id=job_id or new_job_id(),
                             extra=dict(extra or {}), headers=dict(headers or {}), queue=target)
        broker = self.app.broker
        broker.check_delay(delay_s)
        broker.check_body(encode(message))  # before any middleware acts on a message that cannot be sent
        self.app.middleware.before_enqueue(message)
        signer = self.app.signer
        if signer is not None:
            signer.sign(message)
        body = encode(message)
        broker.check_body(body)  # headers may have grown it
        if target.endswith(".fifo"):
            group = group or (job_class.group if job_class is not None else None) or job_name
            dedup_id = dedup_id or message.id
        else:
            group = dedup_id = None
        return message, OutgoingMessage(body, delay_s, {}, group, dedup_id)

    def _send(self, messages: list[JobMessage], outgoing: list[OutgoingMessage]) -> None:
        """Send prepared messages (all to the same queue); on failure tell the middleware, then raise."""
        try:
            if len(outgoing) == 1:
                one = outgoing[0]
                self.app.broker.send(messages[0].queue, one.body, one.delay_s, None, one.group_id, one.dedup_id)
            else:
                self.app.broker.send_batch(messages[0].queue, outgoing)
        except BaseException as exc:
            for message in messages:
                self.app.middleware.enqueue_failed(message, exc)
            raise

    def _run_now(self, job_class: type[Job] | None, message: JobMessage, out: OutgoingMessage) -> JobHandle:
        """Eager mode: decode what would have been sent and run it here; the job's exception reaches the caller."""
        if job_class is None:
            raise UnknownJobError(f"eager mode runs jobs at once, and no job is registered as {message.name!r}")
        decoded = decode(out.body, message.id)
        decoded.queue = message.queue
        signer = self.app.signer
        problem = signer.verify(decoded) if signer is not None else None
        if problem is not None:
            raise SigningError(f"job {decoded.id} {decoded.name}: its signed message would not verify: {problem}")
        attempt = attempt_with_middleware(self.app, job_class, decoded, message.queue, 1, last_attempt=True)
        if attempt.error is not None and attempt.outcome is not Outcome.SKIPPED:
            raise attempt.error
        handle = JobHandle(decoded.id, job_class.name, message.queue, app=self.app, job=attempt.job)
        if self.app.is_tracked(job_class):
            handle.refresh()
        else:
            handle.fill(Status.SUCCESS, attempt.result)
        return handle
