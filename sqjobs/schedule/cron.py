"""Cron expressions read in a time zone -> the real instants a periodic job fires at (pure, no I/O).

Rules, for the beater and for ``sqjobs schedule``:

- Each wall-clock time the expression matches fires once.
- A wall time skipped by a DST change (02:30 on the night clocks jump from
  02:00 to 03:00) fires once, at the change.
- A wall time that happens twice (the hour repeated when clocks go back)
  fires once, at its first occurrence.
- Expressions whose hour field is ``*`` follow real elapsed time instead: an
  hourly job fires in both copies of a repeated hour, and nothing fires in a
  skipped one, so the gaps between runs stay the same in real time.

Five fields (minute hour day month weekday) or six (with seconds last), as
croniter reads them. Instants are aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytz
from croniter import croniter

from ..errors import JobDefinitionError

#: How far past the n-th instant the search goes on, to catch repeated hours out of order.
_REORDER_WINDOW = timedelta(hours=3)
#: Most wall times looked at for one call: a guard against expressions that match almost never.
_MAX_WALL_TIMES = 1_000_000


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("instants must be timezone-aware")
    return instant.astimezone(timezone.utc)


@dataclass(frozen=True)
class Schedule:
    """A cron expression read in an IANA time zone."""

    expression: str
    timezone_name: str = "UTC"

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.expression):
            raise JobDefinitionError(f"schedule {self.expression!r} is not a valid cron expression")
        try:
            pytz.timezone(self.timezone_name)
        except pytz.UnknownTimeZoneError:
            raise JobDefinitionError(f"timezone {self.timezone_name!r} is not an IANA time zone name") from None

    @property
    def zone(self) -> pytz.BaseTzInfo:
        """The pytz time zone."""
        return pytz.timezone(self.timezone_name)

    @property
    def follows_elapsed_time(self) -> bool:
        """True when the hour field is ``*``: runs keep their real-time spacing across DST changes."""
        return self.expression.split()[1] == "*"

    def _wall_times(self, start: datetime) -> Iterator[datetime]:
        """Naive local wall times matching the expression, from ``start`` (naive) on."""
        walls = croniter(self.expression, start - timedelta(microseconds=1))
        for _ in range(_MAX_WALL_TIMES):
            yield walls.get_next(datetime)

    def _change_instant(self, wall: datetime) -> datetime:
        """For a wall time inside a DST gap, the UTC instant of the change (first local time after it)."""
        zone = self.zone
        low: datetime = zone.localize(wall, is_dst=False).astimezone(timezone.utc) - timedelta(hours=3)
        high = low + timedelta(hours=6)
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if middle.astimezone(zone).replace(tzinfo=None) >= wall:
                high = middle
            else:
                low = middle
        return high.replace(microsecond=0)

    def instants_for(self, wall: datetime) -> list[datetime]:
        """The UTC instants one matching wall time fires at (none, one or two)."""
        zone = self.zone
        try:
            return [zone.localize(wall, is_dst=None).astimezone(timezone.utc)]
        except pytz.AmbiguousTimeError:
            first = zone.localize(wall, is_dst=True).astimezone(timezone.utc)
            second = zone.localize(wall, is_dst=False).astimezone(timezone.utc)
            both = sorted({first, second})
            return both if self.follows_elapsed_time else both[:1]
        except pytz.NonExistentTimeError:
            return [] if self.follows_elapsed_time else [self._change_instant(wall)]

    def _near_a_change(self, instant: datetime) -> bool:
        """True when the zone's UTC offset changes within two hours of ``instant``."""
        zone = self.zone
        offsets = {(instant + timedelta(hours=h)).astimezone(zone).utcoffset() for h in (-2, 0, 2)}
        return len(offsets) > 1

    def next_after(self, after: datetime, count: int = 1) -> list[datetime]:
        """The first ``count`` fire instants strictly after ``after`` (aware), in order, as UTC."""
        after = _utc(after)
        local_start = after.astimezone(self.zone).replace(tzinfo=None)
        if self._near_a_change(after):
            local_start -= _REORDER_WINDOW  # second copies of a repeated hour may still be ahead
        found: set[datetime] = set()
        for wall in self._wall_times(local_start):
            instants = [i for i in self.instants_for(wall) if i > after]
            found.update(instants)
            # Walls come in order; their instants are in order too, except inside a
            # repeated hour (two instants per wall), so stop only after a plain one.
            if len(found) >= count and len(instants) == 1:
                ordered = sorted(found)
                if instants[0] >= ordered[count - 1]:
                    return ordered[:count]
        return sorted(found)[:count]

    def between(self, after: datetime, until: datetime) -> list[datetime]:
        """Every fire instant in ``(after, until]``, in order, as UTC."""
        after, until = _utc(after), _utc(until)
        result: list[datetime] = []
        cursor = after
        while True:
            batch = self.next_after(cursor, 16)
            for instant in batch:
                if instant > until:
                    return result
                result.append(instant)
            if len(batch) < 16:
                return result
            cursor = batch[-1]
