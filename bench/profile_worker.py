"""Where one sqjobs worker's time goes: cProfile of ``sqjobs worker --burst`` draining no-op jobs.

Fills a fresh embedded broker with N no-op jobs, then runs one worker
process under cProfile until the queue is empty, and prints the wall time
per job and the functions that cost the most (own time, and time with what
they call). With ``--isolation process`` (the default, as deployed) the
profile covers the worker process only: the job process it forks runs the
jobs, and its share shows up as the time the worker waits on the pipe. With
``--isolation none`` everything runs in the one profiled process.

    python bench/profile_worker.py [--jobs 20000] [--isolation process|none] [--top 25]
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import sqjobs  # noqa: E402


def fill(folder: Path, jobs: int) -> Path:
    """Write a config for ``folder`` and enqueue ``jobs`` no-op jobs; return the config's path."""
    import bench_jobs

    config = folder / "profile.conf"
    config.write_text(f"[sqjobs]\nbroker = sqlite:///{folder / 'queue.db'}\n"
                      f"database = sqlite:///{folder / 'status.db'}\njobs = bench_jobs\npath = {HERE}\n")
    sqjobs.configure(str(config))
    for start in range(0, jobs, 5000):
        bench_jobs.noop.delay_many(((i,), {}) for i in range(start, min(start + 5000, jobs)))
    return config


def profile(config: Path, isolation: str, output: Path) -> float:
    """Run one ``sqjobs worker --burst`` under cProfile; return its wall time in seconds."""
    command = [sys.executable, "-m", "cProfile", "-o", str(output), "-m", "sqjobs", "worker", "-c", str(config),
               "bench", "--burst", "--isolation", isolation]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=config.parent)
    return time.perf_counter() - started


def main() -> None:
    """Fill, profile, print."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--isolation", choices=("process", "none"), default="process")
    parser.add_argument("--top", type=int, default=25)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        config = fill(folder, options.jobs)
        wall_s = profile(config, options.isolation, folder / "worker.prof")
        print(f"one worker (--isolation {options.isolation}), {options.jobs} no-op jobs under cProfile: "
              f"{wall_s:.1f} s, {wall_s / options.jobs * 1e6:.0f} us per job (profiling slows it down)")
        stats = pstats.Stats(str(folder / "worker.prof"))
        stats.sort_stats("tottime").print_stats(options.top)
        stats.sort_stats("cumulative").print_stats(options.top)


if __name__ == "__main__":
    main()
