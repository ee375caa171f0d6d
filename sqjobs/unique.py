"""Unique jobs: at most one job per key waiting or running, enforced by a unique index in the database.

``apply_async(..., unique_key="report-42")``, or ``@job(unique=True)`` (the
key is then made from the job's name and arguments, :func:`derived_key`):
the producer inserts ``(key, job id)`` into ``sqjobs_unique``, whose primary
key is the key, before it sends anything. The insert that wins sends the
job; an enqueue that finds the key taken sends nothing and returns the
handle of the job that holds it. Being an index in the ``[sqjobs]
database``, it holds across processes and machines.

The key travels in the message (the optional wire field ``unique_key``) and
is freed, by :class:`UniqueKeys` (middleware sqjobs installs), when the job
finished: it succeeded, its last attempt failed, or its message went to the
dead-letter queue unrun; a cancelled job frees it when it is cancelled. A
failed attempt with attempts left keeps it (the job still waits).

The window: a worker that dies mid-job settles nothing, so the key stays
taken while the message is invisible (its visibility timeout) and until the
attempt that follows finishes; the key is never freed while the job may
still run. A message removed by hand (``sqjobs dead --purge`` of a job whose
dead-lettering could not free its key, a purged queue) leaves its key taken:
``sqjobs unique KEY --free`` frees it; so does a producer killed between
taking the key and sending (a send that fails frees it). A periodic job
with ``unique = True`` skips a fire time while its previous run still waits
or runs (the beater's send returns the holder's handle). In eager mode the job runs
inside the call, so nothing waits and no key is taken.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import peewee

from .errors import StatusStoreError
from .message import ID_MAX_CHARS
from .middleware import Middleware
from .rows import Rows
from .store import PreciseDateTimeField, naive_utc_now

if TYPE_CHECKING:
    from .job import Job
    from .message import JobMessage

logger = logging.getLogger("sqjobs.unique")

#: Table of taken keys.
UNIQUE_TABLE = "sqjobs_unique"
#: Longest key (an index on MySQL with utf8mb4 takes 191 characters).
KEY_MAX_CHARS = 191
#: Wire field that carries a job's key to the worker.
KEY_FIELD = "unique_key"


def derived_key(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The key of ``@job(unique=True)``: the job's name and a digest of its arguments as canonical JSON."""
    text = json.dumps([list(args), dict(kwargs)], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]
    return f"{name[:KEY_MAX_CHARS - 41]}:{digest}"


def check_key(key: str) -> str:
    """Return ``key`` if it can be a unique key; ValueError otherwise."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"unique_key must be a non-empty string, got {key!r:.60}")
    if len(key) > KEY_MAX_CHARS:
        raise ValueError(f"unique_key is {len(key)} characters, over the {KEY_MAX_CHARS} an index keeps")
    return key


class UniqueKeys(Rows):
    """The taken keys of one database."""

    label = "unique keys"

    @staticmethod
    def make_model(database: peewee.Database) -> Any:
        """The ``sqjobs_unique`` table: the key is the primary key."""

        class UniqueRow(peewee.Model):
            key = peewee.CharField(primary_key=True, max_length=KEY_MAX_CHARS)
            job_id = peewee.CharField(max_length=ID_MAX_CHARS, index=True)
            name = peewee.CharField(max_length=KEY_MAX_CHARS)
            queue = peewee.CharField(max_length=KEY_MAX_CHARS)
            taken_at = PreciseDateTimeField()

            class Meta:
                table_name = UNIQUE_TABLE
                legacy_table_names = False

        UniqueRow._meta.set_database(database)
        return UniqueRow

    def take(self, key: str, job_id: str, name: str, queue: str) -> tuple[str, str, str] | None:
        """Take ``key`` for ``job_id``; None if this call took it, else (job id, name, queue) of its holder."""
        self.ready()
        model = self.model
        with self.guard(f"take unique key {key!r}"):
            try:
                with self.database.atomic():
                    model.insert(key=key, job_id=job_id, name=name[:KEY_MAX_CHARS], queue=queue[:KEY_MAX_CHARS],
                                 taken_at=naive_utc_now()).execute()
                return None
            except peewee.IntegrityError:
                pass
            row = model.get_or_none(model.key == key)
        if row is None:  # freed in between: try once more
            return self.take(key, job_id, name, queue)
        return row.job_id, row.name, row.queue

    def free(self, key: str, job_id: str | None = None) -> bool:
        """Free ``key`` (only if ``job_id`` holds it, when given); True if it was taken."""
        model = self.model
        condition = model.key == key
        if job_id is not None:
            condition &= model.job_id == job_id
        self.ready()
        with self.guard(f"free unique key {key!r}"):
            return bool(model.delete().where(condition).execute())

    def free_job(self, job_id: str) -> int:
        """Free every key ``job_id`` holds (a cancelled job); return how many."""
        if not self.exists():
            return 0
        with self.guard(f"free the unique keys of job {job_id}"):
            return int(self.model.delete().where(self.model.job_id == job_id).execute())

    def holder(self, key: str) -> tuple[str, datetime] | None:
        """(job id, time taken) of the job that holds ``key``, or None."""
        if not self.exists():
            return None
        with self.guard(f"read unique key {key!r}"):
            row = self.model.get_or_none(self.model.key == key)
        return (row.job_id, row.taken_at) if row is not None else None


class UniqueKeyRelease(Middleware):
    """Frees a job's unique key once the job finished (installed by sqjobs; a no-op for jobs without a key)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def _free(self, message: JobMessage, why: str) -> None:
        key = message.extra.get(KEY_FIELD)
        if isinstance(key, str) and key:
            UniqueKeys.for_url(self.database_url).free(key, message.id)
            logger.debug("job %s %s on %s: unique key %r freed (%s)", message.id, message.name, message.queue, key, why)

    def after_run(self, job: Job, message: JobMessage, result: Any = None, error: BaseException | None = None) -> None:
        """Free the key when the attempt succeeded or was the last; StatusStoreError keeps the message."""
        if (error is None or job.last_attempt) and KEY_FIELD in message.extra:
            self._free(message, "finished")

    def after_dead_letter(self, message: JobMessage | str, reason: str) -> None:
        """Free the key of a message dead-lettered unrun (best effort: logged if the database is down)."""
        if isinstance(message, str):
            return
        try:
            self._free(message, "dead-lettered")
        except StatusStoreError as exc:
            logger.warning("job %s %s on %s: its unique key %r stays taken: %s (sqjobs unique --free frees it)",
                           message.id, message.name, message.queue, message.extra.get(KEY_FIELD), exc)
