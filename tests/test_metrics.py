"""Prometheus metrics: recorded by real worker processes (in their job processes), added up in one scrape."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import sqjobs
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.web.metrics import recorded, scrape, sweep_dead
from tests import jobs_for_tests as jobs
from tests.support import DEADLINE_S, send, sqlite_config, start_worker, stop_process, wait_until, write_config


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    """The value of one sample, 0 when the scrape has none."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_two_worker_processes_add_up_in_one_scrape(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    config = sqlite_config(tmp_path)
    text = config.read_text() + f"\n[metrics]\ndir = {metrics_dir}\n"
    config.write_text(text)
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    log = tmp_path / "jobs.log"
    for n in range(6):  # slow enough that both workers (receiving one at a time) take some
        send(broker, jobs.slow_job, (str(log), f"ok{n}", 0.3))
    send(broker, jobs.flaky_one_retry, (str(log), "flaky", 1))  # fails once (retry), then succeeds
    send(broker, jobs.tracked_fails, ("doomed",))  # no retries: its only attempt fails
    broker.send("default", "this is not a job message")  # dead-lettered unrun
    sqjobs.configure(str(config))
    workers = [start_worker(config, ["default"], "--prefetch", "1") for _ in range(2)]
    try:
        def settled() -> dict | None:
            found = samples(scrape(sqjobs.current_app()))
            done = value(found, "sqjobs_jobs_total", job="slow", queue="default", outcome="success")
            if done == 6 and value(found, "sqjobs_jobs_total", job="flaky1", queue="default", outcome="success") \
                    and value(found, "sqjobs_queue_messages", queue="default", state="dead") == 2 \
                    and value(found, "sqjobs_jobs_total", job="", queue="", outcome="dead"):
                return found
            return None

        found = wait_until(settled, what="every outcome in one scrape")
        assert value(found, "sqjobs_jobs_total", job="flaky1", queue="default", outcome="retry") == 1
        assert value(found, "sqjobs_jobs_total", job="tracked_fails", queue="default", outcome="failure") == 1
        assert value(found, "sqjobs_jobs_total", job="tracked_fails", queue="default", outcome="dead") == 0
        assert value(found, "sqjobs_jobs_total", job="", queue="", outcome="dead") == 1
        assert value(found, "sqjobs_job_duration_seconds_count", job="slow", queue="default") == 6
        assert value(found, "sqjobs_queue_messages", queue="default", state="visible") == 0
        assert value(found, "sqjobs_workers", queues="default") == 2
        assert value(found, "sqjobs_jobs_in_progress", queue="default") == 0
        assert value(found, "sqjobs_broker_up") == 1
        # Both workers ran some: the counts come from the files of both job processes.
        pids = {name.rsplit("_", 1)[-1] for name in os.listdir(metrics_dir) if name.startswith("histogram_")}
        assert len(pids) >= 2, pids
    finally:
        for process in workers:
            stop_process(process)
    # The workers stopped: their live gauges are gone at the next scrape, the counters stay.
    found = samples(scrape(sqjobs.current_app()))
    assert value(found, "sqjobs_workers", queues="default") == 0
    assert value(found, "sqjobs_worker_stops_total", queues="default") == 2
    assert value(found, "sqjobs_jobs_total", job="slow", queue="default", outcome="success") == 6
    assert sweep_dead(str(metrics_dir)) == []


