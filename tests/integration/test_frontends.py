"""One behaviour suite, run unchanged against the three client front ends (Twisted, asyncio,
blocking) and a live three-replica cell.

Each test is written once, synchronously, through a `Front` driver
(`tests.integration.frontends`) that makes each call where its front end wants it made
and waits for it; the ``front`` fixture runs every test once per front end. One cell
serves the whole module (per xdist worker); each test names its nodes after itself and
its front end, so no two share a node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chubbypy.client import (
    AclNames,
    CellClosed,
    EventKind,
    EventMask,
    HandleMode,
    LockLost,
    LockTimeout,
    NotLeader,
    SessionState,
)
from chubbypy.protocol.errors import (
    GenerationMismatch,
    InvalidHandle,
    InvalidSequencer,
    LockHeld,
    LockNotHeld,
    NodeExists,
    NoSuchNode,
    PermissionDenied,
)
from tests.integration.frontends import (
    ENDED,
    FRONTS,
    Front,
    assert_waiting,
    eventually,
)
from tests.integration.harness import LiveCell

Connect = Callable[[], Any]
Place = Callable[[str], str]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCell]:
    """One three-replica cell for the module's tests."""
    cell = LiveCell(tmp_path_factory.mktemp("frontends"))
    try:
        cell.start()
        yield cell
    finally:
        cell.close()


@pytest.fixture(scope="module", params=list(FRONTS))
def front(request: pytest.FixtureRequest) -> Iterator[Front]:
    """The driver of one front end (ids: twisted, asyncio, blocking)."""
    made: Front = FRONTS[request.param]()
    yield made
    made.shut()


@pytest.fixture
def connect(front: Front, live: LiveCell) -> Iterator[Connect]:
    """Makes clients of the cell through the front end; closes them after the test."""
    made: list[Any] = []

    def make() -> Any:
        client = front.connect(str(live.config_path), timeout_seconds=10.0)
        made.append(client)
        return client

    yield make
    for client in made:
        front.close(client)


@pytest.fixture
def place(front: Front, live: LiveCell, request: pytest.FixtureRequest) -> Place:
    """A node name of the cell that only this test, on this front end, uses."""
    test = request.node.originalname.removeprefix("test_")
    return lambda name: live.path(f"{front.name}-{test}-{name}")


def names(entries: Any) -> list[str]:
    """The names of directory entries, in order."""
    return [entry.name for entry in entries]


def test_plain_calls(front: Front, connect: Connect, place: Place) -> None:
    """Plain calls create, read, compare-and-swap (GenerationMismatch when stale), list and
    delete; creating a taken name raises NodeExists."""
    client = connect()
    call = front.call
    directory, file = place("dir"), place("dir") + "/file"
    assert call(client.create, directory, directory=True).is_directory
    created = call(client.create, file, b"one")
    read = call(client.get_contents_and_stat, file)
    assert (read.contents, read.stat) == (b"one", created)
    written = call(client.set_contents, file, b"two", created.content_generation)
    assert written.content_generation > created.content_generation
    with pytest.raises(GenerationMismatch):
        call(client.set_contents, file, b"three", created.content_generation)
    assert call(client.get_contents_and_stat, file).contents == b"two"
    assert call(client.get_stat, file) == written
    with pytest.raises(NodeExists):
        call(client.create, file)
    assert names(call(client.list_dir, directory)) == ["file"]
    call(client.delete, file)
    with pytest.raises(NoSuchNode):
        call(client.get_contents_and_stat, file)
    assert names(call(client.list_dir, directory)) == []


