"""Security suite, peer input (issue 13, item 4): every value a peer sends is checked before use.

Each case opens a connection to a follower's peer port as a member of the cell would, sends
one Paxos message a correct replica never sends (a ballot round past 64 bits, a log index past
its range, a snapshot that is not one), and expects it refused: an ErrorReply, the connection
closed by the replica, nothing changed (the follower's promise, snapshot and log, the cell's
master and namespace), the follower still running, the cell still serving, and the follower
restarting cleanly from its disk afterwards. Before issue 13 a Heartbeat with ballot round
2**63 stopped the follower ("the store failed; stopping": SQLite integers are signed 64-bit)
and an InstallSnapshot of garbage bricked it (every restart crashed in msgpack).

The last tests damage a stopped replica's store on disk and check it then refuses to start:
it exits non-zero, promptly, with one clear line (before, it crashed at start-up and stayed
alive doing nothing, held up by its store thread).

`peer_handshake` is the one place that knows how a peer connection begins: peer
authentication (issue 13, item 1) changes that handshake, and only that function.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import msgpack
import pytest
from attrs import frozen

from chubbypy.client.blocking import BlockingCell
from chubbypy.namespace import NamespaceMachine
from chubbypy.paxos import Applier, membership_of_ids
from chubbypy.protocol import (
    Ballot,
    Entry,
    Epoch,
    InstallSnapshot,
    LogIndex,
    ReplicaId,
    Snapshot,
    Value,
    ValueKind,
)
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    ConnectionRole,
    ErrorReply,
    Hello,
    PeerChallenge,
    PeerChallengeReply,
    PeerFragment,
    PeerProof,
    Welcome,
    WireMessage,
)
from chubbypy.protocol.codec import encode_message
from chubbypy.protocol.framing import encode_frame
from chubbypy.protocol.wire import decode_wire, encode_wire
from chubbypy.server._peer_auth import PeerKey, new_nonce
from tests.integration.harness import REPLICA_IDS, START_SECONDS, LiveCell

REPLY_SECONDS: Final = 5.0
SENTINEL: Final = b"written before any peer input"
INT64_MAX: Final = 2**63 - 1
UINT64_MAX: Final = 2**64 - 1
"""The largest integer msgpack can carry: "2**64" itself has no msgpack encoding, so the
cases send this, the nearest a peer can come."""
STORE_FAILURE_SECONDS: Final = 10.0
"""How long a replica whose store is damaged may take to exit."""
PEER_TAG: Final = 30
"""The wire tag of a `PeerFrame`: a Paxos message's bytes inside a frame body."""
FRAGMENT_BYTES: Final = 512 * 1024
"""Pieces of a message larger than this go in fragments (below the default frame limit)."""


# ----------------------------------------------------------------------------- a raw peer


def peer_handshake(
    sock: socket.socket, cell: str, member: str, listener: str, peer_key: bytes
) -> None:
    """Begin a peer conversation on `sock` as cell member `member`, as a replica does: a
    Hello with role PEER naming the member, then the challenge-response on the cell's peer
    key (issue 13, item 1), answered by a Welcome. These tests hold the key: they play a
    member that is faulty or compromised, whose values must still be checked."""
    authentication = PeerKey(cell, peer_key)
    nonce = new_nonce()
    hello = Hello(PROTOCOL_VERSION, cell, ConnectionRole.PEER, member)
    sock.sendall(b"".join(encode_frame(encode_wire(m)) for m in (hello, PeerChallenge(nonce))))
    reply = read_message(sock)
    assert isinstance(reply, PeerChallengeReply), reply
    assert authentication.checks(reply.proof, "listener", member, listener, nonce, reply.nonce)
    proof = authentication.proof("connector", member, listener, nonce, reply.nonce)
    sock.sendall(encode_frame(encode_wire(PeerProof(proof))))
    welcome = read_message(sock)
    assert isinstance(welcome, Welcome), welcome


