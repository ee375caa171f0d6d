"""One id everywhere: the worker's dead-letter line and ``sqjobs dead`` name the job id first, the message id second.

A person searches by the job id (what ``.delay()`` and the producers print):
the worker's log line about a dead job, ``sqjobs dead`` and the dashboard all
show it first. On SQS a dead letter is a new message with a new message id,
so the job id is what ties the worker's line to the listing. A malformed
body shows what can be read of it (a name, an id) and why it is malformed.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

import sqjobs
from sqjobs.brokers.sqs import SQSBroker
from sqjobs.cli.commands import main
from tests import jobs_for_tests as jobs
from tests.sqs_server import MotoServer
from tests.support import DEADLINE_S, send, sqlite_config, start_worker, worker_log
from tests.test_sqs_worker import sqs_config

#: The worker's line about a message it moved to the dead-letter queue, the job id right after "job ".
DEAD_LINE = re.compile(r"job (\S+)(?: (\S+))? on default(?: \(message (\S+)\))? moved to the dead-letter queue"
                       r"(?: \(as message (\S+)\))?:")


def b64(data: object) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


#: A body with a job id and name whose arguments are not a list: malformed, yet its job can be named.
BAD_ARGS = b64({"id": "bad-args-1", "name": "billing.charge", "args": "oops", "kwargs": {}})
#: Nothing can be read of this one.
GARBAGE = "not base64, not JSON !"


def dead_listing(config: Path) -> list[str]:
    """``sqjobs dead default`` (text), one line per dead letter."""
    done = CliRunner().invoke(main, ["dead", "-c", str(config), "default"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.output.splitlines()


def run_worker_to_the_end(config: Path, processes: list) -> str:
    """Run ``sqjobs worker default --burst`` as a process until it exits; return its log."""
    worker = start_worker(config, ["default"], "--burst")
    processes.append(worker)
    assert worker.wait(DEADLINE_S * 4) == 0, worker_log(worker)
    return worker_log(worker)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def check_lines_match(log: str, listing: list[str], job_ids: list[str]) -> None:
    """Each job id is in a dead-letter line of the worker and first on a line of ``sqjobs dead``."""
    logged = {match.group(1): match for match in DEAD_LINE.finditer(log)}
    first = {line.split("  ")[0]: line for line in listing}
    for job_id in job_ids:
        assert job_id in logged, log
        assert job_id in first, listing


def test_dead_lists_job_ids_first_and_the_name_a_malformed_body_carries(tmp_path: Path, processes: list) -> None:
    config = sqlite_config(tmp_path)
    sqjobs.configure(str(config))
    broker = sqjobs.current_app().broker
    failed = send(broker, jobs.tracked_fails, ("x",))
    broker.send("default", BAD_ARGS)
    no_id = broker.send("default", json.dumps({"name": "billing.refund", "kwargs": 5}))  # plain JSON, no id
    broker.send("default", GARBAGE)
    log = run_worker_to_the_end(config, processes)
    listing = dead_listing(config)
    assert len(listing) == 4, listing
    check_lines_match(log, listing, [failed.id, "bad-args-1", no_id])
    line = next(line for line in listing if line.startswith(failed.id))
    assert line.startswith(f"{failed.id}  tracked_fails  failed after 1 attempt(s): ValueError: boom x  (message ")
    assert f"job {failed.id} tracked_fails on default (message " in log
    bad = next(line for line in listing if line.startswith("bad-args-1"))
    assert bad.startswith("bad-args-1  billing.charge  malformed message: 'args' is a JSON str, not a list"), bad
    assert "job bad-args-1 billing.charge on default (message " in log
    # Without an id in the body the message id is the job id: shown once.
    assert next(line for line in listing if line.startswith(no_id)).startswith(f"{no_id}  billing.refund  ")
    garbage = next(line for line in listing if line.startswith("?"))
    assert garbage.startswith("?  ?  malformed message: body is neither base64 nor JSON  (message "), garbage
    shown = CliRunner().invoke(main, ["dead", "-c", str(config), "default", "--json"], catch_exceptions=False)
    rows = {row["message_id"]: row for row in json.loads(shown.output)}
    bad_row = next(row for row in rows.values() if row["job_id"] == "bad-args-1")
    assert bad_row["name"] == "billing.charge" and "'args' is a JSON str" in bad_row["malformed"]


def test_on_sqs_the_worker_line_and_the_listing_share_the_job_id(
        sqs_server: MotoServer, sqs_prefix: str, tmp_path: Path, processes: list) -> None:
    config = sqs_config(tmp_path, sqs_server, sqs_prefix)
    broker = SQSBroker(**sqs_server.broker_options(sqs_prefix))
    try:
        failed = send(broker, jobs.tracked_fails, ("y",))
        broker.send("default", BAD_ARGS)
        no_id = broker.send("default", b64({"name": "billing.refund", "kwargs": 5}))  # its job id: the message id
    finally:
        broker.close()
    log = run_worker_to_the_end(config, processes)
    listing = dead_listing(config)
    assert len(listing) == 3, listing
    check_lines_match(log, listing, [failed.id, "bad-args-1"])
    assert any(line.startswith("bad-args-1  billing.charge  malformed message: ") for line in listing), listing
    # The dead copy is a new message: the worker's line names it too, as the listing does.
    logged = {match.group(1): match for match in DEAD_LINE.finditer(log)}
    line = next(line for line in listing if line.startswith(failed.id))
    assert line.endswith(f"(message {logged[failed.id].group(4)})"), (line, log)
    assert logged[failed.id].group(3) != logged[failed.id].group(4)
    # A body without an id: its job id was the original's message id; the listing shows the copy's,
    # which the worker's line names.
    copy_id = logged[no_id].group(4)
    assert any(line.startswith(f"{copy_id}  billing.refund  malformed message: ") for line in listing), listing

