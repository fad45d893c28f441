"""Clients' identities: a cell without anonymous clients, Authenticate, and the principal
that ACL checks see."""

from __future__ import annotations

import pytest

from chubbypy.node import Auth, AuthLimits, Disconnect, NoteLevel, Persist, SendPeer
from chubbypy.protocol.client import (
    Authenticate,
    Authenticated,
    ClientRequest,
    ErrorReply,
    LocateMaster,
    MasterLocation,
    ReadReply,
    ReadRequest,
    Register,
    Registered,
    RequestId,
    SessionRequest,
    StatusReply,
    StatusRequest,
    WriteRequest,
)
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    AclNames,
    Contents,
    Create,
    GetContentsAndStat,
    SetContents,
)
from chubbypy.protocol.session import (
    CreateSession,
    GetLockInfo,
    KillSession,
    ListSessions,
    SessionCreated,
)
from chubbypy.protocol.values import ClientId, ReplicaId, SessionId
from tests.unit.node.harness import R1, R2, ROOT, Cell, Connection, metric

AUTH = Auth(principals=(("alice", "alice's token"), ("bob", "bob's token")), anonymous=False)
ONE = RequestId(1)


def serving(auth: Auth = AUTH) -> Cell:
    cell = Cell(auth=auth)
    cell.elect(R1)
    cell.run(2)
    return cell


def authenticated(cell: Cell, principal: str, token: str | None = None) -> Connection:
    connection = cell.connect(R1, peer=f"{principal}'s host")
    token = dict(AUTH.principals)[principal] if token is None else token
    request_id = connection.send(Authenticate(connection.next_id(), principal, token))
    assert connection.reply(request_id) == Authenticated(request_id, principal)
    return connection


REFUSED_BEFORE_AUTHENTICATING: list[ClientRequest] = [
    ReadRequest(ONE, GetContentsAndStat(ROOT)),
    WriteRequest(ONE, ClientId(1), bytes(16), 1, 0, Create(f"{ROOT}/f")),
    Register(ONE, 7),
    SessionRequest(ONE, CreateSession("me")),
    SessionRequest(ONE, ListSessions()),
    SessionRequest(ONE, GetLockInfo(ROOT)),
    SessionRequest(ONE, KillSession(SessionId(1))),
]


@pytest.mark.parametrize("request_", REFUSED_BEFORE_AUTHENTICATING, ids=lambda r: type(r).__name__)
def test_without_anonymous_clients_requests_before_authenticating_are_refused(
    request_: ClientRequest,
) -> None:
    """With Auth(anonymous=False), a request other than LocateMaster, StatusRequest and
    Authenticate is refused PERMISSION_DENIED before authenticating, proposing nothing."""
    cell = serving()
    client = cell.connect(R1)
    mark = cell.mark()
    client.send(request_)
    assert client.code(ONE) is ErrorCode.PERMISSION_DENIED
    cell.settle()
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]


@pytest.mark.parametrize("rid", [R1, R2])
def test_locate_master_and_status_need_no_authentication(rid: ReplicaId) -> None:
    """LocateMaster and StatusRequest are answered to a connection that never authenticated."""
    cell = serving()
    client = cell.connect(rid)
    assert isinstance(client.reply(client.send(LocateMaster(ONE))), MasterLocation)
    assert isinstance(client.reply(client.send(StatusRequest(RequestId(2)))), StatusReply)


@pytest.mark.parametrize(
    ("principal", "token"),
    [("alice", "bob's token"), ("alice", ""), ("mallory", "alice's token")],
)
def test_a_wrong_token_is_refused_and_noted(principal: str, token: str) -> None:
    """A wrong token, or an unknown principal, is refused PERMISSION_DENIED with a WARN note
    naming the peer; the connection stays unauthenticated."""
    cell = serving()
    client = cell.connect(R1, peer="10.0.0.9:5555")
    request_id = client.send(Authenticate(client.next_id(), principal, token))
    assert client.code(request_id) is ErrorCode.PERMISSION_DENIED
    (warning,) = cell.notes(R1, NoteLevel.WARN)
    assert repr(principal) in warning
    assert "10.0.0.9:5555" in warning
    if token:
        assert token not in warning  # the token itself is never logged
    read = client.read(GetContentsAndStat(ROOT))
    assert client.code(read) is ErrorCode.PERMISSION_DENIED


