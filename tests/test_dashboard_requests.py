"""The dashboard's request checks over real HTTP: Host (DNS rebinding), Origin on every POST, password guessing."""

from __future__ import annotations

import http.client
import logging
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import pytest
from flask import Flask

import sqjobs
from sqjobs.config import load
from sqjobs.errors import ConfigError
from sqjobs.web.dashboard.binding import AllowedHosts, host_of, host_of_url
from sqjobs.web.dashboard.login import LoginThrottle
from sqjobs.web.dashboard.server import create_app
from tests.support import DEADLINE_S, Clock, sqlite_config, stop_process, wait_until
from tests.test_dashboard import csrf_token, dead_letters  # noqa: F401  (a fixture)

#: The dead letters' fixture, from tests/test_dashboard.py.
DeadLetters = tuple[sqjobs.App, list[str]]


@contextmanager
def serving(web: Flask, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve ``web`` on ``host`` in a thread, as ``sqjobs dashboard`` does; yield its port."""
    from werkzeug.serving import make_server

    server = make_server(host, 0, web, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(DEADLINE_S)
        server.server_close()


def call(port: int, method: str, path: str, headers: Mapping[str, str] | None = None, body: str = "",
         source: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
    """One HTTP request to 127.0.0.1:``port`` from the address ``source``: status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S, source_address=(source, 0))
    try:
        sent = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        if body:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body or None, headers=sent)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


def basic(password: str) -> dict[str, str]:
    """An Authorization header for ``password`` (user name ops)."""
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def test_a_request_naming_another_host_is_refused(dead_letters: DeadLetters) -> None:  # noqa: F811
    app, _ = dead_letters
    with serving(create_app(app)) as port:
        for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", f"[::1]:{port}"):
            assert call(port, "GET", "/", {"Host": host})[0] == 200, host
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.2", "localhost.evil.example", ""):
            status, _, text = call(port, "GET", "/queues/default/dead", {"Host": host})
            assert status == 400, host
            assert len(text.strip().splitlines()) == 1 and "is not a name this dashboard answers to" in text
            assert "127.0.0.1, localhost, ::1" in text
        # The rebinding page: its token harvested with the right Host, its POST naming its own host.
        status, headers, page = call(port, "GET", "/queues/default/dead/confirm?action=purge")
        cookie = headers["set-cookie"].split(";")[0]
        form = f"confirmed=yes&csrf_token={csrf_token(page)}"
        status, _, _ = call(port, "POST", "/queues/default/dead/purge", body=form,
                            headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}",
                                     "Cookie": cookie})
        assert status == 400
        assert app.broker.stats("default").dead == 3


def test_a_post_from_another_origin_changes_nothing(dead_letters: DeadLetters) -> None:  # noqa: F811
    app, _ = dead_letters
    with serving(create_app(app)) as port:
        status, headers, page = call(port, "GET", "/queues/default/dead/confirm?action=purge")
        assert status == 200
        cookie = {"Cookie": headers["set-cookie"].split(";")[0]}
        form = f"confirmed=yes&csrf_token={csrf_token(page)}"
        for origin in ({"Origin": "http://evil.example"}, {"Origin": f"http://evil.example:{port}"},
                       {"Origin": "null"}, {}, {"Referer": "http://evil.example/page"},
                       {"Origin": "http://evil.example", "Referer": f"http://127.0.0.1:{port}/"}):
            status, _, text = call(port, "POST", "/queues/default/dead/purge", {**cookie, **origin}, form)
            assert status == 403, origin
            assert "must come from one of the dashboard&#39;s own pages" in text
        assert app.broker.stats("default").dead == 3
        # No Origin, but a Referer naming the dashboard: requeue one letter.
        message_id = re.findall(r'data-message="([^"]+)"', call(port, "GET", "/queues/default/dead", cookie)[2])[0]
        status, _, _ = call(port, "POST", "/queues/default/dead/requeue",
                            {**cookie, "Referer": f"http://127.0.0.1:{port}/queues/default/dead/confirm"},
                            f"{form}&message_id={message_id}")
        assert status == 303
        assert app.broker.stats("default").dead == 2
        # The dashboard's own Origin, under another of its names: purge the rest.
        status, _, _ = call(port, "POST", "/queues/default/dead/purge",
                            {**cookie, "Origin": f"http://localhost:{port}"}, form)
        assert status == 303
        assert app.broker.stats("default").dead == 0


