"""The master's sessions, handles and locks, driven against a real namespace database whose
log applies every proposal at once: a cell without Paxos (Chubby §2.4 to §2.9)."""

from __future__ import annotations

import pytest

from chubbypy.locks import decode_sequencer
from chubbypy.master import (
    Done,
    KeepAliveAnswered,
    LockGranted,
    SequencerChecked,
    SessionStarted,
)
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import Create, Delete, GetContentsAndStat, SetContents
from chubbypy.protocol.session import EventKind, EventMask, HandleMode
from tests.unit.master.harness import EXCLUSIVE, ROOT, RW, SHARED, TIMING, Cell


@pytest.fixture
def cell() -> Cell:
    return Cell()


def test_a_session_opens_a_created_node_and_again_without_creating(cell: Cell) -> None:
    """Open with create creates once; later opens find the node; exclusive create refuses."""
    session = cell.session()
    first = cell.ok("open", session, f"{ROOT}/f", RW, create=Create(f"{ROOT}/f"))
    again = cell.ok("open", session, f"{ROOT}/f", RW, create=Create(f"{ROOT}/f"))
    assert (first.created, again.created) == (True, False)
    assert first.handle != again.handle
    exclusive = Create(f"{ROOT}/f")
    assert cell.code("open", session, f"{ROOT}/f", RW, create=exclusive, exclusive=True) is (
        ErrorCode.EXISTS
    )
    assert cell.code("open", session, f"{ROOT}/missing", RW) is ErrorCode.NO_SUCH_NODE


def test_a_new_sessions_lease_is_reported_a_tick_short_like_a_keepalives(cell: Cell) -> None:
    """The creation was applied somewhere within the current tick: the lease it reports
    is one tick short of the expiry the master keeps, so the client's lease always ends
    first (the simulator found a session ended before its first KeepAlive's answer)."""
    cell.tick(3)
    started = cell.ok("create_session", "client")
    assert isinstance(started, SessionStarted)
    (listed,) = cell.ok("list_sessions").sessions
    assert (started.lease_ticks, listed.lease_remaining_ticks) == (99, 100)
    assert TIMING.session.lease_ticks == 100


def test_exclusive_locking_and_the_sequencer_it_gives(cell: Cell) -> None:
    """The holder gets a sequencer naming the lock's generation; try by another fails; the
    sequencer stops validating once another client acquires."""
    alice, bob = cell.session(), cell.session()
    a, b = cell.open(alice), cell.open(bob)
    granted = cell.ok("acquire", a, EXCLUSIVE, wait=False)
    assert isinstance(granted, LockGranted)
    sequencer = decode_sequencer(granted.sequencer)
    assert (sequencer.mode, sequencer.lock_generation) == (EXCLUSIVE, 1)
    assert cell.code("acquire", b, EXCLUSIVE, wait=False) is ErrorCode.LOCK_HELD
    assert cell.ok("check_sequencer", granted.sequencer) == SequencerChecked(True)
    assert cell.ok("release", a) == Done()
    assert cell.ok("check_sequencer", granted.sequencer) == SequencerChecked(False)
    assert cell.ok("acquire", b, EXCLUSIVE, wait=False).stat.lock_generation == 2


def test_a_blocked_acquire_is_granted_when_the_holder_releases(cell: Cell) -> None:
    """acquire(wait=True) waits in line and is answered when the lock comes free."""
    alice, bob = cell.session(), cell.session()
    a, b = cell.open(alice), cell.open(bob)
    cell.ok("acquire", a, EXCLUSIVE, wait=False)
    waiting = cell.call("acquire", b, EXCLUSIVE, wait=True)
    assert cell.result(waiting) is None
    cell.ok("release", a)
    result = cell.result(waiting)
    assert isinstance(result, LockGranted)
    assert result.stat.lock_generation == 2


def test_a_thousand_waiters_are_served_one_at_a_time_in_order(cell: Cell) -> None:
    """Each release grants exactly the next waiter in arrival order."""
    holder = cell.session()
    first = cell.open(holder)
    cell.ok("acquire", first, EXCLUSIVE, wait=False)
    sessions = [cell.session() for _ in range(1000)]
    handles = [cell.open(s) for s in sessions]
    tokens = [cell.call("acquire", h, EXCLUSIVE, wait=True) for h in handles]
    assert all(cell.result(t) is None for t in tokens)
    cell.ok("release", first)
    for position, (token, handle) in enumerate(zip(tokens, handles, strict=True)):
        granted = cell.result(token)
        assert isinstance(granted, LockGranted), (position, granted)
        assert granted.stat.lock_generation == position + 2
        assert all(cell.result(t) is None for t in tokens[position + 1 :])
        cell.ok("release", handle)


