"""``sqjobs beater`` and ``sqjobs schedule``: periodic jobs from the command line."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Any

import click

from ..app import current_app
from ..errors import JobError, StatusStoreError, StatusStorePermanentError, UnknownJobError
from ..job import Job, Registry, registry
from ..middleware.metrics import start_recording
from ..schedule.beater import Beater, BeatStore
from ..schedule.cron import Schedule
from .common import config_option, configure_app, require_jobs

#: An instant as ``--from`` wants it, for messages and help.
ISO_EXAMPLE = "2027-03-27T12:00:00+01:00"


class InstantType(click.ParamType):  # type: ignore[type-arg, unused-ignore]  # generic only in newer click: not subscripted
    """A click parameter: an ISO 8601 date and time with a UTC offset (``Z`` for UTC), as an aware datetime."""

    name = "iso8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        """Return ``value`` as an aware datetime, or fail the command with a usage error."""
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value
        text = str(value).strip()
        try:
            instant = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
        except ValueError:
            self.fail(f"{text!r} is not an ISO 8601 date and time; give one like {ISO_EXAMPLE}", param, ctx)
        if instant.tzinfo is None or instant.utcoffset() is None:
            self.fail(f"{text!r} has no UTC offset, so it names no single instant; give one like "
                      f"{ISO_EXAMPLE} (or end it with Z for UTC)", param, ctx)
        return instant


def periodic_job(jobs: Registry, name: str) -> type[Job]:
    """Return the registered job ``name`` if it has a schedule; otherwise raise a JobError listing those that do."""
    periodic = [known for known in jobs.names() if jobs.get(known).schedule]
    listed = f"periodic jobs: {', '.join(periodic)}" if periodic else (
        "none is: a periodic job has a schedule and lives in a module that [sqjobs] jobs names "
        "(check -c or $SQJOBS_CONFIG)")
    if name not in jobs:
        raise UnknownJobError(f"no periodic job is registered as {name!r}; {listed}")
    job_class = jobs.get(name)
    if not job_class.schedule:
        raise JobError(f"job {name!r} has no schedule; {listed}")
    return job_class


@click.command()
@config_option
@click.option("--once", is_flag=True, help="Send what is due now, then exit.")
@click.option("-i", "--import", "import_modules", multiple=True,
              help="Also import this job module (from the current directory too); repeatable.")
@click.option("--metrics-dir", default=None, help="Record metrics in this folder (default: [metrics] dir, if set).")
def beater(config: str | None, once: bool, import_modules: tuple[str, ...], metrics_dir: str | None) -> None:
    """Send periodic jobs when they are due (any number of beaters may run)."""
    settings = configure_app(config, extra_modules=import_modules)
    if metrics_dir:
        current_app().record_metrics(metrics_dir)
    if current_app().metrics_dir:
        start_recording(str(current_app().metrics_dir))
    require_jobs(settings, "beater", import_modules)
    signer = current_app().signer  # keys it would refuse stop it here, not at its first send
    store = BeatStore(settings.database_url)
    try:
        store.create_tables()
    except StatusStorePermanentError:
        raise
    except StatusStoreError as exc:  # down for now: the beater's loop retries at each tick
        logging.getLogger("sqjobs.beater").warning("%s; the beater starts anyway and tries again", exc)
    logging.getLogger("sqjobs.beater").info("signing is %s", f"on (key id {signer.signing_key_id} signs)"
                                            if signer is not None else "off")
    runner = Beater.for_registry(current_app(), registry, store,
                                 catch_up_grace_s=settings.get("beater", "catch_up_grace_s"))
    runner.install_signal_handlers()
    sys.exit(runner.run(once=once))

@click.command()
@config_option
@click.argument("name")
@click.option("--next", "count", type=click.IntRange(1, 1000), default=5, help="How many fire times.")
@click.option("--from", "start", type=InstantType(), default=None,
              help=f"List fire times strictly after this instant, e.g. {ISO_EXAMPLE} (default: now).")
def schedule(config: str | None, name: str, count: int, start: datetime | None) -> None:
    """Print the next fire times of periodic job NAME, ISO 8601 in its time zone, one a line."""
    configure_app(config)
    job_class = periodic_job(registry, name)
    plan = Schedule(job_class.schedule or "", job_class.timezone)
    for instant in plan.next_after(start or datetime.now(timezone.utc), count):
        click.echo(instant.astimezone(plan.zone).isoformat())
