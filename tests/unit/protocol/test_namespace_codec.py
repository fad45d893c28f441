"""The namespace codec: every write, read and result round-trips, and bad bytes raise
DecodeError and nothing else."""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chubbypy.protocol import CallNumber, SessionId
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
from chubbypy.protocol.namespace_codec import (
    DecodeError,
    decode_log_write,
    decode_read,
    decode_result,
    decode_write,
    encode_log_write,
    encode_read,
    encode_result,
    encode_write,
)

# ----------------------------------------------------------------------------- strategies

counts = st.integers(min_value=0, max_value=2**64 - 1)
texts = st.text(max_size=12)
blobs = st.binary(max_size=24)
acls = st.builds(AclNames, texts, texts, texts)
stats = st.builds(
    Stat, counts, counts, counts, counts, counts, acls, st.booleans(), st.booleans(), counts
)
TESTS: dict[type, st.SearchStrategy[Test]] = {
    Exists: st.builds(Exists, texts),
    Absent: st.builds(Absent, texts),
    ContentGenerationIs: st.builds(ContentGenerationIs, texts, counts),
    AclGenerationIs: st.builds(AclGenerationIs, texts, counts),
    InstanceIs: st.builds(InstanceIs, texts, counts),
    ContentsAre: st.builds(ContentsAre, texts, blobs),
    LockHeldAt: st.builds(LockHeldAt, texts, counts, st.sampled_from(LockMode), counts),
}
SIMPLE_WRITES: dict[type, st.SearchStrategy[SimpleWrite]] = {
    Create: st.builds(Create, texts, st.booleans(), blobs, st.none() | acls, st.booleans()),
    SetContents: st.builds(SetContents, texts, blobs, st.none() | counts),
    Delete: st.builds(Delete, texts, st.none() | counts),
    SetAcl: st.builds(SetAcl, texts, acls, st.none() | counts),
}
simple_writes = st.one_of(*SIMPLE_WRITES.values())
WRITES: dict[type, st.SearchStrategy[Write]] = {
    **SIMPLE_WRITES,
    MultiOp: st.builds(
        MultiOp,
        st.lists(st.one_of(*TESTS.values()), max_size=4).map(tuple),
        st.lists(simple_writes, max_size=4).map(tuple),
        st.lists(simple_writes, max_size=4).map(tuple),
    ),
}
ids = st.integers(min_value=1, max_value=2**64 - 1)
numbers = st.none() | st.builds(
    lambda sequence, behind: CallNumber(sequence, max(1, sequence - behind)),
    st.integers(1, 2**32),
    st.integers(0, 10),
)
SESSION_COMMANDS: dict[type, st.SearchStrategy[SessionCommand]] = {
    OpenSession: st.builds(OpenSession, texts, st.just(0) | ids),
    EndSession: st.builds(EndSession, ids, st.booleans()),
    InSession: st.builds(InSession, ids, st.one_of(*WRITES.values()), numbers),
    Acquire: st.builds(Acquire, ids, counts, texts, counts, st.sampled_from(LockMode), counts),
    Release: st.builds(Release, ids, counts, texts, counts, st.none() | counts, numbers),
    EndLockDelay: st.builds(EndLockDelay, texts, counts),
}
READS: dict[type, st.SearchStrategy[Read]] = {
    GetContentsAndStat: st.builds(GetContentsAndStat, texts),
    GetStat: st.builds(GetStat, texts),
    ReadDir: st.builds(ReadDir, texts, texts, st.integers(1, 2**64 - 1)),
}
writtens = st.builds(Written, st.none() | stats)
RESULTS: dict[type, st.SearchStrategy[object]] = {
    Written: writtens,
    MultiResult: st.builds(
        MultiResult,
        st.booleans(),
        st.lists(st.booleans(), max_size=4).map(tuple),
        st.lists(writtens, max_size=4).map(tuple),
    ),
    Failure: st.builds(Failure, st.sampled_from(ErrorCode), texts),
    Contents: st.builds(Contents, blobs, stats),
    Stat: stats,
    SessionOpened: st.builds(SessionOpened, ids),
    Listing: st.builds(
        Listing, st.lists(st.builds(DirEntry, texts, stats), max_size=4).map(tuple), st.booleans()
    ),
}


def test_every_type_has_a_strategy() -> None:
    """The round-trip tests cover every member of the Write, Test, Read and result unions."""
    assert set(WRITES) == set(typing.get_args(Write))
    assert set(SESSION_COMMANDS) == set(typing.get_args(SessionCommand))
    assert set(TESTS) == set(typing.get_args(Test))
    assert set(READS) == set(typing.get_args(Read))
    result_types = {*typing.get_args(WriteResult), *typing.get_args(ReadResult)}
    assert set(RESULTS) == result_types


