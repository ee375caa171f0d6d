"""The embedded broker: queues in one SQLite file, shared safely by processes on one machine.

The file is in WAL mode. Every claim runs in ``BEGIN IMMEDIATE`` so that two
workers never take the same message and never see "database is locked"
(waiting writers queue on SQLite's busy timeout). Visibility works as on SQS:
a received message is hidden until ``visible_at``; each receive raises its
receive count and gives it a fresh receipt, so a stale receipt cannot delete
a message someone else now holds.

A stored row that cannot be read (a body that is not UTF-8, an attributes
column that is not a JSON object, as a foreign writer or a damaged file may
leave) is still received: its body then says why (see
:func:`sqjobs.message.undecodable_body`), the worker dead-letters it like any
malformed message, and the rest of the queue flows. The row's own bytes are
kept as they are in the dead-letter queue.

Every SQLite error is raised as BrokerError saying what could not be done and
why in one line (a read-only file, a full disk). A batch is stored in one
transaction: all of it or none.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, TypeVar

from .. import defaults
from ..backoff import Backoff
from ..errors import BrokerError
from ..forking import sqlite_section
from ..message import undecodable_body
from . import claimers
from .base import (
    Broker,
    OutgoingMessage,
    QueueStats,
    ReceivedMessage,
    StoredMessage,
    dead_letter_name,
    is_dead_letter_name,
)

logger = logging.getLogger("sqjobs.brokers.sqlite")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sqjobs_queues (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sqjobs_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    group_id TEXT,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    claimed_by TEXT
);
CREATE INDEX IF NOT EXISTS sqjobs_messages_ready ON sqjobs_messages (queue, visible_at, id);
"""

#: Seconds a connection waits for another process's write before giving up.
BUSY_TIMEOUT_S = 60.0
#: Pauses between tries to take the write lock while another process holds it (the last one repeats).
LOCK_WAIT_STEPS_S = (0.0, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005)

#: The columns a message is read from. Text columns are read as bytes, so that a row holding
#: bytes that are not UTF-8 can be reported rather than stop the whole receive.
_COLUMNS = ("id, CAST(message_id AS BLOB), CAST(body AS BLOB), CAST(attributes AS BLOB), CAST(group_id AS BLOB),"
            " sent_at, receive_count, receipt IS NOT NULL")

#: How often a receiving broker looks for messages held by processes that are gone.
RECLAIM_INTERVAL_S = 1.0

#: What an SQLite error code means for the person reading the error (primary codes).
_ERROR_MEANINGS = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_READONLY: "the file cannot be written",
    sqlite3.SQLITE_CANTOPEN: "the file cannot be opened",
    sqlite3.SQLITE_PERM: "permission denied",
    sqlite3.SQLITE_BUSY: f"another process held the file locked for over {BUSY_TIMEOUT_S:g} s",
    sqlite3.SQLITE_NOTADB: "the file is not an SQLite database",
    sqlite3.SQLITE_CORRUPT: "the file is damaged",
    sqlite3.SQLITE_IOERR: "the disk failed to read or write",
}


#: The one statement that stores a message (its parameters: :func:`_row`).
_INSERT = ("INSERT INTO sqjobs_messages (queue, message_id, body, attributes, group_id, sent_at, visible_at)"
           " VALUES (?, ?, ?, ?, ?, ?, ?)")


def _attributes_text(attributes: dict[str, str]) -> str:
    """The attributes column for ``attributes``: JSON as ``json.dumps`` writes it, ``{}`` for none.

    Every write of the column goes through here; :meth:`SQLiteBroker._message`
    reads a row whose column is exactly ``{}`` without parsing it.
    """
    return json.dumps(attributes) if attributes else "{}"


def _row(queue: str, message_id: str, message: OutgoingMessage, now: float) -> tuple[Any, ...]:
    """The parameters of :data:`_INSERT` for ``message`` sent on ``queue`` at ``now`` (seconds since the epoch)."""
    return (queue, message_id, message.body, _attributes_text(message.attributes), message.group_id, now,
            now + max(message.delay_s, 0))


