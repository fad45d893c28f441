"""The chance sites of the node (`chubbypy.node.ANSWER_LOST`, `KEEPALIVE_LATE`,
`DISCONNECT`): each does what its name says when `buggify` fires there, and nothing when it
does not.

Each test builds its cell with a `ChosenChance` on the master that fires nothing, sets up
what it needs, then switches on the sites under test (`fire`)."""

from __future__ import annotations

from chubbypy.node import ANSWER_LOST, DISCONNECT, KEEPALIVE_LATE, Disconnect
from chubbypy.protocol.client import ReadReply, Registered, WriteReply
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import Create, GetContentsAndStat, LockMode, Written
from chubbypy.protocol.session import (
    AcquireLock,
    CreateSession,
    KeepAlive,
    LeaseExtended,
    ListSessions,
    Locked,
    NodeRead,
    Open,
    ReadNode,
    ReleaseLock,
    SessionCreated,
    SessionList,
)
from tests.unit.node.harness import (
    R1,
    R2,
    R3,
    ROOT,
    RW,
    SESSION_LEASE_TICKS,
    TIMING,
    Cell,
    ChosenChance,
    Connection,
    metric,
    touching,
)

SITES = (ANSWER_LOST, KEEPALIVE_LATE, DISCONNECT)
LATE_TICKS = 5
EXCLUSIVE = LockMode.EXCLUSIVE


def serving() -> tuple[Cell, ChosenChance]:
    """A cell whose master r1 asks `chance`, which fires nothing yet; anonymous clients
    administer it (they may list sessions)."""
    chance = ChosenChance(value=LATE_TICKS)
    cell = Cell(chances={R1: chance}, admins=("anonymous",))
    cell.elect(R1)
    cell.run(2)
    return cell, chance


def fire(chance: ChosenChance, *sites: str) -> None:
    chance.sites = set(sites)


def all_but(site: str) -> tuple[str, ...]:
    return tuple(s for s in SITES if s != site)


# ----------------------------------------------------------------------------- ANSWER_LOST


def test_answer_lost_drops_the_answer_of_a_session_call_that_changed_state() -> None:
    """ANSWER_LOST: CreateSession's change is applied (the session exists) but its answer is
    never sent."""
    cell, chance = serving()
    fire(chance, ANSWER_LOST)
    client = cell.connect(R1)
    request_id = client.call(CreateSession("me"))
    cell.run(3)
    assert client.reply(request_id) is None
    assert metric(cell.nodes[R1], "chubbypy_sessions") == 1
    listed = client.result(client.call(ListSessions()))  # answered: it changes nothing
    assert isinstance(listed, SessionList)
    assert [s.name for s in listed.sessions] == ["me"]


def test_answer_lost_drops_a_plain_writes_answer_and_the_retry_gets_the_result() -> None:
    """ANSWER_LOST: a client's write is applied but not answered; its retry is answered at
    once with the first result (not applied twice)."""
    cell, chance = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    fire(chance, ANSWER_LOST)
    lost = client.write(client_id, 1, Create(f"{ROOT}/f", contents=b"x"))
    cell.settle()
    assert client.reply(lost) is None
    read = client.reply(client.read(GetContentsAndStat(f"{ROOT}/f")))
    assert isinstance(read, ReadReply)
    retried = client.reply(client.write(client_id, 1, Create(f"{ROOT}/f", contents=b"x")))
    assert isinstance(retried, WriteReply)
    assert isinstance(retried.result, Written)  # the first result, not EXISTS


def test_answer_lost_spares_reads_failures_and_registrations() -> None:
    """ANSWER_LOST touches only answers to changes applied: a call that changes nothing, a
    refused call, a read and a registration are answered."""
    cell, chance = serving()
    client = cell.connect(R1)
    session = cell.session(client)
    fire(chance, ANSWER_LOST)
    found = client.result(client.call(ReadNode(*session, f"{ROOT}/missing", cache=False)))
    assert isinstance(found, NodeRead)
    missing = client.call(Open(*session, f"{ROOT}/missing", RW))
    cell.settle()
    assert client.code(missing) is ErrorCode.NO_SUCH_NODE
    assert isinstance(client.reply(client.read(GetContentsAndStat(ROOT))), ReadReply)
    registration = client.register(5)
    cell.settle()
    assert isinstance(client.reply(registration), Registered)


def test_without_answer_lost_changes_are_answered() -> None:
    """When ANSWER_LOST does not fire (the other sites do), a session call and a write that
    change state are answered."""
    cell, chance = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    fire(chance, *all_but(ANSWER_LOST))
    created = client.call(CreateSession("me"))
    written = client.write(client_id, 1, Create(f"{ROOT}/f"))
    cell.settle()
    assert isinstance(client.result(created), SessionCreated)
    assert isinstance(client.reply(written), WriteReply)


# ----------------------------------------------------------------------------- KEEPALIVE_LATE


