"""What README.rst promises: its set-up commands work as written, and so does the tour it points to."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import wait_until

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.rst").read_text()
#: The five-minute tour, the first page of the documentation's tutorial.
TOUR = ROOT / "docs" / "tutorial" / "tour.rst"


def run_tour_samples(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the tour's ``>>>`` samples as a doctest, in ``folder`` with ``env``, as one Python session."""
    samples = folder / "tour.txt"
    samples.write_text(TOUR.read_text())
    code = ("import doctest, sys; failed, tried = doctest.testfile(sys.argv[1], module_relative=False, "
            "optionflags=doctest.ELLIPSIS); print(f'{tried} samples tried'); sys.exit(1 if failed else 0)")
    return subprocess.run([sys.executable, "-c", code, str(samples)], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120)


def readme_commands() -> list[str]:
    """The two one-line set-up commands (indented literal lines starting with python3 -m venv)."""
    return [line.strip() for line in README.splitlines() if line.strip().startswith("python3 -m venv")]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    run_command, test_command = readme_commands()
    assert "sqjobsd start -c examples/sqjobs.conf" in run_command
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_demo_configuration_runs_the_tour_jobs_under_the_daemon() -> None:
    folder = Path(tempfile.mkdtemp(prefix="sqx-", dir="/tmp"))  # short: the socket path has a limit
    try:
        shutil.copytree(ROOT / "examples", folder / "examples", ignore=shutil.ignore_patterns("var", "__pycache__"))
        config = str(folder / "examples" / "sqjobs.conf")

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", *args, "-c", config], capture_output=True, text=True,
                                  timeout=120, cwd=folder)

        started = run("sqjobsd", "start")
        assert started.returncode == 0, started.stderr
        try:
            wait_until(lambda: run("sqjobsd", "status").returncode == 0, 60, what="every demo process to run")
            logs = folder / "examples" / "var" / "log"

            def ran(times: int) -> bool:
                text = "".join(log.read_text() for log in logs.glob("worker-default-*.log"))
                return text.count("2 + 3 = 5") >= times

            # The tour's Python session, from the repository's folder with the demo's config named.
            env = dict(os.environ, SQJOBS_CONFIG="examples/sqjobs.conf")
            tour = run_tour_samples(folder, env)
            assert tour.returncode == 0, tour.stdout + tour.stderr
            assert "10 samples tried" in tour.stdout  # the tour's and eager mode's
            wait_until(lambda: ran(1), 60, what="a demo worker to run the job sent with .delay()")
            assert not (folder / "sqjobs-queue.db").exists(), "the tour's job went to the embedded default"
            # The tour's `sqjobs enqueue` line.
            sent = subprocess.run([sys.executable, "-m", "sqjobs", "enqueue", "examples.tasks.add", "--args", "[2, 3]"],
                                  capture_output=True, text=True, timeout=60, cwd=folder, env=env)
            assert sent.returncode == 0, sent.stderr
            wait_until(lambda: ran(2), 60, what="a demo worker to run the job sent with sqjobs enqueue")
        finally:
            assert run("sqjobsd", "stop").returncode == 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_tour_worker_imports_jobs_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(
        "from sqjobs import job\n\n@job(queue='default')\ndef add(a, b):\n"
        "    open('sum.txt', 'w').write(str(a + b))\n    return a + b\n")
    env = {key: value for key, value in os.environ.items() if key != "SQJOBS_CONFIG"}  # no config at all
    subprocess.run([sys.executable, "-c", "import tasks; tasks.add.delay(1, 2)"], cwd=tmp_path, check=True,
                   timeout=60, env=env)
    worker = subprocess.run([sys.executable, "-m", "sqjobs", "worker", "--import", "tasks", "default", "--burst"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert worker.returncode == 0, worker.stderr
    assert (tmp_path / "sum.txt").read_text() == "3"
    assert (tmp_path / "sqjobs-queue.db").exists()


