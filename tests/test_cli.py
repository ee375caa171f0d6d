"""The sqjobs command: enqueue, queues, dead (list, requeue, purge), schedule."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

import sqjobs
from sqjobs.brokers.base import Broker
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.cli.commands import main
from sqjobs.message import decode
from tests.support import TESTS_DIR, read_lines, receive_all, sqlite_config, write_config


class AccNightly(sqjobs.PeriodicJob):
    """A nightly job at 02:30 in Madrid: a wall time the spring DST change skips."""

    name = "acc.nightly"
    queue = "nightly"
    schedule = "30 2 * * *"
    timezone = "Europe/Madrid"

    def run(self) -> None:
        pass


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = sqlite_config(tmp_path)
    sqjobs.configure(str(path))
    return path


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_enqueue_prints_the_id_and_a_worker_runs_it(config: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    job_id = run("enqueue", "-c", str(config), "record", "--args", json.dumps([str(record), "cli"])).strip()
    assert len(job_id) == 32
    broker = sqjobs.get_broker()
    [message] = broker.peek("default")
    assert decode(message.body, "").id == job_id
    worker = subprocess.run([sys.executable, "-m", "sqjobs", "worker", "-c", str(config), "default", "--burst"],
                            capture_output=True, timeout=60)
    assert worker.returncode == 0
    assert read_lines(record)[0].startswith("cli ")


def test_enqueue_a_name_unknown_here_with_queue_and_delay(config: Path) -> None:
    job_id = run("enqueue", "-c", str(config), "elsewhere.job", "--kwargs", '{"a": 1}', "--queue", "remote",
                 "--delay", "60", "--foreign").strip()
    stats = sqjobs.get_broker().stats("remote")
    assert stats.delayed == 1 and job_id


@pytest.mark.parametrize(("option", "value", "error"), [
    ("--args", "{", "not valid JSON"),
    ("--args", '{"a": 1}', "must be a JSON list"),
    ("--kwargs", "[1]", "must be a JSON object"),
])
def test_enqueue_refuses_bad_json(config: Path, option: str, value: str, error: str) -> None:
    result = CliRunner().invoke(main, ["enqueue", "-c", str(config), "record", option, value])
    assert result.exit_code == 2
    assert error in result.output


def test_queues_shows_visible_in_flight_delayed_and_dead(config: Path) -> None:
    run("enqueue", "-c", str(config), "a", "--queue", "q1", "--foreign")
    run("enqueue", "-c", str(config), "a", "--queue", "q1", "--delay", "100", "--foreign")
    broker = sqjobs.get_broker()
    broker.send("q2", "poison")
    [message] = broker.receive("q2", 1)
    broker.dead_letter("q2", message, "bad")
    rows = {row["queue"]: row for row in json.loads(run("queues", "-c", str(config), "--json"))}
    assert rows["q1"] == {"queue": "q1", "visible": 1, "in_flight": 0, "delayed": 1, "dead": 0}
    assert rows["q2"]["dead"] == 1
    text = run("queues", "-c", str(config))
    assert "q1" in text and "in_flight" in text


def test_dead_lists_reasons_requeues_and_purges(config: Path) -> None:
    broker = sqjobs.get_broker()
    body = base64.b64encode(json.dumps({"name": "adder_job", "args": [1, 2]}).encode()).decode()
    for _ in range(3):
        broker.send("jobs", body)
    for message in broker.receive("jobs", 10):
        broker.dead_letter("jobs", message, "failed after 1 attempt(s): boom")
    rows = json.loads(run("dead", "-c", str(config), "jobs", "--json"))
    assert len(rows) == 3
    assert rows[0]["reason"] == "failed after 1 attempt(s): boom"
    assert rows[0]["name"] == "adder_job" and rows[0]["args"] == [1, 2]
    assert "failed after 1 attempt(s): boom" in run("dead", "-c", str(config), "jobs")
    assert "requeued 3 message(s)" in run("dead", "-c", str(config), "jobs", "--requeue")
    assert broker.stats("jobs").visible == 3 and broker.stats("jobs").dead == 0
    for message in broker.receive("jobs", 10):
        broker.dead_letter("jobs", message, "again")
    assert "purged 3 message(s)" in run("dead", "-c", str(config), "jobs", "--purge")
    assert broker.stats("jobs").dead == 0
    assert "jobs-dead is empty" in run("dead", "-c", str(config), "jobs")


@pytest.fixture(params=["sqlite", "sqs"])
def config_and_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Broker]]:
    """A config file and a broker of the test's own on the same queues: the embedded broker, then SQS."""
    broker: Broker
    if request.param == "sqlite":
        config = sqlite_config(tmp_path)
        broker = SQLiteBroker(str(tmp_path / "queue.db"))
    else:
        from sqjobs.brokers.sqs import SQSBroker
        from tests.sqs_server import unique_prefix

        server, prefix = request.getfixturevalue("sqs_server"), unique_prefix("cli")
        config = write_config(tmp_path / "sqs.conf", {"sqjobs": {"broker": "sqs"},
                                                      "sqs": server.sqs_section(prefix)})
        broker = SQSBroker(**server.broker_options(prefix))
    yield config, broker
    broker.close()


