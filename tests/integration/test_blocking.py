"""The blocking client (`chubbypy.client.blocking`) against a live three-replica cell:
handles, locks held by ``with`` blocks, events, elections, and interrupted waits."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from twisted.internet.threads import blockingCallFromThread

from chubbypy.client import (
    EventKind,
    EventMask,
    EventStream,
    LockLost,
    LockTimeout,
    SessionState,
    StreamOverflow,
)
from chubbypy.client.blocking import BlockingElection, BlockingStream, running_reactor
from chubbypy.protocol.errors import GenerationMismatch, InvalidHandle, NoSuchNode
from tests.integration.harness import LiveCell

_T = TypeVar("_T")


def next_where(stream: BlockingStream[_T], wanted: Callable[[_T], bool], timeout: float) -> _T:
    """The first item of `stream` that is `wanted`, skipping others, within `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        item = stream.next(timeout=max(0.0, deadline - time.monotonic()))
        if wanted(item):
            return item


def interrupt(thread: threading.Thread) -> None:
    """Raise KeyboardInterrupt in `thread`, as Ctrl-C does in the main thread."""
    assert thread.ident is not None
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt)
    )
    assert changed == 1


def test_handle_calls_block_and_a_stale_generation_is_refused(cell: LiveCell) -> None:
    """A handle reads, writes, compares-and-swaps (GenerationMismatch when stale), lists and
    deletes; once closed its calls raise InvalidHandle."""
    client = cell.client()
    path = cell.path("config")
    with client.open(path, create=True, contents=b"v1") as handle:
        assert (handle.path, handle.created, handle.closed) == (path, True, False)
        contents, stat = handle.get_contents_and_stat()
        assert contents == b"v1"
        after = handle.set_contents(b"v2", stat.content_generation)
        assert after.content_generation > stat.content_generation
        assert handle.stat == after
        with pytest.raises(GenerationMismatch):
            handle.set_contents(b"stale", stat.content_generation)
        assert client.get_contents_and_stat(path).contents == b"v2"
        assert handle.get_stat().content_generation == after.content_generation
    assert handle.closed
    with pytest.raises(InvalidHandle):
        handle.get_stat()

    directory = client.open(cell.path("dir"), create=True, directory=True)
    client.create(cell.path("dir/child"), b"x")
    assert [entry.name for entry in directory.read_dir().entries] == ["child"]
    child = client.open(cell.path("dir/child"))
    assert not child.created
    child.delete()
    with pytest.raises(NoSuchNode):
        client.get_stat(cell.path("dir/child"))


def test_a_with_block_holds_the_lock_and_a_second_holder_times_out(cell: LiveCell) -> None:
    """Inside the block the sequencer is valid; another client's lock with timeout=1 raises
    LockTimeout without running its body; after the block the sequencer is invalid."""
    alice, bob = cell.client(), cell.client()
    path = cell.path("lock")
    ran = False
    with alice.lock(path, timeout=5) as held:
        assert (held.path, held.shared, held.is_lost, held.in_jeopardy) == (
            path,
            False,
            False,
            False,
        )
        assert bob.check_sequencer(held.sequencer)
        assert held.check()
        held.handle.set_contents(b"alice", sequencer=held.sequencer)
        started = time.monotonic()
        with pytest.raises(LockTimeout), bob.lock(path, timeout=1):
            ran = True
        assert 0.9 <= time.monotonic() - started < 5
    assert not ran
    assert not held.lost.is_set()
    assert not bob.check_sequencer(held.sequencer)
    with bob.lock(path, timeout=5) as second:  # free again
        assert second.sequencer != held.sequencer
    assert bob.get_contents_and_stat(path).contents == b"alice"


def test_deleting_the_lock_file_loses_the_lock_and_the_block_raises_lock_lost(
    cell: LiveCell,
) -> None:
    """Another client deleting the file while the body runs sets held.lost; a body that
    ends normally then has LockLost raised at the exit."""
    alice, bob = cell.client(), cell.client()
    path = cell.path("doomed")
    with pytest.raises(LockLost), alice.lock(path, timeout=5) as held:  # noqa: PT012 (the body)
        bob.delete(path)
        assert held.lost.wait(5)
        assert held.is_lost
    assert isinstance(held.lost_reason, LockLost)


def test_closing_the_session_loses_the_lock_and_the_bodys_own_error_wins(cell: LiveCell) -> None:
    """Closing the client inside the block sets held.lost at once; the body's own exception,
    not LockLost, leaves the block."""
    client = cell.client()
    lock = client.lock(cell.path("closing"), timeout=5)
    with pytest.raises(KeyError), lock as held:  # noqa: PT012 (the body is the point)
        client.close()
        assert held.lost.is_set()
        raise KeyError("the body's own error")
    assert held.is_lost


def test_events_arrive_through_blocking_streams(cell: LiveCell) -> None:
    """A write by another client reaches the handle's stream (next with a timeout, which
    times out when nothing comes); iterating ends when the handle is closed; the cell's
    states() reports the session connecting."""
    watcher, writer = cell.client(), cell.client()
    path = cell.path("watched")
    states = watcher.states()
    handle = watcher.open(path, create=True, events=EventMask.CONTENTS_MODIFIED)
    assert states.next(timeout=5) is SessionState.CONNECTED
    assert watcher.state is SessionState.CONNECTED
    events = handle.events()
    with pytest.raises(TimeoutError):
        events.next(timeout=0.3)
    writer.set_contents(path, b"news")
    event = next_where(events, lambda e: e.kind is EventKind.CONTENTS_MODIFIED, 5)
    assert event.handle_id == handle.handle_id

    writer.set_contents(path, b"more news")
    threading.Timer(1.0, handle.close).start()
    kinds = [event.kind for event in events]  # ends when the handle is closed
    assert EventKind.CONTENTS_MODIFIED in kinds
    with pytest.raises(StopIteration):
        events.next(timeout=0.1)
    states.close()
    assert list(states) == []


def test_an_election_hands_over_when_the_leader_resigns(cell: LiveCell) -> None:
    """Alice wins and both see her as leader; when she resigns, Bob's blocked campaign
    wins, changes() reports both sides, and only Bob's sequencer is valid."""
    a, b = cell.client(), cell.client()
    path = cell.path("leader")
    alice = BlockingElection(a, path, "alice")
    bob = b.election(path, "bob")
    first = alice.campaign(timeout=5)
    assert alice.is_leader
    assert alice.sequencer == first
    assert not bob.is_leader
    assert (alice.leader(), bob.leader()) == ("alice", "alice")
    alice_changes, bob_changes = alice.changes(), bob.changes()
    won: list[bytes] = []
    campaigning = threading.Thread(target=lambda: won.append(bob.campaign(timeout=10)))
    campaigning.start()
    time.sleep(0.3)  # Bob waits for the lock
    assert won == []
    alice.resign()
    campaigning.join(10)
    assert won, "Bob's campaign did not win"
    deposed = alice_changes.next(timeout=5)
    assert (deposed.elected, deposed.reason) == (False, None)
    elected = bob_changes.next(timeout=5)
    assert (elected.elected, elected.sequencer) == (True, won[0])
    assert (alice.is_leader, bob.is_leader, bob.sequencer) == (False, True, won[0])
    assert (alice.leader(), bob.leader()) == ("bob", "bob")
    assert not a.check_sequencer(first)
    assert a.check_sequencer(won[0])
    bob.proclaim("bob at 10.0.0.2")
    assert alice.leader() == "bob at 10.0.0.2"


def test_an_interrupted_campaign_does_not_go_on(cell: LiveCell) -> None:
    """A KeyboardInterrupt in a thread blocked in campaign() stops the campaign: when the
    leader resigns, the interrupted candidate does not take the lead."""
    a, b = cell.client(), cell.client()
    path = cell.path("leader")
    alice, bob = a.election(path, "alice"), b.election(path, "bob")
    alice.campaign(timeout=5)
    outcome: list[str] = []

    def campaign() -> None:
        try:
            bob.campaign()
        except KeyboardInterrupt:
            outcome.append("interrupted")

    thread = threading.Thread(target=campaign)
    thread.start()
    time.sleep(0.5)  # Bob is blocked: Alice leads
    interrupt(thread)
    thread.join(5)
    assert outcome == ["interrupted"]
    alice.resign()
    alice.campaign(timeout=5)  # had Bob's campaign gone on, he would hold the lock now
    assert not bob.is_leader
    assert alice.leader() == "alice"


def test_an_interrupted_lock_wait_leaves_no_waiter(cell: LiveCell) -> None:
    """A KeyboardInterrupt in a thread blocked acquiring a lock stops its wait, so the lock
    passes over it when released."""
    alice, bob, carol = cell.client(), cell.client(), cell.client()
    path = cell.path("contended")
    outcome: list[str] = []

    def wait_for_lock() -> None:
        try:
            with bob.lock(path):
                outcome.append("ran")
        except KeyboardInterrupt:
            outcome.append("interrupted")

    with alice.lock(path, timeout=5):
        thread = threading.Thread(target=wait_for_lock)
        thread.start()
        time.sleep(0.5)  # Bob waits for the lock
        interrupt(thread)
        thread.join(5)
    assert outcome == ["interrupted"]
    with carol.lock(path, timeout=5) as held:
        assert held.check()


def test_an_interrupted_handle_acquire_poisons_the_handle(cell: LiveCell) -> None:
    """A KeyboardInterrupt in a thread blocked in a handle's acquire() poisons the handle,
    which stops its wait at the master too, so the lock passes over it."""
    alice, bob, carol = cell.client(), cell.client(), cell.client()
    path = cell.path("contended")
    held = alice.open(path, create=True)
    held.acquire(timeout=5)
    waiting = bob.open(path)
    outcome: list[str] = []

    def acquire() -> None:
        try:
            waiting.acquire()
            outcome.append("acquired")
        except KeyboardInterrupt:
            outcome.append("interrupted")

    thread = threading.Thread(target=acquire)
    thread.start()
    time.sleep(0.5)  # Bob waits for the lock
    interrupt(thread)
    thread.join(5)
    assert outcome == ["interrupted"]
    with pytest.raises(InvalidHandle):
        waiting.get_stat()
    held.release()
    with carol.lock(path, timeout=5) as second:
        assert second.check()


def test_calls_on_the_reactor_thread_raise_runtime_error(cell: LiveCell) -> None:
    """A blocking call made on the reactor thread (say, from a callback) is refused."""
    client = cell.client()
    handle = client.open(cell.path("file"), create=True)
    for call in (lambda: client.get_stat(cell.path("file")), handle.get_stat, handle.events):
        with pytest.raises(RuntimeError, match="reactor thread"):
            blockingCallFromThread(client.reactor, call)


def test_a_stream_read_too_slowly_overflows() -> None:
    """Past its limit of unread items a stream stops following: the items waiting are read,
    then StreamOverflow is raised, and again on later reads."""
    reactor = running_reactor()
    source: EventStream[int] = EventStream()
    stream: BlockingStream[int] = blockingCallFromThread(
        reactor, lambda: BlockingStream(source, reactor, limit=2)
    )

    def push() -> None:
        for number in range(5):
            source.push(number)

    blockingCallFromThread(reactor, push)
    assert [stream.next(timeout=1), stream.next(timeout=1)] == [0, 1]
    for _ in range(2):
        with pytest.raises(StreamOverflow):
            stream.next(timeout=1)
    assert source.ended


def test_one_lock_object_has_one_holder_at_a_time(cell: LiveCell) -> None:
    """A Lock already held refuses a second acquire (which would share, then release, its
    holding); released, the same object acquires again."""
    client = cell.client()
    lock = client.lock(cell.path("single"), shared=True)
    held = lock.acquire()
    with pytest.raises(RuntimeError, match="held or being acquired already"):
        lock.acquire()
    held.release()
    again = lock.acquire()
    assert client.check_sequencer(again.sequencer)
    again.release()
