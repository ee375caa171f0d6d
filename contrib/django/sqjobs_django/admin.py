"""The admin: job status rows, read-only, and an action requeuing the selected jobs' dead letters."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from sqjobs.app import current_app
from sqjobs.unique import requeue_dead

from .models import JobStatus

#: The permission the requeue action needs (``Meta.permissions`` of JobStatus).
REQUEUE_PERMISSION = "sqjobs_django.requeue_dead"


@admin.register(JobStatus)
class JobStatusAdmin(admin.ModelAdmin):
    """Status rows: listed with filters and search, shown read-only with their traceback."""

    list_display = ("job_id", "name", "queue", "status", "attempts", "enqueued_at", "finished_at")
    list_filter = ("status", "name", "queue")
    search_fields = ("job_id", "name")
    date_hierarchy = None
    readonly_fields = ("job_id", "name", "queue", "status", "attempts", "arguments_text", "result", "error",
                       "traceback_text", "enqueued_at", "started_at", "finished_at", "worker_host", "worker_pid")
    fields = readonly_fields
    actions = ["requeue_dead_letters"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Rows are written by sqjobs only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Rows are read-only here."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Rows are removed by ``manage.py sqjobs prune`` only."""
        return False

    def has_requeue_dead_permission(self, request: HttpRequest) -> bool:
        """Whether the user may requeue dead letters (``sqjobs_django.requeue_dead``)."""
        return bool(request.user.has_perm(REQUEUE_PERMISSION))

    @admin.display(description="arguments")
    def arguments_text(self, obj: JobStatus) -> str:
        """The job's arguments as indented JSON, preformatted ("not recorded" for rows written before rows kept
        them)."""
        return format_html('<pre class="sqjobs-arguments">{}</pre>', obj.arguments_text)

    @admin.display(description="traceback")
    def traceback_text(self, obj: JobStatus) -> str:
        """The traceback of the last failed attempt, preformatted."""
        return format_html("<pre>{}</pre>", obj.traceback) if obj.traceback else "-"

    @admin.action(description="Requeue the selected jobs' dead letters", permissions=["requeue_dead"])
    def requeue_dead_letters(self, request: HttpRequest, queryset: QuerySet[JobStatus]) -> None:
        """Move the dead letters of exactly the selected jobs back to their queues; the others stay dead.

        A unique job takes its key again as it moves (``sqjobs dead --requeue``
        does the same); one whose key another job holds stays dead, and the
        message says so.
        """
        app = current_app()
        known = set(app.broker.queues())
        selected: dict[str, set[str]] = {}
        for job_id, queue in queryset.values_list("job_id", "queue"):
            selected.setdefault(queue, set()).add(job_id)
        moved = 0
        for queue, job_ids in sorted(selected.items()):
            if queue not in known:
                self.message_user(request, f"the broker has no queue {queue!r}", messages.WARNING)
                continue
            done = requeue_dead(app.broker, app.settings.database_url, queue, job_ids=job_ids)
            moved += done.moved
            for line in done.held:
                self.message_user(request, line, messages.WARNING)
        chosen = sum(len(ids) for ids in selected.values())
        missing = f"; {chosen - moved} of them had no dead letter to move" if moved < chosen else ""
        self.message_user(request, f"requeued {moved} of {chosen} selected job(s){missing}",
                          messages.SUCCESS if moved else messages.WARNING)
