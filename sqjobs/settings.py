"""Every setting of the config file, declared once: its section, key, type, default and documentation.

The declarations feed the config reader (:mod:`sqjobs.config`), the worker's
and the CLI's defaults, and the documented example file
``etc/sqjobs.conf.example``, which is generated from them
(``python -m sqjobs.settings > etc/sqjobs.conf.example``; a test checks it is
up to date). ``[worker:NAME]`` sections share the ``worker`` declarations.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from . import defaults
from .brokers import broker_url_problem
from .brokers.sqs_limits import (
    MAX_QUEUE_BASE_LENGTH,
    MAX_QUEUE_PREFIX_LENGTH,
    check_endpoint_url,
    check_queue_name,
    queue_prefix_problem,
)
from .signing import as_signing_keys

#: Values a ``[worker] isolation`` may take.
ISOLATIONS = ("process", "none")
#: Values ``[sqjobs] track`` may take.
TRACK_MODES = ("all", "marked", "none")


def as_text(text: str) -> str:
    """A string, spaces around it removed."""
    return text.strip()


def as_list(text: str) -> tuple[str, ...]:
    """Comma- or line-separated words."""
    return tuple(part.strip() for part in text.replace("\n", ",").split(",") if part.strip())


def as_broker_url(text: str) -> str:
    """A broker URL: sqlite:///PATH, sqs, memory:// or eager://."""
    url = text.strip()
    problem = broker_url_problem(url)
    if problem:
        raise ValueError(problem)
    return url


def as_host_names(text: str) -> tuple[str, ...]:
    """Comma-separated host names or addresses (no scheme, path or port)."""
    names = as_list(text)
    for name in names:
        if any(char in name for char in "/@?# ") or name.count(":") == 1:
            raise ValueError(f"must be host names such as dashboard.example.com, not {name!r}")
    return names


def as_queue_names(text: str) -> tuple[str, ...]:
    """Comma- or line-separated queue names, each keeping the one rule of queue names."""
    return tuple(check_queue_name(name) for name in as_list(text))


def as_queue_prefix(text: str) -> str:
    """A prefix for SQS queue names (ASCII letters, digits, '-' and '_'), or nothing."""
    prefix = text.strip()
    problem = queue_prefix_problem(prefix)
    if problem:
        raise ValueError(problem)
    return prefix


def as_count(text: str) -> int:
    """A whole number, 0 or more."""
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def as_positive_count(text: str) -> int:
    """A whole number, 1 or more."""
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def as_seconds(text: str) -> float:
    """A number of seconds, 0 or more."""
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def as_optional_port(text: str) -> int | None:
    """A TCP port (1 to 65535), or nothing (None: not served)."""
    if not text.strip():
        return None
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port, 1 to 65535")
    return value


def as_bool(text: str) -> bool:
    """true/false, yes/no, on/off or 1/0."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError("must be true or false")


def as_sqs_delay_s(text: str) -> float:
    """A number of seconds SQS can delay a message by: 0 to 900."""
    value = as_seconds(text)
    if value > defaults.MAX_DELAY_S:
        raise ValueError(f"must be at most {defaults.MAX_DELAY_S} (the SQS DelaySeconds limit)")
    return value


def as_optional_seconds(text: str) -> float | None:
    """A number of seconds, or nothing (None: worked out from other settings)."""
    return as_seconds(text) if text.strip() else None


def as_catch_up_grace_s(text: str) -> float:
    """A beater's catch-up grace: at least MIN_CATCH_UP_GRACE_S seconds."""
    value = float(text)
    if value < defaults.MIN_CATCH_UP_GRACE_S:
        raise ValueError(f"must be at least {defaults.MIN_CATCH_UP_GRACE_S:g} seconds: a beater ticks once a "
                         "second, so a smaller grace would count fire times sent on time as missed")
    return value


def as_endpoint_url(text: str) -> str:
    """An SQS endpoint URL, or nothing (AWS itself)."""
    text = text.strip()
    return check_endpoint_url(text) if text else ""


def one_of(*choices: str, why: str = "") -> Callable[[str], str]:
    """A parser accepting one of ``choices`` (case-insensitive)."""

    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in choices:
            raise ValueError(f"must be {', '.join(choices[:-1])} or {choices[-1]}{why}")
        return lowered

    parse.__doc__ = f"One of {', '.join(choices)}."
    return parse


