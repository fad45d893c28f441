"""Learning what is chosen: piggybacked chosen indexes, catch-up, snapshots and compaction."""

from __future__ import annotations

from chubbypy.paxos import HardState, Limits, Persisted, Role, SnapshotInstalled, membership_of_ids
from chubbypy.protocol import (
    Accept,
    Accepted,
    Ballot,
    CatchUp,
    CatchUpRequest,
    Entry,
    Epoch,
    Heartbeat,
    InstallSnapshot,
    LogIndex,
    Nack,
    Prepare,
    Promise,
    ReplicaId,
    Snapshot,
    Value,
    ValueKind,
)
from tests.unit.paxos.harness import (
    R1,
    R2,
    R3,
    TIMING,
    Cell,
    ScriptedChance,
    between,
    command,
    drain,
    lone,
    messages,
    of,
)

SEED = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))
"""The membership a snapshot's handle names in these tests."""

B1_R2 = Ballot(1, R2)
B2_R3 = Ballot(2, R3)
A = Value(Epoch(1), ValueKind.COMMANDS, (command(1, 1, b"a=1"),))
B = Value(Epoch(2), ValueKind.COMMANDS, (command(1, 1, b"b=2"),))


def test_follower_learns_from_the_piggybacked_chosen_index() -> None:
    """An entry accepted at the master's ballot is committed when its chosen index passes it."""
    replica = lone()
    replica.step(R2, Accept(B1_R2, LogIndex(1), A, LogIndex(0), 0))
    assert drain(replica)[0].committed == ()
    replica.step(R2, Heartbeat(B1_R2, LogIndex(1), 4))
    (ready,) = drain(replica)
    assert ready.committed == (Entry(LogIndex(1), B1_R2, A),)
    assert ready.durable.is_empty(), "learning a chosen index alone waits for no disk"


def test_a_learned_chosen_index_rides_with_the_next_durable_write() -> None:
    """The chosen index is written with the next entries, not in a transaction of its own."""
    replica = lone()
    replica.step(R2, Accept(B1_R2, LogIndex(1), A, LogIndex(0), 0))
    drain(replica)
    replica.step(R2, Accept(B1_R2, LogIndex(2), A, LogIndex(1), 1))
    (ready,) = drain(replica)
    assert ready.committed == (Entry(LogIndex(1), B1_R2, A),)
    assert [e.index for e in ready.durable.entries] == [2]
    assert ready.durable.hard_state is not None
    assert ready.durable.hard_state.chosen_index == 1


def test_a_quiet_replica_writes_its_chosen_index_within_a_heartbeat() -> None:
    """With nothing else to write, the chosen index is made durable a heartbeat period later."""
    replica = lone()
    replica.step(R2, Accept(B1_R2, LogIndex(1), A, LogIndex(0), 0))
    drain(replica)
    replica.step(R2, Heartbeat(B1_R2, LogIndex(1), 4))
    drain(replica)
    replica.tick(TIMING.heartbeat_ticks - 1)
    assert all(r.durable.hard_state is None for r in drain(replica))
    replica.tick()
    written = [r.durable.hard_state for r in drain(replica) if r.durable.hard_state is not None]
    assert [h.chosen_index for h in written] == [1]


def test_a_restart_after_a_snapshot_ahead_of_the_written_chosen_index() -> None:
    """A snapshot holds chosen state only, so a restart takes it as chosen even if the
    written chosen index lags behind it."""
    persisted = Persisted(HardState(B1_R2, LogIndex(0)), Snapshot(LogIndex(3), b"state", SEED))
    replica = lone(persisted)
    assert replica.status().chosen_index == 3
    assert replica.applied_index == 3


