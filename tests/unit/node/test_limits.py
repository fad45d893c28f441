"""Limits on what one connection and one principal hold live (issue 12): registrations and
sessions past a limit are refused RESOURCE_EXHAUSTED, naming the limit's key, before
anything is proposed; what "live" means for each (`chubbypy.node._limits`)."""

from __future__ import annotations

from chubbypy.master import CallToken, SessionStarted
from chubbypy.node import ClientLimits, ConnectionId, NoteLevel, Persist, SendPeer
from chubbypy.node._limits import RegistrationBook, SessionBook
from chubbypy.protocol import NO_CLIENT, ClientId, SessionId
from chubbypy.protocol.client import ErrorReply, Registered
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.session import CloseSession, CreateSession, SessionCreated
from tests.unit.node.harness import (
    ANONYMOUS_ALLOWED,
    R1,
    SESSION_LEASE_TICKS,
    Cell,
    Connection,
    metric,
)

LIMITS = ClientLimits(
    registrations_per_connection_max=2,
    registrations_per_principal_max=3,
    sessions_per_connection_max=2,
    sessions_per_principal_max=3,
)


def serving(**options: object) -> Cell:
    cell = Cell(client_limits=LIMITS, auth=ANONYMOUS_ALLOWED, **options)
    cell.elect(R1)
    return cell


def register(cell: Cell, connection: Connection, nonce: int) -> Registered | ErrorCode:
    """Register `nonce` through `connection`: the reply, or the error's code."""
    request_id = connection.register(nonce)
    cell.settle()
    reply = connection.reply(request_id)
    return reply if isinstance(reply, Registered) else connection.code(request_id)


def create_session(cell: Cell, connection: Connection) -> SessionCreated | ErrorCode:
    """Create a session through `connection`: what it answered, or the error's code."""
    request_id = connection.call(CreateSession("me"))
    cell.settle()
    if isinstance(connection.reply(request_id), ErrorReply):
        return connection.code(request_id)
    created = connection.result(request_id)
    assert isinstance(created, SessionCreated), created
    return created


def test_registrations_past_a_connections_limit_are_refused_proposing_nothing() -> None:
    """A connection's third registration is refused RESOURCE_EXHAUSTED, naming the key,
    with nothing proposed and one WARN note however many follow; a retry of one already
    counted is not refused, and another connection still registers."""
    cell = serving()
    flood = cell.connect(R1, peer="flooder")
    assert isinstance(register(cell, flood, 1), Registered)
    assert isinstance(register(cell, flood, 2), Registered)
    proposals = metric(cell.nodes[R1], "chubbypy_proposals_total")
    mark = cell.mark()
    refused = [flood.register(nonce) for nonce in range(3, 103)]
    assert {flood.code(r) for r in refused} == {ErrorCode.RESOURCE_EXHAUSTED}
    message = flood.error(refused[0]).message
    assert "limits.registrations_per_connection_max (2)" in message
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    assert metric(cell.nodes[R1], "chubbypy_proposals_total") == proposals
    (note,) = cell.notes(R1, NoteLevel.WARN)
    assert "flooder" in note
    assert "registrations_per_connection_max" in note
    assert isinstance(register(cell, flood, 2), Registered)  # a retry: the same client
    assert isinstance(register(cell, cell.connect(R1), 200), Registered)


def test_a_retried_registration_is_answered_from_the_table_proposing_nothing() -> None:
    """The same nonce sent again and again (a retry, or a flood reusing one nonce) gets the
    same client and credential from the client table, with nothing proposed; retries of one
    still in flight wait for it rather than proposing it again."""
    cell = serving()
    flood = cell.connect(R1, peer="flooder")
    first = register(cell, flood, 7)
    assert isinstance(first, Registered)
    proposals = metric(cell.nodes[R1], "chubbypy_proposals_total")
    mark = cell.mark()
    again = [flood.register(7) for _ in range(500)]
    cell.settle()
    assert {flood.reply(r) for r in again} == {
        Registered(r, first.client_id, first.credential) for r in again
    }
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    assert metric(cell.nodes[R1], "chubbypy_proposals_total") == proposals
    in_flight = [flood.register(8) for _ in range(50)]
    cell.settle()
    assert metric(cell.nodes[R1], "chubbypy_proposals_total") == proposals + 1
    replies = {flood.reply(r) for r in in_flight}
    assert len({(r.client_id, r.credential) for r in replies}) == 1  # type: ignore[union-attr]


def test_a_principals_registrations_count_over_its_open_connections() -> None:
    """Past the principal's limit, summed over its open connections, a registration on a
    fresh connection is refused naming that key; closing a connection gives its back."""
    cell = serving()
    first, second, third = cell.connect(R1), cell.connect(R1), cell.connect(R1)
    for connection, nonce in ((first, 1), (first, 2), (second, 3)):
        assert isinstance(register(cell, connection, nonce), Registered)
    request_id = third.register(4)
    assert third.code(request_id) is ErrorCode.RESOURCE_EXHAUSTED
    assert "principal 'anonymous'" in third.error(request_id).message
    assert "limits.registrations_per_principal_max (3)" in third.error(request_id).message
    first.close()
    assert isinstance(register(cell, third, 4), Registered)


