"""The master's proposals: batching, the pipeline window, refusals, checksums and boosts."""

from __future__ import annotations

from chubbypy.paxos import (
    ChecksumTaken,
    Limits,
    OutcomeKind,
    RefusalReason,
    Refused,
    Role,
    StepDownReason,
    SteppedDown,
)
from chubbypy.protocol import (
    COMMAND_OVERHEAD_BYTES,
    Accept,
    Accepted,
    Ballot,
    Entry,
    Envelope,
    Epoch,
    LogIndex,
    Nack,
    Prepare,
    Promise,
    Value,
    ValueKind,
)
from tests.unit.paxos.harness import (
    R1,
    R2,
    R3,
    TIMING,
    Cell,
    both,
    command,
    from_,
    of,
    to,
)


def serving(limits: Limits) -> Cell:
    """A cell whose master r3 serves epoch 2 (its first round; EPOCH_START at index 1) and has a
    client, id 1."""
    cell = Cell(limits=limits)
    cell.elect(R3)
    assert cell.replicas[R3].epoch == 2
    assert cell.register(R3) == 1
    return cell


def accepts_in_flight(cell: Cell) -> dict[int, Value]:
    """The instances the master has Accepts in flight for (to r1), by index."""
    return {
        e.message.index: e.message.value
        for e in cell.network
        if isinstance(e.message, Accept) and e.recipient == R1
    }


def payloads(value: Value) -> list[bytes]:
    return [c.payload for c in value.commands]


def test_commands_queued_behind_a_full_window_are_batched() -> None:
    """Commands proposed while the window is full go out in batches of batch_entries_max."""
    cell = serving(Limits(batch_entries_max=3, proposals_inflight_max=2, catchup_entries_max=8))
    master = cell.replicas[R3]
    cell.propose(R3, command(1, 1, b"a=1"))
    cell.propose(R3, command(1, 2, b"b=2"))
    assert sorted(accepts_in_flight(cell)) == [3, 4]
    cell.propose(R3, *(command(1, n, b"x=%d" % n) for n in range(3, 10)))
    assert master.status().queued_commands == 7
    assert master.status().inflight_instances == 2
    cell.settle()
    cell.run(2)
    assert [payloads(cell.chosen[LogIndex(i)]) for i in (5, 6, 7)] == [
        [b"x=3", b"x=4", b"x=5"],
        [b"x=6", b"x=7", b"x=8"],
        [b"x=9"],
    ]
    assert master.status().queued_commands == 0


def test_batches_respect_batch_bytes_max() -> None:
    """A batch never holds more bytes of commands (payload plus overhead) than batch_bytes_max."""
    limits = Limits(batch_bytes_max=100, proposals_inflight_max=1, catchup_entries_max=8)
    cell = serving(limits)
    small = 50 - COMMAND_OVERHEAD_BYTES  # two fit in 100 bytes, three do not
    cell.propose(R3, command(1, 1, b"k=" + b"v" * (small - 2)))
    cell.propose(R3, *(command(1, n, b"k=" + b"v" * (small - 2)) for n in range(2, 7)))
    cell.settle()
    cell.run(6)
    sizes = [len(cell.chosen[LogIndex(i)].commands) for i in range(3, 7)]
    assert sizes == [1, 2, 2, 1]
    assert all(cell.chosen[LogIndex(i)].size_bytes <= 100 for i in range(3, 7))


def test_window_never_exceeds_proposals_inflight_max() -> None:
    """Whatever the order of arrival, at most proposals_inflight_max instances are in flight."""
    limits = Limits(batch_entries_max=1, proposals_inflight_max=3, catchup_entries_max=8)
    cell = serving(limits)
    master = cell.replicas[R3]
    cell.propose(R3, *(command(1, n) for n in range(1, 13)))
    for _ in range(200):
        status = master.status()
        assert status.inflight_instances <= 3
        assert status.last_index - status.chosen_index <= 3
        unchosen = [i for i in accepts_in_flight(cell) if i > status.chosen_index]
        assert len(unchosen) <= 3
        if not cell.network:
            break
        cell.step(cell.network.pop())  # newest first: replies overtake requests
    assert master.status().chosen_index == 2 + 12


def test_queue_bound_refuses_as_overloaded() -> None:
    """Commands beyond proposals_queued_max are refused as OVERLOADED and none of them queued."""
    limits = Limits(
        batch_entries_max=2, proposals_queued_max=4, proposals_inflight_max=1, catchup_entries_max=8
    )
    cell = serving(limits)
    master = cell.replicas[R3]
    epoch = master.epoch
    assert master.propose([command(1, 1)], epoch) is None  # in flight
    assert master.propose([command(1, n) for n in (2, 3, 4)], epoch) is None  # queued
    overloaded = Refused(RefusalReason.OVERLOADED)
    assert master.propose([command(1, 5), command(1, 6)], epoch) == overloaded
    assert master.status().queued_commands == 3
    assert master.propose([command(1, 5)], epoch) is None
    assert master.request_checksum(epoch) == overloaded


