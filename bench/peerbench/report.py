"""The table: one line per system and case, medians of the rounds, ratios to the limit and to Dramatiq.

Values per case (the "result" column):

- cpu, io, async, enqueue, enqueue-bulk: jobs/s, the median of the rounds;
- pickup: p50 and p99 of the send-to-start latency, all rounds' samples together;
- eager: microseconds a ``.delay()`` costs beyond a plain call of the same
  function, the median of the rounds (the raw row: the plain call itself);
- sqs: SQS requests per job (``bench/bench_sqs.py`` on moto), the median of the rounds.

"vs limit" divides the median by the case's limit (see :data:`LIMITS`);
"vs Dramatiq" by Dramatiq's median on the same case (prefetch 64 for cpu).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .measure import Outcome, percentile
from .settings import ASYNC_SLEEP_S, IO_SLEEP_S, PROCESSES, THREADS

#: The order of the table's cases (enqueue gives two lines: one call per job, one bulk call).
ROW_CASES = ("cpu", "io", "async", "enqueue", "enqueue-bulk", "pickup", "eager", "sqs")
#: What each case's ratio is taken to: a row of the table, or a number.
LIMITS: dict[str, str | float] = {
    "cpu": "raw",
    "io": PROCESSES * THREADS / IO_SLEEP_S,
    "async": 1 / ASYNC_SLEEP_S,
    "enqueue": "raw",
    "enqueue-bulk": "raw",
}
#: The Dramatiq row each case is compared with.
DRAMATIQ_REFERENCE = {"cpu": "dramatiq-p64"}


@dataclass
class Row:
    """One line of the table: a system on a case, with the outcome of each round."""

    system: str
    case: str
    how: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def good(self) -> list[Outcome]:
        """The rounds that gave a value."""
        return [outcome for outcome in self.outcomes if outcome.value is not None]

    def value(self) -> float | None:
        """The row's summary value (median, or pooled p50 for pickup); None without one."""
        good = self.good
        if not good:
            return None
        if self.case == "pickup":
            return percentile([s for outcome in good for s in outcome.samples], 0.5)
        return statistics.median(outcome.value for outcome in good if outcome.value is not None)

    def result(self) -> str:
        """The "result" column."""
        value = self.value()
        if value is None:
            failed = next((o.error for o in self.outcomes if o.error), None)
            if failed:
                return f"error: {failed}"
            return f"n/a ({next((o.na for o in self.outcomes if o.na), 'not run')})"
        if self.case == "pickup":
            samples = [s for outcome in self.good for s in outcome.samples]
            return f"p50 {value * 1000:.1f} ms, p99 {percentile(samples, 0.99) * 1000:.1f} ms"
        if self.case == "sqs":
            return f"{value:.3f} requests per job"
        if self.case == "eager":
            return f"{value:.2f} us per call" if "plain call" in self.notes() else f"{value:.1f} us per delay"
        return f"{value:,.0f} jobs/s"

    def startup(self) -> str:
        """Median seconds from starting the workers to the first job done ("" when not measured)."""
        startups = [o.startup_s for o in self.good if o.startup_s is not None]
        return f"{statistics.median(startups):.2f} s" if startups else ""

    def notes(self) -> str:
        """What was used, and how many rounds failed (with the first failure)."""
        notes = list(dict.fromkeys(o.note for o in self.good if o.note))
        for unit in dict.fromkeys(unit for o in self.good for unit in o.extras):
            notes.append(f"{statistics.median(o.extras[unit] for o in self.good if unit in o.extras):,.0f} {unit}")
        failed = [o.error for o in self.outcomes if o.error]
        if failed and self.good:
            notes.append(f"{len(failed)} of {len(self.outcomes)} rounds failed: {failed[0]}")
        return "; ".join(notes)


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return ""
    return f"{value / reference:.2f}"


def limit_of(case: str, rows: dict[tuple[str, str], Row]) -> float | None:
    """The number a case's "vs limit" divides by (None when there is none, or it was not run)."""
    limit = LIMITS.get(case)
    if isinstance(limit, str):
        row = rows.get((limit, case))
        return row.value() if row else None
    return limit


def dramatiq_of(case: str, rows: dict[tuple[str, str], Row]) -> float | None:
    """Dramatiq's value on ``case`` (the reference row), for the drain and enqueue cases."""
    if case not in LIMITS:
        return None
    row = rows.get((DRAMATIQ_REFERENCE.get(case, "dramatiq"), case))
    return row.value() if row else None


