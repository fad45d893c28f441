"""ClientSession, the sans-IO session core: states, lease, KeepAlives, events, cache, bugs."""

from __future__ import annotations

import pytest

from chubbypy.client.core import (
    KEEPALIVE_LATE,
    TRANSITIONS,
    Admission,
    CachedNode,
    CellClosed,
    CheckLeaseAt,
    ClientBug,
    ClientSession,
    EventDelivered,
    KeepAliveAt,
    ParkedHandle,
    PresentHandle,
    ReadFromMaster,
    RequestTimedOut,
    SendClose,
    SendKeepAlive,
    SendTimes,
    SessionInput,
    SessionSettings,
    SessionState,
    StateChanged,
    acquire_outcome_unknown,
    local_lease_end,
    next_state,
)
from chubbypy.protocol import CallNumber
from chubbypy.protocol.errors import (
    ChubbyError,
    InvalidHandle,
    LockHeld,
    NoSuchNode,
    PermissionDenied,
    SessionExpired,
    Unavailable,
)
from chubbypy.protocol.namespace import AclNames, Create, LockMode, SetContents, Stat
from chubbypy.protocol.session import (
    CALLS_UNACKED_MAX,
    AcquireLock,
    CloseHandle,
    CloseSession,
    EventKind,
    HandleMode,
    HandleWrite,
    KeepAlive,
    LeaseExtended,
    NodeRead,
    Open,
    ReadNode,
    ReleaseLock,
    SessionEvent,
)

SID, CREDENTIAL = 7, b"c" * 16
LEASE_MS, GRACE, DRIFT = 12_000, 45.0, 0.01
SHRINK = (1 - DRIFT) / (1 + DRIFT)
CREATED_SENT, CREATED_AT = 100.0, 100.5
END = CREATED_SENT + 12 * SHRINK
"""Where the lease of a session made by `session()` ends."""
STAT = Stat(
    instance=3, content_generation=1, lock_generation=0, acl_generation=0, checksum=0,
    acl=AclNames("all", "all", "all"), is_directory=False, ephemeral=False, size=1,
)  # fmt: skip
PATH = "/ls/test/f"


class Sites:
    """A `Chance` that takes the rare path at the named sites only."""

    def __init__(self, *sites: str) -> None:
        self.sites = sites

    def randint(self, low: int, high: int) -> int:
        return low

    def buggify(self, site: str) -> bool:
        return site in self.sites


def session(
    *, bugs: frozenset[ClientBug] = frozenset(), cache: bool = True, chance: Sites | None = None
) -> ClientSession:
    """A session created at CREATED_AT (sent at CREATED_SENT) with its first KeepAlive out."""
    made = ClientSession(SID, CREDENTIAL, SessionSettings(GRACE, DRIFT, cache), bugs=bugs,
                         chance=chance or Sites())  # fmt: skip
    made.session_created(CREATED_AT, SendTimes(CREATED_SENT, CREATED_SENT), LEASE_MS)
    return made


def answer(*events: SessionEvent, lease_ms: int = LEASE_MS, held_ms: int = 0) -> LeaseExtended:
    return LeaseExtended(lease_ms, tuple(events), held_ms)


def event(sequence: int, kind: EventKind = EventKind.CONTENTS_MODIFIED, handle_id: int = 0,
          path: str = PATH) -> SessionEvent:  # fmt: skip
    return SessionEvent(sequence, kind, path, handle_id)


def keepalive_sent(outputs: tuple[object, ...]) -> SendKeepAlive:
    (sent,) = [o for o in outputs if isinstance(o, SendKeepAlive)]
    return sent


def cache_read(made: ClientSession, now: float, *, sequence: int = 1) -> None:
    """Read PATH through the master, answered as cached."""
    wanted = made.read_wanted(now, PATH)
    assert isinstance(wanted, ReadFromMaster)
    made.read_answered(now, PATH, wanted.started, NodeRead(STAT, b"x", True, sequence))


# ----------------------------------------------------------------------------- the table


