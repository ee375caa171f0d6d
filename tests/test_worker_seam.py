"""The worker's seam, piece by piece: the protocol with its job process, the outbox, the pending deletes."""

from __future__ import annotations

import ast
import logging
import math
import multiprocessing
import pathlib
import pickle
from typing import Any, Sequence

import pytest

from sqjobs.brokers.base import ReceivedMessage
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.middleware.unique import KeyReleases
from sqjobs.worker import protocol
from sqjobs.worker.deletes import CARRIED_DELETES_MAX, DELETE_DELAY_S, PendingDeletes
from sqjobs.worker.heartbeat import InFlight
from sqjobs.worker.protocol import Channel, Done, Exit, Fail, Outbox, Ready, Recycle, Run
from sqjobs.worker.runner import Action, Settlement
from tests.support import Clock

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUEUE = "seam"


class Broker(MemoryBroker):
    """The memory broker, counting its delete batches; ``failing`` makes them fail."""

    def __init__(self, carries: bool = False) -> None:
        super().__init__()
        self.deletes_while_receiving = carries
        self.batches: list[int] = []
        self.failing = False

    def delete_batch(self, queue: str, receipts: Sequence[str]) -> None:
        if self.failing:
            raise OSError("disk full")
        self.batches.append(len(receipts))
        super().delete_batch(queue, receipts)


def received(broker: Broker, count: int) -> list[ReceivedMessage]:
    for n in range(count):
        broker.send(QUEUE, f"body {n}")
    messages = broker.receive(QUEUE, count)
    assert len(messages) == count
    return messages


def pending(broker: Broker, clock: Clock) -> tuple[PendingDeletes, InFlight]:
    broker.ensure_queue(QUEUE)
    in_flight = InFlight(broker, 30)
    deletes = PendingDeletes(broker, in_flight, KeyReleases(""), logging.getLogger("sqjobs.worker"), 1.0, 30.0,
                             clock=clock)
    return deletes, in_flight


# -- pending deletes -----------------------------------------------------------------------

def test_deletes_wait_for_a_batch_or_their_delay_while_jobs_run() -> None:
    broker, clock = Broker(), Clock()
    deletes, in_flight = pending(broker, clock)
    messages = received(broker, 12)
    in_flight.add(messages)
    for message in messages[:9]:
        deletes.add(message)
        clock.now += 0.01
    assert broker.batches == [] and len(deletes) == 9
    assert not deletes.due(clock.now, running=True, receiving=True)
    assert deletes.due_at() == pytest.approx(1_000_000.0 + DELETE_DELAY_S)
    deletes.add(messages[9])
    assert broker.batches == [10] and len(deletes) == 0, "ten make a batch: deleted at once"
    deletes.add(messages[10])
    clock.now += DELETE_DELAY_S - 0.001
    assert not deletes.due(clock.now, running=True, receiving=True)
    clock.now += 0.001
    assert deletes.due(clock.now, running=True, receiving=True), "the first waited its delay"
    deletes.flush()
    assert broker.batches == [10, 1]
    assert broker.stats(QUEUE).in_flight == 1, "only the one never added is left"


def test_with_nothing_running_deletes_go_at_once_unless_a_receive_carries_them() -> None:
    clock = Clock()
    plain, _ = pending(Broker(), clock)
    carrying, _ = pending(Broker(carries=True), clock)
    for deletes in (plain, carrying):
        deletes.add(received(deletes.broker, 1)[0])  # type: ignore[arg-type]
    assert plain.due(clock.now, running=False, receiving=True)
    assert plain.take_for_receive() == []
    assert not carrying.due(clock.now, running=False, receiving=True), "the next receive deletes them"
    assert carrying.due(clock.now, running=False, receiving=False), "no receive comes: nothing carries them"
    clock.now += DELETE_DELAY_S + 0.001
    assert carrying.due(clock.now, running=False, receiving=True), "they waited their delay"


def test_a_receive_carries_the_deletes_only_once_it_confirms_them() -> None:
    broker, clock = Broker(carries=True), Clock()
    deletes, in_flight = pending(broker, clock)
    messages = received(broker, CARRIED_DELETES_MAX)
    in_flight.add(messages)
    for message in messages[:-1]:
        deletes.add(message)
    assert broker.batches == [], "a carrying broker leaves up to CARRIED_DELETES_MAX to the receive"
    carried = deletes.take_for_receive()
    assert carried == messages[:-1] and len(deletes) == len(carried), "owed until the receive worked"
    deletes.add(messages[-1])  # the receive failed meanwhile: they are all still owed, and now a full load
    assert broker.batches == [CARRIED_DELETES_MAX] and len(deletes) == 0
    message = received(broker, 1)[0]
    in_flight.add([message])
    deletes.add(message)
    carried = deletes.take_for_receive()
    broker.delete_batch(QUEUE, [m.receipt for m in carried])  # what the receive did
    deletes.received(carried)
    assert len(deletes) == 0 and deletes.due_at() == math.inf


def test_a_failed_delete_keeps_them_owed_until_its_pause_ends_and_the_last_flush_gives_up() -> None:
    broker, clock = Broker(), Clock()
    deletes, in_flight = pending(broker, clock)
    messages = received(broker, 2)
    in_flight.add(messages)
    broker.failing = True
    deletes.add(messages[0])
    deletes.flush()
    assert len(deletes) == 1 and deletes.retry_at == clock.now + 1.0
    deletes.add(messages[1])
    clock.now += DELETE_DELAY_S
    assert not deletes.due(clock.now, running=False, receiving=False), "not before the pause ends"
    assert deletes.due_at() == clock.now - DELETE_DELAY_S + 1.0
    deletes.flush()
    assert len(deletes) == 2, "flush waits for the pause too"
    clock.now += 1.0
    assert deletes.due(clock.now, running=True, receiving=True)
    deletes.flush()
    assert len(deletes) == 2 and deletes.retry_at == clock.now + 2.0, "the pause doubles"
    deletes.flush(last=True)
    assert len(deletes) == 0 and broker.batches == [], "the last flush gives up: they will be delivered again"
    broker.failing = False
    message = received(broker, 1)[0]
    deletes.add(message)
    deletes.flush(last=True)
    assert broker.batches == [1]


