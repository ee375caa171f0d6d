"""The current time, the one way sqjobs reads it for timestamps."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)
