"""Elections: the restart rule, phase 1, recovery of accepted values, epochs, serving."""

from __future__ import annotations

from chubbypy.paxos import (
    Applier,
    BecameMaster,
    Campaigning,
    Durable,
    HardState,
    Limits,
    NoChance,
    Outcome,
    OutcomeKind,
    Persisted,
    RefusalReason,
    Refused,
    Replica,
    Role,
    StartedServing,
    StepDownReason,
    SteppedDown,
    membership_of_ids,
)
from chubbypy.protocol import (
    NO_EPOCH,
    Accept,
    Accepted,
    Ballot,
    CatchUpRequest,
    Entry,
    Epoch,
    Heartbeat,
    HeartbeatAck,
    LogIndex,
    Nack,
    Prepare,
    Promise,
    ReplicaId,
    Value,
    ValueKind,
)
from tests.unit.paxos.harness import (
    ALL,
    R1,
    R2,
    R3,
    R4,
    R5,
    TIMING,
    Cell,
    DictMachine,
    ScriptedChance,
    between,
    both,
    command,
    drain,
    lone,
    messages,
    of,
    to,
)

RESTARTED = Persisted(HardState(Ballot(3, R2)))
"""A store whose acceptor last promised r2: it may have been leased to r2 when it stopped."""


def batch(epoch: int, *payloads: bytes) -> Value:
    commands = tuple(command(1, n, p) for n, p in enumerate(payloads, 1))
    return Value(Epoch(epoch), ValueKind.COMMANDS, commands)


# ----------------------------------------------------------------------------- restart rule


def test_restarted_acceptor_refuses_others_for_a_lease() -> None:
    """After a restart, an acceptor that promised r2 refuses r3's Prepare for lease_ticks ticks."""
    replica = lone(RESTARTED, chance=ScriptedChance([4]))  # campaign late, at tick 24
    for tick in range(20):
        assert replica.tick_count == tick
        replica.step(R3, Prepare(Ballot(4 + tick, R3), LogIndex(1)))
        (nack,) = messages(drain(replica))
        assert isinstance(nack, Nack)
        assert nack.leased
        replica.tick()
    replica.step(R3, Prepare(Ballot(30, R3), LogIndex(1)))
    (promise,) = messages(drain(replica))
    assert isinstance(promise, Promise)


def test_restarted_acceptor_still_takes_its_promised_master() -> None:
    """After a restart, an acceptor that promised r2 promises r2's higher ballot at once."""
    replica = lone(RESTARTED)
    replica.step(R2, Prepare(Ballot(4, R2), LogIndex(1)))
    (promise,) = messages(drain(replica))
    assert isinstance(promise, Promise)
    replica.step(R2, Heartbeat(Ballot(4, R2), LogIndex(0), 0))
    (ack,) = messages(drain(replica))
    assert isinstance(ack, HeartbeatAck)


def test_restarted_acceptor_campaigns_only_after_a_lease() -> None:
    """A replica restarted with a promise to r2 campaigns no earlier than lease_ticks."""
    replica = lone(RESTARTED)
    for _ in range(19):
        replica.tick()
        assert not [e for r in drain(replica) for e in r.events if isinstance(e, Campaigning)]
    replica.tick()
    (ready,) = drain(replica)
    # r1 is replica 0 of 3: the lowest round above the promised 3 that is 0 mod 3 is 6.
    assert ready.events == (Campaigning(Ballot(6, R1)),)


def test_a_stalled_replica_campaigns_once_however_many_ticks_passed() -> None:
    """tick(elapsed) moves the clock at once: a replica that missed many ticks campaigns once."""
    replica = lone()
    replica.tick(50)
    (ready,) = drain(replica)
    assert ready.events == (Campaigning(Ballot(3, R1)),)
    assert replica.tick_count == 50
    assert messages([ready]) == [Prepare(Ballot(3, R1), LogIndex(1))] * 2


# ----------------------------------------------------------------------------- phase 1


def test_fresh_cell_elects_exactly_one_master() -> None:
    """Three fresh replicas campaigning at once end with one master that everyone follows."""
    cell = Cell()
    cell.run(10)
    master = cell.master()
    assert cell.leases() == [master]
    became = [rid for rid, event in cell.history if isinstance(event, BecameMaster)]
    assert became == [master]
    assert {cell.replicas[rid].master_hint() for rid in cell.members} == {master}


