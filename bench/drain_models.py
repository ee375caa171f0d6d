"""What each execution model costs: one worker draining no-op jobs, as deployed and without its job process.

Fills a fresh embedded broker with N no-op jobs and runs ``sqjobs worker
--burst`` once per model, printing jobs/s and the CPU per job of the worker
and its job process together (``getrusage`` of the finished children):

- the default: a job process, one thread;
- ``--isolation none``: the jobs run in the worker itself;
- ``--threads 8``: a job process with 8 threads.

    python bench/drain_models.py [--jobs 20000] [--workers 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import sqjobs  # noqa: E402

#: The models measured: a name and the worker options that select it.
MODELS = (("job process, 1 thread (default)", ()), ("in the worker (--isolation none)", ("--isolation", "none")),
          ("job process, 8 threads", ("--threads", "8")))


def children_cpu_s() -> float:
    """User and system CPU seconds of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain(jobs: int, workers: int, options: tuple[str, ...]) -> tuple[float, float]:
    """Fill a fresh queue with ``jobs`` no-op jobs, drain it; return (jobs/s, CPU us per job)."""
    import bench_jobs

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        config = folder / "models.conf"
        config.write_text(f"[sqjobs]\nbroker = sqlite:///{folder / 'queue.db'}\n"
                          f"database = sqlite:///{folder / 'status.db'}\njobs = bench_jobs\npath = {HERE}\n")
        sqjobs.configure(str(config))
        for start in range(0, jobs, 5000):
            bench_jobs.noop.delay_many((index,) for index in range(start, min(start + 5000, jobs)))
        cpu_before = children_cpu_s()
        started = time.perf_counter()
        processes = [subprocess.Popen([sys.executable, "-m", "sqjobs", "worker", "-c", str(config), "bench",
                                       "--burst", *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      cwd=folder) for _ in range(workers)]
        for process in processes:
            process.wait()
        wall_s = time.perf_counter() - started
        return jobs / wall_s, (children_cpu_s() - cpu_before) / jobs * 1e6


def main() -> None:
    """Measure each model ``--rounds`` times, interleaved; print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in MODELS}
    for _ in range(options.rounds):
        for name, worker_options in MODELS:
            results[name].append(drain(options.jobs, options.workers, worker_options))
    print(f"{options.workers} worker(s), {options.jobs:,} no-op jobs, {options.rounds} round(s), interleaved")
    print(f"{'model':<36} {'jobs/s':>16} {'CPU per job':>18}")
    for name, runs in results.items():
        rates = [rate for rate, _ in runs]
        cpus = [cpu for _, cpu in runs]
        print(f"{name:<36} {min(rates):>7,.0f}-{max(rates):<8,.0f} {min(cpus):>7.0f}-{max(cpus):.0f} us")


if __name__ == "__main__":
    main()