@dataclass(frozen=True)
class Setting:
    """One key of the config file."""

    section: str
    key: str
    parse: Callable[[str], Any]
    default: Any
    #: What the key means, written above it in the example file.
    doc: str
    #: The value the example file shows (the default's text when None).
    example: str | None = None
    #: True for secrets: an error about the value never repeats it.
    secret: bool = False

    @property
    def example_text(self) -> str:
        """The value as the example file writes it."""
        if self.example is not None:
            return self.example
        if self.default is None:
            return ""
        if isinstance(self.default, tuple):
            return ", ".join(self.default)
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)


#: What each section is for, above it in the example file.
SECTION_DOCS: dict[str, str] = {
    "sqjobs": "",
    "sqs": "Amazon SQS, or any SQS-compatible server, when [sqjobs] broker = sqs.",
    "worker": "One [worker:NAME] section per group of identical worker processes.",
    "beater": "The beaters: they send periodic jobs when they are due.",
    "daemon": "sqjobsd, the supervised daemon of workers and beaters.",
    "metrics": "Prometheus metrics: recorded by workers and beaters, served at /metrics.",
    "dashboard": "The web dashboard (sqjobs dashboard; run by sqjobsd when port is set).",
}

#: Every setting, in the order the example file shows them.
SETTINGS: tuple[Setting, ...] = (
    Setting("sqjobs", "broker", as_broker_url, "sqlite:///sqjobs-queue.db",
            "Where messages wait:\n"
            "  sqlite:///PATH  the embedded broker (a file; many processes on one machine)\n"
            "  sqs             Amazon SQS, or any SQS-compatible server (see [sqs])\n"
            "  memory://       in-process, for tests\n"
            "  eager://        run each job inside .delay(), for development and tests"),
    Setting("sqjobs", "database", as_text, "sqlite:///sqjobs.db",
            "Peewee database URL for job status rows and the beaters' claims:\n"
            "sqlite:///PATH (relative to this file; sqlite:////PATH for an absolute path),\n"
            "postgresql://user:pass@host:5432/db, mysql://user:pass@host:3306/db;\n"
            "under Django (sqjobs_django), django://ALIAS: a database of settings.DATABASES"),
    Setting("sqjobs", "jobs", as_list, (), "Modules that define your jobs, imported by workers and beaters "
            "(comma-separated)."),
    Setting("sqjobs", "path", as_list, (), "Directories prepended to sys.path before importing the job modules."),
    Setting("sqjobs", "track", one_of(*TRACK_MODES), "marked",
            "Which jobs record their status: marked (track=True or ResultJob), all, none."),
    Setting("sqjobs", "log_level", one_of(*(level.lower() for level in ("DEBUG", "INFO", "WARNING", "ERROR"))),
            "info",
            "How much the commands log: debug, info (one line per finished attempt), warning, error.\n"
            "-v or --log-level on the command line wins."),
    Setting("sqjobs", "middleware", as_list, (),
            "Middleware classes (package.module.ClassName, comma-separated), each made with no\n"
            "arguments, run in this order after the ones sqjobs ships (see the README)."),
    Setting("sqjobs", "signing_keys", as_signing_keys, (),
            "Keys that sign and verify messages (comma-separated, each at least 32 bytes):\n"
            "the first signs what this machine sends, every one verifies what it receives;\n"
            "a worker with keys dead-letters unsigned, forged or altered messages unrun.\n"
            "Empty: signing off. The SQJOBS_SIGNING_KEYS environment variable, when set,\n"
            "wins over this line (keep keys out of config files). See the README.",
            secret=True),
    Setting("sqs", "region", as_text, "", "AWS region of the queues (empty: the AWS default chain decides)."),
    Setting("sqs", "endpoint_url", as_endpoint_url, "", "Any SQS-compatible server; empty means AWS itself."),
    Setting("sqs", "access_key", as_text, "",
            "Credentials; empty means the standard AWS chain (environment, profile, instance role)."),
    Setting("sqs", "secret_key", as_text, "", ""),
    Setting("sqs", "queue_prefix", as_queue_prefix, "",
            "Prepended to every queue name, e.g. prod- (dead-letter queues get it too);\n"
            f"at most {MAX_QUEUE_PREFIX_LENGTH} ASCII letters, digits, '-' and '_'."),
    Setting("sqs", "wait_time_s", as_seconds, float(defaults.MAX_WAIT_S),
            "Long-poll wait of one receive, in seconds (SQS allows 0 to 20)."),
    Setting("sqs", "visibility_timeout_s", as_seconds, 60.0,
            "Default visibility timeout of queues created by sqjobs, in seconds."),
    Setting("sqs", "max_delay_s", as_sqs_delay_s, float(defaults.MAX_DELAY_S),
            "Longest delay SQS holds itself (DelaySeconds, 0 to 900); a longer delay or ETA is held\n"
            "in [sqjobs] database and sent by a beater when due (see the README, Jobs for later)."),
    Setting("worker", "queues", as_queue_names, (defaults.QUEUE,),
            "Queues in priority order: the first queue is always served first. A queue name\n"
            f"is 1 to {MAX_QUEUE_BASE_LENGTH} ASCII letters, digits, '-' and '_', and ends in .fifo for a FIFO queue."),
    Setting("worker", "processes", as_count, 1, "Worker processes the daemon starts for this group.", "2"),
    Setting("worker", "prefetch", as_count, 10,
            "Messages received at once (1 to 10). Use 1 for long jobs, so others take the rest."),
    Setting("worker", "threads", as_positive_count, 1,
            "Jobs a worker process runs at once (--threads): threads for plain jobs, one event\n"
            "loop for async def jobs, one limit for both. 1 runs them one after the other."),
    Setting("worker", "hold_s", as_seconds, 1.0,
            "Seconds a received message may wait behind running jobs before the worker hands\n"
            "it back for another worker; and jobs slower than this on average make a worker\n"
            "receive only what it can start at once (no prefetch)."),
    Setting("worker", "visibility_timeout_s", as_seconds, 60.0,
            "Seconds a received message stays hidden; the heartbeat renews it while the\n"
            "worker holds it, so this only bounds how long a crashed worker delays a job."),
    Setting("worker", "max_jobs", as_count, 0,
            "Exit after this many jobs (the daemon starts a fresh process); 0: never."),
    Setting("worker", "unknown_job_refusals", as_count, 20,
            "A message naming a job this worker does not know (a rolling deploy: only the\n"
            "new code has it) is handed back for another worker, visible again 15 s later,\n"
            "and goes to the dead-letter queue once it was refused this many times."),
    Setting("worker", "crash_allowance", as_count, 2,
            "The crash ceiling: a message received more times than its job's attempts\n"
            "(retries + 1) plus this many is dead-lettered before it runs: its workers died\n"
            "while running it. The allowance covers deaths that were not its fault (a\n"
            "worker killed in a deploy; on SQS, messages handed back unstarted at a stop)."),
    Setting("worker", "isolation", one_of(*ISOLATIONS, why=" (jobs in a supervised job process, or in the worker)"),
            "process",
            "process: jobs run in a job process the worker forks and supervises, so a job\n"
            "that crashes, hangs in C code or holds the GIL cannot take the worker, its\n"
            "heartbeat or its other messages with it. none: in the worker itself (pdb)."),
    Setting("beater", "processes", as_count, 1,
            "Beater processes the daemon starts (any number is safe: ticks are claimed in the database)."),
    Setting("beater", "catch_up_grace_s", as_catch_up_grace_s, 60.0,
            "Seconds a fire time may be old when a beater first sees it and still be sent\n"
            "as on time. An older one was missed (no beater ran, or the database was down)\n"
            "and follows the job's catch_up: \"latest\" sends only the most recent missed\n"
            "one, \"all\" each (a day back at most), \"none\" none. So after an outage,\n"
            "\"latest\" sends one missed run plus each run of the last catch_up_grace_s\n"
            "seconds. At least 5 (a beater ticks once a second)."),
    Setting("daemon", "run_dir", as_text, "run",
            "Where the daemon keeps its supervisord configuration, socket and pid file."),
    Setting("daemon", "log_dir", as_text, "log", "Where the daemon writes one log file per program."),
    Setting("daemon", "stop_timeout_s", as_optional_seconds, None,
            "Seconds a stopping worker may take to finish its job before it is killed\n"
            "(empty: the longest job timeout plus a margin)."),
    Setting("daemon", "stall_timeout_s", as_optional_seconds, None,
            "Seconds without a poll after which a running worker counts as stalled: sqjobsd\n"
            "status reports it and the watchdog restarts it (empty: 300, or prefetch times\n"
            "the longest job timeout plus a minute if longer; 0: never). A job with no\n"
            "timeout that runs longer than this is taken for a stall."),
    Setting("daemon", "watchdog_interval_s", as_seconds, 5.0,
            "Seconds between two checks of the watchdog (0: no watchdog program)."),
    Setting("metrics", "dir", as_text, "",
            "Folder where workers and beaters record their metrics (one file per process,\n"
            "prometheus_client's multiprocess mode). Empty: under sqjobsd, run_dir/metrics;\n"
            "a worker started by hand records nothing unless this is set."),
    Setting("metrics", "port", as_optional_port, None,
            "Port sqjobsd serves /metrics on (empty: none; the dashboard serves it too).\n"
            f"`sqjobs metrics --port` takes {defaults.METRICS_PORT} by default.", ""),
    Setting("metrics", "host", as_text, defaults.DASHBOARD_HOST,
            "Address the metrics server listens on."),
    Setting("dashboard", "port", as_optional_port, None,
            f"Port sqjobsd runs the dashboard on (empty: none; `sqjobs dashboard` takes {defaults.DASHBOARD_PORT})."),
    Setting("dashboard", "host", as_text, defaults.DASHBOARD_HOST,
            "Address the dashboard listens on. Any other than 127.0.0.1, ::1 or localhost\n"
            "needs a password: the dashboard refuses to start without one."),
    Setting("dashboard", "public_hosts", as_host_names, (),
            "Host names people reach the dashboard by, besides the address it listens on\n"
            "(comma-separated): its DNS name, the name a reverse proxy passes on. A request\n"
            "naming another host is refused (DNS rebinding). Listening on 127.0.0.1, ::1\n"
            "or localhost, it answers to those three; on 0.0.0.0 or ::, to those three and\n"
            "any IP address. --public-host on the command line wins."),
    Setting("dashboard", "password", as_text, "",
            "Password of HTTP basic authentication (any user name); empty: none."),
    Setting("dashboard", "read_only", as_bool, False,
            "true: the dashboard shows everything and offers no action (no requeue, no purge).", "false"),
)

