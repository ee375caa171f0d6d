"""The status database: job status rows, the handle that reads them, the database reached by URL,
sqjobs' own side tables and their upgrades. It may import the top level and brokers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exporter

#: Public name -> the module of this package that defines it (imported when first used).
_EXPORTS = {"JobHandle": "handle", "Status": "states"}
__all__ = ["JobHandle", "Status"]

if TYPE_CHECKING:
    from .handle import JobHandle
    from .states import Status

__getattr__ = exporter(__name__, _EXPORTS)
