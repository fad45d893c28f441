"""Floods of a replica's client port, each from a process of its own, for the security
tests (issue 13, item 5): what a hostile process on the same machine can send, which the
client library never would. Each prints what came back as one JSON object.

    python -m tests.integration.flooder connections PORT CELL COUNT HOLD [--hello|--half]
        COUNT sockets opened at once, held HOLD seconds: each says hello (--hello), sends
        the first half of a hello frame and no more (--half), or says nothing.
    python -m tests.integration.flooder acquires PORT CELL COUNT PATH
        a session holds the lock PATH; another sends COUNT blocking acquires of it at once.
    python -m tests.integration.flooder tokens PORT CELL COUNT CONNECTIONS
        COUNT Authenticate requests with a wrong token, spread over CONNECTIONS connections.

The floods run in their own processes so that their work (decoding 100,000 replies, say)
does not take the CPU of the test's honest client.
"""

from __future__ import annotations

import contextlib
import errno
import json
import resource
import selectors
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from chubbypy.protocol import SessionId
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    Authenticate,
    ConnectionRole,
    ErrorReply,
    Hello,
    RequestId,
    SessionReply,
)
from chubbypy.protocol.framing import encode_frame
from chubbypy.protocol.namespace import Create, LockMode
from chubbypy.protocol.session import (
    AcquireLock,
    CreateSession,
    HandleMode,
    HandleOpened,
    Open,
    SessionCreated,
)
from chubbypy.protocol.wire import decode_wire, encode_wire
from tests.integration.wire_client import WireClient

__all__ = ["hello_frame"]

CONNECT_SECONDS = 30.0
"""How long the connections flood waits for its sockets to connect."""
CONNECT_BATCH = 40
"""Sockets opened together; the next batch waits `CONNECT_PAUSE_SECONDS` (2,000 a second):
a replica's listening backlog is small (Twisted's default is 50), and past it the kernel
drops what arrives, or with SYN cookies completes connections the replica never sees."""
CONNECT_PAUSE_SECONDS = 0.02


def hello_frame(cell: str) -> bytes:
    """A client's Hello, framed."""
    return encode_frame(encode_wire(Hello(PROTOCOL_VERSION, cell, ConnectionRole.CLIENT, "flood")))


def _raise_fd_limit(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, count + 64) if hard != resource.RLIM_INFINITY else count + 64
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class _Socket:
    """One flood socket: what it received, and whether the replica closed it."""

    def __init__(self, port: int) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setblocking(False)
        self.connected = False
        self.failed = False
        self.closed_at: float | None = None
        self.received = b""
        code = self.socket.connect_ex(("127.0.0.1", port))
        if code not in (0, errno.EINPROGRESS):
            self.failed = True

    def first_message(self) -> str:
        """Its first message's kind: "Welcome", an error code's name, or "" (none)."""
        if len(self.received) < 4:
            return ""
        (length,) = struct.unpack(">I", self.received[:4])
        if len(self.received) < 4 + length:
            return ""
        message = decode_wire(self.received[4 : 4 + length])
        if isinstance(message, ErrorReply):
            return message.code.name
        return type(message).__name__

    def first_error_text(self) -> str:
        if self.first_message() in ("", "Welcome"):
            return ""
        (length,) = struct.unpack(">I", self.received[:4])
        message = decode_wire(self.received[4 : 4 + length])
        assert isinstance(message, ErrorReply)
        return message.message


def connections(port: int, cell: str, count: int, hold: float, first: bytes) -> dict[str, Any]:
    """Open `count` sockets at once, send `first` on each, hold them `hold` seconds while
    reading: how many connected, what each received first, how many the replica closed,
    and when."""
    _raise_fd_limit(count)
    started = time.monotonic()
    sockets: list[_Socket] = []
    connecting, reading = selectors.DefaultSelector(), selectors.DefaultSelector()
    for n in range(count):
        if n and n % CONNECT_BATCH == 0:
            # Those connected meanwhile say what they say at once, not after the others.
            _connected(connecting, reading, first, CONNECT_PAUSE_SECONDS)
        try:
            flood = _Socket(port)
        except OSError:
            break
        sockets.append(flood)
        if not flood.failed:
            connecting.register(flood.socket, selectors.EVENT_WRITE, flood)
    _connect_all(connecting, reading, started + CONNECT_SECONDS, first)
    connected = time.monotonic()
    _read_until(reading, connected + hold)
    report = _connections_report(sockets, started, connected)
    for flood in sockets:
        flood.socket.close()
    connecting.close()
    reading.close()
    return report