#: Section -> key -> its Setting. ``worker:NAME`` sections use ``worker``.
SCHEMA: dict[str, dict[str, Setting]] = {}
for _setting in SETTINGS:
    SCHEMA.setdefault(_setting.section, {})[_setting.key] = _setting


def schema_section(section: str) -> str:
    """The declared section a file's section reads: ``worker`` for ``worker:NAME``."""
    return "worker" if section.startswith("worker:") else section


def default(section: str, key: str) -> Any:
    """The declared default of ``[section] key``."""
    return SCHEMA[schema_section(section)][key].default


_EXAMPLE_HEADER = """\
sqjobs.conf -- the one configuration file of sqjobs.

Every command takes it with -c FILE (or the SQJOBS_CONFIG environment
variable). Without any file, sqjobs uses the embedded SQLite broker and
database in the current directory. Relative paths below are read relative
to this file's directory. Comments start with ; or #, also after a value.
Generated from sqjobs/settings.py: python -m sqjobs.settings > etc/sqjobs.conf.example"""


def _comment(text: str) -> list[str]:
    return [f"; {line}".rstrip() for part in text.splitlines() for line in (textwrap.wrap(part, 78) or [""])] \
        if text else []


def example_file() -> str:
    """The documented example config file: every setting with its default (or example) value."""
    lines = _comment(_EXAMPLE_HEADER)
    for section in SCHEMA:
        lines.append("")
        lines.extend(_comment(SECTION_DOCS.get(section, "")))
        lines.append(f"[{'worker:default' if section == 'worker' else section}]")
        for setting in SCHEMA[section].values():
            lines.extend(_keep_layout(setting.doc))
            lines.append(f"{setting.key} = {setting.example_text}".rstrip())
    return "\n".join(lines) + "\n"


def _keep_layout(doc: str) -> list[str]:
    """Comment lines for ``doc``, keeping its own line breaks (docs are written 80 columns wide)."""
    return [f"; {line}".rstrip() for line in doc.splitlines()] if doc else []


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(example_file())
