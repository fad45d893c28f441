"""`persisted_problem`: what a replica needs to resume from its store, checked before it does.

A damaged store (a row lost, a value out of range) is named as such, so the replica refuses to
start with one clear line instead of tripping an assertion deep in the core.
"""

from __future__ import annotations

import pytest

from chubbypy.paxos import HardState, Persisted, membership_of_ids, persisted_problem
from chubbypy.protocol import (
    BALLOT_ROUND_MAX,
    LOG_INDEX_MAX,
    NO_BALLOT,
    ROUND_MAX,
    Ballot,
    Entry,
    Epoch,
    LogIndex,
    ReplicaId,
    Snapshot,
    Value,
    ValueKind,
)

SEED = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))
"""The membership a snapshot's handle names in these tests."""

R1 = ReplicaId("r1")
BALLOT = Ballot(3, R1)
NOOP = Value(Epoch(3), ValueKind.NOOP)


def log(*indices: int) -> tuple[Entry, ...]:
    return tuple(Entry(LogIndex(i), BALLOT, NOOP) for i in indices)


def persisted(
    chosen: int, indices: tuple[int, ...], snapshot: int | None = None, promised: Ballot = BALLOT
) -> Persisted:
    taken = None if snapshot is None else Snapshot(LogIndex(snapshot), b"state", SEED)
    return Persisted(HardState(promised, LogIndex(chosen)), taken, log(*indices))


@pytest.mark.parametrize(
    "sound",
    [
        Persisted(),
        persisted(0, ()),
        persisted(3, (1, 2, 3)),
        persisted(3, (1, 2, 3, 4, 9)),  # accepted, not yet chosen: gaps allowed
        persisted(6, (5, 6), snapshot=4),
        persisted(6, (2, 3, 4, 5, 6), snapshot=4),  # kept for lagging peers
        persisted(2, (), snapshot=4),  # the chosen index is written lazily
        persisted(0, (), promised=NO_BALLOT),
        persisted(LOG_INDEX_MAX, (LOG_INDEX_MAX,), snapshot=LOG_INDEX_MAX - 1),
        persisted(1, (1,), promised=Ballot(BALLOT_ROUND_MAX, R1)),
        # Its own campaigns may take a replica's promise above any round a peer sends.
        persisted(0, (), promised=Ballot(ROUND_MAX, R1)),
    ],
)
def test_what_a_replica_persists_has_no_problem(sound: Persisted) -> None:
    """Every shape a replica's own store takes resumes."""
    assert persisted_problem(sound) is None


@pytest.mark.parametrize(
    ("damaged", "problem"),
    [
        (persisted(3, (2, 3)), "log entry 1 is missing"),
        (persisted(3, (1, 3)), "log entry 2 is missing"),
        (persisted(3, (1, 2)), "log entry 3 is missing"),
        (persisted(7, (5, 7), snapshot=4), "log entry 6 is missing"),
        (Persisted(HardState(BALLOT, LogIndex(2)), None, log(2, 1)), "out of order"),
        (Persisted(HardState(BALLOT, LogIndex(1)), None, log(1, 1)), "out of order"),
        (persisted(0, (), promised=Ballot(ROUND_MAX + 1, R1)), "promised ballot"),
        (
            Persisted(
                HardState(BALLOT, LogIndex(1)),
                None,
                (Entry(LogIndex(1), Ballot(BALLOT_ROUND_MAX + 1, R1), NOOP),),
            ),
            "log entry 1's ballot",
        ),
        (persisted(0, (), promised=Ballot(0, R1)), "promised ballot"),
        (persisted(0, (), promised=Ballot(3, ReplicaId(""))), "promised ballot"),
        (persisted(LOG_INDEX_MAX + 1, ()), "the chosen index"),
        (persisted(0, (), snapshot=LOG_INDEX_MAX + 1), "the snapshot's index"),
        (persisted(0, (0,)), "log entry 0: its index is out of range"),
    ],
)
def test_a_damaged_store_is_named(damaged: Persisted, problem: str) -> None:
    """A missing chosen entry, entries out of order, or a value out of range is a problem."""
    found = persisted_problem(damaged)
    assert found is not None
    assert problem in found, found


def test_a_chosen_index_far_out_costs_no_more_than_the_entries() -> None:
    """A chosen index damaged to 2**46 is found from the three entries (counting to it would
    not finish)."""
    found = persisted_problem(persisted(2**46, (1, 2, 3)))
    assert found is not None
    assert "log entry 4 is missing" in found
