"""Replica addresses: every spelling becomes the Twisted client endpoint that reaches it."""

from __future__ import annotations

import pytest

from chubbypy.client import client_endpoint_string, display_address
from chubbypy.client._addresses import endpoint_fields
from chubbypy.client._tls import load_trust


@pytest.mark.parametrize(
    ("address", "endpoint"),
    [
        ("127.0.0.1:7201", "tcp:host=127.0.0.1:port=7201"),
        (" db1.example:7201 ", "tcp:host=db1.example:port=7201"),
        ("[::1]:7201", "tcp:host=\\:\\:1:port=7201"),
        ("tcp:7201:interface=127.0.0.1", "tcp:host=127.0.0.1:port=7201"),
        ("tcp:7201", "tcp:host=127.0.0.1:port=7201"),
        ("tcp:port=7201:interface=0.0.0.0", "tcp:host=127.0.0.1:port=7201"),
        ("tcp:7201:interface=\\:\\:", "tcp:host=\\:\\:1:port=7201"),
        ("tcp:7201:backlog=50:interface=10.0.0.5", "tcp:host=10.0.0.5:port=7201"),
        ("ssl:7443:privateKey=k.pem:interface=10.0.0.5", "ssl:host=10.0.0.5:port=7443"),
        ("unix:/run/chubby/r1.sock", "unix:path=/run/chubby/r1.sock"),
        ("unix:address=/run/r1:mode=600", "unix:path=/run/r1"),
        ("tcp:host=db1:port=7201:timeout=3", "tcp:host=db1:port=7201:timeout=3"),
        ("unix:path=/run/r1", "unix:path=/run/r1"),
    ],
)
def test_each_spelling_maps_to_a_client_endpoint(address: str, endpoint: str) -> None:
    """host:port, server endpoint strings and client endpoint strings all connect."""
    assert client_endpoint_string(address) == endpoint


@pytest.mark.parametrize(
    "address", ["nowhere", "db1:", ":7201", "db1:http", "db1:70000", "tcp:0", "tcp:x", "unix:"]
)
def test_what_is_not_an_address_is_refused(address: str) -> None:
    """Anything without a usable host and port (or path) is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"expected|needs a path"):
        client_endpoint_string(address)


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        ("tcp:host=127.0.0.1:port=7201", "127.0.0.1:7201"),
        ("tcp:host=\\:\\:1:port=7201", "[::1]:7201"),
        ("unix:path=/run/r1", "/run/r1"),
        ("ssl:host=h:port=1", "ssl:host=h:port=1"),
    ],
)
def test_display_address_is_short(endpoint: str, shown: str) -> None:
    """Endpoints are shown to people as host:port or a path when possible."""
    assert display_address(endpoint) == shown


def test_endpoint_fields_are_unescaped() -> None:
    """endpoint_fields reads a description's keyword fields, undoing the escapes."""
    fields = endpoint_fields("ssl:host=\\:\\:1:port=7201")
    assert fields == {"host": "::1", "port": "7201"}


def test_a_ca_file_that_cannot_be_used_is_named() -> None:
    """load_trust names a missing CA file, or one that holds no certificate."""
    with pytest.raises(ValueError, match=r"cannot read the CA file /nonexistent/ca\.pem"):
        load_trust("/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        load_trust(__file__)
