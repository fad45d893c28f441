"""The acceptor's rules, one message at a time, on a lone replica (no cell, no network)."""

from __future__ import annotations

from chubbypy.paxos import HardState, Limits, Persisted, membership_of_ids
from chubbypy.protocol import (
    NO_BALLOT,
    Accept,
    Accepted,
    Ballot,
    Entry,
    Envelope,
    Epoch,
    Heartbeat,
    HeartbeatAck,
    LogIndex,
    Nack,
    Prepare,
    Promise,
    ReplicaId,
    Snapshot,
    Value,
    ValueKind,
)
from tests.unit.paxos.harness import R1, R2, R3, Cell, command, drain, lone, messages

SEED = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))
"""The membership a snapshot's handle names in these tests."""

B1_R2 = Ballot(1, R2)
B3_R3 = Ballot(3, R3)
B5_R2 = Ballot(5, R2)
NOOP = Value(Epoch(1), ValueKind.NOOP)
BATCH = Value(Epoch(1), ValueKind.COMMANDS, (command(1, 1),))


def accept(ballot: Ballot, index: int, value: Value = NOOP, chosen: int = 0) -> Accept:
    return Accept(ballot, LogIndex(index), value, LogIndex(chosen), 0)


def test_prepare_below_promise_is_refused() -> None:
    """An acceptor that promised (5, r2) answers a Prepare at (3, r3) with Nack(leased=False)."""
    replica = lone()
    replica.step(R2, Prepare(B5_R2, LogIndex(1)))
    drain(replica)
    replica.step(R3, Prepare(B3_R3, LogIndex(1)))
    (ready,) = drain(replica)
    assert ready.messages == (
        Envelope(R1, R3, Nack(B3_R3, B5_R2, leased=False, chosen_index=LogIndex(0))),
    )


def test_prepare_while_leased_is_refused_and_promise_unchanged() -> None:
    """An acceptor leased to master r2 refuses a higher Prepare from r3 and keeps its promise."""
    replica = lone()
    replica.step(R2, Heartbeat(B1_R2, LogIndex(0), 0))
    drain(replica)
    replica.step(R3, Prepare(Ballot(9, R3), LogIndex(1)))
    (ready,) = drain(replica)
    assert ready.messages == (
        Envelope(R1, R3, Nack(Ballot(9, R3), B1_R2, leased=True, chosen_index=LogIndex(0))),
    )
    assert ready.durable.hard_state is None
    assert replica.status().promised == B1_R2


def test_duplicate_prepare_gets_the_same_promise() -> None:
    """A second Prepare at the promised ballot gets the same Promise, and writes nothing new."""
    replica = lone()
    replica.step(R2, Prepare(B5_R2, LogIndex(1)))
    (first,) = drain(replica)
    replica.step(R2, Prepare(B5_R2, LogIndex(1)))
    (second,) = drain(replica)
    assert first.messages == second.messages
    assert isinstance(first.messages[0].message, Promise)
    assert first.durable.hard_state == HardState(B5_R2)
    assert second.durable.is_empty()


def test_accept_below_promise_is_refused() -> None:
    """An acceptor that promised (5, r2) answers an Accept at (3, r3) with a Nack, storing none."""
    replica = lone()
    replica.step(R2, Prepare(B5_R2, LogIndex(1)))
    drain(replica)
    replica.step(R3, accept(B3_R3, 1))
    (ready,) = drain(replica)
    assert ready.messages == (
        Envelope(R1, R3, Nack(B3_R3, B5_R2, leased=False, chosen_index=LogIndex(0))),
    )
    assert ready.durable.entries == ()


def test_accept_is_stored_before_it_is_acknowledged() -> None:
    """The Ready that carries an Accepted also carries the entry and the raised promise."""
    replica = lone()
    replica.step(R2, accept(B5_R2, 1, BATCH))
    (ready,) = drain(replica)
    assert ready.durable.entries == (Entry(LogIndex(1), B5_R2, BATCH),)
    assert ready.durable.hard_state == HardState(B5_R2)
    assert ready.messages == (Envelope(R1, R2, Accepted(B5_R2, LogIndex(1), 0, LogIndex(0))),)