def _connect_all(
    connecting: selectors.BaseSelector,
    reading: selectors.BaseSelector,
    deadline: float,
    first: bytes,
) -> None:
    """Wait for each socket to connect (or fail), send it `first`, and move it to
    `reading`."""
    while connecting.get_map() and time.monotonic() < deadline:
        _connected(connecting, reading, first, 0.1)


def _connected(
    connecting: selectors.BaseSelector,
    reading: selectors.BaseSelector,
    first: bytes,
    timeout: float,
) -> None:
    """The sockets that connected (or failed) within `timeout`: sent `first`, and moved to
    `reading`."""
    if not connecting.get_map():
        time.sleep(timeout)
        return
    for key, _ in connecting.select(timeout=timeout):
        flood: _Socket = key.data
        connecting.unregister(flood.socket)
        if flood.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            flood.failed = True
            continue
        flood.connected = True
        if first:
            try:
                flood.socket.send(first)
            except OSError:
                flood.closed_at = time.monotonic()
                continue
        reading.register(flood.socket, selectors.EVENT_READ, flood)


def _read_until(selector: selectors.BaseSelector, deadline: float) -> None:
    while time.monotonic() < deadline and selector.get_map():
        for key, _ in selector.select(timeout=max(0.0, min(0.1, deadline - time.monotonic()))):
            flood = key.data
            try:
                chunk = flood.socket.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                flood.received += chunk
                continue
            flood.closed_at = time.monotonic()
            selector.unregister(flood.socket)


def _connections_report(sockets: list[_Socket], started: float, connected: float) -> dict[str, Any]:
    firsts = Counter(s.first_message() or "nothing" for s in sockets if s.connected)
    closed = sorted(s.closed_at - started for s in sockets if s.closed_at is not None)
    errors = [s.first_error_text() for s in sockets if s.first_error_text()]
    return {
        "sockets": len(sockets),
        "connected": sum(1 for s in sockets if s.connected),
        "connect_failed": sum(1 for s in sockets if s.failed or not s.connected),
        "first_message": dict(firsts),
        "closed_by_replica": len(closed),
        "closed_after_seconds": [round(closed[0], 3), round(closed[-1], 3)] if closed else [],
        "error_text": errors[0] if errors else "",
        "connect_seconds": round(connected - started, 3),
    }


def _session_call(client: WireClient, call: Any) -> Any:
    reply = client.call(lambda rid: _session_request(rid, call))
    assert isinstance(reply, SessionReply), reply
    return reply.result


def _session_request(request_id: RequestId, call: Any) -> Any:
    from chubbypy.protocol.client import SessionRequest

    return SessionRequest(request_id, call)


def _open_handle(client: WireClient, name: str, path: str) -> bytes:
    created = _session_call(client, CreateSession(name))
    assert isinstance(created, SessionCreated), created
    session = SessionId(created.session_id)
    opened = _session_call(
        client,
        Open(session, created.credential, path, HandleMode.READ | HandleMode.WRITE,
             create=Create(path)),
    )  # fmt: skip
    assert isinstance(opened, HandleOpened), opened
    return bytes(opened.handle)


