"""The user-facing API: @job, class jobs, hooks, the seed talk's examples, eager mode."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

import sqjobs
from sqjobs import Job, job
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.errors import DelayTooLongError, JobDefinitionError, MessageTooLargeError, UnknownJobError
from sqjobs.job import JobFunction, registry
from sqjobs.message import decode


class AdderJob(Job):
    name = "api_adder_job"
    queue = "my_queue"

    def run(self, *args: int, **kwargs: Any) -> int:
        return sum(args)


class TimedJob(Job):
    """The seed talk's TimedJob: an abstract base with set_up/tear_down."""

    abstract = True
    log: list[str] = []

    def set_up(self, *args: Any, **kwargs: Any) -> None:
        super().set_up(*args, **kwargs)
        self.start_time = datetime.now()

    def tear_down(self, *args: Any, **kwargs: Any) -> None:
        delta = datetime.now() - self.start_time
        TimedJob.log.append(f"{self.name} finished in {delta.total_seconds():.3f} seconds")
        super().tear_down(*args, **kwargs)


class LoggerJob(Job):
    """The seed talk's LoggerJob: on_success/on_failure hooks."""

    abstract = True
    events: list[str] = []

    def on_success(self, *args: Any, **kwargs: Any) -> None:
        LoggerJob.events.append(f"Successfully finished job {self.name}")
        super().on_success(*args, **kwargs)

    def on_failure(self, *args: Any, **kwargs: Any) -> None:
        LoggerJob.events.append(f"Failed job {self.name}")
        super().on_failure(*args, **kwargs)


class TimedAdder(TimedJob):
    name = "timed_adder"

    def run(self, a: int, b: int) -> int:
        return a + b


class FailingLogged(LoggerJob):
    name = "failing_logged"

    def run(self) -> None:
        raise ValueError("boom")


class SucceedingLogged(LoggerJob):
    name = "succeeding_logged"

    def run(self) -> str:
        return "ok"


@job(queue="emails", retries=5, timeout=60)
def send_welcome(user_id: int) -> str:
    return f"welcome {user_id}"


def test_job_decorator_makes_a_registered_job_class_and_keeps_the_function_callable() -> None:
    assert isinstance(send_welcome, JobFunction)
    cls = send_welcome.job_class
    assert issubclass(cls, Job)
    assert cls.name == f"{__name__}.send_welcome"
    assert (cls.queue, cls.retries, cls.timeout) == ("emails", 5, 60)
    assert registry.get(cls.name) is cls
    assert send_welcome(7) == "welcome 7"


def test_bare_decorator_uses_defaults() -> None:
    @job
    def bare() -> int:
        return 1

    assert bare.job_class.queue == "default"
    assert bare.job_class.retries == 0


def test_unknown_decorator_option_fails_at_decoration_time() -> None:
    with pytest.raises(JobDefinitionError, match="unknown option.*retires"):
        job(queue="q", retires=3)


def test_hook_option_must_be_callable() -> None:
    with pytest.raises(JobDefinitionError, match="on_failure= must be callable"):
        job(on_failure="not callable")


def test_base_must_be_a_job_class() -> None:
    with pytest.raises(JobDefinitionError, match="base= must be a Job subclass"):
        job(base=dict)


def test_abstract_bases_are_not_registered_and_names_default_to_module_and_class() -> None:
    assert "TimedJob" not in " ".join(registry.names())

    class Unnamed(Job):
        def run(self) -> None:
            return None

    assert Unnamed.name == f"{__name__}.{Unnamed.__qualname__}"
    assert Unnamed.name.endswith("<locals>.Unnamed")
    assert registry.get(Unnamed.name) is Unnamed


def test_two_classes_cannot_share_a_name() -> None:
    with pytest.raises(JobDefinitionError, match="is taken"):
        class Clash(Job):
            name = "api_adder_job"

            def run(self) -> None:
                return None


def test_unknown_name_lookup_raises() -> None:
    with pytest.raises(UnknownJobError):
        registry.get("no.such.job")


def test_seed_eager_example_add_job_returns_id_and_job_with_result() -> None:
    broker = sqjobs.create_eager_broker()
    job_id, added = broker.add_job(AdderJob, *[1, 2, 3])
    assert isinstance(job_id, str) and len(job_id) == 32
    assert isinstance(added, AdderJob)
    assert added.result == 6
    assert added.id == job_id


def test_add_job_by_name_in_eager_mode() -> None:
    broker = sqjobs.create_eager_broker()
    _, added = broker.add_job_by_name("api_adder_job", 4, 5)
    assert added.result == 9


def test_eager_job_exception_propagates_to_the_caller() -> None:
    sqjobs.create_eager_broker()
    LoggerJob.events.clear()
    with pytest.raises(ValueError, match="boom"):
        FailingLogged.delay()
    assert LoggerJob.events == ["Failed job failing_logged"]


def test_eager_delay_returns_a_filled_handle() -> None:
    sqjobs.configure(broker="eager://")
    handle = send_welcome.delay(3)
    assert handle.result == "welcome 3"
    assert handle.status == sqjobs.Status.SUCCESS


