"""What every ``sqjobs`` command shares: the config option, reading the config and the job modules,
the one-line errors and their exit codes, and the log format (sqjobsd and Django's ``manage.py sqjobs``
use them too)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from typing import Any

import click

from .. import logs
from ..app import add_import_path, current_app
from ..brokers import Broker
from ..config import Settings
from ..errors import NoJobsError, SQJobsError, StatusStorePermanentError, UnknownJobError
from ..message import check_arguments, loads_strict
from ..registry import registry
from ..settings import default, schema_section
from ..status.store import check_database

logger = logging.getLogger("sqjobs.cli")



def configure_app(config: str | None, import_jobs: bool = True, extra_modules: tuple[str, ...] = ()) -> Settings:
    """Configure the default app from the config and import the job modules; create no broker."""
    settings = current_app().configure(config)
    logs.apply_setting(settings.get("sqjobs", "log_level"))
    if extra_modules:
        add_import_path(os.getcwd())
    if import_jobs:
        named_by = f"{settings.source or 'configuration'}: [sqjobs] jobs"
        sources = [(module, named_by) for module in settings.job_modules]
        sources += [(module, "--import") for module in extra_modules]
        for module, origin in sources:
            try:
                importlib.import_module(module)
            except Exception as exc:  # whatever a job module raises, one line says which and why
                logger.debug("import of job module %s failed", module, exc_info=True)
                raise click.ClickException(_import_failure(origin, module, exc)) from None
    return settings


def _import_failure(origin: str, module: str, exc: Exception) -> str:
    """One line on a job module that could not be imported: what named it (``origin``), the module, where and why."""
    prefix = f"{origin}: cannot import {module!r}"
    if isinstance(exc, ImportError):
        return f"{prefix}: {exc}"
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({os.path.normpath(exc.filename)}, line {exc.lineno})"
    else:
        frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.name == "<module>"]
        if frames:
            where = f" ({os.path.normpath(frames[-1].filename)}, line {frames[-1].lineno})"
    text = " ".join(str(exc).split()) if not isinstance(exc, SyntaxError) else exc.msg
    return f"{prefix}{where}: {type(exc).__name__}: {text} (sqjobs -v shows the traceback)"


def setup_app(config: str | None, import_jobs: bool = True,
           extra_modules: tuple[str, ...] = ()) -> tuple[Settings, Broker]:
    settings = configure_app(config, import_jobs, extra_modules)
    return settings, current_app().broker


def require_jobs(settings: Settings, command: str, extra_modules: tuple[str, ...] = ()) -> None:
    """Raise NoJobsError when no job is registered: a worker or beater would only refuse every message."""
    if registry.names():
        return
    modules = (*settings.job_modules, *extra_modules)
    if modules:
        why = f"the job modules {', '.join(modules)} define no job"
    elif settings.source:
        why = f"{settings.source} has no [sqjobs] jobs"
    else:
        why = "no config file (-c or SQJOBS_CONFIG) and no --import"
    raise NoJobsError(f"no job is registered ({why}): list your job modules in [sqjobs] jobs of the config file, "
                      f"or pass --import MODULE to `sqjobs {command}`")


#: The flag of ``sqjobs enqueue`` that sends a name no job module here registers.
FOREIGN_FLAG = "--foreign"
#: Most registered names an error lists when none is spelt like the name asked for.
_MOST_NAMES_LISTED = 10


def check_job_name(settings: Settings, name: str) -> None:
    """Raise UnknownJobError when job modules are configured and none registers ``name``.

    The one line names the closest registered names ("did you mean") and the
    flag that sends the name anyway. With no job modules (nothing imported,
    nothing registered) any name passes: there is nothing to compare with.
    """
    modules = settings.job_modules
    known = registry.names()
    if name in registry or not (modules or known):
        return
    where = f"by the job modules {', '.join(modules)}" if modules else "here"
    close = registry.close_names(name)
    if close:
        hint = f"did you mean {' or '.join(repr(other) for other in close)}?"
    elif known:
        more = f" and {len(known) - _MOST_NAMES_LISTED} more" if len(known) > _MOST_NAMES_LISTED else ""
        hint = f"registered: {', '.join(known[:_MOST_NAMES_LISTED])}{more}"
    else:
        hint = "they register no job"
    raise UnknownJobError(f"no job is registered as {name!r} {where}; {hint} "
                          f"({FOREIGN_FLAG} sends a name that only another service defines)")


def known_queues(settings: Settings) -> set[str] | None:
    """The queues something here routes to or consumes: registered jobs' queues and ``[worker:NAME] queues``.

    Without ``[worker:NAME]`` sections, a worker started with no group
    consumes the default group's queues, which count instead. Returns None
    when neither job modules nor worker sections are configured (nothing to
    compare with).
    """
    has_groups = any(schema_section(section) == "worker" for section in settings.sections)
    if not (has_groups or settings.job_modules or registry.names()):
        return None
    groups = settings.workers if has_groups else ()
    consumed = [queue for group in groups for queue in group.queues] or list(default("worker", "queues"))
    return registry.queues() | set(consumed)


def warn_unknown_queues(settings: Settings, queues: tuple[str, ...], doing: str) -> None:
    """Log one WARNING line when some of ``queues`` no registered job routes to and no worker group names.

    A typo (``emials``) would otherwise make a queue nobody reads from, or a
    worker that waits on one nobody sends to. ``doing`` says what happens
    anyway (``sending to``, ``consuming``): a warning, not an error.
    """
    known = known_queues(settings)
    if known is None:
        return
    unknown = [queue for queue in dict.fromkeys(queues) if queue not in known]
    if not unknown:
        return
    names = ", ".join(repr(queue) for queue in unknown)
    if len(unknown) == 1:
        logger.warning("queue %s: no registered job routes to it and no [worker:NAME] queues names it "
                       "(known queues: %s); %s it anyway", names, ", ".join(sorted(known)), doing)
    else:
        logger.warning("queues %s: no registered job routes to them and no [worker:NAME] queues names them "
                       "(known queues: %s); %s them anyway", names, ", ".join(sorted(known)), doing)


def check_status_database() -> None:
    """Open the status database once at start-up if a registered job is tracked (so it will be used).

    A permanent error (bad URL, credentials, missing database) ends the
    command with exit code 2 before anything is received; a transient one
    is logged and the command goes on (its writes are retried later).
    """
    app = current_app()
    if any(app.is_tracked(registry.get(name)) for name in registry.names()):
        check_database(app.settings.database_url)


def parse_json(option: str, text: str, kind: type) -> Any:
    """Read ``option``'s JSON text as arguments of ``kind`` (list or dict); raise a usage error naming it."""
    try:
        value: Any = loads_strict(text)
    except ValueError as exc:
        raise click.BadParameter(f"the value {exc}", param_hint=option) from None
    if not isinstance(value, kind):
        raise click.BadParameter(f"must be a JSON {'list' if kind is list else 'object'}", param_hint=option)
    arguments: Any = value  # a list or a dict, as checked above
    try:
        check_arguments([], arguments) if kind is dict else check_arguments(arguments, {})
    except TypeError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    return value


config_option = click.option("-c", "--config", "config", envvar="SQJOBS_CONFIG", default=None,
                             type=click.Path(dir_okay=False), help="Config file (default: $SQJOBS_CONFIG).")


def _config_file_of(error: SQJobsError) -> str:
    """Return ``"FILE: "`` for a setting's error when a config file was read, else ``""``."""
    settings = current_app().chosen_settings
    if isinstance(error, StatusStorePermanentError) and settings is not None and settings.source:
        return f"{settings.source}: "
    return ""


class SQJobsGroup(click.Group):
    """Turns SQJobsError into a one-line error and its exit code: 1, or 2 for what retrying cannot fix.

    A status database that cannot work as configured names the config
    file, when one was read, and ``[sqjobs] database``.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SQJobsError as exc:
            click.echo(f"Error: {_config_file_of(exc)}{exc}", err=True)
            sys.exit(exc.exit_code)
