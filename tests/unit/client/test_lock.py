"""Lock over a real Session on fake calls and a fake clock: the time allowed counts the
whole acquisition, the open of the lock's file included."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from chubbypy.client import Handle, Lock, LockTimeout, Session
from chubbypy.client.core import SendTimes
from chubbypy.protocol.errors import LockHeld
from chubbypy.protocol.namespace import AclNames, LockMode, Stat
from chubbypy.protocol.session import (
    AcquireLock,
    CloseHandle,
    HandleOpened,
    Locked,
    Open,
    SessionCall,
    SessionCreated,
)
from chubbypy.protocol.values import HandleId
from tests.unit.client.harness import FakeCalls, result_of

PATH = "/ls/test/lock"
STAT = Stat(3, 1, 1, 0, 0, AclNames("all", "all", "all"), False, False, 0)
OPENED = HandleOpened(b"h", True, STAT, HandleId(5))


class Opener:
    """What a Lock opens its handle with (a `Cell`): here, one session on fake calls."""

    timeout_seconds = 10.0

    def __init__(self, session: Session, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    def open(self, path: str, **options: Any) -> Deferred[Handle]:
        return self.session.open_handle(path, **options)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def calls(clock: Clock) -> FakeCalls:
    return FakeCalls(clock)


@pytest.fixture
def opener(calls: FakeCalls, clock: Clock) -> Opener:
    """A live session (its KeepAlive left waiting) to open handles in."""
    opening = Session.open(calls, clock, name="test", idle_close_seconds=None)  # type: ignore[arg-type]
    calls.answer(SessionCreated(7, 12_000, b"c" * 16))
    return Opener(result_of(opening), clock)


def waiting_call(calls: FakeCalls, kind: type[SessionCall]) -> Deferred[Any]:
    """The one call of `kind` still waiting for its answer."""
    (found,) = [
        waiting
        for (call, _, _), waiting in zip(calls.calls, calls.waiting_all, strict=True)
        if isinstance(call, kind) and not waiting.called
    ]
    return found


def sent(calls: FakeCalls) -> list[type[SessionCall]]:
    return [type(call) for call, _, _ in calls.calls]


def test_a_slow_open_counts_within_the_timeout(
    opener: Opener, calls: FakeCalls, clock: Clock
) -> None:
    """An open the cell has not answered when the timeout passes: LockTimeout at the
    timeout, the open cancelled, no acquire sent."""
    acquiring = Lock(opener, PATH, timeout=2.0).acquire()
    clock.advance(1.99)
    assert not acquiring.called
    clock.advance(0.01)
    with pytest.raises(LockTimeout, match="not acquired within 2 s"):
        result_of(acquiring)
    (open_call,) = [w for (c, _, _), w in zip(calls.calls, calls.waiting_all, strict=True)
                    if isinstance(c, Open)]  # fmt: skip
    assert open_call.called, "the open was cancelled"
    assert AcquireLock not in sent(calls)


def test_the_acquire_gets_only_what_the_open_left_of_the_timeout(
    opener: Opener, calls: FakeCalls, clock: Clock
) -> None:
    """Opened after 1.5 s of a 2 s timeout, the wait for a held lock ends 0.5 s later: the
    handle is closed (withdrawing the request), and LockTimeout raised."""
    acquiring = Lock(opener, PATH, timeout=2.0).acquire()
    clock.advance(1.5)
    waiting_call(calls, Open).callback((OPENED, SendTimes(0, 0)))
    assert calls.last() == AcquireLock(b"h", LockMode.EXCLUSIVE, wait=True)
    clock.advance(0.5)
    assert calls.last() == CloseHandle(b"h")
    with pytest.raises(LockTimeout, match="not acquired within 2 s"):
        result_of(acquiring)


def test_a_lock_granted_in_time_is_held(opener: Opener, calls: FakeCalls, clock: Clock) -> None:
    """Opened and granted within the timeout: the Held, with its sequencer; the timer is
    stopped (nothing happens when its time would have come)."""
    acquiring = Lock(opener, PATH, timeout=2.0).acquire()
    clock.advance(1.0)
    waiting_call(calls, Open).callback((OPENED, SendTimes(0, 0)))
    waiting_call(calls, AcquireLock).callback((Locked(STAT, b"seq"), SendTimes(0, 0)))
    held = result_of(acquiring)
    assert held.sequencer == b"seq"
    clock.advance(5.0)
    assert CloseHandle not in sent(calls)
    assert not held.handle.closed


def test_a_try_waits_for_no_holder_but_at_most_one_call_time_for_the_cell(
    opener: Opener, calls: FakeCalls, clock: Clock
) -> None:
    """timeout=0: a held lock is LockTimeout at once (and the handle closed); a cell that
    does not answer the open gives up after the cell client's call timeout (10 s)."""
    trying = Lock(opener, PATH, timeout=0).acquire()
    waiting_call(calls, Open).callback((OPENED, SendTimes(0, 0)))
    waiting_call(calls, AcquireLock).errback(LockHeld("held by another"))
    with pytest.raises(LockTimeout, match="is not free"):
        result_of(trying)
    assert calls.last() == CloseHandle(b"h")
    slow = Lock(opener, PATH, timeout=0).acquire()
    clock.advance(9.9)
    assert not slow.called
    clock.advance(0.1)
    with pytest.raises(LockTimeout, match="not acquired within 10 s"):
        result_of(slow)


def test_without_a_timeout_nothing_is_timed(opener: Opener, calls: FakeCalls, clock: Clock) -> None:
    """timeout=None waits as long as it takes, the open included (here 11 s in all, more
    than a call's time, within the session's lease)."""
    acquiring = Lock(opener, PATH).acquire()
    clock.advance(5.5)
    assert not acquiring.called
    waiting_call(calls, Open).callback((OPENED, SendTimes(0, 0)))
    clock.advance(5.5)
    waiting_call(calls, AcquireLock).callback((Locked(STAT, b"seq"), SendTimes(0, 0)))
    assert result_of(acquiring).sequencer == b"seq"