def test_new_master_reproposes_before_its_epoch_start() -> None:
    """A new master re-proposes the accepted-but-unchosen entries it finds, then its EPOCH_START."""
    cell = Cell()
    cell.elect(R3)
    first = cell.replicas[R3].epoch
    client = cell.register(R3)
    cell.propose(R3, command(client, 1, b"a=1"))
    cell.propose(R3, command(client, 2, b"b=2"))
    cell.deliver(both(of(Accept), to(R2)))  # r2 accepts; its replies and r1's copies are lost
    cell.take()
    cell.crash(R3)
    cell.elect(R2)
    assert [cell.chosen[LogIndex(i)].commands[0].payload for i in (3, 4)] == [b"a=1", b"b=2"]
    (became,) = [e for e in cell.events[R2] if isinstance(e, BecameMaster)]
    # r3 won with round 2 (replica 2 of 3); r2 (replica 1) then with the next round 1 mod 3.
    assert (first, became.ballot, became.epoch) == (2, Ballot(4, R2), 4)
    assert became.recovered_entries == 2
    assert cell.chosen[LogIndex(5)] == Value(became.epoch, ValueKind.EPOCH_START)
    # Proposed under r3's epoch and never overtaken by another master's EPOCH_START: they apply.
    assert [o.kind.name for o in cell.outcomes[R2][-2:]] == ["APPLIED", "APPLIED"]


def test_proposals_are_refused_until_the_epoch_start_is_applied() -> None:
    """A new master refuses proposals until the Ready with its EPOCH_START is advanced."""
    cell = Cell()
    master = cell.replicas[R3]
    cell.tick(R3)
    cell.settle(of(Prepare, Promise))
    assert master.status().role is Role.MASTER
    one = [command(1, 1)]
    assert master.propose(one, master.epoch) == Refused(RefusalReason.NOT_MASTER)
    cell.deliver(of(Accept))
    for envelope in cell.take(of(Accepted)):
        master.step(envelope.sender, envelope.message)
    ready = master.ready()
    assert ready.committed[-1].value == Value(master.epoch, ValueKind.EPOCH_START)
    assert master.propose(one, master.epoch) == Refused(RefusalReason.NOT_MASTER)
    master.advance(ready)
    assert master.serving
    assert master.propose(one, master.epoch) is None
    assert StartedServing(master.epoch, LogIndex(1)) in master.ready().events


def test_epochs_increase_across_masterships() -> None:
    """Crashing each master in turn, every new mastership's epoch is above all earlier ones."""
    cell = Cell()
    cell.run(5)
    for nonce in range(4):
        master = cell.master()
        client = cell.register(master, nonce)
        cell.propose(master, command(client, 1))
        cell.crash(master)
        cell.run(40)
        cell.restart(master)
        cell.run(5)
    became = [(rid, event) for rid, event in cell.history if isinstance(event, BecameMaster)]
    epochs = [event.epoch for _, event in became]
    assert len(epochs) == 5
    assert epochs == sorted(set(epochs))
    assert cell.epochs_started() == epochs
    # Each epoch is the round its master won with, and that round is the master's own.
    for rid, event in became:
        assert event.ballot.replica_id == rid
        assert event.epoch == event.ballot.round
        assert event.ballot.round % 3 == cell.members.index(rid)


def campaigning_in_five() -> tuple[Replica, Ballot]:
    """Replica r1 of five, campaigning at (10, r1) after promising (5, r2): quorum is three.

    r1 is replica 0 of 5, so 10 is the lowest round above 5 that is 0 mod 5.
    """
    replica = lone(members=ALL)
    replica.step(R2, Prepare(Ballot(5, R2), LogIndex(1)))
    drain(replica)
    for _ in range(4):
        replica.tick()
    prepares = messages(drain(replica), Prepare)
    assert prepares == [Prepare(Ballot(10, R1), LogIndex(1))] * 4, prepares
    return replica, Ballot(10, R1)


def proposed(replica: Replica) -> dict[int, Value]:
    return {m.index: m.value for m in messages(drain(replica)) if isinstance(m, Accept)}


