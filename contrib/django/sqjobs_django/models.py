"""``JobStatus``: sqjobs' status rows as a Django model (the table sqjobs writes; Django never alters it).

>>> job = JobStatus.objects.get(job_id=handle.id)
>>> if job.status == JobStatus.SUCCESS:
...     print(job.result)          # decoded JSON

The table is sqjobs' own (``sqjobs_job_status``, created by the migration
with sqjobs' DDL, or by sqjobs itself): the model is unmanaged. It reads
Django's ``default`` database, where the rows are unless ``[sqjobs]
database`` says otherwise. ``arguments`` is the text sqjobs stored (the
JSON of the job's arguments, or NULL for rows written before rows kept
them); ``arguments_text`` shows it to a person.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.conf import settings
from django.db import models

from sqjobs.message import ID_MAX_CHARS
from sqjobs.status.states import Status
from sqjobs.status.store import NAME_MAX_CHARS, STATUS_TABLE, arguments_text


class UTCDateTimeField(models.DateTimeField):
    """A datetime sqjobs stores as naive UTC, read as aware UTC when ``USE_TZ`` is on."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        """The value with UTC as its zone when Django expects aware datetimes."""
        if isinstance(value, datetime.datetime) and value.tzinfo is None and settings.USE_TZ:
            return value.replace(tzinfo=datetime.timezone.utc)
        return value


class JSONTextField(models.TextField):
    """A JSON document in a text column, read as the value it encodes."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        """The decoded value (None for NULL; the text itself if it is not JSON)."""
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return value

    def get_prep_value(self, value: Any) -> Any:
        """JSON text of ``value`` (used in lookups; sqjobs writes the rows)."""
        return None if value is None else json.dumps(value)


class JobStatus(models.Model):
    """The status row of one tracked job: its state, result or error, attempts and times."""

    PENDING = Status.PENDING.value
    STARTED = Status.STARTED.value
    RETRY = Status.RETRY.value
    SUCCESS = Status.SUCCESS.value
    FAILURE = Status.FAILURE.value
    DEAD = Status.DEAD.value
    STATUS_CHOICES = [(state.value, state.value.title()) for state in Status]

    job_id = models.CharField("job id", primary_key=True, max_length=ID_MAX_CHARS, db_column="id")
    name = models.CharField("job name", max_length=NAME_MAX_CHARS)
    queue = models.CharField(max_length=NAME_MAX_CHARS)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES)
    attempts = models.IntegerField(default=0)
    result = JSONTextField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    traceback = models.TextField(null=True, blank=True)
    enqueued_at = UTCDateTimeField(null=True, blank=True)
    started_at = UTCDateTimeField(null=True, blank=True)
    finished_at = UTCDateTimeField(null=True, blank=True)
    worker_host = models.CharField(max_length=NAME_MAX_CHARS, null=True, blank=True)
    worker_pid = models.IntegerField(null=True, blank=True)
    #: The JSON of ``{"args": [...], "kwargs": {...}}`` as text (cut and marked when long); None: not recorded.
    arguments = models.TextField(null=True, blank=True)

    class Meta:
        managed = False
        db_table = STATUS_TABLE
        ordering = ["-enqueued_at"]
        verbose_name = "job status"
        verbose_name_plural = "job statuses"
        permissions = [("requeue_dead", "Can requeue the dead letters of a queue")]

    def __str__(self) -> str:
        return f"{self.name} {self.job_id} {self.status}"

    @property
    def arguments_text(self) -> str:
        """The arguments for a person: indented JSON, the cut text as stored, or "not recorded"."""
        return arguments_text(self.arguments)

    @property
    def finished(self) -> bool:
        """True once no attempt follows (SUCCESS, FAILURE or DEAD)."""
        return self.status in (self.SUCCESS, self.FAILURE, self.DEAD)
