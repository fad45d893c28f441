"""The HTTP edge of the web page: bounded bodies and connections, Host checks, headers.

Shell (STYLE §1, §6), on twisted.web. Everything here runs before a request reaches a
page or the API, so that no page can forget it:

* **Bounded input.** The site is the replicas' admin ports' `chubbypy.server._http.BoundedSite`
  (with the ``web:`` keys): a body longer than ``web.request_body_bytes_max`` is refused
  (413, connection closed) before any of it is stored, connections past
  ``web.connections_max`` are answered 503 and closed, idle ones are closed. `json_depth`
  measures how deeply a JSON text nests before the parser sees it.
* **Host checks** (`HostCheck`): a page that another web site's DNS name resolves to (DNS
  rebinding) would be same-origin for that site's scripts; a request whose ``Host`` is not
  the listening address, a loopback name or a configured ``web.hosts`` name is refused.
* **Headers** (`secure_headers`): every answer forbids framing, sniffing, referrers and
  inline scripts (``Content-Security-Policy: default-src 'self'``), and is never cached.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from twisted.web.server import Request

__all__ = ["HostCheck", "json_depth", "secure_headers"]

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
