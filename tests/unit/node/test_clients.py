"""Clients' plain requests: election, writes through the log, reads from memory, the
requests any replica answers, registrations and retries, and a master stepping down."""

from __future__ import annotations

from chubbypy.node import EntryApplied, EventHappened, Persist, SendPeer
from chubbypy.paxos import Outcome, OutcomeKind, Role, StartedServing
from chubbypy.protocol import MASTER_CLIENT, ClientId
from chubbypy.protocol.client import (
    LocateMaster,
    MasterLocation,
    ReadReply,
    RequestId,
    StatusReply,
    StatusRequest,
    WriteReply,
)
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    AclNames,
    Contents,
    Create,
    GetContentsAndStat,
    LockMode,
    SetAcl,
    SetContents,
    Written,
)
from chubbypy.protocol.session import AcquireLock, CreateSession
from tests.unit.node.harness import (
    MEMBERS,
    R1,
    R2,
    R3,
    ROOT,
    TIMING,
    Cell,
    metric,
)


def serving() -> Cell:
    cell = Cell()
    cell.elect(R1)
    return cell


def test_a_fresh_cell_elects_a_master() -> None:
    """Three fresh nodes, one ticked, elect it: it serves an epoch the others follow."""
    cell = serving()
    assert cell.master() == R1
    events = [o.event for o in cell.outputs[R1] if isinstance(o, EventHappened)]
    (started,) = [e for e in events if isinstance(e, StartedServing)]
    assert started.epoch == cell.nodes[R1].core.epoch
    cell.run(2 * TIMING.lease_ticks)
    assert cell.master() == R1
    for rid in (R2, R3):
        assert cell.nodes[rid].core.status().role is Role.FOLLOWER
        assert cell.nodes[rid].applier.epoch == cell.nodes[R1].core.epoch


def test_a_write_on_the_master_is_answered_once_applied() -> None:
    """A WriteRequest is answered WriteReply on its connection, with the index that carried
    it and the namespace's result, only once the entry is applied."""
    cell = serving()
    client = cell.connect(R1)
    other = cell.connect(R1)
    client_id = cell.register(client)
    request_id = client.write(client_id, 1, Create(f"{ROOT}/f", contents=b"hello"))
    assert client.reply(request_id) is None  # proposed, not chosen yet
    cell.settle()
    reply = client.reply(request_id)
    assert isinstance(reply, WriteReply)
    (applied,) = [
        o for o in cell.applied(R1) if any(c.client_id == client_id for c in o.entry.value.commands)
    ]
    assert reply.index == applied.entry.index
    assert isinstance(reply.result, Written)
    assert reply.result.stat is not None
    assert (reply.result.stat.size, reply.result.stat.content_generation) == (5, 1)
    assert other.answers == []


def test_a_failed_write_is_answered_with_the_namespaces_failure() -> None:
    """A write the namespace refuses is still answered WriteReply, carrying the Failure."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    reply = cell.written(client, client_id, 1, SetContents(f"{ROOT}/missing", b"x"))
    assert isinstance(reply.result, Failure)
    assert reply.result.code is ErrorCode.NO_SUCH_NODE


def test_a_read_on_the_master_is_answered_from_memory() -> None:
    """A ReadRequest is answered at once, proposing nothing and writing nothing."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    written = cell.written(client, client_id, 1, Create(f"{ROOT}/f", contents=b"x"))
    mark = cell.mark()
    request_id = client.read(GetContentsAndStat(f"{ROOT}/f"))
    reply = client.reply(request_id)
    assert isinstance(reply, ReadReply)
    assert reply.applied_index == written.index
    assert isinstance(reply.result, Contents)
    assert reply.result.contents == b"x"
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]


def test_requests_on_a_follower_are_refused_with_the_masters_id() -> None:
    """A follower answers reads, writes, registrations and session calls NOT_MASTER, hinting
    the master."""
    cell = serving()
    client_id = cell.register(cell.connect(R1))
    follower = cell.connect(R2)
    mark = cell.mark()
    requests = [
        follower.read(GetContentsAndStat(f"{ROOT}/f")),
        follower.write(client_id, 1, Create(f"{ROOT}/f")),
        follower.register(7),
        follower.call(CreateSession("me")),
    ]
    for request_id in requests:
        error = follower.error(request_id)
        assert (error.code, error.master_hint) == (ErrorCode.NOT_MASTER, R1)
    assert not [o for o in cell.since(mark, R2) if isinstance(o, Persist | SendPeer)]


