"""Backup files (issue 15): the header and the snapshot round-trip; a truncated, damaged or
foreign file is refused before anything is restored; a restored state keeps every node and
ends the old cell's sessions, their locks into lock-delay, the same on every replica."""

from __future__ import annotations

import pytest

from chubbypy.namespace import NamespaceLimits, NamespaceMachine
from chubbypy.node import BackupError, encode_backup, read_backup, restore_state
from chubbypy.node._backup_file import MAGIC
from chubbypy.paxos import Applier, membership_of_ids
from chubbypy.protocol.namespace import Create, GetContentsAndStat
from chubbypy.protocol.session import HandleOpened, Open
from chubbypy.protocol.values import Ballot, ReplicaId
from tests.unit.node.harness import CELL, R1, ROOT, RW, Cell

CREATED_MS = 1_700_000_000_000
LIMITS = NamespaceLimits()
SIZES = {"clients_max": 100, "client_results_max": 8}
SEED = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))


def saved_cell() -> tuple[bytes, int, bytes]:
    """A backup file of a cell with a file, a session holding a lock and an ephemeral
    file; and the index and checksum saved."""
    cell = Cell()
    cell.elect(R1)
    cell.run(2)
    writer = cell.connect(R1)
    client_id = cell.register(writer)
    cell.written(writer, client_id, 1, Create(f"{ROOT}/kept", contents=b"contents"))
    holder = cell.connect(R1)
    session = cell.session(holder, "holder")
    path = f"{ROOT}/lock"
    opening = holder.call(Open(*session, path, RW, lock_delay_ms=5000, create=Create(path)))
    cell.settle()
    opened = holder.result(opening)
    assert isinstance(opened, HandleOpened), opened
    cell.lock(holder, opened.handle)
    applier = cell.nodes[R1].applier
    index, checksum = applier.applied_index, applier.checksum()
    return encode_backup(CELL, index, checksum, CREATED_MS, applier.snapshot()), index, checksum


def test_the_header_and_the_snapshot_round_trip() -> None:
    """What encode_backup writes, read_backup reads back: cell, index, checksum, time."""
    data, index, checksum = saved_cell()
    header, body = read_backup(data)
    assert (header.cell, header.index, header.checksum) == (CELL, index, checksum)
    assert (header.created_ms, header.body_bytes) == (CREATED_MS, len(body))
    assert data.startswith(MAGIC)
    assert data.endswith(body)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda data: data[:-1], "truncated: "),
        (lambda data: data[: len(MAGIC) + 10], "truncated or damaged"),
        (lambda data: data[: len(MAGIC) + 2], "truncated: the file ends inside its header"),
        (lambda data: data + b"\x00", "longer than saved"),
        (lambda data: data[:-5] + bytes([data[-5] ^ 1]) + data[-4:], "SHA-256 differs"),
        (lambda data: b"x" + data[1:], "not a chubbypy snapshot file"),
        (lambda data: b"", "not a chubbypy snapshot file"),
    ],
    ids=["one byte short", "cut in the header", "cut in the length", "a byte more",
         "a flipped bit", "another magic", "empty"],
)  # fmt: skip
def test_a_truncated_or_damaged_file_is_refused(damage: object, expected: str) -> None:
    """Each damage is refused with BackupError saying what is wrong."""
    data, _, _ = saved_cell()
    with pytest.raises(BackupError, match=expected.replace("(", r"\(")):
        read_backup(damage(data))  # type: ignore[operator]


def test_a_body_that_does_not_restore_to_the_saved_checksum_is_refused() -> None:
    """A file whose bytes are whole but whose state is not the one saved (another
    checksum in its header), or whose snapshot does not decode, is refused."""
    data, index, checksum = saved_cell()
    _, body = read_backup(data)
    other = bytes(8 - len(b"x")) + b"x"
    wrong = encode_backup(CELL, index, other, CREATED_MS, body)
    with pytest.raises(BackupError, match="checksum is not the one saved"):
        restore_state(*read_backup(wrong), CELL, LIMITS, **SIZES, membership=SEED)
    garbage = encode_backup(CELL, index, checksum, CREATED_MS, b"\x92\x01")
    with pytest.raises(BackupError, match="does not restore"):
        restore_state(*read_backup(garbage), CELL, LIMITS, **SIZES, membership=SEED)


def restored_machine(snapshot_index: int, data: bytes, cell: str = CELL) -> NamespaceMachine:
    machine = NamespaceMachine(cell, LIMITS)
    Applier(machine, **SIZES).restore(snapshot_index, data)  # type: ignore[arg-type]
    return machine


def test_a_restore_keeps_the_nodes_and_ends_the_old_sessions_into_lock_delay() -> None:
    """The restored state has the file, and no session: the holder's session ended as
    expired one entry after the snapshot, its ephemeral-free lock file kept, its lock
    free but in lock-delay; two restores give the same bytes."""
    data, index, _ = saved_cell()
    restored = restore_state(*read_backup(data), CELL, LIMITS, **SIZES, membership=SEED)
    again = restore_state(*read_backup(data), CELL, LIMITS, **SIZES, membership=SEED)
    assert restored == again
    assert (restored.snapshot.index, restored.sessions_ended) == (index + 1, 1)
    machine = restored_machine(restored.snapshot.index, restored.snapshot.data)
    assert machine.sessions() == ()
    kept = machine.read(GetContentsAndStat(f"{ROOT}/kept"))
    assert kept.contents == b"contents"  # type: ignore[union-attr]
    lock = machine.tree.get(f"{ROOT}/lock")
    assert lock is not None
    assert lock.lock.holders == ()
    assert lock.lock.delay_ms == 5000


def test_another_cells_backup_is_moved_under_the_new_cells_root() -> None:
    """Restored into cell 'other', every name moves from /ls/c to /ls/other."""
    data, _, _ = saved_cell()
    restored = restore_state(*read_backup(data), "other", LIMITS, **SIZES, membership=SEED)
    machine = restored_machine(restored.snapshot.index, restored.snapshot.data, "other")
    assert {record.path for record in machine.records()} >= {
        "/ls/other", "/ls/other/kept", "/ls/other/lock",
    }  # fmt: skip
    assert not any(record.path.startswith(f"{ROOT}") for record in machine.records())


def test_a_restored_store_makes_the_new_cells_first_master_serve_a_later_epoch() -> None:
    """Each restored replica starts promised to a ballot of the saved state's epoch that
    no replica owns, with the snapshot chosen: every campaign of the new cell is in a
    later round, so its master's epoch is above the state's (at a lower one the applier
    refused every command and the restored cell never answered a write: found by
    tests/integration/test_backups.py under load, when a round-2 ballot won)."""
    data, _, _ = saved_cell()
    restored = restore_state(*read_backup(data), CELL, LIMITS, **SIZES, membership=SEED)
    applier = Applier(NamespaceMachine(CELL, LIMITS), **SIZES)
    applier.restore(restored.snapshot.index, restored.snapshot.data)
    assert applier.epoch > 0
    promised = restored.hard_state.promised
    assert (promised.round, promised.replica_id) == (applier.epoch, "r1")
    assert restored.hard_state.chosen_index == restored.snapshot.index
    assert all(Ballot(applier.epoch + 1, ReplicaId(rid)) > promised for rid in ("r1", "r2"))
