"""The status database: one Peewee table of job status rows, reached lazily by URL.

The URL is ``[sqjobs] database`` (``sqlite:///PATH``, ``postgresql://…``,
``mysql://…``, anything ``playhouse.db_url`` knows), read from the runtime
settings when first needed, never at import. A process keeps one database
object per URL; a forked child opens its own and leaves the parent's
connections alone (closing them in the child would end the parent's session).

The table ``sqjobs_job_status`` is created on first use, idempotently and
safely when several processes start at once; ``sqjobs initdb`` creates it
explicitly. Every write is one short statement in autocommit mode.

Errors are sorted into two kinds (:func:`is_permanent`). Transient ones
(connection refused or lost, timeouts, a server starting up or out of
connections, deadlocks, lock waits, anything not known to be permanent)
raise :class:`~sqjobs.errors.StatusStoreError`, and workers retry them.
Permanent ones raise :class:`~sqjobs.errors.StatusStorePermanentError`,
which nothing retries: a bad URL (unknown scheme, missing driver, bad
option), refused credentials, a database that does not exist, no privilege
on the table (PostgreSQL SQLSTATE class 28, 3D000, 3F000, 42501; MySQL and
MariaDB errors 1044, 1045, 1049, 1142, 1143, 1227, 1251, 1698, 2059), an
SQLite file that cannot be opened or written or is no database. An unknown
host name counts as transient (a resolver can fail for a while).
:func:`check_database` opens the database once at a command's start.

Times are stored as naive UTC with microseconds and returned as aware UTC
datetimes. Results are stored as JSON text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import peewee
from playhouse import db_url

from .errors import StatusStoreError, StatusStorePermanentError
from .identity import HOST_NAME, worker_pid
from .status import FINISHED, Status, current_settings

logger = logging.getLogger("sqjobs.store")

#: Every table sqjobs creates starts with this.
TABLE_PREFIX = "sqjobs_"
#: The table of job status rows.
STATUS_TABLE = TABLE_PREFIX + "job_status"
#: Longest job id stored (ids are 32 hex characters; SQS message ids 36).
ID_MAX_CHARS = 128
#: Longest job or queue name stored; longer ones are cut (they come from foreign producers too).
NAME_MAX_CHARS = 255
#: Longest error text and traceback stored, in characters.
ERROR_MAX_CHARS = 10_000
TRACEBACK_MAX_CHARS = 100_000
#: Seconds to wait for a database server to answer a connection attempt.
CONNECT_TIMEOUT_S = 5
#: Seconds an SQLite writer waits for another process's write lock.
SQLITE_BUSY_TIMEOUT_S = 10


class PreciseDateTimeField(peewee.DateTimeField):
    """A DATETIME with microseconds on every database (MySQL's plain DATETIME drops them)."""

    field_type = "SQJOBS_DATETIME"


class LongTextField(peewee.TextField):
    """Text without MySQL's 64 KiB TEXT limit (LONGTEXT there, TEXT elsewhere)."""

    field_type = "SQJOBS_LONGTEXT"


def _field_types(database_class: type) -> dict[str, str]:
    if issubclass(database_class, peewee.MySQLDatabase):
        return {"SQJOBS_DATETIME": "DATETIME(6)", "SQJOBS_LONGTEXT": "LONGTEXT"}
    if issubclass(database_class, peewee.PostgresqlDatabase):
        return {"SQJOBS_DATETIME": "TIMESTAMP", "SQJOBS_LONGTEXT": "TEXT"}
    return {"SQJOBS_DATETIME": "DATETIME", "SQJOBS_LONGTEXT": "TEXT"}


def safe_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


#: PostgreSQL SQLSTATEs (two characters: a whole class) that no retry fixes: authorization (28),
#: no such database (3D000) or schema (3F000), insufficient privilege (42501).
POSTGRESQL_PERMANENT_STATES = ("28", "3D000", "3F000", "42501")
#: MySQL and MariaDB error numbers that no retry fixes: access denied to a database (1044), a user
#: (1045, 1698), a table or column (1142, 1143), a privilege (1227); unknown database (1049);
#: an authentication method the client cannot use (1251, 2059).
MYSQL_PERMANENT_ERRORS = frozenset({1044, 1045, 1049, 1142, 1143, 1227, 1251, 1698, 2059})
#: What libpq says, with no SQLSTATE, when a connection is refused for good.
_POSTGRESQL_PERMANENT_TEXT = re.compile(
    r"authentication failed|no pg_hba\.conf entry|role \".*\" (does not exist|is not permitted to log in)"
    r"|database \".*\" does not exist|permission denied|invalid dsn|invalid connection option"
    r"|invalid (integer|sslmode) value", re.IGNORECASE)
#: What SQLite says when its file cannot serve as a database.
_SQLITE_PERMANENT_TEXT = re.compile(
    r"unable to open database file|readonly database|is not a database|disk image is malformed", re.IGNORECASE)


def _driver_error(error: BaseException) -> BaseException:
    """Return the database driver's exception behind a Peewee one (Peewee keeps it as ``orig``).

    A failed connection inside a query is wrapped twice, so this unwraps until
    it leaves Peewee's exceptions.
    """
    for _ in range(5):
        if not isinstance(error, peewee.PeeweeException):
            break
        original = getattr(error, "orig", None)
        inner = original if isinstance(original, BaseException) else (error.__cause__ or error.__context__)
        if inner is None:
            break
        error = inner
    return error


def is_permanent(error: BaseException) -> bool:
    """Return True if ``error`` from the status database cannot go away by trying again.

    The classes are those of this module's docstring; anything else is
    transient, so that a fault nobody foresaw is retried rather than fatal.
    """
    if isinstance(error, StatusStorePermanentError):
        return True
    if isinstance(error, peewee.ImproperlyConfigured):  # the driver of the URL's scheme is not installed
        return True
    driver = _driver_error(error)
    if isinstance(driver, sqlite3.Error):
        return bool(_SQLITE_PERMANENT_TEXT.search(str(driver)))
    code = driver.args[0] if driver.args else None
    if isinstance(code, int):  # MySQL and MariaDB drivers: (number, text)
        return code in MYSQL_PERMANENT_ERRORS
    state = getattr(driver, "pgcode", None) or getattr(driver, "sqlstate", None)
    if isinstance(state, str) and state:
        return state.startswith(POSTGRESQL_PERMANENT_STATES)
    if type(driver).__module__.split(".")[0] in ("psycopg2", "psycopg"):
        return bool(_POSTGRESQL_PERMANENT_TEXT.search(str(driver)))
    return False


def one_line(error: BaseException) -> str:
    """Return the text of ``error`` on one line, without the statement PostgreSQL quotes after it."""
    return " ".join(str(error).split("\nLINE ", 1)[0].split())


def permanent_error(url: str, cause: str) -> StatusStorePermanentError:
    """Return the error naming ``[sqjobs] database`` (password masked) and ``cause``."""
    return StatusStorePermanentError(f"[sqjobs] database {safe_url(url)}: {cause}")


def open_database(url: str) -> peewee.Database:
    """Return a new (not yet connected) Peewee database for ``url``; StatusStorePermanentError for a bad URL."""
    scheme = urlsplit(url).scheme
    database_class = db_url.schemes.get(scheme)
    if database_class is None:
        known = ", ".join(sorted(db_url.schemes))
        raise permanent_error(url, f"unknown scheme {scheme!r} (known: {known})")
    options: dict[str, Any] = {"field_types": _field_types(database_class)}
    query = urlsplit(url).query
    if issubclass(database_class, peewee.SqliteDatabase):
        options["timeout"] = SQLITE_BUSY_TIMEOUT_S
        options["pragmas"] = {"journal_mode": "wal", "synchronous": "normal",
                              "busy_timeout": SQLITE_BUSY_TIMEOUT_S * 1000}
    elif "connect_timeout" not in query:
        options["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        return db_url.connect(url, **options)
    except (ValueError, RuntimeError) as exc:
        raise permanent_error(url, one_line(exc)) from None


@contextlib.contextmanager
def database_errors(database: peewee.Database, label: str, what: str, *, url: str | None = None) -> Iterator[None]:
    """Turn Peewee errors in the block into StatusStoreError (``label: cannot what: error``).

    Errors that no retry fixes (:func:`is_permanent`) become
    StatusStorePermanentError, naming ``[sqjobs] database`` and ``url``
    when given. A connection that failed is closed, so the next use reconnects.
    """
    try:
        yield
    except peewee.PeeweeException as exc:
        if isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)):
            with contextlib.suppress(Exception):
                database.close()
        if is_permanent(exc):
            where = f"[sqjobs] database {safe_url(url)}" if url is not None else label
            raise StatusStorePermanentError(f"{where}: cannot {what}: {one_line(exc)}") from exc
        raise StatusStoreError(f"{label}: cannot {what}: {one_line(exc)}".strip()) from exc


