"""Brokers by URL: ``sqlite:///PATH``, ``sqs://`` (or ``sqs``), ``memory://``, ``eager://``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Broker, OutgoingMessage, QueueStats, ReceivedMessage, dead_letter_name

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Broker", "OutgoingMessage", "QueueStats", "ReceivedMessage", "dead_letter_name", "create_broker"]


def create_broker(url: str, settings: Settings | None = None) -> Broker:
    """Return a new broker for ``url``; SQS options come from ``settings`` ([sqs] section).

    Raises ConfigError for a URL no broker answers to.
    """
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteBroker

        path = url[len("sqlite:///"):]
        if not path:
            raise ConfigError(f"broker URL {url!r} names no file; use sqlite:///PATH")
        return SQLiteBroker(path)
    if url in ("memory://", "memory"):
        from .memory import MemoryBroker

        return MemoryBroker()
    if url in ("eager://", "eager"):
        from .eager import EagerBroker

        return EagerBroker()
    if url in ("sqs://", "sqs"):
        from .sqs import SQSBroker

        return SQSBroker.from_settings(settings)
    raise ConfigError(f"unknown broker URL {url!r}; use sqlite:///PATH, sqs, memory:// or eager://")
