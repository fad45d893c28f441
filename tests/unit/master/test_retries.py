"""Retried session calls at the master (issue 12): a retry joins its first attempt while
that is in progress, gets the kept answer once it was applied (on this master or a new
one), and changes nothing either way."""

from __future__ import annotations

import pytest
from attrs import evolve

from chubbypy.master import Done, HandleOpened, LockGranted, SessionStarted
from chubbypy.protocol import CallNumber
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import Create, Delete, OpenSession, SetContents, Stat
from tests.unit.master.harness import EXCLUSIVE, ROOT, RW, SHARED, TIMING, Cell


@pytest.fixture
def cell() -> Cell:
    return Cell()


def n(sequence: int, first_unacked: int | None = None) -> CallNumber:
    return CallNumber(sequence, sequence if first_unacked is None else first_unacked)


def fail_over(cell: Cell, *sessions: int) -> None:
    """A new master, and every session acknowledging the fail-over to it."""
    cell.fail_over()
    for session in sessions:
        cell.events(session)
        cell.events(session, acked=cell.last_sequence[session])


def stat(cell: Cell, name: str = "lock") -> Stat:
    node = cell.machine.tree.get(f"{ROOT}/{name}")
    assert node is not None
    return cell.machine.tree.stat(node)


def test_a_write_retried_after_its_answer_was_lost_applies_once(cell: Cell) -> None:
    """The retry of an applied write gets the first answer; the generation rose once."""
    handle = cell.open(cell.session())
    write = SetContents(f"{ROOT}/lock", b"v")
    first = cell.ok("write", handle, write, number=n(1))
    proposed = cell.index
    again = cell.ok("write", handle, write, number=n(1))
    assert again == first
    assert isinstance(first, Done)
    assert first.stat is not None
    assert stat(cell).content_generation == first.stat.content_generation == 2
    assert cell.index == proposed, "the retry cost no log entry"


def test_a_retry_after_a_fail_over_gets_the_first_answer(cell: Cell) -> None:
    """A new master answers the retry from the session's record, not by writing again:
    a compare-and-swap retried is not a false GENERATION_MISMATCH."""
    handle = cell.open(cell.session())
    cas = SetContents(f"{ROOT}/lock", b"v", expected_generation=1)
    first = cell.ok("write", handle, cas, number=n(1))
    cell.fail_over()  # answered from the record even before the sessions acknowledged it
    assert cell.ok("write", handle, cas, number=n(1)) == first
    assert stat(cell).content_generation == 2


def test_a_retry_joins_its_first_attempt_in_progress(cell: Cell) -> None:
    """A retry that arrives before its first attempt was applied proposes nothing and is
    answered with it."""
    handle = cell.open(cell.session())
    write = SetContents(f"{ROOT}/lock", b"v")
    first, retry = cell.next_token(), cell.next_token()
    cell.master.write(first, handle, write, None, n(1))
    cell.master.write(retry, handle, write, None, n(1))
    before = cell.index
    cell.settle()
    assert cell.index == before + 1, "one proposal for both"
    assert cell.result(first) == cell.result(retry)
    assert isinstance(cell.result(retry), Done)
    assert stat(cell).content_generation == 2


def test_a_retry_whose_first_caller_left_is_still_answered(cell: Cell) -> None:
    """The first caller giving up (its connection went away) does not take the retry's
    call with it."""
    alice, bob = cell.session(), cell.session()
    a, b = cell.open(alice), cell.open(bob)
    cell.ok("acquire", a, EXCLUSIVE, wait=False)
    first = cell.call("acquire", b, EXCLUSIVE, wait=True)
    retry = cell.call("acquire", b, EXCLUSIVE, wait=True)
    cell.master.cancel(first)
    cell.ok("release", a)
    assert isinstance(cell.result(retry), LockGranted)


def test_a_retried_blocking_acquire_keeps_its_place_in_the_queue(cell: Cell) -> None:
    """A retry of a queued acquire is the same request, not a second waiter: it is granted
    in the first's turn, before later waiters, once."""
    holder, early, late = cell.session(), cell.session(), cell.session()
    h, e, la = cell.open(holder), cell.open(early), cell.open(late)
    cell.ok("acquire", h, EXCLUSIVE, wait=False)
    first = cell.call("acquire", e, EXCLUSIVE, wait=True)
    later = cell.call("acquire", la, EXCLUSIVE, wait=True)
    retry = cell.call("acquire", e, EXCLUSIVE, wait=True)
    cell.ok("release", h)
    granted = cell.result(retry)
    assert isinstance(granted, LockGranted)
    assert cell.result(first) == granted
    assert cell.result(later) is None
    cell.ok("release", e)
    assert isinstance(cell.result(later), LockGranted)


