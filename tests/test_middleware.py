"""Middleware: every hook fires in the process where its step happens; headers travel; failures stay contained."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

import sqjobs
from sqjobs.errors import ConfigError
from tests import jobs_for_tests as jobs
from tests.support import read_lines, sqlite_config, start_worker, stop_process, wait_until, worker_log


@pytest.fixture()
def events(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "events.jsonl"
    old = os.environ.get("SQJOBS_TEST_EVENTS")
    os.environ["SQJOBS_TEST_EVENTS"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SQJOBS_TEST_EVENTS", None)
    else:
        os.environ["SQJOBS_TEST_EVENTS"] = old


def seen(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(path)]


def test_a_configured_middleware_sees_each_step_in_the_process_that_takes_it(tmp_path: Path, events: Path) -> None:
    config = sqlite_config(tmp_path, middleware="middleware_for_tests.Recorder")
    sqjobs.configure(str(config))
    ok = jobs.record_job.delay(str(tmp_path / "out.txt"), "fine")
    bad = jobs.tracked_fails.delay("boom")  # no retries: its only attempt fails, it is dead-lettered
    worker = start_worker(config, ["default"])
    try:
        wait_until(lambda: any(e["event"] == "after_dead_letter" for e in seen(events)), what="the dead letter")
    finally:
        assert stop_process(worker) == 0
    log = seen(events)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for event in log:
        by_event.setdefault(event["event"], []).append(event)
    assert {e["id"] for e in by_event["before_enqueue"]} == {ok.id, bad.id}
    assert {e["pid"] for e in by_event["before_enqueue"]} == {os.getpid()}, "in the producer process"
    runs = {e["id"]: e for e in by_event["before_run"]}
    assert runs[ok.id]["trace"] == f"trace-{ok.id}", "a header set in before_enqueue arrives in before_run"
    assert runs[bad.id]["trace"] == f"trace-{bad.id}"
    outcomes = {e["id"]: e for e in by_event["after_run"]}
    assert (outcomes[ok.id]["result"], outcomes[ok.id]["error"]) == ("fine", None)
    assert outcomes[bad.id]["error"] == "ValueError"
    job_pids = {e["pid"] for e in by_event["before_run"] + by_event["after_run"]}
    assert os.getpid() not in job_pids, "attempts run in the worker's processes"
    [dead] = by_event["after_dead_letter"]
    assert dead["id"] == bad.id and "ValueError: boom boom" in dead["reason"]
    assert dead["pid"] == worker.pid, "dead-lettering happens in the worker"
    assert [e["pid"] for e in by_event["worker_started"]] == [worker.pid]
    assert [e["pid"] for e in by_event["worker_stopped"]] == [worker.pid]
    assert "middleware_for_tests" in config.read_text()


def test_the_same_events_in_eager_mode(tmp_path: Path, events: Path) -> None:
    from tests.middleware_for_tests import Recorder

    sqjobs.configure(broker="eager://", middleware=[Recorder()])
    handle = jobs.record_job.delay(str(tmp_path / "out.txt"), "eager")
    assert handle.result == "eager"
    with pytest.raises(ValueError):
        jobs.tracked_fails.delay("now")
    log = seen(events)
    assert [e["event"] for e in log] == ["before_enqueue", "before_run", "after_run",
                                         "before_enqueue", "before_run", "after_run"]
    assert log[1]["trace"] == f"trace-{handle.id}"
    assert log[2]["result"] == "eager" and log[5]["error"] == "ValueError"
    assert {e["pid"] for e in log} == {os.getpid()}


def test_a_failing_middleware_is_logged_with_its_name_and_loses_nothing(tmp_path: Path, events: Path) -> None:
    config = sqlite_config(tmp_path, middleware="middleware_for_tests.Broken")
    sqjobs.configure(str(config))
    jobs.record_job.delay(str(tmp_path / "out.txt"), "still runs")
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0
    assert read_lines(tmp_path / "out.txt")[0].startswith("still runs")
    log = worker_log(worker)
    assert "middleware middleware_for_tests.Broken: before_run failed" in log
    assert "middleware middleware_for_tests.Broken: after_run failed" in log
    broker = sqjobs.get_broker()
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)


def test_a_middleware_that_cannot_be_loaded_names_the_setting(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, middleware="no_such_module.Thing")
    sqjobs.configure(str(config))
    with pytest.raises(ConfigError, match=r"\[sqjobs\] middleware: cannot import 'no_such_module'"):
        jobs.record_job.delay(str(tmp_path / "out.txt"), "x")


def test_the_chain_has_one_way_to_call_the_hooks_around_a_job() -> None:
    """``before_enqueue``, ``before_run`` and ``after_run`` are called on what ``announcers`` and ``around``
    return (the middleware that apply to the job class), never on the whole chain, which would skip
    ``runs_for``: the chain offers no second way."""
    from sqjobs.middleware.base import Middleware, MiddlewareChain

    for hook in ("before_enqueue", "before_run", "after_run"):
        assert hasattr(Middleware, hook) and not hasattr(MiddlewareChain, hook), hook
