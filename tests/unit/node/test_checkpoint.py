"""Checkpoints: every `snapshot_every_entries` applied entries the node hands the core a
snapshot, which goes out in the next Persist and truncates the log behind it."""

from __future__ import annotations

from chubbypy.node import Persist, ReplicaNode
from chubbypy.paxos import Limits, NoChance
from chubbypy.protocol import ReplicaId
from chubbypy.protocol.namespace import Contents, Create, GetContentsAndStat, SetContents
from tests.unit.node.harness import R1, R2, ROOT, Cell, settings

EVERY = 4
LIMITS = Limits(log_retain_entries=0)


def snapshots(cell: Cell, rid: ReplicaId) -> list[int]:
    """The indices of the snapshots `rid`'s Persists carried, in order."""
    return [p.durable.snapshot.index for p in cell.of(rid, Persist) if p.durable.snapshot]


def test_after_enough_applied_entries_the_next_persist_carries_a_snapshot() -> None:
    """Once `snapshot_every_entries` entries are applied, the next Persist carries a snapshot
    at the applied index and truncates the log through it; none came before."""
    cell = Cell(snapshot_every_entries=EVERY, limits=LIMITS)
    cell.elect(R1)  # EPOCH_START: 1 entry
    client = cell.connect(R1)
    client_id = cell.register(client)  # 2
    cell.written(client, client_id, 1, Create(f"{ROOT}/f", contents=b"0"))  # 3
    assert snapshots(cell, R1) == []
    cell.hold(R1)
    request_id = client.write(client_id, 2, SetContents(f"{ROOT}/f", b"1"))  # 4
    for _ in range(10):
        cell.settle()
        if client.reply(request_id) is not None:
            break
        cell.durable(R1)
    assert client.reply(request_id) is not None
    applied = cell.nodes[R1].applier.applied_index
    assert applied == EVERY
    persist = cell.writing[R1]  # the Persist that followed the answer, still out
    assert persist.durable.snapshot is not None
    assert persist.durable.snapshot.index == applied
    assert persist.durable.compact_through == applied
    cell.release(R1)
    stored = cell.stores[R1].load()
    assert stored.snapshot is not None
    assert stored.snapshot.index == applied
    assert all(entry.index > applied for entry in stored.entries)
    assert cell.nodes[R1].core.status().first_index == applied + 1


def test_the_next_checkpoint_comes_after_as_many_entries_again() -> None:
    """Checkpoints are `snapshot_every_entries` apart, on every replica."""
    cell = Cell(snapshot_every_entries=EVERY, limits=LIMITS)
    cell.elect(R1)
    client = cell.connect(R1)
    client_id = cell.register(client)
    cell.written(client, client_id, 1, Create(f"{ROOT}/f"))
    for sequence in range(2, 2 * EVERY + 1):
        cell.written(client, client_id, sequence, SetContents(f"{ROOT}/f", b"%d" % sequence))
    cell.run(3)
    assert snapshots(cell, R1) == [EVERY, 2 * EVERY]
    assert snapshots(cell, R2) == [EVERY, 2 * EVERY]


def test_a_node_restarted_from_its_checkpoint_has_the_checkpoints_state() -> None:
    """A node built from the store starts from the snapshot: applied through its index, with
    the namespace as it was there."""
    cell = Cell(snapshot_every_entries=EVERY, limits=LIMITS)
    cell.elect(R1)
    client = cell.connect(R1)
    client_id = cell.register(client)
    cell.written(client, client_id, 1, Create(f"{ROOT}/f", contents=b"a"))  # 3
    cell.written(client, client_id, 2, SetContents(f"{ROOT}/f", b"b"))  # 4: the checkpoint
    cell.written(client, client_id, 3, SetContents(f"{ROOT}/f", b"c"))  # 5: in the log after
    restarted = ReplicaNode(settings(R1), cell.stores[R1].load(), NoChance())
    assert restarted.applier.applied_index == EVERY
    assert restarted.core.status().snapshot_index == EVERY
    found = restarted.machine.read(GetContentsAndStat(f"{ROOT}/f"))
    assert isinstance(found, Contents)
    assert found.contents == b"b"
