"""The one configuration file (INI) read into typed settings.

Every key is declared once, in :mod:`sqjobs.settings`, with its type,
default and documentation; an unknown section or key, or a value of the wrong
type, raises ConfigError naming the file, the section and the key. Relative ``sqlite:///`` paths and ``path``
entries are read relative to the file's directory, so a daemon started from
anywhere finds the same files.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError
from .settings import SCHEMA, default, schema_section

#: Environment variable naming the config file when no ``-c`` is given.
CONFIG_ENV = "SQJOBS_CONFIG"


@dataclass(frozen=True)
class WorkerGroup:
    """One ``[worker:NAME]`` section: a group of identical worker processes."""

    name: str
    queues: tuple[str, ...] = default("worker", "queues")
    processes: int = default("worker", "processes")
    prefetch: int = default("worker", "prefetch")
    visibility_timeout_s: float = default("worker", "visibility_timeout_s")
    max_jobs: int = default("worker", "max_jobs")
    unknown_job_refusals: int = default("worker", "unknown_job_refusals")
    crash_allowance: int = default("worker", "crash_allowance")
    isolation: str = default("worker", "isolation")
    threads: int = default("worker", "threads")
    hold_s: float = default("worker", "hold_s")


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
        values = self.sections.get(section, {})
        if key in values:
            return values[key]
        return default(section, key)

    def section_values(self, section: str) -> dict[str, Any]:
        """Every key of ``[section]``, the defaults filled in."""
        return {key: self.get(section, key) for key in SCHEMA[schema_section(section)]}

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
        try:
            parsed[key] = schema[key].parse(raw)
        except ValueError as exc:
            shown = "(not shown: a secret)" if schema[key].secret else repr(raw)
            raise ConfigError(f"{filename}: [{section}] {key} = {shown}: {exc}") from None
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
        schema_name = schema_section(section)
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