def test_new_master_adopts_highest_ballot_values_and_fills_gaps() -> None:
    """Recovery takes each index's highest-ballot reported value, and a NOOP where none is."""
    replica, ballot = campaigning_in_five()
    a, b, c, d = batch(1, b"a=1"), batch(2, b"b=2"), batch(1, b"c=3"), batch(2, b"d=4")
    two = (Entry(LogIndex(1), Ballot(2, R4), a), Entry(LogIndex(3), Ballot(3, R2), b))
    three = (Entry(LogIndex(1), Ballot(4, R3), c), Entry(LogIndex(4), Ballot(1, R3), d))
    replica.step(R2, Promise(ballot, LogIndex(1), two, LogIndex(0), False, False))
    replica.step(R3, Promise(ballot, LogIndex(1), three, LogIndex(0), False, False))
    assert proposed(replica) == {
        1: c,
        2: Value(Epoch(10), ValueKind.NOOP),
        3: b,
        4: d,
        5: Value(Epoch(10), ValueKind.EPOCH_START),
    }
    assert replica.epoch == 10


def test_value_known_chosen_wins_over_a_higher_ballot() -> None:
    """A value a promiser knows chosen is adopted even over a higher-ballot unchosen one."""
    replica, ballot = campaigning_in_five()
    chosen, other = batch(1, b"x=1"), batch(1, b"y=2")
    known = (Entry(LogIndex(1), Ballot(2, R4), chosen),)
    higher = (Entry(LogIndex(1), Ballot(4, R5), other),)
    replica.step(R2, Promise(ballot, LogIndex(1), known, LogIndex(1), False, False))
    replica.step(R3, Promise(ballot, LogIndex(1), higher, LogIndex(0), False, False))
    assert proposed(replica)[1] == chosen


def test_behind_promise_sends_the_candidate_to_catch_up() -> None:
    """On a `behind` promise the candidate steps down (BEHIND) and asks that peer to catch up."""
    replica, ballot = campaigning_in_five()
    replica.step(R2, Promise(ballot, LogIndex(1), (), LogIndex(9), more=False, behind=True))
    (ready,) = drain(replica)
    assert replica.status().role is Role.FOLLOWER
    assert ready.events == (SteppedDown(Role.CANDIDATE, NO_EPOCH, ballot, StepDownReason.BEHIND),)
    assert [(e.recipient, e.message) for e in ready.messages] == [(R2, CatchUpRequest(LogIndex(1)))]
    assert replica.master_hint() is None
    replica.step(R3, Promise(ballot, LogIndex(1), (), LogIndex(0), False, False))
    replica.step(R4, Promise(ballot, LogIndex(1), (), LogIndex(0), False, False))
    assert replica.status().role is Role.FOLLOWER
    assert not [e for r in drain(replica) for e in r.events]


def promise(
    ballot: Ballot, from_index: int, *entries: Entry, chosen: int = 0, more: bool = False
) -> Promise:
    return Promise(ballot, LogIndex(from_index), entries, LogIndex(chosen), more, behind=False)


def entry(index: int, ballot: Ballot, value: Value) -> Entry:
    return Entry(LogIndex(index), ballot, value)


def test_candidate_asks_for_each_further_page_and_merges_them() -> None:
    """A candidate asks for each further page and counts an acceptor once all its pages are in."""
    replica, ballot = campaigning_in_five()
    a, b, c, d, x = (batch(1, p) for p in (b"a=1", b"b=2", b"c=3", b"d=4", b"x=5"))
    page1 = promise(ballot, 1, entry(1, Ballot(2, R4), a), entry(2, Ballot(2, R4), b), more=True)
    replica.step(R2, page1)
    (ready,) = drain(replica)
    assert [(e.recipient, e.message) for e in ready.messages] == [
        (R2, Prepare(ballot, LogIndex(3)))
    ]
    assert ready.events == ()
    replica.step(R3, promise(ballot, 1, entry(1, Ballot(4, R3), c)))
    assert replica.status().role is Role.CANDIDATE  # r2's promise is not complete yet
    assert messages(drain(replica)) == []
    replica.step(R2, promise(ballot, 3, entry(4, Ballot(1, R2), d), more=True))  # 3 is a gap
    assert messages(drain(replica)) == [Prepare(ballot, LogIndex(5))]
    assert replica.status().role is Role.CANDIDATE
    replica.step(R2, promise(ballot, 5, entry(5, Ballot(3, R2), x)))
    assert replica.status().role is Role.MASTER
    assert proposed(replica) == {
        1: c,
        2: b,
        3: Value(Epoch(10), ValueKind.NOOP),
        4: d,
        5: x,
        6: Value(Epoch(10), ValueKind.EPOCH_START),
    }


