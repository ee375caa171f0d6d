"""The embedded broker: queues in one SQLite file, shared safely by processes on one machine.

The file is in WAL mode. Every claim runs in ``BEGIN IMMEDIATE`` so that two
workers never take the same message and never see "database is locked"
(waiting writers queue on SQLite's busy timeout). Visibility works as on SQS:
a received message is hidden until ``visible_at``; each receive raises its
receive count and gives it a fresh receipt, so a stale receipt cannot delete
a message someone else now holds.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from .. import defaults
from ..errors import BrokerError
from . import claimers
from .base import (
    ORIGIN_ATTRIBUTE,
    REASON_ATTRIBUTE,
    Broker,
    OutgoingMessage,
    QueueStats,
    ReceivedMessage,
    dead_letter_name,
    is_dead_letter_name,
)

logger = logging.getLogger("sqjobs.brokers.sqlite")

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

#: How often a receiving broker looks for messages held by processes that are gone.
RECLAIM_INTERVAL_S = 1.0

#: Seconds a connection waits for another process's write before giving up.
BUSY_TIMEOUT_S = 60.0


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode, waiting for other processes doing the same.

    Switching a new file's journal mode needs the file to itself, and SQLite
    answers "database is locked" at once, without its busy timeout, while
    another process holds it (many workers opening a new file together).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause_s = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.1)


class SQLiteBroker(Broker):
    """Queues in the SQLite file at ``path`` (created with its directory if missing)."""

    scheme = "sqlite"

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.path = path
        self.clock = clock
        self._local = threading.local()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._connection().executescript(_SCHEMA)
        self._add_claimer_column()
        #: When this broker last looked for messages held by processes that are gone.
        self._reclaimed_at = 0.0

    def __repr__(self) -> str:
        return f"<SQLiteBroker {self.path}>"

    # -- connections -----------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
                _switch_to_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise BrokerError(f"cannot open the embedded broker file {self.path}: {exc}") from exc
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (BEGIN IMMEDIATE), committed on success."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- contract ----------------------------------------------------------------------

    def _create_queue(self, queue: str) -> None:
        with self._write() as db:
            for name in (queue, dead_letter_name(queue)):
                db.execute("INSERT OR IGNORE INTO sqjobs_queues (name, created_at) VALUES (?, ?)",
                           (name, self.clock()))

    def _insert(self, db: sqlite3.Connection, queue: str, message: OutgoingMessage, now: float) -> str:
        message_id = uuid.uuid4().hex
        db.execute(
            "INSERT INTO sqjobs_messages (queue, message_id, body, attributes, group_id, sent_at, visible_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (queue, message_id, message.body, json.dumps(message.attributes), message.group_id, now,
             now + max(message.delay_s, 0)),
        )
        return message_id

    def send(self, queue: str, body: str, delay_s: float = 0, attributes: dict[str, str] | None = None,
             group_id: str | None = None, dedup_id: str | None = None) -> str:
        return self.send_batch(queue, [OutgoingMessage(body, delay_s, attributes or {}, group_id, dedup_id)])[0]

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        self.ensure_queue(queue)
        now = self.clock()
        with self._write() as db:
            return [self._insert(db, queue, message, now) for message in messages]

    def _add_claimer_column(self) -> None:
        """Give a queue file made by an older sqjobs the ``claimed_by`` column."""
        columns = {row[1] for row in self._connection().execute("PRAGMA table_info(sqjobs_messages)")}
        if "claimed_by" in columns:
            return
        try:
            with self._write() as db:
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
        rows = self._connection().execute(
            "SELECT DISTINCT claimed_by FROM sqjobs_messages WHERE queue = ? AND receipt IS NOT NULL"
            " AND visible_at > ? AND claimed_by IS NOT NULL", (queue, now)).fetchall()
        freed = 0
        for (claimer,) in rows:
            if not claimers.is_gone(claimer):
                continue
            with self._write() as db:
                count = db.execute(
                    "UPDATE sqjobs_messages SET visible_at = ? WHERE queue = ? AND claimed_by = ?"
                    " AND receipt IS NOT NULL AND visible_at > ?", (now, queue, claimer, now)).rowcount
            logger.info("%d message(s) on %s held by %s, a process that is gone, are visible again", count, queue,
                        claimer)
            freed += count
        return freed

    def _claim(self, queue: str, max_messages: int, visibility_timeout_s: float) -> list[ReceivedMessage]:
        if time.monotonic() - self._reclaimed_at >= RECLAIM_INTERVAL_S:
            self._reclaimed_at = time.monotonic()
            self.reclaim_from_the_dead(queue)
        now = self.clock()
        claimer = claimers.this_process()
        with self._write() as db:
            rows = db.execute(
                "SELECT id, message_id, body, attributes, group_id, sent_at, receive_count, receipt IS NOT NULL"
                " FROM sqjobs_messages WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT ?",
                (queue, now, max_messages),
            ).fetchall()
            claimed = []
            for row_id, message_id, body, attributes, group_id, sent_at, receive_count, unsettled in rows:
                receipt = f"{row_id}:{uuid.uuid4().hex}"
                db.execute(
                    "UPDATE sqjobs_messages SET visible_at = ?, receive_count = receive_count + 1, receipt = ?,"
                    " claimed_by = ? WHERE id = ?",
                    (now + visibility_timeout_s, receipt, claimer, row_id),
                )
                claimed.append(ReceivedMessage(queue, message_id, receipt, body, receive_count + 1,
                                               json.loads(attributes), sent_at, group_id, bool(unsettled)))
            return claimed

    def receive(self, queue: str, max_messages: int = 1, wait_s: float = 0,
                visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S) -> list[ReceivedMessage]:
        self.ensure_queue(queue)
        deadline = time.monotonic() + wait_s
        pause_s = defaults.SQLITE_POLL_INTERVAL_S
        while True:
            claimed = self._claim(queue, max(1, min(max_messages, defaults.MAX_BATCH)), visibility_timeout_s)
            if claimed or time.monotonic() >= deadline or self.wakeup.is_set():
                return claimed
            self.wakeup.wait(min(pause_s, max(deadline - time.monotonic(), 0)))
            pause_s = min(pause_s * 2, defaults.SQLITE_MAX_POLL_INTERVAL_S)

    @staticmethod
    def _row_id(receipt: str) -> int:
        try:
            return int(receipt.split(":", 1)[0])
        except ValueError:
            raise BrokerError(f"not a receipt of the embedded broker: {receipt!r}") from None

    def delete(self, queue: str, receipt: str) -> None:
        self.delete_batch(queue, [receipt])

    def delete_batch(self, queue: str, receipts: Sequence[str]) -> None:
        with self._write() as db:
            db.executemany("DELETE FROM sqjobs_messages WHERE id = ? AND receipt = ?",
                           [(self._row_id(r), r) for r in receipts])

    def change_visibility(self, queue: str, receipt: str, timeout_s: float) -> None:
        self.change_visibility_batch(queue, [receipt], timeout_s)

    def change_visibility_batch(self, queue: str, receipts: Sequence[str], timeout_s: float) -> None:
        visible_at = self.clock() + max(timeout_s, 0)
        with self._write() as db:
            db.executemany("UPDATE sqjobs_messages SET visible_at = ? WHERE id = ? AND receipt = ?",
                           [(visible_at, self._row_id(r), r) for r in receipts])

    def postpone(self, queue: str, receipt: str, delay_s: float) -> None:
        """Hide the message for ``delay_s`` and end its hold: it counts as delayed, not in flight."""
        with self._write() as db:
            db.execute("UPDATE sqjobs_messages SET visible_at = ?, receipt = NULL WHERE id = ? AND receipt = ?",
                       (self.clock() + max(delay_s, 0), self._row_id(receipt), receipt))

    def requeue(self, queue: str, message: ReceivedMessage, delay_s: float = 0,
                attributes: dict[str, str] | None = None) -> None:
        """Put the message back unrun in place: its receive taken back, ``attributes`` added."""
        merged = dict(message.attributes)
        merged.update(attributes or {})
        with self._write() as db:
            db.execute(
                "UPDATE sqjobs_messages SET visible_at = ?, receive_count = MAX(receive_count - 1, 0),"
                " receipt = NULL, attributes = ? WHERE id = ? AND receipt = ?",
                (self.clock() + max(delay_s, 0), json.dumps(merged), self._row_id(message.receipt),
                 message.receipt))

    def release(self, queue: str, receipts: Sequence[str]) -> None:
        """Make unstarted messages visible at once and take their receive back."""
        now = self.clock()
        with self._write() as db:
            db.executemany(
                "UPDATE sqjobs_messages SET visible_at = ?, receive_count = MAX(receive_count - 1, 0),"
                " receipt = NULL WHERE id = ? AND receipt = ?",
                [(now, self._row_id(r), r) for r in receipts])

    def dead_letter(self, queue: str, message: ReceivedMessage, reason: str) -> None:
        """Move the message to the dead-letter queue in one transaction."""
        attributes = dict(message.attributes)
        attributes[REASON_ATTRIBUTE] = reason[:1000]
        attributes[ORIGIN_ATTRIBUTE] = queue
        self.ensure_queue(queue)
        with self._write() as db:
            db.execute(
                "UPDATE sqjobs_messages SET queue = ?, attributes = ?, visible_at = ?, receive_count = 0,"
                " receipt = NULL WHERE id = ? AND receipt = ?",
                (dead_letter_name(queue), json.dumps(attributes), self.clock(),
                 self._row_id(message.receipt), message.receipt),
            )

    def _count(self, queue: str, condition: str, now: float) -> int:
        row = self._connection().execute(
            f"SELECT COUNT(*) FROM sqjobs_messages WHERE queue = ? AND {condition}", (queue, now)
        ).fetchone()
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

    def purge(self, queue: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM sqjobs_messages WHERE queue = ?", (queue,))

    def queues(self) -> list[str]:
        rows = self._connection().execute("SELECT name FROM sqjobs_queues ORDER BY name").fetchall()
        return [name for (name,) in rows if not is_dead_letter_name(name)]

    def peek(self, queue: str, max_messages: int = 10) -> list[ReceivedMessage]:
        rows = self._connection().execute(
            "SELECT id, message_id, body, attributes, group_id, sent_at, receive_count FROM sqjobs_messages"
            " WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT ?",
            (queue, self.clock(), max_messages),
        ).fetchall()
        return [ReceivedMessage(queue, message_id, "", body, count, json.loads(attributes), sent_at, group_id)
                for _, message_id, body, attributes, group_id, sent_at, count in rows]