def read_message(sock: socket.socket) -> WireMessage:
    """The next whole frame on `sock`, decoded."""
    header = read_exactly(sock, 4)
    (length,) = struct.unpack(">I", header)
    return decode_wire(read_exactly(sock, length))


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def peer_frames(message_bytes: bytes) -> bytes:
    """Frames carrying `message_bytes` as a Paxos message, whatever they are: one frame, or
    fragments of `FRAGMENT_BYTES` (as a replica sends a large snapshot) if they need more."""
    body = msgpack.packb([PEER_TAG, message_bytes], use_bin_type=True)
    if len(body) <= FRAGMENT_BYTES:
        return encode_frame(body)
    return b"".join(
        encode_frame(encode_wire(PeerFragment(len(body), at, body[at : at + FRAGMENT_BYTES])))
        for at in range(0, len(body), FRAGMENT_BYTES)
    )


def send_as_peer(
    port: int, cell: str, member: str, listener: str, peer_key: bytes, message_bytes: bytes
) -> tuple[list[Any], bool]:
    """Open a peer connection to `listener` as `member`, send one Paxos message's bytes; what
    came back until the replica closed the connection (or `REPLY_SECONDS` passed), and
    whether it did."""
    received: list[Any] = []
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_SECONDS) as sock:
        peer_handshake(sock, cell, member, listener, peer_key)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(peer_frames(message_bytes))
        try:
            while True:
                received.append(read_message(sock))
        except (ConnectionError, ConnectionResetError):
            return received, True
        except TimeoutError:
            return received, False


def raw(plain: object) -> bytes:
    """msgpack bytes of `plain`: a Paxos message as the codec lays it out, any values."""
    return bytes(msgpack.packb(plain, use_bin_type=True))


# ----------------------------------------------------------------------------- the cell


@frozen
class Target:
    """The module's cell, its master, the follower the cases go to, and a client."""

    cell: LiveCell
    master: str
    follower: str
    client: BlockingCell

    def status(self) -> dict[str, Any]:
        status = self.cell.status(self.follower)
        assert status is not None, self.cell.explain()
        return status

    def assert_unharmed(self, case: str, before: dict[str, Any]) -> None:
        """The follower runs, its promise and snapshot are as they were, the master is the
        same, and the cell serves: a write of `case` is read back, the namespace is as it was."""
        self.cell.check_alive()
        self.client.set_contents(self.cell.path("health"), case.encode())
        assert self.client.get_contents_and_stat(self.cell.path("health")).contents == (
            case.encode()
        )
        assert self.client.get_contents_and_stat(self.cell.path("sentinel")).contents == SENTINEL
        names = [entry.name for entry in self.client.list_dir(self.cell.path())]
        assert names == ["acl", "health", "sentinel"], names  # acl: the directory a cell makes
        assert self.cell.master() == self.master, self.cell.explain()
        after = self.cell.wait_caught_up(self.follower, REPLY_SECONDS)
        now = self.status()
        for key in ("promised", "snapshot_index", "epoch", "voting", "divergence"):
            assert now[key] == before[key], (case, key, before, now)
        assert now["applied_index"] >= before["applied_index"], (before, now, after)
        log = self.cell.log(self.follower)
        for alarm in ("Traceback", "the store failed", "Unhandled"):
            assert alarm not in log, f"{case}: {alarm!r} in {self.follower}'s log\n{log[-3000:]}"

    def restart_follower(self) -> None:
        """Stop the follower gracefully and start it again from its disk; it comes back."""
        assert self.cell.stop_replica(self.follower) == 0, self.cell.logs()
        self.cell.start_replica(self.follower)
        self.cell.wait_ready(START_SECONDS)
        assert self.cell.master() == self.master, self.cell.explain()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A serving cell with a sentinel file, shared by the module's peer-input cases."""
    cell = LiveCell(tmp_path_factory.mktemp("peer-input"))
    try:
        cell.start()
        client = cell.client()
        client.create(cell.path("sentinel"), SENTINEL)
        client.create(cell.path("health"), b"")
        master = cell.wait_master()
        follower = next(rid for rid in cell.running if rid != master)
        cell.wait_caught_up(follower, REPLY_SECONDS)
        yield Target(cell, master, follower, client)
    finally:
        cell.close()


