"""The ``sqjobs`` command, one module per family of subcommands. It imports anything; nothing
imports it but the console script and Django's management command."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module of this package that defines it (imported when first used).
_EXPORTS = {"main": "commands"}
__all__ = ["main"]

if TYPE_CHECKING:
    from .commands import main


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
