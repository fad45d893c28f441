"""Master leases: when a master may believe in one, when it must stop, that two never overlap."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from chubbypy.paxos import (
    Bug,
    Campaigning,
    LeaseAcquired,
    LeaseLost,
    Ready,
    Role,
    StepDownReason,
    SteppedDown,
    master_lease_ticks_for,
)
from chubbypy.protocol import (
    Accept,
    Accepted,
    Ballot,
    Epoch,
    Heartbeat,
    HeartbeatAck,
    LogIndex,
    Nack,
    Prepare,
    Promise,
    ReplicaId,
)
from tests.unit.paxos.harness import (
    DRIFT,
    R1,
    R2,
    R3,
    R5,
    TIMING,
    Cell,
    DriftingCell,
    both,
    drain,
    from_,
    lone,
    messages,
    of,
    sent,
    to,
)


def test_lease_needs_a_quorum_to_acknowledge_messages_sent_after_phase_1() -> None:
    """Promises give no lease; the first Accepted of a post-phase-1 message completes a quorum."""
    cell = Cell()
    master = cell.replicas[R3]
    cell.tick(R3)
    cell.settle(of(Prepare, Promise))
    assert master.status().role is Role.MASTER
    assert not master.lease_valid()
    cell.deliver(of(Accept))
    assert not master.lease_valid()
    (accept,) = [e.message for e in sent([cell.readys[R3][-1]]) if e.recipient == R1]
    assert isinstance(accept, Accept)
    cell.deliver(from_(R1))
    assert master.lease_valid()
    expiry = accept.sent_tick + TIMING.master_lease_ticks
    assert LeaseAcquired(master.epoch, expiry) in cell.events[R3]
    assert master.status().lease_expiry_tick == expiry


def heartbeat_acknowledged_by(cell: Cell, master: ReplicaId, follower: ReplicaId) -> int:
    """Tick `master` alone until it heartbeats; only `follower` gets it and answers. Its tick."""
    cell.take()
    while not any(isinstance(e.message, Heartbeat) for e in cell.network):
        cell.tick(master)
    cell.deliver(both(of(Heartbeat), to(follower)))
    cell.deliver(both(of(HeartbeatAck), to(master)))
    cell.take()
    (ack,) = [
        e.message for e in cell.readys[follower][-1].messages if isinstance(e.message, HeartbeatAck)
    ]
    return ack.sent_tick


def test_lease_runs_from_the_quorum_th_freshest_acknowledgement() -> None:
    """With five replicas the lease ends master_lease_ticks after the third-freshest ack's send."""
    cell = Cell(5)
    cell.elect(R5)
    master = cell.replicas[R5]
    first = heartbeat_acknowledged_by(cell, R5, R1)
    second = heartbeat_acknowledged_by(cell, R5, R2)
    third = heartbeat_acknowledged_by(cell, R5, R3)
    assert first < second < third == master.tick_count
    # Freshest first: the master's own (third), r3's (third), r2's (second): a quorum of three.
    expiry = second + TIMING.master_lease_ticks
    assert master.status().lease_expiry_tick == expiry
    while master.tick_count < expiry - 1:
        cell.tick(R5)
        cell.take()
        assert master.lease_valid()
    cell.tick(R5)
    assert not master.lease_valid()
    lost, stepped_down = cell.events[R5][-2:]
    assert isinstance(lost, LeaseLost)
    assert isinstance(stepped_down, SteppedDown)
    assert stepped_down.reason is StepDownReason.LEASE_EXPIRED
    assert master.status().role is Role.FOLLOWER


def test_cut_off_master_steps_down_when_its_lease_expires() -> None:
    """A master that hears from no one steps down (LEASE_EXPIRED) once its lease runs out."""
    cell = Cell()
    cell.elect(R3)
    epoch = cell.replicas[R3].epoch
    cell.run(3)
    for _ in range(TIMING.master_lease_ticks + 1):
        cell.tick(R3)
        cell.take()
    assert not cell.replicas[R3].lease_valid()
    assert LeaseLost(epoch) in cell.events[R3]
    assert [e.reason for e in cell.events[R3] if isinstance(e, SteppedDown)] == [
        StepDownReason.LEASE_EXPIRED
    ]


def test_followers_and_candidates_hold_no_lease() -> None:
    """lease_valid() is False for every replica that is not master."""
    cell = Cell()
    cell.tick()  # all three campaign at once
    assert {r.status().role for r in cell.replicas.values()} == {Role.CANDIDATE}
    assert cell.leases() == []
    cell.settle()
    cell.run(3)
    assert cell.leases() == [cell.master()]
    for rid in cell.members:
        if rid != cell.master():
            assert not cell.replicas[rid].lease_valid()


def campaign_ballot(readys: list[Ready]) -> Ballot:
    (campaigning,) = [e for r in readys for e in r.events if isinstance(e, Campaigning)]
    return campaigning.ballot


def test_acknowledgements_from_an_earlier_mastership_do_not_count() -> None:
    """After r1 is master again at a higher ballot, acks carrying its old ballot give no lease."""
    replica = lone()
    replica.tick()
    first = campaign_ballot(drain(replica))
    replica.step(R2, Promise(first, LogIndex(1), (), LogIndex(0), more=False, behind=False))
    drain(replica)
    assert replica.status().role is Role.MASTER
    while replica.status().role is Role.MASTER:  # no acks: it gives up
        replica.tick()
    readys = drain(replica)
    while replica.status().role is not Role.CANDIDATE:
        replica.tick()
        readys += drain(replica)
    second = campaign_ballot(readys)
    assert second > first
    assert second.replica_id == first.replica_id == R1
    replica.step(R2, Promise(second, LogIndex(1), (), LogIndex(0), more=False, behind=False))
    assert replica.status().role is Role.MASTER
    now = replica.tick_count
    replica.step(R2, HeartbeatAck(first, now, LogIndex(0)))
    replica.step(R3, Accepted(first, LogIndex(1), now, LogIndex(0)))
    assert not replica.lease_valid()
    replica.step(R2, HeartbeatAck(second, now, LogIndex(0)))
    assert replica.lease_valid()


