"""``manage.py sqjobs SUBCOMMAND ...``: the ``sqjobs`` command, with Django's settings and every app's jobs.

Every subcommand of ``sqjobs`` (worker, beater, enqueue, queues, dead,
status, schedule, prune, initdb) takes the same options, since the
arguments go unchanged to the same click group (:mod:`sqjobs.cli`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sqjobs.cli.commands import main

#: Django's own options ``manage.py`` reads anywhere on the line; they are not passed to sqjobs.
DJANGO_OPTIONS = ("--settings", "--pythonpath")


def without_django_options(args: list[str]) -> list[str]:
    """``args`` without ``--settings X``/``--settings=X`` and ``--pythonpath`` (manage.py already used them)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in DJANGO_OPTIONS)):
            kept.append(arg)
    return kept


class Command(BaseCommand):
    """Runs ``sqjobs`` with the arguments given."""

    help = ("Run an sqjobs command with Django's settings: worker QUEUE... [--burst], beater [--once], "
            "enqueue, queues [--json], dead, status, schedule, prune. 'manage.py sqjobs --help' lists them.")

    def add_arguments(self, parser: CommandParser) -> None:
        """One argument: everything after ``sqjobs``, read by sqjobs' own command line."""
        parser.add_argument("sqjobs_args", nargs=argparse.REMAINDER, metavar="SUBCOMMAND [ARGUMENTS]")

    def run_from_argv(self, argv: list[str]) -> None:
        """From ``manage.py``: hand the rest of the line to sqjobs, which exits with its own code."""
        prog_name = f"{os.path.basename(argv[0])} {argv[1]}"
        main.main(args=without_django_options(argv[2:]), prog_name=prog_name)

    def handle(self, *args: Any, **options: Any) -> None:
        """From ``call_command("sqjobs", "queues", "--json")``: run sqjobs without leaving the process."""
        try:
            main.main(args=list(options["sqjobs_args"]), prog_name="manage.py sqjobs", standalone_mode=False)
        except click.ClickException as exc:
            raise CommandError(exc.format_message()) from None
