"""msgpack encoding of namespace operations and results (log payloads and wire messages).

Same conventions as `codec.py`: tagged arrays, validated on the way in, `DecodeError` and
nothing else for bytes this codec did not write. The `*_to_plain` / `*_from_plain` pairs let
other codecs embed these values in their own messages.
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
    optional_integer,
    pack,
    tagged,
    text,
    unpack,
)
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Absent,
    AclGenerationIs,
    AclNames,
    Acquire,
    ContentGenerationIs,
    Contents,
    ContentsAre,
    Create,
    Delete,
    DirEntry,
    EndLockDelay,
    EndSession,
    Exists,
    GetContentsAndStat,
    GetStat,
    InSession,
    InstanceIs,
    Listing,
    LockHeldAt,
    LockMode,
    LogWrite,
    MultiOp,
    MultiResult,
    OpenSession,
    Read,
    ReadDir,
    ReadResult,
    Release,
    SessionCommand,
    SessionOpened,
    SetAcl,
    SetContents,
    SimpleWrite,
    Stat,
    Test,
    Write,
    WriteResult,
    Written,
)
from chubbypy.protocol.values import CallNumber, HandleId, SessionId

__all__ = [
    "DecodeError",
    "decode_log_write",
    "decode_log_write_by",
    "decode_read",
    "decode_result",
    "decode_write",
    "encode_log_write",
    "encode_read",
    "encode_result",
    "encode_write",
    "log_write_from_plain",
    "log_write_to_plain",
    "read_from_plain",
    "read_to_plain",
    "result_from_plain",
    "result_to_plain",
    "write_from_plain",
    "write_to_plain",
]

Result = WriteResult | ReadResult

# ----------------------------------------------------------------------------- to plain data


def _acl(acl: AclNames | None) -> list[str] | None:
    return None if acl is None else [acl.read, acl.write, acl.change]


def _stat(s: Stat) -> list[Any]:
    return [
        s.instance,
        s.content_generation,
        s.lock_generation,
        s.acl_generation,
        s.checksum,
        _acl(s.acl),
        s.is_directory,
        s.ephemeral,
        s.size,
    ]


def _test(test: Test) -> list[Any]:
    match test:
        case Exists(path):
            return [1, path]
        case Absent(path):
            return [2, path]
        case ContentGenerationIs(path, generation):
            return [3, path, generation]
        case AclGenerationIs(path, generation):
            return [4, path, generation]
        case InstanceIs(path, instance):
            return [5, path, instance]
        case ContentsAre(path, contents):
            return [6, path, contents]
        case LockHeldAt(path, instance, mode, generation):
            return [7, path, instance, int(mode), generation]
    raise AssertionError(test)


def write_to_plain(write: Write) -> list[Any]:
    match write:
        case Create(path, is_directory, contents, acl, ephemeral):
            return [1, path, is_directory, contents, _acl(acl), ephemeral]
        case SetContents(path, contents, expected):
            return [2, path, contents, expected]
        case Delete(path, expected):
            return [3, path, expected]
        case SetAcl(path, acl, expected):
            return [4, path, _acl(acl), expected]
        case MultiOp(guard, if_true, if_false):
            branches = [[write_to_plain(w) for w in branch] for branch in (if_true, if_false)]
            return [5, [_test(t) for t in guard], *branches]
    raise AssertionError(write)


def log_write_to_plain(write: LogWrite) -> list[Any]:
    """A log command's plain form: a client `Write` (same tags as `write_to_plain`) or a
    session command (tags from 10)."""
    match write:
        case OpenSession(name, 0):
            return [10, name]
        case OpenSession(name, nonce):
            return [16, name, nonce]
        case EndSession(session_id, expired):
            return [11, session_id, expired]
        case InSession(session_id, inner, number):
            plain = [12, session_id, write_to_plain(inner)]
            return plain if number is None else [17, *plain[1:], *_number(number)]
        case Acquire(session_id, handle_id, path, instance, mode, lock_delay_ms):
            return [13, session_id, handle_id, path, instance, int(mode), lock_delay_ms]
        case Release(session_id, handle_id, path, instance, generation, number):
            plain = [14, session_id, handle_id, path, instance, generation]
            return plain if number is None else [19, *plain[1:], *_number(number)]
        case EndLockDelay(path, instance):
            return [15, path, instance]
    return write_to_plain(write)


def _number(number: CallNumber) -> list[int]:
    """A session call's number in a log command (the commands that carry one have tags of
    their own, 17 and 19, so that entries written before they did still read the same)."""
    return [number.sequence, number.first_unacked]


def read_to_plain(read: Read) -> list[Any]:
    match read:
        case GetContentsAndStat(path):
            return [1, path]
        case GetStat(path):
            return [2, path]
        case ReadDir(path, after, limit):
            return [3, path, after, limit]
    raise AssertionError(read)


def result_to_plain(result: Result) -> list[Any]:
    match result:
        case Written(stat):
            return [1, None if stat is None else _stat(stat)]
        case MultiResult(held, tests, results):
            return [2, held, list(tests), [result_to_plain(r) for r in results]]
        case Failure(code, message):
            return [3, int(code), message]
        case Contents(contents, stat):
            return [4, contents, _stat(stat)]
        case Stat():
            return [5, _stat(result)]
        case Listing(entries, more):
            plain = [[e.name, None if e.stat is None else _stat(e.stat)] for e in entries]
            return [6, plain, more]
        case SessionOpened(session_id):
            return [7, session_id]
    raise AssertionError(result)


def encode_write(write: Write) -> bytes:
    return pack(write_to_plain(write))


BY_PRINCIPAL_TAG = 20
"""A log command carrying the principal it is done for: ``[20, principal, command]``.
Commands without one (the master's own, and every entry written before principals were
logged) read as done for no principal, ``""``."""

PRINCIPAL_CHARS_MAX = 256
"""The longest principal a log command carries (a configured principal is shorter)."""


def encode_log_write(write: LogWrite, principal: str = "") -> bytes:
    """A log command's bytes; with `principal`, the principal it is done for (whom the
    namespace charges for what it creates: `chubbypy.namespace` quotas)."""
    plain = log_write_to_plain(write)
    return pack([BY_PRINCIPAL_TAG, principal, plain] if principal else plain)


def encode_read(read: Read) -> bytes:
    return pack(read_to_plain(read))


def encode_result(result: Result) -> bytes:
    return pack(result_to_plain(result))


# ----------------------------------------------------------------------------- from plain data


def _to_acl(data: Any) -> AclNames:
    read, write, change = array(data, 3)
    return AclNames(text(read), text(write), text(change))


def _to_optional_acl(data: Any) -> AclNames | None:
    return None if data is None else _to_acl(data)


def _to_stat(data: Any) -> Stat:
    instance, content, lock, acl_generation, checksum, acl, is_dir, ephemeral, size = array(data, 9)
    return Stat(
        integer(instance),
        integer(content),
        integer(lock),
        integer(acl_generation),
        integer(checksum),
        _to_acl(acl),
        boolean(is_dir),
        boolean(ephemeral),
        integer(size),
    )


_MULTI_OP_TAG = 5
_WRITTEN_TAG = 1

_TESTS: dict[int, tuple[int, Callable[[list[Any]], Test]]] = {
    1: (1, lambda f: Exists(text(f[0]))),
    2: (1, lambda f: Absent(text(f[0]))),
    3: (2, lambda f: ContentGenerationIs(text(f[0]), integer(f[1]))),
    4: (2, lambda f: AclGenerationIs(text(f[0]), integer(f[1]))),
    5: (2, lambda f: InstanceIs(text(f[0]), integer(f[1]))),
    6: (2, lambda f: ContentsAre(text(f[0]), binary(f[1]))),
    7: (4, lambda f: LockHeldAt(text(f[0]), integer(f[1]), _to_mode(f[2]), integer(f[3]))),
}


def _to_mode(data: Any) -> LockMode:
    try:
        return LockMode(integer(data))
    except ValueError:
        raise DecodeError(f"unknown lock mode {data!r:.20}") from None


def _to_simple_write(data: Any) -> SimpleWrite:
    # Look at the tag before decoding, so a MultiOp nested a thousand deep costs nothing.
    if type(data) is list and data and data[0] == _MULTI_OP_TAG:
        raise DecodeError("a MultiOp cannot contain another MultiOp")
    write = write_from_plain(data)
    assert not isinstance(write, MultiOp)
    return write


def _to_multi(fields: list[Any]) -> MultiOp:
    guard = tuple(tagged(t, _TESTS, "test") for t in array(fields[0]))
    if_true = tuple(_to_simple_write(w) for w in array(fields[1]))
    if_false = tuple(_to_simple_write(w) for w in array(fields[2]))
    return MultiOp(guard, if_true, if_false)


_WRITES: dict[int, tuple[int, Callable[[list[Any]], Write]]] = {
    1: (
        5,
        lambda f: Create(
            text(f[0]), boolean(f[1]), binary(f[2]), _to_optional_acl(f[3]), boolean(f[4])
        ),
    ),
    2: (3, lambda f: SetContents(text(f[0]), binary(f[1]), optional_integer(f[2]))),
    3: (2, lambda f: Delete(text(f[0]), optional_integer(f[1]))),
    4: (3, lambda f: SetAcl(text(f[0]), _to_acl(f[1]), optional_integer(f[2]))),
    5: (3, _to_multi),
}


def _session_id(data: Any) -> SessionId:
    return SessionId(integer(data, 1))


def _handle_id(data: Any) -> HandleId:
    return HandleId(integer(data))


def _to_number(sequence: Any, first_unacked: Any) -> CallNumber:
    """A session call's number: 1 <= first_unacked <= sequence."""
    number, first = integer(sequence, 1), integer(first_unacked, 1)
    if first > number:
        raise DecodeError(f"a call numbered {number} cannot acknowledge up to {first}")
    return CallNumber(number, first)


