"""The master's lock waits: acquires pending until applied, queued ones granted in order
and requeued after a lost race, bounded waits withdrawn when their bound passes, early
leavers, and lock-delay timers; every answer a value."""

from __future__ import annotations

from chubbypy.locks import FREE, LockState
from chubbypy.master import CallToken
from chubbypy.master._waits import AcquireCall, LockWaits
from chubbypy.protocol import SessionId
from chubbypy.protocol.namespace import Acquire, LockMode
from chubbypy.protocol.session import EventMask, HandleMode
from chubbypy.sessions import Handle, handle_id_for

EXCLUSIVE, SHARED = LockMode.EXCLUSIVE, LockMode.SHARED
PATH, OTHER = "/ls/c/lock", "/ls/c/other"
KEY = (PATH, 1 << 16)
T1, T2, T3, T4 = (CallToken(n) for n in (1, 2, 3, 4))


def call(session: int, number: int, mode: LockMode = EXCLUSIVE, path: str = PATH) -> AcquireCall:
    handle = Handle(SessionId(session), handle_id_for(1, number), path, 1 << 16,
                    HandleMode.WRITE, EventMask.NONE, 500, 1)  # fmt: skip
    return AcquireCall(handle, mode, wait=True)


def test_an_acquire_call_names_its_lock_and_the_command_that_grants_it() -> None:
    """The key is the handle's node instance; the command carries its lock-delay."""
    asking = call(7, 3, SHARED)
    assert asking.key == KEY
    assert asking.command() == Acquire(SessionId(7), handle_id_for(1, 3), PATH, 1 << 16,
                                       SHARED, 500)  # fmt: skip


def test_an_acquire_proposed_at_once_is_pending_until_applied() -> None:
    """applied hands the call back once, then knows the token no more."""
    waits = LockWaits(10)
    asking = call(1, 1)
    waits.proposed(T1, asking)
    assert not waits.has_waiters(KEY)
    assert waits.applied(T1) == asking
    assert waits.applied(T1) is None


def test_queued_acquires_are_granted_in_order_one_grant_in_flight_at_a_time() -> None:
    """grantable hands out the head's command; nothing more until it was applied."""
    waits = LockWaits(10)
    first, second = call(1, 1), call(2, 2)
    assert waits.wait(T1, first, now=0, wait_ticks=None)
    assert waits.wait(T2, second, now=0, wait_ticks=None)
    assert waits.has_waiters(KEY)
    assert waits.grantable(KEY, FREE) == [(T1, first.command())]
    assert waits.grantable(KEY, FREE) == []
    assert waits.applied(T1) == first
    assert waits.grantable(KEY, FREE) == [(T2, second.command())]
    assert not waits.has_waiters(KEY)


def test_a_grant_that_lost_its_race_is_requeued_at_the_head() -> None:
    """requeue puts the call back first, pending again."""
    waits = LockWaits(10)
    first, second = call(1, 1), call(2, 2)
    waits.wait(T1, first, 0, None)
    waits.wait(T2, second, 0, None)
    waits.grantable(KEY, FREE)
    lost = waits.applied(T1)
    assert lost == first
    waits.requeue(T1, lost, 0)
    assert waits.grantable(KEY, FREE) == [(T1, first.command())]


def test_queued_lists_a_locks_waiters_head_first_with_the_tick_each_was_first_queued() -> None:
    """queued shows the queue in order with each call's first queuing tick, kept when a
    grant that lost its race goes back to the head; one proposed at once and requeued is
    queued from the requeue's tick."""
    waits = LockWaits(10)
    waits.wait(T1, call(1, 1), now=5, wait_ticks=None)
    waits.wait(T2, call(2, 2, SHARED), now=9, wait_ticks=None)
    assert [(c.handle.session_id, c.mode, c.queued_at) for c in waits.queued(KEY)] == [
        (1, EXCLUSIVE, 5),
        (2, SHARED, 9),
    ]
    waits.grantable(KEY, FREE)
    lost = waits.applied(T1)
    assert lost is not None
    waits.requeue(T1, lost, 20)
    assert [c.queued_at for c in waits.queued(KEY)] == [5, 9]
    waits.proposed(T3, call(3, 3, path=OTHER))
    late = waits.applied(T3)
    assert late is not None
    waits.requeue(T3, late, 30)
    assert [c.queued_at for c in waits.queued((OTHER, 1 << 16))] == [30]
    assert waits.queued(("/ls/c/none", 1)) == []


def test_delay_end_names_the_tick_a_locks_delay_ends_until_it_ended() -> None:
    """delay_end says when the lock-delay ends on this master's clock; None once ended."""
    waits = LockWaits(10)
    assert waits.delay_end(KEY) is None
    waits.delay(KEY, 40)
    assert waits.delay_end(KEY) == 40
    assert waits.delays_ended(40) == [KEY]
    assert waits.delay_end(KEY) is None