# ----------------------------------------------------------------------------- the cases


def snapshot_of(cell: str, index: int) -> bytes:
    """The bytes a replica of cell `cell` would snapshot after `index` entries of no-ops."""
    applier = Applier(NamespaceMachine(cell), clients_max=10, client_results_max=10)
    for i in range(1, index + 1):
        applier.apply(
            Entry(LogIndex(i), Ballot(1, ReplicaId("r1")), Value(Epoch(1), ValueKind.NOOP))
        )
    return applier.snapshot()


@frozen
class Case:
    """A Paxos message's bytes, made for the follower's state (its chosen index) by the
    member `sender` (the master), that the follower must refuse."""

    name: str
    message: Callable[[str, str, int], bytes]
    """(cell name, sender, follower's chosen index) -> the message's bytes."""


def _heartbeat(round_: int) -> Callable[[str, str, int], bytes]:
    return lambda cell, sender, chosen: raw([5, [round_, sender], chosen, 0, chosen])


def _accept(index: int) -> Callable[[str, str, int], bytes]:
    return lambda cell, sender, chosen: raw([3, [1, sender], index, [1, 0, []], chosen, 0])


def _install(data: Callable[[str, int], bytes]) -> Callable[[str, str, int], bytes]:
    def make(cell: str, sender: str, chosen: int) -> bytes:
        index = chosen + 1000
        snapshot = Snapshot(LogIndex(index), data(cell, index), membership_of_ids(REPLICA_IDS))
        return encode_message(InstallSnapshot(snapshot))

    return make


PLAIN_MEMBERSHIP: Final = [1, [[r, r, r, True] for r in REPLICA_IDS]]
"""A membership as a CatchUp carries it (well-formed: the cases break something else)."""

