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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_client_that_used_the_least_judge_time_goes_first() -> None:
    """Turns are not time: a client whose jobs hold judges for a minute must not get a judge
    every other turn while another client's jobs take milliseconds."""
    clock = Clock()
    queue: FairQueue[str] = FairQueue(clock)
    for i in range(4):
        queue.put(f"loop{i}", group="hostile")
    looping = []
    for expected in ("loop0", "loop1"):  # alone, it takes both judges; each runs for 60 s
        item, group = queue.pop_with_group()
        assert (item, group) == (expected, "hostile")
        looping.append(queue.begin(group))
    clock.now = 1.0
    for i in range(5):
        queue.put(f"quick{i}", group="honest")
    assert queue.usage("honest") == queue.usage("hostile") == 2.0  # level on arrival, no credit
    served = []
    for _ in range(5):  # then the hostile client's usage grows twice as fast: every quick job goes first
        item, group = queue.pop_with_group()
        token = queue.begin(group)
        clock.now += 0.01
        queue.end(token)
        served.append(item)
    assert served == [f"quick{i}" for i in range(5)]
    clock.now = 60.0
    for token in looping:
        queue.end(token)
    queue.put("quick5", group="honest")
    assert queue.pop() == "quick5"  # hostile: 2 + 2 x 59 s; honest: 2.05 s
    assert queue.usage("hostile") == 120.0
    assert queue.pop() == "loop2"  # with nothing else queued, the hostile client is served


def test_a_client_back_from_idling_gets_no_credit_for_it() -> None:
    clock = Clock()
    queue: FairQueue[str] = FairQueue(clock)
    queue.put("a0", group="a")
    queue.put("a1", group="a")
    item, group = queue.pop_with_group()
    token = queue.begin(group)
    clock.now = 100.0
    queue.end(token)  # a used 100 s while b was away
    queue.put("b0", group="b")
    queue.put("b1", group="b")
    # b comes back level with a (100 s), not at 0: first as a newcomer, then turns alternate
    assert queue.usage("b") == 100.0
    assert [queue.pop() for _ in range(3)] == ["b0", "a1", "b1"]
    assert queue.usage("a") == 0.0  # idle again (nothing queued or running): forgotten, memory stays bounded
