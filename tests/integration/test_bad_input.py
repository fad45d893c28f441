"""Bad input against a live replica (reliability.md §5.3): refused, and nothing else changes.

Each raw-socket case sends bytes to the master's client (or peer) port and expects an
ErrorReply for no request with the right code, then the connection closed by the replica;
afterwards the replica still runs, other clients still read and write, and the namespace
holds exactly what it held before. One cell serves the whole module.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Final

import msgpack
import pytest
from attrs import frozen

from chubbypy.client.blocking import BlockingCell
from chubbypy.protocol.client import (
    NO_REQUEST,
    PROTOCOL_VERSION,
    ConnectionRole,
    ErrorReply,
    Hello,
    PeerFrame,
    RequestId,
    StatusReply,
    StatusRequest,
    Welcome,
    WireMessage,
)
from chubbypy.protocol.errors import InvalidName, TooLarge
from chubbypy.protocol.framing import encode_frame
from chubbypy.protocol.peer import CatchUpRequest
from chubbypy.protocol.values import LogIndex, ReplicaId
from chubbypy.protocol.wire import decode_wire, encode_wire
from tests.integration.harness import LiveCell

FRAME_BYTES_MAX: Final = 400_000
"""limits.frame_bytes_max of the cell: below the default (1 MiB), so that the cases show the
configured limit is the one enforced."""
FILE_BYTES_MAX: Final = 256 * 1024
"""limits.file_bytes_max of the cell (the default)."""
SENTINEL: Final = b"written before any bad input"
REPLY_SECONDS: Final = 5.0


@frozen
class Target:
    """The module's cell, its master, and a client that checks the cell after each case."""

    cell: LiveCell
    master: str
    client: BlockingCell

    def port(self, kind: str) -> int:
        ports = self.cell.ports[self.master]
        return ports.client if kind == "client" else ports.peer

    def assert_unharmed(self, case: str) -> None:
        """The replica runs and serves, and the namespace is as it was, plus `case` written
        to the health file."""
        self.cell.check_alive()
        self.client.set_contents(self.cell.path("health"), case.encode())
        assert self.client.get_contents_and_stat(self.cell.path("health")).contents == (
            case.encode()
        )
        assert self.client.get_contents_and_stat(self.cell.path("sentinel")).contents == SENTINEL
        names = [entry.name for entry in self.client.list_dir(self.cell.path())]
        assert names == ["acl", "health", "sentinel"], names  # acl/: the cell made it
        assert self.cell.master() == self.master, self.cell.explain()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A serving cell with a sentinel file, shared by the module's tests."""
    cell = LiveCell(
        tmp_path_factory.mktemp("bad-input"), limits={"frame_bytes_max": FRAME_BYTES_MAX}
    )
    try:
        cell.start()
        client = cell.client()
        client.create(cell.path("sentinel"), SENTINEL)
        client.create(cell.path("health"), b"")
        yield Target(cell, cell.wait_master(), client)
    finally:
        cell.close()


def frame(message: WireMessage) -> bytes:
    return encode_frame(encode_wire(message))


def raw_frame(plain: object) -> bytes:
    return encode_frame(msgpack.packb(plain, use_bin_type=True))


def hello(cell: str, *, version: int = PROTOCOL_VERSION, role: str = "client") -> bytes:
    kind = ConnectionRole.CLIENT if role == "client" else ConnectionRole.PEER
    return frame(Hello(version, cell, kind, "integration-test"))


def exchange(port: int, payload: bytes) -> tuple[list[WireMessage], bool]:
    """Send `payload` on a new connection; every message received until the replica closes
    it (or `REPLY_SECONDS` pass), and whether it closed it."""
    received, closed = b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_SECONDS) as sock:
        # The replica may refuse and close before it has read everything; its answer is
        # still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
    return decode_frames(received), closed


def decode_frames(data: bytes) -> list[WireMessage]:
    messages = []
    while len(data) >= 4:
        (length,) = struct.unpack(">I", data[:4])
        assert len(data) >= 4 + length, f"a truncated frame from the replica: {data!r:.200}"
        messages.append(decode_wire(data[4 : 4 + length]))
        data = data[4 + length :]
    assert not data, f"stray bytes from the replica: {data!r}"
    return messages


def status_request(request_id: int = 1) -> bytes:
    return frame(StatusRequest(RequestId(request_id)))


@frozen
class Case:
    """Bytes to send (made for the cell's name) to a port, and the error code expected."""

    name: str
    code: str
    payload: Callable[[str], bytes]
    port: str = "client"


