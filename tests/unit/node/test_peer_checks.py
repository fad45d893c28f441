"""A node checks a peer's snapshot whole before the core may install it (issue 13, item 4).

An InstallSnapshot whose snapshot does not decode, is of another cell or another index, or
is not a tree, is refused: the node says why (the shell closes the connection it came on),
the core never sees it, nothing is persisted, and the replica carries on as before. A good
snapshot from the master is installed as before.
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest

from chubbypy.namespace import NamespaceMachine
from chubbypy.node import Persist
from chubbypy.paxos import Limits
from chubbypy.protocol import InstallSnapshot, LogIndex, Snapshot
from chubbypy.protocol.namespace import Create, SetContents
from tests.unit.node.harness import CELL, R1, R3, ROOT, Cell, touching

EVERY = 4


def lagging_cell() -> tuple[Cell, Snapshot]:
    """A cell whose master R1 took a snapshot at 4 while R3, cut off, stayed behind; and that
    snapshot."""
    cell = Cell(snapshot_every_entries=EVERY, limits=Limits(log_retain_entries=0))
    cell.elect(R1)
    cell.isolate(R3)
    client = cell.connect(R1)
    client_id = cell.register(client)
    cell.written(client, client_id, 1, Create(f"{ROOT}/f", contents=b"a"))
    for sequence in range(2, EVERY + 2):
        cell.written(client, client_id, sequence, SetContents(f"{ROOT}/f", b"%d" % sequence))
    snapshot = cell.stores[R1].load().snapshot
    assert snapshot is not None
    assert cell.nodes[R3].core.status().chosen_index < snapshot.index
    cell.take(touching(R3))
    cell.heal()
    return cell, snapshot


def other_cells(snapshot: Snapshot) -> bytes:
    """A snapshot of another cell's namespace, at the same index."""
    state, _ = msgpack.unpackb(snapshot.data)
    return bytes(msgpack.packb([state, NamespaceMachine(CELL + "x").snapshot()], use_bin_type=True))


BAD: dict[str, tuple[Callable[[Snapshot], bytes], str]] = {
    "garbage": (lambda s: b"\xc1garbage" * 50, "not msgpack: FormatError"),
    "truncated": (lambda s: s.data[:-3], "not msgpack: ValueError: Unpack failed"),
    "one byte changed": (
        lambda s: s.data[:10] + bytes([s.data[10] ^ 0xFF]) + s.data[11:],
        "expected an integer >= 0, got -2",
    ),
    "another cell's": (other_cells, "a snapshot of cell 'cx', not 'c'"),
    "empty": (lambda s: b"", "not msgpack"),
}


@pytest.mark.parametrize("bad", list(BAD), ids=list(BAD))
def test_a_snapshot_that_is_not_one_is_refused_and_changes_nothing(bad: str) -> None:
    """The lagging node refuses the damaged snapshot, says why, persists nothing, and its
    state is as it was; the good snapshot then installs as it always did."""
    cell, snapshot = lagging_cell()
    node = cell.nodes[R3]
    before = (node.core.status(), node.applier.checksum(), cell.stores[R3].load())
    make, reason = BAD[bad]
    damaged = InstallSnapshot(Snapshot(snapshot.index, make(snapshot), snapshot.membership))
    refused = node.peer_message_received(cell.now[R3], R1, damaged)
    assert refused is not None
    assert refused.startswith(f"refused a snapshot at index {snapshot.index} from {R1}: {reason}")
    outputs = node.take()
    assert not [o for o in outputs if isinstance(o, Persist)], outputs
    assert (node.core.status(), node.applier.checksum(), cell.stores[R3].load()) == before

    assert node.peer_message_received(cell.now[R3], R1, InstallSnapshot(snapshot)) is None
    for output in node.take():
        cell._do(R3, output)
    cell.durable(R3)
    assert node.applier.applied_index == snapshot.index
    assert cell.stores[R3].load().snapshot == snapshot


def test_a_snapshot_of_another_index_is_refused() -> None:
    """A snapshot's bytes must be of the index it claims: the state after 4 entries is not
    the state after 5, so one relabelled is refused."""
    cell, snapshot = lagging_cell()
    relabelled = InstallSnapshot(
        Snapshot(LogIndex(snapshot.index + 1), snapshot.data, snapshot.membership)
    )
    refused = cell.nodes[R3].peer_message_received(cell.now[R3], R1, relabelled)
    assert refused is not None
    assert f"a snapshot of index {snapshot.index}, not {snapshot.index + 1}" in refused
