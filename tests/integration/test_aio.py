"""The asyncio client (`chubbypy.client.aio`) against a live three-replica cell.

Each test runs its coroutine with ``asyncio.run``: the client builds its Twisted reactor on
that loop, so everything runs on the test's thread. One test, of a race no cell can be made
to lose on demand, drives a stand-in lock instead; another runs a program of its own under
Twisted's installed asyncio reactor.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed

from chubbypy.client import (
    CellClosed,
    EventKind,
    EventMask,
    LockLost,
    LockTimeout,
    SessionState,
    aio,
)
from chubbypy.protocol.errors import GenerationMismatch, InvalidHandle, NoSuchNode
from chubbypy.protocol.session import SessionEvent
from tests.integration.harness import LiveCell, child_environment

WAIT_SECONDS = 10.0
"""The most a test waits for something the cell should do at once (an event, a grant)."""


def connect(cell: LiveCell, **options: Any) -> aio.AsyncCell:
    """An asyncio client of `cell`, from its cell file; call it in a coroutine."""
    return aio.connect(str(cell.config_path), timeout_seconds=15.0, **options)


async def first_item(stream: aio.AsyncStream[Any]) -> Any:
    """The next item of `stream`, read with ``async for``; fails if the stream ends."""
    async for item in stream:
        return item
    raise AssertionError("the stream ended")


def test_plain_calls_are_coroutines(cell: LiveCell) -> None:
    """Awaited plain calls read, write, CAS, list, delete and ask status; closed, they refuse."""

    async def run() -> None:
        directory, file = cell.path("dir"), cell.path("dir/a")
        async with connect(cell) as client:
            assert client.cell == cell.name
            await client.create(directory, directory=True)
            stat = await client.create(file, b"one")
            assert (await client.get_contents_and_stat(file)).contents == b"one"
            await client.set_contents(file, b"two", stat.content_generation)
            with pytest.raises(GenerationMismatch):
                await client.set_contents(file, b"three", stat.content_generation)
            assert (await client.get_stat(file)).size == 3
            assert [entry.name for entry in await client.list_dir(directory)] == ["a"]
            assert [entry.name for entry in (await client.read_dir(directory)).entries] == ["a"]
            await client.delete(file)
            with pytest.raises(NoSuchNode):
                await client.get_stat(file)
            assert (await client.locate_master()).master is not None
            reports = await client.status()
            assert len(reports) == 3
            assert all(report.reachable for report in reports)
        with pytest.raises(CellClosed):
            await client.get_stat(directory)

    asyncio.run(run())


def test_connect_takes_addresses_and_checks_its_arguments(cell: LiveCell) -> None:
    """connect takes host:port lists (host names too) and refuses bad arguments."""
    with pytest.raises(RuntimeError):
        aio.connect(str(cell.config_path))
    first, second = (cell.ports[rid].client for rid in ("r1", "r2"))

    async def run() -> None:
        with pytest.raises(ValueError, match="name the cell"):
            aio.connect(f"127.0.0.1:{first}")
        async with aio.connect(f"localhost:{first},127.0.0.1:{second}", cell=cell.name) as client:
            await client.create(cell.path("by-name"), b"hello")
            assert (await client.get_contents_and_stat(cell.path("by-name"))).contents == b"hello"

    asyncio.run(run())


def test_handle_calls_with_compare_and_swap(cell: LiveCell) -> None:
    """Handle calls read and write; a stale expected generation fails GenerationMismatch."""

    async def run() -> None:
        async with connect(cell) as client:
            handle = await client.open(cell.path("cas"), create=True, contents=b"v1")
            assert handle.created
            assert handle.path == cell.path("cas")
            assert not handle.closed
            contents, stat = await handle.get_contents_and_stat()
            assert contents == b"v1"
            swapped = await handle.set_contents(b"v2", stat.content_generation)
            assert swapped.content_generation > stat.content_generation
            assert handle.stat == swapped
            with pytest.raises(GenerationMismatch):
                await handle.set_contents(b"v3", stat.content_generation)
            assert (await handle.get_contents_and_stat())[0] == b"v2"
            assert (await handle.get_stat()).content_generation == swapped.content_generation
            await handle.close()
            assert handle.closed
            with pytest.raises(InvalidHandle):
                await handle.get_stat()
            reopened = await client.open(cell.path("cas"))
            assert not reopened.created
            await reopened.delete()
            with pytest.raises(NoSuchNode):
                await client.get_stat(cell.path("cas"))

    asyncio.run(run())


def test_lock_context_manager_holds_fences_and_times_out(cell: LiveCell) -> None:
    """A held lock's sequencer is valid; a rival's timeout=1 lock raises LockTimeout, bodiless."""

    async def run() -> None:
        path = cell.path("lock")
        async with connect(cell) as alice, connect(cell) as bob:
            async with alice.lock(path, timeout=WAIT_SECONDS) as held:
                assert held.path == path
                assert not held.shared
                assert await bob.check_sequencer(held.sequencer)
                assert await held.check()
                assert not held.is_lost
                assert not held.lost.done()
                assert not held.in_jeopardy
                body_ran = False
                with pytest.raises(LockTimeout):
                    async with bob.lock(path, timeout=1):
                        body_ran = True
                assert not body_ran
                first = held.sequencer
            assert not await bob.check_sequencer(first)
            async with bob.lock(path, timeout=WAIT_SECONDS) as taken:
                assert taken.sequencer != first

    asyncio.run(run())


def test_cancelling_a_waiting_acquire_gives_the_lock_up(cell: LiveCell) -> None:
    """Cancelling a task blocked in acquire() withdraws it: a third client gets the lock next."""

    async def run() -> None:
        path = cell.path("queue")
        async with connect(cell) as alice, connect(cell) as bob, connect(cell) as carol:
            held = await alice.lock(path).acquire()
            waiting = asyncio.create_task(bob.lock(path).acquire())
            await asyncio.sleep(0.3)
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await asyncio.sleep(0.2)  # bob's handle closes at the master
            await held.release()
            async with carol.lock(path, timeout=WAIT_SECONDS) as taken:
                assert await alice.check_sequencer(taken.sequencer)

    asyncio.run(run())


class GrantedLock:
    """A stand-in for the core's `Lock` whose acquisition the test grants by hand."""

    def __init__(self) -> None:
        self.granting: Deferred[Any] = Deferred()
        self.released = False

    def acquire(self) -> Deferred[Any]:
        """The acquisition, granted when the test fires `granting`."""
        return self.granting

    def release(self) -> Deferred[None]:
        """Records the release (the stand-in is its own `Held`)."""
        self.released = True
        return succeed(None)


