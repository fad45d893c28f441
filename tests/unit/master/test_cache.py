"""The master's half of the consistent cache (Chubby §2.5): registration, invalidation
before a change, the gate's order, and fail-over, against a cell without Paxos."""

from __future__ import annotations

from attrs import evolve

from chubbypy.master import Done, KeepAliveAnswered, NodeRead
from chubbypy.master._cache import write_paths
from chubbypy.protocol import HandleId, SessionId
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    AclNames,
    Create,
    Delete,
    EndSession,
    Exists,
    InSession,
    MultiOp,
    OpenSession,
    Release,
    SetAcl,
    SetContents,
)
from chubbypy.protocol.session import EventKind, HandleMode, SessionEvent
from tests.unit.master.harness import EXCLUSIVE, ROOT, RW, TIMING, Cell

FILE = f"{ROOT}/f"


def read(cell: Cell, session: int, path: str = FILE, *, cache: bool = True) -> NodeRead:
    result = cell.ok("read", session, path, cache=cache)
    assert isinstance(result, NodeRead)
    return result


def keep_alive(cell: Cell, session: int, acked: int = 0) -> list[SessionEvent] | None:
    """A KeepAlive; the events of its answer, or None if the master holds it."""
    answer = cell.result(cell.call("keep_alive", session, acked))
    if answer is None:
        return None
    assert isinstance(answer, KeepAliveAnswered), answer
    return list(answer.events)


def setup(cell: Cell) -> tuple[int, int]:
    """Two sessions, each with a KeepAlive parked; FILE exists with b"v1"."""
    reader, writer = cell.session(), cell.session()
    cell.client_write(Create(FILE, contents=b"v1"))
    assert keep_alive(cell, reader) is None
    assert keep_alive(cell, writer) is None
    return reader, writer


def test_a_read_is_cached_and_a_change_waits_for_the_invalidation_to_be_acknowledged() -> None:
    """A cached name's writer gets no answer until the cacher acknowledged INVALIDATE; the
    change is not applied before either."""
    cell = Cell()
    reader, writer = setup(cell)
    first = read(cell, reader)
    assert first.cached
    assert first.contents == b"v1"
    handle = cell.open(writer, "f")
    parked = cell.call("keep_alive", reader, 0)
    writing = cell.call("write", handle, SetContents(FILE, b"v2"))
    answer = cell.result(parked)
    assert isinstance(answer, KeepAliveAnswered)
    assert [(e.kind, e.path) for e in answer.events] == [(EventKind.INVALIDATE, FILE)]
    assert cell.result(writing) is None, "the writer waits for the acknowledgement"
    assert cell.machine.tree.get(FILE).contents == b"v1", "and so does the change"  # type: ignore[union-attr]
    during = read(cell, reader)
    assert during.contents == b"v1"
    assert not during.cached, "busy: served, not cached"
    keep_alive(cell, reader, answer.events[-1].sequence)
    assert isinstance(cell.result(writing), Done)
    after = read(cell, reader)
    assert after.contents == b"v2"
    assert after.cached


def test_a_cacher_whose_lease_runs_out_no_longer_holds_up_the_write() -> None:
    """A session that never acknowledges delays a change only until its lease is over."""
    cell = Cell()
    reader, writer = setup(cell)
    read(cell, reader)
    write = SetContents(FILE, b"v2")
    cell.client_writes[cell.master.submit_write(write)] = write
    cell.settle()
    while cell.written[-1][0] != write:
        assert cell.now < 200, "never released"
        cell.tick(1)
    assert cell.now >= 100, "not before the reader's lease (100 ticks) was over"
    del writer


