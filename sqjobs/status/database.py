"""A database reached by URL: opened with timeouts, its errors sorted into three kinds.

Used by the status store (:mod:`sqjobs.status.store`) and the beaters' claims
(:mod:`sqjobs.schedule.beater`). The URL is anything ``playhouse.db_url`` knows
(``sqlite:///PATH``, ``postgresql://…``, ``mysql://…``).

Errors are sorted into three kinds. Transient ones (connection refused or
lost, timeouts, a server starting up or out of connections, deadlocks, lock
waits, anything not known to be of another kind) raise
:class:`~sqjobs.errors.StatusStoreError`, and workers retry them.
Configuration errors (:func:`is_permanent`) raise
:class:`~sqjobs.errors.StatusStorePermanentError`, which nothing retries
and which stops a worker: a bad URL (unknown scheme, missing driver, bad
option), refused credentials, a database that does not exist, no privilege
on the table (PostgreSQL SQLSTATE class 28, 3D000, 3F000, 42501; MySQL and
MariaDB errors 1044, 1045, 1049, 1142, 1143, 1227, 1251, 1698, 2059), an
SQLite file that cannot be opened or written or is no database. An unknown
host name counts as transient (a resolver can fail for a while).

Row errors (:func:`is_row_error`) raise :class:`~sqjobs.errors.StatusRowError`:
the database works but refused the values of one row, so writing the same
row again fails the same way. Nothing retries them and they stop nothing:
PostgreSQL SQLSTATE class 22 (data exception: a value too long, an invalid
byte sequence, a number out of range) and 54000 (a program limit); MySQL and
MariaDB errors 1153 and 1301 (over ``max_allowed_packet``), 1264, 1265,
1292, 1300, 1366, 1406 (out of range, truncated, incorrect value or string,
too long); SQLite's "string or blob too big"; a value the driver itself
refuses (psycopg2 refuses NUL characters). A statement over MySQL's
``max_allowed_packet`` usually ends in 2006 "server has gone away" or 2013
"lost connection", which are also what a plain lost connection says: those
count as the row's fault only when the statement (its escaped values plus
:data:`SQL_OVERHEAD_BYTES`) reaches the server's ``max_allowed_packet``,
read once when the status table is checked; otherwise they are transient.

Nothing waits for a database forever: connecting gives up after
:data:`CONNECT_TIMEOUT_S` and a statement after :data:`STATEMENT_TIMEOUT_S`
(both then transient errors). On PostgreSQL the server cancels a slow
statement itself (``statement_timeout``, sent as the ``options`` startup
parameter) and the client shuts the connection down
:data:`ANSWER_GRACE_S` later if no answer came at all (:mod:`sqjobs.status.dbwatch`:
a network that drops packets); on MySQL and MariaDB PyMySQL's read and
write timeouts do it. A URL may set ``connect_timeout`` (the driver's own
parameter), ``statement_timeout_s`` (seconds, sqjobs' parameter: taken out
of the URL before the driver sees it) and, on PostgreSQL, ``options`` (which
then replaces sqjobs' ``statement_timeout``: behind PgBouncer, which refuses
that startup parameter unless ``ignore_startup_parameters`` lists it, add
``options=`` to the URL).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import weakref
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import peewee
from playhouse import db_url

from ..errors import StatusRowError, StatusStoreError, StatusStorePermanentError
from ..forking import sqlite_section
from . import dbwatch

#: Seconds to wait for a database server to accept a connection (PostgreSQL: the whole start-up).
CONNECT_TIMEOUT_S = 5
#: Seconds a status statement may wait for its answer before it counts as failed (a transient error,
#: retried by workers; raised by ``.delay()``). Status statements touch one row and take milliseconds;
#: ten seconds covers a busy server, and bounds how long a database that stopped answering (a network
#: that drops packets) holds ``.delay()`` or a worker before the outage is logged.
STATEMENT_TIMEOUT_S = 10.0
#: Extra seconds the client waits for PostgreSQL's answer past the server's own ``statement_timeout``,
#: so that a live server's cancellation (a clear error) comes before the client cuts the connection.
ANSWER_GRACE_S = 2.0
#: sqjobs' own URL query parameter setting STATEMENT_TIMEOUT_S (removed before the driver sees the URL).
STATEMENT_TIMEOUT_OPTION = "statement_timeout_s"
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
#: PostgreSQL SQLSTATEs of a row's values the server refuses: data exception (class 22: a value too
#: long, an invalid byte sequence, a number out of range...) and program limit exceeded (54000).
POSTGRESQL_ROW_STATES = ("22", "54000")
#: MySQL and MariaDB errors of a row's values the server refuses: a packet over max_allowed_packet
#: (1153, 1301), a number out of range (1264), data truncated (1265), an incorrect value (1292),
#: an invalid or incorrect string (1300, 1366), data too long for its column (1406).
MYSQL_ROW_ERRORS = frozenset({1153, 1264, 1265, 1292, 1300, 1301, 1366, 1406})
#: MySQL and MariaDB client errors of a lost connection ("server has gone away", "lost connection
#: during query"): also what a statement over max_allowed_packet ends in (see the module docstring).
MYSQL_LOST_CONNECTION = frozenset({2006, 2013})
#: Bytes of SQL around the values of a status statement, counted with them against max_allowed_packet.
SQL_OVERHEAD_BYTES = 1024
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


def mysql_statement_bytes(texts: Iterable[str | None]) -> int:
    """Return the bytes ``texts`` take in a MySQL statement, escaped as the driver escapes them, plus the SQL."""
    size = SQL_OVERHEAD_BYTES
    for text in texts:
        if text:
            data = text.encode("utf-8", "replace")
            size += len(data) + sum(data.count(char) for char in (b"\0", b"\n", b"\r", b"\x1a", b"'", b'"', b"\\"))
    return size


def is_row_error(error: BaseException, texts: Iterable[str | None] = (), packet_limit: int | None = None) -> bool:
    """Return True if ``error`` means the database refused the values of one row (it works otherwise).

    The classes are those of this module's docstring. ``texts`` are the
    values the statement sent and ``packet_limit`` the server's
    ``max_allowed_packet`` (MySQL and MariaDB, None if unknown): a lost
    connection is the row's fault only when those reach that limit.
    """
    if isinstance(error, StatusRowError):
        return True
    driver = _driver_error(error)
    if isinstance(driver, ValueError):  # refused by the driver before sending (NUL, an unencodable string)
        return True
    if isinstance(driver, sqlite3.Error):
        return isinstance(driver, sqlite3.DataError) or "too big" in str(driver)
    code = driver.args[0] if driver.args else None
    if isinstance(code, int):  # MySQL and MariaDB drivers: (number, text)
        if code in MYSQL_ROW_ERRORS:
            return True
        return (code in MYSQL_LOST_CONNECTION and packet_limit is not None
                and mysql_statement_bytes(texts) >= packet_limit)
    state = getattr(driver, "pgcode", None) or getattr(driver, "sqlstate", None)
    return isinstance(state, str) and state.startswith(POSTGRESQL_ROW_STATES)


def one_line(error: BaseException) -> str:
    """Return the text of ``error`` on one line, without the statement PostgreSQL quotes after it."""
    return " ".join(str(error).split("\nLINE ", 1)[0].split())


def permanent_error(url: str, cause: str) -> StatusStorePermanentError:
    """Return the error naming ``[sqjobs] database`` (password masked) and ``cause``."""
    return StatusStorePermanentError(f"[sqjobs] database {safe_url(url)}: {cause}")


#: Databases whose driver has no timeout of its own (PostgreSQL) -> seconds the client waits for an answer.
_answer_timeouts_s: weakref.WeakKeyDictionary[peewee.Database, float] = weakref.WeakKeyDictionary()


def _statement_timeout(url: str) -> tuple[str, float]:
    """Return ``url`` without sqjobs' ``statement_timeout_s`` parameter, and that timeout in seconds."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    values = [value for key, value in query if key == STATEMENT_TIMEOUT_OPTION]
    if not values:
        return url, STATEMENT_TIMEOUT_S
    try:
        timeout_s = float(values[-1])
    except ValueError:
        timeout_s = 0.0
    if not 0 < timeout_s < 365 * 24 * 3600:
        raise permanent_error(url, f"{STATEMENT_TIMEOUT_OPTION} must be a number of seconds above 0, "
                                   f"got {values[-1]!r}")
    rest = [(key, value) for key, value in query if key != STATEMENT_TIMEOUT_OPTION]
    return urlunsplit(parts._replace(query=urlencode(rest))), timeout_s