def test_handle_calls(front: Front, connect: Connect, place: Place) -> None:
    """A handle made by open(create=True) reads, writes (set_contents answers the new Stat),
    compares-and-swaps, lists its directory and deletes its node, after which its calls
    raise NoSuchNode; a closed handle's calls raise InvalidHandle."""
    client = connect()
    call = front.call
    handle = call(client.open, place("file"), create=True, contents=b"v1")
    assert (handle.path, handle.created, handle.closed) == (place("file"), True, False)
    contents, stat = call(handle.get_contents_and_stat)
    assert contents == b"v1"
    assert call(handle.get_stat) == stat
    after = call(handle.set_contents, b"v2", stat.content_generation)
    assert after.content_generation > stat.content_generation
    assert handle.stat == after
    with pytest.raises(GenerationMismatch):
        call(handle.set_contents, b"stale", stat.content_generation)
    assert call(handle.get_contents_and_stat) == (b"v2", after)

    directory = call(client.open, place("dir"), create=True, directory=True)
    call(client.create, place("dir") + "/child", b"x")
    listing = call(directory.read_dir)
    assert (names(listing.entries), listing.more) == (["child"], False)
    call(directory.close)
    assert directory.closed
    with pytest.raises(InvalidHandle):
        call(directory.read_dir)

    call(handle.delete)
    with pytest.raises(NoSuchNode):
        call(handle.get_stat)
    with pytest.raises(NoSuchNode):
        call(client.get_stat, place("file"))


def test_set_acl_needs_a_handle_opened_for_change_acl(
    front: Front, connect: Connect, place: Place
) -> None:
    """set_acl through a handle opened without HandleMode.CHANGE_ACL raises
    PermissionDenied and changes nothing; with it, the node's ACL names change."""
    client = connect()
    call = front.call
    path = place("file")
    plain = call(client.open, path, create=True)
    before = call(client.get_stat, path)
    locked_down = AclNames("all", "all", "nobody")
    with pytest.raises(PermissionDenied):
        call(plain.set_acl, locked_down)
    assert call(client.get_stat, path).acl == before.acl
    mode = HandleMode.READ | HandleMode.WRITE | HandleMode.CHANGE_ACL
    changer = call(client.open, path, mode=mode)
    after = call(changer.set_acl, locked_down, before.acl_generation)
    assert (after.acl, after.acl_generation > before.acl_generation) == (locked_down, True)
    assert call(client.get_stat, path).acl == locked_down
    with pytest.raises(PermissionDenied):  # "nobody" has no ACL file: it admits no one
        call(client.open, path, mode=mode)


def test_handle_locks_and_sequencers(front: Front, connect: Connect, place: Place) -> None:
    """acquire gives a sequencer that get_sequencer repeats and check_sequencer accepts;
    another client's try_acquire raises LockHeld while it is held; after release the
    sequencer is invalid and the other client takes the lock."""
    alice, bob = connect(), connect()
    call = front.call
    path = place("lock")
    mine = call(alice.open, path, create=True)
    theirs = call(bob.open, path)
    sequencer = call(mine.acquire, timeout=5)
    assert call(mine.get_sequencer) == sequencer
    assert call(theirs.check_sequencer, sequencer)
    assert call(bob.check_sequencer, sequencer)
    with pytest.raises(LockHeld):
        call(theirs.try_acquire)
    call(mine.release)
    assert not call(bob.check_sequencer, sequencer)
    with pytest.raises(LockNotHeld):
        call(mine.get_sequencer)
    second = call(theirs.try_acquire)
    assert second != sequencer
    assert call(theirs.get_sequencer) == second
    assert call(alice.check_sequencer, second)


def test_a_timed_handle_acquire_gives_up_and_leaves_no_waiter(
    front: Front, connect: Connect, place: Place
) -> None:
    """A handle's acquire with a timeout raises LockTimeout while another holds the lock,
    and leaves no request behind: once the lock is released a third client takes it; the
    handle stays usable (the master withdrew the request itself)."""
    alice, bob, carol = connect(), connect(), connect()
    call = front.call
    path = place("lock")
    mine = call(alice.open, path, create=True)
    call(mine.acquire, timeout=5)
    waiting = call(bob.open, path)
    started = time.monotonic()
    with pytest.raises(LockTimeout):
        call(waiting.acquire, timeout=0.5)
    assert 0.4 <= time.monotonic() - started < 5
    call(mine.release)
    third = call(carol.open, path)
    assert call(alice.check_sequencer, call(third.try_acquire))
    call(third.release)
    assert call(alice.check_sequencer, call(waiting.acquire, timeout=5)), "still usable"


