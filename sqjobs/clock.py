"""The current time, the one way sqjobs reads it for timestamps."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def duration_text(seconds: float) -> str:
    """``seconds`` as a person reads it, never in exponent form.

    ``34560000 s (400 days)``, ``150 s (2.5 min)``, ``0.5 s``.
    """
    text = f"{seconds:.3f}".rstrip("0").rstrip(".") + " s"
    for unit_s, unit in ((86400, "days"), (3600, "h"), (60, "min")):
        if abs(seconds) >= 2 * unit_s:
            return f"{text} ({seconds / unit_s:.1f}".removesuffix(".0") + f" {unit})"
    return text
