"""What only the embedded broker promises: one file shared safely by many processes, unreadable rows,
full disks and read-only files reported in one line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sqjobs
from sqjobs.brokers.base import REASON_ATTRIBUTE, OutgoingMessage
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.errors import BrokerError, MalformedMessageError
from sqjobs.message import UNDECODABLE_PREFIX, JobMessage, decode, encode
from tests.mounts import fill_up, read_only_view, small_tmpfs
from tests.support import read_lines, receive_all, send_many, sqlite_config, wait_until

CLAIMER = """
import os, sys, time
from sqjobs.brokers.sqlite import SQLiteBroker
open(sys.argv[3] + "." + sys.argv[2], "w").close()  # ready
while not os.path.exists(sys.argv[3]):  # start together: every process opens the new file at the same moment
    time.sleep(0.001)
broker = SQLiteBroker(sys.argv[1])
for i in range(40):
    broker.send("q", f"{sys.argv[2]}-{i}")
got = []
while True:
    batch = broker.receive("q", 3, 0, 60)
    if not batch:
        break
    got += [m.body for m in batch]
    broker.delete_batch("q", [m.receipt for m in batch])
print("\\n".join(got))
"""


def test_many_processes_opening_a_new_file_at_once_share_it_without_lock_errors(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "queue.db"
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(path), f"p{n}", str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(8)]
    wait_until(lambda: len(list(tmp_path.glob("go.p*"))) == 8, what="the 8 processes at the starting line")
    go.touch()
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, [err for _, err in outputs]
    bodies = [line for out, _ in outputs for line in out.split()]
    assert len(bodies) == len(set(bodies)), "no message was claimed twice"
    leftover = SQLiteBroker(str(path)).stats("q")
    assert len(bodies) + leftover.visible == 8 * 40


def test_a_receive_deletes_the_finished_messages_it_is_handed_in_its_own_transaction(tmp_path: Path) -> None:
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    assert broker.deletes_while_receiving
    for i in range(4):
        broker.send("q", f"m{i}")
    broker.send("other", "o0")
    first = broker.receive("q", 2, 0, 60) + broker.receive("other", 1, 0, 60)
    got = broker.delete_then_receive([m.receipt for m in first], "q", 10, 0, 60)
    assert sorted(m.body for m in got) == ["m2", "m3"]
    assert (broker.stats("q").visible, broker.stats("q").in_flight) == (0, 2), "the first two are gone"
    assert broker.stats("other").in_flight == 0, "a receipt of another queue is deleted too"
    # Nothing left to claim: the deletes still happen.
    assert broker.delete_then_receive([m.receipt for m in got], "q", 10, 0, 60) == []
    assert broker.stats("q").in_flight == 0
    assert not MemoryBroker().deletes_while_receiving


def test_a_stale_receipt_cannot_delete_a_message_someone_else_now_holds(tmp_path: Path) -> None:
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    broker.send("q", "x")
    [first] = broker.receive("q", 1, 0, 60)
    broker.change_visibility("q", first.receipt, 0)
    [second] = broker.receive("q", 1, 0, 60)
    broker.delete("q", first.receipt)
    assert broker.stats("q").in_flight == 1
    broker.delete("q", second.receipt)
    assert broker.stats("q").in_flight == 0


def test_messages_survive_a_new_broker_on_the_same_file(tmp_path: Path) -> None:
    SQLiteBroker(str(tmp_path / "queue.db")).send("q", "kept")
    [message] = SQLiteBroker(str(tmp_path / "queue.db")).receive("q", 1)
    assert message.body == "kept"



#: Rows as sqjobs before one row builder wrote them (its single-row path: ``json.dumps`` of the attributes,
#: ``{}`` for none too; its batch path: the same, ``{}`` written directly): (message id, attributes column,
#: group, the attributes read back).
EARLIER_ROWS = [
    ("plain", "{}", None, {}),
    ("with-attributes", '{"sqjobs-dead-reason": "caf\\u00e9 \\u2603", "sqjobs-origin-queue": "q"}', None,
     {"sqjobs-dead-reason": "caf\u00e9 \u2603", "sqjobs-origin-queue": "q"}),
    ("grouped", '{"k": "v"}', "g1", {"k": "v"}),
]


def test_rows_written_by_earlier_versions_are_read_as_before(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    broker = SQLiteBroker(str(path))
    broker.ensure_queue("q")
    with sqlite3.connect(path) as db:
        for message_id, attributes, group, _ in EARLIER_ROWS:
            db.execute("INSERT INTO sqjobs_messages (queue, message_id, body, attributes, group_id, sent_at,"
                       " visible_at) VALUES ('q', ?, 'e30=', ?, ?, 1700000000.5, 0)", (message_id, attributes, group))
    db.close()
    received = {message.message_id: message for message in receive_all(broker, "q", len(EARLIER_ROWS))}
    for message_id, _, group, attributes in EARLIER_ROWS:
        message = received[message_id]
        assert (message.body, message.attributes, message.group_id, message.sent_at, message.receive_count) == \
            ("e30=", attributes, group, 1700000000.5, 1), message_id


def test_one_message_and_a_batch_store_attributes_alike(tmp_path: Path) -> None:
    """One row builder: a send and a batch send write the same attributes column, read back the same."""
    path = tmp_path / "queue.db"
    broker = SQLiteBroker(str(path))
    cases = [{}, {"a": "1"}, {"reason": "caf\u00e9 \u2603 \U0001d11e", "quote": '"\\'}]
    for index, attributes in enumerate(cases):
        broker.send("one", f"m{index}", attributes=attributes, group_id="g" if index else None)
    broker.send_batch("many", [OutgoingMessage(f"m{index}", 0, attributes, "g" if index else None)
                               for index, attributes in enumerate(cases)])
    with sqlite3.connect(path) as db:
        stored = {queue: [tuple(row) for row in db.execute(
            "SELECT body, attributes, typeof(attributes), group_id FROM sqjobs_messages WHERE queue = ? ORDER BY id",
            (queue,))] for queue in ("one", "many")}
    db.close()
    assert stored["one"] == stored["many"]
    assert [row[1] for row in stored["one"]] == ["{}", *(json.dumps(attributes) for attributes in cases[1:])]
    for queue in ("one", "many"):
        assert [m.attributes for m in sorted(receive_all(broker, queue, 3), key=lambda m: m.body)] == cases

# -- rows that cannot be read, full disks, read-only files ---------------------------------------

#: Rows a foreign writer or a damaged file may leave: (label, SQL expression for body, for attributes, reason).
UNREADABLE_ROWS = [
    ("text not UTF-8", "CAST(X'7B22FF22' AS TEXT)", "'{}'", "its body is not UTF-8 text (byte 0xff at offset 2"),
    ("blob not UTF-8", "X'FFFE00'", "'{}'", "its body is not UTF-8 text (byte 0xff at offset 0"),
    ("attributes not JSON", "'e30='", "'not json'", "its attributes column is not JSON"),
    ("attributes a list", "'e30='", "'[1, 2]'", "its attributes column is JSON list, not an object"),
    ("attributes not UTF-8", "'e30='", "CAST(X'FF' AS TEXT)", "its attributes column is not JSON"),
]


def insert_raw_rows(path: Path, queue: str) -> None:
    """Write the rows of UNREADABLE_ROWS into the broker's file with the sqlite3 module, as a foreign writer would."""
    with sqlite3.connect(path) as db:
        for label, body, attributes, _ in UNREADABLE_ROWS:
            db.execute(
                "INSERT INTO sqjobs_messages (queue, message_id, body, attributes, sent_at, visible_at)"
                f" VALUES (?, ?, {body}, {attributes}, 0, 0)", (queue, label))
    db.close()


