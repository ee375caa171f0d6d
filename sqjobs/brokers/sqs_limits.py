"""SQS's hard limits as named constants, and how its error codes are read.

(How sqjobs chooses to use SQS within them, its retries and timeouts, are
tunables in :mod:`sqjobs.defaults`.)

Checked at enqueue so that a message SQS would refuse fails at ``.delay()``
with a clear error, not in production.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from .. import defaults
from ..errors import InvalidQueueNameError

#: Entries in one SendMessageBatch, DeleteMessageBatch or ChangeMessageVisibilityBatch.
MAX_BATCH = defaults.MAX_BATCH
#: Bytes of one message, and of all the entries of one SendMessageBatch together.
MAX_BATCH_BYTES = defaults.MAX_MESSAGE_BYTES
#: Message attributes one message may carry.
MAX_MESSAGE_ATTRIBUTES = 10
#: Longest DelaySeconds (15 minutes).
MAX_DELAY_S = defaults.MAX_DELAY_S
#: Longest WaitTimeSeconds of a long poll.
MAX_WAIT_S = defaults.MAX_WAIT_S
#: Longest visibility timeout (12 hours).
MAX_VISIBILITY_TIMEOUT_S = defaults.MAX_VISIBILITY_TIMEOUT_S
#: Longest queue name, ``.fifo`` included; names use letters, digits, ``-`` and ``_``.
MAX_QUEUE_NAME_LENGTH = 80
#: How long dead-letter queues keep messages: the SQS maximum, 14 days, so there is time to look.
DEAD_RETENTION_S = 14 * 24 * 60 * 60

#: What ends the name of a FIFO queue (on SQS it makes the queue FIFO; sqjobs reads it on every broker).
FIFO_SUFFIX = ".fifo"
#: Room kept in every SQS queue name for the priority band a later release adds to it, ``-p<n>``
#: (``n`` a band number below 100): so that any queue sqjobs accepts today can get its bands.
PRIORITY_SUFFIX_ROOM = 4
#: Longest ``[sqs] queue_prefix`` (it is put before every queue name, dead-letter queues included).
MAX_QUEUE_PREFIX_LENGTH = 18
#: Longest queue name on every broker, ``.fifo`` not counted: what SQS's 80 characters leave after the
#: prefix, the priority band, ``-dead`` and ``.fifo`` (18 + 48 + 4 + 5 + 5 = 80).
MAX_QUEUE_BASE_LENGTH = (MAX_QUEUE_NAME_LENGTH - MAX_QUEUE_PREFIX_LENGTH - PRIORITY_SUFFIX_ROOM
                         - len(defaults.DEAD_SUFFIX) - len(FIFO_SUFFIX))
#: The one rule for queue names, on every broker, as errors state it.
QUEUE_NAME_RULE = (f"a queue name is 1 to {MAX_QUEUE_BASE_LENGTH} ASCII letters, digits, '-' and '_', "
                   f"and ends in '{FIFO_SUFFIX}' for a FIFO queue")

QUEUE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(\.fifo)?$")
#: A name that keeps :data:`QUEUE_NAME_RULE`.
_QUEUE_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_QUEUE_BASE_LENGTH}}}(\.fifo)?\Z")
_QUEUE_CHARACTER = re.compile(r"[A-Za-z0-9_-]")
SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"]
AUTH_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "AuthFailure", "ExpiredToken", "IncompleteSignature",
    "InvalidAccessKeyId", "InvalidClientTokenId", "InvalidSecurity", "MissingAuthenticationToken",
    "OptInRequired", "SignatureDoesNotMatch", "UnrecognizedClientException", "KMS.AccessDeniedException",
})
#: Transient refusals: throttling, server trouble, too many messages in flight (SQS says 403 OverLimit).
THROTTLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestThrottled", "RequestThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "SlowDown", "ServiceUnavailable", "InternalError", "InternalFailure",
    "KmsThrottled", "KMS.ThrottlingException", "OverLimit", "AWS.SimpleQueueService.OverLimit",
})
QUEUE_MISSING_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
QUEUE_EXISTS_CODES = frozenset({"QueueAlreadyExists", "QueueNameExists", "AWS.SimpleQueueService.QueueNameExists"})
PURGE_BUSY_CODES = frozenset({"AWS.SimpleQueueService.PurgeQueueInProgress", "PurgeQueueInProgress"})
STALE_RECEIPT_CODES = frozenset({
    "ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight", "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
})


def error_details(response: dict[str, Any]) -> tuple[str, str, int]:
    """Return (code, one-line message, HTTP status) of a botocore error response."""
    error = response.get("Error", {}) or {}
    code = str(error.get("Code", "") or "")
    message = str(error.get("Message", "") or "")
    # Some SQS-compatible servers answer the JSON protocol with an XML error document.
    inner_code = re.search(r"<Code>([^<]*)</Code>", message)
    inner_message = re.search(r"<Message>([^<]*)</Message>", message)
    if inner_code and (not code or code.isdigit()):
        code = inner_code.group(1)
    if inner_message:
        message = inner_message.group(1)
    status = int((response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0)
    return code, " ".join(message.split()), status


def error_code(error: BaseException) -> str:
    """Return the SQS error code carried by a BrokerError raised from a ClientError ("" if none)."""
    return str(getattr(error, "sqs_code", ""))


def entry_bytes(body: str, attributes: dict[str, str]) -> int:
    """Size SQS counts for a message: body plus attribute names, types and values."""
    size = len(body.encode("utf-8"))
    for name, value in attributes.items():
        size += len(name.encode("utf-8")) + len("String") + len(value.encode("utf-8"))
    return size


def queue_name_problem(name: str) -> str | None:
    """Say how ``name`` breaks :data:`QUEUE_NAME_RULE` (empty, too long, a character), or None when it keeps it."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if _QUEUE_NAME.match(name):
        return None
    base = name[: -len(FIFO_SUFFIX)] if name.endswith(FIFO_SUFFIX) else name
    if not base:
        return "is empty" if not name else f"is only '{FIFO_SUFFIX}'"
    for position, char in enumerate(base):
        if not _QUEUE_CHARACTER.match(char):
            return f"holds {char!r} at position {position}"
    return f"is {len(base)} characters{' before .fifo' if base != name else ''}, over {MAX_QUEUE_BASE_LENGTH}"