def test_the_lock_block(front: Front, connect: Connect, place: Place) -> None:
    """The body runs holding the lock, its sequencer valid; a rival's lock with timeout=1
    raises LockTimeout after about a second and timeout=0 at once, neither running its
    body; after the block the sequencer is invalid and the lock free."""
    alice, bob = connect(), connect()
    call = front.call
    path = place("lock")
    ran: list[str] = []
    with front.lock(alice, path, timeout=5) as held:
        assert (held.path, held.shared) == (path, False)
        assert call(bob.check_sequencer, held.sequencer)
        assert call(held.check)
        started = time.monotonic()
        with pytest.raises(LockTimeout), front.lock(bob, path, timeout=1):
            ran.append("timeout=1")
        assert 0.9 <= time.monotonic() - started < 5
        started = time.monotonic()
        with pytest.raises(LockTimeout), front.lock(bob, path, timeout=0):
            ran.append("timeout=0")
        assert time.monotonic() - started < 0.9
        assert not front.lost_is_set(held)
    assert ran == []
    assert not front.lost_is_set(held)
    assert not call(bob.check_sequencer, held.sequencer)
    with front.lock(bob, path, timeout=0) as second:
        assert second.sequencer != held.sequencer
        assert call(alice.check_sequencer, second.sequencer)


def test_a_waiting_lock_block_is_granted_when_the_holder_leaves(
    front: Front, connect: Connect, place: Place
) -> None:
    """A lock block waiting for a held lock is entered as soon as the holder leaves its
    block, with a new sequencer."""
    alice, bob = connect(), connect()
    path = place("lock")
    waiting = front.lock(bob, path, timeout=5)
    with front.lock(alice, path, timeout=5) as first:
        entering = waiting.start()
        assert_waiting(entering)
    second = front.wait(entering, 5)
    try:
        assert second.sequencer != first.sequencer
        assert front.call(alice.check_sequencer, second.sequencer)
    finally:
        waiting.__exit__(None, None, None)
    assert not front.call(alice.check_sequencer, second.sequencer)


def test_a_lock_acquired_and_released_by_hand(front: Front, connect: Connect, place: Place) -> None:
    """Lock.acquire() gives a held lock whose sequencer is valid until held.release();
    releasing again does nothing."""
    alice, bob = connect(), connect()
    call = front.call
    path = place("lock")
    lock = call(alice.lock, path, timeout=5)
    held = call(lock.acquire)
    assert call(bob.check_sequencer, held.sequencer)
    with pytest.raises(LockTimeout), front.lock(bob, path, timeout=0):
        pytest.fail("the lock was granted twice")
    call(held.release)
    call(held.release)
    assert not call(bob.check_sequencer, held.sequencer)
    assert not front.lost_is_set(held)


def test_an_error_in_the_lock_block_releases_the_lock(
    front: Front, connect: Connect, place: Place
) -> None:
    """The body's own exception leaves the block, and the lock is released."""
    alice, bob = connect(), connect()
    path = place("lock")
    with pytest.raises(KeyError), front.lock(alice, path, timeout=5) as held:  # noqa: PT012
        assert front.call(bob.check_sequencer, held.sequencer)
        raise KeyError("the body's own error")
    assert not front.call(bob.check_sequencer, held.sequencer)
    with front.lock(bob, path, timeout=0) as taken:
        assert front.call(taken.check)


def test_shared_locks(front: Front, connect: Connect, place: Place) -> None:
    """Two clients hold the lock shared at once; an exclusive try (a lock block with
    timeout=0, a handle's try_acquire) fails meanwhile, and succeeds once both let go."""
    alice, bob, carol = connect(), connect(), connect()
    call = front.call
    path = place("lock")
    with (
        front.lock(alice, path, shared=True, timeout=5) as first,
        front.lock(bob, path, shared=True, timeout=5) as second,
    ):
        assert (first.shared, second.shared) == (True, True)
        assert call(carol.check_sequencer, first.sequencer)
        assert call(carol.check_sequencer, second.sequencer)
        with pytest.raises(LockTimeout), front.lock(carol, path, timeout=0):
            pytest.fail("an exclusive lock was granted beside shared holders")
        handle = call(carol.open, path)
        with pytest.raises(LockHeld):
            call(handle.try_acquire)
        call(handle.close)
    with front.lock(carol, path, timeout=0) as exclusive:
        assert not exclusive.shared


