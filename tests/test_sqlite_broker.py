"""What only the embedded broker promises: one file shared safely by many processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqjobs.brokers.sqlite import SQLiteBroker

CLAIMER = """
import sys
from sqjobs.brokers.sqlite import SQLiteBroker
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
    processes = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(path), f"p{n}"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for n in range(8)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, [err for _, err in outputs]
    bodies = [line for out, _ in outputs for line in out.split()]
    assert len(bodies) == len(set(bodies)), "no message was claimed twice"
    leftover = SQLiteBroker(str(path)).stats("q")
    assert len(bodies) + leftover.visible == 8 * 40


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
