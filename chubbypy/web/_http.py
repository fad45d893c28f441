"""The HTTP edge of the web page: bounded bodies and connections, Host checks, headers.

Shell (STYLE §1, §6), on twisted.web. Everything here runs before a request reaches a
page or the API, so that no page can forget it:

* **Bounded input.** `BoundedRequest` refuses a body longer than ``web.request_body_bytes_max``
  as soon as its length is known (or, for a chunked body, as soon as it passes the bound):
  the connection gets a 413 and is closed, and nothing more of the body is kept.
  `ConnectionLimit` closes connections past ``web.connections_max`` at once. `json_depth`
  measures how deeply a JSON text nests before the parser sees it.
* **Host checks** (`HostCheck`): a page that another web site's DNS name resolves to (DNS
  rebinding) would be same-origin for that site's scripts; a request whose ``Host`` is not
  the listening address, a loopback name or a configured ``web.hosts`` name is refused.
* **Headers** (`secure_headers`): every answer forbids framing, sniffing, referrers and
  inline scripts (``Content-Security-Policy: default-src 'self'``), and is never cached.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any, Final

from twisted.internet.interfaces import IAddress
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.server import Request, Site

__all__ = [
    "BoundedRequest",
    "ConnectionLimit",
    "HostCheck",
    "WebSite",
    "json_depth",
    "secure_headers",
]

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""Only this server's own files, no inline script or style, no framing, forms post here."""

SECURITY_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)

LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "[::1]")


def secure_headers(request: Request, *, tls: bool, cache: bool = False) -> None:
    """Set the headers every answer carries; `cache` only for the static files."""
    for name, value in SECURITY_HEADERS:
        request.setHeader(name, value)
    request.setHeader(b"cache-control", b"max-age=300" if cache else b"no-store")
    if tls:
        request.setHeader(b"strict-transport-security", b"max-age=31536000")


class HostCheck:
    """Which ``Host`` headers name this server: the listening interface (when it is not a
    wildcard), the loopback names and the configured `names`, each with the port the
    server listens on (or without one, on the scheme's default port)."""

    def __init__(self, interface: str, port: int, names: Iterable[str], *, tls: bool) -> None:
        hosts = {*LOOPBACK_NAMES, *names}
        if interface not in ("", "0.0.0.0", "::"):
            hosts.add(f"[{interface}]" if ":" in interface else interface)
        allowed = {f"{host}:{port}" for host in hosts}
        if port == (443 if tls else 80):
            allowed |= hosts
        self.allowed = frozenset(name.lower() for name in allowed)

    def admits(self, header: bytes | None) -> bool:
        """Whether a request with this ``Host`` header may be served."""
        if header is None:
            return False
        try:
            host = header.decode("ascii").strip().lower().rstrip(".")
        except UnicodeDecodeError:
            return False
        return host in self.allowed or host.replace(".:", ":") in self.allowed


def json_depth(text: bytes) -> int:
    """How deeply the arrays and objects of JSON `text` nest (brackets inside strings do not
    count): a linear scan that is safe on any bytes, to refuse deep nesting before the
    parser, which recurses, sees it."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


TOO_LARGE_BODY: Final = json.dumps(
    {"error": "PAYLOAD_TOO_LARGE", "message": "the request body is larger than this page takes"}
).encode()


class BoundedRequest(Request):
    """A `Request` whose body is refused past the site's ``body_bytes_max``: the client is
    answered 413 and the connection closed, and the bytes already received dropped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.body_received = 0
        self.refused = False

    def _body_bytes_max(self) -> int:
        site = getattr(self.channel, "site", None)
        return site.body_bytes_max if isinstance(site, WebSite) else 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._body_bytes_max():
            self._refuse()
            super().gotLength(0)  # type: ignore[no-untyped-call]
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self.body_received += len(data)
        if self.body_received > self._body_bytes_max():
            self._refuse()
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def _refuse(self) -> None:
        """Answer 413 on the transport now and close: the rest of the body is never read."""
        self.refused = True
        self.content = io.BytesIO()
        channel = self.channel
        if channel is None or channel.transport is None:
            return
        headers = [b"HTTP/1.1 413 Payload Too Large", b"content-type: application/json"]
        headers += [name + b": " + value for name, value in SECURITY_HEADERS]
        headers += [b"cache-control: no-store", b"connection: close"]
        headers.append(b"content-length: " + str(len(TOO_LARGE_BODY)).encode())
        channel.transport.write(b"\r\n".join(headers) + b"\r\n\r\n" + TOO_LARGE_BODY)
        channel.transport.loseConnection()

    def process(self) -> None:
        if self.refused:
            return  # answered already, and the connection is closing
        super().process()  # type: ignore[no-untyped-call]


class WebSite(Site):
    """A `Site` of `BoundedRequest`s, with the body bound and no tracebacks shown."""

    def __init__(self, resource: Any, *, body_bytes_max: int, timeout: float = 60.0) -> None:
        super().__init__(resource, requestFactory=BoundedRequest, timeout=timeout)  # type: ignore[no-untyped-call]
        self.body_bytes_max = body_bytes_max
        self.displayTracebacks = False

    def log(self, request: Any) -> None:
        """No access log: the tree's names are the visitors' business, and a mistaken
        script putting a token in a URL must not see it written down."""


class ConnectionLimit(WrappingFactory):
    """Wraps a factory: at most `maximum` connections open at once; one more is closed as
    soon as it is accepted (and counted in `refused`)."""

    def __init__(self, wrapped: Site, maximum: int) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.maximum = maximum
        self.refused = 0

    def buildProtocol(self, addr: IAddress | None) -> ProtocolWrapper | None:  # type: ignore[override]
        if len(self.protocols) >= self.maximum:
            self.refused += 1
            return None
        return super().buildProtocol(addr)
