"""The process's current settings and broker, resolved on first use, never at import.

Order: what :func:`configure` was given, else the file named by
``SQJOBS_CONFIG``, else the embedded defaults in the current directory.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, Sequence

from .brokers import Broker, create_broker
from .config import Settings, load_settings

if TYPE_CHECKING:
    from .worker import Worker

_lock = threading.RLock()
_settings: Settings | None = None
_broker: Broker | None = None
#: The broker URL :func:`configure` was given, used when the broker is first needed.
_broker_url: str | None = None


def configure(config: str | None = None, *, broker: Broker | str | None = None,
              settings: Settings | None = None) -> Settings:
    """Choose this process's settings and broker; return the settings.

    ``config`` is a config file path; ``settings`` already-read settings;
    ``broker`` a Broker instance or URL overriding the settings' broker.
    A broker given by URL is created when first used. Calling it again
    replaces what an earlier call chose; a call with only ``broker`` keeps
    the current settings (``database``, ``track``...), reading them first
    if none were read yet, and changes only the broker.
    """
    global _settings, _broker, _broker_url
    with _lock:
        if settings is None and config is None and broker is not None:
            chosen = _settings or load_settings()
        else:
            chosen = settings or load_settings(config)
        for path in reversed(chosen.import_paths):
            if path not in sys.path:
                sys.path.insert(0, path)
        _settings = chosen
        _broker = broker if isinstance(broker, Broker) else None
        _broker_url = broker if isinstance(broker, str) else None
        return chosen


def get_settings() -> Settings:
    """Return the current settings, reading them on first use (no broker is created)."""
    with _lock:
        if _settings is None:
            configure()
        assert _settings is not None
        return _settings


def chosen_settings() -> Settings | None:
    """Return the settings chosen so far, or None if none were (reads nothing)."""
    with _lock:
        return _settings


def get_broker() -> Broker:
    """Return the current broker, creating it on first use."""
    global _broker
    with _lock:
        if _broker is None:
            settings = get_settings()
            _broker = create_broker(_broker_url or settings.broker_url, settings)
        return _broker


def reset() -> None:
    """Forget the settings and broker (tests use this between cases)."""
    global _settings, _broker, _broker_url
    with _lock:
        _settings = None
        _broker = None
        _broker_url = None


def create_eager_broker() -> Broker:
    """The seed talk's eager broker: jobs run inside ``add_job``/``.delay()``.

    Also makes it the current broker, keeping the current settings (those of
    an earlier :func:`configure`, else ``SQJOBS_CONFIG``'s file, else the defaults).
    """
    from .brokers.eager import EagerBroker

    broker = EagerBroker()
    configure(broker=broker)
    return broker


def create_sqs_broker(**options: Any) -> Broker:
    """The seed talk's SQS broker: ``access_key``, ``secret_key``, ``region``, ``endpoint_url``..."""
    from .brokers.sqs import SQSBroker

    return SQSBroker(**options)


#: Options of create_sqs_worker that go to the Worker rather than to the SQS broker.
_WORKER_OPTIONS = frozenset({"prefetch", "wait_s", "max_jobs", "burst", "registry", "status_file", "clock"})


def create_sqs_worker(queue: str | Sequence[str], **options: Any) -> Worker:
    """Return a Worker consuming ``queue`` (a name or names in priority order) on a new SQS broker.

    Broker options are those of ``create_sqs_broker`` (``access_key``,
    ``secret_key``, ``region``, ``endpoint_url``, ``queue_prefix``,
    ``wait_time_s``, ``visibility_timeout_s``); ``prefetch``, ``max_jobs``,
    ``burst`` and ``status_file`` go to the worker, and so does
    ``visibility_timeout_s``. Call ``.run()`` on the result (after
    ``.install_signal_handlers()`` in a main thread) to consume.
    """
    from .worker import Worker

    worker_options = {key: options.pop(key) for key in list(options) if key in _WORKER_OPTIONS}
    if "visibility_timeout_s" in options:
        worker_options["visibility_timeout_s"] = options["visibility_timeout_s"]
    broker = create_sqs_broker(**options)
    queues = [queue] if isinstance(queue, str) else list(queue)
    return Worker(broker, queues, **worker_options)
