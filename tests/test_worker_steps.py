"""The worker loop stepped in-process on the memory broker: settling, retries, poison, hand-back."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from sqjobs import Job, Retry, job
from sqjobs.brokers.base import REASON_ATTRIBUTE
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.worker.execution import backoff_delay
from sqjobs.worker.loop import Worker
from tests.support import Clock, send

calls: list[str] = []


@job(queue="steps", name="steps.ok")
def ok_job(value: int) -> int:
    calls.append(f"ok {value}")
    return value


@job(queue="steps", name="steps.flaky", retries=2, retry_delay=10)
def flaky_job(failures: int) -> str:
    calls.append("try")
    if calls.count("try") <= failures:
        raise RuntimeError(f"failure {calls.count('try')}")
    return "done"


@job(queue="steps", name="steps.retry_me", retries=1)
def retry_me() -> None:
    calls.append("retry_me")
    raise Retry(delay=42)


@job(queue="steps", name="steps.timeout", timeout=0.2)
def timeout_job() -> None:
    import time

    calls.append("timeout start")
    time.sleep(10)
    calls.append("timeout end")


class HookedJob(Job):
    name = "steps.hooked"
    queue = "steps"
    retries = 1
    retry_delay = 1

    def run(self, fail: bool) -> str:
        if fail:
            raise ValueError("nope")
        return "fine"

    def tear_down(self, fail: bool) -> None:
        calls.append("tear_down")

    def on_success(self, result: Any) -> None:
        calls.append(f"on_success {result}")

    def on_retry(self, exc: BaseException) -> None:
        calls.append(f"on_retry {exc}")

    def on_failure(self, exc: BaseException) -> None:
        calls.append(f"on_failure {exc}")


@pytest.fixture()
def broker(clock: Clock) -> MemoryBroker:
    calls.clear()
    return MemoryBroker(clock=clock)


def make_worker(broker: MemoryBroker, **options: Any) -> Worker:
    return Worker(broker, ["steps"], wait_s=0, isolation="none", **options)


def dead_reasons(broker: MemoryBroker) -> list[str]:
    return [m.attributes[REASON_ATTRIBUTE] for m in broker.peek("steps-dead", 100)]


def test_success_deletes_the_message(broker: MemoryBroker) -> None:
    send(broker, ok_job.job_class, (5,))
    worker = make_worker(broker)
    assert worker.run_once() == 1
    assert calls == ["ok 5"]
    stats = broker.stats("steps")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)


def test_failure_with_attempts_left_hides_the_same_message_for_the_backoff(broker: MemoryBroker,
                                                                          clock: Clock) -> None:
    send(broker, flaky_job.job_class, (2,))
    worker = make_worker(broker)
    worker.run_once()
    stats = broker.stats("steps")
    assert (stats.in_flight, stats.delayed) == (0, 1)  # waiting out its backoff counts as delayed
    clock.now += 9.9  # first backoff is 10 s (+ at most 10 % jitter)
    assert worker.run_once() == 0
    clock.now += 1.2
    worker.run_once()
    assert calls == ["try", "try"]
    clock.now += 25  # second backoff is 20-22 s
    worker.run_once()
    assert calls == ["try", "try", "try"]
    stats = broker.stats("steps")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)


def test_failure_on_the_last_attempt_dead_letters_with_the_reason(broker: MemoryBroker, clock: Clock) -> None:
    send(broker, flaky_job.job_class, (5,))
    worker = make_worker(broker)
    for _ in range(3):
        worker.run_once()
        clock.now += 100
    assert calls == ["try", "try", "try"]
    assert dead_reasons(broker) == ["failed after 3 attempt(s): RuntimeError: failure 3"]


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(flaky_job.job_class, attempt, rng) for attempt in range(1, 6)]
    assert all(later > earlier for earlier, later in zip(delays, delays[1:], strict=False))
    assert 10 <= delays[0] <= 11 and 20 <= delays[1] <= 22
    assert backoff_delay(flaky_job.job_class, 40, rng) <= 3600 * 1.1


def test_retry_exception_uses_the_requested_delay_and_counts_as_an_attempt(broker: MemoryBroker,
                                                                          clock: Clock) -> None:
    send(broker, retry_me.job_class)
    worker = make_worker(broker)
    worker.run_once()
    clock.now += 41
    assert worker.run_once() == 0
    clock.now += 2
    worker.run_once()
    assert calls == ["retry_me", "retry_me"]
    assert dead_reasons(broker) == ["failed after 2 attempt(s): Retry: retry requested"]


def test_hard_timeout_interrupts_the_job_and_counts_as_a_failure(broker: MemoryBroker) -> None:
    send(broker, timeout_job.job_class)
    make_worker(broker).run_once()
    assert calls == ["timeout start"]
    [reason] = dead_reasons(broker)
    assert "JobTimeoutError" in reason and "timeout of 0.2 s" in reason


def test_hooks_order_on_retry_failure_and_success(broker: MemoryBroker, clock: Clock) -> None:
    send(broker, HookedJob, (True,))
    worker = make_worker(broker)
    worker.run_once()
    clock.now += 5
    worker.run_once()
    send(broker, HookedJob, (False,))
    worker.run_once()
    assert calls == ["tear_down", "on_retry nope", "tear_down", "on_failure nope", "tear_down",
                     "on_success fine"]


def _raw(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


@pytest.mark.faults
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("@@not base64@@", "malformed message: body is neither base64 nor JSON"),
        (base64.b64encode(b"not json").decode(), "malformed message: body is not valid JSON"),
        (_raw({"args": [1]}), "malformed message: message has no job 'name'"),
        (_raw({"name": "steps.ok", "args": "1"}), "malformed message: 'args' is a JSON str, not a list"),
        (_raw({"name": "steps.ok", "args": [1], "kwargs": [2]}), "malformed message: 'kwargs' is a JSON list"),
    ],
)
def test_poison_messages_go_to_the_dead_letter_queue_and_the_next_message_runs(
        broker: MemoryBroker, body: str, reason: str) -> None:
    broker.send("steps", body)
    send(broker, ok_job.job_class, (1,))
    worker = make_worker(broker, prefetch=10)
    assert worker.run_once() == 2
    assert calls == ["ok 1"]
    [dead] = dead_reasons(broker)
    assert dead.startswith(reason)


def test_a_job_with_bad_arguments_for_its_signature_fails_like_any_error(broker: MemoryBroker) -> None:
    broker.send("steps", _raw({"name": "steps.ok", "args": [1, 2, 3]}))
    make_worker(broker).run_once()
    [reason] = dead_reasons(broker)
    assert "TypeError" in reason


def test_stop_hands_back_prefetched_messages_at_once(broker: MemoryBroker) -> None:
    for value in range(5):
        send(broker, ok_job.job_class, (value,))

    class StopAfterFirst(Worker):
        def apply(self, message: Any, settlement: Any) -> None:
            super().apply(message, settlement)
            self.request_stop()

    worker = StopAfterFirst(broker, ["steps"], wait_s=0, prefetch=10, isolation="none")
    assert worker.run_once() == 1
    assert calls == ["ok 0"]
    stats = broker.stats("steps")
    assert (stats.visible, stats.in_flight) == (4, 0)
    assert [m.receive_count for m in broker.receive("steps", 10)] == [1, 1, 1, 1]  # no attempt spent


def test_a_worker_holds_two_receives_ahead_once_its_jobs_prove_quick_and_fewer_when_they_are_slow(
        broker: MemoryBroker) -> None:
    for value in range(3):
        send(broker, ok_job.job_class, (value,))
    worker = Worker(broker, ["steps"], wait_s=0, prefetch=10, isolation="process", hold_s=1.0)
    try:
        assert worker._capacity() == 1 + 10, "one receive ahead while no job duration is known"
        assert worker.run_once() == 3
        assert worker._capacity() == 1 + 2 * 10, "quick jobs: the next receive waits while one runs down"
        worker._average_s = 0.25  # the running average of job durations: 4 start within hold_s
        assert worker._capacity() == 1 + 4
    finally:
        worker.close()
    inline = make_worker(broker, prefetch=10)
    send(broker, ok_job.job_class, (3,))
    assert inline.run_once() == 1
    assert inline._capacity() == 1 + 10, "without a job process, nothing runs while the worker receives"


def test_max_jobs_stops_the_worker(broker: MemoryBroker) -> None:
    for value in range(5):
        send(broker, ok_job.job_class, (value,))
    worker = make_worker(broker, max_jobs=2, prefetch=10)
    assert worker.run() == 0
    assert calls == ["ok 0", "ok 1"]
    assert broker.stats("steps").visible == 3


def test_burst_run_drains_and_returns(broker: MemoryBroker) -> None:
    for value in range(25):
        send(broker, ok_job.job_class, (value,))
    assert make_worker(broker, burst=True).run() == 0
    assert len(calls) == 25


def test_heartbeat_extends_every_held_message(broker: MemoryBroker, clock: Clock) -> None:
    send(broker, ok_job.job_class, (1,))
    send(broker, ok_job.job_class, (2,))
    worker = make_worker(broker, visibility_timeout_s=30)
    messages = worker.receive(0)
    worker.in_flight.add(messages)
    clock.now += 25
    worker.in_flight.extend()
    clock.now += 25  # 50 s after the receive, past the original timeout
    assert broker.receive("steps", 10) == []
    assert broker.stats("steps").in_flight == 2


def test_queues_are_served_in_priority_order(clock: Clock) -> None:
    calls.clear()
    broker = MemoryBroker(clock=clock)
    send(broker, ok_job.job_class, (2,), queue="low")
    send(broker, ok_job.job_class, (1,), queue="high")
    worker = Worker(broker, ["high", "low"], wait_s=0, prefetch=1, isolation="none")
    worker.run_once()
    worker.run_once()
    assert calls == ["ok 1", "ok 2"]


def test_worker_status_file_records_the_last_poll_and_job(broker: MemoryBroker, tmp_path: Any,
                                                          clock: Clock) -> None:
    send(broker, ok_job.job_class, (1,))
    status = tmp_path / "worker.json"
    worker = make_worker(broker, status_file=str(status), clock=clock)
    [health] = worker.own_middleware  # the health file is the worker's own middleware
    worker.run_once()
    clock.now += 2
    worker.run_once()
    health.write(worker)  # what its thread does every second between worker_started and worker_stopped
    data = json.loads(status.read_text())
    assert data["last_poll"] == clock.now and data["jobs_done"] == 1 and data["last_job"]


def test_an_unknown_job_name_is_handed_back_for_another_worker_then_dead_lettered_after_the_refusals(
        broker: MemoryBroker, clock: Clock) -> None:
    from sqjobs.job import Registry

    broker.send("steps", _raw({"name": "only.new.code.knows", "args": [1]}))
    old = make_worker(broker, registry=Registry(), unknown_job_refusals=3, clock=clock)
    old.registry.register(ok_job.job_class)
    assert old.run_once() == 1
    stats = broker.stats("steps")
    assert (stats.visible, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 1, 0)
    clock.now += 14
    assert old.run_once() == 0  # not visible again before 15 s
    clock.now += 2
    assert old.run_once() == 1  # refusal 2
    clock.now += 16
    assert old.run_once() == 1  # refusal 3: nobody knew it in time
    [reason] = dead_reasons(broker)
    assert reason.startswith('unknown job name "only.new.code.knows": refused 3 times over 0.5 min')
    assert reason.endswith("this worker knows 1 job: steps.ok")


def test_in_a_rolling_deploy_a_worker_that_knows_the_job_runs_what_an_old_one_refused(
        broker: MemoryBroker, clock: Clock) -> None:
    from sqjobs.job import Registry

    send(broker, ok_job.job_class, (7,))
    old = make_worker(broker, registry=Registry())
    old.run_once()
    assert calls == [] and broker.stats("steps").dead == 0
    clock.now += 15
    make_worker(broker).run_once()  # the new code, with the default registry
    assert calls == ["ok 7"]
    stats = broker.stats("steps")
    assert (stats.visible, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 0, 0)


def test_refusals_in_a_rolling_deploy_do_not_count_against_the_crash_ceiling(broker: MemoryBroker,
                                                                             clock: Clock) -> None:
    from sqjobs.job import Registry

    send(broker, ok_job.job_class, (9,))
    old = make_worker(broker, registry=Registry())
    for _ in range(5):  # five refusals by old workers: more than the job's 1 attempt + 2 crashes
        assert old.run_once() == 1
        clock.now += 15
    make_worker(broker).run_once()
    assert calls == ["ok 9"]
    assert broker.stats("steps").dead == 0


class DeletesFailAtFirst(MemoryBroker):
    """A memory broker whose first ``failures`` batch deletes fail as a broker outage would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def delete_batch(self, queue: str, receipts: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            from sqjobs.errors import BrokerConnectionError

            raise BrokerConnectionError("the broker is down (injected)")
        super().delete_batch(queue, receipts)


def test_a_failed_delete_keeps_the_finished_messages_held_and_deletes_them_later(
        caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from tests.support import wait_until

    calls.clear()
    broker = DeletesFailAtFirst(failures=2)
    for value in range(3):
        send(broker, ok_job, (value,))
    worker = make_worker(broker)
    thread = threading.Thread(target=worker.run)
    with caplog.at_level("INFO", "sqjobs.worker"):
        thread.start()
        try:
            wait_until(lambda: broker.failures == 0 and broker.stats("steps").in_flight == 0, timeout_s=30,
                       what="the third delete to succeed")
        finally:
            worker.request_stop()
            thread.join()
    assert sorted(calls) == ["ok 0", "ok 1", "ok 2"], "each ran once: held, not delivered again"
    stats = broker.stats("steps")
    assert (stats.visible, stats.in_flight, stats.dead) == (0, 0, 0)
    lines = [record.getMessage() for record in caplog.records]
    failed = [line for line in lines if "error while deleting finished messages (they stay held)" in line]
    assert len(failed) == 2 and "(failure 1)" in failed[0] and "trying again in 1 s" in failed[0]
    assert "(failure 2, failing for" in failed[1] and "trying again in 2 s" in failed[1]
    assert any("deleted 3 finished message(s) held since their delete failed (2 failed tries)" in line
               for line in lines)
