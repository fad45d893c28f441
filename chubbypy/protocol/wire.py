"""msgpack encoding of connection messages: the body of every frame on a client or peer port.

Part of `chubbypy.protocol` (what crosses a process boundary, as data; STYLE §6 "Wire
format"). `framing` cuts the byte stream into bodies; this module turns a body into one of the
`chubbypy.protocol.client` messages and back. As in `codec.py`, each message is a msgpack array
whose first item is a small integer tag, followed by its fields in order. Embedded namespace
writes, reads and results use `namespace_codec`'s plain forms; a `PeerFrame` carries its Paxos
message as the bytes `codec.encode_message` made, so the peer codec stays the only reader of
those.

Decoding checks everything once (types, integer ranges, string lengths, enum values, arity) and
raises `DecodeError`, and nothing else, for a body that is not a message this module wrote:
the other end of a connection may send anything (reliability.md §5.3, items 5 and 6). msgpack
itself bounds every string, array and map by the body's length (so by the frame limit) and
refuses nesting deeper than its stack, so a hostile body cannot make it allocate more than the
frame it came in.

Decoding a body costs time in proportion to its bytes (a 1 MiB frame of tiny items takes
about a second), so what a connection may send is checked first, from the body's first few
bytes: `decode_wire(body, expected)` reads the message's tag and field count and refuses a
message the connection may not send in its state (`Expected`: before its Hello a client may
send only a Hello, a peer only its handshake) before any of the rest is decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, NoReturn, assert_never, cast

from attrs import frozen

from chubbypy.protocol._plain import (
    INT64_MAX,
    DecodeError,
    array,
    binary,
    boolean,
    integer,
    pack,
    tagged,
    text,
    uint64,
    unpack,
)
from chubbypy.protocol.client import (
    CELL_CHARS_MAX,
    CLIENT_CREDENTIAL_BYTES,
    ENDPOINT_CHARS_MAX,
    ERROR_MESSAGE_CHARS_MAX,
    MEMBER_ROLES,
    NAME_CHARS_MAX,
    PEER_NONCE_BYTES,
    PEER_PROOF_BYTES,
    PRINCIPAL_CHARS_MAX,
    REPLICA_ROLES,
    REPLICAS_MAX,
    STATE_CHECKSUM_BYTES,
    TOKEN_CHARS_MAX,
    Authenticate,
    Authenticated,
    ChecksumReport,
    ConnectionRole,
    ErrorReply,
    Hello,
    LocateMaster,
    MasterLocation,
    PeerChallenge,
    PeerChallengeReply,
    PeerFragment,
    PeerFrame,
    PeerProof,
    ReadReply,
    ReadRequest,
    Register,
    Registered,
    ReplicaAddress,
    ReplicaRole,
    ReplicaStatus,
    RequestId,
    SessionReply,
    SessionRequest,
    StatusReply,
    StatusRequest,
    Welcome,
    WireMessage,
    WriteReply,
    WriteRequest,
)
from chubbypy.protocol.codec import decode_message, encode_message
from chubbypy.protocol.errors import ChubbyError, ErrorCode, error_for
from chubbypy.protocol.namespace import ReadResult, WriteResult
from chubbypy.protocol.namespace_codec import (
    read_from_plain,
    read_to_plain,
    result_from_plain,
    result_to_plain,
    write_from_plain,
    write_to_plain,
)
from chubbypy.protocol.session_codec import (
    call_from_plain,
    call_to_plain,
    session_result_from_plain,
    session_result_to_plain,
)
from chubbypy.protocol.values import (
    LOG_INDEX_MAX,
    CallNumber,
    ClientId,
    Epoch,
    LogIndex,
    ReplicaId,
)

__all__ = [
    "GREETING_ANSWER_BYTES_MAX",
    "GREETING_BYTES_MAX",
    "DecodeError",
    "Expected",
    "UnexpectedMessageError",
    "UnknownMessageError",
    "decode_wire",
    "encode_wire",
    "error_reply_for",
    "expecting",
    "raise_for",
]


class UnknownMessageError(DecodeError):
    """A well-formed body whose message tag this version does not know (UNKNOWN_MESSAGE).

    The frame boundaries are intact, so unlike other decode errors this one says the peer
    speaks a newer protocol rather than garbage.
    """


class UnexpectedMessageError(DecodeError):
    """A message of a kind the connection may not send in its state (a PeerFrame before a
    client's Hello, a client request on the peer port): refused from its tag, undecoded."""


# ----------------------------------------------------------------------------- to plain data

# Tags: the hello 1-2, the peer handshake 3-5, client requests 10-19, their replies 20-29,
# peer frames 30-32.


def _status(s: ReplicaStatus) -> list[Any]:
    return [
        s.replica_id,
        s.role,
        s.epoch,
        s.promised,
        s.chosen_index,
        s.applied_index,
        s.first_index,
        s.last_index,
        s.snapshot_index,
        s.serving,
        s.lease_valid,
        s.lease_remaining_ms,
        s.master_hint,
        s.uptime_ms,
        s.checksum_mismatches,
        s.member_role,
        s.membership_version,
    ]


def _to_plain(message: WireMessage) -> list[Any]:
    match message:
        case PeerFrame(peer_message):  # first: by far the most frequent
            return [30, encode_message(peer_message)]
        case PeerFragment(total, offset, data):
            return [32, total, offset, data]
        case ChecksumReport(index, checksum):
            return [31, index, checksum]
        case Hello(version, cell, role, name):
            return [1, version, cell, int(role), name]
        case Welcome(version, cell, replica_id):
            return [2, version, cell, replica_id]
        case PeerChallenge(nonce):
            return [3, nonce]
        case PeerChallengeReply(nonce, proof):
            return [4, nonce, proof]
        case PeerProof(proof):
            return [5, proof]
        case LocateMaster(request_id):
            return [10, request_id]
        case Register(request_id, nonce):
            return [11, request_id, nonce]
        case WriteRequest(request_id, client_id, credential, sequence, first_unacked, write):
            plain_write = write_to_plain(write)
            return [12, request_id, client_id, credential, sequence, first_unacked, plain_write]
        case ReadRequest(request_id, read):
            return [13, request_id, read_to_plain(read)]
        case StatusRequest(request_id):
            return [14, request_id]
        case SessionRequest(request_id, call, number):
            plain_number = None if number is None else [number.sequence, number.first_unacked]
            return [15, request_id, call_to_plain(call), plain_number]
        case SessionReply(request_id, result):
            return [25, request_id, session_result_to_plain(result)]
        case Authenticate(request_id, principal, token):
            return [16, request_id, principal, token]
        case Authenticated(request_id, principal):
            return [26, request_id, principal]
        case MasterLocation(request_id, master, epoch, replicas):
            addresses = [[r.replica_id, r.client_endpoint] for r in replicas]
            return [20, request_id, master, epoch, addresses]
        case Registered(request_id, client_id, credential):
            return [21, request_id, client_id, credential]
        case WriteReply(request_id, index, result):
            return [22, request_id, index, result_to_plain(result)]
        case ReadReply(request_id, applied_index, result):
            return [23, request_id, applied_index, result_to_plain(result)]
        case StatusReply(request_id, status):
            return [24, request_id, _status(status)]
        case ErrorReply(request_id, code, explanation, master_hint):
            return [29, request_id, int(code), explanation, master_hint]
        case unexpected:
            assert_never(unexpected)


def encode_wire(message: WireMessage) -> bytes:
    """The frame body for `message` (give it to `framing.encode_frame`)."""
    return pack(_to_plain(message))


# ----------------------------------------------------------------------------- from plain data

_BALLOT_CHARS_MAX = 20 + NAME_CHARS_MAX
"""A ballot as text: a round of up to 19 digits, a dot, a replica id."""


def _string(data: Any, chars_max: int, what: str, chars_min: int = 1) -> str:
    value = text(data)
    if not chars_min <= len(value) <= chars_max:
        raise DecodeError(f"{what} of {len(value)} characters: expected {chars_min} to {chars_max}")
    return value


def _principal(data: Any) -> str:
    return _string(data, PRINCIPAL_CHARS_MAX, "principal")


def _numbered(sequence_data: Any, first_data: Any) -> tuple[int, int]:
    """A call's (sequence, first_unacked), for plain writes and session calls alike:
    1 <= first_unacked <= sequence (a call cannot acknowledge itself, or later calls)."""
    sequence, first = uint64(sequence_data, 1), uint64(first_data, 1)
    if first > sequence:
        raise DecodeError(f"a call numbered {sequence} cannot acknowledge up to {first}")
    return sequence, first


def _call_number(data: Any) -> CallNumber | None:
    """A session call's number, or None: [sequence, first_unacked]."""
    if data is None:
        return None
    return CallNumber(*_numbered(*array(data, 2)))


def _request_id(data: Any) -> RequestId:
    return RequestId(uint64(data, 1))


def _index(data: Any) -> LogIndex:
    return LogIndex(uint64(data))


def _replica_id(data: Any) -> ReplicaId:
    return ReplicaId(_string(data, NAME_CHARS_MAX, "replica id"))


def _optional_replica_id(data: Any) -> ReplicaId | None:
    return None if data is None else _replica_id(data)


def _cell(data: Any) -> str:
    return _string(data, CELL_CHARS_MAX, "cell name")


def _to_role(data: Any) -> ConnectionRole:
    try:
        return ConnectionRole(integer(data))
    except ValueError as error:
        raise DecodeError(f"unknown connection role {data!r:.20}") from error


def _to_code(data: Any) -> ErrorCode:
    try:
        return ErrorCode(integer(data))
    except ValueError as error:
        raise DecodeError(f"unknown error code {data!r:.20}") from error


def _to_replica_role(data: Any) -> ReplicaRole:
    if type(data) is not str or data not in REPLICA_ROLES:
        raise DecodeError(f"unknown replica role {data!r:.20}")
    return cast(ReplicaRole, data)


def _to_hello(fields: list[Any]) -> Hello:
    name = _string(fields[3], NAME_CHARS_MAX, "name")
    return Hello(uint64(fields[0]), _cell(fields[1]), _to_role(fields[2]), name)


def _exact_bytes(data: Any, size: int, what: str) -> bytes:
    """Bytes of exactly `size`: a handshake's nonces and proofs have one length only."""
    value = binary(data)
    if len(value) != size:
        raise DecodeError(f"{what} of {len(value)} bytes: expected {size}")
    return value


def _nonce(data: Any) -> bytes:
    return _exact_bytes(data, PEER_NONCE_BYTES, "a handshake nonce")


def _proof(data: Any) -> bytes:
    return _exact_bytes(data, PEER_PROOF_BYTES, "a handshake proof")


def _to_address(data: Any) -> ReplicaAddress:
    replica_id, endpoint = array(data, 2)
    return ReplicaAddress(
        _replica_id(replica_id), _string(endpoint, ENDPOINT_CHARS_MAX, "endpoint")
    )


def _to_master_location(fields: list[Any]) -> MasterLocation:
    addresses = array(fields[3])
    if len(addresses) > REPLICAS_MAX:
        raise DecodeError(f"{len(addresses)} replica addresses: at most {REPLICAS_MAX}")
    replicas = tuple(_to_address(a) for a in addresses)
    master = _optional_replica_id(fields[1])
    return MasterLocation(_request_id(fields[0]), master, Epoch(uint64(fields[2])), replicas)


def _client_credential(data: Any) -> bytes:
    """A plain client's credential: bytes of exactly the length replicas make (a shorter or
    longer one can only be a forgery or garbage, refused undecoded)."""
    credential = binary(data)
    if len(credential) != CLIENT_CREDENTIAL_BYTES:
        raise DecodeError(
            f"a client credential of {len(credential)} bytes: expected {CLIENT_CREDENTIAL_BYTES}"
        )
    return credential


def _to_write_request(fields: list[Any]) -> WriteRequest:
    # Client 0 is NO_CLIENT, which the log reads as a registration: never a write's author.
    # Sequences number a client's commands from 1.
    client_id, credential = ClientId(uint64(fields[1], 1)), _client_credential(fields[2])
    sequence, first_unacked = _numbered(fields[3], fields[4])
    request_id, write = _request_id(fields[0]), write_from_plain(fields[5])
    return WriteRequest(request_id, client_id, credential, sequence, first_unacked, write)


def _to_registered(fields: list[Any]) -> Registered:
    client_id = ClientId(uint64(fields[1], 1))
    return Registered(_request_id(fields[0]), client_id, _client_credential(fields[2]))


def _to_write_result(data: Any) -> WriteResult:
    result = result_from_plain(data)
    if not isinstance(result, WriteResult):
        raise DecodeError(f"a write's result cannot be a {type(result).__name__}")
    return result


def _to_read_result(data: Any) -> ReadResult:
    result = result_from_plain(data)
    if not isinstance(result, ReadResult):
        raise DecodeError(f"a read's result cannot be a {type(result).__name__}")
    return result


def _to_status(data: Any) -> ReplicaStatus:
    f = array(data, 17)
    if f[15] not in MEMBER_ROLES:
        raise DecodeError(f"unknown member role {f[15]!r:.20}")
    return ReplicaStatus(
        replica_id=_replica_id(f[0]),
        role=_to_replica_role(f[1]),
        epoch=Epoch(uint64(f[2])),
        promised=_string(f[3], _BALLOT_CHARS_MAX, "ballot"),
        chosen_index=_index(f[4]),
        applied_index=_index(f[5]),
        first_index=_index(f[6]),
        last_index=_index(f[7]),
        snapshot_index=_index(f[8]),
        serving=boolean(f[9]),
        lease_valid=boolean(f[10]),
        lease_remaining_ms=uint64(f[11]),
        master_hint=_optional_replica_id(f[12]),
        uptime_ms=uint64(f[13]),
        checksum_mismatches=uint64(f[14]),
        member_role=text(f[15]),
        membership_version=uint64(f[16]),
    )


def _to_error_reply(fields: list[Any]) -> ErrorReply:
    message = _string(fields[2], ERROR_MESSAGE_CHARS_MAX, "error message", chars_min=0)
    hint = _optional_replica_id(fields[3])
    return ErrorReply(RequestId(uint64(fields[0])), _to_code(fields[1]), message, hint)


def _to_checksum_report(fields: list[Any]) -> ChecksumReport:
    index, checksum = uint64(fields[0], 1), binary(fields[1])
    if index > LOG_INDEX_MAX:
        raise DecodeError(f"log index {index} is above the limit of {LOG_INDEX_MAX}")
    if len(checksum) != STATE_CHECKSUM_BYTES:
        raise DecodeError(
            f"a state checksum of {len(checksum)} bytes: expected {STATE_CHECKSUM_BYTES}"
        )
    return ChecksumReport(LogIndex(index), checksum)


def _to_fragment(fields: list[Any]) -> PeerFragment:
    """A piece of a message: `total` bytes in all, this one `data` from `offset`, inside it."""
    total, offset, data = uint64(fields[0], 1), uint64(fields[1]), binary(fields[2])
    if not data or offset + len(data) > total:
        raise DecodeError(f"a fragment of {len(data)} bytes at {offset} of a {total}-byte message")
    return PeerFragment(total, offset, data)


_Build = Callable[[list[Any]], WireMessage]

_MESSAGES: Final[dict[int, tuple[type[WireMessage], int, _Build]]] = {
    1: (Hello, 4, _to_hello),
    2: (Welcome, 3, lambda f: Welcome(uint64(f[0]), _cell(f[1]), _replica_id(f[2]))),
    3: (PeerChallenge, 1, lambda f: PeerChallenge(_nonce(f[0]))),
    4: (PeerChallengeReply, 2, lambda f: PeerChallengeReply(_nonce(f[0]), _proof(f[1]))),
    5: (PeerProof, 1, lambda f: PeerProof(_proof(f[0]))),
    10: (LocateMaster, 1, lambda f: LocateMaster(_request_id(f[0]))),
    11: (Register, 2, lambda f: Register(_request_id(f[0]), uint64(f[1]))),
    12: (WriteRequest, 6, _to_write_request),
    13: (ReadRequest, 2, lambda f: ReadRequest(_request_id(f[0]), read_from_plain(f[1]))),
    14: (StatusRequest, 1, lambda f: StatusRequest(_request_id(f[0]))),
    15: (
        SessionRequest,
        3,
        lambda f: SessionRequest(_request_id(f[0]), call_from_plain(f[1]), _call_number(f[2])),
    ),
    16: (
        Authenticate,
        3,
        lambda f: Authenticate(
            _request_id(f[0]), _principal(f[1]), _string(f[2], TOKEN_CHARS_MAX, "token")
        ),
    ),
    20: (MasterLocation, 4, _to_master_location),
    21: (Registered, 3, _to_registered),
    22: (
        WriteReply,
        3,
        lambda f: WriteReply(_request_id(f[0]), _index(f[1]), _to_write_result(f[2])),
    ),
    23: (
        ReadReply,
        3,
        lambda f: ReadReply(_request_id(f[0]), _index(f[1]), _to_read_result(f[2])),
    ),
    24: (StatusReply, 2, lambda f: StatusReply(_request_id(f[0]), _to_status(f[1]))),
    25: (
        SessionReply,
        2,
        lambda f: SessionReply(_request_id(f[0]), session_result_from_plain(f[1])),
    ),
    26: (Authenticated, 2, lambda f: Authenticated(_request_id(f[0]), _principal(f[1]))),
    29: (ErrorReply, 4, _to_error_reply),
    30: (PeerFrame, 1, lambda f: PeerFrame(decode_message(binary(f[0])))),
    31: (ChecksumReport, 2, _to_checksum_report),
    32: (PeerFragment, 3, _to_fragment),
}
"""Each tag's message class, field count and builder (which `encode_wire`'s tags must match:
the round-trip tests check it)."""
_BUILDERS: Final = {tag: (arity, build) for tag, (_, arity, build) in _MESSAGES.items()}
_TAGS: Final = {kind: tag for tag, (kind, _, _) in _MESSAGES.items()}


@frozen
class Expected:
    """The messages a connection may send in its state (their tags), and how a refusal
    names them ("a Hello"); and, if given, how many arrays and maps one may hold (a limit
    named `containers_named`). Made with `expecting`."""

    what: str
    tags: frozenset[int]
    containers_max: int | None = None
    containers_named: str = ""


def expecting(
    what: str,
    *kinds: type[WireMessage],
    containers_max: int | None = None,
    containers_named: str = "",
) -> Expected:
    """The `Expected` of messages of `kinds`, named `what` in a refusal, each holding at
    most `containers_max` arrays and maps (if given)."""
    tags = frozenset(_TAGS[kind] for kind in kinds)
    return Expected(what, tags, containers_max, containers_named)


_FIXARRAY: Final = range(0x90, 0xA0)
_ARRAY_LENGTHS: Final = {0xDC: struct.Struct(">H"), 0xDD: struct.Struct(">I")}
_INTEGERS: Final = {
    0xCC: struct.Struct(">B"),
    0xCD: struct.Struct(">H"),
    0xCE: struct.Struct(">I"),
    0xCF: struct.Struct(">Q"),
    0xD0: struct.Struct(">b"),
    0xD1: struct.Struct(">h"),
    0xD2: struct.Struct(">i"),
    0xD3: struct.Struct(">q"),
}


def _head(body: bytes) -> tuple[int, int]:
    """The tag and item count of the message `body` holds, read from its first few bytes
    (a msgpack array header, then an integer in any of msgpack's encodings), nothing else
    decoded; DecodeError if it does not begin so."""
    try:
        first = body[0]
        if first in _FIXARRAY:
            items, at = first & 0x0F, 1
        elif first in _ARRAY_LENGTHS:
            length = _ARRAY_LENGTHS[first]
            (items,), at = length.unpack_from(body, 1), 1 + length.size
        else:
            raise DecodeError("not a message: a message is an array, its tag first")
        if items == 0:
            raise DecodeError("empty message")
        kind = body[at]
        if kind <= 0x7F:  # positive fixint: how every tag is written
            return kind, items
        if kind >= 0xE0:  # negative fixint
            return kind - 0x100, items
        if kind in _INTEGERS:
            (tag,) = _INTEGERS[kind].unpack_from(body, at + 1)
            return int(tag), items
    except (IndexError, struct.error) as error:
        raise DecodeError("a message cut short in its first bytes") from error
    raise DecodeError("not a message: its first item, the tag, is not an integer")


def _from_plain(plain: Any) -> WireMessage:
    try:
        return tagged(plain, _BUILDERS, "message")
    except RecursionError as error:
        # msgpack refuses nesting past its stack, but the namespace codec parses a nested
        # MultiOp (or MultiResult) before refusing it, one Python frame per level or more.
        raise DecodeError("nested too deeply") from error


def decode_wire(body: bytes, expected: Expected | None = None) -> WireMessage:
    """The message in frame body `body`; `DecodeError` (only) if it is not one.

    The tag and field count are checked before the body is decoded: an unknown tag raises
    `UnknownMessageError`, and, with `expected`, a message of another kind
    `UnexpectedMessageError`, each costing a few bytes' reading whatever the body's size.
    With `expected.containers_max`, decoding stops at the array or map past it.
    """
    tag, items = _head(body)
    known = _MESSAGES.get(tag)
    if known is None:
        raise UnknownMessageError(f"unknown message tag {tag}")
    kind, arity, _ = known
    if expected is not None and tag not in expected.tags:
        raise UnexpectedMessageError(f"expected {expected.what}, not a {kind.__name__}")
    if items != arity + 1:
        raise DecodeError(f"message tag {tag} needs {arity} fields, got {items - 1}")
    if expected is None:
        return unpack(body, _from_plain)
    return unpack(body, _from_plain, expected.containers_max, expected.containers_named)


def _largest(*messages: WireMessage) -> int:
    return max(len(encode_wire(message)) for message in messages)


_WIDE: Final = "\U0010ffff"
"""A character of four bytes in UTF-8: strings of the most bytes their limits allow."""

GREETING_BYTES_MAX: Final = _largest(
    Hello(INT64_MAX, _WIDE * CELL_CHARS_MAX, max(ConnectionRole), _WIDE * NAME_CHARS_MAX),
    PeerChallenge(bytes(PEER_NONCE_BYTES)),
    PeerProof(bytes(PEER_PROOF_BYTES)),
)
"""The largest body of a message sent before a connection is greeted: a Hello, or a
connecting peer's challenge or proof. A replica takes no larger frame from a connection
that has not said hello (or proven itself a member): ``limits.hello_frame_bytes_max`` is at
least this."""

GREETING_ANSWER_BYTES_MAX: Final = _largest(
    Welcome(INT64_MAX, _WIDE * CELL_CHARS_MAX, ReplicaId(_WIDE * NAME_CHARS_MAX)),
    PeerChallengeReply(bytes(PEER_NONCE_BYTES), bytes(PEER_PROOF_BYTES)),
    ErrorReply(
        RequestId(INT64_MAX),
        max(ErrorCode),
        _WIDE * ERROR_MESSAGE_CHARS_MAX,
        ReplicaId(_WIDE * NAME_CHARS_MAX),
    ),
)
"""The largest body of an answer to a greeting: a Welcome, a listening peer's challenge
reply, or a refusal. All a replica takes on the connection it opened to a peer."""


# ----------------------------------------------------------------------------- operating errors


def error_reply_for(error: ChubbyError, request_id: int) -> ErrorReply:
    """The reply that makes the client raise `error`'s class with its message and hint.

    The message is cut to the wire's limit: it may quote client input, such as a long path.
    """
    hint = None if error.master_hint is None else ReplicaId(error.master_hint)
    message = error.message[:ERROR_MESSAGE_CHARS_MAX]
    return ErrorReply(RequestId(request_id), error.code, message, hint)


def raise_for(reply: ErrorReply) -> NoReturn:
    """Raise the `ChubbyError` subclass for `reply`'s code, as a client does on receiving it."""
    raise error_for(reply.code, reply.message, reply.master_hint)
