"""The status database: one Peewee table of job status rows, reached lazily by URL.

The URL is ``[sqjobs] database`` (``sqlite:///PATH``, ``postgresql://…``,
``mysql://…``, anything ``playhouse.db_url`` knows), read from the runtime
settings when first needed, never at import. A process keeps one database
object per URL; a forked child opens its own and leaves the parent's
connections alone (closing them in the child would end the parent's session).

The table ``sqjobs_job_status`` is created on first use, idempotently and
safely when several processes start at once; ``sqjobs initdb`` creates it
explicitly. Every write is one short statement in autocommit mode.

Database errors are sorted into three kinds (:mod:`sqjobs.status.database`):
transient ones raise :class:`~sqjobs.errors.StatusStoreError` and workers
retry them; configuration errors raise
:class:`~sqjobs.errors.StatusStorePermanentError` and stop a worker; a
row's values the database refuses raise :class:`~sqjobs.errors.StatusRowError`
and only that job's message is settled without its status. Nothing waits
for a database forever (connect and statement timeouts, same module).
:func:`check_database` opens the database once at a command's start.

Rows are made to fit before they are written, so that row errors stay
rare: error texts and tracebacks are cut (:data:`ERROR_MAX_CHARS`,
:data:`TRACEBACK_MAX_CHARS`), NUL characters are removed from every text
(PostgreSQL refuses them) and lone surrogates replaced; job ids are checked
where messages are read and written (:data:`~sqjobs.message.ID_MAX_CHARS`);
results over :data:`MAX_RESULT_BYTES` are not written (the attempt is
recorded as a FAILURE, see :class:`sqjobs.middleware.tracking.StatusTracking`).

A row keeps its job's arguments (``arguments``: the JSON of ``{"args": [...],
"kwargs": {...}}``, written with the PENDING row, or by the worker that
creates the row of a job sent by another producer), cut to
:data:`~sqjobs.defaults.STATUS_ARGUMENTS_MAX_CHARS` and then marked with
:data:`ARGUMENTS_CUT_MARK`. Rows written before the column existed, or by a
process of an earlier version, have NULL there: "not recorded". A table of
an earlier version gains the column in place on first use
(:mod:`sqjobs.status.migrations`).

Times are stored as naive UTC with microseconds and returned as aware UTC
datetimes. Results are stored as JSON text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import peewee

from .. import defaults
from ..clock import utc_now
from ..errors import StatusRowError, StatusStoreError, StatusStorePermanentError
from ..identity import HOST_NAME, worker_pid
from ..message import ID_MAX_CHARS
from .database import (
    LongTextField,
    PreciseDateTimeField,
    _field_types,
    create_tables_racing,
    database_errors,
    is_permanent,
    is_row_error,
    one_line,
    open_database,
    permanent_error,
    safe_url,
)
from .migrations import add_column, add_column_statement
from .states import FINISHED, Status

__all__ = [
    # defined here
    "ARGUMENTS_CUT_MARK", "ARGUMENTS_NOT_RECORDED", "ERROR_MAX_CHARS", "MAX_RESULT_BYTES", "NAME_MAX_CHARS",
    "PRUNE_BATCH_ROWS", "STATUS_TABLE", "TABLE_PREFIX", "TRACEBACK_MAX_CHARS", "UPGRADE_COLUMNS", "StatusRecord",
    "StatusStore", "arguments_text", "ascii_json", "check_database", "fit_arguments", "fit_text", "forget_stores",
    "get_store", "naive_utc_now", "status_table_statements", "status_table_upgrades",
    # kept importable from here: the id limit of sqjobs.message, the database helpers of sqjobs.database
    "ID_MAX_CHARS", "LongTextField", "PreciseDateTimeField", "create_tables_racing", "database_errors",
    "is_permanent", "is_row_error", "one_line", "open_database", "permanent_error", "safe_url",
]

logger = logging.getLogger("sqjobs.store")

#: Every table sqjobs creates starts with this.
TABLE_PREFIX = "sqjobs_"
#: The table of job status rows.
STATUS_TABLE = TABLE_PREFIX + "job_status"
# The longest job id stored is ID_MAX_CHARS, declared with the wire format (sqjobs.message).
#: Longest job or queue name stored; longer ones are cut (they come from foreign producers too).
NAME_MAX_CHARS = 255
#: Longest error text and traceback stored, in characters.
ERROR_MAX_CHARS = 10_000
TRACEBACK_MAX_CHARS = 100_000
#: Largest result a status row keeps, in bytes of JSON (UTF-8). A row is read whole by every
#: ``handle.status`` and ``wait()``, and a larger value can exceed what a server accepts in one
#: statement (MySQL's ``max_allowed_packet``, 4 MiB by default on older servers): a job returning more
#: should store its data elsewhere and return a reference. The same on every database.
MAX_RESULT_BYTES = 1024 * 1024
#: Rows deleted per statement by ``prune``, so that each statement stays well within the statement timeout
#: (and within the 999 parameters of older SQLite builds).
PRUNE_BATCH_ROWS = 500
#: Ends an arguments text cut to STATUS_ARGUMENTS_MAX_CHARS (what is left is no longer JSON).
ARGUMENTS_CUT_MARK = " ... [cut]"
#: What is shown for the arguments of a row that has none (written before rows kept them).
ARGUMENTS_NOT_RECORDED = "not recorded"


def _make_model(database: peewee.Database) -> Any:
    """Return the status-row model bound to ``database`` (one class per database, never rebound)."""

    class JobStatusRow(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=ID_MAX_CHARS)
        name = peewee.CharField(max_length=NAME_MAX_CHARS)
        queue = peewee.CharField(max_length=NAME_MAX_CHARS)
        status = peewee.CharField(max_length=16)
        attempts = peewee.IntegerField(default=0)
        result = LongTextField(null=True)
        error = LongTextField(null=True)
        traceback = LongTextField(null=True)
        enqueued_at = PreciseDateTimeField(null=True)
        started_at = PreciseDateTimeField(null=True)
        finished_at = PreciseDateTimeField(null=True, index=True)
        worker_host = peewee.CharField(max_length=NAME_MAX_CHARS, null=True)
        worker_pid = peewee.IntegerField(null=True)
        # Added after the others: tables of earlier versions gain it in place (create_tables).
        arguments = LongTextField(null=True)

        class Meta:
            table_name = STATUS_TABLE
            legacy_table_names = False  # index names start with the table name: sqjobs_job_status_...

    JobStatusRow._meta.set_database(database)
    return JobStatusRow


def status_table_statements(database_class: type[peewee.Database]) -> list[tuple[str, Any]]:
    """The SQL (text, parameters) creating the status table and its index on a ``database_class`` database.

    For programs that create tables their own way (the Django integration's
    migration): the same table the store creates, without connecting.
    """
    database = database_class(None, field_types=_field_types(database_class))
    model = _make_model(database)
    statements = [model._schema._create_table(safe=True), *model._schema._create_indexes(safe=True)]
    return [database.get_sql_context().sql(statement).query() for statement in statements]


#: Columns the status table gained after its first version, in order: tables of earlier versions gain them
#: in place (:meth:`StatusStore.create_tables`, and the Django integration's migrations).
UPGRADE_COLUMNS = ("arguments",)


def status_table_upgrades(database_class: type[peewee.Database], columns: Iterable[str]) -> list[str]:
    """The SQL bringing a status table that has ``columns`` to the current shape (``[]``: it has it).

    For programs that change tables their own way (the Django integration's
    migration), without connecting; :meth:`StatusStore.create_tables` does
    the same, safe to race.
    """
    database = database_class(None, field_types=_field_types(database_class))
    model = _make_model(database)
    present = set(columns)
    return [add_column_statement(database, model, column) for column in UPGRADE_COLUMNS if column not in present]


def naive_utc_now() -> datetime:
    """The current time as a naive UTC datetime, the way rows store it."""
    return utc_now().replace(tzinfo=None)


def _name(text: str) -> str:
    """A job or queue name as a row stores it (they come from foreign producers too)."""
    return (fit_text(text) or "")[:NAME_MAX_CHARS]


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None else None


def _cut(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit - 3] + "..."


def fit_arguments(text: str | None) -> str | None:
    """An arguments text as a row stores it: cut to STATUS_ARGUMENTS_MAX_CHARS and marked when longer."""
    limit = defaults.STATUS_ARGUMENTS_MAX_CHARS
    if text is None or len(text) <= limit:
        return text
    return text[:limit - len(ARGUMENTS_CUT_MARK)] + ARGUMENTS_CUT_MARK


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def ascii_json(text: str | None) -> str | None:
    """The JSON ``text`` with every character outside ASCII written as its JSON escape: the same value."""
    if text is None:
        return None
    return _NON_ASCII.sub(lambda found: json.dumps(found.group())[1:-1], text)


def arguments_text(stored: str | None) -> str:
    """A row's arguments for a person: indented JSON, the cut text as stored, or "not recorded"."""
    if stored is None:
        return ARGUMENTS_NOT_RECORDED
    try:
        return json.dumps(json.loads(stored), indent=2, ensure_ascii=False)
    except ValueError:
        return stored


