"""Peer connections: the hello, and large messages split into fragments and joined again."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chubbypy.config import CellConfig, parse_config
from chubbypy.protocol import InstallSnapshot, LogIndex, PeerMessage, ReplicaId, Snapshot
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    ConnectionRole,
    ErrorReply,
    Hello,
    PeerFragment,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.wire import decode_wire, encode_wire
from chubbypy.server._peers import InboundPeer, OutboundPeer, PeerNetwork
from chubbypy.server._shell import ReplicaServer

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
    limits = {"file_bytes_max": 1000, "frame_bytes_max": FRAME, "peer_message_bytes_max": 1 << 22}
    paxos = {"batch_bytes_max": 8192}
    return parse_config(
        {"cell": "t", "replicas": replicas, "data_dir": str(tmp), "limits": limits, "paxos": paxos}
    )


class Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[ReplicaId, PeerMessage]] = []

    def peer_message(self, sender: ReplicaId, message: PeerMessage) -> None:
        self.received.append((sender, message))


def _network(tmp: Path, recorder: Recorder) -> PeerNetwork:
    server = cast(ReplicaServer, recorder)
    return PeerNetwork(Clock(), _config(tmp), ReplicaId("r1"), server)


def _frames(transport: StringTransport, frame_max: int) -> list[Any]:
    return [decode_wire(body) for body in FrameDecoder(frame_max).feed(transport.value())]


def _inbound(network: PeerNetwork) -> tuple[InboundPeer, StringTransport]:
    inbound = InboundPeer(network, network._frame_bytes_max)
    transport = StringTransport()
    inbound.makeConnection(transport)
    hello = Hello(PROTOCOL_VERSION, "t", ConnectionRole.PEER, "r2")
    inbound.dataReceived(encode_frame(encode_wire(hello)))
    return inbound, transport


def test_a_large_message_travels_in_fragments_and_arrives_whole(tmp_path: Path) -> None:
    """A snapshot bigger than a frame is sent as ordered fragments and rebuilt on receipt."""
    recorder = Recorder()
    network = _network(tmp_path, recorder)
    message = InstallSnapshot(Snapshot(LogIndex(9), bytes(range(256)) * 2000))  # ~512 KiB
    outbound = OutboundPeer(network, ReplicaId("r2"), network._frame_bytes_max)
    sent = StringTransport()
    outbound.makeConnection(sent)
    sent.clear()
    outbound.send_peer_message(message)
    frames = _frames(sent, network._frame_bytes_max)
    assert len(frames) > 1
    assert all(isinstance(f, PeerFragment) for f in frames)
    inbound, _ = _inbound(network)
    inbound.dataReceived(sent.value())
    assert recorder.received == [(ReplicaId("r2"), message)]


def test_fragments_out_of_order_close_the_connection(tmp_path: Path) -> None:
    """A fragment that does not continue the message refuses the connection and delivers nothing."""
    recorder = Recorder()
    inbound, transport = _inbound(_network(tmp_path, recorder))
    transport.clear()
    inbound.dataReceived(encode_frame(encode_wire(PeerFragment(100, 10, b"x" * 10))))
    (reply,) = _frames(transport, FRAME * 4)
    assert isinstance(reply, ErrorReply)
    assert reply.code is ErrorCode.BAD_REQUEST
    assert transport.disconnecting
    assert recorder.received == []


def test_a_fragmented_message_above_the_limit_is_refused(tmp_path: Path) -> None:
    """A first fragment announcing more than peer_message_bytes_max is refused at once."""
    recorder = Recorder()
    inbound, transport = _inbound(_network(tmp_path, recorder))
    inbound.dataReceived(encode_frame(encode_wire(PeerFragment(1 << 30, 0, b"x"))))
    assert transport.disconnecting
    assert recorder.received == []


def test_a_stranger_is_not_a_peer(tmp_path: Path) -> None:
    """A hello naming a replica outside the cell is refused."""
    network = _network(tmp_path, Recorder())
    inbound = InboundPeer(network, FRAME)
    transport = StringTransport()
    inbound.makeConnection(transport)
    inbound.dataReceived(
        encode_frame(encode_wire(Hello(PROTOCOL_VERSION, "t", ConnectionRole.PEER, "r9")))
    )
    (reply,) = _frames(transport, FRAME)
    assert reply.code is ErrorCode.BAD_REQUEST
    assert transport.disconnecting