def test_duplicate_and_out_of_order_pages_are_ignored() -> None:
    """A repeated, out-of-order or extra promise page is ignored: it completes and adds nothing."""
    replica, ballot = campaigning_in_five()
    a, b, x, y = (batch(1, p) for p in (b"a=1", b"b=2", b"x=5", b"y=6"))
    page1 = promise(ballot, 1, entry(1, Ballot(2, R4), a), more=True)
    replica.step(R2, page1)
    drain(replica)
    # A page from further on, as if an earlier page were lost: not r2's next page.
    replica.step(R2, promise(ballot, 5, entry(5, Ballot(3, R2), x)))
    # The first page again, and a first page reporting something else.
    replica.step(R2, page1)
    replica.step(R2, promise(ballot, 1, entry(1, Ballot(5, R2), y), entry(2, Ballot(5, R2), y)))
    drain(replica)
    replica.step(R2, promise(ballot, 2, entry(2, Ballot(2, R4), b)))  # r2's last page
    # A page after r2's last one, even one that starts where it ended, is not taken.
    replica.step(R2, promise(ballot, 3, entry(3, Ballot(5, R2), y)))
    assert replica.status().role is Role.CANDIDATE
    drain(replica)
    replica.step(R3, promise(ballot, 1))  # complete, and empty: a quorum with r1 and r2
    assert replica.status().role is Role.MASTER
    assert proposed(replica) == {1: a, 2: b, 3: Value(Epoch(10), ValueKind.EPOCH_START)}
    replica.step(R2, promise(ballot, 2, entry(2, Ballot(2, R4), b)))  # late: already master
    replica.step(R4, promise(ballot, 1, entry(3, Ballot(4, R4), x)))
    assert drain(replica) == []


def test_paged_promises_between_real_replicas() -> None:
    """A candidate fetches a three-page tail from its one acceptor, wins, and gets it all chosen."""
    limits = Limits(batch_entries_max=1, proposals_inflight_max=2, catchup_entries_max=2)
    cell = Cell(limits=limits)
    cell.crash(R2)
    failed = Ballot(2, R3)  # a mastership of r3 that never got anything chosen
    tail = tuple(Entry(LogIndex(i), failed, batch(2, b"k=%d" % i)) for i in range(1, 5))
    tail += (Entry(LogIndex(5), failed, Value(Epoch(2), ValueKind.EPOCH_START)),)
    cell.stores[R2].persist(Durable(HardState(failed), tail))
    cell.restart(R2)
    cell.elect(R1, between((R1, R2)))  # r3 never hears of it
    prepares = [
        (e.message.ballot, e.message.from_index)
        for ready in cell.readys[R1]
        for e in ready.messages
        if isinstance(e.message, Prepare) and e.recipient == R2
    ]
    (became,) = [e for e in cell.events[R1] if isinstance(e, BecameMaster)]
    won = [i for b, i in prepares if b == became.ballot]
    assert won == [1, 3, 5]
    assert became.recovered_entries == 5
    assert [cell.chosen[LogIndex(i)] for i in range(1, 6)] == [e.value for e in tail]
    assert cell.chosen[LogIndex(6)] == Value(became.epoch, ValueKind.EPOCH_START)
    assert became.epoch > 2


# ----------------------------------------------------------------------------- ballots


def first_campaign(replica: Replica) -> Ballot:
    """Tick `replica` until it campaigns; the ballot it campaigns with."""
    for _ in range(100):
        replica.tick()
        for ready in drain(replica):
            for event in ready.events:
                if isinstance(event, Campaigning):
                    return event.ballot
    raise AssertionError(replica.status())


def test_each_replica_uses_only_its_own_rounds_the_lowest_above_all_seen() -> None:
    """Replica i of n campaigns with the lowest round above all seen that is i mod n (sorted)."""
    for members in (ALL[:3], tuple(reversed(ALL))):
        n = len(members)
        for rid in members:
            mine = sorted(members).index(rid)
            other = next(m for m in members if m != rid)
            for seen in range(12):
                replica = Replica(rid, membership_of_ids(members), TIMING, Limits(), NoChance())
                drain(replica)
                if seen:
                    replica.step(other, Prepare(Ballot(seen, other), LogIndex(1)))
                    drain(replica)
                ballot = first_campaign(replica)
                assert ballot.replica_id == rid
                assert ballot.round % n == mine
                assert seen < ballot.round <= seen + n, (rid, seen, ballot)


