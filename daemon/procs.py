"""Processes seen through /proc: liveness, the processes of one daemon, stopping them.

supervisord passes ``SQJOBSD_RUN_DIR=<run_dir>`` to every program it starts
(see :mod:`sqjobsd.supervisor_conf`), so the workers of a daemon can be found
even after their supervisord was killed with SIGKILL and they were left
behind as orphans.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from .layout import RUN_DIR_ENV

logger = logging.getLogger("sqjobs.daemon")

PROC = "/proc"


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"{PROC}/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return bool(state) and state[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (empty when it is gone or unreadable)."""
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_supervisord_of(pid: int, supervisord_conf: str) -> bool:
    """True when ``pid`` is a live supervisord started with ``supervisord_conf``."""
    words = cmdline(pid)
    return pid_alive(pid) and any("supervisord" in word for word in words) and supervisord_conf in words


def marked_processes(run_dir: str) -> list[int]:
    """Pids of the live processes (other than this one) started by the daemon of ``run_dir``."""
    marker = f"{RUN_DIR_ENV}={run_dir}".encode()
    found = []
    for entry in os.listdir(PROC):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"{PROC}/{entry}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if marker in environ and pid_alive(int(entry)):
            found.append(int(entry))
    return sorted(found)


def _signal(pid: int, signum: int) -> None:
    """Send ``signum`` to the process group ``pid`` leads (supervisord's programs lead one), else to ``pid``."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait up to ``timeout_s`` for ``pids`` to end; return those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = [pid for pid in pids if pid_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if pid_alive(pid)]
    return alive


def terminate(pids: list[int], timeout_s: float) -> list[int]:
    """SIGTERM ``pids`` (their process groups), SIGKILL what is left after ``timeout_s``; return the killed."""
    for pid in pids:
        logger.info("sending SIGTERM to process %d", pid)
        _signal(pid, signal.SIGTERM)
    left = wait_gone(pids, timeout_s)
    for pid in left:
        logger.warning("process %d ignored SIGTERM for %.0f s: sending SIGKILL", pid, timeout_s)
        _signal(pid, signal.SIGKILL)
    wait_gone(left, 5.0)
    return left