def test_a_right_token_is_answered_authenticated_and_serves_requests() -> None:
    """The right token is answered Authenticated; the connection's requests are then served."""
    cell = serving()
    alice = authenticated(cell, "alice")
    reply = alice.reply(alice.read(GetContentsAndStat(ROOT)))
    assert isinstance(reply, ReadReply)
    assert cell.register(alice) >= 1


def test_the_authenticated_principal_is_what_acl_checks_see() -> None:
    """A file whose ACLs admit only alice is read and written by alice's connection and
    refused PERMISSION_DENIED to bob's."""
    cell = serving()
    alice, bob = authenticated(cell, "alice"), authenticated(cell, "bob")
    alice_id, bob_id = cell.register(alice, nonce=1), cell.register(bob, nonce=2)
    only_alice = AclNames("only-alice", "only-alice", "only-alice")
    for sequence, write in enumerate(
        [
            Create(f"{ROOT}/acl", is_directory=True),
            Create(f"{ROOT}/acl/only-alice", contents=b"alice\n"),
            Create(f"{ROOT}/secret", contents=b"s", acl=only_alice),
        ],
        start=1,
    ):
        assert not isinstance(cell.written(alice, alice_id, sequence, write).result, Failure)
    read = GetContentsAndStat(f"{ROOT}/secret")
    mine = alice.reply(alice.read(read))
    assert isinstance(mine, ReadReply)
    assert isinstance(mine.result, Contents)
    assert bob.code(bob.read(read)) is ErrorCode.PERMISSION_DENIED
    mark = cell.mark()
    refused = bob.write(bob_id, 1, SetContents(f"{ROOT}/secret", b"bob was here"))
    assert bob.code(refused) is ErrorCode.PERMISSION_DENIED
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist | SendPeer)]
    assert not isinstance(
        cell.written(alice, alice_id, 4, SetContents(f"{ROOT}/secret", b"t")).result, Failure
    )


def test_with_anonymous_clients_a_connection_acts_as_anonymous() -> None:
    """With Auth(anonymous=True) a fresh connection is served at once, as `anonymous`, whose
    ACL checks fail where only a named principal is admitted."""
    cell = serving(Auth(principals=AUTH.principals, anonymous=True))
    alice = authenticated(cell, "alice")
    alice_id = cell.register(alice)
    cell.written(alice, alice_id, 1, Create(f"{ROOT}/acl", is_directory=True))
    cell.written(alice, alice_id, 2, Create(f"{ROOT}/acl/alice", contents=b"alice"))
    cell.written(
        alice, alice_id, 3, Create(f"{ROOT}/mine", acl=AclNames("alice", "alice", "alice"))
    )
    stranger = cell.connect(R1)
    assert isinstance(stranger.reply(stranger.read(GetContentsAndStat(ROOT))), ReadReply)
    denied = stranger.read(GetContentsAndStat(f"{ROOT}/mine"))
    assert stranger.code(denied) is ErrorCode.PERMISSION_DENIED
    assert "anonymous" in stranger.error(denied).message


# --- Failed authentications (issue 13, item 5) ----------------------------------------------


def limited(**limits: int) -> Cell:
    """A serving cell (no anonymous clients) with these `AuthLimits`."""
    cell = Cell(auth=AUTH, auth_limits=AuthLimits(**limits))
    cell.elect(R1)
    cell.run(2)
    return cell


def fail(connection: Connection, principal: str = "alice") -> ErrorReply:
    reply = connection.reply(
        connection.send(Authenticate(connection.next_id(), principal, "not the token"))
    )
    assert isinstance(reply, ErrorReply), reply
    assert reply.code is ErrorCode.PERMISSION_DENIED
    return reply