@pytest.mark.parametrize("action", [[], ["--json"], ["--requeue"], ["--purge"]])
def test_dead_on_a_queue_the_broker_never_saw_names_the_known_queues_and_creates_nothing(
        config_and_broker: tuple[Path, Broker], action: list[str]) -> None:
    config, broker = config_and_broker
    broker.send("jobs", "x")
    broker.send("emails", "y")
    result = CliRunner().invoke(main, ["dead", "-c", str(config), "no-such-queue", *action])
    assert result.exit_code == 1, result.output
    assert result.output == "Error: the broker has no queue 'no-such-queue'; known queues: emails, jobs\n"
    assert broker.queues() == ["emails", "jobs"]


def test_dead_on_a_broker_with_no_queue_says_so(config_and_broker: tuple[Path, Broker]) -> None:
    config, broker = config_and_broker
    result = CliRunner().invoke(main, ["dead", "-c", str(config), "jobs", "--purge"])
    assert result.exit_code == 1, result.output
    [line] = result.output.splitlines()
    assert line.startswith("Error: the broker has no queue 'jobs', nor any other yet")
    assert broker.queues() == []


@pytest.mark.parametrize(("given", "base"), [("jobs-dead", "jobs"), ("orders-dead.fifo", "orders.fifo")])
def test_dead_given_a_dead_letter_queue_points_to_its_queue(config: Path, given: str, base: str) -> None:
    broker = sqjobs.get_broker()
    broker.ensure_queue(base)
    result = CliRunner().invoke(main, ["dead", "-c", str(config), given])
    assert result.exit_code == 1, result.output
    assert result.output == f"Error: {given} is the dead-letter queue of {base}: name the queue itself, " \
                            f"as in 'sqjobs dead {base}'\n"


def test_unknown_jobs_module_is_a_one_line_error(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, jobs="no_such_module_here")
    result = CliRunner().invoke(main, ["worker", "-c", str(config), "--burst"])
    assert result.exit_code == 1
    assert "[sqjobs] jobs: cannot import 'no_such_module_here'" in result.output


def test_schedule_from_previews_any_night_strictly_after_the_instant(config: Path) -> None:
    dst_night = run("schedule", "-c", str(config), "acc.nightly", "--from", "2027-03-27T12:00:00+01:00",
                    "--next", "2")
    assert dst_night == "2027-03-28T03:00:00+02:00\n2027-03-29T02:30:00+02:00\n"  # 02:30 is skipped: at 03:00
    at_a_fire_time = run("schedule", "-c", str(config), "acc.nightly", "--from", "2027-03-29T00:30:00Z",
                         "--next", "1")
    assert at_a_fire_time == "2027-03-30T02:30:00+02:00\n"  # 00:30 UTC is 02:30 in Madrid: strictly after


@pytest.mark.parametrize(("value", "error"), [
    ("2027-03-27T12:00:00", "'2027-03-27T12:00:00' has no UTC offset"),
    ("tomorrow", "'tomorrow' is not an ISO 8601 date and time"),
])
def test_schedule_from_needs_an_instant_with_an_offset(config: Path, value: str, error: str) -> None:
    result = CliRunner().invoke(main, ["schedule", "-c", str(config), "acc.nightly", "--from", value])
    assert result.exit_code == 2, result.output
    assert error in result.output and "2027-03-27T12:00:00+01:00" in result.output


