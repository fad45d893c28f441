"""NamespaceMachine as a StateMachine: payloads, snapshots, checksums, checkpoint changes."""

from __future__ import annotations

import random

import msgpack
import pytest
from attrs import evolve

from chubbypy.namespace import (
    INSTANCES_PER_INDEX,
    ROOT_ACL_DEFAULT,
    AppliedWrite,
    NamespaceChanges,
    NamespaceMachine,
    NodeRecord,
    contents_checksum,
    decode_snapshot,
    encode_snapshot,
)
from chubbypy.paxos import Applier, OutcomeKind
from chubbypy.protocol import (
    NO_CLIENT,
    Ballot,
    ClientId,
    Command,
    Entry,
    Epoch,
    LogIndex,
    ReplicaId,
    Value,
    ValueKind,
)
from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    AclNames,
    Acquire,
    Create,
    Delete,
    GetStat,
    InSession,
    LockMode,
    LogWrite,
    MultiOp,
    OpenSession,
    SetAcl,
    SetContents,
    Written,
)
from chubbypy.protocol.namespace_codec import decode_result, encode_write
from tests.unit.namespace.harness import CELL, ROOT, Cell, at, every_read

F_INSTANCE = 2 * INSTANCES_PER_INDEX  # d/f, created at index 2
SESSION = 3 * INSTANCES_PER_INDEX  # opened at index 3

WRITES: list[LogWrite] = [
    Create(at("d"), is_directory=True, acl=AclNames("r", "w", "c")),
    Create(at("d", "f"), contents=b"one"),
    OpenSession("tester"),
    InSession(SESSION, Create(at("d", "e"), contents=b"gone with the session", ephemeral=True)),
    Acquire(SESSION, 1, at("d", "f"), F_INSTANCE, LockMode.SHARED, lock_delay_ms=100),
    Create(at("g"), contents=b"two"),
    SetContents(at("d", "f"), b"three"),
    SetAcl(at("g"), AclNames("x", "y", "z")),
    Create(at("h")),
    Delete(at("h")),
    MultiOp((), (Create(at("m")), SetContents(at("m"), b"four"))),
]


def _populated() -> Cell:
    cell = Cell()
    for write in WRITES:
        assert not isinstance(cell.write(write), Failure)
    return cell


# ----------------------------------------------------------------------------- payloads


def test_apply_decodes_applies_and_encodes() -> None:
    """apply(index, payload) returns the encoded result of the decoded write."""
    machine = NamespaceMachine(CELL)
    result = decode_result(machine.apply(LogIndex(1), encode_write(Create(at("f"))))[0])
    assert result == Written(machine.tree.stat(machine.tree.get(at("f"))))  # type: ignore[arg-type]


def _nested(depth: int) -> bytes:
    write: list[object] = [3, at("f"), None]
    for _ in range(depth):
        write = [5, [], [write], []]
    return bytes(msgpack.packb(write, use_bin_type=True))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"\x93\x01", msgpack.packb([9, "x"]), msgpack.packb([3, at("f")]),
     msgpack.packb([1, at("f"), 1, b"", None, False]), _nested(2), _nested(400)],
    ids=["empty", "not msgpack", "truncated", "unknown tag", "wrong arity", "int for bool",
         "nested MultiOp", "deeply nested MultiOp"],
)  # fmt: skip
def test_an_undecodable_payload_is_a_bad_request_and_changes_nothing(payload: bytes) -> None:
    """A payload that is not a write gives a BAD_REQUEST result, never an exception."""
    cell = _populated()
    before = cell.machine.snapshot()
    result = decode_result(cell.machine.apply(LogIndex(100), payload)[0])
    assert isinstance(result, Failure)
    assert result.code is ErrorCode.BAD_REQUEST
    assert cell.machine.snapshot() == before


def test_an_applier_drives_the_machine() -> None:
    """The Applier applies namespace commands, batched in one entry, through the protocol."""
    machine = NamespaceMachine(CELL)
    applier = Applier(machine, clients_max=4, client_results_max=4)
    ballot = Ballot(1, ReplicaId("r1"))
    applier.apply(Entry(LogIndex(1), ballot, Value(Epoch(1), ValueKind.EPOCH_START)))
    register = Value(Epoch(1), ValueKind.COMMANDS, (Command(NO_CLIENT, 9, b""),))
    (registered,) = applier.apply(Entry(LogIndex(2), ballot, register))
    client = registered.client_id  # type: ignore[union-attr]
    batch = tuple(
        Command(ClientId(client), sequence, encode_write(write))
        for sequence, write in enumerate([Create(at("f")), Delete(at("f")), Create(at("f"))], 1)
    )
    outcomes = applier.apply(Entry(LogIndex(3), ballot, Value(Epoch(1), ValueKind.COMMANDS, batch)))
    assert [o.kind for o in outcomes] == [OutcomeKind.APPLIED] * 3  # type: ignore[union-attr]
    assert machine.read(GetStat(at("f"))).instance == 3 * 2**16 + 1  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- snapshots


