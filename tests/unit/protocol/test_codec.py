"""The msgpack codec: every value round-trips, and bad bytes raise DecodeError and nothing else."""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chubbypy.paxos import Limits, NoChance, Replica, Timing, membership_of_ids
from chubbypy.protocol import (
    NO_BALLOT,
    Accept,
    Accepted,
    Ballot,
    CatchUp,
    CatchUpRequest,
    ClientId,
    Command,
    Entry,
    Epoch,
    Heartbeat,
    HeartbeatAck,
    InstallSnapshot,
    LogIndex,
    Member,
    Membership,
    Nack,
    PeerMessage,
    Prepare,
    Promise,
    ReplicaId,
    Resign,
    Snapshot,
    Value,
    ValueKind,
)
from chubbypy.protocol.codec import (
    DecodeError,
    decode_entry,
    decode_message,
    decode_snapshot,
    decode_value,
    encode_entry,
    encode_message,
    encode_snapshot,
    encode_value,
)
from chubbypy.protocol.values import BALLOT_ROUND_MAX, EPOCH_MAX, LOG_INDEX_MAX

R1, R2, R3 = ReplicaId("r1"), ReplicaId("r2"), ReplicaId("r3")
TIMING = Timing(
    lease_ticks=20, master_lease_ticks=18, heartbeat_ticks=4, election_jitter_ticks=4, retry_ticks=4
)

# ----------------------------------------------------------------------------- strategies

counts = st.integers(min_value=0, max_value=2**63 - 1)
"""Ticks and client ids, sequences: anything a signed 64-bit integer holds."""
indices = st.integers(min_value=0, max_value=LOG_INDEX_MAX).map(LogIndex)
from_indices = st.integers(min_value=1, max_value=LOG_INDEX_MAX).map(LogIndex)
"""Where a Prepare or CatchUpRequest starts: the log begins at 1, so never 0 on the wire."""
replica_ids = st.text(min_size=1, max_size=12).map(ReplicaId)
ballots = st.one_of(
    st.just(NO_BALLOT), st.builds(Ballot, st.integers(1, BALLOT_ROUND_MAX), replica_ids)
)
epochs = st.integers(min_value=0, max_value=EPOCH_MAX).map(Epoch)
commands = st.builds(Command, counts.map(ClientId), counts, st.binary(max_size=64), counts)
addresses = st.text(min_size=1, max_size=40)


@st.composite
def memberships(draw: st.DrawFn) -> Membership:
    """Any membership the codec carries: 1 to 9 members in id order, any roles."""
    ids = sorted(set(draw(st.lists(replica_ids, min_size=1, max_size=9))))
    members = tuple(
        Member(rid, draw(addresses), draw(addresses), draw(st.booleans())) for rid in ids
    )
    return Membership(draw(st.integers(1, LOG_INDEX_MAX)), members)


values = st.one_of(
    st.builds(
        Value, epochs, st.sampled_from([k for k in ValueKind if k is not ValueKind.MEMBERSHIP])
    ).filter(lambda v: not v.commands),
    st.builds(
        Value, epochs, st.just(ValueKind.COMMANDS), st.lists(commands, max_size=4).map(tuple)
    ),
    st.builds(Value, epochs, st.just(ValueKind.MEMBERSHIP), st.just(()), memberships()),
)
entries = st.builds(Entry, from_indices, ballots, values)


@st.composite
def entry_lists(draw: st.DrawFn, low: int = 1) -> tuple[Entry, ...]:
    """Entries in increasing index order from `low`, as replicas send them."""
    positions = draw(st.lists(st.integers(low, LOG_INDEX_MAX), max_size=4, unique=True))
    return tuple(Entry(LogIndex(i), draw(ballots), draw(values)) for i in sorted(positions))


