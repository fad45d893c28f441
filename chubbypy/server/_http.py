"""What every HTTP port of ours takes from whoever reaches it: a bounded number of
connections (in all and from one address), bounded request heads and bodies, a deadline
for a request's head, and a time-out for a connection that sends nothing.

Shell side, on twisted.web. Left to itself, twisted.web reads a request's whole body
before rendering it (in memory below 100,000 bytes, in a temporary file above), so one POST
to any path could fill the disk; it keeps an idle connection for 12 hours, and any byte
starts that time again, so a client that sends a header line every few seconds holds its
connection for ever (slowloris); it accepts as many connections as the process has
descriptors, which the peers and the store need; it drops a connection whose request line
or headers are too long without a word; and it names itself and its version in a
``Server`` header. `BoundedSite` is a `Site` that:

* answers a connection past `connections_max`, or past `connections_per_address_max` from
  one source address, with 503 and closes it (so one host cannot take every connection);
* answers a request whose head (request line and headers) is not whole
  `request_head_seconds` after its first byte with 408 and closes it;
* answers a request line longer than `request_head_bytes_max` with 414, and headers
  (together, or more than twisted.web's 500 of them) past it with 431, and closes;
* refuses a body past `request_bytes_max` with 413 before storing any of it (by its
  declared length, or as chunks arrive);
* closes a connection idle for `idle_timeout_seconds`;
* sends no ``Server`` header.

Every refusal names the configuration key to raise, is counted (`refused`, by kind: the
admin port's /metrics shows them) and logged within the log budget for lines a client
causes (`chubbypy.server._framed.ShellWarnings`).
"""

from __future__ import annotations

from collections import Counter
from io import BytesIO
from typing import Any, Final

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure as TwistedFailure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from chubbypy.server._framed import LOG_LINES_PER_MINUTE_DEFAULT, ShellWarnings

__all__ = ["REFUSAL_KINDS", "BoundedSite", "HttpLimits"]

_STATUS: Final = {
    408: b"408 Request Timeout",
    413: b"413 Content Too Large",
    414: b"414 URI Too Long",
    431: b"431 Request Header Fields Too Large",
    503: b"503 Service Unavailable",
}
REFUSAL_KINDS: Final = (
    "connections",
    "connections_per_address",
    "request_head_time",
    "request_line_bytes",
    "request_headers_bytes",
    "request_bytes",
)
"""The kinds of `BoundedSite.refused`."""


@frozen(kw_only=True)
class HttpLimits:
    """An HTTP port's limits (from the cell file's ``limits:`` for the admin port, ``web:``
    for the web page's), with the name of each key, to name in a refusal."""

    connections_max: int
    request_bytes_max: int
    idle_timeout_seconds: float
    connections_key: str
    """The configuration key named in a 503 (so an operator knows what to raise)."""
    request_bytes_key: str
    connections_per_address_max: int
    connections_per_address_key: str
    request_head_seconds: float
    request_head_seconds_key: str
    request_head_bytes_max: int
    request_head_bytes_key: str
    section: str = "limits"
    """The cell file's section of the keys (``web`` for the web page's port)."""
    log_lines_per_minute: int = LOG_LINES_PER_MINUTE_DEFAULT
    """Warnings of one kind (a refusal) per minute; more are counted, not logged."""

    def __attrs_post_init__(self) -> None:
        assert 1 <= self.connections_per_address_max <= self.connections_max, self
        assert self.request_head_seconds > 0, self
        assert self.request_head_bytes_max >= 1, self

    def named(self, key: str) -> str:
        return f"{self.section}.{key}"


def _answer(status: int, text: str) -> bytes:
    body = (text + "\n").encode()
    return (
        b"HTTP/1.1 %s\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\n\r\n%s" % (_STATUS[status], len(body), body)
    )


