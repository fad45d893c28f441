"""Peer connections: the hello and the peer-key handshake, and large messages split into
fragments and joined again."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher

from chubbypy.config import CellConfig, parse_config
from chubbypy.paxos import membership_of_ids
from chubbypy.protocol import (
    Ballot,
    Heartbeat,
    InstallSnapshot,
    LogIndex,
    PeerMessage,
    ReplicaId,
    Snapshot,
)
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    ChecksumReport,
    ConnectionRole,
    ErrorReply,
    Hello,
    PeerChallenge,
    PeerChallengeReply,
    PeerFragment,
    PeerFrame,
    PeerProof,
    WireMessage,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.wire import GREETING_ANSWER_BYTES_MAX, decode_wire, encode_wire
from chubbypy.server._peer_auth import PeerKey
from chubbypy.server._peers import InboundPeer, OutboundPeer, PeerNetwork
from chubbypy.server._shell import ReplicaServer

FRAME = 1 << 16

SEED = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))


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


KEY = PeerKey("t", b"the test cell's peer key, 32 chars")


class Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[ReplicaId, PeerMessage]] = []

    def peer_message(self, sender: ReplicaId, message: PeerMessage) -> None:
        self.received.append((sender, message))


def _network(
    tmp: Path, recorder: Recorder, me: str = "r1", key: PeerKey = KEY, clock: Clock | None = None
) -> PeerNetwork:
    server = cast(ReplicaServer, recorder)
    return PeerNetwork(clock or Clock(), _config(tmp), ReplicaId(me), server, key)


def _frames(transport: StringTransport, frame_max: int) -> list[Any]:
    return [decode_wire(body) for body in FrameDecoder(frame_max).feed(transport.value())]


def _send(inbound: InboundPeer, *messages: WireMessage) -> None:
    inbound.dataReceived(b"".join(encode_frame(encode_wire(m)) for m in messages))


def _taken(transport: StringTransport) -> list[Any]:
    """The frames written to `transport` since the last call, decoded."""
    frames = _frames(transport, FRAME * 4)
    transport.clear()
    return frames


def _pump(
    outbound: OutboundPeer,
    to_listener: StringTransport,
    inbound: InboundPeer,
    to_connector: StringTransport,
) -> None:
    """Carry bytes both ways until neither side has more to say."""
    while to_listener.value() or to_connector.value():
        data, _ = to_listener.value(), to_listener.clear()
        if data and not to_listener.disconnecting:
            inbound.dataReceived(data)
        data, _ = to_connector.value(), to_connector.clear()
        if data and not to_connector.disconnecting:
            outbound.dataReceived(data)


def _connect(
    connector: PeerNetwork, listener: PeerNetwork
) -> tuple[OutboundPeer, StringTransport, InboundPeer, StringTransport]:
    """An outbound connection of `connector` to `listener`, handshake done."""
    outbound = OutboundPeer(connector, listener.replica_id, connector._frame_bytes_max)
    to_listener, to_connector = StringTransport(), StringTransport()
    inbound = InboundPeer(listener, listener._frame_bytes_max)
    inbound.makeConnection(to_connector)
    outbound.makeConnection(to_listener)
    _pump(outbound, to_listener, inbound, to_connector)
    return outbound, to_listener, inbound, to_connector


def _inbound(network: PeerNetwork) -> tuple[InboundPeer, StringTransport]:
    """An inbound connection from r2 that has proven itself with the right key."""
    r2 = _network(network.config.data_dir, Recorder(), "r2", KEY)
    _, _, inbound, to_connector = _connect(r2, network)
    assert inbound.peer == "r2"
    to_connector.clear()
    return inbound, to_connector


def _challenged(
    network: PeerNetwork, claimed: str = "r2"
) -> tuple[InboundPeer, StringTransport, bytes, PeerChallengeReply]:
    """An inbound connection that got a hello and a challenge: its nonce and its answer."""
    inbound, transport = InboundPeer(network, FRAME * 4), StringTransport()
    inbound.makeConnection(transport)
    nonce = bytes(range(32))
    _send(inbound, Hello(PROTOCOL_VERSION, "t", ConnectionRole.PEER, claimed), PeerChallenge(nonce))
    (reply,) = _taken(transport)
    assert isinstance(reply, PeerChallengeReply)
    return inbound, transport, nonce, reply


def test_replicas_with_the_cells_key_prove_themselves_both_ways(tmp_path: Path) -> None:
    """Each side checks the other's proof; then the listener welcomes and both are open."""
    r1, r2 = _network(tmp_path, Recorder(), "r1"), _network(tmp_path, Recorder(), "r2")
    outbound, to_listener, inbound, to_connector = _connect(r2, r1)
    assert outbound.welcomed
    assert r2.connected_peers() == ["r1"]
    assert inbound.peer == "r2"
    assert not to_listener.disconnecting
    assert not to_connector.disconnecting