@st.composite
def promises(draw: st.DrawFn) -> Promise:
    """A promise page: its entries from its `from_index` on; `more` only with entries."""
    from_index = draw(from_indices)
    page = draw(entry_lists(from_index))
    more = bool(page) and draw(st.booleans())
    return Promise(draw(ballots), from_index, page, draw(indices), more, draw(st.booleans()))


snapshots = st.builds(Snapshot, from_indices, st.binary(max_size=64), memberships())
MESSAGES: dict[type, st.SearchStrategy[PeerMessage]] = {
    Prepare: st.builds(Prepare, ballots, from_indices),
    Promise: promises(),
    Accept: st.builds(Accept, ballots, from_indices, values, indices, counts),
    Accepted: st.builds(Accepted, ballots, from_indices, counts, indices),
    Heartbeat: st.builds(Heartbeat, ballots, indices, counts, indices),
    HeartbeatAck: st.builds(HeartbeatAck, ballots, counts, indices),
    Nack: st.builds(Nack, ballots, ballots, st.booleans(), indices),
    CatchUpRequest: st.builds(CatchUpRequest, from_indices),
    CatchUp: st.builds(CatchUp, entry_lists(), indices, memberships()),
    InstallSnapshot: st.builds(InstallSnapshot, snapshots),
    Resign: st.builds(Resign, ballots, st.sampled_from(["", "r1", "r2"]).map(ReplicaId)),
}


def test_every_message_type_has_a_strategy() -> None:
    """The round-trip test below covers every member of the PeerMessage union."""
    assert set(MESSAGES) == set(typing.get_args(PeerMessage))


@pytest.mark.parametrize("kind", list(MESSAGES), ids=lambda kind: kind.__name__)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_message_round_trips(kind: type, data: st.DataObject) -> None:
    """decode_message(encode_message(m)) == m for every message type."""
    message = data.draw(MESSAGES[kind])
    assert decode_message(encode_message(message)) == message


@settings(max_examples=60, deadline=None, derandomize=True)
@given(value=values, entry=entries, snapshot=snapshots)
def test_values_entries_and_snapshots_round_trip(
    value: Value, entry: Entry, snapshot: Snapshot
) -> None:
    """Values, entries and snapshots (what the stores keep) decode to what was encoded."""
    assert decode_value(encode_value(value)) == value
    assert decode_entry(encode_entry(entry)) == entry
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot


# ----------------------------------------------------------------------------- bad input


def pack(data: object) -> bytes:
    return bytes(msgpack.packb(data, use_bin_type=True))


BALLOT = [1, "r1"]
VALUE = [1, 2, [[1, 1, b"k=v", 0]]]
BAD_MESSAGES = {
    "not msgpack": b"\xc1",
    "truncated": pack([1, BALLOT, 1])[:-1],
    "trailing bytes": pack([8, 1]) + b"\x00",
    "not a list": pack({"tag": 1}),
    "empty list": pack([]),
    "unknown tag": pack([11, 1]),
    "tag zero": pack([0]),
    "tag as string": pack(["1", BALLOT, 1]),
    "tag as bool": pack([True, BALLOT, 1]),
    "too few fields": pack([1, BALLOT]),
    "too many fields": pack([1, BALLOT, 1, 2]),
    "ballot as string": pack([1, "1.r1", 1]),
    "ballot of three": pack([1, [1, "r1", 0], 1]),
    "replica id as bytes": pack([1, [1, b"r1"], 1]),
    "index as float": pack([1, BALLOT, 1.0]),
    "index as bool": pack([8, True]),
    "index as nil": pack([8, None]),
    "negative index": pack([8, -1]),
    "negative round": pack([1, [-1, "r1"], 1]),
    "negative sent tick": pack([5, BALLOT, 1, -5]),
    "promise without behind": pack([2, BALLOT, 1, [], 0, False]),
    "more as int": pack([2, BALLOT, 1, [], 0, 1, False]),
    "behind as int": pack([2, BALLOT, 1, [], 0, False, 0]),
    "prepare from index zero": pack([1, BALLOT, 0]),
    "catch-up request from index zero": pack([8, 0]),
    "entry index zero": pack([9, [[0, BALLOT, VALUE]], 0]),
    "entry of two": pack([9, [[1, BALLOT]], 0]),
    "unknown value kind": pack([3, BALLOT, 1, [1, 9, []], 0, 0]),
    "value kind as string": pack([3, BALLOT, 1, [1, "NOOP", []], 0, 0]),
    "commands on a noop": pack([3, BALLOT, 1, [1, 0, [[1, 1, b"", 0]]], 0, 0]),
    "payload as string": pack([3, BALLOT, 1, [1, 2, [[1, 1, "k=v", 0]]], 0, 0]),
    "command of three": pack([3, BALLOT, 1, [1, 2, [[1, 1, b""]]], 0, 0]),
    "snapshot data as list": pack([10, [1, []]]),
    "snapshot with an epoch": pack([10, [1, 1, b""]]),
    "invalid utf-8": b"\x93\x01\x92\x01\xa2\xff\xfe\x01",
    "map with int keys": pack([8, {1: 2}]),
}


