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
from chubbypy.protocol import CatchUpRequest, LogIndex
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    ClientId,
    ClientRequest,
    ConnectionRole,
    ErrorReply,
    Hello,
    LocateMaster,
    PeerFrame,
    ReadRequest,
    RequestId,
    ServerReply,
    SessionRequest,
    StatusRequest,
    Welcome,
    WriteRequest,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.namespace import Exists, GetStat, MultiOp, SetContents
from chubbypy.protocol.session import KeepAlive, ReadNode
from chubbypy.protocol.values import SessionId
from chubbypy.protocol.wire import decode_wire, encode_wire
from chubbypy.server._clients import (
    CLOSE_GRACE_SECONDS,
    DESCRIPTORS_RESERVED,
    ClientConnection,
    ClientPort,
    ClientPortLimits,
    fit_to_descriptor_limit,
    latency_kind,
)
from chubbypy.server._shell import ReplicaServer
from tests.unit.node.harness import metric

CELL = "t"
CELL_ROOT = f"/ls/{CELL}"


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
        self.reply_text = "not I"
        """The message of every answer (long, for replies of many bytes)."""

    def connection_opened(self, link: ClientConnection, peer: str) -> ConnectionId:
        connection = ConnectionId(len(self.links) + 1)
        self.links[connection] = link
        return connection

    def request(self, connection: ConnectionId, request: ClientRequest) -> None:
        self.requests.append((connection, request))
        if self.answering:
            self.answer(connection, request)

    def answer(self, connection: ConnectionId, request: ClientRequest) -> None:
        reply = ErrorReply(request.request_id, ErrorCode.NOT_MASTER, self.reply_text, None)
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


def test_reads_and_writes_are_timed_to_their_replies_and_waits_are_not(tmp_path: Path) -> None:
    """A read and a write are observed in chubbypy_client_{read,write}_seconds from being
    handed to the node to their reply; a KeepAlive (held by design) and a status request
    are not."""
    port = Port(tmp_path)
    port.server.answering = False
    connection, _ = port.connect()
    session = SessionId(1)
    sent = [
        ReadRequest(RequestId(1), GetStat(CELL_ROOT)),
        WriteRequest(RequestId(2), ClientId(1), bytes(16), 1, 1, SetContents(CELL_ROOT, b"x")),
        SessionRequest(RequestId(3), ReadNode(session, bytes(16), CELL_ROOT)),
        SessionRequest(RequestId(4), KeepAlive(session, bytes(16), 0)),
        StatusRequest(RequestId(5)),
    ]
    assert [latency_kind(m) for m in sent] == ["read", "write", "read", None, None]
    connection.dataReceived(b"".join(frame(m) for m in sent))
    port.clock.advance(0)
    assert len(port.server.requests) == 5
    port.clock.advance(0.003)
    for connection_id, request in list(port.server.requests):
        port.server.answer(connection_id, request)
    assert port.metric("chubbypy_client_read_seconds_count") == 2
    assert port.metric("chubbypy_client_write_seconds_count") == 1
    assert port.metric('chubbypy_client_write_seconds_bucket{le="0.002"}') == 0
    assert port.metric('chubbypy_client_write_seconds_bucket{le="0.005"}') == 1


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


# --- Before the Hello: small frames, and only a Hello ----------------------------------------


def hello() -> bytes:
    return frame(Hello(PROTOCOL_VERSION, CELL, ConnectionRole.CLIENT, "c"))


def write(request_id: int, contents_bytes: int) -> bytes:
    """A framed WriteRequest carrying `contents_bytes` bytes."""
    change = SetContents(f"/ls/{CELL}/f", bytes(contents_bytes), None)
    return frame(WriteRequest(RequestId(request_id), ClientId(1), bytes(16), 1, 1, change))


def test_a_large_frame_before_the_hello_is_refused_from_its_prefix(tmp_path: Path) -> None:
    """A first frame above hello_frame_bytes_max is refused FRAME_TOO_LARGE naming the
    key as soon as its length prefix is in: none of its body is kept or decoded."""
    port = Port(tmp_path, hello_frame_bytes_max=4096)
    connection, transport = port.connect(hello=False)
    connection.dataReceived(b"\x00\x0e\x93\xf5" + bytes(60_000))
    (refusal,) = received(transport)
    assert refusal.code is ErrorCode.FRAME_TOO_LARGE
    assert "limits.hello_frame_bytes_max" in refusal.message
    assert transport.disconnecting
    assert connection.pending_bytes == 0
    assert port.server.requests == []


