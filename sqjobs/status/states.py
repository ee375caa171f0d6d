"""The states a tracked job's status row goes through."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """States of a tracked job (see :mod:`sqjobs.middleware.tracking` for when each is written)."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"


#: States after which no attempt follows.
FINISHED = frozenset({Status.SUCCESS, Status.FAILURE, Status.DEAD, Status.CANCELLED})

#: States of a job that has not started (or waits for its next attempt): what cancellation may stop.
WAITING = frozenset({Status.PENDING, Status.RETRY})