def test_a_failed_authentication_takes_the_earlier_principal_away() -> None:
    """A connection that authenticated as alice and then fails to authenticate as bob acts
    as no one (the cell serves no anonymous clients): its next read is refused."""
    cell = serving()
    alice = authenticated(cell, "alice")
    assert isinstance(alice.reply(alice.read(GetContentsAndStat(ROOT))), ReadReply)
    fail(alice, "bob")
    refused = alice.read(GetContentsAndStat(ROOT))
    assert alice.code(refused) is ErrorCode.PERMISSION_DENIED
    assert "authenticate first" in alice.error(refused).message


def test_with_anonymous_clients_a_failed_authentication_drops_back_to_anonymous() -> None:
    """With anonymous clients, a connection whose authentication fails acts as anonymous."""
    cell = serving(Auth(principals=AUTH.principals, anonymous=True))
    alice = authenticated(cell, "alice")
    fail(alice)
    cell.session(alice)
    assert cell.nodes[R1].session_book.live("anonymous") == 1
    assert cell.nodes[R1].session_book.live("alice") == 0


def test_the_last_failure_a_connection_may_have_is_answered_then_closes_it() -> None:
    """With auth_failures_per_connection_max 3, the third failure on a connection is
    answered (naming the key) and followed by a Disconnect of that connection only."""
    cell = limited(failures_per_connection_max=3)
    guesser, other = cell.connect(R1, peer="10.0.0.1:1"), cell.connect(R1, peer="10.0.0.2:2")
    mark = cell.mark()
    assert "closing" not in fail(guesser).message
    assert "closing" not in fail(guesser).message
    last = fail(guesser)
    assert "limits.auth_failures_per_connection_max" in last.message
    assert cell.of(R1, Disconnect)[-1:] == [Disconnect(guesser.id)]
    assert [o for o in cell.since(mark, R1) if isinstance(o, Disconnect)] == [
        Disconnect(guesser.id)
    ]
    assert metric(cell.nodes[R1], 'chubbypy_authentications_total{outcome="refused"}') == 3
    assert other.reply(other.send(Authenticate(other.next_id(), "bob", "bob's token")))


def test_past_an_address_budget_even_the_right_token_is_refused_until_it_refills() -> None:
    """After auth_failures_per_address_max failures from one host (over several
    connections), the host's next attempt is refused unchecked, the right token too, saying
    when to try again; another host is served; once the window has passed, the right token
    is admitted again."""
    cell = limited(failures_per_connection_max=100, failures_per_address_max=5, window_ticks=50)
    for port in range(5):
        fail(cell.connect(R1, peer=f"10.0.0.7:{port}"))
    late = cell.connect(R1, peer="10.0.0.7:99")
    right = late.send(Authenticate(late.next_id(), "alice", "alice's token"))
    message = late.error(right).message
    assert "too many failed authentications from 10.0.0.7" in message
    assert "limits.auth_failures_per_address_max" in message
    assert "try again in 1 s" in message  # one failure refills in 10 ticks of 100 ms
    assert metric(cell.nodes[R1], 'chubbypy_authentications_total{outcome="rate_limited"}') == 1
    elsewhere = authenticated(cell, "bob")
    assert elsewhere is not None
    cell.tick(times=50)
    again = late.send(Authenticate(late.next_id(), "alice", "alice's token"))
    assert late.reply(again) == Authenticated(again, "alice")


def test_a_hosts_budget_is_per_principal_and_unknown_names_share_one() -> None:
    """Failing on purpose as alice from a host keeps alice's attempts from that host
    refused, not bob's; names the cell does not know share one budget per host, so
    cycling through made-up names buys a guesser nothing."""
    cell = limited(failures_per_connection_max=100, failures_per_address_max=2, window_ticks=50)
    for port in range(2):
        fail(cell.connect(R1, peer=f"10.0.0.9:{port}"))
    late = cell.connect(R1, peer="10.0.0.9:50")
    assert "too many failed" in fail(late).message
    bob = late.send(Authenticate(late.next_id(), "bob", "bob's token"))
    assert late.reply(bob) == Authenticated(bob, "bob")
    guesser = cell.connect(R1, peer="10.0.0.10:1")
    fail(guesser, "nobody-1")
    fail(guesser, "nobody-2")
    assert "too many failed" in fail(guesser, "nobody-3").message
    assert "an unknown principal" in fail(guesser, "nobody-4").message


