"""SQS's hard limits as named constants, and how its error codes are read.

(How sqjobs chooses to use SQS within them, its retries and timeouts, are
tunables in :mod:`sqjobs.defaults`.)

Checked at enqueue so that a message SQS would refuse fails at ``.delay()``
with a clear error, not in production.
"""

from __future__ import annotations

import re
from typing import Any

from .. import defaults

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

QUEUE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(\.fifo)?$")
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