def test_snapshot_restore_round_trip() -> None:
    """A restored machine has the same snapshot, checksum and answers to every read."""
    cell = _populated()
    copy = NamespaceMachine(CELL)
    copy.restore(cell.machine.snapshot())
    assert copy.snapshot() == cell.machine.snapshot()
    assert copy.checksum() == cell.machine.checksum()
    assert every_read(copy) == every_read(cell.machine)
    assert len(every_read(copy)) == 6  # the root, d, d/e, d/f, g and m


def test_restore_records_round_trip_in_any_order() -> None:
    """Rebuilding from the records, shuffled, gives the same state byte for byte."""
    cell = _populated()
    records = list(cell.machine.records())
    random.Random(1).shuffle(records)
    sessions = list(cell.machine.sessions())
    copy = NamespaceMachine(CELL)
    copy.restore_records(records, reversed(sessions))
    assert copy.snapshot() == cell.machine.snapshot()
    assert copy.checksum() == cell.machine.checksum()
    assert every_read(copy) == every_read(cell.machine)


def test_snapshot_is_the_records_in_path_order() -> None:
    """The snapshot decodes to the cell and its records in path order."""
    cell = _populated()
    cell_name, records, _ = decode_snapshot(cell.machine.snapshot())
    assert cell_name == CELL
    assert tuple(records) == cell.machine.records()
    assert [r.path for r in records] == sorted(r.path for r in records)


def test_a_restored_machine_keeps_creating_greater_instances() -> None:
    """After restoring at index i, a node created at a later index has a greater instance."""
    cell = _populated()
    copy = NamespaceMachine(CELL)
    copy.restore_records(cell.machine.records(), cell.machine.sessions())
    highest = max(r.instance for r in copy.records())
    created = copy.apply_write(LogIndex(cell.index + 1), Create(at("new"))).result
    assert isinstance(created, Written)
    assert created.stat is not None
    assert created.stat.instance > highest


def test_determinism() -> None:
    """The same writes give identical snapshots and checksums; any change alters the checksum."""
    first, second = _populated(), _populated()
    assert first.machine.snapshot() == second.machine.snapshot()
    assert first.machine.checksum() == second.machine.checksum()
    assert len(first.machine.checksum()) == 8
    second.ok(SetContents(at("g"), b"two"))
    assert first.machine.checksum() != second.machine.checksum()
    assert NamespaceMachine(CELL).checksum() != NamespaceMachine("d").checksum()


def _root(**changes: object) -> NodeRecord:
    return evolve(NodeRecord(ROOT, True, False, b"", 0, 0, 0, 1, 0, ROOT_ACL_DEFAULT), **changes)


def _file(path: str, **changes: object) -> NodeRecord:
    record = NodeRecord(
        path, False, False, b"", 1, 1, 0, 1, contents_checksum(b""), ROOT_ACL_DEFAULT
    )
    return evolve(record, **changes)


BAD_TREES = {
    "no root": [_file(at("f"))],
    "root is a file": [_file(ROOT)],
    "root is ephemeral": [_root(ephemeral=True)],
    "orphan": [_root(), _file(at("d", "f"))],
    "parent is a file": [_root(), _file(at("d")), _file(at("d", "f"))],
    "duplicate": [_root(), _file(at("f")), _file(at("f"), instance=2)],
    "wrong checksum": [_root(), _file(at("f"), checksum=1)],
    "directory with contents": [_root(contents=b"x")],
    "another cell": [_root(), _file("/ls/d/f")],
    "malformed name": [_root(), _file(at("a b"))],
    "empty component": [_root(), _file(at(""))],
}


@pytest.mark.parametrize("records", list(BAD_TREES.values()), ids=list(BAD_TREES))
def test_records_that_are_not_a_tree_are_refused(records: list[NodeRecord]) -> None:
    """restore refuses them with DecodeError, restore_records with an assertion; the state
    is unchanged."""
    cell = _populated()
    before = cell.machine.snapshot()
    with pytest.raises(DecodeError):
        cell.machine.restore(encode_snapshot(CELL, records))
    with pytest.raises(AssertionError):
        cell.machine.restore_records(records)
    assert cell.machine.snapshot() == before


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", msgpack.packb([2, CELL, []]), msgpack.packb([1, CELL]),
     msgpack.packb([1, CELL, [[ROOT, True]]]), msgpack.packb([True, CELL, []]),
     encode_snapshot("d", [_root(path="/ls/d")])],
    ids=["empty", "not msgpack", "unknown format", "wrong arity", "short record",
         "format as bool", "another cell"],
)  # fmt: skip
def test_malformed_snapshots_raise_decode_error(data: bytes) -> None:
    """Bytes that are not a snapshot of this cell raise DecodeError and change nothing."""
    cell = _populated()
    before = cell.machine.snapshot()
    with pytest.raises(DecodeError):
        cell.machine.restore(data)
    assert cell.machine.snapshot() == before


