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
from typing import Any, Callable, Mapping

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


def as_setting_text(value: Any) -> str:
    """The text a config file would hold for ``value`` (a list or tuple: its items joined by commas)."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return str(value)


def parse_value(section: str, key: str, value: Any, where: str) -> Any:
    """Read ``value`` as ``[section] key`` does; raise ConfigError naming ``where`` (e.g. a Django setting)."""
    schema = SCHEMA[schema_section(section)]
    if key not in schema:
        raise ConfigError(f"{where}: unknown key (known keys: {', '.join(sorted(schema))})")
    raw = as_setting_text(value)
    try:
        return schema[key].parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where} = {value!r}: {exc}") from None


def _check_section(section: str, where: str) -> str:
    """Return the schema name of ``section``; raise ConfigError naming ``where`` if there is none."""
    schema_name = schema_section(section)
    if schema_name not in SCHEMA:
        known = ", ".join(f"[{name}]" for name in SCHEMA if name != "worker")
        raise ConfigError(f"{where}: unknown section (known: {known}, [worker:NAME])")
    if schema_name == "worker" and not section[len("worker:"):].strip():
        raise ConfigError(f"{where}: a worker section needs a name, e.g. [worker:default]")
    return schema_name


def _worker_groups(sections: Mapping[str, Mapping[str, Any]], where: Callable[[str], str]) -> list[WorkerGroup]:
    """The ``[worker:NAME]`` groups of ``sections``; ``where(section)`` names a section in errors."""
    workers = []
    for section, values in sections.items():
        if schema_section(section) != "worker":
            continue
        if "queues" in values and not values["queues"]:
            raise ConfigError(f"{where(section)} queues: names no queue")
        workers.append(WorkerGroup(section[len("worker:"):].strip(), **values))
    return workers


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
    for section in parser.sections():
        _check_section(section, f"{filename}: [{section}]")
        sections[section] = {key: parse_value(section, key, raw, f"{filename}: [{section}] {key}")
                             for key, raw in parser[section].items()}
    workers = _worker_groups(sections, lambda section: f"{filename}: [{section}]")
    base_dir = os.path.dirname(os.path.abspath(filename))
    return Settings(os.path.abspath(filename), base_dir, sections, tuple(workers))


def settings_from_mapping(mapping: Mapping[str, Any], source_name: str, base: Settings | None = None) -> Settings:
    """Settings from ``{"section": {"key": value}}``, the same sections and keys as the config file.

    The values are laid over ``base`` (default: the built-in defaults), key
    by key. Values may be strings as in the file, numbers, or lists for
    the list keys. A mistake raises ConfigError naming
    ``source_name[section][key]`` (``source_name`` is where the mapping came
    from, e.g. ``settings.SQJOBS``).
    """
    base = base or default_settings()
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{source_name}: must be a dict of sections, e.g. {{'sqjobs': {{'broker': 'sqs'}}}}, "
                          f"got {type(mapping).__name__}")
    sections: dict[str, dict[str, Any]] = {name: dict(values) for name, values in base.sections.items()}
    for section, values in mapping.items():
        where = f"{source_name}[{section!r}]"
        if not isinstance(section, str):
            raise ConfigError(f"{where}: a section name is a string such as 'sqjobs' or 'worker:default'")
        _check_section(section, where)
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: must be a dict of keys and values, got {type(values).__name__}")
        parsed = sections.setdefault(section, {})
        for key, value in values.items():
            parsed[key] = parse_value(section, str(key), value, f"{where}[{key!r}]")
    workers = _worker_groups(sections, lambda section: f"{source_name}[{section!r}]")
    return Settings(base.source, base.base_dir, sections, tuple(workers) or base.workers)


def default_settings() -> Settings:
    """Settings with no file: the embedded broker and database in the current directory."""
    return Settings(None, os.getcwd(), {}, (WorkerGroup("default"),))


#: Where settings come from when a program set a source of its own (Django's settings); None: the file.
_settings_source: Callable[[str | None], Settings] | None = None


def set_settings_source(source: Callable[[str | None], Settings] | None) -> None:
    """Make :func:`load_settings` ask ``source(filename)`` instead of reading the file alone (None: undo).

    ``source`` is given the file named by ``-c`` or SQJOBS_CONFIG, or None.
    The Django integration sets one, so that every command reads Django's
    settings as well as the file.
    """
    global _settings_source
    _settings_source = source


def load_settings(filename: str | None = None) -> Settings:
    """Read ``filename``, else the file named by SQJOBS_CONFIG, else return the defaults.

    When a settings source was set (:func:`set_settings_source`), it decides.
    """
    filename = filename or os.environ.get(CONFIG_ENV) or None
    if _settings_source is not None:
        return _settings_source(filename)
    return load(filename) if filename else default_settings()
