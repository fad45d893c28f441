"""Input that costs a replica more than it costs the sender, on real processes (issue 13's
review): a ~1 MiB frame sent instead of a Hello (client port) or before the proof (peer
port), which the replica used to decode whole (0.5-2 s of its reactor) before looking at
the connection's state; a greeted client's 1 MiB request of a quarter of a million tiny
arrays; and clients that pipeline reads of a 256 KiB file and never read the replies,
which the replica used to buffer in full (~256 MB a connection).

Each is aimed at the master while an honest client writes on (`honest_writes`: no
fail-over, every write acknowledged); each is refused, or held, where it passes a limit,
naming the key, and the master's reactor turns stay short (`chubbypy_reactor_turn_seconds`)
and its memory bounded (its resident set, from /proc)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable

import msgpack
from attrs import frozen

from chubbypy.protocol import ValueKind
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    ConnectionRole,
    ErrorReply,
    Hello,
    ReadReply,
    ReadRequest,
    RequestId,
    Welcome,
)
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.namespace import GetContentsAndStat
from chubbypy.protocol.wire import decode_wire, encode_wire
from tests.integration.harness import LiveCell, Measure
from tests.integration.test_security_floods import counter, honest_writes

FRAME_BYTES_MAX = 1 << 20
HEAVY_CONNECTIONS = 20
"""Connections that each send one heavy frame, all completing at once (on the peer port
8, the unproven connections one address may hold, limits.peer_handshakes_per_address_max:
a ninth closes the oldest)."""
TURN_SECONDS_MAX = 1.0
"""No reactor turn of the master may take longer during an attack (its lease is 0.6 s by
default: a turn of a second or more, as before, lost it)."""


def _catch_up_frame() -> bytes:
    """The review's frame: a PeerFrame holding a CatchUp of as many one-command entries as
    fit in a frame (57k), built as raw msgpack (as an attacker would): cheap to send,
    1-2 s to decode."""
    kind = int(ValueKind.COMMANDS)
    entries = [[i + 1, [1, "r"], [0, kind, [[0, 0, b"", 0]]]] for i in range(57_000)]
    inner = msgpack.packb([9, entries, 0], use_bin_type=True)
    body = msgpack.packb([30, inner], use_bin_type=True)
    assert len(body) < FRAME_BYTES_MAX
    return encode_frame(body)


def _tiny_arrays_request() -> bytes:
    """A greeted client's WriteRequest of a MultiOp guarded by 262k Exists tests, just
    under a frame: 0.85 s to decode whole."""
    tests = [[1, "a"]] * ((FRAME_BYTES_MAX - 64) // 4)
    plain = [12, 1, 1, bytes(16), 1, 1, [5, tests, [], []]]
    return encode_frame(msgpack.packb(plain, use_bin_type=True))


def _hello(cell: LiveCell) -> bytes:
    return encode_frame(encode_wire(Hello(PROTOCOL_VERSION, cell.name, ConnectionRole.CLIENT, "x")))


def _turns(cell: LiveCell, rid: str) -> dict[str, float]:
    """The master's turn-length histogram: cumulative counts by bucket, and the count."""
    body = cell.admin_get(rid, "/metrics") or ""
    pattern = r'^chubbypy_reactor_turn_seconds_bucket\{le="([^"]+)"\} (\S+)$'
    return {le: float(n) for le, n in re.findall(pattern, body, re.MULTILINE)}


def _longer_than(before: dict[str, float], after: dict[str, float], bound: str) -> float:
    """Turns between the two readings longer than `bound` seconds."""
    return (after["+Inf"] - after[bound]) - (before["+Inf"] - before[bound])


def _first_reply(sock: socket.socket) -> ErrorReply | Welcome | None:
    """The first message the replica sends on `sock` (None if it sends none)."""
    decoder, frames = FrameDecoder(FRAME_BYTES_MAX), list[bytes]()
    while not frames:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return None
        if not chunk:
            return None
        frames = decoder.feed(chunk)
    message = decode_wire(frames[0])
    assert isinstance(message, ErrorReply | Welcome), message
    return message


def _attack(
    cell: LiveCell, port: int, connections: int, greet: bool, frame: bytes
) -> tuple[list[object], float]:
    """`connections` connections to `port` (greeted first, if `greet`) each send `frame`,
    all but its last byte, then every last byte at once; the refusals, and how long the
    last took to come."""
    socks = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if greet:
            sock.sendall(_hello(cell))
            assert isinstance(_first_reply(sock), Welcome)
        with contextlib.suppress(OSError):  # refused from its prefix, closed under our feet
            sock.sendall(frame[:-1])
        socks.append(sock)
    started = time.monotonic()
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.send(frame[-1:])
    refusals: list[object] = [_first_reply(sock) for sock in socks]
    took = time.monotonic() - started
    for sock in socks:
        sock.close()
    return refusals, took


@frozen
class Attack:
    """One frame sent on many connections to one of the master's ports, and the refusal
    expected: its code, and the key it names."""

    name: str
    port: str
    connections: int
    greet: bool
    frame: Callable[[], bytes]
    code: str
    key: str