def keepalive_answered_after(*sites: str) -> tuple[int, Connection, Cell]:
    """Ticks from a KeepAlive (sent while `sites` fire) to its answer."""
    cell, chance = serving()
    client = cell.connect(R1)
    session = cell.session(client)
    fire(chance, *sites)
    request_id = client.call(KeepAlive(*session, acked_through=0))
    sent = cell.now[R1]
    for _ in range(SESSION_LEASE_TICKS):
        if client.reply(request_id) is not None:
            break
        cell.run(1)
    assert isinstance(client.result(request_id), LeaseExtended)
    return cell.now[R1] - sent, client, cell


def test_keepalive_late_holds_the_answer_back_the_drawn_ticks() -> None:
    """KEEPALIVE_LATE: the KeepAlive's answer goes out the drawn number of ticks later than it
    would have, and is otherwise the same answer."""
    on_time, client, _ = keepalive_answered_after()
    late, late_client, _ = keepalive_answered_after(KEEPALIVE_LATE)
    assert late == on_time + LATE_TICKS
    assert late_client.answers[-1] == client.answers[-1]


def test_without_keepalive_late_the_answer_is_on_time() -> None:
    """When KEEPALIVE_LATE does not fire, the other sites change nothing of a KeepAlive (it
    changes no state, so ANSWER_LOST spares it)."""
    on_time, _, _ = keepalive_answered_after()
    assert keepalive_answered_after(*all_but(KEEPALIVE_LATE))[0] == on_time


def test_a_late_keepalive_answer_still_goes_out_when_mastership_ends() -> None:
    """A KeepAlive answer held back by KEEPALIVE_LATE is sent at once when the master steps
    down (the lease it extends was granted under the master's own)."""
    cell, chance = serving()
    chance.value = SESSION_LEASE_TICKS  # held far longer than the master lasts
    client = cell.connect(R1)
    session = cell.session(client)
    fire(chance, KEEPALIVE_LATE)
    request_id = client.call(KeepAlive(*session, acked_through=0))
    for _ in range(SESSION_LEASE_TICKS):
        if KEEPALIVE_LATE in chance.asked:
            break
        cell.run(1)
    assert client.reply(request_id) is None
    for _ in range(TIMING.lease_ticks):
        cell.drop(touching(R1))
        cell.tick(R1)
    assert not cell.nodes[R1].core.serving
    assert isinstance(client.result(request_id), LeaseExtended)


# ----------------------------------------------------------------------------- DISCONNECT


def test_disconnect_drops_the_connection_of_a_waiting_acquire() -> None:
    """DISCONNECT: the connection of an AcquireLock is closed (a Disconnect for it, and for no
    other); once the driver reports it closed, the acquire stops waiting."""
    cell, chance = serving()
    holder, waiter = cell.connect(R1), cell.connect(R1)
    held = cell.open(holder, cell.session(holder))
    locked = cell.lock(holder, held)
    handle = cell.open(waiter, cell.session(waiter))
    fire(chance, DISCONNECT)
    other = cell.connect(R1)
    other_session = cell.session(other)  # CreateSession and Open: no disconnect
    cell.open(other, other_session, name="other")
    assert cell.of(R1, Disconnect) == []
    request_id = waiter.call(AcquireLock(handle, EXCLUSIVE, wait=True))
    assert cell.of(R1, Disconnect) == [Disconnect(waiter.id)]
    waiter.close()  # as the driver does
    fire(chance)
    holder.call(ReleaseLock(held, locked.stat.lock_generation))
    cell.settle()
    assert waiter.reply(request_id) is None
    retry = cell.connect(R1)
    again = retry.call(AcquireLock(handle, EXCLUSIVE, wait=False))
    cell.settle()
    assert isinstance(retry.result(again), Locked)  # the lock was left free, not granted


def test_without_disconnect_a_waiting_acquire_keeps_its_connection() -> None:
    """When DISCONNECT does not fire (the other sites do), an AcquireLock closes nothing and
    is granted when the lock comes free."""
    cell, chance = serving()
    holder, waiter = cell.connect(R1), cell.connect(R1)
    held = cell.open(holder, cell.session(holder))
    locked = cell.lock(holder, held)
    handle = cell.open(waiter, cell.session(waiter))
    fire(chance, KEEPALIVE_LATE)  # ANSWER_LOST would swallow the grant below
    request_id = waiter.call(AcquireLock(handle, EXCLUSIVE, wait=True))
    holder.call(ReleaseLock(held, locked.stat.lock_generation))
    cell.settle()
    assert cell.of(R1, Disconnect) == []
    assert isinstance(waiter.result(request_id), Locked)


def test_the_sites_are_not_asked_by_followers() -> None:
    """A follower refuses session calls and writes before any chance site is asked."""
    chances = {rid: ChosenChance(*SITES) for rid in (R1, R2, R3)}
    cell = Cell(chances=chances)
    cell.elect(R1)
    client_id = cell.register(cell.connect(R1))
    follower = cell.connect(R2)
    follower.call(CreateSession("me"))
    follower.write(client_id, 1, Create(f"{ROOT}/f"))
    assert not set(SITES) & set(chances[R2].asked)
