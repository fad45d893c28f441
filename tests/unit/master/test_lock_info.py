"""The master's view of one lock for operators (`MasterService.lock_info`): its mode,
holders with their clients and principals, waiters in queue order with how long each
waited, lock-delay remaining; who may ask, and how long its lists may be."""

from __future__ import annotations

import pytest
from attrs import evolve

from chubbypy.master import LockSummary, LockWaiterSummary, SessionStarted
from chubbypy.master import _service as service_module
from chubbypy.namespace import protect_acl_directory
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import AclNames, Create
from chubbypy.protocol.session import LockHolderInfo
from tests.unit.master.harness import CELL, EXCLUSIVE, ROOT, SHARED, TIMING, Cell

LOCK = f"{ROOT}/lock"


@pytest.fixture
def cell() -> Cell:
    return Cell()


def session_of(cell: Cell, client: str, principal: str) -> int:
    """A new session of `client`, created by a connection acting as `principal`."""
    started = cell.ok("create_session", client, principal=principal)
    assert isinstance(started, SessionStarted)
    return started.session_id


def info(cell: Cell, path: str = LOCK, **options: object) -> LockSummary:
    summary = cell.ok("lock_info", path, **options)
    assert isinstance(summary, LockSummary), summary
    return summary


def test_a_node_no_one_ever_locked_is_free(cell: Cell) -> None:
    """A file never locked, and the cell's root, answer "free": no holder, no waiter,
    generation 0, no lock-delay."""
    cell.client_write(Create(LOCK))
    node = cell.machine.tree.get(LOCK)
    assert node is not None
    assert info(cell) == LockSummary(LOCK, node.instance, "free", 0, (), 0, (), 0, 0)
    assert info(cell, ROOT).mode == "free"


def test_holder_and_waiters_are_shown_in_queue_order_with_how_long_each_waited(
    cell: Cell,
) -> None:
    """An exclusive holder is listed with its client, principal and lock-delay; the
    waiters in the order they queued, each with its mode and the ticks it has waited; the
    lock generation is the one the holder's sequencer names."""
    holder = session_of(cell, "holder@a:1", "alice")
    first = session_of(cell, "first@b:2", "bob")
    second = session_of(cell, "second@c:3", "carol")
    held = cell.open(holder, lock_delay_ms=2000)
    granted = cell.ok("acquire", held, EXCLUSIVE, wait=False)
    cell.call("acquire", cell.open(first), SHARED, wait=True)
    cell.tick(7)
    cell.call("acquire", cell.open(second), EXCLUSIVE, wait=True)
    cell.tick(3)
    summary = info(cell)
    assert (summary.mode, summary.lock_generation) == ("exclusive", granted.stat.lock_generation)
    assert summary.holders == (LockHolderInfo(holder, "holder@a:1", "alice", "exclusive", 2000),)
    assert summary.waiters == (
        LockWaiterSummary(first, "first@b:2", "bob", "shared", 10),
        LockWaiterSummary(second, "second@c:3", "carol", "exclusive", 3),
    )
    assert (summary.holder_count, summary.waiter_count, summary.delay_remaining_ticks) == (1, 2, 0)


def test_shared_holders_are_listed_with_their_count(cell: Cell) -> None:
    """Every shared holder is listed, in session order, and counted."""
    readers = [session_of(cell, f"reader{n}", f"p{n}") for n in range(3)]
    for reader in readers:
        cell.ok("acquire", cell.open(reader), SHARED, wait=False)
    summary = info(cell)
    assert summary.mode == "shared"
    assert [(h.session_id, h.principal, h.mode) for h in summary.holders] == [
        (reader, f"p{n}", "shared") for n, reader in enumerate(readers)
    ]
    assert summary.holder_count == 3


def test_the_rest_of_a_lock_delay_is_shown_until_it_ends(cell: Cell) -> None:
    """After its holder's session expired the lock is free of holders but in lock-delay:
    the ticks left are shown, counting down, then 0 once the lock is free again."""
    holder = cell.session()
    cell.ok("acquire", cell.open(holder, lock_delay_ms=1000), EXCLUSIVE, wait=False)
    cell.tick(TIMING.session.lease_ticks)  # the holder sends no KeepAlive: it expires
    summary = info(cell)
    assert (summary.mode, summary.holders, summary.delay_remaining_ticks) == ("free", (), 10)
    cell.tick(4)
    assert info(cell).delay_remaining_ticks == 6
    cell.tick(6)
    assert info(cell).delay_remaining_ticks == 0
    node = cell.machine.tree.get(LOCK)
    assert node is not None
    assert node.lock.is_free