def test_a_second_acquire_through_a_handle_in_another_mode_is_refused(cell: Cell) -> None:
    """One acquire per handle at a time: another mode while one waits is BAD_REQUEST."""
    alice, bob = cell.session(), cell.session()
    a, b = cell.open(alice), cell.open(bob)
    cell.ok("acquire", a, EXCLUSIVE, wait=False)
    cell.call("acquire", b, EXCLUSIVE, wait=True)
    assert cell.code("acquire", b, SHARED, wait=True) is ErrorCode.BAD_REQUEST


def test_a_release_retried_after_another_took_the_lock_is_done(cell: Cell) -> None:
    """The retry of an applied release is Done, not LOCK_NOT_HELD, and frees nothing of
    the next holder's."""
    alice, bob = cell.session(), cell.session()
    a, b = cell.open(alice), cell.open(bob)
    granted = cell.ok("acquire", a, EXCLUSIVE, wait=False)
    generation = granted.stat.lock_generation
    assert cell.ok("release", a, generation, number=n(1)) == Done()
    cell.ok("acquire", b, EXCLUSIVE, wait=False)
    fail_over(cell, alice, bob)
    assert cell.ok("release", a, generation, number=n(1)) == Done()
    assert cell.code("acquire", a, EXCLUSIVE, wait=False) is ErrorCode.LOCK_HELD


def test_an_open_that_created_is_answered_created_when_retried(cell: Cell) -> None:
    """A retried open-with-create whose first attempt created the node answers created,
    with a handle on that node; an exclusive one is not refused EXISTS."""
    session = cell.session()
    path = f"{ROOT}/f"
    first = cell.ok("open", session, path, RW, create=Create(path), exclusive=True, number=n(1))
    again = cell.ok("open", session, path, RW, create=Create(path), exclusive=True, number=n(1))
    assert isinstance(again, HandleOpened)
    assert (first.created, again.created) == (True, True)
    assert again.stat.instance == first.stat.instance
    cell.ok("write", again.handle, Delete(path), number=n(2, 1))
    gone = cell.code("open", session, path, RW, create=Create(path), number=n(1, 1))
    assert gone is ErrorCode.NO_SUCH_NODE


def test_a_handle_write_that_deleted_its_node_is_answered_when_retried(cell: Cell) -> None:
    """The retry of a Delete through a handle is Done, though the handle's node is gone."""
    handle = cell.open(cell.session())
    delete = Delete(f"{ROOT}/lock")
    first = cell.ok("write", handle, delete, number=n(1))
    assert cell.ok("write", handle, delete, number=n(1)) == first


def test_an_acknowledged_call_is_refused_stale(cell: Cell) -> None:
    """A call below what the session acknowledged is STALE_REQUEST, with no proposal."""
    handle = cell.open(cell.session())
    cell.ok("write", handle, SetContents(f"{ROOT}/lock", b"1"), number=n(1))
    cell.ok("write", handle, SetContents(f"{ROOT}/lock", b"2"), number=n(2, 2))
    before = cell.index
    stale = cell.code("write", handle, SetContents(f"{ROOT}/lock", b"1"), number=n(1))
    assert stale is ErrorCode.STALE_REQUEST
    assert cell.index == before


def test_closing_a_handle_twice_releases_once(cell: Cell) -> None:
    """A retried close is Done and does not release a lock the handle's session holds
    through another acquisition."""
    session = cell.session()
    handle = cell.open(session)
    cell.ok("acquire", handle, EXCLUSIVE, wait=False)
    assert cell.ok("close", handle, n(1)) == Done()
    assert cell.ok("close", handle, n(1)) == Done()
    assert stat(cell).lock_generation == 1


def test_a_retried_creation_of_a_session_gets_the_same_session(cell: Cell) -> None:
    """CreateSession with the nonce of a session it opened gets that session again."""
    first = cell.ok("create_session", "client", 99)
    again = cell.ok("create_session", "client", 99)
    other = cell.ok("create_session", "client", 100)
    assert isinstance(first, SessionStarted)
    assert again.session_id == first.session_id != other.session_id
    assert cell.master.session_count == 2


