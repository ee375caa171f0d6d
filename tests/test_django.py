"""The Django integration, in a real project made by ``django-admin startproject``, on SQLite and PostgreSQL.

Every Django step runs in its own process (``manage.py ...``), as a user
runs it: the worker and the beater are real processes, and the test client
runs inside ``manage.py shell``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pymysql
import pytest

from sqjobs.brokers.sqlite import SQLiteBroker
from tests.support import DEADLINE_S, wait_until
from tests.tools import chromium_path

POSTGRESQL = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root"}

JOBS_PY = '''
from django.contrib.auth.models import User
from django.db import connection

from sqjobs import PeriodicJob, ResultJob, job


@job(queue="default", track=True)
def add(a, b):
    return a + b


@job(queue="default", track=True, retries=0)
def explode(text):
    raise ValueError("exploded: " + text)


@job(queue="default", track=True, retries=0)
def count_users_then_lose_the_connection():
    """Count users, then have the server end this thread's connection (as a restart would), unknown to Django."""
    count = User.objects.count()
    if connection.vendor != "postgresql":
        connection.connection.close()
        return count
    import psycopg2
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    other = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=connection.settings_dict["NAME"])
    other.autocommit = True
    cursor = other.cursor()
    cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    while cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]) or cursor.fetchone():
        pass
    other.close()
    return count


@job(queue="default", track=True, retries=0)
def count_users():
    return User.objects.count()


class AdderJob(ResultJob):
    name = "adder_job"
    queue = "default"

    def run(self, *args):
        return sum(args)


class EverySecond(PeriodicJob):
    name = "shop.every_second"
    queue = "periodic"
    schedule = "* * * * * *"
    timezone = "Europe/Madrid"

    def run(self):
        return "tick"
'''

VIEWS_PY = '''
from django.http import JsonResponse

from sqjobs_django.models import JobStatus

from .jobs import add


def start(request):
    handle = add.delay(int(request.GET["a"]), int(request.GET["b"]))
    return JsonResponse({"job_id": handle.id})


def poll(request, job_id):
    row = JobStatus.objects.filter(job_id=job_id).first()
    return JsonResponse({"status": row.status if row else None, "result": row.result if row else None})
'''

URLS_PY = '''
from django.contrib import admin
from django.urls import path

from shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("add/", views.start),
    path("status/<str:job_id>/", views.poll),
]
'''


class Project:
    """A Django project in a temporary folder, on one database."""

    def __init__(self, root: Path, backend: str, database: str | None) -> None:
        self.root = root
        self.backend = backend
        self.database = database

    def settings_path(self) -> Path:
        return self.root / "mysite" / "settings.py"

    def add_settings(self, text: str) -> None:
        with self.settings_path().open("a") as handle:
            handle.write("\n" + textwrap.dedent(text) + "\n")

    def manage(self, *args: str, check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=self.root, capture_output=True, text=True,
                                timeout=timeout_s)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def shell(self, code: str, check: bool = True) -> Any:
        """Run ``code`` in ``manage.py shell``; return the JSON it printed last."""
        result = self.manage("shell", "-c", textwrap.dedent(code), check=check)
        lines = result.stdout.strip().splitlines()
        return json.loads(lines[-1]) if check else result

    def queue_stats(self, queue: str) -> Any:
        return SQLiteBroker(str(self.root / "queue.db")).stats(queue)


def make_project(root: Path, backend: str, database: str | None) -> Project:
    root.mkdir()
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(root)], check=True)
    (root / "shop").mkdir()
    for name, text in {"__init__.py": "", "jobs.py": JOBS_PY, "views.py": VIEWS_PY}.items():
        (root / "shop" / name).write_text(text)
    (root / "mysite" / "urls.py").write_text(URLS_PY)
    project = Project(root, backend, database)
    if backend == "postgresql":
        databases = {"ENGINE": "django.db.backends.postgresql", "NAME": database, "USER": POSTGRESQL["user"],
                     "HOST": POSTGRESQL["host"], "PORT": str(POSTGRESQL["port"]),
                     "CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True}
    elif backend == "mysql":
        databases = {"ENGINE": "django.db.backends.mysql", "NAME": database, "USER": MARIADB["user"],
                     "HOST": MARIADB["host"], "PORT": str(MARIADB["port"]), "OPTIONS": {"charset": "utf8mb4"}}
        project.add_settings("import pymysql\npymysql.install_as_MySQLdb()")
    else:
        databases = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(root / "db.sqlite3"),
                     "TEST": {"NAME": str(root / "test-db.sqlite3")}}
    project.add_settings(f"""
        ALLOWED_HOSTS = ["*"]
        INSTALLED_APPS += ["sqjobs_django", "shop"]
        DATABASES = {{"default": {databases!r}}}
        SQJOBS = {{"sqjobs": {{"broker": "sqlite:///queue.db"}}, "worker:default": {{"threads": 1}}}}
    """)
    return project


def postgresql_admin(*statements: str) -> None:
    """Run ``statements`` outside a transaction (CREATE and DROP DATABASE need that)."""
    admin = psycopg2.connect(**POSTGRESQL)
    try:
        admin.autocommit = True
        for statement in statements:
            admin.cursor().execute(statement)
    finally:
        admin.close()


def mariadb_admin(*statements: str) -> None:
    """Run ``statements`` as MariaDB's root."""
    admin = pymysql.connect(**MARIADB, autocommit=True)
    try:
        for statement in statements:
            admin.cursor().execute(statement)
    finally:
        admin.close()


#: The databases every test runs on; the main paths also run on MariaDB.
ALSO_MARIADB = pytest.mark.parametrize("project", ["sqlite", "postgresql", "mysql"], indirect=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    database = None if request.param == "sqlite" else f"sqjobs_django_{uuid.uuid4().hex[:12]}"
    if request.param == "postgresql":
        postgresql_admin(f"CREATE DATABASE {database}")
    elif request.param == "mysql":
        mariadb_admin(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    made = make_project(tmp_path / "project", request.param, database)
    made.manage("migrate", "-v", "0")
    yield made
    if request.param == "mysql":
        mariadb_admin(f"DROP DATABASE IF EXISTS {database}", f"DROP DATABASE IF EXISTS test_{database}")
    elif database:
        postgresql_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)",
                         f"DROP DATABASE IF EXISTS test_{database} WITH (FORCE)")


@ALSO_MARIADB
def test_a_job_sent_from_a_view_runs_in_manage_py_sqjobs_worker_and_its_row_reads_through_jobstatus(
        project: Project) -> None:
    sent = project.shell("""
        import json
        from django.test import Client
        response = Client().get("/add/", {"a": 2, "b": 3})
        print(json.dumps(response.json()))
    """)
    job_id = sent["job_id"]
    assert project.queue_stats("default").visible == 1
    worker = project.manage("sqjobs", "worker", "default", "--burst")
    assert project.queue_stats("default").visible == 0, worker.stderr
    row = project.shell(f"""
        import json
        from django.test import Client
        from sqjobs_django.models import JobStatus
        job = JobStatus.objects.get(job_id={job_id!r})
        page = Client().get("/status/{job_id}/").json()
        print(json.dumps([job.status == JobStatus.SUCCESS, job.result, job.finished_at.tzinfo is not None, page]))
    """)
    assert row == [True, 5, True, {"status": "SUCCESS", "result": 5}]
    assert json.loads(project.manage("sqjobs", "status", job_id, "--json").stdout)["result"] == 5


def test_jobs_py_of_every_app_is_discovered_and_a_broken_one_fails_with_its_traceback(project: Project) -> None:
    names = project.shell("""
        import json
        from sqjobs.registry import registry
        print(json.dumps(sorted(registry.names())))
    """)
    assert {"adder_job", "shop.every_second"} <= set(names) and any(name.endswith("add") for name in names)
    broken = project.root / "broken"
    broken.mkdir()
    (broken / "__init__.py").write_text("")
    (broken / "jobs.py").write_text("import json\n\nraise RuntimeError('broken jobs module')\n")
    project.add_settings('INSTALLED_APPS += ["broken"]')
    failed = project.manage("sqjobs", "queues", check=False)
    assert failed.returncode != 0
    assert "Traceback" in failed.stderr and "RuntimeError: broken jobs module" in failed.stderr
    assert f"{broken / 'jobs.py'}\", line 3" in failed.stderr


@ALSO_MARIADB
def test_admin_lists_filters_searches_shows_the_traceback_and_checks_the_requeue_permission(
        project: Project) -> None:
    ids = project.shell("""
        import json
        from shop.jobs import add, explode
        print(json.dumps([add.delay(1, 1).id, explode.delay("kaboom").id, explode.delay("left dead").id]))
    """)
    project.manage("sqjobs", "worker", "default", "--burst")
    assert project.queue_stats("default").dead == 2
    pages = project.shell(f"""
        import json
        from django.contrib.auth.models import User
        from django.test import Client
        User.objects.create_superuser("root", "root@example.com", "pw")
        User.objects.create_user("clerk", "clerk@example.com", "pw", is_staff=True)
        from django.contrib.auth.models import Permission
        clerk = User.objects.get(username="clerk")
        clerk.user_permissions.add(Permission.objects.get(codename="view_jobstatus"))
        root, other = Client(), Client()
        root.login(username="root", password="pw")
        other.login(username="clerk", password="pw")
        base = "/admin/sqjobs_django/jobstatus/"
        listing = root.get(base).content.decode()
        failed = root.get(base, {{"status__exact": "FAILURE"}}).content.decode()
        named = root.get(base, {{"name": "shop.jobs.add"}}).content.decode()
        found = root.get(base, {{"q": {ids[1]!r}}}).content.decode()
        detail = root.get(base + {ids[1]!r} + "/change/")
        clerk_page = other.get(base).content.decode()
        refused = other.post(base, {{"action": "requeue_dead_letters", "_selected_action": [{ids[1]!r}]}})
        from sqjobs.app import current_app
        dead_after_refusal = current_app().broker.stats("default").dead
        done = root.post(base, {{"action": "requeue_dead_letters", "_selected_action": [{ids[1]!r}]}}, follow=True)
        print(json.dumps({{
            "listing": [i in listing for i in {ids!r}],
            "failed": [i in failed for i in {ids!r}],
            "named": [i in named for i in {ids!r}],
            "found": [i in found for i in {ids!r}],
            "detail": [detail.status_code, "ValueError: exploded: kaboom" in detail.content.decode(),
                       "Traceback" in detail.content.decode(), 'name="_save"' in detail.content.decode()],
            "arguments": detail.content.decode().split('<pre class="sqjobs-arguments">')[-1].split("</pre>")[0],
            "clerk_sees_action": "requeue_dead_letters" in clerk_page,
            "root_sees_action": "requeue_dead_letters" in listing,
            "refused": refused.status_code, "dead_after_refusal": dead_after_refusal,
            "done": "requeued 1 of 1 selected job(s)" in done.content.decode().lower(),
        }}))
    """)
    assert pages["listing"] == [True, True, True]
    assert pages["failed"] == [False, True, True] and pages["named"] == [True, False, False]
    assert pages["found"] == [False, True, False]
    assert pages["detail"] == [200, True, True, False]
    assert pages["arguments"] == '{\n  &quot;args&quot;: [\n    &quot;kaboom&quot;\n  ],\n  &quot;kwargs&quot;: {}\n}'
    assert not pages["clerk_sees_action"] and pages["root_sees_action"]
    assert pages["dead_after_refusal"] == 2 and pages["done"]
    stats = project.queue_stats("default")
    assert (stats.dead, stats.visible) == (1, 1), "only the selected job's dead letter moved"
    assert project.shell("""
        import json
        from sqjobs.app import current_app
        from sqjobs.message import decode
        print(json.dumps([decode(m.body, m.message_id).id for m in current_app().broker.peek("default-dead", 10)]))
    """) == [ids[2]]


@ALSO_MARIADB
def test_migrate_upgrades_a_status_table_of_the_earlier_shape_and_its_old_row_shows_not_recorded(
        project: Project) -> None:
    # Back to the table the first migration made before rows kept arguments, with a row of then.
    project.manage("migrate", "sqjobs_django", "0001", "-v", "0")
    project.shell("""
        import json
        from django.db import connection
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE sqjobs_job_status DROP COLUMN arguments")
            cursor.execute("INSERT INTO sqjobs_job_status (id, name, queue, status, attempts) "
                           "VALUES ('old-job', 'shop.jobs.add', 'default', 'SUCCESS', 1)")
        print(json.dumps(True))
    """)
    project.manage("migrate", "-v", "0")
    shown = project.shell("""
        import json
        from django.contrib.auth.models import User
        from django.test import Client
        from shop.jobs import add
        from sqjobs_django.models import JobStatus
        new_id = add.delay(4, 5).id
        User.objects.create_superuser("root", "root@example.com", "pw")
        client = Client()
        client.login(username="root", password="pw")
        page = client.get("/admin/sqjobs_django/jobstatus/old-job/change/").content.decode()
        print(json.dumps([page.split('<pre class="sqjobs-arguments">')[-1].split("</pre>")[0],
                          JobStatus.objects.get(job_id="old-job").arguments,
                          JobStatus.objects.get(job_id=new_id).arguments]))
    """)
    assert shown == ["not recorded", None, '{"args":[4,5],"kwargs":{}}']
    assert "No changes detected" in project.manage("makemigrations", "--check", "--dry-run", "sqjobs_django").stdout


#: Where the browser test leaves its screenshots of the admin for a person to look at.
ADMIN_SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "_static"


@pytest.mark.tools("chromium")
@pytest.mark.parametrize("project", ["sqlite"], indirect=True)
def test_in_a_browser_the_admin_list_fits_1280_pixels_and_the_detail_page_shows_the_arguments(
        project: Project) -> None:
    from playwright.sync_api import sync_playwright

    project.shell("""
        import json
        from django.contrib.auth.models import User
        from shop.jobs import add, explode
        from sqjobs.app import current_app
        User.objects.create_superuser("root", "root@example.com", "pw")
        for n in range(3):
            add.apply_async(args=(n, n), job_id=f"order-{n}-" + "0123456789abcdef" * 7)
        explode.delay("kaboom " * 30)
        # A row as long as a row gets: names and id at their limits, long arguments.
        arguments = json.dumps({"args": [{"customer": "ACME " * 20, "lines": list(range(300))}], "kwargs": {}})
        current_app().store.enqueued("d" * 128, "billing.invoices." + "regenerate_invoice_pdfs_" * 10,
                                     "reports-for-the-finance-department-" * 7, arguments)
        print(json.dumps(True))
    """)
    project.manage("sqjobs", "worker", "default", "--burst")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                              cwd=project.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/admin/"
    try:
        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, what="runserver listening")
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base)
            page.fill("#id_username", "root")
            page.fill("#id_password", "pw")
            page.click("input[type=submit]")
            page.goto(base + "sqjobs_django/jobstatus/")
            assert page.locator("#result_list tbody tr").count() == 5
            # The admin puts the table in a box that scrolls sideways: neither the page nor that box may.
            widths = page.evaluate("""() => {
                const box = document.querySelector('#result_list').closest('.results');
                return [document.documentElement.scrollWidth, box.scrollWidth, box.clientWidth]; }""")
            page.screenshot(path=str(ADMIN_SCREENSHOTS / "django-admin-list.png"), full_page=True)
            assert widths[0] <= 1280, f"the page scrolls sideways: {widths}"
            assert widths[1] <= widths[2], f"the list is wider than its box: {widths}"
            full_id = page.locator("#result_list tbody tr th span[title]").first.get_attribute("title")
            assert full_id == "d" * 128
            page.locator("#result_list tbody tr th a").first.click()  # the latest: the long row
            page.wait_for_selector("pre.sqjobs-arguments")
            arguments = page.locator("pre.sqjobs-arguments").inner_text()
            page.screenshot(path=str(ADMIN_SCREENSHOTS / "django-admin-detail.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            browser.close()
    finally:
        server.terminate()
        server.wait(DEADLINE_S)
    assert json.loads(arguments)["args"][0]["lines"] == list(range(300))


def test_delay_on_commit_sends_on_commit_and_nothing_on_rollback(project: Project) -> None:
    counts = project.shell("""
        import json
        from django.db import transaction
        from sqjobs.app import current_app
        from shop.jobs import add
        stats = lambda: current_app().broker.stats("default").visible
        seen = []
        with transaction.atomic():
            job_id = add.delay_on_commit(1, 2)
            seen.append(stats())
        seen.append(stats())
        try:
            with transaction.atomic():
                add.delay_on_commit(3, 4)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        seen.append(stats())
        try:
            add.delay_on_commit(object())
        except TypeError as exc:
            seen.append(str(exc))
        print(json.dumps(seen + [job_id]))
    """)
    assert counts[:3] == [0, 1, 1]
    assert "JSON" in counts[3]
    project.manage("sqjobs", "worker", "default", "--burst")
    assert project.shell(f"""
        import json
        from sqjobs_django.models import JobStatus
        print(json.dumps(JobStatus.objects.get(job_id={counts[4]!r}).result))
    """) == 3


def test_sqjobs_eager_runs_delay_inline_in_a_django_testcase(project: Project) -> None:
    (project.root / "shop" / "tests.py").write_text(textwrap.dedent("""
        from django.test import TestCase

        from sqjobs_django.models import JobStatus
        from shop.jobs import AdderJob, add


        class EagerTests(TestCase):
            def test_delay_runs_at_once_and_records_its_row(self):
                handle = add.delay(20, 22)
                self.assertEqual(handle.result, 42)
                row = JobStatus.objects.get(job_id=handle.id)
                self.assertEqual((row.status, row.result), (JobStatus.SUCCESS, 42))

            def test_the_encoder_refuses_what_json_cannot_carry(self):
                with self.assertRaisesRegex(TypeError, "JSON"):
                    AdderJob.delay(1, {1, 2})
    """))
    project.add_settings("SQJOBS_EAGER = True")
    result = project.manage("test", "shop", "-v", "2")
    assert "Ran 2 tests" in result.stderr and "OK" in result.stderr
    assert not (project.root / "queue.db").exists() or project.queue_stats("default").visible == 0


def test_beater_once_sends_a_due_periodic_job(project: Project) -> None:
    # An earlier beater sent the job ten minutes ago (its claim is in Django's database): ticks are due since.
    project.shell("""
        import json
        from datetime import datetime, timedelta, timezone
        import sqjobs
        from sqjobs.schedule.beater import BeatStore
        store = BeatStore("django://default")
        broker = sqjobs.get_broker().identity
        earlier = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
        store.claim(broker, "shop.every_second", earlier, "earlier-beater", earlier)
        store.mark_sent(broker, "shop.every_second", earlier, earlier)
        print(json.dumps(len(store.claims("shop.every_second"))))
    """)
    once = project.manage("sqjobs", "beater", "--once")
    assert project.queue_stats("periodic").visible >= 1, once.stderr
    listed = json.loads(project.manage("sqjobs", "queues", "--json").stdout)
    assert any(row["queue"] == "periodic" and row["visible"] >= 1 for row in listed)
    schedule = project.manage("sqjobs", "schedule", "shop.every_second", "--next", "2").stdout.split()
    assert len(schedule) == 2


def test_a_worker_survives_a_database_connection_lost_between_two_jobs(project: Project) -> None:
    ids = project.shell("""
        import json
        from shop.jobs import count_users, count_users_then_lose_the_connection
        print(json.dumps([count_users_then_lose_the_connection.delay().id, count_users.delay().id]))
    """)
    worker = project.manage("sqjobs", "worker", "default", "--burst", "--isolation", "none")
    rows = project.shell(f"""
        import json
        from sqjobs_django.models import JobStatus
        print(json.dumps([[row.status, row.attempts, row.error] for row in
                          (JobStatus.objects.get(job_id=i) for i in {ids!r})]))
    """)
    assert rows == [["SUCCESS", 1, None], ["SUCCESS", 1, None]], worker.stderr


def test_a_mistake_in_the_settings_names_the_django_setting(project: Project) -> None:
    project.add_settings('SQJOBS["worker:default"] = {"threads": 0}')
    failed = project.manage("sqjobs", "queues", check=False)
    assert failed.returncode != 0
    assert "settings.SQJOBS['worker:default']['threads'] = 0: must be at least 1" in failed.stderr
    project.add_settings('SQJOBS = {"sqjobs": {"brokr": "memory://"}}')
    assert "settings.SQJOBS['sqjobs']['brokr']: unknown key" in project.manage("check", check=False).stderr
    project.add_settings('SQJOBS = {}\nSQJOBS_SQS_REGION = ["eu-west-1"]\nSQJOBS_CONFIG = "missing.conf"')
    assert "settings.SQJOBS_CONFIG = 'missing.conf'" in project.manage("check", check=False).stderr
    project.add_settings('SQJOBS_CONFIG = None\nSQJOBS = {"sqs": {"endpoint_url": "localhost"}}')
    assert "settings.SQJOBS['sqs']['endpoint_url'] = 'localhost': must be an http" in project.manage(
        "check", check=False).stderr


def test_the_talks_settings_and_the_config_file_are_read_and_the_dict_overrides_the_file(project: Project) -> None:
    (project.root / "sqjobs.conf").write_text("[sqs]\nregion = eu-west-1\nqueue_prefix = file-\n\n"
                                              "[worker:default]\nprefetch = 3\n")
    project.add_settings(f"""
        SQJOBS_CONFIG = {str(project.root / 'sqjobs.conf')!r}
        SQJOBS_SQS_ACCESS_KEY = "talk-key"
        SQJOBS_SQS_SECRET_KEY = "talk-secret"
        SQJOBS["sqs"] = {{"queue_prefix": "dict-"}}
    """)
    values = project.shell("""
        import json
        from sqjobs.app import current_app
        s = current_app().settings
        print(json.dumps([s.get("sqs", "region"), s.get("sqs", "access_key"), s.get("sqs", "secret_key"),
                          s.get("sqs", "queue_prefix"), s.worker_group("default").prefetch,
                          s.worker_group("default").threads, s.database_url]))
    """)
    assert values == ["eu-west-1", "talk-key", "talk-secret", "dict-", 3, 1, "django://default"]


def test_every_sqjobs_subcommand_runs_under_manage_py_and_call_command(project: Project) -> None:
    job_id = project.manage("sqjobs", "enqueue", "shop.jobs.explode", "--args", '["from the shell"]').stdout.strip()
    project.manage("sqjobs", "worker", "default", "--burst")
    dead = json.loads(project.manage("sqjobs", "dead", "default", "--json").stdout)
    assert [row["job_id"] for row in dead] == [job_id] and "exploded: from the shell" in dead[0]["reason"]
    assert "requeued 1 message(s)" in project.manage("sqjobs", "dead", "default", "--requeue").stdout
    assert project.manage("sqjobs", "prune", "--older-than", "7d").stdout.startswith("pruned 0 finished row(s)")
    unknown = project.manage("sqjobs", "dead", "nowhere", check=False)
    assert unknown.returncode == 1 and "no queue 'nowhere'" in unknown.stderr
    assert "worker" in project.manage("sqjobs", "--help").stdout
    listed = project.shell("""
        import io, json
        from django.core.management import call_command, CommandError
        out = io.StringIO()
        call_command("sqjobs", "queues", "--json")
        try:
            call_command("sqjobs", "status")
        except CommandError as exc:
            print(json.dumps(str(exc)))
    """)
    assert "JOB_ID" in listed


def test_the_example_project_runs_a_job_from_its_form_to_its_status_page(tmp_path: Path) -> None:
    example = tmp_path / "example"
    shutil.copytree(Path(__file__).resolve().parent.parent / "contrib" / "django" / "example", example)
    project = Project(example, "sqlite", None)
    assert "No changes detected" in project.manage("makemigrations", "--check", "--dry-run", "sqjobs_django").stdout
    project.manage("migrate", "-v", "0")
    job_id = project.shell("""
        import json
        from django.test import Client
        response = Client().post("/", {"number": "9"})
        print(json.dumps(response.url.split("/")[2]))
    """)
    project.manage("sqjobs", "worker", "default", "--burst")
    page = project.shell(f"""
        import json
        from django.test import Client
        client = Client()
        print(json.dumps([client.get("/jobs/{job_id}/").status_code, client.get("/jobs/{job_id}.json").json()]))
    """)
    assert page == [200, {"job_id": job_id, "status": "SUCCESS", "result": 81, "error": None}]
