"""Reassembling a backup's snapshot from the master's pieces. Pure: chunks in, bytes out.

The master answers each `GetSnapshot` with one piece (`SnapshotChunk`); see
`chubbypy.node._backups`. `SnapshotAssembly` asks for the pieces in order and takes them
only if they are of one snapshot: the same index, size, digest and state checksum as the
first, at the offset asked for. Anything else (the master changed and took a new one, or
another operator's backup replaced it) tears the transfer: the caller starts again, so a
backup is always one snapshot, whole. The bytes put together must have the digest every
piece announced (SHA-256).
"""

from __future__ import annotations

import hashlib

from attrs import frozen

from chubbypy.protocol.session import GetSnapshot, SnapshotChunk

__all__ = ["CellSnapshot", "SnapshotAssembly"]

SNAPSHOT_ATTEMPTS_MAX = 5
"""Times a backup starts again after a torn transfer (a fail-over, another backup taking
a newer snapshot) before it gives up."""


@frozen
class CellSnapshot:
    """A snapshot of the cell's replicated database (`Cell.snapshot`): the state after
    applying every log entry through `index`, as replicas send each other to catch up.
    `checksum` is that state's checksum (what replicas compare; a restore recomputes it),
    `digest` the SHA-256 of `data`, checked when the pieces were put together."""

    cell: str
    index: int
    checksum: bytes
    digest: bytes
    data: bytes = b""


class SnapshotAssembly:
    """One attempt at a backup's snapshot; see the module docstring."""

    def __init__(self, cell: str) -> None:
        self._cell = cell
        self._first: SnapshotChunk | None = None
        self._pieces: list[bytes] = []
        self.received_bytes = 0

    @property
    def total_bytes(self) -> int:
        """The snapshot's size, once the first piece came (0 before)."""
        return 0 if self._first is None else self._first.total_bytes

    @property
    def done(self) -> bool:
        return self._first is not None and self.received_bytes == self._first.total_bytes

    def next_call(self) -> GetSnapshot:
        """The call for the next piece (the first takes a new snapshot)."""
        assert not self.done
        index = 0 if self._first is None else self._first.index
        return GetSnapshot(index, self.received_bytes)

    def received(self, chunk: SnapshotChunk) -> str | None:
        """Take the answer to `next_call`; why the transfer is torn (start again), or None."""
        first = self._first or chunk
        same = (first.index, first.total_bytes, first.digest, first.checksum)
        if (chunk.index, chunk.total_bytes, chunk.digest, chunk.checksum) != same:
            return (
                f"the snapshot changed during the transfer (index {first.index}, "
                f"{first.total_bytes} bytes, then index {chunk.index}, {chunk.total_bytes} bytes)"
            )
        if chunk.offset != self.received_bytes:
            return f"a piece at offset {chunk.offset} where {self.received_bytes} was asked for"
        self._first = first
        self._pieces.append(chunk.data)
        self.received_bytes += len(chunk.data)
        return None

    def result(self) -> CellSnapshot | str:
        """The snapshot put together, or why it is not the one announced (its digest)."""
        assert self._first is not None
        assert self.done
        data = b"".join(self._pieces)
        first = self._first
        if hashlib.sha256(data).digest() != first.digest:
            return f"the {len(data)} bytes of the snapshot of index {first.index} are damaged"
        return CellSnapshot(self._cell, first.index, first.checksum, first.digest, data)
