"""sqjobsd with real supervisord processes on the embedded SQLite broker.

Every test gets its own config in tmp_path and its own short run_dir under
/tmp (a unix socket path must stay under 108 bytes); a finalizer stops the
daemon and kills whatever it started, even when the test fails.
"""

from __future__ import annotations

import configparser
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import xmlrpc.client
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
from sqjobsd.health import assess, describe, read_worker_status
from sqjobsd.layout import Layout, layout_for, options_for
from sqjobsd.procs import cmdline, is_supervisord_of, marked_processes, pid_alive
from sqjobsd.rpc import SupervisorClient
from sqjobsd.supervisor_conf import Credentials, config_digest, program_names, render

from sqjobs.brokers.base import OutgoingMessage
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.config import load
from sqjobs.message import JobMessage, encode

from .support import read_lines, sqlite_config, wait_until

#: Deadline for anything that involves starting Python processes under supervisord.
SLOW_S = 60.0


def _sections_text(sections: Mapping[str, Mapping[str, object]]) -> str:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


class Daemon:
    """One sqjobsd under test: its config file, run/log dirs, and helpers to drive it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.run_dir = Path(tempfile.mkdtemp(prefix="sqd-", dir="/tmp"))
        self.log_dir = tmp_path / "log"
        self.records = tmp_path / "records.txt"
        self.config = sqlite_config(tmp_path)
        self._base = self.config.read_text()
        self.broker: SQLiteBroker | None = None

    def configure(self, workers: Mapping[str, Mapping[str, object]], beaters: int = 0, **daemon: object) -> Path:
        """(Re)write the config: ``[worker:NAME]`` sections, ``[beater] processes`` and ``[daemon]`` keys."""
        values: dict[str, object] = {"run_dir": self.run_dir, "log_dir": self.log_dir, "stop_timeout_s": 10,
                                     "stall_timeout_s": 0}
        values.update(daemon)
        sections: dict[str, Mapping[str, object]] = {f"worker:{name}": options for name, options in workers.items()}
        sections["beater"] = {"processes": beaters}
        sections["daemon"] = values
        self.config.write_text(self._base + "\n" + _sections_text(sections))
        return self.config

    @property
    def layout(self) -> Layout:
        """The daemon's files."""
        return layout_for(load(str(self.config)))

    def run(self, *args: str, timeout_s: float = 120, cwd: str | None = None) -> subprocess.CompletedProcess:
        """Run ``sqjobsd ARGS -c CONFIG`` (in ``cwd``, default tmp_path) and return the finished process."""
        return subprocess.run([sys.executable, "-m", "sqjobsd", *args, "-c", str(self.config)],
                              capture_output=True, text=True, timeout=timeout_s, cwd=cwd or str(self.tmp_path))

    def add_job_module(self, name: str, source: str) -> None:
        """Write module ``name`` next to the config file and add it to ``[sqjobs] jobs``."""
        (self.tmp_path / f"{name}.py").write_text(source)
        self._base = self._base.replace("jobs = jobs_for_tests", f"jobs = jobs_for_tests, {name}")

    def assert_nothing_runs(self) -> None:
        """No supervisord answers or is named by the pidfile, and no process carries the daemon's marker."""
        assert not self.client().answers()
        assert self.supervisord_pid() is None
        assert marked_processes(str(self.run_dir)) == []

    def start(self) -> subprocess.CompletedProcess:
        """``sqjobsd start``; fail the test unless it exits 0."""
        result = self.run("start")
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def client(self) -> SupervisorClient:
        """An XML-RPC client of the daemon's supervisord."""
        return SupervisorClient(self.layout)

    def processes(self) -> dict[str, dict[str, Any]]:
        """supervisord's process info by process name."""
        return {info["name"]: info for info in self.client().processes()}

    def running_pids(self) -> dict[str, int]:
        """Process name -> pid of every process supervisord reports RUNNING."""
        return {name: info["pid"] for name, info in self.processes().items() if info["statename"] == "RUNNING"}

    def wait_running(self, count: int, what: str = "the processes") -> dict[str, int]:
        """Wait until exactly ``count`` processes are RUNNING; return name -> pid."""
        def check() -> dict[str, int]:
            pids = self.running_pids() if os.path.exists(self.layout.socket) else {}
            return pids if len(pids) == count else {}
        return wait_until(check, SLOW_S, what=what)

    def wait_new_pid(self, name: str, old_pid: int, what: str) -> int:
        """Wait until process ``name`` runs with a pid other than ``old_pid``; return it."""
        def check() -> int:
            pid = self.running_pids().get(name, old_pid)
            return pid if pid != old_pid else 0
        return wait_until(check, SLOW_S, what=what)

    def supervisord_pid(self) -> int | None:
        """The pid in supervisord's pidfile, if any."""
        try:
            return int(Path(self.layout.pidfile).read_text().strip())
        except (OSError, ValueError):
            return None

    def enqueue(self, queue: str, messages: list[JobMessage]) -> None:
        """Send ``messages`` to ``queue`` the way any producer would."""
        if self.broker is None:
            self.broker = SQLiteBroker(str(self.tmp_path / "queue.db"))
        self.broker.ensure_queue(queue)
        for start in range(0, len(messages), 10):
            self.broker.send_batch(queue, [OutgoingMessage(encode(m)) for m in messages[start:start + 10]])

    def record(self, queue: str, tokens: list[str]) -> None:
        """Enqueue one ``record`` job per token on ``queue``."""
        self.enqueue(queue, [JobMessage("record", [str(self.records), token]) for token in tokens])

    def recorded(self) -> list[str]:
        """The lines the test jobs have recorded."""
        return read_lines(self.records)

    def cleanup(self) -> None:
        """Stop the daemon; kill what is left of the processes it started; remove run_dir."""
        if self.broker is not None:
            self.broker.close()
        try:
            self.run("stop", timeout_s=60)
        except subprocess.TimeoutExpired:
            pass
        pid = self.supervisord_pid()
        if pid is not None and is_supervisord_of(pid, self.layout.supervisord_conf):
            os.kill(pid, signal.SIGKILL)
        for child in marked_processes(str(self.run_dir)):  # only this test's daemon has this run_dir
            os.kill(child, signal.SIGKILL)
        shutil.rmtree(self.run_dir, ignore_errors=True)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon under test, always cleaned up."""
    under_test = Daemon(tmp_path)
    try:
        yield under_test
    finally:
        under_test.cleanup()


def _all_gone(pids: list[int]) -> bool:
    return not any(pid_alive(pid) for pid in pids)


# -- configuration rendering (no supervisord) -------------------------------------------


def test_render_matches_the_worker_and_runs_the_beaters(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    try:
        daemon.configure({"default": {"processes": 2}, "low": {"queues": "low", "processes": 1}}, beaters=2,
                         stop_timeout_s=42, stall_timeout_s=30, watchdog_interval_s=2)
        settings = load(str(daemon.config))
        options = options_for(settings)
        text = render(settings, daemon.layout, options, Credentials("u", "p"))
    finally:
        shutil.rmtree(daemon.run_dir, ignore_errors=True)
    assert program_names(settings, options) == ["worker-default", "worker-low", "beater", "sqjobsd-watchdog"]
    assert "[program:beater]" in text
    programs = 4
    assert text.count("stopwaitsecs = 42") == programs - 1
    assert text.count("stopsignal = TERM") == programs
    assert text.count("stopasgroup = true") == programs and text.count("killasgroup = true") == programs
    assert f"{sys.executable} -m sqjobs worker -c {daemon.config} --group low --status-file" in text
    assert "--stall-timeout 30 --interval 2" in text
    assert f"directory = {tmp_path}" in text


def test_reload_digest_follows_the_sections_a_program_reads(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    shutil.rmtree(daemon.run_dir, ignore_errors=True)
    daemon.configure({"a": {"queues": "a"}, "b": {"queues": "b"}})
    first = load(str(daemon.config))
    daemon.configure({"a": {"queues": "a"}, "b": {"queues": "b, c"}})
    second = load(str(daemon.config))
    daemon._base = daemon._base.replace("jobs = jobs_for_tests", "jobs = jobs_for_tests, sqjobs")
    daemon.configure({"a": {"queues": "a"}, "b": {"queues": "b, c"}})
    third = load(str(daemon.config))
    shared = ("sqjobs", "sqs")
    assert config_digest(first, *shared, "worker:a") == config_digest(second, *shared, "worker:a")
    assert config_digest(first, *shared, "worker:b") != config_digest(second, *shared, "worker:b")
    assert config_digest(second, *shared, "worker:a") != config_digest(third, *shared, "worker:a")


def test_default_timeouts_cover_the_longest_job(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    shutil.rmtree(daemon.run_dir, ignore_errors=True)
    daemon.configure({"default": {"prefetch": 1}}, stop_timeout_s="", stall_timeout_s="")
    settings = load(str(daemon.config))
    assert options_for(settings).stop_timeout_s == 60
    assert options_for(settings).stall_timeout_s == 300
    assert options_for(settings, longest_timeout_s=600).stop_timeout_s == 615
    assert options_for(settings, longest_timeout_s=600).stall_timeout_s == 660
    daemon.configure({"default": {"prefetch": 1}, "batch": {"prefetch": 4}}, stop_timeout_s="", stall_timeout_s="")
    assert options_for(load(str(daemon.config)), longest_timeout_s=600).stall_timeout_s == 4 * 600 + 60


def test_a_stall_threshold_shorter_than_a_healthy_poll_is_refused(daemon: Daemon) -> None:
    daemon.configure({"default": {}}, stall_timeout_s=2)
    result = daemon.run("start")
    assert result.returncode == 1
    assert "stall_timeout_s = 2 is shorter" in result.stderr and "use at least 3" in result.stderr
    assert not os.path.exists(daemon.layout.pidfile)


def test_a_worker_is_stalled_when_its_own_last_poll_is_too_old() -> None:
    worker = {"group": "worker-default", "name": "worker-default-0", "statename": "RUNNING", "pid": 42,
              "start": 1000.0}
    fresh = {"pid": 42, "last_poll": 1095.0, "last_job": "j1", "jobs_done": 3}
    assert not assess(worker, fresh, 1100.0, 10).stalled
    assert assess(worker, fresh, 1106.0, 10).stalled
    assert not assess(worker, fresh, 1106.0, 0).stalled  # 0: stall detection off
    earlier_process = dict(fresh, pid=41)  # left by the process this one replaced: only uptime counts
    assert not assess(dict(worker, start=1100.0), earlier_process, 1105.0, 10).stalled
    assert assess(dict(worker, start=1100.0), earlier_process, 1111.0, 10).stalled
    assert assess(worker, None, 1011.0, 10).stalled  # never polled since it started
    assert not assess(dict(worker, statename="STOPPED"), fresh, 1200.0, 10).stalled
    beater = dict(worker, group="beater", name="beater-0")
    assert not assess(beater, None, 5000.0, 10).stalled
    line = describe(assess(worker, fresh, 1106.0, 10))
    assert line.split()[:2] == ["worker-default-0", "STALLED"] and "last poll 11.0 s ago" in line
    assert "last job j1 (3 done)" in line


def test_a_worker_whose_job_process_keeps_dying_is_crashing() -> None:
    worker = {"group": "worker-default", "name": "worker-default-0", "statename": "RUNNING", "pid": 42,
              "start": 1000.0}
    status = {"pid": 42, "last_poll": 1099.0, "job_process_deaths": [1010.0, 1050.0],
              "last_death": "the job process killed by signal 11 (SIGSEGV)", "recent_deaths": []}
    assert not assess(worker, status, 1100.0, 300).crashing  # two deaths: not yet a loop
    health = assess(worker, dict(status, job_process_deaths=[1010.0, 1050.0, 1090.0]), 1100.0, 300)
    assert health.crashing and not health.healthy
    line = describe(health)
    assert line.split()[:2] == ["worker-default-0", "CRASHING"]
    assert "3 job process death(s) in the last 5 min" in line and "SIGSEGV" in line
    assert not assess(worker, dict(status, job_process_deaths=[500.0, 600.0, 700.0]), 1100.0, 300).crashing
    # Three deaths in the window, but the last one over a minute ago: it recovered.
    assert not assess(worker, dict(status, job_process_deaths=[1010.0, 1020.0, 1030.0]), 1100.0, 300).crashing
    died = dict(status, job_process_deaths=[], recent_deaths=[950.0, 990.0, 1000.0])  # the worker itself died 3 times
    assert assess(worker, died, 1010.0, 300).crashing
    assert "3 worker death(s)" in describe(assess(worker, died, 1010.0, 300))
    assert not assess(worker, died, 1100.0, 300).crashing  # up for 100 s since: recovered


def test_only_deaths_count_not_asked_for_stops_and_backoff_is_crashing() -> None:
    starting = {"group": "worker-default", "name": "worker-default-0", "statename": "RUNNING", "pid": 43,
                "start": 1000.0}
    # The file of the process before this one (pid 42): it died without stopping, after two earlier deaths.
    before = {"pid": 42, "alive_at": 999.0, "recent_deaths": [900.0, 950.0]}
    assert assess(starting, before, 1001.0, 300).crashing
    assert assess(starting, dict(before, recent_deaths=[900.0]), 1001.0, 300).worker_deaths == 2
    # Stopped as asked (sqjobsd stop, reload, --max-jobs): no death.
    stopped = dict(before, stopped_at=999.0)
    assert not assess(starting, stopped, 1001.0, 300).crashing
    assert assess(starting, stopped, 1001.0, 300).worker_deaths == 2
    backoff = dict(starting, statename="BACKOFF", pid=0)
    assert assess(backoff, None, 1001.0, 300).crashing
    assert describe(assess(backoff, None, 1001.0, 300)).split()[:2] == ["worker-default-0", "CRASHING"]
    assert not assess(dict(backoff, statename="FATAL"), before, 1001.0, 300).crashing  # supervisord gave up


def test_socket_path_over_the_unix_limit_is_a_clear_error(daemon: Daemon) -> None:
    daemon.configure({"default": {}}, run_dir="/tmp/" + "r" * 110)
    result = daemon.run("start")
    assert result.returncode == 1
    assert "too long" in result.stderr and "unix socket allows 107" in result.stderr
    assert not os.path.exists("/tmp/" + "r" * 110)


def test_status_and_stop_when_not_running(daemon: Daemon) -> None:
    daemon.configure({"default": {}})
    result = daemon.run("status")
    assert result.returncode == 3
    assert "not running" in result.stdout
    result = daemon.run("stop")
    assert result.returncode == 0
    assert "was not running" in result.stdout


# -- job modules checked before anything starts ---------------------------------------------

BROKEN_MODULE = """print("noise printed by a job module")
import sqjobs_missing_dependency
"""


def test_start_refuses_a_job_module_that_does_not_import_and_leaves_nothing_running(daemon: Daemon) -> None:
    # The module sits next to the config file and is found only as a worker finds it: in the config's
    # directory, which supervisord makes the workers' working directory; sqjobsd runs from elsewhere.
    daemon.add_job_module("broken_jobs", BROKEN_MODULE)
    daemon.configure({"default": {"processes": 1}})
    result = daemon.run("start", cwd="/")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: {daemon.config}: [sqjobs] jobs: cannot import 'broken_jobs': ModuleNotFoundError: "
        "No module named 'sqjobs_missing_dependency'; nothing was started"]
    assert "sqjobsd started" not in result.stdout and "noise" not in result.stdout + result.stderr
    daemon.assert_nothing_runs()
    assert not os.path.exists(daemon.layout.supervisord_conf) and not daemon.log_dir.exists()

    verbose = daemon.run("-v", "start", cwd="/")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and 'broken_jobs.py", line 2' in verbose.stderr
    assert "noise printed by a job module" in verbose.stderr
    daemon.assert_nothing_runs()


def test_the_import_check_gives_up_on_a_module_that_hangs_and_kills_what_it_started(tmp_path: Path) -> None:
    from sqjobsd.jobcheck import JobImportError, longest_job_timeout

    daemon = Daemon(tmp_path)
    shutil.rmtree(daemon.run_dir, ignore_errors=True)
    helper = tmp_path / "helper.pid"
    daemon.add_job_module("hanging_jobs", f"""import subprocess, time