def test_chosen_index_is_not_reaccepted_with_another_value() -> None:
    """An Accept for an index already chosen is acknowledged only if it carries the chosen value."""
    replica = lone()
    replica.step(R2, accept(B1_R2, 1, BATCH))
    replica.step(R2, Heartbeat(B1_R2, LogIndex(1), 0))
    drain(replica)
    assert replica.status().chosen_index == 1
    replica.step(R2, accept(Ballot(2, R2), 1, NOOP))
    (ready,) = drain(replica)
    assert not [e for e in ready.messages if isinstance(e.message, Accepted)]
    assert ready.durable.entries == ()
    replica.step(R2, accept(Ballot(2, R2), 1, BATCH))
    (ready,) = drain(replica)
    assert [e.message for e in ready.messages] == [
        Accepted(Ballot(2, R2), LogIndex(1), 0, LogIndex(1))
    ]


def test_promise_reports_entries_from_from_index() -> None:
    """A Promise reports the accepted entries from from_index on, and the chosen index."""
    entries = tuple(Entry(LogIndex(i), B1_R2, NOOP) for i in range(1, 6))
    replica = lone(Persisted(HardState(B1_R2, LogIndex(2)), None, entries))
    replica.step(R2, Prepare(B5_R2, LogIndex(3)))
    (ready,) = drain(replica)
    (envelope,) = ready.messages
    assert envelope.message == Promise(
        B5_R2, LogIndex(3), entries[2:], LogIndex(2), more=False, behind=False
    )


def test_promise_beyond_catchup_limit_is_paged() -> None:
    """A Promise is paged by catchup_entries_max; a same-ballot Prepare gets the next page."""
    limits = Limits(proposals_inflight_max=2, catchup_entries_max=3)
    entries = tuple(Entry(LogIndex(i), B1_R2, NOOP) for i in (1, 2, 3, 5, 6, 7, 9))  # gaps
    replica = lone(Persisted(HardState(B1_R2), None, entries), limits=limits)
    replica.step(R2, Prepare(B5_R2, LogIndex(1)))
    (ready,) = drain(replica)
    assert ready.durable.hard_state == HardState(B5_R2)
    assert [e.message for e in ready.messages] == [
        Promise(B5_R2, LogIndex(1), entries[:3], LogIndex(0), more=True, behind=False)
    ]
    replica.step(R2, Prepare(B5_R2, LogIndex(4)))
    (ready,) = drain(replica)
    assert ready.durable.is_empty()  # the same promise: nothing new to write
    assert [e.message for e in ready.messages] == [
        Promise(B5_R2, LogIndex(4), entries[3:6], LogIndex(0), more=True, behind=False)
    ]
    replica.step(R2, Prepare(B5_R2, LogIndex(8)))
    (ready,) = drain(replica)
    assert [e.message for e in ready.messages] == [
        Promise(B5_R2, LogIndex(8), entries[6:], LogIndex(0), more=False, behind=False)
    ]
    # Exactly catchup_entries_max left is one whole page, not a page and an empty one.
    replica.step(R2, Prepare(B5_R2, LogIndex(6)))
    (ready,) = drain(replica)
    assert [e.message for e in ready.messages] == [
        Promise(B5_R2, LogIndex(6), entries[4:], LogIndex(0), more=False, behind=False)
    ]


def test_promise_below_first_retained_index_is_behind() -> None:
    """A Promise from below the acceptor's snapshot says `behind`: those entries are gone."""
    snapshot = Snapshot(LogIndex(4), b"", SEED)
    entries = (Entry(LogIndex(5), B1_R2, NOOP),)
    replica = lone(Persisted(HardState(B1_R2, LogIndex(4)), snapshot, entries))
    replica.step(R2, Prepare(B5_R2, LogIndex(3)))
    (ready,) = drain(replica)
    promise = ready.messages[0].message
    assert isinstance(promise, Promise)
    assert promise.entries == entries
    assert (promise.more, promise.behind) == (False, True)
    replica.step(R2, Prepare(B5_R2, LogIndex(5)))
    (ready,) = drain(replica)
    assert ready.messages[0].message == Promise(
        B5_R2, LogIndex(5), entries, LogIndex(4), more=False, behind=False
    )


