"""ReplicaConnection: the hello, replies matched to requests, timeouts and lost connections."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chubbypy.client import ConnectionClosed, ReplicaConnection, RequestTimedOut
from chubbypy.protocol.client import (
    NO_REQUEST,
    PROTOCOL_VERSION,
    ConnectionRole,
    ErrorReply,
    Hello,
    LocateMaster,
    MasterLocation,
    ReadRequest,
    RequestId,
    Welcome,
    WireMessage,
)
from chubbypy.protocol.errors import ErrorCode, FrameTooLarge, UnsupportedVersion, WrongCell
from chubbypy.protocol.framing import encode_frame
from chubbypy.protocol.namespace import GetStat
from chubbypy.protocol.values import Epoch, ReplicaId
from chubbypy.protocol.wire import encode_wire
from tests.unit.client.harness import CELL, frames, result_of

ADDRESS = "tcp:host=127.0.0.1:port=7201"
R1 = ReplicaId("r1")


def connect(frame_bytes_max: int = 1 << 20) -> tuple[ReplicaConnection, StringTransport, Clock]:
    """A connection on a StringTransport, before any byte arrived from the replica."""
    clock = Clock()
    connection = ReplicaConnection(clock, ADDRESS, CELL, "me", frame_bytes_max=frame_bytes_max)
    transport = StringTransport()
    connection.makeConnection(transport)
    return connection, transport, clock


def receive(connection: ReplicaConnection, *messages: WireMessage) -> None:
    """The replica sends `messages`, all in one chunk."""
    connection.dataReceived(b"".join(encode_frame(encode_wire(m)) for m in messages))


def welcomed() -> tuple[ReplicaConnection, StringTransport, Clock]:
    """A connection the replica has welcomed, its transport emptied."""
    connection, transport, clock = connect()
    receive(connection, Welcome(PROTOCOL_VERSION, CELL, R1))
    transport.clear()
    return connection, transport, clock


def location(request_id: int, master: str | None = "r1") -> MasterLocation:
    return MasterLocation(RequestId(request_id), master and ReplicaId(master), Epoch(1), ())


def test_the_hello_is_the_first_frame_and_the_welcome_opens_the_connection() -> None:
    """The client speaks first with a versioned Hello; when_welcomed fires on the Welcome."""
    connection, transport, _ = connect()
    assert frames(transport.value()) == [Hello(PROTOCOL_VERSION, CELL, ConnectionRole.CLIENT, "me")]
    waiting = connection.when_welcomed(2.0)
    assert not waiting.called
    receive(connection, Welcome(PROTOCOL_VERSION, CELL, R1))
    assert result_of(waiting) is connection
    assert connection.replica_id == R1
    assert result_of(connection.when_welcomed(2.0)) is connection  # later callers too


def test_a_refused_version_fails_the_welcome_with_unsupported_version() -> None:
    """An UNSUPPORTED_VERSION reply to the hello raises UnsupportedVersion and closes."""
    connection, transport, _ = connect()
    waiting = connection.when_welcomed(2.0)
    receive(connection, ErrorReply(NO_REQUEST, ErrorCode.UNSUPPORTED_VERSION, "I speak 2", None))
    with pytest.raises(UnsupportedVersion, match="I speak 2"):
        result_of(waiting)
    assert transport.disconnecting


@pytest.mark.parametrize(
    ("welcome", "error"),
    [
        (Welcome(PROTOCOL_VERSION + 1, CELL, R1), UnsupportedVersion),
        (Welcome(PROTOCOL_VERSION, "other", R1), WrongCell),
    ],
)
def test_a_welcome_for_another_version_or_cell_is_refused(
    welcome: Welcome, error: type[Exception]
) -> None:
    """A Welcome naming another protocol version or cell fails the welcome and closes."""
    connection, transport, _ = connect()
    waiting = connection.when_welcomed(2.0)
    receive(connection, welcome)
    with pytest.raises(error):
        result_of(waiting)
    assert transport.disconnecting


def test_a_wrong_cell_refusal_raises_wrong_cell() -> None:
    """A WRONG_CELL reply to the hello raises WrongCell, quoting the replica."""
    connection, _, _ = connect()
    waiting = connection.when_welcomed(2.0)
    receive(connection, ErrorReply(NO_REQUEST, ErrorCode.WRONG_CELL, "I serve prod", None))
    with pytest.raises(WrongCell, match="I serve prod"):
        result_of(waiting)


def test_no_welcome_within_the_timeout_aborts_the_connection() -> None:
    """A replica that never welcomes fails the waiter with RequestTimedOut and is dropped."""
    connection, transport, clock = connect()
    waiting = connection.when_welcomed(2.0)
    clock.advance(1.9)
    assert not waiting.called
    clock.advance(0.2)
    with pytest.raises(RequestTimedOut, match="no welcome within 2 s"):
        result_of(waiting)
    assert transport.disconnecting


def test_replies_are_matched_to_their_requests_in_any_order() -> None:
    """Each reply fires the Deferred of the request with the same id, whatever the order."""
    connection, transport, _ = welcomed()
    first = connection.request(LocateMaster, 2.0)
    second = connection.request(lambda rid: ReadRequest(rid, GetStat("/ls/test/a")), 2.0)
    assert frames(transport.value()) == [
        LocateMaster(RequestId(1)),
        ReadRequest(RequestId(2), GetStat("/ls/test/a")),
    ]
    receive(connection, location(2, "r2"))
    assert result_of(second) == location(2, "r2")
    assert not first.called
    receive(connection, location(1, "r1"))
    assert result_of(first) == location(1, "r1")


def test_a_request_times_out_and_its_late_reply_is_dropped() -> None:
    """No reply within the timeout fails with RequestTimedOut; a late reply is ignored."""
    connection, _, clock = welcomed()
    asked = connection.request(LocateMaster, 2.0)
    clock.advance(2.0)
    with pytest.raises(RequestTimedOut, match="no reply to request 1 within 2 s"):
        result_of(asked)
    receive(connection, location(1))  # late: nobody waits for it, and nothing breaks
    again = connection.request(LocateMaster, 2.0)
    receive(connection, location(2))
    assert result_of(again) == location(2)


def test_losing_the_connection_fails_every_outstanding_request() -> None:
    """Requests still waiting when the connection closes fail with ConnectionClosed."""
    connection, _, _ = welcomed()
    waiting = [connection.request(LocateMaster, 2.0) for _ in range(3)]
    closed = connection.when_closed()
    connection.connectionLost(Failure(ConnectionDone("the replica went away")))
    for asked in waiting:
        with pytest.raises(ConnectionClosed, match=r"127\.0\.0\.1:7201: .*the replica went away"):
            result_of(asked)
    assert closed.called
    assert connection.is_closed
    with pytest.raises(ConnectionClosed):
        result_of(connection.request(LocateMaster, 2.0))


def test_losing_the_connection_before_the_welcome_fails_the_waiters() -> None:
    """A connection lost before its welcome fails when_welcomed with ConnectionClosed."""
    connection, _, _ = connect()
    waiting = connection.when_welcomed(2.0)
    connection.connectionLost(Failure(ConnectionDone("reset")))
    with pytest.raises(ConnectionClosed, match="reset"):
        result_of(waiting)


def test_a_failed_dial_fails_the_waiters_with_the_reason() -> None:
    """A connection attempt that fails ends the connection, naming the reason."""
    connection = ReplicaConnection(Clock(), ADDRESS, CELL, "me")
    waiting = connection.when_welcomed(2.0)
    dialing: Deferred[object] = Deferred()
    connection.dial(dialing)
    dialing.errback(ConnectionRefusedError("refused"))
    with pytest.raises(ConnectionClosed, match="cannot connect: refused"):
        result_of(waiting)
    assert connection.is_closed


def test_a_garbage_frame_from_the_replica_aborts_the_connection() -> None:
    """Bytes that do not decode abort the connection; outstanding requests then fail."""
    connection, transport, _ = welcomed()
    asked = connection.request(LocateMaster, 2.0)
    connection.dataReceived(encode_frame(b"\xc1 not msgpack"))
    assert transport.disconnecting
    connection.connectionLost(Failure(ConnectionDone()))
    with pytest.raises(ConnectionClosed, match="unreadable message from the replica"):
        result_of(asked)


def test_an_unexpected_message_aborts_the_connection() -> None:
    """A request (or a second welcome) from the replica is a protocol violation."""
    connection, transport, _ = welcomed()
    receive(connection, LocateMaster(RequestId(5)))
    assert transport.disconnecting


def test_a_malformed_frame_notice_is_quoted_when_the_connection_closes() -> None:
    """An ErrorReply for request 0 after the welcome explains the coming close."""
    connection, _, _ = welcomed()
    asked = connection.request(LocateMaster, 2.0)
    receive(connection, ErrorReply(NO_REQUEST, ErrorCode.BAD_REQUEST, "bad frame", None))
    connection.connectionLost(Failure(ConnectionDone()))
    with pytest.raises(ConnectionClosed, match="the replica reported BAD_REQUEST: bad frame"):
        result_of(asked)


def test_a_request_above_the_frame_limit_is_refused_without_sending() -> None:
    """A request whose frame exceeds the cell's limit fails with FrameTooLarge, unsent."""
    connection, transport, _ = connect(frame_bytes_max=64)
    receive(connection, Welcome(PROTOCOL_VERSION, CELL, R1))
    transport.clear()
    asked = connection.request(lambda rid: ReadRequest(rid, GetStat("/ls/test/" + "a" * 100)), 2.0)
    with pytest.raises(FrameTooLarge, match="above the cell's frame limit of 64 bytes"):
        result_of(asked)
    assert transport.value() == b""


def test_cancelling_a_request_forgets_it() -> None:
    """A cancelled request's late reply is dropped without error."""
    connection, _, _ = welcomed()
    asked = connection.request(LocateMaster, 2.0)
    asked.addErrback(lambda _: None)
    asked.cancel()
    receive(connection, location(1))
    assert not connection.is_closed
