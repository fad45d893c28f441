"""Client-to-replica messages and the connection hello, as frozen data.

Part of `chubbypy.protocol` (what crosses a process boundary, as data). Every connection, from
a client or from a peer replica, opens with a `Hello` from the connecting side and a `Welcome`
from the replica. On a client connection the client then sends `ClientRequest`s, each with a
request id it chose, and the replica answers each with the `ServerReply` of the same id, in
any order. On a peer connection both sides then exchange `PeerFrame`s. `chubbypy.protocol.wire`
turns these into frame bodies and back, validating every field once, so a message that exists
is well formed: its integers in range and its strings within their limits.

Operating errors come back as an `ErrorReply` carrying an `ErrorCode`; the client raises the
matching `ChubbyError` subclass (`wire.raise_for`). Errors about the namespace itself
(`NoSuchNode`, `GenerationMismatch`, ...) are `Failure` results inside a `WriteReply` or
`ReadReply`, because the log decided them.
"""

from __future__ import annotations

import enum
from typing import Final, Literal, NewType

from attrs import frozen

from chubbypy.protocol import _plain
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import Read, ReadResult, Write, WriteResult
from chubbypy.protocol.peer import PeerMessage
from chubbypy.protocol.session import SessionCall, SessionResult
from chubbypy.protocol.values import CallNumber, ClientId, Epoch, LogIndex, ReplicaId

__all__ = [
    "CELL_CHARS_MAX",
    "CLIENT_CREDENTIAL_BYTES",
    "ENDPOINT_CHARS_MAX",
    "ERROR_MESSAGE_CHARS_MAX",
    "INT64_MAX",
    "MEMBER_ROLES",
    "NAME_CHARS_MAX",
    "NO_REQUEST",
    "PEER_NONCE_BYTES",
    "PEER_PROOF_BYTES",
    "PRINCIPAL_CHARS_MAX",
    "PROTOCOL_VERSION",
    "REPLICAS_MAX",
    "REPLICA_ROLES",
    "STATE_CHECKSUM_BYTES",
    "TOKEN_CHARS_MAX",
    "Authenticate",
    "Authenticated",
    "ChecksumReport",
    "ClientRequest",
    "ConnectionRole",
    "ErrorReply",
    "Hello",
    "LocateMaster",
    "MasterLocation",
    "PeerChallenge",
    "PeerChallengeReply",
    "PeerFragment",
    "PeerFrame",
    "PeerProof",
    "ReadReply",
    "ReadRequest",
    "Register",
    "Registered",
    "ReplicaAddress",
    "ReplicaRole",
    "ReplicaStatus",
    "RequestId",
    "ServerReply",
    "SessionReply",
    "SessionRequest",
    "StatusReply",
    "StatusRequest",
    "Welcome",
    "WireMessage",
    "WriteReply",
    "WriteRequest",
]

PROTOCOL_VERSION: Final = 6
"""The wire protocol this code speaks; a `Hello` with another is refused (UNSUPPORTED_VERSION).
Version 3 added the peer handshake (`PeerChallenge`, `PeerChallengeReply`, `PeerProof`);
version 4 the operators' `GetLockInfo` and `KillSession`, and a session's principal in
`SessionInfo` (a field more, which a version 3 client would not read); version 5 a
replica's checksum mismatches in `ReplicaStatus` (`chubbypy status` reports divergence),
and the operators' `GetSnapshot` (backups) with its error SNAPSHOT_GONE; version 6 the
membership in the log (`ValueKind.MEMBERSHIP`, a snapshot's and a `CatchUp`'s membership:
peers of versions 5 and 6 cannot read each other's log, so a cell upgrades whole)."""

RequestId = NewType("RequestId", int)
"""Chosen by the client, unique among its requests in flight, in [1, INT64_MAX]."""

NO_REQUEST = RequestId(0)
"""The request id of an `ErrorReply` not tied to a request (a bad frame, a bad hello)."""

