"""Exactly-once session calls in the replicated database (issue 12): a numbered call is
carried out once, its answer kept for its retries; a retried OpenSession opens nothing."""

from __future__ import annotations

import msgpack
import pytest

from chubbypy.namespace import NamespaceLimits, NamespaceMachine
from chubbypy.protocol import CallNumber, LogIndex
from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Acquire,
    Create,
    Delete,
    EndSession,
    InSession,
    LockMode,
    OpenSession,
    Release,
    SessionOpened,
    SetContents,
    Written,
)
from chubbypy.sessions import SessionCalls
from tests.unit.namespace.harness import CELL, Cell, at


def session(cell: Cell, name: str = "client", nonce: int = 0) -> int:
    result = cell.write(OpenSession(name, nonce))
    assert isinstance(result, SessionOpened), result
    return result.session_id


def n(sequence: int, first_unacked: int | None = None) -> CallNumber:
    return CallNumber(sequence, sequence if first_unacked is None else first_unacked)


def test_a_retried_write_gets_its_first_answer_and_changes_nothing() -> None:
    """The same numbered InSession applied twice writes once; the second gets the first's
    result, generation included."""
    cell = Cell()
    s = session(cell)
    cell.ok(InSession(s, Create(at("f"), contents=b"0"), n(1)))
    first = cell.write(InSession(s, SetContents(at("f"), b"1"), n(2)))
    before = cell.machine.snapshot()
    again = cell.write(InSession(s, SetContents(at("f"), b"1"), n(2)))
    assert again == first
    assert isinstance(again, Written)
    assert again.stat is not None
    assert again.stat.content_generation == 2
    assert cell.stat(at("f")).content_generation == 2
    assert cell.machine.snapshot() == before


def test_a_retried_compare_and_swap_is_not_a_false_mismatch() -> None:
    """A CAS retried after it applied answers its success, not GENERATION_MISMATCH."""
    cell = Cell()
    s = session(cell)
    cell.ok(InSession(s, Create(at("f"), contents=b"0"), n(1)))
    cas = InSession(s, SetContents(at("f"), b"1", expected_generation=1), n(2))
    first = cell.write(cas)
    assert isinstance(first, Written)
    assert cell.write(cas) == first


def test_a_failed_call_keeps_its_failure() -> None:
    """A Create that failed EXISTS is answered EXISTS again even after the node is gone:
    the retry is the same call, not a new attempt."""
    cell = Cell()
    s = session(cell)
    cell.ok(Create(at("f")))
    create = InSession(s, Create(at("f")), n(1))
    first = cell.write(create)  # changes only the session's record: the answer kept
    assert isinstance(first, Failure)
    assert first.code is ErrorCode.EXISTS
    cell.ok(Delete(at("f")))
    assert cell.code(create) is ErrorCode.EXISTS
    assert cell.machine.tree.get(at("f")) is None


def test_a_retried_release_is_answered_done_not_lock_not_held() -> None:
    """A Release retried after it freed the lock (and another took it) gets Done again."""
    cell = Cell()
    mine, theirs = session(cell), session(cell)
    instance = cell.ok(Create(at("f")))
    assert instance is not None
    cell.ok(Acquire(mine, 1, at("f"), instance.instance, LockMode.EXCLUSIVE))
    release = Release(mine, 1, at("f"), instance.instance, number=n(1))
    first = cell.write(release)
    assert isinstance(first, Written)
    cell.ok(Acquire(theirs, 2, at("f"), instance.instance, LockMode.EXCLUSIVE))
    assert cell.write(release) == first
    assert cell.stat(at("f")).lock_generation == 2


def test_an_acknowledged_call_is_refused_stale_and_not_carried_out() -> None:
    """A call below the first unacknowledged one the client named is STALE_REQUEST."""
    cell = Cell()
    s = session(cell)
    cell.ok(InSession(s, Create(at("f")), n(1)))
    cell.ok(InSession(s, SetContents(at("f"), b"2"), n(2, 2)))
    failure = cell.fails(InSession(s, SetContents(at("f"), b"1"), n(1)))
    assert failure.code is ErrorCode.STALE_REQUEST
    assert "not carried out again" in failure.message
    calls = cell.machine.tree.session(s)
    assert calls is not None
    assert calls.calls.low_water == 2


