"""Fair sharing of one pool between requests and clients: a round-robin queue and request tickets.

A shared pool (`sandbox serve`, a reward function called from several threads) takes work from
many requests at once. With one FIFO queue, a client that floods it with solutions that loop until
their time limit holds every judge while a small request from someone else waits behind the whole
flood. The pool's queue is therefore a `FairQueue`: items are kept per *group* (a client) and,
inside a group, per *request*; judges take the next item from the next group in turn, and inside
a group from the next request in turn; a group or request that had nothing queued goes first. A
newcomer's first item then waits only for the first worker to become free, however much the
others have queued.

A `Ticket` names the group and request of the work submitted while it is active (a context
variable, so it follows the thread that grades a request) and lets the service cancel all of that
request's work at once, queued and running, when its client goes away:

    ticket = Ticket(group="10.0.0.7")
    with ticket.active():
        results = sandbox.api.grade(table, rows, pool=pool)   # from a worker thread
    ...
    ticket.cancel()   # from the event loop, when the client disconnects

Work submitted without a ticket shares one default group and request: a plain FIFO, as before.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import itertools
import threading
from collections.abc import Hashable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_CURRENT: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("sandbox_fair_ticket", default=None)
_NUMBERS = itertools.count(1)


class _Requests(collections.OrderedDict[Hashable, collections.deque[T]]):
    """One group's queues, by request."""


class FairQueue(Generic[T]):
    """Round robin over groups, then over the requests of a group; FIFO within a request;
    a newcomer first.
    Not thread-safe by itself: the pool calls it under its own lock."""

    def __init__(self) -> None:
        self._groups: collections.OrderedDict[Hashable, _Requests[T]] = collections.OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def put(self, item: T, group: Hashable = "", request: Hashable = "") -> None:
        """Queue `item`. A group (or request) that had nothing queued goes to the front: the
        order is least recently served first, and a newcomer has not been served at all."""
        requests = self._groups.get(group)
        if requests is None:
            requests = self._groups[group] = _Requests()
            self._groups.move_to_end(group, last=False)
        items = requests.get(request)
        if items is None:
            items = requests[request] = collections.deque()
            requests.move_to_end(request, last=False)
        items.append(item)
        self._size += 1

    def pop(self) -> T:
        """The next item in turn (IndexError when empty); its request and group go to the back."""
        if not self._size:
            raise IndexError("pop from an empty FairQueue")
        group, requests = next(iter(self._groups.items()))
        request, items = next(iter(requests.items()))
        item = items.popleft()
        self._size -= 1
        if items:
            requests.move_to_end(request)
        else:
            del requests[request]
        if requests:
            self._groups.move_to_end(group)
        else:
            del self._groups[group]
        return item

    def drain(self) -> list[T]:
        """Remove and return every item (closing the pool)."""
        items = [item for requests in self._groups.values() for queue in requests.values() for item in queue]
        self._groups.clear()
        self._size = 0
        return items


class Ticket:
    """One request's share of a pool: its group (the client), its own request key, and the
    futures submitted under it, so that `cancel` stops all of them (and any submitted later)."""

    def __init__(self, group: Hashable = "", name: Hashable | None = None) -> None:
        self.group = group
        self.request = name if name is not None else f"request-{next(_NUMBERS)}"
        self.cancelled = False
        self._futures: set[Future[Any]] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def active(self) -> Iterator[Ticket]:
        """Work submitted to a pool in this context (this thread, or tasks it starts) is this ticket's."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def track(self, future: Future[Any]) -> None:
        """Remember an unfinished future; cancel it at once if the ticket already is."""
        with self._lock:
            if not self.cancelled:
                self._futures.add(future)
                future.add_done_callback(self._forget)
                return
        future.cancel()

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def cancel(self) -> int:
        """Cancel every unfinished future of this request, queued or running, and any submitted
        from now on; returns how many were cancelled."""
        with self._lock:
            self.cancelled = True
            futures = list(self._futures)
        return sum(future.cancel() for future in futures)

    @property
    def unfinished(self) -> int:
        with self._lock:
            return len(self._futures)


def current() -> Ticket | None:
    """The ticket active in this context, if any."""
    return _CURRENT.get()
