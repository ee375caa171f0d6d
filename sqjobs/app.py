"""The application object: settings, broker, status store, job registry and middleware in one place.

Workers, beaters and the producer are given an :class:`App`. Most programs
use the default one behind the module-level API (``sqjobs.configure``,
``fn.delay()``): it is made on first use, from what ``configure`` was
given, else the file named by ``SQJOBS_CONFIG``, else the embedded defaults
in the current directory. Nothing connects until it is needed: the broker
and the status store are made on first use.

``sys.path`` is changed here and only here: ``[sqjobs] path`` entries are
put in front of it when settings are chosen.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .brokers import EAGER_URLS, Broker, broker_url_problem, create_broker
from .config import Settings, load_settings
from .errors import ConfigError, JobNotFoundError
from .middleware.base import Middleware, MiddlewareChain, load_middleware
from .middleware.cancellation import Cancellation, CancellationCheck, cancel_job
from .middleware.tracking import DuplicateGuard, StatusTracking
from .producer import Producer
from .registry import Registry
from .registry import registry as default_registry
from .signing import KEYS_ENV, Signer, signer_from
from .status.handle import JobHandle
from .status.store import StatusStore, get_store
from .worker.eager import run_now

if TYPE_CHECKING:
    from .job import Job


class App:
    """One sqjobs application. Every argument is optional; what is not given comes from the settings."""

    def __init__(self, settings: Settings | None = None, *, broker: Broker | str | None = None,
                 middleware: Sequence[Middleware] | None = None, registry: Registry | None = None) -> None:
        self._lock = threading.RLock()
        self._settings = settings
        self._broker: Broker | None = broker if isinstance(broker, Broker) else None
        #: True when the broker was given as an instance (not made here from a URL).
        self._broker_given = self._broker is not None
        self._broker_url: str | None = _checked_url(broker) if isinstance(broker, str) else None
        self._user_middleware: list[Middleware] = list(middleware or ())
        self._chain: MiddlewareChain | None = None
        #: Where this process records metrics when told so (``--metrics-dir``); else ``[metrics] dir``.
        self._metrics_dir: str | None = None
        #: ``[sqjobs] track`` and the settings it was read from.
        self._tracking: tuple[Settings | None, str] = (None, "")
        #: The signer (None: signing off) and the settings and keys text it was made from.
        self._signer: tuple[Settings | None, str | None, Signer | None] = (None, None, None)
        self.registry = registry or default_registry
        self.producer = Producer(self, run_now=run_now)
        #: Runs a callback when the current database transaction commits (``delay_on_commit``); None: no hook.
        #: The Django integration sets Django's ``transaction.on_commit``.
        self.on_commit: Callable[[Callable[[], object]], None] | None = None
        if settings is not None:
            _use_paths(settings)

    def __repr__(self) -> str:
        source = self._settings.source if self._settings is not None else None
        return f"<App {source or 'defaults'} broker={self.broker_url}>"

    # -- choosing ----------------------------------------------------------------------

    def configure(self, config: str | None = None, *, broker: Broker | str | None = None,
                  settings: Settings | None = None, middleware: Sequence[Middleware] | None = None) -> Settings:
        """Choose settings, broker and middleware; return the settings.

        ``config`` is a config file path, ``settings`` already-read settings.
        A call with only ``broker`` (or only ``middleware``) keeps the
        current settings, reading them first if none were, and changes only
        what it names. A broker that is replaced is closed.
        """
        if isinstance(broker, str):
            _checked_url(broker)  # before anything changes
        with self._lock:
            if settings is None and config is None and (broker is not None or middleware is not None):
                chosen = self.settings
            else:
                chosen = settings or load_settings(config)
            _use_paths(chosen)
            keep_broker = broker is None and settings is None and config is None
            self._settings = chosen
            if not keep_broker:
                self._replace_broker(broker)
            if middleware is not None:
                self._user_middleware = list(middleware)
            self._chain = None
            return chosen

    def _replace_broker(self, broker: Broker | str | None) -> None:
        old = self._broker
        self._broker = broker if isinstance(broker, Broker) else None
        self._broker_given = self._broker is not None
        self._broker_url = broker if isinstance(broker, str) else None
        if old is not None and old is not self._broker:
            old.close()

    def with_broker(self, broker: Broker) -> App:
        """This app if ``broker`` is its broker, else a sibling with the same settings, registry and middleware."""
        if self._broker is broker:
            return self
        sibling = App(self.settings, broker=broker, registry=self.registry, middleware=self._user_middleware)
        sibling._metrics_dir = self._metrics_dir
        return sibling

    def close(self) -> None:
        """Close the broker (a new one is made if the app is used again)."""
        with self._lock:
            self._replace_broker(None)

    # -- what the app holds --------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings, read on first use."""
        with self._lock:
            if self._settings is None:
                self._settings = load_settings()
                _use_paths(self._settings)
            return self._settings

    @property
    def chosen_settings(self) -> Settings | None:
        """The settings chosen so far, or None if none were (reads nothing)."""
        return self._settings

    @property
    def broker_url(self) -> str:
        """The URL of the broker this app uses (``eager://`` in eager mode)."""
        if self._broker_given and self._broker is not None:
            return f"{self._broker.scheme}://"
        return self._broker_url or self.settings.broker_url

    @property
    def eager(self) -> bool:
        """True in eager mode: ``.delay()`` runs the job at once, in the caller."""
        return not self._broker_given and self.broker_url in EAGER_URLS

    @property
    def broker(self) -> Broker:
        """The broker, made on first use (eager mode keeps raw sends in memory)."""
        with self._lock:
            if self._broker is None:
                url = "memory://" if self.eager else self.broker_url
                self._broker = create_broker(url, self.settings.section_values("sqs"))
            return self._broker

    @property
    def store(self) -> StatusStore:
        """The status store of ``[sqjobs] database`` (connects on first query)."""
        return get_store(self.settings.database_url)

    @property
    def tracking(self) -> str:
        """``[sqjobs] track``: ``marked``, ``all`` or ``none`` (read once per settings)."""
        settings = self.settings
        if self._tracking[0] is not settings:
            self._tracking = (settings, str(settings.get("sqjobs", "track")))
        return self._tracking[1]

    @property
    def signer(self) -> Signer | None:
        """The signer of ``[sqjobs] signing_keys`` or ``SQJOBS_SIGNING_KEYS`` (None: signing off).

        Read when first asked (and again when the settings or the variable
        change); raises ConfigError for keys it refuses.
        """
        settings = self.settings
        env_text = os.environ.get(KEYS_ENV)
        known_settings, known_env, signer = self._signer
        if known_settings is not settings or known_env != env_text:
            signer = signer_from(settings.get("sqjobs", "signing_keys"), os.environ,
                                 f"{settings.source or 'configuration'}: [sqjobs] signing_keys")
            self._signer = (settings, env_text, signer)
        return signer

    def is_tracked(self, job_class: type[Job] | None) -> bool:
        """True when the status of ``job_class`` is recorded (None, a job unknown here: not tracked)."""
        mode = self.tracking
        if job_class is None or mode == "none":
            return False
        return mode == "all" or bool(getattr(job_class, "track", False))

    @property
    def middleware(self) -> MiddlewareChain:
        """The middleware in the order they run: sqjobs' own, those of ``[sqjobs] middleware``, then given ones.

        sqjobs' own: the duplicate guard and status tracking (unless ``[sqjobs] track = none``), then
        the cancellation check (not in eager mode); last of all the
        metrics middleware, when this process records metrics (:attr:`metrics_dir`).
        """
        chain = self._chain
        if chain is not None:  # asked once per job: no lock once it is built
            return chain
        with self._lock:
            if self._chain is None:
                builtin: list[Middleware] = []
                if self.tracking != "none":
                    builtin += [DuplicateGuard(self), StatusTracking(self)]
                if not self.eager:  # eager jobs run inside .delay(): nothing to cancel
                    builtin.append(CancellationCheck(self))
                configured = load_middleware(self.settings.get("sqjobs", "middleware"),
                                             f"{self.settings.source or 'configuration'}: [sqjobs] middleware")
                recording: list[Middleware] = []
                metrics_dir = self.metrics_dir
                if metrics_dir:
                    from .middleware.metrics import MetricsMiddleware

                    # Last: its clock starts after every other before_run let the attempt go ahead.
                    recording.append(MetricsMiddleware(metrics_dir))
                self._chain = MiddlewareChain([*builtin, *configured, *self._user_middleware, *recording])
            return self._chain

    @property
    def metrics_dir(self) -> str | None:
        """Where this process records metrics: as told by :meth:`record_metrics`, else ``[metrics] dir``, else None."""
        if self._metrics_dir:
            return self._metrics_dir
        configured = str(self.settings.get("metrics", "dir"))
        return self.settings.resolve_path(configured) if configured else None

    def record_metrics(self, directory: str) -> None:
        """Record metrics in ``directory`` (sqjobsd's workers and beaters are told so with ``--metrics-dir``)."""
        with self._lock:
            self._metrics_dir = directory
            self._chain = None

    @property
    def user_middleware(self) -> list[Middleware]:
        """The middleware given to :meth:`configure` or the constructor (not the configured or built-in ones)."""
        return list(self._user_middleware)

    def add_middleware(self, item: Middleware) -> None:
        """Add ``item`` after the others (the worker adds its health file this way)."""
        with self._lock:
            self._user_middleware.append(item)
            self._chain = None