def test_a_creation_applied_twice_opens_one_session(cell: Cell) -> None:
    """Two attempts of one creation in flight at once: both answered with one session."""
    first, retry = cell.next_token(), cell.next_token()
    cell.master.create_session(first, "client", 7)
    cell.master.create_session(retry, "client", 7)
    cell.settle()
    a, b = cell.result(first), cell.result(retry)
    assert isinstance(a, SessionStarted)
    assert a == b
    assert cell.master.session_count == 1


def test_a_creation_retried_by_another_principal_is_refused(cell: Cell) -> None:
    """A CreateSession with a live session's name and nonce from another principal (the
    nonce is in the log, which a store reader sees) is PERMISSION_DENIED at once, costing no
    entry and naming no one; the creator's retry still gets its session (issue 13's
    review: the retry handed the session's id, and so its credential, to anyone)."""
    first = cell.ok("create_session", "client", 99, principal="alice")
    assert isinstance(first, SessionStarted)
    proposed = len(cell.proposed)
    refused = cell.result(cell.call("create_session", "client", 99, principal="mallory"))
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.PERMISSION_DENIED
    assert "alice" not in refused.message
    assert len(cell.proposed) == proposed, "refused before the log"
    again = cell.ok("create_session", "client", 99, principal="alice")
    assert again.session_id == first.session_id
    assert cell.master.session_count == 1


def test_a_creation_in_flight_retried_by_another_principal_is_refused_when_applied(
    cell: Cell,
) -> None:
    """Two creations with one name and nonce in flight at once, for two principals: the
    first opens the session; the second, applied after it, is refused PERMISSION_DENIED by
    the log itself (the principal travels in the command)."""
    first, other = cell.next_token(), cell.next_token()
    cell.master.create_session(first, "client", 7, principal="alice")
    cell.master.create_session(other, "client", 7, principal="mallory")
    cell.settle()
    assert isinstance(cell.result(first), SessionStarted)
    refused = cell.result(other)
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.PERMISSION_DENIED
    assert [p.principal for p in cell.proposed if isinstance(p.write, OpenSession)] == [
        "alice",
        "mallory",
    ]
    assert cell.master.session_count == 1


def test_a_refused_proposal_answers_its_retries_too(cell: Cell) -> None:
    """When the log refuses a call's proposal, the retries joined to it end with it, and
    a later retry is a new attempt."""
    handle = cell.open(cell.session())
    write = SetContents(f"{ROOT}/lock", b"v")
    first, retry = cell.next_token(), cell.next_token()
    cell.master.write(first, handle, write, None, n(1))
    cell.master.write(retry, handle, write, None, n(1))
    _, proposals = cell.master.take(master_lease_valid=True)
    assert len(proposals) == 1
    assert cell.master.call_ended(first) == [retry]
    cell.master.landed(proposals[0].ticket)
    again = cell.ok("write", handle, write, number=n(1))
    assert isinstance(again, Done)
    assert not isinstance(cell.result(first), Failure)


# --- What one session may have waiting (issue 13) --------------------------------------------


def bounded(most: int) -> Cell:
    return Cell(evolve(TIMING, calls_waiting_per_session_max=most))


def test_retries_past_the_session_bound_are_refused_and_the_rest_answered() -> None:
    """With calls_waiting_per_session_max 3, a blocking acquire queued and two retries
    joined to it fill the session's allowance: a third retry is refused
    RESOURCE_EXHAUSTED naming the key, and the others are all granted once the lock is
    free; then the session may wait again."""
    cell = bounded(3)
    holder, flooder = cell.session(), cell.session()
    h, f = cell.open(holder), cell.open(flooder)
    cell.ok("acquire", h, EXCLUSIVE, wait=False)
    waiting = [cell.call("acquire", f, EXCLUSIVE, wait=True) for _ in range(3)]
    refused = cell.result(cell.call("acquire", f, EXCLUSIVE, wait=True))
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.RESOURCE_EXHAUSTED
    assert "limits.calls_waiting_per_session_max" in refused.message
    assert [cell.result(token) for token in waiting] == [None] * 3
    cell.ok("release", h)
    assert all(isinstance(cell.result(token), LockGranted) for token in waiting)
    cell.ok("release", f)
    assert cell.result(cell.call("acquire", f, EXCLUSIVE, wait=True)) is not None