#: URL schemes of other programs -> a function turning such a URL into a database URL Peewee knows.
_url_schemes: dict[str, Callable[[str], str]] = {}


def register_url_scheme(scheme: str, resolve: Callable[[str], str]) -> None:
    """Let ``[sqjobs] database`` use ``scheme://...``: ``resolve(url)`` returns the database URL it stands for.

    ``resolve`` is called each time a database is opened (once per process
    and URL), and may raise ValueError with a reason (the error names
    ``[sqjobs] database``). The Django integration registers ``django://ALIAS``.
    """
    _url_schemes[scheme] = resolve


def resolve_url(url: str) -> str:
    """Return the database URL ``url`` stands for (itself unless its scheme was registered)."""
    resolve = _url_schemes.get(urlsplit(url).scheme)
    if resolve is None:
        return url
    try:
        return resolve(url)
    except ValueError as exc:
        raise permanent_error(url, one_line(exc)) from None


def open_database(url: str) -> peewee.Database:
    """Return a new (not yet connected) Peewee database for ``url``; StatusStorePermanentError for a bad URL.

    Server databases get the timeouts of this module's docstring, unless
    the URL sets them. A URL of a registered scheme (:func:`register_url_scheme`)
    is resolved first.
    """
    url = resolve_url(url)
    scheme = urlsplit(url).scheme
    database_class = db_url.schemes.get(scheme)
    if database_class is None:
        known = ", ".join(sorted([*db_url.schemes, *_url_schemes]))
        raise permanent_error(url, f"unknown scheme {scheme!r} (known: {known})")
    driver_url, timeout_s = _statement_timeout(url)
    options: dict[str, Any] = {"field_types": _field_types(database_class)}
    named = {key for key, _ in parse_qsl(urlsplit(driver_url).query, keep_blank_values=True)}
    if issubclass(database_class, peewee.SqliteDatabase):
        options["timeout"] = SQLITE_BUSY_TIMEOUT_S
        options["pragmas"] = {"journal_mode": "wal", "synchronous": "normal",
                              "busy_timeout": SQLITE_BUSY_TIMEOUT_S * 1000}
    else:
        options["connect_timeout"] = CONNECT_TIMEOUT_S
    if issubclass(database_class, peewee.PostgresqlDatabase):
        options["options"] = f"-c statement_timeout={max(1, round(timeout_s * 1000))}"
    elif issubclass(database_class, peewee.MySQLDatabase):
        options["read_timeout"] = options["write_timeout"] = timeout_s
    for key in named:  # what the URL sets wins
        options.pop(key, None)
    try:
        database: peewee.Database = db_url.connect(driver_url, **options)
    except (ValueError, RuntimeError) as exc:
        raise permanent_error(url, one_line(exc)) from None
    if isinstance(database, peewee.PostgresqlDatabase):
        _answer_timeouts_s[database] = timeout_s + ANSWER_GRACE_S
    return database


