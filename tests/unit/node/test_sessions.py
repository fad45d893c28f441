"""Session calls through the master's services on a node: sessions and their credentials,
handles, and blocked lock requests whose connection goes away."""

from __future__ import annotations

import pytest

from chubbypy.node import NoteLevel, Persist, SendPeer
from chubbypy.paxos import Limits
from chubbypy.protocol.client import ReadReply
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import Contents, Create, GetContentsAndStat, LockMode
from chubbypy.protocol.session import (
    AcquireLock,
    CloseSession,
    CreateSession,
    KeepAlive,
    LeaseExtended,
    Locked,
    NodeRead,
    Open,
    ReadNode,
    ReleaseLock,
    SessionCall,
    SessionCreated,
)
from chubbypy.sessions import EventKind, credential_matches
from tests.unit.node.harness import (
    ANSWER_BEFORE_TICKS,
    HANDLE_KEY,
    R1,
    R2,
    R3,
    ROOT,
    RW,
    SESSION_LEASE_TICKS,
    TICK_MICROSECONDS,
    TIMING,
    Cell,
    metric,
)

EXCLUSIVE = LockMode.EXCLUSIVE


def serving() -> Cell:
    cell = Cell()
    cell.elect(R1)
    cell.run(2)
    return cell


def test_create_session_is_answered_with_an_id_and_its_credential() -> None:
    """CreateSession goes through the log and is answered SessionCreated: the session's id,
    its lease in milliseconds, and the credential that proves it."""
    cell = serving()
    client = cell.connect(R1)
    request_id = client.call(CreateSession("me"))
    assert client.reply(request_id) is None  # proposed, not yet applied
    cell.settle()
    created = client.result(request_id)
    assert isinstance(created, SessionCreated)
    assert credential_matches(created.session_id, created.credential, HANDLE_KEY)
    assert created.lease_ms == (SESSION_LEASE_TICKS - 1) * TICK_MICROSECONDS // 1000  # a tick short
    assert metric(cell.nodes[R1], "chubbypy_sessions") == 1


def test_sessions_get_distinct_ids_and_credentials() -> None:
    """Two sessions: two ids, two credentials, neither valid for the other."""
    cell = serving()
    client = cell.connect(R1)
    (a, a_credential), (b, b_credential) = cell.session(client), cell.session(client)
    assert a != b
    assert not credential_matches(a, b_credential, HANDLE_KEY)
    assert not credential_matches(b, a_credential, HANDLE_KEY)


def test_a_keepalive_with_the_right_credential_is_answered_before_the_lease_ends() -> None:
    """A KeepAlive is held until the lease has `answer_before` left, then extended."""
    cell = serving()
    client = cell.connect(R1)
    session = cell.session(client)
    request_id = client.call(KeepAlive(*session, acked_through=0))
    cell.run(SESSION_LEASE_TICKS - ANSWER_BEFORE_TICKS - 2)
    assert client.reply(request_id) is None
    cell.run(4)
    extended = client.result(request_id)
    assert isinstance(extended, LeaseExtended)
    assert extended.lease_ms > 0


def wrong(session: tuple[int, bytes], other: bytes) -> list[SessionCall]:
    """Every call that names a session, naming `session` with credential `other`."""
    session_id = session[0]
    return [
        KeepAlive(session_id, other, acked_through=0),
        Open(session_id, other, f"{ROOT}/f", RW, create=Create(f"{ROOT}/f")),
        CloseSession(session_id, other),
        ReadNode(session_id, other, f"{ROOT}/f"),
    ]


@pytest.mark.parametrize("which", range(4), ids=["KeepAlive", "Open", "CloseSession", "ReadNode"])
@pytest.mark.parametrize("credential", ["forged", "another session's"])
def test_a_call_with_a_wrong_credential_is_refused_and_changes_nothing(
    which: int, credential: str
) -> None:
    """A session call with a wrong credential is refused PERMISSION_DENIED, proposes and
    writes nothing, and leaves a WARN note; the session is untouched."""
    cell = serving()
    owner, intruder = cell.connect(R1), cell.connect(R1)
    session = cell.session(owner)
    other = cell.session(intruder)[1] if credential != "forged" else bytes(16)
    mark = cell.mark()
    proposals = metric(cell.nodes[R1], "chubbypy_proposals_total")
    request_id = intruder.call(wrong(session, other)[which])
    assert intruder.code(request_id) is ErrorCode.PERMISSION_DENIED
    cell.settle()
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    assert metric(cell.nodes[R1], "chubbypy_proposals_total") == proposals
    (warning,) = cell.notes(R1, NoteLevel.WARN)
    assert f"naming session {session[0]}" in warning
    # The owner's session is still there, and its own calls still work.
    read = owner.call(ReadNode(*session, f"{ROOT}/f", cache=False))
    found = owner.result(read)
    assert isinstance(found, NodeRead)
    assert found.stat is None  # the refused Open created nothing
    assert metric(cell.nodes[R1], "chubbypy_sessions") == (2 if credential != "forged" else 1)


def test_close_session_with_its_credential_ends_it() -> None:
    """The owner's CloseSession ends the session (the counterpart of the refused close)."""
    cell = serving()
    client = cell.connect(R1)
    session = cell.session(client)
    request_id = client.call(CloseSession(*session))
    cell.settle()
    assert client.reply(request_id) is not None
    assert metric(cell.nodes[R1], "chubbypy_sessions") == 0


