"""Session over Twisted: it carries out the core's outputs with a clock, calls and streams."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from chubbypy.client import LockTimeout, Session, SessionState
from chubbypy.client.core import SendTimes
from chubbypy.paxos import NoChance
from chubbypy.protocol import CallNumber, HandleId
from chubbypy.protocol.errors import LockHeld, SessionExpired, Unavailable
from chubbypy.protocol.namespace import AclNames, LockMode, SetContents, Stat
from chubbypy.protocol.session import (
    CALLS_UNACKED_MAX,
    AcquireLock,
    CallDone,
    CheckSequencer,
    CloseHandle,
    CloseSession,
    CreateSession,
    EventKind,
    EventMask,
    HandleMode,
    HandleOpened,
    HandleWrite,
    KeepAlive,
    LeaseExtended,
    PoisonHandle,
    SessionCall,
    SessionCreated,
    SessionEvent,
    SessionResult,
)
from tests.unit.client.harness import result_of

LEASE_MS = 12_000
SHRINK = 0.99 / 1.01


class FakeCalls:
    """Stands for the cell under a session: each session call waits for the test."""

    _chance = NoChance()

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[SessionCall, float | None, float | None]] = []
        self.numbers: list[CallNumber | None] = []
        self.waiting: list[Deferred[tuple[SessionResult, SendTimes]]] = []

    async def _session_call(
        self,
        call: SessionCall,
        attempt_seconds: float | None = None,
        deadline: float | None = None,
        number: CallNumber | None = None,
    ) -> tuple[SessionResult, SendTimes]:
        self.calls.append((call, attempt_seconds, deadline))
        self.numbers.append(number)
        waiting: Deferred[tuple[SessionResult, SendTimes]] = Deferred()
        self.waiting.append(waiting)
        return await waiting

    def answer(self, result: SessionResult, sent: float | None = None) -> None:
        """Answer the oldest call still waiting, as sent at `sent` (default: now)."""
        at = self.clock.seconds() if sent is None else sent
        self.waiting.pop(0).callback((result, SendTimes(at, at)))

    def fail(self, error: Exception) -> None:
        self.waiting.pop(0).errback(error)

    def last(self) -> SessionCall:
        return self.calls[-1][0]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def calls(clock: Clock) -> FakeCalls:
    return FakeCalls(clock)


def opened(calls: FakeCalls, clock: Clock) -> tuple[Session, list[SessionState]]:
    """A session whose CreateSession was sent at 0 and answered at 0.5; its reported states."""
    opening = Session.open(calls, clock, name="test", idle_close_seconds=None)  # type: ignore[arg-type]
    created = calls.last()
    assert isinstance(created, CreateSession)
    assert created.name == "test"
    assert created.nonce > 0, "a creation names itself, so that a retry gets its session"
    clock.advance(0.5)
    calls.answer(SessionCreated(7, LEASE_MS, b"c" * 16), sent=0.0)
    session: Session = result_of(opening)
    seen: list[SessionState] = []
    session.on_state.append(seen.append)
    return session, seen


def test_the_first_keepalive_goes_out_at_once_with_its_attempt_and_deadline(
    calls: FakeCalls, clock: Clock
) -> None:
    """After CreateSession: a KeepAlive waiting a lease plus 1 s, until lease end + grace."""
    session, _ = opened(calls, clock)
    keepalive, attempt, deadline = calls.calls[-1]
    assert keepalive == KeepAlive(7, b"c" * 16, 0)
    assert attempt == 13.0
    assert deadline == pytest.approx(12 * SHRINK + 45.0)
    assert session.lease_remaining == pytest.approx(12 * SHRINK - 0.5)


def test_jeopardy_on_the_clock_then_safe_and_connected_on_an_answer(
    calls: FakeCalls, clock: Clock
) -> None:
    """The lease timer reports jeopardy at the lease end; a late answer, safe then connected."""
    session, seen = opened(calls, clock)
    clock.advance(12 * SHRINK - 0.5 - 0.01)
    assert session.state is SessionState.CONNECTED
    clock.advance(0.02)
    assert seen == [SessionState.JEOPARDY]
    calls.answer(LeaseExtended(LEASE_MS, ()))
    assert seen == [SessionState.JEOPARDY, SessionState.SAFE, SessionState.CONNECTED]
    assert isinstance(calls.last(), KeepAlive), "the next KeepAlive went out"


def test_calls_wait_out_jeopardy(calls: FakeCalls, clock: Clock) -> None:
    """A call made in jeopardy is sent only once the session is connected again."""
    session, _ = opened(calls, clock)
    clock.advance(12)
    checking = session.check_sequencer(b"s")
    assert not any(isinstance(c, CheckSequencer) for c, _, _ in calls.calls)
    calls.answer(LeaseExtended(LEASE_MS, ()))
    sent = [c for c, _, _ in calls.calls]
    assert sent[-2:] == [CheckSequencer(b"s"), KeepAlive(7, b"c" * 16, 0)]
    calls.answer(CallDone())
    assert result_of(checking) is False


def test_jeopardy_for_the_whole_grace_period_expires_the_session(
    calls: FakeCalls, clock: Clock
) -> None:
    """Unanswered for the lease and 45 s more: expired, and its streams end."""
    session, seen = opened(calls, clock)
    events = session.events()
    clock.advance(12 * SHRINK + 45.0)
    assert seen == [SessionState.JEOPARDY, SessionState.EXPIRED]
    with pytest.raises(SessionExpired):
        result_of(events.next())
    assert calls.waiting[0].called, "the KeepAlive still on its way was cancelled"


def test_an_unavailable_keepalive_is_sent_again_at_once(calls: FakeCalls, clock: Clock) -> None:
    """A KeepAlive that found no master before its deadline goes out again."""
    _, seen = opened(calls, clock)
    sent = len(calls.calls)
    calls.fail(Unavailable("no master answered"))
    assert len(calls.calls) == sent + 1
    assert seen == []


def test_events_reach_the_session_once_and_are_acknowledged(calls: FakeCalls, clock: Clock) -> None:
    """A repeated answer delivers nothing new; the next KeepAlive acks the highest event."""
    session, _ = opened(calls, clock)
    heard: list[SessionEvent] = []
    session.on_event.append(heard.append)
    changed = SessionEvent(1, EventKind.CONTENTS_MODIFIED, "/ls/test/f", 0)
    calls.answer(LeaseExtended(LEASE_MS, (changed,)))
    calls.answer(LeaseExtended(LEASE_MS, (changed,)))
    assert heard == [changed]
    assert calls.last() == KeepAlive(7, b"c" * 16, 1)


def test_closing_is_not_reported_and_ends_closed(calls: FakeCalls, clock: Clock) -> None:
    """close() sends CloseSession; the program hears only CLOSED, and no KeepAlive follows."""
    session, seen = opened(calls, clock)
    closing = session.close()
    assert calls.last() == CloseSession(7, b"c" * 16)
    assert session.state is SessionState.CLOSING
    again = session.close()
    calls.waiting.pop().callback((CallDone(), SendTimes(1, 1)))
    assert result_of(closing) is None
    assert result_of(again) is None
    assert seen == [SessionState.CLOSED]
    sent = len(calls.calls)
    calls.answer(LeaseExtended(LEASE_MS, ()))
    assert len(calls.calls) == sent


def test_session_expired_on_a_call_expires_the_session(calls: FakeCalls, clock: Clock) -> None:
    """A call answered SESSION_EXPIRED ends the session; later calls fail at once."""
    session, seen = opened(calls, clock)
    checking = session.check_sequencer(b"s")
    calls.waiting.pop().errback(SessionExpired("gone"))
    with pytest.raises(SessionExpired):
        result_of(checking)
    assert seen == [SessionState.EXPIRED]
    with pytest.raises(SessionExpired, match="has expired"):
        result_of(session.check_sequencer(b"s"))


def test_a_keepalive_refused_by_an_operators_end_expires_the_session_saying_why(
    calls: FakeCalls, clock: Clock
) -> None:
    """The parked KeepAlive refused SESSION_EXPIRED (an operator ended the session): the
    session expires at once, with its local lease still running, no KeepAlive follows,
    and the master's words are kept (`expired_because`, and later calls' errors)."""
    session, seen = opened(calls, clock)
    assert session.expired_because == ""
    said = "session 7 ending: ended by an operator"
    calls.fail(SessionExpired(said))
    assert (seen, session.expired_because) == ([SessionState.EXPIRED], said)
    assert session.lease_remaining == 0
    assert calls.waiting == [], "no KeepAlive follows"
    with pytest.raises(SessionExpired, match=f"has expired \\({said}\\)"):
        result_of(session.check_sequencer(b"s"))


def test_a_handle_with_unknown_mode_or_event_bits_is_refused_before_sending(
    calls: FakeCalls, clock: Clock
) -> None:
    """open_handle with a mode or event bit no handle has raises ValueError and sends
    nothing (the cell would refuse the frame and close the connection)."""
    session, _ = opened(calls, clock)
    sent = len(calls.calls)
    with pytest.raises(ValueError, match="no handle has"):
        session.open_handle("/ls/local/f", events=1 << 12)
    with pytest.raises(ValueError, match="no handle has"):
        session.open_handle("/ls/local/f", mode=HandleMode(8))
    assert len(calls.calls) == sent


def _handle_write(session: Session, n: int) -> Deferred[SessionResult]:
    call = HandleWrite(b"h", SetContents("/ls/local/f", b"%d" % n))
    return Deferred.fromCoroutine(session.call(call))


def _done(waiting: Deferred[tuple[SessionResult, SendTimes]]) -> None:
    waiting.callback((CallDone(), SendTimes(0, 0)))


def test_calls_that_change_state_carry_their_number_and_acknowledge_the_answered(
    calls: FakeCalls, clock: Clock
) -> None:
    """Numbered calls count up; each acknowledges every answer below the oldest call still
    unanswered; reads and KeepAlives carry no number."""
    session, _ = opened(calls, clock)
    first, second = _handle_write(session, 1), _handle_write(session, 2)
    checking = session.check_sequencer(b"s")
    assert calls.numbers[-3:] == [CallNumber(1, 1), CallNumber(2, 1), None]
    _done(calls.waiting.pop(1))  # the first write is answered
    third = _handle_write(session, 3)
    assert calls.numbers[-1] == CallNumber(3, 2)
    for waiting in calls.waiting[1:]:
        _done(waiting)
    for answered in (first, second, third):
        assert result_of(answered) == CallDone()
    assert result_of(checking) is False


def test_a_call_runs_at_most_calls_unacked_max_ahead_of_the_oldest_unanswered(
    calls: FakeCalls, clock: Clock
) -> None:
    """The numbered call past CALLS_UNACKED_MAX of the oldest unanswered one waits for it
    (the cell keeps that many answers per session, so none a retry needs is dropped)."""
    session, _ = opened(calls, clock)
    keepalive = calls.waiting.pop(0)
    running = [_handle_write(session, n) for n in range(CALLS_UNACKED_MAX + 1)]
    assert len(calls.waiting) == CALLS_UNACKED_MAX, "the last one waits"
    _done(calls.waiting.pop(1))  # not the oldest: the last still waits
    assert len(calls.waiting) == CALLS_UNACKED_MAX - 1
    _done(calls.waiting.pop(0))  # the oldest: the last goes
    assert calls.numbers[-1] == CallNumber(CALLS_UNACKED_MAX + 1, 3)
    for waiting in calls.waiting:
        _done(waiting)
    assert all(result_of(answered) == CallDone() for answered in running)
    assert not keepalive.called


STAT = Stat(
    instance=3, content_generation=1, lock_generation=0, acl_generation=1, checksum=0,
    acl=AclNames("all", "all", "all"), is_directory=False, ephemeral=False, size=0,
)  # fmt: skip


def _timed_acquire(calls: FakeCalls, session: Session) -> Deferred[bytes]:
    """Open a handle on /ls/local/lock (answered), then acquire its lock for at most 2 s."""
    opening = session.open_handle("/ls/local/lock", events=EventMask.HANDLE_INVALID)
    opened = HandleOpened(b"h", False, STAT, HandleId(5))
    calls.waiting.pop().callback((opened, SendTimes(0, 0)))
    acquiring = result_of(opening).acquire(timeout=2)
    assert calls.last() == AcquireLock(b"h", LockMode.EXCLUSIVE, wait=True, wait_ms=2000)
    return acquiring


def test_an_acquire_no_master_answered_closes_its_handle(calls: FakeCalls, clock: Clock) -> None:
    """A timed acquire that no master answered by its deadline, which may have been
    granted unseen, raises LockTimeout and closes its handle (releasing such a grant);
    a poison would leave the lock held by a handle the program gave up (sim seed 20612)."""
    session, _ = opened(calls, clock)
    acquiring = _timed_acquire(calls, session)
    calls.waiting.pop().errback(Unavailable("no master answered within 7 s"))
    with pytest.raises(LockTimeout, match="the handle was closed to withdraw the request"):
        result_of(acquiring)
    sent = [call for call, _, _ in calls.calls]
    assert sent[-1] == CloseHandle(b"h")
    assert PoisonHandle(b"h") not in sent


def test_an_acquire_the_master_refused_in_time_keeps_its_handle(
    calls: FakeCalls, clock: Clock
) -> None:
    """A timed acquire the master refused at the end of its wait raises LockTimeout and
    sends nothing more: the master withdrew the request, and the handle stays usable."""
    session, _ = opened(calls, clock)
    acquiring = _timed_acquire(calls, session)
    sent = len(calls.calls)
    calls.waiting.pop().errback(LockHeld("not acquired within the 20 ticks asked for"))
    with pytest.raises(LockTimeout, match="not acquired within 2 s"):
        result_of(acquiring)
    assert len(calls.calls) == sent