# Limits checked by the wire codec. Integers are non-negative and fit a signed 64-bit integer,
# so every language and every database column (SQLite's INTEGER) holds them unchanged.
INT64_MAX: Final = _plain.INT64_MAX
NAME_CHARS_MAX: Final = 255
"""A replica id or a client's name."""
CELL_CHARS_MAX: Final = 64
"""A cell's name (the <cell> of /ls/<cell>/); the configuration allows no longer."""
ENDPOINT_CHARS_MAX: Final = 1024
"""A Twisted client endpoint string; TLS options with file paths make these long."""
ERROR_MESSAGE_CHARS_MAX: Final = 4096
PRINCIPAL_CHARS_MAX: Final = 255
"""A principal's name in `Authenticate` (and in the cell file's ``auth.principals``)."""
TOKEN_CHARS_MAX: Final = 1024
"""A principal's token in `Authenticate`; the cell file allows no longer."""
MEMBER_ROLES: Final = ("voter", "learner", "removed", "joining")
"""What `ReplicaStatus.member_role` may be."""
REPLICAS_MAX: Final = 64
"""Addresses in a `MasterLocation`: far above any real cell (3 or 5 replicas)."""
STATE_CHECKSUM_BYTES: Final = 8
"""A replica's state checksum in a `ChecksumReport` (`chubbypy.paxos.Applier.checksum`)."""
CLIENT_CREDENTIAL_BYTES: Final = 16
"""A plain client's credential (`Registered`, `WriteRequest`): exactly this long."""


class ConnectionRole(enum.IntEnum):
    """Who opened a connection: what follows the hello on it. Values are stable."""

    CLIENT = 1
    PEER = 2


# ----------------------------------------------------------------------------- the hello


@frozen
class Hello:
    """The first message on every connection, from the side that connected.

    `name` is the client's chosen name, or the connecting replica's id. Its layout never
    changes between versions, so a replica can always read it and answer a mismatch.
    """

    version: int
    cell: str
    role: ConnectionRole
    name: str


@frozen
class Welcome:
    """The replica's answer to an acceptable `Hello`: the connection is now open."""

    version: int
    cell: str
    replica_id: ReplicaId


# ----------------------------------------------------------------------------- the peer handshake

PEER_NONCE_BYTES: Final = 32
"""A handshake nonce: random, fresh for each connection, so no recorded proof is ever valid
again."""
PEER_PROOF_BYTES: Final = 32
"""An HMAC-SHA256 proof of the cell's peer key."""


@frozen
class PeerChallenge:
    """Sent by a connecting replica right after its `Hello` when the cell authenticates its
    replicas with its peer key: the connecting side's fresh nonce."""

    nonce: bytes


@frozen
class PeerChallengeReply:
    """The listening replica's answer to a `PeerChallenge`: its own fresh nonce, and its proof
    of the peer key over both nonces, the cell and both ids. The connecting side checks it
    before it proves anything itself, so a process squatting on a peer's port learns nothing
    it could use and is fed no Paxos message."""

    nonce: bytes
    proof: bytes


@frozen
class PeerProof:
    """The connecting replica's proof of the peer key over both nonces, the cell and both
    ids; the listening side answers a good one with its `Welcome`, and closes the connection
    on a wrong one."""

    proof: bytes


# ----------------------------------------------------------------------------- requests


@frozen
class LocateMaster:
    """Which replica is master? Any replica answers, master or not (Chubby §2.2)."""

    request_id: RequestId


@frozen
class Register:
    """Register as a new client through the log. A retry with the same `nonce` gets the same
    client id, so a registration whose reply was lost is not made twice."""

    request_id: RequestId
    nonce: int


@frozen
class WriteRequest:
    """A write, to be committed exactly once: `(client_id, sequence)` names it across retries.

    `client_id` is a registered client (never `NO_CLIENT`, which the log reads as a
    registration) and `credential` the secret its `Registered` gave: a replica refuses a
    write whose credential is not the client's (PERMISSION_DENIED) before anything else.
    `sequence` counts the client's commands from 1. `first_unacked` is the lowest sequence
    the client may still retry; the cell may forget the results of the client's commands
    below it.
    """

    request_id: RequestId
    client_id: ClientId
    credential: bytes
    sequence: int
    first_unacked: int
    write: Write


@frozen
class ReadRequest:
    """A read, answered by the master from memory under its lease."""

    request_id: RequestId
    read: Read


@frozen
class StatusRequest:
    """What is this replica doing? Any replica answers; for operators and health checks."""

    request_id: RequestId


@frozen
class SessionRequest:
    """A session, handle or lock call (`chubbypy.protocol.session`), served by the master.
    A call that may change state carries its session's `number` for it (the same on every
    retry), so that the cell carries it out once and answers every retry alike."""

    request_id: RequestId
    call: SessionCall
    number: CallNumber | None = None


@frozen
class Authenticate:
    """Act as `principal`, proven by its shared `token`, for the rest of this connection.
    Sent first after the welcome; PERMISSION_DENIED for an unknown principal or wrong token."""

    request_id: RequestId
    principal: str
    token: str