def test_a_cacher_that_keepalives_without_acknowledging_holds_the_write_a_lease_at_most() -> None:
    """A session that caches a name and then KeepAlives every tick without acknowledging
    the INVALIDATE (issue 13's review: its lease was renewed on every KeepAlive, and the
    write waited for ever) holds the write until the lease it had when told is over; then
    it is expired, the write is applied, and the writer hears back."""
    cell = Cell()
    staller, writer = setup(cell)
    read(cell, staller)
    handle = cell.open(writer, "f")
    told_at = cell.now
    writing = cell.call("write", handle, SetContents(FILE, b"v2"))
    lease = cell.timing.session.lease_ticks
    while cell.result(writing) is None:
        assert cell.now <= told_at + lease, "held past the staller's lease"
        events = keep_alive(cell, staller, acked=0)
        assert events is None or [e.kind for e in events] == [EventKind.INVALIDATE]
        cell.tick(1)
    assert isinstance(cell.result(writing), Done)
    assert cell.machine.tree.get(FILE).contents == b"v2"  # type: ignore[union-attr]
    assert EndSession(staller, expired=True) in [p.write for p in cell.proposed]
    assert cell.machine.tree.session(staller) is None, "the staller's session is ended"
    assert cell.code("keep_alive", staller, 0) is ErrorCode.SESSION_EXPIRED


def test_the_absence_of_a_name_is_cached_until_it_is_created() -> None:
    """Reading a missing name caches its absence; creating it invalidates that."""
    cell = Cell()
    reader, _ = setup(cell)
    missing = read(cell, reader, f"{ROOT}/new")
    assert missing.stat is None
    assert missing.cached
    parked = cell.call("keep_alive", reader, 0)
    cell.client_writes[cell.master.submit_write(Create(f"{ROOT}/new"))] = Create(f"{ROOT}/new")
    cell.settle()
    assert cell.machine.tree.get(f"{ROOT}/new") is None, "held for the invalidation"
    answer = cell.result(parked)
    assert isinstance(answer, KeepAliveAnswered)
    assert [e.path for e in answer.events] == [f"{ROOT}/new"]
    keep_alive(cell, reader, answer.events[-1].sequence)
    assert cell.machine.tree.get(f"{ROOT}/new") is not None


def test_creating_or_deleting_a_child_invalidates_its_cached_parent() -> None:
    """A directory's metadata counts its children: a child's creation changes it."""
    cell = Cell()
    reader, _ = setup(cell)
    assert read(cell, reader, ROOT).cached
    parked = cell.call("keep_alive", reader, 0)
    cell.client_writes[cell.master.submit_write(Delete(FILE))] = Delete(FILE)
    cell.settle()
    answer = cell.result(parked)
    assert isinstance(answer, KeepAliveAnswered)
    assert [e.path for e in answer.events] == [ROOT]


def test_a_held_write_delays_later_writes_to_the_same_name_but_not_others() -> None:
    """Order is kept per name; an unrelated write passes a held one."""
    cell = Cell()
    reader, _ = setup(cell)
    cell.client_write(Create(f"{ROOT}/other"))
    read(cell, reader)
    parked = cell.call("keep_alive", reader, 0)
    for write in (SetContents(FILE, b"a"), SetContents(f"{ROOT}/other", b"x"),
                  SetContents(FILE, b"b")):  # fmt: skip
        cell.client_writes[cell.master.submit_write(write)] = write
    cell.settle()
    assert [w for w, _ in cell.written][-1] == SetContents(f"{ROOT}/other", b"x")
    answer = cell.result(parked)
    assert isinstance(answer, KeepAliveAnswered)
    keep_alive(cell, reader, answer.events[-1].sequence)
    assert [w for w, _ in cell.written][-2:] == [SetContents(FILE, b"a"), SetContents(FILE, b"b")]


def test_after_a_fail_over_writes_wait_until_every_session_acknowledged_it() -> None:
    """A new master cannot know what was cached: it releases no write and registers no
    cacher until every session flushed its cache (acknowledged the fail-over event)."""
    cell = Cell()
    reader, writer = setup(cell)
    read(cell, reader)
    cell.fail_over()
    cell.client_writes[cell.master.submit_write(SetContents(FILE, b"v2"))] = SetContents(
        FILE, b"v2"
    )
    cell.settle()
    assert cell.machine.tree.get(FILE).contents == b"v1"  # type: ignore[union-attr]
    assert isinstance(cell.result(cell.call("read", reader, FILE, cache=True)), Failure)
    for session in (reader, writer):
        events = keep_alive(cell, session)
        assert events is not None
        assert events[0].kind is EventKind.MASTER_FAILOVER
        keep_alive(cell, session, events[-1].sequence)
    assert cell.machine.tree.get(FILE).contents == b"v2"  # type: ignore[union-attr]
    assert read(cell, reader).cached


