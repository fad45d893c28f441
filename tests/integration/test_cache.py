"""The consistent client cache (Chubby §2.5) against a live three-replica cell: cached
reads come from memory, and a write, a session's or a plain client's, completes only after
every cached copy was invalidated, so no read returns a value older than a completed write."""

from __future__ import annotations

from chubbypy.client import Session, SessionState
from chubbypy.client.blocking import running_reactor
from chubbypy.protocol.errors import NoSuchNode
from tests.integration.harness import LiveCell
from tests.integration.test_sessions import on_reactor


def session_of(cell: LiveCell, *, cache: bool = True) -> Session:
    client = cell.client()
    return on_reactor(
        lambda: Session.open(client._cell, running_reactor(), cache=cache)  # type: ignore[arg-type]
    )


def test_reads_are_cached_and_every_completed_write_is_seen_at_once(cell: LiveCell) -> None:
    """A second read is a cache hit; after a session's write or a plain client's write
    completes, the cacher's next read returns the new value."""
    reader, writer = session_of(cell), session_of(cell)
    path = cell.path("config")
    handle = on_reactor(lambda: writer.open_handle(path, create=True, contents=b"v1"))
    assert on_reactor(lambda: reader.get_contents_and_stat(path))[0] == b"v1"
    hits = reader.cache.hits
    assert on_reactor(lambda: reader.get_contents_and_stat(path))[0] == b"v1"
    assert reader.cache.hits == hits + 1, "served from the cache"
    for round_ in range(20):
        value = f"v{round_ + 2}".encode()
        if round_ % 2:
            cell.client().set_contents(path, value)  # a plain client's write
        else:
            on_reactor(lambda value=value: handle.set_contents(value))  # type: ignore[misc]
        assert on_reactor(lambda: reader.get_contents_and_stat(path))[0] == value
    master = cell.wait_master()
    assert cell.metric(master, "chubbypy_cached_names") >= 1


def test_the_absence_of_a_file_is_cached_until_it_is_created(cell: LiveCell) -> None:
    """NoSuchNode comes from the cache the second time; once the file is created, the
    cacher sees it."""
    reader = session_of(cell)
    path = cell.path("later")
    for _ in range(2):
        try:
            on_reactor(lambda: reader.get_stat(path))
        except NoSuchNode:
            pass
        else:
            raise AssertionError("the file does not exist yet")
    assert reader.cache.hits >= 1
    cell.client().create(path, b"here")
    assert on_reactor(lambda: reader.get_contents_and_stat(path))[0] == b"here"


def test_a_session_with_its_cache_off_always_asks_the_master(cell: LiveCell) -> None:
    """cache=False: nothing is kept."""
    reader = session_of(cell, cache=False)
    path = cell.path("plain")
    cell.client().create(path, b"x")
    for _ in range(3):
        assert on_reactor(lambda: reader.get_contents_and_stat(path))[0] == b"x"
    assert len(reader.cache) == 0
    assert reader.cache.hits == 0


def test_the_cache_is_flushed_on_fail_over_and_stays_coherent(cell: LiveCell) -> None:
    """After a kill -9 of the master the cacher's reads still see every completed write."""
    reader = session_of(cell)
    path = cell.path("kept")
    cell.client().create(path, b"before")
    assert on_reactor(lambda: reader.get_contents_and_stat(path))[0] == b"before"
    master = cell.wait_master()
    cell.kill_replica(master)
    cell.wait_for(
        lambda: next((r for r in cell.serving() if r != master), None), "a new master", 15
    )
    cell.client().set_contents(path, b"after")
    assert on_reactor(lambda: reader.get_contents_and_stat(path))[0] == b"after"


def test_an_idle_session_without_handles_is_closed_by_the_library(cell: LiveCell) -> None:
    """No open handle and no call for idle_close_seconds: the session ends (and the master
    forgets it); a session with an open handle stays."""
    client = cell.client()
    idle = on_reactor(
        lambda: Session.open(client._cell, running_reactor(), idle_close_seconds=1.0)  # type: ignore[arg-type]
    )
    busy = on_reactor(
        lambda: Session.open(client._cell, running_reactor(), idle_close_seconds=1.0)  # type: ignore[arg-type]
    )
    on_reactor(lambda: busy.open_handle(cell.path("held"), create=True))
    cell.wait_for(lambda: idle.state is SessionState.CLOSED or None, "the idle close", 10)
    master = cell.wait_master()
    cell.wait_for(
        lambda: cell.metric(master, "chubbypy_sessions") == 1 or None, "the master to forget", 10
    )
    assert busy.state is SessionState.CONNECTED


def test_a_closed_handle_is_reused_by_the_next_open_of_its_node(cell: LiveCell) -> None:
    """Closing a handle that asked for no events or lock keeps it; opening the same node
    in the same mode again reuses it without a call; a re-created node gets a new one."""
    session = session_of(cell)
    path = cell.path("reused")
    first = on_reactor(lambda: session.open_handle(path, create=True))
    on_reactor(lambda: first.close())
    again = on_reactor(lambda: session.open_handle(path))
    assert again._handle == first._handle
    assert on_reactor(lambda: again.get_contents_and_stat())[0] == b""
    on_reactor(lambda: again.close())
    cell.client().delete(path)
    cell.client().create(path, b"new")
    fresh = on_reactor(lambda: session.open_handle(path))
    assert fresh._handle != first._handle
    assert on_reactor(lambda: fresh.get_contents_and_stat())[0] == b"new"
    locker = on_reactor(lambda: session.open_handle(cell.path("lock"), create=True))
    on_reactor(lambda: locker.acquire())
    on_reactor(lambda: locker.close())
    other = session_of(cell)
    handle = on_reactor(lambda: other.open_handle(cell.path("lock")))
    assert on_reactor(lambda: handle.try_acquire()), "closing released the lock"
