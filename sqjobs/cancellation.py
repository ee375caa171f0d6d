"""Cancellation: take back a job that has not started.

``handle.cancel()``, ``sqjobs.cancel(job_id)`` and ``sqjobs cancel JOB_ID``
record the job id in the ``sqjobs_cancelled`` table of the ``[sqjobs]
database`` and return a :class:`Cancellation` saying what happened:

- a tracked job still PENDING (or in RETRY, waiting for its next attempt) is
  set to CANCELLED in the same transaction as the record; a held job (a long
  delay on SQS, :mod:`sqjobs.held`) is removed from the database at once; a
  unique key it holds is freed;
- a tracked job that is running (STARTED) or finished is not cancelled: the
  result says so (``bool(result)`` is False) and nothing changes;
- a job with no status row (untracked, or not tracked here) cannot be told
  apart from one that already ran: the cancellation is recorded, and if the
  job has not started it never will.

The worker enforces it: :class:`CancellationCheck` (middleware sqjobs
installs after status tracking) looks the job id up before each attempt;
a cancelled job's message is deleted unrun (no ``set_up``, no hooks) and its
row set to CANCELLED. A tracked job's row says STARTED before the look-up,
and cancelling needs a row that still says PENDING or RETRY, so a job is
either refused as running or never run, whichever comes first.

While the database cannot be read, the check raises StatusStoreError: the
worker keeps the message and tries again with backoff, and hands it back
at a stop. A job that might be cancelled is never run on a guess.

The cost: one indexed read per attempt, for every job (also untracked ones),
in the status database; so untracked jobs, too, wait while that database
is down (an embedded SQLite database whose file does not exist yet holds no
cancellation and is not read). Rows stay until ``sqjobs prune`` removes those older
than its ``--older-than`` (a cancelled job id stays cancelled until then,
also for a duplicate delivery).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import peewee

from .errors import SkipMessage
from .held import HeldJobs
from .message import ID_MAX_CHARS
from .middleware import Middleware
from .rows import Rows
from .states import FINISHED, WAITING, Status
from .store import PreciseDateTimeField, get_store, naive_utc_now
from .unique import UniqueKeys

if TYPE_CHECKING:
    from .app import App
    from .job import Job
    from .message import JobMessage

logger = logging.getLogger("sqjobs.cancellation")

#: Table of cancelled job ids.
CANCELLED_TABLE = "sqjobs_cancelled"
#: What a cancelled job's status row says in ``error``.
CANCELLED_TEXT = "cancelled before it started"


@dataclass(frozen=True)
class Cancellation:
    """What a cancel did: ``cancelled`` (also ``bool(result)``), the job's status, and a sentence saying so."""

    job_id: str
    cancelled: bool
    status: Status | None
    message: str

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


def cancel(job_id: str, app: App | None = None) -> Cancellation:
    """Cancel job ``job_id`` if it has not started; return what happened (see the module docstring).

    Raises StatusStoreError when the database cannot be reached (then
    nothing was recorded).
    """
    from .app import current_app

    chosen = app or current_app()
    url = chosen.settings.database_url
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
        first = cancellations.record(job_id)
    unheld = HeldJobs.for_url(url).forget(job_id)
    UniqueKeys.for_url(url).free_job(job_id)
    where = " (it was held for later; removed)" if unheld else ""
    if status is None:
        text = (f"job {job_id}: cancellation recorded{where}; it has no status row (untracked or unknown), so "
                "whether it already ran cannot be told: if it has not started, it will not run")
    else:
        text = f"job {job_id}: cancelled (was {status.value}){where}; it will not run"
    if not first and status is None:
        text = f"job {job_id}: was already cancelled"
    logger.info("%s", text)
    return Cancellation(job_id, True, Status.CANCELLED if status is not None else None, text)


def _refused(job_id: str, status: Status) -> Cancellation:
    if status is Status.CANCELLED:
        return Cancellation(job_id, True, status, f"job {job_id}: was already cancelled")
    if status in FINISHED:
        text = f"job {job_id}: not cancelled, it already finished ({status.value}); nothing changed"
    else:
        text = f"job {job_id}: not cancelled, it is running ({status.value}); nothing changed"
    return Cancellation(job_id, False, status, text)


class CancellationCheck(Middleware):
    """Before each attempt, deletes a cancelled job unrun and records CANCELLED (installed by sqjobs)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._rows: Cancellations | None = None

    def _cancellations(self) -> Cancellations:
        rows = self._rows
        if rows is None or rows.store.pid != os.getpid():  # a forked job process opens its own
            rows = self._rows = Cancellations.for_url(self.app.settings.database_url)
        return rows

    def before_run(self, job: Job, message: JobMessage) -> None:
        """Raise SkipMessage for a cancelled job; StatusStoreError (keep the message) if the database is down."""
        rows = self._cancellations()
        if not rows.is_cancelled(message.id):
            return
        if self.app.is_tracked(type(job)):
            rows.store.cancelled_unrun(message.id, CANCELLED_TEXT)
        UniqueKeys.for_url(rows.store.url).free_job(message.id)
        raise SkipMessage(f"job {message.id} {job.name} on {message.queue}: cancelled; deleted unrun")
