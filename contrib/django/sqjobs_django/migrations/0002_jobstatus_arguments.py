"""Status rows keep their job's arguments: the column added in place to a table of an earlier version."""

from __future__ import annotations

import contextlib
from typing import Any

from django.db import DatabaseError, migrations, models, transaction

from sqjobs.status.store import STATUS_TABLE, status_table_upgrades
from sqjobs_django.databases import peewee_class


def _columns(connection: Any) -> list[str]:
    with connection.cursor() as cursor:
        return [column.name for column in connection.introspection.get_table_description(cursor, STATUS_TABLE)]


def upgrade_status_table(apps: Any, schema_editor: Any) -> None:
    """Add the columns sqjobs' status table gained since it was made (sqjobs may have done it already).

    The same statements sqjobs runs when it first uses such a table: rows
    written before read NULL ("not recorded"); a process of the earlier
    version goes on writing rows.
    """
    connection = schema_editor.connection
    if STATUS_TABLE not in connection.introspection.table_names():
        return  # 0001 made it with every column
    for sql in status_table_upgrades(peewee_class(connection.vendor), _columns(connection)):
        # PostgreSQL and SQLite: in a savepoint, so the migration goes on after a failure; MySQL commits DDL.
        savepoint = transaction.atomic(using=connection.alias) if connection.features.can_rollback_ddl else None
        try:
            with savepoint or contextlib.nullcontext():
                schema_editor.execute(sql)
        except DatabaseError:
            if not status_table_upgrades(peewee_class(connection.vendor), _columns(connection)):
                continue  # a sqjobs process added it at the same moment
            raise


class Migration(migrations.Migration):
    dependencies = [("sqjobs_django", "0001_initial")]

    operations = [
        # The model is unmanaged: this changes Django's picture of the table only; the RunPython changes it.
        migrations.AddField(model_name="jobstatus", name="arguments", field=models.TextField(blank=True, null=True)),
        migrations.RunPython(upgrade_status_table, migrations.RunPython.noop, atomic=False),
    ]