def test_unchecked_refusals_count_against_the_connection() -> None:
    """A connection that keeps trying while its host is over its budget is closed at its
    own limit all the same."""
    cell = limited(failures_per_connection_max=2, failures_per_address_max=1)
    fail(cell.connect(R1, peer="10.0.0.8:1"))
    retrying = cell.connect(R1, peer="10.0.0.8:2")
    mark = cell.mark()
    assert "too many failed" in fail(retrying).message
    assert "limits.auth_failures_per_connection_max" in fail(retrying).message
    assert Disconnect(retrying.id) in cell.since(mark, R1)


def test_a_storm_of_wrong_tokens_writes_a_few_lines_and_counts_the_rest() -> None:
    """1,000 wrong-token attempts from 1,000 hosts write at most log_lines_per_minute (10)
    WARN lines; the rest are counted on /metrics; a minute later the next line says how
    many were left out."""
    cell = limited(failures_per_connection_max=1)
    for n in range(1000):
        fail(cell.connect(R1, peer=f"10.1.{n // 256}.{n % 256}:5"))
    warnings = [t for t in cell.notes(R1, NoteLevel.WARN) if "authentication" in t]
    assert len(warnings) == 10
    left_out = 'chubbypy_log_lines_left_out_total{kind="authentication-refused"}'
    assert metric(cell.nodes[R1], left_out) == 990
    cell.tick(times=600)
    fail(cell.connect(R1, peer="10.2.0.1:5"))
    last = [t for t in cell.notes(R1, NoteLevel.WARN) if "authentication" in t][-1]
    assert "990 more like this were left out" in last


def test_a_registration_retried_by_another_principal_is_refused() -> None:
    """Register with a nonce alice registered (read from the log, say) is refused
    PERMISSION_DENIED to bob, costing no entry and showing no client id or credential;
    alice's own retry still gets her client (issue 13's review: anyone got it)."""
    cell = serving()
    alice, bob = authenticated(cell, "alice"), authenticated(cell, "bob")
    client = cell.register(alice, nonce=7)
    mark = cell.mark()
    stolen = bob.register(7)
    error = bob.error(stolen)
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert str(client) not in error.message
    cell.settle()
    assert not [o for o in cell.since(mark, R1) if isinstance(o, Persist)]
    assert cell.register(alice, nonce=7) == client


def test_a_registration_in_flight_joined_by_another_principal_is_refused_when_applied() -> None:
    """Bob's Register with the nonce of alice's registration still in flight waits for it,
    and is then refused PERMISSION_DENIED while alice gets her client."""
    cell = serving()
    alice, bob = authenticated(cell, "alice"), authenticated(cell, "bob")
    hers = alice.register(8)
    stolen = bob.register(8)
    assert alice.reply(hers) is None, "in flight"
    cell.settle()
    assert isinstance(alice.reply(hers), Registered)
    assert bob.code(stolen) is ErrorCode.PERMISSION_DENIED


def test_a_session_creation_retried_by_another_principal_is_refused() -> None:
    """CreateSession with the name and nonce of alice's live session is refused
    PERMISSION_DENIED to bob (no session id, no credential); alice's retry gets it."""
    cell = serving()
    alice, bob = authenticated(cell, "alice"), authenticated(cell, "bob")
    asked = alice.call(CreateSession("job", 9))
    cell.settle()
    created = alice.result(asked)
    assert isinstance(created, SessionCreated)
    stolen = bob.call(CreateSession("job", 9))
    cell.settle()
    assert bob.code(stolen) is ErrorCode.PERMISSION_DENIED
    again = alice.call(CreateSession("job", 9))
    cell.settle()
    assert alice.result(again) == created
