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


def _site(
    clock: Clock,
    connections_max: int = 2,
    request_bytes_max: int = 100,
    per_address: int | None = None,
) -> BoundedSite:
    limits = HttpLimits(
        connections_max=connections_max,
        request_bytes_max=request_bytes_max,
        idle_timeout_seconds=30.0,
        connections_key="admin_connections_max",
        request_bytes_key="http_request_bytes_max",
        connections_per_address_max=per_address or connections_max,
        connections_per_address_key="admin_connections_per_address_max",
        request_head_seconds=5.0,
        request_head_seconds_key="admin_request_head_seconds",
        request_head_bytes_max=1024,
        request_head_bytes_key="admin_request_head_bytes_max",
    )
    return BoundedSite(_Echo(), limits, reactor=clock)


def _connect(site: BoundedSite, host: str = "127.0.0.1") -> tuple[HTTPChannel, StringTransport]:
    channel = site.buildProtocol(IPv4Address("TCP", host, 40000))
    assert isinstance(channel, HTTPChannel)
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
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


def test_one_address_cannot_take_every_connection() -> None:
    """Past connections_per_address_max from one address a connection is answered 503
    naming that key and closed, while another address is still let in; a place freed
    is given again."""
    site = _site(Clock(), connections_max=4, per_address=2)
    first, _ = _connect(site, "10.0.0.1")
    _connect(site, "10.0.0.1")
    _, refused = _connect(site, "10.0.0.1")
    assert refused.value().startswith(b"HTTP/1.1 503")
    assert b"too many connections from 10.0.0.1" in refused.value()
    assert b"limits.admin_connections_per_address_max (2)" in refused.value()
    assert refused.disconnecting
    _, other = _connect(site, "10.0.0.2")
    assert other.value() == b""
    assert not other.disconnecting
    assert site.refused["connections_per_address"] == 1
    first.connectionLost(connectionDone)
    _, again = _connect(site, "10.0.0.1")
    assert again.value() == b""
    assert not again.disconnecting
    assert dict(site.by_address) == {"10.0.0.1": 2, "10.0.0.2": 1}


def test_a_request_head_dribbled_in_is_answered_408_at_its_deadline() -> None:
    """A header line every second keeps the idle time-out away, but the head must be whole
    within request_head_seconds of its first byte: then 408 naming the key, and closed."""
    clock = Clock()
    site = _site(clock)
    channel, transport = _connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    for second in range(4):
        clock.advance(1.0)
        channel.dataReceived(b"x-slow-%d: 1\r\n" % second)
    assert transport.value() == b""
    assert not transport.disconnecting
    clock.advance(1.0)
    assert transport.value().startswith(b"HTTP/1.1 408")
    assert b"limits.admin_request_head_seconds (5 s)" in transport.value()
    assert transport.disconnecting
    assert site.refused["request_head_time"] == 1


def test_a_kept_alive_connection_waits_idle_and_its_next_head_has_its_own_deadline() -> None:
    """The deadline runs from a head's first byte: a connection idle between requests is
    left to the idle time-out, and each request that arrives whole is served."""
    clock = Clock()
    site = _site(clock)
    channel, transport = _connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert b"ok" in transport.value()
    clock.advance(20.0)  # idle, past the head deadline
    transport.clear()
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    clock.advance(4.0)
    channel.dataReceived(b"host: x\r\n\r\n")
    assert b"ok" in transport.value()
    clock.advance(10.0)
    assert not transport.disconnecting
    assert site.refused["request_head_time"] == 0


def test_a_long_request_line_is_answered_414_and_long_headers_431() -> None:
    """Past request_head_bytes_max a request line gets 414 and headers 431, each naming
    the key (not a dropped connection); nothing is served."""
    site = _site(Clock(), connections_max=4)
    channel, transport = _connect(site)
    channel.dataReceived(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n")
    assert transport.value().startswith(b"HTTP/1.1 414")
    assert b"limits.admin_request_head_bytes_max (1024)" in transport.value()
    assert transport.disconnecting
    channel, transport = _connect(site)
    channel.dataReceived(b"GET /" + b"a" * 3000)  # no line end yet
    assert transport.value().startswith(b"HTTP/1.1 414")
    channel, transport = _connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    for number in range(20):
        channel.dataReceived(b"x-big-%d: %s\r\n" % (number, b"b" * 100))
    assert transport.value().startswith(b"HTTP/1.1 431")
    assert b"limits.admin_request_head_bytes_max (1024)" in transport.value()
    assert b"ok" not in transport.value()
    assert site.refused["request_line_bytes"] == 2
    assert site.refused["request_headers_bytes"] == 1


def test_answers_name_no_server() -> None:
    """No Server header (twisted.web would name itself and its version)."""
    site = _site(Clock())
    channel, transport = _connect(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert b"ok" in transport.value()
    assert b"server:" not in transport.value().lower()
