"""The master's listing of sessions for operators (`MasterService.list_sessions`): what it
says of each session, how it pages, and who may ask."""

from __future__ import annotations

import pytest

from chubbypy.master import MasterService, MasterTiming, SessionsListed, SessionSummary
from chubbypy.master import _service as service_module
from chubbypy.namespace import protect_acl_directory
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import Create, SetContents
from chubbypy.protocol.session import SESSION_PATHS_LISTED_MAX, SESSIONS_PAGE_MAX, EventMask
from chubbypy.sessions import SessionTiming
from tests.unit.master.harness import CELL, EXCLUSIVE, KEY, ROOT, SHARED, TIMING, Cell


@pytest.fixture
def cell() -> Cell:
    return Cell()


def listed(cell: Cell, after: int = 0, limit: int = SESSIONS_PAGE_MAX) -> SessionsListed:
    page = cell.ok("list_sessions", after, limit)
    assert isinstance(page, SessionsListed), page
    return page


def summary_of(cell: Cell, session: int) -> SessionSummary:
    return next(s for s in listed(cell).sessions if s.session_id == session)


def ephemeral(cell: Cell, session: int, name: str) -> bytes:
    """A handle on a new ephemeral file of the session."""
    return cell.open(session, name, create=Create(f"{ROOT}/{name}", ephemeral=True))


def test_a_session_is_listed_with_its_name_lease_handles_locks_and_ephemeral_files(
    cell: Cell,
) -> None:
    """The listing shows each session's name, state, lease left, open handles, locks held
    (with their modes) and ephemeral files owned; an idle session shows none of them."""
    holder, idle = cell.session(), cell.session()
    lock = cell.open(holder, "lock")
    cell.ok("acquire", lock, EXCLUSIVE, wait=False)
    reader = cell.open(holder, "shared")
    cell.ok("acquire", reader, SHARED, wait=False)
    ephemeral(cell, holder, "here")
    cell.tick(40)
    page = listed(cell)
    assert not page.more
    assert [s.session_id for s in page.sessions] == [holder, idle]
    first, second = page.sessions
    assert first == SessionSummary(
        holder,
        "client",
        "live",
        TIMING.session.lease_ticks - 40,
        3,
        ((f"{ROOT}/lock", "exclusive"), (f"{ROOT}/shared", "shared")),
        2,
        (f"{ROOT}/here",),
        1,
        0,
    )
    assert (second.handles, second.locks, second.ephemeral) == (0, (), ())
    cell.ok("close", lock)
    assert summary_of(cell, holder).locks == ((f"{ROOT}/shared", "shared"),)
    assert summary_of(cell, holder).handles == 2


def test_sessions_come_in_pages_by_id(cell: Cell) -> None:
    """Pages list the sessions above `after` in id order, at most `limit`, and say whether
    more follow; a limit above the maximum is served as the maximum, one below 1 refused."""
    sessions = [cell.session() for _ in range(5)]
    first = listed(cell, 0, 2)
    assert ([s.session_id for s in first.sessions], first.more) == (sessions[:2], True)
    second = listed(cell, first.sessions[-1].session_id, 2)
    assert ([s.session_id for s in second.sessions], second.more) == (sessions[2:4], True)
    last = listed(cell, second.sessions[-1].session_id, 2)
    assert ([s.session_id for s in last.sessions], last.more) == (sessions[4:], False)
    assert listed(cell, sessions[-1]) == SessionsListed((), more=False)
    assert len(listed(cell, 0, 10**9).sessions) == 5
    assert cell.code("list_sessions", 0, 0) is ErrorCode.BAD_REQUEST


def test_a_session_is_no_longer_listed_once_closed_or_expired(cell: Cell) -> None:
    """A closed session, and one whose lease ran out, are no longer listed."""
    closed, expiring, kept = cell.session(), cell.session(), cell.session()
    assert [s.session_id for s in listed(cell).sessions] == [closed, expiring, kept]
    cell.ok("close_session", closed)
    cell.tick(TIMING.session.lease_ticks - 50)
    cell.events(kept)  # only this one keeps its session alive
    cell.tick(50)
    assert [s.session_id for s in listed(cell).sessions] == [kept]


def test_a_session_whose_close_is_in_flight_is_listed_as_closing(cell: Cell) -> None:
    """Between its close and the close's application the session is listed "closing"."""
    session = cell.session()
    cell.master.close_session(cell.next_token(), session)
    listing = cell.next_token()
    cell.master.list_sessions(listing)
    replies, _ = cell.master.take(master_lease_valid=True)
    page = next(r.result for r in replies if r.token == listing)
    assert isinstance(page, SessionsListed)
    assert [(s.session_id, s.state) for s in page.sessions] == [(session, "closing")]


