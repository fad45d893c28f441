"""A client that speaks the wire protocol over a plain blocking socket, for the integration
tests' attackers: it sends whatever it is told (another client's id, a guessed credential,
20,000 registrations without waiting), which the client library never would.

Run as a program (``python -m tests.integration.wire_client flood PORT CELL COUNT``) it
floods a replica with COUNT registrations on one connection, in a process of its own (so
that its work does not slow the test's own clients), and prints what came back as JSON.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    ClientRequest,
    ConnectionRole,
    ErrorReply,
    Hello,
    Register,
    RequestId,
    ServerReply,
    Welcome,
)
from chubbypy.protocol.framing import encode_frame
from chubbypy.protocol.wire import decode_wire, encode_wire

__all__ = ["WireClient"]

RECEIVE_BYTES = 1 << 16


class WireClient:
    """One client connection to a replica's client port, said hello to."""

    def __init__(self, port: int, cell: str, timeout_seconds: float = 10.0) -> None:
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=timeout_seconds)
        self._received = b""
        self._request_ids = itertools.count(1)
        self._socket.sendall(
            encode_frame(encode_wire(Hello(PROTOCOL_VERSION, cell, ConnectionRole.CLIENT, "wire")))
        )
        welcome = self._next_message()
        assert isinstance(welcome, Welcome), welcome

    def close(self) -> None:
        self._socket.close()

    def raw_socket(self) -> socket.socket:
        """The connection's socket, for a test that sends bytes no client would."""
        return self._socket

    def call(self, make: Callable[[RequestId], ClientRequest]) -> ServerReply:
        """Send one request and wait for its reply (replies to others are dropped)."""
        (request_id,) = self.send([make])
        while True:
            reply = self.receive()
            if reply.request_id == request_id:
                return reply

    def send(self, makers: Iterable[Callable[[RequestId], ClientRequest]]) -> list[RequestId]:
        """Send every request at once, without waiting for a reply; their ids."""
        ids, frames = [], []
        for make in makers:
            request_id = RequestId(next(self._request_ids))
            ids.append(request_id)
            frames.append(encode_frame(encode_wire(make(request_id))))
        self._socket.sendall(b"".join(frames))
        return ids

    def receive(self) -> ServerReply:
        """The next reply on the connection."""
        message = self._next_message()
        assert not isinstance(message, Welcome | Hello), message
        return message  # type: ignore[return-value]

    def _next_message(self) -> object:
        while True:
            if len(self._received) >= 4:
                (length,) = struct.unpack(">I", self._received[:4])
                if len(self._received) >= 4 + length:
                    body = self._received[4 : 4 + length]
                    self._received = self._received[4 + length :]
                    return decode_wire(body)
            chunk = self._socket.recv(RECEIVE_BYTES)
            if not chunk:
                raise ConnectionError("the replica closed the connection")
            self._received += chunk


def flood(port: int, cell: str, count: int) -> dict[str, object]:
    """`count` registrations sent at once on one new connection: what came back, and how
    long the replica took to answer them all."""
    client = WireClient(port, cell, timeout_seconds=60)
    started = time.monotonic()
    client.send([lambda rid, n=n: Register(rid, n + 1) for n in range(count)])  # type: ignore[misc]
    replies = [client.receive() for _ in range(count)]
    seconds = time.monotonic() - started
    client.close()
    errors = [r for r in replies if isinstance(r, ErrorReply)]
    return {
        "seconds": seconds,
        "replies": dict(Counter(type(r).__name__ for r in replies)),
        "codes": sorted({e.code.name for e in errors}),
        "message": errors[0].message if errors else "",
    }


def main(argv: Sequence[str]) -> None:
    command, port, cell, count = argv
    assert command == "flood", command
    print(json.dumps(flood(int(port), cell, int(count))))


if __name__ == "__main__":
    main(sys.argv[1:])
