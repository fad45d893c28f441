"""The cache gate as the node runs it (Chubby §2.5): a client's write waits until every
session caching what it changes acknowledged an invalidation, and a name being written is
read but not cached until the write landed."""

from __future__ import annotations

from attrs import evolve

from chubbypy.node import NoteLevel, Persist, SendPeer
from chubbypy.protocol import NO_CLIENT, Accept, Accepted, ClientId, Command, Envelope
from chubbypy.protocol.client import Registered, WriteReply
from chubbypy.protocol.namespace import Create, SetContents
from chubbypy.protocol.session import EventKind, KeepAlive, LeaseExtended, NodeRead, ReadNode
from tests.unit.node.harness import (
    MASTER_TIMING,
    R1,
    ROOT,
    SESSION_LEASE_TICKS,
    Cell,
    Connection,
    Match,
    metric,
)

PATH = f"{ROOT}/f"


def cell_with_a_file(nonce: int) -> tuple[Cell, Connection, ClientId]:
    """A serving cell, a client registered with `nonce` that created PATH ("old")."""
    cell = Cell()
    cell.elect(R1)
    cell.run(2)
    writer = cell.connect(R1)
    client_id = cell.register(writer, nonce=nonce)
    cell.written(writer, client_id, 100, Create(PATH, contents=b"old"))
    return cell, writer, client_id


def read(cell: Cell, reader: Connection, session: tuple[int, bytes]) -> NodeRead:
    result = reader.result(reader.call(ReadNode(*session, PATH, cache=True)))
    assert isinstance(result, NodeRead), result
    return result


def test_a_write_to_a_cached_name_waits_for_the_invalidation_to_be_acknowledged() -> None:
    """A session caches PATH; a write to it sends the session an INVALIDATE and is proposed
    only once the session's next KeepAlive acknowledges it."""
    cell, writer, client_id = cell_with_a_file(nonce=9)
    reader = cell.connect(R1)
    session = cell.session(reader)
    assert read(cell, reader, session).cached
    parked = reader.call(KeepAlive(*session, acked_through=0))
    mark = cell.mark()
    written = writer.write(client_id, 1, SetContents(PATH, b"new"))
    answer = reader.result(parked)
    assert isinstance(answer, LeaseExtended)
    (event,) = answer.events
    assert (event.kind, event.path) == (EventKind.INVALIDATE, PATH)
    cell.settle()
    assert writer.reply(written) is None
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    reader.call(KeepAlive(*session, acked_through=event.sequence))
    cell.settle()
    assert isinstance(writer.reply(written), WriteReply)


def accepts_in_flight(cell: Cell) -> list[int]:
    """The indices of the Accepts in flight, lowest first."""
    return sorted({e.message.index for e in cell.network if isinstance(e.message, Accept)})


def only_through(index: int) -> Match:
    """Every envelope but the Accepts and Accepteds of instances after `index`."""

    def match(envelope: Envelope) -> bool:
        message = envelope.message
        return not (isinstance(message, Accept | Accepted) and message.index > index)

    return match


def test_a_name_being_written_is_read_but_not_cached() -> None:
    """While a client's write to PATH is in flight (proposed, not applied), a ReadNode of
    PATH is answered but not registered as cached: no one caches a value about to change."""
    cell, writer, client_id = cell_with_a_file(nonce=9)
    reader = cell.connect(R1)
    session = cell.session(reader)
    other = writer.register(10)  # something applied before the write, for symmetry below
    written = writer.write(client_id, 1, SetContents(PATH, b"new"))
    first, *_ = accepts_in_flight(cell)
    cell.settle(only_through(first))
    assert isinstance(writer.reply(other), Registered)
    assert writer.reply(written) is None
    assert not read(cell, reader, session).cached
    cell.settle()
    assert isinstance(writer.reply(written), WriteReply)


def test_a_retried_registration_does_not_free_a_write_still_in_flight() -> None:
    """A retried registration (nonce 1) applied before the same client's write (sequence 1)
    leaves the write's names busy: a ReadNode in between is not cached (or, if it is, the
    session is sent an INVALIDATE once the write is applied). (A retry the master sees is
    answered from the client table; one already in the log, proposed by an earlier master,
    is still applied: proposed here by hand.)"""
    cell, writer, client_id = cell_with_a_file(nonce=1)
    reader = cell.connect(R1)
    session = cell.session(reader)
    core = cell.nodes[R1].core
    assert core.propose([Command(NO_CLIENT, 1, b"")], core.epoch) is None
    written = writer.write(client_id, 1, SetContents(PATH, b"new"))
    first, *_ = accepts_in_flight(cell)
    cell.settle(only_through(first))
    assert writer.reply(written) is None
    found = read(cell, reader, session)
    cell.settle()
    assert isinstance(writer.reply(written), WriteReply)
    parked = reader.call(KeepAlive(*session, acked_through=0))
    cell.run(SESSION_LEASE_TICKS)
    answer = reader.result(parked)
    assert isinstance(answer, LeaseExtended)
    invalidated = [e.path for e in answer.events if e.kind is EventKind.INVALIDATE]
    assert not found.cached or invalidated == [PATH], (
        f"cached {found.contents!r} while a write to it was in flight, never invalidated"
    )


def test_reads_past_the_cached_names_limit_are_counted_and_logged_once_per_connection() -> None:
    """With cached_names_per_session_max 2, reads of further names are answered uncached,
    counted on /metrics (chubbypy_cached_names_refused_total), and one warning names the
    key; the names registered stay at 2."""
    cell = Cell(master_timing=evolve(MASTER_TIMING, cached_names_per_session_max=2))
    cell.elect(R1)
    cell.run(2)
    reader = cell.connect(R1)
    session = cell.session(reader)
    cached = []
    for i in range(5):
        result = reader.result(reader.call(ReadNode(*session, f"{ROOT}/absent{i}", cache=True)))
        assert isinstance(result, NodeRead), result
        cached.append(result.cached)
    assert cached == [True, True, False, False, False]
    node = cell.nodes[R1]
    assert metric(node, "chubbypy_cached_names_refused_total") == 3
    assert metric(node, "chubbypy_cached_names") == 2
    warnings = [n for n in cell.notes(R1, NoteLevel.WARN) if "cached_names_per_session_max" in n]
    assert len(warnings) == 1, warnings
