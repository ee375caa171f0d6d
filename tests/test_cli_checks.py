"""What the CLI checks before it sends or consumes: job names, queue names nothing uses, where a bad setting is.

Each test runs ``sqjobs`` as a real process, on a job module of its own, so
the registered names are exactly those the test wrote.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqjobs.brokers.sqlite import SQLiteBroker
from tests.support import write_config

TICKET_JOBS = """\
from sqjobs import job


@job(queue="payments")
def refund(order_id):
    pass


@job(queue="emails")
def send_ticket(order_id):
    pass
"""


def ticket_config(tmp_path: Path, jobs: bool = True, worker_sections: bool = True) -> Path:
    """A config on the embedded broker whose job module registers tickets.refund and tickets.send_ticket."""
    (tmp_path / "tickets.py").write_text(TICKET_JOBS)
    sqjobs_section = {"broker": f"sqlite:///{tmp_path / 'queue.db'}", "database": f"sqlite:///{tmp_path / 's.db'}",
                      "path": str(tmp_path)}
    if jobs:
        sqjobs_section["jobs"] = "tickets"
    sections: dict[str, dict[str, object]] = {"sqjobs": sqjobs_section}
    if worker_sections:
        sections["worker:mail"] = {"queues": "emails, payments"}
    return write_config(tmp_path / "sqjobs.conf", sections)


def sqjobs_command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``sqjobs ARGS`` as a process and return what it did."""
    return subprocess.run([sys.executable, "-m", "sqjobs", *args], capture_output=True, text=True, timeout=120)


def visible(tmp_path: Path) -> dict[str, int]:
    """Visible messages per queue of the test's embedded broker."""
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    try:
        return {queue: broker.stats(queue).visible for queue in broker.queues()}
    finally:
        broker.close()


def warnings_in(stderr: str) -> list[str]:
    """The WARNING lines of a command's log."""
    return [line for line in stderr.splitlines() if " WARNING " in line]


# -- job names ----------------------------------------------------------------------------------------


def test_enqueue_refuses_a_mistyped_name_in_one_line_naming_the_closest_and_sends_nothing(tmp_path: Path) -> None:
    config = ticket_config(tmp_path)
    done = sqjobs_command("enqueue", "-c", str(config), "tickets.refnud", "--args", "[42]")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("Error: no job is registered as 'tickets.refnud' by the job modules tickets; "
                           "did you mean 'tickets.refund'? (--foreign sends a name that only another service "
                           "defines)\n")
    assert visible(tmp_path) == {}, "nothing sent"
    bare = sqjobs_command("enqueue", "-c", str(config), "refund", "--args", "[42]")
    assert bare.returncode == 1 and "did you mean 'tickets.refund'?" in bare.stderr, bare.stderr
    unlike = sqjobs_command("enqueue", "-c", str(config), "billing.charge")
    assert unlike.returncode == 1
    assert "registered: tickets.refund, tickets.send_ticket (--foreign" in unlike.stderr, unlike.stderr
    assert visible(tmp_path) == {}


def test_enqueue_foreign_sends_a_name_no_job_module_here_registers(tmp_path: Path) -> None:
    config = ticket_config(tmp_path)
    done = sqjobs_command("enqueue", "-c", str(config), "billing.charge", "--queue", "payments", "--foreign")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == 32 and warnings_in(done.stderr) == []
    assert visible(tmp_path) == {"payments": 1}


def test_enqueue_without_job_modules_sends_any_name_and_warns_of_nothing(tmp_path: Path) -> None:
    config = ticket_config(tmp_path, jobs=False, worker_sections=False)
    done = sqjobs_command("enqueue", "-c", str(config), "elsewhere.job", "--queue", "anything")
    assert done.returncode == 0, done.stderr
    assert warnings_in(done.stderr) == []
    assert visible(tmp_path) == {"anything": 1}
    assert "--foreign" in sqjobs_command("enqueue", "--help").stdout


# -- queues nothing routes to -------------------------------------------------------------------------


