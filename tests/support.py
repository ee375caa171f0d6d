"""Helpers shared by the tests: deadlines instead of sleeps, config files, worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

T = TypeVar("T")

#: Folder holding the job modules that test worker processes import.
TESTS_DIR = Path(__file__).resolve().parent
#: Generous default deadline for things that normally take well under a second.
DEADLINE_S = 30.0


class Clock:
    """A clock tests move by hand (``clock.now += 5``), for brokers and workers that take one."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def wait_until(predicate: Callable[[], T], timeout_s: float = DEADLINE_S, interval_s: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; return it. Fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def receive_all(broker: Any, queue: str, expected: int, visibility_timeout_s: float = 30,
                wait_s: float = 0.5) -> list:
    """Receive from ``queue`` until ``expected`` messages came (brokers may return fewer per call).

    Fails the test at the deadline.
    """
    got: list = []

    def more() -> bool:
        got.extend(broker.receive(queue, 10, wait_s, visibility_timeout_s))
        return len(got) >= expected

    wait_until(more, what=f"{expected} messages on {queue}")
    return got


def write_config(path: Path, sections: Mapping[str, Mapping[str, object]]) -> Path:
    """Write an INI file with ``sections`` ({section: {key: value}}) and return its path."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def sqlite_config(tmp_path: Path, **sqjobs: object) -> Path:
    """A config on the embedded broker in ``tmp_path`` that imports the test jobs."""
    values: dict[str, object] = {
        "broker": f"sqlite:///{tmp_path / 'queue.db'}",
        "database": f"sqlite:///{tmp_path / 'status.db'}",
        "jobs": "jobs_for_tests",
        "path": str(TESTS_DIR),
    }
    values.update(sqjobs)
    return write_config(tmp_path / "sqjobs.conf", {"sqjobs": values})


def start_worker(config: Path, queues: Iterable[str], *options: str, log_path: Path | None = None,
                 env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``sqjobs worker`` as a real process; its output goes to ``log_path`` (or the config's folder)."""
    queues = list(queues)
    log_path = log_path or config.parent / f"worker-{time.monotonic_ns()}.log"
    handle = open(log_path, "wb")
    full_env = dict(os.environ)
    full_env.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "sqjobs", "worker", "-c", str(config), *queues, *options],
        stdout=handle, stderr=subprocess.STDOUT, env=full_env, cwd=str(config.parent),
    )
    process.log_path = log_path  # type: ignore[attr-defined]
    handle.close()
    return process


def worker_log(process: subprocess.Popen) -> str:
    """Return what a worker started by :func:`start_worker` has logged so far."""
    return Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def stop_process(process: subprocess.Popen, timeout_s: float = DEADLINE_S) -> int:
    """SIGTERM ``process`` (if alive), wait for it, and return its exit code; SIGKILL at the deadline."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"process {process.pid} ignored SIGTERM for {timeout_s:g} s") from None
    return process.returncode


def read_lines(path: Path) -> list[str]:
    """Return the lines of ``path`` (empty if it does not exist yet)."""
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def send(broker: Any, job: Any, args: Any = (), kwargs: Any = None, **options: Any) -> Any:
    """Send ``job`` (a Job class or an @job function) through the producer of the app whose broker is ``broker``."""
    import sqjobs

    job_class = getattr(job, "job_class", job)
    if "delay_s" not in options and "delay" in options:
        options["delay_s"] = options.pop("delay")
    if "group_id" in options:
        options["group"] = options.pop("group_id")
    return sqjobs.current_app().with_broker(broker).producer.send(job_class, args, kwargs, **options)


def send_many(broker: Any, job: Any, calls: Any, queue: str | None = None) -> list:
    """Send one ``job`` per call (``(args, kwargs)`` pairs or argument lists) through ``broker``'s app producer."""
    import sqjobs

    job_class = getattr(job, "job_class", job)
    return sqjobs.current_app().with_broker(broker).producer.send_many(job_class, calls, queue=queue)
