"""What every HTTP port of ours takes from whoever reaches it: a bounded number of
connections, bounded request bodies, and a time-out for a connection that sends nothing.

Shell side, on twisted.web. Left to itself, twisted.web reads a request's whole body
before rendering it (in memory below 100,000 bytes, in a temporary file above), so one POST
to any path could fill the disk; it keeps an idle connection for 12 hours; and it accepts as
many connections as the process has descriptors, which the peers and the store need.
`BoundedSite` is a `Site` that refuses a body past `request_bytes_max` with 413 before
storing any of it (by its declared length, or as chunks arrive), answers a connection past
`connections_max` with 503 and closes it, and closes a connection idle for
`idle_timeout_seconds`. Every refusal is counted (`refused`).
"""

from __future__ import annotations

from collections import Counter
from io import BytesIO
from typing import Any, Final

from attrs import frozen
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure as TwistedFailure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

__all__ = ["BoundedSite", "HttpLimits"]

_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n\r\n%s"
)
_TOO_LARGE: Final = (
    b"HTTP/1.1 413 Content Too Large\r\nconnection: close\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n\r\n%s"
)


@frozen(kw_only=True)
class HttpLimits:
    """An HTTP port's limits (from the cell file's ``limits:`` for the admin port)."""

    connections_max: int
    request_bytes_max: int
    idle_timeout_seconds: float
    connections_key: str
    """The configuration key named in a 503 (so an operator knows what to raise)."""
    request_bytes_key: str
    section: str = "limits"
    """The cell file's section of both keys (``web`` for the web page's port)."""


def _answer(template: bytes, text: str) -> bytes:
    body = (text + "\n").encode()
    return template % (len(body), body)


class _BoundedRequest(Request):
    """A request whose body is refused (413, connection closed) past the site's limit."""

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

    def _too_large(self, size: int) -> None:
        """Say why in a 413 and close: the rest of the body is never read or stored."""
        self._refused = True
        limits = self._limit()
        site = self.channel.site  # type: ignore[attr-defined]
        site.refused["request_bytes"] += 1
        text = (
            f"a request body of {size} bytes or more is above "
            f"{limits.section}.{limits.request_bytes_key}"
            f" ({limits.request_bytes_max})"
        )
        transport = self.channel.transport
        if transport is not None:
            transport.write(_answer(_TOO_LARGE, text))
            transport.loseConnection()


class _CountedChannel(HTTPChannel):
    """An HTTP connection that its site admits (or answers 503 and closes, reading nothing)
    and that tells its site when it ends."""

    _admitted = False

    def _site(self) -> BoundedSite:
        site = self.site  # type: ignore[attr-defined]
        assert isinstance(site, BoundedSite)
        return site

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        site = self._site()
        if site.connections < site.limits.connections_max:
            self._admitted = True
            site.connections += 1
            return
        site.refused["connections"] += 1
        text = (
            f"too many connections: {site.limits.section}.{site.limits.connections_key} "
            f"({site.limits.connections_max}); try again later"
        )
        assert self.transport is not None
        self.transport.write(_answer(_BUSY, text))
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._admitted:
            super().dataReceived(data)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: TwistedFailure = connectionDone) -> None:
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        if self._admitted:
            self._admitted = False
            self._site().connections -= 1


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
        self.refused: Counter[str] = Counter()
        """Refusals by kind: ``connections``, ``request_bytes``."""

    def log(self, request: Request) -> None:  # type: ignore[override]
        """No access log: a line per request would let anyone who reaches the port write
        the replica's log without bound (the metrics count what matters)."""