CASES: Final = [
    Case("http-request", "FRAME_TOO_LARGE", lambda c: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    Case("garbage-in-small-frame", "BAD_REQUEST", lambda c: b"\x00\x00\x00\x05hello"),
    Case(
        "prefix-frame-max-plus-1",
        "FRAME_TOO_LARGE",
        lambda c: struct.pack(">I", FRAME_BYTES_MAX + 1),
    ),
    Case(
        # Refused on the prefix: the replica need not wait for the (here partial) body.
        "frame-max-plus-1-after-hello",
        "FRAME_TOO_LARGE",
        lambda c: hello(c) + struct.pack(">I", FRAME_BYTES_MAX + 1) + b"\x00" * 1000,
    ),
    Case(
        # Exactly at the limit the frame is read, and its (padded) body refused as msgpack.
        "frame-of-exactly-frame-max",
        "BAD_REQUEST",
        lambda c: hello(c) + encode_frame(msgpack.packb([14, 1]) + b"\x00" * (FRAME_BYTES_MAX - 3)),
    ),
    Case("prefix-2**32-1", "FRAME_TOO_LARGE", lambda c: b"\xff\xff\xff\xff"),
    Case("prefix-zero", "BAD_REQUEST", lambda c: b"\x00\x00\x00\x00"),
    Case("request-before-hello", "BAD_REQUEST", lambda c: status_request()),
    Case("unknown-tag-before-hello", "UNKNOWN_MESSAGE", lambda c: raw_frame([99, 1])),
    Case("unknown-tag", "UNKNOWN_MESSAGE", lambda c: hello(c) + raw_frame([99, 1])),
    Case("missing-field", "BAD_REQUEST", lambda c: hello(c) + raw_frame([14])),
    Case("wrong-field-type", "BAD_REQUEST", lambda c: hello(c) + raw_frame([14, "1"])),
    Case("integer-above-int64", "BAD_REQUEST", lambda c: hello(c) + raw_frame([14, 2**64 - 1])),
    Case("request-id-zero", "BAD_REQUEST", lambda c: hello(c) + raw_frame([14, 0])),
    Case("invalid-msgpack-byte", "BAD_REQUEST", lambda c: hello(c) + encode_frame(b"\xc1")),
    Case(
        "trailing-bytes",
        "BAD_REQUEST",
        lambda c: hello(c) + encode_frame(msgpack.packb([14, 1]) + b"\x00"),
    ),
    Case(
        "nested-100000-deep",
        "BAD_REQUEST",
        lambda c: hello(c) + encode_frame(b"\x91" * 100_000 + b"\xc0"),
    ),
    Case("map-not-array", "BAD_REQUEST", lambda c: hello(c) + raw_frame({"tag": 14})),
    Case(
        "reply-sent-by-a-client",
        "BAD_REQUEST",
        lambda c: hello(c) + frame(Welcome(1, c, ReplicaId("r1"))),
    ),
    Case(
        "peer-message-on-client-port",
        "BAD_REQUEST",
        lambda c: hello(c) + frame(PeerFrame(CatchUpRequest(LogIndex(1)))),
    ),
    Case("hello-twice", "BAD_REQUEST", lambda c: hello(c) + hello(c)),
    Case(
        "hello-other-version",
        "UNSUPPORTED_VERSION",
        lambda c: hello(c, version=PROTOCOL_VERSION + 1),
    ),
    Case("hello-other-cell", "WRONG_CELL", lambda c: hello("othercell")),
    Case("peer-hello-on-client-port", "BAD_REQUEST", lambda c: hello(c, role="peer")),
    Case(
        "garbage-after-valid-frames",
        "FRAME_TOO_LARGE",
        lambda c: hello(c) + status_request() + b"\xff" * 8,
    ),
    Case("peer-port-garbage", "FRAME_TOO_LARGE", lambda c: b"GET / HTTP/1.1\r\n\r\n", port="peer"),
    Case("peer-port-client-hello", "BAD_REQUEST", lambda c: hello(c), port="peer"),
    Case(
        "peer-port-message-before-hello",
        "PERMISSION_DENIED",
        lambda c: frame(PeerFrame(CatchUpRequest(LogIndex(1)))),
        port="peer",
    ),
    Case(
        "peer-port-hello-of-a-stranger",
        "PERMISSION_DENIED",
        lambda c: frame(Hello(PROTOCOL_VERSION, c, ConnectionRole.PEER, "r9")),
        port="peer",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_frame_is_refused_and_the_connection_closed(target: Target, case: Case) -> None:
    """Bad input gets an ErrorReply, then only its connection is closed; nothing else changes."""
    replies, closed = exchange(target.port(case.port), case.payload(target.cell.name))
    assert closed, f"{case.name}: the connection stayed open; received {replies}"
    assert replies, f"{case.name}: closed without an error reply"
    *before, refusal = replies
    assert all(isinstance(reply, Welcome) for reply in before), replies
    assert isinstance(refusal, ErrorReply), replies
    assert (refusal.code.name, refusal.request_id) == (case.code, NO_REQUEST), refusal
    assert refusal.message, refusal
    target.assert_unharmed(case.name)


def test_truncated_frame_then_close_leaves_the_replica_unharmed(target: Target) -> None:
    """A connection closed in the middle of a frame is logged and forgotten."""
    port = target.port("client")
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_SECONDS) as sock:
        sock.sendall(hello(target.cell.name) + struct.pack(">I", 100) + b"abc")
        welcome = sock.recv(65536)
    assert isinstance(decode_frames(welcome)[0], Welcome)
    target.cell.wait_for(
        lambda: (
            "connection closed in the middle of a frame (7 bytes pending)"
            in target.cell.log(target.master)
        ),
        "the replica logs the truncated frame",
        REPLY_SECONDS,
    )
    target.assert_unharmed("truncated")


def test_odd_segmentation_is_still_understood(target: Target) -> None:
    """A hello sent one byte at a time, then several requests in one segment, are answered."""
    port = target.port("client")
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_SECONDS) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in hello(target.cell.name):
            sock.sendall(bytes([byte]))
        sock.sendall(b"".join(status_request(i) for i in (1, 2, 3)))
        received = b""
        while len(replies := decode_complete(received)) < 4:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {replies}"
            received += chunk
    assert isinstance(replies[0], Welcome), replies
    assert all(isinstance(reply, StatusReply) for reply in replies[1:]), replies
    assert sorted(reply.request_id for reply in replies[1:]) == [1, 2, 3]  # type: ignore[union-attr]
    target.assert_unharmed("segmentation")


def decode_complete(data: bytes) -> list[WireMessage]:
    """The messages of the complete frames at the start of `data`."""
    messages = []
    while len(data) >= 4 and len(data) >= 4 + (length := struct.unpack(">I", data[:4])[0]):
        messages.append(decode_wire(data[4 : 4 + length]))
        data = data[4 + length :]
    return messages


@pytest.mark.parametrize(
    "name",
    [
        "bad name",
        "..",
        "a/../sentinel",
        "a//b",
        "trailing/",
        "nul\x00byte",
        "tab\tname",
        "caf\u00e9",
        "x" * 300,
        "/".join(["d"] * 40),
    ],
    ids=["space", "dotdot", "dotdot-inside", "empty-component", "trailing-slash", "nul",
         "control-char", "non-ascii", "long-component", "too-deep"],
)  # fmt: skip
def test_invalid_names_are_refused(target: Target, name: str) -> None:
    """Creating a badly formed name fails with InvalidName and creates nothing."""
    with pytest.raises(InvalidName):
        target.client.create(f"{target.cell.path()}/{name}", b"x")
    target.assert_unharmed(f"name {name!r:.40}")


def test_names_outside_the_cell_are_refused(target: Target) -> None:
    """A name in another cell, or outside /ls, fails with InvalidName."""
    for name in ("/ls/othercell/x", "/etc/passwd", f"/ls/{target.cell.name}x/y", ""):
        with pytest.raises(InvalidName):
            target.client.create(name, b"x")
    target.assert_unharmed("outside")


def test_too_large_file_is_refused_and_changes_nothing(target: Target) -> None:
    """Contents one byte above limits.file_bytes_max fail with TooLarge, on create and on set."""
    too_large = b"x" * (FILE_BYTES_MAX + 1)
    with pytest.raises(TooLarge):
        target.client.create(target.cell.path("big"), too_large)
    with pytest.raises(TooLarge):
        target.client.set_contents(target.cell.path("sentinel"), too_large)
    target.assert_unharmed("too large")
    # At the limit it is accepted (then removed, so the namespace is as before).
    stat = target.client.create(target.cell.path("big"), too_large[:-1])
    assert stat.size == FILE_BYTES_MAX
    target.client.delete(target.cell.path("big"))
    target.assert_unharmed("at the limit")
