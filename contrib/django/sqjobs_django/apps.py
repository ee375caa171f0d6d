"""The Django application: wires sqjobs to Django's settings and database and imports each app's ``jobs.py``."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from django.apps import AppConfig, apps
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.signals import connection_created
from django.utils.module_loading import module_has_submodule

from sqjobs.app import current_app
from sqjobs.config import set_settings_source
from sqjobs.errors import ConfigError
from sqjobs.status.database import register_url_scheme
from sqjobs.status.store import forget_stores

from .conf import django_settings
from .databases import database_url
from .middleware import CloseOldConnections

logger = logging.getLogger("sqjobs.django")

#: The module of each installed app imported at start-up, when it exists.
JOBS_MODULE = "jobs"


class SQJobsConfig(AppConfig):
    """``sqjobs_django`` in ``INSTALLED_APPS``."""

    name = "sqjobs_django"
    verbose_name = "sqjobs"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        """Configure sqjobs from Django's settings, then import every installed app's ``jobs.py``.

        Raises ImproperlyConfigured naming the Django setting when sqjobs'
        settings are wrong; an exception raised inside a ``jobs.py``
        propagates as it is, with its traceback.
        """
        register_url_scheme("django", database_url)
        set_settings_source(django_settings)
        app = current_app()
        try:
            app.configure(settings=django_settings())
        except ConfigError as exc:
            raise ImproperlyConfigured(str(exc)) from None
        app.on_commit = transaction.on_commit
        if not any(isinstance(item, CloseOldConnections) for item in app.user_middleware):
            app.add_middleware(CloseOldConnections())
        connection_created.connect(let_go_before_creating_databases, dispatch_uid="sqjobs_django")
        autodiscover()


def let_go_before_creating_databases(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Close sqjobs' status connections when Django connects to create or drop a database.

    Django's test runner does so to drop its test database, which PostgreSQL
    refuses while sqjobs still holds a connection to it (left open by jobs
    run in eager mode during the tests).
    """
    if connection.alias == NO_DB_ALIAS:
        forget_stores()


def autodiscover() -> list[str]:
    """Import the ``jobs`` module of every installed app that has one; return their names.

    An app without one is skipped. An error raised while importing one
    (a ``jobs.py`` importing something missing included) propagates.
    """
    imported = []
    for app_config in apps.get_app_configs():
        if module_has_submodule(app_config.module, JOBS_MODULE):
            name = f"{app_config.name}.{JOBS_MODULE}"
            importlib.import_module(name)
            imported.append(name)
    logger.debug("job modules imported: %s", ", ".join(imported) or "none")
    return imported
