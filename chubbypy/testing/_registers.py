"""The simulator's registers kept in the real namespace database, so it runs under the checkers.

The workload's ``["put", key, value]`` commands become namespace writes (a MultiOp: set the
file's contents if it exists, else create it) applied by `NamespaceMachine`, and reads go
through its read path; snapshots, restores and checksums are the namespace's own. Results
are the same as `KvMachine`'s, so every checker works unchanged.

In a whole-cell run (registers and lock clients together) the same machine also applies
the master's session commands and the lock clients' writes (`payload` that is not a put),
and records every write for the master's service, puts included.
"""

from __future__ import annotations

import msgpack

from chubbypy.namespace import NamespaceMachine
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import Failure
from chubbypy.protocol.namespace import (
    Contents,
    Create,
    Exists,
    GetContentsAndStat,
    MultiOp,
    SetContents,
)
from chubbypy.testing._kv import is_put, parse_put

CELL = "sim"


def _path(key: str) -> str:
    return f"/ls/{CELL}/{key}"


def register_write(key: str, value: int) -> MultiOp:
    """The namespace write a put becomes: set the file's contents, or create it."""
    path, contents = _path(key), str(value).encode()
    return MultiOp(
        (Exists(path),), (SetContents(path, contents),), (Create(path, contents=contents),)
    )


class NamespaceRegisters:
    """Registers of integers, one file each in a real namespace; a `StateMachine`."""

    def __init__(self) -> None:
        self.namespace = NamespaceMachine(CELL)

    def apply(self, index: LogIndex, payload: bytes) -> bytes:
        if not is_put(payload):
            return self.namespace.apply(index, payload)
        key, value = parse_put(payload)
        applied = self.namespace.apply_recorded(index, register_write(key, value))
        assert not isinstance(applied.result, Failure), applied.result
        return bytes(msgpack.packb([index, value]))

    def get(self, key: str) -> int | None:
        result = self.namespace.read(GetContentsAndStat(_path(key)))
        return int(result.contents) if isinstance(result, Contents) else None

    def snapshot(self) -> bytes:
        return self.namespace.snapshot()

    def restore(self, data: bytes) -> None:
        self.namespace.restore(data)

    def checksum(self) -> bytes:
        return self.namespace.checksum()
