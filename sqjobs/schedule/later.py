"""Held jobs: delays longer than the broker holds, kept in the ``[sqjobs] database`` until they are due.

SQS delays a message by at most 15 minutes (``[sqs] max_delay_s``, 900 by
default). A job sent with a longer delay, or an ETA further ahead, is not
sent to SQS at once: the producer writes its encoded message (after every
``before_enqueue``, so it is exactly what would have been sent) into the
``sqjobs_held`` table with the instant it is due, and returns. The beaters
send it when it is due (:meth:`HeldJobs.send_due`, called at every tick):

- a row names the broker it is for (:attr:`~sqjobs.brokers.base.Broker.identity`:
  on SQS the endpoint, region and queue prefix), and a beater sends only
  those of its own broker, so deployments that share a database stay apart;
- each due row is claimed by a conditional update (``claimed_at`` empty, or
  older than ``HELD_CLAIM_TIMEOUT_S``), so whichever beater's update changes
  the row sends it, and redundant beaters send each held job exactly once;
- the claimer sends the message (delay 0), then deletes the row. If the send
  fails (SQS unreachable), the claim is released and the next tick tries
  again; the job stays held, never lost;
- a beater that dies between its claim and the delete leaves a claim that
  another beater takes over after the timeout and sends again: the same
  message, the same job id (tracked jobs then run once, as periodic ticks).

While the database is down, a due job stays in it and is sent late, when
the database answers again (the beater logs the outage at every tick). A
producer that cannot write the row gets StatusStoreError and nothing is
sent. The embedded and memory brokers hold any delay themselves and never
use this table.

Cost on SQS: holding a job costs no SQS request at all; sending it costs one
``SendMessage``, as any job does. The database pays one insert, one claim
update and one delete per held job, plus one indexed read per beater tick.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, cast

import peewee

from .. import defaults
from ..brokers.base import Broker, QueueStats
from ..errors import BrokerError, StatusStoreError, StatusStorePermanentError
from ..message import ID_MAX_CHARS
from ..status.rows import Rows
from ..status.store import LongTextField, PreciseDateTimeField

logger = logging.getLogger("sqjobs.held")

#: Table of held jobs.
HELD_TABLE = "sqjobs_held"
#: Longest queue name, message group or deduplication id a row keeps (SQS allows 80 and 128).
NAME_MAX_CHARS = 191


def _naive(instant: datetime) -> datetime:
    return instant.astimezone(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class HeldJob:
    """One held job: its message as it will be sent, where, and when."""

    job_id: str
    queue: str
    body: str
    due_at: datetime
    group_id: str | None = None
    dedup_id: str | None = None
    #: The broker it is for (:attr:`Broker.identity`): a beater sends only the held jobs of its own broker.
    broker: str = ""


class HeldJobs(Rows):
    """The held jobs of one database."""

    label = "held jobs"

    @staticmethod
    def make_model(database: peewee.Database) -> Any:
        """The ``sqjobs_held`` table: one row per held job, keyed by job id."""

        class HeldRow(peewee.Model):
            id = peewee.CharField(primary_key=True, max_length=ID_MAX_CHARS)
            broker = peewee.CharField(max_length=NAME_MAX_CHARS, index=True)
            queue = peewee.CharField(max_length=NAME_MAX_CHARS)
            body = LongTextField()
            due_at = PreciseDateTimeField(index=True)
            group_id = peewee.CharField(max_length=NAME_MAX_CHARS, null=True)
            dedup_id = peewee.CharField(max_length=NAME_MAX_CHARS, null=True)
            held_at = PreciseDateTimeField()
            claimed_by = peewee.CharField(max_length=NAME_MAX_CHARS, null=True)
            claimed_at = PreciseDateTimeField(null=True)

            class Meta:
                table_name = HELD_TABLE
                legacy_table_names = False

        HeldRow._meta.set_database(database)
        return HeldRow

    # -- the producer's side ---------------------------------------------------------------

    def hold(self, job: HeldJob, now: datetime) -> None:
        """Keep ``job`` until its ``due_at`` (a job id held again replaces its row)."""
        self.ready()
        values = dict(broker=job.broker[:NAME_MAX_CHARS], queue=job.queue[:NAME_MAX_CHARS], body=job.body,
                      due_at=_naive(job.due_at), group_id=job.group_id, dedup_id=job.dedup_id,
                      held_at=_naive(now), claimed_by=None, claimed_at=None)
        with self.guard(f"hold job {job.job_id} until {job.due_at.isoformat()}"), self.database.atomic():
            self.model.delete().where(self.model.id == job.job_id).execute()
            self.model.insert(id=job.job_id, **values).execute()

    def forget(self, job_id: str) -> bool:
        """Delete the held row of ``job_id`` unless a beater is sending it; True if one was deleted."""
        if not self.exists():
            return False
        with self.guard(f"forget held job {job_id}"):
            deleted = self.model.delete().where((self.model.id == job_id) & self.model.claimed_at.is_null()).execute()
        return bool(deleted)

    def counts(self, broker: str) -> dict[str, int]:
        """Held jobs per queue of ``broker`` (``sqjobs queues`` adds them to ``delayed``); reads only."""
        if not self.exists():
            return {}
        with self.guard("count held jobs"):
            rows = (self.model.select(self.model.queue, peewee.fn.COUNT(self.model.id))
                    .where(self.model.broker == broker[:NAME_MAX_CHARS]).group_by(self.model.queue))
            return {queue: int(count) for queue, count in rows.tuples()}

    def rows(self) -> list[dict[str, Any]]:
        """Every held row, soonest first (for tests and inspection)."""
        self.ready()
        with self.guard("read held jobs"):
            return list(cast(Iterable[dict[str, Any]], self.model.select().order_by(self.model.due_at).dicts()))

    # -- the beaters' side -----------------------------------------------------------------

    def due(self, broker: str, now: datetime, timeout_s: float, limit: int = defaults.HELD_BATCH) -> list[str]:
        """Ids of the held jobs of ``broker`` due at ``now`` that no live claim holds, soonest first."""
        self.ready()
        model = self.model
        cutoff = _naive(now) - timedelta(seconds=timeout_s)
        with self.guard("read due held jobs"):
            query = (model.select(model.id)
                     .where((model.broker == broker[:NAME_MAX_CHARS]) & (model.due_at <= _naive(now))
                            & (model.claimed_at.is_null() | (model.claimed_at < cutoff)))
                     .order_by(model.due_at).limit(limit))
            return [job_id for (job_id,) in query.tuples()]

    def claim(self, job_id: str, beater: str, now: datetime, timeout_s: float) -> HeldJob | None:
        """Claim the held job ``job_id`` for ``beater``; return it if this beater won it, else None."""
        model = self.model
        cutoff = _naive(now) - timedelta(seconds=timeout_s)
        with self.guard(f"claim held job {job_id}"):
            won = (model.update(claimed_by=beater[:NAME_MAX_CHARS], claimed_at=_naive(now))
                   .where((model.id == job_id) & (model.due_at <= _naive(now))
                          & (model.claimed_at.is_null() | (model.claimed_at < cutoff))).execute())
            if won != 1:
                return None
            row = model.get_or_none((model.id == job_id) & (model.claimed_by == beater[:NAME_MAX_CHARS]))
        if row is None:  # taken over between the two statements (a beater slower than the timeout)
            return None
        return HeldJob(row.id, row.queue, row.body, row.due_at.replace(tzinfo=timezone.utc), row.group_id,
                       row.dedup_id, row.broker)

    def sent(self, job_id: str, beater: str) -> None:
        """Delete the row of ``job_id`` that ``beater`` claimed and sent."""
        with self.guard(f"delete sent held job {job_id}"):
            self.model.delete().where((self.model.id == job_id) & (self.model.claimed_by == beater[:NAME_MAX_CHARS])
                                      ).execute()

    def release(self, job_id: str, beater: str) -> None:
        """Give up ``beater``'s claim on ``job_id`` (its send failed): the next tick tries again."""
        with self.guard(f"release held job {job_id}"):
            self.model.update(claimed_by=None, claimed_at=None).where(
                (self.model.id == job_id) & (self.model.claimed_by == beater[:NAME_MAX_CHARS])).execute()

    def send_due(self, broker: Broker, beater: str, now: datetime,
                 timeout_s: float = defaults.HELD_CLAIM_TIMEOUT_S) -> list[HeldJob]:
        """Claim and send every held job due at ``now``; return those this beater sent.

        Raises StatusStoreError when the database cannot be read (nothing is
        lost: the rows wait). A send the broker refuses releases its claim
        and is logged; the others go on.
        """
        sent: list[HeldJob] = []
        for job_id in self.due(broker.identity, now, timeout_s):
            job = self.claim(job_id, beater, now, timeout_s)
            if job is None:
                continue  # another beater has it
            try:
                broker.send(job.queue, job.body, 0, None, job.group_id, job.dedup_id)
            except BrokerError as exc:
                logger.error("held job %s on %s: the broker refused it, tried again at the next tick: %s",
                             job.job_id, job.queue, exc)
                try:
                    self.release(job.job_id, beater)
                except StatusStoreError as release_error:
                    logger.warning("held job %s: claim not released, taken over in %.0f s: %s", job.job_id,
                                   timeout_s, release_error)
                continue
            late_s = (now - job.due_at).total_seconds()
            logger.info("job %s on %s: held job sent (due %s, %.1f s late)", job.job_id, job.queue,
                        job.due_at.isoformat(), late_s)
            sent.append(job)
            try:
                self.sent(job.job_id, beater)
            except StatusStoreError as exc:
                logger.error("job %s on %s: sent, but its held row stays; another beater sends it again in %.0f s "
                             "(same job id): %s", job.job_id, job.queue, timeout_s, exc)
        return sent


def queue_counts(broker: Broker, database_url: str) -> list[QueueStats]:
    """Every queue's counts with its held jobs added to ``delayed``: what ``sqjobs queues``, the dashboard and
    ``sqjobs_queue_messages`` all show.

    Held rows live in the status database; while it cannot be reached they
    are left out, with one warning line (the broker's own counts are still
    shown). A permanent error (a wrong password, say) is raised.
    """
    held: dict[str, int] = {}
    try:
        held = HeldJobs.for_url(database_url).counts(broker.identity)
    except StatusStorePermanentError:
        raise
    except StatusStoreError as exc:
        logger.warning("held jobs not counted in 'delayed': %s", exc)
    rows = [broker.stats(name) for name in broker.queues()]
    rows += [QueueStats(name, 0, 0, 0, 0) for name in sorted(set(held) - {row.queue for row in rows})]
    return [replace(row, delayed=row.delayed + held.get(row.queue, 0)) for row in rows]
