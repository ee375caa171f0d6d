"""The code stays as STYLE.md asks: ruff and mypy --strict clean (versions pinned in setup.cfg's test extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", "--no-cache", "sqjobs", "daemon", "tests", "bench", "examples", "contrib")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing_in_the_library_and_the_daemon() -> None:
    # --strict here as in pyproject.toml's [tool.mypy], which also names the untyped libraries whose calls are allowed
    result = run("mypy", "--no-incremental", "--strict", "sqjobs", "daemon")
    assert result.returncode == 0, result.stdout + result.stderr
