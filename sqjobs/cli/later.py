"""``sqjobs cancel`` and ``sqjobs unique``: cancellations and unique keys from the command line.

They read only ``[sqjobs] database`` of the config file; no job module is
imported.
"""

from __future__ import annotations

import json
import sys

import click

from ..app import cancel as cancel_job
from ..app import current_app
from ..middleware.unique import UniqueKeys
from .common import config_option, configure_app

#: Exit status of ``sqjobs cancel`` for a cancellation recorded but not confirmed (a job without a status row).
UNCONFIRMED_EXIT = 3


@click.command()
@config_option
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: job_id, cancelled, recorded, status, message.")
def cancel(config: str | None, job_id: str, as_json: bool) -> None:
    """Cancel job JOB_ID if it has not started.

    Exit 0: cancelled. Exit 1: it is running or finished, or unknown (no
    status row, not held, and no message on a broker that can look: the
    embedded one), nothing changed and nothing recorded. Exit 3: it has no
    status row and the broker cannot tell (SQS) or a worker holds its
    message, so the cancellation is recorded but not confirmed: it takes
    effect only if the job was sent cancellable (``--cancellable``,
    ``@job(cancellable=True)``) and has not started.
    """
    configure_app(config, import_jobs=False)
    outcome = cancel_job(job_id, current_app())
    if as_json:
        click.echo(json.dumps({"job_id": outcome.job_id, "cancelled": outcome.cancelled,
                               "recorded": outcome.recorded,
                               "status": outcome.status.value if outcome.status else None,
                               "message": outcome.message}, indent=2))
    else:
        click.echo(outcome.message)
    sys.exit(0 if outcome.cancelled else UNCONFIRMED_EXIT if outcome.recorded else 1)



@click.command()
@config_option
@click.argument("key")
@click.option("--free", is_flag=True, help="Free the key (its job's message was removed by hand).")
def unique(config: str | None, key: str, free: bool) -> None:
    """Show which job holds unique KEY (exit 1 if none), or free it with --free."""
    settings = configure_app(config, import_jobs=False)
    keys = UniqueKeys.for_url(settings.database_url)
    if free:
        click.echo(f"unique key {key!r} freed" if keys.free(key) else f"unique key {key!r} was not taken")
        return
    holder = keys.holder(key)
    if holder is None:
        click.echo(f"unique key {key!r} is free")
        sys.exit(1)
    click.echo(f"unique key {key!r} is held by job {holder[0]} since {holder[1].isoformat()}Z")
