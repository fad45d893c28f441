"""GetSnapshot through a replica node (issue 15, backups): operators only, the applier's own
snapshot in pieces of at most limits.snapshot_chunk_bytes that the client core puts back
together, and a transfer torn by a newer snapshot, a fail-over or idleness refused
SNAPSHOT_GONE, never mixed."""

from __future__ import annotations

from chubbypy.client._snapshot import CellSnapshot, SnapshotAssembly
from chubbypy.node import Auth
from chubbypy.protocol.client import Authenticate, Authenticated, ErrorReply
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import Create
from chubbypy.protocol.session import GetSnapshot, SnapshotChunk
from tests.unit.node.harness import (
    R1,
    R2,
    R3,
    ROOT,
    TIMING,
    Cell,
    Connection,
    metric,
)

AUTH = Auth(principals=(("alice", "alice's token"), ("operator", "op's token")), anonymous=True)
CHUNK_BYTES = 512
HELD_TICKS = 20


def serving() -> Cell:
    """A cell whose master R1 holds files of some size: its snapshot takes many pieces."""
    cell = Cell(
        auth=AUTH, admins=("operator",), snapshot_chunk_bytes=CHUNK_BYTES,
        snapshot_held_ticks=HELD_TICKS,
    )  # fmt: skip
    cell.elect(R1)
    cell.run(2)
    writer = cell.connect(R1)
    client_id = cell.register(writer)
    for number in range(1, 6):
        cell.written(writer, client_id, number, Create(f"{ROOT}/f{number}", contents=b"x" * 700))
    return cell


def authenticated(cell: Cell, principal: str, rid: str = R1) -> Connection:
    connection = cell.connect(rid)
    token = dict(AUTH.principals)[principal]
    request_id = connection.send(Authenticate(connection.next_id(), principal, token))
    assert connection.reply(request_id) == Authenticated(request_id, principal)
    return connection


def ask(cell: Cell, connection: Connection, call: GetSnapshot) -> SnapshotChunk | ErrorCode:
    """The piece `call` gets, or the code it is refused with."""
    request_id = connection.call(call)
    cell.settle()
    reply = connection.reply(request_id)
    if isinstance(reply, ErrorReply):
        return reply.code
    result = connection.result(request_id)
    assert isinstance(result, SnapshotChunk), result
    return result


def test_a_principal_the_admin_acl_does_not_admit_is_refused_and_nothing_is_held() -> None:
    """Alice (no operator) asking for a snapshot is refused PERMISSION_DENIED, as for
    listing sessions; the master takes and keeps none."""
    cell = serving()
    assert ask(cell, authenticated(cell, "alice"), GetSnapshot(0, 0)) is ErrorCode.PERMISSION_DENIED
    assert ask(cell, cell.connect(R1), GetSnapshot(0, 0)) is ErrorCode.PERMISSION_DENIED
    assert metric(cell.nodes[R1], "chubbypy_backup_snapshot_bytes") == 0
    refused = 'chubbypy_operator_calls_total{call="snapshot",outcome="permission_denied"}'
    assert metric(cell.nodes[R1], refused) == 2


