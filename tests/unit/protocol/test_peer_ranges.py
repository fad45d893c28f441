"""Every value a peer sends is checked at decode (issue 13, item 4): types, ranges, structure.

A Paxos message that decodes holds only integers that fit a signed 64-bit integer, and the
ranges below them that the core relies on (a ballot round an epoch can be, a log index whose
node instances fit); garbage raises DecodeError and nothing else, so the connection it came
on is closed and nothing is used. The last tests step decoded messages at the very edges of
their ranges into a replica and persist what it decides to a real SQLite store: nothing
overflows on the way to the disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from attrs import fields, has
from hypothesis import given, settings
from hypothesis import strategies as st

from chubbypy.paxos import (
    Durable,
    Limits,
    NoChance,
    Replica,
    Timing,
    membership_of_ids,
    persisted_problem,
)
from chubbypy.protocol import (
    BALLOT_ROUND_MAX,
    EPOCH_MAX,
    LOG_INDEX_MAX,
    MESSAGE_COMMANDS_MAX,
    MESSAGE_ENTRIES_MAX,
    REPLICA_ID_CHARS_MAX,
    ROUND_MAX,
    TICK_MAX,
    Ballot,
    PeerMessage,
    Prepare,
    ReplicaId,
    codec,
)
from chubbypy.protocol.client import STATE_CHECKSUM_BYTES, ChecksumReport, PeerFragment, PeerFrame
from chubbypy.protocol.codec import DecodeError, decode_message, encode_message
from chubbypy.protocol.wire import decode_wire
from chubbypy.store import MemoryStore, SqlStore
from tests.unit.protocol.test_codec import MESSAGES

PLAIN_MEMBERSHIP = [1, [[r, r, r, True] for r in ("r1", "r2", "r3")]]
"""A membership as it crosses the wire: CatchUp and InstallSnapshot carry one."""
INT64_MAX = 2**63 - 1
R1, R2, R3 = ReplicaId("r1"), ReplicaId("r2"), ReplicaId("r3")


def pack(data: object) -> bytes:
    return bytes(msgpack.packb(data, use_bin_type=True))


def ballot(round_: int = 1, name: str = "r2") -> list[Any]:
    return [round_, name]


def noop(epoch: int = 1) -> list[Any]:
    return [epoch, 0, []]


def batch(count: int, *, epoch: int = 1, client: int = 1, sequence: int = 1) -> list[Any]:
    return [epoch, 2, [[client, sequence, b"", 0]] * count]


def entry(index: int, value: list[Any] | None = None, round_: int = 1) -> list[Any]:
    return [index, ballot(round_), noop() if value is None else value]


# ----------------------------------------------------------------------------- ranges

# (what, a message with the value at its limit, the same with the value one past it)
EDGES: list[tuple[str, Callable[[int], bytes], int]] = [
    ("heartbeat ballot round", lambda n: pack([5, ballot(n), 0, 0, 0]), BALLOT_ROUND_MAX),
    ("prepare ballot round", lambda n: pack([1, ballot(n), 1]), BALLOT_ROUND_MAX),
    ("nack promised round", lambda n: pack([7, ballot(), ballot(n), False, 0]), BALLOT_ROUND_MAX),
    (
        "entry ballot round",
        lambda n: pack([9, [entry(1, round_=n)], 1, PLAIN_MEMBERSHIP]),
        BALLOT_ROUND_MAX,
    ),
    ("accept index", lambda n: pack([3, ballot(), n, noop(), 0, 0]), LOG_INDEX_MAX),
    ("accept chosen index", lambda n: pack([3, ballot(), 1, noop(), n, 0]), LOG_INDEX_MAX),
    ("accepted index", lambda n: pack([4, ballot(), n, 0, 0]), LOG_INDEX_MAX),
    ("heartbeat chosen index", lambda n: pack([5, ballot(), n, 0, 0]), LOG_INDEX_MAX),
    ("heartbeat last index", lambda n: pack([5, ballot(), 0, 0, n]), LOG_INDEX_MAX),
    ("prepare from index", lambda n: pack([1, ballot(), n]), LOG_INDEX_MAX),
    ("catch-up request index", lambda n: pack([8, n]), LOG_INDEX_MAX),
    ("catch-up entry index", lambda n: pack([9, [entry(n)], 0, PLAIN_MEMBERSHIP]), LOG_INDEX_MAX),
    ("catch-up chosen index", lambda n: pack([9, [], n, PLAIN_MEMBERSHIP]), LOG_INDEX_MAX),
    ("promise chosen index", lambda n: pack([2, ballot(), 1, [], n, False, False]), LOG_INDEX_MAX),
    ("snapshot index", lambda n: pack([10, [n, b"", PLAIN_MEMBERSHIP]]), LOG_INDEX_MAX),
    ("value epoch", lambda n: pack([3, ballot(), 1, noop(n), 0, 0]), EPOCH_MAX),
    ("accept sent tick", lambda n: pack([3, ballot(), 1, noop(), 0, n]), TICK_MAX),
    ("heartbeat-ack tick", lambda n: pack([6, ballot(), n, 0, True]), TICK_MAX),
    (
        "command client",
        lambda n: pack([9, [entry(1, [1, 2, [[n, 1, b"", 0]]])], 1, PLAIN_MEMBERSHIP]),
        INT64_MAX,
    ),
    (
        "command sequence",
        lambda n: pack([9, [entry(1, [1, 2, [[1, n, b"", 0]]])], 1, PLAIN_MEMBERSHIP]),
        INT64_MAX,
    ),
    (
        "command unacked",
        lambda n: pack([9, [entry(1, [1, 2, [[1, 1, b"", n]]])], 1, PLAIN_MEMBERSHIP]),
        INT64_MAX,
    ),
]


@pytest.mark.parametrize(("what", "make", "limit"), EDGES, ids=[e[0] for e in EDGES])
def test_a_value_at_its_limit_decodes_and_one_past_it_is_refused(
    what: str, make: Callable[[int], bytes], limit: int
) -> None:
    """Each integer a peer sends decodes up to its limit and raises DecodeError past it."""
    decode_message(make(limit))
    with pytest.raises(DecodeError, match="above the limit"):
        decode_message(make(limit + 1))


@pytest.mark.parametrize("value", [2**63, 2**64 - 1, -1, -(2**63)])
def test_integers_past_64_bits_or_negative_are_refused(value: int) -> None:
    """The Heartbeat of issue 13 (ballot round 2**63), and its kin, never decode."""
    for make, _limit in [(e[1], e[2]) for e in EDGES]:
        with pytest.raises(DecodeError):
            decode_message(make(value))


def test_the_ranges_leave_room_for_what_is_derived_from_them() -> None:
    """An epoch's handle ids and an index's node instances fit a signed 64-bit integer, even
    from the next ballot a replica of the largest cell takes above the highest round."""
    from chubbypy.namespace._tree import INSTANCES_PER_INDEX
    from chubbypy.protocol.client import REPLICAS_MAX
    from chubbypy.sessions._handles import HANDLE_COUNTER_BITS, handle_id_for

    assert EPOCH_MAX == BALLOT_ROUND_MAX
    assert BALLOT_ROUND_MAX + REPLICAS_MAX <= ROUND_MAX
    assert handle_id_for(ROUND_MAX, (1 << HANDLE_COUNTER_BITS) - 1) <= INT64_MAX
    assert LOG_INDEX_MAX * INSTANCES_PER_INDEX + INSTANCES_PER_INDEX - 1 <= INT64_MAX


@pytest.mark.parametrize(
    ("what", "plain"),
    [
        ("a round with no replica", [5, [3, ""], 0, 0, 0]),
        ("a replica's ballot at round 0", [5, [0, "r2"], 0, 0, 0]),
        ("a replica id too long", [5, [3, "r" * (REPLICA_ID_CHARS_MAX + 1)], 0, 0, 0]),
        ("a successor id too long", [11, [3, "r2"], "r" * (REPLICA_ID_CHARS_MAX + 1), 0]),
        ("an accept at index 0", [3, ballot(), 0, noop(), 0, 0]),
        ("an accepted at index 0", [4, ballot(), 0, 0, 0]),
        ("a snapshot at index 0", [10, [0, b"", PLAIN_MEMBERSHIP]]),
        ("catch-up entries out of order", [9, [entry(2), entry(1)], 2, PLAIN_MEMBERSHIP]),
        ("catch-up entries repeated", [9, [entry(1), entry(1)], 1, PLAIN_MEMBERSHIP]),
        ("a promise page before its start", [2, ballot(), 5, [entry(4)], 5, False, False]),
        ("a promise with more but no entries", [2, ballot(), 1, [], 0, True, False]),
    ],
)
def test_structure_no_replica_sends_is_refused(what: str, plain: list[Any]) -> None:
    """Messages a correct replica never sends are refused at decode."""
    with pytest.raises(DecodeError):
        decode_message(pack(plain))


def test_no_ballot_itself_still_decodes() -> None:
    """Round 0 with no replica is NO_BALLOT (an acceptor that never promised may report it)."""
    message = decode_message(pack([7, ballot(), [0, ""], False, 0]))
    assert message.promised == Ballot(0, ReplicaId(""))  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- counts


def test_entries_per_message_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to MESSAGE_ENTRIES_MAX entries decode (here lowered to 4); one more is refused."""
    monkeypatch.setattr(codec, "MESSAGE_ENTRIES_MAX", 4)
    decode_message(pack([9, [entry(i) for i in range(1, 5)], 0, PLAIN_MEMBERSHIP]))
    with pytest.raises(DecodeError, match="5 entries in one message: at most 4"):
        decode_message(pack([9, [entry(i) for i in range(1, 6)], 0, PLAIN_MEMBERSHIP]))


