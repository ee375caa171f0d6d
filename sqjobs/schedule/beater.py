"""The beater: sends periodic jobs at their fire times, coordinated through the database.

Any number of beaters may run, on any number of machines. Each fire time is
claimed with a row whose key is (broker, job name, fire time): the beater
whose insert wins sends the job and marks the row sent; the others see the
key taken and move on. The broker is the one the runs go to
(:attr:`Broker.identity <sqjobs.brokers.base.Broker.identity>`, as for held
jobs), so deployments sharing one database (a staging on the embedded broker,
a production on SQS) each send every tick to their own broker. A claim left
unsent for ``claim_timeout_s`` (its beater died between claiming and sending)
is taken over by a conditional update, so a tick is never lost; in that rare
race the job id is the same for both sends (derived from the name and fire
time), so tracked jobs still run once.

Which fire times a tick sends (for each job): those after the latest fire
time claimed for the job and the beater's broker (in any beater; a job never
claimed starts from the beater's first tick), at most
:data:`CATCH_UP_WINDOW` back, up to now. A fire
time at most ``catch_up_grace_s`` old (``[beater] catch_up_grace_s``) is on
time and sent; older ones were missed (no beater ran, or the database was
down) and follow the job's ``catch_up``: ``"all"`` sends each, ``"latest"``
only the most recent of them, ``"none"`` none.

Claims written before claims named their broker (a ``sqjobs_beats`` table
of an earlier version is upgraded in place when first used, see
:mod:`sqjobs.status.migrations`) keep the broker :data:`LEGACY_BROKER`, and every
deployment counts them as its own: they are ticks of the past, so a deployment
never sends again a tick it sent before the upgrade, and catches up from its
last one as it did. A beater of the earlier version still running writes such
claims too (the column's default); as it also reads every broker's claims as
its own, upgrade the beaters of all the deployments sharing a database, and
stop those of the earlier version before starting the new ones: a tick claimed
by both versions at once is sent twice (with the same job id).

Each tick also sends the held jobs that are due (delays longer than the
broker holds, :mod:`sqjobs.schedule.later`), each claimed per row in the same
database, so that redundant beaters send each exactly once.

Tests call :meth:`Beater.tick` with the time they want; :meth:`Beater.run`
is the loop around it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence, cast

import peewee

from .. import defaults
from ..app import App, current_app
from ..brokers.base import Broker
from ..clock import utc_now
from ..errors import BrokerError, MalformedMessageError, StatusStoreError, StatusStorePermanentError
from ..job import Job, Registry
from ..message import decode
from ..middleware import metrics
from ..outage import Outage
from ..status.migrations import add_key_column
from ..status.store import PreciseDateTimeField, create_tables_racing, database_errors, open_database, safe_url
from .cron import Schedule
from .later import NAME_MAX_CHARS, HeldJobs

logger = logging.getLogger("sqjobs.beater")

#: Table of fire-time claims.
BEATS_TABLE = "sqjobs_beats"
#: The broker of the claims written before claims named their broker (the table was upgraded).
LEGACY_BROKER = ""
#: Seconds after which an unsent claim is taken over by another beater.
CLAIM_TIMEOUT_S = 60.0
#: How far back a beater looks for missed fire times.
CATCH_UP_WINDOW = timedelta(days=1)
#: Longest pause between two ticks of the loop.
TICK_INTERVAL_S = 1.0
#: Namespace of the job ids of periodic runs (uuid5 of "name@fire time").
_JOB_ID_NAMESPACE = uuid.UUID("5b1e7c3a-3f7d-4d8e-9a61-4a6f1f0f5e21")


def _naive(instant: datetime) -> datetime:
    return instant.astimezone(timezone.utc).replace(tzinfo=None)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc)


def _broker_key(broker: str) -> str:
    """The broker's identity as a claim stores it (cut as held rows cut it)."""
    return broker[:NAME_MAX_CHARS]


def periodic_job_id(name: str, fire_at: datetime) -> str:
    """The job id of the run of ``name`` for ``fire_at``: the same in every beater."""
    return uuid.uuid5(_JOB_ID_NAMESPACE, f"{name}@{_naive(fire_at).isoformat()}").hex


