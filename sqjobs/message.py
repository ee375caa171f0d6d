"""The wire format: base64 of UTF-8 JSON ``{"id", "name", "args", "kwargs"}``.

Producers in other languages depend on this format, so it only ever grows
optional fields. ``name`` is the only required field: ``id`` falls back to the
broker's message id, ``args`` to ``[]`` and ``kwargs`` to ``{}``; an empty
list for ``kwargs`` (what PHP's ``json_encode`` makes of an empty array) means
no keyword arguments. Fields a
decoder does not know are ignored. A body that is plain JSON (not base64) is
accepted too.

A job id is at most :data:`ID_MAX_CHARS` characters (the status row's key)
and holds no control character (NUL, line breaks, ...) nor lone surrogate:
a received message whose ``id`` breaks this is malformed (it goes to the
dead-letter queue unrun, whether or not its job is tracked), and a producer
here cannot send one (:class:`~sqjobs.errors.InvalidJobIdError`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import InvalidJobIdError, MalformedMessageError, MessageTooLargeError

#: Version of the format written by this encoder (readers accept its absence).
FORMAT_VERSION = 1

#: Longest job id, in characters: the key of a status row (sqjobs' own ids are 32 hex characters,
#: SQS message ids 36), so that a tracked job's row can always be written.
ID_MAX_CHARS = 128


@dataclass(frozen=True)
class JobMessage:
    """One job to run: what the wire carries, decoded."""

    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Optional fields the decoder knew nothing about are not kept; these are.
    extra: dict[str, Any] = field(default_factory=dict)


def new_job_id() -> str:
    """Return a fresh job id (32 hex characters)."""
    return uuid.uuid4().hex


def check_json_value(value: Any, where: str) -> None:
    """Raise TypeError naming ``where`` if ``value`` is not strict JSON.

    Strict means: None, bool, int, finite float, str, lists/tuples of those and
    dicts with string keys. Anything else would be changed or lost on the way.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} is {value!r}, which JSON cannot carry")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_json_value(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has key {key!r}: JSON object keys must be strings")
            check_json_value(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is of type {type(value).__name__} ({value!r:.60}), which JSON cannot carry; "
        "pass plain data (str, int, float, bool, None, list, dict)"
    )


def job_id_problem(job_id: str) -> str | None:
    """Say what makes ``job_id`` unusable (too long, a control character), or None when it is fine."""
    if len(job_id) > ID_MAX_CHARS:
        return f"is {len(job_id)} characters, over {ID_MAX_CHARS}"
    if job_id.isascii() and job_id.isprintable():
        return None  # the usual case, checked at once
    for position, char in enumerate(job_id):
        category = unicodedata.category(char)
        if category == "Cc":
            return f"holds control character U+{ord(char):04X} at position {position}"
        if category == "Cs":
            return f"holds a lone surrogate U+{ord(char):04X} at position {position}"
    return None


def check_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Raise TypeError naming the first argument that is not strict JSON."""
    for index, value in enumerate(args):
        check_json_value(value, f"argument {index}")
    for key, value in kwargs.items():
        check_json_value(value, f"argument {key!r}")


def encode(message: JobMessage, extra: Mapping[str, Any] | None = None) -> str:
    """Return the message body for ``message``: base64 of its UTF-8 JSON.

    Raises TypeError when an argument is not strict JSON, InvalidJobIdError
    when the job id is too long or holds a control character.
    """
    problem = job_id_problem(message.id)
    if problem is not None:
        raise InvalidJobIdError(f"job id {message.id[:40]!r}{'...' if len(message.id) > 40 else ''} {problem}; "
                                f"use at most {ID_MAX_CHARS} characters, none of them control characters")
    check_arguments(message.args, message.kwargs)
    payload: dict[str, Any] = {
        "id": message.id,
        "name": message.name,
        "args": list(message.args),
        "kwargs": dict(message.kwargs),
        "v": FORMAT_VERSION,
    }
    payload.update(message.extra)
    if extra:
        payload.update(extra)
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def check_size(body: str, limit_bytes: int) -> None:
    """Raise MessageTooLargeError if ``body`` is longer than ``limit_bytes``."""
    size = len(body.encode("utf-8"))
    if size > limit_bytes:
        raise MessageTooLargeError(
            f"message is {size} bytes encoded, over the broker's limit of {limit_bytes} bytes; "
            "pass a reference (a key, a URL) instead of the data itself"
        )


_KNOWN_FIELDS = {"id", "name", "args", "kwargs", "v"}


def _body_to_json_text(body: str) -> str:
    stripped = body.strip()
    if stripped.startswith("{"):
        return stripped
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessageError("body is neither base64 nor JSON") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessageError("base64 content is not UTF-8 text") from None


def decode(body: str, fallback_id: str) -> JobMessage:
    """Read a message body; ``fallback_id`` (the broker's message id) is used when it has no id.

    Raises MalformedMessageError with a reason fit for the dead-letter queue.
    """
    try:
        data = json.loads(_body_to_json_text(body))
    except json.JSONDecodeError as exc:
        raise MalformedMessageError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedMessageError(f"body is JSON {type(data).__name__}, not an object")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedMessageError("message has no job 'name' (a non-empty string)")
    args = data.get("args")
    if args is None:
        args = []
    if not isinstance(args, list):
        raise MalformedMessageError(f"'args' is a JSON {type(args).__name__}, not a list")
    kwargs = data.get("kwargs")
    if kwargs is None or kwargs == []:
        # PHP's json_encode writes an empty array as [] even where an object is meant.
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise MalformedMessageError(f"'kwargs' is a JSON {type(kwargs).__name__}, not an object")
    job_id = data.get("id")
    if not isinstance(job_id, str) or not job_id:
        job_id = fallback_id
    else:
        problem = job_id_problem(job_id)
        if problem is not None:
            raise MalformedMessageError(f"'id' {problem}")
    extra = {key: value for key, value in data.items() if key not in _KNOWN_FIELDS}
    return JobMessage(name=name, args=args, kwargs=kwargs, id=job_id, extra=extra)