def test_a_connection_proving_another_key_is_closed_and_nothing_is_taken(tmp_path: Path) -> None:
    """A connector with a wrong key learns the listener's proof fails; it sends nothing."""
    recorder = Recorder()
    r1 = _network(tmp_path, recorder, "r1")
    squatter = _network(tmp_path, Recorder(), "r2", PeerKey("t", b"a key from the repository!!!!"))
    outbound, to_listener, inbound, _ = _connect(squatter, r1)
    assert not outbound.welcomed
    assert to_listener.disconnecting  # the connector saw the listener's proof fail
    assert inbound.peer is None
    assert squatter.connected_peers() == []


def test_a_wrong_proof_is_refused_and_closes_the_connection(tmp_path: Path) -> None:
    """A PeerProof that is not the connector's HMAC closes the connection, PERMISSION_DENIED."""
    recorder = Recorder()
    inbound, transport, _, _ = _challenged(_network(tmp_path, recorder))
    _send(
        inbound,
        PeerProof(bytes(32)),
        PeerFrame(Heartbeat(Ballot(1 << 29, ReplicaId("r2")), LogIndex(0), 0)),
    )
    (refusal,) = _taken(transport)
    assert refusal.code is ErrorCode.PERMISSION_DENIED
    assert transport.disconnecting
    assert inbound.peer is None
    assert recorder.received == []


def test_the_listeners_own_proof_reflected_back_is_refused(tmp_path: Path) -> None:
    """The listener's proof, sent back as the connector's, is labelled otherwise: refused."""
    inbound, transport, _, reply = _challenged(_network(tmp_path, Recorder()))
    _send(inbound, PeerProof(reply.proof))
    assert _taken(transport)[0].code is ErrorCode.PERMISSION_DENIED
    assert inbound.peer is None


def test_a_recorded_proof_does_not_open_a_second_connection(tmp_path: Path) -> None:
    """A proof good on one connection is bad on the next: the listener's nonce is fresh."""
    network = _network(tmp_path, Recorder())
    first, _, nonce, reply = _challenged(network)
    good = KEY.proof("connector", "r2", "r1", nonce, reply.nonce)
    _send(first, PeerProof(good))
    assert first.peer == "r2"
    replay, transport, _, _ = _challenged(network)
    _send(replay, PeerProof(good))
    assert _taken(transport)[0].code is ErrorCode.PERMISSION_DENIED
    assert replay.peer is None


