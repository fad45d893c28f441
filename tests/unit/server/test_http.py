"""The HTTP ports' limits (`BoundedSite`): connections past the limit answered 503, request
bodies past the limit answered 413 before any is stored, idle connections closed."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request

from chubbypy.server._http import BoundedSite, HttpLimits


class _Echo(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.bodies: list[bytes] = []

    def render_GET(self, request: Request) -> bytes:
        return b"ok"

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        self.bodies.append(request.content.read())
        return b"posted"


def _site(clock: Clock, connections_max: int = 2, request_bytes_max: int = 100) -> BoundedSite:
    limits = HttpLimits(
        connections_max=connections_max,
        request_bytes_max=request_bytes_max,
        idle_timeout_seconds=30.0,
        connections_key="admin_connections_max",
        request_bytes_key="http_request_bytes_max",
    )
    return BoundedSite(_Echo(), limits, reactor=clock)


def _connect(site: BoundedSite) -> tuple[HTTPChannel, StringTransport]:
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert isinstance(channel, HTTPChannel)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_a_connection_past_the_limit_is_answered_503_naming_the_key_and_closed() -> None:
    """Two connections admitted; the third gets 503 naming limits.admin_connections_max,
    is closed, and whatever it sends is not served; once one closes, a new one is let in."""
    site = _site(Clock())
    first, _ = _connect(site)
    _connect(site)
    third, transport = _connect(site)
    assert transport.value().startswith(b"HTTP/1.1 503")
    assert b"limits.admin_connections_max (2)" in transport.value()
    assert transport.disconnecting
    third.dataReceived(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert b"ok" not in transport.value()
    assert (site.connections, site.refused["connections"]) == (2, 1)
    third.connectionLost(connectionDone)
    first.connectionLost(connectionDone)
    assert site.connections == 1
    _, fourth = _connect(site)
    assert fourth.value() == b""
    assert site.connections == 2


def test_a_declared_body_past_the_limit_is_refused_413_before_it_is_read() -> None:
    """A POST declaring 1 GB is answered 413 naming limits.http_request_bytes_max as soon
    as its headers arrive; the resource never sees it."""
    site = _site(Clock())
    channel, transport = _connect(site)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n")
    channel.dataReceived(b"a" * 4096)
    assert transport.value().startswith(b"HTTP/1.1 413")
    assert b"limits.http_request_bytes_max (100)" in transport.value()
    assert transport.disconnecting
    assert site.resource.bodies == []  # type: ignore[attr-defined]
    assert site.refused["request_bytes"] == 1


def test_a_chunked_body_is_refused_413_once_it_passes_the_limit() -> None:
    """A chunked POST (no declared length) is refused when its chunks pass the limit, with
    nothing rendered; a body within the limit is served whole."""
    site = _site(Clock())
    channel, transport = _connect(site)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    for _ in range(5):
        channel.dataReceived(b"40\r\n" + b"b" * 64 + b"\r\n")
    channel.dataReceived(b"0\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413")
    assert site.resource.bodies == []  # type: ignore[attr-defined]
    channel, transport = _connect(site)
    channel.dataReceived(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
    assert b"posted" in transport.value()
    assert site.resource.bodies == [b"hello"]  # type: ignore[attr-defined]


def test_an_idle_connection_is_closed_after_the_time_out() -> None:
    """A connection that sends nothing for idle_timeout_seconds is closed, and its place
    freed."""
    clock = Clock()
    site = _site(clock)
    channel, transport = _connect(site)
    clock.advance(29.0)
    assert not transport.disconnecting
    clock.advance(2.0)
    assert transport.disconnecting or transport.disconnected
    channel.connectionLost(connectionDone)
    assert site.connections == 0