ClientRequest = (
    LocateMaster
    | Register
    | WriteRequest
    | ReadRequest
    | StatusRequest
    | SessionRequest
    | Authenticate
)

# ----------------------------------------------------------------------------- replies


@frozen
class ReplicaAddress:
    """Where clients reach one replica: a Twisted client endpoint string."""

    replica_id: ReplicaId
    client_endpoint: str


@frozen
class MasterLocation:
    """The master as this replica believes it (None if it knows none), and every member."""

    request_id: RequestId
    master: ReplicaId | None
    epoch: Epoch
    replicas: tuple[ReplicaAddress, ...]


@frozen
class Registered:
    """The client id the log gave to a `Register`'s nonce (never `NO_CLIENT`), and the
    client's credential: proof of ownership that every `WriteRequest` of the client must
    show. Only the registering client hears it; the id alone is worth nothing."""

    request_id: RequestId
    client_id: ClientId
    credential: bytes


@frozen
class WriteReply:
    """A committed write's result and the log index of the entry that carried it."""

    request_id: RequestId
    index: LogIndex
    result: WriteResult


@frozen
class ReadReply:
    """A read's result, as of every entry up to `applied_index`."""

    request_id: RequestId
    applied_index: LogIndex
    result: ReadResult


ReplicaRole = Literal["master", "candidate", "follower"]
"""What a replica is doing in the Paxos log: leading, campaigning, or following a master."""

REPLICA_ROLES: Final[frozenset[str]] = frozenset({"master", "candidate", "follower"})


@frozen
class ReplicaStatus:
    """One replica's view of itself, for operators: role, log positions, lease, health."""

    replica_id: ReplicaId
    role: ReplicaRole
    epoch: Epoch
    promised: str
    """The highest ballot this acceptor promised, as ``str(ballot)``: "7.r2", or "0"."""
    chosen_index: LogIndex
    applied_index: LogIndex
    first_index: LogIndex
    """The first entry still in the log (those before it are in the snapshot)."""
    last_index: LogIndex
    snapshot_index: LogIndex
    serving: bool
    """The replica is master and may answer reads and writes now."""
    lease_valid: bool
    lease_remaining_ms: int
    master_hint: ReplicaId | None
    uptime_ms: int
    checksum_mismatches: int
    """State checksums of this replica's that differed from a peer's at the same index: not
    0 means the replicas diverged (a bug, a disk that lied), and stays so until restarted."""
    member_role: str = "voter"
    """Its part in the membership it knows: "voter", "learner", "removed" (not a member:
    an operator removed it), or "joining" (a new replica that has not yet learned the
    membership from a peer)."""
    membership_version: int = 1
    """The version of the membership it knows (0 while joining)."""


@frozen
class StatusReply:
    """A `StatusRequest`'s answer."""

    request_id: RequestId
    status: ReplicaStatus


@frozen
class ErrorReply:
    """An operating error for request `request_id` (`NO_REQUEST` if tied to none).

    `master_hint` is the replica id of the master, when the replica knows it (NOT_MASTER).
    """

    request_id: RequestId
    code: ErrorCode
    message: str
    master_hint: ReplicaId | None


@frozen
class SessionReply:
    """A session call's result (its failures come as `ErrorReply`)."""

    request_id: RequestId
    result: SessionResult


@frozen
class Authenticated:
    """The connection now acts as `principal`."""

    request_id: RequestId
    principal: str


ServerReply = (
    MasterLocation
    | Registered
    | WriteReply
    | ReadReply
    | StatusReply
    | SessionReply
    | Authenticated
    | ErrorReply
)

# ----------------------------------------------------------------------------- peers


@frozen
class ChecksumReport:
    """A replica's state checksum at a CHECKSUM entry, sent to the master (PML §6.2)."""

    index: LogIndex
    checksum: bytes


@frozen
class PeerFrame:
    """A Paxos message between replicas: all that flows on a peer connection after the hello."""

    message: PeerMessage


@frozen
class PeerFragment:
    """A piece of a peer message too large for one frame (a big snapshot, say).

    The sender splits the encoded `PeerFrame` body into pieces and sends them in order on one
    connection; the receiver joins them and decodes the whole once `offset + len(data)`
    reaches `total`. A connection lost part-way loses the partial message, as Paxos expects.
    """

    total: int
    offset: int
    data: bytes


WireMessage = (
    Hello
    | Welcome
    | PeerChallenge
    | PeerChallengeReply
    | PeerProof
    | ClientRequest
    | ServerReply
    | PeerFrame
    | ChecksumReport
    | PeerFragment
)