def test_an_operator_sees_a_lock_and_ends_its_holders_session(
    front: Front, connect: Connect, place: Place, live: LiveCell
) -> None:
    """lock_info shows the holder (as "anonymous") and a waiter in line; end_session is
    refused to an anonymous client; the operator ends the holder's session (ending, then
    ending already, each with its lease's rest): the holder hears at once that it lost
    its lock, which its session keeps, the waiter waiting, until that lease runs out
    (test_operator_calls.py waits for the waiter's grant)."""
    holder, waiter = connect(), connect()
    principal, token = live.operator
    operator = front.connect(str(live.config_path), timeout_seconds=10.0, principal=principal,
                             token=token)  # fmt: skip
    call, path = front.call, place("lock")
    waiting = front.lock(waiter, path, timeout=20)
    try:
        with pytest.raises(LockLost), front.lock(holder, path, timeout=5) as held:  # noqa: PT012
            entering = waiting.start()
            eventually(lambda: call(waiter.lock_info, path).waiter_count == 1, "a waiter")
            info = call(waiter.lock_info, path)
            assert (info.mode, info.holder_count) == ("exclusive", 1)
            (holding,) = info.holders
            assert (holding.principal, holding.mode) == ("anonymous", "exclusive")
            assert info.waiters[0].mode == "exclusive"
            with pytest.raises(PermissionDenied):
                call(waiter.end_session, holding.session_id)
            ending = call(operator.end_session, holding.session_id)
            assert (ending.found, ending.already) == (True, False)
            assert 0 < ending.ends_in_ms <= 12_000
            again = call(operator.end_session, holding.session_id)
            assert (again.found, again.already) == (True, True)
            assert again.ends_in_ms <= ending.ends_in_ms
            eventually(lambda: front.lost_is_set(held), "the holder to lose its lock")
        after = call(operator.lock_info, path)
        assert [h.session_id for h in after.holders] == [holding.session_id]
        assert after.waiter_count == 1
        assert not entering.done()
    finally:
        waiting.__exit__(None, None, None)
        front.close(operator)


def test_a_lost_lock(front: Front, connect: Connect, place: Place) -> None:
    """Another client deleting the lock file while the body runs sets the front end's lost
    signal and calls on_lost; the body ends normally, so the exit raises that LockLost."""
    alice, bob = connect(), connect()
    call = front.call
    path = place("lock")
    told: list[LockLost] = []
    with pytest.raises(LockLost) as raised, front.lock(alice, path, timeout=5) as held:  # noqa: PT012
        call(held.on_lost.append, told.append)
        assert not front.lost_is_set(held)
        call(bob.delete, path)
        eventually(lambda: front.lost_is_set(held), "the lock to be lost")
        assert call(lambda: held.is_lost)
        assert not call(held.check)
    assert told == [raised.value]
    assert held.lost_reason is raised.value


def test_the_bodys_own_error_wins_over_a_lost_lock(
    front: Front, connect: Connect, place: Place
) -> None:
    """When the lock was lost and the body raised, the body's exception leaves the block."""
    alice, bob = connect(), connect()
    path = place("lock")
    with pytest.raises(KeyError), front.lock(alice, path, timeout=5) as held:  # noqa: PT012
        front.call(bob.delete, path)
        eventually(lambda: front.lost_is_set(held), "the lock to be lost")
        raise KeyError("the body's own error")
    assert isinstance(held.lost_reason, LockLost)


def test_closing_the_client_in_a_lock_block_loses_the_lock(
    front: Front, connect: Connect, place: Place
) -> None:
    """Closing the client while the body runs ends its session: the lost signal is set,
    and the body ending normally, the exit raises LockLost; the lock is free at once."""
    alice, bob = connect(), connect()
    path = place("lock")
    with pytest.raises(LockLost), front.lock(alice, path, timeout=5) as held:  # noqa: PT012
        front.close(alice)
        eventually(lambda: front.lost_is_set(held), "the lock to be lost")
    with front.lock(bob, path, timeout=0) as taken:
        assert front.call(taken.check)


