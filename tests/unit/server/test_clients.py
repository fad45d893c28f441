"""The client port under floods (issue 13, item 5): the connection limit, the hello, frame
and idle time-outs, requests taken in bounded turns with back-pressure, the pipelining
limit, and the connection limit fitted to the descriptor limit. On a `Clock` and
`StringTransport`s, with a stand-in for the replica server."""

from __future__ import annotations

import resource
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chubbypy.config import parse_config
from chubbypy.node import ConnectionId, Registry
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    ClientRequest,
    ConnectionRole,
    ErrorReply,
    Hello,
    LocateMaster,
    RequestId,
    ServerReply,
    StatusRequest,
    Welcome,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.wire import decode_wire, encode_wire
from chubbypy.server._clients import (
    CLOSE_GRACE_SECONDS,
    DESCRIPTORS_RESERVED,
    ClientConnection,
    ClientPort,
    ClientPortLimits,
    fit_to_descriptor_limit,
)
from chubbypy.server._shell import ReplicaServer
from tests.unit.node.harness import metric

CELL = "t"


class FakeServer:
    """What the client port needs of the replica server: it records the requests, and
    answers each at once unless `answering` is False."""

    def __init__(self, tmp: Path) -> None:
        replicas = [
            {
                "id": f"r{n}",
                "peer": f"tcp:{7100 + n}",
                "client": f"tcp:{7200 + n}",
                "admin": f"tcp:{7300 + n}",
            }
            for n in (1, 2, 3)
        ]
        self.config = parse_config({"cell": CELL, "replicas": replicas, "data_dir": str(tmp)})
        self.replica_id = "r1"
        self.node = SimpleNamespace(metrics=Registry())
        self.requests: list[tuple[ConnectionId, ClientRequest]] = []
        self.links: dict[ConnectionId, ClientConnection] = {}
        self.closed: list[ConnectionId] = []
        self.answering = True

    def connection_opened(self, link: ClientConnection, peer: str) -> ConnectionId:
        connection = ConnectionId(len(self.links) + 1)
        self.links[connection] = link
        return connection

    def request(self, connection: ConnectionId, request: ClientRequest) -> None:
        self.requests.append((connection, request))
        if self.answering:
            self.answer(connection, request)

    def answer(self, connection: ConnectionId, request: ClientRequest) -> None:
        reply = ErrorReply(request.request_id, ErrorCode.NOT_MASTER, "not I", None)
        self.links[connection].reply(reply)

    def connection_closed(self, connection: ConnectionId) -> None:
        self.closed.append(connection)


class Port:
    """A client port on a clock, and the connections made to it."""

    def __init__(self, tmp: Path, **limits: Any) -> None:
        self.clock = Clock()
        self.server = FakeServer(tmp)
        self.port = ClientPort(
            cast(ReplicaServer, self.server), self.clock, ClientPortLimits(**limits)
        )
        self.port.doStart()

    def connect(self, hello: bool = True) -> tuple[ClientConnection, StringTransport]:
        connection = self.port.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 4321))
        connection.makeConnection(transport)
        if hello:
            connection.dataReceived(
                frame(Hello(PROTOCOL_VERSION, CELL, ConnectionRole.CLIENT, "c"))
            )
            assert isinstance(received(transport)[0], Welcome)
        return connection, transport

    def metric(self, series: str) -> float:
        return metric(cast(Any, self.server.node), series)


def frame(message: Any) -> bytes:
    return encode_frame(encode_wire(message))


def requests(first: int, count: int) -> bytes:
    return b"".join(frame(StatusRequest(RequestId(n))) for n in range(first, first + count))


def received(transport: StringTransport) -> list[Any]:
    return [decode_wire(body) for body in FrameDecoder(1 << 20).feed(transport.value())]


