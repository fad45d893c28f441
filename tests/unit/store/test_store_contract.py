"""The `Store` contract, checked against every store: MemoryStore and SqlStore (memory, file).

Each test opens a store from the `stores` fixture, persists, reopens (a new `SqlStore` on the
same file, or the same object where there is nothing to reopen) and compares `load()`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chubbypy.paxos import (
    Durable,
    HardState,
    Limits,
    NoChance,
    Persisted,
    Replica,
    Timing,
    membership_of_ids,
)
from chubbypy.protocol import (
    EPOCH_MAX,
    Ballot,
    ClientId,
    Command,
    Entry,
    Epoch,
    LogIndex,
    ReplicaId,
    Snapshot,
    Value,
    ValueKind,
)
from chubbypy.store import MemoryStore, SqlStore, Store

SEED = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))
"""The membership a snapshot's handle names in these tests."""

R1, R2, R3 = ReplicaId("r1"), ReplicaId("r2"), ReplicaId("r3")
MEMBERS = (R1, R2, R3)
TIMING = Timing(
    lease_ticks=20,
    master_lease_ticks=18,
    heartbeat_ticks=5,
    election_jitter_ticks=5,
    retry_ticks=5,
)


# ----------------------------------------------------------------------------- store factories


class Stores(Protocol):
    """Opens fresh stores of one kind and reopens them as a restarted process would."""

    def open(self) -> Store:
        """A new, empty store."""
        ...

    def reopen(self, store: Store) -> Store:
        """A store over `store`'s data after a restart (the same object if none is possible)."""
        ...

    def close_all(self) -> None:
        """Close every store this factory opened."""
        ...

    @property
    def examples_max(self) -> int:
        """Hypothesis examples to run on this kind of store, each on a fresh store."""
        ...


class MemoryStores:
    """Opens MemoryStores; there is no second instance to reopen, so reopen keeps the object."""

    examples_max = 50

    def open(self) -> Store:
        return MemoryStore()

    def reopen(self, store: Store) -> Store:
        return store

    def close_all(self) -> None:
        pass


class SqliteMemoryStores:
    """Opens SqlStores on in-memory SQLite: the data lives in the engine, so reopen keeps it."""

    examples_max = 50

    def __init__(self) -> None:
        self._opened: list[Store] = []

    def open(self) -> Store:
        store = SqlStore("sqlite://")
        self._opened.append(store)
        return store

    def reopen(self, store: Store) -> Store:
        return store

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


class SqliteFileStores:
    """Opens SqlStores on fresh files; reopen closes one and opens a new SqlStore on its file."""

    # A fresh file costs several real fsyncs (WAL setup, schema, checkpoint on close).
    examples_max = 15

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._numbers = itertools.count()
        self._paths: dict[int, Path] = {}
        self._opened: list[Store] = []

    def open(self) -> Store:
        return self._open_path(self._directory / f"replica-{next(self._numbers)}.db")

    def reopen(self, store: Store) -> Store:
        store.close()
        return self._open_path(self._paths[id(store)])

    def close_all(self) -> None:
        for store in self._opened:
            store.close()

    def _open_path(self, path: Path) -> Store:
        store = SqlStore.for_path(path)
        self._paths[id(store)] = path
        self._opened.append(store)
        return store


