"""The ``sqjobs`` command, one module per family of subcommands. It imports anything; nothing
imports it but the console script and Django's management command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exporter

#: Public name -> the module of this package that defines it (imported when first used).
_EXPORTS = {"main": "commands"}
__all__ = ["main"]

if TYPE_CHECKING:
    from .commands import main

__getattr__ = exporter(__name__, _EXPORTS)