def next_turn(clock: Clock) -> None:
    """Run the calls due now, but not those they schedule (as one reactor turn would;
    `Clock.advance(0)` runs those too)."""
    due = [call for call in clock.calls if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = True
        call.func(*call.args, **call.kw)


def ids(server: FakeServer) -> list[int]:
    return [request.request_id for _, request in server.requests]


# --- The connection limit --------------------------------------------------------------------


def test_a_connection_past_the_limit_gets_a_busy_frame_and_is_closed(tmp_path: Path) -> None:
    """With client_connections_max 2, a third connection is answered BUSY naming the key,
    closed, and aborted if still open after the grace period; the first two are served."""
    port = Port(tmp_path, connections_max=2)
    (first, _), _ = port.connect(), port.connect()
    _, transport = port.connect(hello=False)
    (refusal,) = received(transport)
    assert isinstance(refusal, ErrorReply)
    assert refusal.code is ErrorCode.BUSY
    assert "limits.client_connections_max" in refusal.message
    assert transport.disconnecting
    port.clock.advance(CLOSE_GRACE_SECONDS)
    assert transport.disconnected  # aborted: StringTransport's abortConnection
    assert port.metric("chubbypy_client_connections_refused_total") == 1
    assert port.metric("chubbypy_client_connections") == 2
    first.dataReceived(requests(1, 1))
    assert ids(port.server) == [1]


def test_a_closed_connection_frees_its_place(tmp_path: Path) -> None:
    """Once an admitted connection is lost, another is admitted in its place."""
    port = Port(tmp_path, connections_max=1)
    first, _ = port.connect()
    first.connectionLost()
    _, transport = port.connect()
    assert not transport.disconnecting
    assert port.server.closed == [ConnectionId(1)]


# --- Time-outs ----------------------------------------------------------------------------


def test_a_connection_that_never_says_hello_is_closed(tmp_path: Path) -> None:
    """No Hello within hello_timeout_seconds (5): at 4.5 s the connection is open, by 5.5 s
    it got an error frame naming the key and is closing."""
    port = Port(tmp_path, hello_timeout_seconds=5.0)
    _, transport = port.connect(hello=False)
    port.clock.pump([0.5] * 9)
    assert not transport.disconnecting
    port.clock.pump([0.5] * 2)
    (closing,) = received(transport)
    assert closing.code is ErrorCode.BAD_REQUEST
    assert "limits.hello_timeout_seconds" in closing.message
    assert transport.disconnecting
    assert port.metric('chubbypy_client_timeouts_total{kind="hello"}') == 1


def test_half_a_frame_is_closed_after_the_frame_timeout(tmp_path: Path) -> None:
    """A frame begun and not finished within frame_timeout_seconds (10) closes the
    connection (a slowloris), while one finished in time does not."""
    port = Port(tmp_path, frame_timeout_seconds=10.0)
    slow, slow_transport = port.connect()
    steady, steady_transport = port.connect()
    whole = requests(1, 1)
    slow.dataReceived(whole[:3])
    steady.dataReceived(whole[:3])
    port.clock.pump([0.5] * 12)
    steady.dataReceived(whole[3:])
    port.clock.pump([0.5] * 10)
    assert not steady_transport.disconnecting
    assert slow_transport.disconnecting
    closing = received(slow_transport)[-1]
    assert "limits.frame_timeout_seconds" in closing.message
    assert port.metric('chubbypy_client_timeouts_total{kind="frame"}') == 1


def test_a_greeted_connection_that_sends_nothing_is_closed_when_idle(tmp_path: Path) -> None:
    """A greeted connection with nothing in progress is closed after idle_timeout_seconds
    (UNAVAILABLE, naming the key); one whose request is in progress is not, and its idle
    time counts from the answer."""
    port = Port(tmp_path, idle_timeout_seconds=60.0)
    _, idle_transport = port.connect()
    port.server.answering = False
    waiting, waiting_transport = port.connect()
    waiting.dataReceived(requests(1, 1))
    port.clock.pump([0.5] * 130)
    assert idle_transport.disconnecting
    assert received(idle_transport)[-1].code is ErrorCode.UNAVAILABLE
    assert "limits.idle_timeout_seconds" in received(idle_transport)[-1].message
    assert not waiting_transport.disconnecting
    (connection, request), *_ = port.server.requests
    port.server.answer(connection, request)
    port.clock.pump([0.5] * 110)
    assert not waiting_transport.disconnecting
    port.clock.pump([0.5] * 10)
    assert waiting_transport.disconnecting


# --- Turns and back-pressure ----------------------------------------------------------------


def test_requests_past_the_turn_budget_wait_and_the_connection_is_not_read(
    tmp_path: Path,
) -> None:
    """With client_requests_per_turn 3, ten pipelined requests are handled three per
    reactor turn; the connection is paused while any wait and resumed once none do."""
    port = Port(tmp_path, requests_per_turn=3)
    connection, transport = port.connect()
    next_turn(port.clock)  # the hello's turn ends
    connection.dataReceived(requests(1, 10))
    assert ids(port.server) == [1, 2, 3]
    assert transport.producerState == "paused"
    next_turn(port.clock)
    assert ids(port.server) == [1, 2, 3, 4, 5, 6]
    assert transport.producerState == "paused"
    next_turn(port.clock)
    next_turn(port.clock)
    assert ids(port.server) == list(range(1, 11))
    assert transport.producerState == "producing"
    assert port.metric('chubbypy_client_reads_paused_total{reason="requests"}') == 1
    assert port.metric("chubbypy_client_turns_full_total") >= 3


def test_connections_with_requests_waiting_take_turns(tmp_path: Path) -> None:
    """Two connections with requests waiting are served one request each in turn: a
    pipelining flood on one connection does not hold back another's requests."""
    port = Port(tmp_path, requests_per_turn=4)
    flood, _ = port.connect()
    honest, _ = port.connect()
    next_turn(port.clock)
    flood.dataReceived(requests(100, 50))
    honest.dataReceived(requests(1, 3))
    assert len(port.server.requests) == 4
    next_turn(port.clock)
    order = [(connection, request.request_id) for connection, request in port.server.requests]
    assert order[4:8] == [(1, 104), (2, 1), (1, 105), (2, 2)]


def test_at_most_the_pending_limit_is_in_progress_per_connection(tmp_path: Path) -> None:
    """With requests_pending_per_connection_max 128 and nothing answered, 128 of 200
    pipelined requests reach the node and the connection is not read; each answer lets
    one more through."""
    port = Port(tmp_path, requests_pending_max=128, requests_per_turn=1000)
    port.server.answering = False
    connection, transport = port.connect()
    connection.dataReceived(requests(1, 200))
    for _ in range(3):
        port.clock.advance(0)
    assert len(port.server.requests) == 128
    assert transport.producerState == "paused"
    first_connection, first = port.server.requests[0]
    port.server.answer(first_connection, first)
    assert len(port.server.requests) == 129
    for connection_id, request in list(port.server.requests):
        port.server.answer(connection_id, request)
    for _ in range(3):
        port.clock.advance(0)
    assert len(port.server.requests) == 200
    assert transport.producerState == "producing"


def test_a_client_that_does_not_read_its_replies_is_not_read(tmp_path: Path) -> None:
    """While the transport's write buffer is full (it pauses us as its producer), the
    connection is not read; it is read again once the buffer drains."""
    port = Port(tmp_path)
    connection, transport = port.connect()
    assert transport.producer is connection
    connection.pauseProducing()
    assert transport.producerState == "paused"
    connection.resumeProducing()
    assert transport.producerState == "producing"
    assert port.metric('chubbypy_client_reads_paused_total{reason="replies"}') == 1


def test_frames_after_the_node_closed_the_connection_are_dropped(tmp_path: Path) -> None:
    """Once the node disconnects a connection, its frames still waiting are not handled."""
    port = Port(tmp_path, requests_per_turn=2)
    connection, transport = port.connect()
    next_turn(port.clock)
    connection.dataReceived(requests(1, 10))
    connection.disconnect()
    port.clock.advance(0)
    assert ids(port.server) == [1, 2]
    assert transport.disconnecting


def test_a_reply_to_a_request_not_in_progress_changes_nothing(tmp_path: Path) -> None:
    """Replies for no request (request id 0) or beyond those in progress do not make room
    for more than the limit."""
    port = Port(tmp_path)
    connection, _ = port.connect()
    reply: ServerReply = ErrorReply(RequestId(0), ErrorCode.BUSY, "", None)
    connection.reply(reply)
    connection.reply(ErrorReply(RequestId(9), ErrorCode.BUSY, "", None))
    connection.dataReceived(frame(LocateMaster(RequestId(1))))
    assert ids(port.server) == [1]


# --- The descriptor limit --------------------------------------------------------------------


def test_the_descriptor_limit_is_raised_to_fit_the_connections() -> None:
    """A soft limit below connections + reserve is raised (up to the hard limit)."""
    raised: list[tuple[int, int]] = []
    fitting, limit, warning = fit_to_descriptor_limit(
        10_000, lambda: (1024, 1 << 20), lambda soft, hard: raised.append((soft, hard))
    )
    assert (fitting, limit, warning) == (10_000, 10_000 + DESCRIPTORS_RESERVED, None)
    assert raised == [(10_000 + DESCRIPTORS_RESERVED, 1 << 20)]


def test_connections_past_the_hard_limit_are_clamped_with_a_warning() -> None:
    """With a hard limit of 4096, 10,000 connections are clamped to 4096 - reserve and the
    warning names the key and both limits."""
    fitting, limit, warning = fit_to_descriptor_limit(
        10_000, lambda: (1024, 4096), lambda soft, hard: None
    )
    assert fitting == 4096 - DESCRIPTORS_RESERVED
    assert limit == 4096
    assert warning is not None
    assert "limits.client_connections_max" in warning
    assert "4096" in warning


def test_a_limit_that_cannot_be_raised_is_clamped() -> None:
    """If raising the soft limit fails, the connections are fitted to the soft limit."""

    def refuse(soft: int, hard: int) -> None:
        raise ValueError("not permitted")

    fitting, limit, warning = fit_to_descriptor_limit(10_000, lambda: (1024, 1 << 20), refuse)
    assert (fitting, limit) == (1024 - DESCRIPTORS_RESERVED, 1024)
    assert warning is not None


@pytest.mark.parametrize("infinite", [resource.RLIM_INFINITY])
def test_no_descriptor_limit_needs_no_fitting(infinite: int) -> None:
    """An unlimited soft limit fits any number of connections."""
    assert fit_to_descriptor_limit(10_000, lambda: (infinite, infinite), lambda s, h: None) == (
        10_000,
        infinite,
        None,
    )


def test_a_hello_waiting_for_its_turn_is_not_timed_out(tmp_path: Path) -> None:
    """A Hello that arrived in time but waits for a turn (the budget is spent) does not
    count as late: the connection is welcomed when its turn comes."""
    port = Port(tmp_path, requests_per_turn=1, hello_timeout_seconds=1.0)
    busy, _ = port.connect()
    next_turn(port.clock)
    busy.dataReceived(requests(1, 1))  # spends this turn's budget
    late, transport = port.connect(hello=False)
    late.dataReceived(frame(Hello(PROTOCOL_VERSION, CELL, ConnectionRole.CLIENT, "c")))
    assert received(transport) == []
    port.clock.rightNow += 2.0  # time passes before the next turn comes
    port.port._sweep()
    assert received(transport) == []
    next_turn(port.clock)
    assert isinstance(received(transport)[0], Welcome)
    assert not transport.disconnecting
