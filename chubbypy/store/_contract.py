"""The storage contract every replica store keeps, whatever holds the bytes.

Shell side (STYLE §1, §5): the shell hands a store each `Ready`'s `Durable` before it sends the
Ready's messages, and rebuilds a replica from `load()` after a restart. `SqlStore` keeps the
contract on a database; `MemoryStore` keeps it in memory for the simulator. One contract test
suite (`tests/unit/store/test_store_contract.py`) runs against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from chubbypy.paxos import Durable, Persisted
from chubbypy.protocol import Entry


class Store(Protocol):
    """A replica's durable state: hard state, log entries and the latest snapshot."""

    def persist(self, durable: Durable) -> None:
        """Make everything in `durable` durable at once: one transaction, one fsync.

        This is the group commit: the shell hands over a whole Ready batch. Inside the one
        transaction, in this order: `hard_state` (if any) replaces the stored one; `snapshot`
        (if any) replaces the stored one, and must not lie below it; each entry replaces any
        entry at its index; then every entry at or below `compact_through` (if any) is
        deleted. An empty `Durable` is a no-op that costs no transaction.
        """
        ...

    def load(self) -> Persisted:
        """Everything persisted so far; a store never written to loads `Persisted()`.

        The hard state is None until one is persisted, and the entries come sorted
        by index, so `Replica(..., persisted=store.load())` resumes where the replica stopped.
        """
        ...

    def close(self) -> None:
        """Release the store's resources; the data stays for the next open."""
        ...


def assert_indices_distinct(entries: Sequence[Entry]) -> None:
    """Assert that one batch writes each log index once: two values for one index is a core bug."""
    indices = {entry.index for entry in entries}
    assert len(indices) == len(entries), sorted(entry.index for entry in entries)


INTEGER_MAX = (1 << 63) - 1
"""The largest integer a store column holds (SQLite's INTEGER, SQL's BIGINT: signed 64-bit)."""


def assert_fits(durable: Durable) -> None:
    """Assert that every integer in `durable` fits a signed 64-bit column.

    The pair of the codec's range checks (`chubbypy.protocol.codec`): nothing from a peer
    reaches the core unchecked, so a value that does not fit here is a bug, and it stops
    the replica before anything is written rather than failing half-way in the database.
    """
    hard_state, snapshot = durable.hard_state, durable.snapshot
    if hard_state is not None:
        _assert_fits(hard_state.promised.round, "promised round")
        _assert_fits(hard_state.chosen_index, "chosen index")
    if snapshot is not None:
        _assert_fits(snapshot.index, "snapshot index")
    if durable.compact_through is not None:
        _assert_fits(durable.compact_through, "compaction index")
    for entry in durable.entries:
        _assert_fits(entry.index, "entry index")
        _assert_fits(entry.ballot.round, "entry ballot round")


def _assert_fits(value: int, what: str) -> None:
    assert 0 <= value <= INTEGER_MAX, f"{what} {value} does not fit a 64-bit column"