def _refused_fast(make_cell: Callable[..., LiveCell], measure: Measure, attack: Attack) -> None:
    """`attack` on a new cell's master, an honest client writing on: each connection is
    refused as expected, promptly, and no turn of the master's reactor takes a second."""
    name, frame, code, key = attack.name, attack.frame(), attack.code, attack.key
    cell = make_cell()
    master = cell.wait_master()
    port = getattr(cell.ports[master], attack.port)
    with honest_writes(cell, measure, name) as began:
        before = _turns(cell, master)
        began()
        refusals, took = _attack(cell, port, attack.connections, attack.greet, frame)
        after = _turns(cell, master)
    measure(f"{name}: {attack.connections} refused within", took)
    slow = {bound: _longer_than(before, after, bound) for bound in ("0.1", "0.5", "1")}
    print(f"{name}: turns longer than 0.1 s, 0.5 s, 1 s: {list(slow.values())}")
    assert all(isinstance(r, ErrorReply) for r in refusals), refusals
    assert {r.code.name for r in refusals if isinstance(r, ErrorReply)} == {code}, refusals
    assert all(key in r.message for r in refusals if isinstance(r, ErrorReply)), refusals
    assert took < 5.0
    assert slow["1"] == 0, slow


def test_a_heavy_frame_instead_of_a_hello_is_refused_from_its_prefix(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """20 connections to the master's client port each send a ~1 MiB CatchUp PeerFrame
    instead of a Hello: each is refused FRAME_TOO_LARGE naming
    limits.hello_frame_bytes_max within seconds (not at the hello time-out), no reactor
    turn takes a second, and no fail-over happens."""
    attack = Attack(
        "heavy frame before the hello", "client", HEAVY_CONNECTIONS, False, _catch_up_frame,
        "FRAME_TOO_LARGE", "limits.hello_frame_bytes_max",
    )  # fmt: skip
    _refused_fast(make_cell, measure, attack)


def test_a_heavy_frame_before_the_proof_is_refused_from_its_prefix(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """The same frames on 8 connections to the master's peer port, before any hello or
    proof: each is refused FRAME_TOO_LARGE naming limits.hello_frame_bytes_max, no turn takes a
    second, and no fail-over happens."""
    attack = Attack(
        "heavy frame before the proof", "peer", 8, False, _catch_up_frame,
        "FRAME_TOO_LARGE", "limits.hello_frame_bytes_max",
    )  # fmt: skip
    _refused_fast(make_cell, measure, attack)


def test_a_request_of_tiny_arrays_is_refused_without_decoding_it_whole(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """20 greeted connections each send a 1 MiB MultiOp of 262k tests: decoding stops at
    the array past limits.request_arrays_max (BAD_REQUEST naming it), no turn takes a
    second, and no fail-over happens."""
    attack = Attack(
        "tiny arrays after the hello", "client", HEAVY_CONNECTIONS, True, _tiny_arrays_request,
        "BAD_REQUEST", "limits.request_arrays_max",
    )  # fmt: skip
    _refused_fast(make_cell, measure, attack)


UNREAD_CONNECTIONS = 4
UNREAD_READS = 200
"""Reads of a 256 KiB file pipelined on each connection (50 MiB of replies each)."""


def _resident_mib(cell: LiveCell, rid: str) -> float:
    """Replica `rid`'s resident set, in MiB (from /proc)."""
    status = open(f"/proc/{cell._processes[rid].pid}/status").read()  # noqa: SIM115
    (kib,) = re.findall(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    return int(kib) / 1024


def test_clients_that_never_read_their_replies_cost_a_bounded_buffer(
    make_cell: Callable[..., LiveCell], measure: Measure
) -> None:
    """4 connections each pipeline 200 reads of a 256 KiB file and read nothing: the
    master handles each connection's reads only until about limits.reply_bytes_buffered_max
    (4 MiB) of replies wait unread, then holds the rest (counted on /metrics), its memory
    growing by tens of MiB, not the 200 MiB those replies would take; the honest client
    writes on. A connection that then reads gets every reply, in order."""
    cell = make_cell()
    master = cell.wait_master()
    big = cell.path("big")
    cell.client().create(big, b"B" * (256 * 1024))
    port = cell.ports[master].client
    resident_before = _resident_mib(cell, master)
    socks = []
    with honest_writes(cell, measure, "unread replies") as began:
        began()
        for k in range(UNREAD_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            if k:  # as the review's flooder did; the first reads everything at the end
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reads = b"".join(
                encode_frame(encode_wire(ReadRequest(RequestId(n), GetContentsAndStat(big))))
                for n in range(1, UNREAD_READS + 1)
            )
            # The replica stops reading a connection it holds: send from a thread.
            threading.Thread(target=sock.sendall, args=(_hello(cell) + reads,), daemon=True).start()
            socks.append(sock)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:  # until every flooding connection is held
            if counter(cell, master, "chubbypy_client_connections_held") == UNREAD_CONNECTIONS:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        grown = _resident_mib(cell, master) - resident_before
        unread = counter(cell, master, "chubbypy_client_reply_bytes_unread")
    print(f"unread replies: {unread / 2**20:.1f} MiB unread, resident set grew {grown:.0f} MiB")
    assert grown < 64, grown
    held = 'chubbypy_client_requests_held_total{limit="reply_bytes_buffered_max"}'
    assert counter(cell, master, held) >= UNREAD_CONNECTIONS
    assert 0 < unread <= UNREAD_CONNECTIONS * ((4 << 20) + (300 << 10))
    reader = socks[0]
    reader.settimeout(20)
    decoder, replies = FrameDecoder(FRAME_BYTES_MAX), list[object]()
    started = time.monotonic()
    while len(replies) < UNREAD_READS + 1 and time.monotonic() - started < 60:
        chunk = reader.recv(1 << 20)
        assert chunk, f"closed after {len(replies)} frames"
        replies += [decode_wire(body) for body in decoder.feed(chunk)]
    measure(
        "unread replies: one connection then read all its replies in", time.monotonic() - started
    )
    assert isinstance(replies[0], Welcome)
    assert [r.request_id for r in replies[1:] if isinstance(r, ReadReply)] == list(
        range(1, UNREAD_READS + 1)
    )
    for sock in socks:
        sock.close()
