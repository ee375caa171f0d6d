"""The worker: receive, run, settle. It owns the loop, the job process and the protocol between them,
the attempt (runner, execution, time limits), the heartbeat and eager mode. It may import the top
level, brokers, status and middleware; nothing but the app, the CLI and the daemon imports it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module of this package that defines it (imported when first used).
_EXPORTS = {"Worker": "loop"}
__all__ = ["Worker"]

if TYPE_CHECKING:
    from .loop import Worker


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