helper = subprocess.Popen(["sleep", "600"])
open({str(helper)!r}, "w").write(str(helper.pid))
while True:
    time.sleep(0.1)
""")
    daemon.configure({"default": {}})
    with pytest.raises(JobImportError, match=r"importing 'hanging_jobs' did not finish within 2 s"):
        longest_job_timeout(load(str(daemon.config)), timeout_s=2)
    assert not pid_alive(int(helper.read_text()))
    assert not [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                if "sqjobsd.jobcheck" in cmdline(pid) and str(daemon.config) in cmdline(pid)]


def test_the_import_check_finds_the_longest_timeout_and_reports_an_exit_at_import(tmp_path: Path) -> None:
    from sqjobsd.jobcheck import JobImportError, longest_job_timeout

    daemon = Daemon(tmp_path)
    shutil.rmtree(daemon.run_dir, ignore_errors=True)
    daemon.add_job_module("long_jobs", "from sqjobs import job\n\n"
                          "@job(name='long_job_for_the_check', timeout=900)\ndef long_job():\n    pass\n")
    daemon.configure({"default": {}})
    assert longest_job_timeout(load(str(daemon.config))) == 900
    daemon.add_job_module("exiting_jobs", "import sys\nsys.exit(3)\n")
    daemon.configure({"default": {}})
    with pytest.raises(JobImportError, match=r"cannot import 'exiting_jobs': SystemExit: 3; nothing was started"):
        longest_job_timeout(load(str(daemon.config)))


def test_start_refuses_job_modules_that_register_no_job(tmp_path: Path) -> None:
    from sqjobsd.jobcheck import JobImportError, longest_job_timeout

    daemon = Daemon(tmp_path)
    shutil.rmtree(daemon.run_dir, ignore_errors=True)
    daemon.add_job_module("empty_jobs", "# a jobs module whose jobs were forgotten\n")
    daemon._base = daemon._base.replace("jobs = jobs_for_tests, empty_jobs", "jobs = empty_jobs")
    daemon.configure({"default": {}})
    with pytest.raises(JobImportError, match=r"no job is registered \(the job modules empty_jobs define no job\)"):
        longest_job_timeout(load(str(daemon.config)))


# -- real supervisord ---------------------------------------------------------------------


def test_start_runs_everything_then_stop_leaves_nothing(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 2}, "low": {"queues": "low", "processes": 1}})
    daemon.start()
    pids = daemon.wait_running(3, "3 RUNNING processes")
    assert sorted(pids) == ["worker-default-0", "worker-default-1", "worker-low-0"]

    daemon.record("default", [f"d{i}" for i in range(150)])
    daemon.record("low", [f"l{i}" for i in range(50)])
    expected = {f"d{i}" for i in range(150)} | {f"l{i}" for i in range(50)}
    wait_until(lambda: {line.split()[0] for line in daemon.recorded()} >= expected, SLOW_S,
               what="200 jobs done")
    workers_seen = {line.split()[1] for line in daemon.recorded()}
    assert workers_seen <= {str(pid) for pid in pids.values()}

    status = daemon.run("status")
    assert status.returncode == 0, status.stdout
    lines = status.stdout.splitlines()
    assert len(lines) == 3
    for name, pid in pids.items():
        line = next(line for line in lines if line.startswith(name))
        assert "RUNNING" in line and f"pid {pid}" in line and "uptime" in line and "last poll" in line

    daemon.client().call("stopProcess", "worker-low:worker-low-0", True)
    status = daemon.run("status")
    assert status.returncode == 3
    assert any(line.startswith("worker-low-0") and "STOPPED" in line for line in status.stdout.splitlines())

    assert "CRIT" not in Path(daemon.layout.supervisord_log).read_text()  # no root or auth warnings
    supervisord = daemon.supervisord_pid()
    assert supervisord is not None
    stop = daemon.run("stop")
    assert stop.returncode == 0, stop.stderr
    assert _all_gone([supervisord, *pids.values()])
    assert marked_processes(str(daemon.run_dir)) == []
    assert not os.path.exists(daemon.layout.socket)


def test_stop_lets_the_running_job_finish(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 1, "prefetch": 5}})
    daemon.start()
    pids = daemon.wait_running(1, "the worker")
    daemon.enqueue("default", [JobMessage("slow", [str(daemon.records), f"s{i}", 1.0]) for i in range(5)])
    wait_until(lambda: any(line.startswith("start s") for line in daemon.recorded()), SLOW_S,
               what="a slow job to start")
    result = daemon.run("stop")
    assert result.returncode == 0, result.stderr
    lines = daemon.recorded()
    started = [line.split()[1] for line in lines if line.startswith("start ")]
    ended = [line.split()[1] for line in lines if line.startswith("end ")]
    assert started and started == ended  # the running job finished; no new one was begun after SIGTERM
    assert len(started) < 5
    assert _all_gone(list(pids.values()))
    assert "handed back" in (daemon.log_dir / "worker-default-0.log").read_text()


@pytest.mark.faults
def test_killed_worker_is_restarted_and_its_job_redelivered(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 1, "prefetch": 1, "visibility_timeout_s": 2}})
    daemon.start()
    release = daemon.tmp_path / "release"
    daemon.enqueue("default", [JobMessage("wait_for_file", [str(daemon.records), "t1", str(release)])])
    started = wait_until(lambda: [line for line in daemon.recorded() if line.startswith("start t1")], SLOW_S,
                         what="the job to start")
    first_pid = int(started[0].split()[2])
    assert daemon.running_pids()["worker-default-0"] == first_pid

    os.kill(first_pid, signal.SIGKILL)
    new_pid = daemon.wait_new_pid("worker-default-0", first_pid, "supervisord to restart the worker")
    release.touch()
    wait_until(lambda: f"end t1 {new_pid}" in daemon.recorded(), SLOW_S, what="the redelivered job to finish")
    assert not any(line.startswith(f"end t1 {first_pid}") for line in daemon.recorded())


@pytest.mark.faults
def test_status_reports_a_worker_whose_jobs_keep_crashing_it(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 1}})
    daemon.start()
    pid = daemon.wait_running(1, "the worker")["worker-default-0"]
    daemon.enqueue("default", [JobMessage("segfaults", [str(daemon.records), f"s{i}"]) for i in range(3)])
    wait_until(lambda: daemon.broker is not None and daemon.broker.stats("default").dead == 3, SLOW_S,
               what="three segfaulting jobs to be dead-lettered")

    def crashing() -> subprocess.CompletedProcess | None:
        result = daemon.run("status")
        return result if "CRASHING" in result.stdout else None

    result = wait_until(crashing, SLOW_S, what="status to report the crash loop")
    assert result.returncode == 3
    line = next(line for line in result.stdout.splitlines() if line.startswith("worker-default-0"))
    assert "3 job process death(s) in the last 5 min" in line and "SIGSEGV" in line
    assert daemon.running_pids()["worker-default-0"] == pid, "the worker itself never died"


def _polling(daemon: Daemon, name: str) -> int:
    """Wait until process ``name`` runs and its worker has polled (its health file says so); return its pid."""
    def check() -> int:
        pid = daemon.running_pids().get(name, 0)
        own = read_worker_status(daemon.layout.status_file(name)) or {}
        return pid if pid and own.get("pid") == pid and own.get("last_poll") else 0
    return wait_until(check, SLOW_S, interval_s=0.2, what=f"{name} to run and poll")


@pytest.mark.faults
def test_status_is_ok_after_a_kill_9_a_stop_and_start_and_a_reload(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 1}})
    daemon.start()
    first = _polling(daemon, "worker-default-0")
    os.kill(first, signal.SIGKILL)
    daemon.wait_new_pid("worker-default-0", first, "supervisord to restart the killed worker")
    _polling(daemon, "worker-default-0")
    assert daemon.run("stop").returncode == 0
    daemon.start()
    started = _polling(daemon, "worker-default-0")
    daemon.configure({"default": {"processes": 1, "prefetch": 2}})
    result = daemon.run("reload")
    assert "changed: worker-default" in result.stdout, result.stdout + result.stderr
    daemon.wait_new_pid("worker-default-0", started, "the reload to restart the worker")
    _polling(daemon, "worker-default-0")

    result = daemon.run("status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CRASHING" not in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("worker-default-0"))
    assert line.split()[1] == "RUNNING" and "1 worker death(s)" in line  # the kill -9, and only it


FAILS_TO_IMPORT_LATER = """import os

