"""Cancellation: take back a job that has not started.

Which jobs can be cancelled: tracked jobs (they have a status row), and
untracked jobs sent *cancellable*: ``@job(cancellable=True)`` on the job, or
``apply_async(..., cancellable=True)`` / ``sqjobs enqueue --cancellable``
for one message. The producer marks such a message with the header
``"sqjobs-cancellable": true`` (:data:`~sqjobs.message.CANCELLABLE_HEADER`);
a worker that predates it ignores it (and checks nothing). Every other job
never touches the database: it runs while the status database is down, and
costs no read. Periodic jobs follow the same rule (a beater sends each run
through the producer, so a job class with ``cancellable = True`` marks every
run); eager mode runs the job inside the call, so nothing is left to cancel.

``handle.cancel()``, ``sqjobs.cancel(job_id)`` and ``sqjobs cancel JOB_ID``
record the job id in the ``sqjobs_cancelled`` table of the ``[sqjobs]
database`` and return a :class:`Cancellation` saying what happened:

- a tracked job still PENDING (or in RETRY, waiting for its next attempt) is
  set to CANCELLED in the same transaction as the record; a held job (a long
  delay on SQS, :mod:`sqjobs.schedule.later`) is removed from the database at once
  (whatever the job: its message is never sent); a unique key either holds
  is freed;
- a tracked job that is running (STARTED) or finished is not cancelled: the
  result says so (``bool(result)`` is False) and nothing changes;
- on a broker that can look at the messages it stores (the embedded and
  memory brokers, :attr:`~sqjobs.brokers.base.Broker.can_find`), the
  cancelled job's message is removed at once if no worker holds it
  (:meth:`~sqjobs.brokers.base.Broker.withdraw`, after the record): no
  count (``sqjobs queues``, the dashboard, ``sqjobs_queue_messages``) shows
  it, and it will not run, whatever the job. A job with no status row, not
  held and with no message there is *unknown*: nothing is recorded,
  ``bool(result)`` and ``result.recorded`` are False (``sqjobs cancel``
  exits 1); one only in a dead-letter queue is not cancelled either. SQS
  cannot be searched: there a cancelled job's message (a delay up to 15
  minutes, or a retry's backoff) stays, and is counted, until it is due and
  a worker deletes it unrun;
- otherwise (a worker holds its message, or SQS), a job with no status row
  cannot be told apart from one that already ran:
  the cancellation is recorded (``result.recorded``). From a handle of a job
  sent cancellable, that is a cancellation (``bool(result)`` is True): if it
  has not started, it never will (its unique key is freed by the worker
  that deletes its message). From the id alone (``sqjobs.cancel``, the
  command) whether it was sent cancellable is not known: ``bool(result)`` is
  False, the message says the cancellation takes effect only for a job sent
  cancellable, and ``sqjobs cancel`` exits 3;
- ``handle.cancel()`` on a job its handle knows is untracked and was not
  sent cancellable raises :class:`~sqjobs.errors.JobNotCancellableError`
  and records nothing: no worker would look.

The worker enforces it: :class:`CancellationCheck` (middleware sqjobs
installs after status tracking) looks the job id up before each attempt of
a job that can be cancelled (tracked, marked by the header, or of a job
class declared cancellable here); a cancelled job's message is deleted
unrun (no ``set_up``, no hooks) and its row set to CANCELLED. A tracked
job's row says STARTED before the look-up, and cancelling needs a row that
still says PENDING or RETRY, so a job is either refused as running or never
run, whichever comes first.

While the database cannot be read, the check raises StatusStoreError: the
worker keeps the message and tries again with backoff, and hands it back
at a stop. A job that might be cancelled is never run on a guess.

The cost: one indexed read per attempt of a job that can be cancelled, in
the status database (an embedded SQLite database whose file does not exist
yet holds no cancellation and is not read); none for the others. Rows stay
until ``sqjobs prune`` removes those older than its ``--older-than`` (a
cancelled job id stays cancelled until then, also for a duplicate delivery).

This module holds the machinery: the table of cancellations, :func:`cancel_job`
(given an application; ``sqjobs.cancel`` and :func:`sqjobs.app.cancel` choose
the default one) and the worker's check, :class:`CancellationCheck`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import peewee

from ..brokers.base import StoredMessage, is_dead_letter_name
from ..errors import BrokerError, MalformedMessageError, SkipMessage
from ..message import CANCELLABLE_HEADER, ID_MAX_CHARS, body_prefix, check_job_id, decode
from ..schedule.later import HeldJobs
from ..status.rows import Rows
from ..status.states import FINISHED, WAITING, Status
from ..status.store import PreciseDateTimeField, get_store, naive_utc_now
from .base import Middleware
from .unique import UniqueKeys

if TYPE_CHECKING:
    from ..app import App
    from ..job import Job
    from ..message import JobMessage

logger = logging.getLogger("sqjobs.cancellation")

#: Table of cancelled job ids.
CANCELLED_TABLE = "sqjobs_cancelled"
#: What a cancelled job's status row says in ``error``.
CANCELLED_TEXT = "cancelled before it started"


@dataclass(frozen=True)
class Cancellation:
    """What a cancel did: ``cancelled`` (also ``bool(result)``), the job's status, and a sentence saying so.

    ``cancelled`` is True only when the job will not run (unless it already
    ran, for a job without a status row); ``recorded`` when the job id is in
    the table of cancellations (also when ``cancelled`` is False: a job
    without a status row, cancelled by its id alone).
    """

    job_id: str
    cancelled: bool
    status: Status | None
    message: str
    recorded: bool = False

    def __bool__(self) -> bool:
        return self.cancelled


class Cancellations(Rows):
    """The cancelled job ids of one database."""

    label = "cancellations"

    @staticmethod
    def make_model(database: peewee.Database) -> Any:
        """The ``sqjobs_cancelled`` table: one row per cancelled job id."""

        class CancelledRow(peewee.Model):
            id = peewee.CharField(primary_key=True, max_length=ID_MAX_CHARS)
            cancelled_at = PreciseDateTimeField(index=True)

            class Meta:
                table_name = CANCELLED_TABLE
                legacy_table_names = False

        CancelledRow._meta.set_database(database)
        return CancelledRow

    def is_cancelled(self, job_id: str) -> bool:
        """True when ``job_id`` was cancelled (one indexed read; the table is made if missing).

        An SQLite database whose file does not exist holds no cancellation
        (a cancel makes it): nothing is read, nor created.
        """
        if not self._ready:
            path = self.store._sqlite_path()
            if path is not None and not os.path.exists(path):
                return False
        self.ready()
        with self.guard(f"look up whether job {job_id} was cancelled"):
            # Written out: a worker asks once per attempt, and building the query costs more than running it.
            cursor = self.database.execute_sql(
                f"SELECT 1 FROM {CANCELLED_TABLE} WHERE id = {self.database.param} LIMIT 1", (job_id,))
            return cursor.fetchone() is not None

    def cancelled_at(self, job_id: str) -> datetime | None:
        """When ``job_id`` was cancelled, or None (reads only)."""
        if not self.exists():
            return None
        with self.guard(f"read the cancellation of job {job_id}"):
            value = self.model.select(self.model.cancelled_at).where(self.model.id == job_id).scalar()
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc) if value is not None else None

    def record(self, job_id: str) -> bool:
        """Record ``job_id`` as cancelled (inside the caller's transaction); False if it already was."""
        try:
            with self.database.atomic():
                self.model.insert(id=job_id, cancelled_at=naive_utc_now()).execute()
            return True
        except peewee.IntegrityError:
            return False

    def prune(self, older_than: datetime) -> int:
        """Delete cancellations recorded before ``older_than``; return how many."""
        if not self.exists():
            return 0
        cutoff = older_than.astimezone(timezone.utc).replace(tzinfo=None)
        with self.guard("prune cancellations"):
            return int(self.model.delete().where(self.model.cancelled_at < cutoff).execute())


def cancel_job(app: App, job_id: str, *, sent_cancellable: bool = False) -> Cancellation:
    """Cancel job ``job_id`` of ``app`` if it has not started; return what happened (see the module docstring).

    ``sent_cancellable`` says the caller knows the job was sent cancellable
    (a handle does): then a job without a status row counts as cancelled.
    Raises InvalidJobIdError for an id no job can have (nothing is looked
    up or stored), StatusStoreError when the database cannot be reached
    (then nothing was recorded).
    """
    check_job_id(job_id)
    url = app.settings.database_url
    store = get_store(url)
    cancellations = Cancellations.for_url(url)
    cancellations.ready()
    store.create_tables()
    model = store.model
    with cancellations.guard(f"cancel job {job_id}"), cancellations.database.atomic():
        value = model.select(model.status).where(model.id == job_id).scalar()
        status = Status(value) if value is not None else None
        if status is not None and status not in WAITING:
            return _refused(job_id, status)
        if status is not None:
            changed = (model.update(status=Status.CANCELLED.value, error=CANCELLED_TEXT, traceback=None,
                                    finished_at=naive_utc_now())
                       .where((model.id == job_id) & model.status.in_([s.value for s in WAITING])).execute())
            if not changed:  # a worker started it in between
                return _refused(job_id, Status(model.select(model.status).where(model.id == job_id).scalar()))
            cancellations.record(job_id)
    if status is not None:
        unheld = HeldJobs.for_url(url).forget(job_id)
        UniqueKeys.for_url(url).free_job(job_id)  # it will not run: its key goes now
        withdrawn = _withdraw(app, job_id, _find(app, job_id) or [])
        text = (f"job {job_id}: cancelled (was {status.value}){_HELD_TEXT if unheld else ''}"
                f"{_removed_text(withdrawn)}; it will not run")
        outcome = Cancellation(job_id, True, Status.CANCELLED, text, recorded=True)
    else:
        outcome = _cancel_without_row(app, job_id, cancellations, sent_cancellable)
    if outcome.cancelled or outcome.recorded:
        (logger.info if outcome.cancelled else logger.warning)("%s", outcome.message)
    return outcome


_HELD_TEXT = " (it was held for later; removed)"


def _removed_text(withdrawn: list[str]) -> str:
    return f" (its message was removed from {', '.join(sorted(set(withdrawn)))})" if withdrawn else ""


def _find(app: App, job_id: str) -> list[StoredMessage] | None:
    """The messages of ``job_id`` the broker stores; None when it cannot tell (SQS, or it failed: logged)."""
    try:
        broker = app.broker
        if not broker.can_find:
            return None
        found = broker.find(body_prefix(job_id))
    except BrokerError as exc:
        logger.warning("job %s: cannot look for its message on the broker: %s", job_id, exc)
        return None
    return [message for message in found if _job_id_of(message) == job_id]


def _job_id_of(message: StoredMessage) -> str | None:
    try:
        return decode(message.body, message.message_id).id
    except MalformedMessageError:
        return None


def _withdraw(app: App, job_id: str, found: list[StoredMessage]) -> list[str]:
    """Delete the messages of a cancelled job that no worker holds (so no count shows them); their queues."""
    withdrawn = []
    for message in found:
        if message.received or is_dead_letter_name(message.queue):
            continue
        try:
            if app.broker.withdraw(message.queue, message.message_id):
                withdrawn.append(message.queue)
        except BrokerError as exc:  # a worker deletes it unrun when it receives it
            logger.warning("job %s: cancelled, but its message on %s stays until a worker deletes it unrun: %s",
                           job_id, message.queue, exc)
    return withdrawn


def _cancel_without_row(app: App, job_id: str, cancellations: Cancellations,
                        sent_cancellable: bool) -> Cancellation:
    """Cancel a job without a status row: held, on a broker that can look, or recorded unconfirmed."""
    url = app.settings.database_url
    if HeldJobs.for_url(url).forget(job_id):
        cancellations.record(job_id)
        UniqueKeys.for_url(url).free_job(job_id)
        return Cancellation(job_id, True, None, f"job {job_id}: cancelled{_HELD_TEXT}; it will never be sent",
                            recorded=True)
    found = _find(app, job_id)
    if found is None:  # the broker cannot tell: recorded, for a worker to check
        with cancellations.guard(f"cancel job {job_id}"):
            return _without_row(job_id, cancellations.record(job_id), sent_cancellable)
    live = [message for message in found if not is_dead_letter_name(message.queue)]
    if not found:
        if cancellations.is_cancelled(job_id):
            return _without_row(job_id, False, sent_cancellable)
        return Cancellation(job_id, False, None, f"job {job_id}: unknown: it has no status row, is not held and "
                            "has no message on the broker (it never existed, or it ran and left no row); nothing "
                            "recorded")
    if not live:
        return Cancellation(job_id, False, None, f"job {job_id}: not cancelled, its message is in {found[0].queue} "
                            "(it runs again only if requeued); nothing changed")
    with cancellations.guard(f"cancel job {job_id}"):
        first = cancellations.record(job_id)
    withdrawn = _withdraw(app, job_id, live)
    if withdrawn and len(withdrawn) == len(live):
        UniqueKeys.for_url(url).free_job(job_id)
        return Cancellation(job_id, True, None, f"job {job_id}: cancelled{_removed_text(withdrawn)}; it will "
                            "not run", recorded=True)
    return _without_row(job_id, first, sent_cancellable, held=True)


def _without_row(job_id: str, first: bool, sent_cancellable: bool, held: bool = False) -> Cancellation:
    """What cancelling a job without a status row (and not held) did: recorded; confirmed if sent cancellable.

    ``held``: a worker holds its message (the broker says so), else the broker cannot tell.
    """
    done = "cancellation recorded" if first else "cancellation was already recorded"
    why = ("a worker holds its message (it may be running)" if held else
           "it has no status row, so sqjobs cannot tell whether it already ran")
    if sent_cancellable:
        text = (f"job {job_id}: {done}; it was sent cancellable, so if it has not started it will not run "
                f"({why})")
        return Cancellation(job_id, True, None, text, recorded=True)
    text = (f"job {job_id}: {done}, NOT confirmed: {why}, nor whether it was sent cancellable; it takes effect "
            "only for an untracked job sent cancellable (@job(cancellable=True), apply_async(cancellable=True), "
            "sqjobs enqueue --cancellable) that has not started: any other runs anyway")
    return Cancellation(job_id, False, None, text, recorded=True)


def _refused(job_id: str, status: Status) -> Cancellation:
    if status is Status.CANCELLED:
        return Cancellation(job_id, True, status, f"job {job_id}: was already cancelled", recorded=True)
    if status in FINISHED:
        text = f"job {job_id}: not cancelled, it already finished ({status.value}); nothing changed"
    else:
        text = f"job {job_id}: not cancelled, it is running ({status.value}); nothing changed"
    return Cancellation(job_id, False, status, text)


class CancellationCheck(Middleware):
    """Before each attempt of a job that can be cancelled, deletes it unrun if it was (installed by sqjobs).

    A job can be cancelled when it is tracked, its message carries
    :data:`~sqjobs.message.CANCELLABLE_HEADER`, or its class says
    ``cancellable = True``; any other job is let through without a read.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self._rows: Cancellations | None = None
        #: Per job class: can every job of it be cancelled (``cancellable``, or tracked)? The app's middleware
        #: are made again when its settings change, so this holds for this instance's life.
        self._by_class: dict[type[Job], bool] = {}

    def _cancellations(self) -> Cancellations:
        rows = self._rows
        if rows is None or rows.store.pid != os.getpid():  # a forked job process opens its own
            rows = self._rows = Cancellations.for_url(self.app.settings.database_url)
        return rows

    def before_run(self, job: Job, message: JobMessage) -> None:
        """Raise SkipMessage for a cancelled job; StatusStoreError (keep the message) if the database is down."""
        job_class = type(job)
        by_class = self._by_class.get(job_class)
        if by_class is None:
            by_class = self._by_class[job_class] = bool(job_class.cancellable or self.app.is_tracked(job_class))
        if not (by_class or message.headers.get(CANCELLABLE_HEADER)):
            return  # nothing can cancel it: no read, so it runs while the database is down
        rows = self._cancellations()
        if not rows.is_cancelled(message.id):
            return
        if self.app.is_tracked(type(job)):
            rows.store.cancelled_unrun(message.id, CANCELLED_TEXT)
        UniqueKeys.for_url(rows.store.url).free_job(message.id)
        raise SkipMessage(f"job {message.id} {job.name} on {message.queue}: cancelled; deleted unrun")
