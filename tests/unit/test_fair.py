"""sandbox.fair: the pool's round-robin queue and request tickets (no judges needed)."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from sandbox.fair import FairQueue, Ticket, current


def test_round_robin_over_groups_then_requests() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(4):
        queue.put(f"flood-a{i}", group="hostile", request="a")
        queue.put(f"flood-b{i}", group="hostile", request="b")
    queue.put("honest-0", group="honest", request="c")
    queue.put("honest-1", group="honest", request="c")
    assert len(queue) == 10
    order = [queue.pop() for _ in range(10)]
    # The newcomer goes first, then groups alternate: the honest client's two items come within
    # the first three, however much the other queued; inside the hostile group its requests alternate.
    assert order[:3] == ["honest-0", "flood-b0", "honest-1"]
    assert order[3:] == ["flood-a0", "flood-b1", "flood-a1", "flood-b2", "flood-a2", "flood-b3", "flood-a3"]
    assert not queue and len(queue) == 0


def test_default_group_is_fifo_and_drain_empties() -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(5):
        queue.put(i)
    assert [queue.pop() for _ in range(3)] == [0, 1, 2]
    assert queue.drain() == [3, 4] and len(queue) == 0
    try:
        queue.pop()
    except IndexError:
        pass
    else:
        raise AssertionError("pop from an empty queue must raise")


def test_ticket_cancels_tracked_and_later_futures() -> None:
    ticket = Ticket(group="x")
    assert current() is None
    with ticket.active():
        assert current() is ticket
        seen: list[object] = []
        thread = threading.Thread(target=lambda: seen.append(current()))  # threads do not inherit it
        thread.start()
        thread.join()
        assert seen == [None]
    assert current() is None
    done: Future[int] = Future()
    pending: list[Future[int]] = [Future() for _ in range(3)]
    for future in [done, *pending]:
        ticket.track(future)
    done.set_result(1)
    assert ticket.unfinished == 3
    assert ticket.cancel() == 3 and all(f.cancelled() for f in pending) and done.result() == 1
    late: Future[int] = Future()
    ticket.track(late)
    assert late.cancelled() and ticket.unfinished == 0