def fit_text(text: str | None, limit: int | None = None) -> str | None:
    """Return ``text`` as every database stores it: NUL characters removed, lone surrogates replaced, cut to ``limit``.

    PostgreSQL refuses NUL in text, and no database stores a lone surrogate
    (what ``surrogateescape`` makes of bytes that are not UTF-8).
    """
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return _cut(text, limit) if limit is not None else text


@dataclass(frozen=True)
class StatusRecord:
    """One job's status row, as read or as just written."""

    id: str
    name: str
    queue: str
    status: Status
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    attempts: int = 0
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_host: str | None = None
    worker_pid: int | None = None
    #: The JSON of ``{"args": [...], "kwargs": {...}}`` (cut and marked when long), None if not recorded.
    arguments: str | None = None

    @property
    def finished(self) -> bool:
        """True in SUCCESS, FAILURE, DEAD and CANCELLED: no attempt follows."""
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        """Return the row as JSON-ready data (times as ISO 8601 with their UTC offset)."""
        data: dict[str, Any] = {
            "id": self.id, "name": self.name, "queue": self.queue, "status": self.status.value,
            "result": self.result, "error": self.error, "attempts": self.attempts,
        }
        for key in ("enqueued_at", "started_at", "finished_at"):
            value = getattr(self, key)
            data[key] = value.isoformat() if value is not None else None
        data.update(traceback=self.traceback, worker_host=self.worker_host, worker_pid=self.worker_pid,
                    arguments=self._arguments_value())
        return data

    def _arguments_value(self) -> Any:
        """The arguments as JSON data ({"args", "kwargs"}), the text when it was cut, None when not recorded."""
        if self.arguments is None:
            return None
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments


class StatusStore:
    """Status rows in one database. Methods raise StatusStoreError when the database fails."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: The process that opened the database; a forked child must open its own.
        self.pid = os.getpid()
        self.database = open_database(url)
        self.model = _make_model(self.database)
        self._tables_ready = False
        self._lock = threading.Lock()
        #: MySQL and MariaDB: the server's max_allowed_packet, read once with the table.
        self.packet_limit: int | None = None

    def __repr__(self) -> str:
        return f"<StatusStore {safe_url(self.url)}>"

    def _guard(self, what: str, texts: Iterable[str | None] = ()) -> contextlib.AbstractContextManager[None]:
        """Turn database errors into StatusStoreError; drop a connection that failed.

        ``texts`` are the values a write sends (to tell a lost connection
        from a statement over MySQL's max_allowed_packet).
        """
        return database_errors(self.database, f"status database {safe_url(self.url)}", what, url=self.url,
                               texts=texts, packet_limit=self.packet_limit)

    # -- tables ------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the status table and its index if missing, or upgrade one of an earlier version in place
        (idempotent; safe to race with other processes)."""
        with self._lock, self._guard("create the status table"):
            create_tables_racing(self.database, [self.model])
            for column in UPGRADE_COLUMNS:
                add_column(self.database, self.model, column)
            if isinstance(self.database, peewee.MySQLDatabase) and self.packet_limit is None:
                self.packet_limit = int(self.database.execute_sql("SELECT @@max_allowed_packet").fetchone()[0])
            self._tables_ready = True

    def _ready(self) -> None:
        if not self._tables_ready:
            self.create_tables()

    # -- reading -----------------------------------------------------------------------

    def _record(self, row: Any) -> StatusRecord:
        return StatusRecord(
            id=row.id, name=row.name, queue=row.queue, status=Status(row.status),
            result=json.loads(row.result) if row.result is not None else None,
            error=row.error, traceback=row.traceback, attempts=row.attempts,
            enqueued_at=_aware(row.enqueued_at), started_at=_aware(row.started_at),
            finished_at=_aware(row.finished_at), worker_host=row.worker_host, worker_pid=row.worker_pid,
            arguments=row.arguments)

    def get(self, job_id: str) -> StatusRecord | None:
        """Return the row of ``job_id``, or None if there is none."""
        self._ready()
        with self._guard(f"read the status of job {job_id}"):
            row = self.model.get_or_none(self.model.id == job_id)
        return self._record(row) if row is not None else None

    def status_of(self, job_id: str) -> Status | None:
        """Return only the state of ``job_id`` (one small read), or None if it has no row."""
        self._ready()
        with self._guard(f"read the status of job {job_id}"):
            value = self.model.select(self.model.status).where(self.model.id == job_id).scalar()
        return Status(value) if value is not None else None

    # -- writing -----------------------------------------------------------------------

    def _upsert(self, job_id: str, update: dict[str, Any], insert: dict[str, Any]) -> None:
        """UPDATE the row of ``job_id``; if there is none, INSERT it (one statement when it exists).

        A callable value in ``insert`` is called only when the row is inserted.
        """
        model = self.model
        if model.update(update).where(model.id == job_id).execute():
            return
        insert = {key: value() if callable(value) else value for key, value in insert.items()}
        try:
            model.insert(id=job_id, **insert).execute()
        except peewee.IntegrityError:
            # It exists after all: another process inserted it, or MySQL counted an
            # UPDATE that changed nothing as zero rows.
            model.update(update).where(model.id == job_id).execute()

    def enqueued(self, job_id: str, name: str, queue: str, arguments: str | None = None) -> None:
        """Record ``job_id`` as PENDING with its ``arguments`` (JSON text, cut to fit here).

        A job id that already SUCCEEDED keeps its row (it will not run again).
        """
        self._ready()
        model = self.model

        def write(spell: Callable[[str | None], str | None]) -> None:
            values = dict(name=_name(name), queue=_name(queue), status=Status.PENDING.value,
                          attempts=0, result=None, error=None, traceback=None, enqueued_at=naive_utc_now(),
                          started_at=None, finished_at=None, worker_host=None, worker_pid=None,
                          arguments=spell(arguments))
            try:
                model.insert(id=job_id, **values).execute()
            except peewee.IntegrityError:
                (model.update(values)
                 .where((model.id == job_id) & (model.status != Status.SUCCESS.value)).execute())

        self._write_spelling_arguments(f"record job {job_id} as PENDING", write,
                                       retry=arguments is not None and not arguments.isascii())

    def _write_spelling_arguments(self, what: str, write: Callable[[Callable[[str | None], str | None]], None],
                                  retry: bool) -> None:
        """Run ``write(spell)``, ``spell`` making an arguments text fit the row; if the database refuses the
        row and ``retry``, once more with the arguments in ASCII (JSON escapes), which a MySQL table of a
        character set without emoji takes: a job's arguments never cost it its row."""
        try:
            with self._guard(what):
                write(lambda text: fit_text(fit_arguments(text)))
        except StatusRowError:
            if not retry:
                raise
            with self._guard(what):
                write(lambda text: fit_text(fit_arguments(ascii_json(text))))

    def started(self, job_id: str, name: str, queue: str, attempt: int | None = None,
                arguments: Callable[[], str | None] | None = None) -> None:
        """Record that attempt ``attempt`` of ``job_id`` started here: STARTED, its number, host and pid.

        A job with no row yet (sent by a producer that does not track it)
        gets one, with the arguments ``arguments()`` returns (called only
        then: a row that exists keeps its own).

        ``attempts`` becomes the attempt's number, the one its log lines
        show (the message's receive count, which also decides the retries
        left): after ``sqjobs dead --requeue`` both start again at 1. None:
        attempts + 1.
        """
        self._ready()
        model = self.model
        now = naive_utc_now()
        common = dict(status=Status.STARTED.value, started_at=now, finished_at=None,
                      worker_host=HOST_NAME[:NAME_MAX_CHARS], worker_pid=worker_pid())
        update = dict(common, attempts=model.attempts + 1 if attempt is None else attempt)
        insert = dict(common, name=_name(name), queue=_name(queue), attempts=attempt or 1)

        def write(spell: Callable[[str | None], str | None]) -> None:
            self._upsert(job_id, update, dict(insert, arguments=lambda: spell(arguments() if arguments else None)))

        self._write_spelling_arguments(f"record job {job_id} as STARTED", write, retry=arguments is not None)

    def ended(self, job_id: str, name: str, queue: str, status: Status, result_json: str | None = None,
              error: str | None = None, traceback: str | None = None) -> None:
        """Record how an attempt ended: RETRY, or a finished state with its finish time.

        Texts are made to fit (:func:`fit_text`); ``result_json`` is written
        as given (:class:`sqjobs.middleware.tracking.StatusTracking` keeps it within
        MAX_RESULT_BYTES). Raises StatusRowError if the database refuses
        the row's values anyway.
        """
        self._ready()
        result_json, error = fit_text(result_json), fit_text(error, ERROR_MAX_CHARS)
        traceback = fit_text(traceback, TRACEBACK_MAX_CHARS)
        values = dict(status=status.value, result=result_json, error=error, traceback=traceback,
                      finished_at=naive_utc_now() if status in FINISHED else None)
        with self._guard(f"record job {job_id} as {status.value}", (result_json, error, traceback, name, queue)):
            self._upsert(job_id, values, dict(values, name=_name(name), queue=_name(queue), attempts=1))

    def forget_pending(self, job_id: str) -> bool:
        """Delete the row of ``job_id`` if it is still PENDING (its send failed); return True if one was."""
        self._ready()
        model = self.model
        with self._guard(f"forget the PENDING row of job {job_id}"):
            deleted = model.delete().where((model.id == job_id) & (model.status == Status.PENDING.value)).execute()
        return bool(deleted)

    def cancelled_unrun(self, job_id: str, reason: str) -> bool:
        """Record that a worker deleted ``job_id`` unrun, cancelled: its STARTED row (written just before) becomes
        CANCELLED and that attempt is not counted. Return True if a row changed."""
        self._ready()
        model = self.model
        with self._guard(f"record job {job_id} as CANCELLED"):
            changed = (model.update(status=Status.CANCELLED.value, error=fit_text(reason, ERROR_MAX_CHARS),
                                    traceback=None, finished_at=naive_utc_now(), attempts=model.attempts - 1)
                       .where((model.id == job_id) & (model.status == Status.STARTED.value)).execute())
        return bool(changed)

    def mark_dead(self, job_id: str, reason: str) -> bool:
        """Set an existing, unfinished row of ``job_id`` to DEAD with ``reason``; return True if one was.

        Never creates a row nor the table (nor an SQLite file): a job nobody
        recorded stays unrecorded.
        """
        path = self._sqlite_path()
        if path is not None and not os.path.exists(path):
            return False
        model = self.model
        with self._guard(f"record job {job_id} as DEAD"):
            if not self._tables_ready and not model.table_exists():
                return False
            changed = (model.update(status=Status.DEAD.value, error=fit_text(reason, ERROR_MAX_CHARS), traceback=None,
                                    finished_at=naive_utc_now())
                       .where((model.id == job_id) & (model.status.not_in([s.value for s in FINISHED])))
                       .execute())
        return bool(changed)

    def _finished_before(self, older_than: datetime) -> peewee.Expression:
        """The rows :meth:`prune` deletes: finished (SUCCESS, FAILURE, DEAD, CANCELLED) before ``older_than``."""
        model = self.model
        cutoff = older_than.astimezone(timezone.utc).replace(tzinfo=None) if older_than.tzinfo else older_than
        finished: peewee.Expression = model.status.in_([s.value for s in FINISHED]) & (model.finished_at < cutoff)
        return finished

    def prune(self, older_than: datetime) -> int:
        """Delete finished rows (SUCCESS, FAILURE, DEAD, CANCELLED) finished before ``older_than``; return how many.

        Deletes PRUNE_BATCH_ROWS rows per statement, so that a table of
        millions of rows is pruned within the statement timeout.
        """
        self._ready()
        model = self.model
        deleted = 0
        while True:
            with self._guard("prune finished rows"):
                ids = [job_id for (job_id,) in model.select(model.id).where(self._finished_before(older_than))
                       .limit(PRUNE_BATCH_ROWS).tuples()]
                if not ids:
                    return deleted
                deleted += int(model.delete().where(model.id.in_(ids)).execute())

    def count_prunable(self, older_than: datetime) -> int:
        """Return how many rows :meth:`prune` with the same ``older_than`` would delete; delete nothing."""
        self._ready()
        with self._guard("count finished rows"):
            return int(self.model.select().where(self._finished_before(older_than)).count())

    def _sqlite_path(self) -> str | None:
        if not isinstance(self.database, peewee.SqliteDatabase):
            return None
        path = self.database.database
        return None if path in ("", ":memory:") or path.startswith("file:") else path

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        with contextlib.suppress(Exception):
            self.database.close()



_stores: dict[str, StatusStore] = {}
_stores_lock = threading.Lock()
#: Stores a forked child inherited: kept referenced, never closed, so the parent's sessions live on.
_inherited: list[StatusStore] = []


def get_store(url: str) -> StatusStore:
    """Return this process's store for the database at ``url`` (one per URL and process)."""
    with _stores_lock:
        store = _stores.get(url)
        if store is not None and store.pid != os.getpid():
            _inherited.extend(_stores.values())
            _stores.clear()
            store = None
        if store is None:
            store = _stores[url] = StatusStore(url)
        return store


def check_database(url: str) -> bool:
    """Open the status database once and create its table if missing, as a command does at start-up.

    Returns True when the database is ready. A transient failure is logged
    as a warning and returns False: the command goes on, and its writes are
    retried later. Raises StatusStorePermanentError when retrying cannot help.
    """
    try:
        get_store(url).create_tables()
    except StatusStorePermanentError:
        raise
    except StatusStoreError as exc:
        logger.warning("status database not reachable at start-up; going on, it is tried again when needed: %s",
                       exc)
        return False
    return True


def forget_stores() -> None:
    """Close and forget every store of this process (tests use it between cases)."""
    with _stores_lock:
        for store in _stores.values():
            if store.pid == os.getpid():
                store.close()
        _stores.clear()
