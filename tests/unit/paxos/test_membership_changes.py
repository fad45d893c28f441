"""Membership changes in the core (docs/design/membership.md §2): a new replica anchored by
its first catch-up, a learner added, promoted and a member removed, each taking effect when
chosen with nothing proposed after it until then; the master removed hands over at once;
a candidate needs a majority of every membership its recovered values make."""

from __future__ import annotations

import pytest
from attrs import evolve

from chubbypy.paxos import (
    BecameMaster,
    Bug,
    Campaigning,
    ForeignHistory,
    MembershipChanged,
    RefusalReason,
    Refused,
    Role,
    StepDownReason,
    SteppedDown,
)
from chubbypy.protocol import (
    Accept,
    Ballot,
    CatchUp,
    Envelope,
    HeartbeatAck,
    InstallSnapshot,
    LogIndex,
    Member,
    Membership,
    Nack,
    Prepare,
    ReplicaId,
    Resign,
    ValueKind,
)
from tests.unit.paxos.harness import (
    R1,
    R2,
    R3,
    R4,
    TIMING,
    Cell,
    Match,
    command,
    everything,
)


def added(current: Membership, rid: ReplicaId) -> Membership:
    member = Member(rid, rid, rid, False)
    members = tuple(sorted((*current.members, member), key=lambda m: m.replica_id))
    return Membership(current.version + 1, members)


def promoted(current: Membership, rid: ReplicaId) -> Membership:
    members = tuple(evolve(m, voter=True) if m.replica_id == rid else m for m in current.members)
    return Membership(current.version + 1, members)


def removed(current: Membership, rid: ReplicaId) -> Membership:
    members = tuple(m for m in current.members if m.replica_id != rid)
    return Membership(current.version + 1, members)


def serving() -> Cell:
    """r1 serves a 3-voter cell with a client (id 1) and a few entries chosen."""
    cell = Cell()
    cell.elect(R1)
    assert cell.register(R1) == 1
    for n in range(1, 4):
        cell.propose(R1, command(1, n, b"k=%d" % n))
    cell.settle()
    return cell


def changed(cell: Cell, membership: Membership, match: Match = everything) -> None:
    """The master r1 proposes `membership`, and the cell runs until it is in effect there."""
    master = cell.master()
    cell.change(master, membership)
    for _ in range(5 * TIMING.lease_ticks):
        if cell.replicas[master].membership == membership:
            break
        cell.run(1, match)
    assert cell.replicas[master].membership == membership


def with_learner(cell: Cell) -> Membership:
    """r4 joins (unless it has) and is added as a learner; it catches up."""
    if R4 not in cell.replicas:
        cell.join(R4)
    membership = added(cell.replicas[R1].membership, R4)
    changed(cell, membership)
    caught_up(cell)
    return membership


def caught_up(cell: Cell, match: Match = everything) -> None:
    """Run until the master has seen r4 acknowledge it recently, knowing the whole log
    chosen: the catch-up a promotion waits for (the node refuses it NOT_CAUGHT_UP before)."""
    master = cell.replicas[cell.master()]
    for _ in range(5 * TIMING.lease_ticks):
        progress = master.peer_progress().get(R4)
        recent = master.tick_count - 2 * TIMING.heartbeat_ticks
        chosen = master.status().chosen_index
        if progress and progress.acked_tick >= recent and progress.chosen_index == chosen:
            return
        cell.run(1, match)
    raise AssertionError(cell.replicas[R4].status())


def test_a_new_replica_is_anchored_by_its_first_catch_up_and_replays_the_changes() -> None:
    """A replica started on an empty store without bootstrap knows no membership and
    counts nothing until a catch-up from index 1 tells it the genesis; then it replays the
    log, its own addition among it, and holds what every member holds; its store keeps
    the genesis."""
    cell = serving()
    genesis = cell.replicas[R1].membership
    joiner = cell.join(R4)
    assert joiner.status().membership is None
    membership = with_learner(cell)
    for rid in (R1, R2, R3, R4):
        assert cell.replicas[rid].membership == membership, rid
    assert cell.stores[R4].load().genesis == genesis
    assert [e.value for e in cell.committed[R4]] == [e.value for e in cell.committed[R1]]
    changes = [e for e in cell.events[R4] if isinstance(e, MembershipChanged)]
    assert [c.membership for c in changes] == [membership]


