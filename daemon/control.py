"""Start, stop, reload and inspect the supervisord of one sqjobsd daemon.

Safety rules:

- ``start`` refuses while a supervisord of this run_dir answers (or its
  pidfile names a live supervisord started with this configuration).
- A pidfile naming a dead process (supervisord killed with SIGKILL) is stale:
  it is removed with the socket, and the programs that supervisord left
  behind (found in /proc by the ``SQJOBSD_RUN_DIR`` marker in their
  environment) are stopped gracefully (SIGTERM, SIGKILL after the stop
  timeout) before new ones start, so no worker runs twice.
- ``stop`` sends SIGTERM to every program at once (supervisord's
  ``stopAllProcesses``; SIGKILL after ``stopwaitsecs``), asks supervisord to
  shut down, waits for it to exit, then makes sure no process of the daemon
  is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from sqjobs.config import Settings
from sqjobs.errors import DaemonError, DaemonNotRunningError
from sqjobs.files import atomic_write
from sqjobs.middleware import metrics_files
from sqjobs.signing import signer_from

from . import supervisor_conf
from .health import ProcessHealth, backlog_counter, survey
from .jobcheck import longest_job_timeout
from .layout import DaemonOptions, Layout, layout_for, options_for
from .procs import is_supervisord_of, marked_processes, terminate, wait_gone
from .rpc import SupervisorClient

logger = logging.getLogger("sqjobs.daemon")

#: How long ``start`` waits for supervisord to answer on its socket.
ANSWER_TIMEOUT_S = 30.0
#: How long ``start`` waits for the programs to leave STARTING/BACKOFF.
SETTLE_TIMEOUT_S = 30.0
#: Extra time ``stop`` gives supervisord beyond the stop timeout to exit.
STOP_MARGIN_S = 15.0
#: File in run_dir recording the timings the daemon runs with (read by ``status`` and ``stop``).
STATE_FILE = "sqjobsd.json"
#: Lock file in run_dir: one start, stop or reload at a time.
LOCK_FILE = "sqjobsd.lock"


@dataclass
class StartResult:
    """What ``start`` found and did."""

    #: The processes once they settled.
    health: list[ProcessHealth] = field(default_factory=list)
    #: Processes left by a supervisord that had died, stopped before starting.
    orphans: list[int] = field(default_factory=list)


@dataclass
class StopResult:
    """What ``stop`` found and did."""

    #: A supervisord was running and was shut down.
    was_running: bool = False
    #: Processes left by a supervisord that had died, stopped now.
    orphans: list[int] = field(default_factory=list)
    #: Processes that ignored SIGTERM for the stop timeout and were killed.
    killed: list[int] = field(default_factory=list)


@dataclass
class ReloadResult:
    """What ``reload`` changed, by program name."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Hold the run_dir lock; raise DaemonError when another sqjobsd command holds it."""
    layout.make_dirs()
    fd = os.open(os.path.join(layout.run_dir, LOCK_FILE), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DaemonError(f"another sqjobsd command is running for {layout.config}; try again when it is "
                              "done") from None
        yield
    finally:
        os.close(fd)


def _read_pid(layout: Layout) -> int | None:
    try:
        with open(layout.pidfile, encoding="utf-8") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _write_state(layout: Layout, options: DaemonOptions) -> None:
    atomic_write(os.path.join(layout.run_dir, STATE_FILE), json.dumps(
        {"config": layout.config, "stop_timeout_s": options.stop_timeout_s,
         "stall_timeout_s": options.stall_timeout_s, "watchdog_interval_s": options.watchdog_interval_s}))


def running_options(settings: Settings, layout: Layout) -> DaemonOptions:
    """The timings the running daemon was started or reloaded with (else the config's, without job imports)."""
    try:
        with open(os.path.join(layout.run_dir, STATE_FILE), encoding="utf-8") as handle:
            data = json.load(handle)
        return DaemonOptions(float(data["stop_timeout_s"]), float(data["stall_timeout_s"]),
                             float(data["watchdog_interval_s"]))
    except (OSError, ValueError, KeyError, TypeError):
        return options_for(settings)


def resolve(settings: Settings, consequence: str = "nothing was started") -> tuple[Layout, DaemonOptions]:
    """The daemon's files and timings for ``settings``.

    Imports the job modules in a child process first (for their timeouts, and
    to refuse modules the workers could not import): raises JobImportError
    ending with ``consequence`` when one fails. Signing keys the workers would
    refuse (too short) raise ConfigError first, so that no worker starts only
    to exit (the programs inherit ``SQJOBS_SIGNING_KEYS`` from this process).
    """
    signer_from(settings.get("sqjobs", "signing_keys"), where=f"{settings.source or 'configuration'}: "
                "[sqjobs] signing_keys")
    layout = layout_for(settings)
    layout.check_socket_path()
    return layout, options_for(settings, longest_job_timeout(settings, consequence))


def running_pid(layout: Layout) -> int | None:
    """The pid of this daemon's supervisord when one answers or its pidfile names a live one; else None."""
    client = SupervisorClient(layout)
    if client.answers():
        try:
            return client.pid()
        except DaemonError:
            pass
    pid = _read_pid(layout)
    if pid is not None and is_supervisord_of(pid, layout.supervisord_conf):
        return pid
    return None


def clean_stale(layout: Layout, stop_timeout_s: float) -> list[int]:
    """Remove a dead supervisord's pidfile and socket and stop the orphans it left; return their pids."""
    pid = _read_pid(layout)
    if pid is not None:
        logger.warning("removing the stale pidfile %s: supervisord %d is gone", layout.pidfile, pid)
    for path in (layout.pidfile, layout.socket):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    orphans = marked_processes(layout.run_dir)
    if orphans:
        logger.warning("stopping %d process(es) left behind by a supervisord that died: pids %s",
                       len(orphans), ", ".join(map(str, orphans)))
        terminate(orphans, stop_timeout_s)
    return orphans


def _clear_metrics(settings: Settings) -> None:
    """Start the metrics of a new daemon from zero: remove what the previous one's processes recorded.

    (Prometheus reads a counter that went back to zero as a restart.)
    """
    directory = supervisor_conf.recorded_metrics_dir(settings)
    if directory is not None and os.path.isdir(directory):
        metrics_files.clear(directory)


def _supervisord_command(layout: Layout, foreground: bool) -> list[str]:
    command = [sys.executable, "-m", "supervisor.supervisord", "-c", layout.supervisord_conf]
    return command + ["--nodaemon"] if foreground else command


def start(settings: Settings, foreground: bool = False) -> StartResult:
    """Start the daemon of ``settings``; return the processes' health once they settled.

    With ``foreground`` this process becomes supervisord (for systemd and
    containers) and does not return. Raises JobImportError, before anything
    is written or started, when a job module cannot be imported; DaemonError
    when the daemon is already running or supervisord cannot start.
    """
    layout, options = resolve(settings)
    with locked(layout):
        orphans = _start_locked(settings, layout, options, foreground)
        client = SupervisorClient(layout)
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while not client.answers():
            if time.monotonic() > deadline:
                raise DaemonError(f"supervisord started but does not answer on {layout.socket} "
                                  f"(see {layout.supervisord_log})")
            time.sleep(0.1)
    return StartResult(settle(client, layout, options), orphans)


def _start_locked(settings: Settings, layout: Layout, options: DaemonOptions, foreground: bool) -> list[int]:
    """Check, clean, write the configuration and run supervisord (exec it with ``foreground``).

    Returns the pids of the orphans of a dead supervisord that were stopped first.
    """
    pid = running_pid(layout)
    if pid is not None:
        raise DaemonError(f"sqjobsd is already running for {layout.config} (supervisord pid {pid}, "
                          f"socket {layout.socket}); use `sqjobsd status`, `reload` or `restart`")
    orphans = clean_stale(layout, options.stop_timeout_s)
    _clear_metrics(settings)
    if not settings.workers:
        logger.warning("%s has no [worker:NAME] section: no worker is started", layout.config)
    supervisor_conf.write(settings, layout, options)
    _write_state(layout, options)
    command = _supervisord_command(layout, foreground)
    if foreground:
        logger.info("running supervisord in the foreground: %s", " ".join(command))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, command)
    with tempfile.TemporaryFile() as output:
        try:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                    cwd=layout.base_dir, timeout=ANSWER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DaemonError(f"supervisord did not detach within {ANSWER_TIMEOUT_S:.0f} s "
                              f"(see {layout.supervisord_log})") from None
        output.seek(0)
        text = output.read().decode(errors="replace").strip()
    if result.returncode != 0:
        last = text.splitlines()[-1] if text else f"exit code {result.returncode}"
        raise DaemonError(f"supervisord did not start: {last} (see {layout.supervisord_log})")
    return orphans


