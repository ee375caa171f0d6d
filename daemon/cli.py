"""The ``sqjobsd`` command: start, stop, status, restart and reload the supervised daemon.

Exit codes: 0 success; 1 an error (one line on stderr); 3 from ``status``
when the daemon is not running, or a process is not RUNNING, or a worker is
STALLED, STARVED or CRASHING (dying now, again and again: see
:mod:`sqjobsd.health`). Workers stopped and started by ``stop``, ``start``,
``restart`` or ``reload``, or killed once and running again, are not CRASHING.
"""

from __future__ import annotations

import logging
import sys

import click

from sqjobs import logs
from sqjobs.cli.common import SQJobsGroup, config_option
from sqjobs.config import load_settings
from sqjobs.errors import DaemonNotRunningError
from sqjobs.logs import LEVELS

from . import control
from .health import ProcessHealth, Watchdog, backlog_counter, describe
from .layout import layout_for

logger = logging.getLogger("sqjobs.daemon")

#: Exit code of ``status`` when something is not running (the LSB code for "not running").
NOT_RUNNING = 3

@click.group(cls=SQJobsGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v: DEBUG).")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=None,
              help="DEBUG, INFO (the default), WARNING or ERROR; [sqjobs] log_level in the config file.")
def main(verbose: int, log_level: str | None) -> None:
    """sqjobsd: the supervisor-managed daemon of sqjobs workers and beaters."""
    logs.setup("DEBUG" if verbose else (log_level.upper() if log_level else None))


def _print_health(health: list[ProcessHealth]) -> bool:
    for item in health:
        click.echo(describe(item))
    return all(item.healthy for item in health)


@main.command()
@config_option
@click.option("--foreground", is_flag=True, help="Keep supervisord in the foreground (systemd, containers).")
def start(config: str | None, foreground: bool) -> None:
    """Check that the job modules import, write the supervisord configuration and start every program."""
    settings = load_settings(config)
    result = control.start(settings, foreground=foreground)
    layout = layout_for(settings)
    if result.orphans:
        click.echo(f"sqjobsd: stopped {len(result.orphans)} process(es) left by a supervisord that died: "
                   f"{', '.join(map(str, result.orphans))}", err=True)
    click.echo(f"sqjobsd started for {layout.config} (logs in {layout.log_dir})")
    if not _print_health(result.health):
        click.echo(f"Error: some processes are not running; see {layout.log_dir}", err=True)
        sys.exit(1)


@main.command()
@config_option
def stop(config: str | None) -> None:
    """Stop every program gracefully (SIGTERM, then the stop timeout) and supervisord with them."""
    result = control.stop(load_settings(config))
    if result.was_running:
        click.echo("sqjobsd stopped")
    elif result.orphans:
        click.echo(f"sqjobsd was not running; stopped processes left by a supervisord that died: "
                   f"{', '.join(map(str, result.orphans))}")
    else:
        click.echo("sqjobsd was not running")
    if result.killed:
        click.echo(f"killed processes that ignored SIGTERM: {', '.join(map(str, result.killed))}")


@main.command()
@config_option
@click.option("--foreground", is_flag=True, help="Keep supervisord in the foreground (systemd, containers).")
@click.pass_context
def restart(ctx: click.Context, config: str | None, foreground: bool) -> None:
    """Stop, then start; when a job module cannot be imported, refuse and leave the daemon as it is."""
    control.resolve(load_settings(config), "the daemon was left as it was")
    ctx.invoke(stop, config=config)
    ctx.invoke(start, config=config, foreground=foreground)


@main.command()
@config_option
def reload(config: str | None) -> None:
    """Apply config changes: start added programs, restart changed ones, stop removed ones.

    Refused, with nothing changed, when a job module cannot be imported.
    """
    result = control.reload(load_settings(config))
    for word, names in (("added", result.added), ("changed", result.changed), ("removed", result.removed)):
        if names:
            click.echo(f"{word}: {', '.join(names)}")
    if not (result.added or result.changed or result.removed):
        click.echo("no change")


@main.command()
@config_option
def status(config: str | None) -> None:
    """One line per process; exit 0 when all run, 3 otherwise (also when the daemon is not running)."""
    try:
        health = control.status(load_settings(config))
    except DaemonNotRunningError as exc:
        click.echo(str(exc))
        sys.exit(NOT_RUNNING)
    if not _print_health(health):
        sys.exit(NOT_RUNNING)


@main.command(hidden=True)
@config_option
@click.option("--stall-timeout", type=click.FloatRange(min=0.1), required=True,
              help="Seconds without a poll after which a worker is stalled.")
@click.option("--interval", type=click.FloatRange(min=0.1), required=True, help="Seconds between checks.")
@click.option("--grace", type=click.FloatRange(min=0), required=True, help="Seconds between SIGTERM and SIGKILL.")
def watchdog(config: str | None, stall_timeout: float, interval: float, grace: float) -> None:
    """Restart stalled and starved workers (supervisord runs this itself)."""
    settings = load_settings(config)
    sys.exit(Watchdog(layout_for(settings), stall_timeout, interval, grace, backlog_counter(settings)).run())


if __name__ == "__main__":  # pragma: no cover
    main()