def test_next_ballot_clears_the_highest_ballot_a_nack_reported() -> None:
    """After a Nack a candidate's next round clears the promise it reported, and its own round."""
    replica = lone()
    first = first_campaign(replica)
    assert first == Ballot(3, R1)
    replica.step(R2, Nack(first, Ballot(20, R3), leased=False, chosen_index=LogIndex(0)))
    drain(replica)
    assert first_campaign(replica) == Ballot(21, R1)
    replica.step(R3, Nack(Ballot(21, R1), Ballot(2, R3), leased=True, chosen_index=LogIndex(0)))
    drain(replica)
    assert first_campaign(replica) == Ballot(24, R1)


def test_epoch_is_the_winning_round() -> None:
    """A new master's epoch is the round of the ballot it won with, and its EPOCH_START has it."""
    replica, ballot = campaigning_in_five()
    replica.step(R2, promise(ballot, 1))
    replica.step(R3, promise(ballot, 1))
    (ready,) = drain(replica)
    assert BecameMaster(ballot, Epoch(ballot.round), 0) in ready.events
    assert replica.epoch == ballot.round == 10
    accepts = {m.index: m.value for m in messages([ready], Accept)}
    assert accepts == {1: Value(Epoch(10), ValueKind.EPOCH_START)}


def test_registration_retried_after_a_fail_over_gets_the_same_client() -> None:
    """A registration retried through the next master gets the same client id, results kept."""
    cell = Cell()
    cell.elect(R3)
    client = cell.register(R3, nonce=77)
    cell.propose(R3, command(client, 1, b"k=1"))
    cell.run(2)
    cell.crash(R3)
    cell.elect(R2)
    assert cell.register(R2, nonce=77) == client
    assert cell.register(R2, nonce=78) == client + 1
    cell.propose(R2, command(client, 1, b"k=1"))
    cell.run(cell.timing.heartbeat_ticks + 1)
    for rid in (R1, R2):
        kinds = [o.kind for o in cell.outcomes[rid] if isinstance(o, Outcome)]
        assert kinds[-4:] == [
            OutcomeKind.APPLIED,
            OutcomeKind.REGISTERED,
            OutcomeKind.REGISTERED,
            OutcomeKind.DUPLICATE,
        ]
        registered = [o.client_id for o in cell.outcomes[rid] if isinstance(o, Outcome)][-3:-1]
        assert registered == [client, client + 1]


# ----------------------------------------------------------------------------- failed masterships


def crash_with_unchosen_mastership(
    cell: Cell, rid: ReplicaId, quorum: tuple[ReplicaId, ...]
) -> None:
    """`rid` wins phase 1 with `quorum`, proposes its EPOCH_START to no one, and crashes."""
    replica = cell.replicas[rid]
    while replica.status().role is not Role.CANDIDATE:
        others = [o for o in quorum if o != rid and cell.replicas[o].master_hint() is not None]
        cell.tick(rid, *others)
    cell.settle(both(between(quorum), of(Prepare, Promise)))
    assert replica.status().role is Role.MASTER
    cell.take()
    cell.crash(rid)


def test_failed_mastership_epoch_is_never_reused() -> None:
    """Two masterships never share an epoch, even when a failed one's entries reached no one."""
    cell = Cell()
    cell.elect(R1)  # known everywhere
    cell.run(2)
    cell.crash(R1)
    crash_with_unchosen_mastership(cell, R2, (R2, R3))  # its EPOCH_START only in r2's log
    cell.restart(R1)
    cell.elect(R1)  # with r3, which never saw r2's epoch
    became = [(rid, event.epoch) for rid, event in cell.history if isinstance(event, BecameMaster)]
    assert [rid for rid, _ in became] == [R1, R2, R1]
    epochs = [epoch for _, epoch in became]
    assert epochs == sorted(set(epochs)), epochs
    # r2's epoch never reached the log; r1's second one follows its first directly.
    assert cell.epochs_started() == [epochs[0], epochs[2]]


def replayed_epochs(cell: Cell) -> list[Epoch]:
    """An applier's current epoch after each entry of the cell's chosen log, in log order."""
    applier = Applier(DictMachine(), clients_max=8, client_results_max=8)
    trace = []
    for index in sorted(cell.chosen):
        applier.apply(Entry(index, Ballot(1, R1), cell.chosen[index]))
        trace.append(applier.epoch)
    return trace


