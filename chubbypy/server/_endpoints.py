"""Turning a configured listening endpoint into the endpoint others connect to.

The cell file names each replica's addresses as Twisted *server* endpoint strings
(``tcp:7101:interface=127.0.0.1``); peers and clients need the matching *client* string
(``tcp:127.0.0.1:7101``). Only what a cell file may hold is supported: tcp and unix.
"""

from __future__ import annotations

from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint


def server_endpoint(reactor: object, description: str) -> IStreamServerEndpoint:
    """A listening endpoint from a configured description (Twisted's parser, typed)."""
    endpoint: IStreamServerEndpoint = serverFromString(reactor, description)  # type: ignore[no-untyped-call]
    return endpoint


def client_endpoint(reactor: object, description: str) -> IStreamClientEndpoint:
    """A connecting endpoint from a client description (Twisted's parser, typed)."""
    endpoint: IStreamClientEndpoint = clientFromString(reactor, description)  # type: ignore[no-untyped-call]
    return endpoint


def _split(description: str) -> tuple[str, list[str], dict[str, str]]:
    kind, _, rest = description.partition(":")
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in rest.split(":") if rest else []:
        key, equals, value = part.partition("=")
        if equals:
            named[key] = value
        else:
            positional.append(part)
    return kind, positional, named


def connect_string(listen: str) -> str:
    """The client endpoint string that reaches a server listening on `listen`."""
    kind, positional, named = _split(listen)
    if kind == "tcp":
        port = named.get("port") or (positional[0] if positional else "")
        host = named.get("interface") or "127.0.0.1"
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = host.replace(":", "\\:")
        return f"tcp:host={host}:port={port}"
    if kind == "unix":
        path = named.get("address") or (positional[0] if positional else "")
        return f"unix:path={path}"
    raise ValueError(f"cannot connect to a {kind!r} endpoint: {listen!r}")


def http_url(listen: str) -> str:
    """The http URL of an admin endpoint (tcp only)."""
    kind, positional, named = _split(listen)
    if kind != "tcp":
        raise ValueError(f"the admin endpoint must be tcp: {listen!r}")
    port = named.get("port") or positional[0]
    host = named.get("interface") or "127.0.0.1"
    return f"http://{host}:{port}"


def tcp_listen_address(listen: str) -> tuple[str, int] | None:
    """The interface ("" for every one) and port a ``tcp:`` or ``ssl:`` endpoint listens
    on, as Twisted binds them; None for another kind (``unix:``) or a port that is not a
    number."""
    kind, positional, named = _split(listen)
    if kind not in ("tcp", "ssl"):
        return None
    port = named.get("port") or (positional[0] if positional else "")
    if not port.isdigit():
        return None
    return named.get("interface", ""), int(port)
