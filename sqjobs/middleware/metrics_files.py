"""The metrics folder kept bounded: the counters of processes that are gone are merged into one file per kind.

In prometheus_client's multiprocess mode every process writes its own files
(``counter_PID.db``, ``histogram_PID.db``, ``gauge_livesum_PID.db``...) and a
scrape adds them all up. Left alone, every worker that exits (``max_jobs``,
a crash, a reload) leaves its files behind, and so does each of its job
processes. Here the files of processes that are gone are folded in:

- counters, histograms (and summaries) are added, value by value (the same
  keys prometheus_client writes), into ``counter_merged.db``,
  ``histogram_merged.db``..., then the dead process's files are removed;
- live gauges (``livesum`` and the other ``live*`` modes) of a dead process
  are dropped (``mark_process_dead``); other gauge modes are left as they are.

The folder then holds the files of the live processes, one merged file per
kind, and ``merge.lock``.

Who merges: whoever finds files of processes that are gone while it holds the
folder's lock, that is every process when it starts recording (a worker
restarted after ``max_jobs`` or a ``kill -9`` merges what its predecessor and
that one's job processes left), and every scrape. Never a live process's
files, not even by that process at its exit: it could still write a count
after the merge read its file, and that count would be lost.

Counts stay exact: a scrape reads the folder under the same lock, so it
never sees a merged file that holds a process's counts beside that process's
own files. A merge first writes the new merged files beside the old ones
(``*.db.new``, which a scrape does not read), then commits by writing
``merge.pending`` (the list of renames and removals), then carries it out;
whoever takes the lock next finishes a merge whose process was killed after
the commit, and drops the ``*.db.new`` of one killed before it.

A process is gone when its pid no longer exists. A new process that reuses
the pid of a gone one continues its files (prometheus_client's own
behaviour); pids are reused only after the kernel's pid range wrapped, so
the short window between the check and the removal is left open.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from typing import Iterator

import psutil

from ..files import atomic_write

logger = logging.getLogger("sqjobs.metrics_files")

#: The lock every merge and every scrape holds.
LOCK_NAME = "merge.lock"
#: A committed merge still to carry out: {"merged": [names], "dead": [names]}.
PENDING_NAME = "merge.pending"
#: Suffix of a merged file being written (a scrape reads only ``*.db``).
NEW_SUFFIX = ".new"
#: Files of counters, histograms and summaries whose values add up, by process id.
_ADDED = re.compile(r"^(counter|histogram|summary)_(\d+)\.db$")
#: Files of live gauges, by process id.
_LIVE_GAUGE = re.compile(r"^gauge_live\w*_(\d+)\.db$")
#: Seconds between two tries of a busy lock.
_LOCK_POLL_S = 0.02


def merged_name(kind: str) -> str:
    """The file holding the ``kind`` values (counter, histogram, summary) of every gone process."""
    return f"{kind}_merged.db"


@contextlib.contextmanager
def locked(directory: str, wait_s: float) -> Iterator[bool]:
    """Hold ``directory``'s lock, waiting up to ``wait_s`` for it; yield whether it is held.

    A merge left half done by a killed process is finished first. Raises OSError
    when the lock file cannot be opened.
    """
    fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        held = _acquire(fd, wait_s)
        if held:
            _finish(directory)
        yield held
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, wait_s: float) -> bool:
    """Lock ``fd`` (exclusive), trying for up to ``wait_s``; return whether it is locked."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_LOCK_POLL_S)


def _finish(directory: str) -> None:
    """Carry out a committed merge; drop the new files of one that was never committed."""
    pending = os.path.join(directory, PENDING_NAME)
    try:
        with open(pending, encoding="utf-8") as handle:
            plan = json.load(handle)
    except FileNotFoundError:
        for name in os.listdir(directory):
            if name.endswith(".db" + NEW_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
        return
    _carry_out(directory, plan)


def _carry_out(directory: str, plan: dict[str, list[str]]) -> None:
    """Rename the new merged files into place, remove the merged processes' files, then the plan (idempotent)."""
    for name in plan["merged"]:
        with contextlib.suppress(FileNotFoundError):
            os.replace(os.path.join(directory, name + NEW_SUFFIX), os.path.join(directory, name))
    for name in plan["dead"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    os.unlink(os.path.join(directory, PENDING_NAME))


def _added_values(paths: list[str]) -> dict[str, float]:
    """Every key of the files at ``paths`` with its values added up."""
    from prometheus_client.mmap_dict import MmapedDict

    totals: dict[str, float] = {}
    for path in paths:
        for key, value, _timestamp, _position in MmapedDict.read_all_values_from_file(path):
            totals[key] = totals.get(key, 0.0) + value
    return totals


def _write_values(path: str, values: dict[str, float]) -> None:
    from prometheus_client.mmap_dict import MmapedDict

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    written = MmapedDict(path)
    try:
        for key, value in values.items():
            written.write_value(key, value, 0.0)
    finally:
        written.close()


def merge_gone(directory: str) -> list[int]:
    """Merge the files of the processes gone from ``directory``; return their pids. The lock must be held."""
    from prometheus_client import multiprocess

    names = sorted(os.listdir(directory))
    alive: dict[int, bool] = {}

    def gone(pid: int) -> bool:
        if pid not in alive:
            alive[pid] = psutil.pid_exists(pid)
        return not alive[pid]

    dead: dict[str, list[str]] = {}
    gone_pids: set[int] = set()
    for name in names:
        match = _ADDED.match(name)
        if match and gone(int(match.group(2))):
            dead.setdefault(match.group(1), []).append(name)
            gone_pids.add(int(match.group(2)))
        match = _LIVE_GAUGE.match(name)
        if match and gone(int(match.group(1))):
            gone_pids.add(int(match.group(1)))
    for pid in sorted(gone_pids):
        multiprocess.mark_process_dead(pid, directory)
    if dead:
        plan: dict[str, list[str]] = {"merged": [], "dead": []}
        for kind, files in sorted(dead.items()):
            target = merged_name(kind)
            sources = ([target] if target in names else []) + files
            _write_values(os.path.join(directory, target + NEW_SUFFIX),
                          _added_values([os.path.join(directory, name) for name in sources]))
            plan["merged"].append(target)
            plan["dead"].extend(files)
        atomic_write(os.path.join(directory, PENDING_NAME), json.dumps(plan))  # the commit
        _carry_out(directory, plan)
    return sorted(gone_pids)


def merge_gone_if_free(directory: str) -> list[int]:
    """Merge the files of the processes gone from ``directory`` unless another process holds the lock now.

    Errors are logged, not raised: recording metrics never stops a worker.
    """
    try:
        with locked(directory, 0) as held:
            return merge_gone(directory) if held else []
    except (OSError, ValueError, RuntimeError) as exc:
        logger.warning("metrics: cannot merge the files of stopped processes in %s: %s", directory, exc)
        return []


def clear(directory: str) -> None:
    """Remove every recorded value from ``directory`` (a new daemon starts its metrics from zero)."""
    with locked(directory, float("inf")):
        for name in os.listdir(directory):
            if name.endswith((".db", ".db" + NEW_SUFFIX)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
