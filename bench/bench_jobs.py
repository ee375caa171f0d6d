"""Jobs the benchmarks run (imported by benchmark worker processes)."""

from sqjobs import job


@job(queue="bench", name="bench.noop")
def noop(index: int) -> None:
    """Do nothing: the benchmark measures the machinery, not the job."""
