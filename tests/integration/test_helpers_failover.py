"""The lock and election helpers against a live cell when things fail: a held lock and a
leadership survive a kill -9 of the master; a leader frozen past its lease is deposed (its
callback fires) while a standby takes over within the lease plus the lock-delay."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chubbypy.client import EventKind, EventMask, LockTimeout
from tests.integration.harness import LiveCell

SHORT_SESSIONS = {"lease_seconds": 2.0, "keepalive_answer_before_seconds": 0.5}
"""Session leases short enough for tests that wait for one to run out."""
CANDIDATE = Path(__file__).with_name("candidate.py")


def kill_the_master(cell: LiveCell) -> None:
    """kill -9 the master and wait until another replica serves."""
    master = cell.wait_master()
    cell.kill_replica(master)
    cell.wait_for(lambda: (cell.master() not in (None, master)) or None, "a new master", 30)


def test_a_held_lock_survives_a_kill_9_of_the_master(cell: LiveCell) -> None:
    """The body goes on under the lock across the fail-over: not lost, sequencer still
    valid at the new master, and the block exits without LockLost."""
    client = cell.client()
    with client.lock(cell.path("survives")) as held:
        kill_the_master(cell)
        assert client.check_sequencer(held.sequencer)
        assert held.check()
        assert not held.lost.is_set()
        held.handle.set_contents(b"after the fail-over", sequencer=held.sequencer)
    assert not held.is_lost


def test_a_leadership_survives_a_kill_9_of_the_master(cell: LiveCell) -> None:
    """The leader stays leader (no deposed callback), its sequencer valid; the file still
    names it; a standby keeps waiting."""
    alpha, beta = cell.client(), cell.client()
    leader = alpha.election(cell.path("leader"), "alpha")
    deposed: list[object] = []
    leader.on_deposed.append(deposed.append)
    sequencer = leader.campaign(timeout=15)
    kill_the_master(cell)
    standby = beta.election(cell.path("leader"), "beta")
    with pytest.raises(LockTimeout):
        standby.campaign(timeout=1)
    assert leader.is_leader
    assert not deposed
    assert alpha.check_sequencer(sequencer)
    assert beta.election(cell.path("leader"), "observer").leader() == "alpha"
    leader.proclaim("alpha, after the fail-over")
    assert standby.leader() == "alpha, after the fail-over"


def test_a_frozen_leader_is_deposed_and_a_standby_takes_over_in_time(
    make_cell: Callable[..., LiveCell],
) -> None:
    """SIGSTOP the leader's process: the standby leads within lease + lock-delay (plus
    slack); on SIGCONT the old leader's deposed callback fires."""
    cell = make_cell(sessions=SHORT_SESSIONS)
    path, delay = cell.path("svc"), 1.0
    alpha = subprocess.Popen(
        [sys.executable, str(CANDIDATE), str(cell.config_path), path, "alpha", str(delay)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert alpha.stdout is not None
    try:
        line = alpha.stdout.readline()
        assert line.startswith("elected "), line
        standby = cell.client().election(path, "beta")
        elected_at: list[float] = []
        standby.on_elected.append(lambda _: elected_at.append(time.monotonic()))
        alpha.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        standby.campaign(timeout=30)
        took = time.monotonic() - frozen
        assert took < 2.0 + delay + 5.0, took
        assert took >= delay, took  # not before the old leader's lock-delay
        assert standby.leader() == "beta"
        alpha.send_signal(signal.SIGCONT)
        line = alpha.stdout.readline()
        assert line.startswith("deposed "), line
        assert alpha.wait(15) == 0
    finally:
        alpha.send_signal(signal.SIGCONT)
        alpha.kill()
        alpha.wait(10)


def test_a_deposed_candidate_campaigns_again_when_asked(
    make_cell: Callable[..., LiveCell],
) -> None:
    """recampaign: a leader deposed by a lost session campaigns again in a new session,
    and leads again once the standby that replaced it resigns."""
    cell = make_cell(sessions=SHORT_SESSIONS)
    path = cell.path("again")
    alpha = subprocess.Popen(
        [sys.executable, str(CANDIDATE), str(cell.config_path), path, "alpha", "0",
         "recampaign"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert alpha.stdout is not None
    try:
        first = alpha.stdout.readline()
        assert first.startswith("elected "), first
        standby = cell.client().election(path, "beta")
        alpha.send_signal(signal.SIGSTOP)
        standby.campaign(timeout=30)
        alpha.send_signal(signal.SIGCONT)
        assert alpha.stdout.readline().startswith("deposed "), "its callback fired"
        standby.resign()
        again = alpha.stdout.readline()
        assert again.startswith("elected "), again
        assert again != first, "a new leadership, with a new sequencer"
        assert standby.leader() == "alpha"
    finally:
        alpha.send_signal(signal.SIGCONT)
        alpha.kill()
        alpha.wait(10)


def test_a_watch_hears_of_changes_after_a_kill_9_of_the_master(cell: LiveCell) -> None:
    """A handle that only waits for events is told of the fail-over, then keeps hearing of
    changes from the new master (the library presents its handles to it)."""
    watcher, writer = cell.client(), cell.client()
    path = cell.path("watched")
    writer.create(path, b"v1")
    handle = watcher.open(path, events=EventMask.CONTENTS_MODIFIED)
    events = handle.events()
    kill_the_master(cell)
    assert events.next(timeout=30).kind is EventKind.MASTER_FAILOVER
    # A write racing the handle's presentation to the new master may go unheard (the
    # fail-over event said so); later writes must be heard.
    for attempt in range(20):
        writer.set_contents(path, f"v{attempt}".encode())
        try:
            event = events.next(timeout=0.5)
            break
        except TimeoutError:
            continue
    else:
        raise AssertionError("no event from the new master after 20 writes")
    assert (event.kind, event.path) == (EventKind.CONTENTS_MODIFIED, path)


def test_a_lock_in_jeopardy_past_its_lock_delay_counts_as_lost(
    make_cell: Callable[..., LiveCell],
) -> None:
    """Every replica frozen past the lease: a lock with no lock-delay is reported lost as
    soon as its session is in jeopardy (the master may hand it out at once), while one
    with a longer lock-delay is kept and is still held once the session is safe again."""
    cell = make_cell(sessions={"lease_seconds": 3, "keepalive_answer_before_seconds": 1})
    client = cell.client()
    bare = client.lock(cell.path("bare")).acquire()
    delayed = client.lock(cell.path("delayed"), lock_delay_seconds=30).acquire()
    replicas = list(cell.running)
    for rid in replicas:
        cell.pause_replica(rid)
    try:
        assert bare.lost.wait(10), "lost once in jeopardy"
        assert "jeopardy" in str(bare.lost_reason)
        assert not delayed.lost.is_set()
        assert delayed.in_jeopardy
    finally:
        for rid in replicas:
            cell.resume_replica(rid)
    cell.wait_for(lambda: (not delayed.in_jeopardy) or None, "the session to be safe", 30)
    assert not delayed.lost.is_set()
    assert delayed.check()
    delayed.release()