def _checked_url(url: str) -> str:
    """Return the broker URL given as ``broker=``; raise ConfigError naming the argument if no broker answers to it."""
    problem = broker_url_problem(url)
    if problem:
        raise ConfigError(f"broker={url!r}: {problem}")
    return url


def _use_paths(settings: Settings) -> None:
    """Put the settings' ``[sqjobs] path`` entries in front of ``sys.path`` (the one place that changes it)."""
    for path in reversed(settings.import_paths):
        add_import_path(path)


def add_import_path(path: str) -> None:
    """Put ``path`` in front of ``sys.path`` if it is not there (``--import`` finds modules in the current folder)."""
    if path not in sys.path:
        sys.path.insert(0, path)


_default: App | None = None
_default_lock = threading.Lock()


def current_app() -> App:
    """The default application, made on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = App()
        return _default


def configure(config: str | None = None, *, broker: Broker | str | None = None, settings: Settings | None = None,
              middleware: Sequence[Middleware] | None = None) -> Settings:
    """Configure the default application (see :meth:`App.configure`); return its settings."""
    return current_app().configure(config, broker=broker, settings=settings, middleware=middleware)


def reset() -> None:
    """Forget the default application, closing its broker (tests use this between cases)."""
    global _default
    with _default_lock:
        app, _default = _default, None
    if app is not None:
        app.close()


def get_broker() -> Broker:
    """The default application's broker."""
    return current_app().broker