def test_fencing(front: Front, connect: Connect, place: Place) -> None:
    """Once another client acquired the lock, a write with the old sequencer raises
    InvalidSequencer, and so does every later write of a handle fenced by set_sequencer
    (until set_sequencer(None)); the new holder's fenced write goes through."""
    alice, bob = connect(), connect()
    call = front.call
    path = place("lock")
    mine = call(alice.open, path, create=True)
    theirs = call(bob.open, path)
    old = call(mine.acquire, timeout=5)
    call(mine.set_contents, b"alice", sequencer=old)
    call(mine.release)
    new = call(theirs.acquire, timeout=5)
    with pytest.raises(InvalidSequencer):
        call(mine.set_contents, b"late", sequencer=old)
    call(mine.set_sequencer, old)
    with pytest.raises(InvalidSequencer):
        call(mine.set_contents, b"later")
    with pytest.raises(InvalidSequencer):
        call(mine.delete)
    assert call(bob.get_contents_and_stat, path).contents == b"alice"
    call(theirs.set_contents, b"bob", sequencer=new)
    call(mine.set_sequencer, None)
    call(mine.set_contents, b"unfenced")  # the lock is advisory: only fenced writes check
    assert call(bob.get_contents_and_stat, path).contents == b"unfenced"


def test_handle_events(front: Front, connect: Connect, place: Place) -> None:
    """A handle opened for CONTENTS_MODIFIED hears of another client's write through its
    events() stream, its on_event callbacks and the cell's events(); nothing else comes;
    closing the handle ends its stream."""
    watcher, writer = connect(), connect()
    call = front.call
    path = place("watched")
    handle = call(watcher.open, path, create=True, events=EventMask.CONTENTS_MODIFIED)
    events, cell_events = call(handle.events), call(watcher.events)
    heard: list[Any] = []
    call(handle.on_event.append, heard.append)
    with pytest.raises(TimeoutError):
        front.next(events, timeout=0.3)
    call(writer.set_contents, path, b"news")
    event = front.next(events, timeout=5)
    assert (event.kind, event.path, event.handle_id) == (
        EventKind.CONTENTS_MODIFIED,
        path,
        handle.handle_id,
    )
    assert front.next(cell_events, timeout=5) == event
    eventually(lambda: len(heard) == 1, "the on_event callback")
    assert heard == [event]
    call(handle.close)
    assert front.next(events, timeout=5) is ENDED
    assert front.next(events, timeout=5) is ENDED


def test_session_states(front: Front, connect: Connect, place: Place) -> None:
    """The cell's states() yields CONNECTED once its session opens and CLOSED when the
    client is closed, then ends (so do the cell's and its handle's events()); later calls
    raise CellClosed."""
    client = connect()
    call = front.call
    states, events = call(client.states), call(client.events)
    seen: list[SessionState] = []
    call(client.on_state.append, seen.append)
    assert call(lambda: client.state) is None
    handle = call(client.open, place("file"), create=True, events=EventMask.CONTENTS_MODIFIED)
    handle_events = call(handle.events)
    assert front.next(states, timeout=5) is SessionState.CONNECTED
    assert call(lambda: client.state) is SessionState.CONNECTED
    front.close(client)
    assert front.next(states, timeout=5) is SessionState.CLOSED
    assert front.next(states, timeout=5) is ENDED
    assert front.next(events, timeout=5) is ENDED
    assert front.next(handle_events, timeout=5) is ENDED
    assert seen == [SessionState.CONNECTED, SessionState.CLOSED]
    assert call(lambda: client.state) is SessionState.CLOSED
    with pytest.raises(CellClosed):
        call(client.get_stat, place("file"))


def test_an_ephemeral_file_ends_with_its_client(
    front: Front, connect: Connect, place: Place
) -> None:
    """A file opened with create=True, ephemeral=True is deleted when its client closes."""
    owner, other = connect(), connect()
    call = front.call
    path = place("mine")
    handle = call(owner.open, path, create=True, ephemeral=True, contents=b"here")
    assert handle.created
    assert call(other.get_contents_and_stat, path).contents == b"here"
    front.close(owner)
    with pytest.raises(NoSuchNode):
        call(other.get_stat, path)