def test_answers_kept_are_bounded_and_the_oldest_go_first() -> None:
    """Past session_answers_max, the lowest answers are dropped; their retries are STALE."""
    cell = Cell(NamespaceLimits(session_answers_max=3))
    s = session(cell)
    cell.ok(InSession(s, Create(at("f")), n(1)))
    for sequence in range(2, 7):
        cell.ok(InSession(s, SetContents(at("f"), b"%d" % sequence), n(sequence, 1)))
    record = cell.machine.tree.session(s)
    assert record is not None
    assert [number for number, _ in record.calls.results] == [4, 5, 6]
    assert cell.code(InSession(s, SetContents(at("f"), b"3"), n(3, 1))) is (ErrorCode.STALE_REQUEST)
    assert isinstance(cell.write(InSession(s, SetContents(at("f"), b"4"), n(4, 1))), Written)
    assert cell.stat(at("f")).content_generation == 6


def test_busy_is_not_kept_so_a_retry_is_carried_out() -> None:
    """A numbered call that failed BUSY (ask again) is carried out by its retry."""
    cell = Cell()
    s = session(cell)
    cell.ok(Create(at("d"), is_directory=True))
    # Fill one log entry with creations until the next is BUSY.
    index = cell.index + 1
    created = 0
    while True:
        result = cell.machine.apply_write(
            LogIndex(index), InSession(s, Create(at("d", str(created))), n(created + 1, 1))
        ).result
        if isinstance(result, Failure):
            assert result.code is ErrorCode.BUSY
            break
        created += 1
    cell.index = index
    retry = InSession(s, Create(at("d", str(created))), n(created + 1, 1))
    assert isinstance(cell.write(retry), Written)


def test_calls_of_an_ended_session_are_session_expired() -> None:
    """A numbered call of a session that ended is SESSION_EXPIRED, kept answer or not."""
    cell = Cell()
    s = session(cell)
    write = InSession(s, Create(at("f")), n(1))
    cell.ok(write)
    cell.ok(EndSession(s, expired=False))
    assert cell.code(write) is ErrorCode.SESSION_EXPIRED


def test_an_acquire_asked_again_by_its_holder_changes_nothing() -> None:
    """Acquire carries no number: a handle that holds the lock asking again is LOCK_HELD
    and the generation stays (the master answers such a retry with the grant)."""
    cell = Cell()
    s = session(cell)
    stat = cell.ok(Create(at("f")))
    assert stat is not None
    acquire = Acquire(s, 1, at("f"), stat.instance, LockMode.EXCLUSIVE)
    cell.ok(acquire)
    assert cell.code(acquire) is ErrorCode.LOCK_HELD
    assert cell.stat(at("f")).lock_generation == 1


def test_a_retried_open_session_gets_the_session_its_first_attempt_opened() -> None:
    """OpenSession with the nonce of a live session of that name opens nothing; another
    name, or the nonce once that session ended, opens a new one."""
    cell = Cell()
    first = session(cell, "a", nonce=77)
    assert session(cell, "a", nonce=77) == first
    assert len(cell.machine.sessions()) == 1
    other = session(cell, "b", nonce=77)
    assert other != first
    cell.ok(EndSession(first, expired=False))
    assert session(cell, "a", nonce=77) not in (first, other)
    assert session(cell, "a") != session(cell, "a")  # nonce 0: every one is new


def test_kept_answers_and_nonces_survive_a_snapshot() -> None:
    """A restored machine answers retries the same: answers, low-water mark, nonces."""
    cell = Cell()
    s = session(cell, "a", nonce=5)
    write = InSession(s, Create(at("f"), contents=b"x"), n(3, 2))
    first = cell.write(write)
    restored = NamespaceMachine(CELL)
    restored.restore(cell.machine.snapshot())
    assert restored.sessions() == cell.machine.sessions()
    index = LogIndex(cell.index + 1)
    assert restored.apply_write(index, write).result == first
    stale = restored.apply_write(index, InSession(s, Create(at("g")), n(1))).result
    assert isinstance(stale, Failure)
    assert stale.code is ErrorCode.STALE_REQUEST
    reopened = restored.apply_write(LogIndex(index + 1), OpenSession("a", 5)).result
    assert reopened == SessionOpened(s)