def test_closing_a_handle_releases_its_lock_and_cancels_its_wait(cell: Cell) -> None:
    """Close never fails; it frees the lock it held and ends its blocked acquire."""
    alice, bob = cell.session(), cell.session()
    a, b = cell.open(alice), cell.open(bob)
    cell.ok("acquire", a, EXCLUSIVE, wait=False)
    waiting = cell.call("acquire", b, EXCLUSIVE, wait=True)
    assert cell.ok("close", b) == Done()
    assert cell.result(waiting) == Failure(ErrorCode.INVALID_HANDLE, "the handle was closed")
    assert cell.ok("close", a) == Done()
    assert cell.code("acquire", a, EXCLUSIVE, wait=False) is ErrorCode.INVALID_HANDLE
    c = cell.open(bob)
    assert cell.ok("acquire", c, EXCLUSIVE, wait=False).stat.lock_generation == 2


def test_an_expired_holder_keeps_the_lock_for_its_lock_delay(cell: Cell) -> None:
    """A session that stops sending KeepAlives expires at its lease end, not before; its
    lock stays unavailable for the lock-delay, then the next waiter gets it."""
    holder, waiter = cell.session(), cell.session()
    held = cell.open(holder, lock_delay_ms=1000)
    cell.ok("acquire", held, EXCLUSIVE, wait=False)
    other = cell.open(waiter)
    waiting = cell.call("acquire", other, EXCLUSIVE, wait=True)
    cell.events(waiter)  # the waiter keeps its session alive; the holder does not
    cell.tick(99)
    assert cell.result(waiting) is None
    cell.tick(1)  # the holder's lease has run out: expired, lock-delay of 10 ticks starts
    assert cell.code("acquire", held, EXCLUSIVE, wait=False) is ErrorCode.SESSION_EXPIRED
    cell.tick(9)
    assert cell.result(waiting) is None
    cell.tick(1)
    granted = cell.result(waiting)
    assert isinstance(granted, LockGranted)


def test_a_clean_close_of_the_session_frees_its_locks_at_once(cell: Cell) -> None:
    """close_session is not an expiry: no lock-delay, ephemeral nodes go."""
    holder, waiter = cell.session(), cell.session()
    held = cell.open(holder, lock_delay_ms=60_000)
    cell.open(holder, "eph", create=Create(f"{ROOT}/eph", ephemeral=True))
    cell.ok("acquire", held, EXCLUSIVE, wait=False)
    waiting = cell.call("acquire", cell.open(waiter), EXCLUSIVE, wait=True)
    assert cell.ok("close_session", holder) == Done()
    assert isinstance(cell.result(waiting), LockGranted)
    assert cell.machine.tree.get(f"{ROOT}/eph") is None


def test_keepalives_keep_a_session_alive_and_carry_its_events(cell: Cell) -> None:
    """A watcher hears of contents modified and lock acquired on handles that asked."""
    watcher, writer = cell.session(), cell.session()
    mask = EventMask.CONTENTS_MODIFIED | EventMask.LOCK_ACQUIRED
    watched = cell.open(watcher, events=mask)
    assert cell.events(watcher) == []  # parked
    cell.client_write(SetContents(f"{ROOT}/lock", b"x"))
    (answer,) = [r for t, r in cell.results.items() if t == cell.token]
    assert isinstance(answer, KeepAliveAnswered)
    assert [e.kind for e in answer.events] == [EventKind.CONTENTS_MODIFIED]
    cell.ok("acquire", cell.open(writer), EXCLUSIVE, wait=False)
    events = cell.events(watcher, acked=answer.events[-1].sequence)
    assert [kind for kind, _ in events] == [EventKind.LOCK_ACQUIRED]
    assert watched  # the handle the events name


def test_deleting_a_node_invalidates_its_handles_and_fails_its_waiters(cell: Cell) -> None:
    """After a Delete the node's handles get HANDLE_INVALID and waiters NO_SUCH_NODE."""
    alice, bob = cell.session(), cell.session()
    a = cell.open(alice)
    b = cell.open(bob, events=EventMask.HANDLE_INVALID)
    cell.ok("acquire", a, EXCLUSIVE, wait=False)
    waiting = cell.call("acquire", b, EXCLUSIVE, wait=True)
    cell.client_write(Delete(f"{ROOT}/lock"))
    result = cell.result(waiting)
    assert isinstance(result, Failure)
    assert result.code is ErrorCode.NO_SUCH_NODE
    assert [kind for kind, _ in cell.events(bob)] == [EventKind.HANDLE_INVALID]
    assert cell.code("release", a) is ErrorCode.NO_SUCH_NODE


