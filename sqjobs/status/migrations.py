"""Upgrades of sqjobs' own tables in place, for tables an earlier version created.

Tables are created on first use (:func:`~sqjobs.status.database.create_tables_racing`),
which leaves an existing table as it is. When a table's shape changes, the
process that first uses it upgrades it here, once: each upgrade checks the
table's shape first, and again under a lock (SQLite, PostgreSQL) or after a
failure (MySQL and MariaDB), so processes starting together upgrade it once
and never fail because another one did it first.

Two kinds of upgrade so far:

- :func:`add_column`: a nullable column appended to a table, every existing
  row reading NULL (``sqjobs_job_status`` gained ``arguments``). A process of
  an earlier version goes on writing rows without it. One ``ALTER TABLE ...
  ADD COLUMN`` on every database: in a ``BEGIN IMMEDIATE`` transaction on
  SQLite, with the table locked on PostgreSQL, checked again after a failure
  on MySQL and MariaDB. None of them rewrites the rows for a nullable column
  without a default.
- :func:`add_key_column`: a column put in front of a table's primary key,
  every existing row getting the column's SQL default (``sqjobs_beats``
  gained ``broker``). How, per database:

- SQLite cannot change a primary key: in one ``BEGIN IMMEDIATE`` transaction
  (other writers wait) the table is renamed, created anew from its model, its
  rows copied, the old one dropped;
- PostgreSQL: in one transaction, the table locked, one ``ALTER TABLE`` adds
  the column, drops the old key and adds the new one;
- MySQL and MariaDB: the same single ``ALTER TABLE`` (atomic there, though
  DDL commits at once).
"""

from __future__ import annotations

import logging
from typing import Any

import peewee

logger = logging.getLogger("sqjobs.migrations")


def key_columns(database: peewee.Database, table: str) -> list[str]:
    """The columns of ``table``'s primary key, in key order ([] if it has none or does not exist)."""
    return list(database.get_primary_keys(table))


def column_names(database: peewee.Database, table: str) -> list[str]:
    """The columns of ``table``, in table order ([] if it does not exist)."""
    return [column.name for column in database.get_columns(table)]


def column_sql(database: peewee.Database, model: Any, column: str) -> str:
    """The SQL defining ``model``'s field ``column`` in ``database``, as its CREATE TABLE says it."""
    context = database.get_sql_context()
    return str(context.sql(model._meta.fields[column].ddl(context)).query()[0])


def add_column_statement(database: peewee.Database, model: Any, column: str) -> str:
    """The ``ALTER TABLE`` adding ``model``'s field ``column`` to its table (for :func:`add_column`, and for
    programs that run their own migrations: the Django integration's)."""
    return f"ALTER TABLE {_quote(database, model._meta.table_name)} ADD COLUMN {column_sql(database, model, column)}"


def add_column(database: peewee.Database, model: Any, column: str) -> bool:
    """Add ``model``'s nullable field ``column`` to its table if the table lacks it; True if it was added.

    Existing rows read NULL there. Database errors are raised as Peewee
    raises them.
    """
    table = model._meta.table_name
    if column in column_names(database, table):
        return False
    if not model._meta.fields[column].null:
        raise ValueError(f"column {column} of {table} must be nullable to be added in place")
    statement = add_column_statement(database, model, column)
    if isinstance(database, peewee.MySQLDatabase):
        try:
            database.execute_sql(statement)
        except peewee.DatabaseError:
            if column in column_names(database, table):
                return False  # another process added it at the same moment
            raise
    else:
        sqlite = isinstance(database, peewee.SqliteDatabase)
        with database.atomic("IMMEDIATE") if sqlite else database.atomic():
            if not sqlite:
                database.execute_sql(f"LOCK TABLE {_quote(database, table)} IN ACCESS EXCLUSIVE MODE")
            if column in column_names(database, table):
                return False  # another process added it while we waited for the lock
            database.execute_sql(statement)
    logger.info("table %s upgraded: column %s added", table, column)
    return True