def test_a_grant_that_races_a_cancellation_is_released() -> None:
    """A grant that lands as its acquiring task is cancelled is released at once."""

    async def run() -> None:
        core = GrantedLock()
        lock = aio.AsyncLock(core, asyncio.get_running_loop())  # type: ignore[arg-type]
        acquiring = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0)  # the task now waits for the grant
        core.granting.callback(core)
        acquiring.cancel()  # before the task could take the grant
        with pytest.raises(asyncio.CancelledError):
            await acquiring
        assert core.released

    asyncio.run(run())


def test_a_lost_lock_resolves_lost_and_raises_on_exit(cell: LiveCell) -> None:
    """Deleting a held lock's file resolves held.lost, calls on_lost, and the exit raises it."""

    async def run() -> None:
        path = cell.path("doomed")
        async with connect(cell) as holder, connect(cell) as other:
            told: list[LockLost] = []
            resolved: list[LockLost] = []

            async def hold_until_lost() -> None:
                async with holder.lock(path, timeout=WAIT_SECONDS) as held:
                    held.on_lost.append(told.append)
                    await other.delete(path)
                    reason = await asyncio.wait_for(asyncio.shield(held.lost), WAIT_SECONDS)
                    resolved.append(reason)
                    assert held.is_lost
                    assert held.lost_reason is reason

            with pytest.raises(LockLost) as raised:
                await hold_until_lost()
            assert resolved == [raised.value]
            assert told == [raised.value]

    asyncio.run(run())


