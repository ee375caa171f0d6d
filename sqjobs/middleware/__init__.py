"""Middleware: the base class and chain, and the built-ins sqjobs installs (status tracking,
metrics, cancellation, unique keys). A middleware is handed the app or what it needs; it never
imports the worker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exporter

#: Public name -> the module of this package that defines it (imported when first used).
_EXPORTS = {"Middleware": "base", "MiddlewareChain": "base"}
__all__ = ["Middleware", "MiddlewareChain"]

if TYPE_CHECKING:
    from .base import Middleware, MiddlewareChain

__getattr__ = exporter(__name__, _EXPORTS)
