"""Replica addresses: what a user or a cell configuration writes, as Twisted client endpoints.

Shell (STYLE §6). A replica's address may come in three spellings, and all name the same
client endpoint once passed through `client_endpoint_string`, so the client keeps one
connection per replica however it learned the address:

* ``host:port`` (``[::1]:7201`` for IPv6), as typed on a command line;
* a Twisted *server* endpoint string, as in the cell's YAML and in `MasterLocation` replies
  (``tcp:7201:interface=127.0.0.1``): the client connects to the interface, or to the
  loopback address when the replica listens on every interface (or names none);
* a Twisted *client* endpoint string (``tcp:host=db1:port=7201``, ``unix:path=/run/r1``),
  used as it is.

Pure string work: nothing here connects.
"""

from __future__ import annotations

from typing import Final

__all__ = ["client_endpoint_string", "display_address", "endpoint_fields"]

_SERVER_KINDS: Final = ("tcp", "ssl")
_CLIENT_KEYS: Final = ("host", "path")
_WILDCARDS: Final = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
"""A server that listens on every interface is reached, from its own host, on loopback."""


def client_endpoint_string(address: str) -> str:
    """The Twisted client endpoint description that reaches the replica at `address`.

    Raises `ValueError`, naming the address, if it is none of the spellings above.
    """
    text = address.strip()
    kind, colon, rest = text.partition(":")
    if not colon:
        raise ValueError(f"{address!r} is not an address: expected host:port or an endpoint")
    fields = _split(rest)
    keys = {field.partition("=")[0] for field in fields if "=" in field}
    if keys & set(_CLIENT_KEYS):
        return text  # Already a client endpoint: Twisted checks the rest when connecting.
    if kind in _SERVER_KINDS:
        return _from_server_string(address, kind, fields)
    if kind == "unix":
        path = _keyword(fields, "address") or (fields[0] if "=" not in fields[0] else "")
        if not path:
            raise ValueError(f"{address!r}: a unix endpoint needs a path")
        return f"unix:path={_quote(path)}"
    return _from_host_port(address, text)


def display_address(description: str) -> str:
    """A short form of a client endpoint description for people: ``host:port`` or a path."""
    kind, _, rest = description.partition(":")
    fields = _split(rest)
    if kind == "tcp" and (host := _keyword(fields, "host")) and (port := _keyword(fields, "port")):
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if kind == "unix" and (path := _keyword(fields, "path")):
        return path
    return description


def endpoint_fields(description: str) -> dict[str, str]:
    """The keyword fields of an endpoint description (``host``, ``port``, ...), unescaped."""
    _, _, rest = description.partition(":")
    return {
        name: value
        for name, equals, value in (field.partition("=") for field in _split(rest))
        if equals
    }


def _from_server_string(address: str, kind: str, fields: list[str]) -> str:
    positional = [field for field in fields if "=" not in field]
    port = _keyword(fields, "port") or (positional[0] if positional else "")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{address!r}: expected a port number from 1 to 65535")
    interface = _keyword(fields, "interface") or ""
    host = _WILDCARDS.get(interface, interface)
    return f"{kind}:host={_quote(host)}:port={int(port)}"


def _from_host_port(address: str, text: str) -> str:
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"{address!r} is not an address: expected host:port (port 1 to 65535), "
            'or a Twisted endpoint such as "tcp:host=127.0.0.1:port=7201"'
        )
    return f"tcp:host={_quote(host)}:port={int(port)}"


def _split(text: str) -> list[str]:
    """Fields of an endpoint description, split on unescaped colons and unescaped."""
    fields, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def _keyword(fields: list[str], key: str) -> str | None:
    for field in fields:
        name, equals, value = field.partition("=")
        if equals and name == key:
            return value
    return None


def _quote(value: str) -> str:
    """`value` escaped for an endpoint description (Twisted's quoteStringArgument)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")