def test_election(front: Front, connect: Connect, place: Place) -> None:
    """The first candidate leads and both name it; the second's campaign waits, and its
    proclaim raises NotLeader; the leader's proclaim changes leader(); when it resigns the
    second wins, changes() reports both sides, and only the new sequencer is valid."""
    one, two = connect(), connect()
    call = front.call
    path = place("leader")
    alice = front.election(one, path, "alice")
    bob = front.election(two, path, "bob")
    assert call(bob.leader) is None
    alice_changes, bob_changes = call(alice.changes), call(bob.changes)
    first = call(alice.campaign, timeout=5)
    elected = front.next(alice_changes, timeout=5)
    assert (elected.elected, elected.sequencer) == (True, first)
    assert call(lambda: (alice.is_leader, alice.sequencer)) == (True, first)
    assert (call(alice.leader), call(bob.leader)) == ("alice", "alice")

    campaigning = front.start(bob.campaign, timeout=10)
    assert_waiting(campaigning)
    assert not call(lambda: bob.is_leader)
    with pytest.raises(NotLeader):
        call(bob.proclaim, "bob, early")
    call(alice.proclaim, "alice at 10.0.0.1")
    assert call(bob.leader) == "alice at 10.0.0.1"

    call(alice.resign)
    second = front.wait(campaigning, 5)
    deposed = front.next(alice_changes, timeout=5)
    assert (deposed.elected, deposed.sequencer, deposed.reason) == (False, None, None)
    won = front.next(bob_changes, timeout=5)
    assert (won.elected, won.sequencer) == (True, second)
    assert call(lambda: (alice.is_leader, bob.is_leader)) == (False, True)
    assert (call(alice.leader), call(bob.leader)) == ("bob", "bob")
    assert not call(one.check_sequencer, first)
    assert call(one.check_sequencer, second)
    with pytest.raises(NotLeader):
        call(alice.proclaim, "alice, deposed")


def test_a_campaign_that_times_out_does_not_win_later(
    front: Front, connect: Connect, place: Place
) -> None:
    """A second candidate's campaign with a timeout raises LockTimeout while the first
    leads, and is withdrawn: when the leader resigns, it does not take the lead unseen."""
    one, two = connect(), connect()
    call = front.call
    path = place("leader")
    alice = front.election(one, path, "alice")
    bob = front.election(two, path, "bob")
    call(alice.campaign, timeout=5)
    started = time.monotonic()
    with pytest.raises(LockTimeout):
        call(bob.campaign, timeout=0.5)
    assert 0.4 <= time.monotonic() - started < 5
    call(alice.resign)
    assert call(alice.campaign, timeout=0)  # had Bob's request stayed queued, he would lead
    assert not call(lambda: bob.is_leader)
    assert call(bob.leader) == "alice"


def test_election_observe(front: Front, connect: Connect, place: Place) -> None:
    """observe() gives what the leader advertises now, then each change, until closed."""
    one, two = connect(), connect()
    call = front.call
    path = place("leader")
    alice = front.election(one, path, "alice")
    watcher = front.election(two, path, "watcher")
    call(alice.campaign, timeout=5)
    observed = call(watcher.observe)
    assert front.next(observed, timeout=5) == "alice"
    call(alice.proclaim, "alice, again")
    assert front.next(observed, timeout=5) == "alice, again"
    call(alice.resign)
    assert front.next(observed, timeout=5) is None
    call(observed.close)
    assert front.next(observed, timeout=5) is ENDED


def test_poison_stops_a_blocked_acquire(front: Front, connect: Connect, place: Place) -> None:
    """poison() from elsewhere makes a handle's blocked acquire raise InvalidHandle, and its
    later calls too; its request leaves the master's queue, so the lock passes over it."""
    alice, bob, carol = connect(), connect(), connect()
    call = front.call
    path = place("lock")
    mine = call(alice.open, path, create=True)
    call(mine.acquire, timeout=5)
    waiting = call(bob.open, path)
    acquiring = front.start(waiting.acquire)
    assert_waiting(acquiring)
    call(waiting.poison)
    with pytest.raises(InvalidHandle):
        front.wait(acquiring, 5)
    with pytest.raises(InvalidHandle):
        call(waiting.get_stat)
    call(mine.release)
    third = call(carol.open, path)
    assert call(alice.check_sequencer, call(third.try_acquire))