def test_a_blocked_acquire_stops_waiting_when_its_connection_closes() -> None:
    """A blocked AcquireLock whose connection closed is withdrawn: on release the master
    grants the next waiter, not the gone one."""
    cell = serving()
    holder, gone, next_ = cell.connect(R1), cell.connect(R1), cell.connect(R1)
    handles = [cell.open(c, cell.session(c)) for c in (holder, gone, next_)]
    locked = cell.lock(holder, handles[0])
    first_waiter = gone.call(AcquireLock(handles[1], EXCLUSIVE, wait=True))
    second_waiter = next_.call(AcquireLock(handles[2], EXCLUSIVE, wait=True))
    cell.settle()
    assert gone.reply(first_waiter) is None
    assert next_.reply(second_waiter) is None
    gone.close()
    holder.call(ReleaseLock(handles[0], locked.stat.lock_generation))
    cell.settle()
    assert isinstance(next_.result(second_waiter), Locked)
    # The gone connection's handle holds nothing: a try through it finds the lock held.
    again = cell.connect(R1)
    tried = again.call(AcquireLock(handles[1], EXCLUSIVE, wait=False))
    cell.settle()
    assert again.code(tried) is ErrorCode.LOCK_HELD


def test_a_blocked_acquire_on_an_open_connection_is_granted_in_turn() -> None:
    """Without the close, the first waiter gets the lock (the counterpart of the above)."""
    cell = serving()
    holder, first, second = cell.connect(R1), cell.connect(R1), cell.connect(R1)
    handles = [cell.open(c, cell.session(c)) for c in (holder, first, second)]
    locked = cell.lock(holder, handles[0])
    first_waiter = first.call(AcquireLock(handles[1], EXCLUSIVE, wait=True))
    second_waiter = second.call(AcquireLock(handles[2], EXCLUSIVE, wait=True))
    cell.settle()
    holder.call(ReleaseLock(handles[0], locked.stat.lock_generation))
    cell.settle()
    assert isinstance(first.result(first_waiter), Locked)
    assert second.reply(second_waiter) is None


def test_a_session_write_is_visible_to_plain_reads() -> None:
    """A node created by Open(create=...) in a session is read back by a ReadRequest."""
    cell = serving()
    client = cell.connect(R1)
    cell.open(client, cell.session(client), name="made")
    reply = client.reply(client.read(GetContentsAndStat(f"{ROOT}/made")))
    assert isinstance(reply, ReadReply)
    assert isinstance(reply.result, Contents)


def test_a_session_and_its_lock_survive_a_fail_over() -> None:
    """Sessions and locks are in the log: after the master is cut off and another replica
    takes over, the session's KeepAlive is answered there (with a fail-over event) and its
    lock is still held."""
    cell = serving()
    client = cell.connect(R1)
    session = cell.session(client)
    handle = cell.open(client, session)
    cell.lock(client, handle)
    cell.isolate(R1)
    for _ in range(3 * TIMING.lease_ticks):
        if cell.nodes[R2].core.serving or cell.nodes[R3].core.serving:
            break
        cell.run(1)
    successor = R2 if cell.nodes[R2].core.serving else R3
    again = cell.connect(successor)
    parked = again.call(KeepAlive(*session, acked_through=0))
    for _ in range(SESSION_LEASE_TICKS):
        if again.reply(parked) is not None:
            break
        cell.run(1)
    extended = again.result(parked)
    assert isinstance(extended, LeaseExtended)
    (failover,) = extended.events
    assert failover.kind is EventKind.MASTER_FAILOVER
    again.call(KeepAlive(*session, acked_through=failover.sequence))
    other = cell.connect(successor)
    rival = cell.open(other, cell.session(other))
    tried = other.call(AcquireLock(rival, EXCLUSIVE, wait=False))
    cell.settle()
    assert other.code(tried) is ErrorCode.LOCK_HELD


def test_sessions_expiring_together_all_end_even_past_the_masters_queue() -> None:
    """A new master whose sessions all expire at once (their clients gone) proposes every
    expiry, more than its queue holds at a time: those refused for a full queue are
    proposed again at later ticks, and every session ends."""
    cell = Cell(limits=Limits(batch_entries_max=8, proposals_inflight_max=4,
                              proposals_queued_max=16, catchup_entries_max=16))  # fmt: skip
    cell.elect(R1)
    cell.run(2)
    client = cell.connect(R1)
    for wave in range(10):
        for n in range(6):
            client.call(CreateSession(f"gone {wave}.{n}"))
        cell.settle()
    assert len(cell.nodes[R1].machine.sessions()) == 60
    cell.isolate(R1)
    for _ in range(3 * TIMING.lease_ticks):
        if cell.nodes[R2].core.serving or cell.nodes[R3].core.serving:
            break
        cell.run(1)
    successor = R2 if cell.nodes[R2].core.serving else R3
    for _ in range(4 * SESSION_LEASE_TICKS):
        if not cell.nodes[successor].machine.sessions():
            break
        cell.run(1)
    assert cell.nodes[successor].machine.sessions() == ()
