"""Connections between replicas: one outbound connection to each peer, reconnecting with back-off.

Shell side. A replica sends its Paxos messages to a peer over the connection it opened to
that peer, and receives the peer's on the connection the peer opened to it. A message for a
peer that is not connected is dropped: Paxos expects loss, and the core resends what
matters. The hello names the sender; only members of the cell are accepted.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.config import CellConfig
from chubbypy.protocol import Envelope, PeerMessage, ReplicaId
from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    ChecksumReport,
    ConnectionRole,
    ErrorReply,
    Hello,
    PeerFragment,
    PeerFrame,
    Welcome,
    WireMessage,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.wire import decode_wire, encode_wire
from chubbypy.server._endpoints import client_endpoint, connect_string, server_endpoint
from chubbypy.server._framed import FramedProtocol
from chubbypy.server._shell import ReplicaServer

log = Logger()


def _jitter() -> float:
    return random.uniform(0, 0.05)


FRAGMENT_OVERHEAD_BYTES = 4096
"""Room left in a frame for a fragment's or a batch's own fields around the data."""


class OutboundPeer(FramedProtocol):
    """Our connection to one peer: hello, then our Paxos messages to it."""

    def __init__(self, network: PeerNetwork, peer: ReplicaId, frame_bytes_max: int) -> None:
        super().__init__(frame_bytes_max)
        self._network = network
        self.peer = peer
        self.welcomed = False

    def connectionMade(self) -> None:
        config = self._network.config
        self.send(
            Hello(PROTOCOL_VERSION, config.cell, ConnectionRole.PEER, self._network.replica_id)
        )

    def message_received(self, message: WireMessage) -> None:
        match message:
            case Welcome(replica_id=replica_id) if replica_id == self.peer:
                self.welcomed = True
                self._network.connected(self)
            case ErrorReply(code=code, message=text):
                log.warn(
                    "peer {peer} refused us: {code}: {text}",
                    peer=self.peer,
                    code=code.name,
                    text=text,
                )
                self.transport.loseConnection()  # type: ignore[union-attr]
            case _:
                self.refuse(
                    ErrorCode.BAD_REQUEST, f"unexpected {type(message).__name__} from a peer"
                )

    def send_peer_message(self, message: PeerMessage) -> None:
        """Send one Paxos message: in one frame, or in fragments if it is too large for one."""
        body = encode_wire(PeerFrame(message))
        if len(body) <= self.frame_bytes_max:
            self.send_body(body)
            return
        if len(body) > self._network.message_bytes_max:
            log.warn(
                "{me}: dropping a {size}-byte message to {peer}: above peer_message_bytes_max",
                me=self._network.replica_id,
                size=len(body),
                peer=self.peer,
            )
            return
        piece = self.frame_bytes_max - FRAGMENT_OVERHEAD_BYTES
        for offset in range(0, len(body), piece):
            self.send(PeerFragment(len(body), offset, body[offset : offset + piece]))

    def connectionLost(self, reason: TwistedFailure = connectionDone) -> None:
        super().connectionLost(reason)
        self._network.disconnected(self)


class InboundPeer(FramedProtocol):
    """A peer's connection to us: its hello, then its Paxos messages."""

    def __init__(self, network: PeerNetwork, frame_bytes_max: int) -> None:
        super().__init__(frame_bytes_max)
        self._network = network
        self.peer: ReplicaId | None = None
        self._pieces = bytearray()
        self._expected = 0

    def message_received(self, message: WireMessage) -> None:
        server = self._network.server
        match message:
            case PeerFrame(peer_message) if self.peer is not None:
                refused = server.peer_message(self.peer, peer_message)
                if refused is not None:  # unused: a snapshot that is not one, say
                    self.refuse(ErrorCode.BAD_REQUEST, refused)
            case PeerFragment() if self.peer is not None:
                self._fragment(message)
            case ChecksumReport() if self.peer is not None:
                server.checksum_reported(self.peer, message)
            case Hello() if self.peer is None:
                self._hello(message)
            case _:
                self.refuse(ErrorCode.BAD_REQUEST, f"unexpected {type(message).__name__}")

    def _fragment(self, fragment: PeerFragment) -> None:
        """Join the pieces of a large message, strictly in order, within the size limit."""
        if fragment.offset == 0:
            self._pieces, self._expected = bytearray(), fragment.total
        if (
            fragment.total != self._expected
            or fragment.offset != len(self._pieces)
            or fragment.total > self._network.message_bytes_max
            or fragment.offset + len(fragment.data) > fragment.total
        ):
            self.refuse(ErrorCode.BAD_REQUEST, "a message's fragments out of order or too large")
            return
        self._pieces += fragment.data
        if len(self._pieces) < self._expected:
            return
        body, self._pieces, self._expected = bytes(self._pieces), bytearray(), 0
        try:
            whole = decode_wire(body)
        except DecodeError as error:
            self.refuse(ErrorCode.BAD_REQUEST, f"a fragmented message does not decode: {error}")
            return
        if not isinstance(whole, PeerFrame):
            self.refuse(ErrorCode.BAD_REQUEST, "only a Paxos message may be fragmented")
            return
        self.message_received(whole)

    def _hello(self, hello: Hello) -> None:
        network = self._network
        if hello.version != PROTOCOL_VERSION:
            self.refuse(
                ErrorCode.UNSUPPORTED_VERSION, f"protocol {hello.version} is not {PROTOCOL_VERSION}"
            )
        elif hello.cell != network.config.cell:
            self.refuse(
                ErrorCode.WRONG_CELL, f"this is cell {network.config.cell!r}, not {hello.cell!r}"
            )
        elif hello.role is not ConnectionRole.PEER:
            self.refuse(ErrorCode.BAD_REQUEST, "this is the peer port; clients use the client port")
        elif hello.name not in network.config.replica_ids or hello.name == network.replica_id:
            self.refuse(ErrorCode.BAD_REQUEST, f"{hello.name!r} is not another member of this cell")
        else:
            self.peer = ReplicaId(hello.name)
            self.send(Welcome(PROTOCOL_VERSION, network.config.cell, network.replica_id))


