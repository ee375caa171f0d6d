"""sqjobs' settings read from Django's: the file, then the seed talk's names, then the ``SQJOBS`` dict.

- ``SQJOBS_CONFIG``: the one INI file (a ``-c`` option or the SQJOBS_CONFIG
  environment variable wins over it).
- ``SQJOBS_SQS_ACCESS_KEY``, ``SQJOBS_SQS_SECRET_KEY``, ``SQJOBS_SQS_REGION``:
  the seed talk's names for ``[sqs] access_key``, ``secret_key``, ``region``.
- ``SQJOBS = {"sqjobs": {...}, "sqs": {...}, "worker:default": {...}}``: the
  file's sections and keys, each overriding the file.
- ``SQJOBS_EAGER = True``: ``[sqjobs] broker = eager://`` (every ``.delay()``
  runs at once, through the real encoder): for a project's own tests.

``[sqjobs] database`` is ``django://default`` (Django's default database)
unless the file or ``SQJOBS`` sets it. Relative SQLite paths are read from
the file's directory, or ``BASE_DIR`` when there is no file. Every mistake
raises ConfigError naming the Django setting.
"""

from __future__ import annotations

import os
from typing import Any

from sqjobs.config import Settings, default_settings, load, parse_value, settings_from_mapping
from sqjobs.errors import ConfigError

#: The seed talk's setting names -> (section, key).
TALK_NAMES = {
    "SQJOBS_SQS_ACCESS_KEY": ("sqs", "access_key"),
    "SQJOBS_SQS_SECRET_KEY": ("sqs", "secret_key"),
    "SQJOBS_SQS_REGION": ("sqs", "region"),
}
#: ``[sqjobs] database`` when neither the file nor ``SQJOBS`` sets one.
DEFAULT_DATABASE = "django://default"
#: The broker ``SQJOBS_EAGER = True`` chooses.
EAGER_BROKER = "eager://"


def django_settings(filename: str | None = None) -> Settings:
    """sqjobs' settings from Django's settings and ``filename`` (``-c``), or the file of ``SQJOBS_CONFIG``."""
    from django.conf import settings

    base = _file_settings(filename, getattr(settings, "SQJOBS_CONFIG", None), getattr(settings, "BASE_DIR", None))
    layers: dict[str, dict[str, Any]] = {}
    for name, (section, key) in TALK_NAMES.items():
        value = getattr(settings, name, None)
        if value is not None:
            parse_value(section, key, value, f"settings.{name}")
            layers.setdefault(section, {})[key] = value
    merged = settings_from_mapping(layers, "settings", base)
    mapping = getattr(settings, "SQJOBS", None)
    if mapping is not None:
        merged = settings_from_mapping(mapping, "settings.SQJOBS", merged)
    defaults: dict[str, Any] = {}
    if "database" not in merged.sections.get("sqjobs", {}):
        defaults["database"] = DEFAULT_DATABASE
    if getattr(settings, "SQJOBS_EAGER", False):
        defaults["broker"] = EAGER_BROKER
    return settings_from_mapping({"sqjobs": defaults}, "settings", merged) if defaults else merged


def _file_settings(filename: str | None, setting: Any, base_dir: Any) -> Settings:
    """The file (``filename``, else the ``SQJOBS_CONFIG`` setting), or the defaults (paths from ``base_dir``)."""
    if filename:
        return load(filename)
    if setting:
        try:
            return load(os.fspath(setting))
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"settings.SQJOBS_CONFIG = {setting!r}: {exc}") from None
    empty = default_settings()
    return Settings(None, os.fspath(base_dir) if base_dir else empty.base_dir, {}, empty.workers)