def test_the_queues_are_bounded() -> None:
    """Past waiters_max a wait is refused, and nothing of it is kept."""
    waits = LockWaits(1)
    assert waits.wait(T1, call(1, 1), 0, None)
    assert not waits.wait(T2, call(2, 2), 0, wait_ticks=5)
    assert waits.applied(T2) is None
    assert waits.waits_ended(100) == []


def test_a_bounded_wait_is_withdrawn_when_its_bound_passes_and_not_before() -> None:
    """At now + wait_ticks the still-queued acquire is withdrawn and named with its bound."""
    waits = LockWaits(10)
    waits.wait(T1, call(1, 1), now=10, wait_ticks=5)
    waits.wait(T2, call(2, 2), now=10, wait_ticks=None)
    assert waits.waits_ended(14) == []
    assert waits.waits_ended(15) == [(T1, 5)]
    assert waits.waits_ended(16) == []
    assert waits.applied(T1) is None, "withdrawn: no longer pending"
    assert waits.grantable(KEY, FREE) == [(T2, call(2, 2).command())]


def test_a_bound_passing_after_the_grant_was_proposed_does_nothing() -> None:
    """A grant in flight is not withdrawn: it applies and is answered."""
    waits = LockWaits(10)
    asking = call(1, 1)
    waits.wait(T1, asking, now=0, wait_ticks=3)
    waits.grantable(KEY, FREE)
    assert waits.waits_ended(3) == []
    assert waits.applied(T1) == asking


def test_a_requeued_wait_keeps_its_bound() -> None:
    """A waiter that lost a race and went back to the queue still ends at its bound."""
    waits = LockWaits(10)
    asking = call(1, 1)
    waits.wait(T1, asking, now=0, wait_ticks=3)
    waits.grantable(KEY, FREE)
    waits.requeue(T1, asking, 0)
    assert waits.waits_ended(3) == [(T1, 3)]


def test_cancel_withdraws_only_a_queued_acquire() -> None:
    """A queued acquire is withdrawn; one in flight or proposed at once stays pending."""
    waits = LockWaits(10)
    waits.wait(T1, call(1, 1), 0, None)
    waits.wait(T2, call(2, 2), 0, None)
    waits.proposed(T3, call(3, 3, path=OTHER))
    waits.grantable(KEY, FREE)
    assert not waits.cancel(T1), "in flight"
    assert waits.cancel(T2)
    assert not waits.cancel(T2)
    assert not waits.cancel(T3)
    assert waits.applied(T2) is None
    assert waits.applied(T1) is not None
    assert waits.applied(T3) is not None


def test_a_handles_a_sessions_and_a_deleted_nodes_waits_leave_together() -> None:
    """cancel_handle takes one handle's waits; cancel_session a session's on every lock;
    drop_lock every wait of the lock, in order, and its delay timer."""
    waits = LockWaits(10)
    closing = call(1, 1)
    waits.wait(T1, closing, 0, None)
    waits.wait(T2, call(2, 2), 0, None)
    waits.wait(T3, call(2, 3, path=OTHER), 0, None)
    waits.wait(T4, call(3, 4), 0, None)
    assert waits.cancel_handle(closing.handle) == [T1]
    assert waits.cancel_session(SessionId(2)) == [T2, T3]
    assert not waits.has_waiters((OTHER, 1 << 16))
    waits.delay(KEY, end=50)
    assert waits.drop_lock(KEY) == [T4]
    assert waits.delays_ended(100) == []
    for token in (T1, T2, T3, T4):
        assert waits.applied(token) is None


def test_a_lock_delay_timer_ends_once_at_its_tick() -> None:
    """delays_ended names each lock once its end passed; a later delay replaces the end."""
    waits = LockWaits(10)
    waits.delay(KEY, end=20)
    waits.delay((OTHER, 1), end=10)
    waits.delay(KEY, end=30)
    assert waits.delays_ended(9) == []
    assert waits.delays_ended(25) == [(OTHER, 1)]
    assert waits.delays_ended(30) == [KEY]
    assert waits.delays_ended(99) == []


def test_grantable_follows_the_lock_state_it_is_given() -> None:
    """A lock held or in lock-delay wakes no one; shared waiters at the head go together."""
    waits = LockWaits(10)
    readers = [call(1, 1, SHARED), call(2, 2, SHARED), call(3, 3)]
    for token, asking in zip((T1, T2, T3), readers, strict=True):
        waits.wait(token, asking, 0, None)
    assert waits.grantable(KEY, LockState((), delay_ms=100)) == []
    granted = waits.grantable(KEY, FREE)
    assert [token for token, _ in granted] == [T1, T2]
