"""Durable replica storage on SQLAlchemy Core: hard state, log entries and the latest snapshot.

Shell side (STYLE §1, §5): it is the only place that touches the disk. The shell hands it each
Ready's `Durable` and it writes the whole batch in one transaction, so one commit (one fsync)
covers the promise, the accepted entries and any compaction together: the group commit. After
a restart, `load()` gives back exactly what was committed, and `Replica(...,
persisted=store.load())` resumes from it.

SQLite is the default (WAL mode, `synchronous=FULL`), but the URL is configurable, so every
statement here is plain Core that any SQLAlchemy dialect can run: no dialect-specific upserts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    make_url,
    select,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DatabaseError
from sqlalchemy.pool import StaticPool

from chubbypy.paxos import Durable, HardState, Persisted, membership_problem
from chubbypy.protocol import Ballot, Entry, LogIndex, Membership, ReplicaId, Snapshot
from chubbypy.protocol.codec import (
    DecodeError,
    decode_membership,
    decode_value,
    encode_membership,
    encode_value,
)
from chubbypy.store._contract import INTEGER_MAX, assert_fits, assert_indices_distinct

SCHEMA_VERSION = "2"
"""The layout of the tables below; a store written with another layout is refused on open,
but for version 1, which is upgraded in place (it had no `memberships` table)."""

_SCHEMA_VERSION_KEY = "schema_version"
_SINGLE_ROW_ID = 1
_IN_LIST_MAX = 500
"""Indices per `IN (...)` list: SQLite allows as few as 999 bound variables per statement."""
_BLOB_BYTES_MAX = 2**32 - 1
"""A length, so MySQL picks LONGBLOB: a batch of values or a snapshot outgrows a 64 KiB BLOB."""
_NAME_LENGTH_MAX = 255
"""Replica ids and meta keys are short; dialects such as MySQL need a VARCHAR length."""

metadata = MetaData()

hard_state_table = Table(
    "hard_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("promised_round", BigInteger, nullable=False),
    Column("promised_replica", String(_NAME_LENGTH_MAX), nullable=False),
    Column("chosen_index", BigInteger, nullable=False),
    Column("voting", Boolean, nullable=False),
)
"""The acceptor's promise and chosen index: one row, id 1, written once it first changes."""

log_entries_table = Table(
    "log_entries",
    metadata,
    Column("log_index", BigInteger, primary_key=True, autoincrement=False),
    Column("ballot_round", BigInteger, nullable=False),
    Column("ballot_replica", String(_NAME_LENGTH_MAX), nullable=False),
    Column("value", LargeBinary(_BLOB_BYTES_MAX), nullable=False),
)
"""Accepted entries not yet compacted; `value` is `codec.encode_value` bytes."""

snapshots_table = Table(
    "snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("snapshot_index", BigInteger, nullable=False),
    Column("data", LargeBinary(_BLOB_BYTES_MAX), nullable=False),
)
"""The latest snapshot only: one row, id 1, once the first snapshot is taken."""

memberships_table = Table(
    "memberships",
    metadata,
    Column("name", String(_NAME_LENGTH_MAX), primary_key=True),
    Column("membership", LargeBinary(_BLOB_BYTES_MAX), nullable=False),
)
"""`codec.encode_membership` bytes: the row "genesis" (the membership before instance 1,
written once) and the row "snapshot" (the snapshot's handle, replaced with the snapshot)."""

_GENESIS = "genesis"
_SNAPSHOT = "snapshot"

store_meta_table = Table(
    "store_meta",
    metadata,
    Column("key", String(_NAME_LENGTH_MAX), primary_key=True),
    Column("value", String(_NAME_LENGTH_MAX), nullable=False),
)
"""Facts about the store itself; `schema_version` is checked on every open."""


class StoreError(Exception):
    """A store that cannot be used as it is: another schema version, or corrupt contents."""