def test_a_proof_made_for_another_member_does_not_prove_this_one(tmp_path: Path) -> None:
    """Both ids are in the proof: one for r3 does not open a connection whose hello said r2."""
    inbound, transport, nonce, reply = _challenged(_network(tmp_path, Recorder()), "r2")
    _send(inbound, PeerProof(KEY.proof("connector", "r3", "r1", nonce, reply.nonce)))
    assert _taken(transport)[0].code is ErrorCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "proven", [0, 1, 2], ids=["before-hello", "after-hello", "after-challenge"]
)
def test_paxos_messages_before_the_proof_are_refused(tmp_path: Path, proven: int) -> None:
    """A PeerFrame, however far the handshake got, is refused before the proof checks."""
    recorder = Recorder()
    inbound, transport = InboundPeer(_network(tmp_path, recorder), FRAME * 4), StringTransport()
    inbound.makeConnection(transport)
    steps = [Hello(PROTOCOL_VERSION, "t", ConnectionRole.PEER, "r2"), PeerChallenge(bytes(32))]
    forged = PeerFrame(Heartbeat(Ballot(1 << 29, ReplicaId("r2")), LogIndex(0), 0))
    _send(inbound, *steps[:proven], forged, ChecksumReport(LogIndex(1), bytes(8)))
    refusal = _taken(transport)[-1]
    assert refusal.code is ErrorCode.PERMISSION_DENIED
    assert transport.disconnecting
    assert recorder.received == []


def test_refusals_are_logged_at_most_once_per_interval(tmp_path: Path) -> None:
    """A storm of bad handshakes logs one line per interval, then says how many it held back."""
    clock = Clock()
    network = _network(tmp_path, Recorder(), clock=clock)
    lines: list[str] = []
    observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        for _ in range(50):
            inbound, _, _, _ = _challenged(network)
            _send(inbound, PeerProof(bytes(32)))
        clock.advance(network.warnings.interval_seconds)
        inbound, _, _, _ = _challenged(network)
        _send(inbound, PeerProof(bytes(32)))
    finally:
        globalLogPublisher.removeObserver(observer)
    refused = [line for line in lines if "closing a peer connection" in line]
    assert len(refused) == 2, refused
    assert "49 more like it" in refused[1]


def test_a_large_message_travels_in_fragments_and_arrives_whole(tmp_path: Path) -> None:
    """A snapshot bigger than a frame is sent as ordered fragments and rebuilt on receipt."""
    recorder = Recorder()
    network = _network(tmp_path, recorder)
    message = InstallSnapshot(Snapshot(LogIndex(9), bytes(range(256)) * 2000, SEED))  # ~512 KiB
    r2 = _network(tmp_path, Recorder(), "r2")
    outbound, sent, _, _ = _connect(r2, network)
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
    """A hello naming a replica outside the cell is refused before any challenge."""
    network = _network(tmp_path, Recorder())
    inbound = InboundPeer(network, FRAME)
    transport = StringTransport()
    inbound.makeConnection(transport)
    inbound.dataReceived(
        encode_frame(encode_wire(Hello(PROTOCOL_VERSION, "t", ConnectionRole.PEER, "r9")))
    )
    (reply,) = _frames(transport, FRAME)
    assert reply.code is ErrorCode.PERMISSION_DENIED
    assert transport.disconnecting


def _squatter(network: PeerNetwork, host: str) -> tuple[InboundPeer, StringTransport]:
    """An inbound connection from `host` that says nothing."""
    inbound = InboundPeer(network, FRAME * 4)
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
    inbound.makeConnection(transport)
    return inbound, transport


def test_an_unproven_peer_connection_is_closed_at_the_hello_time_out(tmp_path: Path) -> None:
    """A connection to the peer port that proves nothing is closed after
    limits.hello_timeout_seconds (5 s), naming the key, and counted; a proven one is not."""
    clock = Clock()
    network = _network(tmp_path, Recorder(), clock=clock)
    squatter, transport = _squatter(network, "10.0.0.9")
    proven, proven_transport = _inbound(network)
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    (refusal,) = _taken(transport)
    assert "limits.hello_timeout_seconds" in refusal.message
    assert transport.disconnecting
    assert (network.unproven, network.handshakes_timed_out) == (0, 1)
    clock.advance(60.0)
    assert not proven_transport.disconnecting
    assert squatter.peer is None
    assert proven.peer == "r2"


