"""Cron + time zone -> fire instants, across DST changes (pure: no clock, no I/O)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sqjobs.errors import JobDefinitionError
from sqjobs.schedule.cron import Schedule


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def local(schedule: Schedule, instants: list[datetime]) -> list[str]:
    return [i.astimezone(schedule.zone).strftime("%m-%d %H:%M%z") for i in instants]


def test_the_seed_example_fires_at_00_01_madrid_time() -> None:
    schedule = Schedule("1 0 * * *", "Europe/Madrid")
    assert local(schedule, schedule.next_after(utc(2025, 12, 31, 12), 2)) == ["01-01 00:01+0100", "01-02 00:01+0100"]
    assert schedule.next_after(utc(2026, 7, 1), 1) == [utc(2026, 7, 1, 22, 1)]  # summer: UTC+2


def test_a_wall_time_skipped_by_the_spring_change_fires_once_at_the_change() -> None:
    schedule = Schedule("30 2 * * *", "Europe/Madrid")  # 2026-03-29 02:00 -> 03:00
    fires = schedule.next_after(utc(2026, 3, 27), 4)
    assert local(schedule, fires) == ["03-27 02:30+0100", "03-28 02:30+0100", "03-29 03:00+0200",
                                      "03-30 02:30+0200"]


def test_several_skipped_wall_times_fire_once_together() -> None:
    schedule = Schedule("0,30 2 * * *", "Europe/Madrid")
    fires = schedule.between(utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))
    assert local(schedule, fires) == ["03-29 03:00+0200"]


def test_a_repeated_wall_time_fires_once_at_its_first_occurrence() -> None:
    schedule = Schedule("30 2 * * *", "Europe/Madrid")  # 2026-10-25 03:00 -> 02:00
    fires = schedule.between(utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))
    assert local(schedule, fires) == ["10-25 02:30+0200"]


def test_hour_star_jobs_follow_real_elapsed_time_across_both_changes() -> None:
    schedule = Schedule("0 * * * *", "Europe/Madrid")
    autumn = schedule.between(utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 3, 30))
    assert [i.hour for i in autumn] == [0, 1, 2, 3]  # every real hour, 02:00 twice in local time
    assert local(schedule, autumn)[:2] == ["10-25 02:00+0200", "10-25 02:00+0100"]
    spring = schedule.between(utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 2, 30))
    assert [i.hour for i in spring] == [0, 1, 2]
    assert local(schedule, spring) == ["03-29 01:00+0100", "03-29 03:00+0200", "03-29 04:00+0200"]


def test_quarter_hours_in_a_repeated_hour_come_out_in_real_order() -> None:
    schedule = Schedule("*/15 * * * *", "Europe/Madrid")
    fires = schedule.next_after(utc(2026, 10, 24, 23, 50), 9)
    assert fires == sorted(fires) and len(set(fires)) == 9
    assert local(schedule, fires)[3:6] == ["10-25 02:45+0200", "10-25 02:00+0100", "10-25 02:15+0100"]


def test_next_after_starting_inside_the_first_copy_of_a_repeated_hour() -> None:
    schedule = Schedule("0 * * * *", "Europe/Madrid")
    assert schedule.next_after(utc(2026, 10, 25, 0, 45), 2) == [utc(2026, 10, 25, 1), utc(2026, 10, 25, 2)]


def test_six_fields_read_seconds_last() -> None:
    schedule = Schedule("* * * * * */20", "UTC")
    assert schedule.next_after(utc(2026, 1, 1), 3) == [utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40),
                                                       utc(2026, 1, 1, 0, 1, 0)]


def test_between_is_exclusive_then_inclusive() -> None:
    schedule = Schedule("0 12 * * *", "UTC")
    assert schedule.between(utc(2026, 1, 1, 12), utc(2026, 1, 2, 12)) == [utc(2026, 1, 2, 12)]


@pytest.mark.parametrize(("expression", "zone", "error"), [
    ("61 * * * *", "UTC", "not a valid cron expression"),
    ("* * *", "UTC", "not a valid cron expression"),
    ("0 0 * * *", "Mars/Olympus", "not an IANA time zone"),
])
def test_bad_schedules_are_refused(expression: str, zone: str, error: str) -> None:
    with pytest.raises(JobDefinitionError, match=error):
        Schedule(expression, zone)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Schedule("* * * * *").next_after(datetime(2026, 1, 1))