def test_failed_mastership_epoch_start_chosen_late_is_a_no_op() -> None:
    """A failed mastership's EPOCH_START chosen after a newer one is a no-op; epochs never fall."""
    cell = Cell(5)
    cell.elect(R5)
    cell.run(2)
    cell.propose(R5, command(1, 1))  # index 2, accepted by r4 only
    cell.deliver(both(of(Accept), to(R4)))
    cell.take()
    cell.crash(R5)
    # r4 recovers index 2 with r1 and r2 and proposes its EPOCH_START at index 3, to no one.
    crash_with_unchosen_mastership(cell, R4, (R4, R1, R2))
    # r1 wins with r2 and r3; they never saw index 3, so r1's EPOCH_START lands at index 2.
    cell.elect(R1, between((R1, R2, R3)))
    cell.run(2, between((R1, R2, R3)))
    cell.crash(R1)
    # r2 wins with r3 and the restarted r4, which still holds its EPOCH_START at index 3.
    cell.restart(R4)
    cell.elect(R2, between((R2, R3, R4)))
    became = [(rid, event.epoch) for rid, event in cell.history if isinstance(event, BecameMaster)]
    assert [rid for rid, _ in became] == [R5, R4, R1, R2]
    e5, e4, e1, e2 = (epoch for _, epoch in became)
    assert e5 < e4 < e1 < e2  # each mastership's epoch is unique and above every earlier one
    assert cell.epochs_started() == [e5, e1, e4, e2]  # r4's, chosen late, below r1's
    client = cell.register(R2, nonce=5)
    cell.propose(R2, command(client, 1, b"k=1"))
    cell.restart(R1)
    cell.restart(R5)
    cell.run(3 * cell.timing.lease_ticks)
    assert cell.masters() == [R2]
    trace = replayed_epochs(cell)
    assert trace == sorted(trace), trace
    for rid in cell.members:
        assert cell.appliers[rid].epoch == e2
        assert cell.machines[rid].values == {b"k": b"1"}
    kinds = {o.kind for o in cell.outcomes[R3] if isinstance(o, Outcome)}
    assert kinds == {OutcomeKind.REGISTERED, OutcomeKind.APPLIED}


def test_unchosen_tail_longer_than_a_promise_does_not_block_elections() -> None:
    """A cell whose acceptors all hold more unchosen entries than a promise carries still elects."""
    limits = Limits(
        batch_entries_max=1, proposals_queued_max=1, proposals_inflight_max=1, catchup_entries_max=1
    )
    cell = Cell(limits=limits)
    cell.elect(R1)
    cell.run(2)
    # r1 fills its window (index 2); r2 and r3 accept it, but every reply is lost.
    cell.propose(R1, command(1, 1))
    cell.deliver(of(Accept))
    cell.take()
    cell.crash(R1)
    # r2 recovers index 2 with r3 and proposes it again, then its EPOCH_START at index 3; r3
    # accepts both, r1 gets them later; every reply is lost again, and r2 crashes.
    r2 = cell.replicas[R2]
    while r2.status().role is not Role.MASTER:
        leased = [R3] if cell.replicas[R3].master_hint() is not None else []
        cell.tick(R2, *leased)
        cell.settle(both(between((R2, R3)), of(Prepare, Promise, Nack)))
    held = cell.take(both(of(Accept), to(R1)))
    cell.deliver(both(of(Accept), to(R3)))
    cell.take()
    cell.crash(R2)
    cell.restart(R1)
    cell.tick(R1, times=cell.timing.lease_ticks)
    for envelope in held:
        cell.step(envelope)
    cell.take()
    cell.restart(R2)
    for rid in cell.members:
        assert cell.replicas[rid].status().last_index == 3
        assert cell.replicas[rid].status().chosen_index == 1
    cell.run(60)  # all three up, no message lost
    assert [rid for rid in cell.members if cell.replicas[rid].serving]
    # Every promise took two pages (one entry each, and the tail is two entries long).
    pages = {
        e.message.from_index
        for rid in cell.members
        for ready in cell.readys[rid]
        for e in ready.messages
        if isinstance(e.message, Prepare)
    }
    assert pages >= {LogIndex(2), LogIndex(3)}
    assert cell.chosen[LogIndex(2)].commands == (command(1, 1),)
    stepped = [e for _, e in cell.history if isinstance(e, SteppedDown)]
    assert StepDownReason.BEHIND not in {e.reason for e in stepped}