def test_a_new_master_numbers_its_events_above_the_old_masters() -> None:
    """A client that acknowledged the old master's events does not drop the new one's."""
    cell = Cell()
    reader, _ = setup(cell)
    read(cell, reader)
    cell.client_write(SetContents(FILE, b"v2"))
    events = keep_alive(cell, reader)
    assert events is not None
    old = events[-1].sequence
    keep_alive(cell, reader, old)
    cell.tick(1)
    cell.fail_over()
    events = keep_alive(cell, reader, old)
    assert events is not None
    assert events[0].sequence > old
    assert events[0].kind is EventKind.MASTER_FAILOVER


def test_a_closing_session_s_ephemeral_file_is_invalidated_before_it_is_deleted() -> None:
    """A session's end deletes its ephemeral files: cachers of them are told first."""
    cell = Cell()
    reader, owner = setup(cell)
    path = f"{ROOT}/eph"
    cell.ok("open", owner, path, RW, create=Create(path, ephemeral=True))
    read(cell, reader, path)
    parked = cell.call("keep_alive", reader, 0)
    closing = cell.call("close_session", owner)
    assert cell.machine.tree.get(path) is not None, "held for the invalidation"
    answer = cell.result(parked)
    assert isinstance(answer, KeepAliveAnswered)
    assert {e.path for e in answer.events} == {path}
    keep_alive(cell, reader, answer.events[-1].sequence)
    assert cell.result(closing) == Done()
    assert cell.machine.tree.get(path) is None


def test_reads_are_refused_for_an_ended_session_and_bad_names() -> None:
    """A read needs a live session and a valid name."""
    cell = Cell()
    reader, _ = setup(cell)
    assert cell.code("read", reader, "/ls/other/x", cache=True) is ErrorCode.INVALID_NAME
    cell.ok("close_session", reader)
    assert cell.code("read", reader, FILE, cache=True) is ErrorCode.SESSION_EXPIRED


def test_opens_and_reads_are_checked_against_the_acl_names_for_a_principal() -> None:
    """With a principal, open needs each mode's permission (and write on the parent to
    create); a read needs read. Without one (a trusted caller) nothing is checked."""
    cell = Cell()
    session = cell.session()
    cell.client_write(Create(f"{ROOT}/acl", is_directory=True))
    cell.client_write(Create(f"{ROOT}/acl/admins", contents=b"alice\n"))
    cell.client_write(
        Create(f"{ROOT}/d", is_directory=True, acl=AclNames("all", "admins", "admins"))
    )
    cell.client_write(Create(f"{ROOT}/d/f"))
    path = f"{ROOT}/d/f"
    assert cell.code("open", session, path, RW, principal="bob") is ErrorCode.PERMISSION_DENIED
    assert cell.ok("open", session, path, HandleMode.READ, principal="bob")
    assert cell.ok("open", session, path, RW, principal="alice")
    new = f"{ROOT}/d/new"
    assert cell.code("open", session, new, RW, create=Create(new), principal="bob") is (
        ErrorCode.PERMISSION_DENIED
    )
    assert cell.machine.tree.get(new) is None
    assert read(cell, session, path, cache=False).stat is not None
    cell.client_write(SetAcl(path, AclNames("admins", "admins", "admins")))
    assert cell.code("read", session, path, cache=True, principal="bob") is (
        ErrorCode.PERMISSION_DENIED
    )
    assert isinstance(cell.ok("read", session, path, cache=True, principal="alice"), NodeRead)


