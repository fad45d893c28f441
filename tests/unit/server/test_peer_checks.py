"""The shell's part of checking peer input and damaged stores (issue 13, item 4).

A peer message refused at decode or by the node closes its connection, and delivers
nothing; a replica whose store loaded something it cannot resume from refuses to start
with a StoreError (one clear line); a store that fails stops the replica with a failed
status; and the store's thread never keeps a process alive by itself.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import cast

import msgpack
import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.config import CellConfig, parse_config
from chubbypy.paxos import HardState, NoChance, Persisted, membership_of_ids
from chubbypy.protocol import (
    Ballot,
    Entry,
    Epoch,
    InstallSnapshot,
    LogIndex,
    PeerMessage,
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
    PeerFrame,
    PeerProof,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.wire import decode_wire, encode_wire
from chubbypy.server._peer_auth import PeerKey
from chubbypy.server._peers import InboundPeer, PeerNetwork
from chubbypy.server._shell import ReplicaServer
from chubbypy.server._store_worker import StoreWorker
from chubbypy.store import MemoryStore, StoreError

SEED = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))
"""The membership a snapshot's handle names in these tests."""

R1, R2 = ReplicaId("r1"), ReplicaId("r2")
FRAME = 1 << 16


def _config(tmp: Path) -> CellConfig:
    replicas = [
        {
            "id": f"r{n}",
            "peer": f"tcp:{7100 + n}:interface=127.0.0.1",
            "client": f"tcp:{7200 + n}:interface=127.0.0.1",
            "admin": f"tcp:{7300 + n}:interface=127.0.0.1",
        }
        for n in (1, 2, 3)
    ]
    return parse_config({"cell": "t", "replicas": replicas, "data_dir": str(tmp)})


def _server(tmp: Path, persisted: Persisted, halted: list[bool] | None = None) -> ReplicaServer:
    return ReplicaServer(
        config=_config(tmp),
        replica_id=R1,
        reactor=Clock(),
        store=cast(StoreWorker, None),  # nothing here writes
        halt=lambda: (halted if halted is not None else []).append(True),
        persisted=persisted,
        chance=NoChance(),
        monotonic=lambda: 0.0,
    )


class Refuser:
    """A server that refuses every peer message, as the node does a snapshot that is not one."""

    def __init__(self) -> None:
        self.received: list[PeerMessage] = []

    def peer_message(self, sender: ReplicaId, message: PeerMessage) -> str | None:
        self.received.append(message)
        return "refused a snapshot at index 9 from r2: not msgpack"


KEY = PeerKey("t", b"the test cell's peer key, 32 chars")


def _inbound(tmp: Path, server: object) -> tuple[InboundPeer, StringTransport]:
    """An inbound connection from r2 that proved itself with the cell's key."""
    network = PeerNetwork(Clock(), _config(tmp), R1, cast(ReplicaServer, server), KEY)
    inbound = InboundPeer(network, FRAME)
    transport = StringTransport()
    inbound.makeConnection(transport)
    hello = Hello(PROTOCOL_VERSION, "t", ConnectionRole.PEER, "r2")
    nonce = bytes(range(32))
    inbound.dataReceived(
        b"".join(encode_frame(encode_wire(m)) for m in (hello, PeerChallenge(nonce)))
    )
    (reply,) = _replies(transport)
    assert isinstance(reply, PeerChallengeReply)
    proof = KEY.proof("connector", "r2", "r1", nonce, reply.nonce)
    transport.clear()
    inbound.dataReceived(encode_frame(encode_wire(PeerProof(proof))))
    assert inbound.peer == R2
    transport.clear()
    return inbound, transport


def _replies(transport: StringTransport) -> list[object]:
    return [decode_wire(body) for body in FrameDecoder(FRAME).feed(transport.value())]


# ----------------------------------------------------------------------------- connections


def test_a_message_the_server_refuses_closes_its_connection(tmp_path: Path) -> None:
    """The server's refusal becomes a BAD_REQUEST with its reason, and the connection closes."""
    server = Refuser()
    inbound, transport = _inbound(tmp_path, server)
    message = InstallSnapshot(Snapshot(LogIndex(9), b"\xc1", SEED))
    inbound.dataReceived(encode_frame(encode_wire(PeerFrame(message))))
    (reply,) = _replies(transport)
    assert isinstance(reply, ErrorReply)
    assert reply.code is ErrorCode.BAD_REQUEST
    assert reply.message == "refused a snapshot at index 9 from r2: not msgpack"
    assert transport.disconnecting
    assert server.received == [message]


