"""``django://ALIAS``: sqjobs' status rows and beater claims in a database of Django's ``DATABASES``.

sqjobs opens its own connection (Peewee) with the credentials Django has for
``ALIAS``, so a job's own queries and its status rows never share a
transaction. PostgreSQL, MySQL/MariaDB and SQLite (a file) are supported.
"""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit

import peewee

#: Django's database vendors -> the Peewee URL scheme and database class of each.
VENDORS: dict[str, tuple[str, type[peewee.Database]]] = {
    "postgresql": ("postgresql", peewee.PostgresqlDatabase),
    "mysql": ("mysql", peewee.MySQLDatabase),
    "sqlite": ("sqlite", peewee.SqliteDatabase),
}


def peewee_class(vendor: str) -> type[peewee.Database]:
    """The Peewee database class of a Django database vendor; ValueError for another vendor."""
    if vendor not in VENDORS:
        raise ValueError(f"sqjobs cannot keep status rows in a {vendor} database "
                         f"(it can in {', '.join(sorted(VENDORS))})")
    return VENDORS[vendor][1]


def database_url(url: str) -> str:
    """Return the Peewee URL of the Django database ``django://ALIAS`` names; ValueError if it cannot be used."""
    from django.db import connections

    alias = urlsplit(url).netloc or "default"
    if alias not in connections.settings:
        known = ", ".join(sorted(connections.settings))
        raise ValueError(f"settings.DATABASES has no {alias!r} database (known: {known})")
    connection = connections[alias]
    peewee_class(connection.vendor)
    config = connection.settings_dict
    name = str(config.get("NAME") or "")
    if connection.vendor == "sqlite":
        if not name or name == ":memory:" or "mode=memory" in name:
            raise ValueError(f"settings.DATABASES[{alias!r}] is an in-memory SQLite database, which another "
                             "connection cannot share; give it a file (for tests: ['TEST']['NAME'])")
        return "sqlite:///" + os.path.abspath(name)
    user = quote(str(config.get("USER") or ""), safe="")
    password = quote(str(config.get("PASSWORD") or ""), safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(config.get("HOST") or "")
    port = f":{config['PORT']}" if config.get("PORT") else ""
    return f"{VENDORS[connection.vendor][0]}://{credentials}{host}{port}/{quote(name, safe='')}"
