"""Messages no correct peer could send are ignored: no reply, no state change, no later effect.

Each case pairs an implausible message with its plausible twin, which differs in one field:
the twin must have an effect, so the case really reaches the rule it tests.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chubbypy.paxos import HardState, Persisted, Ready, Replica, Role, membership_of_ids
from chubbypy.protocol import (
    NO_BALLOT,
    Accept,
    Accepted,
    Ballot,
    CatchUpRequest,
    Entry,
    Epoch,
    Heartbeat,
    HeartbeatAck,
    InstallSnapshot,
    LogIndex,
    Nack,
    PeerMessage,
    Prepare,
    Promise,
    ReplicaId,
    Snapshot,
    Value,
    ValueKind,
)
from tests.unit.paxos.harness import R1, R2, R3, drain, lone, messages

SEED = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))
"""The membership a snapshot's handle names in these tests."""

MINE = Ballot(3, R1)
"""The ballot r1 (replica 0 of 3) campaigns with first."""
NOOP = Value(Epoch(1), ValueKind.NOOP)
SNAPSHOT = Snapshot(LogIndex(4), b"state", SEED)
COMPACTED = Persisted(
    HardState(NO_BALLOT, LogIndex(5)), SNAPSHOT, (Entry(LogIndex(5), Ballot(1, R2), NOOP),)
)
"""A follower that snapshotted through index 4: a request from below that gets the snapshot."""

MASTER_TICK = 3


def follower() -> Replica:
    return lone(COMPACTED)


def candidate() -> Replica:
    replica = lone()
    replica.tick()
    drain(replica)
    assert replica.status().ballot == MINE
    return replica


def master() -> Replica:
    replica = candidate()
    replica.step(R2, Promise(MINE, LogIndex(1), (), LogIndex(0), more=False, behind=False))
    drain(replica)
    replica.tick(MASTER_TICK - 1)
    drain(replica)
    assert replica.status().role is Role.MASTER
    assert replica.tick_count == MASTER_TICK
    return replica


OTHERS = Ballot(5, R3)
"""A ballot of r3's, arriving from r2."""
CASES: dict[str, tuple[Callable[[], Replica], PeerMessage, PeerMessage]] = {
    "Prepare with another's ballot": (
        follower,
        Prepare(OTHERS, LogIndex(6)),
        Prepare(Ballot(5, R2), LogIndex(6)),
    ),
    "Accept with another's ballot": (
        follower,
        Accept(OTHERS, LogIndex(6), NOOP, LogIndex(5), 0),
        Accept(Ballot(5, R2), LogIndex(6), NOOP, LogIndex(5), 0),
    ),
    "Heartbeat with another's ballot": (
        follower,
        Heartbeat(OTHERS, LogIndex(5), 0),
        Heartbeat(Ballot(5, R2), LogIndex(5), 0),
    ),
    "Promise for another's ballot": (
        candidate,
        Promise(Ballot(3, R2), LogIndex(1), (), LogIndex(0), more=False, behind=False),
        Promise(MINE, LogIndex(1), (), LogIndex(0), more=False, behind=False),
    ),
    "Nack of another's ballot": (
        candidate,
        Nack(Ballot(3, R2), Ballot(20, R3), leased=False, chosen_index=LogIndex(5)),
        Nack(MINE, Ballot(20, R3), leased=False, chosen_index=LogIndex(5)),
    ),
    "Accepted for another's ballot": (
        master,
        Accepted(Ballot(3, R2), LogIndex(1), MASTER_TICK, LogIndex(0)),
        Accepted(MINE, LogIndex(1), MASTER_TICK, LogIndex(0)),
    ),
    "Accepted echoing a tick not yet reached": (
        master,
        Accepted(MINE, LogIndex(1), MASTER_TICK + 1, LogIndex(0)),
        Accepted(MINE, LogIndex(1), MASTER_TICK, LogIndex(0)),
    ),
    "HeartbeatAck for another's ballot": (
        master,
        HeartbeatAck(Ballot(3, R2), MASTER_TICK, LogIndex(0)),
        HeartbeatAck(MINE, MASTER_TICK, LogIndex(0)),
    ),
    "HeartbeatAck echoing a tick not yet reached": (
        master,
        HeartbeatAck(MINE, MASTER_TICK + 1, LogIndex(0)),
        HeartbeatAck(MINE, MASTER_TICK, LogIndex(0)),
    ),
    "CatchUpRequest from index 0": (
        follower,
        CatchUpRequest(LogIndex(0)),
        CatchUpRequest(LogIndex(1)),
    ),
}
SENDER = R2


def later(replica: Replica) -> list[Ready]:
    """What `replica` does over the next two leases with no other input."""
    readys = []
    for _ in range(40):
        replica.tick()
        readys.extend(drain(replica))
    return readys


@pytest.mark.parametrize("case", list(CASES))
def test_implausible_message_is_ignored(case: str) -> None:
    """It yields no Ready, no status change, and later the replica acts as if it never came."""
    setup, implausible, _ = CASES[case]
    replica, untouched = setup(), setup()
    before = replica.status()
    replica.step(SENDER, implausible)
    assert not replica.has_ready()
    assert replica.status() == before
    assert later(replica) == later(untouched)


@pytest.mark.parametrize("case", list(CASES))
def test_plausible_twin_has_an_effect(case: str) -> None:
    """The same message with the one field made plausible is acted on."""
    setup, _, plausible = CASES[case]
    replica, untouched = setup(), setup()
    replica.step(SENDER, plausible)
    assert replica.has_ready()
    assert later(replica) != later(untouched)


def test_catch_up_request_from_below_the_snapshot_gets_the_snapshot() -> None:
    """The plausible twin of CatchUpRequest(0): a request from index 1 gets the snapshot."""
    replica = follower()
    replica.step(R3, CatchUpRequest(LogIndex(1)))
    assert messages(drain(replica)) == [InstallSnapshot(SNAPSHOT)]
