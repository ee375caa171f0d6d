"""The ``sqjobs`` command: worker, enqueue, queues, dead."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
from typing import Any

import click

from . import defaults, runtime
from .brokers.base import ORIGIN_ATTRIBUTE, REASON_ATTRIBUTE, Broker, dead_letter_name, is_dead_letter_name
from .config import Settings
from .errors import NoJobsError, SQJobsError, StatusStorePermanentError, UnknownQueueError
from .job import registry
from .message import UNDECODABLE_PREFIX, MalformedMessageError, check_arguments, decode, loads_strict

logger = logging.getLogger("sqjobs.cli")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def _configure(config: str | None, import_jobs: bool = True, extra_modules: tuple[str, ...] = ()) -> Settings:
    """Read the config and import the job modules; create no broker."""
    settings = runtime.configure(config)
    if extra_modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if import_jobs:
        for module in (*settings.job_modules, *extra_modules):
            try:
                importlib.import_module(module)
            except Exception as exc:  # whatever a job module raises, one line says which and why
                logger.debug("import of job module %s failed", module, exc_info=True)
                raise click.ClickException(_import_failure(settings, module, exc)) from None
    return settings


def _import_failure(settings: Settings, module: str, exc: Exception) -> str:
    """One line on a job module that could not be imported: the config, the module, where and why."""
    prefix = f"{settings.source or 'configuration'}: [sqjobs] jobs: cannot import {module!r}"
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


def _setup(config: str | None, import_jobs: bool = True,
           extra_modules: tuple[str, ...] = ()) -> tuple[Settings, Broker]:
    settings = _configure(config, import_jobs, extra_modules)
    return settings, runtime.get_broker()


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


def _check_status_database() -> None:
    """Open the status database once at start-up if a registered job is tracked (so it will be used).

    A permanent error (bad URL, credentials, missing database) ends the
    command with exit code 2 before anything is received; a transient one
    is logged and the command goes on (its writes are retried later).
    """
    from .status import is_tracked
    from .store import check_database

    if any(is_tracked(registry.get(name)) for name in registry.names()):
        check_database()


def _parse_json(option: str, text: str, kind: type) -> Any:
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
    settings = runtime.chosen_settings()
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


@click.group(cls=SQJobsGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v debug).")
def main(verbose: int) -> None:
    """sqjobs: Simple Queue Jobs."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)


@main.command()
@config_option
@click.argument("queues", nargs=-1)
@click.option("--group", "group_name", default=None, help="Take options from [worker:GROUP].")
@click.option("--burst", is_flag=True, help="Exit 0 once the queues are empty.")
@click.option("--max-jobs", type=click.IntRange(min=0), default=None, help="Exit 0 after N jobs.")
@click.option("--prefetch", type=click.IntRange(1, 10), default=None, help="Messages received at once.")
@click.option("--visibility-timeout", type=click.FloatRange(min=0.1), default=None,
              help="Seconds a received message stays hidden (kept up by the heartbeat).")
@click.option("--status-file", default=None, help="File to write the last poll and job to.")
@click.option("-i", "--import", "import_modules", multiple=True,
              help="Also import this job module (from the current directory too); repeatable.")
@click.option("--isolation", type=click.Choice(["process", "none"]), default=None,
              help="Run jobs in a supervised job process (the default), or in the worker itself (for pdb).")
def worker(config: str | None, queues: tuple[str, ...], group_name: str | None, burst: bool,
           max_jobs: int | None, prefetch: int | None, visibility_timeout: float | None,
           status_file: str | None, import_modules: tuple[str, ...], isolation: str | None) -> None:
    """Consume QUEUES (default: the group's queues) and run their jobs."""
    from .worker import Worker

    settings, broker = _setup(config, extra_modules=import_modules)
    require_jobs(settings, "worker", import_modules)
    _check_status_database()
    group = settings.worker_group(group_name) if group_name else (
        settings.workers[0] if settings.workers else None)
    chosen = list(queues) or list(group.queues if group else ("default",))
    consumer = Worker(
        broker,
        chosen,
        prefetch=prefetch or (group.prefetch if group else 10),
        visibility_timeout_s=visibility_timeout or (group.visibility_timeout_s if group else 60.0),
        max_jobs=max_jobs if max_jobs is not None else (group.max_jobs if group else 0),
        burst=burst,
        status_file=status_file,
        unknown_job_refusals=group.unknown_job_refusals if group else defaults.UNKNOWN_JOB_REFUSALS,
        crash_allowance=group.crash_allowance if group else defaults.CRASH_ALLOWANCE,
        isolation=isolation or (group.isolation if group else defaults.ISOLATION),
    )
    consumer.install_signal_handlers()
    sys.exit(consumer.run())