def test_enqueue_to_a_queue_no_job_or_worker_group_names_warns_once_and_sends(tmp_path: Path) -> None:
    config = ticket_config(tmp_path)
    done = sqjobs_command("enqueue", "-c", str(config), "tickets.send_ticket", "--args", "[42]", "--queue", "emials")
    assert done.returncode == 0, done.stderr
    [warning] = warnings_in(done.stderr)
    logger, message = warning.split(" WARNING ", 1)[1].split(": ", 1)
    assert logger.startswith("sqjobs.cli[")
    assert message == ("queue 'emials': no registered job routes to it and no [worker:NAME] queues names it "
                       "(known queues: emails, payments); sending to it anyway")
    assert visible(tmp_path) == {"emials": 1}, "a warning, not an error: the job is sent"
    routed = sqjobs_command("enqueue", "-c", str(config), "tickets.send_ticket", "--args", "[43]")
    assert routed.returncode == 0 and warnings_in(routed.stderr) == [], routed.stderr


def test_a_worker_on_a_queue_no_job_or_worker_group_names_warns_once_and_consumes_it(tmp_path: Path) -> None:
    config = ticket_config(tmp_path)
    sqjobs_command("enqueue", "-c", str(config), "tickets.send_ticket", "--args", "[42]", "--queue", "emials")
    done = sqjobs_command("worker", "-c", str(config), "emials", "emails", "--burst")
    assert done.returncode == 0, done.stderr
    [warning] = warnings_in(done.stderr)
    assert warning.endswith("queue 'emials': no registered job routes to it and no [worker:NAME] queues names it "
                            "(known queues: emails, payments); consuming it anyway"), warning
    assert visible(tmp_path) == {"emails": 0, "emials": 0}, "the job sent there ran"
    two = sqjobs_command("worker", "-c", str(config), "emials", "paymnts", "--burst")
    assert two.returncode == 0, two.stderr
    [warning] = warnings_in(two.stderr)
    assert warning.endswith("queues 'emials', 'paymnts': no registered job routes to them and no [worker:NAME] "
                            "queues names them (known queues: emails, payments); consuming them anyway"), warning
    grouped = sqjobs_command("worker", "-c", str(config), "--group", "mail", "--burst")
    assert grouped.returncode == 0 and warnings_in(grouped.stderr) == [], grouped.stderr


def test_with_job_modules_and_no_worker_section_the_default_queue_is_known(tmp_path: Path) -> None:
    config = ticket_config(tmp_path, worker_sections=False)
    done = sqjobs_command("enqueue", "-c", str(config), "billing.charge", "--foreign")
    assert done.returncode == 0 and warnings_in(done.stderr) == [], done.stderr
    typo = sqjobs_command("enqueue", "-c", str(config), "billing.charge", "--foreign", "--queue", "paymnets")
    [warning] = warnings_in(typo.stderr)
    assert "(known queues: default, emails, payments)" in warning


# -- errors that name where the mistake is ------------------------------------------------------------


def test_a_bad_broker_url_in_the_config_file_names_file_section_and_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.conf", {"sqjobs": {"broker": "sqllite:///var/q.db"}})
    for command in (["queues"], ["enqueue", "anything"], ["worker", "--burst"]):
        done = sqjobs_command(command[0], "-c", str(config), *command[1:])
        assert (done.returncode, done.stdout) == (1, ""), done.stderr
        assert done.stderr == (f"Error: {config}: [sqjobs] broker = 'sqllite:///var/q.db': unknown scheme "
                               "'sqllite'; use sqlite:///PATH, sqs, memory:// or eager://\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.conf"]


def test_a_failed_import_option_names_the_option_the_module_and_why(tmp_path: Path) -> None:
    config = ticket_config(tmp_path)
    done = sqjobs_command("worker", "-c", str(config), "--import", "no_such_jobs_here", "--burst")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "Error: --import: cannot import 'no_such_jobs_here': No module named 'no_such_jobs_here'\n"
    (tmp_path / "raising_jobs.py").write_text("raise RuntimeError('no DATABASE_URL')\n")
    beater = subprocess.run([sys.executable, "-m", "sqjobs", "beater", "--once", "-i", "raising_jobs"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert beater.returncode == 1
    assert beater.stderr == (f"Error: --import: cannot import 'raising_jobs' ({tmp_path / 'raising_jobs.py'}, "
                             "line 1): RuntimeError: no DATABASE_URL (sqjobs -v shows the traceback)\n")
