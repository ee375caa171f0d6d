"""A form that sends ``slow_square`` when the request's transaction commits, and a page polling its status."""

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.utils.html import format_html
from django.views.decorators.csrf import csrf_exempt
from sqjobs_django.models import JobStatus

from .jobs import slow_square

FORM = """<!doctype html><title>sqjobs example</title>
<form method="post"><input name="number" type="number" value="7"> <button>Square it in a worker</button></form>"""

PAGE = """<!doctype html><title>job {0}</title>
<p>Job <code>{0}</code>: <strong id="status">…</strong> <span id="result"></span></p>
<p><a href="/">Send another</a> · <a href="/admin/sqjobs_django/jobstatus/">admin</a></p>
<script>
async function poll() {{
  const row = await (await fetch("{1}")).json();
  document.getElementById("status").textContent = row.status || "not recorded yet";
  document.getElementById("result").textContent = row.result === null ? "" : "= " + row.result;
  if (!["SUCCESS", "FAILURE", "DEAD"].includes(row.status)) setTimeout(poll, 500);
}}
poll();
</script>"""


@csrf_exempt
def start(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST: send the job once the transaction commits, then show its page."""
    if request.method != "POST":
        return HttpResponse(FORM)
    with transaction.atomic():
        job_id = slow_square.delay_on_commit(int(request.POST.get("number", "7")))
    return redirect("job", job_id=job_id)


def job_page(request: HttpRequest, job_id: str) -> HttpResponse:
    """A page that polls the job's status until it finished."""
    return HttpResponse(format_html(PAGE, job_id, f"/jobs/{job_id}.json"))


def job_json(request: HttpRequest, job_id: str) -> JsonResponse:
    """The job's status row as JSON (``status`` None until the row exists)."""
    row = JobStatus.objects.filter(job_id=job_id).first()
    return JsonResponse({"job_id": job_id, "status": row.status if row else None,
                         "result": row.result if row else None, "error": row.error if row else None})
