"""The master's lock wait queues: FIFO, no herd, readers batched, writers never starved,
one grant in flight at a time, and a bound."""

from __future__ import annotations

from chubbypy.locks import FREE, Granted, Holder, LockMode, LockQueues, LockState, Waiter, acquire

EXCLUSIVE, SHARED = LockMode.EXCLUSIVE, LockMode.SHARED
KEY = ("/ls/c/lock", 65536)


def held(mode: LockMode) -> LockState:
    granted = acquire(FREE, Holder(99, 1, mode))
    assert isinstance(granted, Granted), granted
    return granted.state


def test_a_thousand_waiters_are_served_one_at_a_time_in_order() -> None:
    """Each change of the lock hands out exactly the next waiter: no herd, FIFO."""
    queues = LockQueues(waiters_max=10_000)
    for token in range(1000):
        assert queues.wait(KEY, Waiter(token, token + 1, 1, EXCLUSIVE))
    served = []
    for _ in range(1000):
        (waiter,) = queues.grantable(KEY, FREE)
        assert queues.grantable(KEY, FREE) == [], "nothing more while a grant is in flight"
        queues.applied(KEY, waiter.token)
        served.append(waiter.token)
    assert served == list(range(1000))
    assert len(queues) == 0


def test_nothing_is_handed_out_while_the_lock_conflicts() -> None:
    """A held or delayed lock wakes no one."""
    queues = LockQueues(10)
    queues.wait(KEY, Waiter(1, 1, 1, SHARED))
    assert queues.grantable(KEY, held(EXCLUSIVE)) == []
    assert queues.grantable(KEY, LockState((), delay_ms=100)) == []
    assert [w.token for w in queues.waiting(KEY)] == [1]


def test_readers_at_the_head_are_woken_together_and_a_writer_keeps_its_turn() -> None:
    """Consecutive shared waiters at the head share the lock; those behind a writer wait."""
    queues = LockQueues(10)
    for token, mode in enumerate([SHARED, SHARED, EXCLUSIVE, SHARED], start=1):
        queues.wait(KEY, Waiter(token, token, 1, mode))
    assert [w.token for w in queues.grantable(KEY, FREE)] == [1, 2]
    queues.applied(KEY, 1)
    queues.applied(KEY, 2)
    assert queues.grantable(KEY, held(SHARED)) == [], "the writer is next; the reader waits"


def test_a_reader_joins_a_lock_already_held_shared() -> None:
    """With the lock held shared, shared waiters at the head are handed out."""
    queues = LockQueues(10)
    queues.wait(KEY, Waiter(1, 1, 1, SHARED))
    assert [w.token for w in queues.grantable(KEY, held(SHARED))] == [1]


def test_a_grant_that_lost_its_race_goes_back_to_the_head() -> None:
    """requeue puts the waiter first again, ahead of those who came later."""
    queues = LockQueues(10)
    queues.wait(KEY, Waiter(1, 1, 1, EXCLUSIVE))
    queues.wait(KEY, Waiter(2, 2, 1, EXCLUSIVE))
    (first,) = queues.grantable(KEY, FREE)
    queues.requeue(KEY, first)
    assert [w.token for w in queues.waiting(KEY)] == [1, 2]


def test_cancel_and_drop() -> None:
    """A cancelled waiter leaves its place; a deleted node's waiters all leave, in order."""
    queues = LockQueues(10)
    for token in (1, 2, 3):
        queues.wait(KEY, Waiter(token, token, 1, EXCLUSIVE))
    cancelled = queues.cancel(2)
    assert cancelled is not None
    assert cancelled.token == 2
    assert queues.cancel(2) is None
    assert [w.token for w in queues.drop_lock(KEY)] == [1, 3]
    assert len(queues) == 0
    assert queues.grantable(KEY, FREE) == []


def test_the_queues_are_bounded() -> None:
    """Past waiters_max a wait is refused and nothing is queued."""
    queues = LockQueues(2)
    assert queues.wait(KEY, Waiter(1, 1, 1, EXCLUSIVE))
    assert queues.wait(("/ls/c/other", 1), Waiter(2, 2, 1, EXCLUSIVE))
    assert not queues.wait(KEY, Waiter(3, 3, 1, EXCLUSIVE))
    assert len(queues) == 2
