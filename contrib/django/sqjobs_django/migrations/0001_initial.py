"""The status table, created with sqjobs' own DDL (the same table ``sqjobs initdb`` creates), and the model's state."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

import sqjobs_django.models
from sqjobs.status.store import STATUS_TABLE, status_table_statements
from sqjobs_django.databases import peewee_class


def create_status_table(apps: Any, schema_editor: Any) -> None:
    """Create sqjobs' status table in the database being migrated, unless sqjobs already did."""
    connection = schema_editor.connection
    if STATUS_TABLE in connection.introspection.table_names():
        return
    for sql, params in status_table_statements(peewee_class(connection.vendor)):
        schema_editor.execute(sql, params or None)


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="JobStatus",
            fields=[
                ("job_id", models.CharField(db_column="id", max_length=128, primary_key=True, serialize=False,
                                            verbose_name="job id")),
                ("name", models.CharField(max_length=255, verbose_name="job name")),
                ("queue", models.CharField(max_length=255)),
                ("status", models.CharField(choices=[("PENDING", "Pending"), ("STARTED", "Started"),
                                                     ("RETRY", "Retry"), ("SUCCESS", "Success"),
                                                     ("FAILURE", "Failure"), ("DEAD", "Dead")], max_length=16)),
                ("attempts", models.IntegerField(default=0)),
                ("result", sqjobs_django.models.JSONTextField(blank=True, null=True)),
                ("error", models.TextField(blank=True, null=True)),
                ("traceback", models.TextField(blank=True, null=True)),
                ("enqueued_at", sqjobs_django.models.UTCDateTimeField(blank=True, null=True)),
                ("started_at", sqjobs_django.models.UTCDateTimeField(blank=True, null=True)),
                ("finished_at", sqjobs_django.models.UTCDateTimeField(blank=True, null=True)),
                ("worker_host", models.CharField(blank=True, max_length=255, null=True)),
                ("worker_pid", models.IntegerField(blank=True, null=True)),
            ],
            options={
                "verbose_name": "job status",
                "verbose_name_plural": "job statuses",
                "db_table": "sqjobs_job_status",
                "ordering": ["-enqueued_at"],
                "permissions": [("requeue_dead", "Can requeue the dead letters of a queue")],
                "managed": False,
            },
        ),
        migrations.RunPython(create_status_table, migrations.RunPython.noop, atomic=False),
    ]
