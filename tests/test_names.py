"""Queue names and job ids: one rule each, the same on every broker, at every door.

A queue name is checked by the producer (before any broker sees it), at
class creation, in the config file and by the commands; a job id when it is
sent (a unique job's before its key is taken) and when it is received.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sqjobs
from sqjobs import Job, job
from sqjobs.brokers.base import REASON_ATTRIBUTE, Broker
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.brokers.sqs_limits import (
    MAX_QUEUE_BASE_LENGTH,
    MAX_QUEUE_NAME_LENGTH,
    MAX_QUEUE_PREFIX_LENGTH,
    PRIORITY_SUFFIX_ROOM,
    QUEUE_NAME_RULE,
)
from sqjobs.config import load, settings_from_mapping
from sqjobs.errors import ConfigError, InvalidJobIdError, InvalidQueueNameError
from sqjobs.message import ID_RULE
from sqjobs.middleware.unique import UniqueKeys
from sqjobs.registry import registry
from sqjobs.web.dashboard.server import create_app
from sqjobs.worker.loop import Worker
from tests import jobs_for_tests as jobs
from tests.status_fixtures import database_url  # noqa: F401  (fixture)
from tests.support import sqlite_config, write_config

#: Names no broker gets: each is refused the same way everywhere ('' no longer means the default queue).
BAD_QUEUES = ["with spaces", "x" * 200, "../x", "", "a/b", "q" * (MAX_QUEUE_BASE_LENGTH + 1), ".fifo"]


def refused_queue(name: str) -> str:
    """The start of the one line that refuses ``name``."""
    shown = f"{name[:40]!r}..." if len(name) > 40 else repr(name)
    return f"queue name {shown} "


def test_the_room_in_an_sqs_name_adds_up_to_what_sqs_allows() -> None:
    longest = "p" * MAX_QUEUE_PREFIX_LENGTH + "q" * MAX_QUEUE_BASE_LENGTH + "-p99" + "-dead" + ".fifo"
    assert len("-p99") == PRIORITY_SUFFIX_ROOM and len(longest) == MAX_QUEUE_NAME_LENGTH


@pytest.mark.parametrize("queue", BAD_QUEUES)
def test_every_broker_refuses_a_bad_queue_name_at_delay_with_the_one_line(any_broker: Broker, queue: str) -> None:
    sqjobs.configure(broker=any_broker)
    for send in (lambda: jobs.record_job.apply_async(args=("-", "t"), queue=queue),
                 lambda: jobs.record_job.delay_many([("-", "t")], queue=queue),
                 lambda: jobs.AdderJob.apply_async(args=(1, 2), queue=queue)):
        with pytest.raises(InvalidQueueNameError) as caught:
            send()
        text = str(caught.value)
        assert text.startswith(refused_queue(queue)) and text.endswith(f"; {QUEUE_NAME_RULE}"), text
        assert "\n" not in text
    assert any_broker.queues() == []  # nothing was created, nothing sent


def test_good_names_go_through_fifo_included(tmp_path: Path) -> None:
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    sqjobs.configure(broker=broker)
    longest = "q" * MAX_QUEUE_BASE_LENGTH
    for queue in ("emails", "Bulk_2-low", longest, longest + ".fifo"):
        jobs.record_job.apply_async(args=("-", "t"), queue=queue)
        assert broker.stats(queue).visible == 1


def test_a_job_with_a_bad_queue_is_refused_when_it_is_defined() -> None:
    with pytest.raises(InvalidQueueNameError, match=re.escape(f"job names.bad: queue name 'with spaces' holds ' ' "
                                                              f"at position 4; {QUEUE_NAME_RULE}")):
        @job(queue="with spaces", name="names.bad")
        def bad() -> None: ...

    with pytest.raises(InvalidQueueNameError, match=re.escape(f"queue name '' is empty; {QUEUE_NAME_RULE}")):
        class EmptyQueue(Job):
            queue = ""

            def run(self) -> None: ...

    assert "names.bad" not in registry.names() and not any(name.endswith("EmptyQueue") for name in registry.names())


def test_a_worker_refuses_a_bad_queue(tmp_path: Path) -> None:
    with pytest.raises(InvalidQueueNameError, match=re.escape(QUEUE_NAME_RULE)):
        Worker(SQLiteBroker(str(tmp_path / "queue.db")), ["default", "../x"])


def test_a_bad_queue_in_a_worker_section_names_file_section_and_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.conf", {"worker:mail": {"queues": "emails, with spaces"}})
    with pytest.raises(ConfigError) as caught:
        load(str(config))
    assert str(caught.value) == (f"{config}: [worker:mail] queues = 'emails, with spaces': queue name "
                                 f"'with spaces' holds ' ' at position 4; {QUEUE_NAME_RULE}")
    with pytest.raises(ConfigError, match=re.escape("settings.SQJOBS['worker:x']['queues'] = ['../x']: queue name")):
        settings_from_mapping({"worker:x": {"queues": ["../x"]}}, "settings.SQJOBS")


def test_a_queue_prefix_sqs_could_not_fit_names_file_section_and_key(tmp_path: Path) -> None:
    prefix = "p" * (MAX_QUEUE_PREFIX_LENGTH + 1)
    config = write_config(tmp_path / "sqs.conf", {"sqs": {"queue_prefix": prefix}})
    with pytest.raises(ConfigError, match=re.escape(f"{config}: [sqs] queue_prefix = '{prefix}': is 19 characters, "
                                                    f"over {MAX_QUEUE_PREFIX_LENGTH}")):
        load(str(config))
    with pytest.raises(ConfigError, match=re.escape("[sqs] queue_prefix = 'prod/': holds '/' at position 4")):
        load(str(write_config(tmp_path / "slash.conf", {"sqs": {"queue_prefix": "prod/"}})))


def one_line_error(*args: str) -> tuple[int, str]:
    """Run ``sqjobs ARGS`` as a process; return its exit code and its one line of error (no traceback)."""
    done = subprocess.run([sys.executable, "-m", "sqjobs", *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and done.stdout == "", (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return done.returncode, lines[0]


def test_commands_refuse_a_bad_queue_in_one_line_and_touch_nothing(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    expected = f"Error: queue name 'a b' holds ' ' at position 1; {QUEUE_NAME_RULE}"
    assert one_line_error("enqueue", "-c", str(config), "record", "--args", '["-", "t"]', "--queue", "a b") == (
        2, expected)
    assert one_line_error("worker", "-c", str(config), "default", "a b", "--burst") == (2, expected)
    assert one_line_error("dead", "-c", str(config), "a b") == (2, expected)
    assert SQLiteBroker(str(tmp_path / "queue.db")).queues() == []


@pytest.mark.parametrize("job_id", ["a/b", "orders/2024/42", "a b", "../x", "x?y", "-x"])
def test_an_id_that_cannot_end_a_url_path_is_refused_in_one_line(tmp_path: Path, job_id: str) -> None:
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    sqjobs.configure(broker=broker)
    with pytest.raises(InvalidJobIdError) as caught:
        jobs.record_job.apply_async(args=("-", "t"), job_id=job_id)
    text = str(caught.value)
    assert text.startswith(f"job id {job_id!r} ") and text.endswith(f"; {ID_RULE}") and "\n" not in text
    assert broker.queues() == []


def test_ids_sqjobs_and_its_producers_make_are_kept(tmp_path: Path) -> None:
    """Hex (sqjobs, PHP, shell), hex of a uuid (Node), a uuid (SQS message ids, the fallback id), periodic ids."""
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    sqjobs.configure(broker=broker)
    ids = ["9f1c" * 8, "9f1c0a2e-5b7d-4c1e-8f00-123456789abc", "order:42@shop.v2", "pedido-ñandú-注文-1"]
    assert [jobs.record_job.apply_async(args=("-", "t"), job_id=job_id).id for job_id in ids] == ids
    assert broker.stats("default").visible == len(ids)


@pytest.mark.parametrize("job_id", ["nul\x00inside", "y" * 129], ids=["NUL", "129 characters"])
def test_a_unique_job_with_a_bad_id_is_refused_before_its_key_is_taken(
        tmp_path: Path, database_url: str, job_id: str) -> None:  # noqa: F811
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    sqjobs.configure(settings=settings_from_mapping({"sqjobs": {"database": database_url}}, "test"), broker=broker)
    key = f"names-{time.time_ns()}"  # other runs share the server databases
    for job_class in (jobs.record_job.job_class, jobs.tracked_add.job_class):
        with pytest.raises(InvalidJobIdError, match=re.escape(ID_RULE)):
            job_class.apply_async(args=("-", "t"), job_id=job_id, unique_key=key)
        assert UniqueKeys.for_url(database_url).holder(key) is None
        with pytest.raises(InvalidQueueNameError):  # a bad queue, too, before the key is taken
            job_class.apply_async(args=("-", "t"), queue="a b", unique_key=key)
        assert UniqueKeys.for_url(database_url).holder(key) is None
    assert broker.queues() == []


def test_a_received_id_with_a_slash_goes_dead_unrun_with_the_rule_and_nothing_is_lost(tmp_path: Path) -> None:
    """Decided: a foreign producer's id that breaks the rule is not swapped for another; the message is kept."""
    config = sqlite_config(tmp_path)
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    record = tmp_path / "record.txt"
    body = json.dumps({"id": "orders/42", "name": "record", "args": [str(record), "foreign"]})
    broker.send("default", body)
    good = json.dumps({"id": "orders-43", "name": "record", "args": [str(record), "good"]})
    broker.send("default", good)
    done = subprocess.run([sys.executable, "-m", "sqjobs", "worker", "-c", str(config), "default", "--burst"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    [dead] = broker.peek("default-dead")
    assert dead.body == body
    assert dead.attributes[REASON_ATTRIBUTE] == f"malformed message: 'id' holds '/' at position 6; {ID_RULE}"
    assert [line.split()[0] for line in record.read_text().splitlines()] == ["good"]  # only the good one ran
    assert broker.stats("default").visible == broker.stats("default").in_flight == 0


def test_the_dashboard_search_says_the_rule_for_an_id_no_job_can_have(tmp_path: Path) -> None:
    sqjobs.configure(str(sqlite_config(tmp_path)))
    client = create_app(sqjobs.current_app()).test_client()
    found = client.get("/jobs", query_string={"id": "orders/42"})
    page = found.get_data(as_text=True)
    assert found.status_code == 404 and "holds &#39;/&#39; at position 6; " + ID_RULE in page, page
    handle = jobs.record_job.apply_async(args=("-", "t"), job_id="orders-42")
    assert client.get("/jobs", query_string={"id": handle.id}).headers["Location"] == "/jobs/orders-42"
