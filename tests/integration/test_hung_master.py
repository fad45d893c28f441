"""The client under a hung master, on real processes (issue 15, item 5): the master replica
frozen with SIGSTOP (as a machine that stopped without closing its connections), or every
replica frozen (the client cut off from its cell). A blocked acquire goes to the new master
and no lock is ever held twice; a session rides out the hang with a short jeopardy; a
release that failed meanwhile is applied once the cell answers again.

One cell serves the module, with short session leases (3 s) so that a test waits a few
seconds, not a minute; each test thaws what it froze and waits for the cell to settle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from chubbypy.client import SessionState
from chubbypy.client.blocking import BlockingCell
from tests.integration.harness import LiveCell, Measure

SESSIONS = {"lease_seconds": 3.0, "keepalive_answer_before_seconds": 1.0}
"""A KeepAlive answered about every 2 s; a local lease of about 2.9 s."""
LEASE_SECONDS = 3.0
SETTLE_SECONDS = 30.0
"""A thawed replica back, every replica ready and naming one master."""


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCell]:
    """One three-replica cell with short session leases, for the module."""
    live = LiveCell(tmp_path_factory.mktemp("hung"), sessions=SESSIONS)
    try:
        live.start()
        yield live
    finally:
        live.close()


@pytest.fixture
def clients(cell: LiveCell) -> Iterator[list[BlockingCell]]:
    """Clients to close at the end of the test (their sessions then hold up no fail-over
    of a later test)."""
    made: list[BlockingCell] = []
    yield made
    for client in made:
        client.close()


def in_thread(function: Any, *args: Any, **kw: Any) -> Future[Any]:
    """`function(*args, **kw)` run in a thread of its own; its outcome."""
    outcome: Future[Any] = Future()

    def run() -> None:
        try:
            outcome.set_result(function(*args, **kw))
        except BaseException as error:
            outcome.set_exception(error)

    threading.Thread(target=run, name="hung-master-test", daemon=True).start()
    return outcome


def just_answered(client: BlockingCell) -> None:
    """Wait until the client's KeepAlive was just answered (its local lease nearly whole),
    so that what follows starts a whole lease before its jeopardy."""
    session = client.session()
    deadline = time.monotonic() + 2 * LEASE_SECONDS
    last = session.lease_remaining
    while time.monotonic() < deadline:
        now = session.lease_remaining
        if now > last + 0.5:  # the lease was extended just now
            return
        last = now
        time.sleep(0.005)
    raise AssertionError("no KeepAlive answered within two leases")


def freeze_the_master(cell: LiveCell) -> tuple[str, str]:
    """SIGSTOP the master; (the frozen one, the new master) once another serves."""
    old = cell.wait_master()
    cell.pause_replica(old)
    new = cell.wait_for(
        lambda: next((r for r in cell.serving([r for r in cell.running if r != old])), None),
        "another replica serves",
        15,
    )
    return old, new


def thaw(cell: LiveCell, *replicas: str) -> None:
    """SIGCONT the replicas and wait until the cell settles."""
    for rid in replicas:
        cell.resume_replica(rid)
    cell.wait_ready(SETTLE_SECONDS)


def test_a_blocked_acquire_goes_to_the_new_master_and_no_lock_is_held_twice(
    cell: LiveCell, clients: list[BlockingCell], measure: Measure
) -> None:
    """A waiter's acquire sits at the master, which then hangs: once the cell has a new
    master, the waiter's client finds it (at its session's jeopardy) and sends the acquire
    there, which grants it when the holder lets go, while the old master is still frozen.
    Exactly one session holds the lock throughout, the holder's sequencer is invalid once
    the waiter's is valid, and after the old master thaws it still holds nothing."""
    holder, waiter, observer = cell.client(), cell.client(), cell.client()
    clients.extend([holder, waiter, observer])
    path = cell.path("hung-acquire")
    holding = holder.open(path, create=True)
    old_sequencer = holding.acquire(timeout=10)
    waiting = waiter.open(path)
    acquiring = in_thread(waiting.acquire, timeout=60)
    cell.wait_for(lambda: observer.lock_info(path).waiter_count == 1, "the waiter waits", 10)
    frozen_at = time.monotonic()
    old, _ = freeze_the_master(cell)
    try:
        holding.close()  # at the new master, once the holder's client found it
        sequencer = acquiring.result(timeout=20)
        granted = time.monotonic() - frozen_at
        info = observer.lock_info(path)
        assert info.holder_count == 1, info
        assert info.holders[0].session_id == waiter.session().session_id
        assert observer.check_sequencer(sequencer)
        assert not observer.check_sequencer(old_sequencer)
    finally:
        thaw(cell, old)
    measure("blocked acquire granted by the new master (from the SIGSTOP)", granted)
    after = observer.lock_info(path)
    assert (after.holder_count, after.holders[0].session_id) == (1, waiter.session().session_id)
    assert waiting.get_sequencer() == sequencer
    waiting.close()