@pytest.fixture(params=["memory", "sqlite-memory", "sqlite-file"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """A factory for fresh stores of one kind, closing them all afterwards."""
    factory: Stores
    if request.param == "memory":
        factory = MemoryStores()
    elif request.param == "sqlite-memory":
        factory = SqliteMemoryStores()
    else:
        factory = SqliteFileStores(tmp_path)
    yield factory
    factory.close_all()


def persist_and_reload(stores: Stores, durables: list[Durable]) -> Persisted:
    """Persist each batch into a fresh store, reopen it, and load."""
    store = stores.open()
    for durable in durables:
        store.persist(durable)
    return stores.reopen(store).load()


def entry(index: int, round_: int = 1, value: Value | None = None) -> Entry:
    chosen = Value(Epoch(1), ValueKind.NOOP) if value is None else value
    return Entry(LogIndex(index), Ballot(round_, R1), chosen)


def entries(*indices: int, round_: int = 1) -> tuple[Entry, ...]:
    return tuple(entry(index, round_) for index in indices)


# ----------------------------------------------------------------------------- the contract


def test_fresh_store_loads_nothing(stores: Stores) -> None:
    """A store never written to loads `Persisted()`."""
    assert persist_and_reload(stores, []) == Persisted()


def test_hard_state_round_trips_and_is_replaced(stores: Stores) -> None:
    """The last hard state persisted is the one loaded."""
    first = HardState(Ballot(3, R2), LogIndex(7))
    second = HardState(Ballot(4, R3), LogIndex(9))
    assert persist_and_reload(stores, [Durable(hard_state=first)]).hard_state == first
    loaded = persist_and_reload(stores, [Durable(hard_state=first), Durable(hard_state=second)])
    assert loaded == Persisted(hard_state=second)


def test_entries_load_in_index_order_and_replace_by_index(stores: Stores) -> None:
    """Entries come back sorted by index, and a later entry at an index replaces the earlier."""
    batches = [Durable(entries=entries(5, 2, 9)), Durable(entries=(entry(2, round_=4),))]
    loaded = persist_and_reload(stores, batches)
    assert loaded.entries == (entry(2, round_=4), entry(5), entry(9))


def test_compaction_deletes_exactly_through_its_index(stores: Stores) -> None:
    """Compaction deletes the entries at or below `compact_through` and keeps the later ones."""
    batches = [Durable(entries=entries(1, 2, 3, 4, 5)), Durable(compact_through=LogIndex(3))]
    assert persist_and_reload(stores, batches).entries == entries(4, 5)


def test_entries_and_compaction_in_one_batch_compact_after_writing(stores: Stores) -> None:
    """Within one batch, entries are written first and compaction applies to them too."""
    batch = Durable(entries=entries(1, 2, 3), compact_through=LogIndex(2))
    assert persist_and_reload(stores, [batch]).entries == entries(3)


def test_snapshot_round_trips_and_replaces_the_older(stores: Stores) -> None:
    """The latest snapshot is kept, and the entries it covers go in the same persist."""
    older = Snapshot(LogIndex(2), b"older", SEED)
    newer = Snapshot(LogIndex(4), b"\x00newer", SEED)
    batches = [
        Durable(entries=entries(1, 2, 3, 4, 5), snapshot=older),
        Durable(snapshot=newer, compact_through=LogIndex(4)),
    ]
    loaded = persist_and_reload(stores, batches)
    assert loaded.snapshot == newer
    assert loaded.entries == entries(5)


def test_empty_durable_changes_nothing(stores: Stores) -> None:
    """Persisting an empty Durable leaves the store as it was."""
    store = stores.open()
    store.persist(Durable(HardState(Ballot(1, R1), LogIndex(1)), entries(1)))
    before = store.load()
    store.persist(Durable())
    assert stores.reopen(store).load() == before


def test_all_parts_of_one_durable_land_together(stores: Stores) -> None:
    """Hard state, entries, snapshot and compaction from one persist all load back."""
    hard_state = HardState(Ballot(2, R2), LogIndex(6))
    snapshot = Snapshot(LogIndex(3), b"state at 3", SEED)
    batch = Durable(hard_state, entries(2, 3, 4, 5, 6, 7), snapshot, LogIndex(3))
    loaded = persist_and_reload(stores, [Durable(entries=entries(1, 2)), batch])
    assert loaded == Persisted(hard_state, snapshot, entries(4, 5, 6, 7))


def test_batch_refused_by_an_assertion_leaves_nothing_behind(stores: Stores) -> None:
    """A batch whose snapshot goes backwards is refused whole: its hard state is not written."""
    store = stores.open()
    hard_state, snapshot = HardState(Ballot(1, R1)), Snapshot(LogIndex(5), b"5", SEED)
    store.persist(Durable(hard_state, snapshot=snapshot))
    backwards = Snapshot(LogIndex(3), b"3", SEED)
    with pytest.raises(AssertionError):
        store.persist(Durable(HardState(Ballot(2, R2)), entries(6), backwards))
    assert stores.reopen(store).load() == Persisted(hard_state, snapshot)


VALUES = [
    Value(Epoch(3), ValueKind.COMMANDS, (Command(ClientId(1), 1, b"\x00payload", 0),)),
    Value(
        Epoch(3),
        ValueKind.COMMANDS,
        (Command(ClientId(0), 77, b"", 0), Command(ClientId(2**40), 9, b"\xff" * 300, 8)),
    ),
    Value(Epoch(0), ValueKind.NOOP),
    Value(Epoch(4), ValueKind.EPOCH_START),
    Value(Epoch(EPOCH_MAX), ValueKind.CHECKSUM),
]


def test_values_of_every_kind_round_trip_exactly(stores: Stores) -> None:
    """Commands, no-ops, epoch starts and checksum requests load back equal."""
    written = tuple(
        Entry(LogIndex(n), Ballot(n, ReplicaId(f"replica-{n}")), value)
        for n, value in enumerate(VALUES, start=1)
    )
    assert persist_and_reload(stores, [Durable(entries=written)]).entries == written


# ----------------------------------------------------------------------------- reference model


def reference_load(durables: list[Durable]) -> Persisted:
    """The contract, as simply as it can be said: apply each batch to plain dicts."""
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    log: dict[LogIndex, Entry] = {}
    for durable in durables:
        if durable.hard_state is not None:
            hard_state = durable.hard_state
        if durable.snapshot is not None:
            snapshot = durable.snapshot
        log.update({e.index: e for e in durable.entries})
        if durable.compact_through is not None:
            log = {i: e for i, e in log.items() if i > durable.compact_through}
    return Persisted(hard_state, snapshot, tuple(log[i] for i in sorted(log)))


indices = st.integers(min_value=1, max_value=40).map(LogIndex)
ballots = st.builds(Ballot, st.integers(0, 5), st.sampled_from(MEMBERS))
generated_entries = st.builds(Entry, indices, ballots, st.sampled_from(VALUES))


@st.composite
def durable_sequences(draw: st.DrawFn) -> list[Durable]:
    """Random batches whose snapshots never go backwards (the one ordering the contract needs)."""
    durables = []
    snapshot_index = 0
    for _ in range(draw(st.integers(0, 8))):
        snapshot = None
        if draw(st.booleans()):
            snapshot_index += draw(st.integers(0, 6))
            snapshot = Snapshot(LogIndex(snapshot_index), draw(st.binary(max_size=8)), SEED)
        durables.append(
            Durable(
                hard_state=draw(st.none() | st.builds(HardState, ballots, indices)),
                entries=tuple(draw(st.lists(generated_entries, unique_by=lambda e: e.index))),
                snapshot=snapshot,
                compact_through=draw(st.none() | indices),
            )
        )
    return durables


def test_store_matches_the_reference_model(stores: Stores) -> None:
    """Any sequence of batches loads back as the dict-based reference model says."""

    # Every example opens a fresh store, so each kind of store sets its own example budget.
    @settings(max_examples=stores.examples_max, deadline=None)
    @given(durables=durable_sequences())
    def loads_as_the_model_says(durables: list[Durable]) -> None:
        assert persist_and_reload(stores, durables) == reference_load(durables)

    loads_as_the_model_says()


# ----------------------------------------------------------------------------- replica restart


class Cell:
    """Three replicas that deliver every message at once and persist each Ready to a store."""

    def __init__(self, r1_store: Store, limits: Limits) -> None:
        self.limits = limits
        self.replicas = {
            r: Replica(r, membership_of_ids(MEMBERS), TIMING, limits, NoChance()) for r in MEMBERS
        }
        self.stores: dict[ReplicaId, Store] = {R1: r1_store, R2: MemoryStore(), R3: MemoryStore()}
        self.committed: dict[ReplicaId, list[Entry]] = {r: [] for r in MEMBERS}

    def drain(self) -> None:
        """Handle Readies, in the contract's order, until no replica has one."""
        while any(replica.has_ready() for replica in self.replicas.values()):
            for replica_id, replica in self.replicas.items():
                while replica.has_ready():
                    ready = replica.ready()
                    self.stores[replica_id].persist(ready.durable)
                    for envelope in ready.messages:
                        self.replicas[envelope.recipient].step(replica_id, envelope.message)
                    self.committed[replica_id].extend(ready.committed)
                    replica.advance(ready)

    def run_until(self, done: Callable[[], bool], ticks_max: int = 500) -> None:
        """Tick every replica once per round, then drain, until `done` holds."""
        self.drain()
        for _ in range(ticks_max):
            if done():
                return
            for replica in self.replicas.values():
                replica.tick()
            self.drain()
        raise AssertionError(f"not done after {ticks_max} ticks")

    def serving_master(self) -> Replica | None:
        return next((r for r in self.replicas.values() if r.status().serving), None)


def commit_commands(cell: Cell, sequences: range) -> None:
    """Propose one command per sequence number on the serving master; run until r1 commits them."""
    cell.run_until(lambda: cell.serving_master() is not None)
    master = cell.serving_master()
    assert master is not None
    payloads = [f"command {sequence}".encode() for sequence in sequences]
    for sequence, payload in zip(sequences, payloads, strict=True):
        command = Command(ClientId(0), sequence, payload)
        assert master.propose([command], master.epoch) is None

    def committed() -> bool:
        values = (entry.value for entry in cell.committed[R1])
        return payloads == [c.payload for v in values for c in v.commands][-len(payloads) :]

    cell.run_until(committed)


def restart_r1(cell: Cell, stores: Stores) -> Replica:
    """A new r1 built from what its store holds after a reopen; checks its status matches.

    The cell first runs quietly for a heartbeat period, in which a replica writes a chosen
    index it learned but had no other write to carry it (the chosen index is written lazily).
    """
    start = cell.replicas[R1].tick_count
    cell.run_until(lambda: cell.replicas[R1].tick_count > start + TIMING.heartbeat_ticks)
    persisted = stores.reopen(cell.stores[R1]).load()
    restarted = Replica(
        R1, membership_of_ids(MEMBERS), TIMING, cell.limits, NoChance(), persisted=persisted
    )
    running, rebuilt = cell.replicas[R1].status(), restarted.status()
    fields = ("promised", "chosen_index", "snapshot_index", "first_index", "last_index")
    assert [getattr(rebuilt, f) for f in fields] == [getattr(running, f) for f in fields]
    return restarted


def test_replica_restarted_from_its_store_is_in_the_state_it_persisted(stores: Stores) -> None:
    """A replica rebuilt from its store's `load()` matches the running one and replays its log."""
    cell = Cell(stores.open(), Limits())
    commit_commands(cell, range(1, 4))
    restarted = restart_r1(cell, stores)
    assert restarted.ready().committed == tuple(cell.committed[R1])


def test_replica_restarted_after_a_snapshot_replays_only_what_follows(stores: Stores) -> None:
    """After a snapshot and compaction, the rebuilt replica replays the entries after it."""
    cell = Cell(stores.open(), Limits(log_retain_entries=1))
    commit_commands(cell, range(1, 3))
    snapshot_index = cell.replicas[R1].status().applied_index
    cell.replicas[R1].snapshot_taken(snapshot_index, b"state")
    commit_commands(cell, range(3, 5))
    restarted = restart_r1(cell, stores)
    assert restarted.status().first_index == snapshot_index
    after = tuple(e for e in cell.committed[R1] if e.index > snapshot_index)
    assert restarted.ready().committed == after


# ----------------------------------------------------------------------------- MemoryStore only


def test_memory_store_counts_only_batches_that_would_sync() -> None:
    """`persist_calls` counts non-empty batches: the fsyncs a disk-backed store would make."""
    store = MemoryStore()
    store.persist(Durable())
    store.persist(Durable(entries=entries(1, 2)))
    store.persist(Durable(compact_through=LogIndex(1)))
    assert store.persist_calls == 2
