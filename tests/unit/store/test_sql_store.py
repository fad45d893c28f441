"""What `SqlStore` promises beyond the shared contract: SQLite durability, schema, corruption."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select, update

from chubbypy.paxos import Durable, HardState, membership_of_ids
from chubbypy.protocol import Ballot, Entry, Epoch, LogIndex, ReplicaId, Snapshot, Value, ValueKind
from chubbypy.store import SqlStore, StoreError
from chubbypy.store._sql import log_entries_table, store_meta_table

SEED = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))
"""The membership a snapshot's handle names in these tests."""

R1 = ReplicaId("r1")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "replica.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqlStore]:
    """A store on a fresh SQLite file, closed afterwards."""
    opened = SqlStore.for_path(path)
    yield opened
    opened.close()


def entries(first: int, last: int) -> tuple[Entry, ...]:
    value = Value(Epoch(1), ValueKind.NOOP)
    return tuple(Entry(LogIndex(i), Ballot(1, R1), value) for i in range(first, last + 1))


def count_transactions(store: SqlStore) -> list[object]:
    """A list that grows by one for every transaction begun on the store's engine."""
    begun: list[object] = []
    event.listen(store.engine, "begin", begun.append)
    return begun


def test_sqlite_file_is_in_wal_mode_with_full_sync(store: SqlStore) -> None:
    """Every connection runs in WAL journal mode with synchronous=FULL (2)."""
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2


def test_schema_version_mismatch_is_refused(store: SqlStore, path: Path) -> None:
    """Opening a file with another schema version raises StoreError naming the file and both."""
    with store.engine.begin() as connection:
        version = store_meta_table.c.key == "schema_version"
        connection.execute(update(store_meta_table).where(version).values(value="7"))
    store.close()
    with pytest.raises(StoreError, match="schema version") as raised:
        SqlStore.for_path(path)
    assert str(path) in str(raised.value)
    assert "'7'" in str(raised.value)
    assert "'2'" in str(raised.value)


def test_opening_twice_keeps_one_schema_version_row(store: SqlStore, path: Path) -> None:
    """Reopening a store neither duplicates nor changes its schema version."""
    store.close()
    SqlStore.for_path(path).close()
    reopened = SqlStore.for_path(path)
    with reopened.engine.connect() as connection:
        rows = connection.execute(select(store_meta_table)).all()
    reopened.close()
    assert [tuple(row) for row in rows] == [("schema_version", "2")]


@pytest.mark.parametrize("blob", [b"\xc1 not msgpack", b"\x92\x01\x02"])
def test_corrupt_value_fails_the_load_naming_the_index(store: SqlStore, blob: bytes) -> None:
    """A value blob that does not decode makes load() raise StoreError naming its index."""
    store.persist(Durable(entries=entries(1, 3)))
    row = {"log_index": 4, "ballot_round": 1, "ballot_replica": R1, "value": blob}
    with store.engine.begin() as connection:
        connection.execute(insert(log_entries_table).values(row))
    with pytest.raises(StoreError, match=r"log entry 4 .* is corrupt"):
        store.load()


def test_large_batch_persists_in_one_transaction(store: SqlStore, path: Path) -> None:
    """2000 entries, more than one IN list holds, go in one transaction and replace by index."""
    store.persist(Durable(entries=entries(1, 2000)))
    begun = count_transactions(store)
    replacements = tuple(Entry(e.index, Ballot(2, R1), e.value) for e in entries(1, 2000))
    store.persist(Durable(entries=replacements))
    assert len(begun) == 1
    store.close()
    reopened = SqlStore.for_path(path)
    assert reopened.load().entries == replacements
    reopened.close()


def test_compaction_of_more_than_one_chunk(store: SqlStore) -> None:
    """Compacting 1500 of 2000 entries keeps exactly the last 500."""
    store.persist(Durable(entries=entries(1, 2000)))
    store.persist(Durable(compact_through=LogIndex(1500)))
    assert store.load().entries == entries(1501, 2000)


def test_empty_durable_begins_no_transaction(store: SqlStore) -> None:
    """An empty Durable costs no transaction (and so no fsync)."""
    begun = count_transactions(store)
    store.persist(Durable())
    assert begun == []


def test_for_path_accepts_characters_special_in_urls(tmp_path: Path) -> None:
    """A path with '?', '#' and spaces names that file, not a URL query or fragment."""
    path = tmp_path / "odd ?name#1.db"
    store = SqlStore.for_path(path)
    store.persist(Durable(entries=entries(1, 1)))
    store.close()
    assert path.exists()