def test_a_change_waits_for_the_window_and_nothing_is_proposed_after_it_until_chosen() -> None:
    """Proposed with commands in flight, the change goes out only once they are chosen;
    commands proposed after it wait until it is chosen; a second change is refused BUSY."""
    cell = serving()
    cell.join(R4)
    master = cell.replicas[R1]
    cell.propose(R1, command(1, 10, b"a=1"))
    cell.change(R1, added(master.membership, R4))
    kinds = [e.message.value.kind for e in cell.network if isinstance(e.message, Accept)]
    assert ValueKind.MEMBERSHIP not in kinds
    assert master.propose_membership(removed(master.membership, R2), master.epoch) == Refused(
        RefusalReason.MEMBERSHIP_BUSY
    )
    cell.deliver()  # the command's Accepts
    cell.deliver()  # their acceptances: the command is chosen, and the change goes out
    accepts = [e.message for e in cell.network if isinstance(e.message, Accept)]
    assert {a.value.kind for a in accepts} == {ValueKind.MEMBERSHIP}
    cell.propose(R1, command(1, 11, b"b=2"))
    assert {a.value.kind for a in (e.message for e in cell.network) if isinstance(a, Accept)} == {
        ValueKind.MEMBERSHIP
    }
    cell.settle()
    assert master.membership.learners == (R4,)
    assert not master.membership_change_pending
    indices = {i: v.kind for i, v in cell.chosen.items()}
    change = next(i for i, kind in indices.items() if kind is ValueKind.MEMBERSHIP)
    assert indices[LogIndex(change + 1)] is ValueKind.COMMANDS


def test_a_promoted_learner_counts_and_the_quorum_grows() -> None:
    """After r4 is promoted, 4 voters need 3: the master with r4 alone chooses nothing,
    with r4 and r3 it does."""
    cell = serving()
    membership = promoted(with_learner(cell), R4)
    changed(cell, membership)
    cell.run(2 * TIMING.heartbeat_ticks)
    assert cell.replicas[R4].membership.voters == (R1, R2, R3, R4)
    cell.crash(R2)
    cell.crash(R3)
    before = cell.replicas[R1].status().chosen_index
    cell.propose(R1, command(1, 20, b"c=3"))
    cell.settle()
    assert cell.replicas[R1].status().chosen_index == before
    cell.start(R3)
    cell.run(2 * TIMING.retry_ticks)
    assert cell.replicas[R1].status().chosen_index > before


def test_a_removed_follower_is_sent_nothing_more() -> None:
    """Once r2's removal is chosen the master sends it no Accept or Heartbeat."""
    cell = serving()
    membership = promoted(with_learner(cell), R4)
    changed(cell, membership)
    changed(cell, removed(membership, R2))
    cell.take()
    cell.propose(R1, command(1, 30, b"d=4"))
    cell.tick(R1, times=TIMING.heartbeat_ticks + 1)
    assert not [e for e in cell.network if e.recipient == R2]


def test_a_removed_master_steps_down_at_once_and_hands_over() -> None:
    """When its own removal is chosen the master steps down (REMOVED), stops believing in
    its lease in that step, and sends Resign naming a live voter; that voter is master
    within a few ticks, and no two replicas ever hold a lease."""
    cell = serving()
    membership = promoted(with_learner(cell), R4)
    changed(cell, membership)
    master = cell.replicas[R1]
    master.propose_membership(removed(membership, R1), master.epoch)
    cell.drain(R1)
    for _ in range(4 * TIMING.lease_ticks):
        assert len(cell.leases()) <= 1, cell.leases()
        if master.status().role is not Role.MASTER:
            break
        cell.run(1)
    reasons = [e.reason for e in cell.events[R1] if isinstance(e, SteppedDown)]
    assert reasons == [StepDownReason.REMOVED]
    assert not master.lease_valid()
    resigns = [e for r in cell.readys[R1] for e in r.messages if isinstance(e.message, Resign)]
    assert resigns
    assert {e.message.successor for e in resigns} <= {R2, R3, R4}
    assert {e.recipient for e in resigns} == {R2, R3, R4}
    for _ in range(TIMING.lease_ticks):
        assert len(cell.leases()) <= 1, cell.leases()
        cell.run(1)
    (new_master,) = cell.masters()
    assert new_master in (R2, R3, R4)
    assert cell.replicas[new_master].membership.voters == (R2, R3, R4)


def test_a_removed_replica_never_campaigns() -> None:
    """r1, removed, and left alone long after its removal, does not campaign."""
    cell = serving()
    membership = promoted(with_learner(cell), R4)
    changed(cell, membership)
    changed(cell, removed(membership, R1))
    count = len(cell.events[R1])
    cell.run(5 * TIMING.lease_ticks, lambda e: R1 not in (e.sender, e.recipient))
    assert cell.events[R1][count:] == []


