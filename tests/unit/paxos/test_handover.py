"""Graceful hand-over (Resign) and rebuilding a replica whose disk was lost (non-voting mode)."""

from __future__ import annotations

from chubbypy.paxos import Rebuilt, Role, StepDownReason, SteppedDown
from chubbypy.protocol import (
    Accept,
    Accepted,
    Ballot,
    Heartbeat,
    HeartbeatAck,
    LogIndex,
    Prepare,
    Promise,
    Resign,
    Value,
    ValueKind,
)
from chubbypy.store import MemoryStore
from tests.unit.paxos.harness import R1, R2, R3, Cell, between, command, drain, lone, messages

NOOP = Value(0, ValueKind.NOOP)  # type: ignore[arg-type]


def _cell_with_master() -> Cell:
    cell = Cell()
    cell.elect(R1)
    cell.run(2)
    return cell


def test_a_resigning_master_gives_up_its_lease_before_it_speaks() -> None:
    """After resign() the master is a follower with no lease, and only then sends Resign,
    with how far it knew the log chosen."""
    cell = _cell_with_master()
    master = cell.replicas[R1]
    ballot, chosen = master.status().ballot, master.status().chosen_index
    assert master.resign()
    assert master.status().role is Role.FOLLOWER
    assert not master.lease_valid()
    readys = drain(master)
    resigns = messages(readys, Resign)
    assert len(resigns) == 2
    successor = resigns[0].successor  # type: ignore[union-attr]
    assert all(m == Resign(ballot, successor, chosen) for m in resigns)
    reasons = [e.reason for r in readys for e in r.events if isinstance(e, SteppedDown)]
    assert reasons == [StepDownReason.RESIGNED]


def test_a_follower_cannot_resign() -> None:
    """resign() on a replica that is not master does nothing and says so."""
    cell = _cell_with_master()
    assert not cell.replicas[R2].resign()


def test_the_successor_takes_over_without_waiting_out_a_lease() -> None:
    """The named successor campaigns at once and serves within a few ticks, not a lease."""
    cell = _cell_with_master()
    cell.replicas[R1].resign()
    cell.drain(R1)
    for _ in range(3):
        cell.settle()
        cell.run(1)
        if any(cell.replicas[r].serving for r in (R2, R3)):
            break
    serving = [r for r in (R2, R3) if cell.replicas[r].serving]
    assert len(serving) == 1
    assert cell.replicas[serving[0]].lease_valid()
    assert len(cell.leases()) == 1


def test_the_successor_is_the_live_peer_that_knows_the_most() -> None:
    """The master names the peer that acknowledged recently and has chosen furthest."""
    cell = _cell_with_master()
    cell.propose(R1, command(1, 1))
    # R3 hears nothing more from R1 while R2 keeps up with every instance and heartbeat.
    for _ in range(cell.timing.heartbeat_ticks * 2):
        cell.tick()
        cell.settle(between([R1, R2]))
        cell.take()
    master = cell.replicas[R1]
    master.resign()
    successors = {m.successor for m in messages(drain(master), Resign)}  # type: ignore[union-attr]
    assert successors == {R2}


def test_a_delayed_resign_does_not_cut_a_later_mastership_short() -> None:
    """A Resign from an earlier mastership of the same replica leaves the current lease alone."""
    replica = lone()
    old, new = Ballot(2, R2), Ballot(5, R2)
    replica.step(R2, Heartbeat(new, LogIndex(0), 0))
    drain(replica)
    replica.step(R2, Resign(old, R1))
    drain(replica)
    assert replica.master_hint() == R2
    replica.step(R3, Prepare(Ballot(9, R3), LogIndex(1)))
    (nack,) = messages(drain(replica))
    assert nack.leased  # type: ignore[union-attr]


def test_a_rebuilding_replica_is_silent_and_never_campaigns() -> None:
    """A non-voting replica sends no Promise, Accepted or HeartbeatAck, and never campaigns."""
    cell = Cell()
    cell.crash(R3)
    replica = cell.start(R3, voting=False)
    ballot = Ballot(4, R1)
    replica.step(R1, Prepare(ballot, LogIndex(1)))
    replica.step(R1, Accept(ballot, LogIndex(1), NOOP, LogIndex(0), 0))
    replica.step(R1, Heartbeat(ballot, LogIndex(0), 0, LogIndex(1)))
    replica.tick(10 * cell.timing.lease_ticks)
    readys = drain(replica)
    assert not messages(readys, Promise)
    assert not messages(readys, Accepted)
    assert not messages(readys, HeartbeatAck)
    assert replica.status().role is Role.FOLLOWER
    assert not replica.status().voting


def test_a_wiped_replica_rebuilds_and_votes_again() -> None:
    """A replica restarted on an empty disk learns the log; it votes once a new instance is in."""
    cell = _cell_with_master()
    for n in range(5):
        cell.propose(R1, command(1, n + 10))
        cell.run(1)
    cell.crash(R3)
    cell.stores[R3] = MemoryStore()  # the disk is gone
    replica = cell.start(R3, voting=False)
    cell.run(cell.timing.lease_ticks + 2)
    assert not replica.status().voting  # no instance started after the rebuild yet
    cell.propose(R1, command(1, 99))
    cell.run(2 * cell.timing.heartbeat_ticks)
    status = replica.status()
    assert status.voting
    assert status.chosen_index == cell.replicas[R1].status().chosen_index
    assert any(isinstance(e, Rebuilt) for e in cell.events[R3])


def test_a_rebuilt_replica_counts_towards_a_quorum_again() -> None:
    """Once rebuilt, the replica's acknowledgements let the master commit without the third."""
    cell = _cell_with_master()
    cell.crash(R3)
    cell.stores[R3] = MemoryStore()
    cell.start(R3, voting=False)
    cell.run(cell.timing.heartbeat_ticks + 1)  # R3 hears where the master's log ends
    cell.propose(R1, command(1, 1))
    cell.run(cell.timing.lease_ticks + 4)
    assert cell.replicas[R3].status().voting
    cell.crash(R2)
    before = cell.replicas[R1].status().chosen_index
    cell.propose(R1, command(1, 2))
    cell.run(3)
    assert cell.replicas[R1].status().chosen_index > before
    assert cell.replicas[R1].lease_valid()
