"""Databases of their own on the PostgreSQL and MariaDB servers, made for one test and dropped after it.

For tests that need a table in a given state (an earlier shape, no rows of
other test runs) on servers other runs share.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Iterator
from urllib.parse import urlsplit

import peewee

from sqjobs.status.database import open_database
from sqjobs.status.store import forget_stores


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """Yield the URL of a new, empty database on the server of ``server_url``; drop it afterwards."""
    name = f"sqjobs_scratch_{uuid.uuid4().hex[:12]}"
    server = open_database(server_url)
    server.execute_sql(f"CREATE DATABASE {name}")
    try:
        yield urlsplit(server_url)._replace(path=f"/{name}").geturl()
    finally:
        forget_stores()
        # Connections other threads or processes left open stay open: PostgreSQL drops the database anyway.
        force = " WITH (FORCE)" if isinstance(server, peewee.PostgresqlDatabase) else ""
        server.execute_sql(f"DROP DATABASE {name}{force}")
        server.close()