def check_queue_name(name: str, where: str = "") -> str:
    """Return ``name`` if it keeps :data:`QUEUE_NAME_RULE`; else raise InvalidQueueNameError saying why.

    ``where`` starts the message (e.g. ``"job app.send_mail: "``).
    """
    if isinstance(name, str) and _QUEUE_NAME.match(name):
        return name
    shown = f"{name[:40]!r}..." if isinstance(name, str) and len(name) > 40 else repr(name)
    raise InvalidQueueNameError(f"{where}queue name {shown} {queue_name_problem(name)}; {QUEUE_NAME_RULE}")


def queue_prefix_problem(prefix: str) -> str | None:
    """Say why ``prefix`` cannot be an ``[sqs] queue_prefix`` (None: it can; empty is no prefix)."""
    if len(prefix) > MAX_QUEUE_PREFIX_LENGTH:
        return (f"is {len(prefix)} characters, over {MAX_QUEUE_PREFIX_LENGTH} (the rest of SQS's "
                f"{MAX_QUEUE_NAME_LENGTH} is kept for queue names and their suffixes)")
    for position, char in enumerate(prefix):
        if not _QUEUE_CHARACTER.match(char):
            return f"holds {char!r} at position {position}; a prefix uses ASCII letters, digits, '-' and '_'"
    return None


def check_endpoint_url(url: str) -> str:
    """Return ``url`` if it can be an SQS endpoint (``http(s)://host[:port][/path]``); raise ValueError if not."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or any(c.isspace() for c in url):
        raise ValueError("must be an http:// or https:// URL such as http://localhost:9324, or empty for AWS")
    return url