def test_a_value_out_of_range_closes_the_connection_before_the_server_sees_it(
    tmp_path: Path,
) -> None:
    """A Heartbeat with ballot round 2**63 is refused at decode; nothing reaches the server."""
    server = Refuser()
    inbound, transport = _inbound(tmp_path, server)
    heartbeat = msgpack.packb([5, [2**63, "r2"], 0, 0, 0])
    inbound.dataReceived(encode_frame(msgpack.packb([30, heartbeat], use_bin_type=True)))
    (reply,) = _replies(transport)
    assert isinstance(reply, ErrorReply)
    assert reply.code is ErrorCode.BAD_REQUEST
    assert "above the limit" in reply.message
    assert transport.disconnecting
    assert server.received == []


def test_the_node_refuses_a_garbage_snapshot_through_the_server(tmp_path: Path) -> None:
    """ReplicaServer.peer_message hands back the node's refusal, and nothing is persisted."""
    server = _server(tmp_path, Persisted(HardState(), genesis=SEED))
    refused = server.peer_message(R2, InstallSnapshot(Snapshot(LogIndex(9), b"\xc1garbage", SEED)))
    assert refused is not None
    assert refused.startswith("refused a snapshot at index 9 from r2: not msgpack")
    assert server.node.core.status().snapshot_index == 0


# ----------------------------------------------------------------------------- damaged stores

BALLOT = Ballot(3, R1)
NOOP = Value(Epoch(3), ValueKind.NOOP)

DAMAGED: dict[str, tuple[Persisted, str]] = {
    "garbage snapshot": (
        Persisted(HardState(BALLOT, LogIndex(5)), Snapshot(LogIndex(5), b"\xc1garbage", SEED)),
        "the store is damaged: its snapshot at index 5 does not restore: not msgpack",
    ),
    "chosen entry missing": (
        Persisted(
            HardState(BALLOT, LogIndex(3)),
            None,
            (Entry(LogIndex(1), BALLOT, NOOP), Entry(LogIndex(3), BALLOT, NOOP)),
        ),
        "the store is damaged: log entry 2 is missing",
    ),
    "promise out of range": (
        Persisted(HardState(Ballot(2**40, R2))),
        "the store is damaged: the promised ballot 1099511627776.'r2' is out of range",
    ),
    "chosen index out of range": (
        Persisted(HardState(BALLOT, LogIndex(2**62))),
        "the store is damaged: the chosen index 4611686018427387904 is out of range",
    ),
    "entry ballot of no replica": (
        Persisted(HardState(BALLOT), None, (Entry(LogIndex(1), Ballot(0, R1), NOOP),)),
        "the store is damaged: log entry 1's ballot 0.'r1' is out of range",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGED), ids=list(DAMAGED))
def test_a_replica_refuses_to_resume_from_a_damaged_store(tmp_path: Path, damage: str) -> None:
    """What a store loaded that a replica cannot resume from is a StoreError, saying what."""
    persisted, expected = DAMAGED[damage]
    with pytest.raises(StoreError) as raised:
        _server(tmp_path, persisted)
    assert str(raised.value).startswith(expected), raised.value


def test_a_sound_store_resumes(tmp_path: Path) -> None:
    """The pair of the above: chosen entries all present, a real snapshot, it resumes."""
    entries = tuple(Entry(LogIndex(i), BALLOT, NOOP) for i in (1, 2, 3))
    server = _server(tmp_path, Persisted(HardState(BALLOT, LogIndex(3)), None, entries))
    assert server.node.core.status().chosen_index == 3


def test_a_failed_store_stops_the_replica_as_failed(tmp_path: Path) -> None:
    """A write that fails halts the replica and marks it failed (its process exits 1)."""
    halted: list[bool] = []
    server = _server(tmp_path, Persisted(HardState()), halted)
    assert not server.failed
    server._write_failed(TwistedFailure(OverflowError("too large")))
    assert server.failed
    assert halted == [True]


# ----------------------------------------------------------------------------- the store thread


def test_the_store_thread_never_keeps_the_process_alive() -> None:
    """Every thread of the store worker is a daemon: a process whose main thread ended (a
    start-up that failed after the worker began, say) exits instead of lingering."""
    worker = StoreWorker(cast("object", Clock()), MemoryStore())  # type: ignore[arg-type]
    ran = threading.Event()
    worker._pool.callInThread(ran.set)
    assert ran.wait(5)
    assert worker._pool.threads
    assert all(thread.daemon for thread in worker._pool.threads)
    worker.stop()