def _listed_periodic_jobs(output: str) -> list[str]:
    [line] = output.splitlines()
    return line.split("periodic jobs: ", 1)[1].split(", ")


def test_schedule_of_an_unknown_name_lists_the_periodic_jobs(config: Path) -> None:
    result = CliRunner().invoke(main, ["schedule", "-c", str(config), "acc.nightli"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: no periodic job is registered as 'acc.nightli'; periodic jobs: ")
    listed = _listed_periodic_jobs(result.output)
    assert "acc.nightly" in listed and "record" not in listed  # record is registered, with no schedule
    assert listed == sorted(listed)
    no_schedule = CliRunner().invoke(main, ["schedule", "-c", str(config), "record"])
    assert no_schedule.exit_code == 1, no_schedule.output
    assert no_schedule.output.startswith("Error: job 'record' has no schedule; periodic jobs: ")
    assert "acc.nightly" in _listed_periodic_jobs(no_schedule.output)


def test_schedule_with_no_periodic_job_registered_says_how_to_register_one(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.conf", {"sqjobs": {"jobs": "jobs_for_tests", "path": str(TESTS_DIR)}})
    done = subprocess.run([sys.executable, "-m", "sqjobs", "schedule", "-c", str(config), "acc.nightly"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr == ("Error: no periodic job is registered as 'acc.nightly'; none is: a periodic job has a "
                           "schedule and lives in a module that [sqjobs] jobs names (check -c or $SQJOBS_CONFIG)\n")
    assert list(tmp_path.iterdir()) == [config], "a preview creates no queue file"


# -- poison messages and bad input: one line, no traceback ---------------------------------------


def test_dead_lists_malformed_and_unreadable_messages_with_their_reasons_and_no_traceback(tmp_path: Path) -> None:
    from tests.test_sqlite_broker import UNREADABLE_ROWS, insert_raw_rows

    config, path, out = sqlite_config(tmp_path), tmp_path / "queue.db", tmp_path / "out.txt"
    broker = SQLiteBroker(str(path))
    poison = {
        "deep": '{"name": "record", "args": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "nan": base64.b64encode(b'{"name": "record", "args": ["x", NaN]}').decode(),
        "huge int": '{"name": "record", "args": [' + "9" * 5000 + "]}",
    }
    for text in poison.values():
        broker.send("default", text)
    insert_raw_rows(path, "default")
    broker.send("default", base64.b64encode(json.dumps({"name": "record", "args": [str(out), "ok"]}).encode()).decode())
    worker = subprocess.run([sys.executable, "-m", "sqjobs", "worker", "-c", str(config), "default", "--burst"],
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert [line.split()[0] for line in read_lines(out)] == ["ok"]
    expected = len(poison) + len(UNREADABLE_ROWS)
    assert (broker.stats("default").visible, broker.stats("default").dead) == (0, expected)

    listed = subprocess.run([sys.executable, "-m", "sqjobs", "dead", "-c", str(config), "default", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert (listed.returncode, listed.stderr) == (0, "")
    rows = json.loads(listed.stdout)
    reasons = sorted(row["reason"] for row in rows)
    assert len(rows) == expected
    # What can be read is shown: the NaN body still names its job (strict JSON refuses it, a lenient read not).
    assert sorted(str(row["name"]) for row in rows) == ["None"] * (expected - 1) + ["record"]
    assert all(reason.startswith("malformed message: ") for reason in reasons)
    for part in ["nested too deeply", "holds NaN", "cannot be read as JSON", "its body is not UTF-8 text",
                 "its attributes column is not JSON"]:
        assert any(part in reason for reason in reasons), part
    text = subprocess.run([sys.executable, "-m", "sqjobs", "dead", "-c", str(config), "default"],
                          capture_output=True, text=True, timeout=60)
    assert (text.returncode, text.stderr) == (0, "")
    lines = text.stdout.splitlines()
    assert len(lines) == expected and all("  ?  malformed message: " in line for line in lines if "NaN" not in line)
    assert "  record  malformed message: " in next(line for line in lines if "NaN" in line)


def test_requeue_leaves_unreadable_rows_where_they_are(config: Path, tmp_path: Path) -> None:
    from tests.test_sqlite_broker import UNREADABLE_ROWS, insert_raw_rows

    broker = sqjobs.get_broker()
    broker.send("jobs", "readable but not a job")
    insert_raw_rows(tmp_path / "queue.db", "jobs")
    for message in receive_all(broker, "jobs", 1 + len(UNREADABLE_ROWS)):
        broker.dead_letter("jobs", message, "malformed")
    # Dead-lettering wrote fresh attributes: only the two rows whose body is not UTF-8 stay unreadable.
    output = run("dead", "-c", str(config), "jobs", "--requeue")
    assert output == "requeued 4 message(s) from jobs-dead to jobs; 2 unreadable message(s) left in jobs-dead\n"
    assert (broker.stats("jobs").visible, broker.stats("jobs").dead) == (4, 2)
    assert sorted(m.message_id for m in broker.peek("jobs-dead")) == ["blob not UTF-8", "text not UTF-8"]


def one_line_error(*args: str, cwd: Path | None = None) -> str:
    """Run ``sqjobs ARGS`` as a process; assert it failed with one ``Error:`` line and no traceback; return it."""
    done = subprocess.run([sys.executable, "-m", "sqjobs", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    return line


def test_a_config_file_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "latin1.conf"
    config.write_bytes(b"[sqjobs]\nbroker = sqlite:///q.db\n; caf\xe9\n")
    done = subprocess.run([sys.executable, "-m", "sqjobs", "queues", "-c", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"Error: {config}: line 3: not UTF-8 text (byte 0xe9); save the config file as UTF-8\n"


def test_an_endpoint_url_that_is_not_a_url_names_file_section_and_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "sqs.conf", {"sqjobs": {"broker": "sqs"}, "sqs": {"endpoint_url": "not a url"}})
    assert one_line_error("queues", "-c", str(config)) == (
        f"Error: {config}: [sqs] endpoint_url = 'not a url': must be an http:// or https:// URL such as "
        "http://localhost:9324, or empty for AWS")


@pytest.mark.parametrize(("source", "error"), [
    ("import os\n\nraise RuntimeError('no DATABASE_URL in the environment')\n",
     "(MODULE.py, line 3): RuntimeError: no DATABASE_URL in the environment (sqjobs -v shows the traceback)"),
    ("def broken(:\n    pass\n", "(MODULE.py, line 1): SyntaxError: invalid syntax (sqjobs -v shows the traceback)"),
])
def test_a_job_module_that_raises_at_import_is_one_line_naming_module_file_and_error(
        tmp_path: Path, source: str, error: str) -> None:
    module = f"raising_jobs_{abs(hash(source)) % 10_000}"
    (tmp_path / f"{module}.py").write_text(source)
    config = sqlite_config(tmp_path, jobs=module, path=str(tmp_path))
    line = one_line_error("worker", "-c", str(config), "--burst")
    assert line == (f"Error: {config}: [sqjobs] jobs: cannot import {module!r} "
                    + error.replace("MODULE.py", str(tmp_path / f"{module}.py")))
    verbose = subprocess.run([sys.executable, "-m", "sqjobs", "-v", "worker", "-c", str(config), "--burst"],
                             capture_output=True, text=True, timeout=60)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert verbose.stderr.rstrip().splitlines()[-1] == line


@pytest.mark.parametrize(("value", "error"), [
    ("[NaN]", "the value holds NaN, which is not JSON"),
    ('["a", -Infinity]', "the value holds -Infinity, which is not JSON"),
    ("[1e999]", "the value holds 1e999, a number too large for JSON"),
    ("[" * 30_000 + "]" * 30_000, "the value is nested too deeply"),
    ("[" + "[" * 600 + "]" * 600 + "]", "argument 0 is nested deeper than 500 levels"),
])
def test_enqueue_refuses_args_json_cannot_carry_naming_the_option(config: Path, value: str, error: str) -> None:
    line = one_line_error("enqueue", "-c", str(config), "record", "--args", value)
    assert line.startswith(f"Error: Invalid value for --args: {error}")
    assert sqjobs.get_broker().queues() == []