def acquires(port: int, cell: str, count: int, path: str) -> dict[str, Any]:
    """A first session takes the lock at `path`; a second sends `count` blocking acquires
    of it through one handle, at once, reading the replies as they come: what came back,
    and how long the replica took to answer all but those still waiting."""
    holder = WireClient(port, cell, timeout_seconds=60)
    held = _open_handle(holder, "holder", path)
    locked = _session_call(holder, AcquireLock(held, LockMode.EXCLUSIVE, wait=False))
    assert type(locked).__name__ == "Locked", locked
    flood = WireClient(port, cell, timeout_seconds=60)
    handle = _open_handle(flood, "flooder", path)
    started = time.monotonic()
    make: Callable[[RequestId], Any] = lambda rid: _session_request(  # noqa: E731
        rid, AcquireLock(handle, LockMode.EXCLUSIVE, wait=True)
    )
    sent, replies, closed = _pipeline(flood, make, count, seconds=60.0)
    report = {
        "sent": sent,
        "closed_by_replica": closed,
        "seconds": round(time.monotonic() - started, 3),
        "replies": dict(Counter(_kind(r) for r in replies)),
        "message": next((r.message for r in replies if isinstance(r, ErrorReply)), ""),
    }
    flood.close()
    holder.close()
    return report


def _pipeline(
    client: WireClient, make: Callable[[RequestId], Any], count: int, seconds: float
) -> tuple[int, list[Any], bool]:
    """Send `count` requests at once from one thread while this one reads the replies,
    until a second passes with no reply after the last was sent (or `seconds` pass): how
    many were sent, the replies, and whether the replica closed the connection."""
    frames = b"".join(encode_frame(encode_wire(make(RequestId(n + 1000)))) for n in range(count))
    sock = client.raw_socket()
    sending = sock.dup()  # its own time-out: the replica may not read for a while
    sending.settimeout(seconds)
    outcome: dict[str, int] = {}

    def send() -> None:
        try:
            sending.sendall(frames)
            outcome["sent"] = count
        except OSError:
            outcome["sent"] = -1

    sender = threading.Thread(target=send)
    sock.settimeout(1.0)
    sender.start()
    deadline = time.monotonic() + seconds
    replies: list[Any] = []
    closed = False
    while time.monotonic() < deadline:
        try:
            replies.append(client.receive())
        except TimeoutError:
            if not sender.is_alive():
                break
        except (ConnectionError, OSError):
            closed = True
            break
    sock.settimeout(0.1)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sender.join()
    sending.close()
    return outcome.get("sent", -1), replies, closed


def tokens(port: int, cell: str, count: int, connection_count: int) -> dict[str, Any]:
    """`count` wrong-token Authenticate requests over `connection_count` connections, sent
    at once on each: what came back."""
    clients = [WireClient(port, cell, timeout_seconds=30) for _ in range(connection_count)]
    started = time.monotonic()
    per = count // connection_count
    replies: Counter[str] = Counter()
    closed = 0
    texts: set[str] = set()
    for client in clients:
        make: Callable[[RequestId], Any] = lambda rid: Authenticate(  # noqa: E731
            rid, "operator", "x" * 32
        )
        _, got, was_closed = _pipeline(client, make, per, seconds=10.0)
        replies.update(_kind(r) for r in got)
        texts.update(r.message for r in got if isinstance(r, ErrorReply))
        closed += int(was_closed)
        client.close()
    return {
        "sent": per * connection_count,
        "seconds": round(time.monotonic() - started, 3),
        "replies": dict(replies),
        "closed_by_replica": closed,
        "messages": sorted(texts)[:5],
    }


def _kind(reply: Any) -> str:
    if isinstance(reply, ErrorReply):
        return reply.code.name
    return type(reply).__name__


def main(argv: Sequence[str]) -> None:
    command, port, cell, *rest = argv
    match command:
        case "connections":
            count, hold = int(rest[0]), float(rest[1])
            hello = hello_frame(cell)
            first = hello if "--hello" in rest else b""
            first = hello[: len(hello) // 2] if "--half" in rest else first
            report = connections(int(port), cell, count, hold, first)
        case "acquires":
            report = acquires(int(port), cell, int(rest[0]), rest[1])
        case "tokens":
            report = tokens(int(port), cell, int(rest[0]), int(rest[1]))
        case _:
            raise SystemExit(f"unknown flood {command!r}")
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
