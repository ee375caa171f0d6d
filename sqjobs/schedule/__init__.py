"""Periodic jobs and jobs for later: cron expressions read in a time zone, the beater that sends
them, and jobs held in the status database until the broker can take them. It may import the
top level, brokers and status."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exporter

#: Public name -> the module of this package that defines it (imported when first used).
_EXPORTS = {"Schedule": "cron"}
__all__ = ["Schedule"]

if TYPE_CHECKING:
    from .cron import Schedule

__getattr__ = exporter(__name__, _EXPORTS)
