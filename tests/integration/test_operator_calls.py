"""Issue 14's two operators' calls on a live three-replica cell, through the library and
the ``chubbypy`` command: GetLockInfo shows a holder, a waiter and a lock-delay, and is
refused on a node the caller may not read; KillSession is refused to a principal the ACL
'admin' does not admit, and the operator's end makes the holder lose its lock at once while
its session keeps the lock until its lease runs out, then the lock passes to the waiter
after the lock-delay. One cell, with short session leases, serves the module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from chubbypy.client import BlockingCell, LockInfo, LockLost, SessionInfo
from chubbypy.protocol.errors import PermissionDenied
from chubbypy.protocol.namespace import AclNames
from tests.integration.harness import LiveCell, Measure, poll

LEASE_SECONDS = 5.0
"""The cell's session lease: an operator's end takes effect when it runs out, so the
module's cell keeps it short (the default is 12 s)."""
LOCK_DELAY_SECONDS = 3.0
"""The holder's lock-delay: long enough to be seen on a loaded machine, short enough."""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCell]:
    """One three-replica cell for the module (auth.admins: the operator alone)."""
    sessions = {"lease_seconds": LEASE_SECONDS, "keepalive_answer_before_seconds": 1.5}
    cell = LiveCell(tmp_path_factory.mktemp("operator-calls"), sessions=sessions)
    try:
        cell.start()
        yield cell
    finally:
        cell.close()


@pytest.fixture
def operator(live: LiveCell) -> BlockingCell:
    principal, token = live.operator
    return live.client(principal=principal, token=token)


def lock_info(client: BlockingCell, path: str, until: Any = None) -> LockInfo:
    """The lock of `path`, once `until(info)` holds (polled), or at once."""

    def found() -> LockInfo | None:
        info = client.lock_info(path)
        return info if until is None or until(info) else None

    return poll(found, f"{path}: the lock as expected", 30)


def listed(operator: BlockingCell, session_id: int) -> SessionInfo | None:
    """The session as ListSessions shows it (None: not listed)."""
    return next((s for s in operator.list_sessions() if s.session_id == session_id), None)


