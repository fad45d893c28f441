"""An operator ending another client's session (`MasterService.kill_session`): only for
principals the ACL 'admin' admits; through the log as an expiry (ephemeral files gone,
locks freed into their lock-delay, the client told at its KeepAlive); done twice, done
once; and the killed client's cache honoured until its lease is over."""

from __future__ import annotations

import pytest

from chubbypy.master import LockGranted, SessionKilled, SessionsListed
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


def live_sessions(cell: Cell) -> list[int]:
    page = cell.ok("list_sessions")
    assert isinstance(page, SessionsListed)
    return [s.session_id for s in page.sessions if s.state == "live"]


def test_only_principals_the_admin_acl_admits_may_end_a_session(cell: Cell) -> None:
    """A principal the ACL 'admin' does not admit is refused PERMISSION_DENIED, naming
    the ACL, and nothing changes: the session stays live and nothing is proposed."""
    victim = cell.session()
    proposed = len(cell.proposed)
    refused = cell.result(cell.call("kill_session", victim, principal="mallory"))
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.PERMISSION_DENIED
    assert "'admin'" in refused.message
    assert (len(cell.proposed), live_sessions(cell)) == (proposed, [victim])


def test_an_ended_session_loses_its_files_and_locks_and_its_client_hears_at_once(
    cell: Cell,
) -> None:
    """An operator's end is an EndSession(expired=True) through the log: the session's
    ephemeral file is deleted, its parked KeepAlive is answered SESSION_EXPIRED at once,
    its calls are refused, and its lock goes to the waiter after its lock-delay."""
    victim, waiter = cell.session(), cell.session()
    cell.ok("acquire", cell.open(victim, lock_delay_ms=500), EXCLUSIVE, wait=False)
    cell.open(victim, "mine", create=Create(f"{ROOT}/mine", ephemeral=True))
    waiting = cell.call("acquire", cell.open(waiter), EXCLUSIVE, wait=True)
    parked = cell.call("keep_alive", victim, 0)
    assert cell.result(parked) is None
    assert cell.ok("kill_session", victim, principal="operator") == SessionKilled(ended=True)
    assert cell.proposed[-1].write == EndSession(victim, expired=True)
    expired = cell.result(parked)
    assert isinstance(expired, Failure)
    assert expired.code is ErrorCode.SESSION_EXPIRED
    assert cell.machine.tree.get(f"{ROOT}/mine") is None
    assert cell.machine.tree.session(victim) is None
    assert cell.code("open", victim, f"{ROOT}/lock", 1) is ErrorCode.SESSION_EXPIRED
    assert cell.result(waiting) is None  # the lock is in its lock-delay of 5 ticks
    cell.events(waiter)
    cell.tick(5)
    assert isinstance(cell.result(waiting), LockGranted)
    assert live_sessions(cell) == [waiter]


def test_ending_a_session_twice_ends_it_once(cell: Cell) -> None:
    """A second end of the same session while the first is in flight joins it (both
    hear it ended); one after it, or of a session that never was, finds nothing to end."""
    victim = cell.session()
    first, second = cell.next_token(), cell.next_token()
    cell.master.kill_session(first, victim, principal="operator")
    cell.master.kill_session(second, victim, principal="operator")
    cell.settle()
    assert cell.results[first] == cell.results[second] == SessionKilled(ended=True)
    ends = [p for p in cell.proposed if isinstance(p.write, EndSession)]
    assert len(ends) == 1
    assert cell.ok("kill_session", victim, principal="operator") == SessionKilled(ended=False)
    assert cell.ok("kill_session", 12345, principal="operator") == SessionKilled(ended=False)


def test_a_killed_clients_cache_holds_writes_until_its_lease_is_over(cell: Cell) -> None:
    """The ended session's client may read what it cached until it hears, at the latest
    until its lease ends on the master's clock: a write to a name it cached waits until
    then (its KeepAlives are refused, so it acknowledges no invalidation); a write to
    another name goes at once."""
    victim = cell.session()
    cell.client_write(Create(f"{ROOT}/cached"))
    cell.client_write(Create(f"{ROOT}/other"))
    read = cell.ok("read", victim, f"{ROOT}/cached", cache=True)
    assert read.cached
    cell.tick(20)
    assert cell.ok("kill_session", victim, principal="operator") == SessionKilled(ended=True)
    written = len(cell.written)
    cell.client_write(SetContents(f"{ROOT}/cached", b"new"))
    cell.client_write(SetContents(f"{ROOT}/other", b"new"))
    assert [w.path for w, _ in cell.written[written:]] == [f"{ROOT}/other"]
    cell.tick(LEASE - 20 - 1)
    assert len(cell.written) == written + 1
    cell.tick(1)
    assert [w.path for w, _ in cell.written[written:]] == [f"{ROOT}/other", f"{ROOT}/cached"]


def test_an_end_that_deletes_a_file_the_session_caches_waits_for_its_lease(cell: Cell) -> None:
    """A session caching its own ephemeral file: its end (which deletes the file) waits
    until the session's lease is over, and is answered then."""
    victim = cell.session()
    cell.open(victim, "mine", create=Create(f"{ROOT}/mine", ephemeral=True))
    assert cell.ok("read", victim, f"{ROOT}/mine", cache=True).cached
    killing = cell.call("kill_session", victim, principal="operator")
    assert cell.result(killing) is None
    cell.tick(LEASE - 1)
    assert cell.result(killing) is None
    assert cell.machine.tree.get(f"{ROOT}/mine") is not None
    cell.tick(1)
    assert cell.result(killing) == SessionKilled(ended=True)
    assert cell.machine.tree.get(f"{ROOT}/mine") is None


def test_a_killed_session_is_listed_as_ending_until_its_end_is_applied(cell: Cell) -> None:
    """Between the operator's call and its application the session is listed "ending"."""
    victim = cell.session()
    cell.master.kill_session(cell.next_token(), victim, principal="operator")
    listing = cell.next_token()
    cell.master.list_sessions(listing)
    replies, _ = cell.master.take(master_lease_valid=True)
    page = next(r.result for r in replies if r.token == listing)
    assert isinstance(page, SessionsListed)
    assert [(s.session_id, s.state) for s in page.sessions] == [(victim, "ending")]
