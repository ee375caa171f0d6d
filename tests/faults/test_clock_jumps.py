"""Jumps of the wall clock, injected: beaters stepped with ``tick(now)``, the embedded broker with its clock.

A beater whose clock jumps back sends no fire time twice and, once the
clock passes the last fire time sent, skips none; one whose clock jumps
ahead sends the fire times it jumped over exactly as the job's
``catch_up`` says (``all``, the latest, or none), each once. A delayed
message never becomes visible early on a backward jump, and a forward jump
makes it visible once: each is received exactly once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sqjobs import Job, PeriodicJob
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.message import decode
from sqjobs.schedule.beater import Beater, BeatStore
from tests.support import Clock

pytestmark = pytest.mark.faults

START = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
GRACE_S = 30.0
STEP = timedelta(seconds=5)


def periodic(catch_up: str) -> type[Job]:
    """A job every 10 s with a unique name and ``catch_up``."""
    return type("Every10s", (PeriodicJob,), {"name": f"every10s-{uuid.uuid4().hex[:12]}", "queue": "beats",
                                             "schedule": "* * * * * */10", "catch_up": catch_up,
                                             "run": lambda self: None, "__module__": __name__})


def every_10_s(first: datetime, last: datetime) -> list[datetime]:
    """The fire times from ``first`` to ``last``, both included."""
    count = int((last - first).total_seconds() // 10) + 1
    return [first + timedelta(seconds=10 * i) for i in range(count)]


def ticks(beater: Beater, first: datetime, last: datetime) -> None:
    """Tick ``beater`` every 5 s of its clock from ``first`` to ``last``."""
    now = first
    while now <= last:
        beater.tick(now)
        now += STEP


def sent(broker: MemoryBroker) -> Counter:
    """How many times each fire time was sent to the ``beats`` queue."""
    return Counter(datetime.fromisoformat(decode(m.body, m.message_id).extra["scheduled_for"])
                   for m in broker.peek("beats", 100_000))


@pytest.mark.parametrize("catch_up", ["all", "latest", "none"])
def test_a_beater_whose_clock_jumps_back_sends_nothing_twice_and_skips_nothing(tmp_path: Path, catch_up: str) -> None:
    broker = MemoryBroker()
    beater = Beater(broker, [periodic(catch_up)], BeatStore(f"sqlite:///{tmp_path / 'beats.db'}"),
                    catch_up_grace_s=GRACE_S)
    ticks(beater, START, START + timedelta(minutes=2))
    # The clock is set back ten minutes (NTP stepping a fast clock back, an operator's mistake) and runs on.
    ticks(beater, START - timedelta(minutes=8), START + timedelta(minutes=4))
    counts = sent(broker)
    assert set(counts.values()) == {1}, "no fire time sent twice"
    assert sorted(counts) == every_10_s(START + timedelta(seconds=10), START + timedelta(minutes=4)), "none skipped"


@pytest.mark.parametrize(("catch_up", "missed_sent"), [("all", 716), ("latest", 1), ("none", 0)])
def test_a_beater_whose_clock_jumps_ahead_follows_the_catch_up_policy(tmp_path: Path, catch_up: str,
                                                                       missed_sent: int) -> None:
    broker = MemoryBroker()
    beater = Beater(broker, [periodic(catch_up)], BeatStore(f"sqlite:///{tmp_path / 'beats.db'}"),
                    catch_up_grace_s=GRACE_S)
    ticks(beater, START, START + timedelta(minutes=1))
    jumped = START + timedelta(hours=2, minutes=1)  # two hours ahead at once (a clock set to the wrong zone...)
    ticks(beater, jumped, jumped + timedelta(minutes=1))
    counts = sent(broker)
    assert set(counts.values()) == {1}, "no fire time sent twice"
    before = every_10_s(START + timedelta(seconds=10), START + timedelta(minutes=1))
    # At the jump, fire times at most GRACE_S old are on time; the older ones were jumped over (missed).
    on_time = every_10_s(jumped - timedelta(seconds=GRACE_S), jumped + timedelta(minutes=1))
    missed = every_10_s(START + timedelta(minutes=1, seconds=10), jumped - timedelta(seconds=GRACE_S + 10))
    assert len(missed) == 716
    expected = {"all": missed, "latest": missed[-1:], "none": []}[catch_up]
    assert len(expected) == missed_sent
    assert sorted(counts) == before + expected + on_time


def test_delayed_messages_through_clock_jumps_are_each_received_once_and_never_early(tmp_path: Path) -> None:
    clock = Clock()
    broker = SQLiteBroker(str(tmp_path / "queue.db"), clock=clock)
    start = clock.now
    due = {broker.send("q", f"m{i}", delay_s=10 * i): start + 10 * i for i in range(1, 31)}
    received: Counter = Counter()

    def step_to(now: float) -> None:
        clock.now = now
        while batch := broker.receive("q", 10, 0, 30):
            for message in batch:
                assert due[message.message_id] <= now, "never before its time on the clock"
                received[message.message_id] += 1
                broker.delete("q", message.receipt)

    for second in range(0, 101, 5):  # on time until +100 s
        step_to(start + second)
    assert sorted(received) == sorted(mid for mid, at in due.items() if at <= start + 100)
    for second in range(-3600, 101, 60):  # set back an hour: nothing shows early or again
        step_to(start + second)
        assert len(received) == 10
    step_to(start + 3600)  # then an hour ahead: the rest shows at once, each once
    assert sorted(received) == sorted(due) and set(received.values()) == {1}
    stats = broker.stats("q")
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)
    broker.close()
