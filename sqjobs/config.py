"""The one configuration file (INI) read into typed settings.

Every key is declared once below with its type and default; an unknown
section or key, or a value of the wrong type, raises ConfigError naming the
file, the section and the key. Relative ``sqlite:///`` paths and ``path``
entries are read relative to the file's directory, so a daemon started from
anywhere finds the same files.
"""

from __future__ import annotations

import configparser
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import defaults
from .errors import ConfigError

#: Environment variable naming the config file when no ``-c`` is given.
CONFIG_ENV = "SQJOBS_CONFIG"


def _as_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.replace("\n", ",").split(",") if part.strip())


def _as_positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _as_seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _as_catch_up_grace_s(text: str) -> float:
    value = float(text)
    if value < defaults.MIN_CATCH_UP_GRACE_S:
        raise ValueError(f"must be at least {defaults.MIN_CATCH_UP_GRACE_S:g} seconds: a beater ticks once a "
                         "second, so a smaller grace would count fire times sent on time as missed")
    return value


def _as_optional_seconds(text: str) -> float | None:
    return _as_seconds(text) if text.strip() else None


def _as_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off", ""):
        return False
    raise ValueError("must be yes or no")


def _as_track(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in ("all", "marked", "none"):
        raise ValueError("must be all, marked or none")
    return lowered


def _as_isolation(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in ("process", "none"):
        raise ValueError("must be process (jobs run in a supervised job process) or none (in the worker itself)")
    return lowered


def _as_text(text: str) -> str:
    return text.strip()


def check_endpoint_url(url: str) -> str:
    """Return ``url`` if it can be an SQS endpoint (``http(s)://host[:port][/path]``); raise ValueError if not."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or any(c.isspace() for c in url):
        raise ValueError("must be an http:// or https:// URL such as http://localhost:9324, or empty for AWS")
    return url


def _as_endpoint_url(text: str) -> str:
    text = text.strip()
    return check_endpoint_url(text) if text else ""


#: Section -> key -> (parser, default). ``worker:NAME`` sections share the ``worker`` schema.
SCHEMA: dict[str, dict[str, tuple[Callable[[str], Any], Any]]] = {
    "sqjobs": {
        "broker": (_as_text, defaults.BROKER_URL),
        "database": (_as_text, defaults.DATABASE_URL),
        "jobs": (_as_list, ()),
        "path": (_as_list, ()),
        "track": (_as_track, "marked"),
    },
    "sqs": {
        "region": (_as_text, ""),
        "endpoint_url": (_as_endpoint_url, ""),
        "access_key": (_as_text, ""),
        "secret_key": (_as_text, ""),
        "queue_prefix": (_as_text, ""),
        "wait_time_s": (_as_seconds, float(defaults.MAX_WAIT_S)),
        "visibility_timeout_s": (_as_seconds, defaults.VISIBILITY_TIMEOUT_S),
    },
    "worker": {
        "queues": (_as_list, (defaults.QUEUE,)),
        "processes": (_as_positive_int, 1),
        "prefetch": (_as_positive_int, defaults.PREFETCH),
        "visibility_timeout_s": (_as_seconds, defaults.VISIBILITY_TIMEOUT_S),
        "max_jobs": (_as_positive_int, 0),
        "unknown_job_refusals": (_as_positive_int, defaults.UNKNOWN_JOB_REFUSALS),
        "crash_allowance": (_as_positive_int, defaults.CRASH_ALLOWANCE),
        "isolation": (_as_isolation, defaults.ISOLATION),
    },
    "beater": {
        "processes": (_as_positive_int, 1),
        "catch_up_grace_s": (_as_catch_up_grace_s, defaults.CATCH_UP_GRACE_S),
    },
    "daemon": {
        "run_dir": (_as_text, "run"),
        "log_dir": (_as_text, "log"),
        "stop_timeout_s": (_as_optional_seconds, None),
        "stall_timeout_s": (_as_optional_seconds, None),
        "watchdog_interval_s": (_as_seconds, 5.0),
    },
}


@dataclass(frozen=True)
class WorkerGroup:
    """One ``[worker:NAME]`` section: a group of identical worker processes."""

    name: str
    queues: tuple[str, ...] = (defaults.QUEUE,)
    processes: int = 1
    prefetch: int = defaults.PREFETCH
    visibility_timeout_s: float = defaults.VISIBILITY_TIMEOUT_S
    max_jobs: int = 0
    unknown_job_refusals: int = defaults.UNKNOWN_JOB_REFUSALS
    crash_allowance: int = defaults.CRASH_ALLOWANCE
    isolation: str = defaults.ISOLATION


@dataclass(frozen=True)
class Settings:
    """Everything the config file says, with defaults filled in."""

    #: The file read, or None for the built-in defaults.
    source: str | None = None
    #: Directory relative paths are read from.
    base_dir: str = "."
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    workers: tuple[WorkerGroup, ...] = ()

    def get(self, section: str, key: str) -> Any:
        """Return the value of ``[section] key`` (the default when the file does not set it)."""
        schema_name = "worker" if section.startswith("worker:") else section
        values = self.sections.get(section, {})
        if key in values:
            return values[key]
        return SCHEMA[schema_name][key][1]

    @property
    def broker_url(self) -> str:
        """``[sqjobs] broker`` with a relative SQLite path made absolute."""
        return resolve_sqlite_url(self.get("sqjobs", "broker"), self.base_dir)

    @property
    def database_url(self) -> str:
        """``[sqjobs] database`` with a relative SQLite path made absolute."""
        return resolve_sqlite_url(self.get("sqjobs", "database"), self.base_dir)

    @property
    def job_modules(self) -> tuple[str, ...]:
        """Modules workers import to register jobs."""
        return tuple(self.get("sqjobs", "jobs"))

    @property
    def import_paths(self) -> tuple[str, ...]:
        """Directories prepended to sys.path, made absolute."""
        return tuple(os.path.join(self.base_dir, p) for p in self.get("sqjobs", "path"))

    def resolve_path(self, path: str) -> str:
        """Return ``path`` made absolute relative to the config file's directory."""
        return os.path.abspath(os.path.join(self.base_dir, path))

    def worker_group(self, name: str) -> WorkerGroup:
        """Return the ``[worker:NAME]`` group; raise ConfigError if there is none."""
        for group in self.workers:
            if group.name == name:
                return group
        raise ConfigError(f"{self.source or 'configuration'}: no [worker:{name}] section")


def resolve_sqlite_url(url: str, base_dir: str) -> str:
    """Make the path of a relative ``sqlite:///PATH`` URL absolute; other URLs are returned as they are."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path = url[len(prefix):]
    if path.startswith("/") or path == ":memory:" or not path:
        return url
    return prefix + os.path.abspath(os.path.join(base_dir, path))


def _parse_section(filename: str, section: str, schema_name: str,
                   values: Mapping[str, str]) -> dict[str, Any]:
    schema = SCHEMA[schema_name]
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{filename}: [{section}] {key}: unknown key (known keys: {known})")
        parser = schema[key][0]
        try:
            parsed[key] = parser(raw)
        except ValueError as exc:
            raise ConfigError(f"{filename}: [{section}] {key} = {raw!r}: {exc}") from None
    return parsed


def load(filename: str) -> Settings:
    """Read the config file ``filename``; raise ConfigError on any mistake in it."""
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None,
                                       default_section="\0none")
    try:
        with open(filename, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"{filename}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{filename}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                          "save the config file as UTF-8") from None
    try:
        parser.read_string(text, filename)
    except configparser.Error as exc:
        raise ConfigError(f"{filename}: not a valid INI file: {exc}") from None
    sections: dict[str, dict[str, Any]] = {}
    workers = []
    for section in parser.sections():
        schema_name = "worker" if section.startswith("worker:") else section
        if schema_name not in SCHEMA:
            known = ", ".join(f"[{name}]" for name in SCHEMA if name != "worker")
            raise ConfigError(f"{filename}: [{section}]: unknown section (known: {known}, [worker:NAME])")
        if schema_name == "worker" and not section[len("worker:"):].strip():
            raise ConfigError(f"{filename}: [{section}]: a worker section needs a name, e.g. [worker:default]")
        sections[section] = _parse_section(filename, section, schema_name, parser[section])
        if schema_name == "worker":
            values = sections[section]
            if "queues" in values and not values["queues"]:
                raise ConfigError(f"{filename}: [{section}] queues: names no queue")
            workers.append(WorkerGroup(section[len("worker:"):].strip(), **values))
    base_dir = os.path.dirname(os.path.abspath(filename))
    return Settings(os.path.abspath(filename), base_dir, sections, tuple(workers))


def default_settings() -> Settings:
    """Settings with no file: the embedded broker and database in the current directory."""
    return Settings(None, os.getcwd(), {}, (WorkerGroup("default"),))


def load_settings(filename: str | None = None) -> Settings:
    """Read ``filename``, else the file named by SQJOBS_CONFIG, else return the defaults."""
    filename = filename or os.environ.get(CONFIG_ENV) or None
    return load(filename) if filename else default_settings()