class BeatStore:
    """Fire-time claims in the database at ``url`` (the ``[sqjobs] database``).

    A claim names the broker its run goes to (:attr:`Broker.identity
    <sqjobs.brokers.base.Broker.identity>`, as held jobs do): the key is
    (broker, job, fire time), so deployments sharing one database each send
    every tick. Claims of :data:`LEGACY_BROKER` were written before claims
    named their broker; each deployment counts them as its own (see the
    module docstring).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.database = open_database(url)

        class BeatClaim(peewee.Model):
            broker = peewee.CharField(max_length=NAME_MAX_CHARS,
                                      constraints=[peewee.SQL(f"DEFAULT '{LEGACY_BROKER}'")])
            job = peewee.CharField(max_length=191)
            fire_at = PreciseDateTimeField()
            beater = peewee.CharField(max_length=191)
            claimed_at = PreciseDateTimeField()
            sent_at = PreciseDateTimeField(null=True)

            class Meta:
                table_name = BEATS_TABLE
                primary_key = peewee.CompositeKey("broker", "job", "fire_at")

        BeatClaim._meta.set_database(self.database)
        self.model = BeatClaim
        self._ready = False

    def _guard(self, what: str) -> contextlib.AbstractContextManager[None]:
        return database_errors(self.database, f"beat database {safe_url(self.url)}", what, url=self.url)

    def create_tables(self) -> None:
        """Create the claims table if missing, or upgrade one of an earlier shape (idempotent; safe to race)."""
        with self._guard("create the beats table"):
            create_tables_racing(self.database, [self.model])
        with self._guard("upgrade the beats table"):
            add_key_column(self.database, self.model, "broker", f"VARCHAR({NAME_MAX_CHARS}) NOT NULL "
                                                                f"DEFAULT '{LEGACY_BROKER}'")
        self._ready = True

    def _prepare(self) -> None:
        if not self._ready:
            self.create_tables()

    def _mine(self, broker: str) -> Any:
        """The claims ``broker`` counts as its own: its own and the legacy ones."""
        return self.model.broker.in_([_broker_key(broker), LEGACY_BROKER])

    def _row(self, broker: str, job: str, fire_at: datetime) -> Any:
        model = self.model
        return (model.broker == _broker_key(broker)) & (model.job == job) & (model.fire_at == _naive(fire_at))

    def latest(self, broker: str, job: str) -> datetime | None:
        """The latest fire time of ``job`` claimed for ``broker`` (or before claims named theirs), or None."""
        self._prepare()
        with self._guard("read claims"):
            value = (self.model.select(peewee.fn.MAX(self.model.fire_at))
                     .where(self._mine(broker) & (self.model.job == job)).scalar())
        if isinstance(value, str):  # SQLite hands back text for an aggregate
            value = datetime.fromisoformat(value)
        return _aware(value) if value else None

    def claim(self, broker: str, job: str, fire_at: datetime, beater: str, now: datetime) -> bool:
        """Try to claim (broker, job, fire_at); True if this beater won it."""
        self._prepare()
        with self._guard("claim a fire time"):
            try:
                with self.database.atomic():
                    self.model.insert(broker=_broker_key(broker), job=job, fire_at=_naive(fire_at), beater=beater,
                                      claimed_at=_naive(now)).execute()
                return True
            except peewee.IntegrityError:
                return False

    def take_over(self, broker: str, job: str, fire_at: datetime, beater: str, now: datetime,
                  timeout_s: float) -> bool:
        """Take an unsent claim older than ``timeout_s``; True if this beater now holds it."""
        with self._guard("take over a claim"):
            cutoff = _naive(now) - timedelta(seconds=timeout_s)
            updated: int = (self.model.update(beater=beater, claimed_at=_naive(now))
                       .where(self._row(broker, job, fire_at) & self.model.sent_at.is_null()
                              & (self.model.claimed_at < cutoff)).execute())
        return updated == 1

    def stale(self, broker: str, now: datetime, timeout_s: float) -> list[tuple[str, str, datetime]]:
        """Claims ``broker`` counts as its own, unsent ``timeout_s`` after they were made: (broker, job, fire_at)."""
        self._prepare()
        cutoff = _naive(now) - timedelta(seconds=timeout_s)
        model = self.model
        with self._guard("read stale claims"):
            rows = cast(Iterable[tuple[str, str, datetime]], model.select(model.broker, model.job, model.fire_at).where(
                self._mine(broker) & model.sent_at.is_null() & (model.claimed_at < cutoff)).tuples())
            return [(owner, job, _aware(fire_at)) for owner, job, fire_at in rows]

    def mark_sent(self, broker: str, job: str, fire_at: datetime, now: datetime) -> None:
        """Record that the run for (broker, job, fire_at) was sent."""
        with self._guard("mark a claim sent"):
            self.model.update(sent_at=_naive(now)).where(self._row(broker, job, fire_at)).execute()

    def claims(self, job: str) -> list[dict[str, Any]]:
        """Every claim of ``job``, of every broker (for tests and inspection), oldest first."""
        self._prepare()
        with self._guard("read claims"):
            rows = (self.model.select().where(self.model.job == job)
                    .order_by(self.model.fire_at, self.model.broker).dicts())
            return list(cast(Iterable[dict[str, Any]], rows))

    def last_claim(self, broker: str, job: str) -> dict[str, Any] | None:
        """The claim of ``job``'s latest fire time for ``broker`` (broker, job, fire_at, beater, claimed_at,
        sent_at), or None."""
        self._prepare()
        with self._guard("read claims"):
            rows = list(cast(Iterable[dict[str, Any]], self.model.select()
                             .where(self._mine(broker) & (self.model.job == job))
                             .order_by(self.model.fire_at.desc()).limit(1).dicts()))
        return rows[0] if rows else None

    def close(self) -> None:
        """Close this process's connection."""
        with contextlib.suppress(Exception):
            self.database.close()


