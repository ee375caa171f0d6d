"""Where sqjobsd keeps its files, and the daemon settings resolved from the config file.

Everything sqjobsd writes lives in ``[daemon] run_dir`` (generated supervisord
configuration, unix socket, pidfile, credentials, worker status files) and
``[daemon] log_dir`` (supervisord's log and one log per program). Both are
read relative to the config file's directory, so ``sqjobsd`` started from
anywhere finds the same daemon.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqjobs.config import Settings
from sqjobs.defaults import SQLITE_WAIT_S
from sqjobs.errors import DaemonError

#: Longest path a unix socket may have on Linux (``sun_path`` is 108 bytes with the final NUL).
MAX_SOCKET_PATH_BYTES = 107

#: Shortest default stop timeout: long enough for an ordinary job to finish after SIGTERM.
STOP_TIMEOUT_S = 60.0
#: Added to the longest job ``timeout`` for the default stop timeout (hand back, log, exit).
STOP_MARGIN_S = 15.0
#: Shortest default stall threshold. A worker does not poll while a job runs, so the
#: threshold must be longer than the longest job; five minutes covers ordinary jobs.
STALL_TIMEOUT_S = 300.0
#: Added to the longest job ``timeout`` for the default stall threshold.
STALL_MARGIN_S = 60.0
#: Longest grace between SIGTERM and SIGKILL when the watchdog restarts a stalled worker.
STALL_GRACE_S = 10.0

#: Environment variable supervisord passes to every program it starts: it marks the
#: processes of one daemon, so orphans of a killed supervisord can be found in /proc.
RUN_DIR_ENV = "SQJOBSD_RUN_DIR"


@dataclass(frozen=True)
class Layout:
    """The files of one sqjobsd daemon (all paths absolute)."""

    config: str
    base_dir: str
    run_dir: str
    log_dir: str

    @property
    def supervisord_conf(self) -> str:
        """The generated supervisord configuration."""
        return os.path.join(self.run_dir, "supervisord.conf")

    @property
    def socket(self) -> str:
        """supervisord's XML-RPC unix socket."""
        return os.path.join(self.run_dir, "supervisord.sock")

    @property
    def pidfile(self) -> str:
        """supervisord's pidfile."""
        return os.path.join(self.run_dir, "supervisord.pid")

    @property
    def credentials(self) -> str:
        """The generated XML-RPC username and password (mode 0600), kept across reloads."""
        return os.path.join(self.run_dir, "credentials")

    @property
    def status_dir(self) -> str:
        """Directory of the worker status files (``<process name>.json``)."""
        return os.path.join(self.run_dir, "status")

    def status_file(self, process_name: str) -> str:
        """The status file of the worker process called ``process_name`` by supervisord."""
        return os.path.join(self.status_dir, f"{process_name}.json")

    def process_log(self, process_name: str) -> str:
        """The log file supervisord writes the output of ``process_name`` to (its ``stdout_logfile``)."""
        return os.path.join(self.log_dir, f"{process_name}.log")

    @property
    def supervisord_log(self) -> str:
        """supervisord's own log."""
        return os.path.join(self.log_dir, "supervisord.log")

    def check_socket_path(self) -> None:
        """Raise DaemonError when the socket path is longer than a unix socket allows."""
        size = len(os.fsencode(self.socket))
        if size > MAX_SOCKET_PATH_BYTES:
            raise DaemonError(
                f"{self.config}: [daemon] run_dir {self.run_dir!r} is too long: the socket path {self.socket!r} "
                f"is {size} bytes, a unix socket allows {MAX_SOCKET_PATH_BYTES}; choose a shorter run_dir")

    def make_dirs(self) -> None:
        """Create run_dir (mode 0700: it holds the socket and credentials), its status dir, and log_dir."""
        for path in (self.run_dir, self.status_dir):
            os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        os.makedirs(self.log_dir, mode=0o755, exist_ok=True)


@dataclass(frozen=True)
class DaemonOptions:
    """The ``[daemon]`` timings with their defaults worked out."""

    #: stopwaitsecs of every program: SIGTERM, then SIGKILL after this long.
    stop_timeout_s: float
    #: A RUNNING worker whose last poll is older than this is stalled; 0 disables stall detection.
    stall_timeout_s: float
    #: How often the watchdog looks for stalled workers; 0: no watchdog (status still reports stalls).
    watchdog_interval_s: float

    @property
    def stall_grace_s(self) -> float:
        """Seconds the watchdog waits after SIGTERM before it kills a stalled worker."""
        return min(STALL_GRACE_S, self.stop_timeout_s)


def layout_for(settings: Settings) -> Layout:
    """Return the daemon files of ``settings``; raise DaemonError if it was read from no file."""
    if settings.source is None:
        raise DaemonError("sqjobsd needs a config file: pass -c FILE or set SQJOBS_CONFIG")
    return Layout(
        config=settings.source,
        base_dir=settings.base_dir,
        run_dir=settings.resolve_path(settings.get("daemon", "run_dir")),
        log_dir=settings.resolve_path(settings.get("daemon", "log_dir")),
    )


def options_for(settings: Settings, longest_timeout_s: float | None = None) -> DaemonOptions:
    """Work out the ``[daemon]`` timings; ``longest_timeout_s`` is the longest job timeout, if known.

    Defaults: stop timeout ``max(60, longest job timeout + 15)`` seconds; stall
    threshold ``max(300, prefetch * longest job timeout + 60)`` seconds, with
    the largest ``prefetch`` of the worker sections: a worker polls once per
    batch of up to ``prefetch`` messages, so a batch of long jobs is silent
    for their sum.
    """
    stop_s = settings.get("daemon", "stop_timeout_s")
    if stop_s is None:
        stop_s = max(STOP_TIMEOUT_S, (longest_timeout_s or 0) + STOP_MARGIN_S)
    stall_s = settings.get("daemon", "stall_timeout_s")
    if stall_s is None:
        batch = max((group.prefetch for group in settings.workers), default=1)
        stall_s = max(STALL_TIMEOUT_S, batch * (longest_timeout_s or 0) + STALL_MARGIN_S)
    quiet_s = longest_quiet_s(settings)
    if 0 < stall_s < quiet_s:
        raise DaemonError(
            f"{settings.source}: [daemon] stall_timeout_s = {stall_s:g} is shorter than a healthy worker may go "
            f"without writing its status ({quiet_s:g} s with this broker); use at least {quiet_s:g}, or 0 to "
            "turn stall detection off")
    return DaemonOptions(float(stop_s), float(stall_s), float(settings.get("daemon", "watchdog_interval_s")))


def longest_quiet_s(settings: Settings) -> float:
    """Longest time a healthy, idle worker goes between two status writes: one receive wait plus 2 s.

    The worker writes its status before each receive, at most once a second;
    a receive waits up to the broker's long poll (``[sqs] wait_time_s`` on SQS).
    """
    if settings.broker_url.startswith("sqs"):
        wait_s = float(settings.get("sqs", "wait_time_s"))
    else:
        wait_s = SQLITE_WAIT_S
    return wait_s + 2.0
