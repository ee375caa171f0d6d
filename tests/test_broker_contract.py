"""The broker contract: the same tests for every broker (sqlite, memory, eager, and sqs when present)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sqjobs.brokers.base import (
    MAX_REASON_BYTES,
    ORIGIN_ATTRIBUTE,
    REASON_ATTRIBUTE,
    Broker,
    OutgoingMessage,
    dead_letter_name,
)
from tests.support import receive_all, send_many, wait_until


def test_send_then_receive_returns_the_body_with_receive_count_one(any_broker: Broker) -> None:
    message_id = any_broker.send("jobs", "hello")
    [message] = receive_all(any_broker, "jobs", 1)
    assert message.body == "hello"
    assert message.message_id == message_id
    assert message.receive_count == 1
    assert message.queue == "jobs"


def test_receive_on_an_empty_queue_returns_nothing(any_broker: Broker) -> None:
    any_broker.ensure_queue("empty")
    assert any_broker.receive("empty", 10, 0) == []


def test_received_message_is_hidden_until_its_visibility_timeout(any_broker: Broker) -> None:
    any_broker.send("jobs", "x")
    receive_all(any_broker, "jobs", 1, visibility_timeout_s=30)
    assert any_broker.receive("jobs", 10, 0) == []


def test_undeleted_message_comes_back_with_a_higher_receive_count(any_broker: Broker) -> None:
    any_broker.send("jobs", "x")
    receive_all(any_broker, "jobs", 1, visibility_timeout_s=1)
    [again] = receive_all(any_broker, "jobs", 1, visibility_timeout_s=30)
    assert again.body == "x"
    assert again.receive_count == 2


def test_deleted_message_never_comes_back(any_broker: Broker) -> None:
    any_broker.send("jobs", "x")
    [message] = receive_all(any_broker, "jobs", 1, visibility_timeout_s=1)
    any_broker.delete("jobs", message.receipt)
    assert any_broker.receive("jobs", 10, 1.5) == []
    assert any_broker.stats("jobs").visible == 0


def test_change_visibility_to_zero_hands_a_message_back_at_once(any_broker: Broker) -> None:
    any_broker.send("jobs", "x")
    [message] = receive_all(any_broker, "jobs", 1, visibility_timeout_s=60)
    any_broker.change_visibility("jobs", message.receipt, 0)
    [again] = receive_all(any_broker, "jobs", 1)
    assert again.body == "x"


def test_release_hands_unstarted_messages_back_and_takes_the_receive_back_where_it_can(
        any_broker: Broker) -> None:
    any_broker.send_batch("jobs", [OutgoingMessage("a"), OutgoingMessage("b")])
    got = receive_all(any_broker, "jobs", 2, visibility_timeout_s=60)
    any_broker.release("jobs", [m.receipt for m in got])
    again = receive_all(any_broker, "jobs", 2)
    assert sorted(m.body for m in again) == ["a", "b"]
    expected = 1 if any_broker.exact_receive_counts else 2
    assert [m.receive_count for m in again] == [expected, expected]


def test_change_visibility_extends_the_hiding(any_broker: Broker) -> None:
    any_broker.send("jobs", "x")
    [message] = receive_all(any_broker, "jobs", 1, visibility_timeout_s=1)
    any_broker.change_visibility("jobs", message.receipt, 60)
    assert any_broker.receive("jobs", 10, 1.5) == []


def test_a_postponed_message_waits_out_its_delay_counted_as_delayed_not_in_flight(any_broker: Broker) -> None:
    any_broker.send("jobs", "retry me")
    [message] = receive_all(any_broker, "jobs", 1, visibility_timeout_s=60)
    any_broker.postpone("jobs", message.receipt, 1)
    if any_broker.scheme != "sqs":  # SQS counts both as not visible (see README, Amazon SQS)
        stats = any_broker.stats("jobs")
        assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 1)
    assert any_broker.receive("jobs", 10, 0, 60) == []
    [again] = receive_all(any_broker, "jobs", 1)
    assert (again.body, again.receive_count) == ("retry me", 2)


def test_requeue_puts_a_message_back_unrun_with_attributes_after_its_delay(any_broker: Broker) -> None:
    any_broker.send("jobs", "not mine", attributes={"kept": "yes"})
    [message] = receive_all(any_broker, "jobs", 1, visibility_timeout_s=60)
    any_broker.requeue("jobs", message, 1, {"sqjobs-refusals": "1"})
    assert any_broker.receive("jobs", 10, 0, 60) == []
    [again] = receive_all(any_broker, "jobs", 1)
    assert again.body == "not mine"
    assert again.attributes["sqjobs-refusals"] == "1" and again.attributes["kept"] == "yes"
    assert again.receive_count == 1, "the refused receive does not count"


def test_send_batch_keeps_every_message(any_broker: Broker) -> None:
    bodies = [f"m{i}" for i in range(25)]
    ids = []
    for start in range(0, 25, 10):
        ids += any_broker.send_batch("jobs", [OutgoingMessage(b) for b in bodies[start:start + 10]])
    assert len(set(ids)) == 25
    got = receive_all(any_broker, "jobs", 25)
    assert sorted(m.body for m in got) == sorted(bodies)


def test_delete_batch_and_change_visibility_batch(any_broker: Broker) -> None:
    any_broker.send_batch("jobs", [OutgoingMessage(f"m{i}") for i in range(6)])
    got = receive_all(any_broker, "jobs", 6, visibility_timeout_s=60)
    any_broker.delete_batch("jobs", [m.receipt for m in got[:3]])
    any_broker.change_visibility_batch("jobs", [m.receipt for m in got[3:]], 0)
    back = receive_all(any_broker, "jobs", 3)
    assert sorted(m.body for m in back) == sorted(m.body for m in got[3:])


def test_delayed_message_is_not_visible_before_its_delay(any_broker: Broker) -> None:
    any_broker.send("jobs", "later", delay_s=60)
    assert any_broker.receive("jobs", 10, 0) == []
    assert any_broker.stats("jobs").delayed == 1


def test_a_short_delay_passes(any_broker: Broker) -> None:
    any_broker.send("jobs", "soon", delay_s=1)
    [message] = receive_all(any_broker, "jobs", 1)
    assert message.body == "soon"


def test_stats_count_visible_in_flight_and_dead(any_broker: Broker) -> None:
    any_broker.send_batch("jobs", [OutgoingMessage(f"m{i}") for i in range(3)])
    [first] = any_broker.receive("jobs", 1, 0.5, 60) or receive_all(any_broker, "jobs", 1, 60)
    any_broker.dead_letter("jobs", first, "bad")

    def settled() -> bool:
        stats = any_broker.stats("jobs")
        return (stats.visible, stats.dead) == (2, 1)

    wait_until(settled, what="stats to show 2 visible and 1 dead")
    receive_all(any_broker, "jobs", 1, 60)
    wait_until(lambda: any_broker.stats("jobs").in_flight >= 1, what="one message in flight")


def test_dead_letter_moves_the_message_with_its_reason(any_broker: Broker) -> None:
    any_broker.send("jobs", "poison")
    [message] = receive_all(any_broker, "jobs", 1)
    any_broker.dead_letter("jobs", message, "malformed message: body is neither base64 nor JSON")
    [dead] = receive_all(any_broker, dead_letter_name("jobs"), 1)
    assert dead.body == "poison"
    assert dead.attributes[REASON_ATTRIBUTE] == "malformed message: body is neither base64 nor JSON"
    assert dead.attributes[ORIGIN_ATTRIBUTE] == "jobs"
    assert any_broker.receive("jobs", 10, 1.5, 30) == []


def test_requeue_dead_message_moves_that_one_back_and_leaves_the_others(any_broker: Broker) -> None:
    any_broker.send_batch("jobs", [OutgoingMessage(f"poison {n}") for n in range(3)])
    for message in receive_all(any_broker, "jobs", 3):
        any_broker.dead_letter("jobs", message, "refused")
    dead = {m.body: m for m in receive_all(any_broker, dead_letter_name("jobs"), 3, visibility_timeout_s=0)}
    assert not any_broker.requeue_dead_message("jobs", "no-such-id")
    assert any_broker.requeue_dead_message("jobs", dead["poison 1"].message_id)
    [back] = receive_all(any_broker, "jobs", 1)
    assert back.body == "poison 1" and REASON_ATTRIBUTE not in back.attributes
    left = receive_all(any_broker, dead_letter_name("jobs"), 2)
    assert sorted(m.body for m in left) == ["poison 0", "poison 2"]


def test_peek_shows_messages_without_claiming_them(any_broker: Broker) -> None:
    any_broker.send("jobs", "look")
    wait_until(lambda: any_broker.peek("jobs", 10), what="peek to show the message")
    [message] = receive_all(any_broker, "jobs", 1)
    assert message.body == "look"


def test_purge_empties_the_queue(any_broker: Broker) -> None:
    any_broker.send_batch("jobs", [OutgoingMessage(f"m{i}") for i in range(5)])
    any_broker.purge("jobs")
    wait_until(lambda: any_broker.stats("jobs").visible == 0, what="purge")
    assert any_broker.receive("jobs", 10, 0.5) == []


def test_queues_lists_the_queues_but_not_their_dead_letter_queues(any_broker: Broker) -> None:
    any_broker.ensure_queue("alpha")
    any_broker.send("beta", "x")
    names = any_broker.queues()
    assert "alpha" in names and "beta" in names
    assert dead_letter_name("alpha") not in names


def test_ensure_queue_is_idempotent(any_broker: Broker) -> None:
    any_broker.ensure_queue("jobs")
    any_broker.ensure_queue("jobs")
    any_broker.send("jobs", "x")
    assert len(receive_all(any_broker, "jobs", 1)) == 1


def test_interrupt_cuts_a_waiting_receive_short(any_broker: Broker) -> None:
    any_broker.ensure_queue("idle")
    timer = threading.Timer(0.2, any_broker.interrupt)
    timer.start()
    started = time.monotonic()
    assert any_broker.receive("idle", 1, 10) == []
    timer.join()
    assert time.monotonic() - started < 9


def test_concurrent_receivers_never_share_a_message(any_broker: Broker) -> None:
    any_broker.send_batch("jobs", [OutgoingMessage(f"m{i}") for i in range(10)])
    any_broker.send_batch("jobs", [OutgoingMessage(f"m{i}") for i in range(10, 20)])
    seen: list[str] = []
    lock = threading.Lock()

    def consume() -> None:
        for _ in range(20):
            for message in any_broker.receive("jobs", 3, 0.2, 60):
                with lock:
                    seen.append(message.body)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == sorted(f"m{i}" for i in range(20))


def test_a_long_dead_letter_reason_is_cut_to_the_room_kept_for_it(any_broker: Broker) -> None:
    any_broker.send("jobs", "poison")
    [message] = receive_all(any_broker, "jobs", 1)
    any_broker.dead_letter("jobs", message, "failed after 1 attempt(s): ValueError: " + "ü" * 2000 + "\x00")
    [dead] = receive_all(any_broker, dead_letter_name("jobs"), 1)
    reason = dead.attributes[REASON_ATTRIBUTE]
    assert reason.startswith("failed after 1 attempt(s): ValueError: üü") and reason.endswith("ü [...]")
    assert MAX_REASON_BYTES - 1 <= len(reason.encode("utf-8")) <= MAX_REASON_BYTES


def test_a_bulk_send_with_an_argument_json_cannot_carry_sends_nothing(any_broker: Broker, tmp_path: Path) -> None:
    from tests import jobs_for_tests

    out = str(tmp_path / "out.txt")
    calls = [((out, f"t{i}"), {}) for i in range(15)] + [((out, {"when": float("inf")}), {})]
    with pytest.raises(TypeError, match=r"argument 1\['when'\] is inf"):
        send_many(any_broker, jobs_for_tests.record_job.job_class, calls, queue="bulk")
    assert any_broker.stats("bulk").visible == 0
    assert any_broker.receive("bulk", 10, 0.5) == []