def table(rows: list[Row]) -> list[str]:
    """The table's lines, columns padded to their widest cell."""
    by_key = {(row.system, row.case): row for row in rows}
    header = ["system", "case", "result (median)", "vs limit", "vs Dramatiq", "start-up", "how; notes"]
    cells = [header]
    for row in sorted(rows, key=lambda r: ROW_CASES.index(r.case)):
        value = row.value()
        notes = "; ".join(filter(None, [row.how, row.notes()]))
        cells.append([row.system, row.case, row.result(), _ratio(value, limit_of(row.case, by_key)),
                      _ratio(value, dramatiq_of(row.case, by_key)), row.startup(), notes])
    widths = [max(len(line[column]) for line in cells) for column in range(len(header) - 1)]
    lines = []
    for number, line in enumerate(cells):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])
        if number == 0:
            lines.append("-" * min(160, sum(widths) + 2 * len(widths) + 10))
    return [line.rstrip() for line in lines]


def legend() -> list[str]:
    """What the ratio columns divide by."""
    ideal = PROCESSES * THREADS / IO_SLEEP_S
    return [
        "vs limit: cpu / the raw SQLite loop (same body, 2 processes);",
        f"  io / the ideal {PROCESSES} x {THREADS} / {IO_SLEEP_S:g} s = {ideal:,.0f} jobs/s;",
        f"  async / the serial rate 1 / {ASYNC_SLEEP_S:g} s = {1 / ASYNC_SLEEP_S:,.0f} jobs/s "
        "(how many times faster than one job after another);",
        "  enqueue / raw INSERTs (one commit each; bulk: one transaction for all).",
        "vs Dramatiq: / dramatiq-p64 for cpu, / dramatiq (8 threads a process) otherwise.",
        "start-up: from starting the workers to the first job seen done; not in the jobs/s, which count",
        "  from that first job to the last.",
    ]


def goals(rows: list[Row]) -> list[str]:
    """sqjobs' goals from the issue, each with what this run measured and whether it is met."""
    by_key = {(row.system, row.case): row for row in rows}

    def value(system: str, case: str) -> float | None:
        row = by_key.get((system, case))
        return row.value() if row else None

    def verdict(*checks: tuple[float | None, float | None]) -> str:
        if any(measured is None or wanted is None for measured, wanted in checks):
            return "not measured"
        return "met" if all(m >= w for m, w in checks) else "NOT met"  # type: ignore[operator]

    def times(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a * b

    cpu, io, aio = value("sqjobs", "cpu"), value("sqjobs", "io"), value("sqjobs", "async")
    single, bulk = value("sqjobs", "enqueue"), value("sqjobs", "enqueue-bulk")
    pickup, eager, sqs = value("sqjobs", "pickup"), value("sqjobs", "eager"), value("sqjobs", "sqs")
    sqs_row = by_key.get(("sqjobs", "sqs"))
    sqs_threads = " (without threads: the worker has none yet)" if sqs_row and "n/a" in sqs_row.notes() else ""
    raw_cpu, d64, d_io = value("raw", "cpu"), value("dramatiq-p64", "cpu"), value("dramatiq", "io")
    ideal = PROCESSES * THREADS / IO_SLEEP_S
    bulk_row = by_key.get(("sqjobs", "enqueue-bulk"))
    bulk_api = (f" (bulk measured with {bulk_row.notes()})"
                if bulk_row and bulk_row.good and "fn.delay_many()" not in bulk_row.notes() else "")
    return [
        "1. cpu >= 2 x dramatiq-p64 and >= 0.65 x raw: "
        + verdict((cpu, times(d64, 2.0)), (cpu, times(raw_cpu, 0.65))),
        f"2. io >= 0.8 x {ideal:,.0f} jobs/s and >= dramatiq (8 threads): "
        + verdict((io, 0.8 * ideal), (io, d_io)),
        f"3. async drains in well under 1/8 of the serial time (>= 8 x {1 / ASYNC_SLEEP_S:g} jobs/s): "
        + verdict((aio, 8 / ASYNC_SLEEP_S)),
        f"4. enqueue >= 8,000 jobs/s one at a time, >= 50,000 in bulk{bulk_api}: "
        + verdict((single, 8000.0), (bulk, 50000.0)),
        "5. pickup p50 <= 10 ms: "
        + ("not measured" if pickup is None else "met" if pickup <= 0.010 else "NOT met"),
        "6. eager overhead <= 30 us per delay: "
        + ("not measured" if eager is None else "met" if eager <= 30 else "NOT met"),
        f"7. SQS <= 0.35 requests per job{sqs_threads}: "
        + ("not measured" if sqs is None else "met" if sqs <= 0.35 else "NOT met"),
    ]