def test_an_evicted_client_no_longer_counts_against_its_connection() -> None:
    """Once the log evicts a client, its registration stops counting: a connection whose
    clients were evicted may register again (an honest client re-registering)."""
    cell = serving(clients_max=2)
    honest, other = cell.connect(R1), cell.connect(R1)
    for nonce in (1, 2):
        assert isinstance(register(cell, honest, nonce), Registered)
    assert register(cell, honest, 3) is ErrorCode.RESOURCE_EXHAUSTED
    assert isinstance(register(cell, other, 4), Registered)  # evicts honest's first client
    assert isinstance(register(cell, honest, 3), Registered)  # its place was given back
    # ... which evicted honest's second client in turn: live are 3 here and 4 there.
    assert cell.nodes[R1].registrations.live("anonymous") == 2


def test_sessions_past_a_connections_limit_are_refused_and_a_close_gives_one_back() -> None:
    """A connection's third live session is refused RESOURCE_EXHAUSTED naming the key,
    with nothing proposed; once one of its sessions is closed it may create another."""
    cell = serving()
    client = cell.connect(R1, peer="many sessions")
    first, second = create_session(cell, client), create_session(cell, client)
    assert isinstance(first, SessionCreated)
    assert isinstance(second, SessionCreated)
    mark = cell.mark()
    request_id = client.call(CreateSession("one more"))
    assert client.code(request_id) is ErrorCode.RESOURCE_EXHAUSTED
    assert "limits.sessions_per_connection_max (2)" in client.error(request_id).message
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    assert any("sessions_per_connection_max" in n for n in cell.notes(R1, NoteLevel.WARN))
    client.call(CloseSession(first.session_id, first.credential))
    cell.settle()
    assert isinstance(create_session(cell, client), SessionCreated)


def test_a_principals_sessions_outlive_their_connection_until_they_end() -> None:
    """Sessions count against their principal after their connection closed (they live
    on), and stop counting once they expire."""
    cell = serving()
    gone = cell.connect(R1)
    assert isinstance(create_session(cell, gone), SessionCreated)
    assert isinstance(create_session(cell, gone), SessionCreated)
    gone.close()
    later = cell.connect(R1)
    assert isinstance(create_session(cell, later), SessionCreated)
    assert create_session(cell, later) is ErrorCode.RESOURCE_EXHAUSTED
    assert cell.nodes[R1].session_book.live("anonymous") == 3
    cell.run(2 * SESSION_LEASE_TICKS)  # none is kept alive: all three expire
    assert cell.nodes[R1].session_book.live("anonymous") == 0
    assert isinstance(create_session(cell, cell.connect(R1)), SessionCreated)


# ----------------------------------------------------------------------------- the books alone


def test_a_registration_in_flight_stops_counting_when_the_master_steps_down() -> None:
    """Stepping down forgets registrations not yet applied (the client retries elsewhere),
    keeps those that got their client; a late outcome of a forgotten one changes nothing."""
    book = RegistrationBook(LIMITS)
    book.proposed(ConnectionId(1), "p", 10)
    book.proposed(ConnectionId(1), "p", 11)
    book.registered(10, ClientId(5), NO_CLIENT)
    book.stepped_down()
    assert book.live("p") == 1
    book.registered(11, ClientId(6), NO_CLIENT)
    assert book.live("p") == 1
    book.registered(12, ClientId(7), ClientId(5))  # 5 evicted
    assert book.live("p") == 0


def test_a_reused_connection_id_starts_from_nothing() -> None:
    """A driver may give a closed connection's id to a new one: nothing of the old one's
    counts against it, and the old sessions' ends do not touch the new one's counts."""
    book = SessionBook(LIMITS)
    old = ConnectionId(1)
    book.creating(CallToken(1), old, "p")
    book.answered(CallToken(1), SessionStarted(SessionId(100), 10))
    book.connection_closed(old)
    book.creating(CallToken(2), old, "p")  # the same id, a new connection
    book.answered(CallToken(2), SessionStarted(SessionId(101), 10))
    book.ended(SessionId(100))
    assert book.live("p") == 1
    assert book.refusal(old, "q") is None  # only 101 counts against it
    book.creating(CallToken(3), old, "p")
    assert book.refusal(old, "q") is not None  # 101 and call 3: its limit of 2


def test_a_failed_or_repeated_creation_stops_counting() -> None:
    """A CreateSession answered with a failure, or with a session already counted (a retry
    answered with its first result), counts no more."""
    book = SessionBook(LIMITS)
    connection = ConnectionId(1)
    for token in (1, 2, 3):
        book.creating(CallToken(token), connection, "p")
    book.answered(CallToken(1), SessionStarted(SessionId(100), 10))
    book.answered(CallToken(2), SessionStarted(SessionId(100), 10))
    book.answered(CallToken(3), Failure(ErrorCode.NOT_MASTER, "stepped down"))
    assert book.live("p") == 1
    assert book.refusal(connection, "p") is None
