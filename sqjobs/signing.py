"""Signed messages: HMAC-SHA256 over a canonical form of the envelope, checked before a job runs.

Turn it on with ``[sqjobs] signing_keys = KEY1, KEY2`` or the environment
variable ``SQJOBS_SIGNING_KEYS`` (same format). When the variable is set and
not empty it wins over the file, whole: the lists are not merged, so which
key signs is never in doubt, and keys can stay out of config files. The
first key signs every message this process sends; every listed key verifies
one (rotation). A key is its UTF-8 text and must be at least
:data:`~sqjobs.defaults.MIN_SIGNING_KEY_BYTES` bytes; keys are separated by
commas, so a key holds no comma and no space at its ends.

A signed message carries two headers::

    "headers": {"sqjobs-key-id": "3f9a0c12", "sqjobs-signature": "<64 hex digits>"}

- ``sqjobs-key-id``: the first :data:`~sqjobs.defaults.SIGNING_KEY_ID_CHARS`
  hex digits of the SHA-256 of the key (it says which key, not what it is);
- ``sqjobs-signature``: the lowercase hex HMAC-SHA256, under that key, of the
  canonical form below.

The canonical form is the envelope as a worker reads it, minus what may not
be signed, written as one JSON text:

- an object with ``id`` (the message must carry its own), ``name``,
  ``args`` (``[]`` when absent), ``kwargs`` (``{}`` when absent or ``[]``),
  every other top-level field the producer sent (``scheduled_for``, an
  ``eta``, fields of its own) except ``v`` (the format version), and
  ``headers`` without the two signature headers (left out when none remain);
- keys sorted at every level, no spaces (``","`` and ``":"``), every
  character past ASCII written as a ``\\uXXXX`` escape (lowercase hex,
  surrogate pairs above U+FFFF), numbers as JSON writes them.

So everything that changes what runs, or when (``scheduled_for``, a trace id a
middleware added), is covered, and nothing the brokers change on the way
(the queue, attributes such as the dead-letter reason) is: a message moved to
``<queue>-dead`` and requeued still verifies. Floats are the one trap for a
foreign producer: ``1e-07`` is how Python writes what JavaScript writes
``1e-7``; pass integers or strings where exact values matter.

A worker with keys never runs a message that is unsigned, signed with a key
it does not list, or whose signature does not match: see
:meth:`Signer.verify` and :mod:`sqjobs.worker.runner`. Signatures are compared with
:func:`hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from . import defaults
from .errors import ConfigError, SigningError

if TYPE_CHECKING:
    from .message import JobMessage

#: Environment variable with the signing keys; set and not empty, it wins over ``[sqjobs] signing_keys``.
KEYS_ENV = "SQJOBS_SIGNING_KEYS"
#: Header holding the signature (hex HMAC-SHA256).
SIGNATURE_HEADER = "sqjobs-signature"
#: Header holding the id of the key that made the signature.
KEY_ID_HEADER = "sqjobs-key-id"
#: The headers the signature does not cover (itself and its key id).
SIGNATURE_HEADERS = (SIGNATURE_HEADER, KEY_ID_HEADER)
#: Top-level fields the signature does not cover: the format version (a worker does not keep it).
UNSIGNED_FIELDS = ("v",)
#: How to make a key (shown when one is refused).
MAKE_A_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"

#: Reasons a worker dead-letters a message with (the start of the text).
UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad signature"
UNKNOWN_KEY_ID = "unknown key id"


def key_id(key: bytes) -> str:
    """The id of ``key``: the first hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:defaults.SIGNING_KEY_ID_CHARS]


def check_keys(keys: Sequence[str]) -> tuple[str, ...]:
    """Return ``keys`` if each is long enough and their ids differ; raise ValueError naming the key by position.

    The message never holds a key itself.
    """
    ids: dict[str, int] = {}
    for position, key in enumerate(keys, 1):
        size = len(key.encode("utf-8"))
        if size < defaults.MIN_SIGNING_KEY_BYTES:
            raise ValueError(f"key {position} of {len(keys)} is {size} bytes; a signing key must be at least "
                             f"{defaults.MIN_SIGNING_KEY_BYTES} bytes (make one with: {MAKE_A_KEY})")
        ident = key_id(key.encode("utf-8"))
        if ident in ids and keys[ids[ident] - 1] != key:
            raise ValueError(f"keys {ids[ident]} and {position} have the same key id {ident}; make another key")
        ids.setdefault(ident, position)
    return tuple(keys)