def test_any_replica_answers_locate_master_and_status() -> None:
    """LocateMaster and StatusRequest are answered by master and followers alike."""
    cell = serving()
    cell.run(2)  # the followers learn that the epoch started
    epoch = cell.nodes[R1].core.epoch
    for rid in MEMBERS:
        client = cell.connect(rid)
        location = client.reply(client.send(LocateMaster(RequestId(1))))
        assert isinstance(location, MasterLocation)
        assert (location.master, location.epoch) == (R1, epoch)
        assert [a.replica_id for a in location.replicas] == list(MEMBERS)
        status = client.reply(client.send(StatusRequest(RequestId(2))))
        assert isinstance(status, StatusReply)
        assert status.status.replica_id == rid
        assert status.status.role == ("master" if rid == R1 else "follower")
        assert status.status.serving is (rid == R1)
        assert status.status.master_hint == R1


def test_before_any_election_locate_master_knows_none() -> None:
    """A replica that knows no master says so (None), rather than guessing."""
    cell = Cell()
    client = cell.connect(R2)
    location = client.reply(client.send(LocateMaster(RequestId(1))))
    assert isinstance(location, MasterLocation)
    assert location.master is None


def test_a_retried_registration_gets_the_same_client_id() -> None:
    """Register with the same nonce, again and on another connection: the same client id;
    another nonce: another id."""
    cell = serving()
    first = cell.register(cell.connect(R1), nonce=42)
    again = cell.register(cell.connect(R1), nonce=42)
    other = cell.register(cell.connect(R1), nonce=43)
    assert first == again
    assert other != first


def test_a_retried_write_already_applied_is_answered_at_once_and_not_proposed() -> None:
    """A write whose (client, sequence) was applied is answered at once with its first
    result; nothing is proposed, written or sent."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    first = cell.written(client, client_id, 1, Create(f"{ROOT}/f"))
    retry_on = cell.connect(R1)
    mark = cell.mark()
    proposals = metric(cell.nodes[R1], "chubbypy_proposals_total")
    request_id = retry_on.write(client_id, 1, Create(f"{ROOT}/f"))
    reply = retry_on.reply(request_id)
    assert isinstance(reply, WriteReply)
    assert reply.result == first.result  # not EXISTS: the first result
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    cell.settle()
    assert not [o for o in cell.since(mark, R1) if isinstance(o, EntryApplied)]
    assert metric(cell.nodes[R1], "chubbypy_proposals_total") == proposals


def test_a_write_in_flight_retried_is_answered_on_both_connections() -> None:
    """A retry of a write not yet applied waits for the same outcome: both are answered with
    the first result, and the namespace changes once."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    retry_on = cell.connect(R1)
    first = client.write(client_id, 1, Create(f"{ROOT}/f", contents=b"once"))
    second = retry_on.write(client_id, 1, Create(f"{ROOT}/f", contents=b"once"))
    cell.settle()
    a, b = client.reply(first), retry_on.reply(second)
    assert isinstance(a, WriteReply)
    assert isinstance(b, WriteReply)
    assert a.result == b.result
    assert isinstance(a.result, Written)
    assert a.result.stat is not None
    assert a.result.stat.content_generation == 1


def test_a_write_with_the_masters_client_id_is_refused() -> None:
    """A WriteRequest naming the reserved master client id is refused UNKNOWN_CLIENT and
    proposes nothing."""
    cell = serving()
    client = cell.connect(R1)
    mark = cell.mark()
    request_id = client.write(ClientId(MASTER_CLIENT), 1, Create(f"{ROOT}/f"))
    assert client.code(request_id) is ErrorCode.UNKNOWN_CLIENT
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]


def test_a_write_from_an_unregistered_client_is_answered_unknown_client() -> None:
    """The log refuses a write of a client id it never registered: UNKNOWN_CLIENT."""
    cell = serving()
    client = cell.connect(R1)
    request_id = client.write(ClientId(99), 1, Create(f"{ROOT}/f"))
    cell.settle()
    assert client.code(request_id) is ErrorCode.UNKNOWN_CLIENT


