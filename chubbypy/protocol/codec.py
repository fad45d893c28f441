"""msgpack encoding of log values and peer messages. The only place that touches their bytes.

Each value becomes a msgpack array with a small integer tag first, so decoding is a lookup
and a positional unpack. Decoding validates shape and types and raises `DecodeError` (never
anything else) on bytes that are not a value this codec wrote: stores and peers may hand it
anything.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

from chubbypy.protocol._plain import (
    DecodeError,
    array,
    binary,
    boolean,
    bounded,
    integer,
    pack,
    tagged,
    text,
    uint64,
    unpack,
)
from chubbypy.protocol.peer import (
    Accept,
    Accepted,
    CatchUp,
    CatchUpRequest,
    Heartbeat,
    HeartbeatAck,
    InstallSnapshot,
    Nack,
    PeerMessage,
    Prepare,
    Promise,
    Resign,
)

__all__ = [
    "DecodeError",
    "address_from_plain",
    "decode_entry",
    "decode_membership",
    "decode_message",
    "decode_snapshot",
    "decode_value",
    "encode_entry",
    "encode_membership",
    "encode_message",
    "encode_snapshot",
    "encode_value",
    "membership_from_plain",
    "membership_to_plain",
    "replica_id_from_plain",
]

from chubbypy.protocol.values import (
    BALLOT_ROUND_MAX,
    EPOCH_MAX,
    LEARNERS_MAX,
    LOG_INDEX_MAX,
    MEMBER_ADDRESS_CHARS_MAX,
    MEMBERSHIP_VERSION_MAX,
    MESSAGE_COMMANDS_MAX,
    MESSAGE_ENTRIES_MAX,
    REPLICA_ID_CHARS_MAX,
    TICK_MAX,
    VALUE_COMMANDS_MAX,
    VOTERS_MAX,
    Ballot,
    ClientId,
    Command,
    Entry,
    Epoch,
    LogIndex,
    Member,
    Membership,
    ReplicaId,
    Snapshot,
    Value,
    ValueKind,
)

# ----------------------------------------------------------------------------- to plain data


def _ballot(ballot: Ballot) -> list[Any]:
    return [ballot.round, ballot.replica_id]


def _value(value: Value) -> list[Any]:
    commands = [[c.client_id, c.sequence, c.payload, c.first_unacked] for c in value.commands]
    if value.membership is not None:
        return [value.epoch, int(value.kind), commands, _membership(value.membership)]
    return [value.epoch, int(value.kind), commands]


def _membership(membership: Membership) -> list[Any]:
    members = [[m.replica_id, m.peer, m.client, m.voter] for m in membership.members]
    return [membership.version, members]


def _entry(entry: Entry) -> list[Any]:
    return [entry.index, _ballot(entry.ballot), _value(entry.value)]


def _snapshot(snapshot: Snapshot) -> list[Any]:
    return [snapshot.index, snapshot.data, _membership(snapshot.membership)]


def _message(message: PeerMessage) -> list[Any]:
    match message:
        case Prepare(ballot, from_index):
            return [1, _ballot(ballot), from_index]
        case Promise(ballot, from_index, entries, chosen_index, more, behind):
            fields = [_ballot(ballot), from_index, [_entry(e) for e in entries], chosen_index]
            return [2, *fields, more, behind]
        case Accept(ballot, index, value, chosen_index, sent_tick):
            return [3, _ballot(ballot), index, _value(value), chosen_index, sent_tick]
        case Accepted(ballot, index, sent_tick, chosen_index):
            return [4, _ballot(ballot), index, sent_tick, chosen_index]
        case Heartbeat(ballot, chosen_index, sent_tick, last_index):
            return [5, _ballot(ballot), chosen_index, sent_tick, last_index]
        case HeartbeatAck(ballot, sent_tick, chosen_index, trusted):
            return [6, _ballot(ballot), sent_tick, chosen_index, trusted]
        case Nack(ballot, promised, leased, chosen_index):
            return [7, _ballot(ballot), _ballot(promised), leased, chosen_index]
        case CatchUpRequest(from_index):
            return [8, from_index]
        case CatchUp(entries, chosen_index, membership):
            return [9, [_entry(e) for e in entries], chosen_index, _membership(membership)]
        case InstallSnapshot(snapshot):
            return [10, _snapshot(snapshot)]
        case Resign(ballot, successor, chosen_index):
            return [11, _ballot(ballot), successor, chosen_index]
    raise AssertionError(message)


_pack = pack


def encode_value(value: Value) -> bytes:
    return _pack(_value(value))


def encode_entry(entry: Entry) -> bytes:
    return _pack(_entry(entry))


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return _pack(_snapshot(snapshot))


def encode_membership(membership: Membership) -> bytes:
    return _pack(_membership(membership))


def encode_message(message: PeerMessage) -> bytes:
    return _pack(_message(message))


# ----------------------------------------------------------------------------- from plain data

# Every integer is checked against its range (values.py) as well as its type: a value that
# exists fits a signed 64-bit integer, and so does whatever the core derives from it (an
# epoch's handle ids, an index's node instances), so nothing a peer sends reaches the store
# as an overflow. Structure a correct replica always keeps is checked too (a Promise page's
# entries in order and from its start, `more` only with entries), so the core never sees a
# message no replica could have sent.

_int = integer
_bool = boolean
_bytes = binary
_str = text
_list = array


def _index(data: Any, low: int = 0) -> LogIndex:
    return LogIndex(bounded(data, low, LOG_INDEX_MAX, "log index"))


def _tick(data: Any) -> int:
    return bounded(data, 0, TICK_MAX, "tick")


def _replica_id(data: Any, chars_min: int = 1) -> ReplicaId:
    name = _str(data)
    if not chars_min <= len(name) <= REPLICA_ID_CHARS_MAX:
        raise DecodeError(
            f"a replica id of {len(name)} characters: expected {chars_min} to "
            f"{REPLICA_ID_CHARS_MAX}"
        )
    return ReplicaId(name)


def _to_ballot(data: Any) -> Ballot:
    round_, replica_id = _list(data, 2)
    ballot = Ballot(
        bounded(round_, 0, BALLOT_ROUND_MAX, "ballot round"), _replica_id(replica_id, 0)
    )
    # Round 0 is NO_BALLOT's alone; every replica's ballot has a round from 1 and its name.
    if (ballot.round == 0) != (ballot.replica_id == ""):
        raise DecodeError(f"ballot {ballot.round}.{ballot.replica_id!r:.40} is no ballot")
    return ballot


def _to_command(data: Any) -> Command:
    client_id, sequence, payload, first_unacked = _list(data, 4)
    return Command(
        ClientId(uint64(client_id)), uint64(sequence), _bytes(payload), uint64(first_unacked)
    )


def _to_value(data: Any) -> Value:
    # Three fields; a MEMBERSHIP value, and only it, a fourth: the membership.
    fields = _list(data)
    if len(fields) not in (3, 4):
        raise DecodeError(f"a value of {len(fields)} fields: expected 3 or 4")
    epoch, kind, commands = fields[:3]
    try:
        value_kind = ValueKind(_int(kind))
    except ValueError as error:
        raise DecodeError(f"unknown value kind {kind!r}") from error
    if (len(fields) == 4) != (value_kind is ValueKind.MEMBERSHIP):
        raise DecodeError(f"a {value_kind.name} value of {len(fields)} fields")
    plain = _list(commands)
    if len(plain) > VALUE_COMMANDS_MAX:
        raise DecodeError(f"a value of {len(plain)} commands: at most {VALUE_COMMANDS_MAX}")
    if plain and value_kind is not ValueKind.COMMANDS:
        raise DecodeError(f"a {value_kind.name} value carries no commands")
    parsed = tuple(_to_command(c) for c in plain)
    membership = _to_membership(fields[3]) if len(fields) == 4 else None
    return Value(Epoch(bounded(epoch, 0, EPOCH_MAX, "epoch")), value_kind, parsed, membership)


def membership_to_plain(membership: Membership) -> list[Any]:
    return _membership(membership)


def membership_from_plain(data: Any) -> Membership:
    return _to_membership(data)


def replica_id_from_plain(data: Any) -> ReplicaId:
    return _replica_id(data)


def address_from_plain(data: Any) -> str:
    return _address(data)


def _to_membership(data: Any) -> Membership:
    """A membership as `membership_problem` would allow its shape: a version from 1, at most
    VOTERS_MAX + LEARNERS_MAX members in strictly increasing id order, ids and addresses
    within their lengths. (Whether it may follow the current one is the core's check.)"""
    version, plain = _list(data, 2)
    members = _list(plain)
    if not 1 <= len(members) <= VOTERS_MAX + LEARNERS_MAX:
        raise DecodeError(f"a membership of {len(members)} members")
    parsed = tuple(_to_member(m) for m in members)
    ids = [m.replica_id for m in parsed]
    if any(a >= b for a, b in pairwise(ids)):
        raise DecodeError("a membership's members out of id order or repeated")
    return Membership(bounded(version, 1, MEMBERSHIP_VERSION_MAX, "membership version"), parsed)


def _to_member(data: Any) -> Member:
    replica_id, peer, client, voter = _list(data, 4)
    return Member(_replica_id(replica_id), _address(peer), _address(client), _bool(voter))


def _address(data: Any) -> str:
    address = _str(data)
    if not 1 <= len(address) <= MEMBER_ADDRESS_CHARS_MAX:
        raise DecodeError(
            f"an address of {len(address)} characters: expected 1 to {MEMBER_ADDRESS_CHARS_MAX}"
        )
    return address


def _to_entry(data: Any) -> Entry:
    index, ballot, value = _list(data, 3)
    return Entry(_index(index, 1), _to_ballot(ballot), _to_value(value))


def _to_entries(data: Any, from_index: int = 1) -> tuple[Entry, ...]:
    """Entries in strictly increasing index order from `from_index` (as replicas send them),
    at most `MESSAGE_ENTRIES_MAX` of them and `MESSAGE_COMMANDS_MAX` commands in all; the
    counts are checked before anything is built."""
    plain = _list(data)
    if len(plain) > MESSAGE_ENTRIES_MAX:
        raise DecodeError(f"{len(plain)} entries in one message: at most {MESSAGE_ENTRIES_MAX}")
    commands = sum(_command_count(e) for e in plain)
    if commands > MESSAGE_COMMANDS_MAX:
        raise DecodeError(f"{commands} commands in one message: at most {MESSAGE_COMMANDS_MAX}")
    entries = tuple(_to_entry(e) for e in plain)
    previous = from_index - 1
    for entry in entries:
        if entry.index <= previous:
            raise DecodeError(f"entry {entry.index} out of order (after {previous})")
        previous = entry.index
    return entries


def _command_count(data: Any) -> int:
    """How many commands a plain entry claims to carry (its shape is checked later)."""
    if type(data) is list and len(data) == 3 and type(data[2]) is list and len(data[2]) == 3:
        commands = data[2][2]
        return len(commands) if type(commands) is list else 0
    return 0


def _to_snapshot(data: Any) -> Snapshot:
    index, body, membership = _list(data, 3)
    return Snapshot(_index(index, 1), _bytes(body), _to_membership(membership))


def _to_promise(f: list[Any]) -> Promise:
    from_index = _index(f[1], 1)
    entries, more = _to_entries(f[2], from_index), _bool(f[4])
    if more and not entries:
        raise DecodeError("a promise page with more to come carries no entries")
    return Promise(_to_ballot(f[0]), from_index, entries, _index(f[3]), more, _bool(f[5]))


def _to_resign(f: list[Any]) -> Resign:
    return Resign(_to_ballot(f[0]), _replica_id(f[1], 0), _index(f[2]))


_MESSAGES: dict[int, tuple[int, Callable[[list[Any]], PeerMessage]]] = {
    1: (2, lambda f: Prepare(_to_ballot(f[0]), _index(f[1], 1))),
    2: (6, _to_promise),
    3: (
        5,
        lambda f: Accept(
            _to_ballot(f[0]), _index(f[1], 1), _to_value(f[2]), _index(f[3]), _tick(f[4])
        ),
    ),
    4: (4, lambda f: Accepted(_to_ballot(f[0]), _index(f[1], 1), _tick(f[2]), _index(f[3]))),
    5: (4, lambda f: Heartbeat(_to_ballot(f[0]), _index(f[1]), _tick(f[2]), _index(f[3]))),
    6: (4, lambda f: HeartbeatAck(_to_ballot(f[0]), _tick(f[1]), _index(f[2]), _bool(f[3]))),
    7: (4, lambda f: Nack(_to_ballot(f[0]), _to_ballot(f[1]), _bool(f[2]), _index(f[3]))),
    8: (1, lambda f: CatchUpRequest(_index(f[0], 1))),
    9: (3, lambda f: CatchUp(_to_entries(f[0]), _index(f[1]), _to_membership(f[2]))),
    10: (1, lambda f: InstallSnapshot(_to_snapshot(f[0]))),
    11: (3, _to_resign),
}


_unpack = unpack


def _parse_message(plain: Any) -> PeerMessage:
    return tagged(plain, _MESSAGES, "message")


def decode_value(data: bytes) -> Value:
    return _unpack(data, _to_value)


def decode_entry(data: bytes) -> Entry:
    return _unpack(data, _to_entry)


def decode_snapshot(data: bytes) -> Snapshot:
    return _unpack(data, _to_snapshot)


def decode_membership(data: bytes) -> Membership:
    return _unpack(data, _to_membership)


def decode_message(data: bytes) -> PeerMessage:
    return _unpack(data, _parse_message)
