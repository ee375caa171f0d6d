"""Cancellation: take back a job that has not started.

Which jobs can be cancelled: tracked jobs (they have a status row), and
untracked jobs sent *cancellable*: ``@job(cancellable=True)`` on the job, or
``apply_async(..., cancellable=True)`` / ``sqjobs enqueue --cancellable``
for one message. The producer marks such a message with the header
``"sqjobs-cancellable": true`` (:data:`~sqjobs.message.CANCELLABLE_HEADER`);
a worker that predates it ignores it (and checks nothing). Every other job
never touches the database: it runs while the status database is down, and
costs no read. Periodic jobs follow the same rule (a beater sends each run
through the producer, so a job class with ``cancellable = True`` marks every
run); eager mode runs the job inside the call, so nothing is left to cancel.

``handle.cancel()``, ``sqjobs.cancel(job_id)`` and ``sqjobs cancel JOB_ID``
record the job id in the ``sqjobs_cancelled`` table of the ``[sqjobs]
database`` and return a :class:`Cancellation` saying what happened:

- a tracked job still PENDING (or in RETRY, waiting for its next attempt) is
  set to CANCELLED in the same transaction as the record; a held job (a long
  delay on SQS, :mod:`sqjobs.held`) is removed from the database at once
  (whatever the job: its message is never sent); a unique key either holds
  is freed;
- a tracked job that is running (STARTED) or finished is not cancelled: the
  result says so (``bool(result)`` is False) and nothing changes;
- on a broker that can look at the messages it stores (the embedded and
  memory brokers, :attr:`~sqjobs.brokers.base.Broker.can_find`), the
  cancelled job's message is removed at once if no worker holds it
  (:meth:`~sqjobs.brokers.base.Broker.withdraw`, after the record): no
  count (``sqjobs queues``, the dashboard, ``sqjobs_queue_messages``) shows
  it, and it will not run, whatever the job. A job with no status row, not
  held and with no message there is *unknown*: nothing is recorded,
  ``bool(result)`` and ``result.recorded`` are False (``sqjobs cancel``
  exits 1); one only in a dead-letter queue is not cancelled either. SQS
  cannot be searched: there a cancelled job's message (a delay up to 15
  minutes, or a retry's backoff) stays, and is counted, until it is due and
  a worker deletes it unrun;
- otherwise (a worker holds its message, or SQS), a job with no status row
  cannot be told apart from one that already ran:
  the cancellation is recorded (``result.recorded``). From a handle of a job
  sent cancellable, that is a cancellation (``bool(result)`` is True): if it
  has not started, it never will (its unique key is freed by the worker
  that deletes its message). From the id alone (``sqjobs.cancel``, the
  command) whether it was sent cancellable is not known: ``bool(result)`` is
  False, the message says the cancellation takes effect only for a job sent
  cancellable, and ``sqjobs cancel`` exits 3;
- ``handle.cancel()`` on a job its handle knows is untracked and was not
  sent cancellable raises :class:`~sqjobs.errors.JobNotCancellableError`
  and records nothing: no worker would look.

The worker enforces it: :class:`CancellationCheck` (middleware sqjobs
installs after status tracking) looks the job id up before each attempt of
a job that can be cancelled (tracked, marked by the header, or of a job
class declared cancellable here); a cancelled job's message is deleted
unrun (no ``set_up``, no hooks) and its row set to CANCELLED. A tracked
job's row says STARTED before the look-up, and cancelling needs a row that
still says PENDING or RETRY, so a job is either refused as running or never
run, whichever comes first.

While the database cannot be read, the check raises StatusStoreError: the
worker keeps the message and tries again with backoff, and hands it back
at a stop. A job that might be cancelled is never run on a guess.

The cost: one indexed read per attempt of a job that can be cancelled, in
the status database (an embedded SQLite database whose file does not exist
yet holds no cancellation and is not read); none for the others. Rows stay
until ``sqjobs prune`` removes those older than its ``--older-than`` (a
cancelled job id stays cancelled until then, also for a duplicate delivery).

The machinery (the table, the cancel given an application, the worker's
check) lives below the application, in :mod:`sqjobs.cancelling`; this module
adds the choice of the default application for ``sqjobs.cancel(job_id)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .app import current_app
from .cancelling import CANCELLED_TABLE, CANCELLED_TEXT, Cancellation, CancellationCheck, Cancellations, cancel_job

if TYPE_CHECKING:
    from .app import App

__all__ = ["CANCELLED_TABLE", "CANCELLED_TEXT", "Cancellation", "CancellationCheck", "Cancellations", "cancel"]


def cancel(job_id: str, app: App | None = None, *, sent_cancellable: bool = False) -> Cancellation:
    """Cancel job ``job_id`` if it has not started; return what happened (see the module docstring).

    ``app`` None: the default application. ``sent_cancellable`` says the
    caller knows the job was sent cancellable (a handle does): then a job
    without a status row counts as cancelled. Raises InvalidJobIdError for
    an id no job can have (nothing is looked up or stored),
    StatusStoreError when the database cannot be reached (then nothing was
    recorded).
    """
    return cancel_job(app or current_app(), job_id, sent_cancellable=sent_cancellable)