def test_a_session_rides_out_a_hung_master_with_a_short_jeopardy(
    cell: LiveCell, clients: list[BlockingCell], measure: Measure
) -> None:
    """The master hangs right after answering the client's KeepAlive: at the local lease
    end the KeepAlive gives up on it and finds the new master at once, so the session is
    safe again well within the second a KeepAlive used to wait past the lease; the session
    and its lock (with a lock-delay longer than the jeopardy) survive at the new master."""
    client = cell.client()
    clients.append(client)
    held = client.lock(cell.path("hung-keepalive"), lock_delay_seconds=10).acquire()
    session_id = client.session().session_id
    states: list[tuple[SessionState, float]] = []
    client.on_state.append(lambda state: states.append((state, time.monotonic())))
    just_answered(client)
    old, _ = freeze_the_master(cell)
    try:
        cell.wait_for(
            lambda: SessionState.SAFE in [state for state, _ in states], "the session safe", 15
        )
        assert [state for state, _ in states] == [SessionState.JEOPARDY, SessionState.SAFE,
                                                   SessionState.CONNECTED]  # fmt: skip
        jeopardy = states[1][1] - states[0][1]
        assert not held.is_lost
        assert held.check(), "the new master counts the lock as held"
        assert client.session().session_id == session_id
    finally:
        thaw(cell, old)
    measure("jeopardy under a hung master (jeopardy to safe)", jeopardy)
    assert jeopardy < 0.75, f"{jeopardy:.2f} s in jeopardy: the KeepAlive waited on the hung master"
    held.release()


def test_a_release_that_failed_in_a_partition_is_applied_once_the_cell_answers(
    cell: LiveCell, clients: list[BlockingCell], measure: Measure
) -> None:
    """Every replica frozen (the client cut off): a release fails Unavailable after the
    client's 1.5 s call timeout. Once the replicas thaw, the session, still the same and
    still live, sends the release again after its next KeepAlive answer, and the lock is
    free for another client (without the session ending); the lock is held by one
    session at a time throughout."""
    client = cell.client(timeout_seconds=1.5, request_timeout_seconds=0.5)
    other = cell.client()
    clients.extend([client, other])
    path = cell.path("partitioned-release")
    held = client.lock(path, lock_delay_seconds=30).acquire()
    session_id = client.session().session_id
    just_answered(client)
    replicas = list(cell.running)
    for rid in replicas:
        cell.pause_replica(rid)
    try:
        started = time.monotonic()
        held.release()  # never fails: logs, and the session retries
        assert time.monotonic() - started < 3.0
        assert client.session()._core.retries == 1, "the close is kept for the background"
    finally:
        thawed_at = time.monotonic()
        thaw(cell, *replicas)
    cell.wait_for(
        lambda: other.lock_info(path).holder_count == 0, "the retried release applied", 15
    )
    measure("release retried after a partition (thaw to lock free)", time.monotonic() - thawed_at)
    assert client.session().session_id == session_id, "the session did not end"
    assert client.state is SessionState.CONNECTED
    taken = other.open(path)
    assert other.check_sequencer(taken.try_acquire())
    taken.close()