def test_commands_per_value_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to VALUE_COMMANDS_MAX commands make a value (here lowered to 3); one more is refused."""
    monkeypatch.setattr(codec, "VALUE_COMMANDS_MAX", 3)
    decode_message(pack([3, ballot(), 1, batch(3), 0, 0]))
    with pytest.raises(DecodeError, match="a value of 4 commands: at most 3"):
        decode_message(pack([3, ballot(), 1, batch(4), 0, 0]))


def test_commands_per_message_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries of up to MESSAGE_COMMANDS_MAX commands in all decode (here lowered to 5)."""
    monkeypatch.setattr(codec, "MESSAGE_COMMANDS_MAX", 5)
    page = [entry(1, batch(3)), entry(2, batch(2))]
    decode_message(pack([9, page, 2, PLAIN_MEMBERSHIP]))
    with pytest.raises(DecodeError, match="6 commands in one message: at most 5"):
        decode_message(pack([9, [*page, entry(3, batch(1))], 3, PLAIN_MEMBERSHIP]))


def test_counts_are_checked_before_anything_is_built() -> None:
    """Past the real limits a message is refused on its counts alone, before its items are
    parsed (these items would not even parse): a peer cannot make a replica build more."""
    entries = [None] * (MESSAGE_ENTRIES_MAX + 1)
    with pytest.raises(DecodeError, match="entries in one message"):
        decode_message(pack([9, entries, 0, PLAIN_MEMBERSHIP]))
    commands = [None] * (MESSAGE_COMMANDS_MAX // MESSAGE_ENTRIES_MAX + 1)
    page = [[i, None, [1, 2, commands]] for i in range(1, MESSAGE_ENTRIES_MAX + 1)]
    with pytest.raises(DecodeError, match="commands in one message"):
        decode_message(pack([9, page, 0, PLAIN_MEMBERSHIP]))


# ----------------------------------------------------------------------------- the wire


def peer(plain: list[Any]) -> bytes:
    return pack([30, pack(plain)])


def test_a_peer_frame_with_a_value_out_of_range_is_refused() -> None:
    """decode_wire refuses a PeerFrame whose message is out of range (the connection closes)."""
    good = peer([5, ballot(3), 0, 0, 0])
    assert isinstance(decode_wire(good), PeerFrame)
    with pytest.raises(DecodeError, match="above the limit"):
        decode_wire(peer([5, ballot(2**63), 0, 0, 0]))


@pytest.mark.parametrize(
    ("total", "offset", "data", "decodes"),
    [
        (10, 0, b"0123456789", True),
        (10, 8, b"89", True),
        (10, 9, b"89", False),
        (0, 0, b"", False),
        (10, 0, b"", False),
        (2**63, 0, b"x", False),
        (10, 2**63, b"x", False),
    ],
)
def test_a_fragment_lies_inside_its_message(
    total: int, offset: int, data: bytes, decodes: bool
) -> None:
    """A fragment has data, and its bytes lie within the message's total length."""
    body = pack([32, total, offset, data])
    if decodes:
        assert decode_wire(body) == PeerFragment(total, offset, data)
    else:
        with pytest.raises(DecodeError):
            decode_wire(body)


@pytest.mark.parametrize(
    ("index", "checksum", "decodes"),
    [
        (1, b"\x00" * STATE_CHECKSUM_BYTES, True),
        (LOG_INDEX_MAX, b"\xff" * STATE_CHECKSUM_BYTES, True),
        (0, b"\x00" * STATE_CHECKSUM_BYTES, False),
        (LOG_INDEX_MAX + 1, b"\x00" * STATE_CHECKSUM_BYTES, False),
        (1, b"\x00" * (STATE_CHECKSUM_BYTES + 1), False),
        (1, b"", False),
    ],
)
def test_a_checksum_report_is_of_a_log_index_and_a_checksum_size(
    index: int, checksum: bytes, decodes: bool
) -> None:
    """A ChecksumReport names a log index in range and carries a checksum of the right size."""
    body = pack([31, index, checksum])
    if decodes:
        assert decode_wire(body) == ChecksumReport(index, checksum)  # type: ignore[arg-type]
    else:
        with pytest.raises(DecodeError):
            decode_wire(body)


# ----------------------------------------------------------------------------- garbage

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.sampled_from([0, 1, 2**30, 2**30 + 1, 2**47 - 1, 2**47, 2**63 - 1, 2**63])
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda children: st.lists(children, max_size=7),
    max_leaves=30,
)
"""Plain msgpack data shaped like the codec's arrays, with integers at every edge."""


