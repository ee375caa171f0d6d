"""Middleware: the base class and chain, and the built-ins sqjobs installs (status tracking,
metrics, cancellation, unique keys). A middleware is handed the app or what it needs; it never
imports the worker."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module of this package that defines it (imported when first used).
_EXPORTS = {"Middleware": "base", "MiddlewareChain": "base"}
__all__ = ["Middleware", "MiddlewareChain"]

if TYPE_CHECKING:
    from .base import Middleware, MiddlewareChain


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