def test_a_session_too_far_behind_on_events_is_listed_as_doomed() -> None:
    """A session doomed for unacknowledged events is listed "doomed" until it ends."""
    cell = Cell()
    timing = MasterTiming(
        SessionTiming(lease_ticks=100, answer_before_ticks=30, events_pending_max=2),
        tick_microseconds=TIMING.tick_microseconds,
    )
    cell.master = MasterService(timing, KEY)
    cell.master.start(cell.now, epoch=cell.index + 1, machine=cell.machine)
    watcher, writer = cell.session(), cell.session()
    cell.open(watcher, "f", events=EventMask.CONTENTS_MODIFIED)
    cell.open(writer, "f")
    for count in range(3):
        cell.client_write(SetContents(f"{ROOT}/f", b"%d" % count))
    states = {s.session_id: s.state for s in listed(cell).sessions}
    assert states == {watcher: "doomed", writer: "live"}


def test_cached_names_are_counted(cell: Cell) -> None:
    """A session registered as caching a name shows it in `cached_names`."""
    session = cell.session()
    cell.client_write(Create(f"{ROOT}/f"))
    cell.ok("read", session, f"{ROOT}/f", cache=True)
    assert summary_of(cell, session).cached_names == 1


def test_long_lists_of_paths_are_cut_short_and_counted(cell: Cell) -> None:
    """At most SESSION_PATHS_LISTED_MAX locks and ephemeral files are listed, in path
    order; the counts say how many there are in all."""
    session = cell.session()
    names = [f"e{number:02}" for number in range(SESSION_PATHS_LISTED_MAX + 4)]
    for name in names:
        cell.ok("acquire", ephemeral(cell, session, name), EXCLUSIVE, wait=False)
    summary = summary_of(cell, session)
    paths = [f"{ROOT}/{name}" for name in names[:SESSION_PATHS_LISTED_MAX]]
    assert summary.ephemeral == tuple(paths)
    assert summary.locks == tuple((path, "exclusive") for path in paths)
    assert summary.ephemeral_count == summary.lock_count == len(names)


def test_a_page_ends_early_once_it_passes_its_byte_budget(
    cell: Cell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page stops at the first session that takes it to its byte budget (so at least one
    session is always listed) and says more follow; the pages together list them all."""
    monkeypatch.setattr(service_module, "SESSIONS_PAGE_BYTES_BUDGET", 10_000)
    sessions = [cell.session() for _ in range(12)]
    for number, session in enumerate(sessions):
        for path_number in range(SESSION_PATHS_LISTED_MAX):
            ephemeral(cell, session, f"{number:02}-{path_number:02}-" + "x" * 100)
    pages: list[tuple[SessionSummary, ...]] = []
    page = listed(cell)
    pages.append(page.sessions)
    while page.more:
        page = listed(cell, page.sessions[-1].session_id)
        pages.append(page.sessions)
    assert len(pages) > 2
    assert [s.session_id for listing in pages for s in listing] == sessions
    for listing in pages[:-1]:
        sizes = [service_module._listed_bytes(s) for s in listing]
        assert sum(sizes[:-1]) < 10_000 <= sum(sizes)
    monkeypatch.setattr(service_module, "SESSIONS_PAGE_BYTES_BUDGET", 1)
    assert [s.session_id for s in listed(cell).sessions] == sessions[:1]


def test_only_principals_the_admin_acl_admits_may_list(cell: Cell) -> None:
    """With a principal, the ACL 'admin' decides (the listing shows clients' names and what
    they hold): without its file no one may list, once it lists alice she may and bob may
    not, and the refusal names the ACL; without a principal (trusted) it is answered."""
    cell.session()
    denied = cell.result(cell.call("list_sessions", principal="anonymous"))
    assert isinstance(denied, Failure)
    assert denied.code is ErrorCode.PERMISSION_DENIED
    assert "'admin'" in denied.message
    cell.client_write(protect_acl_directory(CELL, ("alice",)))
    assert cell.code("list_sessions", principal="bob") is ErrorCode.PERMISSION_DENIED
    assert cell.ok("list_sessions", principal="alice").sessions
    assert cell.ok("list_sessions").sessions


def test_the_listing_is_answered_during_a_fail_over_and_handles_are_this_masters(
    cell: Cell,
) -> None:
    """A new master lists every session at once, before they acknowledged the fail-over,
    with the whole lease it granted them; it counts the handles it has seen used."""
    session = cell.session()
    handle = cell.open(session, "lock")
    cell.ok("acquire", handle, EXCLUSIVE, wait=False)
    cell.fail_over()
    before = summary_of(cell, session)
    lease = TIMING.session.lease_ticks + TIMING.session.failover_extra_ticks
    assert (before.state, before.lease_remaining_ticks, before.handles) == ("live", lease, 0)
    assert before.locks == ((f"{ROOT}/lock", "exclusive"),)
    cell.events(session)  # acknowledges nothing yet: the fail-over event comes back
    cell.events(session, cell.last_sequence[session])
    cell.ok("get_sequencer", handle)
    assert summary_of(cell, session).handles == 1
