"""The register workload's registers and counters, as files of the real namespace database.

A register `k0` is the file ``/ls/sim/k0`` holding a decimal integer. A put is a write any
client of the cell could send: a MultiOp that sets the file's contents if it exists, else
creates it. An increment is a compare-and-swap on a counter file: the client reads the
counter from the master, then writes value + 1 guarded by "the contents are still what I
read" (or "the file is still absent"); if another write came first, the guard fails and
nothing changes. The checkers read the committed log back through `put_in` and `changed`.
"""

from __future__ import annotations

from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.errors import Failure
from chubbypy.protocol.namespace import (
    Absent,
    ContentsAre,
    Create,
    Exists,
    MultiOp,
    MultiResult,
    SetContents,
    WriteResult,
)
from chubbypy.protocol.namespace_codec import decode_log_write, decode_result

CELL = "sim"
PREFIX = f"/ls/{CELL}/"


def path_of(key: str) -> str:
    return PREFIX + key


def put(key: str, value: int) -> MultiOp:
    """The namespace write a put becomes: set the file's contents, or create it."""
    path, contents = path_of(key), str(value).encode()
    return MultiOp(
        (Exists(path),), (SetContents(path, contents),), (Create(path, contents=contents),)
    )


def increment(key: str, seen: int | None) -> MultiOp:
    """Set counter `key` to `seen` + 1 only if it still holds `seen` (None: is still absent)."""
    path = path_of(key)
    if seen is None:
        return MultiOp((Absent(path),), (Create(path, contents=b"1"),))
    guard = ContentsAre(path, str(seen).encode())
    return MultiOp((guard,), (SetContents(path, str(seen + 1).encode()),))


def put_in(payload: bytes) -> tuple[str, int] | None:
    """The (key, value) a command of the register workload writes, or None for any other
    (its payload may carry the client's principal: `decode_log_write` reads past it)."""
    try:
        write = decode_log_write(payload)
    except DecodeError:
        return None
    if not isinstance(write, MultiOp) or len(write.if_true) != 1:
        return None
    (change,) = write.if_true
    if not isinstance(change, SetContents | Create) or not change.path.startswith(PREFIX):
        return None
    return change.path.removeprefix(PREFIX), int(change.contents)


def changed(result: bytes | WriteResult) -> bool:
    """Whether a register write with this result changed its file (a put always does; an
    increment only if its guard held)."""
    decoded = decode_result(result) if isinstance(result, bytes) else result
    if isinstance(decoded, Failure):
        return False
    # A MultiOp's results are those of the branch that ran: none if the increment's guard
    # failed (its other branch is empty).
    return not isinstance(decoded, MultiResult) or bool(decoded.results)
