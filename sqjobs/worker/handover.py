"""The worker's hand-over: where each message it has in flight stands, parked in the worker or handed over to run.

A worker receives messages ahead of the jobs it runs, so that its job
process never waits for the broker. Each message it holds is either

- *parked*: received, not handed over yet (it waits for room, for its FIFO
  group, or for the others to finish before it runs alone); or
- *handed over*: given to the job process under a token, queued there or
  running (the :class:`~sqjobs.worker.tokens.TokenTable` says which).

The :class:`Handover` keeps both in order and applies the rules of what may
be handed over next:

- a message whose last worker died holding it (a *suspect*, it may kill
  this one too) runs last and alone: the messages held with it go first,
  it is handed over only once nothing else is, and nothing else is handed
  over while it runs (the worker receives no more while it holds one);
- a FIFO group has at most one message handed over at a time, so that its
  messages run in order, one after the other.

It holds no broker and runs no job: the worker decides, the hand-over keeps
count. Only the worker's main thread uses it.
"""

from __future__ import annotations

import collections
import itertools
from typing import Iterator

from ..brokers.base import ReceivedMessage
from .protocol import Fail, Run


class Item:
    """One held message and what to do with it (one per message a worker receives: slots, no dataclass)."""

    __slots__ = ("message", "received_at", "alone", "error", "duration_s", "token", "handed_at", "group")

    def __init__(self, message: ReceivedMessage, received_at: float, alone: bool = False,
                 error: BaseException | None = None) -> None:
        self.message = message
        #: When the worker received it (monotonic seconds): how long it has waited unstarted.
        self.received_at = received_at
        #: A suspect: it runs with nothing else handed over.
        self.alone = alone
        #: Set: do not run it, record a failed attempt with this error (its job process died running it).
        self.error = error
        #: With ``error``: how long the attempt ran before it ended so (seconds).
        self.duration_s = 0.0
        #: The token it is handed over under (0 while parked).
        self.token = 0
        #: When it was handed over (monotonic seconds).
        self.handed_at = 0.0
        #: Its FIFO group, as (queue, group id), or None.
        self.group: tuple[str, str] | None = (
            (message.queue, message.group_id) if message.group_id is not None else None)

    def request(self) -> Run | Fail:
        """What the job process is sent for it: run it, or record its failed attempt."""
        if self.error is not None:
            return Fail(self.token, self.message, self.error, self.duration_s)
        return Run(self.token, self.message)


class Handover:
    """The messages one worker holds: parked in order, and handed over by token."""

    def __init__(self) -> None:
        self.parked: collections.deque[Item] = collections.deque()
        self.handed: dict[int, Item] = {}
        self._tokens = itertools.count(1)
        self._busy_groups: set[tuple[str, str]] = set()
        #: Suspects among the handed-over items (asked before every hand-over: counted, not looked for).
        self._alone_handed = 0

    def __len__(self) -> int:
        """Messages held: parked and handed over."""
        return len(self.parked) + len(self.handed)

    def __iter__(self) -> Iterator[Item]:
        """Every held item: handed over first, then parked."""
        yield from list(self.handed.values())
        yield from list(self.parked)

    @property
    def running_alone(self) -> bool:
        """True while a suspect is handed over (nothing else may be)."""
        return self._alone_handed > 0

    @property
    def has_suspect(self) -> bool:
        """True when a suspect is held (parked or handed over)."""
        # Asked several times per job: a plain loop over both, no copies.
        for item in self.handed.values():
            if item.alone:
                return True
        for item in self.parked:
            if item.alone:
                return True
        return False

    def park(self, items: list[Item], front: bool = False) -> None:
        """Park ``items`` at the back (new ones), or at the front (ones taken back, in their order)."""
        if front:
            self.parked.extendleft(reversed(items))
        else:
            self.parked.extend(items)

    def take(self, room: int, now: float, urgent_only: bool = False) -> list[Item]:
        """Hand over up to ``room`` parked items, in order, as the rules allow; give them tokens.

        ``urgent_only`` takes only items that record a failure (a stopping
        worker still records the attempts its dead job process took).
        """
        if self.running_alone or room <= 0:
            return []
        taken: list[Item] = []
        waiting: list[Item] = []
        suspects: list[Item] = []
        while self.parked and len(taken) < room:
            item = self.parked.popleft()
            group = item.group
            if item.alone:
                suspects.append(item)
            elif (urgent_only and item.error is None) or (group is not None and group in self._busy_groups):
                waiting.append(item)
            else:
                self._hand(item, now)
                taken.append(item)
        if not taken and not self.handed and not waiting and suspects and not urgent_only:
            suspect = suspects.pop(0)  # everything held with it ran: now it runs, alone
            self._hand(suspect, now)
            taken.append(suspect)
        self.park(waiting + suspects, front=True)
        return taken

    def _hand(self, item: Item, now: float) -> None:
        item.token = next(self._tokens)
        item.handed_at = now
        self.handed[item.token] = item
        if item.alone:
            self._alone_handed += 1
        if item.group is not None:
            self._busy_groups.add(item.group)

    def settled(self, token: int) -> Item | None:
        """Forget the item handed over under ``token`` (its outcome is known); None if unknown."""
        item = self.handed.pop(token, None)
        if item is not None:
            if item.alone:
                self._alone_handed -= 1
            if item.group is not None:
                self._busy_groups.discard(item.group)
        return item

    def take_back(self, tokens: list[int]) -> list[Item]:
        """Forget the handed-over items of ``tokens`` (withdrawn, or their job process died), in token order."""
        items = [item for item in (self.settled(token) for token in sorted(tokens)) if item is not None]
        for item in items:
            item.token = 0
        return items

    def unpark_group(self, group: tuple[str, str]) -> list[Item]:
        """Remove and return the parked items of FIFO ``group`` (its head did not succeed: they go back)."""
        removed = [item for item in self.parked if item.group == group]
        self.parked = collections.deque(item for item in self.parked if item.group != group)
        return removed

    def unpark_waiting(self, received_before: float) -> list[Item]:
        """Remove and return the parked items that wait to run and were received before ``received_before``.

        Failures to record and suspects stay (they are not handed back for another worker).
        """
        removed = [item for item in self.parked
                   if item.received_at < received_before and item.error is None and not item.alone]
        if removed:
            gone = set(map(id, removed))
            self.parked = collections.deque(item for item in self.parked if id(item) not in gone)
        return removed

    def unpark_all(self, keep_failures: bool = True) -> list[Item]:
        """Remove and return every parked item (but the failures to record, when ``keep_failures``)."""
        removed = [item for item in self.parked if not (keep_failures and item.error is not None)]
        self.parked = collections.deque(item for item in self.parked if keep_failures and item.error is not None)
        return removed