def partitioned_candidate(bugs: frozenset[Bug]) -> Cell:
    """r3 misses three changes (r4 added, promoted, r2 removed: voters r1, r3, r4); then
    r3, cut off from r1 and r4 but not from the removed r2, campaigns, and is told of no
    chosen entry meanwhile."""
    cell = Cell(bugs=bugs)
    cell.elect(R1)
    assert cell.register(R1) == 1
    cell.join(R4)

    def without_r3(envelope: Envelope) -> bool:
        return R3 not in (envelope.sender, envelope.recipient)

    membership = added(cell.replicas[R1].membership, R4)
    changed(cell, membership, without_r3)
    caught_up(cell, without_r3)
    membership = promoted(membership, R4)
    changed(cell, membership, without_r3)
    changed(cell, removed(membership, R2), without_r3)
    cell.take()

    def r3_with_r2(envelope: Envelope) -> bool:
        # r3 hears r2's promises and refusals but learns no chosen entry from it: it stays
        # as far behind as it was when it campaigns.
        pair = {envelope.sender, envelope.recipient}
        if isinstance(envelope.message, CatchUp | InstallSnapshot):
            return False
        return R3 not in pair or pair == {R2, R3}

    cell.run(4 * TIMING.lease_ticks, r3_with_r2)
    return cell


def test_a_candidate_needs_a_majority_of_every_membership_it_would_re_propose() -> None:
    """r3's promises from itself and r2 are a majority of the membership it knows, but the
    chosen changes r2 reports make r1, r3, r4 the voters: r3 asks r4 too, which stays
    leased to r1, and never becomes master; with CANDIDATE_IGNORES_CHAIN it does, beside r1."""
    cell = partitioned_candidate(frozenset())
    assert any(isinstance(e, Campaigning) for e in cell.events[R3])
    assert not any(isinstance(e, BecameMaster) for e in cell.events[R3])
    assert cell.masters() == [R1]
    buggy = partitioned_candidate(frozenset({Bug.CANDIDATE_IGNORES_CHAIN}))
    assert any(isinstance(e, BecameMaster) for e in buggy.events[R3])
    assert R1 in buggy.masters()


def test_the_removed_master_bug_keeps_its_mastership() -> None:
    """With REMOVED_MASTER_STAYS the removed master goes on as master (the simulator's
    lease check must catch it)."""
    cell = Cell(bugs=frozenset({Bug.REMOVED_MASTER_STAYS}))
    cell.elect(R1)
    cell.join(R4)
    membership = promoted(with_learner(cell), R4)
    changed(cell, membership)
    changed(cell, removed(membership, R1))
    assert cell.replicas[R1].status().role is Role.MASTER
    assert not [e for e in cell.events[R1] if isinstance(e, SteppedDown)]


def test_a_prepare_from_a_replica_that_is_no_voter_is_refused_and_not_promised() -> None:
    """An acceptor refuses (as leased) a Prepare from a replica its membership does not
    make a voter (say one started with --bootstrap by mistake, counting a membership of
    its own), and promises nothing."""
    cell = serving()
    acceptor = cell.replicas[R2]
    promised = acceptor.status().promised
    acceptor.step(R4, Prepare(Ballot(promised.round + 100, R4), LogIndex(1)))
    cell.drain(R2)
    assert acceptor.status().promised == promised
    (refusal,) = [e.message for e in cell.network if e.recipient == R4]
    assert isinstance(refusal, Nack)
    assert refusal.leased


def test_a_history_whose_memberships_do_not_follow_is_refused() -> None:
    """A replica whose own membership is not the one the chosen log changes (another
    history) raises ForeignHistory when it learns such a change chosen: it must stop."""
    cell = serving()
    stranger = cell.replicas[R3]
    other = Membership(1, tuple(Member(r, r, r, True) for r in (R1, R2, R4)))
    stranger._membership_in_effect(other)  # what a mistaken --bootstrap would hold
    master = cell.replicas[R1]
    cell.join(R4)
    master.propose_membership(added(master.membership, R4), master.epoch)
    cell.drain(R1)
    with pytest.raises(ForeignHistory, match="cannot follow"):
        cell.run(2 * TIMING.heartbeat_ticks)


def test_a_removed_follower_learns_its_removal_and_stops_campaigning() -> None:
    """The master sends a removed member one last heartbeat: it learns the removal is
    chosen, knows it is no longer a member, and never campaigns after."""
    cell = serving()
    membership = promoted(with_learner(cell), R4)
    changed(cell, membership)
    changed(cell, removed(membership, R2))
    assert R2 not in cell.replicas[R2].membership.member_ids
    count = len(cell.events[R2])
    cell.run(5 * TIMING.lease_ticks, lambda e: R2 not in (e.sender, e.recipient))
    assert not any(isinstance(e, Campaigning) for e in cell.events[R2][count:])


def test_a_peer_claiming_more_chosen_than_the_master_is_not_believed() -> None:
    """A learner that reports a chosen index beyond the master's is recorded at the
    master's (a liar cannot pass the promotion gate by claiming to have caught up)."""
    cell = serving()
    cell.join(R4)
    master = cell.replicas[R1]
    chosen = master.status().chosen_index
    ballot = master.status().ballot
    master.step(R4, HeartbeatAck(ballot, master.tick_count, LogIndex(chosen + 10**6), True))
    assert master.peer_progress()[R4].chosen_index == chosen
