"""Log lines a person can follow: the format, the job id on every line a job logs, and their cost.

Every line of a worker says when, how bad, which logger and which process;
a line logged while a job runs (by sqjobs or by the job itself) also says
which job, so ``grep JOB_ID`` tells one job's story::

    2026-11-28 10:00:00,123 INFO app.mail[4242] job 9f1c...: sent to 42

A worker logs one INFO line per finished attempt (id, name, queue, attempt,
duration; the "started" line is DEBUG); the worker itself writes the line
of an attempt that succeeded, once its job process's settlement reached it.
Lines cost little: the caller's file and line, and thread names, are not
looked up (the format shows none), and the per-attempt line goes straight
to sqjobs' own handler while logging is as sqjobs set it up
(:func:`info_line`).
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from contextlib import contextmanager
from typing import Any, Iterator


def log_line(time_text: str, level: str, logger_name: str, pid: object, job: str, message: str) -> str:
    """The one place a line's parts are put together: LOG_FORMAT, :class:`Formatter` and :func:`info_line`.

    ``job`` is :func:`job_text` of the job's id ("" on a line of no job).
    """
    return f"{time_text} {level} {logger_name}[{pid}]{job}: {message}"


def job_text(job_id: str | None) -> str:
    """What a line says of the job ``job_id`` (None or "": no job, nothing said)."""
    return f" job {job_id}" if job_id else ""


#: The format of every sqjobs command's log lines, as ``logging`` spells it (made by :func:`log_line`).
LOG_FORMAT = log_line("%(asctime)s", "%(levelname)s", "%(name)s", "%(process)d", "%(sqjobs_job)s", "%(message)s")
#: Levels ``--log-level`` and ``[sqjobs] log_level`` take.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: The id of the job the current thread (or task) runs.
current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("sqjobs_current_job", default=None)


class Formatter(logging.Formatter):
    """LOG_FORMAT, for records with or without the job id (sqjobsd writes lines of its own in worker logs)."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    _second = -1
    _second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """``2026-11-28 10:00:00,123``; the text of the second is made once per second, not once per line."""
        return self.time_text(record.created, record.msecs)

    def time_text(self, created: float, msecs: float) -> str:
        """The time of a line created at ``created`` (seconds, ``msecs`` its milliseconds) as LOG_FORMAT shows it."""
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created))
            self._second = second
        return f"{self._second_text},{int(msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        """The line for ``record``: LOG_FORMAT filled in directly (a line per job: the cost counts)."""
        job = getattr(record, "sqjobs_job", None)
        if job is None:
            job = record.sqjobs_job = job_text(current_job.get())
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        line = log_line(record.asctime, record.levelname, record.name, record.process, job, record.message)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


@contextmanager
def running(job_id: str) -> Iterator[None]:
    """Mark the lines logged in the block as the job ``job_id``'s."""
    token = current_job.set(job_id)
    try:
        yield
    finally:
        current_job.reset(token)


#: True when the command line chose the level (-v, --log-level): the config file's then does not apply.
_level_chosen = False


def setup(level: str | int | None = None) -> None:
    """Log to stderr in LOG_FORMAT with the job id on job lines and no caller lookups.

    ``level`` is what the command line chose (None: INFO until the config
    file's ``[sqjobs] log_level`` is read, see :func:`apply_setting`).
    """
    global _level_chosen
    _level_chosen = level is not None
    level = logging.INFO if level is None else level
    global _own_handler
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(Formatter())
        root.addHandler(handler)
        _own_handler = handler
    root.setLevel(level)
    # The format shows neither the caller's file and line nor thread names: do not look them up.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


def set_level(level: str | int) -> None:
    """Set the level of every sqjobs command's lines (the root logger's)."""
    logging.getLogger().setLevel(level)


def apply_setting(level: str) -> None:
    """Use ``[sqjobs] log_level`` unless the command line chose a level."""
    if not _level_chosen:
        set_level(level.upper())


#: The handler :func:`setup` gave the root logger (None: logging is the application's).
_own_handler: logging.StreamHandler[Any] | None = None
#: This process's id (kept up to date across forks): LOG_FORMAT shows it on every line.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _only_own_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The handler of :func:`setup` when it is all ``logging`` would pass an INFO line of ``logger`` to, else None."""
    handler = _own_handler
    if handler is None or logging.root.manager.disable >= logging.INFO or handler.filters or \
            handler.level > logging.INFO or not logger.isEnabledFor(logging.INFO):
        return None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        handlers = current.handlers
        if current is logging.root:
            return handler if len(handlers) == 1 and handlers[0] is handler else None
        if handlers or not current.propagate:
            return None
        current = current.parent
    return None


def info_line(logger: logging.Logger, text: str) -> None:
    """Log ``text`` at INFO on ``logger`` (a line per job: the worker's "succeeded" line).

    When logging is as :func:`setup` left it (its one handler, no filter,
    no handler of the application's on the way), the line is written
    straight to that handler's stream, under its lock, in LOG_FORMAT: the
    text ``logger.info`` would write, without making a record or walking
    the handlers (the cost: docs/explanation/benchmarks.rst). Any other
    logging configuration gets the line through ``logger.info``, as usual.
    """
    handler = _only_own_handler(logger)
    formatter = handler.formatter if handler is not None else None
    if handler is None or not isinstance(formatter, Formatter):
        logger.info("%s", text)
        return
    now_ns = time.time_ns()
    time_text = formatter.time_text(now_ns / 1e9, (now_ns % 1_000_000_000) // 1_000_000)
    line = log_line(time_text, "INFO", logger.name, _pid, job_text(current_job.get()), text) + handler.terminator
    handler.acquire()
    try:
        handler.stream.write(line)
        handler.stream.flush()
        written = True
    except Exception:  # noqa: BLE001 - a line that could not be written goes the usual way (which reports it)
        written = False
    finally:
        handler.release()
    if not written:
        logger.info("%s", text)