def test_follower_with_an_older_ballot_entry_catches_up_instead() -> None:
    """An entry accepted at another ballot is not taken as chosen: the follower asks to catch up."""
    replica = lone(chance=ScriptedChance([0, 4]))  # no campaign of its own at tick 20
    replica.step(R2, Accept(B1_R2, LogIndex(1), A, LogIndex(0), 0))
    drain(replica)
    for _ in range(20):  # r2's lease runs out; r3 takes over
        replica.tick()
    replica.step(R3, Heartbeat(B2_R3, LogIndex(1), 0))
    (ready,) = drain(replica)
    assert ready.committed == ()
    assert CatchUpRequest(LogIndex(1)) in [e.message for e in ready.messages if e.recipient == R3]
    replica.step(R3, CatchUp((Entry(LogIndex(1), B2_R3, B),), LogIndex(1), SEED))
    (ready,) = drain(replica)
    assert ready.committed == (Entry(LogIndex(1), B2_R3, B),)
    assert ready.durable.entries == ready.committed


def test_catch_up_requests_are_paced() -> None:
    """A follower asks again for the same entries only after retry_ticks."""
    replica = lone()
    replica.step(R2, Heartbeat(B1_R2, LogIndex(3), 0))
    replica.step(R2, Heartbeat(B1_R2, LogIndex(3), 0))
    assert messages(drain(replica), CatchUpRequest) == [CatchUpRequest(LogIndex(1))]
    for _ in range(4):
        replica.tick()
    replica.step(R2, Heartbeat(B1_R2, LogIndex(3), 4))
    assert messages(drain(replica), CatchUpRequest) == [CatchUpRequest(LogIndex(1))]


def test_refused_replica_catches_up_from_the_refuser() -> None:
    """A Nack carrying a higher chosen index makes a non-master ask its sender for entries."""
    replica = lone()
    replica.tick()  # campaigns
    drain(replica)
    replica.step(R2, Nack(Ballot(1, R1), Ballot(7, R3), leased=True, chosen_index=LogIndex(5)))
    (ready,) = drain(replica)
    assert [(e.recipient, e.message) for e in ready.messages] == [(R2, CatchUpRequest(LogIndex(1)))]


def test_installed_snapshot_replaces_applying() -> None:
    """After InstallSnapshot the next Ready carries the snapshot and commits nothing up to it."""
    replica = lone()
    snapshot = Snapshot(LogIndex(10), b"state", SEED)
    replica.step(R2, InstallSnapshot(snapshot))
    (ready,) = drain(replica)
    assert ready.durable.snapshot == snapshot
    assert ready.durable.hard_state is not None
    assert ready.durable.hard_state.chosen_index == 10
    assert ready.committed == ()
    assert ready.events == (SnapshotInstalled(LogIndex(10), R2),)
    assert replica.applied_index == 10
    replica.step(R2, InstallSnapshot(Snapshot(LogIndex(8), b"older", SEED)))
    assert drain(replica) == []


def test_snapshot_taken_compacts_but_retains_entries() -> None:
    """snapshot_taken keeps log_retain_entries entries before the snapshot and drops the rest."""
    limits = Limits(log_retain_entries=3, proposals_inflight_max=4, catchup_entries_max=8)
    cell = Cell(limits=limits)
    cell.elect(R3)
    client = cell.register(R3)
    for sequence in range(1, 9):
        cell.propose(R3, command(client, sequence))
    cell.run(2)
    assert cell.appliers[R3].applied_index == 7
    cell.snapshot(R3)
    ready = cell.readys[R3][-1]
    assert ready.durable.snapshot is not None
    assert ready.durable.snapshot.index == 7
    assert ready.durable.compact_through == 4
    assert cell.replicas[R3].status().first_index == 5
    assert [entry.index for entry in cell.stores[R3].load().entries] == [5, 6, 7]


