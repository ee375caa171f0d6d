"""One scrape of ``/metrics``: what the processes recorded, plus the queues and schedules as they are now.

A scrape adds up the files every process wrote in the metrics folder
(:mod:`sqjobs.middleware.metrics`), holding the folder's lock, after merging the files
of processes that are gone (:mod:`sqjobs.middleware.metrics_files`), and asks, at that
moment:

- the broker: ``sqjobs_queue_messages{queue, state}`` with ``state`` one of
  ``visible``, ``in_flight``, ``delayed``, ``dead``;
- the registered periodic jobs: ``sqjobs_schedule_next_fire_timestamp_seconds{job}``
  (a Unix time).

A broker that cannot be reached does not fail the scrape: its queue series
are left out and ``sqjobs_broker_up`` says 0.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from .. import defaults
from ..middleware.metrics_files import locked, merge_gone
from ..schedule.cron import Schedule
from ..schedule.later import queue_counts

if TYPE_CHECKING:
    from ..app import App
    from ..config import Settings

logger = logging.getLogger("sqjobs.metrics_export")

#: The content type of the text format a scrape returns.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_dir(settings: Settings) -> str:
    """The metrics folder: ``[metrics] dir``, else ``<[daemon] run_dir>/metrics`` (both relative to the config)."""
    configured = str(settings.get("metrics", "dir"))
    if configured:
        return settings.resolve_path(configured)
    return os.path.join(settings.resolve_path(settings.get("daemon", "run_dir")), defaults.METRICS_SUBDIR)


def sweep_dead(directory: str) -> list[int]:
    """Merge the files of the processes that recorded in ``directory`` and are gone; return their pids."""
    if not os.path.isdir(directory):
        return []
    with locked(directory, defaults.METRICS_LOCK_WAIT_S) as held:
        return merge_gone(directory) if held else []


def recorded(directory: str) -> list[Metric]:
    """The metrics the processes recorded in ``directory``, added up (empty when the lock stays busy)."""
    with locked(directory, defaults.METRICS_LOCK_WAIT_S) as held:
        if not held:
            logger.warning("metrics: the lock of %s stayed busy for %.0f s: the recorded series are left out",
                           directory, defaults.METRICS_LOCK_WAIT_S)
            return []
        merge_gone(directory)
        return list(MultiProcessCollector(None, path=directory).collect())


class _RecordedCollector:
    """Series already read (under the folder's lock), handed to a registry."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """Yield the series read."""
        return iter(self.metrics)


class _NowCollector:
    """The series read at scrape time: queue depths from the broker, next fire times from the schedules."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        """Yield the queue and schedule families."""
        messages = GaugeMetricFamily("sqjobs_queue_messages", "Messages in each queue by state, at scrape time.",
                                     labels=["queue", "state"])
        up = GaugeMetricFamily("sqjobs_broker_up", "1 when the broker answered this scrape, else 0.")
        try:
            for stats in queue_counts(self.app.broker, self.app.settings.database_url):
                for state in ("visible", "in_flight", "delayed", "dead"):
                    messages.add_metric([stats.queue, state], getattr(stats, state))
            up.add_metric([], 1)
        except Exception as exc:  # a scrape reports what it can
            logger.warning("metrics: cannot read the queues from the broker: %s", exc)
            up.add_metric([], 0)
        yield messages
        yield up
        fire = GaugeMetricFamily("sqjobs_schedule_next_fire_timestamp_seconds",
                                 "Next fire time of each periodic job (Unix time).", labels=["job"])
        now = datetime.now(timezone.utc)
        for name, schedule in periodic_schedules(self.app).items():
            upcoming = schedule.next_after(now)
            if upcoming:
                fire.add_metric([name], upcoming[0].timestamp())
        yield fire


def periodic_schedules(app: App) -> dict[str, Schedule]:
    """The schedule of each registered periodic job, by job name (sorted)."""
    found: dict[str, Schedule] = {}
    for name in app.registry.names():
        job_class = app.registry.get(name)
        if job_class.schedule:
            found[name] = Schedule(job_class.schedule, job_class.timezone)
    return dict(sorted(found.items()))


def scrape(app: App, directory: str | None = None) -> bytes:
    """The text of one scrape for ``app`` (its metrics folder by default)."""
    directory = directory or metrics_dir(app.settings)
    registry = CollectorRegistry(auto_describe=False)
    if os.path.isdir(directory):
        registry.register(_RecordedCollector(recorded(directory)))
    registry.register(_NowCollector(app))
    return generate_latest(registry)