def _to_acquire(f: list[Any]) -> Acquire:
    return Acquire(_session_id(f[0]), _handle_id(f[1]), text(f[2]), integer(f[3]),
                   _to_mode(f[4]), integer(f[5]))  # fmt: skip


def _to_release(f: list[Any], number: CallNumber | None = None) -> Release:
    return Release(_session_id(f[0]), _handle_id(f[1]), text(f[2]), integer(f[3]),
                   optional_integer(f[4]), number)  # fmt: skip


_SESSION_COMMANDS: dict[int, tuple[int, Callable[[list[Any]], SessionCommand]]] = {
    10: (1, lambda f: OpenSession(text(f[0]))),
    11: (2, lambda f: EndSession(_session_id(f[0]), boolean(f[1]))),
    12: (2, lambda f: InSession(_session_id(f[0]), write_from_plain(f[1]))),
    13: (6, _to_acquire),
    14: (5, _to_release),
    15: (2, lambda f: EndLockDelay(text(f[0]), integer(f[1]))),
    16: (2, lambda f: OpenSession(text(f[0]), integer(f[1], 1))),
    17: (4, lambda f: InSession(_session_id(f[0]), write_from_plain(f[1]), _to_number(*f[2:]))),
    19: (7, lambda f: _to_release(f, _to_number(*f[5:]))),
}