def create_tables_racing(database: peewee.Database, models: list[Any]) -> None:
    """Create the tables of ``models`` if missing, even when other processes do the same at once."""
    for tries_left in (2, 1, 0):
        try:
            database.create_tables(models, safe=True)
            return
        except peewee.DatabaseError as exc:
            # Another process created them at the same moment (PostgreSQL's catalog
            # race, MySQL's index without IF NOT EXISTS): the next try sees them.
            if not tries_left or is_permanent(exc):
                raise


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

        class Meta:
            table_name = STATUS_TABLE
            legacy_table_names = False  # index names start with the table name: sqjobs_job_status_...

    JobStatusRow._meta.set_database(database)
    return JobStatusRow


def utc_now() -> datetime:
    """Return the current time as a naive UTC datetime, the way rows store it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None else None


def _cut(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit - 3] + "..."


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

    @property
    def finished(self) -> bool:
        """True in SUCCESS, FAILURE and DEAD: no attempt follows."""
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
        data.update(traceback=self.traceback, worker_host=self.worker_host, worker_pid=self.worker_pid)
        return data


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

    def __repr__(self) -> str:
        return f"<StatusStore {safe_url(self.url)}>"

    def _guard(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Turn database errors into StatusStoreError; drop a connection that failed."""
        return database_errors(self.database, f"status database {safe_url(self.url)}", what, url=self.url)

    # -- tables ------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the status table and its index if missing (idempotent; safe to race with other processes)."""
        with self._lock, self._guard("create the status table"):
            create_tables_racing(self.database, [self.model])
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
            finished_at=_aware(row.finished_at), worker_host=row.worker_host, worker_pid=row.worker_pid)

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
        """UPDATE the row of ``job_id``; if there is none, INSERT it (one statement when it exists)."""
        model = self.model
        if model.update(update).where(model.id == job_id).execute():
            return
        try:
            model.insert(id=job_id, **insert).execute()
        except peewee.IntegrityError:
            # It exists after all: another process inserted it, or MySQL counted an
            # UPDATE that changed nothing as zero rows.
            model.update(update).where(model.id == job_id).execute()

    def enqueued(self, job_id: str, name: str, queue: str) -> None:
        """Record ``job_id`` as PENDING. A job id that already SUCCEEDED keeps its row (it will not run again)."""
        self._ready()
        model = self.model
        values = dict(name=name[:NAME_MAX_CHARS], queue=queue[:NAME_MAX_CHARS], status=Status.PENDING.value,
                      attempts=0, result=None, error=None, traceback=None, enqueued_at=utc_now(),
                      started_at=None, finished_at=None, worker_host=None, worker_pid=None)
        with self._guard(f"record job {job_id} as PENDING"):
            try:
                model.insert(id=job_id, **values).execute()
            except peewee.IntegrityError:
                (model.update(values)
                 .where((model.id == job_id) & (model.status != Status.SUCCESS.value)).execute())

    def started(self, job_id: str, name: str, queue: str) -> None:
        """Record that an attempt of ``job_id`` started here: STARTED, attempts + 1, host and pid."""
        self._ready()
        model = self.model
        now = utc_now()
        common = dict(status=Status.STARTED.value, started_at=now, finished_at=None,
                      worker_host=HOST_NAME[:NAME_MAX_CHARS], worker_pid=worker_pid())
        with self._guard(f"record job {job_id} as STARTED"):
            self._upsert(job_id, dict(common, attempts=model.attempts + 1),
                         dict(common, name=name[:NAME_MAX_CHARS], queue=queue[:NAME_MAX_CHARS], attempts=1))

    def ended(self, job_id: str, name: str, queue: str, status: Status, result_json: str | None = None,
              error: str | None = None, traceback: str | None = None) -> None:
        """Record how an attempt ended: RETRY, or a finished state with its finish time."""
        self._ready()
        values = dict(status=status.value, result=result_json, error=_cut(error, ERROR_MAX_CHARS),
                      traceback=_cut(traceback, TRACEBACK_MAX_CHARS),
                      finished_at=utc_now() if status in FINISHED else None)
        with self._guard(f"record job {job_id} as {status.value}"):
            self._upsert(job_id, values, dict(values, name=name[:NAME_MAX_CHARS], queue=queue[:NAME_MAX_CHARS],
                                              attempts=1))

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
            changed = (model.update(status=Status.DEAD.value, error=_cut(reason, ERROR_MAX_CHARS), traceback=None,
                                    finished_at=utc_now())
                       .where((model.id == job_id) & (model.status.not_in([s.value for s in FINISHED])))
                       .execute())
        return bool(changed)

    def _finished_before(self, older_than: datetime) -> peewee.Expression:
        """The rows :meth:`prune` deletes: finished (SUCCESS, FAILURE, DEAD) before ``older_than``."""
        model = self.model
        cutoff = older_than.astimezone(timezone.utc).replace(tzinfo=None) if older_than.tzinfo else older_than
        return model.status.in_([s.value for s in FINISHED]) & (model.finished_at < cutoff)

    def prune(self, older_than: datetime) -> int:
        """Delete finished rows (SUCCESS, FAILURE, DEAD) that finished before ``older_than``; return how many."""
        self._ready()
        with self._guard("prune finished rows"):
            return int(self.model.delete().where(self._finished_before(older_than)).execute())

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


def get_store(url: str | None = None) -> StatusStore:
    """Return this process's store for ``url`` (default: the runtime settings' ``database``)."""
    if url is None:
        url = current_settings().database_url
    with _stores_lock:
        store = _stores.get(url)
        if store is not None and store.pid != os.getpid():
            _inherited.extend(_stores.values())
            _stores.clear()
            store = None
        if store is None:
            store = _stores[url] = StatusStore(url)
        return store


def check_database(url: str | None = None) -> bool:
    """Open the status database once and create its table if missing, as a command does at start-up.

    ``url`` defaults to the runtime settings' ``database``. Returns True when
    the database is ready. A transient failure is logged as a warning and
    returns False: the command goes on, and its writes are retried later.
    Raises StatusStorePermanentError when retrying cannot help.
    """
    if url is None:
        url = current_settings().database_url
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