@main.command()
@config_option
@click.argument("name")
@click.option("--args", "args_json", default="[]", help="JSON list of positional arguments.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword arguments.")
@click.option("--queue", default=None, help="Queue (default: the job's, or 'default' if unknown here).")
@click.option("--delay", type=click.FloatRange(min=0), default=0.0, help="Seconds before it may run.")
def enqueue(config: str | None, name: str, args_json: str, kwargs_json: str, queue: str | None,
            delay: float) -> None:
    """Send job NAME and print its id. NAME need not be importable here."""
    from .job import Job
    from .message import JobMessage, encode

    args = _parse_json("--args", args_json, list)
    kwargs = _parse_json("--kwargs", kwargs_json, dict)
    settings, broker = _setup(config)
    if name in registry:
        handle = registry.get(name).apply_async(args=args, kwargs=kwargs, queue=queue, delay=delay)
        click.echo(handle.id)
        return
    target = queue or Job.queue
    message = JobMessage(name=name, args=args, kwargs=kwargs)
    body = encode(message)
    broker.check_body(body)
    broker.check_delay(delay)
    fifo = target.endswith(".fifo")
    broker.send(target, body, delay, None, name if fifo else None, message.id if fifo else None)
    click.echo(message.id)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def queues(config: str | None, as_json: bool) -> None:
    """Show each queue: visible, in flight, delayed and dead messages."""
    settings, broker = _setup(config, import_jobs=False)
    rows = [broker.stats(name) for name in broker.queues()]
    if as_json:
        click.echo(json.dumps([row.__dict__ for row in rows], indent=2))
        return
    click.echo(f"{'queue':<30} {'visible':>8} {'in_flight':>9} {'delayed':>8} {'dead':>6}")
    for row in rows:
        click.echo(f"{row.queue:<30} {row.visible:>8} {row.in_flight:>9} {row.delayed:>8} {row.dead:>6}")


def _describe_dead(body: str, message_id: str) -> dict[str, Any]:
    try:
        decoded = decode(body, message_id)
        return {"job_id": decoded.id, "name": decoded.name, "args": decoded.args, "kwargs": decoded.kwargs}
    except MalformedMessageError:
        return {"job_id": None, "name": None, "body": body[:200]}


def _check_known_queue(broker: Broker, queue: str) -> None:
    """Raise UnknownQueueError unless the broker has seen ``queue``; never create it."""
    known = broker.queues()
    if queue in known:
        return
    if is_dead_letter_name(queue):
        fifo = queue.endswith(".fifo")
        base = queue[: -len(".fifo")] if fifo else queue
        base = base[: -len(defaults.DEAD_SUFFIX)] + (".fifo" if fifo else "")
        if base in known:
            raise UnknownQueueError(f"{queue} is the dead-letter queue of {base}: name the queue itself, "
                                    f"as in 'sqjobs dead {base}'")
    if known:
        raise UnknownQueueError(f"the broker has no queue {queue!r}; known queues: {', '.join(known)}")
    raise UnknownQueueError(f"the broker has no queue {queue!r}, nor any other yet (a queue appears when the "
                            "first job is sent to it); check -c or $SQJOBS_CONFIG")


@main.command()
@config_option
@click.argument("queue")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--requeue", is_flag=True, help="Move every dead message back to QUEUE.")
@click.option("--purge", is_flag=True, help="Delete every dead message.")
@click.option("--limit", type=click.IntRange(min=1), default=100, help="Most messages listed.")
def dead(config: str | None, queue: str, as_json: bool, requeue: bool, purge: bool, limit: int) -> None:
    """List the dead-letter queue of QUEUE with reasons; or requeue or purge it.

    A QUEUE the broker has never seen is an error naming the known queues.
    """
    if requeue and purge:
        raise click.UsageError("--requeue and --purge exclude each other")
    settings, broker = _setup(config, import_jobs=False)
    _check_known_queue(broker, queue)
    dead_queue = dead_letter_name(queue)
    if purge:
        count = broker.stats(queue).dead
        broker.purge(dead_queue)
        click.echo(f"purged {count} message(s) from {dead_queue}")
        return
    if requeue:
        moved, unreadable = 0, []
        while True:
            batch = broker.receive(dead_queue, 10, 0, 30)
            if not batch:
                break
            for message in batch:
                if message.body.startswith(UNDECODABLE_PREFIX):  # its stored bytes stay where they are
                    unreadable.append(message.receipt)
                    continue
                fifo = queue.endswith(".fifo")
                broker.send(queue, message.body, 0, None, (message.group_id or "requeued") if fifo else None,
                            None)
                broker.delete(dead_queue, message.receipt)
                moved += 1
        if unreadable:
            broker.change_visibility_batch(dead_queue, unreadable, 0)
        left = f"; {len(unreadable)} unreadable message(s) left in {dead_queue}" if unreadable else ""
        click.echo(f"requeued {moved} message(s) from {dead_queue} to {queue}{left}")
        return
    rows = []
    for message in broker.peek(dead_queue, limit):
        row = {"message_id": message.message_id, "reason": message.attributes.get(REASON_ATTRIBUTE, ""),
               "origin": message.attributes.get(ORIGIN_ATTRIBUTE, queue)}
        row.update(_describe_dead(message.body, message.message_id))
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"{dead_queue} is empty")
    for row in rows:
        click.echo(f"{row['message_id']}  {row['name'] or '?'}  {' '.join(str(row['reason']).split())}")


from .cli_status import register_status_commands  # noqa: E402  (status, initdb, prune)

register_status_commands(main)

from .cli_beat import register_beat_commands  # noqa: E402  (beater, schedule)

register_beat_commands(main)


if __name__ == "__main__":  # pragma: no cover
    main()