CASES: Final = [
    Case("heartbeat-round-2**63", _heartbeat(2**63)),
    Case("heartbeat-round-2**64-1", _heartbeat(UINT64_MAX)),
    Case("heartbeat-round-int64-max", _heartbeat(INT64_MAX)),
    Case("heartbeat-round-2**40", _heartbeat(2**40)),
    Case("accept-index-2**63", _accept(2**63)),
    Case("accept-index-2**62", _accept(2**62)),
    Case(
        "catch-up-entry-index-2**63",
        lambda cell, sender, chosen: raw(
            [9, [[2**63, [1, sender], [1, 0, []]]], chosen, PLAIN_MEMBERSHIP]
        ),
    ),
    Case(
        "catch-up-chosen-index-2**63",
        lambda cell, sender, chosen: raw([9, [], 2**63, PLAIN_MEMBERSHIP]),
    ),
    Case(
        "catch-up-command-sequence-2**64-1",
        lambda cell, sender, chosen: raw(
            [
                9,
                [[chosen + 1, [1, sender], [1, 2, [[5, UINT64_MAX, b"", 0]]]]],
                chosen + 1,
                PLAIN_MEMBERSHIP,
            ]
        ),
    ),
    Case("install-snapshot-garbage", _install(lambda cell, index: b"\xc1garbage" * 100)),
    Case(
        "install-snapshot-garbage-in-fragments",
        _install(lambda cell, index: b"\xc1garbage" * 300_000),
    ),
    Case(
        "install-snapshot-truncated",
        _install(lambda cell, index: snapshot_of(cell, index)[:-7]),
    ),
    Case(
        "install-snapshot-of-another-cell",
        _install(lambda cell, index: snapshot_of(f"{cell}x", index)),
    ),
    Case(
        "install-snapshot-of-another-index",
        _install(lambda cell, index: snapshot_of(cell, index - 1)),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_peer_message_is_refused_and_changes_nothing(target: Target, case: Case) -> None:
    """A peer message with a value out of range, or a snapshot that is not one, is refused:
    the connection closed, nothing changed, the replica serving and restarting cleanly."""
    before = target.status()
    port = target.cell.ports[target.follower].peer
    message = case.message(target.cell.name, target.master, before["chosen_index"])
    peer_key = (target.cell.data_dir / "_secrets" / "peer.key").read_text().strip().encode()
    replies, closed = send_as_peer(
        port, target.cell.name, target.master, target.follower, peer_key, message
    )
    assert closed, f"{case.name}: the connection stayed open; received {replies}"
    assert len(replies) == 1, replies
    (refusal,) = replies
    assert isinstance(refusal, ErrorReply), replies
    assert refusal.code.name == "BAD_REQUEST", refusal
    target.cell.wait_for(
        lambda: "closing connection" in target.cell.log(target.follower),
        "the follower logs why it closed the connection",
        REPLY_SECONDS,
    )
    target.assert_unharmed(case.name, before)
    target.restart_follower()
    target.assert_unharmed(f"{case.name}, restarted", before)


# ----------------------------------------------------------------------------- damaged stores


def _damage_snapshot(connection: sqlite3.Connection) -> None:
    chosen = connection.execute("SELECT chosen_index FROM hard_state").fetchone()[0]
    connection.execute("DELETE FROM snapshots")
    connection.execute(
        "INSERT INTO snapshots (id, snapshot_index, data) VALUES (1, ?, ?)",
        (chosen, b"\xc1garbage" * 100),
    )


def _damage_entry_ballot(connection: sqlite3.Connection) -> None:
    connection.execute(
        "UPDATE log_entries SET ballot_round = 'garbage' "
        "WHERE log_index = (SELECT MAX(log_index) FROM log_entries)"
    )


def _damage_promise(connection: sqlite3.Connection) -> None:
    connection.execute("UPDATE hard_state SET promised_round = -5")


DAMAGES: Final = {
    "garbage-snapshot": _damage_snapshot,
    "log-entry-ballot-not-a-number": _damage_entry_ballot,
    "negative-promise": _damage_promise,
}


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_replica_with_a_damaged_store_exits_with_one_line(
    make_cell: Callable[..., LiveCell], damage: str
) -> None:
    """A replica whose store on disk is damaged exits non-zero, promptly, with one clear line."""
    cell = make_cell()
    client = cell.client()
    client.create(cell.path("file"), b"contents")
    master = cell.wait_master()
    victim = next(rid for rid in cell.running if rid != master)
    cell.wait_caught_up(victim, REPLY_SECONDS)
    assert cell.stop_replica(victim) == 0, cell.logs()
    with contextlib.closing(sqlite3.connect(store_file(cell, victim))) as connection, connection:
        DAMAGES[damage](connection)

    log_size = cell.log_path(victim).stat().st_size
    started = time.monotonic()
    cell.start_replica(victim)
    process = cell._processes.pop(victim)  # it is expected to exit: not a crash of the test
    try:
        status = process.wait(STORE_FAILURE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{victim} still runs on a damaged store\n{cell.logs()}") from None
    seconds = time.monotonic() - started
    output = cell.log_path(victim).read_bytes()[log_size:].decode(errors="replace")
    lines = [line for line in output.splitlines() if not line.startswith("=== test harness")]
    assert status != 0, output
    assert len(lines) == 1, output
    assert "CRITICAL" in lines[0] or "critical" in lines[0], output
    assert victim in lines[0], output
    assert "Traceback" not in output, output
    print(f"{damage}: exit {status} after {seconds:.2f} s: {lines[0]}")
    # The rest of the cell serves on.
    client.set_contents(cell.path("file"), b"still serving")
    assert client.get_contents_and_stat(cell.path("file")).contents == b"still serving"


def store_file(cell: LiveCell, rid: str) -> Path:
    return cell.data_dir / rid / "replica.sqlite"
