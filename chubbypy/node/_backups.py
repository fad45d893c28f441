"""Snapshots of the replicated database for backups, served by the master in pieces. Pure.

An operator's `GetSnapshot` (``chubbypy snapshot save``) reads the same snapshot replicas
send each other to catch up (`chubbypy.paxos.Applier.snapshot`: the namespace, sessions,
locks and the client table after applying every entry through an index), so a backup has
one format and one function that makes it. It may be far larger than one frame, so it
goes in pieces of at most ``limits.snapshot_chunk_bytes``, one per call, which the client
reassembles and checks.

Theory of operation.

* **Taking.** A call with index 0 takes a snapshot of the master's state now (every entry
  it has applied) and keeps it, with its SHA-256 (the `digest` every piece carries, which
  the reassembled bytes must have) and the state's checksum (what replicas compare, which
  a restore recomputes). If the one held is of the index applied now, it is used again:
  nothing changed since it was taken.
* **Reading.** A call naming the held snapshot's index and an offset inside it gets the
  bytes from there on. A piece is always of that one snapshot: pieces of two snapshots
  are never mixed, since each names its index and the client refuses a change of index.
* **Gone.** At most one snapshot is held (it costs its size in the master's memory). It
  is dropped when mastership ends (this service with it), when a newer one is taken, and
  when no piece of it was asked for in ``limits.snapshot_held_seconds``. A call naming a
  snapshot not held is refused SNAPSHOT_GONE, and its client starts again from index 0:
  a torn backup is never written.
"""

from __future__ import annotations

import hashlib

from attrs import frozen

from chubbypy.paxos import Applier
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.session import GetSnapshot, SnapshotChunk


@frozen
class _Held:
    index: int
    data: bytes
    digest: bytes
    checksum: bytes


class SnapshotServer:
    """The snapshot a backup reads at this master; see the module docstring."""

    def __init__(self, chunk_bytes: int, held_ticks: int) -> None:
        assert chunk_bytes >= 1, chunk_bytes
        assert held_ticks >= 1, held_ticks
        self._chunk_bytes = chunk_bytes
        self._held_ticks = held_ticks
        self._held: _Held | None = None
        self._idle_until = 0
        """The tick the held snapshot is dropped at, unless a piece of it is asked for."""

    @property
    def held_bytes(self) -> int:
        """The size of the snapshot held (0: none), for /metrics."""
        return 0 if self._held is None else len(self._held.data)

    def piece(self, applier: Applier, call: GetSnapshot, now: int) -> SnapshotChunk | Failure:
        """The piece `call` asks for, of a snapshot taken now (index 0) or of the held one;
        SNAPSHOT_GONE if that is not held, BAD_REQUEST for an offset outside it."""
        if call.index == 0:
            self._take(applier)
        held = self._held
        if held is None or call.index not in (0, held.index):
            return Failure(
                ErrorCode.SNAPSHOT_GONE,
                f"the master no longer holds the snapshot of index {call.index} (a newer one "
                "was taken, the master changed, or it was idle for limits."
                "snapshot_held_seconds): start again",
            )
        if not 0 <= call.offset < len(held.data):
            return Failure(
                ErrorCode.BAD_REQUEST,
                f"offset {call.offset} is outside the {len(held.data)}-byte snapshot",
            )
        self._idle_until = now + self._held_ticks
        data = held.data[call.offset : call.offset + self._chunk_bytes]
        return SnapshotChunk(
            held.index, len(held.data), held.digest, held.checksum, call.offset, data
        )

    def ticked(self, now: int) -> None:
        """Drop the held snapshot once it was idle for its time."""
        if self._held is not None and now >= self._idle_until:
            self._held = None

    def _take(self, applier: Applier) -> None:
        index = applier.applied_index
        if self._held is not None and self._held.index == index:
            return  # nothing was applied since: the same bytes
        data = applier.snapshot()
        digest = hashlib.sha256(data).digest()
        self._held = _Held(index, data, digest, applier.checksum())