def test_events_by_async_for(cell: LiveCell) -> None:
    """async for yields a handle's events and ends at close; states() follows the session."""

    async def run() -> None:
        path = cell.path("watched")
        async with connect(cell) as writer:
            watcher = connect(cell)
            states = watcher.states()
            seen: list[SessionState] = []
            watcher.on_state.append(seen.append)
            handle = await watcher.open(path, create=True, events=EventMask.CONTENTS_MODIFIED)
            assert await asyncio.wait_for(states.next(), WAIT_SECONDS) is SessionState.CONNECTED
            events = handle.events()
            await writer.set_contents(path, b"changed")
            event: SessionEvent = await asyncio.wait_for(first_item(events), WAIT_SECONDS)
            assert event.kind is EventKind.CONTENTS_MODIFIED
            assert event.handle_id == handle.handle_id
            await handle.close()
            assert [item async for item in events] == []
            await watcher.close()
            assert [item async for item in states] == [SessionState.CLOSED]
            assert seen == [SessionState.CONNECTED, SessionState.CLOSED]
            assert watcher.state is SessionState.CLOSED

    asyncio.run(run())


def test_election_hands_over_on_resign(cell: LiveCell) -> None:
    """Two candidates: the first leads, resigns, and the second is elected (changes() says)."""

    async def run() -> None:
        path = cell.path("leader")
        async with connect(cell) as one, connect(cell) as two:
            alice, bob = one.election(path, "alice"), two.election(path, "bob")
            assert await bob.leader() is None
            first = await alice.campaign(timeout=WAIT_SECONDS)
            assert alice.is_leader
            assert alice.sequencer == first
            held = alice.held
            assert held is not None
            assert held.sequencer == first
            assert await bob.leader() == "alice"
            observed = bob.observe()
            assert await asyncio.wait_for(observed.next(), WAIT_SECONDS) == "alice"
            changes = bob.changes()
            campaigning = asyncio.create_task(bob.campaign())
            await asyncio.sleep(0.3)
            assert not campaigning.done()
            assert not bob.is_leader
            await alice.resign()
            second = await asyncio.wait_for(campaigning, WAIT_SECONDS)
            change = await asyncio.wait_for(changes.next(), WAIT_SECONDS)
            assert change.elected
            assert change.sequencer == second
            assert bob.is_leader
            assert not alice.is_leader
            assert alice.held is None
            assert await alice.leader() == "bob"
            assert not await one.check_sequencer(first)
            await bob.proclaim("bob at 10.0.0.2")
            assert await alice.leader() == "bob at 10.0.0.2"
            changes.close()
            observed.close()

    asyncio.run(run())


def test_a_cancelled_campaign_is_withdrawn(cell: LiveCell) -> None:
    """A campaign abandoned by asyncio.wait_for does not win when the leader resigns."""

    async def run() -> None:
        path = cell.path("contested")
        async with connect(cell) as one, connect(cell) as two:
            alice, bob = one.election(path, "alice"), two.election(path, "bob")
            await alice.campaign(timeout=WAIT_SECONDS)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(bob.campaign(), 0.5)
            await asyncio.sleep(0.2)  # the withdrawal reaches the master
            await alice.resign()
            await asyncio.sleep(0.5)
            assert not bob.is_leader
            assert await bob.leader() is None

    asyncio.run(run())


SHARED_REACTOR_PROGRAM = """
import asyncio, sys
from twisted.internet import asyncioreactor

loop = asyncio.new_event_loop()
asyncioreactor.install(loop)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from chubbypy.client import aio

async def main(config, path):
    async with aio.connect(config, timeout_seconds=15) as cell:
        assert cell.twisted._clock is reactor, "a second reactor was made"
        await cell.create(path, b"shared")
        print((await cell.get_contents_and_stat(path)).contents.decode())

def started():
    running = Deferred.fromFuture(loop.create_task(main(*sys.argv[1:])))
    running.addErrback(lambda failure: (failure.printTraceback(), sys.exit(1)))
    running.addBoth(lambda _: reactor.stop())

reactor.callWhenRunning(started)
reactor.run()
"""


def test_a_program_running_twisteds_asyncio_reactor_shares_it(cell: LiveCell) -> None:
    """Under a running Twisted asyncio reactor, connect shares that reactor."""
    done = subprocess.run(
        [sys.executable, "-c", SHARED_REACTOR_PROGRAM, str(cell.config_path), cell.path("s")],
        capture_output=True,
        env=child_environment(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode().strip() == "shared", done.stderr.decode(errors="replace")
