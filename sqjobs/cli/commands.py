"""The ``sqjobs`` command: worker, enqueue, queues, dead."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from .. import defaults, logs
from ..app import current_app
from ..brokers.base import (
    ORIGIN_ATTRIBUTE,
    REASON_ATTRIBUTE,
    Broker,
    dead_letter_name,
    is_dead_letter_name,
)
from ..brokers.sqs_limits import check_queue_name
from ..config import WorkerGroup
from ..errors import UnknownQueueError
from ..logs import LEVELS
from ..message import glimpse
from ..middleware.unique import requeue_dead
from ..registry import registry
from ..schedule.later import queue_counts
from ..worker.healthfile import record_start
from ..worker.loop import Worker
from .beat import InstantType, beater, schedule
from .common import (
    FOREIGN_FLAG,
    SQJobsGroup,
    check_job_name,
    check_status_database,
    config_option,
    configure_app,
    parse_json,
    require_jobs,
    setup_app,
    warn_unknown_queues,
)
from .later import cancel, unique
from .status import initdb, prune, status
from .web import dashboard, metrics

__all__ = ["SQJobsGroup", "config_option", "main"]


@click.group(cls=SQJobsGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v: DEBUG).")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=None,
              help="DEBUG, INFO (the default), WARNING or ERROR; [sqjobs] log_level in the config file.")
def main(verbose: int, log_level: str | None) -> None:
    """sqjobs: Simple Queue Jobs."""
    logs.setup("DEBUG" if verbose else (log_level.upper() if log_level else None))


@main.command()
@config_option
@click.argument("queues", nargs=-1)
@click.option("--group", "group_name", default=None, help="Take options from [worker:GROUP].")
@click.option("--burst", is_flag=True,
              help="Exit 0 once the queues are empty and nothing delayed is due within a few seconds.")
@click.option("--max-jobs", type=click.IntRange(min=0), default=None,
              help="Exit 0 after N attempts (a retry counts again).")
@click.option("--prefetch", type=click.IntRange(1, 10), default=None, help="Messages received at once.")
@click.option("--visibility-timeout", type=click.FloatRange(min=0.1), default=None,
              help="Seconds a received message stays hidden (kept up by the heartbeat).")
@click.option("--status-file", default=None, help="File to write the last poll and job to.")
@click.option("-i", "--import", "import_modules", multiple=True,
              help="Also import this job module (from the current directory too); repeatable.")
@click.option("--isolation", type=click.Choice(["process", "none"]), default=None,
              help="Run jobs in a supervised job process (the default), or in the worker itself (for pdb).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Jobs run at once: threads for plain jobs, one event loop for async ones.")
@click.option("--hold", "hold_s", type=click.FloatRange(min=0), default=None,
              help="Seconds a received message may wait behind running jobs before it is handed back (0: never).")
@click.option("--metrics-dir", default=None, help="Record metrics in this folder (default: [metrics] dir, if set).")
def worker(config: str | None, queues: tuple[str, ...], group_name: str | None, burst: bool,
           max_jobs: int | None, prefetch: int | None, visibility_timeout: float | None,
           status_file: str | None, import_modules: tuple[str, ...], isolation: str | None,
           threads: int | None, hold_s: float | None, metrics_dir: str | None) -> None:
    """Consume QUEUES (default: the group's queues) and run their jobs.

    A queue no registered job routes to and no [worker:NAME] queues names
    is consumed all the same, after a warning (a typo?).
    """
    for queue in queues:
        check_queue_name(queue)
    if status_file:
        record_start(status_file)  # before the job modules: a worker that fails to import them counts as dying
    settings = configure_app(config, extra_modules=import_modules)
    if metrics_dir:
        current_app().record_metrics(metrics_dir)
    require_jobs(settings, "worker", import_modules)
    warn_unknown_queues(settings, queues, "consuming")
    check_status_database()
    group = settings.worker_group(group_name) if group_name else (
        settings.workers[0] if settings.workers else WorkerGroup("default"))
    try:
        consumer = Worker.for_group(current_app(), group, queues, prefetch=prefetch,
                                    visibility_timeout_s=visibility_timeout, max_jobs=max_jobs, burst=burst,
                                    status_file=status_file, isolation=isolation, threads=threads, hold_s=hold_s)
    except ValueError as exc:  # options that do not go together, e.g. --threads 4 with --isolation none
        raise click.UsageError(str(exc)) from None
    consumer.install_signal_handlers()
    sys.exit(consumer.run())


@main.command()
@config_option
@click.argument("name")
@click.option("--args", "args_json", default="[]", help="JSON list of positional arguments.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword arguments.")
@click.option("--queue", default=None, help="Queue (default: the job's, or 'default' if unknown here).")
@click.option("--delay", type=click.FloatRange(min=0), default=0.0, help="Seconds before it may run.")
@click.option("--eta", type=InstantType(), default=None,
              help="When it may run: ISO 8601 with a UTC offset, e.g. 2027-03-27T12:00:00+01:00 (or ...Z).")
@click.option("--unique-key", default=None,
              help="Send nothing if a job with this key waits or runs; print that job's id instead.")
@click.option("--cancellable", is_flag=True,
              help="Mark the message cancellable: a worker checks `sqjobs cancel` for it even if it is untracked.")
@click.option(FOREIGN_FLAG, "foreign", is_flag=True,
              help="Send NAME even though no job module here registers it (a job of another service).")
def enqueue(config: str | None, name: str, args_json: str, kwargs_json: str, queue: str | None,
            delay: float, eta: datetime | None, unique_key: str | None, cancellable: bool, foreign: bool) -> None:
    """Send job NAME and print its id.

    With job modules configured ([sqjobs] jobs), a NAME they do not
    register is refused with the closest registered names, unless
    --foreign is given; without job modules, any NAME is sent (a job this
    machine cannot import). A queue no registered job routes to and no
    [worker:NAME] queues names gets a warning.
    """
    if delay and eta is not None:
        raise click.UsageError("--delay and --eta exclude each other")
    if queue is not None:
        check_queue_name(queue)
    args = parse_json("--args", args_json, list)
    kwargs = parse_json("--kwargs", kwargs_json, dict)
    settings = configure_app(config)
    if not foreign:
        check_job_name(settings, name)
    job_class = registry.find(name)
    warn_unknown_queues(settings, (queue or (job_class.queue if job_class else defaults.QUEUE),), "sending to")
    handle = current_app().producer.send(job_class, args, kwargs, name=name, queue=queue, delay_s=delay,
                                         eta=eta, unique_key=unique_key, cancellable=cancellable)
    click.echo(handle.id)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def queues(config: str | None, as_json: bool) -> None:
    """Show each queue: visible, in flight, delayed (held in the database too) and dead messages."""
    settings, broker = setup_app(config, import_jobs=False)
    rows = queue_counts(broker, settings.database_url)
    if as_json:
        click.echo(json.dumps([row.__dict__ for row in rows], indent=2))
        return
    click.echo(f"{'queue':<30} {'visible':>8} {'in_flight':>9} {'delayed':>8} {'dead':>6}")
    for row in rows:
        click.echo(f"{row.queue:<30} {row.visible:>8} {row.in_flight:>9} {row.delayed:>8} {row.dead:>6}")


def _describe_dead(body: str, message_id: str) -> dict[str, Any]:
    """A dead letter's job: id, name and arguments; of a malformed body, what can be read and why it is malformed."""
    seen = glimpse(body, message_id)
    if seen.message is not None:
        return {"job_id": seen.id, "name": seen.name, "args": seen.message.args, "kwargs": seen.message.kwargs}
    return {"job_id": seen.id, "name": seen.name, "malformed": seen.problem, "body": body[:200]}


def _dead_line(row: dict[str, Any]) -> str:
    """``JOB_ID  NAME  REASON  (message MID)``: the job id first, as a person searches by it."""
    message = f"  (message {row['message_id']})" if row["message_id"] != row["job_id"] else ""
    return f"{row['job_id'] or '?'}  {row['name'] or '?'}  {' '.join(str(row['reason']).split())}{message}"


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
@click.option("--requeue", is_flag=True, help="Move every dead message back to QUEUE; a unique job takes its key "
              "again, and stays dead if another job holds it.")
@click.option("--force", is_flag=True, help="With --requeue: send a unique job even while another job holds its key "
              "(both then run, side by side).")
@click.option("--purge", is_flag=True, help="Delete every dead message.")
@click.option("--limit", type=click.IntRange(min=1), default=100, help="Most messages listed.")
def dead(config: str | None, queue: str, as_json: bool, requeue: bool, force: bool, purge: bool, limit: int) -> None:
    """List the dead-letter queue of QUEUE with reasons; or requeue or purge it.

    A QUEUE the broker has never seen is an error naming the known queues.
    """
    if requeue and purge:
        raise click.UsageError("--requeue and --purge exclude each other")
    if force and not requeue:
        raise click.UsageError("--force goes with --requeue")
    check_queue_name(queue)
    settings, broker = setup_app(config, import_jobs=False)
    _check_known_queue(broker, queue)
    dead_queue = dead_letter_name(queue)
    if purge:
        count = broker.stats(queue).dead
        broker.purge(dead_queue)
        click.echo(f"purged {count} message(s) from {dead_queue}")
        return
    if requeue:
        done = requeue_dead(broker, settings.database_url, queue, force=force)
        for line in done.held:
            click.echo(f"{line} (--force sends it anyway)")
        for line in done.forced:
            click.echo(line)
        kept = f"; {done.unreadable} unreadable message(s) left in {dead_queue}" if done.unreadable else ""
        held = f"; {len(done.held)} left for their unique keys" if done.held else ""
        click.echo(f"requeued {done.moved} message(s) from {dead_queue} to {queue}{kept}{held}")
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
        click.echo(_dead_line(row))


for _command in (beater, schedule, status, initdb, prune, cancel, unique, metrics, dashboard):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