def test_master_that_stepped_down_hints_no_one_while_its_own_lease_binds_it() -> None:
    """A master that stepped down no longer hints itself, though its own lease still binds it."""
    replica = lone()
    replica.tick()
    ballot = campaign_ballot(drain(replica))
    replica.step(R2, Promise(ballot, LogIndex(1), (), LogIndex(0), more=False, behind=False))
    assert replica.master_hint() == R1
    while replica.status().role is Role.MASTER:
        replica.tick()
    (ready,) = drain(replica)
    (stepped_down,) = [e for e in ready.events if isinstance(e, SteppedDown)]
    assert stepped_down == SteppedDown(
        Role.MASTER, Epoch(ballot.round), ballot, StepDownReason.NO_LEASE
    )
    assert replica.master_hint() is None
    replica.step(R2, Prepare(Ballot(ballot.round + 1, R2), LogIndex(1)))
    (refusal,) = messages(drain(replica))
    assert isinstance(refusal, Nack)
    assert refusal.leased  # bound by the lease it granted itself as master
    for _ in range(TIMING.lease_ticks):
        replica.tick()
        drain(replica)
        assert replica.master_hint() is None


# ----------------------------------------------------------------------------- the formula


def test_master_lease_formula() -> None:
    """master_lease_ticks_for(L, e) is floor((L - 1)(1 - e)/(1 + e)) across a range of L and e."""
    for lease_ticks in (4, 5, 7, 10, 20, 33, 1000):
        for drift in (
            Fraction(0),
            Fraction(1, 100),
            Fraction(1, 37),
            Fraction(1, 10),
            Fraction(1, 3),
        ):
            expected = math.floor(Fraction(lease_ticks - 1) * (1 - drift) / (1 + drift))
            assert master_lease_ticks_for(lease_ticks, drift) == expected, (lease_ticks, drift)


def belief_outlives_promise(
    lease_ticks: int, master_ticks: int, drift: Fraction, steps: int = 8
) -> bool:
    """Whether some clock rates, phases and delay on a grid let a master's lease outlive the grant.

    The master's clock runs at rate `m` and reads n while it sends; it believes until it reads
    n + master_ticks. The message arrives after `delay` at an acceptor whose clock runs at `a`
    and reads k; the acceptor refuses others until it reads k + lease_ticks. Both are evaluated
    exactly, in true time, with each tick's phase on a grid that reaches within 1/1000 of a tick
    boundary.
    """
    rates = (1 - drift, Fraction(1), 1 + drift)
    phases = [Fraction(i, steps) for i in range(steps)] + [1 - Fraction(1, 1000)]
    for m, a, send_phase, arrive_phase in itertools.product(rates, rates, phases, phases):
        for delay_ticks in (Fraction(0), Fraction(1, 2), Fraction(3)):
            # Sent `send_phase` into the master's tick; the master's belief lasts this long:
            belief_end = (master_ticks - send_phase) / m
            # Arrives `arrive_phase` into the acceptor's tick, after the delay:
            grant_end = delay_ticks + (lease_ticks - arrive_phase) / a
            if belief_end > grant_end:
                return True
    return False


def test_master_lease_formula_is_safe_and_tight() -> None:
    """On the grid, the formula's K never outlives the acceptors' grant; K + 1 sometimes does."""
    for lease_ticks in (4, 6, 9, 20):
        for drift in (Fraction(0), Fraction(1, 37), Fraction(1, 10), Fraction(1, 4)):
            k = master_lease_ticks_for(lease_ticks, drift)
            assert not belief_outlives_promise(lease_ticks, k, drift), (lease_ticks, drift)
            assert belief_outlives_promise(lease_ticks, k + 1, drift), (lease_ticks, drift)


def test_unit_test_timing_tolerates_the_drift_the_safety_test_uses() -> None:
    """TIMING's master_lease_ticks is what the formula allows for a drift of 1/37."""
    assert master_lease_ticks_for(TIMING.lease_ticks, DRIFT) == TIMING.master_lease_ticks


# ----------------------------------------------------------------------------- lease safety


@pytest.mark.parametrize("first_seed", range(0, 200, 50))
def test_at_most_one_master_believes_in_its_lease(first_seed: int) -> None:
    """Under loss, delay, duplication, drift, partitions and crashes, two leases never overlap."""
    leases = 0
    for seed in range(first_seed, first_seed + 50):
        sim = DriftingCell(seed)
        sim.run(until=150)
        leases += sum(isinstance(event, LeaseAcquired) for _, event in sim.cell.history)
    assert leases >= 75  # the lease did move around: about two masterships a run


@pytest.mark.parametrize("bug", [Bug.ACCEPTOR_IGNORES_LEASE, Bug.IGNORE_LEASE_END], ids=str)
def test_lease_check_catches_a_deliberate_bug(bug: Bug) -> None:
    """The randomized run finds two overlapping leases when a lease rule is switched off."""
    for seed in range(200):
        try:
            DriftingCell(seed, bugs=frozenset({bug})).run(until=150)
        except AssertionError:
            return
    pytest.fail("no seed found two leases at once")