class SqlStore:
    """Keeps the `Store` contract in five tables on one SQLAlchemy engine."""

    def __init__(self, url: str | URL, *, seed: Membership | None = None) -> None:
        """Open (or create) the store at `url`. A store of schema version 1 is upgraded,
        in one transaction, to say that its membership is `seed` (the cell file's: the only
        one a cell could have before memberships could change); without a seed it is
        refused."""
        self._url = make_url(url)
        self._description = _describe(self._url)
        self._engine = _new_engine(self._url)
        self._closed = False
        try:
            _open_schema(self._engine, self._description, seed)
        except DatabaseError as error:
            self._engine.dispose()
            raise StoreError(f"{self._description} cannot be opened: {error.orig}") from error
        except BaseException:
            self._engine.dispose()
            raise

    @classmethod
    def for_path(cls, path: str | os.PathLike[str], *, seed: Membership | None = None) -> SqlStore:
        """A store in the SQLite file at `path`, created if missing."""
        # URL.create escapes characters such as '?' that a formatted URL string would misread.
        return cls(URL.create("sqlite", database=os.fspath(path)), seed=seed)

    @property
    def engine(self) -> Engine:
        """The store's engine, for tests and diagnostics; write only through `persist`."""
        return self._engine

    def persist(self, durable: Durable) -> None:
        """Write `durable` in one transaction; see `Store.persist` for the order of its parts."""
        if durable.is_empty():
            return  # An idle Ready must not cost a commit and an fsync.
        assert not self._closed, self._description
        assert_indices_distinct(durable.entries)
        assert_fits(durable)
        with self._engine.begin() as connection:
            if durable.hard_state is not None:
                _replace_hard_state(connection, durable.hard_state)
            if durable.genesis is not None:
                _replace_membership(connection, _GENESIS, durable.genesis)
            if durable.snapshot is not None:
                _replace_snapshot(connection, durable.snapshot)
                _replace_membership(connection, _SNAPSHOT, durable.snapshot.membership)
            if durable.entries:
                _upsert_entries(connection, durable.entries)
            if durable.compact_through is not None:
                through = log_entries_table.c.log_index <= durable.compact_through
                connection.execute(delete(log_entries_table).where(through))

    def load(self) -> Persisted:
        """Everything committed so far, read through one connection.

        Every row is checked as it is read (types, ranges): a damaged store raises
        StoreError, saying what is wrong where, rather than failing later inside the replica.
        (Whether a replica can resume from what was read is `chubbypy.paxos.persisted_problem`.)
        """
        assert not self._closed, self._description
        try:
            with self._engine.connect() as connection:
                hard_state = _read_hard_state(connection, self._description)
                memberships = _read_memberships(connection, self._description)
                snapshot = _read_snapshot(connection, self._description, memberships.get(_SNAPSHOT))
                entries = _read_entries(connection, self._description)
        except DatabaseError as error:
            raise StoreError(f"{self._description} cannot be read: {error.orig}") from error
        # Pair assertion with `persist`: the contract hands entries out in index order.
        assert all(a.index < b.index for a, b in pairwise(entries)), self._description
        return Persisted(hard_state, snapshot, entries, memberships.get(_GENESIS))

    def close(self) -> None:
        """Close every connection; a new `SqlStore` on the same URL sees the same data."""
        self._closed = True
        self._engine.dispose()


# ----------------------------------------------------------------------------- opening


def _describe(url: URL) -> str:
    """How error messages name the store: the file for SQLite, else the URL without password."""
    if url.get_backend_name() == "sqlite" and not _is_sqlite_memory(url):
        return f"SQLite file {url.database}"
    return url.render_as_string(hide_password=True)


def _is_sqlite_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _new_engine(url: URL) -> Engine:
    """One engine per store; SQLite gets the pragmas and pooling the contract needs."""
    if url.get_backend_name() != "sqlite":
        return create_engine(url)
    # The shell may call the store from a worker thread (one thread at a time).
    connect_args = {"check_same_thread": False}
    if _is_sqlite_memory(url):
        # Each connection to an in-memory URL opens a new, empty database: share one.
        engine = create_engine(url, poolclass=StaticPool, connect_args=connect_args)
    else:
        engine = create_engine(url, connect_args=connect_args)
    event.listen(engine, "connect", _sqlite_connected)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connected(dbapi_connection: Any, _connection_record: Any) -> None:
    """Set the durability pragmas on every new SQLite connection (they are per connection)."""
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets a reader run beside the writer and makes a commit one sequential append.
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode only FULL syncs the log on every commit; NORMAL can lose the last
        # commits on power failure, and a lost promise or acceptance breaks Paxos.
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()
    # Python's sqlite3 opens a transaction only before INSERT, UPDATE and DELETE, so reads and
    # DDL would each run (and CREATE TABLE would each commit) on their own. Take transaction
    # control from the driver and begin explicitly, as SQLAlchemy's pysqlite docs advise.
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Connection) -> None:
    """Begin a real SQLite transaction wherever SQLAlchemy begins one."""
    connection.exec_driver_sql("BEGIN")


