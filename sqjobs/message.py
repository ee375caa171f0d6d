"""The wire format: base64 of UTF-8 JSON ``{"id", "name", "args", "kwargs"}``.

Producers in other languages depend on this format, so it only ever grows
optional fields. ``name`` is the only required field: ``id`` falls back to the
broker's message id, ``args`` to ``[]`` and ``kwargs`` to ``{}``; an empty
list for ``kwargs`` (what PHP's ``json_encode`` makes of an empty array) means
no keyword arguments. Fields a decoder does not know are ignored. A body
that is plain JSON (not base64) is accepted too.

A job id keeps :data:`ID_RULE`: at most :data:`ID_MAX_CHARS` characters (the
status row's key), letters and digits of any alphabet and ``- _ . : @``,
starting with a letter or digit, so that it can key a row, end a URL path
(``/jobs/ID`` on the dashboard) and be typed as a command's argument as it
is. A received message whose ``id`` breaks the rule is malformed (it goes to
the dead-letter queue unrun, with the reason, whether or not its job is
tracked), and a producer here cannot send one
(:class:`~sqjobs.errors.InvalidJobIdError`).

An optional ``headers`` object (string keys, JSON values) travels with a
message; middleware reads and writes it, and a producer in any language may
send one. What sqjobs itself puts there is named ``sqjobs-...``; other
names are free for applications (a trace id, a user id). One such:
``"sqjobs-cancellable": true`` (:data:`CANCELLABLE_HEADER`) marks a message
that may be cancelled, so that a worker reads the status database for it
(:mod:`sqjobs.middleware.cancellation`); a worker that does not know it ignores it, as
any header.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .errors import InvalidJobIdError, MalformedMessageError, MessageTooLargeError

if TYPE_CHECKING:
    from .brokers.base import ReceivedMessage

#: Version of the format written by this encoder (readers accept its absence).
FORMAT_VERSION = 1

#: Longest job id, in characters: the key of a status row (sqjobs' own ids are 32 hex characters,
#: SQS message ids 36), so that a tracked job's row can always be written.
ID_MAX_CHARS = 128
#: What a job id may hold besides letters and digits: none of the characters a URL path, a shell or
#: a command line reads (``/``, ``?``, ``#``, ``%``, spaces...), and ``.`` or ``-`` never first.
ID_PUNCTUATION = "-_.:@"
#: The one rule for job ids, as errors state it.
ID_RULE = (f"a job id is 1 to {ID_MAX_CHARS} characters: letters and digits (any alphabet) and "
           f"{' '.join(ID_PUNCTUATION)}, starting with a letter or digit")
#: Ids that keep the rule in ASCII: the usual case, checked at once.
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]*\Z")

#: Header marking a message that may be cancelled (its value ``true``): see :mod:`sqjobs.middleware.cancellation`.
CANCELLABLE_HEADER = "sqjobs-cancellable"


def new_job_id() -> str:
    """Return a fresh job id: 32 hex characters, 128 random bits (as random as a uuid4, cheaper to make)."""
    return os.urandom(16).hex()


@dataclass
class JobMessage:
    """One job message: what the wire carries, and the queue it is on.

    ``headers`` (string keys, JSON values) travel with the message: middleware
    reads and writes them (a signature, a trace id). ``queue`` is not on the
    wire: it is where the message is sent or was received.
    """

    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_job_id)
    #: Optional fields the decoder knew nothing about are not kept; these are.
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    queue: str = field(default="", compare=False)
    #: The :func:`arguments_json` of ``args`` and ``kwargs``, when the producer made it once for both the
    #: body and the status row (their arguments do not change after); None: made where needed.
    arguments_text: str | None = field(default=None, compare=False, repr=False)


#: Deepest nesting of lists and objects JSON values may have, in an argument, a result or an
#: incoming message's fields: deep enough for any real data, and far from Python's recursion
#: limit, so that encoding, decoding and checking never raise RecursionError.
MAX_JSON_DEPTH = 500

#: UTF-16 surrogates: a JSON text may spell one alone (``"\\ud800"``), but UTF-8 cannot carry it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _string_problem(text: str) -> str | None:
    """Say why ``text`` cannot be carried as UTF-8 (None if it can)."""
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return f"holds a lone surrogate {found.group()!r} at position {found.start()}, which UTF-8 cannot carry"


def _scalar_problem(value: Any) -> str | None:
    """Say why ``value`` (not a list, tuple or dict) is not strict JSON (None if it is)."""
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, str):
        return _string_problem(value)
    if isinstance(value, float):
        return None if math.isfinite(value) else f"is {value!r}, which JSON cannot carry"
    return (f"is of type {type(value).__name__} ({value!r:.60}), which JSON cannot carry; "
            "pass plain data (str, int, float, bool, None, list, dict)")


def _children(value: list[Any] | tuple[Any, ...] | dict[Any, Any], path: str) -> list[tuple[str, Any]]:
    """Return ``(path, child)`` for each item of a list or dict; raise TypeError for a key JSON cannot carry."""
    if not isinstance(value, dict):
        return [(f"{path}[{index}]", child) for index, child in enumerate(value)]
    children = []
    for key, child in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{_shorten(path)} has key {key!r:.60}: JSON object keys must be strings")
        problem = _string_problem(key)
        if problem:
            raise TypeError(f"{_shorten(path)} has a key that {problem}")
        children.append((f"{path}[{key!r}]", child))
    return children


def _shorten(path: str, limit: int = 120) -> str:
    """``path`` as it goes into an error message: its middle left out if it is longer than ``limit``."""
    return path if len(path) <= limit else f"{path[:limit // 2]}...{path[-limit // 2:]}"


def check_json_value(value: Any, where: str) -> None:
    """Raise TypeError naming ``where`` if ``value`` is not strict JSON.

    Strict means: None, bool, int, finite float, str (without lone
    surrogates), lists/tuples of those and dicts with string keys, nested at
    most :data:`MAX_JSON_DEPTH` levels. Anything else would be changed or lost
    on the way. The walk is iterative: a value nested too deeply (or holding
    itself) raises TypeError, never RecursionError.
    """
    stack: list[tuple[str, Any, int]] = [(where, value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if not isinstance(item, (list, tuple, dict)):
            problem = _scalar_problem(item)
            if problem:
                raise TypeError(f"{_shorten(path)} {problem}")
            continue
        if depth >= MAX_JSON_DEPTH:
            raise TypeError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels of lists and objects")
        nested = []
        for child_path, child in _children(item, path):
            if isinstance(child, (list, tuple, dict)):
                nested.append((child_path, child, depth + 1))
                continue
            problem = _scalar_problem(child)
            if problem:
                raise TypeError(f"{_shorten(child_path)} {problem}")
        stack.extend(reversed(nested))


#: In a JSON text, what may spell a lone surrogate once parsed: an escape, or a surrogate itself.
_MAY_HOLD_SURROGATE = re.compile("\\\\u|[\ud800-\udfff]")


def _plainly_strict(text: str) -> bool:
    """True when the values parsed from JSON ``text`` are known strict JSON without the walk above.

    The fast path of :func:`decode`, which skips :func:`check_json_value`
    (and so every rule it applies) for most messages. The invariant, pinned
    by a property test (tests/test_message_properties.py): for a text that
    :func:`loads_strict` accepts, when this says True, check_json_value
    accepts every value parsed from it. It holds because of what parsing
    leaves to the walk: JSON gives only None, bool, int, float, str, list
    and dict with string keys; loads_strict refuses NaN, Infinity and
    floats too large; so a value can break only two rules, and each needs
    something in the text this looks for:

    - a lone surrogate needs a ``\\u`` escape, or a surrogate in the text;
    - nesting :data:`MAX_JSON_DEPTH` deep needs that many ``[`` and ``{``.

    A rule added to check_json_value must either be one parsing cannot
    break, or be looked for here too (the property test fails otherwise).
    """
    if text.count("[") + text.count("{") >= MAX_JSON_DEPTH:
        return False
    if text.isascii():  # a surrogate needs an escape then
        return "\\u" not in text
    return _MAY_HOLD_SURROGATE.search(text) is None


def job_id_problem(job_id: str) -> str | None:
    """Say how ``job_id`` breaks :data:`ID_RULE` (too long, a control character, a '/'...), or None when it keeps it."""
    if len(job_id) > ID_MAX_CHARS:
        return f"is {len(job_id)} characters, over {ID_MAX_CHARS}"
    if _PLAIN_ID.match(job_id):
        return None
    if not job_id:
        return "is empty"
    for position, char in enumerate(job_id):
        category = unicodedata.category(char)
        if category == "Cc":
            return f"holds control character U+{ord(char):04X} at position {position}"
        if category == "Cs":
            return f"holds a lone surrogate U+{ord(char):04X} at position {position}"
        if category[0] in "LN" or (position and (category[0] == "M" or char in ID_PUNCTUATION)):
            continue
        return f"starts with {char!r}" if position == 0 else f"holds {char!r} at position {position}"
    return None


def check_job_id(job_id: str) -> str:
    """Return ``job_id`` if it keeps :data:`ID_RULE`; raise InvalidJobIdError saying why if not."""
    problem = job_id_problem(job_id)
    if problem is not None:
        raise InvalidJobIdError(f"job id {job_id[:40]!r}{'...' if len(job_id) > 40 else ''} {problem}; {ID_RULE}")
    return job_id


def check_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Raise TypeError naming the first argument that is not strict JSON."""
    for index, value in enumerate(args):
        check_json_value(value, f"argument {index}")
    for key, value in kwargs.items():
        problem = _string_problem(key) if isinstance(key, str) else "is not a string"
        if problem:
            raise TypeError(f"the name of keyword argument {key!r:.60} {problem}")
        check_json_value(value, f"argument {key!r}")


#: Writes a message's JSON: compact, UTF-8 as is, NaN and Infinity refused (made once: it is used per message).
_JSON_WRITER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def arguments_json(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The compact JSON of ``{"args": [...], "kwargs": {...}}``, as a message body spells them.

    The producer makes it once per message that middleware sees before it is
    sent (``JobMessage.arguments_text``): :func:`encode` splices it into the
    body, however often the body is encoded again, and status tracking
    stores it in the job's row.
    """
    return _JSON_WRITER.encode({"args": list(args), "kwargs": dict(kwargs)})


#: The fields :func:`encode` writes itself, in this order; extra fields of other names follow them.
_OWN_FIELDS = frozenset(("id", "name", "args", "kwargs", "v", "headers"))
_VERSION_FIELD = ',"v":' + json.dumps(FORMAT_VERSION)
#: A string as _JSON_WRITER spells it (its own function for strings: ensure_ascii off).
_json_string = json.encoder.encode_basestring


def encode(message: JobMessage, extra: Mapping[str, Any] | None = None, arguments_checked: bool = False) -> str:
    """Return the message body for ``message``: base64 of its UTF-8 JSON.

    Raises TypeError when an argument is not strict JSON (not checked again
    when ``arguments_checked``: the caller just did), InvalidJobIdError when
    the job id breaks :data:`ID_RULE`.
    """
    check_job_id(message.id)
    if not arguments_checked:
        check_arguments(message.args, message.kwargs)
    if message.headers:
        _check_headers(message.headers, TypeError)
    if message.arguments_text is None or not _OWN_FIELDS.isdisjoint(message.extra) or (
            extra and not _OWN_FIELDS.isdisjoint(extra)):
        return _encode_whole(message, extra)
    # The text _encode_whole makes, with the arguments' JSON the producer made once spliced in.
    parts = ['{"id":', _json_string(message.id), ',"name":', _json_string(message.name), ",",
             message.arguments_text[1:-1], _VERSION_FIELD]
    if message.extra or extra:
        parts += [",", _JSON_WRITER.encode({**message.extra, **(extra or {})})[1:-1]]
    if message.headers:
        parts += [',"headers":', _JSON_WRITER.encode(dict(message.headers))]
    parts.append("}")
    return base64.b64encode("".join(parts).encode("utf-8")).decode("ascii")


def _encode_whole(message: JobMessage, extra: Mapping[str, Any] | None) -> str:
    """:func:`encode` building the whole payload (no arguments' JSON made before, or extra fields that reuse
    the names of its own fields: the last one wins)."""
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
    if message.headers:
        payload["headers"] = dict(message.headers)
    text = _JSON_WRITER.encode(payload)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def body_prefix(job_id: str) -> str:
    """The start of every body :func:`encode` makes for ``job_id``, to find its message in a broker.

    Base64 of ``{"id":"<id>",`` cut to whole groups of three bytes, so it can
    match a longer id too: decode what it finds. Bodies of other producers
    may start otherwise and are not found.
    """
    head = ('{"id":' + _JSON_WRITER.encode(job_id) + ",").encode("utf-8")
    return base64.b64encode(head[: len(head) // 3 * 3]).decode("ascii")


def check_size(body: str, limit_bytes: int, why: str = "") -> None:
    """Raise MessageTooLargeError if ``body`` is longer than ``limit_bytes``; ``why`` explains the limit."""
    size = len(body.encode("utf-8"))
    if size > limit_bytes:
        limit = f"the limit of {limit_bytes} bytes ({why})" if why else f"the broker's limit of {limit_bytes} bytes"
        raise MessageTooLargeError(
            f"message is {size} bytes encoded, over {limit}; "
            "pass a reference (a key, a URL) instead of the data itself"
        )


#: Start of the body a broker hands over for a stored message it cannot read (bytes that are not
#: UTF-8, a broken row): no job message starts with it, and :func:`decode` refuses it with the
#: reason that follows, so the worker dead-letters it like any malformed message.
UNDECODABLE_PREFIX = "!sqjobs-undecodable: "


def undecodable_body(reason: str) -> str:
    """Return the body that stands for a stored message that cannot be read, saying why."""
    return UNDECODABLE_PREFIX + reason


_KNOWN_FIELDS = {"id", "name", "args", "kwargs", "v", "headers"}


def _check_headers(headers: Any, error: type[Exception]) -> None:
    """Raise ``error`` unless ``headers`` is an object with string keys and strict JSON values."""
    if not isinstance(headers, dict):
        raise error(f"'headers' is a JSON {type(headers).__name__}, not an object")
    for key, value in headers.items():
        if not isinstance(key, str):
            raise error(f"'headers' has key {key!r}: header names are strings")
        try:
            check_json_value(value, f"header {key!r}")
        except TypeError as exc:
            raise error(str(exc)) from None


class _RefusedConstant(ValueError):
    """NaN or Infinity in a JSON text: Python's parser takes them, JSON does not have them."""


def _refuse_constant(name: str) -> Any:
    raise _RefusedConstant(f"holds {name}, which is not JSON (sqjobs refuses NaN and Infinity, as .delay() does)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _RefusedConstant(f"holds {literal[:40]}, a number too large for JSON (it would be {value})")
    return value


#: One decoder for every message (``json.loads`` with hooks would build one per call).
_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _decoded(text: str) -> Any:
    """``_STRICT_DECODER.decode(text)``, without its two whitespace scans for a text that has none around it."""
    try:
        value, end = _STRICT_DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return _STRICT_DECODER.decode(text)  # whitespace first, or not JSON: decode() says which, as json.loads
    if end == len(text):
        return value
    return _STRICT_DECODER.decode(text)  # something after the value: the same


def loads_strict(text: str) -> Any:
    """Parse JSON ``text`` the way sqjobs reads messages: NaN, Infinity, -Infinity and 1e400 are refused.

    Raises ValueError whose text completes a sentence about the text ("is not
    valid JSON: ...", "holds NaN, ...", "is nested too deeply ..."), and never
    RecursionError.
    """
    try:
        return _decoded(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON: {exc}") from None
    except _RefusedConstant:
        raise
    except RecursionError:
        raise ValueError(f"is nested too deeply (lists and objects more than {MAX_JSON_DEPTH} levels "
                         "deep)") from None
    except ValueError as exc:
        raise ValueError(f"cannot be read as JSON: {exc}") from None  # e.g. an integer of too many digits


def _body_to_json_text(body: str | bytes) -> str:
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessageError("body is not UTF-8 text") from None
    if body.startswith(UNDECODABLE_PREFIX):
        raise MalformedMessageError(body[len(UNDECODABLE_PREFIX):])
    stripped = body.strip()
    if stripped.startswith("{"):
        return stripped
    try:
        raw = binascii.a2b_base64(stripped, strict_mode=True)  # what b64decode(validate=True) checks, in C
    except (binascii.Error, ValueError):
        raise MalformedMessageError("body is neither base64 nor JSON") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessageError("base64 content is not UTF-8 text") from None


def _parse(text: str) -> Any:
    try:
        return loads_strict(text)
    except ValueError as exc:
        raise MalformedMessageError(f"body {exc}") from None


def _check_fields(data: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> None:
    """Refuse what ``.delay()`` would have refused: values that are not strict JSON, nested too deeply."""
    try:
        check_arguments(args, kwargs)
        for key, value in data.items():
            if key not in ("args", "kwargs"):
                check_json_value(value, f"field {key!r}")
    except TypeError as exc:
        raise MalformedMessageError(f"not strict JSON: {exc}") from None


def decode_own(body: str) -> JobMessage:
    """Read back a body :func:`encode` made in this process (eager mode): the same result as
    :func:`decode`, without its checks, which such a body passed on the way in."""
    data = json.loads(base64.b64decode(body).decode("utf-8"))
    extra = {key: value for key, value in data.items() if key not in _KNOWN_FIELDS}
    return JobMessage(name=data["name"], args=data["args"], kwargs=data["kwargs"], id=data["id"], extra=extra,
                      headers=data.get("headers") or {})


def decode(body: str, fallback_id: str) -> JobMessage:
    """Read a message body; ``fallback_id`` (the broker's message id) is used when it has no id.

    Raises MalformedMessageError with a reason fit for the dead-letter queue,
    and no other exception, whatever the body holds: invalid base64 or UTF-8,
    JSON that is not a job message, NaN or Infinity, values nested more than
    :data:`MAX_JSON_DEPTH` levels, lone surrogates.
    """
    try:
        return _decode(body, fallback_id)
    except MalformedMessageError:
        raise
    except RecursionError:
        raise MalformedMessageError(f"body is nested too deeply (more than {MAX_JSON_DEPTH} levels)") from None
    except Exception as exc:  # anything else is still this message's problem, not the worker's
        raise MalformedMessageError(f"body cannot be read: {type(exc).__name__}: {exc}") from None


def _decode(body: str, fallback_id: str, walk_all: bool = False) -> JobMessage:
    """:func:`decode` without its last net; ``walk_all``: walk every body, as if none were plainly strict
    (tests compare that with the fast path)."""
    text = _body_to_json_text(body)
    data = _parse(text)
    walk = walk_all or not _plainly_strict(text)
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
    if walk:
        _check_fields(data, args, kwargs)
    job_id = data.get("id")
    if not isinstance(job_id, str) or not job_id:
        job_id = fallback_id
    else:
        problem = job_id_problem(job_id)
        if problem is not None:
            raise MalformedMessageError(f"'id' {problem}; {ID_RULE}")
    headers = data.get("headers")
    if headers is None:
        headers = {}
    if walk or not isinstance(headers, dict):
        _check_headers(headers, MalformedMessageError)
    extra = {key: value for key, value in data.items() if key not in _KNOWN_FIELDS}
    return JobMessage(name=name, args=args, kwargs=kwargs, id=job_id, extra=extra, headers=headers)


@dataclass(frozen=True)
class Glimpse:
    """What a person can be shown of a message body, even a malformed one (:func:`glimpse`)."""

    #: Its job id (the broker's message id when the body has none); None when none can be read.
    id: str | None
    #: Its job name as a line can show it (JSON-quoted if it holds control characters); None when none can be read.
    name: str | None
    #: Why :func:`decode` refuses it; None when it decodes.
    problem: str | None = None
    #: The decoded message, when it decodes.
    message: JobMessage | None = None


def glimpse(body: str, fallback_id: str) -> Glimpse:
    """Read what identifies a message, for a log line or a listing; never raises.

    A body that decodes gives its id and name. A malformed one gives what a
    lenient read of its JSON finds, its arguments unchecked: an ``id`` that
    keeps :data:`ID_RULE` (``fallback_id`` when it has none), a ``name`` that
    is a non-empty string; with the reason :func:`decode` refuses it. What
    cannot be read is None.
    """
    try:
        decoded = decode(body, fallback_id)
        return Glimpse(decoded.id, _shown(decoded.name), message=decoded)
    except MalformedMessageError as exc:
        problem = str(exc)
    try:
        data = json.loads(_body_to_json_text(body))
    except Exception:  # whatever it is, nothing more can be read of it
        return Glimpse(None, None, problem)
    if not isinstance(data, dict):
        return Glimpse(None, None, problem)
    job_id, name = data.get("id"), data.get("name")
    if not isinstance(job_id, str) or not job_id:
        job_id = fallback_id
    elif job_id_problem(job_id) is not None:
        job_id = None
    return Glimpse(job_id, _shown(name) if isinstance(name, str) and name else None, problem)


def _shown(text: str) -> str:
    """``text`` as a log line or a listing can show it: JSON-quoted if it holds control characters or lone
    surrogates (so that it can neither break a line nor fail to print)."""
    return text if text.isprintable() and _string_problem(text) is None else json.dumps(text)


def about(message: ReceivedMessage, message_id: bool = True) -> str:
    """Who a log line is about, the job id first as a person searches by it.

    ``job ID NAME on QUEUE (message MID)``: the message id comes second,
    left out where it is the job id (a body without an id) or ``message_id``
    is False. A malformed body gives what :func:`glimpse` reads of it;
    ``message MID on QUEUE`` when no job id can be read.
    """
    seen = glimpse(message.body, message.message_id)
    if seen.id is None:
        return f"message {message.message_id} on {message.queue}"
    name = f" {seen.name}" if seen.name else ""
    mid = f" (message {message.message_id})" if message_id and message.message_id != seen.id else ""
    return f"job {seen.id}{name} on {message.queue}{mid}"