def as_signing_keys(text: str) -> tuple[str, ...]:
    """Signing keys, comma- or line-separated, each at least MIN_SIGNING_KEY_BYTES bytes (none: signing off)."""
    return check_keys([part.strip() for part in text.replace("\n", ",").split(",") if part.strip()])


def canonical_form(message: JobMessage) -> bytes:
    """The bytes a signature covers (see the module's docstring); raise SigningError if ``message`` has no id."""
    if not message.id:
        raise SigningError("a signed message needs its own id")
    payload: dict[str, Any] = {key: value for key, value in message.extra.items() if key not in UNSIGNED_FIELDS}
    payload.update(id=message.id, name=message.name, args=list(message.args), kwargs=dict(message.kwargs))
    headers = {key: value for key, value in message.headers.items() if key not in SIGNATURE_HEADERS}
    if headers:
        payload["headers"] = headers
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii")


def signature(key: bytes, message: JobMessage) -> str:
    """The hex HMAC-SHA256 of ``message``'s canonical form under ``key``."""
    return hmac.new(key, canonical_form(message), hashlib.sha256).hexdigest()


class Signer:
    """Signs with the first of ``keys`` and verifies with any of them."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a Signer needs at least one key")
        encoded = [key.encode("utf-8") for key in check_keys(keys)]
        self._keys: dict[str, bytes] = {}
        for key in encoded:
            self._keys.setdefault(key_id(key), key)
        self.signing_key_id = key_id(encoded[0])
        self._signing_key = encoded[0]

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys that verify, the signing one first."""
        return list(self._keys)

    def sign(self, message: JobMessage) -> None:
        """Put the key id and the signature of ``message`` in its headers (after every other change to it)."""
        for name in SIGNATURE_HEADERS:
            message.headers.pop(name, None)
        message.headers[KEY_ID_HEADER] = self.signing_key_id
        message.headers[SIGNATURE_HEADER] = signature(self._signing_key, message)

    def verify(self, message: JobMessage) -> str | None:
        """Return None when ``message`` carries a good signature by a known key, else the reason it does not.

        The reason starts with :data:`UNSIGNED`, :data:`BAD_SIGNATURE` or
        :data:`UNKNOWN_KEY_ID`. The signature is compared in constant time.
        """
        given = message.headers.get(SIGNATURE_HEADER)
        ident = message.headers.get(KEY_ID_HEADER)
        if given is None and ident is None:
            return f"{UNSIGNED}: no {SIGNATURE_HEADER} header, and this worker runs signed messages only"
        if not isinstance(given, str) or not isinstance(ident, str):
            return f"{BAD_SIGNATURE}: {SIGNATURE_HEADER} and {KEY_ID_HEADER} must both be strings"
        key = self._keys.get(ident)
        if key is None:
            return (f"{UNKNOWN_KEY_ID} {json.dumps(ident[:40])}: this worker verifies with key id(s) "
                    f"{', '.join(self._keys)}")
        if not message.id:
            return f"{BAD_SIGNATURE}: the message has no id of its own"
        expected = hmac.new(key, canonical_form(message), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace")):
            return f"{BAD_SIGNATURE}: the message does not match its signature (key id {ident}): forged or altered"
        return None


def configured_keys(file_keys: Sequence[str], environ: Mapping[str, str] | None = None,
                    where: str = "[sqjobs] signing_keys") -> tuple[str, ...]:
    """The signing keys in force: :data:`KEYS_ENV` when set and not empty, else ``file_keys``.

    Raises ConfigError naming the environment variable when its keys are refused
    (the file's were checked when it was read; ``where`` names them).
    """
    environ = os.environ if environ is None else environ
    text = environ.get(KEYS_ENV, "")
    if text.strip():
        try:
            return as_signing_keys(text)
        except ValueError as exc:
            raise ConfigError(f"environment variable {KEYS_ENV}: {exc}") from None
    try:
        return check_keys(list(file_keys))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def signer_from(file_keys: Sequence[str], environ: Mapping[str, str] | None = None,
                where: str = "[sqjobs] signing_keys") -> Signer | None:
    """A Signer for the keys in force (see :func:`configured_keys`), or None when there is none (signing off)."""
    keys = configured_keys(file_keys, environ, where)
    return Signer(keys) if keys else None
