"""``sqjobs status``, ``sqjobs initdb`` and ``sqjobs prune``: the status database from the command line.

They read only ``[sqjobs] database`` of the config file; no broker is
created and no job module imported.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from ..config import load_settings
from ..errors import JobNotFoundError
from ..middleware.cancellation import CANCELLED_TABLE, Cancellations
from ..status.store import ARGUMENTS_NOT_RECORDED, STATUS_TABLE, StatusRecord, get_store, safe_url
from .common import config_option

#: Seconds in one of each unit ``--older-than`` accepts.
DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
#: The accepted forms, for error messages and help.
DURATION_FORMS = "a number and a unit: 45s, 30m, 12h, 7d, 2w"
#: What ``sqjobs status`` adds for a cancelled job without a status row.
UNTRACKED_CANCEL_NOTE = ("untracked: it did not run only if it was sent cancellable and had not started "
                         "when it was cancelled")


def parse_duration_s(text: str) -> float:
    """Return the seconds in ``text``: a number and a unit s, m, h, d or w (``7d``, ``12h``, ``1.5h``).

    A bare number is refused, since ``7`` could mean seconds or days. Raises
    ValueError for anything else.
    """
    match = _DURATION.match(text.lower())
    if not match:
        if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", text):
            raise ValueError(f"{text!r} has no unit; give {DURATION_FORMS}")
        raise ValueError(f"{text!r} is not a duration; give {DURATION_FORMS}")
    return float(match.group(1)) * DURATION_UNITS_S[match.group(2)]


class DurationType(click.ParamType):  # type: ignore[type-arg, unused-ignore]  # generic only in newer click: not subscripted
    """A click parameter read by :func:`parse_duration_s` (value in seconds)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Return ``value`` in seconds or fail the command with a usage error."""
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration_s(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)



def _database_url(config: str | None) -> str:
    return load_settings(config).database_url


def _text(record: StatusRecord) -> str:
    data = record.to_json()
    lines = [f"{key + ':':<12} {data[key] if data[key] is not None else '-'}"
             for key in ("id", "name", "queue", "status", "attempts", "enqueued_at", "started_at", "finished_at")]
    lines.append(f"{'arguments:':<12} {record.arguments or ARGUMENTS_NOT_RECORDED}")
    if record.worker_host or record.worker_pid:
        lines.append(f"{'worker:':<12} {record.worker_host} pid {record.worker_pid}")
    if record.status.value == "SUCCESS":
        lines.append(f"{'result:':<12} {json.dumps(record.result)}")
    if record.error:
        lines.append(f"{'error:':<12} {record.error}")
    if record.traceback:
        lines.append("traceback:")
        lines.extend("  " + line for line in record.traceback.rstrip().splitlines())
    return "\n".join(lines)


@click.command()
@config_option
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: id, name, queue, status, result, error, attempts, enqueued_at, started_at, "
                   "finished_at (and traceback, worker_host, worker_pid, arguments).")
def status(config: str | None, job_id: str, as_json: bool) -> None:
    """Show the status row of tracked job JOB_ID (exit 1 if it has none).

    An untracked job that was cancelled has no row: it shows as CANCELLED
    with the time of its cancellation, and a note that this holds only if it
    was sent cancellable and had not started.
    """
    url = _database_url(config)
    record = get_store(url).get(job_id)
    if record is None:
        cancelled_at = Cancellations.for_url(url).cancelled_at(job_id)
        if cancelled_at is not None:
            data = {"id": job_id, "status": "CANCELLED", "cancelled_at": cancelled_at.isoformat(), "tracked": False,
                    "note": UNTRACKED_CANCEL_NOTE}
            click.echo(json.dumps(data, indent=2) if as_json else "\n".join(
                f"{key + ':':<13} {value}" for key, value in data.items()))
            return
        raise JobNotFoundError(f"no status row for job {job_id} (not tracked, unknown, or pruned)")
    click.echo(json.dumps(record.to_json(), indent=2) if as_json else _text(record))


@click.command()
@config_option
def initdb(config: str | None) -> None:
    """Create the tables sqjobs uses in [sqjobs] database where they are missing (safe to run again).

    The status rows, the beaters' claims, held jobs, unique keys and
    cancellations: each is also made on first use, but a deployment whose
    processes may not create tables makes them here, once.
    """
    from ..middleware.unique import UNIQUE_TABLE, UniqueKeys
    from ..schedule.beater import BEATS_TABLE, BeatStore
    from ..schedule.later import HELD_TABLE, HeldJobs

    url = _database_url(config)
    get_store(url).create_tables()
    BeatStore(url).create_tables()
    for rows in (HeldJobs.for_url(url), UniqueKeys.for_url(url), Cancellations.for_url(url)):
        rows.ready()
    tables = ", ".join((STATUS_TABLE, BEATS_TABLE, HELD_TABLE, UNIQUE_TABLE, CANCELLED_TABLE))
    click.echo(f"tables {tables} ready in {safe_url(url)}")


@click.command()
@config_option
@click.option("--older-than", "older_than_s", type=DurationType(), required=True,
              help=f"Age of finished rows to delete, {DURATION_FORMS}.")
@click.option("--dry-run", is_flag=True, help="Print how many rows would go; delete nothing.")
def prune(config: str | None, older_than_s: float, dry_run: bool) -> None:
    """Delete finished rows (SUCCESS, FAILURE, DEAD, CANCELLED) that finished longer ago than --older-than.

    Cancellations recorded before then go too.
    """
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_s)
    url = _database_url(config)
    store = get_store(url)
    before = cutoff.isoformat(timespec="seconds")
    if dry_run:
        click.echo(f"would prune {store.count_prunable(cutoff)} finished row(s) that finished before {before}")
        return
    click.echo(f"pruned {store.prune(cutoff)} finished row(s) that finished before {before}")
    cancelled = Cancellations.for_url(url).prune(cutoff)
    if cancelled:
        click.echo(f"pruned {cancelled} cancellation(s) recorded before {before}")
