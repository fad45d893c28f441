"""The wire codec: every message round-trips, and any bad body raises DecodeError and nothing else.

The bad bodies follow reliability.md §5.3 items 5 and 6 (msgpack decoding, then the schema).
"""

from __future__ import annotations

import contextlib
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chubbypy.protocol import (
    Ballot,
    CallNumber,
    ClientId,
    Epoch,
    LogIndex,
    PeerMessage,
    Prepare,
    ReplicaId,
)
from chubbypy.protocol.client import (
    CELL_CHARS_MAX,
    CLIENT_CREDENTIAL_BYTES,
    ENDPOINT_CHARS_MAX,
    ERROR_MESSAGE_CHARS_MAX,
    INT64_MAX,
    NAME_CHARS_MAX,
    PEER_NONCE_BYTES,
    PEER_PROOF_BYTES,
    PRINCIPAL_CHARS_MAX,
    PROTOCOL_VERSION,
    REPLICAS_MAX,
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
from chubbypy.protocol.codec import encode_message
from chubbypy.protocol.errors import ERROR_CLASSES, ErrorCode, Failure, NotMaster
from chubbypy.protocol.namespace import (
    Absent,
    AclGenerationIs,
    AclNames,
    ContentGenerationIs,
    Contents,
    ContentsAre,
    Create,
    Delete,
    DirEntry,
    Exists,
    GetContentsAndStat,
    GetStat,
    InstanceIs,
    Listing,
    LockMode,
    MultiOp,
    MultiResult,
    Read,
    ReadDir,
    ReadResult,
    SetAcl,
    SetContents,
    SimpleWrite,
    Stat,
    Test,
    Write,
    WriteResult,
    Written,
)
from chubbypy.protocol.session import (
    EVENT_MASK_ALL,
    HANDLE_MODES_ALL,
    LOCK_INFO_LISTED_MAX,
    SESSION_PATHS_LISTED_MAX,
    SESSIONS_PAGE_MAX,
    SNAPSHOT_DIGEST_BYTES,
    STATE_CHECKSUM_BYTES,
    AcquireLock,
    CallDone,
    CheckSequencer,
    CloseHandle,
    CloseSession,
    CreateSession,
    EventKind,
    EventMask,
    GetLockInfo,
    GetSequencer,
    GetSnapshot,
    HandleMode,
    HandleOpened,
    HandleWrite,
    KeepAlive,
    KillSession,
    LeaseExtended,
    ListSessions,
    Locked,
    LockHolderInfo,
    LockInfo,
    LockWaiterInfo,
    NodeRead,
    Open,
    PoisonHandle,
    ReadNode,
    ReleaseLock,
    SequencerValidity,
    SessionCall,
    SessionCreated,
    SessionEnding,
    SessionEvent,
    SessionInfo,
    SessionList,
    SessionResult,
    SnapshotChunk,
)
from chubbypy.protocol.values import LOG_INDEX_MAX
from chubbypy.protocol.wire import (
    GREETING_ANSWER_BYTES_MAX,
    GREETING_BYTES_MAX,
    DecodeError,
    UnexpectedMessageError,
    UnknownMessageError,
    decode_wire,
    encode_wire,
    error_reply_for,
    expecting,
    raise_for,
)
from tests.unit.protocol.test_codec import MESSAGES as PEER_MESSAGES

R1 = ReplicaId("r1")

# ----------------------------------------------------------------------------- strategies

uints = st.integers(0, INT64_MAX)
request_ids = st.integers(1, INT64_MAX).map(RequestId)
indices = uints.map(LogIndex)
names = st.text(min_size=1, max_size=12)
replica_ids = names.map(ReplicaId)
optional_replica_ids = st.none() | replica_ids
cells = st.text(min_size=1, max_size=8)
paths = st.text(max_size=12)
blobs = st.binary(max_size=16)

acls = st.builds(AclNames, names, names, names)
stats = st.builds(
    Stat, uints, uints, uints, uints, uints, acls, st.booleans(), st.booleans(), uints
)
tests: st.SearchStrategy[Test] = st.one_of(
    st.builds(Exists, paths),
    st.builds(Absent, paths),
    st.builds(ContentGenerationIs, paths, uints),
    st.builds(AclGenerationIs, paths, uints),
    st.builds(InstanceIs, paths, uints),
    st.builds(ContentsAre, paths, blobs),
)
simple_writes: st.SearchStrategy[SimpleWrite] = st.one_of(
    st.builds(Create, paths, st.booleans(), blobs, st.none() | acls, st.booleans()),
    st.builds(SetContents, paths, blobs, st.none() | uints),
    st.builds(Delete, paths, st.none() | uints),
    st.builds(SetAcl, paths, acls, st.none() | uints),
)
writes: st.SearchStrategy[Write] = simple_writes | st.builds(
    MultiOp,
    st.lists(tests, max_size=3).map(tuple),
    st.lists(simple_writes, max_size=3).map(tuple),
    st.lists(simple_writes, max_size=3).map(tuple),
)
reads: st.SearchStrategy[Read] = st.one_of(
    st.builds(GetContentsAndStat, paths),
    st.builds(GetStat, paths),
    st.builds(ReadDir, paths, paths, st.integers(1, INT64_MAX)),
)
failures = st.builds(Failure, st.sampled_from(ErrorCode), st.text(max_size=20))
writtens = st.builds(Written, st.none() | stats)
write_results: st.SearchStrategy[WriteResult] = st.one_of(
    writtens,
    st.builds(
        MultiResult,
        st.booleans(),
        st.lists(st.booleans(), max_size=3).map(tuple),
        st.lists(writtens, max_size=3).map(tuple),
    ),
    failures,
)
read_results: st.SearchStrategy[ReadResult] = st.one_of(
    st.builds(Contents, blobs, stats),
    stats,
    st.builds(
        Listing, st.lists(st.builds(DirEntry, names, stats), max_size=3).map(tuple), st.booleans()
    ),
    failures,
)

ballots = st.builds(Ballot, uints, replica_ids)
"""As a status shows them (text): any round."""
peer_messages: st.SearchStrategy[PeerMessage] = st.one_of(*PEER_MESSAGES.values())

statuses = st.builds(
    ReplicaStatus,
    replica_id=replica_ids,
    role=st.sampled_from(["master", "candidate", "follower"]),
    epoch=uints.map(Epoch),
    promised=ballots.map(str),
    chosen_index=indices,
    applied_index=indices,
    first_index=indices,
    last_index=indices,
    snapshot_index=indices,
    serving=st.booleans(),
    lease_valid=st.booleans(),
    lease_remaining_ms=uints,
    master_hint=optional_replica_ids,
    uptime_ms=uints,
    checksum_mismatches=uints,
)

handles = st.binary(min_size=1, max_size=40)
session_ids = st.integers(1, INT64_MAX)
credentials = st.binary(min_size=1, max_size=64)
client_credentials = st.binary(min_size=CLIENT_CREDENTIAL_BYTES, max_size=CLIENT_CREDENTIAL_BYTES)
handle_modes = st.integers(1, int(HANDLE_MODES_ALL)).map(HandleMode)
event_masks = st.integers(0, int(EVENT_MASK_ALL)).map(lambda bits: EventMask(bits & EVENT_MASK_ALL))
lock_modes = st.sampled_from(LockMode)
simple_writes = writes.filter(lambda w: not isinstance(w, MultiOp))
session_calls: st.SearchStrategy[SessionCall] = st.one_of(
    st.builds(CreateSession, names, uints),
    st.builds(KeepAlive, session_ids, credentials, uints),
    st.builds(CloseSession, session_ids, credentials),
    st.builds(
        Open, session_ids, credentials, st.just("/ls/c/f"), handle_modes, event_masks, uints,
        st.none() | st.just(Create("/ls/c/f", contents=b"x")), st.booleans(),
    ),
    st.builds(CloseHandle, handles),
    st.builds(AcquireLock, handles, lock_modes, st.booleans()),
    st.builds(ReleaseLock, handles, st.none() | uints),
    st.builds(HandleWrite, handles, simple_writes, st.none() | handles),
    st.builds(GetSequencer, handles),
    st.builds(CheckSequencer, handles),
    st.builds(PoisonHandle, handles),
    st.builds(ReadNode, session_ids, credentials, st.just("/ls/c/f"), st.booleans()),
    st.builds(ListSessions, uints, st.integers(1, SESSIONS_PAGE_MAX)),
    st.builds(GetLockInfo, st.just("/ls/c/f")),
    st.builds(KillSession, session_ids),
    st.just(GetSnapshot(0, 0)),
    st.builds(GetSnapshot, st.integers(1, INT64_MAX), uints),
)  # fmt: skip
session_events = st.builds(
    SessionEvent, st.integers(1, INT64_MAX), st.sampled_from(EventKind), names, uints
)
listed_paths = st.lists(names.map(lambda name: f"/ls/c/{name}"), max_size=3).map(tuple)
session_infos = st.builds(
    SessionInfo, session_ids, names, st.sampled_from(["live", "closing", "doomed", "ending"]),
    uints, uints, st.lists(st.tuples(names, st.sampled_from(["exclusive", "shared"])),
                           max_size=3).map(tuple),
    st.integers(3, INT64_MAX), listed_paths, st.integers(3, INT64_MAX), uints,
    st.just("") | names,
)  # fmt: skip
principals = st.just("") | names
lock_waiters = st.builds(
    LockWaiterInfo, session_ids, names, principals, st.sampled_from(["exclusive", "shared"]), uints
)


@st.composite
def lock_infos(draw: st.DrawFn) -> LockInfo:
    """A lock as a master describes it: free with no holder, exclusive with one, or shared
    with some; counts at least what is listed."""
    mode = draw(st.sampled_from(["free", "exclusive", "shared"]))
    count = {"free": 0, "exclusive": 1}[mode] if mode != "shared" else draw(st.integers(1, 5))
    listed = draw(st.integers(min(count, 1), count))
    holders = tuple(
        LockHolderInfo(draw(session_ids), draw(names), draw(principals), mode, draw(uints))
        for _ in range(listed)
    )
    waiters = tuple(draw(st.lists(lock_waiters, max_size=3)))
    waiter_count = len(waiters) + draw(st.integers(0, 5))
    return LockInfo(draw(paths), draw(uints), mode, draw(uints), holders, count, waiters,
                    waiter_count, draw(uints))  # fmt: skip


@st.composite
def snapshot_chunks(draw: st.DrawFn) -> SnapshotChunk:
    """A piece of a snapshot as a master sends it: inside the snapshot it announces."""
    data = draw(st.binary(min_size=1, max_size=64))
    offset = draw(st.integers(0, 1000))
    total = offset + len(data) + draw(st.integers(0, 1000))
    digest = draw(st.binary(min_size=SNAPSHOT_DIGEST_BYTES, max_size=SNAPSHOT_DIGEST_BYTES))
    checksum = draw(st.binary(min_size=STATE_CHECKSUM_BYTES, max_size=STATE_CHECKSUM_BYTES))
    return SnapshotChunk(draw(st.integers(1, INT64_MAX)), total, digest, checksum, offset, data)


session_results: st.SearchStrategy[SessionResult] = st.one_of(
    st.builds(SessionCreated, session_ids, uints, credentials),
    st.builds(LeaseExtended, uints, st.lists(session_events, max_size=3).map(tuple)),
    st.builds(HandleOpened, handles, st.booleans(), stats, session_ids),
    st.builds(Locked, stats, handles),
    st.builds(CallDone, st.none() | stats),
    st.builds(SequencerValidity, st.booleans()),
    st.builds(NodeRead, st.none() | stats, st.binary(max_size=16), st.booleans(), uints),
    st.builds(SessionList, st.lists(session_infos, max_size=3).map(tuple), st.booleans()),
    lock_infos(),
    st.builds(SessionEnding, st.just(True), st.booleans(), uints),
    st.just(SessionEnding(found=False, already=False, ends_in_ms=0)),
    snapshot_chunks(),
)

nonces = st.binary(min_size=PEER_NONCE_BYTES, max_size=PEER_NONCE_BYTES)
proofs = st.binary(min_size=PEER_PROOF_BYTES, max_size=PEER_PROOF_BYTES)

MESSAGES: dict[type, st.SearchStrategy[WireMessage]] = {
    SessionRequest: st.builds(
        SessionRequest,
        request_ids,
        session_calls,
        st.none()
        | st.builds(
            lambda sequence, behind: CallNumber(sequence, max(1, sequence - behind)),
            st.integers(1, 2**62),
            st.integers(0, 5),
        ),
    ),
    SessionReply: st.builds(SessionReply, request_ids, session_results),
    Authenticate: st.builds(Authenticate, request_ids, names, st.text(min_size=1, max_size=40)),
    Authenticated: st.builds(Authenticated, request_ids, names),
    Hello: st.builds(Hello, uints, cells, st.sampled_from(ConnectionRole), names),
    Welcome: st.builds(Welcome, uints, cells, replica_ids),
    PeerChallenge: st.builds(PeerChallenge, nonces),
    PeerChallengeReply: st.builds(PeerChallengeReply, nonces, proofs),
    PeerProof: st.builds(PeerProof, proofs),
    LocateMaster: st.builds(LocateMaster, request_ids),
    Register: st.builds(Register, request_ids, uints),
    WriteRequest: st.builds(
        lambda request_id, client_id, credential, sequence, behind, write: WriteRequest(
            request_id, client_id, credential, sequence, max(1, sequence - behind), write
        ),
        request_ids,
        st.integers(1, INT64_MAX).map(ClientId),
        client_credentials,
        st.integers(1, INT64_MAX),
        st.integers(0, 5),
        writes,
    ),
    ReadRequest: st.builds(ReadRequest, request_ids, reads),
    StatusRequest: st.builds(StatusRequest, request_ids),
    MasterLocation: st.builds(
        MasterLocation,
        request_ids,
        optional_replica_ids,
        uints.map(Epoch),
        st.lists(
            st.builds(ReplicaAddress, replica_ids, st.text(min_size=1, max_size=30)), max_size=5
        ).map(tuple),
    ),
    Registered: st.builds(
        Registered, request_ids, st.integers(1, INT64_MAX).map(ClientId), client_credentials
    ),
    WriteReply: st.builds(WriteReply, request_ids, indices, write_results),
    ReadReply: st.builds(ReadReply, request_ids, indices, read_results),
    StatusReply: st.builds(StatusReply, request_ids, statuses),
    ErrorReply: st.builds(
        ErrorReply,
        uints.map(RequestId),
        st.sampled_from(ErrorCode),
        st.text(max_size=40),
        optional_replica_ids,
    ),
    PeerFrame: st.builds(PeerFrame, peer_messages),
    PeerFragment: st.builds(
        lambda offset, data, extra: PeerFragment(offset + len(data) + extra, offset, data),
        st.integers(0, 2**62),
        st.binary(min_size=1, max_size=32),
        st.integers(0, 2**62),
    ),
    ChecksumReport: st.builds(
        ChecksumReport, st.integers(1, LOG_INDEX_MAX), st.binary(min_size=8, max_size=8)
    ),
}


def test_every_message_type_has_a_strategy() -> None:
    """The round-trip test below covers every member of the WireMessage union."""
    assert set(MESSAGES) == set(typing.get_args(WireMessage))


@pytest.mark.parametrize("kind", list(MESSAGES), ids=lambda kind: kind.__name__)
@settings(max_examples=30, deadline=None, derandomize=True)
@given(data=st.data())
def test_message_round_trips(kind: type, data: st.DataObject) -> None:
    """decode_wire(encode_wire(m)) == m for every message type, also when only its own
    kind is expected (the tag the encoder writes is its class's)."""
    message = data.draw(MESSAGES[kind])
    assert decode_wire(encode_wire(message)) == message
    assert decode_wire(encode_wire(message), expecting("it", kind)) == message


@pytest.mark.parametrize(
    "plain",
    [
        [3, b"short nonce"],
        [4, bytes(PEER_NONCE_BYTES), bytes(PEER_PROOF_BYTES + 1)],
        [5, b""],
        [5, "a proof as text"],
    ],
)
def test_a_handshake_nonce_or_proof_of_another_length_is_refused(plain: list[object]) -> None:
    """Nonces and proofs have exactly one length; any other is a DecodeError."""
    with pytest.raises(DecodeError):
        decode_wire(msgpack.packb(plain))


def test_a_hello_of_any_version_decodes() -> None:
    """A Hello from a newer version still decodes, so the replica can say which it speaks."""
    hello = Hello(PROTOCOL_VERSION + 1, "cell", ConnectionRole.PEER, "r2")
    assert decode_wire(encode_wire(hello)) == hello


def test_strings_and_integers_at_their_limits_decode() -> None:
    """Names of 255, cells of 64, messages of 4096 characters and INT64_MAX ids are accepted."""
    messages: list[WireMessage] = [
        Hello(1, "c" * CELL_CHARS_MAX, ConnectionRole.CLIENT, "n" * NAME_CHARS_MAX),
        Register(RequestId(INT64_MAX), INT64_MAX),
        ErrorReply(RequestId(0), ErrorCode.BUSY, "m" * ERROR_MESSAGE_CHARS_MAX, None),
        MasterLocation(
            RequestId(1),
            R1,
            Epoch(0),
            (ReplicaAddress(R1, "e" * ENDPOINT_CHARS_MAX),) * REPLICAS_MAX,
        ),
    ]
    for message in messages:
        assert decode_wire(encode_wire(message)) == message


def test_a_session_list_at_its_limits_decodes() -> None:
    """A page of SESSIONS_PAGE_MAX sessions, each listing SESSION_PATHS_LISTED_MAX locks
    and ephemeral files, round-trips."""
    paths = tuple(f"/ls/c/{number}" for number in range(SESSION_PATHS_LISTED_MAX))
    info = SessionInfo(
        1,
        "n" * 256,
        "live",
        0,
        0,
        tuple((p, "shared") for p in paths),
        99,
        paths,
        99,
        0,
        "p" * PRINCIPAL_CHARS_MAX,
    )
    message = SessionReply(RequestId(1), SessionList((info,) * SESSIONS_PAGE_MAX, True))
    assert decode_wire(encode_wire(message)) == message


def test_a_lock_info_at_its_limits_decodes() -> None:
    """A shared lock listing LOCK_INFO_LISTED_MAX holders and as many waiters, each with
    the longest client name and principal, round-trips; so does a free lock."""
    holder = LockHolderInfo(INT64_MAX, "n" * 256, "p" * PRINCIPAL_CHARS_MAX, "shared", 60_000)
    waiter = LockWaiterInfo(1, "n" * 256, "p" * PRINCIPAL_CHARS_MAX, "exclusive", INT64_MAX)
    held = LockInfo("/ls/c/" + "l" * 4000, INT64_MAX, "shared", INT64_MAX,
                    (holder,) * LOCK_INFO_LISTED_MAX, INT64_MAX,
                    (waiter,) * LOCK_INFO_LISTED_MAX, INT64_MAX, INT64_MAX)  # fmt: skip
    free = LockInfo("/ls/c/l", 1, "free", 0, (), 0, (), 0, 0)
    for info in (held, free):
        message = SessionReply(RequestId(1), info)
        assert decode_wire(encode_wire(message)) == message


def test_a_list_sessions_limit_above_the_page_maximum_is_read_as_the_maximum() -> None:
    """A client asking for more sessions than a page holds asks for a whole page."""
    request = SessionRequest(RequestId(1), ListSessions(5, INT64_MAX))
    decoded = decode_wire(encode_wire(request))
    assert decoded == SessionRequest(RequestId(1), ListSessions(5, SESSIONS_PAGE_MAX))


# ----------------------------------------------------------------------------- bad input


def pack(data: object) -> bytes:
    return bytes(msgpack.packb(data, use_bin_type=True))


def replaced(base: list[Any], position: int, value: object) -> list[Any]:
    """`base` with the item at `position` replaced: one bad field in an otherwise good message."""
    return [value if i == position else item for i, item in enumerate(base)]


STAT = [1, 1, 0, 0, 0, ["r", "w", "c"], False, False, 3]
STATUS = ["r1", "master", 3, "7.r2", 10, 10, 1, 12, 0, True, True, 500, "r1", 1000, 0, "voter", 1]
SESSION_INFO = [7, "me", "live", 900, 2, [["/ls/c/l", "exclusive"]], 1, ["/ls/c/e"], 1, 0, "alice"]
HOLDER = [7, "me", "alice", "shared", 1000]
WAITER = [8, "you", "", "exclusive", 250]
LOCK_INFO = [9, "/ls/c/l", 65536, "shared", 3, [HOLDER], 2, [WAITER], 4, 0]
CREDENTIAL = bytes(range(CLIENT_CREDENTIAL_BYTES))
SNAPSHOT_CHUNK = [11, 12, 100_000, b"d" * 32, b"c" * 8, 262_144 % 100_000, b"piece"]
"""A good SnapshotChunk's plain form: 5 bytes at 62,144 of a 100,000-byte snapshot."""


GOOD: dict[str, list[Any]] = {
    "hello": [1, 1, "cell", 1, "client-a"],
    "welcome": [2, 1, "cell", "r1"],
    "locate": [10, 1],
    "register": [11, 1, 42],
    "write": [12, 1, 5, CREDENTIAL, 1, 1, [3, "/ls/cell/x", None]],
    "read": [13, 1, [2, "/ls/cell/x"]],
    "status": [14, 1],
    "location": [20, 1, "r1", 3, [["r1", "tcp:localhost:7001"]]],
    "registered": [21, 1, 5, CREDENTIAL],
    "write reply": [22, 1, 10, [1, None]],
    "read reply": [23, 1, 10, [4, b"abc", STAT]],
    "status reply": [24, 1, STATUS],
    "error": [29, 0, 20, "not master", "r2"],
    "peer": [30, encode_message(Prepare(Ballot(1, R1), LogIndex(1)))],
    "authenticate": [16, 1, "alice", "a token"],
    "list sessions": [15, 1, [13, 0, 100], None],
    "open": [15, 1, [4, 7, b"credential", "/ls/c/f", 7, 0x76, 0, None, False], [3, 2]],
    "session list": [25, 1, [8, [SESSION_INFO], False]],
    "get lock info": [15, 1, [14, "/ls/c/l"], None],
    "kill session": [15, 1, [15, 7], None],
    "lock info": [25, 1, LOCK_INFO],
    "free lock info": [25, 1, [9, "/ls/c/l", 65536, "free", 3, [], 0, [], 0, 1500]],
    "session ending": [25, 1, [10, True, False, 11800]],
    "session ending already": [25, 1, [10, True, True, 0]],
    "get a new snapshot": [15, 1, [16, 0, 0], None],
    "get a snapshot's piece": [15, 1, [16, 12, 262144], None],
    "snapshot chunk": [25, 1, SNAPSHOT_CHUNK],
    "no session to end": [25, 1, [10, False, False, 0]],
}


@pytest.mark.parametrize("plain", list(GOOD.values()), ids=list(GOOD))
def test_the_good_examples_decode(plain: list[Any]) -> None:
    """Each base message the bad cases below mutate is itself valid."""
    decode_wire(pack(plain))


def nested_multi_ops(depth: int) -> list[Any]:
    write: list[Any] = [3, "/x", None]
    for _ in range(depth):
        write = [5, [], [write], []]
    return write


def nested_multi_results(depth: int) -> list[Any]:
    result: list[Any] = [1, None]
    for _ in range(depth):
        result = [2, True, [], [result]]
    return result


W, E, L, S = GOOD["write"], GOOD["error"], GOOD["location"], GOOD["status reply"]
TOO_MANY = SESSION_PATHS_LISTED_MAX + 1


OPEN = GOOD["open"][2]


def session_call(call: list[Any]) -> bytes:
    """A SessionRequest carrying `call`."""
    return pack([15, 1, call, None])


def session_list(info: list[Any]) -> bytes:
    """A SessionReply listing the one session `info`."""
    return pack([25, 1, [8, [info], False]])


def lock_info(position: int, value: object) -> bytes:
    """A SessionReply with the good LockInfo, one field replaced (1 is its path)."""
    return pack([25, 1, replaced(LOCK_INFO, position, value)])


def snapshot_chunk(position: int, value: object) -> bytes:
    """A SessionReply with the good SnapshotChunk, one field replaced (1 is its index)."""
    return pack([25, 1, replaced(SNAPSHOT_CHUNK, position, value)])


HOLDERS, WAITERS = 5, 7
"""Positions of the holders and the waiters in a LockInfo's plain form."""


BAD: dict[str, bytes] = {
    # msgpack itself (§5.3 item 5)
    "empty body": b"",
    "invalid type byte": b"\xc1",
    "garbage": b"\xff\xfe\xfd\xfc",
    "truncated": pack(GOOD["write"])[:-1],
    "trailing bytes": pack(GOOD["locate"]) + b"\x00",
    "truncated str header": b"\x93\x01\x01\xdb\x00\x00",
    "array header claiming 2**32-1 items": b"\x92\x0a\xdd\xff\xff\xff\xff",
    "str header claiming 4 GiB": b"\x92\x0a\xdb\xff\xff\xff\xff",
    "nested 10**5 deep": b"\x91" * 100_000 + b"\xc0",
    "request id nested 2000 deep": b"\x92\x0a" + b"\x91" * 2000 + b"\x01",
    "MultiOp nested 400 deep": pack(replaced(W, 6, nested_multi_ops(400))),
    "MultiResult nested 400 deep": pack([22, 1, 10, nested_multi_results(400)]),
    "ext type": pack([10, msgpack.ExtType(1, b"x")]),
    "timestamp": pack([10, msgpack.Timestamp(0)]),
    "invalid utf-8": b"\x95\x01\x01\xa2\xff\xfe\x01\xa1a",
    "map with int keys": pack([10, {1: 2}]),
    "request id as float": pack([10, 1.0]),
    "request id NaN": pack([10, float("nan")]),
    "epoch infinite": pack(replaced(L, 3, float("inf"))),
    # the schema (§5.3 item 6)
    "token of 1025 characters": pack(replaced(GOOD["authenticate"], 3, "t" * 1025)),
    "empty principal": pack(replaced(GOOD["authenticate"], 2, "")),
    "principal of 256 characters": pack(replaced(GOOD["authenticate"], 2, "p" * 256)),
    "not a list": pack({"tag": 10, "request_id": 1}),
    "empty list": pack([]),
    "tag as string": pack(["10", 1]),
    "tag as bool": pack([True, 1]),
    "too few fields": pack([10]),
    "extra field": pack([*GOOD["locate"], 0]),
    "extra field in a status": pack([24, 1, [*STATUS, 0]]),
    "map where the addresses list is": pack(replaced(L, 4, {"r1": "tcp:localhost:7001"})),
    "map where the write is": pack(replaced(W, 6, {"path": "/x"})),
    "request id 0": pack([10, 0]),
    "request id -1": pack([10, -1]),
    "request id 2**63": pack([10, 2**63]),
    "request id 2**64-1": pack([10, 2**64 - 1]),
    "request id as string": pack([10, "1"]),
    "request id as bool": pack([10, True]),
    "request id as nil": pack([10, None]),
    "negative nonce": pack([11, 1, -1]),
    "session call numbered 0": pack(replaced(GOOD["open"], 3, [0, 0])),
    "session call acknowledging past itself": pack(replaced(GOOD["open"], 3, [2, 3])),
    "session call number of one field": pack(replaced(GOOD["open"], 3, [2])),
    "session call number as a map": pack(replaced(GOOD["open"], 3, {"sequence": 2})),
    "session request without its number field": pack([15, 1, OPEN]),
    "negative session nonce": session_call([1, "me", -1]),
    "client id 0 in a write": pack(replaced(W, 2, 0)),
    "negative client id": pack(replaced(W, 2, -5)),
    "sequence 0": pack(replaced(W, 4, 0)),
    "negative first_unacked": pack(replaced(W, 5, -1)),
    "first_unacked 2**63": pack(replaced(W, 5, 2**63)),
    "first_unacked 0": pack(replaced(W, 5, 0)),
    "write acknowledging past itself": pack(replaced(W, 5, W[4] + 1)),
    "write as string": pack(replaced(W, 6, "delete /x")),
    "MultiOp inside a MultiOp": pack(replaced(W, 6, nested_multi_ops(2))),
    "write without a credential": pack([*W[:3], *W[4:]]),
    "credential of 15 bytes": pack(replaced(W, 3, CREDENTIAL[:-1])),
    "credential of 17 bytes": pack(replaced(W, 3, CREDENTIAL + b"x")),
    "empty credential": pack(replaced(W, 3, b"")),
    "credential as string": pack(replaced(W, 3, "0123456789abcdef")),
    "credential as int": pack(replaced(W, 3, 2**63 - 1)),
    "credential as nil": pack(replaced(W, 3, None)),
    "credential as list": pack(replaced(W, 3, list(CREDENTIAL))),
    "read as a write": pack([13, 1, [3, "/ls/cell/x", None]]),
    "registered client 0": pack([21, 1, 0, CREDENTIAL]),
    "registered without a credential": pack([21, 1, 5]),
    "registered with a short credential": pack([21, 1, 5, CREDENTIAL[:8]]),
    "negative index": pack([22, 1, -1, [1, None]]),
    "read result in a write reply": pack([22, 1, 10, [4, b"abc", STAT]]),
    "write result in a read reply": pack([23, 1, 10, [1, None]]),
    "negative epoch": pack(replaced(L, 3, -1)),
    "master as int": pack(replaced(L, 2, 1)),
    "empty master id": pack(replaced(L, 2, "")),
    "address of three": pack(replaced(L, 4, [["r1", "tcp:localhost:7001", 0]])),
    "endpoint as bytes": pack(replaced(L, 4, [["r1", b"tcp:localhost:7001"]])),
    "endpoint too long": pack(replaced(L, 4, [["r1", "e" * (ENDPOINT_CHARS_MAX + 1)]])),
    "too many replicas": pack(replaced(L, 4, [["r1", "tcp:1"]] * (REPLICAS_MAX + 1))),
    "version as string": pack(replaced(GOOD["hello"], 1, "1")),
    "cell as bytes": pack(replaced(GOOD["hello"], 2, b"cell")),
    "empty cell": pack(replaced(GOOD["hello"], 2, "")),
    "cell too long": pack(replaced(GOOD["hello"], 2, "c" * (CELL_CHARS_MAX + 1))),
    "name too long": pack(replaced(GOOD["hello"], 4, "n" * (NAME_CHARS_MAX + 1))),
    "name as int": pack(replaced(GOOD["hello"], 4, 7)),
    "unknown role 0": pack(replaced(GOOD["hello"], 3, 0)),
    "unknown role 3": pack(replaced(GOOD["hello"], 3, 3)),
    "role as string": pack(replaced(GOOD["hello"], 3, "client")),
    "welcome replica id too long": pack(replaced(GOOD["welcome"], 3, "r" * 256)),
    "status of 14 fields (version 4's)": pack([24, 1, STATUS[:-1]]),
    "unknown replica role": pack([24, 1, replaced(STATUS, 1, "leader")]),
    "replica role as bytes": pack([24, 1, replaced(STATUS, 1, b"master")]),
    "serving as int": pack([24, 1, replaced(STATUS, 9, 1)]),
    "negative lease remaining": pack([24, 1, replaced(STATUS, 11, -1)]),
    "ballot text too long": pack([24, 1, replaced(STATUS, 3, "7." + "r" * 300)]),
    "unknown error code 0": pack(replaced(E, 2, 0)),
    "unknown error code 32": pack(replaced(E, 2, 32)),
    "error code as string": pack(replaced(E, 2, "NOT_MASTER")),
    "negative request id in an error": pack(replaced(E, 1, -1)),
    "error message too long": pack(replaced(E, 3, "m" * (ERROR_MESSAGE_CHARS_MAX + 1))),
    "error message as bytes": pack(replaced(E, 3, b"not master")),
    "master hint as int": pack(replaced(E, 4, 2)),
    "peer frame as a list": pack([30, [1, [1, "r1"], 1]]),
    "peer frame of garbage": pack([30, b"\xc1"]),
    "peer frame with an unknown peer tag": pack([30, pack([99])]),
    "open mode with bit 3": session_call(replaced(OPEN, 4, 8)),
    "open mode of every bit": session_call(replaced(OPEN, 4, INT64_MAX)),
    "negative open mode": session_call(replaced(OPEN, 4, -1)),
    "open mode as string": session_call(replaced(OPEN, 4, "READ")),
    "open events with bit 0": session_call(replaced(OPEN, 5, 1)),
    "open events asking for MASTER_FAILOVER": session_call(replaced(OPEN, 5, 1 << 3)),
    "open events asking for INVALIDATE": session_call(replaced(OPEN, 5, 1 << 7)),
    "open events of every bit": session_call(replaced(OPEN, 5, INT64_MAX)),
    "open events as bool": session_call(replaced(OPEN, 5, True)),
    "list sessions limit 0": pack([15, 1, [13, 0, 0]]),
    "list sessions after -1": pack([15, 1, [13, -1, 10]]),
    "list sessions with a credential": pack([15, 1, [13, 0, 10, b"secret"]]),
    "session list too long": pack([25, 1, [8, [SESSION_INFO] * (SESSIONS_PAGE_MAX + 1), False]]),
    "session info of 9 fields": session_list(SESSION_INFO[:-1]),
    "session id 0 listed": session_list(replaced(SESSION_INFO, 0, 0)),
    "session name too long": session_list(replaced(SESSION_INFO, 1, "n" * 257)),
    "session state too long": session_list(replaced(SESSION_INFO, 2, "s" * 33)),
    "unknown lock mode listed": session_list(replaced(SESSION_INFO, 5, [["/l", "upgradable"]])),
    "too many lock paths": session_list(replaced(SESSION_INFO, 5, [["/l", "shared"]] * TOO_MANY)),
    "too many ephemeral paths": session_list(replaced(SESSION_INFO, 7, ["/e"] * TOO_MANY)),
    "fewer locks counted than listed": session_list(replaced(SESSION_INFO, 6, 0)),
    "negative lease listed": session_list(replaced(SESSION_INFO, 3, -1)),
    "session info of 10 fields (version 3's)": session_list(SESSION_INFO[:-1]),
    "principal listed too long": session_list(replaced(SESSION_INFO, 10, "p" * 256)),
    "principal listed as bytes": session_list(replaced(SESSION_INFO, 10, b"alice")),
    # GetLockInfo and KillSession (issue 14)
    "lock info path too long": session_call([14, "/" * 4097]),
    "lock info path as bytes": session_call([14, b"/ls/c/l"]),
    "lock info with a credential": session_call([14, "/ls/c/l", b"secret"]),
    "kill session 0": session_call([15, 0]),
    "kill session -1": session_call([15, -1]),
    "kill session 2**63": session_call([15, 2**63]),
    "kill session as string": session_call([15, "7"]),
    "kill session with a credential": session_call([15, 7, b"secret"]),
    "session ending of 1 field (ended)": pack([25, 1, [10, True]]),
    "session ending found as int": pack([25, 1, [10, 1, False, 5]]),
    "session ending with a negative end": pack([25, 1, [10, True, False, -1]]),
    "session not found yet ending already": pack([25, 1, [10, False, True, 0]]),
    "session not found yet ending later": pack([25, 1, [10, False, False, 1000]]),
    "lock info of 8 fields": pack([25, 1, LOCK_INFO[:-1]]),
    "unknown lock state": lock_info(3, "upgradable"),
    "lock state as int": lock_info(3, 1),
    "negative instance": lock_info(2, -1),
    "negative lock generation": lock_info(4, -1),
    "negative lock-delay left": lock_info(9, -1),
    "too many holders": lock_info(HOLDERS, [HOLDER] * (LOCK_INFO_LISTED_MAX + 1)),
    "too many waiters": lock_info(WAITERS, [WAITER] * (LOCK_INFO_LISTED_MAX + 1)),
    "fewer holders counted than listed": lock_info(HOLDERS + 1, 0),
    "fewer waiters counted than listed": lock_info(WAITERS + 1, 0),
    "holder of 4 fields": lock_info(HOLDERS, [HOLDER[:-1]]),
    "waiter of 6 fields": lock_info(WAITERS, [[*WAITER, 0]]),
    "holder session 0": lock_info(HOLDERS, [replaced(HOLDER, 0, 0)]),
    "waiter client too long": lock_info(WAITERS, [replaced(WAITER, 1, "n" * 257)]),
    "waiter principal too long": lock_info(WAITERS, [replaced(WAITER, 2, "p" * 256)]),
    "waiter mode free": lock_info(WAITERS, [replaced(WAITER, 3, "free")]),
    "negative wait": lock_info(WAITERS, [replaced(WAITER, 4, -1)]),
    "holder in another mode than the lock's": lock_info(3, "exclusive"),
    "exclusive lock held twice": pack(
        [
            25,
            1,
            replaced(
                replaced(
                    replaced(LOCK_INFO, 3, "exclusive"),
                    HOLDERS,
                    [replaced(HOLDER, 3, "exclusive")] * 2,
                ),
                6,
                2,
            ),
        ]
    ),
    "free lock with a holder": pack(
        [25, 1, replaced(replaced(LOCK_INFO, 3, "free"), HOLDERS, [replaced(HOLDER, 3, "free")])]
    ),
    "free lock counting a holder": pack([25, 1, [9, "/l", 1, "free", 3, [], 1, [], 0, 0]]),
    "held lock listing no holder": pack([25, 1, [9, "/l", 1, "shared", 3, [], 2, [], 0, 0]]),
    # GetSnapshot and SnapshotChunk (backups, issue 15)
    "new snapshot from offset 5": session_call([16, 0, 5]),
    "snapshot index -1": session_call([16, -1, 0]),
    "snapshot offset 2**63": session_call([16, 3, 2**63]),
    "snapshot call of 3 fields": session_call([16, 3, 0, 0]),
    "snapshot index as bytes": session_call([16, b"3", 0]),
    "chunk of index 0": snapshot_chunk(1, 0),
    "chunk of a snapshot of 0 bytes": snapshot_chunk(2, 0),
    "chunk of a snapshot past 4 GiB": snapshot_chunk(2, 1 << 32),
    "chunk digest of 31 bytes": snapshot_chunk(3, b"d" * 31),
    "chunk checksum of 9 bytes": snapshot_chunk(4, b"c" * 9),
    "chunk past the snapshot's end": snapshot_chunk(5, 100_000 - 3),
    "empty chunk": snapshot_chunk(6, b""),
    "chunk longer than the most": pack(
        [25, 1, replaced(replaced(SNAPSHOT_CHUNK, 2, 1 << 30), 6, b"x" * ((4 << 20) + 1))]
    ),
    "chunk data as a string": snapshot_chunk(6, "data"),
}


@pytest.mark.parametrize("body", list(BAD.values()), ids=list(BAD))
def test_malformed_body_raises_decode_error(body: bytes) -> None:
    """Each malformed body raises DecodeError (and so nothing else)."""
    with pytest.raises(DecodeError):
        decode_wire(body)


@pytest.mark.parametrize("tag", [0, 6, 17, 27, 33, 99, 2**40])
def test_an_unknown_tag_is_an_unknown_message(tag: int) -> None:
    """A well-formed body with a tag this version lacks raises UnknownMessageError."""
    with pytest.raises(UnknownMessageError, match="unknown message tag"):
        decode_wire(pack([tag, 1]))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    """Whatever body decode_wire is given, it returns a message or raises DecodeError."""
    with contextlib.suppress(DecodeError):
        decode_wire(data)


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=2), children, max_size=2)
    ),
    max_leaves=20,
)
"""Plain msgpack data shaped like our arrays, so the fuzzing reaches the field parsers."""