DAMAGES = {
    "promise round as text": (
        "UPDATE hard_state SET promised_round = 'x'",
        "the hard state in .*: promised ballot round is damaged: 'x'",
    ),
    "negative promise round": (
        "UPDATE hard_state SET promised_round = -5",
        "promised ballot round is damaged: -5 is not an integer from 0 to 2\\*\\*63-1",
    ),
    "promised replica as a blob": (
        "UPDATE hard_state SET promised_replica = x'ff'",
        "promised ballot is damaged: replica b'.xff' is not a name",
    ),
    "chosen index as a real": (
        "UPDATE hard_state SET chosen_index = 1.5",
        "chosen index is damaged: 1.5",
    ),
    "snapshot index as text": (
        "UPDATE snapshots SET snapshot_index = 'five'",
        "the snapshot in .*: index is damaged: 'five'",
    ),
    "snapshot data as text": (
        "UPDATE snapshots SET data = 'text'",
        "the snapshot in .* is damaged: its data is not bytes",
    ),
    "snapshot membership missing": (
        "DELETE FROM memberships WHERE name = 'snapshot'",
        "the snapshot in .* is damaged: it has no membership",
    ),
    "membership not msgpack": (
        "UPDATE memberships SET membership = x'c1' WHERE name = 'snapshot'",
        "the 'snapshot' membership in .* is corrupt",
    ),
    "membership as text": (
        "UPDATE memberships SET membership = 'text' WHERE name = 'genesis'",
        "the 'genesis' membership in .* is damaged: it is not bytes",
    ),
    "membership of two voters": (
        "UPDATE memberships SET membership = x'92019294a27231a27231a27231c394a27232a27232a27232c3'"
        " WHERE name = 'genesis'",
        "the 'genesis' membership in .* is corrupt: 2 voters: a cell has 3 to 7",
    ),
    "unknown membership row": (
        "INSERT INTO memberships (name, membership) VALUES ('later', x'00')",
        "the 'later' membership in .* is unknown",
    ),
    "entry ballot round as text": (
        "UPDATE log_entries SET ballot_round = 'x' WHERE log_index = 6",
        "log entry 6 in .*: ballot round is damaged: 'x'",
    ),
    "entry index as text": (
        "UPDATE log_entries SET log_index = 'six' WHERE log_index = 6",
        "log entry 'six' in .*: index is damaged",
    ),
    "entry value as text": (
        "UPDATE log_entries SET value = 'text' WHERE log_index = 6",
        "log entry 6 in .* is corrupt: its value is not bytes",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_a_damaged_row_fails_the_load_saying_where(
    store: SqlStore, path: Path, damage: str
) -> None:
    """Any column holding what persist never writes (SQLite stores anything anywhere) makes
    load() raise StoreError naming the row and the value, never anything else."""
    hard_state = HardState(Ballot(3, R1), LogIndex(7))
    snapshot = Snapshot(LogIndex(5), b"state", SEED)
    store.persist(Durable(hard_state, entries(6, 7), snapshot, genesis=SEED))
    statement, expected = DAMAGES[damage]
    with store.engine.begin() as connection:
        connection.exec_driver_sql(statement)
    with pytest.raises(StoreError, match=expected):
        store.load()


def test_a_file_that_is_not_a_database_is_a_store_error(path: Path) -> None:
    """Opening a file of garbage raises StoreError naming the file (not a driver's error)."""
    path.write_bytes(b"\xc1garbage" * 1000)
    with pytest.raises(StoreError, match="cannot be opened") as raised:
        SqlStore.for_path(path)
    assert str(path) in str(raised.value)


def make_version_1_store(path: Path, *, snapshot: bool) -> None:
    """A store as chubbypy wrote it before memberships could change: schema version 1, no
    memberships table; a hard state, entries and (if `snapshot`) a snapshot."""
    made = SqlStore.for_path(path)
    made.persist(
        Durable(
            HardState(Ballot(3, R1), LogIndex(7)),
            entries(6, 7),
            Snapshot(LogIndex(5), b"state", SEED) if snapshot else None,
        )
    )
    with made.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE memberships")
        version = store_meta_table.c.key == "schema_version"
        connection.execute(update(store_meta_table).where(version).values(value="1"))
    made.close()


@pytest.mark.parametrize("snapshot", [True, False], ids=["with a snapshot", "log only"])
def test_a_version_1_store_is_upgraded_to_the_cell_files_membership(
    path: Path, snapshot: bool
) -> None:
    """Opened with the cell file's membership (the seed), a version 1 store becomes version
    2 in place: the seed is its genesis and its snapshot's handle; everything else is as it
    was, and reopening changes nothing more."""
    make_version_1_store(path, snapshot=snapshot)
    seed = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 4))
    upgraded = SqlStore.for_path(path, seed=seed)
    loaded = upgraded.load()
    upgraded.close()
    assert loaded.genesis == seed
    assert loaded.hard_state == HardState(Ballot(3, R1), LogIndex(7))
    assert loaded.entries == entries(6, 7)
    if snapshot:
        assert loaded.snapshot == Snapshot(LogIndex(5), b"state", seed)
    else:
        assert loaded.snapshot is None
    again = SqlStore.for_path(path)  # version 2 now: no seed needed
    assert again.load() == loaded
    with again.engine.connect() as connection:
        rows = connection.execute(select(store_meta_table)).all()
    again.close()
    assert [tuple(row) for row in rows] == [("schema_version", "2")]


def test_a_version_1_store_opened_without_a_cell_file_is_refused_and_left_alone(
    path: Path,
) -> None:
    """Without the seed to upgrade it with, a version 1 store is refused, saying how to
    upgrade it, and stays version 1."""
    make_version_1_store(path, snapshot=True)
    with pytest.raises(StoreError, match=r"schema version '1'.*cell file"):
        SqlStore.for_path(path)
    seed = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))
    assert SqlStore.for_path(path, seed=seed).load().snapshot is not None


def test_the_genesis_is_kept_and_the_snapshots_handle_replaced_with_it(path: Path) -> None:
    """A genesis written once stays; each snapshot's membership replaces the last one's."""
    store = SqlStore.for_path(path)
    later = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3, 4))
    store.persist(Durable(hard_state=HardState(), genesis=SEED))
    store.persist(Durable(snapshot=Snapshot(LogIndex(2), b"two", SEED)))
    store.persist(Durable(snapshot=Snapshot(LogIndex(4), b"four", later)))
    store.close()
    loaded = SqlStore.for_path(path).load()
    assert (loaded.genesis, loaded.snapshot) == (SEED, Snapshot(LogIndex(4), b"four", later))