def test_wrong_passwords_slow_their_sender_down_and_only_it(dead_letters: DeadLetters,  # noqa: F811
                                                            caplog: pytest.LogCaptureFixture) -> None:
    app, _ = dead_letters
    caplog.set_level(logging.WARNING, logger="sqjobs.dashboard")
    with serving(create_app(app, password="s3cret")) as port:
        answers = [call(port, "GET", "/", basic(f"guess{n}")) for n in range(20)]
        statuses = [status for status, _, _ in answers]
        assert statuses[:5] == [401] * 5, statuses  # room for typos
        assert statuses.count(429) >= 10, statuses  # then each guess waits longer than the next one comes
        for status, headers, text in answers:
            if status == 429:
                assert int(headers["retry-after"]) >= 1 and "too many wrong passwords" in text
        # Another client logs in at once, and its own wrong password is just wrong.
        assert call(port, "GET", "/", basic("s3cret"), source="127.0.0.2")[0] == 200
        assert call(port, "GET", "/", basic("nope"), source="127.0.0.2")[0] == 401
        # The guesser, once it has waited, logs in with the right password.
        wait_until(lambda: call(port, "GET", "/", basic("s3cret"))[0] == 200, timeout_s=2 * 60,
                   interval_s=0.5, what="the throttled client's login")
        assert call(port, "GET", "/", basic("s3cret"))[0] == 200
    lines = [record.getMessage() for record in caplog.records if "wrong passwords" in record.getMessage()]
    assert len(lines) == 1, lines  # one line for the burst, not one per guess
    assert "5 wrong passwords from 127.0.0.1" in lines[0]


def test_the_login_throttle_step_by_step() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock, free_failures=3, delay_s=1, max_delay_s=4, forget_s=100, max_clients=2)
    assert [throttle.attempt("a", False) for _ in range(3)] == [0, 0, 0]
    assert throttle.attempt("a", True) == 1  # even the right password waits
    assert throttle.attempt("b", True) == 0
    clock.now += 1
    assert throttle.attempt("a", False) == 0  # the 4th wrong one: now 2 s
    clock.now += 1.5
    assert throttle.attempt("a", False) == 0.5
    clock.now += 0.5
    assert throttle.attempt("a", False) == 0  # the 5th: 4 s, the most
    clock.now += 4
    assert throttle.attempt("a", False) == 0
    assert throttle.attempt("a", False) == 4
    clock.now += 4
    assert throttle.attempt("a", True) == 0  # a login resets the address
    assert [throttle.attempt("a", False) for _ in range(3)] == [0, 0, 0]
    clock.now += 100
    assert throttle.attempt("a", False) == 0  # forgotten after a quiet spell
    for client in ("c", "d", "e"):
        throttle.attempt(client, False)
    assert throttle.clients == 2  # the oldest addresses go first


def test_allowed_hosts() -> None:
    assert host_of("Evil.Example.:80") == "evil.example" and host_of("[::1]:8181") == "::1"
    assert host_of("::1") == "::1" and host_of("a b") == "" and host_of("x/y") == ""
    assert host_of_url("http://[::1]:8181/x") == "::1" and host_of_url("null") == ""
    local = AllowedHosts.for_bind("127.0.0.1")
    assert local.accepts("localhost") and local.accepts("::1") and not local.accepts("192.0.2.7")
    named = AllowedHosts.for_bind("10.1.2.3", ["Dash.Example.com"])
    assert named.accepts("10.1.2.3") and named.accepts("dash.example.com")
    assert not named.accepts("localhost") and not named.accepts("10.1.2.4")
    everywhere = AllowedHosts.for_bind("0.0.0.0", ["dash.example.com"])
    assert everywhere.accepts("192.0.2.7") and everywhere.accepts("2001:db8::1") and everywhere.accepts("localhost")
    assert everywhere.accepts("dash.example.com") and not everywhere.accepts("evil.example")
    assert AllowedHosts.for_bind("::").any_address


@pytest.mark.parametrize("value", ["https://dash.example.com", "dash.example.com:443", "dash example"])
def test_public_hosts_are_names_not_urls(tmp_path: Path, value: str) -> None:
    config = tmp_path / "sqjobs.conf"
    config.write_text(f"[dashboard]\npublic_hosts = {value}\n")
    with pytest.raises(ConfigError, match=r"\[dashboard\] public_hosts = .*must be host names such as"):
        load(str(config))
    config.write_text("[dashboard]\npublic_hosts = dash.example.com, 192.0.2.7, 2001:db8::1\n")
    assert load(str(config)).get("dashboard", "public_hosts") == ("dash.example.com", "192.0.2.7", "2001:db8::1")


def test_the_command_says_which_hosts_it_answers_to(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    log = tmp_path / "dashboard.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "sqjobs", "dashboard", "-c", str(config), "--port", "0",
                                    "--public-host", "dash.example.com"], stderr=stderr, cwd=tmp_path)
    try:
        wait_until(lambda: "answers to Host" in log.read_text() or process.poll() is not None,
                   what="the dashboard's start")
        text = log.read_text()
        [line] = [line for line in text.splitlines() if "answers to Host" in line]
        assert "answers to Host 127.0.0.1, localhost, ::1, dash.example.com;" in line, text
        port = int(re.findall(r"http://127.0.0.1:(\d+)/", text)[-1])
        assert call(port, "GET", "/", {"Host": f"dash.example.com:{port}"})[0] == 200
        assert call(port, "GET", "/", {"Host": "evil.example"})[0] == 400
    finally:
        stop_process(process)
