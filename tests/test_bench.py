"""The peer benchmark harness runs: ``bench/peers.py --quick`` on the rows that need no extra package.

Only the table's shape and that its numbers are positive are checked, never
a speed: the machine is shared. Its job bodies count in the machine's Redis
(127.0.0.1:6379, database 9).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers.py"
#: Every case ``--quick`` runs, as the table names its lines.
CASES = ("cpu", "io", "async", "enqueue", "enqueue-bulk", "pickup", "eager", "sqs")
#: A result cell: a positive number first ("6,891 jobs/s", "p50 8.0 ms, ...", "29.5 us per delay").
NUMBER = re.compile(r"^(?:p50 )?([0-9][0-9,]*(?:\.[0-9]+)?) ")


def redis_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
        return True
    except OSError:
        return False


#: Marks the processes of this test run's harness (its children inherit it), not another run's.
RUN_MARK = f"SQJOBS_BENCH_TEST_RUN={os.getpid()}"


def run_peers(*options: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    name, value = RUN_MARK.split("=")
    return subprocess.run([sys.executable, str(PEERS), *options], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, name: value})


def marked(process: psutil.Process) -> bool:
    """True when ``process`` was started by this test run's harness (it carries RUN_MARK)."""
    name, value = RUN_MARK.split("=")
    try:
        return process.environ().get(name) == value
    except (psutil.Error, OSError):
        return False


def table_rows(output: str) -> list[list[str]]:
    """The table's lines, each split into its first three cells: system, case, result."""
    lines = output.splitlines()
    start = next(number for number, line in enumerate(lines) if line.startswith("system "))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip())[:3])
    return rows


@pytest.mark.skipif(not redis_answers(), reason="no Redis on 127.0.0.1:6379 (the job bodies count in it)")
def test_a_quick_run_prints_a_number_for_every_case_and_leaves_no_process() -> None:
    started = time.time()
    result = run_peers("--quick", "--only", "sqjobs,raw")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^machine: .+, \d+ cores", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^Python \d+\.\d+", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^libraries: sqjobs ", result.stdout, re.MULTILINE), result.stdout

    rows = table_rows(result.stdout)
    assert {system for system, _, _ in rows} == {"sqjobs", "raw"}, rows
    for system, case, cell in rows:
        # Each line is a measured number, or says why this sqjobs cannot run the case yet.
        assert NUMBER.match(cell) or re.match(r"^n/a \(.+\)$", cell), (system, case, cell)
    for case in CASES:
        numbers = [float(NUMBER.match(cell).group(1).replace(",", "")) for _, row_case, cell in rows
                   if row_case == case and NUMBER.match(cell)]
        assert numbers and all(number > 0 for number in numbers), (case, rows)
    assert "sqjobs' goals" in result.stdout

    leftovers = [process for process in psutil.process_iter(["cmdline", "create_time"])
                 if process.info["create_time"] >= started - 1 and marked(process)]
    assert leftovers == []


def test_an_unknown_system_or_case_is_a_one_line_usage_error() -> None:
    for options in (("--only", "sqjobs,nosuch"), ("--case", "nosuch")):
        result = run_peers(*options, timeout_s=60)
        assert result.returncode == 2
        assert "nosuch" in result.stderr.splitlines()[-1]
        assert "Traceback" not in result.stderr
