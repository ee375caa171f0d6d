"""``async def`` jobs are awaited like plain ones, and a job's ``timeout`` cannot be caught by the job."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sqjobs
from sqjobs import Job, job
from sqjobs.brokers.base import REASON_ATTRIBUTE
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.worker.loop import Worker
from tests import jobs_for_tests as jobs
from tests.support import Clock, read_lines, send, sqlite_config, start_worker

calls: list[str] = []


@job(queue="aio", name="aio.add")
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    calls.append(f"add {a + b}")
    return a + b


@job(queue="aio", name="aio.flaky", retries=1, retry_delay=5)
async def async_flaky() -> str:
    calls.append("flaky")
    await asyncio.sleep(0)
    if calls.count("flaky") == 1:
        raise RuntimeError("first async attempt fails")
    return "second time lucky"


@job(queue="aio", name="aio.sleeps", timeout=0.2)
async def async_sleeps() -> str:
    try:
        await asyncio.sleep(10)
    except BaseException:  # even a coroutine that swallows its cancellation ends the attempt
        calls.append("cancel swallowed")
    return "claims success"


class AsyncHooked(Job):
    name = "aio.hooked"
    queue = "aio"

    async def set_up(self, *args: Any) -> None:
        calls.append("async set_up")

    async def run(self, fail: bool) -> str:
        if fail:
            raise ValueError("async nope")
        return "fine"

    async def tear_down(self, *args: Any) -> None:
        calls.append("async tear_down")

    async def on_success(self, result: Any) -> None:
        calls.append(f"async on_success {result}")

    async def on_failure(self, exc: BaseException) -> None:
        calls.append(f"async on_failure {exc}")


@job(queue="aio", name="timeouts.swallow", timeout=0.2)
def swallows() -> str:
    try:
        time.sleep(10)
    except Exception:
        calls.append("swallowed")
    return "claims success"


@job(queue="aio", name="timeouts.catches_everything_once", timeout=0.2)
def catches_everything_once() -> str:
    try:
        for _ in range(200):  # ten seconds of Python work
            time.sleep(0.05)
    except BaseException:
        calls.append("caught once")
    for _ in range(200):
        time.sleep(0.05)
    calls.append("ran on")
    return "claims success"


@job(queue="aio", name="timeouts.exits", retries=0)
def exits() -> None:
    raise SystemExit(3)


@pytest.fixture()
def broker(clock: Clock) -> MemoryBroker:
    calls.clear()
    return MemoryBroker(clock=clock)


def run_all(broker: MemoryBroker) -> None:
    Worker(broker, ["aio"], wait_s=0, prefetch=10, isolation="none").run_once()


def dead_reasons(broker: MemoryBroker) -> list[str]:
    return [m.attributes[REASON_ATTRIBUTE] for m in broker.peek("aio-dead", 100)]


def test_an_async_job_is_awaited_and_its_message_deleted(broker: MemoryBroker) -> None:
    send(broker, async_add.job_class, (2, 3))
    run_all(broker)
    assert calls == ["add 5"]
    stats = broker.stats("aio")
    assert (stats.visible, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 0, 0)


def test_an_async_failure_is_retried_like_a_plain_one(broker: MemoryBroker, clock: Clock) -> None:
    send(broker, async_flaky.job_class)
    run_all(broker)
    assert calls == ["flaky"] and broker.stats("aio").dead == 0
    clock.now += 6
    run_all(broker)
    assert calls == ["flaky", "flaky"]
    stats = broker.stats("aio")
    assert (stats.visible, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 0, 0)


def test_async_hooks_are_awaited_in_order(broker: MemoryBroker) -> None:
    send(broker, AsyncHooked, (False,))
    send(broker, AsyncHooked, (True,))
    run_all(broker)
    assert calls == ["async set_up", "async tear_down", "async on_success fine",
                     "async set_up", "async tear_down", "async on_failure async nope"]
    assert dead_reasons(broker) == ["failed after 1 attempt(s): ValueError: async nope"]


def test_an_async_job_past_its_timeout_fails_with_a_timeout_even_if_it_swallows_the_cancel(
        broker: MemoryBroker) -> None:
    send(broker, async_sleeps.job_class)
    started = time.monotonic()
    run_all(broker)
    assert time.monotonic() - started < 5
    [reason] = dead_reasons(broker)
    assert "JobTimeoutError" in reason and "timeout of 0.2 s" in reason


def test_async_jobs_in_eager_mode_return_their_result_also_inside_a_running_loop() -> None:
    sqjobs.create_eager_broker()
    assert async_add.delay(1, 2).result == 3

    async def from_a_web_handler() -> Any:
        return async_add.delay(3, 4).result

    assert asyncio.run(from_a_web_handler()) == 7


def test_except_exception_cannot_swallow_the_timeout(broker: MemoryBroker) -> None:
    send(broker, swallows.job_class)
    started = time.monotonic()
    run_all(broker)
    assert time.monotonic() - started < 5
    assert calls == []  # the interrupt is not an Exception
    [reason] = dead_reasons(broker)
    assert "timeout of 0.2 s" in reason


def test_a_job_that_catches_the_interrupt_is_interrupted_again_and_still_fails(broker: MemoryBroker) -> None:
    send(broker, catches_everything_once.job_class)
    started = time.monotonic()
    run_all(broker)
    assert time.monotonic() - started < 5
    assert calls == ["caught once"]
    [reason] = dead_reasons(broker)
    assert "timeout of 0.2 s" in reason


def test_the_timeout_also_holds_outside_the_main_thread(broker: MemoryBroker) -> None:
    send(broker, catches_everything_once.job_class)
    runner = threading.Thread(target=run_all, args=(broker,))
    started = time.monotonic()
    runner.start()
    runner.join(30)
    assert not runner.is_alive()
    assert time.monotonic() - started < 5
    [reason] = dead_reasons(broker)
    assert "timeout of 0.2 s" in reason
    assert "ran on" not in calls


def test_system_exit_in_a_job_is_the_jobs_failure_not_the_workers_exit(broker: MemoryBroker) -> None:
    send(broker, exits.job_class)
    send(broker, async_add.job_class, (1, 1))
    run_all(broker)
    assert calls == ["add 2"]
    assert dead_reasons(broker) == ["failed after 1 attempt(s): SystemExit: 3"]


def test_a_worker_process_runs_an_async_job_and_records_its_result(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    sqjobs.configure(str(config))
    out = tmp_path / "out.txt"
    handle = jobs.async_record.delay(str(out), "awaited")
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0
    assert [line.split()[0] for line in read_lines(out)] == ["awaited"]
    assert handle.wait(10) == "awaited"


def test_a_worker_process_fails_a_job_that_swallows_its_timeout(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    sqjobs.configure(str(config))
    out = tmp_path / "out.txt"
    handle = jobs.swallows_timeout.delay(str(out), "t")
    worker = start_worker(config, ["default"], "--burst")
    assert worker.wait(60) == 0
    assert read_lines(out) == ["start t"]
    assert handle.wait(10) is None
    assert handle.status is sqjobs.Status.FAILURE
    assert handle.error is not None and "timeout" in handle.error
    broker = sqjobs.get_broker()
    assert broker.stats("default").dead == 1