class _BoundedRequest(Request):
    """A request whose body is refused (413, connection closed) past the site's limit,
    and whose answer names no server."""

    _refused = False
    _body_bytes = 0

    def _limit(self) -> HttpLimits:
        site = self.channel.site  # type: ignore[attr-defined]
        assert isinstance(site, BoundedSite)
        return site.limits

    def gotLength(self, length: int | None) -> None:
        limit = self._limit().request_bytes_max
        self.content = BytesIO()
        if length is not None and length > limit:
            self._too_large(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self._limit().request_bytes_max:
            self._too_large(self._body_bytes)
            return
        assert self.content is not None
        self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._refused:
            super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            # twisted.web.server.Request.process sets it; naming the server and its version
            # only helps whoever looks for a known flaw in it.
            self.responseHeaders.removeHeader(b"server")
        super().write(data)  # type: ignore[no-untyped-call]

    def _too_large(self, size: int) -> None:
        """Say why in a 413 and close: the rest of the body is never read or stored."""
        self._refused = True
        limits = self._limit()
        channel = self.channel
        assert isinstance(channel, _CountedChannel)
        channel.refuse(
            413,
            "request_bytes",
            f"a request body of {size} bytes or more is above "
            f"{limits.named(limits.request_bytes_key)} ({limits.request_bytes_max})",
        )


class _CountedChannel(HTTPChannel):
    """An HTTP connection that its site admits (or answers 503 and closes, reading
    nothing), whose request heads are bounded in time and size, and that tells its site
    when it ends."""

    _admitted = False
    _address = ""
    _head_deadline: IDelayedCall | None = None
    _refusing = False

    def _site(self) -> BoundedSite:
        site = self.site  # type: ignore[attr-defined]
        assert isinstance(site, BoundedSite)
        return site

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        site = self._site()
        limits = site.limits
        # LineReceiver's bound on one line, and HTTPChannel's on the request line and
        # headers together: past either, `lineLengthExceeded` or `lineReceived` says so.
        self.MAX_LENGTH = self.totalHeadersSize = limits.request_head_bytes_max
        assert self.transport is not None
        self._address = str(getattr(self.transport.getPeer(), "host", "?"))
        if site.connections >= limits.connections_max:
            self.refuse(
                503,
                "connections",
                f"too many connections: {limits.named(limits.connections_key)} "
                f"({limits.connections_max}); try again later",
            )
        elif site.by_address[self._address] >= limits.connections_per_address_max:
            self.refuse(
                503,
                "connections_per_address",
                f"too many connections from {self._address}: "
                f"{limits.named(limits.connections_per_address_key)} "
                f"({limits.connections_per_address_max}); close some and try again",
            )
        else:
            self._admitted = True
            site.connections += 1
            site.by_address[self._address] += 1

    def refuse(self, status: int, kind: str, text: str) -> None:
        """Answer `status` saying `text`, count and log the refusal, close; nothing more
        this connection sends is read."""
        if self._refusing:
            return
        self._refusing = True
        self._stop_head_deadline()
        site = self._site()
        site.refused[kind] += 1
        site.warnings.warn(f"http-{kind}", f"HTTP port refused {self._address}: {text}")
        transport = self.transport
        if transport is not None:
            transport.write(_answer(status, text))
            transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if not self._admitted or self._refusing:
            return
        if self._head_deadline is None and not self._handlingRequest and self.line_mode:
            # The first byte of a request's head (also for bytes read behind the request
            # before: `requestDone` passes them back through here).
            self._start_head_deadline()
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def _start_head_deadline(self) -> None:
        limits = self._site().limits
        self._head_deadline = self._site().reactor.callLater(
            limits.request_head_seconds, self._head_too_slow
        )

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            if self._head_deadline.active():
                self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        limits = self._site().limits
        self.refuse(
            408,
            "request_head_time",
            "the request line and headers did not arrive within "
            f"{limits.named(limits.request_head_seconds_key)} ({limits.request_head_seconds:g} s)",
        )

    def _in_request_line(self) -> bool:
        # HTTPChannel's own flag (name-mangled): true until a request's first line is read.
        return bool(getattr(self, "_HTTPChannel__first_line", 1))

    def _head_too_large(self) -> None:
        limits = self._site().limits
        bound = f"{limits.named(limits.request_head_bytes_key)} ({limits.request_head_bytes_max})"
        if self._in_request_line():
            self.refuse(414, "request_line_bytes", f"the request line is longer than {bound}")
        else:
            self.refuse(
                431,
                "request_headers_bytes",
                f"the request line and headers are longer than {bound}, or more than "
                f"{self.maxHeaders} headers",
            )

    def lineLengthExceeded(self, line: bytes) -> None:
        self._head_too_large()

    def lineReceived(self, line: bytes) -> None:
        if self._refusing:
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._head_too_large()
            return
        super().lineReceived(line)  # type: ignore[no-untyped-call]

    def headerReceived(self, line: bytes) -> bool:
        if self._receivedHeaderCount >= self.maxHeaders:
            self._head_too_large()
            return False
        return bool(super().headerReceived(line))  # type: ignore[no-untyped-call]

    def allHeadersReceived(self) -> None:
        self._stop_head_deadline()
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: TwistedFailure = connectionDone) -> None:
        self._stop_head_deadline()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        if self._admitted:
            self._admitted = False
            site = self._site()
            site.connections -= 1
            site.by_address[self._address] -= 1
            if site.by_address[self._address] <= 0:
                del site.by_address[self._address]


class BoundedSite(Site):
    """A twisted.web `Site` within `HttpLimits`; see the module docstring."""

    protocol = _CountedChannel  # type: ignore[assignment]
    requestFactory = _BoundedRequest
    noisy = False

    def __init__(self, resource: Resource, limits: HttpLimits, **options: Any) -> None:
        super().__init__(resource, timeout=limits.idle_timeout_seconds, **options)  # type: ignore[no-untyped-call]
        self.limits = limits
        self.connections = 0
        """Connections admitted and open now."""
        self.by_address: Counter[str] = Counter()
        """Connections admitted and open now, by source address (only those with some)."""
        self.refused: Counter[str] = Counter()
        """Refusals by kind (`REFUSAL_KINDS`)."""
        self.warnings = ShellWarnings(limits.log_lines_per_minute, self.reactor.seconds)

    def log(self, request: Request) -> None:  # type: ignore[override]
        """No access log: a line per request would let anyone who reaches the port write
        the replica's log without bound (the metrics count what matters)."""