_LOG_WRITES: dict[int, tuple[int, Callable[[list[Any]], LogWrite]]] = {
    **_WRITES,
    **_SESSION_COMMANDS,
}

_READS: dict[int, tuple[int, Callable[[list[Any]], Read]]] = {
    1: (1, lambda f: GetContentsAndStat(text(f[0]))),
    2: (1, lambda f: GetStat(text(f[0]))),
    3: (3, lambda f: ReadDir(text(f[0]), text(f[1]), integer(f[2], 1))),
}


def _to_failure(fields: list[Any]) -> Failure:
    try:
        code = ErrorCode(integer(fields[0]))
    except ValueError as error:
        raise DecodeError(f"unknown error code {fields[0]!r:.20}") from error
    return Failure(code, text(fields[1]))


def _to_multi_result(fields: list[Any]) -> MultiResult:
    results = []
    for plain in array(fields[2]):
        if type(plain) is not list or not plain or plain[0] != _WRITTEN_TAG:
            raise DecodeError("a MultiOp's results are Written values")
        result = result_from_plain(plain)
        if not isinstance(result, Written):
            raise DecodeError("a MultiOp's results are Written values")
        results.append(result)
    return MultiResult(
        boolean(fields[0]), tuple(boolean(t) for t in array(fields[1])), tuple(results)
    )


def _to_listing(fields: list[Any]) -> Listing:
    entries = []
    for plain in array(fields[0]):
        name, stat = array(plain, 2)
        entries.append(DirEntry(text(name), None if stat is None else _to_stat(stat)))
    return Listing(tuple(entries), boolean(fields[1]))


_RESULTS: dict[int, tuple[int, Callable[[list[Any]], Result]]] = {
    1: (1, lambda f: Written(None if f[0] is None else _to_stat(f[0]))),
    2: (3, _to_multi_result),
    3: (2, _to_failure),
    4: (2, lambda f: Contents(binary(f[0]), _to_stat(f[1]))),
    5: (1, lambda f: _to_stat(f[0])),
    6: (2, _to_listing),
    7: (1, lambda f: SessionOpened(_session_id(f[0]))),
}


def write_from_plain(data: Any) -> Write:
    return tagged(data, _WRITES, "write")


def log_write_from_plain(data: Any) -> LogWrite:
    return tagged(data, _LOG_WRITES, "log command")


def read_from_plain(data: Any) -> Read:
    return tagged(data, _READS, "read")


def result_from_plain(data: Any) -> Result:
    return tagged(data, _RESULTS, "result")


def decode_write(data: bytes) -> Write:
    return unpack(data, write_from_plain)


def decode_log_write(data: bytes) -> LogWrite:
    """A log command, without the principal it may carry (see `decode_log_write_by`)."""
    return decode_log_write_by(data)[0]


def decode_log_write_by(data: bytes) -> tuple[LogWrite, str]:
    """A log command and the principal it is done for (``""``: none)."""
    return unpack(data, _log_write_by_from_plain)


def _log_write_by_from_plain(data: Any) -> tuple[LogWrite, str]:
    if type(data) is list and data and data[0] == BY_PRINCIPAL_TAG:
        _, principal, plain = array(data, 3)
        name = text(principal)
        if not 0 < len(name) <= PRINCIPAL_CHARS_MAX:
            raise DecodeError(f"a principal of {len(name)} characters in a log command")
        if type(plain) is list and plain and plain[0] == BY_PRINCIPAL_TAG:
            raise DecodeError("a log command carries one principal")
        return log_write_from_plain(plain), name
    return log_write_from_plain(data), ""


def decode_read(data: bytes) -> Read:
    return unpack(data, read_from_plain)


def decode_result(data: bytes) -> Result:
    return unpack(data, result_from_plain)
