"""Render the supervisord configuration of sqjobsd from the one sqjobs config file.

Programs (each one supervisor process group):

- ``worker-NAME`` for every ``[worker:NAME]`` section: ``processes`` copies of
  ``<python> -m sqjobs worker -c CONFIG --group NAME --status-file ...``,
  named ``worker-NAME-0``, ``worker-NAME-1``...;
- ``beater``: ``[beater] processes`` copies of ``sqjobs beater``, only when
  this sqjobs has a ``beater`` command;
- ``sqjobsd-watchdog``: restarts stalled workers (see :mod:`sqjobsd.health`),
  unless ``[daemon] stall_timeout_s`` or ``watchdog_interval_s`` is 0.

Every program runs with the Python interpreter of sqjobsd, in the config
file's directory, with the config path passed on. The settings match the
worker: SIGTERM is its graceful stop, ``stopwaitsecs`` is the stop timeout,
the whole process group is signalled, and any exit is followed by a restart
(a worker leaves on purpose only after ``max_jobs``, to be replaced).

The rendering is deterministic, so ``reload`` leaves unchanged programs alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import secrets
import shlex
import sys
from dataclasses import dataclass

from sqjobs import defaults
from sqjobs.config import Settings
from sqjobs.errors import DaemonError
from sqjobs.files import atomic_write
from sqjobs.web.dashboard import check_bind
from sqjobs.web.metrics import metrics_dir

from .layout import RUN_DIR_ENV, DaemonOptions, Layout

#: Prefix of the program of each ``[worker:NAME]`` section.
WORKER_PREFIX = "worker-"
#: Program of the beaters.
BEATER_PROGRAM = "beater"
#: Program of the stall watchdog.
WATCHDOG_PROGRAM = "sqjobsd-watchdog"
#: The program serving /metrics when ``[metrics] port`` is set, and the dashboard's when ``[dashboard] port`` is.
METRICS_PROGRAM = "sqjobs-metrics"
DASHBOARD_PROGRAM = "sqjobs-dashboard"

#: Rotation of every log file: size at which it rotates, and rotated files kept.
LOG_MAX_BYTES = "10MB"
LOG_BACKUPS = 5
#: Seconds a program must stay up to count as started; fewer means a failed start (a worker that leaves after
#: max_jobs stays this long: sqjobs.defaults.WORKER_MIN_LIFETIME_S).
START_S = int(defaults.WORKER_MIN_LIFETIME_S)
#: Failed starts in a row before supervisor gives up on a process (state FATAL).
START_RETRIES = 5
#: The watchdog answers SIGTERM at once; it gets this long before SIGKILL.
WATCHDOG_STOP_S = 5

#: Environment variable holding :func:`config_digest` in every program.
DIGEST_ENV = "SQJOBSD_CONFIG_DIGEST"
#: Sections every worker and beater reads.
SHARED_SECTIONS = ("sqjobs", "sqs")

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Credentials:
    """The XML-RPC username and password of one daemon."""

    username: str
    password: str


def load_credentials(layout: Layout, create: bool = False) -> Credentials | None:
    """Return the daemon's credentials; with ``create``, generate and store them (mode 0600) if missing.

    They are random and kept in run_dir, so only the user owning run_dir
    (mode 0700) can talk to supervisord, and ``reload`` keeps them.
    """
    try:
        with open(layout.credentials, encoding="utf-8") as handle:
            data = json.load(handle)
        return Credentials(str(data["username"]), str(data["password"]))
    except (OSError, ValueError, KeyError, TypeError):
        if not create:
            return None
    credentials = Credentials(f"sqjobsd-{secrets.token_hex(4)}", secrets.token_urlsafe(24))
    atomic_write(layout.credentials, json.dumps({"username": credentials.username,
                                                  "password": credentials.password}), mode=0o600)
    return credentials


def worker_program(group_name: str) -> str:
    """The supervisor program (process group) name of ``[worker:group_name]``."""
    return WORKER_PREFIX + group_name


def _escape(value: str) -> str:
    """Escape ``value`` for a supervisord config value (which expands ``%(name)s``)."""
    if "\n" in value or "\r" in value:
        raise DaemonError(f"a path or name for supervisord holds a line break: {value!r}")
    return value.replace("%", "%%")


def _command(*words: str, status_file: str | None = None) -> str:
    """A shell-quoted, %-escaped command line; ``status_file`` is already escaped (it uses expansions)."""
    line = _escape(" ".join(shlex.quote(word) for word in words))
    if status_file is not None:
        line += " --status-file " + shlex.quote(status_file)
    return line


def _user_name() -> str:
    """The current user's name (its uid when it has none)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def config_digest(settings: Settings, *sections: str) -> str:
    """A short digest of ``sections`` as read from the config file.

    A program reads these sections when it starts, so its digest goes into
    its environment: when they change, the program's configuration changes
    and ``reload`` restarts it (and only it).
    """
    values = {name: dict(settings.sections.get(name, {})) for name in sections}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _program(name: str, command: str, numprocs: int, layout: Layout, stop_s: float, digest: str) -> list[str]:
    numbered = numprocs != 1 or name not in (WATCHDOG_PROGRAM, METRICS_PROGRAM, DASHBOARD_PROGRAM)
    process_name = "%(program_name)s-%(process_num)d" if numbered else "%(program_name)s"
    return [
        f"[program:{name}]",
        f"command = {command}",
        f"process_name = {process_name}",
        f"numprocs = {numprocs}",
        f"directory = {_escape(layout.base_dir)}",
        "autostart = true",
        "; any exit is followed by a restart: a worker only leaves on its own after max_jobs",
        "autorestart = true",
        f"startsecs = {START_S}",
        f"startretries = {START_RETRIES}",
        "; SIGTERM: finish the running job, hand back prefetched messages, exit 0",
        "stopsignal = TERM",
        f"stopwaitsecs = {int(-(-stop_s // 1))}",
        "stopasgroup = true",
        "killasgroup = true",
        "redirect_stderr = true",
        f"stdout_logfile = {_escape(layout.log_dir)}/{process_name}.log",
        f"stdout_logfile_maxbytes = {LOG_MAX_BYTES}",
        f"stdout_logfile_backups = {LOG_BACKUPS}",
        "; the digest of the config sections the program reads: reload restarts it when they change",
        f'environment = PYTHONUNBUFFERED="1",{DIGEST_ENV}="{digest}"',
        "",
    ]