def test_acquires_queued_on_many_locks_count_against_the_session() -> None:
    """Blocking acquires of one session through handles on different held locks count
    together: past the bound the next is refused, while another session still waits."""
    cell = bounded(2)
    holder, flooder, other = cell.session(), cell.session(), cell.session()
    for name in ("a", "b", "c"):
        cell.ok("acquire", cell.open(holder, name), EXCLUSIVE, wait=False)
    cell.call("acquire", cell.open(flooder, "a"), EXCLUSIVE, wait=True)
    cell.call("acquire", cell.open(flooder, "b"), EXCLUSIVE, wait=True)
    assert cell.code("acquire", cell.open(flooder, "c"), EXCLUSIVE, wait=True) is (
        ErrorCode.RESOURCE_EXHAUSTED
    )
    waiting = cell.call("acquire", cell.open(other, "c"), EXCLUSIVE, wait=True)
    assert cell.result(waiting) is None


def test_a_retry_that_leaves_gives_its_place_back() -> None:
    """A joined retry whose caller gave up no longer counts against its session."""
    cell = bounded(2)
    holder, flooder = cell.session(), cell.session()
    h, f = cell.open(holder), cell.open(flooder)
    cell.ok("acquire", h, EXCLUSIVE, wait=False)
    cell.call("acquire", f, EXCLUSIVE, wait=True)
    retry = cell.call("acquire", f, EXCLUSIVE, wait=True)
    assert cell.code("acquire", f, EXCLUSIVE, wait=True) is ErrorCode.RESOURCE_EXHAUSTED
    cell.master.cancel(retry)
    assert cell.result(cell.call("acquire", f, EXCLUSIVE, wait=True)) is None


# --- Handles one session may have open (issue 13) ---------------------------------------------


def test_opens_past_the_handle_bound_are_refused_and_a_close_gives_the_place_back() -> None:
    """With handles_per_session_max 3, a session's fourth Open is refused
    RESOURCE_EXHAUSTED naming the key while another session opens freely; closing one of
    the three lets the next Open through."""
    cell = Cell(evolve(TIMING, handles_per_session_max=3))
    flooder, other = cell.session(), cell.session()
    handles = [cell.open(flooder, name) for name in ("a", "b", "c")]
    refused = cell.result(cell.call("open", flooder, f"{ROOT}/a", RW))
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.RESOURCE_EXHAUSTED
    assert "limits.handles_per_session_max" in refused.message
    cell.open(other, "a")
    cell.ok("close", handles[0])
    cell.open(flooder, "d")


def test_an_earlier_masters_handles_count_against_the_bound_after_a_fail_over() -> None:
    """After a fail-over, a session's handles from the earlier master are taken up to the
    bound as they are used; one past it is refused RESOURCE_EXHAUSTED, not remembered."""
    cell = Cell(evolve(TIMING, handles_per_session_max=2))
    session = cell.session()
    first, second = cell.open(session, "a"), cell.open(session, "b")
    cell.ok("close", first)
    third = cell.open(session, "c")
    cell.fail_over()
    cell.events(session)
    cell.events(session, acked=cell.last_sequence[session])
    cell.ok("acquire", second, SHARED, wait=False)
    cell.ok("acquire", third, SHARED, wait=False)
    assert cell.code("acquire", first, SHARED, wait=False) is ErrorCode.RESOURCE_EXHAUSTED


def test_a_closed_handle_is_refused_and_its_session_s_end_still_says_expired() -> None:
    """A handle this master made and closed is refused INVALID_HANDLE; once its session
    has ended, its handles (closed or not) say SESSION_EXPIRED."""
    cell = Cell()
    session = cell.session()
    kept, closed = cell.open(session, "a"), cell.open(session, "b")
    cell.ok("close", closed)
    assert cell.code("acquire", closed, SHARED, wait=False) is ErrorCode.INVALID_HANDLE
    cell.ok("close_session", session)
    assert cell.code("acquire", kept, SHARED, wait=False) is ErrorCode.SESSION_EXPIRED
    assert cell.code("acquire", closed, SHARED, wait=False) is ErrorCode.SESSION_EXPIRED
