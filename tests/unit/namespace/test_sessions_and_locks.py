"""Sessions, ephemeral nodes, locks, lock-delay and sequencer guards in the replicated
database (Chubby §2.4, §2.8): each as the log applies it."""

from __future__ import annotations

from chubbypy.namespace import NamespaceMachine
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import (
    Acquire,
    Create,
    Delete,
    EndLockDelay,
    EndSession,
    InSession,
    LockHeldAt,
    LockMode,
    MultiOp,
    OpenSession,
    Release,
    SessionOpened,
    SetContents,
)
from tests.unit.namespace.harness import CELL, Cell, at

EXCLUSIVE, SHARED = LockMode.EXCLUSIVE, LockMode.SHARED


def session(cell: Cell, name: str = "client") -> int:
    result = cell.write(OpenSession(name))
    assert isinstance(result, SessionOpened), result
    return result.session_id


def file(cell: Cell, name: str = "f") -> int:
    """A file at the root; its instance."""
    stat = cell.ok(Create(at(name), contents=b"x"))
    assert stat is not None
    return stat.instance


def test_sessions_get_unique_growing_ids_from_the_log_index() -> None:
    """Session ids come from the index, like node instances, and are never reused."""
    cell = Cell()
    first, second = session(cell), session(cell)
    assert 0 < first < second
    cell.ok(EndSession(first, expired=False))
    assert session(cell) > second
    assert cell.code(EndSession(first, expired=False)) is ErrorCode.SESSION_EXPIRED


def test_an_ephemeral_file_needs_a_session_and_cannot_be_a_directory() -> None:
    """Outside a session an ephemeral create is SESSION_REQUIRED; a directory cannot be one."""
    cell = Cell()
    assert cell.code(Create(at("e"), ephemeral=True)) is ErrorCode.SESSION_REQUIRED
    owner = session(cell)
    ephemeral_dir = Create(at("d"), is_directory=True, ephemeral=True)
    assert cell.code(InSession(owner, ephemeral_dir)) is ErrorCode.IS_A_DIRECTORY
    cell.ok(InSession(owner, Create(at("e"), ephemeral=True)))
    assert cell.stat(at("e")).ephemeral


def test_ending_a_session_deletes_its_ephemeral_nodes_only() -> None:
    """EndSession deletes the session's ephemeral files, not others' or permanent ones."""
    cell = Cell()
    mine, theirs = session(cell), session(cell)
    cell.ok(InSession(mine, Create(at("a"), ephemeral=True)))
    cell.ok(InSession(mine, Create(at("p"))))
    cell.ok(InSession(theirs, Create(at("b"), ephemeral=True)))
    cell.ok(EndSession(mine, expired=True))
    assert cell.names("/ls/c") == ["b", "p"]


def test_nothing_happens_for_a_session_after_it_ended() -> None:
    """A write in an ended session is SESSION_EXPIRED and changes nothing."""
    cell = Cell()
    owner = session(cell)
    cell.ok(EndSession(owner, expired=False))
    assert cell.code(InSession(owner, Create(at("late")))) is ErrorCode.SESSION_EXPIRED


def test_an_exclusive_lock_excludes_everyone_and_raises_the_generation() -> None:
    """One exclusive holder; another handle gets LOCK_HELD; the generation rises once."""
    cell = Cell()
    s1, s2 = session(cell), session(cell)
    instance = file(cell)
    stat = cell.ok(Acquire(s1, 1, at("f"), instance, EXCLUSIVE))
    assert stat is not None
    assert stat.lock_generation == 1
    assert cell.code(Acquire(s2, 1, at("f"), instance, SHARED)) is ErrorCode.LOCK_HELD
    assert cell.code(Acquire(s1, 2, at("f"), instance, EXCLUSIVE)) is ErrorCode.LOCK_HELD
    assert cell.code(Acquire(s1, 1, at("f"), instance, EXCLUSIVE)) is ErrorCode.LOCK_HELD
    cell.ok(Release(s1, 1, at("f"), instance))
    stat = cell.ok(Acquire(s2, 1, at("f"), instance, EXCLUSIVE))
    assert stat is not None
    assert stat.lock_generation == 2


def test_shared_holders_share_one_generation_until_the_lock_is_free() -> None:
    """Readers join a shared lock without raising its generation; a writer must wait."""
    cell = Cell()
    s1, s2, s3 = session(cell), session(cell), session(cell)
    instance = file(cell)
    cell.ok(Acquire(s1, 1, at("f"), instance, SHARED))
    stat = cell.ok(Acquire(s2, 1, at("f"), instance, SHARED))
    assert stat is not None
    assert stat.lock_generation == 1
    assert cell.code(Acquire(s3, 1, at("f"), instance, EXCLUSIVE)) is ErrorCode.LOCK_HELD
    cell.ok(Release(s1, 1, at("f"), instance))
    assert cell.code(Acquire(s3, 1, at("f"), instance, EXCLUSIVE)) is ErrorCode.LOCK_HELD
    cell.ok(Release(s2, 1, at("f"), instance))
    stat = cell.ok(Acquire(s3, 1, at("f"), instance, EXCLUSIVE))
    assert stat is not None
    assert stat.lock_generation == 2