@pytest.mark.parametrize(
    "first",
    [PeerFrame(CatchUpRequest(LogIndex(1))), StatusRequest(RequestId(1))],
    ids=["peer-frame", "request"],
)
def test_a_first_message_other_than_a_hello_is_refused_undecoded(
    tmp_path: Path, first: Any
) -> None:
    """A small first frame of another kind is refused BAD_REQUEST, saying a Hello was
    expected and what came instead; the node never hears of the connection."""
    port = Port(tmp_path)
    connection, transport = port.connect(hello=False)
    connection.dataReceived(frame(first))
    (refusal,) = received(transport)
    assert refusal.code is ErrorCode.BAD_REQUEST
    assert "expected a Hello (and nothing else before the Welcome)" in refusal.message
    assert f"not a {type(first).__name__}" in refusal.message
    assert transport.disconnecting
    assert port.server.links == {}


def test_a_request_right_behind_the_hello_may_be_as_large_as_any_frame(tmp_path: Path) -> None:
    """A Hello and a 100 KiB write in one chunk: the write is cut only once the Hello is
    welcomed, against frame_bytes_max, and reaches the node."""
    port = Port(tmp_path, hello_frame_bytes_max=4096)
    connection, transport = port.connect(hello=False)
    connection.dataReceived(hello() + write(1, 100_000))
    assert [type(m) for m in received(transport)] == [Welcome, ErrorReply]
    assert ids(port.server) == [1]
    assert not transport.disconnecting


def test_bytes_behind_a_hello_waiting_for_its_turn_stay_uncut(tmp_path: Path) -> None:
    """While a Hello waits for its turn, the write behind it is neither cut nor refused
    (nor its connection read); when the Hello's turn comes, the write follows it."""
    port = Port(tmp_path, requests_per_turn=1, hello_frame_bytes_max=4096)
    busy, _ = port.connect()
    next_turn(port.clock)
    busy.dataReceived(requests(1, 1))  # spends this turn's budget
    late, transport = port.connect(hello=False)
    late.dataReceived(hello() + write(7, 100_000))
    assert late.pending_bytes == len(write(7, 100_000))
    assert transport.producerState == "paused"
    assert received(transport) == []
    next_turn(port.clock)
    next_turn(port.clock)
    assert [type(m) for m in received(transport)] == [Welcome, ErrorReply]
    assert ids(port.server) == [1, 7]
    assert late.pending_bytes == 0


# --- Bytes per turn ----------------------------------------------------------------------------


def test_requests_past_the_byte_budget_wait_for_the_next_turn(tmp_path: Path) -> None:
    """With client_bytes_per_turn 1000, five 560-byte writes are handled one per turn
    (the first of a turn always fits), and the small requests behind the last share its
    turn; each turn that left requests for lack of bytes is counted."""
    port = Port(tmp_path, bytes_per_turn=1000)
    connection, _ = port.connect()
    next_turn(port.clock)
    connection.dataReceived(b"".join(write(n, 500) for n in range(1, 6)) + requests(6, 5))
    assert ids(port.server) == [1]
    for turn in range(2, 5):
        next_turn(port.clock)
        assert ids(port.server) == list(range(1, turn + 1))
    next_turn(port.clock)
    assert ids(port.server) == list(range(1, 11))
    assert port.metric("chubbypy_client_turns_bytes_full_total") == 4


def test_replies_count_against_the_byte_budget(tmp_path: Path) -> None:
    """Small requests whose replies are large (1 KB each) are handled one per turn with a
    1000-byte budget: the replies written at once count too."""
    port = Port(tmp_path, bytes_per_turn=1000)
    port.server.reply_text = "r" * 1000
    connection, _ = port.connect()
    next_turn(port.clock)
    connection.dataReceived(requests(1, 3))
    assert ids(port.server) == [1]
    next_turn(port.clock)
    assert ids(port.server) == [1, 2]


# --- Replies the client does not read ----------------------------------------------------------


