"""sqjobs beside Huey, Dramatiq, Celery, RQ and the raw SQLite limit, on the same jobs, in one run.

    pip install -e '.[bench]'
    python bench/peers.py                      # every case, every system, 3 rounds (about 20 minutes)
    python bench/peers.py --case cpu --only sqjobs,raw,dramatiq-p64
    python bench/peers.py --quick              # every case with small counts, 1 round

Each system runs as real worker processes started with its own command
line, 2 of them, in a fresh temporary folder, on the machine's Redis
(127.0.0.1:6379, database 9, emptied before every run). Runs are
interleaved: each round runs every system once on a case before the next
round starts, and the table shows the median of the rounds. What each case
measures and how: docs/benchmarks.rst.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peerbench import machine, report  # noqa: E402
from peerbench.counter import Redis, RedisError  # noqa: E402
from peerbench.measure import Outcome, Run, guarded  # noqa: E402
from peerbench.settings import (  # noqa: E402
    CASES,
    DRAIN_CASES,
    ENV_REDIS,
    QUICK_RUN_DEADLINE_S,
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    RUN_DEADLINE_S,
)
from peerbench.systems import selected  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--case", default=",".join(CASES),
                        help=f"case(s) to run, comma-separated: {', '.join(CASES)} (default: all)")
    parser.add_argument("--only", default="", help="systems to run, comma-separated: names or families "
                        "(sqjobs, raw, huey, huey-sqlite, huey-redis, dramatiq, dramatiq-p64, celery, rq)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="jobs (pickup: samples; eager: calls) per run, instead of each case's default")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small counts and one round (under a minute "
                        "for sqjobs and raw): checks that everything runs, measures little")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB,
                        help=f"Redis database the jobs count in; it is emptied before every run (default {REDIS_DB})")
    options = parser.parse_args(argv)
    options.cases = [case.strip() for case in options.case.split(",") if case.strip()]
    unknown = [case for case in options.cases if case not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    try:
        options.systems = selected([name.strip() for name in options.only.split(",") if name.strip()])
    except ValueError as exc:
        parser.error(str(exc))
    if options.rounds is None:
        options.rounds = 1 if options.quick else 3
    return options


def count_of(case: str, options: argparse.Namespace) -> int:
    """How many jobs (samples, calls) a run of ``case`` uses."""
    if options.jobs:
        return options.jobs
    return CASES[case].quick_count if options.quick else CASES[case].count


def run_case(run: Run, case: str, count: int) -> dict[str, Outcome]:
    """One run of one system on one case: the row case(s) it fills and their outcomes."""
    if case in DRAIN_CASES:
        return {case: guarded(run.drain, case, count)}
    if case == "enqueue":
        return {"enqueue": guarded(run.enqueue, "enqueue", count),
                "enqueue-bulk": guarded(run.enqueue, "bulk", count)}
    if case == "pickup":
        return {"pickup": guarded(run.pickup, count)}
    if case == "sqs":
        return {"sqs": guarded(run.sqs, count)}
    return {"eager": guarded(run.eager, count)}


def progress(text: str) -> None:
    """A line on stderr while the run goes on."""
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases and systems; print the machine, the table and sqjobs' goals."""
    options = parse(argv)
    address = f"{REDIS_HOST}:{REDIS_PORT}/{options.redis_db}"
    os.environ[ENV_REDIS] = address
    redis = Redis(address)
    try:
        redis.command("PING")
    except RedisError as exc:
        print(f"Error: {exc} (every job body counts in Redis)", file=sys.stderr)
        return 2
    deadline_s = QUICK_RUN_DEADLINE_S if options.quick else RUN_DEADLINE_S
    rows: dict[tuple[str, str], report.Row] = {}
    for case in options.cases:
        count = count_of(case, options)
        systems = [system for system in options.systems if case in system.cases]
        for system in systems:
            for row_case in _row_cases(case):
                how = system.how(case) if case in DRAIN_CASES + ("pickup",) else ""
                rows[(system.name, row_case)] = report.Row(system.name, row_case, how)
                if system.missing():
                    rows[(system.name, row_case)].outcomes.append(Outcome(na=system.missing()))
        for number in range(1, options.rounds + 1):
            for system in systems:
                if system.missing():
                    continue
                jobs = count
                if case in DRAIN_CASES and not options.jobs:
                    jobs = max(1, round(count * system.drain_share))
                for row_case, outcome in run_case(Run(system, redis, address, deadline_s), case, jobs).items():
                    if jobs != count:
                        outcome.note = "; ".join(filter(None, [f"{jobs:,} jobs", outcome.note]))
                    rows[(system.name, row_case)].outcomes.append(outcome)
                    shown = report.Row(system.name, row_case, "", [outcome]).result()
                    progress(f"{row_case} round {number}/{options.rounds} {system.name}: {shown}")
    redis.flushdb()
    print("\n".join(machine.describe(options.systems, redis)))
    print(f"{options.rounds} round(s), interleaved; counts: "
          + ", ".join(f"{case} {count_of(case, options):,} {CASES[case].unit}" for case in options.cases))
    print()
    print("\n".join(report.table(list(rows.values()))))
    print()
    print("\n".join(report.legend()))
    print()
    print("sqjobs' goals (issue 'Throughput and concurrency'):")
    print("\n".join("  " + line for line in report.goals(list(rows.values()))))
    return 0


def _row_cases(case: str) -> tuple[str, ...]:
    return ("enqueue", "enqueue-bulk") if case == "enqueue" else (case,)


if __name__ == "__main__":
    sys.exit(main())