@settings(max_examples=150, deadline=None, derandomize=True)
@given(good=st.sampled_from(list(GOOD.values())), data=st.data())
def test_arbitrary_fields_raise_only_decode_error(good: list[Any], data: st.DataObject) -> None:
    """A known tag with the right number of arbitrary fields gives a message or DecodeError."""
    fields = data.draw(st.lists(plain, min_size=len(good) - 1, max_size=len(good) - 1))
    with contextlib.suppress(DecodeError):
        decode_wire(pack([good[0], *fields]))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(good=st.sampled_from(list(GOOD.values())), data=st.data())
def test_one_arbitrary_field_raises_only_decode_error(good: list[Any], data: st.DataObject) -> None:
    """A good message with one field replaced by arbitrary data gives a message or DecodeError."""
    position = data.draw(st.integers(1, len(good) - 1))
    with contextlib.suppress(DecodeError):
        decode_wire(pack(replaced(good, position, data.draw(plain))))


# ----------------------------------------------------------------------------- operating errors


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
def test_error_reply_for_and_raise_for_round_trip(code: ErrorCode) -> None:
    """An error sent as a reply is raised by the client as the same class, message and hint."""
    error = ERROR_CLASSES[code]("what went wrong", master_hint="r2")
    reply = decode_wire(encode_wire(error_reply_for(error, 7)))
    assert reply == ErrorReply(RequestId(7), code, "what went wrong", ReplicaId("r2"))
    assert isinstance(reply, ErrorReply)
    with pytest.raises(ERROR_CLASSES[code]) as raised:
        raise_for(reply)
    assert type(raised.value) is ERROR_CLASSES[code]
    assert (raised.value.message, raised.value.master_hint) == ("what went wrong", "r2")