# -- the outbox ----------------------------------------------------------------------------

def settlement(n: int) -> Done:
    return Done(n, Settlement(Action.DELETE, job_id=str(n)))


def outbox() -> tuple[Outbox, list[list[Any]], Clock]:
    sent: list[list[Any]] = []
    clock = Clock()
    return Outbox(lambda events: sent.append(list(events)), clock=clock), sent, clock


def test_the_outbox_sends_at_once_when_nothing_more_waits_to_run_or_it_is_urgent() -> None:
    box, sent, _ = outbox()
    box.put(settlement(1), more_to_run=False)
    assert sent == [[settlement(1)]]
    box.put(settlement(2), more_to_run=True)
    assert len(sent) == 1 and box.kept == [settlement(2)]
    box.put(settlement(3), more_to_run=True, urgent=True)  # a recorded failure: it goes at once
    assert sent[1] == [settlement(2), settlement(3)] and box.kept == []
    box.put(settlement(4), more_to_run=True)
    box.send_now([settlement(5), Recycle("stuck")])  # a stuck thread's settlement and the recycle
    assert sent[2] == [settlement(4), settlement(5), Recycle("stuck")] and box.kept == []
    box.put(settlement(6), more_to_run=True)
    box.put(None, more_to_run=False)  # a withdrawn request, then nothing more: what is kept goes
    assert sent[3] == [settlement(6)]


def test_the_outbox_keeps_answers_while_jobs_wait_until_a_batch_or_their_delay() -> None:
    box, sent, clock = outbox()
    for n in range(protocol.BATCH_SETTLEMENTS - 1):
        box.put(settlement(n), more_to_run=True)
    assert sent == []
    box.put(settlement(99), more_to_run=True)
    assert len(sent) == 1 and len(sent[0]) == protocol.BATCH_SETTLEMENTS
    box.put(settlement(1), more_to_run=True)
    clock.now += protocol.SETTLEMENT_DELAY_S / 2
    box.flush_late()
    box.put(settlement(2), more_to_run=True)
    assert len(sent) == 1, "not yet: the first waited half its delay"
    clock.now += protocol.SETTLEMENT_DELAY_S / 2
    box.put(settlement(3), more_to_run=True)
    assert sent[1] == [settlement(1), settlement(2), settlement(3)], "the first waited its delay: all go"
    box.put(settlement(4), more_to_run=True)
    clock.now += protocol.SETTLEMENT_DELAY_S
    box.flush_late()
    assert sent[2] == [settlement(4)], "the late sender's look sends what waited while a long job runs"
    box.flush()
    assert len(sent) == 3, "nothing kept: nothing sent"


# -- the protocol --------------------------------------------------------------------------

def test_each_message_crosses_the_pipe_as_its_named_type_pickled_as_a_plain_tuple() -> None:
    message = ReceivedMessage(QUEUE, "id-1", "receipt-1", "body", 1)
    said: list[protocol.Said] = [Run(1, message), Fail(2, message, ValueError("boom"), 1.5), Exit(), Ready(42),
                                 settlement(3), Recycle("stuck")]
    left, right = multiprocessing.Pipe(duplex=True)
    sender, receiver = Channel(left), Channel(right)
    try:
        sender.send(said)
        assert receiver.ready(5)
        got = receiver.recv()
        assert [type(item) for item in got] == [type(item) for item in said]
        assert got[0] == said[0] and isinstance(got[0], Run) and got[0].message == message
        assert got[4] == settlement(3)
        assert isinstance(got[1], Fail) and str(got[1].error) == "boom" and got[1].duration_s == 1.5
        sender.send([Done(7, Settlement(Action.DELETE))])
        sent = right.recv_bytes()
        assert b"sqjobs.worker.protocol" not in sent, "a named type in the pickle costs microseconds a message"
        assert pickle.loads(sent) == [(7, Settlement(Action.DELETE), "done")]
    finally:
        sender.close()
        receiver.close()


SEAM_MODULES = ["worker/loop.py", "worker/jobprocess.py", "worker/inline.py", "worker/handover.py",
                "worker/deletes.py"]
MESSAGE_NAMES = {"request", "requests", "event", "item", "raw"}


def positional_reads(source: str) -> list[str]:
    """Reads of a protocol message by position: ``event[1]``, ``request[0] == "run"``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                isinstance(node.slice.value, int) and isinstance(node.value, ast.Name) and \
                node.value.id in MESSAGE_NAMES:
            found.append(ast.unparse(node))
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Subscript) and any(
                isinstance(c, ast.Constant) and isinstance(c.value, str) for c in node.comparators):
            found.append(ast.unparse(node))
    return found


def test_no_seam_module_reads_a_protocol_message_by_position() -> None:
    assert positional_reads('if event[0] == "done":\n    settle(event[1], event[2])\n') == [
        "event[0] == 'done'", "event[0]", "event[1]", "event[2]"]
    for name in SEAM_MODULES:
        assert positional_reads((ROOT / "sqjobs" / name).read_text()) == [], name