def _mutated(message: PeerMessage, data: st.DataObject) -> bytes:
    """`message`'s bytes with a few bytes overwritten, inserted or cut."""
    body = bytearray(encode_message(message))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(body)))
        match data.draw(st.sampled_from(["overwrite", "insert", "cut"])):
            case "overwrite" if position < len(body):
                body[position] = data.draw(st.integers(0, 255))
            case "insert":
                body[position:position] = data.draw(st.binary(min_size=1, max_size=9))
            case _:
                del body[position : position + data.draw(st.integers(1, 9))]
    return bytes(body)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.data())
def test_garbage_peer_bodies_raise_only_decode_error(data: st.DataObject) -> None:
    """Random bytes, random arrays under every tag and mutated real messages, as a peer
    frame's body or its Paxos message, decode to a well-formed message or raise DecodeError,
    never anything else; and what decodes keeps every integer within 64 signed bits."""
    source = data.draw(st.sampled_from(["bytes", "array", "mutated"]))
    match source:
        case "bytes":
            body = data.draw(st.binary(max_size=80))
        case "array":
            body = pack([data.draw(st.integers(0, 12)), *data.draw(st.lists(plain, max_size=7))])
        case _:
            kind = data.draw(st.sampled_from(list(MESSAGES)))
            body = _mutated(data.draw(MESSAGES[kind]), data)
    for decode in (decode_message, lambda b: decode_wire(pack([30, b])), decode_wire):
        try:
            decoded = decode(body)
        except DecodeError:
            continue
        assert_fits_int64(decoded)