def _open_schema(engine: Engine, description: str, seed: Membership | None) -> None:
    """Create missing tables, upgrade a version 1 store, or refuse a store that another
    schema version wrote."""
    with engine.begin() as connection:
        # Check the version before creating anything, so a foreign store is left untouched.
        store_meta_table.create(connection, checkfirst=True)
        key = store_meta_table.c.key == _SCHEMA_VERSION_KEY
        found = connection.execute(select(store_meta_table.c.value).where(key)).scalar()
        if found == "1" and seed is None:
            raise StoreError(
                f"{description} has store schema version '1' (before membership changes): "
                "start its replica with the cell file that made it, which upgrades it"
            )
        if found is not None and found not in ("1", SCHEMA_VERSION):
            raise StoreError(
                f"{description} has store schema version {found!r}, "
                f"but this chubbypy reads only version {SCHEMA_VERSION!r}"
            )
        metadata.create_all(connection)
        if found is None:
            row = {"key": _SCHEMA_VERSION_KEY, "value": SCHEMA_VERSION}
            connection.execute(insert(store_meta_table).values(row))
        elif found == "1":
            assert seed is not None
            _upgrade_from_1(connection, seed)


def _upgrade_from_1(connection: Connection, seed: Membership) -> None:
    """A version 1 store's membership was its cell file's: record it as the genesis (if the
    replica ever wrote anything) and as its snapshot's handle (if it has one)."""
    if connection.execute(select(hard_state_table.c.id)).first() is not None:
        _replace_membership(connection, _GENESIS, seed)
    if connection.execute(select(snapshots_table.c.id)).first() is not None:
        _replace_membership(connection, _SNAPSHOT, seed)
    key = store_meta_table.c.key == _SCHEMA_VERSION_KEY
    connection.execute(update(store_meta_table).where(key).values(value=SCHEMA_VERSION))


# ----------------------------------------------------------------------------- writing


# Statements built once: SQLAlchemy caches their compiled form by the statement's structure,
# and building a new statement (with a literal IN list) per write costs a cache-key walk each
# time, a measurable share of a persist on the master's path to every reply.
_UPDATE_HARD_STATE = (
    update(hard_state_table)
    .where(hard_state_table.c.id == _SINGLE_ROW_ID)
    .values(
        promised_round=bindparam("promised_round"),
        promised_replica=bindparam("promised_replica"),
        chosen_index=bindparam("chosen_index"),
        voting=bindparam("voting"),
    )
)
_INSERT_HARD_STATE = insert(hard_state_table)
_DELETE_ENTRIES = delete(log_entries_table).where(
    log_entries_table.c.log_index.in_(bindparam("indices", expanding=True))
)
_INSERT_ENTRIES = insert(log_entries_table)


def _replace_hard_state(connection: Connection, hard_state: HardState) -> None:
    # Update the single row, or insert it the first time: a portable upsert.
    row = {
        "promised_round": hard_state.promised.round,
        "promised_replica": hard_state.promised.replica_id,
        "chosen_index": hard_state.chosen_index,
        "voting": hard_state.voting,
    }
    if connection.execute(_UPDATE_HARD_STATE, row).rowcount == 0:
        connection.execute(_INSERT_HARD_STATE, {"id": _SINGLE_ROW_ID, **row})


def _replace_snapshot(connection: Connection, snapshot: Snapshot) -> None:
    stored = connection.execute(select(snapshots_table.c.snapshot_index)).scalar()
    assert stored is None or snapshot.index >= stored, (snapshot.index, stored)
    connection.execute(delete(snapshots_table))
    row = {
        "id": _SINGLE_ROW_ID,
        "snapshot_index": snapshot.index,
        "data": snapshot.data,
    }
    connection.execute(insert(snapshots_table).values(row))


def _replace_membership(connection: Connection, name: str, membership: Membership) -> None:
    connection.execute(delete(memberships_table).where(memberships_table.c.name == name))
    row = {"name": name, "membership": encode_membership(membership)}
    connection.execute(insert(memberships_table).values(row))


