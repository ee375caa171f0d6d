"""A beater's status database (PostgreSQL behind a TCP proxy) goes down for a while, then comes back.

While it is down the beater logs one line per backoff step (no traceback)
and one line when the database answers again; then it sends the fire times
it could not claim, each job after its ``catch_up``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.message import decode
from tests.scratch_databases import scratch_database
from tests.status_fixtures import POSTGRESQL_URL
from tests.support import TESTS_DIR, stop_process, wait_until, write_config
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.faults

QUEUE = "periodic-outage"
#: ``[beater] catch_up_grace_s`` of the test: the beater's pause during an outage is at most half of it.
GRACE_S = 10
#: Failed tries to wait for before the database comes back: pauses of 1, 2, 4, 5, 5, 5 s, about 22 s down.
FAILURES = 7
FAILED = re.compile(r"status database error while ticking \(failure (\d+)[^)]*\); trying again in ([\d.]+) s")


def _proxied(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{proxy.port}").geturl()


def _sent(broker: SQLiteBroker) -> dict[str, list[datetime]]:
    """Every fire time sent, per job, from the queue (each message received once)."""
    sent: dict[str, list[datetime]] = {}
    while batch := broker.receive(QUEUE, 10, 0):
        for message in batch:
            decoded = decode(message.body, message.message_id)
            sent.setdefault(decoded.name, []).append(datetime.fromisoformat(decoded.extra["scheduled_for"]))
    return {name: sorted(times) for name, times in sent.items()}


def _gaps(times: list[datetime]) -> list[tuple[datetime, datetime]]:
    """The (last sent, next sent) pairs more than a second apart."""
    return [(a, b) for a, b in zip(times, times[1:], strict=False) if b - a > timedelta(seconds=1)]


def test_a_beater_through_a_status_database_outage(tmp_path: Path) -> None:
    log_path = tmp_path / "beater.log"
    # A database of its own: no claim of another run (nor of an earlier version) for these jobs.
    with scratch_database(POSTGRESQL_URL) as url, TcpProxy(urlsplit(url).port or 5432).start() as proxy:
        config = write_config(tmp_path / "sqjobs.conf", {
            "sqjobs": {"broker": f"sqlite:///{tmp_path / 'queue.db'}", "database": _proxied(proxy, url),
                       "jobs": "periodic_jobs_for_tests", "path": str(TESTS_DIR)},
            "beater": {"catch_up_grace_s": GRACE_S},
        })
        broker = SQLiteBroker(str(tmp_path / "queue.db"))
        with open(log_path, "wb") as log:
            beater = subprocess.Popen([sys.executable, "-m", "sqjobs", "beater", "-c", str(config)], stdout=log,
                                      stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            wait_until(lambda: broker.stats(QUEUE).visible >= 9, what="three fire times of each job")
            proxy.stop()  # the database is gone: its connections closed, its port refusing
            down_at = datetime.now().astimezone()
            wait_until(lambda: f"(failure {FAILURES}," in log_path.read_text(), timeout_s=120,
                       what=f"{FAILURES} failed tries")
            proxy.start()
            up_at = datetime.now().astimezone()
            wait_until(lambda: "status database reachable again" in log_path.read_text(), timeout_s=60,
                       what="the beater to see the database back")
            after = broker.stats(QUEUE).visible
            wait_until(lambda: broker.stats(QUEUE).visible >= after + 9, what="three more fire times of each job")
        finally:
            code = stop_process(beater)
    text = log_path.read_text()
    assert code == 0, text
    assert "Traceback" not in text, text
    failures = [(int(n), float(pause)) for n, pause in FAILED.findall(text)]
    # One line per backoff step: tries 1, 2, 3... pausing 1, 2, 4 s, then half the grace.
    assert [n for n, _ in failures] == list(range(1, len(failures) + 1)), text
    assert [pause for _, pause in failures] == [min(2.0 ** i, GRACE_S / 2) for i in range(len(failures))], text
    assert FAILURES <= len(failures) <= FAILURES + 1, text
    assert len(re.findall("status database reachable again", text)) == 1, text

    sent = _sent(broker)
    outage_s = (up_at - down_at).total_seconds()
    for name, times in sent.items():
        assert max(Counter(times).values()) == 1, f"{name}: no fire time sent twice"
    # "all": every second, the outage's too.
    assert _gaps(sent["test.outage_all"]) == [], sent["test.outage_all"]
    # "none": the fire times older than the grace when the database came back were dropped...
    [(last_before, first_after)] = _gaps(sent["test.outage_none"])
    assert (first_after - last_before).total_seconds() >= outage_s - GRACE_S - 2, (last_before, first_after)
    # ...and "latest" sends the latest of them: the second before the first on time (one tick sent both).
    [(last_before_latest, latest_missed)] = _gaps(sent["test.outage_latest"])
    assert latest_missed == first_after - timedelta(seconds=1), (latest_missed, first_after)
    assert abs(last_before_latest - last_before) <= timedelta(seconds=1)  # (the outage may cut a tick in two)
