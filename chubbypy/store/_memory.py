"""An in-memory `Store` for the simulator: the storage contract with no disk under it.

Shell side, but pure enough for simulation (STYLE §11): a whole cell runs in one process, and a
simulated crash keeps what was persisted here and loses whatever the replica had not yet
handed over. It holds only frozen values, so nothing it returns can be changed behind its back.
"""

from __future__ import annotations

from chubbypy.paxos import Durable, HardState, Persisted
from chubbypy.protocol import Entry, LogIndex, Membership, Snapshot, Value
from chubbypy.store._contract import assert_fits, assert_indices_distinct


class MemoryStore:
    """Keeps the `Store` contract in a dict of entries, a hard state and a snapshot."""

    def __init__(self) -> None:
        self._hard_state: HardState | None = None
        self._snapshot: Snapshot | None = None
        self._entries: dict[LogIndex, Entry] = {}
        self._genesis: Membership | None = None
        self._persist_calls = 0

    @property
    def persist_calls(self) -> int:
        """Non-empty batches persisted: the fsyncs a disk-backed store would have made."""
        return self._persist_calls

    def persist(self, durable: Durable) -> None:
        """Apply `durable` as one step; see `Store.persist` for the order of its parts."""
        if durable.is_empty():
            return
        # Check before changing anything: like a rolled-back transaction, a refused batch
        # leaves nothing behind.
        assert_indices_distinct(durable.entries)
        assert_fits(durable)  # as SqlStore does: the simulator catches what a disk would
        if durable.snapshot is not None:
            self._assert_not_older(durable.snapshot)
        self._persist_calls += 1
        if durable.hard_state is not None:
            self._hard_state = durable.hard_state
        if durable.genesis is not None:
            self._genesis = durable.genesis
        if durable.snapshot is not None:
            self._snapshot = durable.snapshot
        for entry in durable.entries:
            self._entries[entry.index] = entry
        if durable.compact_through is not None:
            self._compact(durable.compact_through)

    def load(self) -> Persisted:
        """Everything persisted so far, entries sorted by index."""
        entries = tuple(self._entries[index] for index in sorted(self._entries))
        return Persisted(self._hard_state, self._snapshot, entries, self._genesis)

    def holds(self, index: LogIndex, value: Value) -> bool:
        """Whether `value` is durable here at `index`, or a snapshot covers the index (for
        the simulator's checkers: a disk-backed store is never asked)."""
        if self._snapshot is not None and self._snapshot.index >= index:
            return True
        entry = self._entries.get(index)
        return entry is not None and entry.value == value

    def close(self) -> None:
        """Nothing to release: the data stays, so a simulated restart can load it again."""

    def _assert_not_older(self, snapshot: Snapshot) -> None:
        stored = self._snapshot.index if self._snapshot is not None else None
        assert stored is None or snapshot.index >= stored, (snapshot.index, stored)

    def _compact(self, through: LogIndex) -> None:
        for index in [index for index in self._entries if index <= through]:
            del self._entries[index]