def assert_fits_int64(value: object) -> None:
    """Every integer in `value` (attrs classes, tuples, recursively) is in [0, 2**63 - 1]."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        assert 0 <= value <= INT64_MAX, value
    elif isinstance(value, tuple):
        for item in value:
            assert_fits_int64(item)
    elif has(type(value)):
        for field in fields(type(value)):
            assert_fits_int64(getattr(value, field.name))


# ----------------------------------------------------------------------------- to the store

TIMING = Timing(
    lease_ticks=20, master_lease_ticks=18, heartbeat_ticks=4, election_jitter_ticks=4, retry_ticks=4
)
edge_rounds = st.sampled_from([1, 2, BALLOT_ROUND_MAX - 1, BALLOT_ROUND_MAX])
edge_indices = st.sampled_from([1, 2, LOG_INDEX_MAX - 1, LOG_INDEX_MAX])


@st.composite
def edge_messages(draw: st.DrawFn) -> bytes:
    """Plausible messages from r2 whose rounds, indices and ticks sit at their limits."""
    round_ = draw(edge_rounds)
    index = draw(edge_indices)
    value = draw(st.sampled_from([noop(EPOCH_MAX), batch(2, epoch=EPOCH_MAX, sequence=INT64_MAX)]))
    return pack(
        draw(
            st.sampled_from(
                [
                    [1, [round_, "r2"], index],
                    [3, [round_, "r2"], index, value, index, TICK_MAX],
                    [5, [round_, "r2"], index, TICK_MAX, index],
                    [9, [[index, [round_, "r2"], value]], index, PLAIN_MEMBERSHIP],
                    [9, [[1, [round_, "r2"], value]], LOG_INDEX_MAX, PLAIN_MEMBERSHIP],
                    [10, [index, b"not checked here: the node checks snapshots", PLAIN_MEMBERSHIP]],
                    [11, [round_, "r2"], "r1", 0],
                ]
            )
        )
    )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(bodies=st.lists(edge_messages(), min_size=1, max_size=4))
def test_what_decodes_persists_without_overflow(bodies: list[bytes]) -> None:
    """Messages at the edges of every range, stepped into a replica, make Readys a SQLite
    store writes and reads back exactly: nothing reaches the store as an OverflowError."""
    replica = Replica(R1, membership_of_ids((R1, R2, R3)), TIMING, Limits(), NoChance())
    store, expected = SqlStore("sqlite://"), MemoryStore()
    try:
        for body in bodies:
            replica.step(R2, decode_message(body))
            while replica.has_ready():
                ready = replica.ready()
                store.persist(ready.durable)
                expected.persist(ready.durable)
                replica.advance(ready)
        loaded = store.load()
        assert loaded == expected.load()
        assert_fits_int64(loaded)
    finally:
        store.close()


def test_a_durable_out_of_range_is_a_programmer_error_at_the_store() -> None:
    """The store asserts what it writes fits (a pair with the codec's checks): a value past
    64 bits that slipped by would stop the replica, never be half-written."""
    from chubbypy.paxos import HardState

    store = SqlStore("sqlite://")
    try:
        with pytest.raises(AssertionError, match="promised round"):
            store.persist(Durable(HardState(Ballot(2**63, R2))))
        assert store.load().hard_state is None
    finally:
        store.close()


def test_rounds_used_up_by_a_forged_ballot_stop_no_replica() -> None:
    """A Heartbeat at the highest round a peer may send is taken; the replica's own next
    campaign goes above it, which its peers refuse at decode (logged, the connection closed):
    no master can be elected past it, but nothing crashes, and the replica resumes from its
    store (its own promise may lie above BALLOT_ROUND_MAX, up to ROUND_MAX)."""
    replica = Replica(R1, membership_of_ids((R1, R2, R3)), TIMING, Limits(), NoChance())
    store = SqlStore("sqlite://")
    sent: list[PeerMessage] = []
    try:
        replica.step(R2, decode_message(pack([5, [BALLOT_ROUND_MAX, "r2"], 0, 0, 0])))
        for _ in range(3 * TIMING.lease_ticks):
            replica.tick()
            while replica.has_ready():
                ready = replica.ready()
                store.persist(ready.durable)
                sent += [envelope.message for envelope in (*ready.early, *ready.messages)]
                replica.advance(ready)
        prepares = [message for message in sent if isinstance(message, Prepare)]
        assert prepares, sent
        assert all(BALLOT_ROUND_MAX < p.ballot.round <= ROUND_MAX for p in prepares)
        with pytest.raises(DecodeError, match="above the limit"):
            decode_message(encode_message(prepares[0]))
        loaded = store.load()
        assert loaded.hard_state is not None
        assert loaded.hard_state.promised.round > BALLOT_ROUND_MAX
        assert persisted_problem(loaded) is None
        Replica(R1, membership_of_ids((R1, R2, R3)), TIMING, Limits(), NoChance(), loaded)
    finally:
        store.close()
