"""Django's database connections around each job, as Django's request cycle handles them."""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections

from sqjobs.app import current_app
from sqjobs.middleware.base import Middleware


class CloseOldConnections(Middleware):
    """Close connections that failed or outlived ``CONN_MAX_AGE`` before and after each job.

    So a worker survives a database restart and never holds a connection
    longer than Django's settings allow, like a request does.

    Only in a worker: in eager mode the job runs inside its caller (a view,
    a test, perhaps in a transaction), whose connections are not the job's
    to close.
    """

    def before_run(self, job: Any, message: Any) -> None:
        """Drop the thread's stale connections before the job runs."""
        if not current_app().eager:
            close_old_connections()

    def after_run(self, job: Any, message: Any, result: Any = None, error: BaseException | None = None) -> None:
        """Drop the thread's connections that are done (``CONN_MAX_AGE = 0``) or broken after the job."""
        if not current_app().eager:
            close_old_connections()
