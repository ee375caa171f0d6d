"""Fixtures for the job-status tests: the three status databases and a runtime pointed at one.

PostgreSQL and MariaDB/MySQL are the real servers of this machine (and of
CI); a server that is down fails the tests, it never skips them. Other test
runs may use the same databases at the same time, so tests use fresh job
ids and never drop or empty the table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from sqjobs import app as runtime
from sqjobs.brokers.base import Broker
from sqjobs.config import Settings
from sqjobs.status.store import StatusStore, forget_stores, get_store

#: Server databases, overridable for other machines; tests fail (not skip) if they are down.
POSTGRESQL_URL = os.environ.get("SQJOBS_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("SQJOBS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

DATABASE_KINDS = ("sqlite", "postgresql", "mysql")


def database_url_for(kind: str, tmp_path: Path) -> str:
    """Return the status database URL of ``kind`` (SQLite: a new file under ``tmp_path``)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'status.db'}"
    return {"postgresql": POSTGRESQL_URL, "mysql": MYSQL_URL}[kind]


@pytest.fixture(params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each status database in turn, its table created; connections closed afterwards."""
    url = database_url_for(request.param, tmp_path)
    get_store(url).create_tables()  # a server that is down fails here
    yield url
    forget_stores()


@pytest.fixture()
def store(database_url: str) -> StatusStore:
    """This process's store for the database of the test."""
    return get_store(database_url)


def use_database(url: str, broker: Broker | str, track: str = "marked") -> Settings:
    """Make ``url`` this process's status database and ``broker`` its broker; return the settings."""
    settings = Settings(None, os.getcwd(), {"sqjobs": {"database": url, "track": track}}, ())
    runtime.configure(settings=settings, broker=broker)
    return settings
