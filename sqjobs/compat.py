"""The seed talk's API, kept working: ``create_eager_broker()``, ``create_sqs_broker(...)``, ``broker.add_job``.

In the talk a broker both carried messages and sent jobs. Here brokers only
move bytes, and jobs are sent by an application's producer; what these
functions return joins the two: the transport's methods (``stats``,
``receive``...) are there as before, and ``add_job`` sends through the
producer of the application it belongs to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from .app import App, current_app
from .brokers import Broker
from .worker.loop import Worker

if TYPE_CHECKING:
    from .job import Job


class SeedBroker:
    """A broker as the seed talk used it: the transport's methods, plus ``add_job``."""

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def transport(self) -> Broker:
        """The broker that moves the messages."""
        return self.app.broker

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app.broker, name)

    def __repr__(self) -> str:
        return f"<SeedBroker {self.app!r}>"

    def add_job(self, job_class: type[Job], *args: Any, **kwargs: Any) -> tuple[str, Job]:
        """Send ``job_class(*args, **kwargs)``; return ``(job_id, job)``.

        In eager mode the job has run and ``job.result`` holds its return value.
        """
        handle = self.app.producer.send(job_class, args, kwargs)
        instance = handle.job if handle.job is not None else job_class()
        return handle.id, instance

    def add_job_by_name(self, name: str, *args: Any, **kwargs: Any) -> tuple[str, Job]:
        """Like :meth:`add_job`, finding the job class by its registered name."""
        return self.add_job(self.app.registry.get(name), *args, **kwargs)


def create_eager_broker() -> SeedBroker:
    """The seed talk's eager broker: jobs run inside ``add_job``/``.delay()``. Makes the default app eager.

    The other settings (``track``, ``database``) are kept.
    """
    app = current_app()
    app.configure(broker="eager://")
    return SeedBroker(app)


def create_sqs_broker(**options: Any) -> SeedBroker:
    """The seed talk's SQS broker: ``access_key``, ``secret_key``, ``region``, ``endpoint_url``...

    It sends through an application of its own, with the default app's
    settings (tracking, status database) and job registry.
    """
    from .brokers.sqs import SQSBroker

    base = current_app()
    return SeedBroker(App(base.settings, broker=SQSBroker(**options), registry=base.registry))


#: Options of create_sqs_worker that go to the Worker rather than to the SQS broker.
_WORKER_OPTIONS = frozenset({"prefetch", "wait_s", "max_jobs", "burst", "registry", "status_file", "clock",
                             "isolation"})


def create_sqs_worker(queue: str | Sequence[str], **options: Any) -> Worker:
    """Return a Worker consuming ``queue`` (a name or names in priority order) on a new SQS broker.

    Broker options are those of ``create_sqs_broker`` (``access_key``,
    ``secret_key``, ``region``, ``endpoint_url``, ``queue_prefix``,
    ``wait_time_s``, ``visibility_timeout_s``); ``prefetch``, ``max_jobs``,
    ``burst``, ``status_file`` and ``isolation`` go to the worker, and so does
    ``visibility_timeout_s``. Call ``.run()`` on the result (after
    ``.install_signal_handlers()`` in a main thread) to consume.
    """
    worker_options = {key: options.pop(key) for key in list(options) if key in _WORKER_OPTIONS}
    if "visibility_timeout_s" in options:
        worker_options["visibility_timeout_s"] = options["visibility_timeout_s"]
    queues = [queue] if isinstance(queue, str) else list(queue)
    return Worker(create_sqs_broker(**options).app, queues, **worker_options)
