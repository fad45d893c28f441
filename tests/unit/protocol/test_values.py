"""Log values: ballot ordering and the sizes batches are cut by."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chubbypy.protocol import (
    COMMAND_OVERHEAD_BYTES,
    NO_BALLOT,
    Ballot,
    ClientId,
    Command,
    Epoch,
    ReplicaId,
    Value,
    ValueKind,
)

ballots = st.builds(
    Ballot, st.integers(0, 5), st.sampled_from(["", "r1", "r2", "r10"]).map(ReplicaId)
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(a=ballots, b=ballots)
def test_ballots_order_by_round_then_replica(a: Ballot, b: Ballot) -> None:
    """Ballot comparisons agree with (round, replica_id) order and with equality."""
    key_a, key_b = (a.round, a.replica_id), (b.round, b.replica_id)
    assert (a < b, a <= b, a > b, a >= b, a == b) == (
        key_a < key_b,
        key_a <= key_b,
        key_a > key_b,
        key_a >= key_b,
        key_a == key_b,
    )
    assert [a < b, a == b, a > b].count(True) == 1
    highest = max(a, b)
    assert (highest.round, highest.replica_id) == max(key_a, key_b)
    if a == b:
        assert hash(a) == hash(b)


def test_no_ballot_is_below_every_real_ballot() -> None:
    """NO_BALLOT sorts below any ballot with a round of 1 or more, whoever owns it."""
    assert all(Ballot(1, ReplicaId(r)) > NO_BALLOT for r in ("", "a", "r1"))


def test_value_size_counts_payload_and_overhead() -> None:
    """A value's size is the sum of its commands' payloads plus a fixed overhead each."""
    commands = tuple(Command(ClientId(1), n, b"x" * n) for n in range(4))
    value = Value(Epoch(1), ValueKind.COMMANDS, commands)
    assert value.size_bytes == 0 + 1 + 2 + 3 + 4 * COMMAND_OVERHEAD_BYTES