class PeerNetwork:
    """All of one replica's peer connections; the `PeerSender` the shell sends through."""

    def __init__(
        self,
        reactor: IReactorTime,
        config: CellConfig,
        replica_id: ReplicaId,
        server: ReplicaServer,
    ) -> None:
        self._reactor = reactor
        self.config = config
        self.replica_id = replica_id
        self.server = server
        # A full batch plus its envelope fits one frame; anything bigger is fragmented.
        self._frame_bytes_max = max(
            config.limits.frame_bytes_max, config.paxos.batch_bytes_max + FRAGMENT_OVERHEAD_BYTES
        )
        self.message_bytes_max = config.limits.peer_message_bytes_max
        self._services: dict[ReplicaId, ClientService] = {}
        self._connections: dict[ReplicaId, OutboundPeer] = {}
        self.dropped = 0

    def listen(self) -> Deferred[IListeningPort]:
        """Start listening on our peer endpoint."""
        endpoint = server_endpoint(self._reactor, self.config.replica(self.replica_id).peer)
        factory = Factory.forProtocol(lambda: InboundPeer(self, self._frame_bytes_max))
        return endpoint.listen(factory)

    def connect_all(self) -> None:
        for replica in self.config.replicas:
            if replica.id == self.replica_id:
                continue
            endpoint = client_endpoint(self._reactor, connect_string(replica.peer))
            peer = ReplicaId(replica.id)
            factory = Factory.forProtocol(self._outbound_factory(peer))
            service = ClientService(
                endpoint,
                factory,
                # Twisted's default jitter adds up to a second; a peer back in 50 ms
                # should be reconnected in about that, not a second later.
                retryPolicy=backoffPolicy(
                    initialDelay=0.05, maxDelay=0.5, factor=1.6, jitter=_jitter
                ),
                clock=self._reactor,
            )
            service.startService()
            self._services[peer] = service

    def _outbound_factory(self, peer: ReplicaId) -> Callable[[], Protocol]:
        return lambda: OutboundPeer(self, peer, self._frame_bytes_max)

    def connected(self, connection: OutboundPeer) -> None:
        log.info("{me}: connected to peer {peer}", me=self.replica_id, peer=connection.peer)
        self._connections[connection.peer] = connection

    def disconnected(self, connection: OutboundPeer) -> None:
        if self._connections.get(connection.peer) is connection:
            del self._connections[connection.peer]
            log.info(
                "{me}: lost the connection to peer {peer}", me=self.replica_id, peer=connection.peer
            )

    def send(self, envelope: Envelope) -> None:
        connection = self._connections.get(envelope.recipient)
        if connection is None:
            self.dropped += 1
            return
        connection.send_peer_message(envelope.message)

    def send_checksum(self, recipient: ReplicaId, report: ChecksumReport) -> None:
        connection = self._connections.get(recipient)
        if connection is not None:
            connection.send(report)

    def connected_peers(self) -> list[ReplicaId]:
        return sorted(self._connections)

    def stop(self) -> None:
        for service in self._services.values():
            service.stopService()