def settle(client: SupervisorClient, layout: Layout, options: DaemonOptions) -> list[ProcessHealth]:
    """Wait until no process is STARTING or in BACKOFF (or the deadline); return their health."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        health = survey(client, layout, options.stall_timeout_s)
        if all(item.state not in ("STARTING", "BACKOFF") for item in health) or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


def stop(settings: Settings) -> StopResult:
    """Stop the daemon gracefully and leave no process behind.

    Not running is not an error (orphans of a dead supervisord are stopped all the same).
    """
    layout = layout_for(settings)
    layout.check_socket_path()
    options = running_options(settings, layout)
    with locked(layout):
        pid = running_pid(layout)
        if pid is None:
            return StopResult(orphans=clean_stale(layout, options.stop_timeout_s))
        client = SupervisorClient(layout)
        try:
            # SIGTERM to every process at once: on shutdown alone supervisord stops one program
            # after the other, which could take the stop timeout once per program.
            client.call("stopAllProcesses", False)
            client.call("shutdown")
        except DaemonNotRunningError:
            pass
        result = StopResult(was_running=True)
        left = wait_gone([pid], options.stop_timeout_s + STOP_MARGIN_S)
        if left:
            logger.warning("supervisord %d did not exit within %.0f s: killing it", pid,
                           options.stop_timeout_s + STOP_MARGIN_S)
            result.killed += terminate(left, 0)
        rest = marked_processes(layout.run_dir)
        if rest:
            logger.warning("processes %s outlived supervisord: stopping them", ", ".join(map(str, rest)))
            result.killed += terminate(rest, options.stop_timeout_s)
        return result


def status(settings: Settings) -> list[ProcessHealth]:
    """The health of every process; raises DaemonNotRunningError when no supervisord answers."""
    layout = layout_for(settings)
    layout.check_socket_path()
    client = SupervisorClient(layout)
    if not client.answers():
        orphans = marked_processes(layout.run_dir)
        extra = f"; processes left by a dead supervisord: {', '.join(map(str, orphans))}" if orphans else ""
        raise DaemonNotRunningError(f"sqjobsd is not running for {layout.config}{extra}")
    return survey(client, layout, running_options(settings, layout).stall_timeout_s, backlog_counter(settings))


def reload(settings: Settings) -> ReloadResult:
    """Apply the config file to the running daemon, the way ``supervisorctl update`` does.

    Programs whose rendered configuration is unchanged keep running; changed
    ones are stopped (gracefully) and started again; removed ones are stopped;
    added ones are started.
    """
    layout, options = resolve(settings, "nothing was changed")
    client = SupervisorClient(layout, timeout_s=options.stop_timeout_s + STOP_MARGIN_S)
    if not client.answers():
        raise DaemonNotRunningError(f"sqjobsd is not running for {layout.config}: nothing to reload "
                                    "(use `sqjobsd start`)")
    with locked(layout):
        return _reload_locked(settings, layout, options, client)


def _reload_locked(settings: Settings, layout: Layout, options: DaemonOptions,
                   client: SupervisorClient) -> ReloadResult:
    supervisor_conf.write(settings, layout, options)
    _write_state(layout, options)
    added, changed, removed = client.call("reloadConfig")[0]
    result = ReloadResult(sorted(added), sorted(changed), sorted(removed))
    for name in result.removed + result.changed:
        _stop_group(client, name)
        client.call("removeProcessGroup", name)
        logger.info("program %s %s", name, "stopped and removed" if name in result.removed else "stopped")
    for name in result.changed + result.added:
        client.call("addProcessGroup", name)
        logger.info("program %s started", name)
    return result


def _stop_group(client: SupervisorClient, name: str) -> Any:
    try:
        return client.call("stopProcessGroup", name, True)
    except DaemonError as exc:
        logger.warning("stopping program %s: %s", name, exc)
        return None