@pytest.mark.faults
def test_rows_that_cannot_be_read_are_received_saying_why_and_the_rest_of_the_queue_flows(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    broker = SQLiteBroker(str(path))
    broker.send("q", "good-1")
    insert_raw_rows(path, "q")
    broker.send("q", "good-2")
    received = receive_all(broker, "q", len(UNREADABLE_ROWS) + 2)
    assert sorted(m.body for m in received if not m.body.startswith(UNDECODABLE_PREFIX)) == ["good-1", "good-2"]
    unreadable = {m.message_id: m for m in received if m.body.startswith(UNDECODABLE_PREFIX)}
    assert sorted(unreadable) == sorted(label for label, *_ in UNREADABLE_ROWS)
    for label, _, _, reason in UNREADABLE_ROWS:
        with pytest.raises(MalformedMessageError) as caught:
            decode(unreadable[label].body, label)
        assert reason in caught.value.reason, label
        assert caught.value.reason.startswith("stored message ") and str(path) in caught.value.reason
    # What the worker does with them: each goes to the dead-letter queue, its stored bytes untouched.
    for message in unreadable.values():
        broker.dead_letter("q", message, "malformed message: unreadable")
    assert (broker.stats("q").in_flight, broker.stats("q").dead) == (2, len(UNREADABLE_ROWS))
    with sqlite3.connect(path) as db:
        stored = dict(db.execute("SELECT message_id, CAST(body AS BLOB) FROM sqjobs_messages WHERE queue = 'q-dead'"))
    db.close()
    assert stored["text not UTF-8"] == b'{"\xff"' and stored["blob not UTF-8"] == b"\xff\xfe\x00"
    [listed] = [m for m in broker.peek("q-dead", 10) if m.message_id == "attributes not JSON"]
    assert listed.attributes[REASON_ATTRIBUTE] == "malformed message: unreadable" and listed.body == "e30="


@pytest.mark.faults
def test_a_real_worker_dead_letters_unreadable_rows_and_runs_the_other_jobs(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    path, out = tmp_path / "queue.db", tmp_path / "out.txt"
    broker = SQLiteBroker(str(path))
    broker.send("default", encode(JobMessage("record", [str(out), "before"])))
    insert_raw_rows(path, "default")
    broker.send("default", encode(JobMessage("record", [str(out), "after"])))
    done = subprocess.run([sys.executable, "-m", "sqjobs", "worker", "-c", str(config), "default", "--burst"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(line.split()[0] for line in read_lines(out)) == ["after", "before"]
    stats = broker.stats("default")
    assert (stats.visible, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 0, len(UNREADABLE_ROWS))


def test_dead_letter_with_a_stale_receipt_raises_and_moves_nothing(tmp_path: Path) -> None:
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    broker.send("q", "x")
    [first] = broker.receive("q", 1, 0, 60)
    broker.change_visibility("q", first.receipt, 0)
    [second] = broker.receive("q", 1, 0, 60)
    with pytest.raises(BrokerError, match="was not moved to 'q-dead': its receipt is stale"):
        broker.dead_letter("q", first, "late")
    assert (broker.stats("q").in_flight, broker.stats("q").dead) == (1, 0)
    broker.dead_letter("q", second, "on time")
    assert broker.stats("q").dead == 1


@pytest.mark.faults
def test_a_bulk_send_on_a_full_disk_stores_all_or_nothing_and_the_next_one_works(tmp_path: Path) -> None:
    from tests import jobs_for_tests

    job_class = jobs_for_tests.record_job.job_class
    calls = [(("out.txt", f"t{i}-" + "x" * 1000), {}) for i in range(200)]  # about 280 KB encoded
    with small_tmpfs(tmp_path / "small", "600k") as small:
        broker = SQLiteBroker(str(small / "queue.db"))
        broker.send("bulk", "already there")
        filler = fill_up(small, leave_bytes=40_000)
        with pytest.raises(BrokerError) as caught:
            send_many(broker, job_class, calls, queue="bulk")
        assert str(caught.value) == (f"embedded broker {small / 'queue.db'}: cannot store 200 message(s) on 'bulk': "
                                     "the disk is full (database or disk is full)")
        assert broker.stats("bulk").visible == 1, "none of the 200 was stored"
        filler.unlink()
        assert len(send_many(broker, job_class, calls, queue="bulk")) == 200
        assert broker.stats("bulk").visible == 201
        broker.close()


@pytest.mark.faults
def test_a_read_only_queue_file_is_a_one_line_broker_error(tmp_path: Path) -> None:
    from tests import jobs_for_tests

    writable = tmp_path / "data"
    SQLiteBroker(str(writable / "queue.db")).send("default", "already there")
    with read_only_view(writable, tmp_path / "read-only") as folder:
        path = folder / "queue.db"
        sqjobs.configure(broker=f"sqlite:///{path}")
        with pytest.raises(BrokerError) as caught:
            jobs_for_tests.record_job.delay("out.txt", "t1")
        message = str(caught.value)
        assert message.startswith(f"embedded broker {path}: cannot ") and "\n" not in message
        assert "read-only" in message
        config = sqlite_config(tmp_path, broker=f"sqlite:///{path}")
        done = subprocess.run([sys.executable, "-m", "sqjobs", "enqueue", "-c", str(config), "record",
                               "--args", '["out.txt", "t2"]'], capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout) == (1, "")
        [line] = done.stderr.splitlines()
        assert line.startswith(f"Error: embedded broker {path}: cannot ") and "read-only" in line
    assert SQLiteBroker(str(writable / "queue.db")).stats("default").visible == 1


def test_a_broker_path_under_a_regular_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    config = sqlite_config(tmp_path, broker=f"sqlite:///{tmp_path / 'afile' / 'queue.db'}")
    done = subprocess.run([sys.executable, "-m", "sqjobs", "queues", "-c", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"Error: embedded broker {tmp_path / 'afile' / 'queue.db'}: cannot create its directory "
                           f"{tmp_path / 'afile'}: {tmp_path / 'afile'} is a file, not a directory\n")


def test_forks_while_another_thread_uses_the_broker_never_hang_the_child(tmp_path: Path) -> None:
    """A child forked while a thread is inside SQLite would inherit its allocator mutex held (and hang)."""
    import os
    import threading

    broker = SQLiteBroker(str(tmp_path / "q.db"))
    broker.send("busy", "x")
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            broker.stats("busy")
            broker.send("busy", "y" * 2000)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        hung = 0
        for _ in range(100):
            pid = os.fork()
            if pid == 0:  # the child: one SQLite call of its own, then leave at once
                try:
                    SQLiteBroker(str(tmp_path / "q.db")).stats("busy")
                finally:
                    os._exit(0)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.waitstatus_to_exitcode(status) == 0
                    break
                time.sleep(0.005)
            else:
                hung += 1
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                break
    finally:
        stop.set()
        thread.join()
    assert hung == 0