def program_names(settings: Settings, options: DaemonOptions) -> list[str]:
    """The programs (process groups) the configuration asks for, in rendering order."""
    names = [worker_program(group.name) for group in settings.workers if group.processes > 0]
    if int(settings.get("beater", "processes")) > 0:
        names.append(BEATER_PROGRAM)
    if options.stall_timeout_s > 0 and options.watchdog_interval_s > 0:
        names.append(WATCHDOG_PROGRAM)
    if settings.get("metrics", "port"):
        names.append(METRICS_PROGRAM)
    if settings.get("dashboard", "port"):
        names.append(DASHBOARD_PROGRAM)
    return names


def recorded_metrics_dir(settings: Settings) -> str | None:
    """Where the daemon's workers and beaters record metrics; None when nothing would read them.

    They record when ``[metrics] dir``, ``[metrics] port`` or ``[dashboard] port`` is set.
    """
    if settings.get("metrics", "dir") or settings.get("metrics", "port") or settings.get("dashboard", "port"):
        return metrics_dir(settings)
    return None


def render(settings: Settings, layout: Layout, options: DaemonOptions, credentials: Credentials) -> str:
    """Return the text of the supervisord configuration for ``settings``."""
    python = sys.executable
    if settings.get("dashboard", "port"):
        check_bind(str(settings.get("dashboard", "host")), str(settings.get("dashboard", "password")),
                   f"{layout.config}: [dashboard]")
    for group in settings.workers:
        if not _NAME.match(group.name):
            raise DaemonError(f"{layout.config}: [worker:{group.name}]: a worker name for sqjobsd may hold "
                              "only letters, digits, '_', '.' and '-'")
    for path in (layout.run_dir, layout.log_dir, layout.base_dir):
        if '"' in path:
            raise DaemonError(f"{layout.config}: {path!r}: sqjobsd cannot use a path holding a double quote")
    run_dir = _escape(layout.run_dir)
    lines = [
        f"; Generated by sqjobsd from {_escape(layout.config)}: do not edit.",
        "; Edit that file and run `sqjobsd reload -c CONFIG` instead.",
        "",
        "[unix_http_server]",
        f"file = {_escape(layout.socket)}",
        "; only the owner may connect; the random credentials silence supervisord's",
        "; 'running without any HTTP authentication checking' warning as well",
        "chmod = 0700",
        f"username = {credentials.username}",
        f"password = {credentials.password}",
        "",
        "[supervisord]",
        f"logfile = {_escape(layout.supervisord_log)}",
        f"logfile_maxbytes = {LOG_MAX_BYTES}",
        f"logfile_backups = {LOG_BACKUPS}",
        "loglevel = info",
        f"pidfile = {_escape(layout.pidfile)}",
        f"childlogdir = {_escape(layout.log_dir)}",
        f"directory = {_escape(layout.base_dir)}",
        "identifier = sqjobsd",
        "; the user sqjobsd runs as: no privileges are dropped, and naming it keeps",
        "; supervisord from warning about root. Run sqjobsd as the user of the jobs.",
        f"user = {_user_name()}",
        f'environment = {RUN_DIR_ENV}="{run_dir}"',
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl = unix://{_escape(layout.socket)}",
        f"username = {credentials.username}",
        f"password = {credentials.password}",
        "",
    ]
    recording = recorded_metrics_dir(settings)
    record = ("--metrics-dir", recording) if recording else ()
    for group in settings.workers:
        if group.processes <= 0:
            continue
        program = worker_program(group.name)
        command = _command(python, "-m", "sqjobs", "worker", "-c", layout.config, "--group", group.name, *record,
                           status_file=_escape(layout.status_dir) + "/%(program_name)s-%(process_num)d.json")
        digest = config_digest(settings, *SHARED_SECTIONS, f"worker:{group.name}")
        lines += _program(program, command, group.processes, layout, options.stop_timeout_s, digest)
    beaters = int(settings.get("beater", "processes"))
    if beaters > 0:
        command = _command(python, "-m", "sqjobs", "beater", "-c", layout.config, *record)
        digest = config_digest(settings, *SHARED_SECTIONS, "beater")
        lines += _program(BEATER_PROGRAM, command, beaters, layout, options.stop_timeout_s, digest)
    if options.stall_timeout_s > 0 and options.watchdog_interval_s > 0:
        command = _command(python, "-m", "sqjobsd", "watchdog", "-c", layout.config,
                           "--stall-timeout", f"{options.stall_timeout_s:g}",
                           "--interval", f"{options.watchdog_interval_s:g}",
                           "--grace", f"{options.stall_grace_s:g}")
        lines += _program(WATCHDOG_PROGRAM, command, 1, layout, WATCHDOG_STOP_S, config_digest(settings, "daemon"))
    for program, section in ((METRICS_PROGRAM, "metrics"), (DASHBOARD_PROGRAM, "dashboard")):
        if settings.get(section, "port"):
            command = _command(python, "-m", "sqjobs", section, "-c", layout.config)
            digest = config_digest(settings, *SHARED_SECTIONS, "daemon", section)
            lines += _program(program, command, 1, layout, WATCHDOG_STOP_S, digest)
    return "\n".join(lines)


def write(settings: Settings, layout: Layout, options: DaemonOptions) -> str:
    """Render and write the supervisord configuration (mode 0600: it holds the credentials); return its path."""
    layout.make_dirs()
    credentials = load_credentials(layout, create=True)
    assert credentials is not None
    atomic_write(layout.supervisord_conf, render(settings, layout, options, credentials), mode=0o600)
    return layout.supervisord_conf