def test_accept_below_first_retained_index_is_acknowledged() -> None:
    """An Accept for an index chosen and compacted here is acknowledged, and nothing is stored."""
    snapshot = Snapshot(LogIndex(4), b"", SEED)
    entries = (Entry(LogIndex(5), B1_R2, NOOP),)
    replica = lone(Persisted(HardState(B1_R2, LogIndex(5)), snapshot, entries))
    replica.step(R2, Accept(B5_R2, LogIndex(3), BATCH, LogIndex(2), 7))
    (ready,) = drain(replica)
    assert [e.message for e in ready.messages] == [Accepted(B5_R2, LogIndex(3), 7, LogIndex(5))]
    assert ready.durable.entries == ()
    assert ready.durable.hard_state == HardState(B5_R2, LogIndex(5))  # the promise is raised
    status = replica.status()
    assert (status.first_index, status.last_index, status.chosen_index) == (5, 5, 5)
    assert replica.master_hint() == R2  # it took the Accept: it is leased to its sender
    # Another proposer's Accept for a compacted index is still refused (leased, and lower).
    replica.step(R3, Accept(B3_R3, LogIndex(3), BATCH, LogIndex(2), 7))
    assert messages(drain(replica)) == [Nack(B3_R3, B5_R2, leased=True, chosen_index=LogIndex(5))]


def test_heartbeat_leases_the_acceptor_to_its_sender() -> None:
    """A Heartbeat at the promised ballot is acknowledged and makes the sender the master hint."""
    replica = lone()
    replica.step(R2, Heartbeat(B1_R2, LogIndex(0), 7))
    (ready,) = drain(replica)
    assert ready.durable.hard_state == HardState(B1_R2)
    assert [e.message for e in ready.messages] == [HeartbeatAck(B1_R2, 7, LogIndex(0))]
    assert replica.master_hint() == R2
    assert not replica.lease_valid()


def test_every_reply_in_an_election_is_durable_before_it_is_sent() -> None:
    """Through an election and commands, no reply leaves before the state it reports is stored."""
    cell = Cell()  # the cell checks durability on every Ready it drains
    cell.run(8)
    master = cell.master()
    client = cell.register(master)
    for sequence in range(1, 6):
        cell.propose(master, command(client, sequence))
    cell.run(4)
    kinds = {
        type(e.message)
        for rid in cell.members
        for r in cell.readys[rid]
        for e in (*r.early, *r.messages)
    }
    assert {Promise, Accepted, HeartbeatAck} <= kinds
    assert cell.stores[R1].load().hard_state.promised != NO_BALLOT


def test_another_replicas_ballot_of_the_promised_round_is_refused() -> None:
    """Promised (5, r2), an acceptor refuses (5, r3) though it is higher, in a Prepare and
    in an Accept, and keeps its promise: it never promises two ballots of one round, so no
    two masterships share an epoch when rounds stop naming one proposer (a membership
    change)."""
    replica = lone()
    replica.step(R2, Prepare(B5_R2, LogIndex(1)))
    drain(replica)
    same_round = Ballot(5, R3)
    assert same_round > B5_R2
    replica.step(R3, Prepare(same_round, LogIndex(1)))
    replica.step(R3, accept(same_round, 1))
    (ready,) = drain(replica)
    nack = Nack(same_round, B5_R2, leased=False, chosen_index=LogIndex(0))
    assert ready.messages == (Envelope(R1, R3, nack), Envelope(R1, R3, nack))
    assert replica.status().promised == B5_R2
    replica.step(R3, Prepare(Ballot(6, R3), LogIndex(1)))  # a later round is promised
    drain(replica)
    assert replica.status().promised == Ballot(6, R3)
