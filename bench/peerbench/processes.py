"""Worker groups: a system's worker commands, each in a process group of its own, always cleaned up.

Each command starts in a new session, so that it and the processes it forks
(Dramatiq's and Celery's pools, Huey's workers, sqjobs' job processes) share
one process group the harness can signal at once. RQ's work horses move to
a group of their own, so every descendant seen while the group ran is also
remembered and killed by pid. :meth:`WorkerGroup.stop` SIGKILLs the groups and
those descendants at once (the measurement is over: a graceful stop would
only add waiting, some peers take seconds); it runs on every exit path (the
group is a context manager).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

import psutil


class WorkerGroup:
    """Start ``commands`` (argument lists) in ``folder``; their output goes to ``folder/worker-N.log``."""

    def __init__(self, commands: Sequence[Sequence[str]], env: Mapping[str, str], folder: Path) -> None:
        self.commands = [list(command) for command in commands]
        self.env = dict(env)
        self.folder = folder
        self.processes: list[subprocess.Popen] = []
        self._descendants: dict[int, psutil.Process] = {}

    def start(self) -> None:
        """Start every command, each in a new session (its own process group)."""
        for number, command in enumerate(self.commands):
            log = open(self.folder / f"worker-{number}.log", "wb")
            try:
                self.processes.append(subprocess.Popen(
                    command, cwd=self.folder, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True))
            finally:
                log.close()

    def watch(self) -> None:
        """Remember the descendants running now (call it now and then while the group runs)."""
        for process in self.processes:
            try:
                for child in psutil.Process(process.pid).children(recursive=True):
                    self._descendants.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                pass

    def running(self) -> bool:
        """True while at least one of the started commands has not exited."""
        return any(process.poll() is None for process in self.processes)

    def exit_codes(self) -> list[int | None]:
        """Each command's exit code (None while it runs)."""
        return [process.poll() for process in self.processes]

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the workers printed (for an error message)."""
        tail: list[str] = []
        for number in range(len(self.commands)):
            path = self.folder / f"worker-{number}.log"
            if path.exists():
                tail.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return " | ".join(line.strip() for line in tail if line.strip())[-600:]

    def stop(self) -> None:
        """SIGKILL every process group, and every descendant seen while they ran; collect the commands."""
        self.watch()
        for process in self.processes:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        for child in self._descendants.values():
            try:
                if child.is_running():  # compares the start time too: never a recycled pid
                    child.kill()
            except psutil.Error:
                pass

    def __enter__(self) -> WorkerGroup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