@pytest.mark.parametrize("kind", list(WRITES), ids=lambda kind: kind.__name__)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_writes_round_trip(kind: type, data: st.DataObject) -> None:
    """decode_write(encode_write(w)) == w for every kind of write."""
    write = data.draw(WRITES[kind])
    assert decode_write(encode_write(write)) == write


@pytest.mark.parametrize("kind", [*WRITES, *SESSION_COMMANDS], ids=lambda kind: kind.__name__)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_log_writes_round_trip(kind: type, data: st.DataObject) -> None:
    """decode_log_write(encode_log_write(w)) == w for client writes and session commands,
    and a client write has the same bytes either way."""
    strategy: st.SearchStrategy[LogWrite] = {**WRITES, **SESSION_COMMANDS}[kind]
    write = data.draw(strategy)
    assert decode_log_write(encode_log_write(write)) == write
    if kind in WRITES:
        assert encode_log_write(write) == encode_write(write)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(SESSION_COMMANDS), ids=lambda kind: kind.__name__)
@settings(max_examples=5, deadline=None, derandomize=True)
@given(data=st.data())
def test_a_client_write_is_never_a_session_command(kind: type, data: st.DataObject) -> None:
    """decode_write (what a client may send) refuses every session command: only the master
    proposes those, after checking the session and handle."""
    with pytest.raises(DecodeError, match="unknown write"):
        decode_write(encode_log_write(data.draw(SESSION_COMMANDS[kind])))


@pytest.mark.parametrize("kind", list(READS), ids=lambda kind: kind.__name__)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_reads_round_trip(kind: type, data: st.DataObject) -> None:
    """decode_read(encode_read(r)) == r for every kind of read."""
    query = data.draw(READS[kind])
    assert decode_read(encode_read(query)) == query


@pytest.mark.parametrize("kind", list(RESULTS), ids=lambda kind: kind.__name__)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_results_round_trip(kind: type, data: st.DataObject) -> None:
    """decode_result(encode_result(r)) == r for every kind of result."""
    result = data.draw(RESULTS[kind])
    assert decode_result(encode_result(result)) == result  # type: ignore[arg-type]


def test_every_error_code_round_trips() -> None:
    """Each ErrorCode comes back as the same member, not just an equal int."""
    for code in ErrorCode:
        decoded = decode_result(encode_result(Failure(code, "m")))
        assert isinstance(decoded, Failure)
        assert decoded.code is code


# ----------------------------------------------------------------------------- bad input


def pack(data: object) -> bytes:
    return bytes(msgpack.packb(data, use_bin_type=True))


STAT = [1, 1, 0, 1, 7, ["r", "w", "c"], False, False, 3]
DELETE = [3, "/ls/c/a", None]
BAD_WRITES = {
    "not msgpack": b"\xc1",
    "trailing bytes": pack(DELETE) + b"\x00",
    "not a list": pack({"tag": 3}),
    "empty list": pack([]),
    "unknown tag": pack([6, "/ls/c/a"]),
    "tag zero": pack([0]),
    "tag as bool": pack([True, "/ls/c/a", False, b"", None, False]),
    "tag as string": pack(["3", "/ls/c/a", None]),
    "too few fields": pack([3, "/ls/c/a"]),
    "too many fields": pack([3, "/ls/c/a", None, None]),
    "path as bytes": pack([3, b"/ls/c/a", None]),
    "contents as text": pack([2, "/ls/c/a", "text", None]),
    "directory flag as int": pack([1, "/ls/c/a", 1, b"", None, False]),
    "negative expected instance": pack([3, "/ls/c/a", -1]),
    "expected generation as float": pack([2, "/ls/c/a", b"", 1.0]),
    "acl of two names": pack([4, "/ls/c/a", ["r", "w"], None]),
    "acl name as bytes": pack([4, "/ls/c/a", ["r", "w", b"c"], None]),
    "nested MultiOp in if_true": pack([5, [], [[5, [], [], []]], []]),
    "nested MultiOp in if_false": pack([5, [], [], [DELETE, [5, [], [], []]]]),
    "MultiOp of two parts": pack([5, [], []]),
    "unknown test tag": pack([5, [[8, "/ls/c/a"]], [], []]),
    "lock test with mode 3": pack([5, [[7, "/ls/c/a", 1, 3, 1]], [], []]),
    "test of wrong arity": pack([5, [[3, "/ls/c/a"]], [], []]),
    "guard as a map": pack([5, {"a": 1}, [], []]),
    "invalid utf-8": b"\x93\x03\xa2\xff\xfe\xc0",
}


@pytest.mark.parametrize("data", list(BAD_WRITES.values()), ids=list(BAD_WRITES))
def test_malformed_writes_raise_decode_error(data: bytes) -> None:
    """Each malformed write raises DecodeError."""
    with pytest.raises(DecodeError):
        decode_write(data)