def test_a_holder_a_waiter_and_the_lock_delay_are_shown_and_the_lock_passes_on(
    live: LiveCell, operator: BlockingCell, measure: Measure
) -> None:
    """An anonymous holder and a waiter are shown (by the library and ``lock-info
    --json``); an anonymous ``sessions --end`` is refused and changes nothing; the
    operator's end answers with the lease's rest (a second: ending already): the holder
    hears at once that it lost its lock, while its session, listed "operator-ended", keeps
    it until that lease runs out; then the lock shows its lock-delay, and the waiter holds
    it after the delay, with a higher generation."""
    path = live.path("jobs")
    holder, waiter = live.client(name="holder@it"), live.client(name="waiter@it")
    lock = holder.lock(path, lock_delay_seconds=LOCK_DELAY_SECONDS)
    held = lock.__enter__()
    with ThreadPoolExecutor(1) as pool:
        waiting: Future[Any] = pool.submit(lambda: waiter.lock(path, timeout=60).__enter__())
        info = lock_info(waiter, path, until=lambda i: i.waiter_count == 1)
        ((holding,), (queued,)) = info.holders, info.waiters
        assert (info.mode, holding.client, holding.principal) == (
            "exclusive",
            "holder@it",
            "anonymous",
        )
        assert (holding.lock_delay_ms, queued.client) == (3000, "waiter@it")
        assert info.lock_generation == holder.get_stat(path).lock_generation
        shown = live.cli("--json", "lock-info", "jobs").json()["lock"]
        assert [h["session_id"] for h in shown["holders"]] == [holding.session_id]
        assert [w["session_id"] for w in shown["waiters"]] == [queued.session_id]

        refused = live.cli("--json", "sessions", "--end", str(holding.session_id))
        assert (refused.code, refused.json()["error"]["code"]) == (1, "PERMISSION_DENIED")
        assert lock_info(operator, path).holders == info.holders

        # Ended right after a KeepAlive answer, its lease has most of 5 s left to show
        # what happens meanwhile (else it may have as little as the 1.5 s answer-before).
        poll(
            lambda: (s := listed(operator, holding.session_id)) and s.lease_remaining_ms > 3500,
            "the holder's lease just extended",
            LEASE_SECONDS * 2,
        )
        started = time.monotonic()
        ending = operator.end_session(holding.session_id)
        assert (ending.found, ending.already) == (True, False)
        assert 0 < ending.ends_in_ms <= LEASE_SECONDS * 1000
        again = operator.end_session(holding.session_id)
        assert (again.found, again.already) == (True, True)
        assert again.ends_in_ms <= ending.ends_in_ms
        poll(lambda: held.lost.is_set() or None, "the holder to hear its lock is lost", 10)
        heard = time.monotonic() - started
        measure("end_session to the holder losing its lock", heard)
        assert held.lost_reason is not None
        assert "ended by an operator" in str(held.lost_reason)
        kept = lock_info(operator, path)
        assert ([h.session_id for h in kept.holders], kept.waiter_count) == (
            [holding.session_id],
            1,
        ), "the lock stays the ended session's until its lease runs out"
        session = listed(operator, holding.session_id)
        assert session is not None
        assert session.state == "operator-ended"

        delayed = lock_info(operator, path, until=lambda i: i.mode == "free")
        freed = time.monotonic() - started
        measure("the lease's rest end_session answered", ending.ends_in_ms / 1000)
        measure("end_session to the lock freed (the lease's rest)", freed)
        assert 0 < delayed.lock_delay_remaining_ms <= 3000
        assert heard < freed
        granted = waiting.result(30)
        passed = time.monotonic() - started
        measure("end_session to the waiter's grant (lease rest + lock-delay 3 s)", passed)
    assert passed >= ending.ends_in_ms / 1000 * 0.9 + LOCK_DELAY_SECONDS * 0.9
    after = lock_info(operator, path)
    assert [h.session_id for h in after.holders] == [queued.session_id]
    assert after.lock_generation > info.lock_generation
    assert granted.sequencer != held.sequencer
    with pytest.raises(LockLost):
        lock.__exit__(None, None, None)
    ended = live.cli("--json", "sessions", "--end", str(holding.session_id), as_operator=True)
    assert (ended.code, ended.json()["found"]) == (0, False)
    assert "was not in the cell" in ended.stderr


def test_lock_info_needs_read_permission_on_the_node(
    live: LiveCell, operator: BlockingCell
) -> None:
    """On a node whose read ACL is 'admin', an anonymous client's lock_info and ``chubbypy
    lock-info`` are refused PERMISSION_DENIED (exit 1); the operator's are answered."""
    path = live.path("guarded")
    operator.create(path, acl=AclNames("admin", "admin", "admin"))
    with pytest.raises(PermissionDenied):
        live.client().lock_info(path)
    refused = live.cli("--json", "lock-info", "guarded")
    assert (refused.code, refused.json()["error"]["code"]) == (1, "PERMISSION_DENIED")
    assert operator.lock_info(path).mode == "free"
    shown = live.cli("lock-info", "guarded", as_operator=True)
    assert shown.code == 0
    assert "mode                free" in shown.stdout


def test_the_operators_ending_of_a_session_through_the_command(
    live: LiveCell, operator: BlockingCell
) -> None:
    """``chubbypy sessions --end ID`` as the operator says when the session ends; its
    ephemeral file stays until then, and then it is gone and ``sessions`` lists the
    session no more."""
    client = live.client(name="doomed@it")
    mine = live.path("doomed-file")
    client.open(mine, create=True, ephemeral=True)
    (session,) = [s for s in operator.list_sessions() if s.name == "doomed@it"]
    assert session.principal == "anonymous"
    ended = live.cli("sessions", "--end", str(session.session_id), as_operator=True)
    assert ended.code == 0
    assert ended.stdout.startswith(
        f"session {session.session_id} ending: its client is refused from now on; it ends "
        "when its lease runs out, in "
    )
    assert "doomed-file" in [e.name for e in operator.list_dir(live.path())]
    poll(
        lambda: "doomed-file" not in [e.name for e in operator.list_dir(live.path())],
        "the ended session's ephemeral file to go",
        LEASE_SECONDS * 3,
    )
    sessions = live.cli("--json", "sessions", as_operator=True).json()["sessions"]
    assert session.session_id not in [s["session_id"] for s in sessions]
