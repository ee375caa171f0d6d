"""The dashboard: its guards (CSRF, escaping, binding, read-only), and a real browser requeueing a dead letter."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

import sqjobs
from sqjobs.errors import ConfigError
from sqjobs.web.dashboard import check_bind
from sqjobs.web.dashboard.server import create_app
from sqjobs.worker.loop import Worker
from tests import jobs_for_tests as jobs
from tests.support import DEADLINE_S, send, sqlite_config, wait_until
from tests.tools import chromium_path

#: Where the browser test leaves its screenshot for a person (and the README) to look at.
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "_static" / "dashboard-overview.png"


@pytest.fixture()
def dead_letters(tmp_path: Path) -> Iterator[tuple[sqjobs.App, list[str]]]:
    """An app whose queue ``default`` has three dead letters (tracked failures, one with ``<script>`` in its error)."""
    config = sqlite_config(tmp_path)
    sqjobs.configure(str(config))
    app = sqjobs.current_app()
    broker = app.broker
    ids = [send(broker, jobs.tracked_fails, (token,)).id
           for token in ("<script>alert(1)</script>", "two", "three")]
    for n in range(2):
        send(broker, jobs.tracked_add, (n, n))
    for n in range(4):  # waiting on a queue no worker here consumes
        send(broker, jobs.tracked_add, (n, n), queue="emails")
    worker = Worker(app, ["default"], isolation="none", prefetch=10)
    wait_until(lambda: (worker.run_once(0), broker.stats("default").dead == 3)[1], what="three dead letters")
    yield app, ids


def client_of(app: sqjobs.App, **options: Any) -> Any:
    web = create_app(app, **options)
    web.testing = True
    return web.test_client()


def csrf_token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def test_a_forged_post_without_the_token_changes_nothing(dead_letters: tuple[sqjobs.App, list[str]]) -> None:
    app, _ = dead_letters
    client = client_of(app)
    origin = {"Origin": "http://localhost"}  # the test client's host: only the token is missing
    for path in ("/queues/default/dead/purge", "/queues/default/dead/requeue_all"):
        response = client.post(path, data={"confirmed": "yes"}, headers=origin)
        assert response.status_code == 403
        response = client.post(path, data={"confirmed": "yes", "csrf_token": "guessed"}, headers=origin)
        assert response.status_code == 403
    assert app.broker.stats("default").dead == 3
    # With the token of the confirmation page, the same request works.
    page = client.get("/queues/default/dead/confirm?action=purge").get_data(as_text=True)
    response = client.post("/queues/default/dead/purge", data={"confirmed": "yes", "csrf_token": csrf_token(page)},
                           headers=origin)
    assert response.status_code == 303
    assert app.broker.stats("default").dead == 0


def test_script_in_an_error_renders_as_text(dead_letters: tuple[sqjobs.App, list[str]]) -> None:
    app, ids = dead_letters
    client = client_of(app)
    for path in (f"/jobs/{ids[0]}", "/queues/default/dead"):
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    job_page = client.get(f"/jobs/{ids[0]}").get_data(as_text=True)
    assert "FAILURE" in job_page and "Traceback" in job_page
    assert "in the dead-letter queue of default" in job_page


def test_dead_letters_and_their_requeue_name_the_job_id_first(dead_letters: tuple[sqjobs.App, list[str]]) -> None:
    app, ids = dead_letters
    client = client_of(app)
    rows = re.findall(r'<tr data-message="([^"]+)">(.*?)</tr>', client.get("/queues/default/dead").get_data(
        as_text=True), re.S)
    assert len(rows) == 3
    message_id, row = next((mid, row) for mid, row in rows if ids[1] in row)
    assert row.index(ids[1]) < row.index("tracked_fails"), row  # the job id column comes first
    confirm = re.search(r'href="([^"]*action=requeue[^"]*)"', row)
    assert confirm, row
    page = client.get(confirm.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert f"(job {ids[1]}, message {message_id})?" in page
    response = client.post("/queues/default/dead/requeue", data={
        "confirmed": "yes", "csrf_token": csrf_token(page), "message_id": message_id},
        headers={"Origin": "http://localhost"}, follow_redirects=True)
    assert f"requeued job {ids[1]} tracked_fails (message {message_id})" in response.get_data(as_text=True)
    assert app.broker.stats("default").dead == 2


def test_the_job_page_shows_the_arguments_of_its_row_or_not_recorded(
        dead_letters: tuple[sqjobs.App, list[str]]) -> None:
    app, ids = dead_letters
    client = client_of(app)

    def arguments_on(page: str) -> str:
        return html.unescape(page.split('<pre class="arguments" id="arguments">')[1].split("</pre>")[0])

    page = client.get(f"/jobs/{ids[0]}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert arguments_on(page) == json.dumps({"args": ["<script>alert(1)</script>"], "kwargs": {}}, indent=2)
    app.store.started("written-by-an-old-worker", "tracked_add", "default")  # no arguments: an earlier version
    assert arguments_on(client.get("/jobs/written-by-an-old-worker").get_data(as_text=True)) == "not recorded"


def test_read_only_hides_every_action_and_refuses_posts(dead_letters: tuple[sqjobs.App, list[str]]) -> None:
    app, _ = dead_letters
    client = client_of(app, read_only=True)
    page = client.get("/queues/default/dead").get_data(as_text=True)
    assert "Requeue" not in page and "Purge" not in page
    assert client.post("/queues/default/dead/purge", data={"confirmed": "yes"}).status_code == 403
    assert app.broker.stats("default").dead == 3


def test_a_password_is_asked_for(dead_letters: tuple[sqjobs.App, list[str]]) -> None:
    app, _ = dead_letters
    client = client_of(app, password="s3cret")
    assert client.get("/").status_code == 401
    assert client.get("/", auth=("ops", "wrong")).status_code == 401
    assert client.get("/", auth=("ops", "s3cret")).status_code == 200


def test_binding_elsewhere_without_a_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password"):
        check_bind("0.0.0.0", "")
    check_bind("0.0.0.0", "s3cret")
    check_bind("127.0.0.1", "")
    config = sqlite_config(tmp_path)
    done = subprocess.run([sys.executable, "-m", "sqjobs", "dashboard", "-c", str(config), "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=DEADLINE_S, cwd=tmp_path)
    assert done.returncode != 0
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and "[dashboard] password is not set" in errors[0], done.stderr


def test_metrics_are_served_by_the_dashboard(dead_letters: tuple[sqjobs.App, list[str]]) -> None:
    app, _ = dead_letters
    text = client_of(app).get("/metrics").get_data(as_text=True)
    assert 'sqjobs_queue_messages{queue="default",state="dead"} 3.0' in text


@pytest.mark.tools("chromium")
def test_in_a_browser_requeue_a_dead_letter(dead_letters: tuple[sqjobs.App, list[str]]) -> None:
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    app, ids = dead_letters
    server = make_server("127.0.0.1", 0, create_app(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 330})
            page.goto(base + "/")
            dead_cell = page.locator('tr[data-queue="default"] [data-state="dead"]')
            assert dead_cell.inner_text() == "3"
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            dead_cell.click()
            page.wait_for_url(re.compile(r"/queues/default/dead$"))
            rows = page.locator("#dead-letters tbody tr")
            assert rows.count() == 3
            assert page.locator(".reason", has_text="<script>alert(1)</script>").count() == 1  # shown as text
            rows.first.get_by_role("link", name="Requeue").click()
            page.get_by_role("button", name="Yes, requeue").click()
            page.wait_for_url(re.compile(r"/queues/default/dead\?done="))
            assert re.match(r"requeued job \S+ tracked_fails \(message ", page.locator("#done").inner_text())
            assert page.locator("#dead-count").inner_text() == "2"
            assert page.locator("#dead-letters tbody tr").count() == 2
            page.goto(base + "/")
            assert page.locator('tr[data-queue="default"] [data-state="dead"]').inner_text() == "2"
            assert page.locator('tr[data-queue="default"] [data-state="visible"]').inner_text() == "1"
            # Find a job by id from the search box.
            page.fill('input[name="id"]', ids[1])
            page.get_by_role("button", name="Find job").click()
            page.wait_for_url(re.compile(f"/jobs/{ids[1]}$"))
            assert page.locator("#status").inner_text().count("FAILURE") == 1
            browser.close()
    finally:
        server.shutdown()
        thread.join(DEADLINE_S)
    assert app.broker.stats("default").dead == 2


def test_periodic_jobs_show_their_next_fire_times_and_the_last_tick_sent(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from sqjobs.cli.common import configure_app
    from sqjobs.schedule.beater import Beater, BeatStore

    config = sqlite_config(tmp_path, jobs="jobs_for_tests, periodic_jobs_for_tests")
    configure_app(str(config))
    app = sqjobs.current_app()
    beater = Beater.for_registry(app, app.registry, BeatStore(app.settings.database_url), beater_id="beater-under-test")
    now = datetime.now(timezone.utc)
    beater.tick(now)  # the first tick only starts the beater's clock
    assert beater.tick(now + timedelta(seconds=2))
    page = client_of(app).get("/periodic").get_data(as_text=True)
    [row] = [row for row in page.split("<tr>") if "<td>test.every_second</td>" in row]
    assert "Europe/Madrid" in row and "* * * * * *" in row and "beater-under-test" in row
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC<br>", row)) == 5  # the next five fire times