@pytest.mark.parametrize("data", list(BAD_MESSAGES.values()), ids=list(BAD_MESSAGES))
def test_malformed_message_raises_decode_error(data: bytes) -> None:
    """Each malformed message raises DecodeError."""
    with pytest.raises(DecodeError):
        decode_message(data)


DECODERS: list[Callable[[bytes], object]] = [
    decode_message,
    decode_value,
    decode_entry,
    decode_snapshot,
]


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_error(
    decode: Callable[[bytes], object], data: bytes
) -> None:
    """Whatever bytes a decoder is given, it returns a value or raises DecodeError."""
    with contextlib.suppress(DecodeError):
        decode(data)


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda children: st.lists(children, max_size=6),
    max_leaves=20,
)
"""Plain msgpack data shaped like our arrays, so the fuzzing reaches the field parsers."""


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
@settings(max_examples=80, deadline=None, derandomize=True)
@given(tag=st.integers(0, 11), fields=st.lists(plain, max_size=6))
def test_arbitrary_arrays_raise_only_decode_error(
    decode: Callable[[bytes], object], tag: int, fields: list[object]
) -> None:
    """Well-formed msgpack arrays of the wrong shape give a value or DecodeError, nothing else."""
    for data in (pack([tag, *fields]), pack(fields)):
        with contextlib.suppress(DecodeError):
            decode(data)


# ----------------------------------------------------------------------------- from_index


@pytest.mark.parametrize(
    ("tag", "build"),
    [
        (1, lambda i: Prepare(Ballot(1, R1), LogIndex(i))),
        (8, lambda i: CatchUpRequest(LogIndex(i))),
    ],
    ids=["Prepare", "CatchUpRequest"],
)
def test_from_index_zero_is_refused_and_one_decodes(
    tag: int, build: Callable[[int], PeerMessage]
) -> None:
    """A Prepare or CatchUpRequest from index 0 raises DecodeError; from index 1 it decodes."""
    fields = [BALLOT] if tag == 1 else []
    with pytest.raises(DecodeError, match=">= 1"):
        decode_message(pack([tag, *fields, 0]))
    assert decode_message(pack([tag, *fields, 1])) == build(1)


def test_a_catch_up_request_from_index_zero_never_crashes_a_replica() -> None:
    """The codec refuses CatchUpRequest(0); handed one anyway, a replica ignores it silently."""
    with pytest.raises(DecodeError):
        decode_message(pack([8, 0]))
    replica = Replica(R1, membership_of_ids((R1, R2, R3)), TIMING, Limits(), NoChance())
    while replica.has_ready():
        replica.advance(replica.ready())
    replica.step(R2, CatchUpRequest(LogIndex(0)))  # no snapshot: it once tripped an assertion
    assert not replica.has_ready()
