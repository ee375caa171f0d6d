"""Who holds a message on the embedded broker, and whether that process still lives.

Each claim records its process as ``host:pid:start`` (the process's start
time, so that a reused pid is not mistaken for the claimer). A receiver on
the same host that finds messages held by a process that is gone makes them
visible again at once, instead of waiting out their visibility timeout: the
worker that received them was killed (``kill -9``, the out-of-memory killer)
before it could hand them back.
"""

from __future__ import annotations

import os
import socket

import psutil

#: This machine, as claims name it.
HOST = socket.gethostname()

_own: dict[int, str] = {}


def _start_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def this_process() -> str:
    """This process as a claimer: ``host:pid:start``."""
    pid = os.getpid()
    text = _own.get(pid)
    if text is None:
        text = _own[pid] = f"{HOST}:{pid}:{_start_time(pid) or 0:.2f}"
    return text


def is_gone(claimer: str) -> bool:
    """True when ``claimer`` was a process on this host that no longer runs (others: never known gone)."""
    parts = claimer.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != HOST:
        return False
    try:
        pid, started = int(parts[1]), float(parts[2])
    except ValueError:
        return False
    now_started = _start_time(pid)
    if now_started is None:
        return True
    if started and abs(now_started - started) > 1.0:
        return True  # the pid was reused by another process
    try:
        zombie: bool = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        return zombie
    except psutil.Error:
        return True