def test_write_paths_names_what_a_write_touches_and_what_it_makes_stale() -> None:
    """A creation changes the node and its parent; a MultiOp touches every name it
    mentions; a release changes nothing cached; a session's end changes its ephemeral files
    and their parents and touches the nodes it holds the locks of."""
    cell = Cell()
    owner = cell.session()
    other, held = f"{ROOT}/other", f"{ROOT}/held"
    cell.client_write(Create(other))
    ephemeral = f"{ROOT}/eph"
    cell.ok("open", owner, ephemeral, RW, create=Create(ephemeral, ephemeral=True))
    cell.ok("acquire", cell.open(owner, "held"), EXCLUSIVE, wait=False)
    tree = cell.machine.tree
    session = SessionId(owner)
    both = frozenset((FILE, ROOT))
    assert write_paths(tree, Create(FILE)) == (both, both)
    assert write_paths(tree, InSession(session, Delete(FILE))) == (both, both)
    assert write_paths(tree, SetContents(FILE, b"x")) == ({FILE}, {FILE})
    multi = MultiOp((Exists(other),), (SetContents(FILE, b"x"),), (Create(f"{ROOT}/n"),))
    every = frozenset((FILE, f"{ROOT}/n", ROOT))
    assert write_paths(tree, multi) == (every, every)
    release = Release(session, HandleId(1), held, 1)
    assert write_paths(tree, release) == ({held}, frozenset())
    assert write_paths(tree, OpenSession("client")) == (frozenset(), frozenset())
    ended = write_paths(tree, EndSession(session, expired=True))
    assert ended == ({ephemeral, ROOT, held}, {ephemeral, ROOT})


def test_a_session_caches_at_most_its_limit_of_names_and_is_answered_uncached_past_it() -> None:
    """With cached_names_per_session_max 3, a session's fourth distinct name is read but not
    registered, the answer saying why (naming the key); a name it caches already stays
    cached; another session is not affected; an invalidation frees a place (issue 13's
    review: one session cached 100,000 absent names, 100 MB of the master's memory)."""
    cell = Cell(evolve(TIMING, cached_names_per_session_max=3))
    reader, other = setup(cell)
    names = [f"{ROOT}/n{i}" for i in range(3)]
    assert all(read(cell, reader, name).cached for name in names)
    past = read(cell, reader, f"{ROOT}/n3")
    assert (past.cached, past.stat) == (False, None), "answered all the same"
    assert "limits.cached_names_per_session_max is 3" in past.uncached_because
    assert read(cell, reader, names[0]).cached, "a name it caches already"
    assert read(cell, other, f"{ROOT}/n3").cached, "the limit is per session"
    assert cell.master.cache_cost[0] == 4
    parked = cell.call("keep_alive", reader, 0)
    cell.client_write(Create(names[0]))
    answer = cell.result(parked)
    assert isinstance(answer, KeepAliveAnswered)
    keep_alive(cell, reader, answer.events[-1].sequence)
    fresh = read(cell, reader, f"{ROOT}/n3")
    assert fresh.cached, "the invalidation freed a place"
    assert fresh.uncached_because == ""


def test_a_limit_of_zero_caches_nothing() -> None:
    """cached_names_per_session_max 0: every read is answered uncached, nothing registered."""
    cell = Cell(evolve(TIMING, cached_names_per_session_max=0))
    reader, _ = setup(cell)
    assert not read(cell, reader).cached
    assert cell.master.cache_cost[0] == 0


def test_a_read_of_a_busy_name_is_uncached_without_blaming_the_limit() -> None:
    """A name being written is answered uncached, with no limit named: that is no news."""
    cell = Cell()
    reader, writer = setup(cell)
    read(cell, other_reader := cell.session(), FILE)
    keep_alive(cell, other_reader)
    handle = cell.open(writer, "f")
    cell.call("write", handle, SetContents(FILE, b"v2"))
    during = read(cell, reader)
    assert (during.cached, during.uncached_because) == (False, "")
