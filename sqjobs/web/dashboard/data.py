"""What the dashboard's pages show, read from the broker, the status database and the daemon's files.

Plain functions returning plain data: the views render them, tests can call
them. Nothing here changes anything except :func:`requeue_one`,
:func:`requeue_all` and :func:`purge_dead`.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ... import defaults
from ...brokers.base import ORIGIN_ATTRIBUTE, REASON_ATTRIBUTE, QueueStats, dead_letter_name
from ...errors import SQJobsError, UnknownQueueError
from ...message import UNDECODABLE_PREFIX, glimpse
from ...middleware.unique import requeue_dead
from ...schedule.later import queue_counts
from ...status.store import StatusRecord, arguments_text
from ..metrics import periodic_schedules

if TYPE_CHECKING:
    from ...app import App

#: Dead letters left for their unique keys that a requeue's result line names (it counts the others).
HELD_SHOWN = 5
#: What the result of a requeue says when a message stayed dead for its unique key.
FORCE_HINT = " (`sqjobs dead {queue} --requeue --force` sends it anyway, beside the holder)"

#: Seconds without a rewrite after which a health file is taken for a process that is gone.
HEALTH_FILE_STALE_S = 10.0
#: Seconds without a poll after which a running worker counts as stalled when ``[daemon] stall_timeout_s``
#: is not set (sqjobsd's own default; it can work out a longer one from the job timeouts).
STALL_TIMEOUT_S = 300.0


def cut(text: str, limit: int = defaults.DASHBOARD_ARGS_CHARS) -> str:
    """``text``, cut to ``limit`` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def when(timestamp: float | datetime | None) -> str:
    """A time as ``2026-11-28 11:22:56 UTC``; ``-`` for none."""
    if timestamp is None or timestamp == 0:
        return "-"
    moment = timestamp if isinstance(timestamp, datetime) else datetime.fromtimestamp(timestamp, timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def queue_stats(app: App) -> list[QueueStats]:
    """Every queue's counts, sorted by name, held jobs counted as delayed (as ``sqjobs queues`` counts them)."""
    return queue_counts(app.broker, app.settings.database_url)


def check_queue(app: App, queue: str) -> None:
    """Raise UnknownQueueError unless the broker knows ``queue`` (a page never creates one)."""
    if queue not in app.broker.queues():
        raise UnknownQueueError(f"the broker has no queue {queue!r}")


@dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter queue, as the page lists it."""

    message_id: str
    job_id: str | None
    name: str | None
    args: str
    reason: str
    sent_at: float
    readable: bool


def _arguments(args: Any, kwargs: Any) -> str:
    parts = [json.dumps(value, ensure_ascii=False) for value in args or []]
    parts += [f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in (kwargs or {}).items()]
    return ", ".join(parts)


def dead_letters(app: App, queue: str, limit: int = defaults.DASHBOARD_DEAD_LIMIT) -> list[DeadLetter]:
    """Up to ``limit`` messages of ``queue``'s dead-letter queue (the visible ones), decoded where they can be."""
    found = []
    for message in app.broker.peek(dead_letter_name(queue), limit):
        reason = message.attributes.get(REASON_ATTRIBUTE, "")
        seen = glimpse(message.body, message.message_id)
        shown = (_arguments(seen.message.args, seen.message.kwargs) if seen.message is not None
                 else message.body)
        found.append(DeadLetter(message.message_id, seen.id, seen.name, cut(shown), reason, message.sent_at,
                                not message.body.startswith(UNDECODABLE_PREFIX)))
    return found


def requeue_one(app: App, queue: str, message_id: str) -> str:
    """Move dead letter ``message_id`` back to ``queue``, taking its unique key again; what happened, in a line.

    It stays dead when another job holds its key (:func:`sqjobs.middleware.unique.requeue_dead`).
    """
    done = requeue_dead(app.broker, app.settings.database_url, queue, message_id=message_id)
    if done.moved:
        return f"requeued {done.job} (message {message_id})" if done.job else f"requeued message {message_id}"
    if done.held:
        return done.held[0] + FORCE_HINT.format(queue=queue)
    if done.unreadable:
        return f"message {message_id} is unreadable: left where it is"
    return f"message {message_id} is no longer there"


def requeue_all(app: App, queue: str) -> str:
    """Move every readable dead letter of ``queue`` back, taking their unique keys again; what happened, in a line."""
    done = requeue_dead(app.broker, app.settings.database_url, queue)
    text = f"requeued {done.moved} message(s)" + (f"; {done.unreadable} unreadable one(s) left" if done.unreadable
                                                   else "")
    if done.held:
        shown = done.held[:HELD_SHOWN]
        more = f"; and {len(done.held) - len(shown)} more" if len(done.held) > len(shown) else ""
        text += f"; {len(done.held)} left for their unique keys: " + "; ".join(shown) + more
        text += FORCE_HINT.format(queue=queue)
    return text


def purge_dead(app: App, queue: str) -> int:
    """Delete every dead letter of ``queue``; return how many there were."""
    count = app.broker.stats(queue).dead
    app.broker.purge(dead_letter_name(queue))
    return count


@dataclass
class JobView:
    """A job found by id: its status row (if tracked) and where its message is now."""

    job_id: str
    record: StatusRecord | None = None
    #: Why the status row could not be read, if it could not.
    record_error: str = ""
    #: Sentences saying where the job's message is now.
    whereabouts: list[str] = field(default_factory=list)
    #: Queue of a dead letter found for it, with the letter's id and reason.
    dead_in: tuple[str, str, str] | None = None

    @property
    def arguments(self) -> str:
        """The job's arguments from its row, for a person: indented JSON, cut text, or "not recorded"."""
        return arguments_text(self.record.arguments if self.record is not None else None)


def find_job(app: App, job_id: str) -> JobView:
    """The status row of ``job_id`` and where its message is: waiting, in a dead-letter queue, or gone."""
    view = JobView(job_id)
    try:
        view.record = app.store.get(job_id)
    except SQJobsError as exc:
        view.record_error = str(exc)
    broker = app.broker
    queues = broker.queues()
    if view.record is not None and view.record.queue in queues:
        queues = [view.record.queue] + [name for name in queues if name != view.record.queue]
    for queue in queues:
        for message in broker.peek(dead_letter_name(queue), defaults.DASHBOARD_DEAD_LIMIT):
            if _job_id_of(message.body, message.message_id) == job_id:
                reason = message.attributes.get(REASON_ATTRIBUTE, "")
                origin = message.attributes.get(ORIGIN_ATTRIBUTE, queue)
                view.dead_in = (queue, message.message_id, reason)
                view.whereabouts.append(f"in the dead-letter queue of {origin} (message {message.message_id})")
        for message in broker.peek(queue, defaults.DASHBOARD_DEAD_LIMIT):
            if _job_id_of(message.body, message.message_id) == job_id:
                view.whereabouts.append(f"waiting in {queue} (message {message.message_id}), received "
                                        f"{message.receive_count} time(s) so far")
    if not view.whereabouts:
        view.whereabouts.append(_not_found_text(view.record))
    return view


def _job_id_of(body: str, message_id: str) -> str | None:
    return glimpse(body, message_id).id


def _not_found_text(record: StatusRecord | None) -> str:
    if record is None:
        return ("no waiting or dead message carries this id (among the first "
                f"{defaults.DASHBOARD_DEAD_LIMIT} of each queue), and no status row has it: untracked, pruned, "
                "or never sent")
    state = record.status.value
    if state == "SUCCESS":
        return "done: its message was deleted after it succeeded"
    if state in ("STARTED",):
        return "running: a worker holds its message (in flight)"
    if state == "RETRY":
        return "waiting for its next attempt (delayed: hidden until its backoff ends)"
    if state == "PENDING":
        return "sent: its message is delayed, in flight, or further back in its queue than this page looks"
    return f"{state}: its message is no longer in its queue nor among the visible dead letters"


@dataclass(frozen=True)
class WorkerView:
    """One worker process as its health file describes it."""

    name: str
    pid: int | None
    queues: str
    last_poll: float | None
    last_job: str | None
    jobs_done: int | None
    state: str
    job_process_pid: int | None
    job_process_deaths: int


def health_dir(app: App) -> str:
    """The folder of the daemon's worker health files: ``<run_dir>/status``."""
    settings = app.settings
    return os.path.join(settings.resolve_path(settings.get("daemon", "run_dir")), "status")


def workers(app: App, now: float | None = None) -> list[WorkerView]:
    """Every worker health file of the daemon, with whether its worker looks alive, stalled or gone."""
    now = time.time() if now is None else now
    stall_s = app.settings.get("daemon", "stall_timeout_s")
    stall_s = STALL_TIMEOUT_S if stall_s is None else float(stall_s)
    found = []
    for path in sorted(glob.glob(os.path.join(health_dir(app), "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        alive_at = float(data.get("alive_at") or 0)
        last_poll = data.get("last_poll")
        if now - alive_at > HEALTH_FILE_STALE_S:
            state = "gone (its file is no longer written)"
        elif stall_s and last_poll is not None and now - float(last_poll) > stall_s:
            state = f"stalled (no poll for {now - float(last_poll):.0f} s)"
        else:
            state = "running"
        found.append(WorkerView(os.path.basename(path)[:-len(".json")], data.get("pid"),
                                ", ".join(data.get("queues") or []), last_poll, data.get("last_job"),
                                data.get("jobs_done"), state, data.get("job_process_pid"),
                                len(data.get("job_process_deaths") or [])))
    return found


@dataclass(frozen=True)
class PeriodicView:
    """One periodic job: its schedule, its next fire times and its last claimed tick."""

    name: str
    schedule: str
    timezone: str
    next_times: list[datetime]
    last_tick: datetime | None
    last_beater: str | None
    last_sent_at: datetime | None


def periodic(app: App, now: datetime | None = None) -> tuple[list[PeriodicView], str]:
    """The registered periodic jobs, and an error text when the beaters' table could not be read."""
    from ...schedule.beater import BeatStore

    now = now or datetime.now(timezone.utc)
    views, problem = [], ""
    store: BeatStore | None = None
    try:
        store = BeatStore(app.settings.database_url)
    except SQJobsError as exc:
        problem = str(exc)
    for name, schedule in periodic_schedules(app).items():
        last: dict[str, Any] = {}
        if store is not None and not problem:
            try:
                last = store.last_claim(app.broker.identity, name) or {}
            except SQJobsError as exc:
                problem = str(exc)
        views.append(PeriodicView(name, schedule.expression, schedule.timezone_name, schedule.next_after(now, 5),
                                  last.get("fire_at"), last.get("beater"), last.get("sent_at")))
    if store is not None:
        store.close()
    return views, problem