def test_oversize_command_is_refused_as_too_large() -> None:
    """A command larger than batch_bytes_max is refused as TOO_LARGE, with its whole proposal."""
    cell = serving(Limits(batch_bytes_max=64, catchup_entries_max=256))
    master = cell.replicas[R3]
    too_big = command(1, 2, b"k=" + b"v" * (64 - COMMAND_OVERHEAD_BYTES))
    refused = master.propose([command(1, 1), too_big], master.epoch)
    assert refused == Refused(RefusalReason.TOO_LARGE)
    assert master.status().queued_commands == 0
    assert master.status().inflight_instances == 0


def test_proposal_under_another_epoch_is_refused() -> None:
    """A proposal validated under any epoch but the master's is refused as EPOCH_CHANGED."""
    cell = serving(Limits())
    master = cell.replicas[R3]
    refused = master.propose([command(1, 1)], Epoch(master.epoch - 1))
    assert refused == Refused(RefusalReason.EPOCH_CHANGED)
    assert master.request_checksum(Epoch(master.epoch + 1)) == refused


def test_followers_refuse_proposals() -> None:
    """Only the serving master takes proposals; a follower answers NOT_MASTER."""
    cell = serving(Limits())
    refused = cell.replicas[R1].propose([command(1, 1)], Epoch(1))
    assert refused == Refused(RefusalReason.NOT_MASTER)


def test_checksum_request_is_an_instance_of_its_own() -> None:
    """A checksum request between queued commands becomes its own CHECKSUM instance."""
    cell = serving(Limits(proposals_inflight_max=1, catchup_entries_max=8))
    master = cell.replicas[R3]
    cell.propose(R3, command(1, 1, b"a=1"))
    cell.propose(R3, command(1, 2, b"b=2"), command(1, 3, b"c=3"))
    assert master.request_checksum(master.epoch) is None
    cell.propose(R3, command(1, 4, b"d=4"))
    cell.settle()
    cell.run(4)
    kinds = [cell.chosen[LogIndex(i)].kind for i in range(3, 7)]
    assert kinds == [ValueKind.COMMANDS, ValueKind.COMMANDS, ValueKind.CHECKSUM, ValueKind.COMMANDS]
    assert payloads(cell.chosen[LogIndex(4)]) == [b"b=2", b"c=3"]
    sums = {o for rid in cell.members for o in cell.outcomes[rid] if isinstance(o, ChecksumTaken)}
    assert len(sums) == 1
    assert sums.pop().index == 5


# ----------------------------------------------------------------------------- boost


def nack_to_master(cell: Cell, promised: Ballot) -> Envelope:
    """r1 tells master r3 it promised `promised` (as if a candidate had reached it)."""
    ballot = cell.replicas[R3].status().ballot
    return Envelope(R1, R3, Nack(ballot, promised, leased=False, chosen_index=LogIndex(0)))


def test_boost_keeps_the_epoch_and_the_window_whole() -> None:
    """A leased master nacked by a higher ballot runs phase 1 again, keeps its epoch, commits on."""
    cell = serving(Limits(batch_entries_max=1, proposals_inflight_max=4, catchup_entries_max=8))
    master = cell.replicas[R3]
    epoch = master.epoch
    cell.propose(R3, *(command(1, n) for n in range(1, 5)))  # indices 3 to 6
    # Index 4 is chosen ahead of 3 before the boost; 5 and 6 are accepted by r3 alone.
    cell.deliver(both(of(Accept), to(R1), lambda e: e.message.index == 4))
    cell.deliver(of(Accepted))
    assert master.status().chosen_index == 2
    assert master.lease_valid()
    cell.step(nack_to_master(cell, Ballot(9, R1)))
    # r3 is replica 2 of 3: the lowest round above 9 that is 2 mod 3 is 11.
    prepares = {e.message for e in cell.network if isinstance(e.message, Prepare)}
    assert prepares == {Prepare(Ballot(11, R3), LogIndex(3))}
    assert (master.status().role, master.epoch, master.serving) == (Role.MASTER, epoch, True)
    cell.propose(R3, command(1, 5))  # queued behind the boost
    cell.take(of(Accept))  # r3's other first-ballot Accepts are lost
    cell.settle(of(Prepare, Promise))
    # The boost is won: every index from 3 to 6 is proposed again at the new ballot, none skipped.
    status = master.status()
    assert (status.chosen_index, status.last_index, status.inflight_instances) == (2, 6, 4)
    again = {e.message.index for e in cell.network if of(Accept)(e) and e.recipient == R2}
    assert again == {3, 4, 5, 6}
    cell.settle()
    cell.run(TIMING.heartbeat_ticks + 1)  # followers learn the chosen index from a heartbeat
    status = master.status()
    assert status.ballot == Ballot(11, R3)
    assert status.chosen_index == status.last_index == 7
    assert cell.epochs_started() == [epoch]
    applied = [o.sequence for o in cell.outcomes[R1] if o.kind is OutcomeKind.APPLIED]
    assert applied == [1, 2, 3, 4, 5]
    cell.propose(R3, command(1, 6))
    cell.run(TIMING.heartbeat_ticks + 1)  # followers learn index 8 from the next heartbeat
    assert cell.replicas[R1].status().chosen_index == 8