def _lenient_text(raw: object) -> str:
    """Text of a column read as bytes; bytes that are not UTF-8 are replaced (ids and names only)."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return "" if raw is None else str(raw)


def _read_attributes(raw: object) -> tuple[dict[str, str], str | None]:
    """The attributes column as a dict of strings, or ``({}, why)`` when it is not a JSON object."""
    if raw == b"{}" or raw == "{}":
        return {}, None  # most messages carry none
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return {}, f"its attributes column is not JSON ({type(exc).__name__}: {exc})"
    if not isinstance(value, dict):
        return {}, f"its attributes column is JSON {type(value).__name__}, not an object"
    return {str(key): item if isinstance(item, str) else json.dumps(item) for key, item in value.items()}, None


def _read_body(raw: object) -> tuple[str, str | None]:
    """The body column as text, or ``("", why)`` when it is not UTF-8."""
    if not isinstance(raw, bytes):
        return ("" if raw is None else str(raw)), None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", (f"its body is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start} of "
                    f"{len(raw)})")


def when_free(statement: Callable[[], T]) -> T:
    """Run ``statement``; while another process holds the file locked, try again in short steps.

    The broker's connections have no SQLite busy handler: it sleeps 1 ms,
    then 2, 5, 10 ms..., while another worker's claim or delete holds the
    write lock for a small part of that, so two busy workers would lose most
    of that sleep on every collision (the figures: docs/explanation/benchmarks.rst,
    "Waiting for the write lock"). Gives up (raises SQLite's "database is
    locked") after BUSY_TIMEOUT_S.
    """
    waited = 0
    deadline = 0.0
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            now = time.monotonic()
            if not deadline:
                deadline = now + BUSY_TIMEOUT_S
            elif now >= deadline:
                raise
        time.sleep(LOCK_WAIT_STEPS_S[min(waited, len(LOCK_WAIT_STEPS_S) - 1)])
        waited += 1


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode, waiting for other processes doing the same.

    Switching a new file's journal mode needs the file to itself, and SQLite
    answers "database is locked" at once, without its busy timeout, while
    another process holds it (many workers opening a new file together).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pauses = Backoff(0.005, 0.1)
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pauses.next())


class SQLiteBroker(Broker):
    """Queues in the SQLite file at ``path`` (created with its directory if missing)."""

    scheme = "sqlite"
    moves_in_place = True
    deletes_while_receiving = True
    #: Holds any delay sqjobs accepts (a timestamp in the row): no database hand-over.
    max_delay_s = defaults.MAX_LATER_S

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.path = path
        self.clock = clock
        self._local = threading.local()
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            blocking = directory
            while blocking != os.path.dirname(blocking) and not os.path.exists(blocking):
                blocking = os.path.dirname(blocking)
            why = (f"{blocking} is a file, not a directory" if os.path.exists(blocking) and not os.path.isdir(blocking)
                   else exc.strerror or str(exc))
            raise BrokerError(f"embedded broker {path}: cannot create its directory {directory}: {why}") from None
        with self._errors("create its tables"):
            conn = self._connection()
            when_free(lambda: conn.executescript(_SCHEMA))  # each statement is IF NOT EXISTS: safe to repeat
        self._add_claimer_column()
        #: When this broker last looked for messages held by processes that are gone.
        self._reclaimed_at = 0.0

    def __repr__(self) -> str:
        return f"<SQLiteBroker {self.path}>"

    @property
    def identity(self) -> str:
        """The broker's file, its path resolved (a file reached through a symbolic link is the same broker)."""
        return f"sqlite://{os.path.realpath(self.path)}"

    # -- connections -----------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
                _switch_to_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout = 0")  # waits are made by when_free, in short steps
            except sqlite3.Error as exc:
                raise self._error(exc, "open it") from exc
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of a read outside a write transaction (waiting, as writes do, while the file is busy)."""
        conn = self._connection()
        return when_free(lambda: conn.execute(sql, parameters).fetchall())

    def _error(self, exc: sqlite3.Error, what: str) -> BrokerError:
        """Return the one-line BrokerError for an SQLite error met while trying to ``what``."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        meaning = _ERROR_MEANINGS.get(primary) if primary is not None else None
        if primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY) and not self._writable():
            meaning = "the file or its directory is read-only (SQLite needs to write both)"
        detail = f"{meaning} ({exc})" if meaning else str(exc)
        return BrokerError(f"embedded broker {self.path}: cannot {what}: {detail}")

    def _writable(self) -> bool:
        """True if this process may write the file (when it exists) and its directory."""
        directory = os.path.dirname(os.path.abspath(self.path))
        return os.access(directory, os.W_OK) and (not os.path.exists(self.path) or os.access(self.path, os.W_OK))

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Raise what SQLite raises inside as BrokerError (see :meth:`_error`); no fork meanwhile."""
        with sqlite_section():
            try:
                yield
            except sqlite3.Error as exc:
                raise self._error(exc, what) from exc

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (BEGIN IMMEDIATE), committed on success, rolled back on error.

        SQLite errors (a full disk, a read-only file) are raised as BrokerError saying ``what`` failed.
        """
        with self._errors(what):
            conn = self._connection()
            when_free(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Roll back the open transaction, if SQLite did not already (it may, after a full disk)."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.warning("rollback failed; the transaction is abandoned", exc_info=True)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- contract ----------------------------------------------------------------------

    def _create_queue(self, queue: str) -> None:
        with self._write(f"create queue {queue!r}") as db:
            for name in (queue, dead_letter_name(queue)):
                db.execute("INSERT OR IGNORE INTO sqjobs_queues (name, created_at) VALUES (?, ?)",
                           (name, self.clock()))

    def send(self, queue: str, body: str, delay_s: float = 0, attributes: dict[str, str] | None = None,
             group_id: str | None = None, dedup_id: str | None = None) -> str:
        return self.send_batch(queue, [OutgoingMessage(body, delay_s, attributes or {}, group_id, dedup_id)])[0]

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        self.ensure_queue(queue)
        now = self.clock()
        if len(messages) == 1:  # .delay(): execute costs less than executemany
            message_id = os.urandom(16).hex()
            with self._write(f"store a message on {queue!r}") as db:
                db.execute(_INSERT, _row(queue, message_id, messages[0], now))
            return [message_id]
        ids = [os.urandom(16).hex() for _ in messages]
        rows = [_row(queue, message_id, message, now) for message_id, message in zip(ids, messages, strict=True)]
        with self._write(f"store {len(rows)} message(s) on {queue!r}") as db:
            db.executemany(_INSERT, rows)
        return ids

    def _message(self, queue: str, row: tuple[Any, ...], receipt: str, received: bool = False) -> ReceivedMessage:
        """The ReceivedMessage of a row read with :data:`_COLUMNS` (``received``: counted once more).

        A row that cannot be read gets a body saying why.
        """
        row_id, raw_id, raw_body, raw_attributes, raw_group, sent_at, receive_count, unsettled = row
        if raw_attributes == b"{}" and raw_group is None and type(receive_count) is int and type(sent_at) is float:
            # As sqjobs writes them (UTF-8 text, no attributes, no group): only the text to decode.
            try:
                body, message_id = raw_body.decode("utf-8"), raw_id.decode("utf-8")
            except (AttributeError, UnicodeDecodeError):
                pass  # the checks below say what is wrong with it
            else:
                return ReceivedMessage(queue, message_id, receipt, body, receive_count + (1 if received else 0), {},
                                       sent_at, None, bool(unsettled) and received)
        try:
            body, body_problem = _read_body(raw_body)
            attributes, attributes_problem = _read_attributes(raw_attributes)
            problems = [problem for problem in (body_problem, attributes_problem) if problem]
            sent = float(sent_at)
            count = int(receive_count) + (1 if received else 0)
        except Exception as exc:  # a damaged row is that message's problem, not the queue's
            body, attributes, problems, sent, count = "", {}, [f"{type(exc).__name__}: {exc}"], 0.0, 1
        if problems:
            body = undecodable_body(f"stored message {row_id} of {queue!r} in {self.path} cannot be read: "
                                    + "; ".join(problems))
            if received:
                logger.warning("message %s on %s cannot be read: %s", row_id, queue, "; ".join(problems))
        group = _lenient_text(raw_group) if raw_group is not None else None
        return ReceivedMessage(queue, _lenient_text(raw_id), receipt, body, count, attributes, sent, group,
                               bool(unsettled) and received)

    def _add_claimer_column(self) -> None:
        """Give a queue file made by an older sqjobs the ``claimed_by`` column."""
        with self._errors("read its columns"):
            columns = {row[1] for row in self._read("PRAGMA table_info(sqjobs_messages)")}
        if "claimed_by" in columns:
            return
        try:
            with self._write("add its claimed_by column") as db:
                db.execute("ALTER TABLE sqjobs_messages ADD COLUMN claimed_by TEXT")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it at the same moment
                raise

    def reclaim_from_the_dead(self, queue: str) -> int:
        """Make the messages of ``queue`` held by processes of this host that are gone visible again; return how many.

        Their worker was killed before it could hand them back; without this
        they would wait out their visibility timeout.
        """
        now = self.clock()
        with self._errors(f"look for messages of workers gone on {queue!r}"):
            rows = self._read(
                "SELECT DISTINCT claimed_by FROM sqjobs_messages WHERE queue = ? AND receipt IS NOT NULL"
                " AND visible_at > ? AND claimed_by IS NOT NULL", (queue, now))
        freed = 0
        for (claimer,) in rows:
            if not claimers.is_gone(claimer):
                continue
            with self._write(f"free the messages of {claimer} on {queue!r}") as db:
                count = db.execute(
                    "UPDATE sqjobs_messages SET visible_at = ? WHERE queue = ? AND claimed_by = ?"
                    " AND receipt IS NOT NULL AND visible_at > ?", (now, queue, claimer, now)).rowcount
            logger.info("%d message(s) on %s held by %s, a process that is gone, are visible again", count, queue,
                        claimer)
            freed += count
        return freed

    def _claim(self, queue: str, max_messages: int, visibility_timeout_s: float,
               deletes: Sequence[str] = ()) -> list[ReceivedMessage]:
        """Claim up to ``max_messages`` visible messages in one short write transaction (two statements).

        The messages of receipts ``deletes`` are deleted in the same
        transaction, first. Each claim has a fresh token; a message's receipt
        is its row id and the token, so a receipt is never reused. The rows
        are turned into messages after the transaction, so the write lock is
        held briefly.
        """
        if time.monotonic() - self._reclaimed_at >= RECLAIM_INTERVAL_S:
            self._reclaimed_at = time.monotonic()
            self.reclaim_from_the_dead(queue)
        now = self.clock()
        token = os.urandom(16).hex()
        what = f"delete {len(deletes)} message(s) and receive from {queue!r}" if deletes else f"receive from {queue!r}"
        with self._write(what) as db:
            if deletes:
                db.executemany("DELETE FROM sqjobs_messages WHERE id = ? AND receipt = ?",
                               [(self._row_id(r), r) for r in deletes])
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM sqjobs_messages WHERE queue = ? AND visible_at <= ?"
                " ORDER BY visible_at, id LIMIT ?",
                (queue, now, max_messages),
            ).fetchall()
            if rows:
                db.execute(
                    "UPDATE sqjobs_messages SET visible_at = ?, receive_count = receive_count + 1,"
                    " receipt = id || ':' || ?, claimed_by = ?"
                    f" WHERE id IN ({', '.join('?' * len(rows))})",
                    (now + visibility_timeout_s, token, claimers.this_process(), *(row[0] for row in rows)),
                )
        return [self._message(queue, row, f"{row[0]}:{token}", received=True) for row in rows]

    def _next_visible_in(self, queue: str) -> float | None:
        """Seconds until the next hidden message of ``queue`` becomes visible (None: none is hidden)."""
        now = self.clock()
        with self._errors(f"look into {queue!r}"):
            [(soonest,)] = self._read(
                "SELECT MIN(visible_at) FROM sqjobs_messages WHERE queue = ? AND visible_at > ?", (queue, now))
        return None if soonest is None else max(float(soonest) - now, 0.0)

    def _data_version(self) -> int:
        """A number that changes when another connection commits to the file (``PRAGMA data_version``)."""
        with self._errors("watch it"):
            return int(self._read("PRAGMA data_version")[0][0])

    def receive(self, queue: str, max_messages: int = 1, wait_s: float = 0,
                visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S) -> list[ReceivedMessage]:
        """Claim visible messages; while there are none, wait up to ``wait_s`` for one.

        A waiting receive watches the file for commits by other connections
        every ``SQLITE_CHANGE_POLL_S`` (a cheap read, no lock) and claims as
        soon as something changed, or when a hidden message's time comes: a
        message sent to an idle worker starts within milliseconds.
        """
        return self._receive(queue, max_messages, wait_s, visibility_timeout_s, ())

    def delete_then_receive(self, deletes: Sequence[str], queue: str, max_messages: int = 1, wait_s: float = 0,
                            visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S) -> list[ReceivedMessage]:
        """Delete ``deletes`` in the transaction of the first claim (see :meth:`receive`): one write, not two."""
        return self._receive(queue, max_messages, wait_s, visibility_timeout_s, deletes)

    def _receive(self, queue: str, max_messages: int, wait_s: float, visibility_timeout_s: float,
                 deletes: Sequence[str]) -> list[ReceivedMessage]:
        self.ensure_queue(queue)
        deadline = time.monotonic() + wait_s
        count = max(1, min(max_messages, defaults.MAX_BATCH))
        claimed = self._claim(queue, count, visibility_timeout_s, deletes)  # a busy queue: no watching needed
        while not claimed:
            if time.monotonic() >= deadline or self.wakeup.is_set():
                return claimed
            # Read the file's version before claiming again: a commit after this claim wakes the wait.
            version = self._data_version()
            claimed = self._claim(queue, count, visibility_timeout_s)
            if claimed or time.monotonic() >= deadline or self.wakeup.is_set():
                return claimed
            wake_at = deadline
            hidden_for = self._next_visible_in(queue)
            if hidden_for is not None:
                wake_at = min(wake_at, time.monotonic() + hidden_for)
            while time.monotonic() < wake_at:
                if self.wakeup.wait(min(defaults.SQLITE_CHANGE_POLL_S, max(wake_at - time.monotonic(), 0))):
                    return []
                if self._data_version() != version:
                    break
        return claimed

    @staticmethod
    def _row_id(receipt: str) -> int:
        try:
            return int(receipt.split(":", 1)[0])
        except ValueError:
            raise BrokerError(f"not a receipt of the embedded broker: {receipt!r}") from None

    def delete(self, queue: str, receipt: str) -> None:
        self.delete_batch(queue, [receipt])

    def delete_batch(self, queue: str, receipts: Sequence[str]) -> None:
        with self._write(f"delete {len(receipts)} message(s) on {queue!r}") as db:
            db.executemany("DELETE FROM sqjobs_messages WHERE id = ? AND receipt = ?",
                           [(self._row_id(r), r) for r in receipts])

    def change_visibility(self, queue: str, receipt: str, timeout_s: float) -> None:
        self.change_visibility_batch(queue, [receipt], timeout_s)

    def change_visibility_batch(self, queue: str, receipts: Sequence[str], timeout_s: float) -> None:
        visible_at = self.clock() + max(timeout_s, 0)
        with self._write(f"change the visibility of {len(receipts)} message(s) on {queue!r}") as db:
            db.executemany("UPDATE sqjobs_messages SET visible_at = ? WHERE id = ? AND receipt = ?",
                           [(visible_at, self._row_id(r), r) for r in receipts])

    def postpone(self, queue: str, receipt: str, delay_s: float) -> None:
        """Hide the message for ``delay_s`` and end its hold: it counts as delayed, not in flight."""
        with self._write(f"postpone a message on {queue!r}") as db:
            db.execute("UPDATE sqjobs_messages SET visible_at = ?, receipt = NULL WHERE id = ? AND receipt = ?",
                       (self.clock() + max(delay_s, 0), self._row_id(receipt), receipt))

    def release(self, queue: str, receipts: Sequence[str]) -> None:
        """Make unstarted messages visible at once and take their receive back."""
        now = self.clock()
        with self._write(f"hand back {len(receipts)} message(s) on {queue!r}") as db:
            db.executemany(
                "UPDATE sqjobs_messages SET visible_at = ?, receive_count = MAX(receive_count - 1, 0),"
                " receipt = NULL WHERE id = ? AND receipt = ?",
                [(now, self._row_id(r), r) for r in receipts])

    def _move(self, source: str, message: ReceivedMessage, target: str, attributes: dict[str, str], delay_s: float,
              receive_count: int) -> None:
        """Move the stored row in one transaction (its stored body kept as it is).

        Raises BrokerError if it was not moved: the receipt is stale (the
        message is someone else's now) or SQLite failed.
        """
        self.ensure_queue(target)
        with self._write(f"move message {message.message_id} to {target!r}") as db:
            moved = db.execute(
                "UPDATE sqjobs_messages SET queue = ?, attributes = ?, visible_at = ?, receive_count = ?,"
                " receipt = NULL WHERE id = ? AND receipt = ?",
                (target, _attributes_text(attributes), self.clock() + max(delay_s, 0), receive_count,
                 self._row_id(message.receipt), message.receipt),
            ).rowcount
        if not moved:
            raise BrokerError(f"message {message.message_id} on {source!r} was not moved to {target!r}: its receipt "
                              "is stale (the message was received again after its visibility timeout)")

    def _count(self, queue: str, condition: str, now: float) -> int:
        with self._errors(f"count the messages of {queue!r}"):
            [row] = self._read(f"SELECT COUNT(*) FROM sqjobs_messages WHERE queue = ? AND {condition}", (queue, now))
        return int(row[0])

    def stats(self, queue: str) -> QueueStats:
        now = self.clock()
        return QueueStats(
            queue=queue,
            visible=self._count(queue, "visible_at <= ?", now),
            in_flight=self._count(queue, "visible_at > ? AND receipt IS NOT NULL", now),
            delayed=self._count(queue, "visible_at > ? AND receipt IS NULL", now),
            dead=self._count(dead_letter_name(queue), "? IS NOT NULL", now),
        )

    can_find = True

    def find(self, body_prefix: str) -> list[StoredMessage]:
        """Every stored message whose body starts with ``body_prefix`` (one scan of the file's messages)."""
        with self._errors("look for a message"):
            rows = self._read(
                "SELECT queue, CAST(message_id AS BLOB), CAST(body AS BLOB), receipt IS NOT NULL FROM sqjobs_messages"
                " WHERE substr(body, 1, ?) = ?", (len(body_prefix), body_prefix))
        return [StoredMessage(queue, _lenient_text(raw_id), _read_body(raw_body)[0], bool(held))
                for queue, raw_id, raw_body, held in rows]

    def withdraw(self, queue: str, message_id: str) -> bool:
        """Delete the message unless a worker holds it (its receipt is set); True if it was deleted."""
        with self._write(f"withdraw message {message_id} from {queue!r}") as db:
            deleted = db.execute("DELETE FROM sqjobs_messages WHERE queue = ? AND message_id = ? AND receipt IS NULL",
                                 (queue, message_id)).rowcount
        return bool(deleted)

    def next_due(self, queue: str) -> tuple[int, float | None]:
        """The delayed messages of ``queue`` (hidden, held by no one): how many, and seconds until the soonest."""
        now = self.clock()
        with self._errors(f"look into {queue!r}"):
            [(count, soonest)] = self._read(
                "SELECT COUNT(*), MIN(visible_at) FROM sqjobs_messages WHERE queue = ? AND visible_at > ?"
                " AND receipt IS NULL", (queue, now))
        return int(count), (None if soonest is None else max(float(soonest) - now, 0.0))

    def purge(self, queue: str) -> None:
        with self._write(f"purge {queue!r}") as db:
            db.execute("DELETE FROM sqjobs_messages WHERE queue = ?", (queue,))

    def queues(self) -> list[str]:
        with self._errors("list the queues"):
            rows = self._read("SELECT name FROM sqjobs_queues ORDER BY name")
        return [name for (name,) in rows if not is_dead_letter_name(name)]

    def peek(self, queue: str, max_messages: int = 10) -> list[ReceivedMessage]:
        with self._errors(f"read the messages of {queue!r}"):
            rows = self._read(
                f"SELECT {_COLUMNS} FROM sqjobs_messages WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id"
                " LIMIT ?", (queue, self.clock(), max_messages))
        return [self._message(queue, row, "") for row in rows]
