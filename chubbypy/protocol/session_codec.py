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
from chubbypy.protocol.namespace import Create, LockMode, MultiOp, SimpleWrite, Stat
from chubbypy.protocol.namespace_codec import (
    result_from_plain,
    result_to_plain,
    write_from_plain,
    write_to_plain,
)
from chubbypy.protocol.session import (
    CREDENTIAL_BYTES_MAX,
    HANDLE_BYTES_MAX,
    SEQUENCER_BYTES_MAX,
    SESSION_NAME_CHARS_MAX,
    AcquireLock,
    CallDone,
    CheckSequencer,
    CloseHandle,
    CloseSession,
    CreateSession,
    EventKind,
    GetSequencer,
    HandleOpened,
    HandleWrite,
    KeepAlive,
    LeaseExtended,
    Locked,
    NodeRead,
    Open,
    PoisonHandle,
    ReadNode,
    ReleaseLock,
    SequencerValidity,
    SessionCall,
    SessionCreated,
    SessionEvent,
    SessionResult,
)

PATH_CHARS_MAX = 4096
EVENTS_MAX = 100_000


def call_to_plain(call: SessionCall) -> list[Any]:
    match call:
        case CreateSession(name):
            return [1, name]
        case KeepAlive(session_id, credential, acked):
            return [2, session_id, credential, acked]
        case CloseSession(session_id, credential):
            return [3, session_id, credential]
        case Open(session_id, credential, path, mode, events, delay, create, exclusive):
            plain_create = None if create is None else write_to_plain(create)
            return [4, session_id, credential, path, mode, events, delay, plain_create, exclusive]
        case CloseHandle(handle):
            return [5, handle]
        case AcquireLock(handle, mode, wait):
            return [6, handle, int(mode), wait]
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
    raise AssertionError(call)


def _event(event: SessionEvent) -> list[Any]:
    return [event.sequence, int(event.kind), event.path, event.handle_id]


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
    return Open(uint64(f[0], 1), _credential(f[1]), path, uint64(f[3]), uint64(f[4]),
                uint64(f[5]), create, boolean(f[7]))  # fmt: skip


_CALLS: dict[int, tuple[int, Callable[[list[Any]], SessionCall]]] = {
    1: (1, lambda f: CreateSession(_text(f[0], SESSION_NAME_CHARS_MAX, "session name"))),
    2: (3, lambda f: KeepAlive(uint64(f[0], 1), _credential(f[1]), uint64(f[2]))),
    3: (2, lambda f: CloseSession(uint64(f[0], 1), _credential(f[1]))),
    4: (8, _to_open),
    5: (1, lambda f: CloseHandle(_handle(f[0]))),
    6: (3, lambda f: AcquireLock(_handle(f[0]), _mode(f[1]), boolean(f[2]))),
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
            uint64(f[0], 1), _credential(f[1]), _text(f[2], PATH_CHARS_MAX, "path"), boolean(f[3])
        ),
    ),
}


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
                        uint64(handle_id))  # fmt: skip


def _to_lease_extended(f: list[Any]) -> LeaseExtended:
    events = array(f[1])
    if len(events) > EVENTS_MAX:
        raise DecodeError(f"{len(events)} events in one answer: at most {EVENTS_MAX}")
    return LeaseExtended(uint64(f[0]), tuple(_to_event(e) for e in events), uint64(f[2]))


_RESULTS: dict[int, tuple[int, Callable[[list[Any]], SessionResult]]] = {
    1: (3, lambda f: SessionCreated(uint64(f[0], 1), uint64(f[1]), _credential(f[2]))),
    2: (3, _to_lease_extended),
    3: (
        4,
        lambda f: HandleOpened(_handle(f[0]), boolean(f[1]), _to_stat(f[2]), uint64(f[3], 1)),
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
}


def call_from_plain(data: Any) -> SessionCall:
    return tagged(data, _CALLS, "session call")


def session_result_from_plain(data: Any) -> SessionResult:
    return tagged(data, _RESULTS, "session result")
