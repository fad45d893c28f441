"""Sessions, locks and sequencers against a live three-replica cell, through the Twisted
`Session` client run on the client library's reactor thread."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread

from chubbypy.client import Session, SessionState
from chubbypy.client.blocking import running_reactor
from chubbypy.protocol.errors import InvalidSequencer, LockHeld
from tests.integration.harness import LiveCell

_T = TypeVar("_T")


def on_reactor(make: Callable[[], Deferred[_T]]) -> _T:
    """Run `make()` on the client library's reactor and wait for its result."""
    result: Any = blockingCallFromThread(running_reactor(), make)  # type: ignore[arg-type]
    return result  # type: ignore[no-any-return]


def session_of(cell: LiveCell) -> Session:
    client = cell.client()
    return on_reactor(lambda: Session.open(client._cell, running_reactor()))  # type: ignore[arg-type]


def test_a_lock_passes_from_holder_to_waiter_and_fences_the_old_holder(cell: LiveCell) -> None:
    """A blocked acquire is granted on release; the first holder's sequencer then fails
    both check_sequencer and a fenced write."""
    alice, bob = session_of(cell), session_of(cell)
    path = cell.path("lock")
    a = on_reactor(lambda: alice.open_handle(path, create=True))
    b = on_reactor(lambda: bob.open_handle(path, create=True))
    first = on_reactor(lambda: a.acquire())
    with pytest.raises(LockHeld):
        on_reactor(lambda: b.try_acquire())
    waiting = blockingCallFromThread(running_reactor(), lambda: Deferred.fromCoroutine(_acquire(b)))  # type: ignore[arg-type]
    on_reactor(lambda: a.set_contents(b"alice", sequencer=first))
    on_reactor(lambda: a.release())
    second: bytes = on_reactor(lambda: waiting)
    assert second != first
    assert on_reactor(lambda: alice.check_sequencer(second))
    assert not on_reactor(lambda: alice.check_sequencer(first))
    with pytest.raises(InvalidSequencer):
        on_reactor(lambda: a.set_contents(b"late", sequencer=first))
    assert cell.client().get_contents_and_stat(path).contents == b"alice"


async def _acquire(handle: Any) -> Deferred[bytes]:
    """A Deferred of the handle's acquire, started now (awaited later by the test)."""
    started: Deferred[bytes] = handle.acquire()
    return started


def test_a_lock_and_its_session_survive_a_kill_9_of_the_master(cell: LiveCell) -> None:
    """The holder's sequencer is still valid after the master dies and another takes over."""
    alice = session_of(cell)
    states: list[SessionState] = []
    alice.on_state.append(states.append)
    handle = on_reactor(lambda: alice.open_handle(cell.path("leader"), create=True))
    sequencer = on_reactor(lambda: handle.acquire())
    master = cell.wait_master()
    cell.kill_replica(master)
    cell.wait_for(
        lambda: next((r for r in cell.serving() if r != master), None), "a new master", 15
    )
    assert on_reactor(lambda: handle.get_sequencer()) == sequencer
    assert on_reactor(lambda: alice.check_sequencer(sequencer))
    assert alice.state is SessionState.CONNECTED
    assert SessionState.EXPIRED not in states


def test_closing_a_session_frees_its_lock_at_once_and_deletes_its_ephemeral_file(
    cell: LiveCell,
) -> None:
    """A clean close: no lock-delay for the next holder, and the ephemeral file is gone."""
    alice, bob = session_of(cell), session_of(cell)
    lock, mine = cell.path("lock"), cell.path("alice-was-here")
    a = on_reactor(lambda: alice.open_handle(lock, create=True, lock_delay_seconds=30))
    on_reactor(lambda: alice.open_handle(mine, create=True, ephemeral=True))
    on_reactor(lambda: a.acquire())
    b = on_reactor(lambda: bob.open_handle(lock))
    on_reactor(lambda: alice.close())
    started = time.monotonic()
    on_reactor(lambda: b.acquire())
    assert time.monotonic() - started < 5
    names = [entry.name for entry in cell.client().list_dir(cell.path())]
    assert "alice-was-here" not in names


def test_the_lock_example_in_the_readme_runs(cell: LiveCell) -> None:
    """examples/lock.py, as the README shows it, runs against a live cell."""
    example = Path(__file__).resolve().parents[2] / "examples" / "lock.py"
    done = subprocess.run(
        [sys.executable, str(example), str(cell.config_path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"sequencer valid: True" in done.stdout
    assert b"released; sequencer valid: False" in done.stdout
