"""Tables of sqjobs' own beside the status rows: held jobs, unique keys, cancellations.

Each lives in the ``[sqjobs] database`` and shares the status store's
connection (one per thread and process), so its errors are sorted exactly as
status writes are (:mod:`sqjobs.status.database`): StatusStoreError while the
database cannot be reached, StatusStorePermanentError for a configuration no
retry fixes. A table is created on first use (safe to race with other
processes).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, ClassVar, TypeVar

import peewee

from .store import StatusStore, create_tables_racing, database_errors, get_store, safe_url

R = TypeVar("R", bound="Rows")

_cache: dict[tuple[type, str], Rows] = {}
_cache_lock = threading.Lock()


class Rows:
    """One table in the database of a :class:`~sqjobs.status.store.StatusStore`; subclasses make its model."""

    #: What the table holds, in error messages ("held jobs").
    label: ClassVar[str] = "rows"

    def __init__(self, store: StatusStore) -> None:
        self.store = store
        self.database = store.database
        self.model: Any = self.make_model(store.database)
        self._ready = False

    @classmethod
    def for_url(cls: type[R], url: str) -> R:
        """This process's instance for the database at ``url`` (made again in a forked child)."""
        store = get_store(url)
        with _cache_lock:
            known = _cache.get((cls, url))
            if known is None or known.store is not store:
                known = _cache[(cls, url)] = cls(store)
            return known  # type: ignore[return-value]

    @staticmethod
    def make_model(database: peewee.Database) -> Any:
        """Return the Peewee model of the table, bound to ``database``."""
        raise NotImplementedError

    def guard(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Turn database errors into StatusStoreError (or its permanent kind) saying ``what`` failed."""
        return database_errors(self.database, f"{self.label} in {safe_url(self.store.url)}", what,
                               url=self.store.url)

    def ready(self) -> None:
        """Create the table if missing (once per instance)."""
        if not self._ready:
            with self.guard(f"create the table of {self.label}"):
                create_tables_racing(self.database, [self.model])
            self._ready = True

    def exists(self) -> bool:
        """True when the table exists (reads only: creates neither it nor an SQLite file)."""
        if self._ready:
            return True
        path = self.store._sqlite_path()
        if path is not None and not os.path.exists(path):
            return False
        with self.guard(f"look for the table of {self.label}"):
            return bool(self.model.table_exists())
