"""Learners (docs/design/membership.md §2.6): members that take the log and obey the
acceptor's lease rule but never count in a quorum, a lease or a campaign, and never campaign.
Each counting site is shown twice: as built, and with `Bug.COUNT_LEARNER_IN_QUORUM`, which
the simulator's checkers must catch."""

from __future__ import annotations

from chubbypy.paxos import Bug, Campaigning, Role, StepDownReason, SteppedDown
from chubbypy.protocol import Resign
from tests.unit.paxos.harness import R1, R2, R3, R4, TIMING, Cell, command

LEARNER_BUG = frozenset({Bug.COUNT_LEARNER_IN_QUORUM})


def serving_with_learner(bugs: frozenset[Bug] = frozenset()) -> Cell:
    """Voters r1-r3 and learner r4; r1 serves with a registered client (id 1)."""
    cell = Cell(learners=1, bugs=bugs)
    cell.elect(R1)
    assert cell.register(R1) == 1
    return cell


def test_a_learner_takes_the_log_and_its_acknowledgements_reach_the_master() -> None:
    """The master sends a learner every Accept and Heartbeat; the learner commits the same
    entries as the voters."""
    cell = serving_with_learner()
    assert cell.replicas[R1].membership.learners == (R4,)
    cell.propose(R1, command(1, 1, b"a=1"))
    cell.settle()
    cell.run(TIMING.heartbeat_ticks + 1)
    chosen = cell.replicas[R1].status().chosen_index
    assert cell.replicas[R4].status().chosen_index == chosen
    assert [e.value for e in cell.committed[R4]] == [e.value for e in cell.committed[R2]]


def test_a_master_and_its_learner_choose_nothing() -> None:
    """With both other voters down, the master's and the learner's acceptances are two of
    four members but one of three voters: nothing is chosen (with the bug, it is)."""
    for bugs, chosen in ((frozenset(), False), (LEARNER_BUG, True)):
        cell = serving_with_learner(bugs)
        before = cell.replicas[R1].status().chosen_index
        cell.crash(R2)
        cell.crash(R3)
        cell.propose(R1, command(1, 1, b"a=1"))
        cell.settle()
        assert (cell.replicas[R1].status().chosen_index > before) is chosen, bugs


def test_a_learners_acknowledgements_keep_no_lease() -> None:
    """A master heard only by its learner loses its lease and steps down when the lease
    acknowledged by the voters ends (with the bug, the learner keeps it alive)."""
    for bugs, keeps in ((frozenset(), False), (LEARNER_BUG, True)):
        cell = serving_with_learner(bugs)
        cell.crash(R2)
        cell.crash(R3)
        cell.run(2 * TIMING.lease_ticks)
        assert (cell.replicas[R1].status().role is Role.MASTER) is keeps, bugs
        if not keeps:
            reasons = [e.reason for e in cell.events[R1] if isinstance(e, SteppedDown)]
            assert reasons[-1] is StepDownReason.LEASE_EXPIRED


def test_a_candidate_promised_by_a_learner_is_not_master() -> None:
    """A voter whose only promise besides its own is a learner's stays a candidate (with
    the bug, it wins)."""
    for bugs, wins in ((frozenset(), False), (LEARNER_BUG, True)):
        cell = Cell(learners=1, bugs=bugs)
        cell.crash(R2)
        cell.crash(R3)
        cell.run(3 * TIMING.lease_ticks)
        assert (cell.replicas[R1].status().role is Role.MASTER) is wins, bugs
        assert any(isinstance(e, Campaigning) for e in cell.events[R1])


def test_a_learner_never_campaigns() -> None:
    """A learner whose master is gone waits: no Campaigning, however long, and a Resign
    naming it as successor does not make it campaign."""
    cell = serving_with_learner()
    ballot = cell.replicas[R1].status().ballot
    for rid in (R1, R2, R3):
        cell.crash(rid)
    cell.replicas[R4].step(R1, Resign(ballot, R4))
    cell.drain(R4)
    cell.run(5 * TIMING.lease_ticks)
    assert not any(isinstance(e, Campaigning) for e in cell.events[R4])
    assert cell.replicas[R4].status().role is Role.FOLLOWER


def test_a_resigning_master_names_a_voter_not_its_learner() -> None:
    """The successor a resigning master names is a live voter, even when the learner knows
    as much of the log."""
    cell = serving_with_learner()
    cell.run(TIMING.heartbeat_ticks + 1)
    assert cell.replicas[R1].resign()
    cell.drain(R1)
    resigns = [e.message for e in cell.network if isinstance(e.message, Resign)]
    assert resigns, "the master resigned to its peers"
    assert {r.successor for r in resigns} <= {R2, R3}, resigns