from sqjobs import job

if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "break-the-import")):
    raise ImportError("this module fails to import on purpose")


@job(name="fine_until_broken")
def fine_until_broken():
    pass
"""


@pytest.mark.faults
def test_status_says_crashing_for_a_worker_that_fails_again_and_again(daemon: Daemon) -> None:
    daemon.add_job_module("breakable_jobs", FAILS_TO_IMPORT_LATER)
    daemon.configure({"default": {"processes": 1}})
    daemon.start()
    pid = _polling(daemon, "worker-default-0")
    (daemon.tmp_path / "break-the-import").touch()
    os.kill(pid, signal.SIGKILL)  # its successors fail to import their job module

    def crashing() -> subprocess.CompletedProcess | None:
        result = daemon.run("status")
        line = next((line for line in result.stdout.splitlines() if line.startswith("worker-default-0")), "")
        return result if line.split()[1:2] == ["CRASHING"] else None

    result = wait_until(crashing, SLOW_S, interval_s=0.2, what="status to report the worker crashing")
    assert result.returncode == 3


def test_reload_adds_and_removes_sections_without_touching_the_others(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 1}})
    daemon.start()
    before = daemon.wait_running(1, "the worker")

    daemon.configure({"default": {"processes": 1}, "extra": {"queues": "extra", "processes": 2}})
    result = daemon.run("reload")
    assert result.returncode == 0, result.stderr
    assert "added: worker-extra" in result.stdout
    after = daemon.wait_running(3, "the added workers")
    assert after["worker-default-0"] == before["worker-default-0"]
    daemon.record("extra", ["x1"])
    wait_until(lambda: any(line.startswith("x1 ") for line in daemon.recorded()), SLOW_S,
               what="an added worker to run a job")
    assert {line.split()[1] for line in daemon.recorded()} <= {str(after["worker-extra-0"]),
                                                               str(after["worker-extra-1"])}

    daemon.configure({"extra": {"queues": "extra", "processes": 2}})
    result = daemon.run("reload")
    assert result.returncode == 0, result.stderr
    assert "removed: worker-default" in result.stdout
    assert daemon.running_pids() == {"worker-extra-0": after["worker-extra-0"],
                                     "worker-extra-1": after["worker-extra-1"]}
    wait_until(lambda: not pid_alive(after["worker-default-0"]), SLOW_S, what="the removed worker to exit")

    daemon.configure({"extra": {"queues": "extra", "processes": 2, "prefetch": 1}})
    result = daemon.run("reload")
    assert result.returncode == 0, result.stderr
    assert "changed: worker-extra" in result.stdout  # workers read their section when they start
    changed = daemon.wait_running(2, "the changed section's workers")
    assert not set(changed.values()) & {after["worker-extra-0"], after["worker-extra-1"]}

    daemon.configure({"extra": {"queues": "extra", "processes": 2, "prefetch": 1}})
    result = daemon.run("reload")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no change"
    assert daemon.running_pids() == changed


def test_second_start_is_refused_and_restart_replaces_everything(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 1}})
    daemon.start()
    supervisord = daemon.supervisord_pid()
    assert supervisord is not None
    pids = daemon.wait_running(1, "the worker")
    again = daemon.run("start")
    assert again.returncode == 1
    assert "already running" in again.stderr and f"supervisord pid {supervisord}" in again.stderr
    assert daemon.supervisord_pid() == supervisord
    assert daemon.running_pids() == pids
    assert marked_processes(str(daemon.run_dir)) == sorted(pids.values())

    restart = daemon.run("restart")
    assert restart.returncode == 0, restart.stderr
    assert daemon.supervisord_pid() not in (None, supervisord)
    assert _all_gone([supervisord, *pids.values()])
    assert not set(daemon.wait_running(1, "the restarted worker").values()) & set(pids.values())


def test_reload_and_restart_refuse_a_broken_job_module_and_leave_the_daemon_as_it_was(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 1}})
    daemon.start()
    supervisord = daemon.supervisord_pid()
    pids = daemon.wait_running(1, "the worker")
    daemon.add_job_module("broken_jobs", BROKEN_MODULE)
    daemon.configure({"default": {"processes": 2}})
    for command, consequence in (("reload", "nothing was changed"), ("restart", "the daemon was left as it was")):
        result = daemon.run(command)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"Error: {daemon.config}: [sqjobs] jobs: cannot import 'broken_jobs': ModuleNotFoundError: "
            f"No module named 'sqjobs_missing_dependency'; {consequence}"]
        assert daemon.supervisord_pid() == supervisord
        assert daemon.running_pids() == pids


@pytest.mark.faults
def test_start_after_supervisord_was_killed_stops_its_orphans(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 2}})
    daemon.start()
    old = daemon.wait_running(2, "2 workers")
    supervisord = daemon.supervisord_pid()
    assert supervisord is not None
    os.kill(supervisord, signal.SIGKILL)
    wait_until(lambda: not pid_alive(supervisord), what="supervisord to die")
    assert all(pid_alive(pid) for pid in old.values())  # orphans, still consuming

    status = daemon.run("status")
    assert status.returncode == 3
    assert "left by a dead supervisord" in status.stdout

    result = daemon.start()
    assert "left by a supervisord that died" in result.stderr
    assert _all_gone(list(old.values()))
    new = daemon.wait_running(2, "2 new workers")
    assert not set(new.values()) & set(old.values())
    assert marked_processes(str(daemon.run_dir)) == sorted(new.values())
    assert daemon.supervisord_pid() not in (None, supervisord)


@pytest.mark.faults
def test_stalled_worker_is_reported_then_restarted_by_the_watchdog(daemon: Daemon) -> None:
    workers = {"default": {"processes": 1, "prefetch": 1, "visibility_timeout_s": 2}}
    daemon.configure(workers, stall_timeout_s=4, watchdog_interval_s=0, stop_timeout_s=2)
    daemon.start()
    release = daemon.tmp_path / "release"
    daemon.enqueue("default", [JobMessage("wait_for_file", [str(daemon.records), "s1", str(release)])])
    started = wait_until(lambda: [line for line in daemon.recorded() if line.startswith("start s1")], SLOW_S,
                         what="the blocking job to start")
    stuck_pid = int(started[0].split()[2])

    def reported() -> str:
        result = daemon.run("status")
        return result.stdout if result.returncode == 3 and "STALLED" in result.stdout else ""

    line = wait_until(reported, SLOW_S, what="status to report the stall")
    assert f"pid {stuck_pid}" in line

    daemon.configure(workers, stall_timeout_s=4, watchdog_interval_s=0.2, stop_timeout_s=2)
    result = daemon.run("reload")
    assert result.returncode == 0, result.stderr
    assert "added: sqjobsd-watchdog" in result.stdout and "worker-default" not in result.stdout
    new_pid = daemon.wait_new_pid("worker-default-0", stuck_pid, "the watchdog to restart the worker")
    release.touch()
    wait_until(lambda: not pid_alive(stuck_pid), SLOW_S, what="the stalled worker to be gone")
    wait_until(lambda: f"end s1 {new_pid}" in daemon.recorded(), SLOW_S, what="the job to be redelivered")
    assert "stalled" in (daemon.log_dir / "sqjobsd-watchdog.log").read_text()
    wait_until(lambda: daemon.run("status").returncode == 0, SLOW_S, what="status to be healthy again")

    # The worker's own log says why it went away, in the log format of the worker's lines.
    watchdog = daemon.running_pids()["sqjobsd-watchdog"]
    told = [line for line in (daemon.log_dir / "worker-default-0.log").read_text().splitlines()
            if f"sqjobs.daemon[{watchdog}]" in line]
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    prefix = rf"^{stamp},\d{{3}} WARNING sqjobs\.daemon\[{watchdog}\]: worker worker-default-0 \(pid {stuck_pid}\) "
    assert len(told) == 2, told
    assert re.match(prefix + rf"stalled: no poll since {stamp} \(\d+ s, limit 4 s\); the sqjobsd watchdog sends "
                    r"SIGTERM and restarts it$", told[0]), told[0]
    assert re.match(prefix + r"did not stop within 2 s of SIGTERM: the sqjobsd watchdog sends SIGKILL to its "
                    r"process group$", told[1]), told[1]


@pytest.mark.faults
def test_a_worker_that_polls_but_gets_nothing_while_messages_wait_is_restarted(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 1}}, stall_timeout_s=4, watchdog_interval_s=0.2, stop_timeout_s=2)
    daemon.start()
    old_pid = daemon.wait_running(2, "the worker and the watchdog")["worker-default-0"]
    wait_until(lambda: "last_poll" in (read_worker_status(daemon.layout.status_file("worker-default-0")) or {}),
               SLOW_S, what="the worker's first poll")  # its status file is written at start, before it polls
    # Replace the queue file under the running worker: it keeps polling the old one, where nothing comes.
    for suffix in ("", "-wal", "-shm"):
        path = daemon.tmp_path / f"queue.db{suffix}"
        if path.exists():
            path.rename(daemon.tmp_path / f"old-queue.db{suffix}")
    daemon.record("default", ["waiting"])

    new_pid = daemon.wait_new_pid("worker-default-0", old_pid, "the watchdog to restart the starved worker")
    wait_until(lambda: [line for line in daemon.recorded() if line.startswith(f"waiting {new_pid}")], SLOW_S,
               what="the new worker to run the waiting job")
    assert "starved" in (daemon.log_dir / "sqjobsd-watchdog.log").read_text()
    assert re.search(rf"WARNING sqjobs\.daemon\[\d+\]: worker worker-default-0 \(pid {old_pid}\) starved: polls but "
                     r"received nothing since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+ s, limit 4 s\) while messages wait; "
                     r"the sqjobsd watchdog sends SIGTERM and restarts it\n",
                     (daemon.log_dir / "worker-default-0.log").read_text())


def test_starved_needs_messages_waiting_and_nothing_received_for_the_threshold() -> None:
    info = {"group": "worker-default", "name": "worker-default-0", "statename": "RUNNING", "pid": 42,
            "start": 1000.0}
    status = {"pid": 42, "last_poll": 1099.5, "last_received": 1090.0, "queues": ["a"]}

    def backlog(queues: list[str]) -> int:
        return 3

    assert not assess(info, status, 1100.0, 30, backlog).starved  # received 10 s ago
    silent = assess(info, status, 1130.0, 30, backlog)
    assert silent.stalled and not silent.starved  # its last poll is 30.5 s old: stalled, not starved
    fresh = dict(status, last_poll=1129.5)
    assert assess(info, fresh, 1130.0, 30, backlog).starved
    assert "STARVED" in describe(assess(info, fresh, 1130.0, 30, backlog))
    assert not assess(info, fresh, 1130.0, 30, lambda queues: 0).starved  # nothing waits: just idle
    assert not assess(info, fresh, 1130.0, 30).starved  # no backlog counter: not judged


def test_the_backlog_leaves_fifo_queues_out(tmp_path: Path) -> None:
    from sqjobsd.health import backlog_counter

    settings = load(str(sqlite_config(tmp_path)))
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    broker.send("plain", "x")
    broker.send("plain", "y")
    broker.send("locked.fifo", "z", group_id="g", dedup_id="1")
    count = backlog_counter(settings)
    assert count(["plain", "locked.fifo"]) == 2
    assert count(["locked.fifo"]) == 0


def test_foreground_runs_until_sigterm(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 1}})
    log = open(daemon.tmp_path / "foreground.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "sqjobsd", "start", "--foreground", "-c",
                                str(daemon.config)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        pids = daemon.wait_running(1, "the foreground daemon's worker")
        assert daemon.supervisord_pid() == process.pid  # supervisord replaced sqjobsd: systemd sees one pid
        process.send_signal(signal.SIGTERM)
        assert process.wait(SLOW_S) == 0
        assert _all_gone(list(pids.values()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_beaters_run_under_supervisord(daemon: Daemon) -> None:
    daemon.configure({"default": {"processes": 1}}, beaters=2)
    daemon.start()
    pids = daemon.wait_running(3, "a worker and 2 beaters")
    assert sorted(pids) == ["beater-0", "beater-1", "worker-default-0"]
    assert all("-m sqjobs beater -c" in " ".join(cmdline(pids[name])) for name in ("beater-0", "beater-1"))
    assert daemon.run("stop").returncode == 0
    assert _all_gone(list(pids.values()))


#: The example for people who already run supervisor.
EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "supervisor" / "sqjobs.conf"
#: How the example's instructions show the sqjobs.conf to write: comment lines indented by 8 spaces.
EXAMPLE_CONFIG_PREFIX = ";        "


def test_the_example_for_an_existing_supervisor_matches_the_worker() -> None:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(EXAMPLE)
    programs = [name for name in parser.sections() if name.startswith("program:")]
    assert programs == ["program:sqjobs-worker-default", "program:sqjobs-beater"]
    for name in programs:
        program = parser[name]
        assert program["stopsignal"] == "TERM"
        assert program["stopasgroup"] == program["killasgroup"] == program["autorestart"] == "true"
        assert int(program["stopwaitsecs"]) >= 30
    assert " worker -c " in parser["program:sqjobs-worker-default"]["command"]
    assert " beater -c " in parser["program:sqjobs-beater"]["command"]
    assert parser["group:sqjobs"]["programs"] == "sqjobs-worker-default,sqjobs-beater"


class DebianHost:
    """Temporary directories standing in for a fresh Debian host, its supervisor package and sqjobs user.

    ``main`` mirrors the package's /etc/supervisor/supervisord.conf (socket, log, pidfile, childlogdir
    /var/log/supervisor, ``[include] files = conf.d/*.conf``); the package's directories and the
    sqjobs home that ``useradd --create-home`` makes exist, nothing else. supervisord runs as this
    test's user. Its processes carry the SQJOBSD_RUN_DIR marker only so that cleanup finds them.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sqdeb-", dir="/tmp"))  # short: the socket path
        self.etc = self.root / "etc-supervisor"
        (self.etc / "conf.d").mkdir(parents=True)
        self.log_dir = self.root / "var-log-supervisor"  # made by the package
        self.log_dir.mkdir()
        self.home = self.root / "var-lib-sqjobs"  # made by useradd --create-home
        self.home.mkdir()
        self.app = tmp_path / "srv-myapp"  # the application: myapp.jobs are the test jobs
        (self.app / "myapp").mkdir(parents=True)
        (self.app / "myapp" / "__init__.py").write_text("")
        shutil.copy(Path(__file__).resolve().parent / "jobs_for_tests.py", self.app / "myapp" / "jobs.py")
        self.sqjobs_conf = self.root / "etc-sqjobs" / "sqjobs.conf"
        self.sqjobs_conf.parent.mkdir()
        self.socket = self.etc / "supervisor.sock"
        self.main = self.etc / "supervisord.conf"
        self.main.write_text(_sections_text({
            "unix_http_server": {"file": self.socket, "chmod": "0700"},
            "supervisord": {"logfile": self.log_dir / "supervisord.log", "pidfile": self.etc / "supervisord.pid",
                            "childlogdir": self.log_dir, "environment": f'SQJOBSD_RUN_DIR="{self.root}"'},
            "rpcinterface:supervisor": {
                "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"},
            "supervisorctl": {"serverurl": f"unix://{self.socket}"},
            "include": {"files": self.etc / "conf.d" / "*.conf"},
        }))
        self.supervisord: subprocess.Popen | None = None

    def substitute(self, text: str) -> str:
        """``text`` with the host's paths and user replaced by this test's (order matters: longest first)."""
        for old, new in (("/srv/myapp/venv/bin/sqjobs", str(Path(sys.executable).parent / "sqjobs")),
                         ("/srv/myapp", str(self.app)),
                         ("/etc/sqjobs/sqjobs.conf", str(self.sqjobs_conf)),
                         ("/var/lib/sqjobs", str(self.home)),
                         ("/var/log/supervisor", str(self.log_dir))):
            text = text.replace(old, new)
        return re.sub(r"^user = sqjobs$", f"user = {pwd.getpwuid(os.getuid()).pw_name}", text, flags=re.M)

    def start(self) -> None:
        """Start supervisord the way the package's service does (``supervisord -n -c``)."""
        with open(self.root / "supervisord.out", "wb") as out:
            self.supervisord = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-n", "-c",
                                                 str(self.main)], stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: self.socket.exists() and self.processes() is not None, SLOW_S, what="supervisord")

    def supervisorctl(self, *args: str) -> subprocess.CompletedProcess:
        """Run ``supervisorctl ARGS`` against this host's supervisord."""
        return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.main), *args],
                              capture_output=True, text=True, timeout=SLOW_S)

    def processes(self) -> dict[str, dict[str, Any]] | None:
        """supervisord's process info by process name (None while it does not answer)."""
        from supervisor.xmlrpc import SupervisorTransport

        proxy = xmlrpc.client.ServerProxy("http://localhost",
                                          transport=SupervisorTransport(None, None, f"unix://{self.socket}"))
        try:
            return {info["name"]: info for info in proxy.supervisor.getAllProcessInfo()}
        except OSError:
            return None

    def cleanup(self) -> None:
        """Stop supervisord (its programs with it); kill whatever is left; remove the directories."""
        if self.supervisord is not None and self.supervisord.poll() is None:
            self.supervisord.terminate()
            try:
                self.supervisord.wait(SLOW_S)
            except subprocess.TimeoutExpired:
                self.supervisord.kill()
                self.supervisord.wait()
        for child in marked_processes(str(self.root)):
            os.kill(child, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def test_the_example_for_an_existing_supervisor_runs_as_written_on_a_fresh_debian_host(tmp_path: Path) -> None:
    """Follow the example's instructions on a stand-in Debian host (see DebianHost for what is substituted)."""
    text = EXAMPLE.read_text()
    host = DebianHost(tmp_path)
    try:
        config_lines = [line[len(EXAMPLE_CONFIG_PREFIX):] for line in text.splitlines()
                        if line.startswith(EXAMPLE_CONFIG_PREFIX)]
        assert config_lines[0] == "[sqjobs]"
        host.sqjobs_conf.write_text(host.substitute("\n".join(config_lines) + "\n"))
        host.start()
        assert host.processes() == {}  # a fresh host: nothing else runs
        (host.etc / "conf.d" / "sqjobs.conf").write_text(host.substitute(text))
        reread = host.supervisorctl("reread")
        assert reread.returncode == 0 and "sqjobs: available" in reread.stdout, reread.stdout + reread.stderr
        update = host.supervisorctl("update")
        assert update.returncode == 0 and "sqjobs: added process group" in update.stdout, \
            update.stdout + update.stderr

        names = ["sqjobs-beater-0", "sqjobs-worker-default-0", "sqjobs-worker-default-1"]

        def running() -> dict[str, int]:
            infos = host.processes() or {}
            pids = {name: info["pid"] for name, info in infos.items() if info["statename"] == "RUNNING"}
            return pids if sorted(pids) == names else {}

        pids = wait_until(running, SLOW_S, what="both programs RUNNING")
        records = tmp_path / "records.txt"
        broker = SQLiteBroker(str(host.home / "queue.db"))  # where the instructions' sqjobs.conf puts it
        try:
            broker.ensure_queue("default")
            broker.send("default", encode(JobMessage("record", [str(records), "fresh-host"])))
        finally:
            broker.close()
        done = wait_until(lambda: [line for line in read_lines(records) if line.startswith("fresh-host ")], SLOW_S,
                          what="a worker to run the job")
        assert int(done[0].split()[1]) in (pids["sqjobs-worker-default-0"], pids["sqjobs-worker-default-1"])
        status = wait_until(lambda: read_worker_status(str(host.home / "sqjobs-worker-default-0.json")), SLOW_S,
                            what="the worker's status file")
        assert status["pid"] == pids["sqjobs-worker-default-0"]
        for name in names:
            log = (host.log_dir / f"{name}.log").read_text()
            assert "Traceback" not in log and "ERROR" not in log, log
    finally:
        host.cleanup()