def test_after_a_fail_over_handles_and_locks_carry_on(cell: Cell) -> None:
    """A new master accepts old handles once the session acknowledged the fail-over; the
    lock is still held, and its sequencer still valid."""
    alice = cell.session()
    handle = cell.open(alice)
    granted = cell.ok("acquire", handle, EXCLUSIVE, wait=False)
    cell.fail_over()
    assert cell.code("get_sequencer", handle) is ErrorCode.BUSY
    events = cell.events(alice)
    assert [kind for kind, _ in events] == [EventKind.MASTER_FAILOVER]
    cell.events(alice, acked=cell.last_sequence[alice])
    again = cell.ok("get_sequencer", handle)
    assert again.sequencer == granted.sequencer
    assert cell.ok("check_sequencer", granted.sequencer) == SequencerChecked(True)
    assert cell.ok("release", handle) == Done()


def test_shared_holders_then_a_writer_in_turn(cell: Cell) -> None:
    """Readers share; a writer waits for all of them; readers behind the writer wait."""
    sessions = [cell.session() for _ in range(4)]
    r1, r2, writer, r3 = (cell.open(s) for s in sessions)
    cell.ok("acquire", r1, SHARED, wait=False)
    cell.ok("acquire", r2, SHARED, wait=False)
    writing = cell.call("acquire", writer, EXCLUSIVE, wait=True)
    reading = cell.call("acquire", r3, SHARED, wait=True)
    assert cell.result(writing) is None
    assert cell.result(reading) is None, "a reader does not pass a waiting writer"
    cell.ok("release", r1)
    cell.ok("release", r2)
    assert isinstance(cell.result(writing), LockGranted)
    assert cell.result(reading) is None
    cell.ok("release", writer)
    assert isinstance(cell.result(reading), LockGranted)


def test_a_forged_handle_is_refused(cell: Cell) -> None:
    """Bytes that are not a handle of this cell are INVALID_HANDLE, whatever the call."""
    session = cell.session()
    handle = bytearray(cell.open(session))
    handle[-1] ^= 1
    assert cell.code("acquire", bytes(handle), EXCLUSIVE, wait=False) is ErrorCode.INVALID_HANDLE
    assert cell.code("close", b"junk") is ErrorCode.INVALID_HANDLE


def test_a_read_only_handle_cannot_lock(cell: Cell) -> None:
    """Acquiring needs a handle opened for writing (Chubby §2.4)."""
    session = cell.session()
    reader = cell.open(session, mode=HandleMode.READ)
    assert cell.code("acquire", reader, SHARED, wait=False) is ErrorCode.PERMISSION_DENIED


def test_an_acquire_retried_by_its_holder_is_granted_again(cell: Cell) -> None:
    """A retry after a lost answer gets the same sequencer; another mode is LOCK_HELD."""
    session = cell.session()
    handle = cell.open(session)
    first = cell.ok("acquire", handle, EXCLUSIVE, wait=True)
    again = cell.ok("acquire", handle, EXCLUSIVE, wait=False)
    assert again.sequencer == first.sequencer
    assert cell.code("acquire", handle, SHARED, wait=False) is ErrorCode.LOCK_HELD


def test_a_fenced_write_applies_only_while_its_sequencer_is_valid(cell: Cell) -> None:
    """A write through a handle with a sequencer is refused INVALID_SEQUENCER once another
    client holds the lock, however late it arrives (the check is in the log command)."""
    alice, bob = cell.session(), cell.session()
    a, b = cell.open(alice), cell.open(bob)
    granted = cell.ok("acquire", a, EXCLUSIVE, wait=False)
    fenced = cell.ok("write", a, SetContents(f"{ROOT}/lock", b"1"), granted.sequencer)
    assert isinstance(fenced, Done)
    assert fenced.stat is not None
    assert fenced.stat.content_generation == 2, "a handle write answers the new metadata"
    cell.ok("release", a)
    cell.ok("acquire", b, EXCLUSIVE, wait=False)
    late = cell.code("write", a, SetContents(f"{ROOT}/lock", b"2"), granted.sequencer)
    assert late is ErrorCode.INVALID_SEQUENCER
    assert cell.machine.read(GetContentsAndStat(f"{ROOT}/lock")).contents == b"1"  # type: ignore[union-attr]
    other = cell.code("write", a, SetContents(f"{ROOT}/other", b"x"))
    assert other is ErrorCode.BAD_REQUEST


