"""Sessions, locks and sequencers against a live three-replica cell, through the Twisted
`Session` client run on the client library's reactor thread."""

from __future__ import annotations

import signal
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
from chubbypy.protocol.errors import InvalidHandle, InvalidSequencer, LockHeld
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
    assert cell.metric(cell.wait_master(), "chubbypy_sessions") == 2
    assert not on_reactor(lambda: alice.check_sequencer(first))
    with pytest.raises(InvalidSequencer):
        on_reactor(lambda: a.set_contents(b"late", sequencer=first))
    a.set_sequencer(first)  # attached: every later write of the handle is fenced
    with pytest.raises(InvalidSequencer):
        on_reactor(lambda: a.set_contents(b"later"))
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


def test_a_holder_goes_through_jeopardy_to_safe_when_the_master_dies_and_no_other_answers(
    make_cell: Callable[..., LiveCell],
) -> None:
    """kill -9 of the master while the others are frozen past the session lease: the holder
    enters jeopardy (its cache flushed, calls waiting), then is safe once a new master
    answers its KeepAlive, and still holds its lock with the same sequencer."""
    cell = make_cell(sessions={"lease_seconds": 3, "keepalive_answer_before_seconds": 1})
    alice = session_of(cell)
    states: list[SessionState] = []
    alice.on_state.append(states.append)
    handle = on_reactor(lambda: alice.open_handle(cell.path("leader"), create=True))
    sequencer = on_reactor(lambda: handle.acquire())
    master = cell.wait_master()
    others = [r for r in cell.running if r != master]
    cell.kill_replica(master)
    for rid in others:
        cell.pause_replica(rid)
    time.sleep(4.0)  # longer than the whole session lease
    for rid in others:
        cell.resume_replica(rid)
    cell.wait_for(lambda: SessionState.SAFE in states or None, "the session to be safe", 30)
    assert states[: states.index(SessionState.SAFE)].count(SessionState.JEOPARDY) == 1
    assert on_reactor(lambda: handle.get_sequencer()) == sequencer
    assert alice.state is SessionState.CONNECTED


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


SHORT_SESSIONS = {"lease_seconds": 2.0, "keepalive_answer_before_seconds": 0.5}
"""Session leases short enough for tests that wait for one to run out."""
LOCK_HOLDER = Path(__file__).with_name("lock_holder.py")