def test_squatters_past_the_limit_push_out_the_oldest_and_a_member_still_gets_in(
    tmp_path: Path,
) -> None:
    """With every unproven place held (8 per address, 64 in all), each new connection
    closes the oldest unproven one (BUSY, counted), never a proven one; a member that
    connects meanwhile proves itself and stays."""
    network = _network(tmp_path, Recorder())
    from_one = [_squatter(network, "10.0.0.1") for _ in range(9)]
    assert from_one[0][1].disconnecting
    assert _taken(from_one[0][1])[0].code is ErrorCode.BUSY
    assert not any(t.disconnecting for _, t in from_one[1:])
    assert network.unproven == 8
    others = [_squatter(network, f"10.0.1.{n}") for n in range(56)]
    assert network.unproven == 64
    proven, proven_transport = _inbound(network)  # evicts the oldest, then proves itself
    assert from_one[1][1].disconnecting
    assert proven.peer == "r2"
    assert not proven_transport.disconnecting
    assert network.unproven == 63
    _squatter(network, "10.0.2.1")
    _squatter(network, "10.0.2.2")
    assert network.unproven == 64
    assert not proven_transport.disconnecting
    assert network.handshakes_evicted == 2 + 1
    assert not any(t.disconnecting for _, t in others)


# --- Before the proof: small frames, and only the handshake -----------------------------------


def test_a_large_frame_before_the_proof_is_refused_from_its_prefix(tmp_path: Path) -> None:
    """A ~1 MiB frame before the proof (or right behind the hello) is refused
    FRAME_TOO_LARGE naming limits.hello_frame_bytes_max as soon as its length prefix is
    in: none of it is kept or decoded, and nothing reaches the server."""
    recorder = Recorder()
    network = _network(tmp_path, recorder)
    hello = encode_frame(encode_wire(Hello(PROTOCOL_VERSION, "t", ConnectionRole.PEER, "r2")))
    for before in (b"", hello):
        inbound, transport = InboundPeer(network, FRAME * 4), StringTransport()
        inbound.makeConnection(transport)
        inbound.dataReceived(before + b"\x00\x0e\x93\xf5" + bytes(60_000))
        refusal = _taken(transport)[-1]
        assert refusal.code is ErrorCode.FRAME_TOO_LARGE
        assert "limits.hello_frame_bytes_max" in refusal.message
        assert transport.disconnecting
        assert inbound.pending_bytes == 0
    assert recorder.received == []
    assert network.unproven == 0


def test_a_proven_peer_may_send_frames_of_the_full_size(tmp_path: Path) -> None:
    """Once proven, a peer's frames may be as large as the peer frame limit (here a
    40 KiB snapshot in one frame, ten times the pre-proof limit)."""
    recorder = Recorder()
    inbound, transport = _inbound(_network(tmp_path, recorder))
    message = InstallSnapshot(Snapshot(LogIndex(9), bytes(40_000), SEED))
    _send(inbound, PeerFrame(message))
    assert recorder.received == [(ReplicaId("r2"), message)]
    assert not transport.disconnecting


def test_our_connection_to_a_peer_takes_only_answers_to_our_hello(tmp_path: Path) -> None:
    """On the connection we opened, a Paxos message from the listener is refused from its
    tag, and a frame above GREETING_ANSWER_BYTES_MAX from its prefix: the process on a
    peer's port cannot make us decode its input."""
    r2, R1 = _network(tmp_path, Recorder(), "r2"), ReplicaId("r1")
    for data in (
        encode_frame(encode_wire(PeerFrame(Heartbeat(Ballot(1, R1), LogIndex(0), 0)))),
        struct.pack(">I", GREETING_ANSWER_BYTES_MAX + 1),
    ):
        outbound, to_listener = OutboundPeer(r2, R1, FRAME), StringTransport()
        outbound.makeConnection(to_listener)
        to_listener.clear()
        outbound.dataReceived(data)
        (refusal,) = _taken(to_listener)
        assert refusal.code in (ErrorCode.BAD_REQUEST, ErrorCode.FRAME_TOO_LARGE)
        assert to_listener.disconnecting
        assert not outbound.welcomed