@dataclass(frozen=True)
class Sent:
    """One periodic run a beater sent."""

    job: str
    fire_at: datetime
    job_id: str
    #: True for a held job (a long delay) sent when due; ``fire_at`` is then the instant it was due.
    held: bool = False


class Beater:
    """Sends the periodic jobs among ``jobs`` when they are due.

    ``catch_up_grace_s``: a fire time at most this old when the beater first
    sees it is sent as on time; an older one is missed and follows the job's
    ``catch_up`` (see the module docstring).
    """

    def __init__(self, source: App | Broker, jobs: Sequence[type[Job]], store: BeatStore, *,
                 beater_id: str | None = None, claim_timeout_s: float = CLAIM_TIMEOUT_S,
                 catch_up_grace_s: float = defaults.CATCH_UP_GRACE_S,
                 clock: Callable[[], datetime] = utc_now) -> None:
        #: The application whose producer sends the runs (a bare Broker goes with the default app's settings).
        self.app = source if isinstance(source, App) else current_app().with_broker(source)
        self.jobs = {job.name: job for job in jobs if job.schedule}
        self.schedules = {name: Schedule(job.schedule or "", job.timezone) for name, job in self.jobs.items()}
        self.store = store
        self.beater_id = beater_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.claim_timeout_s = claim_timeout_s
        self.catch_up_grace_s = catch_up_grace_s
        self.clock = clock
        #: Held jobs of the same database, sent at each tick when due.
        self.held = HeldJobs.for_url(store.url)
        self.started_at: datetime | None = None
        self._stopping = threading.Event()
        # While the database or the broker fails, ticks pause as workers do (one line a try), at most half the
        # grace, so that a fire time due as the service comes back is still sent on time.
        max_pause_s = min(defaults.STORE_RETRY_PAUSE_MAX_S, max(defaults.STORE_RETRY_PAUSE_S, catch_up_grace_s / 2))
        #: The status database's outage, if it is failing: its log lines and its pauses.
        self.database_outage = Outage(logger, "status database", "ticking", defaults.STORE_RETRY_PAUSE_S, max_pause_s)
        #: The broker's outage, if it is failing.
        self.broker_outage = Outage(logger, "broker", "sending periodic jobs", defaults.STORE_RETRY_PAUSE_S,
                                    max_pause_s)

    @classmethod
    def for_registry(cls, source: App | Broker, registry: Registry, store: BeatStore, **options: Any) -> Beater:
        """A beater for every registered job that has a schedule."""
        return cls(source, [registry.get(name) for name in registry.names()], store, **options)

    @property
    def broker_identity(self) -> str:
        """The broker the runs go to, as claims name it (:attr:`sqjobs.brokers.base.Broker.identity`)."""
        return self.app.broker.identity

    def due(self, name: str, now: datetime) -> list[datetime]:
        """Fire times of job ``name`` to send at ``now``, after its catch-up choice."""
        if self.started_at is None:
            self.started_at = now
        schedule = self.schedules[name]
        since = self.store.latest(self.broker_identity, name) or self.started_at
        since = max(since, now - CATCH_UP_WINDOW)
        fire_times = schedule.between(since, now)
        recent = [t for t in fire_times if (now - t).total_seconds() <= self.catch_up_grace_s]
        missed = fire_times[: len(fire_times) - len(recent)]
        policy = self.jobs[name].catch_up
        if not missed or policy == "all":
            return missed + recent
        if policy == "latest":
            return missed[-1:] + recent
        return recent

    def _send(self, broker: str, name: str, fire_at: datetime, now: datetime) -> Sent:
        """Send the run of ``name`` for ``fire_at`` and mark the claim of ``broker`` sent."""
        job_class = self.jobs[name]
        job_id = periodic_job_id(name, fire_at)
        self.app.producer.send(job_class, job_id=job_id, extra={"scheduled_for": fire_at.isoformat()})
        self.store.mark_sent(broker, name, fire_at, now)
        metrics.schedule_sent(name)
        logger.info("job %s %s on %s: sent for %s", job_id, name, job_class.queue, fire_at.isoformat())
        return Sent(name, fire_at, job_id)

    def tick(self, now: datetime | None = None) -> list[Sent]:
        """Claim and send every due fire time and held job at ``now``; take over stale claims. Return what was sent."""
        now = now or self.clock()
        broker = self.broker_identity
        sent: list[Sent] = []
        for name in self.jobs:
            for fire_at in self.due(name, now):
                if self.store.claim(broker, name, fire_at, self.beater_id, now):
                    sent.append(self._send(broker, name, fire_at, now))
        for owner, name, fire_at in self.store.stale(broker, now, self.claim_timeout_s):
            if name in self.jobs and self.store.take_over(owner, name, fire_at, self.beater_id, now,
                                                          self.claim_timeout_s):
                logger.warning("job %s: took over the unsent claim for %s", name, fire_at.isoformat())
                sent.append(self._send(owner, name, fire_at, now))
        for held in self.held.send_due(self.app.broker, self.beater_id, now, self.claim_timeout_s):
            try:
                name = decode(held.body, held.job_id).name
            except MalformedMessageError:
                name = "?"
            sent.append(Sent(name, held.due_at, held.job_id, held=True))
        return sent

    def _tick_once(self) -> float | None:
        """Tick; return the pause before the next try if the database or the broker failed, else None."""
        try:
            self.tick()
        except StatusStorePermanentError:
            raise  # [sqjobs] database must change: the command exits 2
        except StatusStoreError as exc:
            # Its other connection (held jobs) may have idled through the outage: the next try opens both anew.
            self.store.close()
            self.held.store.close()
            return self.database_outage.failed(exc)
        except BrokerError as exc:
            self.database_outage.recovered()  # the claims were read and written
            return self.broker_outage.failed(exc)
        except Exception:
            logger.exception("beater %s: tick failed; trying again", self.beater_id)
            return None
        self.database_outage.recovered()
        self.broker_outage.recovered()
        return None

    def request_stop(self, *_: Any) -> None:
        """Stop the loop after the current tick; safe from a signal handler."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT graceful stops."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self, once: bool = False) -> int:
        """Tick until stopped (or once); return exit code 0.

        While the database or the broker fails, the loop pauses as a worker
        does (:class:`~sqjobs.outage.Outage`: one line a try, no traceback,
        one line when it answers again); the fire times due meanwhile follow
        the grace and the jobs' ``catch_up`` once it answers.
        StatusStorePermanentError is raised.
        """
        logger.info("beater %s watching %s", self.beater_id, ", ".join(sorted(self.jobs)) or "no periodic job")
        while not self._stopping.is_set():
            pause_s = self._tick_once()
            if once:
                break
            if pause_s is None:
                now = self.clock()
                pause_s = TICK_INTERVAL_S - (now.timestamp() % TICK_INTERVAL_S)
            self._stopping.wait(pause_s)
        logger.info("beater %s stopped", self.beater_id)
        return 0
