"""The status database: job status rows, the handle that reads them, the database reached by URL,
sqjobs' own side tables and their upgrades. It may import the top level and brokers."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module of this package that defines it (imported when first used).
_EXPORTS = {"JobHandle": "handle", "Status": "states"}
__all__ = ["JobHandle", "Status"]

if TYPE_CHECKING:
    from .handle import JobHandle
    from .states import Status


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