def test_replies_unread_past_the_limit_hold_the_connections_requests(tmp_path: Path) -> None:
    """Once the transport says its buffer is full, replies written count as unread; past
    reply_bytes_buffered_max (3,000) no more of the connection's requests are handled,
    whatever the turns, and it is not read; when the buffer drains they go on."""
    port = Port(tmp_path, reply_bytes_buffered_max=3000, reply_bytes_buffered_total_max=10**6)
    port.server.reply_text = "r" * 1000
    connection, transport = port.connect()
    next_turn(port.clock)
    connection.pauseProducing()  # the transport's buffer is full
    connection.dataReceived(requests(1, 10))
    for _ in range(5):
        port.clock.advance(0)
    assert ids(port.server) == [1, 2, 3]
    assert connection.held()
    assert transport.producerState == "paused"
    assert port.metric("chubbypy_client_connections_held") == 1
    assert port.metric("chubbypy_client_reply_bytes_unread") == connection.unread_bytes > 3000
    held = 'chubbypy_client_requests_held_total{limit="reply_bytes_buffered_max"}'
    assert port.metric(held) == 1
    connection.resumeProducing()  # the client read everything
    assert port.metric("chubbypy_client_reply_bytes_unread") == 0
    for _ in range(5):
        port.clock.advance(0)
    assert ids(port.server) == list(range(1, 11))
    assert transport.producerState == "producing"


def test_all_connections_unread_replies_together_are_bounded(tmp_path: Path) -> None:
    """With reply_bytes_buffered_total_max 5,000, two connections whose clients read
    nothing are held once their unread replies together pass it, though each is under
    its own limit (the second after its first reply: one with none unread is not held);
    a connection whose client keeps up is still served."""
    port = Port(tmp_path, reply_bytes_buffered_max=10_000, reply_bytes_buffered_total_max=5000)
    port.server.reply_text = "r" * 1000
    (first, _), (second, _), (reading, _) = port.connect(), port.connect(), port.connect()
    next_turn(port.clock)
    for connection in (first, second):
        connection.pauseProducing()
    first.dataReceived(requests(1, 10))
    second.dataReceived(requests(101, 10))
    reading.dataReceived(requests(201, 10))
    for _ in range(10):
        port.clock.advance(0)
    handled = ids(port.server)
    assert [n for n in handled if n < 200] == [1, 2, 3, 4, 5, 101]
    assert first.held()
    assert second.held()
    assert max(first.unread_bytes, second.unread_bytes) < 10_000
    assert [n for n in handled if n > 200] == list(range(201, 211))
    held = 'chubbypy_client_requests_held_total{limit="reply_bytes_buffered_total_max"}'
    assert port.metric(held) == 1


def test_a_connection_held_for_unread_replies_is_closed_after_the_idle_time_out(
    tmp_path: Path,
) -> None:
    """A connection held for replies its client does not read (with half a frame begun,
    so neither the frame nor the idle time-out runs) is closed once it has been so for
    idle_timeout_seconds, then aborted: its unread replies are freed."""
    port = Port(tmp_path, idle_timeout_seconds=30.0, reply_bytes_buffered_max=2000)
    port.server.reply_text = "r" * 1000
    connection, transport = port.connect()
    next_turn(port.clock)
    connection.pauseProducing()
    connection.dataReceived(requests(1, 5) + requests(6, 1)[:3])
    port.clock.pump([0.5] * 58)
    assert not transport.disconnecting
    port.clock.pump([0.5] * 4)
    assert transport.disconnecting
    closing = received(transport)[-1]
    assert closing.code is ErrorCode.UNAVAILABLE
    assert "limits.reply_bytes_buffered_max" in closing.message
    assert port.metric('chubbypy_client_timeouts_total{kind="unread"}') == 1
    port.clock.advance(CLOSE_GRACE_SECONDS)
    assert transport.disconnected
    connection.connectionLost()
    assert port.metric("chubbypy_client_reply_bytes_unread") == 0


# --- Arrays in a request -----------------------------------------------------------------------


def test_a_request_with_too_many_arrays_is_refused_naming_the_key(tmp_path: Path) -> None:
    """With request_arrays_max 64, a MultiOp of 100 tests is refused BAD_REQUEST naming
    the key, and the connection closed; one of 50 tests reaches the node."""
    port = Port(tmp_path, request_arrays_max=64)
    connection, transport = port.connect()

    def multi(request_id: int, tests: int) -> bytes:
        guard = tuple(Exists(f"/ls/{CELL}/{n}") for n in range(tests))
        change = MultiOp(guard, (), ())
        return frame(WriteRequest(RequestId(request_id), ClientId(1), bytes(16), 1, 1, change))

    connection.dataReceived(multi(1, 50) + multi(2, 100))
    assert ids(port.server) == [1]
    refusal = received(transport)[-1]
    assert refusal.code is ErrorCode.BAD_REQUEST
    assert "limits.request_arrays_max" in refusal.message
    assert transport.disconnecting
