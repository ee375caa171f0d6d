"""Unique jobs: at most one job per key waiting or running, enforced by a unique index in the database.

``apply_async(..., unique_key="report-42")``, or ``@job(unique=True)`` (the
key is then made from the job's name and arguments, :func:`derived_key`):
the producer inserts ``(key, job id)`` into ``sqjobs_unique``, whose primary
key is the key, before it sends anything. The insert that wins sends the
job; an enqueue that finds the key taken sends nothing and returns the
handle of the job that holds it. Being an index in the ``[sqjobs]
database``, it holds across processes and machines.

The key travels in the message (the optional wire field ``unique_key``) and
is freed by the worker (:class:`KeyReleases`) once the job finished and the
broker confirmed it: after the delete of a message whose job succeeded (or
was skipped: cancelled, already done) went through, and after the move of a
message to the dead-letter queue (its last attempt failed, or it could not
run) went through; a cancelled job frees it when it is cancelled. A failed
attempt with attempts left keeps it (the job still waits). Freeing it
earlier would let a worker that dies between the attempt and the delete
run the job twice side by side: its message comes back while a producer
was already given a new job for the key. Only messages that carry a key
cost the worker anything.

While the status database is down, a worker keeps the keys it has to free
and tries again with backoff (one log line per try); a worker stopped
meanwhile, or killed between a delete and the release, leaves those keys
taken (its stop says which, ``sqjobs unique KEY --free`` frees one).

Requeueing a dead letter (``sqjobs dead --requeue``, the dashboard) takes its
key again (:func:`requeue_dead`): if another job holds it meanwhile, that
message stays dead and the requeue says so; ``--force`` sends it anyway
(it then runs beside the holder, which keeps the key).

The window: a worker that dies mid-job settles nothing, so the key stays
taken while the message is invisible (its visibility timeout) and until the
attempt that follows finishes; the key is never freed while the job may
still run. A message removed by hand (``sqjobs dead --purge``, a purged
queue) leaves its key taken: ``sqjobs unique KEY --free`` frees it; so does
a producer killed between taking the key and sending (a send that fails
frees it). A periodic job with ``unique = True`` skips a fire time while its
previous run still waits or runs (the beater's send returns the holder's
handle). In eager mode the job runs inside the call, so nothing waits and no
key is taken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, AbstractSet, Any, Callable, Iterable, Mapping, Sequence

import peewee

from ..brokers.base import ReceivedMessage, dead_letter_name
from ..defaults import STORE_RETRY_PAUSE_MAX_S, STORE_RETRY_PAUSE_S
from ..errors import MalformedMessageError
from ..message import ID_MAX_CHARS, UNDECODABLE_PREFIX, decode, glimpse
from ..outage import Outage
from ..status.rows import Rows
from ..status.store import PreciseDateTimeField, naive_utc_now

if TYPE_CHECKING:
    from ..brokers.base import Broker
    from ..message import JobMessage

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

    def free_all(self, pairs: Sequence[tuple[str, str]]) -> int:
        """Free each ``(key, job id)`` of ``pairs`` whose job still holds the key, in one transaction; how many."""
        model = self.model
        self.ready()
        with self.guard(f"free {len(pairs)} unique key(s)"), self.database.atomic():
            return sum(int(model.delete().where((model.key == key) & (model.job_id == job_id)).execute())
                       for key, job_id in pairs)

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


class KeyReleases:
    """The unique keys one worker frees, each once the broker confirmed that its message is settled.

    :meth:`expect` the key of a message to be deleted, then :meth:`deleted`
    once its delete went through (the key is freed then) or :meth:`forget` if
    the worker gave up on the delete (the message comes back, and its next
    settlement frees the key); :meth:`dead_lettered` once a message is in the
    dead-letter queue. A free that fails (the status database is down) is
    kept and tried again by :meth:`retry` after a pause that doubles, one
    log line a try. Each key is freed only if its job still holds it, so a
    second free of the same one changes nothing.
    """

    def __init__(self, database_url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.database_url = database_url
        self.clock = clock
        #: Receipt -> (key, job id) of the messages whose delete is awaited.
        self.expected: dict[str, tuple[str, str]] = {}
        #: (key, job id) of settled messages whose keys are not freed yet.
        self.due: list[tuple[str, str]] = []
        self._retry_at = 0.0
        self.outage = Outage(logger, "status database", "freeing the unique keys of finished jobs (they stay taken "
                             "until then)", STORE_RETRY_PAUSE_S, STORE_RETRY_PAUSE_MAX_S)

    def expect(self, receipt: str, key: str, job_id: str) -> None:
        """The message of ``receipt`` is to be deleted: free ``key`` of ``job_id`` once it is."""
        self.expected[receipt] = (key, job_id)

    def deleted(self, messages: Iterable[ReceivedMessage]) -> None:
        """``messages`` were deleted: free the keys expected for them."""
        expected = self.expected
        if not expected:
            return
        for message in messages:
            pair = expected.pop(message.receipt, None)
            if pair is not None:
                self.due.append(pair)
        self.retry()

    def forget(self, messages: Iterable[ReceivedMessage]) -> None:
        """``messages`` were not deleted and will be delivered again: their keys stay taken."""
        for message in messages:
            self.expected.pop(message.receipt, None)

    def dead_lettered(self, message: JobMessage) -> None:
        """``message`` is in the dead-letter queue: free its key, if it carries one."""
        key = message.extra.get(KEY_FIELD)
        if isinstance(key, str) and key:
            self.due.append((key, message.id))
            self.retry()

    def retry(self, last: bool = False) -> None:
        """Free the keys due, unless a failed try's pause is not over (``last``: try anyway, once).

        A failure keeps them for the next try; on the ``last`` try (the
        worker stops) each key left taken is logged with the command that
        frees it.
        """
        if not self.due or (not last and self.clock() < self._retry_at):
            return
        due, self.due = self.due, []
        try:
            UniqueKeys.for_url(self.database_url).free_all(due)
        except Exception as exc:  # noqa: BLE001 - the database down (or a bug): kept and tried again, logged
            if last:
                for key, job_id in due:
                    logger.warning("job %s: its unique key %r stays taken, the database could not be reached before "
                                   "the worker stopped (sqjobs unique KEY --free frees it): %s", job_id, key, exc)
                return
            self.due = due + self.due
            self._retry_at = self.clock() + self.outage.failed(exc)
            return
        self.outage.recovered()
        if logger.isEnabledFor(logging.DEBUG):
            for key, job_id in due:
                logger.debug("job %s: unique key %r freed", job_id, key)


@dataclass
class Requeued:
    """What a requeue of dead letters did (:func:`requeue_dead`)."""

    #: Messages moved back to their queue.
    moved: int = 0
    #: Unreadable messages left in the dead-letter queue (their stored bytes are not copied).
    unreadable: int = 0
    #: One line per message left dead because another job holds its unique key.
    held: list[str] = field(default_factory=list)
    #: One line per message sent anyway (``force``) while another job holds its key.
    forced: list[str] = field(default_factory=list)
    #: ``job ID NAME`` of the message chosen by its id, where its body names them (``""`` otherwise).
    job: str = ""


def requeue_dead(broker: Broker, database_url: str, queue: str, *, message_id: str | None = None,
                 job_ids: AbstractSet[str] | None = None, force: bool = False) -> Requeued:
    """Move the dead letters of ``queue`` back to it, taking their keys again.

    Only the message ``message_id`` moves when it is given, and only the
    messages of the jobs ``job_ids`` when those are given (the others stay).

    A message with a unique key takes it (as a send does) before it moves:
    one whose key another job holds stays dead, with a line in ``held``,
    unless ``force`` sends it anyway (a line in ``forced``: it runs beside
    that job, which keeps the key). A message whose job still holds its own
    key goes. If a move fails after its key was taken, the key stays with
    its job, and a requeue tried again finds it its own. Raises
    StatusStoreError while the database cannot be reached (messages not
    moved yet are visible in the dead-letter queue again after a minute).
    """
    done = Requeued()
    keys = UniqueKeys.for_url(database_url)

    def keep(message: ReceivedMessage) -> bool:
        if message_id is not None and message.message_id != message_id:
            return True
        if message.body.startswith(UNDECODABLE_PREFIX):
            done.unreadable += 1
            return True
        if message_id is not None:
            seen = glimpse(message.body, message.message_id)
            done.job = f"job {seen.id}{f' {seen.name}' if seen.name else ''}" if seen.id else ""
        try:
            decoded = decode(message.body, message.message_id)
        except MalformedMessageError:
            return job_ids is not None  # moved as before (unless jobs are chosen): it comes back with its reason
        if job_ids is not None and decoded.id not in job_ids:
            return True
        key = decoded.extra.get(KEY_FIELD)
        if not (isinstance(key, str) and key):
            return False
        holder = keys.take(key, decoded.id, decoded.name, queue)
        if holder is None or holder[0] == decoded.id:
            return False
        line = (f"job {decoded.id} {decoded.name} (message {message.message_id}): its unique key {key!r} is held "
                f"by job {holder[0]}")
        if force:
            done.forced.append(f"{line}; sent anyway: it runs beside that job, which keeps the key")
            return False
        done.held.append(f"{line}; left in {dead_letter_name(queue)}")
        return True

    done.moved, _ = broker.requeue_dead(queue, keep=keep)
    return done