def _answer_deadline(database: peewee.Database) -> contextlib.AbstractContextManager[Any]:
    """A watch on this thread's connection to ``database`` if its driver has no timeout of its own (PostgreSQL).

    Opens the connection if needed (bounded by the connect timeout).
    """
    timeout_s = _answer_timeouts_s.get(database)
    if timeout_s is None:
        return contextlib.nullcontext()
    return dbwatch.deadline(database.connection(), timeout_s)


@contextlib.contextmanager
def database_errors(database: peewee.Database, label: str, what: str, *, url: str | None = None,
                    texts: Iterable[str | None] = (), packet_limit: int | None = None) -> Iterator[None]:
    """Turn Peewee errors in the block into StatusStoreError (``label: cannot what: error``).

    Errors that no retry fixes (:func:`is_permanent`) become
    StatusStorePermanentError, naming ``[sqjobs] database`` and ``url``
    when given; a row's values the database refuses (:func:`is_row_error`,
    given the ``texts`` written and MySQL's ``packet_limit``) become
    StatusRowError. A connection that failed is closed, so the next use
    reconnects. A statement unanswered within the timeout (PostgreSQL) is
    cut off and reported as such.
    """
    deadline: Any = None
    no_fork = sqlite_section() if isinstance(database, peewee.SqliteDatabase) else contextlib.nullcontext()
    try:
        with no_fork, _answer_deadline(database) as deadline:
            yield
    except (peewee.PeeweeException, ValueError) as exc:
        if isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)):
            with contextlib.suppress(Exception):
                database.close()
        if is_permanent(exc):
            where = f"[sqjobs] database {safe_url(url)}" if url is not None else label
            raise StatusStorePermanentError(f"{where}: cannot {what}: {one_line(exc)}") from exc
        if getattr(deadline, "fired", False):
            raise StatusStoreError(f"{label}: cannot {what}: no answer within {deadline.timeout_s:g} s; "
                                   "connection closed") from exc
        if is_row_error(exc, texts, packet_limit):
            raise StatusRowError(f"{label}: cannot {what}: {one_line(exc)}".strip()) from exc
        raise StatusStoreError(f"{label}: cannot {what}: {one_line(exc)}".strip()) from exc


def create_tables_racing(database: peewee.Database, models: list[Any]) -> None:
    """Create the tables of ``models`` if missing, even when other processes do the same at once."""
    for tries_left in (2, 1, 0):
        try:
            database.create_tables(models, safe=True)
            return
        except peewee.DatabaseError as exc:
            # Another process created them at the same moment (PostgreSQL's catalog
            # race, MySQL's index without IF NOT EXISTS): the next try sees them. A
            # server that did not answer at all is not tried again here (each try
            # would wait for the timeouts again): the caller's retries do that.
            if not tries_left or is_permanent(exc) or not _server_answered(exc):
                raise


def _server_answered(error: BaseException) -> bool:
    """Return True if ``error`` is the server's answer, not a connection that failed (refused, lost, timed out)."""
    driver = _driver_error(error)
    code = driver.args[0] if driver.args else None
    if isinstance(code, int):  # MySQL and MariaDB: 2000-2999 are the client's own errors (CR_...)
        return not 2000 <= code < 3000
    return bool(getattr(driver, "pgcode", None) or getattr(driver, "sqlstate", None)) or isinstance(
        driver, sqlite3.Error)
