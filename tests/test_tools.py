"""A missing outside program skips its tests with the reason on a developer's machine, and fails them in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.tools import REQUIRE_TOOLS_ENV

ROOT = Path(__file__).resolve().parent.parent
PHP_TEST = "tests/test_worker_processes.py::test_the_seed_talks_php_producer_with_empty_kwargs_runs"


def run_without_php(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run one test that needs php with a PATH that has python and nothing else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    environment = {k: v for k, v in os.environ.items() if k != REQUIRE_TOOLS_ENV}
    environment.update(PATH=str(bin_dir), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-rs", PHP_TEST],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


def test_without_php_the_readme_command_skips_its_tests_and_names_it_at_the_end(tmp_path: Path) -> None:
    done = run_without_php(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "SKIPPED" in done.stdout and "php is not installed (apt-get install -y php-cli)" in done.stdout
    assert "outside programs missing, their tests skipped: php is not installed" in done.stdout


def test_in_ci_a_missing_program_fails_its_test(tmp_path: Path) -> None:
    done = run_without_php(tmp_path, **{REQUIRE_TOOLS_ENV: "1"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout and "1 skipped" not in done.stdout
    assert f"php is not installed (apt-get install -y php-cli); {REQUIRE_TOOLS_ENV} is set" in done.stdout
    assert "outside programs missing, their tests failed: php is not installed" in done.stdout
