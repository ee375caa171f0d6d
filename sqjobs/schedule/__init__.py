"""Periodic jobs and jobs for later: cron expressions read in a time zone, the beater that sends
them, and jobs held in the status database until the broker can take them. It may import the
top level, brokers and status."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module of this package that defines it (imported when first used).
_EXPORTS = {"Schedule": "cron"}
__all__ = ["Schedule"]

if TYPE_CHECKING:
    from .cron import Schedule


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
