"""Brokers by URL: ``sqlite:///PATH``, ``sqs://`` (or ``sqs``), ``memory://``.

(``eager://`` is not a broker: it is a way of sending, chosen by the application.)
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError
from .base import Broker, OutgoingMessage, QueueStats, ReceivedMessage, dead_letter_name

__all__ = ["Broker", "OutgoingMessage", "QueueStats", "ReceivedMessage", "dead_letter_name", "create_broker"]


def create_broker(url: str, sqs_options: Mapping[str, Any] | None = None) -> Broker:
    """Return a new broker for ``url``; ``sqs_options`` are the values of an ``[sqs]`` config section.

    Raises ConfigError for a URL no broker answers to. Each broker module is
    imported only when its URL is used (boto3 only for SQS).
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
    if url in ("sqs://", "sqs"):
        from .sqs import SQSBroker

        return SQSBroker.from_options(sqs_options)
    raise ConfigError(f"unknown broker URL {url!r}; use sqlite:///PATH, sqs, memory:// or eager://")