def test_the_table_covers_every_state_and_final_states_have_no_moves() -> None:
    """Every state has a row; nothing leaves EXPIRED or CLOSED; only live states close."""
    assert set(TRANSITIONS) == set(SessionState)
    for state in SessionState:
        assert (TRANSITIONS[state] == {}) is state.final
        assert (SessionInput.CLOSE_REQUESTED in TRANSITIONS[state]) is state.live


def test_the_safe_round_trip_and_the_endings() -> None:
    """Jeopardy, safe, connected; the master's word closes a closing session, expires others."""
    assert next_state(SessionState.CONNECTED, SessionInput.LEASE_RAN_OUT) is SessionState.JEOPARDY
    assert next_state(SessionState.JEOPARDY, SessionInput.LEASE_EXTENDED) is SessionState.SAFE
    assert next_state(SessionState.SAFE, SessionInput.SAFETY_REPORTED) is SessionState.CONNECTED
    assert next_state(SessionState.CLOSING, SessionInput.MASTER_ENDED) is SessionState.CLOSED
    for live in (SessionState.CONNECTED, SessionState.JEOPARDY, SessionState.SAFE):
        assert next_state(live, SessionInput.MASTER_ENDED) is SessionState.EXPIRED


def test_a_move_the_table_does_not_list_is_a_programmer_error() -> None:
    """An input the table has no move for asserts, in the table and in the session."""
    with pytest.raises(AssertionError, match="no move from CONNECTED on CLOSE_FINISHED"):
        next_state(SessionState.CONNECTED, SessionInput.CLOSE_FINISHED)
    with pytest.raises(AssertionError, match="never requested"):
        session().close_finished()


# ----------------------------------------------------------------------------- the lease


def test_the_local_lease_is_shrunk_by_the_drift_of_both_clocks() -> None:
    """Sent time plus hold plus lease, times (1 - e) / (1 + e)."""
    assert local_lease_end(10.0, 12_000, 500, 0.01) == pytest.approx(10 + 12.5 * 0.99 / 1.01)
    assert local_lease_end(10.0, 12_000, 500, 0.0) == pytest.approx(22.5)


def test_creation_counts_the_lease_from_the_sending_and_sends_the_first_keepalive() -> None:
    """CreateSession's answer arms the lease timer and sends a KeepAlive acking nothing."""
    made = ClientSession(SID, CREDENTIAL, SessionSettings(GRACE, DRIFT))
    outputs = made.session_created(CREATED_AT, SendTimes(CREATED_SENT, 103.0), LEASE_MS)
    assert made.lease_end_seconds == pytest.approx(END)
    assert outputs == (
        CheckLeaseAt(made.lease_end_seconds),
        SendKeepAlive(KeepAlive(SID, CREDENTIAL, 0), 13.0, made.lease_end_seconds + GRACE),
    )


def test_a_retry_does_not_restart_the_lease_count() -> None:
    """A KeepAlive first sent at 105 and re-sent at 109 gives a lease counted from 105."""
    made = session()
    made.keepalive_answered(109.5, SendTimes(105.0, 109.0), answer(held_ms=2_000))
    assert made.lease_end_seconds == pytest.approx(105 + 14 * SHRINK)


def test_bug_lease_from_answer_counts_from_the_arrival() -> None:
    """`lease-from-answer` counts the same answer's lease from when it arrived."""
    made = session(bugs=frozenset({ClientBug.LEASE_FROM_ANSWER}))
    made.keepalive_answered(109.5, SendTimes(105.0, 109.0), answer(held_ms=2_000))
    assert made.lease_end_seconds == pytest.approx(109.5 + 14 * SHRINK)


def test_the_lease_never_moves_back() -> None:
    """A late answer to an old KeepAlive, or a shorter lease, cannot shorten the lease."""
    made = session()
    made.keepalive_answered(101.0, SendTimes(100.2, 100.2), answer(lease_ms=1_000))
    assert made.lease_end_seconds == pytest.approx(END)


