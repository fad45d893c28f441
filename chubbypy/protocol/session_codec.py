"""msgpack plain forms of session calls and results (embedded in wire messages).

Same conventions as `namespace_codec`: tagged arrays, every field validated on the way in,
`DecodeError` and nothing else for data this codec did not write.
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
    tagged,
    text,
    uint64,
)
from chubbypy.protocol.client import PRINCIPAL_CHARS_MAX
from chubbypy.protocol.codec import address_from_plain, replica_id_from_plain
from chubbypy.protocol.namespace import Create, LockMode, MultiOp, SimpleWrite, Stat
from chubbypy.protocol.namespace_codec import (
    result_from_plain,
    result_to_plain,
    write_from_plain,
    write_to_plain,
)
from chubbypy.protocol.session import (
    CREDENTIAL_BYTES_MAX,
    EVENT_MASK_ALL,
    HANDLE_BYTES_MAX,
    HANDLE_MODES_ALL,
    LOCK_INFO_LISTED_MAX,
    LOCK_INFO_MODES,
    SEQUENCER_BYTES_MAX,
    SESSION_NAME_CHARS_MAX,
    SESSION_PATHS_LISTED_MAX,
    SESSION_STATE_CHARS_MAX,
    SESSIONS_PAGE_MAX,
    SNAPSHOT_BYTES_MAX,
    SNAPSHOT_CHUNK_BYTES_MAX,
    SNAPSHOT_DIGEST_BYTES,
    STATE_CHECKSUM_BYTES,
    AcquireLock,
    AddLearner,
    CallDone,
    ChangeMembership,
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
    ListMembers,
    ListSessions,
    Locked,
    LockHolderInfo,
    LockInfo,
    LockWaiterInfo,
    MemberInfo,
    MemberList,
    MembershipDone,
    MembershipStep,
    NodeRead,
    Open,
    PoisonHandle,
    Promote,
    ReadNode,
    ReleaseLock,
    Remove,
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
from chubbypy.protocol.values import (
    LEARNERS_MAX,
    LOG_INDEX_MAX,
    MEMBERSHIP_VERSION_MAX,
    VOTERS_MAX,
    HandleId,
    SessionId,
)

PATH_CHARS_MAX = 4096
EVENTS_MAX = 100_000


def call_to_plain(call: SessionCall) -> list[Any]:
    match call:
        case CreateSession(name, nonce):
            return [1, name, nonce]
        case KeepAlive(session_id, credential, acked):
            return [2, session_id, credential, acked]
        case CloseSession(session_id, credential):
            return [3, session_id, credential]
        case Open(session_id, credential, path, mode, events, delay, create, exclusive):
            plain_create = None if create is None else write_to_plain(create)
            return [4, session_id, credential, path, int(mode), int(events), delay, plain_create,
                    exclusive]  # fmt: skip
        case CloseHandle(handle):
            return [5, handle]
        case AcquireLock(handle, mode, wait, wait_ms):
            return [6, handle, int(mode), wait, wait_ms]
        case ReleaseLock(handle, generation):
            return [7, handle, generation]
        case HandleWrite(handle, write, sequencer):
            return [8, handle, write_to_plain(write), sequencer]
        case GetSequencer(handle):
            return [9, handle]
        case CheckSequencer(sequencer):
            return [10, sequencer]
        case PoisonHandle(handle):
            return [11, handle]
        case ReadNode(session_id, credential, path, cache):
            return [12, session_id, credential, path, cache]
        case ListSessions(after, limit):
            return [13, after, limit]
        case GetLockInfo(path):
            return [14, path]
        case KillSession(session_id):
            return [15, session_id]
        case GetSnapshot(index, offset):
            return [16, index, offset]
        case ListMembers():
            return [17]
        case ChangeMembership(step, if_version):
            return [18, _step(step), if_version]
    raise AssertionError(call)


def _step(step: MembershipStep) -> list[Any]:
    match step:
        case AddLearner(replica_id, peer, client):
            return [1, replica_id, peer, client]
        case Promote(replica_id):
            return [2, replica_id]
        case Remove(replica_id, force):
            return [3, replica_id, force]
    raise AssertionError(step)


def _event(event: SessionEvent) -> list[Any]:
    return [event.sequence, int(event.kind), event.path, event.handle_id]


def _session_info(info: SessionInfo) -> list[Any]:
    return [info.session_id, info.name, info.state, info.lease_remaining_ms, info.handles,
            [[path, mode] for path, mode in info.locks], info.lock_count, list(info.ephemeral),
            info.ephemeral_count, info.cached_names, info.principal]  # fmt: skip


def _lock_info(info: LockInfo) -> list[Any]:
    holders = [[h.session_id, h.client, h.principal, h.mode, h.lock_delay_ms]
               for h in info.holders]  # fmt: skip
    waiters = [[w.session_id, w.client, w.principal, w.mode, w.waited_ms] for w in info.waiters]
    return [info.path, info.instance, info.mode, info.lock_generation, holders,
            info.holder_count, waiters, info.waiter_count,
            info.lock_delay_remaining_ms]  # fmt: skip


def session_result_to_plain(result: SessionResult) -> list[Any]:
    match result:
        case SessionCreated(session_id, lease_ms, credential):
            return [1, session_id, lease_ms, credential]
        case LeaseExtended(lease_ms, events, held_ms):
            return [2, lease_ms, [_event(e) for e in events], held_ms]
        case HandleOpened(handle, created, stat, handle_id):
            return [3, handle, created, result_to_plain(stat), handle_id]
        case Locked(stat, sequencer):
            return [4, result_to_plain(stat), sequencer]
        case CallDone(stat):
            return [5, None if stat is None else result_to_plain(stat)]
        case SequencerValidity(valid):
            return [6, valid]
        case NodeRead(stat, contents, cached, sequence):
            plain_stat = None if stat is None else result_to_plain(stat)
            return [7, plain_stat, contents, cached, sequence]
        case SessionList(sessions, more):
            return [8, [_session_info(info) for info in sessions], more]
        case LockInfo():
            return [9, *_lock_info(result)]
        case SessionEnding(found, already, ends_in_ms):
            return [10, found, already, ends_in_ms]
        case SnapshotChunk(index, total_bytes, digest, checksum, offset, data):
            return [11, index, total_bytes, digest, checksum, offset, data]
        case MemberList(version, index, chosen_index, members):
            plain = [[m.replica_id, m.peer, m.client, m.voter, m.master, m.chosen_index,
                      m.acked_ms_ago] for m in members]  # fmt: skip
            return [12, version, index, chosen_index, plain]
        case MembershipDone(version, index, already):
            return [13, version, index, already]
    raise AssertionError(result)


# ----------------------------------------------------------------------------- from plain


def _bytes(data: Any, most: int, what: str) -> bytes:
    value = binary(data)
    if not 1 <= len(value) <= most:
        raise DecodeError(f"a {what} of {len(value)} bytes: expected 1 to {most}")
    return value


def _handle(data: Any) -> bytes:
    return _bytes(data, HANDLE_BYTES_MAX, "handle")


def _sequencer(data: Any) -> bytes:
    return _bytes(data, SEQUENCER_BYTES_MAX, "sequencer")


def _text(data: Any, most: int, what: str) -> str:
    value = text(data)
    if len(value) > most:
        raise DecodeError(f"a {what} of {len(value)} characters: at most {most}")
    return value


def _session_id(data: Any) -> SessionId:
    return SessionId(uint64(data, 1))


def _handle_mode(data: Any) -> HandleMode:
    """A handle's mode: refused if it has a bit no `HandleMode` defines (a client that
    means something this master does not know must hear so, not get less than it asked),
    or none at all (a handle that may do nothing would pass every ACL check, and still
    show its node's metadata and hear its events)."""
    bits = uint64(data)
    if bits & ~int(HANDLE_MODES_ALL):
        raise DecodeError(f"a handle mode of {bits:#x}: only the bits {HANDLE_MODES_ALL:#x}")
    if not bits:
        raise DecodeError("a handle mode of 0: open a handle for READ, WRITE or CHANGE_ACL")
    return HandleMode(bits)


def _event_mask(data: Any) -> EventMask:
    """The events a handle asks for: refused if it has a bit no `EventMask` defines."""
    bits = uint64(data)
    if bits & ~int(EVENT_MASK_ALL):
        raise DecodeError(f"an event mask of {bits:#x}: only the bits {EVENT_MASK_ALL:#x}")
    return EventMask(bits)


def _mode(data: Any) -> LockMode:
    try:
        return LockMode(integer(data))
    except ValueError:
        raise DecodeError(f"unknown lock mode {data!r:.20}") from None


def _simple_write(data: Any) -> SimpleWrite:
    write = write_from_plain(data)
    if isinstance(write, MultiOp):
        raise DecodeError("a handle write is one operation, not a MultiOp")
    return write


def _create(data: Any) -> Create | None:
    if data is None:
        return None
    write = write_from_plain(data)
    if not isinstance(write, Create):
        raise DecodeError("an open's create option must be a Create")
    return write


def _credential(data: Any) -> bytes:
    return _bytes(data, CREDENTIAL_BYTES_MAX, "session credential")


def _to_open(f: list[Any]) -> Open:
    path = _text(f[2], PATH_CHARS_MAX, "path")
    create = _create(f[6])
    if create is not None and create.path != path:
        raise DecodeError("an open's create option names another path")
    return Open(_session_id(f[0]), _credential(f[1]), path, _handle_mode(f[3]),
                _event_mask(f[4]), uint64(f[5]), create, boolean(f[7]))  # fmt: skip


def _to_get_snapshot(f: list[Any]) -> GetSnapshot:
    index, offset = uint64(f[0]), uint64(f[1])
    if index == 0 and offset != 0:
        raise DecodeError(f"a new snapshot is read from offset 0, not {offset}")
    return GetSnapshot(index, offset)


def _to_list_sessions(f: list[Any]) -> ListSessions:
    # A larger limit is read as the largest page, as a directory listing clamps its limit:
    # asking for too much is no error, and the master never sees more than it may send.
    return ListSessions(SessionId(uint64(f[0])), min(uint64(f[1], 1), SESSIONS_PAGE_MAX))


_CALLS: dict[int, tuple[int, Callable[[list[Any]], SessionCall]]] = {
    1: (
        2,
        lambda f: CreateSession(_text(f[0], SESSION_NAME_CHARS_MAX, "session name"), uint64(f[1])),
    ),
    2: (3, lambda f: KeepAlive(_session_id(f[0]), _credential(f[1]), uint64(f[2]))),
    3: (2, lambda f: CloseSession(_session_id(f[0]), _credential(f[1]))),
    4: (8, _to_open),
    5: (1, lambda f: CloseHandle(_handle(f[0]))),
    6: (
        4,
        lambda f: AcquireLock(
            _handle(f[0]), _mode(f[1]), boolean(f[2]), None if f[3] is None else uint64(f[3])
        ),
    ),
    7: (2, lambda f: ReleaseLock(_handle(f[0]), None if f[1] is None else uint64(f[1]))),
    8: (
        3,
        lambda f: HandleWrite(
            _handle(f[0]), _simple_write(f[1]), None if f[2] is None else _sequencer(f[2])
        ),
    ),
    9: (1, lambda f: GetSequencer(_handle(f[0]))),
    10: (1, lambda f: CheckSequencer(_sequencer(f[0]))),
    11: (1, lambda f: PoisonHandle(_handle(f[0]))),
    12: (
        4,
        lambda f: ReadNode(
            _session_id(f[0]), _credential(f[1]), _text(f[2], PATH_CHARS_MAX, "path"), boolean(f[3])
        ),
    ),
    13: (2, _to_list_sessions),
    14: (1, lambda f: GetLockInfo(_text(f[0], PATH_CHARS_MAX, "path"))),
    15: (1, lambda f: KillSession(_session_id(f[0]))),
    16: (2, lambda f: _to_get_snapshot(f)),
    17: (0, lambda f: ListMembers()),
    18: (2, lambda f: ChangeMembership(_to_step(f[0]), _version(f[1], 0))),
}


def _version(data: Any, low: int = 1) -> int:
    version = uint64(data, low)
    if version > MEMBERSHIP_VERSION_MAX:
        raise DecodeError(f"membership version {version}: at most {MEMBERSHIP_VERSION_MAX}")
    return version


def _log_index(data: Any) -> int:
    index = uint64(data)
    if index > LOG_INDEX_MAX:
        raise DecodeError(f"log index {index}: at most {LOG_INDEX_MAX}")
    return index


def _index_or_unknown(data: Any) -> int | None:
    return None if data is None else _log_index(data)


def _to_step(data: Any) -> MembershipStep:
    plain = array(data)
    if not plain:
        raise DecodeError("an empty membership step")
    kind, fields = plain[0], plain[1:]
    if kind == 1 and len(fields) == 3:
        return AddLearner(
            replica_id_from_plain(fields[0]),
            address_from_plain(fields[1]),
            address_from_plain(fields[2]),
        )
    if kind == 2 and len(fields) == 1:
        return Promote(replica_id_from_plain(fields[0]))
    if kind == 3 and len(fields) == 2:
        return Remove(replica_id_from_plain(fields[0]), boolean(fields[1]))
    raise DecodeError(f"unknown membership step {kind!r:.20} of {len(fields)} fields")


def _to_member_info(data: Any) -> MemberInfo:
    rid, peer, client, voter, master, chosen, acked = array(data, 7)
    return MemberInfo(
        replica_id_from_plain(rid),
        address_from_plain(peer),
        address_from_plain(client),
        boolean(voter),
        boolean(master),
        _index_or_unknown(chosen),
        None if acked is None else uint64(acked),
    )


def _to_member_list(f: list[Any]) -> MemberList:
    members = array(f[3])
    if not 1 <= len(members) <= VOTERS_MAX + LEARNERS_MAX:
        raise DecodeError(f"a membership of {len(members)} members")
    members_info = tuple(_to_member_info(m) for m in members)
    return MemberList(_version(f[0]), _log_index(f[1]), _log_index(f[2]), members_info)


def _to_stat(data: Any) -> Stat:
    stat = result_from_plain(data)
    if not isinstance(stat, Stat):
        raise DecodeError("expected a stat")
    return stat


def _to_event(data: Any) -> SessionEvent:
    sequence, kind, path, handle_id = array(data, 4)
    try:
        event_kind = EventKind(integer(kind))
    except ValueError:
        raise DecodeError(f"unknown event kind {kind!r:.20}") from None
    return SessionEvent(uint64(sequence, 1), event_kind, _text(path, PATH_CHARS_MAX, "path"),
                        HandleId(uint64(handle_id)))  # fmt: skip


def _to_lease_extended(f: list[Any]) -> LeaseExtended:
    events = array(f[1])
    if len(events) > EVENTS_MAX:
        raise DecodeError(f"{len(events)} events in one answer: at most {EVENTS_MAX}")
    return LeaseExtended(uint64(f[0]), tuple(_to_event(e) for e in events), uint64(f[2]))


def _listed(data: Any, what: str) -> list[Any]:
    """A session's listed paths: at most SESSION_PATHS_LISTED_MAX."""
    items = array(data)
    if len(items) > SESSION_PATHS_LISTED_MAX:
        message = f"{len(items)} {what} paths listed: at most {SESSION_PATHS_LISTED_MAX}"
        raise DecodeError(message)
    return items


_LOCK_MODE_NAMES = frozenset(mode.name.lower() for mode in LockMode)


def _held_mode(data: Any) -> str:
    """How a lock is held or asked for: "exclusive" or "shared"."""
    mode = text(data)
    if mode not in _LOCK_MODE_NAMES:
        raise DecodeError(f"unknown lock mode {mode!r:.20}")
    return mode


def _to_lock_listed(data: Any) -> tuple[str, str]:
    path, mode = array(data, 2)
    return _text(path, PATH_CHARS_MAX, "path"), _held_mode(mode)


def _principal(data: Any) -> str:
    """A principal as a listing names it: "" when the master has not heard it yet."""
    return _text(data, PRINCIPAL_CHARS_MAX, "principal")


def _to_session_info(data: Any) -> SessionInfo:
    f = array(data, 11)
    locks = tuple(_to_lock_listed(lock) for lock in _listed(f[5], "lock"))
    ephemeral = tuple(_text(path, PATH_CHARS_MAX, "path") for path in _listed(f[7], "ephemeral"))
    lock_count, ephemeral_count = uint64(f[6], len(locks)), uint64(f[8], len(ephemeral))
    return SessionInfo(_session_id(f[0]), _text(f[1], SESSION_NAME_CHARS_MAX, "session name"),
                       _text(f[2], SESSION_STATE_CHARS_MAX, "session state"), uint64(f[3]),
                       uint64(f[4]), locks, lock_count, ephemeral, ephemeral_count,
                       uint64(f[9]), _principal(f[10]))  # fmt: skip


def _to_session_list(f: list[Any]) -> SessionList:
    sessions = array(f[0])
    if len(sessions) > SESSIONS_PAGE_MAX:
        raise DecodeError(f"{len(sessions)} sessions in one page: at most {SESSIONS_PAGE_MAX}")
    return SessionList(tuple(_to_session_info(info) for info in sessions), boolean(f[1]))


def _lock_entries(data: Any, count: Any, what: str) -> tuple[list[list[Any]], int]:
    """A lock's listed holders or waiters, each of five fields, at most
    LOCK_INFO_LISTED_MAX, and their count in all (at least as many as listed)."""
    entries = array(data)
    if len(entries) > LOCK_INFO_LISTED_MAX:
        raise DecodeError(f"{len(entries)} {what} listed: at most {LOCK_INFO_LISTED_MAX}")
    return [array(entry, 5) for entry in entries], uint64(count, len(entries))


def _who(f: list[Any]) -> tuple[SessionId, str, str, str]:
    """The session, client, principal and mode a holder or waiter starts with."""
    client = _text(f[1], SESSION_NAME_CHARS_MAX, "session name")
    return _session_id(f[0]), client, _principal(f[2]), _held_mode(f[3])


def _to_lock_info(f: list[Any]) -> LockInfo:
    mode = text(f[2])
    if mode not in LOCK_INFO_MODES:
        raise DecodeError(f"unknown lock state {mode!r:.20}")
    holders, holder_count = _lock_entries(f[4], f[5], "lock holders")
    waiters, waiter_count = _lock_entries(f[6], f[7], "lock waiters")
    held = tuple(LockHolderInfo(*_who(h), uint64(h[4])) for h in holders)
    # What no master sends: a free lock with holders, a held one listing none, an
    # exclusive one held twice, a holder in another mode than the lock's.
    if (mode == "free") != (holder_count == 0) or (holder_count > 0 and not held):
        raise DecodeError(f"a lock {mode} with {holder_count} holders ({len(held)} listed)")
    if (mode == "exclusive" and holder_count != 1) or any(h.mode != mode for h in held):
        raise DecodeError(f"a lock held {mode} with holders of other modes, or many")
    return LockInfo(
        _text(f[0], PATH_CHARS_MAX, "path"),
        uint64(f[1]),
        mode,
        uint64(f[3]),
        held,
        holder_count,
        tuple(LockWaiterInfo(*_who(w), uint64(w[4])) for w in waiters),
        waiter_count,
        uint64(f[8]),
    )


def _to_session_ending(f: list[Any]) -> SessionEnding:
    found, already, ends_in_ms = boolean(f[0]), boolean(f[1]), uint64(f[2])
    if not found and (already or ends_in_ms):
        raise DecodeError("a session not found cannot be ending")  # what no master sends
    return SessionEnding(found, already, ends_in_ms)


def _exactly(data: Any, size: int, what: str) -> bytes:
    value = binary(data)
    if len(value) != size:
        raise DecodeError(f"a {what} of {len(value)} bytes: expected {size}")
    return value


def _to_snapshot_chunk(f: list[Any]) -> SnapshotChunk:
    total = uint64(f[1], 1)
    if total > SNAPSHOT_BYTES_MAX:
        raise DecodeError(f"a snapshot of {total} bytes: at most {SNAPSHOT_BYTES_MAX}")
    data = binary(f[5])
    if not 1 <= len(data) <= SNAPSHOT_CHUNK_BYTES_MAX:
        raise DecodeError(f"a snapshot chunk of {len(data)} bytes: 1 to {SNAPSHOT_CHUNK_BYTES_MAX}")
    offset = uint64(f[4])
    if offset + len(data) > total:  # what no master sends: a piece past the end
        raise DecodeError(f"{len(data)} bytes at {offset} of a {total}-byte snapshot")
    digest = _exactly(f[2], SNAPSHOT_DIGEST_BYTES, "snapshot digest")
    checksum = _exactly(f[3], STATE_CHECKSUM_BYTES, "state checksum")
    return SnapshotChunk(uint64(f[0], 1), total, digest, checksum, offset, data)


_RESULTS: dict[int, tuple[int, Callable[[list[Any]], SessionResult]]] = {
    1: (3, lambda f: SessionCreated(_session_id(f[0]), uint64(f[1]), _credential(f[2]))),
    2: (3, _to_lease_extended),
    3: (
        4,
        lambda f: HandleOpened(
            _handle(f[0]), boolean(f[1]), _to_stat(f[2]), HandleId(uint64(f[3], 1))
        ),
    ),
    4: (2, lambda f: Locked(_to_stat(f[0]), _sequencer(f[1]))),
    5: (1, lambda f: CallDone(None if f[0] is None else _to_stat(f[0]))),
    6: (1, lambda f: SequencerValidity(boolean(f[0]))),
    7: (
        4,
        lambda f: NodeRead(
            None if f[0] is None else _to_stat(f[0]), binary(f[1]), boolean(f[2]), uint64(f[3])
        ),
    ),
    8: (2, _to_session_list),
    9: (9, _to_lock_info),
    10: (3, _to_session_ending),
    11: (6, _to_snapshot_chunk),
    12: (4, _to_member_list),
    13: (3, lambda f: MembershipDone(_version(f[0]), _log_index(f[1]), boolean(f[2]))),
}


def call_from_plain(data: Any) -> SessionCall:
    return tagged(data, _CALLS, "session call")


def session_result_from_plain(data: Any) -> SessionResult:
    return tagged(data, _RESULTS, "session result")