def test_release_by_a_handle_that_does_not_hold_is_refused() -> None:
    """Only the holding handle of the holding session releases: LOCK_NOT_HELD otherwise."""
    cell = Cell()
    s1, s2 = session(cell), session(cell)
    instance = file(cell)
    cell.ok(Acquire(s1, 1, at("f"), instance, EXCLUSIVE))
    assert cell.code(Release(s1, 2, at("f"), instance)) is ErrorCode.LOCK_NOT_HELD
    assert cell.code(Release(s2, 1, at("f"), instance)) is ErrorCode.LOCK_NOT_HELD


def test_a_lock_names_the_node_instance_not_the_name() -> None:
    """After delete and re-create, the old instance's lock commands are NO_SUCH_NODE."""
    cell = Cell()
    s1 = session(cell)
    old = file(cell)
    cell.ok(Acquire(s1, 1, at("f"), old, EXCLUSIVE))
    cell.ok(Delete(at("f")))
    new = file(cell)
    assert cell.code(Release(s1, 1, at("f"), old)) is ErrorCode.NO_SUCH_NODE
    stat = cell.ok(Acquire(s1, 1, at("f"), new, EXCLUSIVE))
    assert stat is not None
    assert stat.lock_generation == 1


def test_an_expired_holder_leaves_the_lock_in_lock_delay_until_it_ends() -> None:
    """Expiry (not a clean close) keeps the lock unavailable until EndLockDelay."""
    cell = Cell()
    holder, waiter = session(cell), session(cell)
    instance = file(cell)
    cell.ok(Acquire(holder, 1, at("f"), instance, EXCLUSIVE, lock_delay_ms=5000))
    cell.ok(EndSession(holder, expired=True))
    assert cell.code(Acquire(waiter, 1, at("f"), instance, EXCLUSIVE)) is ErrorCode.LOCK_DELAYED
    cell.ok(EndLockDelay(at("f"), instance))
    stat = cell.ok(Acquire(waiter, 1, at("f"), instance, EXCLUSIVE))
    assert stat is not None
    assert stat.lock_generation == 2


def test_a_closed_session_frees_its_locks_at_once() -> None:
    """A clean end (not expiry) frees locks with no lock-delay."""
    cell = Cell()
    holder, waiter = session(cell), session(cell)
    instance = file(cell)
    cell.ok(Acquire(holder, 1, at("f"), instance, EXCLUSIVE, lock_delay_ms=5000))
    cell.ok(EndSession(holder, expired=False))
    cell.ok(Acquire(waiter, 1, at("f"), instance, EXCLUSIVE))


def test_a_lock_delay_beyond_a_minute_is_refused() -> None:
    """Chubby's bound: a lock-delay of more than 60 s is a BAD_REQUEST."""
    cell = Cell()
    holder = session(cell)
    instance = file(cell)
    too_long = Acquire(holder, 1, at("f"), instance, EXCLUSIVE, lock_delay_ms=60_001)
    assert cell.code(too_long) is ErrorCode.BAD_REQUEST


def test_a_write_guarded_by_a_sequencer_applies_only_while_it_is_valid() -> None:
    """A MultiOp guarded by LockHeldAt (a sequencer) runs its writes only for the holder of
    that generation: fencing."""
    cell = Cell()
    s1, s2 = session(cell), session(cell)
    instance = file(cell)
    cell.ok(Acquire(s1, 1, at("f"), instance, EXCLUSIVE, lock_delay_ms=0))
    fenced = MultiOp((LockHeldAt(at("f"), instance, EXCLUSIVE, 1),), (SetContents(at("f"), b"1"),))
    assert cell.multi(fenced).guard_held
    cell.ok(EndSession(s1, expired=True))
    cell.ok(Acquire(s2, 1, at("f"), instance, EXCLUSIVE))
    assert not cell.multi(fenced).guard_held
    assert cell.contents(at("f")) == b"1"


def test_sessions_and_locks_survive_a_snapshot() -> None:
    """A restored machine has the same sessions, owners, holders and lock-delays."""
    cell = Cell()
    s1, s2 = session(cell), session(cell)
    instance = file(cell)
    cell.ok(InSession(s1, Create(at("e"), ephemeral=True)))
    cell.ok(Acquire(s2, 1, at("f"), instance, SHARED, lock_delay_ms=10))
    restored = NamespaceMachine(CELL)
    restored.restore(cell.machine.snapshot())
    assert restored.records() == cell.machine.records()
    assert restored.sessions() == cell.machine.sessions()
    assert restored.checksum() == cell.machine.checksum()
    # The index of what each session involves is rebuilt too: ending s1 deletes its file.
    restored.apply_write(LogIndex(cell.index + 1), EndSession(s1, expired=True))
    assert [r.path for r in restored.records()] == ["/ls/c", at("f")]