def test_jeopardy_at_the_lease_end_and_expiry_after_the_grace_period() -> None:
    """The lease timer finds jeopardy exactly at the lease end, expiry at end + grace."""
    made = session()
    assert made.lease_checked(END - 0.001) == (CheckLeaseAt(END),)
    assert made.state is SessionState.CONNECTED
    assert made.lease_checked(END) == (
        StateChanged(SessionState.JEOPARDY),
        CheckLeaseAt(END + GRACE),
    )
    assert made.lease_checked(END + GRACE - 0.001) == (CheckLeaseAt(END + GRACE),)
    assert made.lease_checked(END + GRACE) == (StateChanged(SessionState.EXPIRED),)
    assert made.lease_checked(END + GRACE + 1) == ()


def test_a_process_that_stalled_past_the_grace_period_expires_at_once() -> None:
    """One late lease check reports jeopardy, then expiry."""
    made = session()
    assert made.lease_checked(END + GRACE + 10) == (
        StateChanged(SessionState.JEOPARDY),
        StateChanged(SessionState.EXPIRED),
    )


def test_an_answer_in_jeopardy_reports_safe_then_connected() -> None:
    """A KeepAlive answered in jeopardy: SAFE, CONNECTED, the timer rearmed, the next sent."""
    made = session()
    made.lease_checked(END)
    outputs = made.keepalive_answered(END + 5, SendTimes(END + 4, END + 4), answer())
    new_end = END + 4 + 12 * SHRINK
    assert outputs == (
        StateChanged(SessionState.SAFE),
        StateChanged(SessionState.CONNECTED),
        CheckLeaseAt(pytest.approx(new_end)),  # type: ignore[arg-type]
        SendKeepAlive(KeepAlive(SID, CREDENTIAL, 0), 13.0, pytest.approx(new_end + GRACE)),  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------- KeepAlives


def test_a_keepalive_waits_a_lease_and_a_second_until_grace_past_the_lease_or_its_sending() -> None:
    """Attempt: lease + 1 s. Deadline: the later of lease end and sending, plus grace."""
    made = session()
    early = keepalive_sent(made.keepalive_answered(101.0, SendTimes(100.8, 100.8), answer()))
    assert early.attempt_seconds == 13.0
    assert early.deadline_seconds == pytest.approx(made.lease_end_seconds + GRACE)
    late_end = made.lease_end_seconds
    made.lease_checked(late_end)
    resent = keepalive_sent(made.keepalive_failed(late_end + 3, Unavailable("no master")))
    assert resent.deadline_seconds == pytest.approx(late_end + 3 + GRACE)


@pytest.mark.parametrize(
    ("error", "after"),
    [
        (SessionExpired("gone"), (StateChanged(SessionState.EXPIRED),)),
        (CellClosed("closed"), (StateChanged(SessionState.EXPIRED),)),
        (Unavailable("no master"), "resent"),
        (PermissionDenied("token rotated"), (KeepAliveAt(110.0 + 1.0),)),
        (RequestTimedOut("r1: no reply"), (KeepAliveAt(110.0 + 1.0),)),
    ],
    ids=["expired", "cell-closed", "unavailable", "refused", "other"],
)
def test_what_a_keepalive_failure_before_its_deadline_means(
    error: Exception, after: tuple[object, ...] | str
) -> None:
    """Expired or closed ends it; unavailable sends again at once; others after a pause."""
    made = session()
    outputs = made.keepalive_failed(110.0, error)
    if after == "resent":
        assert keepalive_sent(outputs).keepalive == KeepAlive(SID, CREDENTIAL, 0)
    else:
        assert outputs == after


@pytest.mark.parametrize("error", [Unavailable("no master"), ChubbyError("odd")])
def test_a_keepalive_failing_at_its_deadline_gives_the_session_up(error: Exception) -> None:
    """Past the KeepAlive's deadline any failure expires the session."""
    made = session()
    assert made.keepalive_failed(END + GRACE, error) == (StateChanged(SessionState.EXPIRED),)


def test_a_keepalive_failure_while_closing_sends_nothing_and_the_master_word_closes() -> None:
    """Closing: no more KeepAlives; SESSION_EXPIRED means the close landed."""
    made = session()
    made.close_requested()
    assert made.keepalive_failed(110.0, Unavailable("no master")) == ()
    assert made.keepalive_due(111.0) == ()
    other = session()
    other.close_requested()
    assert other.keepalive_failed(110.0, SessionExpired("x")) == (
        StateChanged(SessionState.CLOSED),
    )


def test_chance_sends_the_next_keepalive_late() -> None:
    """At the KEEPALIVE_LATE site the next KeepAlive waits half a lease, then goes out."""
    made = session(chance=Sites(KEEPALIVE_LATE))
    outputs = made.keepalive_answered(101.0, SendTimes(100.8, 100.8), answer())
    assert outputs[-1] == KeepAliveAt(101.0 + 6.0)
    assert keepalive_sent(made.keepalive_due(107.0)).keepalive == KeepAlive(SID, CREDENTIAL, 0)


def test_one_keepalive_at_a_time() -> None:
    """Asking for a KeepAlive while one is on its way is a programmer error."""
    with pytest.raises(AssertionError, match="one KeepAlive at a time"):
        session().keepalive_due(101.0)


def test_after_the_end_nothing_changes() -> None:
    """Once expired, answers, timers and closes do nothing."""
    made = session()
    made.keepalive_failed(101.0, SessionExpired("gone"))
    assert made.keepalive_answered(102.0, SendTimes(101, 101), answer(event(1))) == ()
    assert made.lease_checked(END + GRACE) == ()
    assert made.close_requested() == ()
    assert made.expiry_reported() == ()
    assert made.acked_through == 0


@pytest.mark.parametrize("bug", list(ClientBug), ids=lambda b: b.value)
def test_each_bug_changes_nothing_outside_what_it_names(bug: ClientBug) -> None:
    """With one send per call, answers that come the moment they are sent and no
    INVALIDATE, a bugged session acts as a sound one."""

    def run(made: ClientSession) -> list[object]:
        cache_read(made, 101.0)
        failover = event(5, EventKind.MASTER_FAILOVER)
        seen: list[object] = [
            made.keepalive_answered(100.8, SendTimes(100.8, 100.8), answer(event(4))),
            made.keepalive_answered(101.0, SendTimes(101.0, 101.0), answer(failover)),
            made.lease_checked(made.lease_end_seconds),
            made.read_wanted(made.lease_end_seconds, PATH),
        ]
        return [*seen, made.state, made.lease_end_seconds, len(made.cache)]

    assert run(session(bugs=frozenset({bug}))) == run(session())


# ----------------------------------------------------------------------------- events


def test_events_are_acknowledged_and_repeats_dropped() -> None:
    """The next KeepAlive acks the highest event; a repeated answer delivers only news."""
    made = session()
    first = made.keepalive_answered(101.0, SendTimes(100.8, 100.8), answer(event(1), event(2)))
    assert [o.event.sequence for o in first if isinstance(o, EventDelivered)] == [1, 2]
    assert keepalive_sent(first).keepalive.acked_through == 2
    again = made.keepalive_answered(
        102.0, SendTimes(101, 101), answer(event(1), event(2), event(3))
    )
    assert [o.event.sequence for o in again if isinstance(o, EventDelivered)] == [3]
    assert keepalive_sent(again).keepalive.acked_through == 3


def test_an_event_goes_to_its_handle_and_to_the_session() -> None:
    """A handle's event names that handle; an event of an unknown handle names none."""
    made = session()
    made.handle_opened(5, asked_for_events=True)
    mine, stray = event(1, handle_id=5), event(2, handle_id=9)
    outputs = made.keepalive_answered(101.0, SendTimes(100.8, 100.8), answer(mine, stray))
    delivered = [o for o in outputs if isinstance(o, EventDelivered)]
    assert delivered == [EventDelivered(mine, (5,)), EventDelivered(stray, ())]
    made.handle_closed(5)
    later = event(3, handle_id=5)
    outputs = made.keepalive_answered(102.0, SendTimes(101, 101), answer(later))
    assert EventDelivered(later, ()) in outputs


def test_a_failover_reaches_every_handle_that_asked_for_events_and_presents_them() -> None:
    """MASTER_FAILOVER goes to event-asking handles; all but poisoned ones are presented."""
    made = session()
    made.handle_opened(1, asked_for_events=True)
    made.handle_opened(2, asked_for_events=False)
    made.handle_opened(3, asked_for_events=True)
    made.handle_poisoned(3)
    cache_read(made, 100.9)
    failover = event(1 << 32 | 1, EventKind.MASTER_FAILOVER)
    outputs = made.keepalive_answered(101.0, SendTimes(100.8, 100.8), answer(failover))
    presented = [o for o in outputs if isinstance(o, PresentHandle)]
    assert outputs[0] == EventDelivered(failover, (1, 3))
    assert presented == [PresentHandle(1)]
    assert len(made.cache) == 0, "the new master knows nothing of what was cached"


# ----------------------------------------------------------------------------- the cache


def test_the_cache_answers_only_while_connected_and_within_the_lease() -> None:
    """A cached read is answered from memory until the lease ends; jeopardy empties it."""
    made = session()
    cache_read(made, 101.0)
    assert made.read_wanted(102.0, PATH) == CachedNode(STAT, b"x")
    assert isinstance(made.read_wanted(END, PATH), ReadFromMaster)
    made.lease_checked(END)
    assert len(made.cache) == 0
    assert made.read_wanted(END + 1, PATH) == ReadFromMaster(
        ReadNode(SID, CREDENTIAL, PATH, True),
        made.read_wanted(END + 1, PATH).started,  # type: ignore[union-attr]
    )


def test_a_session_with_its_cache_off_keeps_nothing_and_asks_not_to_be_registered() -> None:
    """cache=False: reads ask the master without registering, and are never kept."""
    made = session(cache=False)
    wanted = made.read_wanted(101.0, PATH)
    assert isinstance(wanted, ReadFromMaster)
    assert wanted.call.cache is False
    made.read_answered(101.0, PATH, wanted.started, NodeRead(STAT, b"x", True, 1))
    assert len(made.cache) == 0


def test_an_invalidation_drops_the_entry_before_it_is_acknowledged() -> None:
    """INVALIDATE empties the entry, is not delivered, and is acked by the next KeepAlive."""
    made = session()
    cache_read(made, 101.0)
    outputs = made.keepalive_answered(
        101.5, SendTimes(100.8, 100.8), answer(event(1, EventKind.INVALIDATE))
    )
    assert len(made.cache) == 0
    assert not [o for o in outputs if isinstance(o, EventDelivered)]
    assert keepalive_sent(outputs).keepalive.acked_through == 1


def test_bug_cache_ignores_invalidation_acknowledges_but_keeps_the_entry() -> None:
    """`cache-ignores-invalidation` acks the INVALIDATE and still answers from the cache."""
    made = session(bugs=frozenset({ClientBug.CACHE_IGNORES_INVALIDATION}))
    cache_read(made, 101.0)
    outputs = made.keepalive_answered(
        101.5, SendTimes(100.8, 100.8), answer(event(1, EventKind.INVALIDATE))
    )
    assert keepalive_sent(outputs).keepalive.acked_through == 1
    assert made.read_wanted(102.0, PATH) == CachedNode(STAT, b"x")


def test_closed_handles_are_kept_while_the_cache_is_usable_and_dropped_in_jeopardy() -> None:
    """Parking needs a usable cache; a full cache pushes the oldest out; jeopardy drops all."""
    made = session()
    key = (PATH, 3, 0, 0)
    assert made.park(101.0, key, ParkedHandle(b"h1", STAT, 1)) == ()
    assert made.unpark(101.0, key) == ParkedHandle(b"h1", STAT, 1)
    assert made.unpark(101.0, key) is None
    pushed = [
        made.park(101.0, (f"/p{i}", 3, 0, 0), ParkedHandle(b"%d" % i, STAT, i)) for i in range(101)
    ]
    assert pushed[-1] == (b"0",)
    made.lease_checked(END)
    assert made.unpark(END, ("/p5", 3, 0, 0)) is None
    assert made.park(END, key, ParkedHandle(b"h2", STAT, 2)) is None


# ----------------------------------------------------------------------------- calls, closing


def test_calls_are_sent_waited_or_refused_by_state() -> None:
    """Calls go out when connected or closing, wait in jeopardy, are refused once over."""
    made = session()
    assert made.call_wanted() is Admission.SEND
    made.lease_checked(END)
    assert made.call_wanted() is Admission.WAIT
    made.close_requested()
    assert made.call_wanted() is Admission.SEND
    made.close_finished()
    assert made.call_wanted() is Admission.REFUSE


def test_closing_is_a_state_that_ends_closed() -> None:
    """close_requested moves to CLOSING and sends CloseSession once; its end closes."""
    made = session()
    cache_read(made, 101.0)
    assert made.close_requested() == (
        StateChanged(SessionState.CLOSING),
        SendClose(CloseSession(SID, CREDENTIAL)),
    )
    assert len(made.cache) == 0
    assert made.close_requested() == ()
    assert made.lease_checked(END + GRACE) == (), "a closing session's lease is not watched"
    assert made.close_finished() == (StateChanged(SessionState.CLOSED),)
    assert made.close_finished() == ()


def test_session_expired_on_any_call_expires_a_live_session() -> None:
    """The master's SESSION_EXPIRED, reported from any call, ends the session."""
    made = session()
    assert made.expiry_reported() == (StateChanged(SessionState.EXPIRED),)
    assert made.open_handles == 0


def test_only_calls_that_change_state_are_numbered_and_never_twice() -> None:
    """Writes, releases, closes and creating opens get rising numbers, each acknowledging
    up to the oldest still unanswered; reads, acquires and KeepAlives get none."""
    made = session()
    write = HandleWrite(b"h", SetContents(PATH, b"x"))
    assert made.call_number(ReadNode(SID, CREDENTIAL, PATH)) is None
    assert made.call_number(AcquireLock(b"h", LockMode.EXCLUSIVE, wait=True)) is None
    assert made.call_number(Open(SID, CREDENTIAL, PATH, HandleMode.READ)) is None
    first = made.call_number(write)
    second = made.call_number(ReleaseLock(b"h", 3))
    third = made.call_number(Open(SID, CREDENTIAL, PATH, HandleMode.READ, create=Create(PATH)))
    assert (first, second, third) == (CallNumber(1, 1), CallNumber(2, 1), CallNumber(3, 1))
    made.call_ended(first)
    assert made.call_number(CloseHandle(b"h")) == CallNumber(4, 2)


def test_numbered_calls_stay_within_calls_unacked_max_of_the_oldest() -> None:
    """Once a call would run CALLS_UNACKED_MAX past the oldest unanswered, none may start."""
    made = session()
    write = HandleWrite(b"h", SetContents(PATH, b"x"))
    numbers = [made.call_number(write) for _ in range(CALLS_UNACKED_MAX)]
    assert not made.number_wanted()
    made.call_ended(numbers[-1])
    assert not made.number_wanted(), "the oldest is what holds it back"
    made.call_ended(numbers[0])
    assert made.number_wanted()


def test_calls_unnumbered_bug_sends_no_numbers() -> None:
    """`calls-unnumbered` numbers nothing (the simulator's at-most-once checker catches it)."""
    made = session(bugs=frozenset({ClientBug.CALLS_UNNUMBERED}))
    assert made.call_number(HandleWrite(b"h", SetContents(PATH, b"x"))) is None


@pytest.mark.parametrize(
    ("error", "unknown"),
    [
        (Unavailable("no master answered within 7 s"), True),
        (LockHeld("not acquired within the 20 ticks asked for"), False),
        (SessionExpired("session 7 has ended"), False),
        (NoSuchNode("the node of this handle is gone"), False),
        (InvalidHandle("the handle was poisoned"), False),
    ],
)
def test_only_an_acquire_no_master_answered_may_have_been_granted(
    error: Exception, unknown: bool
) -> None:
    """An acquire that found no master by its deadline may hold the lock all the same (its
    handle must be closed); an answer, or the session's or node's end, says it does not."""
    assert acquire_outcome_unknown(error) is unknown