def _upsert_entries(connection: Connection, entries: Sequence[Entry]) -> None:
    """Replace entries by index: delete the indices, then insert all rows in one executemany."""
    indices = [entry.index for entry in entries]
    for chunk in _chunks(indices, _IN_LIST_MAX):
        connection.execute(_DELETE_ENTRIES, {"indices": list(chunk)})
    connection.execute(_INSERT_ENTRIES, [_entry_row(entry) for entry in entries])


def _entry_row(entry: Entry) -> dict[str, object]:
    return {
        "log_index": entry.index,
        "ballot_round": entry.ballot.round,
        "ballot_replica": entry.ballot.replica_id,
        "value": encode_value(entry.value),
    }


def _chunks(indices: Sequence[LogIndex], size: int) -> Iterator[Sequence[LogIndex]]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


# ----------------------------------------------------------------------------- reading


# Reading checks every value's type and that it fits a column (as `persist` asserts): a
# damaged file, or a row written by hand, may hold anything SQLite can store in any column.
# A value that is not what `persist` wrote is a StoreError naming the row, so the replica
# refuses to start with one clear line. (Whether a replica can resume from what was read,
# its values in their protocol ranges, is `chubbypy.paxos.persisted_problem`.)


def _read_hard_state(connection: Connection, description: str) -> HardState | None:
    row = connection.execute(select(hard_state_table)).one_or_none()
    if row is None:
        return None
    where = f"the hard state in {description}"
    promised = _ballot(row.promised_round, row.promised_replica, f"{where}: promised ballot")
    chosen = _integer(row.chosen_index, f"{where}: chosen index")
    return HardState(promised, LogIndex(chosen), bool(row.voting))


def _read_memberships(connection: Connection, description: str) -> dict[str, Membership]:
    found = {}
    for row in connection.execute(select(memberships_table)):
        where = f"the {row.name!r:.40} membership in {description}"
        if row.name not in (_GENESIS, _SNAPSHOT):
            raise StoreError(f"{where} is unknown")
        if not isinstance(row.membership, bytes | memoryview):
            raise StoreError(f"{where} is damaged: it is not bytes")
        try:
            membership = decode_membership(bytes(row.membership))
        except DecodeError as error:
            raise StoreError(f"{where} is corrupt: {error}") from error
        problem = membership_problem(membership)
        if problem is not None:
            raise StoreError(f"{where} is corrupt: {problem}")
        found[row.name] = membership
    return found


def _read_snapshot(
    connection: Connection, description: str, membership: Membership | None
) -> Snapshot | None:
    row = connection.execute(select(snapshots_table)).one_or_none()
    if row is None:
        return None
    index = _integer(row.snapshot_index, f"the snapshot in {description}: index")
    if not isinstance(row.data, bytes | memoryview):
        raise StoreError(f"the snapshot in {description} is damaged: its data is not bytes")
    if membership is None:
        raise StoreError(f"the snapshot in {description} is damaged: it has no membership")
    # bytes(): some drivers (psycopg) hand binary columns out as memoryview.
    return Snapshot(LogIndex(index), bytes(row.data), membership)


def _read_entries(connection: Connection, description: str) -> tuple[Entry, ...]:
    query = select(log_entries_table).order_by(log_entries_table.c.log_index)
    return tuple(_entry_from_row(row, description) for row in connection.execute(query))


def _entry_from_row(row: Row[Any], description: str) -> Entry:
    """Decode one stored entry; a value that does not decode makes the whole load fail."""
    where = f"log entry {row.log_index!r:.40} in {description}"
    index = _integer(row.log_index, f"{where}: index")
    ballot = _ballot(row.ballot_round, row.ballot_replica, f"{where}: ballot")
    if not isinstance(row.value, bytes | memoryview):
        raise StoreError(f"{where} is corrupt: its value is not bytes")
    try:
        value = decode_value(bytes(row.value))
    except DecodeError as error:
        raise StoreError(f"{where} is corrupt: {error}") from error
    return Entry(LogIndex(index), ballot, value)


def _integer(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= INTEGER_MAX:
        raise StoreError(f"{what} is damaged: {value!r:.40} is not an integer from 0 to 2**63-1")
    return value


def _ballot(round_: object, replica: object, what: str) -> Ballot:
    number = _integer(round_, f"{what} round")
    if not isinstance(replica, str):
        raise StoreError(f"{what} is damaged: replica {replica!r:.40} is not a name")
    return Ballot(number, ReplicaId(replica))