def start_holder(cell: LiveCell, path: str, lock_delay: float) -> subprocess.Popen[str]:
    """A lock holder in a process of its own, once it holds the lock."""
    holder = subprocess.Popen(
        [sys.executable, str(LOCK_HOLDER), str(cell.config_path), path, str(lock_delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert holder.stdout is not None
    line = holder.stdout.readline()
    assert line.startswith("held "), line
    return holder


def test_a_holder_killed_loses_its_lock_only_after_its_lease_and_lock_delay(
    make_cell: Callable[..., LiveCell],
) -> None:
    """kill -9 of a holder: the next client gets the lock once the session has expired
    (at least the rest of its lease) and the lock-delay has passed, not before."""
    cell = make_cell(sessions=SHORT_SESSIONS)
    path = cell.path("lock")
    holder = start_holder(cell, path, lock_delay=1.5)
    bob = session_of(cell)
    handle = on_reactor(lambda: bob.open_handle(path))
    holder.kill()
    killed = time.monotonic()
    holder.wait(10)
    on_reactor(lambda: handle.acquire())
    waited = time.monotonic() - killed
    # At least the half-second of lease the master keeps in hand, then the lock-delay.
    assert waited >= 0.5 + 1.5 - 0.1, waited
    assert waited < 2.0 + 1.5 + 5.0, waited


def test_a_frozen_holder_wakes_to_find_its_session_expired_and_its_lock_gone(
    make_cell: Callable[..., LiveCell],
) -> None:
    """SIGSTOP for longer than the lease: another client takes the lock; on SIGCONT the
    holder's next fenced write fails (its session expired, its sequencer is stale)."""
    cell = make_cell(sessions=SHORT_SESSIONS)
    path = cell.path("lock")
    holder = start_holder(cell, path, lock_delay=0.0)
    try:
        holder.send_signal(signal.SIGSTOP)
        bob = session_of(cell)
        handle = on_reactor(lambda: bob.open_handle(path))
        sequencer = on_reactor(lambda: handle.acquire())
        holder.send_signal(signal.SIGCONT)
        assert holder.stdout is not None
        lines = [holder.stdout.readline().strip() for _ in range(5)]
        gone = [line for line in lines if line.startswith("gone")]
        assert gone, lines
        assert gone[0] in ("gone SessionExpired", "gone InvalidSequencer"), lines
        assert on_reactor(lambda: bob.check_sequencer(sequencer))
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait(10)


def test_a_thousand_waiters_are_served_one_at_a_time_in_order(cell: LiveCell) -> None:
    """1,000 handles blocked on one lock get it one after another, in the order they asked."""
    session = session_of(cell)
    path = cell.path("busy")
    order = on_reactor(lambda: Deferred.fromCoroutine(_queue_of_waiters(session, path, 1000)))
    assert order == list(range(1000))


async def _queue_of_waiters(session: Session, path: str, count: int) -> list[int]:
    first = await session.open_handle(path, create=True)
    await first.acquire()
    handles = [await session.open_handle(path) for _ in range(count)]
    waiting = [h.acquire() for h in handles]
    granted: list[int] = []
    for position, deferred in enumerate(waiting):
        deferred.addCallback(lambda _, p=position: granted.append(p))
    await first.release()
    for position, handle in enumerate(handles):
        await waiting[position]
        assert granted == list(range(position + 1)), "one at a time, in order"
        await handle.release()
    return granted


def test_poison_stops_a_blocked_acquire_from_another_part_of_the_program(cell: LiveCell) -> None:
    """A handle poisoned while its acquire waits: the acquire fails InvalidHandle, and so
    does every later call on it."""
    alice, bob = session_of(cell), session_of(cell)
    path = cell.path("lock")
    a = on_reactor(lambda: alice.open_handle(path, create=True))
    b = on_reactor(lambda: bob.open_handle(path))
    on_reactor(lambda: a.acquire())
    waiting = blockingCallFromThread(running_reactor(), lambda: Deferred.fromCoroutine(_acquire(b)))  # type: ignore[arg-type]
    on_reactor(lambda: b.poison())
    with pytest.raises(InvalidHandle):
        on_reactor(lambda: waiting)
    with pytest.raises(InvalidHandle):
        on_reactor(lambda: b.try_acquire())


def test_a_session_number_without_its_credential_cannot_close_or_use_the_session(
    cell: LiveCell,
) -> None:
    """Calls naming another's session with a wrong credential fail PermissionDenied and
    change nothing: the owner's session, lock and ephemeral file live on."""
    from chubbypy.client._session import _call
    from chubbypy.protocol.errors import PermissionDenied
    from chubbypy.protocol.session import CloseSession, KeepAlive, Open, ReadNode

    owner, other = session_of(cell), session_of(cell)
    lock = cell.path("owned")
    handle = on_reactor(lambda: owner.open_handle(lock, create=True, ephemeral=True))
    on_reactor(lambda: handle.acquire())
    victim, forged = owner.session_id, b"\x00" * 16
    for call in (
        CloseSession(victim, forged),
        KeepAlive(victim, forged, 10**9),
        Open(victim, forged, lock, 3),
        ReadNode(victim, forged, lock),
        CloseSession(victim, other._credential),  # another session's own credential
    ):
        with pytest.raises(PermissionDenied, match="wrong credential"):
            on_reactor(lambda call=call: Deferred.fromCoroutine(_call(other.cell, call)))
    assert on_reactor(lambda: handle.get_sequencer())
    assert owner.state is SessionState.CONNECTED
    assert "owned" in [entry.name for entry in cell.client().list_dir(cell.path())]


def test_cancelling_a_blocked_acquire_withdraws_it_from_the_master(cell: LiveCell) -> None:
    """A cancelled acquire poisons its handle: when the holder lets go, the lock goes to
    the next waiter, not to the cancelled one."""
    holder, quitter, next_one = session_of(cell), session_of(cell), session_of(cell)
    path = cell.path("contested")
    held = on_reactor(lambda: holder.open_handle(path, create=True))
    on_reactor(lambda: held.acquire())
    gave_up = on_reactor(lambda: quitter.open_handle(path))
    waiting: list[Deferred[bytes]] = []

    def start() -> Deferred[None]:
        waiting.append(gave_up.acquire())
        waiting[0].addErrback(lambda _: None)
        return Deferred.fromCoroutine(_pause(0.3))

    on_reactor(start)
    on_reactor(lambda: _cancelled(waiting[0]))
    other = on_reactor(lambda: next_one.open_handle(path))
    on_reactor(lambda: held.release())
    sequencer = on_reactor(lambda: other.acquire(timeout=5))
    assert on_reactor(lambda: next_one.check_sequencer(sequencer))


async def _pause(seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(running_reactor(), seconds, lambda: None)  # type: ignore[arg-type]


def _cancelled(deferred: Deferred[bytes]) -> Deferred[None]:
    deferred.cancel()
    return Deferred.fromCoroutine(_pause(0.3))