def test_a_long_error_message_is_cut_to_the_wire_limit() -> None:
    """An error quoting a huge path still makes a reply the client can decode."""
    reply = error_reply_for(NotMaster("x" * 10_000), 0)
    assert len(reply.message) == ERROR_MESSAGE_CHARS_MAX
    assert reply.master_hint is None
    assert decode_wire(encode_wire(reply)) == reply


# ----------------------------------------------------------------------------- kinds checked first


HELLO = Hello(PROTOCOL_VERSION, "cell", ConnectionRole.CLIENT, "c")


def test_a_message_not_expected_is_refused_from_its_tag_undecoded() -> None:
    """A PeerFrame where a Hello is expected is refused naming both, though the rest of
    its body is not even msgpack: nothing after its first bytes was decoded."""
    body = encode_wire(PeerFrame(Prepare(Ballot(1, R1), LogIndex(1))))[:3] + b"\xc1" * 1000
    with pytest.raises(UnexpectedMessageError, match="expected a Hello, not a PeerFrame"):
        decode_wire(body, expecting("a Hello", Hello))
    with pytest.raises(DecodeError, match="not msgpack"):
        decode_wire(body)


def test_an_unknown_tag_or_a_wrong_field_count_is_refused_before_decoding() -> None:
    """An unknown tag, or a known one with too many fields, is refused from the array's
    header and tag, whatever follows."""
    with pytest.raises(UnknownMessageError, match="unknown message tag 99"):
        decode_wire(b"\x92\x63" + b"\xc1" * 100)
    with pytest.raises(DecodeError, match="message tag 14 needs 1 fields, got 1000000"):
        decode_wire(b"\xdd" + (1_000_001).to_bytes(4, "big") + b"\x0e" + b"\xc1" * 100)