def get_settings() -> Settings:
    """The default application's settings."""
    return current_app().settings


def get_job(job_id: str, app: App | None = None) -> JobHandle[Any]:
    """Return the handle of the tracked job ``job_id`` from its row (in the default app's database).

    Raises JobNotFoundError if no row has that id (untracked, unknown or
    pruned), StatusStoreError if the database cannot be read.
    """
    chosen = app or current_app()
    record = chosen.store.get(job_id)
    if record is None:
        raise JobNotFoundError(f"no status row for job {job_id} (not tracked, unknown, or pruned)")
    return JobHandle.from_record(record, chosen)


def cancel(job_id: str, app: App | None = None, *, sent_cancellable: bool = False) -> Cancellation:
    """Cancel job ``job_id`` if it has not started; return what happened.

    This is ``sqjobs.cancel``; the rules are in :mod:`sqjobs.middleware.cancellation`.

    ``app`` None: the default application. ``sent_cancellable`` says the
    caller knows the job was sent cancellable (a handle does): then a job
    without a status row counts as cancelled. Raises InvalidJobIdError for
    an id no job can have (nothing is looked up or stored),
    StatusStoreError when the database cannot be reached (then nothing was
    recorded).
    """
    return cancel_job(app or current_app(), job_id, sent_cancellable=sent_cancellable)