def test_a_master_stepping_down_answers_whatever_is_in_flight_not_master() -> None:
    """Cut off and ticked past its lease, the master steps down: the writes, registrations
    and session calls still in flight (a blocked acquire too) are answered NOT_MASTER."""
    cell = serving()
    cell.run(3)
    client = cell.connect(R1)
    client_id = cell.register(client)
    holder, waiter = cell.connect(R1), cell.connect(R1)
    held = cell.open(holder, cell.session(holder))
    blocked = cell.open(waiter, cell.session(waiter))
    cell.lock(holder, held)
    waiting = waiter.call(AcquireLock(blocked, LockMode.EXCLUSIVE, wait=True))
    cell.settle()
    assert waiter.reply(waiting) is None
    cell.isolate(R1)
    in_flight = [
        (client, client.write(client_id, 1, Create(f"{ROOT}/f"))),
        (client, client.register(9)),
        (holder, holder.call(CreateSession("late"))),
        (waiter, waiting),
    ]
    for connection, request_id in in_flight:
        assert connection.reply(request_id) is None
    for _ in range(TIMING.master_lease_ticks - 1):
        cell.tick(R1)
        cell.settle()
    assert cell.nodes[R1].core.serving  # still within its lease: nothing answered yet
    assert all(connection.reply(request_id) is None for connection, request_id in in_flight)
    cell.tick(R1, times=2)
    cell.settle()
    assert not cell.nodes[R1].core.serving
    for connection, request_id in in_flight:
        assert connection.code(request_id) is ErrorCode.NOT_MASTER


def test_a_resigning_master_answers_in_flight_not_master_and_a_peer_takes_over() -> None:
    """`resign` steps the master down at once (in-flight writes: NOT_MASTER); a follower
    takes over, and the client's retry of its write is applied once."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    request_id = client.write(client_id, 1, Create(f"{ROOT}/f", contents=b"once"))
    cell.resign(R1)
    assert client.code(request_id) is ErrorCode.NOT_MASTER
    assert any("resigns" in note for note in cell.notes(R1))
    for _ in range(3 * TIMING.lease_ticks):
        if any(node.core.serving for node in cell.nodes.values()):
            break
        cell.run(1)
    successor = cell.master()
    assert successor != R1
    retry_on = cell.connect(successor)
    reply = cell.written(retry_on, client_id, 1, Create(f"{ROOT}/f", contents=b"once"))
    assert isinstance(reply.result, Written)  # the first result (not EXISTS), whichever
    outcomes = [
        result
        for applied in cell.applied(successor)
        for result in applied.results
        if isinstance(result, Outcome) and (result.client_id, result.sequence) == (client_id, 1)
    ]
    assert [o.kind for o in outcomes].count(OutcomeKind.APPLIED) == 1


def test_a_retried_write_that_revoked_its_own_permission_gets_its_first_result() -> None:
    """The retry of an applied SetAcl that took the writer's CHANGE right away is answered
    with the SetAcl's first result, not refused."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    for sequence, write in enumerate(
        [
            Create(f"{ROOT}/acl", is_directory=True),
            Create(f"{ROOT}/acl/me", contents=b"anonymous\n"),
            Create(f"{ROOT}/acl/no-one", contents=b"# nobody\n"),
            Create(f"{ROOT}/f", acl=AclNames("all", "all", "me")),
        ],
        start=1,
    ):
        assert not isinstance(cell.written(client, client_id, sequence, write).result, Failure)
    give_away = SetAcl(f"{ROOT}/f", AclNames("all", "all", "no-one"))
    first = cell.written(client, client_id, 5, give_away)
    assert isinstance(first.result, Written)
    retry_on = cell.connect(R1)  # the first answer was lost with its connection, say
    reply = retry_on.reply(retry_on.write(client_id, 5, give_away))
    assert isinstance(reply, WriteReply), reply
    assert reply.result == first.result


def test_a_write_the_log_would_refuse_anyway_is_refused_before_it_costs_an_entry() -> None:
    """An oversized write, or one with an invalid name, is answered with the failure the
    log would give, at once, and proposes nothing: no entry on every replica's disk."""
    cell = serving()
    client = cell.connect(R1)
    client_id = cell.register(client)
    last = cell.nodes[R1].core.status().last_index
    limit = cell.nodes[R1].settings.namespace_limits.file_bytes_max
    too_big = client.write(client_id, 1, Create(f"{ROOT}/big", contents=b"x" * (limit + 1)))
    misnamed = client.write(client_id, 2, Create(f"{ROOT}/a//b"))
    cell.settle()
    assert client.code(too_big) is ErrorCode.TOO_LARGE
    assert client.code(misnamed) is ErrorCode.INVALID_NAME
    assert cell.nodes[R1].core.status().last_index == last
