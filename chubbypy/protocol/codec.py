"""msgpack encoding of log values and peer messages. The only place that touches their bytes.

Each value becomes a msgpack array with a small integer tag first, so decoding is a lookup
and a positional unpack. Decoding validates shape and types and raises `DecodeError` (never
anything else) on bytes that are not a value this codec wrote: stores and peers may hand it
anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chubbypy.protocol._plain import (
    DecodeError,
    array,
    binary,
    boolean,
    integer,
    pack,
    tagged,
    text,
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
    "decode_entry",
    "decode_message",
    "decode_snapshot",
    "decode_value",
    "encode_entry",
    "encode_message",
    "encode_snapshot",
    "encode_value",
]

from chubbypy.protocol.values import (
    Ballot,
    ClientId,
    Command,
    Entry,
    Epoch,
    LogIndex,
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
    return [value.epoch, int(value.kind), commands]


def _entry(entry: Entry) -> list[Any]:
    return [entry.index, _ballot(entry.ballot), _value(entry.value)]


def _snapshot(snapshot: Snapshot) -> list[Any]:
    return [snapshot.index, snapshot.data]


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
        case HeartbeatAck(ballot, sent_tick, chosen_index):
            return [6, _ballot(ballot), sent_tick, chosen_index]
        case Nack(ballot, promised, leased, chosen_index):
            return [7, _ballot(ballot), _ballot(promised), leased, chosen_index]
        case CatchUpRequest(from_index):
            return [8, from_index]
        case CatchUp(entries, chosen_index):
            return [9, [_entry(e) for e in entries], chosen_index]
        case InstallSnapshot(snapshot):
            return [10, _snapshot(snapshot)]
        case Resign(ballot, successor):
            return [11, _ballot(ballot), successor]
    raise AssertionError(message)


_pack = pack


def encode_value(value: Value) -> bytes:
    return _pack(_value(value))


def encode_entry(entry: Entry) -> bytes:
    return _pack(_entry(entry))


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return _pack(_snapshot(snapshot))


def encode_message(message: PeerMessage) -> bytes:
    return _pack(_message(message))


# ----------------------------------------------------------------------------- from plain data

_int = integer
_bool = boolean
_bytes = binary
_str = text
_list = array


def _to_ballot(data: Any) -> Ballot:
    round_, replica_id = _list(data, 2)
    return Ballot(_int(round_), ReplicaId(_str(replica_id)))


def _to_command(data: Any) -> Command:
    client_id, sequence, payload, first_unacked = _list(data, 4)
    return Command(ClientId(_int(client_id)), _int(sequence), _bytes(payload), _int(first_unacked))


def _to_value(data: Any) -> Value:
    epoch, kind, commands = _list(data, 3)
    try:
        value_kind = ValueKind(_int(kind))
    except ValueError as error:
        raise DecodeError(f"unknown value kind {kind!r}") from error
    parsed = tuple(_to_command(c) for c in _list(commands))
    if parsed and value_kind is not ValueKind.COMMANDS:
        raise DecodeError(f"a {value_kind.name} value carries no commands")
    return Value(Epoch(_int(epoch)), value_kind, parsed)


def _to_entry(data: Any) -> Entry:
    index, ballot, value = _list(data, 3)
    return Entry(LogIndex(_int(index, 1)), _to_ballot(ballot), _to_value(value))


def _to_entries(data: Any) -> tuple[Entry, ...]:
    return tuple(_to_entry(e) for e in _list(data))


def _to_snapshot(data: Any) -> Snapshot:
    index, body = _list(data, 2)
    return Snapshot(LogIndex(_int(index)), _bytes(body))


def _index(data: Any) -> LogIndex:
    return LogIndex(_int(data))


_MESSAGES: dict[int, tuple[int, Callable[[list[Any]], PeerMessage]]] = {
    1: (2, lambda f: Prepare(_to_ballot(f[0]), LogIndex(_int(f[1], 1)))),
    2: (
        6,
        lambda f: Promise(
            _to_ballot(f[0]),
            _index(f[1]),
            _to_entries(f[2]),
            _index(f[3]),
            _bool(f[4]),
            _bool(f[5]),
        ),
    ),
    3: (
        5,
        lambda f: Accept(_to_ballot(f[0]), _index(f[1]), _to_value(f[2]), _index(f[3]), _int(f[4])),
    ),
    4: (4, lambda f: Accepted(_to_ballot(f[0]), _index(f[1]), _int(f[2]), _index(f[3]))),
    5: (4, lambda f: Heartbeat(_to_ballot(f[0]), _index(f[1]), _int(f[2]), _index(f[3]))),
    6: (3, lambda f: HeartbeatAck(_to_ballot(f[0]), _int(f[1]), _index(f[2]))),
    7: (4, lambda f: Nack(_to_ballot(f[0]), _to_ballot(f[1]), _bool(f[2]), _index(f[3]))),
    8: (1, lambda f: CatchUpRequest(LogIndex(_int(f[0], 1)))),
    9: (2, lambda f: CatchUp(_to_entries(f[0]), _index(f[1]))),
    10: (1, lambda f: InstallSnapshot(_to_snapshot(f[0]))),
    11: (2, lambda f: Resign(_to_ballot(f[0]), ReplicaId(_str(f[1])))),
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


def decode_message(data: bytes) -> PeerMessage:
    return _unpack(data, _parse_message)