def test_the_pieces_put_together_are_the_snapshot_replicas_send_each_other() -> None:
    """An operator reads the snapshot in pieces of at most snapshot_chunk_bytes; put
    together they are the applier's snapshot at the index named, with its checksum."""
    cell = serving()
    operator = authenticated(cell, "operator")
    node = cell.nodes[R1]
    expected, checksum, index = node.applier.snapshot(), node.applier.checksum(), None
    assembly = SnapshotAssembly("c")
    pieces = 0
    while not assembly.done:
        piece = ask(cell, operator, assembly.next_call())
        assert isinstance(piece, SnapshotChunk), piece
        assert len(piece.data) <= CHUNK_BYTES
        assert index in (None, piece.index)
        index = piece.index
        assert assembly.received(piece) is None
        pieces += 1
    whole = assembly.result()
    assert isinstance(whole, CellSnapshot)
    assert (whole.index, whole.data, whole.checksum) == (
        node.applier.applied_index,
        expected,
        checksum,
    )
    assert pieces == -(-len(expected) // CHUNK_BYTES) > 3
    assert metric(node, "chubbypy_backup_snapshot_bytes") == len(expected)


def test_a_newer_snapshot_tears_the_transfer_of_the_older() -> None:
    """After a write, another backup's new snapshot replaces the one being read: the
    first transfer's next piece is refused SNAPSHOT_GONE, and a piece of the newer one
    handed to the first transfer is refused by the client core, never mixed in."""
    cell = serving()
    first, second = authenticated(cell, "operator"), authenticated(cell, "operator")
    reading = SnapshotAssembly("c")
    piece = ask(cell, first, reading.next_call())
    assert isinstance(piece, SnapshotChunk)
    assert reading.received(piece) is None
    writer = cell.connect(R1)
    cell.written(writer, cell.register(writer, nonce=7), 1, Create(f"{ROOT}/later"))
    newer = ask(cell, second, GetSnapshot(0, 0))
    assert isinstance(newer, SnapshotChunk)
    assert newer.index > piece.index
    assert ask(cell, first, reading.next_call()) is ErrorCode.SNAPSHOT_GONE
    torn = reading.received(ask(cell, second, GetSnapshot(newer.index, len(piece.data))))  # type: ignore[arg-type]
    assert torn is not None
    assert "changed during the transfer" in torn


def test_a_new_backup_with_nothing_applied_since_reads_the_same_snapshot() -> None:
    """Two backups started with no entry applied between them share one snapshot: the
    first is not torn by the second."""
    cell = serving()
    first, second = authenticated(cell, "operator"), authenticated(cell, "operator")
    one, two = ask(cell, first, GetSnapshot(0, 0)), ask(cell, second, GetSnapshot(0, 0))
    assert isinstance(one, SnapshotChunk)
    assert one == two
    assert isinstance(ask(cell, first, GetSnapshot(one.index, len(one.data))), SnapshotChunk)


def test_a_fail_over_tears_the_transfer() -> None:
    """The master that took the snapshot is cut off and another takes over: the old one
    answers NOT_MASTER, the new one SNAPSHOT_GONE for the piece, and a new backup there
    starts a snapshot of its own, of a later index."""
    cell = serving()
    piece = ask(cell, authenticated(cell, "operator"), GetSnapshot(0, 0))
    assert isinstance(piece, SnapshotChunk)
    cell.isolate(R1)
    for _ in range(3 * TIMING.lease_ticks):
        if cell.nodes[R2].core.serving or cell.nodes[R3].core.serving:
            break
        cell.run(1)
    successor = R2 if cell.nodes[R2].core.serving else R3
    operator = authenticated(cell, "operator", successor)
    assert ask(cell, operator, GetSnapshot(piece.index, len(piece.data))) is ErrorCode.SNAPSHOT_GONE
    fresh = ask(cell, operator, GetSnapshot(0, 0))
    assert isinstance(fresh, SnapshotChunk)
    assert fresh.index > piece.index
    assert fresh.checksum == cell.nodes[successor].applier.checksum()


def test_a_snapshot_left_idle_is_dropped() -> None:
    """No piece asked for in snapshot_held_ticks: the master drops the snapshot (its
    memory back), and the transfer's next piece is refused SNAPSHOT_GONE."""
    cell = serving()
    operator = authenticated(cell, "operator")
    piece = ask(cell, operator, GetSnapshot(0, 0))
    assert isinstance(piece, SnapshotChunk)
    cell.run(HELD_TICKS - 2)
    assert isinstance(ask(cell, operator, GetSnapshot(piece.index, len(piece.data))), SnapshotChunk)
    cell.run(HELD_TICKS + 1)
    assert metric(cell.nodes[R1], "chubbypy_backup_snapshot_bytes") == 0
    assert ask(cell, operator, GetSnapshot(piece.index, CHUNK_BYTES)) is ErrorCode.SNAPSHOT_GONE


def test_an_offset_outside_the_snapshot_is_a_bad_request() -> None:
    """A piece asked for at the snapshot's end or past it is refused BAD_REQUEST."""
    cell = serving()
    operator = authenticated(cell, "operator")
    piece = ask(cell, operator, GetSnapshot(0, 0))
    assert isinstance(piece, SnapshotChunk)
    assert ask(cell, operator, GetSnapshot(piece.index, piece.total_bytes)) is ErrorCode.BAD_REQUEST


def test_damaged_bytes_or_a_piece_at_another_offset_are_caught_by_the_client_core() -> None:
    """Pieces of the announced size whose bytes differ fail the digest; a piece at an
    offset not asked for tears the transfer."""
    cell = serving()
    operator = authenticated(cell, "operator")
    assembly = SnapshotAssembly("c")
    while not assembly.done:
        piece = ask(cell, operator, assembly.next_call())
        assert isinstance(piece, SnapshotChunk)
        if piece.offset == 0:
            piece = SnapshotChunk(piece.index, piece.total_bytes, piece.digest, piece.checksum,
                                  0, b"?" + piece.data[1:])  # fmt: skip
        assert assembly.received(piece) is None
    damaged = assembly.result()
    assert isinstance(damaged, str)
    assert "damaged" in damaged
    again = SnapshotAssembly("c")
    first = ask(cell, operator, again.next_call())
    assert isinstance(first, SnapshotChunk)
    assert again.received(first) is None
    assert again.received(first) == f"a piece at offset 0 where {len(first.data)} was asked for"