def test_keepalives_are_not_answered_without_the_master_lease(cell: Cell) -> None:
    """A master whose lease lapsed answers a due KeepAlive NOT_MASTER: it may not extend a
    session lease it cannot stand behind."""
    session = cell.session()
    token = cell.call("keep_alive", session, 0)
    cell.now = 80
    cell.master.tick(cell.now)
    replies, _ = cell.master.take(master_lease_valid=False)
    assert [(r.token, type(r.result)) for r in replies] == [(token, Failure)]
    assert replies[0].result.code is ErrorCode.NOT_MASTER  # type: ignore[union-attr]


def test_a_stale_release_does_not_free_a_later_acquisition(cell: Cell) -> None:
    """A release naming an earlier generation (late or duplicated) is LOCK_NOT_HELD and
    leaves the handle's later hold in place."""
    alice, bob = cell.session(), cell.session()
    a, b = cell.open(alice), cell.open(bob)
    first = cell.ok("acquire", a, EXCLUSIVE, wait=False)
    cell.ok("release", a, first.stat.lock_generation)
    cell.ok("acquire", a, EXCLUSIVE, wait=False)
    assert cell.code("release", a, first.stat.lock_generation) is ErrorCode.LOCK_NOT_HELD
    assert cell.code("acquire", b, EXCLUSIVE, wait=False) is ErrorCode.LOCK_HELD


def test_poison_ends_blocked_acquires_and_refuses_later_calls(cell: Cell) -> None:
    """Poison fails the handle's waiting acquire and every later call, without closing it:
    a lock it holds stays held."""
    alice, bob = cell.session(), cell.session()
    a, b = cell.open(alice), cell.open(bob)
    cell.ok("acquire", a, EXCLUSIVE, wait=False)
    waiting = cell.call("acquire", b, EXCLUSIVE, wait=True)
    assert cell.ok("poison", b) == Done()
    assert cell.result(waiting) == Failure(ErrorCode.INVALID_HANDLE, "the handle was poisoned")
    assert cell.code("acquire", b, EXCLUSIVE, wait=False) is ErrorCode.INVALID_HANDLE
    cell.ok("poison", a)
    assert cell.code("release", a) is ErrorCode.INVALID_HANDLE
    assert cell.code("acquire", cell.open(bob), EXCLUSIVE, wait=False) is ErrorCode.LOCK_HELD


def test_changing_acl_names_through_a_handle_needs_a_handle_opened_for_change(cell: Cell) -> None:
    """SetAcl through a read-write handle is refused (and changes nothing); through one
    opened with CHANGE_ACL it is applied and answers the new metadata."""
    from chubbypy.protocol.namespace import AclNames, SetAcl

    session = cell.session()
    plain = cell.open(session, "guarded")
    names = AclNames("all", "writers", "all")
    assert cell.code("write", plain, SetAcl(f"{ROOT}/guarded", names)) is (
        ErrorCode.PERMISSION_DENIED
    )
    changer = cell.open(session, "guarded", mode=RW | HandleMode.CHANGE_ACL)
    done = cell.ok("write", changer, SetAcl(f"{ROOT}/guarded", names))
    assert isinstance(done, Done)
    assert done.stat is not None
    assert (done.stat.acl, done.stat.acl_generation) == (names, 2)


def test_a_bounded_wait_for_a_lock_is_withdrawn_and_refused_when_it_ends(cell: Cell) -> None:
    """An acquire waiting with wait_ticks is answered LOCK_HELD when they pass and leaves
    the queue: the lock, once released, is not granted to it."""
    alice, bob, carol = cell.session(), cell.session(), cell.session()
    a, b, c = cell.open(alice), cell.open(bob), cell.open(carol)
    cell.ok("acquire", a, EXCLUSIVE, wait=False)
    waiting = cell.call("acquire", b, EXCLUSIVE, wait=True, wait_ticks=3)
    cell.tick(2)
    assert cell.result(waiting) is None, "still waiting"
    cell.tick(1)
    refused = cell.result(waiting)
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.LOCK_HELD
    cell.ok("release", a)
    assert isinstance(cell.ok("acquire", c, EXCLUSIVE, wait=False), LockGranted)


def test_a_handle_write_the_log_would_refuse_is_refused_without_a_proposal() -> None:
    """A handle write of contents above the file limit is refused TOO_LARGE at once: it
    is never proposed (the log would refuse it, after writing it on every replica)."""
    cell = Cell()
    handle = cell.open(cell.session(), "f")
    index = cell.index
    limit = cell.machine.tree.limits.file_bytes_max
    assert cell.code("write", handle, SetContents(f"{ROOT}/f", b"x" * (limit + 1))) is (
        ErrorCode.TOO_LARGE
    )
    assert cell.index == index
