"""``sqjobs beater`` and ``sqjobs schedule``: periodic jobs from the command line."""

from __future__ import annotations

import sys

import click

from .job import registry
from .schedule import Schedule


def register_beat_commands(main: click.Group) -> None:
    """Add ``beater`` and ``schedule`` to the ``sqjobs`` command group."""
    from .cli import _setup, config_option, require_jobs

    @main.command()
    @config_option
    @click.option("--once", is_flag=True, help="Send what is due now, then exit.")
    @click.option("-i", "--import", "import_modules", multiple=True,
                  help="Also import this job module (from the current directory too); repeatable.")
    def beater(config: str | None, once: bool, import_modules: tuple[str, ...]) -> None:
        """Send periodic jobs when they are due (any number of beaters may run)."""
        from .beater import Beater, BeatStore

        settings, broker = _setup(config, extra_modules=import_modules)
        require_jobs(settings, "beater", import_modules)
        store = BeatStore(settings.database_url)
        store.create_tables()
        runner = Beater.for_registry(broker, registry, store)
        runner.install_signal_handlers()
        sys.exit(runner.run(once=once))

    @main.command()
    @config_option
    @click.argument("name")
    @click.option("--next", "count", type=click.IntRange(1, 1000), default=5, help="How many fire times.")
    def schedule(config: str | None, name: str, count: int) -> None:
        """Print the next fire times of periodic job NAME, ISO 8601 in its time zone, one a line."""
        from datetime import datetime, timezone

        _setup(config)
        job_class = registry.get(name)
        if not job_class.schedule:
            raise click.ClickException(f"job {name} has no schedule")
        plan = Schedule(job_class.schedule, job_class.timezone)
        for instant in plan.next_after(datetime.now(timezone.utc), count):
            click.echo(instant.astimezone(plan.zone).isoformat())