def _quote(database: peewee.Database, name: str) -> str:
    return str(database.get_sql_context().sql(peewee.Entity(name)).query()[0])


def add_key_column(database: peewee.Database, model: Any, column: str, column_sql: str) -> bool:
    """Put ``column`` in front of the primary key of ``model``'s table if it is not there yet; True if it was added.

    ``model`` is the table's new shape (its key already starts with
    ``column``); ``column_sql`` the column's type and default as SQL
    (``"VARCHAR(191) NOT NULL DEFAULT ''"``), the default being what the
    existing rows get. Database errors are raised as Peewee raises them.
    """
    table = model._meta.table_name
    if column in key_columns(database, table):
        return False
    key = [field.column_name for field in model._meta.get_primary_keys()]
    if isinstance(database, peewee.SqliteDatabase):
        added = _rebuild_sqlite(database, model, column)
    elif isinstance(database, peewee.PostgresqlDatabase):
        added = _alter_postgresql(database, table, column, column_sql, key)
    else:
        added = _alter_mysql(database, table, column, column_sql, key)
    if added:
        logger.info("table %s upgraded: its key is now (%s)", table, ", ".join(key))
    return added


def _rebuild_sqlite(database: peewee.Database, model: Any, column: str) -> bool:
    table = model._meta.table_name
    old = f"{table}_before_{column}"
    with database.atomic("IMMEDIATE"):
        if column in key_columns(database, table):
            return False  # another process upgraded it while we waited for the lock
        kept = [name for name in (c.name for c in database.get_columns(table)) if name != column]
        names = ", ".join(_quote(database, name) for name in kept)
        database.execute_sql(f"ALTER TABLE {_quote(database, table)} RENAME TO {_quote(database, old)}")
        model.create_table(safe=False)
        database.execute_sql(f"INSERT INTO {_quote(database, table)} ({names}) SELECT {names} "
                             f"FROM {_quote(database, old)}")
        database.execute_sql(f"DROP TABLE {_quote(database, old)}")
    return True


def _alter_statement(database: peewee.Database, table: str, column: str, column_sql: str, key: list[str],
                     drop_key: str | None) -> str:
    """One ALTER TABLE: add ``column``, drop the old key (``drop_key``, if the table has one), add ``key``."""
    clauses = [f"ADD COLUMN {_quote(database, column)} {column_sql}"]
    if drop_key:
        clauses.append(drop_key)
    clauses.append(f"ADD PRIMARY KEY ({', '.join(_quote(database, name) for name in key)})")
    return f"ALTER TABLE {_quote(database, table)} {', '.join(clauses)}"


def _alter_postgresql(database: peewee.Database, table: str, column: str, column_sql: str, key: list[str]) -> bool:
    with database.atomic():
        database.execute_sql(f"LOCK TABLE {_quote(database, table)} IN ACCESS EXCLUSIVE MODE")
        if column in key_columns(database, table):
            return False  # another process upgraded it while we waited for the lock
        cursor = database.execute_sql("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
                                      "AND contype = 'p'", (table,))
        names = [name for (name,) in cursor.fetchall()]
        drop_key = f"DROP CONSTRAINT {_quote(database, names[0])}" if names else None
        database.execute_sql(_alter_statement(database, table, column, column_sql, key, drop_key))
    return True


def _alter_mysql(database: peewee.Database, table: str, column: str, column_sql: str, key: list[str]) -> bool:
    drop_key = "DROP PRIMARY KEY" if key_columns(database, table) else None
    statement = _alter_statement(database, table, column, column_sql + " FIRST", key, drop_key)
    try:
        database.execute_sql(statement)
    except peewee.DatabaseError:
        if column in key_columns(database, table):
            return False  # another process upgraded it at the same moment
        raise
    return True
