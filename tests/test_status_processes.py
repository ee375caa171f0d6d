"""Job status across processes and from the command line, on SQLite, PostgreSQL and MySQL.

Real ``sqjobs worker`` processes on the embedded broker write to the same
status database at once; ``sqjobs status``, ``initdb`` and ``prune`` read it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from sqjobs import Status, get_job
from sqjobs import app as runtime
from sqjobs.cli.commands import main
from sqjobs.cli.status import parse_duration_s
from sqjobs.message import new_job_id
from sqjobs.status.store import STATUS_TABLE, StatusStore, get_store
from tests import jobs_for_tests as jobs
from tests.status_fixtures import database_url, store  # noqa: F401  (fixtures)
from tests.support import send_many, sqlite_config, start_worker, stop_process, wait_until, worker_log


def _rows(store: StatusStore, ids: list[str]) -> list:  # noqa: F811
    model = store.model
    return list(model.select().where(model.id.in_(ids)))


def test_two_worker_processes_record_200_jobs_in_one_database(tmp_path: Path, database_url: str,  # noqa: F811
                                                              store: StatusStore) -> None:  # noqa: F811
    config = sqlite_config(tmp_path, database=database_url)
    status_files = [tmp_path / f"worker{n}.json" for n in (1, 2)]
    workers = [start_worker(config, ["default"], "--prefetch", "1", "--status-file", str(path))
               for path in status_files]
    try:
        wait_until(lambda: all(path.exists() for path in status_files), what="both workers polling")
        runtime.configure(str(config))
        handles = send_many(runtime.get_broker(), jobs.tracked_add.job_class, [((n, n), {}) for n in range(200)])
        ids = [handle.id for handle in handles]

        def all_done() -> bool:
            return sum(row.status == "SUCCESS" for row in _rows(store, ids)) == 200

        wait_until(all_done, timeout_s=120, what="200 SUCCESS rows")
    finally:
        codes = [stop_process(worker) for worker in workers]
    assert codes == [0, 0], [worker_log(worker) for worker in workers]
    rows = {row.id: row for row in _rows(store, ids)}
    assert [json.loads(rows[handle.id].result) for handle in handles] == [2 * n for n in range(200)]
    assert {row.attempts for row in rows.values()} == {1}
    assert {row.worker_pid for row in rows.values()} == {worker.pid for worker in workers}
    assert all(row.enqueued_at <= row.started_at <= row.finished_at for row in rows.values())


def test_a_worker_process_records_every_state(tmp_path: Path, database_url: str) -> None:  # noqa: F811
    config = sqlite_config(tmp_path, database=database_url)
    runtime.configure(str(config))
    log = tmp_path / "flaky.log"
    flaky = jobs.tracked_flaky_one_retry.delay(str(log), "t", 1)
    fails = jobs.tracked_fails.delay("b")
    sees = jobs.SeesOwnStatus.delay()
    dummy = jobs.DummyResultJob.delay()
    odd = jobs.tracked_not_json.delay()
    assert {flaky.status, fails.status, sees.status, dummy.status, odd.status} == {Status.PENDING}
    worker = start_worker(config, ["default", "dummy_queue"])
    try:
        for handle in (flaky, fails, sees, dummy, odd):
            handle.wait(timeout_s=60)
    finally:
        assert stop_process(worker) == 0, worker_log(worker)
    assert (flaky.status, flaky.result, flaky.record.attempts) == (Status.SUCCESS, "t", 2)
    assert (fails.status, fails.error) == (Status.FAILURE, "ValueError: boom b")
    assert "raise ValueError" in fails.record.traceback
    assert sees.result == ["STARTED", 1, worker.pid]
    assert (dummy.status, dummy.result, dummy.queue) == (Status.SUCCESS, None, "dummy_queue")
    assert get_job(fails.id).record.worker_pid == worker.pid  # type: ignore[union-attr]
    assert odd.status is Status.FAILURE and "JSON cannot carry" in odd.error
    stats = runtime.get_broker().stats("default")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 1)  # only tracked_fails was dead-lettered


# -- the command line ------------------------------------------------------------------------


def _finished_job(store: StatusStore) -> str:  # noqa: F811
    job_id = new_job_id()
    store.enqueued(job_id, "tracked_add", "default")
    store.started(job_id, "tracked_add", "default")
    store.ended(job_id, "tracked_add", "default", Status.SUCCESS, json.dumps({"sum": 3}))
    return job_id


def test_status_json_prints_the_row(tmp_path: Path, database_url: str, store: StatusStore) -> None:  # noqa: F811
    config = sqlite_config(tmp_path, database=database_url)
    job_id = _finished_job(store)
    result = CliRunner().invoke(main, ["status", "-c", str(config), job_id, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"id", "name", "queue", "status", "result", "error", "attempts", "enqueued_at", "started_at",
            "finished_at"} <= set(data)
    assert (data["id"], data["name"], data["queue"], data["status"], data["result"], data["error"],
            data["attempts"]) == (job_id, "tracked_add", "default", "SUCCESS", {"sum": 3}, None, 1)
    started = datetime.fromisoformat(data["started_at"])
    assert started.utcoffset() == timedelta(0)
    assert datetime.fromisoformat(data["enqueued_at"]) <= started <= datetime.fromisoformat(data["finished_at"])


def test_status_text_and_unknown_ids(tmp_path: Path, database_url: str, store: StatusStore) -> None:  # noqa: F811
    config = sqlite_config(tmp_path, database=database_url)
    job_id = _finished_job(store)
    result = CliRunner().invoke(main, ["status", "-c", str(config), job_id])
    assert result.exit_code == 0, result.output
    assert f"id:          {job_id}" in result.output
    assert "status:      SUCCESS" in result.output
    assert 'result:      {"sum": 3}' in result.output
    missing = CliRunner().invoke(main, ["status", "-c", str(config), "no-such-job"])
    assert missing.exit_code == 1
    assert "no status row for job no-such-job" in missing.output


def test_initdb_creates_the_table_and_can_run_again(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "status.db"
    database.parent.mkdir()
    config = sqlite_config(tmp_path, database=f"sqlite:///{database}")
    for _ in range(2):
        result = CliRunner().invoke(main, ["initdb", "-c", str(config)])
        assert result.exit_code == 0, result.output
        assert f"tables {STATUS_TABLE}, " in result.output and " ready in " in result.output
    tables = set(StatusStore(f"sqlite:///{database}").database.get_tables())
    assert {STATUS_TABLE, "sqjobs_beats", "sqjobs_held", "sqjobs_unique", "sqjobs_cancelled"} <= tables


def test_initdb_on_each_database(tmp_path: Path, database_url: str) -> None:  # noqa: F811
    config = sqlite_config(tmp_path, database=database_url)
    result = CliRunner().invoke(main, ["initdb", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert STATUS_TABLE in get_store(database_url).database.get_tables()


def test_prune_deletes_old_finished_rows(tmp_path: Path, database_url: str, store: StatusStore) -> None:  # noqa: F811
    config = sqlite_config(tmp_path, database=database_url)
    old, recent = _finished_job(store), _finished_job(store)
    model = store.model
    ten_days_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=10)
    model.update(finished_at=ten_days_ago).where(model.id == old).execute()
    result = CliRunner().invoke(main, ["prune", "-c", str(config), "--older-than", "7d"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("pruned ")
    assert store.get(old) is None
    assert store.get(recent) is not None
    bad = CliRunner().invoke(main, ["prune", "-c", str(config), "--older-than", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("12h", 43200), ("7d", 604800),
                                               ("2w", 1209600), ("1.5h", 5400), (" 7D ", 604800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize(("text", "error"), [("", "not a duration"), ("d", "not a duration"),
                                           ("7 days", "not a duration"), ("-1d", "not a duration"),
                                           ("7y", "not a duration"), ("90", "has no unit"),
                                           ("1.5", "has no unit")])
def test_bad_durations(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_duration_s(text)


def test_the_installed_command_shows_a_status(tmp_path: Path, database_url: str,  # noqa: F811
                                              store: StatusStore) -> None:  # noqa: F811
    config = sqlite_config(tmp_path, database=database_url)
    job_id = _finished_job(store)
    done = subprocess.run([sys.executable, "-m", "sqjobs", "status", "-c", str(config), job_id, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "SUCCESS"