@pytest.mark.parametrize(
    "head", [b"\xcc\x0e", b"\xcd\x00\x0e", b"\xce\x00\x00\x00\x0e", b"\xd0\x0e"]
)
def test_a_tag_in_any_integer_encoding_is_read(head: bytes) -> None:
    """A StatusRequest whose tag is written as a wider integer still decodes (msgpack
    allows any encoding of a small integer)."""
    assert decode_wire(b"\x92" + head + b"\x07") == StatusRequest(RequestId(7))


@pytest.mark.parametrize(
    "body", [b"", b"\x90", b"\x91", b"\xdc\x00", b"\x92\xc0\x01", b"\x81\x00\x00", b"\x0e"]
)
def test_a_body_that_does_not_begin_as_a_message_is_a_decode_error(body: bytes) -> None:
    """Empty, an empty array, a cut header, a tag that is not an integer, a map, a bare
    integer: each a DecodeError from the first bytes."""
    with pytest.raises(DecodeError):
        decode_wire(body)


def test_arrays_past_the_limit_stop_the_decoding() -> None:
    """A request with more arrays than its Expected allows is refused naming the limit;
    one at the limit decodes."""
    tests = [Exists(f"/ls/c/{n}") for n in range(9)]
    write = WriteRequest(RequestId(1), ClientId(1), CREDENTIAL, 1, 1, MultiOp(tuple(tests), (), ()))
    body = encode_wire(write)
    arrays = 1 + 1 + 3 + len(tests)  # the message, the MultiOp, its three lists, the tests
    limited = expecting("a request", WriteRequest, containers_max=arrays, containers_named="k")
    assert decode_wire(body, limited) == write
    fewer = expecting("a request", WriteRequest, containers_max=arrays - 1, containers_named="k")
    with pytest.raises(DecodeError, match=f"more than {arrays - 1} arrays and maps .*\\(k\\)"):
        decode_wire(body, fewer)


def test_the_greeting_limits_hold_the_largest_greetings_and_answers() -> None:
    """A Hello of the longest names in four-byte characters fits GREETING_BYTES_MAX, and
    the longest refusal fits GREETING_ANSWER_BYTES_MAX; a Hello of ordinary names is far
    smaller than either."""
    wide = "\U0010ffff"
    longest = Hello(INT64_MAX, wide * CELL_CHARS_MAX, ConnectionRole.PEER, wide * NAME_CHARS_MAX)
    assert len(encode_wire(longest)) == GREETING_BYTES_MAX
    refusal = error_reply_for(NotMaster(wide * 10_000, master_hint=wide * NAME_CHARS_MAX), 0)
    assert len(encode_wire(refusal)) <= GREETING_ANSWER_BYTES_MAX
    assert len(encode_wire(HELLO)) < 64 < GREETING_BYTES_MAX < 4096