# ----------------------------------------------------------------------------- changes


def _paths(changes: NamespaceChanges) -> tuple[list[str], list[str]]:
    return [r.path for r in changes.upserts], list(changes.deletes)


def test_a_fresh_machine_reports_its_root_once() -> None:
    """The first checkpoint of a new cell writes the root; the next has nothing."""
    machine = NamespaceMachine(CELL)
    assert machine.take_changes() == NamespaceChanges((_root(),), ())
    assert machine.take_changes() == NamespaceChanges((), ())


def test_changes_track_creates_modifications_and_deletes() -> None:
    """Upserts carry the current records of created and changed nodes; deletes the names of
    nodes that existed at the previous call and are gone; all in path order."""
    cell = _populated()
    cell.machine.take_changes()
    cell.ok(Create(at("new")))
    cell.ok(SetContents(at("g"), b"changed"))
    cell.ok(Delete(at("m")))
    cell.ok(SetAcl(ROOT, AclNames("a", "b", "c")))
    changes = cell.machine.take_changes()
    assert _paths(changes) == ([ROOT, at("g"), at("new")], [at("m")])
    current = {r.path: r for r in cell.machine.records()}
    assert all(current[r.path] == r for r in changes.upserts)
    assert cell.machine.take_changes() == NamespaceChanges((), ())


def test_a_node_created_and_deleted_between_calls_is_not_reported() -> None:
    """Created then deleted: neither upsert nor delete; deleted then re-created: an upsert
    of the new node."""
    cell = _populated()
    cell.machine.take_changes()
    cell.ok(Create(at("brief")))
    cell.ok(Delete(at("brief")))
    cell.ok(Delete(at("g")))
    cell.ok(Create(at("g")))
    changes = cell.machine.take_changes()
    assert _paths(changes) == ([at("g")], [])
    assert changes.upserts[0] == cell.machine.tree.get(at("g"))


def test_failed_writes_change_nothing_to_report() -> None:
    """Failures, including a rolled-back MultiOp, leave the change set empty."""
    cell = _populated()
    cell.machine.take_changes()
    cell.fails(Create(at("g")))
    cell.fails(MultiOp((), (Create(at("x")), SetContents(at("g"), b"y"), Delete(at("missing")))))
    assert cell.machine.take_changes() == NamespaceChanges((), ())


def test_applying_changes_to_a_table_keeps_it_equal_to_the_records() -> None:
    """A table updated with each checkpoint's changes always equals the machine's records."""
    cell = Cell()
    table: dict[str, NodeRecord] = {}
    for write in [*WRITES, Delete(at("d", "f")), Delete(at("d", "e")), Delete(at("d"))]:
        cell.write(write)
        changes = cell.machine.take_changes()
        assert all(path in table for path in changes.deletes)
        for path in changes.deletes:
            del table[path]
        table.update((r.path, r) for r in changes.upserts)
        assert table == {r.path: r for r in cell.machine.records()}


def test_restoring_starts_a_new_baseline() -> None:
    """After restore or restore_records there are no pending changes."""
    cell = _populated()
    copy = NamespaceMachine(CELL)
    copy.restore(cell.machine.snapshot())
    assert copy.take_changes() == NamespaceChanges((), ())
    copy.restore_records(cell.machine.records(), cell.machine.sessions())
    assert copy.take_changes() == NamespaceChanges((), ())


def test_apply_tells_what_each_write_did() -> None:
    """Applying a payload returns, beside its result, the decoded write and what it changed;
    a payload that does not decode returns nothing beside its BAD_REQUEST."""
    machine = NamespaceMachine(CELL)
    _, effect = machine.apply(LogIndex(2), encode_write(Create(at("b"))))
    assert isinstance(effect, AppliedWrite)
    assert (effect.index, effect.write, effect.applied.changed) == (2, Create(at("b")), (at("b"),))
    result, nothing = machine.apply(LogIndex(3), b"\xc1")
    assert nothing is None
    assert isinstance(decode_result(result), Failure)