def test_a_format_2_snapshot_still_loads_with_no_answers_kept() -> None:
    """A snapshot written before sessions kept answers loads; its sessions keep none."""
    cell = Cell()
    s = session(cell)
    current = msgpack.unpackb(cell.machine.snapshot())
    nodes = [record[:12] for record in current[2]]  # before nodes kept their creator
    old = [2, current[1], nodes, [[sid, name] for sid, name, *_ in current[3]]]
    restored = NamespaceMachine(CELL)
    restored.restore(msgpack.packb(old))
    record = restored.tree.session(s)
    assert record is not None
    assert record.calls == SessionCalls()
    assert record.nonce == 0


@pytest.mark.parametrize(
    "calls",
    [
        [1, 2, [[1, [1, None]]]],  # an answer below the low-water mark
        [1, 1, [[3, [1, None]], [2, [1, None]]]],  # out of order
        [1, 1, [[2, [6, [], False]]]],  # not a write's result
    ],
)
def test_a_damaged_session_record_is_refused(calls: list[object]) -> None:
    """A snapshot whose kept answers are impossible does not load."""
    cell = Cell()
    session(cell)
    current = msgpack.unpackb(cell.machine.snapshot())
    sid, name = current[3][0][:2]
    damaged = [*current[:3], [[sid, name, *calls, ""]]]
    restored = NamespaceMachine(CELL)
    with pytest.raises(DecodeError):
        restored.restore(msgpack.packb(damaged))


def opened_by(cell: Cell, principal: str, name: str = "a", nonce: int = 77) -> object:
    """The result of an OpenSession of `name` with `nonce`, done for `principal`."""
    cell.index += 1
    write = OpenSession(name, nonce)
    return cell.machine.apply_write(LogIndex(cell.index), write, principal).result


def test_a_retried_open_session_gets_the_session_only_for_the_principal_that_opened_it() -> None:
    """An OpenSession with a live session's name and nonce, done for another principal (one
    that read the nonce from the log), is PERMISSION_DENIED and changes nothing; done for
    the creator it gets the session (issue 13's review)."""
    cell = Cell()
    first = opened_by(cell, "alice")
    assert isinstance(first, SessionOpened)
    record = cell.machine.tree.session(first.session_id)
    assert record is not None
    assert record.principal == "alice"
    before = cell.machine.snapshot()
    stolen = opened_by(cell, "mallory")
    assert isinstance(stolen, Failure)
    assert stolen.code is ErrorCode.PERMISSION_DENIED
    assert "alice" not in stolen.message, "it names no one"
    assert cell.machine.snapshot() == before
    assert opened_by(cell, "alice") == first


def test_a_session_from_before_principals_were_recorded_is_no_one_s_to_retry() -> None:
    """A session a format 4 snapshot holds (no creator recorded) is refused to every
    principal's retry, and the snapshot keeps everything else; a format 5 snapshot keeps
    each session's creator."""
    cell = Cell()
    first = opened_by(cell, "alice", nonce=5)
    assert isinstance(first, SessionOpened)
    current = msgpack.unpackb(cell.machine.snapshot())
    assert current[0] == 5
    kept = NamespaceMachine(CELL)
    kept.restore(cell.machine.snapshot())
    assert kept.sessions() == cell.machine.sessions()
    assert kept.tree.session(first.session_id).principal == "alice"  # type: ignore[union-attr]
    old = [4, current[1], current[2], [session[:5] for session in current[3]]]
    restored = NamespaceMachine(CELL)
    restored.restore(msgpack.packb(old))
    record = restored.tree.session(first.session_id)
    assert record is not None
    assert (record.nonce, record.principal) == (5, "")
    retried = restored.apply_write(LogIndex(cell.index + 1), OpenSession("a", 5), "alice")
    assert isinstance(retried.result, Failure)
    assert retried.result.code is ErrorCode.PERMISSION_DENIED
