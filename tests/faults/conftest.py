"""Fixtures of the fault suite: worker processes killed at the end, a daemon always cleaned up."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.faults.drain import kill_9_tree
from tests.test_daemon import Daemon


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Worker processes a test started; any still alive at the end are killed with their job processes."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            kill_9_tree(process)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """An ``sqjobsd`` under test (see tests/test_daemon.py), always stopped and cleaned up."""
    under_test = Daemon(tmp_path)
    try:
        yield under_test
    finally:
        under_test.cleanup()
