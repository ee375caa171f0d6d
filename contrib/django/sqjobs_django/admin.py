"""The admin: job status rows, read-only, and an action requeuing the selected jobs' dead letters."""

from __future__ import annotations

import datetime
import re
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

from sqjobs import defaults
from sqjobs.app import current_app
from sqjobs.middleware.unique import requeue_dead

from .models import JobStatus

#: The permission the requeue action needs (``Meta.permissions`` of JobStatus).
REQUEUE_PERMISSION = "sqjobs_django.requeue_dead"


#: Where a long name may break in the list: after these characters (``<wbr>``).
_BREAK_AFTER = re.compile(r"([._\-:/])")


def shortened(text: str, limit: int, keep_end: bool = True) -> str:
    """``text`` for the list: cut to ``limit`` characters (its middle, or its end) with the whole in a tooltip,
    and a line-break opportunity after each dot, underscore, dash, colon and slash."""
    short = text
    if len(text) > limit and keep_end:
        head = (limit - 1) // 2
        short = text[:head] + "\u2026" + text[len(text) - (limit - 1 - head):]
    elif len(text) > limit:
        short = text[:limit - 1] + "\u2026"
    breakable = mark_safe(_BREAK_AFTER.sub(r"\1<wbr>", escape(short)))  # escape() leaves these five as they are
    return format_html('<span title="{}">{}</span>', text, breakable) if short != text else breakable


def compact_time(value: datetime.datetime | None) -> str:
    """A row's time in the current time zone as ``YYYY-MM-DD HH:MM:SS`` (shorter than Django's own format)."""
    if value is None:
        return "-"
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return value.strftime("%Y-%m-%d %H:%M:%S")


@admin.register(JobStatus)
class JobStatusAdmin(admin.ModelAdmin):
    """Status rows: listed with filters and search, shown read-only with their arguments and traceback.

    The list fits a 1280-pixel screen beside the admin's sidebar and
    filters: ids and long names are cut (the whole in a tooltip), long
    names wrap, times are compact (``static/sqjobs_django/admin.css``); the
    finish time is on the job's page.
    """

    list_display = ("short_id", "short_name", "short_queue", "status", "attempts", "enqueued")
    list_display_links = ("short_id",)
    list_filter = ("status", "name", "queue")
    search_fields = ("job_id", "name")
    date_hierarchy = None
    readonly_fields = ("job_id", "name", "queue", "status", "attempts", "arguments_text", "result", "error",
                       "traceback_text", "enqueued_at", "started_at", "finished_at", "worker_host", "worker_pid")
    fields = readonly_fields
    actions = ["requeue_dead_letters"]

    class Media:
        css = {"all": ("sqjobs_django/admin.css",)}

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

    @admin.display(description="job id", ordering="job_id")
    def short_id(self, obj: JobStatus) -> str:
        """The start of the job id (the whole in its tooltip)."""
        return shortened(obj.job_id, defaults.ADMIN_LIST_ID_CHARS, keep_end=False)

    @admin.display(description="job name", ordering="name")
    def short_name(self, obj: JobStatus) -> str:
        """The job name, its middle cut out when long."""
        return shortened(obj.name, defaults.ADMIN_LIST_NAME_CHARS)

    @admin.display(description="queue", ordering="queue")
    def short_queue(self, obj: JobStatus) -> str:
        """The queue, its middle cut out when long."""
        return shortened(obj.queue, defaults.ADMIN_LIST_NAME_CHARS)

    @admin.display(description="enqueued", ordering="enqueued_at")
    def enqueued(self, obj: JobStatus) -> str:
        """When the job was sent."""
        return compact_time(obj.enqueued_at)

    @admin.display(description="arguments")
    def arguments_text(self, obj: JobStatus) -> str:
        """The job's arguments as indented JSON, preformatted ("not recorded" for rows written before rows kept
        them)."""
        return format_html('<pre class="sqjobs-arguments">{}</pre>', obj.arguments_text)

    @admin.display(description="traceback")
    def traceback_text(self, obj: JobStatus) -> str:
        """The traceback of the last failed attempt, preformatted."""
        return format_html('<pre class="sqjobs-traceback">{}</pre>', obj.traceback) if obj.traceback else "-"

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
