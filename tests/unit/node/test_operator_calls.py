"""GetLockInfo and KillSession through a replica node (issue 14): routed to the master's
service with the connection's principal, their durations turned into milliseconds, the
sessions' principals as the connections that created them; refusals change nothing."""

from __future__ import annotations

from chubbypy.node import Auth, Persist, SendPeer
from chubbypy.protocol.client import Authenticate, Authenticated, ErrorReply
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import LockMode
from chubbypy.protocol.session import (
    AcquireLock,
    GetLockInfo,
    KeepAlive,
    KillSession,
    ListSessions,
    LockHolderInfo,
    LockInfo,
    SessionEnding,
    SessionList,
)
from tests.unit.node.harness import (
    R1,
    ROOT,
    SESSION_LEASE_TICKS,
    TICK_MICROSECONDS,
    Cell,
    Connection,
    metric,
)

AUTH = Auth(principals=(("alice", "alice's token"), ("operator", "op's token")), anonymous=True)
LOCK = f"{ROOT}/lock"


def serving() -> Cell:
    cell = Cell(auth=AUTH, admins=("operator",))
    cell.elect(R1)
    cell.run(2)
    return cell


def authenticated(cell: Cell, principal: str) -> Connection:
    connection = cell.connect(R1)
    request_id = connection.send(
        Authenticate(connection.next_id(), principal, dict(AUTH.principals)[principal])
    )
    assert connection.reply(request_id) == Authenticated(request_id, principal)
    return connection


def ask(cell: Cell, connection: Connection, call: GetLockInfo | KillSession) -> object:
    """The result of `call`, settled, or the code it was refused with."""
    request_id = connection.call(call)
    cell.settle()
    reply = connection.reply(request_id)
    return reply.code if isinstance(reply, ErrorReply) else connection.result(request_id)


def test_lock_info_names_the_holders_principal_and_the_waiters_wait_in_milliseconds() -> None:
    """Alice holds the lock, an anonymous session waits for it: anyone who may read the
    node sees alice's client and principal, and the waiter's wait in milliseconds."""
    cell = serving()
    alice, anonymous = authenticated(cell, "alice"), cell.connect(R1)
    holder = cell.session(alice, "alice's client")
    cell.lock(alice, cell.open(alice, holder))
    waiter = cell.session(anonymous, "a waiter")
    anonymous.call(AcquireLock(cell.open(anonymous, waiter), LockMode.EXCLUSIVE, wait=True))
    cell.run(5)
    info = ask(cell, anonymous, GetLockInfo(LOCK))
    assert isinstance(info, LockInfo)
    assert (info.mode, info.holder_count, info.waiter_count) == ("exclusive", 1, 1)
    assert info.holders == (LockHolderInfo(holder[0], "alice's client", "alice", "exclusive", 0),)
    (waiting,) = info.waiters
    assert (waiting.session_id, waiting.client, waiting.principal) == (
        waiter[0],
        "a waiter",
        "anonymous",
    )
    assert waiting.waited_ms >= 5 * TICK_MICROSECONDS // 1000
    assert ask(cell, anonymous, GetLockInfo(f"{ROOT}/none")) is ErrorCode.NO_SUCH_NODE


def test_only_an_operator_ends_another_clients_session() -> None:
    """Alice (not in the ACL 'admin') is refused PERMISSION_DENIED with nothing written or
    sent; the operator ends her session, whose parked KeepAlive is refused at once, which
    is listed "operator-ended" until its lease runs out and then no more (its end goes
    through the log then); chubbypy_operator_calls_total counts each outcome."""
    cell = serving()
    alice, operator = authenticated(cell, "alice"), authenticated(cell, "operator")
    session = cell.session(alice)
    parked = alice.call(KeepAlive(*session, acked_through=0))
    cell.settle()
    mark = cell.mark()
    assert ask(cell, alice, KillSession(session[0])) is ErrorCode.PERMISSION_DENIED
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    ending = ask(cell, operator, KillSession(session[0]))
    assert isinstance(ending, SessionEnding)
    assert (ending.found, ending.already) == (True, False)
    assert 0 < ending.ends_in_ms <= SESSION_LEASE_TICKS * TICK_MICROSECONDS // 1000
    assert alice.code(parked) is ErrorCode.SESSION_EXPIRED
    assert listed_states(cell, operator) == ["operator-ended"]
    assert ask(cell, operator, KillSession(session[0])).already is True  # type: ignore[union-attr]
    cell.run(ending.ends_in_ms * 1000 // TICK_MICROSECONDS + 2)
    assert listed_states(cell, operator) == []
    assert ask(cell, operator, KillSession(session[0])) == SessionEnding(False, False, 0)
    counted = 'chubbypy_operator_calls_total{call="end_session",outcome="%s"}'
    node = cell.nodes[R1]
    outcomes = ("ending", "already", "none", "permission_denied")
    assert [metric(node, counted % o) for o in outcomes] == [1, 1, 1, 1]
    assert metric(node, 'chubbypy_operator_calls_total{call="list_sessions",outcome="ok"}') == 2


def listed_states(cell: Cell, operator: Connection) -> list[str]:
    """The states of the sessions ListSessions lists."""
    listing = operator.call(ListSessions())
    cell.settle()
    listed = operator.result(listing)
    assert isinstance(listed, SessionList)
    return [s.state for s in listed.sessions]


def test_sessions_are_listed_with_their_principals() -> None:
    """ListSessions shows the principal each session's client acts as."""
    cell = serving()
    alice, operator = authenticated(cell, "alice"), authenticated(cell, "operator")
    cell.session(alice, "a")
    cell.session(cell.connect(R1), "b")
    listing = operator.call(ListSessions())
    cell.settle()
    listed = operator.result(listing)
    assert isinstance(listed, SessionList)
    assert [(s.name, s.principal) for s in listed.sessions] == [("a", "alice"), ("b", "anonymous")]