BAD_READS = {
    "unknown tag": pack([4, "/ls/c"]),
    "read dir limit zero": pack([3, "/ls/c", "", 0]),
    "read dir limit negative": pack([3, "/ls/c", "", -5]),
    "read dir without limit": pack([3, "/ls/c", ""]),
    "after as nil": pack([3, "/ls/c", None, 10]),
    "get stat of two paths": pack([2, "/ls/c", "/ls/c/a"]),
}


@pytest.mark.parametrize("data", list(BAD_READS.values()), ids=list(BAD_READS))
def test_malformed_reads_raise_decode_error(data: bytes) -> None:
    """Each malformed read raises DecodeError."""
    with pytest.raises(DecodeError):
        decode_read(data)


BAD_RESULTS = {
    "unknown tag": pack([8]),
    "session id zero": pack([7, 0]),
    "unknown error code": pack([3, 99, "m"]),
    "error code zero": pack([3, 0, "m"]),
    "error code as bool": pack([3, True, "m"]),
    "error code as string": pack([3, "NO_SUCH_NODE", "m"]),
    "failure without message": pack([3, 1]),
    "stat of eight fields": pack([5, STAT[:-1]]),
    "stat with negative size": pack([5, [*STAT[:-1], -1]]),
    "stat with acl as nil": pack([5, [*STAT[:5], None, *STAT[6:]]]),
    "multi result holding a failure": pack([2, True, [], [[3, 1, "m"]]]),
    "multi result holding a multi result": pack([2, True, [], [[2, True, [], []]]]),
    "multi result test as int": pack([2, True, [1], []]),
    "listing entry of three": pack([6, [["a", STAT, 1]], False]),
    "listing more as nil": pack([6, [], None]),
    "contents as text": pack([4, "x", STAT]),
}


@pytest.mark.parametrize("data", list(BAD_RESULTS.values()), ids=list(BAD_RESULTS))
def test_malformed_results_raise_decode_error(data: bytes) -> None:
    """Each malformed result raises DecodeError."""
    with pytest.raises(DecodeError):
        decode_result(data)


def _nested_multi_op(depth: int) -> bytes:
    """``[5, [], [[5, [], [...], []]], []]`` around a Delete, in raw msgpack (the packer
    refuses to nest this deep)."""
    delete = bytes([0x93, 0x03, 0xA1]) + b"a" + bytes([0xC0])
    return bytes([0x94, 0x05, 0x90, 0x91]) * depth + delete + bytes([0x90]) * depth


def _nested_multi_result(depth: int) -> bytes:
    """``[2, True, [], [[2, True, [], [...]]]]`` around a Written, in raw msgpack."""
    return bytes([0x94, 0x02, 0xC3, 0x90, 0x91]) * depth + bytes([0x92, 0x01, 0xC0])


@pytest.mark.parametrize("depth", [2, 400, 5000])
def test_deep_nesting_raises_decode_error(depth: int) -> None:
    """MultiOps or MultiResults nested at any depth raise DecodeError, not RecursionError."""
    with pytest.raises(DecodeError, match=r"cannot contain|not msgpack"):
        decode_write(_nested_multi_op(depth))
    with pytest.raises(DecodeError, match=r"are Written|not msgpack"):
        decode_result(_nested_multi_result(depth))


DECODERS: list[Callable[[bytes], object]] = [decode_write, decode_read, decode_result]


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
@given(tag=st.integers(0, 7), fields=st.lists(plain, max_size=9))
def test_arbitrary_arrays_raise_only_decode_error(
    decode: Callable[[bytes], object], tag: int, fields: list[object]
) -> None:
    """Well-formed msgpack arrays of the wrong shape give a value or DecodeError, nothing else."""
    for data in (pack([tag, *fields]), pack(fields)):
        with contextlib.suppress(DecodeError):
            decode(data)


def test_log_commands_without_a_call_number_keep_the_tags_they_had() -> None:
    """A session command that carries no call number is written as before numbers existed,
    and one written then reads back the same: entries already in a log stay readable."""
    old = msgpack.packb([12, 5, [3, "/ls/c/x", None]])
    assert decode_log_write(old) == InSession(SessionId(5), Delete("/ls/c/x"))
    assert encode_log_write(InSession(SessionId(5), Delete("/ls/c/x"))) == old
    assert msgpack.unpackb(encode_log_write(OpenSession("me")))[0] == 10
    numbered = InSession(SessionId(5), Delete("/ls/c/x"), CallNumber(3, 2))
    assert msgpack.unpackb(encode_log_write(numbered))[0] == 17
    assert decode_log_write(encode_log_write(numbered)) == numbered


def test_a_call_number_past_its_own_acknowledgement_is_refused() -> None:
    """A numbered command that acknowledges beyond its own number is malformed."""
    with pytest.raises(DecodeError, match="cannot acknowledge"):
        decode_log_write(msgpack.packb([17, 5, [3, "/ls/c/x", None], 2, 3]))