def test_lagging_replica_is_sent_a_snapshot_and_converges() -> None:
    """A replica whose missing entries were truncated installs a snapshot and ends up identical."""
    limits = Limits(log_retain_entries=0, proposals_inflight_max=4, catchup_entries_max=8)
    cell = Cell(limits=limits)
    cell.elect(R3)
    client = cell.register(R3)
    cell.run(2)
    majority = between((R2, R3))
    for sequence in range(1, 7):
        cell.propose(R3, command(client, sequence, b"k%d=%d" % (sequence, sequence)))
        cell.settle(majority)
        cell.take()
    cell.run(2, majority)
    cell.snapshot(R3)
    cell.snapshot(R2)
    assert cell.replicas[R3].status().first_index > cell.replicas[R1].status().chosen_index + 1
    cell.run(2 * cell.timing.heartbeat_ticks)
    (installed,) = [e for e in cell.events[R1] if isinstance(e, SnapshotInstalled)]
    assert installed.index == cell.replicas[R3].status().snapshot_index
    (ready,) = [r for r in cell.readys[R1] if r.durable.snapshot is not None]
    assert all(entry.index > installed.index for entry in ready.committed)
    assert not [entry for entry in cell.committed[R1] if 2 < entry.index <= installed.index]
    assert cell.appliers[R1].checksum() == cell.appliers[R3].checksum()
    assert cell.machines[R1].values == cell.machines[R3].values
    cell.propose(R3, command(client, 7, b"k7=7"))
    cell.run(cell.timing.heartbeat_ticks + 1)
    assert cell.machines[R1].values[b"k7"] == b"7"


def test_master_is_not_stalled_by_peers_that_compacted_what_it_reproposes() -> None:
    """A new master re-proposing entries its peers have chosen and compacted still commits."""
    limits = Limits(log_retain_entries=0, proposals_inflight_max=4, catchup_entries_max=8)
    cell = Cell(limits=limits)
    cell.elect(R1)
    client = cell.register(R1)
    cell.run(2)
    cell.propose(R1, command(client, 1, b"a=1"))
    cell.run(cell.timing.heartbeat_ticks + 1, between((R1, R2)))  # r2 learns 3 is chosen, r3 not
    assert cell.replicas[R2].status().chosen_index == 3 > cell.replicas[R3].status().chosen_index
    cell.crash(R1)
    # r3 runs phase 1 from index 3 with r2, whose promise is not behind: nothing is compacted
    # yet. Catch-up replies are lost, so r3 re-proposes index 3 itself.
    r3 = cell.replicas[R3]
    while r3.status().role is not Role.MASTER:
        leased = [R2] if cell.replicas[R2].master_hint() is not None else []
        cell.tick(R3, *leased)
        cell.settle(of(Prepare, Promise, Nack))
        cell.take(of(CatchUpRequest, CatchUp))
    assert {e.message.index for e in cell.network if isinstance(e.message, Accept)} == {3, 4}
    # Before r3's Accepts arrive, r2 snapshots and compacts through index 3; so does r1,
    # which restarts with index 3 chosen and waits out its restart lease.
    cell.snapshot(R2)
    cell.restart(R1)
    cell.snapshot(R1)
    assert cell.replicas[R1].status().first_index == cell.replicas[R2].status().first_index == 4
    cell.tick(R1, times=cell.timing.lease_ticks)
    cell.settle()
    assert cell.replicas[R1].master_hint() == R3
    cell.run(10)  # all three replicas up, no message lost
    assert r3.lease_valid()
    assert r3.serving, r3.status()
    assert r3.status().chosen_index >= 4
    # Both peers acknowledged r3's Accept for index 3, which they had compacted.
    ballot = r3.status().ballot
    acked = {
        rid
        for rid in (R1, R2)
        for ready in cell.readys[rid]
        for e in ready.messages
        if isinstance(e.message, Accepted) and (e.message.ballot, e.message.index) == (ballot, 3)
    }
    assert acked == {R1, R2}


def test_catch_up_reply_is_bounded() -> None:
    """A CatchUp carries at most catchup_entries_max chosen entries, from the requested index."""
    entries = tuple(Entry(LogIndex(i), B1_R2, A) for i in range(1, 11))
    limits = Limits(proposals_inflight_max=2, catchup_entries_max=4)
    replica = lone(Persisted(HardState(B1_R2, LogIndex(10)), None, entries), limits=limits)
    replica.step(R3, CatchUpRequest(LogIndex(2)))
    (reply,) = messages(drain(replica))
    assert reply == CatchUp(entries[1:5], LogIndex(10), SEED)
