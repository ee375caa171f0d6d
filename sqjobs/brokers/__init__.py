"""Brokers by URL: ``sqlite:///PATH``, ``sqs://`` (or ``sqs``), ``memory://``.

(``eager://`` is not a broker: it is a way of sending, chosen by the application.)
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError
from .base import Broker, OutgoingMessage, QueueStats, ReceivedMessage, dead_letter_name

__all__ = ["Broker", "OutgoingMessage", "QueueStats", "ReceivedMessage", "dead_letter_name", "create_broker",
           "broker_url_problem", "EAGER_URLS"]

#: Broker URLs that choose eager mode: each job runs inside ``.delay()`` (no broker is made).
EAGER_URLS = ("eager://", "eager")
_MEMORY_URLS = ("memory://", "memory")
_SQS_URLS = ("sqs://", "sqs")
_SQLITE_PREFIX = "sqlite:///"
#: The forms a broker URL takes, as errors list them.
URL_FORMS = "sqlite:///PATH, sqs, memory:// or eager://"


def broker_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a broker URL (``eager://`` included), or None when a broker answers to it.

    The config reader checks ``[sqjobs] broker`` with it, so that a mistyped
    URL is an error naming the file, section and key before anything starts.
    """
    if url.startswith(_SQLITE_PREFIX):
        return None if url[len(_SQLITE_PREFIX):] else f"names no file; use {_SQLITE_PREFIX}PATH"
    if url in (*_MEMORY_URLS, *_SQS_URLS, *EAGER_URLS):
        return None
    scheme = url.split("://", 1)[0] if "://" in url else ""
    unknown = f"unknown scheme {scheme!r}" if scheme else "not a broker URL"
    return f"{unknown}; use {URL_FORMS}"


def create_broker(url: str, sqs_options: Mapping[str, Any] | None = None) -> Broker:
    """Return a new broker for ``url``; ``sqs_options`` are the values of an ``[sqs]`` config section.

    Raises ConfigError for a URL no broker answers to (``eager://`` is no
    broker either). Each broker module is imported only when its URL is
    used (boto3 only for SQS).
    """
    if url.startswith(_SQLITE_PREFIX) and url != _SQLITE_PREFIX:
        from .sqlite import SQLiteBroker

        return SQLiteBroker(url[len(_SQLITE_PREFIX):])
    if url in _MEMORY_URLS:
        from .memory import MemoryBroker

        return MemoryBroker()
    if url in _SQS_URLS:
        from .sqs import SQSBroker

        return SQSBroker.from_options(sqs_options)
    problem = broker_url_problem(url) or "eager mode sends no message: it needs no broker"
    raise ConfigError(f"broker URL {url!r}: {problem}")
