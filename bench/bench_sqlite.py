"""Embedded broker throughput: N no-op jobs enqueued and drained by 2 worker processes.

Prints, in one run: enqueue jobs/s and drain jobs/s through sqjobs, next to
the raw limit of the same SQLite file layout (a bare claim + delete loop with
the same statements and no sqjobs code), and the ratios.

    python bench/bench_sqlite.py [--jobs 5000] [--workers 2] [--isolation process|none]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import sqjobs  # noqa: E402
from sqjobs.brokers.sqlite import _SCHEMA  # noqa: E402


def sqjobs_run(folder: Path, jobs: int, workers: int, isolation: str = "process") -> tuple[float, float]:
    """Return (enqueue jobs/s, drain jobs/s) through sqjobs with ``workers`` worker processes."""
    import bench_jobs

    config = folder / "bench.conf"
    config.write_text(
        f"[sqjobs]\nbroker = sqlite:///{folder / 'queue.db'}\njobs = bench_jobs\npath = {HERE}\n"
    )
    sqjobs.configure(str(config))
    started = time.perf_counter()
    bench_jobs.noop.delay_many((i,) for i in range(jobs))
    enqueue_s = time.perf_counter() - started
    started = time.perf_counter()
    processes = [
        subprocess.Popen([sys.executable, "-m", "sqjobs", "worker", "-c", str(config), "bench", "--burst",
                          "--isolation", isolation],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    for process in processes:
        if process.wait() != 0:
            raise SystemExit(f"a worker failed with exit code {process.returncode}")
    drain_s = time.perf_counter() - started
    left = sqjobs.get_broker().stats("bench")
    if left.visible or left.in_flight or left.dead:
        raise SystemExit(f"queue not drained: {left}")
    return jobs / enqueue_s, jobs / drain_s


def _raw_drainer(path: str, batch: int) -> int:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    done = 0
    while True:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute("SELECT id FROM sqjobs_messages WHERE queue = ? AND visible_at <= ?"
                            " ORDER BY visible_at, id LIMIT ?", ("bench", now, batch)).fetchall()
        for (row_id,) in rows:
            conn.execute("UPDATE sqjobs_messages SET visible_at = ?, receive_count = receive_count + 1,"
                         " receipt = ? WHERE id = ?", (now + 60, uuid.uuid4().hex, row_id))
        conn.execute("COMMIT")
        if not rows:
            return done
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM sqjobs_messages WHERE id = ?", rows)
        conn.execute("COMMIT")
        done += len(rows)


def raw_run(folder: Path, jobs: int, workers: int) -> tuple[float, float]:
    """Return (insert rows/s, claim+delete rows/s) of bare SQLite with ``workers`` processes."""
    path = str(folder / "raw.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA)
    started = time.perf_counter()
    now = time.time()
    for start in range(0, jobs, 10):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO sqjobs_messages (queue, message_id, body, attributes, sent_at, visible_at)"
            " VALUES ('bench', ?, 'x', '{}', ?, ?)",
            [(uuid.uuid4().hex, now, now) for _ in range(start, min(start + 10, jobs))])
        conn.execute("COMMIT")
    insert_s = time.perf_counter() - started
    started = time.perf_counter()
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            _raw_drainer(path, 10)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    drain_s = time.perf_counter() - started
    return jobs / insert_s, jobs / drain_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--isolation", choices=("process", "none"), default="process",
                        help="Where the workers run jobs: their job process (the default) or themselves.")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        enqueue, drain = sqjobs_run(Path(folder), options.jobs, options.workers, options.isolation)
        raw_enqueue, raw_drain = raw_run(Path(folder), options.jobs, options.workers)
    print(f"embedded SQLite broker, {options.jobs} no-op jobs, {options.workers} worker processes, "
          f"isolation {options.isolation}")
    print(f"{'':24}{'sqjobs':>12}{'raw SQLite':>14}{'ratio':>8}")
    print(f"{'enqueue (jobs/s)':24}{enqueue:>12.0f}{raw_enqueue:>14.0f}{enqueue / raw_enqueue:>8.2f}")
    print(f"{'drain (jobs/s)':24}{drain:>12.0f}{raw_drain:>14.0f}{drain / raw_drain:>8.2f}")


if __name__ == "__main__":
    main()
