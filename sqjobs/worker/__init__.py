"""The worker: receive, run, settle. It owns the loop, the job process and the protocol between them,
the attempt (runner, execution, time limits), the heartbeat and eager mode. It may import the top
level, brokers, status and middleware; nothing but the app, the CLI and the daemon imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exporter

#: Public name -> the module of this package that defines it (imported when first used).
_EXPORTS = {"Worker": "loop"}
__all__ = ["Worker"]

if TYPE_CHECKING:
    from .loop import Worker

__getattr__ = exporter(__name__, _EXPORTS)
