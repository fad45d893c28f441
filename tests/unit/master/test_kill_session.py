"""An operator ending another client's session (`MasterService.kill_session`): only for
principals the ACL 'admin' admits; the session's lease is extended no more and its
client is refused at once, but it is ended (as expired: ephemeral files gone, locks
freed into their lock-delay) only when that lease runs out, never earlier; the answer
says when; ending it again changes nothing; the killed client's cache is honoured until
then; a fail-over forgets the operator's end."""

from __future__ import annotations

import pytest

from chubbypy.master import LockGranted, SessionEnding, SessionsListed
from chubbypy.namespace import protect_acl_directory
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import Create, EndSession, SetContents
from tests.unit.master.harness import CELL, EXCLUSIVE, ROOT, TIMING, Cell

LEASE = TIMING.session.lease_ticks


@pytest.fixture
def cell() -> Cell:
    cell = Cell()
    cell.client_write(protect_acl_directory(CELL, ("operator",)))
    return cell


def states(cell: Cell) -> dict[int, str]:
    page = cell.ok("list_sessions")
    assert isinstance(page, SessionsListed)
    return {s.session_id: s.state for s in page.sessions}


def ends(cell: Cell) -> list[EndSession]:
    return [p.write for p in cell.proposed if isinstance(p.write, EndSession)]


def test_only_principals_the_admin_acl_admits_may_end_a_session(cell: Cell) -> None:
    """A principal the ACL 'admin' does not admit is refused PERMISSION_DENIED, naming
    the ACL, and nothing changes: the session stays live and nothing is proposed."""
    victim = cell.session()
    proposed = len(cell.proposed)
    refused = cell.result(cell.call("kill_session", victim, principal="mallory"))
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.PERMISSION_DENIED
    assert "'admin'" in refused.message
    assert (len(cell.proposed), states(cell)) == (proposed, {victim: "live"})


def test_an_ended_session_is_refused_at_once_and_expires_when_its_lease_runs_out(
    cell: Cell,
) -> None:
    """The answer says how long the lease still runs; the parked KeepAlive, later ones and
    the session's calls are refused SESSION_EXPIRED "ended by an operator" at once, and
    nothing is proposed: its lock and ephemeral file stay until the lease runs out; then
    it expires, and its lock goes to the waiter after its lock-delay."""
    victim, waiter = cell.session(), cell.session()
    cell.ok("acquire", cell.open(victim, lock_delay_ms=500), EXCLUSIVE, wait=False)
    cell.open(victim, "mine", create=Create(f"{ROOT}/mine", ephemeral=True))
    waiting = cell.call("acquire", cell.open(waiter), EXCLUSIVE, wait=True)
    cell.tick(20)
    parked = cell.call("keep_alive", victim, 0)
    assert cell.result(parked) is None
    answer = cell.ok("kill_session", victim, principal="operator")
    assert answer == SessionEnding(found=True, already=False, ends_in_ticks=LEASE - 20)
    for refused in (cell.result(parked), cell.result(cell.call("keep_alive", victim, 0))):
        assert isinstance(refused, Failure)
        assert (refused.code, refused.message) == (
            ErrorCode.SESSION_EXPIRED,
            f"session {victim} ending: ended by an operator",
        )
    assert cell.code("open", victim, f"{ROOT}/lock", 1) is ErrorCode.SESSION_EXPIRED
    assert ends(cell) == []
    cell.tick(LEASE - 20 - 1)
    assert cell.machine.tree.get(f"{ROOT}/mine") is not None
    assert cell.result(waiting) is None
    cell.events(waiter)
    cell.tick(1)
    assert ends(cell) == [EndSession(victim, expired=True)]
    assert cell.machine.tree.get(f"{ROOT}/mine") is None
    assert cell.machine.tree.session(victim) is None
    assert cell.result(waiting) is None  # the lock is in its lock-delay of 5 ticks
    cell.tick(5)
    assert isinstance(cell.result(waiting), LockGranted)


def test_ending_a_session_that_is_ending_already_changes_nothing(cell: Cell) -> None:
    """A second end says "already" with the same lease end; so does one of a session
    whose client is closing it; a session that ended, or never was, is not found."""
    victim, closing = cell.session(), cell.session()
    cell.ok("kill_session", victim, principal="operator")
    cell.tick(10)
    again = cell.ok("kill_session", victim, principal="operator")
    assert again == SessionEnding(found=True, already=True, ends_in_ticks=LEASE - 10)
    cell.master.close_session(cell.next_token(), closing)  # its end not applied yet
    assert cell.ok("kill_session", closing).already is True
    assert cell.ok("kill_session", closing) == SessionEnding(False, False, 0)
    cell.tick(LEASE - 10)
    assert cell.ok("kill_session", victim, principal="operator") == SessionEnding(False, False, 0)
    assert cell.ok("kill_session", 12345, principal="operator") == SessionEnding(False, False, 0)
    assert ends(cell) == [EndSession(closing, expired=False), EndSession(victim, expired=True)]


def test_a_killed_clients_cache_holds_writes_until_its_lease_is_over(cell: Cell) -> None:
    """The ended session's client may read what it cached until it hears, at the latest
    until its lease ends on the master's clock: a write to a name it cached waits until
    then (it is refused, so it acknowledges no invalidation); a write to another name
    goes at once."""
    victim = cell.session()
    cell.client_write(Create(f"{ROOT}/cached"))
    cell.client_write(Create(f"{ROOT}/other"))
    read = cell.ok("read", victim, f"{ROOT}/cached", cache=True)
    assert read.cached
    cell.tick(20)
    cell.ok("kill_session", victim, principal="operator")
    written = len(cell.written)
    cell.client_write(SetContents(f"{ROOT}/cached", b"new"))
    cell.client_write(SetContents(f"{ROOT}/other", b"new"))
    assert [w.path for w, _ in cell.written[written:]] == [f"{ROOT}/other"]
    cell.tick(LEASE - 20 - 1)
    assert len(cell.written) == written + 1
    cell.tick(1)
    assert [w.path for w, _ in cell.written[written:]] == [f"{ROOT}/other", f"{ROOT}/cached"]


def test_a_killed_session_is_listed_as_operator_ended_until_it_expires(cell: Cell) -> None:
    """From the operator's call until its lease runs out the session is listed
    "operator-ended", with its lease counting down; then it is not listed."""
    victim = cell.session()
    cell.ok("kill_session", victim, principal="operator")
    cell.tick(LEASE - 1)
    assert states(cell) == {victim: "operator-ended"}
    cell.tick(1)
    assert states(cell) == {}


def test_a_fail_over_forgets_an_operators_end(cell: Cell) -> None:
    """The operator's end is the master's memory, not replicated: a new master grants the
    session a whole lease like every other, and an operator may end it again."""
    victim = cell.session()
    cell.ok("kill_session", victim, principal="operator")
    cell.fail_over()
    assert states(cell) == {victim: "live"}
    assert cell.ok("kill_session", victim, principal="operator").already is False