def test_eager_round_trips_arguments_through_the_encoder() -> None:
    sqjobs.configure(broker="eager://")
    seen: list[Any] = []

    @job
    def capture(value: Any) -> None:
        seen.append(value)

    capture.delay((1, 2))
    assert seen == [[1, 2]]  # a tuple arrives as a list, as it would in production
    with pytest.raises(TypeError, match="argument 0"):
        capture.delay({1, 2})


def test_seed_timed_and_logger_jobs_call_their_hooks() -> None:
    sqjobs.create_eager_broker()
    TimedJob.log.clear()
    LoggerJob.events.clear()
    assert TimedAdder.delay(2, 3).result == 5
    assert TimedJob.log and TimedJob.log[0].startswith("timed_adder finished in")
    SucceedingLogged.delay()
    assert LoggerJob.events == ["Successfully finished job succeeding_logged"]


def test_decorator_hooks_receive_the_job_instance_first() -> None:
    calls: list[tuple[str, Any]] = []

    @job(set_up=lambda j, x: calls.append(("set_up", x)),
         tear_down=lambda j, x: calls.append(("tear_down", x)),
         on_success=lambda j, result: calls.append(("on_success", (j.name, result))))
    def double(x: int) -> int:
        calls.append(("run", x))
        return 2 * x

    sqjobs.create_eager_broker()
    double.delay(21)
    assert calls == [("set_up", 21), ("run", 21), ("tear_down", 21), ("on_success", (double.name, 42))]


def test_base_class_behaviour_reaches_decorated_jobs() -> None:
    sqjobs.create_eager_broker()
    TimedJob.log.clear()

    @job(base=TimedJob, name="timed_fn")
    def timed_fn() -> str:
        return "done"

    assert timed_fn.delay().result == "done"
    assert TimedJob.log[0].startswith("timed_fn finished in")


def test_delay_on_a_queue_broker_sends_the_wire_format() -> None:
    broker = MemoryBroker()
    sqjobs.configure(broker=broker)
    handle = send_welcome.delay(42)
    [message] = broker.receive("emails", 1)
    decoded = decode(message.body, message.message_id)
    assert (decoded.id, decoded.name, decoded.args, decoded.kwargs) == (handle.id, send_welcome.name, [42], {})


def test_apply_async_with_queue_and_delay() -> None:
    broker = MemoryBroker()
    sqjobs.configure(broker=broker)
    send_welcome.apply_async(args=(1,), queue="other", delay=30)
    assert broker.stats("other").delayed == 1
    assert broker.stats("emails").visible == 0


def test_options_then_delay_sends_as_apply_async_does_for_function_and_class_jobs() -> None:
    broker = MemoryBroker()
    sqjobs.configure(broker=broker)
    handle = send_welcome.options(queue="other", delay=30, job_id="typed-1").delay(7)
    assert (handle.id, handle.queue) == ("typed-1", "other")
    assert broker.stats("other").delayed == 1
    handle = AdderJob.options(queue="other").delay(1, 2)
    [message] = broker.receive("other", 1)
    decoded = decode(message.body, message.message_id)
    assert (decoded.id, decoded.name, decoded.args) == (handle.id, "api_adder_job", [1, 2])


def test_options_then_delay_in_eager_mode_returns_the_result() -> None:
    sqjobs.configure(broker="eager://")
    assert send_welcome.options(queue="other").delay(3).wait() == "welcome 3"
    assert AdderJob.options(cancellable=True).delay(1, 2).result == 3


def test_delay_over_the_longest_sqjobs_accepts_is_refused() -> None:
    broker = MemoryBroker()
    sqjobs.configure(broker=broker)
    send_welcome.apply_async(args=(1,), delay=901)  # the memory broker holds any delay itself
    assert broker.stats("emails").delayed == 1
    with pytest.raises(DelayTooLongError, match="over the longest sqjobs accepts") as refused:
        send_welcome.apply_async(args=(1,), delay=400 * 86400)
    assert str(refused.value) == ("delay of 34560000 s (400 days) is over the longest sqjobs accepts, "
                                  "31622400 s (366 days)")  # no exponent: 3.456e+07 s read badly
    assert broker.stats("emails").delayed == 1


def test_messages_over_256_kib_are_refused_at_delay() -> None:
    sqjobs.configure(broker=MemoryBroker())
    with pytest.raises(MessageTooLargeError, match="limit of 262144 bytes"):
        send_welcome.delay("x" * 300_000)


def test_non_json_argument_is_refused_at_delay_naming_it() -> None:
    broker = MemoryBroker()
    sqjobs.configure(broker=broker)
    with pytest.raises(TypeError, match="argument 'when' is of type datetime"):
        send_welcome.apply_async(kwargs={"when": datetime.now()})
    assert broker.stats("emails").visible == 0


def test_nothing_connects_at_import_time(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    subprocess.run([sys.executable, "-c", "import sqjobs; from sqjobs import job\n@job\ndef f(): pass"],
                   check=True, cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_default_broker_is_the_embedded_sqlite_in_the_current_directory(tmp_path: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SQJOBS_CONFIG", raising=False)
    send_welcome.delay(1)
    assert (tmp_path / "sqjobs-queue.db").exists()
    assert sqjobs.get_broker().stats("emails").visible == 1