def test_master_without_a_lease_steps_down_on_a_higher_ballot() -> None:
    """A master whose lease is not (yet) valid gives up when nacked by a higher ballot."""
    cell = Cell()
    master = cell.replicas[R3]
    cell.tick(R3)
    cell.settle(of(Prepare, Promise))
    assert master.status().role is Role.MASTER
    assert not master.lease_valid()
    cell.take()
    cell.step(nack_to_master(cell, Ballot(9, R1)))
    assert master.status().role is Role.FOLLOWER
    (event,) = [e for e in cell.events[R3] if isinstance(e, SteppedDown)]
    assert event.reason is StepDownReason.HIGHER_BALLOT


def test_boost_that_finds_a_newer_epoch_steps_down() -> None:
    """A boosting master whose promises report a value of a later epoch steps down."""
    cell = serving(Limits())
    master = cell.replicas[R3]
    epoch, ballot = master.epoch, master.status().ballot
    cell.step(nack_to_master(cell, Ballot(9, R1)))
    cell.take()
    # r1 won with round 9 meanwhile: its epoch is 9, above r3's.
    assert epoch < 9
    newer = Entry(LogIndex(3), Ballot(9, R1), Value(Epoch(9), ValueKind.EPOCH_START))
    promise = Promise(Ballot(11, R3), LogIndex(3), (newer,), LogIndex(2), more=False, behind=False)
    cell.step(Envelope(R1, R3, promise))
    assert master.status().role is Role.FOLLOWER
    (event,) = [e for e in cell.events[R3] if isinstance(e, SteppedDown)]
    assert event == SteppedDown(Role.MASTER, epoch, ballot, StepDownReason.HIGHER_BALLOT)
    assert master.master_hint() != R3


def test_boost_that_finds_an_older_failed_epoch_start_keeps_serving() -> None:
    """A boost that finds a failed mastership's older EPOCH_START re-proposes it and serves on."""
    cell = serving(Limits())
    master = cell.replicas[R3]
    epoch = master.epoch
    assert epoch > 1
    cell.step(nack_to_master(cell, Ballot(9, R1)))
    cell.take()
    stale = Value(Epoch(1), ValueKind.EPOCH_START)  # round 1: r2's, a mastership that failed
    reported = Entry(LogIndex(3), Ballot(1, R2), stale)
    promise = Promise(Ballot(11, R3), LogIndex(3), (reported,), LogIndex(2), False, False)
    cell.step(Envelope(R1, R3, promise))
    assert (master.status().role, master.epoch, master.serving) == (Role.MASTER, epoch, True)
    assert master.status().ballot == Ballot(11, R3)
    cell.propose(R3, command(1, 1, b"a=1"))
    cell.settle()
    cell.run(TIMING.heartbeat_ticks + 1)
    assert cell.chosen[LogIndex(3)] == stale
    assert cell.epochs_started() == [epoch, 1]
    for rid in cell.members:
        assert cell.appliers[rid].epoch == epoch
        assert [o.kind for o in cell.outcomes[rid][-1:]] == [OutcomeKind.APPLIED]


def test_nack_for_a_lease_refusal_does_not_boost() -> None:
    """A Nack whose promised ballot is not above the master's (a lease refusal) changes nothing."""
    cell = serving(Limits())
    master = cell.replicas[R3]
    ballot = master.status().ballot
    lease_refusal = Nack(
        ballot, Ballot(ballot.round - 1, R1), leased=True, chosen_index=LogIndex(0)
    )
    cell.step(Envelope(R1, R3, lease_refusal))
    assert not [e for e in cell.network if isinstance(e.message, Prepare)]
    assert master.status().ballot == ballot
    assert not cell.network or all(from_(R3)(e) for e in cell.network)