def test_reading_a_locks_state_needs_read_access_to_its_node(cell: Cell) -> None:
    """With a principal, lock_info needs what reading the node's contents needs: a node
    whose read ACL does not admit it is refused PERMISSION_DENIED; one that does not exist
    NO_SUCH_NODE; a name that is no name INVALID_NAME. Without one (trusted), it answers."""
    cell.client_write(protect_acl_directory(CELL, ("alice",)))
    cell.client_write(Create(LOCK, acl=AclNames("admin", "admin", "admin")))
    assert cell.code("lock_info", LOCK, principal="bob") is ErrorCode.PERMISSION_DENIED
    assert info(cell, principal="alice").mode == "free"
    assert info(cell).mode == "free"
    assert cell.code("lock_info", f"{ROOT}/none", principal="bob") is ErrorCode.NO_SUCH_NODE
    assert cell.code("lock_info", "/ls/other/x") is ErrorCode.INVALID_NAME


def test_long_lists_are_cut_at_the_configured_most_and_counted() -> None:
    """At most lock_info_listed_max holders and waiters are listed (the first ones); the
    counts say how many there are in all."""
    cell = Cell(evolve(TIMING, lock_info_listed_max=2))
    readers = [session_of(cell, f"reader{n}", "p") for n in range(3)]
    for reader in readers:
        cell.ok("acquire", cell.open(reader), SHARED, wait=False)
    writers = [session_of(cell, f"writer{n}", "p") for n in range(3)]
    for writer in writers:
        cell.call("acquire", cell.open(writer), EXCLUSIVE, wait=True)
    summary = info(cell)
    assert [h.session_id for h in summary.holders] == readers[:2]
    assert [w.session_id for w in summary.waiters] == writers[:2]
    assert (summary.holder_count, summary.waiter_count) == (3, 3)


def test_the_lists_end_early_past_the_byte_budget_but_name_a_holder(
    cell: Cell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past LOCK_INFO_BYTES_BUDGET no more holders or waiters are listed, except that a
    held lock always lists its first holder; the counts stay whole."""
    monkeypatch.setattr(service_module, "LOCK_INFO_BYTES_BUDGET", 1)
    readers = [session_of(cell, "r" * 200, "p") for _ in range(2)]
    for reader in readers:
        cell.ok("acquire", cell.open(reader), SHARED, wait=False)
    cell.call("acquire", cell.open(session_of(cell, "w", "p")), EXCLUSIVE, wait=True)
    summary = info(cell)
    assert [h.session_id for h in summary.holders] == readers[:1]
    assert (summary.waiters, summary.holder_count, summary.waiter_count) == ((), 2, 1)


def test_after_a_fail_over_holders_stay_and_principals_and_waiters_come_back(
    cell: Cell,
) -> None:
    """A new master shows the holders at once (they are replicated), answering before the
    fail-over completes; a principal is known again from the session's next KeepAlive,
    and the queue from the waiters' retries."""
    holder = session_of(cell, "holder", "alice")
    waiter = session_of(cell, "waiter", "bob")
    cell.ok("acquire", cell.open(holder), EXCLUSIVE, wait=False)
    waiting = cell.open(waiter)
    cell.call("acquire", waiting, EXCLUSIVE, wait=True)
    cell.fail_over()
    summary = info(cell)
    assert [(h.session_id, h.principal) for h in summary.holders] == [(holder, "")]
    assert summary.waiter_count == 0
    cell.call("keep_alive", holder, 0, principal="alice")
    assert info(cell).holders[0].principal == "alice"
    for session in (holder, waiter):  # the fail-over completes
        cell.events(session)
        cell.events(session, cell.last_sequence[session])
    cell.call("acquire", waiting, EXCLUSIVE, wait=True)  # the waiter's library retries
    assert [w.session_id for w in info(cell).waiters] == [waiter]