def test_a_worker_without_a_metrics_dir_records_nothing(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    send(broker, jobs.record_job, (str(tmp_path / "log"), "a"))
    process = subprocess.run([sys.executable, "-m", "sqjobs", "worker", "-c", str(config), "--burst"],
                             capture_output=True, timeout=DEADLINE_S, cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert not (tmp_path / "run" / "metrics").exists()
    assert not (tmp_path / "metrics").exists()


def test_sqjobs_metrics_serves_queue_depth_and_next_fire_times(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    write_config(tmp_path / "sqjobs.conf", {"sqjobs": {
        "broker": f"sqlite:///{tmp_path / 'queue.db'}", "database": f"sqlite:///{tmp_path / 'status.db'}",
        "jobs": "jobs_for_tests, periodic_jobs_for_tests", "path": str(Path(__file__).parent)}})
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    for n in range(3):
        send(broker, jobs.record_job, (str(tmp_path / "log"), f"t{n}"))
    server = subprocess.Popen([sys.executable, "-m", "sqjobs", "metrics", "-c", str(config), "--port", "0"],
                              stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        assert server.stderr is not None
        line = server.stderr.readline().decode()
        url = line.split(" on ", 1)[1].strip()
        with urllib.request.urlopen(url, timeout=DEADLINE_S) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            found = samples(response.read())
    finally:
        server.terminate()
        server.wait(DEADLINE_S)
    assert value(found, "sqjobs_queue_messages", queue="default", state="visible") == 3
    assert value(found, "sqjobs_queue_messages", queue="default", state="dead") == 0
    assert any(name == "sqjobs_schedule_next_fire_timestamp_seconds" for name, _ in found)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sqjobsd_runs_the_metrics_server_and_the_dashboard(tmp_path: Path) -> None:
    from tests.test_daemon import SLOW_S, Daemon

    daemon = Daemon(tmp_path)
    try:
        metrics_port, dashboard_port = _free_port(), _free_port()
        daemon.configure({"default": {"processes": 2}})
        daemon.config.write_text(daemon.config.read_text() + f"\n[metrics]\nport = {metrics_port}\n"
                                 f"\n[dashboard]\nport = {dashboard_port}\n")
        daemon.start()
        pids = daemon.wait_running(4, "2 workers, the metrics server and the dashboard")
        assert sorted(pids) == ["sqjobs-dashboard", "sqjobs-metrics", "worker-default-0", "worker-default-1"]
        daemon.record("default", [f"m{n}" for n in range(20)])

        def scraped(port: int) -> dict:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    found = samples(response.read())
            except OSError:
                return {}
            done = value(found, "sqjobs_jobs_total", job="record", queue="default", outcome="success")
            # Both workers count once they started consuming (under load, a while after supervisord's RUNNING).
            return found if done == 20 and value(found, "sqjobs_workers", queues="default") == 2 else {}

        found = wait_until(lambda: scraped(metrics_port), SLOW_S, what="20 successes and 2 workers at /metrics")
        assert value(found, "sqjobs_worker_starts_total", queues="default") == 2
        assert value(wait_until(lambda: scraped(dashboard_port), SLOW_S, what="the dashboard's /metrics"),
                     "sqjobs_queue_messages", queue="default", state="visible") == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/workers", timeout=5) as response:
            page = response.read().decode()
        assert "worker-default-0" in page and "running" in page
    finally:
        daemon.cleanup()


def test_sqjobsd_refuses_a_dashboard_open_to_all_without_a_password(tmp_path: Path) -> None:
    from tests.test_daemon import Daemon

    daemon = Daemon(tmp_path)
    try:
        daemon.configure({"default": {"processes": 1}})
        daemon.config.write_text(daemon.config.read_text() + "\n[dashboard]\nport = 8181\nhost = 0.0.0.0\n")
        result = daemon.run("start")
        assert result.returncode != 0
        assert "[dashboard] password is not set" in result.stderr, result.stderr
        daemon.assert_nothing_runs()
    finally:
        daemon.cleanup()


def _recorded_files(directory: Path) -> list[str]:
    """The files of recorded values in the metrics folder (the lock file left out; none before it exists)."""
    names = os.listdir(directory) if directory.is_dir() else []
    return sorted(name for name in names if name.endswith((".db", ".new")))


def test_fifty_worker_restarts_leave_a_bounded_folder_and_exact_totals(tmp_path: Path) -> None:
    """sqjobsd restarts workers with max_jobs = 1 fifty times, as a user's daemon does; /metrics is scraped
    all along: every scrape's totals only grow and never pass the jobs run, and the folder stays small."""
    from tests.test_daemon import SLOW_S, Daemon

    daemon = Daemon(tmp_path)
    jobs_count = 50
    try:
        port = _free_port()
        daemon.configure({"default": {"processes": 2, "max_jobs": 1, "prefetch": 1}})
        daemon.config.write_text(daemon.config.read_text() + f"\n[metrics]\nport = {port}\n")
        daemon.record("default", [f"r{n}" for n in range(jobs_count)])
        daemon.start()
        directory = Path(daemon.layout.run_dir) / "metrics"
        seen: list[float] = []
        most_files = 0

        def drained() -> dict:
            nonlocal most_files
            most_files = max(most_files, len(_recorded_files(directory)))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    found = samples(response.read())
            except OSError:
                return {}
            done = value(found, "sqjobs_jobs_total", job="record", queue="default", outcome="success")
            assert done <= jobs_count and (not seen or done >= seen[-1]), (seen[-5:], done)
            seen.append(done)
            return found if done == jobs_count and value(found, "sqjobs_workers", queues="default") == 2 else {}

        found = wait_until(drained, 5 * SLOW_S, interval_s=0.3, what=f"{jobs_count} jobs run by restarted workers")
        runners = {line.split()[1] for line in daemon.recorded()}
        assert len(daemon.recorded()) == jobs_count and len(runners) == jobs_count  # a worker a job
        assert value(found, "sqjobs_job_duration_seconds_count", job="record", queue="default") == jobs_count
        assert value(found, "sqjobs_worker_stops_total", queues="default") == jobs_count
        assert value(found, "sqjobs_worker_starts_total", queues="default") == jobs_count + 2
        # Left: the files of the 2 live workers and their job processes, and one merged file per kind.
        files = _recorded_files(directory)
        assert len(files) <= 12, files
        assert most_files <= 30, most_files
        assert {"counter_merged.db", "histogram_merged.db"} <= set(files)
    finally:
        daemon.cleanup()


RECORD_AND_EXIT = """import sys
from sqjobs.middleware.metrics import start_recording
recorder = start_recording(sys.argv[1])
recorder.jobs.labels("j", "q", "success").inc(int(sys.argv[2]))
recorder.duration.labels("j", "q").observe(0.2)
if sys.argv[3:] == ["kill"]:
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _record_in_a_process(directory: Path, successes: int, kill: bool = False) -> None:
    """Run a process that counts ``successes`` and one duration in ``directory``, then exits (or is killed -9)."""
    done = subprocess.run([sys.executable, "-c", RECORD_AND_EXIT, str(directory), str(successes),
                           *(["kill"] if kill else [])], timeout=DEADLINE_S)
    assert done.returncode == (-9 if kill else 0)


def _totals(directory: Path) -> tuple[float, float]:
    """sqjobs_jobs_total and the histogram's count, as a scrape of ``directory`` adds them up."""
    found = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
             for metric in recorded(str(directory)) for sample in metric.samples}
    return (value(found, "sqjobs_jobs_total", job="j", queue="q", outcome="success"),
            value(found, "sqjobs_job_duration_seconds_count", job="j", queue="q"))


def test_a_merge_killed_before_or_after_its_commit_is_finished_or_undone_without_a_double_count(
        tmp_path: Path) -> None:
    original = tmp_path / "original"
    for successes in (3, 4):  # two processes that recorded and are gone; the second merged the first's files
        _record_in_a_process(original, successes)
    dead_files = [name for name in _recorded_files(original) if "merged" not in name]
    assert len(dead_files) == 2 and len(_recorded_files(original)) == 4, _recorded_files(original)
    merged = tmp_path / "merged"
    shutil.copytree(original, merged)
    assert len(sweep_dead(str(merged))) == 1
    assert _recorded_files(merged) == ["counter_merged.db", "histogram_merged.db"]
    assert _totals(merged) == (7, 2)

    # Killed after writing the new merged files, before its commit: they are dropped, nothing counts twice.
    before_commit = tmp_path / "before-commit"
    shutil.copytree(original, before_commit)
    for name in ("counter_merged.db", "histogram_merged.db"):
        shutil.copy(merged / name, before_commit / (name + ".new"))
    assert _totals(before_commit) == (7, 2)
    assert _recorded_files(before_commit) == ["counter_merged.db", "histogram_merged.db"]

    # Killed after its commit (merge.pending written), before the renames and removals: they are carried out.
    after_commit = tmp_path / "after-commit"
    shutil.copytree(original, after_commit)
    shutil.copy(merged / "counter_merged.db", after_commit / "counter_merged.db.new")
    os.replace(merged / "histogram_merged.db", after_commit / "histogram_merged.db")  # this rename was done
    (after_commit / "merge.pending").write_text(json.dumps(
        {"merged": ["counter_merged.db", "histogram_merged.db"], "dead": dead_files}))
    assert _totals(after_commit) == (7, 2)
    assert _recorded_files(after_commit) == ["counter_merged.db", "histogram_merged.db"]
    assert not (after_commit / "merge.pending").exists()

    # A later process, killed -9, is added to the merged files as well.
    _record_in_a_process(after_commit, 5, kill=True)
    assert _totals(after_commit) == (12, 3)
    assert _recorded_files(after_commit) == ["counter_merged.db", "histogram_merged.db"]
