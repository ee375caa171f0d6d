"""The raw SQLite limit: a bare claim + delete loop on the embedded broker's table layout, no sqjobs code.

The same loop ``bench/bench_sqlite.py`` measures, with the same job body as
every other row: each worker process claims up to 10 visible rows in one
``BEGIN IMMEDIATE`` transaction (hide them, count the receive, new receipt),
runs the body for each, and deletes them in a second transaction. In the I/O
case each process runs :data:`~peerbench.settings.THREADS` such loops in
threads, one row at a time. It is what the machine can do with SQLite and
Redis alone: the ceiling the sqjobs row is compared with.

Run as a worker: ``python -m peerbench.raw_peer DATABASE CASE`` (it loops
until it is killed, polling every 5 ms when the table is empty).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path

from . import bodies
from .base import Send, SendMany, System
from .settings import PROCESSES, THREADS

#: The embedded broker's message table, as sqjobs lays it out today (copied, so that the
#: limit never runs sqjobs code).
SCHEMA = """
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
QUEUE = "default"
#: Rows claimed at once: sqjobs' default prefetch.
BATCH = 10
#: Pause when the table is empty.
IDLE_POLL_S = 0.005
#: How long a claimed row stays hidden.
VISIBILITY_S = 60.0
_INSERT = ("INSERT INTO sqjobs_messages (queue, message_id, body, attributes, sent_at, visible_at)"
           " VALUES (?, ?, ?, '{}', ?, ?)")


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection as the embedded broker opens one: WAL, synchronous NORMAL, autocommit."""
    conn = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def body(index: int) -> str:
    """A message as any producer builds one: base64 of the JSON envelope, with a fresh id."""
    envelope = {"id": uuid.uuid4().hex, "name": "peerbench.cpu", "args": [index], "kwargs": {}}
    return base64.b64encode(json.dumps(envelope).encode()).decode()


def row(index: int) -> tuple:
    """The values of one inserted row."""
    now = time.time()
    return (QUEUE, uuid.uuid4().hex, body(index), now, now)


def drain_forever(path: str, job: Send, batch: int) -> None:
    """Claim up to ``batch`` rows, run ``job`` for each, delete them; forever."""
    conn = connect(path)
    while True:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute("SELECT id, body FROM sqjobs_messages WHERE queue = ? AND visible_at <= ?"
                            " ORDER BY visible_at, id LIMIT ?", (QUEUE, now, batch)).fetchall()
        conn.executemany("UPDATE sqjobs_messages SET visible_at = ?, receive_count = receive_count + 1,"
                         " receipt = ? WHERE id = ?",
                         [(now + VISIBILITY_S, uuid.uuid4().hex, row_id) for row_id, _ in rows])
        conn.execute("COMMIT")
        if not rows:
            time.sleep(IDLE_POLL_S)
            continue
        for _ in rows:
            job(0)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM sqjobs_messages WHERE id = ?", [(row_id,) for row_id, _ in rows])
        conn.execute("COMMIT")


class RawPeer(System):
    """The raw SQLite loop (see the module docstring)."""

    name = family = "raw"
    cases = ("cpu", "io", "enqueue", "eager")
    single_api = "INSERT + COMMIT"

    def prepare(self, folder: Path) -> None:
        conn = connect(folder / "raw.db")
        conn.executescript(SCHEMA)
        conn.close()

    def worker_commands(self, case: str, folder: Path) -> list[list[str]]:
        return [[sys.executable, "-m", "peerbench.raw_peer", str(folder / "raw.db"), case]] * PROCESSES

    def how(self, case: str) -> str:
        threads = f" x {THREADS} threads" if case == "io" else ""
        return f"{PROCESSES} processes{threads}, claim {BATCH if case != 'io' else 1} + delete"

    def sender(self, case: str, folder: Path) -> Send:
        conn = connect(folder / "raw.db")

        def send(index: int) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_INSERT, row(index))
            conn.execute("COMMIT")

        return send

    def bulk_sender(self, case: str, folder: Path) -> tuple[str, SendMany]:
        conn = connect(folder / "raw.db")

        def send_many(indexes: range) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, (row(index) for index in indexes))
            conn.execute("COMMIT")

        return "executemany, one transaction", send_many

    def eager(self, folder: Path) -> tuple[str, Send]:
        return "plain call", bodies.noop


def main(path: str, case: str) -> None:
    """The worker process: drain ``path`` for ``case`` until killed."""
    if case == "io":
        threads = [threading.Thread(target=drain_forever, args=(path, bodies.io, 1), daemon=True)
                   for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        drain_forever(path, bodies.cpu, BATCH)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
