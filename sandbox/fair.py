"""Fair sharing of one pool between requests and clients: a round-robin queue and request tickets.

A shared pool (`sandbox serve`, a reward function called from several threads) takes work from
many requests at once. With one FIFO queue, a client that floods it with solutions that loop until
their time limit holds every judge while a small request from someone else waits behind the whole
flood. The pool's queue is therefore a `FairQueue`: items are kept per *group* (a client) and,
inside a group, per *request*. A free judge takes its next item from the group that has used
the least judge time so far (its finished jobs plus the time its running ones have run), and
inside a group from the next request in turn; a group or request that had nothing queued goes
first. Counting time, not turns, matters: a client whose solutions loop until their 60 s limit
would otherwise get one judge in eight for every turn and hold them all, while honest solutions
take milliseconds. A group that comes back after idling starts level with the least-served
active group (no credit for the time it was away). Jobs are not preempted: a looping job that
started keeps its judge until its own limit.

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
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_CURRENT: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("sandbox_fair_ticket", default=None)
_NUMBERS = itertools.count(1)


class _Requests(collections.OrderedDict[Hashable, collections.deque[T]]):
    """One group's queues, by request."""


class FairQueue(Generic[T]):
    """Least judge time first over groups, round robin over the requests of a group, FIFO
    within a request; a newcomer first. `pop_with_group` says whose item it is, and the pool
    reports what it runs with `begin` and `end`.
    Not thread-safe by itself: the pool calls it under its own lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._groups: collections.OrderedDict[Hashable, _Requests[T]] = collections.OrderedDict()
        self._size = 0
        self._clock = clock
        self._used: dict[Hashable, float] = {}  # judge seconds of finished jobs, per active group
        self._running: dict[Hashable, list[float]] = {}  # start times of running jobs, per group
        self._tokens = itertools.count()
        self._started: dict[int, tuple[Hashable, float]] = {}

    def usage(self, group: Hashable) -> float:
        """Judge seconds `group` has used while active: finished jobs and running ones so far."""
        now = self._clock()
        return self._used.get(group, 0.0) + sum(now - t for t in self._running.get(group, ()))

    def begin(self, group: Hashable) -> int:
        """A job of `group` starts on a judge; pass the token to `end` when it stops."""
        token = next(self._tokens)
        start = self._clock()
        self._started[token] = (group, start)
        self._running.setdefault(group, []).append(start)
        return token

    def end(self, token: int) -> None:
        group, start = self._started.pop(token)
        starts = self._running[group]
        starts.remove(start)
        if not starts:
            del self._running[group]
        self._used[group] = self._used.get(group, 0.0) + (self._clock() - start)
        if group not in self._groups and group not in self._running:
            del self._used[group]  # idle now: it comes back level with the others (bounded memory)

    def _level(self, group: Hashable) -> None:
        """A group becoming active starts at the least usage of the active ones, never below
        its own: neither credit for idling nor a head start over those already waiting."""
        if group in self._running:
            return
        others = [self.usage(g) for g in {*self._groups, *self._running} if g != group]
        self._used[group] = max(self._used.get(group, 0.0), min(others, default=0.0))

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def put(self, item: T, group: Hashable = "", request: Hashable = "") -> None:
        """Queue `item`. A group (or request) that had nothing queued goes to the front: the
        order is least recently served first, and a newcomer has not been served at all."""
        requests = self._groups.get(group)
        if requests is None:
            self._level(group)
            requests = self._groups[group] = _Requests()
            self._groups.move_to_end(group, last=False)
        items = requests.get(request)
        if items is None:
            items = requests[request] = collections.deque()
            requests.move_to_end(request, last=False)
        items.append(item)
        self._size += 1

    def pop(self) -> T:
        return self.pop_with_group()[0]

    def pop_with_group(self) -> tuple[T, Hashable]:
        """The next item and its group: from the group with the least usage (the first in
        turn among equals; IndexError when empty); its request and group go to the back."""
        if not self._size:
            raise IndexError("pop from an empty FairQueue")
        group = min(self._groups, key=self.usage)  # ties: the first, in turn
        requests = self._groups[group]
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
            if group not in self._running:
                self._used.pop(group, None)
        return item, group

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
