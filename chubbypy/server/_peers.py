"""Connections between replicas: one outbound connection to each peer, reconnecting with back-off.

Shell side. A replica sends its Paxos messages to a peer over the connection it opened to
that peer, and receives the peer's on the connection the peer opened to it. A message for a
peer that is not connected is dropped: Paxos expects loss, and the core resends what
matters. The hello names the sender, and the sender proves it, with the cell's peer key or
its certificate (`chubbypy.server._peer_auth`), before any of its messages is taken; the
connecting side likewise proves the listener is the peer it meant before sending any.

Whoever reaches the peer port can open connections to it. One that has not proven itself
(unproven) is closed if it has not by ``limits.hello_timeout_seconds``; at most
``limits.peer_handshakes_max`` are open at once (``peer_handshakes_per_address_max`` from one
address), and one more closes the oldest, not the newcomer: a member proves itself within a
round trip, so squatters holding every place cannot keep it out, they only push each other
out. Proven connections are never counted or closed by these limits.

Until it is proven, a connection's frames may be at most ``limits.hello_frame_bytes_max``
bytes and of the one kind its handshake state expects (a Hello, a PeerChallenge, a
PeerProof), checked from the frame's first bytes before its body is decoded: a stranger's
frame costs a few KiB of buffer and no decoding, however large a message it claims to hold.
Our own connection to a peer takes only the answers to a greeting from it, at most
`GREETING_ANSWER_BYTES_MAX` bytes each.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Final

from OpenSSL import SSL
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.client._addresses import client_endpoint_string
from chubbypy.config import CellConfig
from chubbypy.node import Registry
from chubbypy.protocol import Envelope, Membership, PeerMessage, ReplicaId
from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.client import (
    NO_REQUEST,
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
    Welcome,
    WireMessage,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.wire import (
    GREETING_ANSWER_BYTES_MAX,
    Expected,
    decode_wire,
    encode_wire,
    expecting,
)
from chubbypy.server._endpoints import client_endpoint, connect_string, server_endpoint
from chubbypy.server._framed import FramedProtocol
from chubbypy.server._peer_auth import (
    PeerAuthentication,
    PeerCertificates,
    PeerKey,
    WarningLimiter,
    certificate_name,
    new_nonce,
)
from chubbypy.server._shell import ReplicaServer

log = Logger()


def _jitter() -> float:
    return random.uniform(0, 0.05)


FRAGMENT_OVERHEAD_BYTES = 4096
"""Room left in a frame for a fragment's or a batch's own fields around the data."""


class _Outbound(enum.Enum):
    """Where our connection to a peer is (see `OutboundPeer`)."""

    CHALLENGED = "sent our hello and nonce; awaiting the peer's nonce and proof"
    PROVED = "checked the peer's proof and sent ours; awaiting its welcome"
    OPEN = "welcomed: our Paxos messages flow"


_OUTBOUND_EXPECTS: dict[_Outbound, Expected] = {
    _Outbound.CHALLENGED: expecting("the peer's challenge reply", PeerChallengeReply, ErrorReply),
    _Outbound.PROVED: expecting("the peer's welcome", Welcome, ErrorReply),
    _Outbound.OPEN: expecting("nothing but a refusal", ErrorReply),
}
"""What the peer may say on the connection we opened to it, in each state."""


class OutboundPeer(FramedProtocol):
    """Our connection to one peer: hello, the handshake, then our Paxos messages to it.

    With the peer key: hello and nonce (CHALLENGED), the peer's proof checked and ours sent
    (PROVED), its welcome (OPEN). With certificates TLS proved both ends already: hello
    (PROVED), then the welcome, once the peer's certificate names the peer we meant (OPEN).
    Anything else closes the connection, and nothing is sent to a peer before it is proven.
    """

    def __init__(self, network: PeerNetwork, peer: ReplicaId, frame_bytes_max: int) -> None:
        super().__init__(frame_bytes_max)
        # The peer only ever answers our greeting on this connection (its Paxos messages
        # come on the one it opened): a larger frame is not from a member.
        self.limit_frames(
            GREETING_ANSWER_BYTES_MAX, "the largest answer to a peer's hello", one_at_a_time=False
        )
        self._network = network
        self.peer = peer
        self.welcomed = False
        self._state = _Outbound.PROVED
        self._nonce = b""

    def expected(self) -> Expected:
        return _OUTBOUND_EXPECTS[self._state]

    def connectionMade(self) -> None:
        network = self._network
        self.send(
            Hello(PROTOCOL_VERSION, network.config.cell, ConnectionRole.PEER, network.replica_id)
        )
        if isinstance(network.authentication, PeerKey):
            self._nonce = new_nonce()
            self._state = _Outbound.CHALLENGED
            self.send(PeerChallenge(self._nonce))

    def message_received(self, message: WireMessage) -> None:
        match (self._state, message):
            case (_Outbound.CHALLENGED, PeerChallengeReply()):
                self._challenge_answered(message)
            case (_Outbound.PROVED, Welcome(replica_id=replica_id)) if replica_id == self.peer:
                self._welcomed()
            case (_, ErrorReply(code=code, message=text)):
                self._network.warnings.warn(
                    f"refused by {self.peer}",
                    "{me}: peer {peer} refused us: {code}: {text}",
                    me=self._network.replica_id,
                    peer=self.peer,
                    code=code.name,
                    text=text,
                )
                self.transport.loseConnection()  # type: ignore[union-attr]
            case _:
                self.refuse(
                    ErrorCode.BAD_REQUEST, f"unexpected {type(message).__name__} from a peer"
                )

    def _challenge_answered(self, reply: PeerChallengeReply) -> None:
        """Check the listener's proof before proving anything: a stranger on the peer's port
        gets no proof of ours and no Paxos message."""
        network = self._network
        key = network.authentication
        assert isinstance(key, PeerKey)
        me = network.replica_id
        if not key.checks(reply.proof, "listener", me, self.peer, self._nonce, reply.nonce):
            self._impostor("does not know the cell's peer key")
            return
        self.send(PeerProof(key.proof("connector", me, self.peer, self._nonce, reply.nonce)))
        self._state = _Outbound.PROVED

    def _welcomed(self) -> None:
        if isinstance(self._network.authentication, PeerCertificates):
            named = certificate_name(self.transport)
            if named != self.peer:
                self._impostor(f"presents the certificate of {named!r}")
                return
        self._state = _Outbound.OPEN
        self.welcomed = True
        self._network.connected(self)

    def _impostor(self, why: str) -> None:
        self._network.warnings.warn(
            f"impostor at {self.peer}",
            "{me}: the process on {peer}'s peer port ({address}) {why}: not that replica; "
            "sending it nothing",
            me=self._network.replica_id,
            peer=self.peer,
            address=_address(self.transport),
            why=why,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def send_peer_message(self, message: PeerMessage) -> None:
        """Send one Paxos message: in one frame, or in fragments if it is too large for one."""
        assert self._state is _Outbound.OPEN
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
        if not self.welcomed and reason.check(SSL.Error):  # type: ignore[no-untyped-call]
            self._network.warnings.warn(
                f"tls to {self.peer}",
                "{me}: TLS with peer {peer} failed: {error}",
                me=self._network.replica_id,
                peer=self.peer,
                error=reason.getErrorMessage(),
            )
        self._network.disconnected(self)


class _Inbound(enum.Enum):
    """Where a peer's connection to us is (see `InboundPeer`)."""

    HELLO = "awaiting the peer's hello"
    CHALLENGED = "the hello checked; awaiting the peer's nonce"
    ANSWERED = "sent our nonce and proof; awaiting the peer's proof"
    OPEN = "the peer is proven: its Paxos messages are taken"


_INBOUND_EXPECTS: dict[_Inbound, Expected] = {
    _Inbound.HELLO: expecting("a peer's Hello", Hello),
    _Inbound.CHALLENGED: expecting("the peer's challenge", PeerChallenge),
    _Inbound.ANSWERED: expecting("the peer's proof", PeerProof),
    _Inbound.OPEN: expecting("a Paxos message", PeerFrame, PeerFragment, ChecksumReport),
}
"""What a peer may send on the connection it opened to us, in each state."""
_WHOLE_MESSAGE: Final = expecting("a Paxos message", PeerFrame)
"""What fragments may join into."""


class InboundPeer(FramedProtocol):
    """A peer's connection to us: its hello, its proof, then its Paxos messages.

    HELLO: a hello from another member of this cell (with certificates, one whose
    certificate names that member: straight to OPEN). CHALLENGED: its nonce, answered with
    ours and our proof. ANSWERED: its proof, answered with our welcome (OPEN). Only in OPEN
    is a PeerFrame, PeerFragment or ChecksumReport taken; any other message in any state,
    or a wrong proof, closes the connection with nothing applied.
    """

    def __init__(self, network: PeerNetwork, frame_bytes_max: int) -> None:
        super().__init__(frame_bytes_max)
        self.limit_frames(
            network.config.limits.hello_frame_bytes_max,
            "limits.hello_frame_bytes_max: nothing but the handshake before a peer is proven",
            one_at_a_time=True,
        )
        self._network = network
        self.peer: ReplicaId | None = None
        """The proven peer (set in OPEN only)."""
        self._state = _Inbound.HELLO
        self._claimed = ReplicaId("")
        self._nonces = (b"", b"")
        self._refused = False
        self._pieces = bytearray()
        self._expected = 0
        self._deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._deadline = self._network.unproven_arrived(self)

    def source_host(self) -> str:
        """The host this connection comes from (the per-address limit's key)."""
        peer = self.transport.getPeer() if self.transport is not None else None
        return str(getattr(peer, "host", peer))

    def handshake_timed_out(self) -> None:
        """Not proven by the deadline: closed, counted."""
        self._deadline = None
        seconds = self._network.config.limits.hello_timeout_seconds
        self._network.handshakes_timed_out += 1
        self._turn_away(
            ErrorCode.BAD_REQUEST,
            f"not proven a member within {seconds:g} s (limits.hello_timeout_seconds)",
        )

    def evicted(self) -> None:
        """The oldest unproven connection, closed to make room for a newer one."""
        self._network.handshakes_evicted += 1
        self._turn_away(
            ErrorCode.BUSY,
            "closed to make room: the oldest of limits.peer_handshakes_max (or "
            "peer_handshakes_per_address_max) connections not yet proven",
        )

    def dataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().dataReceived(data)

    def closing(self) -> bool:
        return self._refused or super().closing()

    def expected(self) -> Expected:
        return _INBOUND_EXPECTS[self._state]

    def unexpected(self, why: str) -> None:
        if self._state is _Inbound.OPEN:
            self.refuse(ErrorCode.BAD_REQUEST, why)
        else:
            self._turn_away(ErrorCode.PERMISSION_DENIED, f"{why}: a peer proves itself first")

    def refuse(self, code: ErrorCode, message: str) -> None:
        # Bad input from a connection not yet proven (a frame too large, say) turns it
        # away like any other failed handshake: its place among the unproven freed at once.
        if self._state is _Inbound.OPEN:
            super().refuse(code, message)
        else:
            self._turn_away(code, message)

    def message_received(self, message: WireMessage) -> None:
        # `expected` let through only the message this state takes.
        server = self._network.server
        match (self._state, message):
            case (_Inbound.OPEN, PeerFrame(peer_message)):
                assert self.peer is not None
                refused = server.peer_message(self.peer, peer_message)
                if refused is not None:  # a snapshot that is not one, say
                    self.refuse(ErrorCode.BAD_REQUEST, refused)
            case (_Inbound.OPEN, PeerFragment()):
                self._fragment(message)
            case (_Inbound.OPEN, ChecksumReport()):
                assert self.peer is not None
                server.checksum_reported(self.peer, message)
            case (_Inbound.HELLO, Hello()):
                self._hello(message)
            case (_Inbound.CHALLENGED, PeerChallenge(nonce)):
                self._challenged(nonce)
            case (_Inbound.ANSWERED, PeerProof(proof)):
                self._proved(proof)
            case _:
                raise AssertionError(f"{type(message).__name__} in {self._state}")

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
            whole = decode_wire(body, _WHOLE_MESSAGE)
        except DecodeError as error:
            self.refuse(ErrorCode.BAD_REQUEST, f"a fragmented message does not decode: {error}")
            return
        self.message_received(whole)

    def _hello(self, hello: Hello) -> None:
        network = self._network
        if hello.version != PROTOCOL_VERSION:
            self._turn_away(
                ErrorCode.UNSUPPORTED_VERSION, f"protocol {hello.version} is not {PROTOCOL_VERSION}"
            )
        elif hello.cell != network.config.cell:
            self._turn_away(
                ErrorCode.WRONG_CELL, f"this is cell {network.config.cell!r}, not {hello.cell!r}"
            )
        elif hello.role is not ConnectionRole.PEER:
            self._turn_away(
                ErrorCode.BAD_REQUEST, "this is the peer port; clients use the client port"
            )
        elif hello.name not in network.admitted:
            self._turn_away(
                ErrorCode.PERMISSION_DENIED, f"{hello.name!r} is not another member of this cell"
            )
        elif isinstance(network.authentication, PeerCertificates):
            named = certificate_name(self.transport)
            if named != hello.name:
                self._turn_away(
                    ErrorCode.PERMISSION_DENIED,
                    f"the hello claims {hello.name!r} but the certificate names {named!r}",
                )
            else:
                self._open(ReplicaId(hello.name))
        else:
            self._claimed = ReplicaId(hello.name)
            self._state = _Inbound.CHALLENGED

    def _challenged(self, nonce: bytes) -> None:
        key = self._network.authentication
        assert isinstance(key, PeerKey)
        ours = new_nonce()
        self._nonces = (nonce, ours)
        proof = key.proof("listener", self._claimed, self._network.replica_id, nonce, ours)
        self.send(PeerChallengeReply(ours, proof))
        self._state = _Inbound.ANSWERED

    def _proved(self, proof: bytes) -> None:
        key = self._network.authentication
        assert isinstance(key, PeerKey)
        me, (theirs, ours) = self._network.replica_id, self._nonces
        if key.checks(proof, "connector", self._claimed, me, theirs, ours):
            self._open(self._claimed)
        else:
            self._turn_away(
                ErrorCode.PERMISSION_DENIED,
                f"wrong proof for {self._claimed!r}: it does not know the cell's peer key",
            )

    def _open(self, peer: ReplicaId) -> None:
        network = self._network
        self.peer = peer
        self._state = _Inbound.OPEN
        network.inbound_opened(self)
        self.limit_frames(
            self.frame_bytes_max,
            "limits.frame_bytes_max, or a whole paxos.batch_bytes_max batch",
            one_at_a_time=False,
        )
        self._no_longer_unproven()
        self.send(Welcome(PROTOCOL_VERSION, network.config.cell, network.replica_id))

    def _turn_away(self, code: ErrorCode, text: str) -> None:
        """A connection that did not prove itself: say why, close it, log (rate-limited)."""
        self._network.warnings.warn(
            "unproven peer",
            "{me}: closing a peer connection from {address}: {code}: {text}",
            me=self._network.replica_id,
            address=_address(self.transport),
            code=code.name,
            text=text,
        )
        self.send(ErrorReply(NO_REQUEST, code, text, None))
        self._refused = True
        self._no_longer_unproven()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _no_longer_unproven(self) -> None:
        """Proven, closing or gone: its deadline cancelled, its place given back."""
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self._network.unproven_left(self)

    def connectionLost(self, reason: TwistedFailure = connectionDone) -> None:
        self._no_longer_unproven()
        self._network.inbound_closed(self)
        super().connectionLost(reason)
        if self._state is not _Inbound.OPEN and reason.check(SSL.Error):  # type: ignore[no-untyped-call]
            self._network.warnings.warn(
                "tls from a peer",
                "{me}: TLS with a peer connection from {address} failed: {error}",
                me=self._network.replica_id,
                address=_address(self.transport),
                error=reason.getErrorMessage(),
            )


def _address(transport: object) -> str:
    getter = getattr(transport, "getPeer", None)
    peer = getter() if getter is not None else None
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer or "?")


class PeerNetwork:
    """All of one replica's peer connections; the `PeerSender` the shell sends through."""

    def __init__(
        self,
        reactor: IReactorTime,
        config: CellConfig,
        replica_id: ReplicaId,
        server: ReplicaServer,
        authentication: PeerAuthentication,
    ) -> None:
        self._reactor = reactor
        self.config = config
        self.authentication = authentication
        self.warnings = WarningLimiter(reactor, log)
        self.replica_id = replica_id
        self.server = server
        # A full batch plus its envelope fits one frame; anything bigger is fragmented.
        self._frame_bytes_max = max(
            config.limits.frame_bytes_max, config.paxos.batch_bytes_max + FRAGMENT_OVERHEAD_BYTES
        )
        self.message_bytes_max = config.limits.peer_message_bytes_max
        self._services: dict[ReplicaId, tuple[str, ClientService]] = {}
        """Per member we dial: its peer address, and the service that keeps us connected."""
        self._connections: dict[ReplicaId, OutboundPeer] = {}
        self._inbound: set[InboundPeer] = set()
        """Inbound connections proven a member (OPEN)."""
        self.admitted = frozenset(ReplicaId(r.id) for r in config.replicas if r.id != replica_id)
        """Who may connect: the other members (the cell file's, until the membership is
        known)."""
        self.dropped = 0
        self._unproven: dict[InboundPeer, str] = {}
        """Inbound connections not yet proven, oldest first, with their source hosts."""
        self.handshakes_timed_out = 0
        self.handshakes_evicted = 0

    def unproven_arrived(self, connection: InboundPeer) -> IDelayedCall:
        """A new inbound connection: make room for it within the limits (closing the oldest
        unproven one from its address, or else the oldest of all) and set its deadline."""
        limits = self.config.limits
        host = connection.source_host()
        same_host = [c for c, h in self._unproven.items() if h == host]
        if len(same_host) >= limits.peer_handshakes_per_address_max:
            same_host[0].evicted()
        elif len(self._unproven) >= limits.peer_handshakes_max:
            next(iter(self._unproven)).evicted()
        self._unproven[connection] = host
        return self._reactor.callLater(limits.hello_timeout_seconds, connection.handshake_timed_out)

    def define_metrics(self, metrics: Registry) -> None:
        """The peer port's limits on /metrics."""
        metrics.gauge(
            "chubbypy_peer_connections_unproven",
            "Inbound peer connections not yet proven a member (limits.peer_handshakes_max).",
            lambda: [((), float(self.unproven))],
        )
        metrics.counter_view(
            "chubbypy_peer_handshakes_timed_out_total",
            "Inbound peer connections closed unproven after limits.hello_timeout_seconds.",
            lambda: float(self.handshakes_timed_out),
        )
        metrics.counter_view(
            "chubbypy_peer_handshakes_evicted_total",
            "Unproven inbound peer connections closed to make room for newer ones "
            "(limits.peer_handshakes_max, peer_handshakes_per_address_max).",
            lambda: float(self.handshakes_evicted),
        )

    def unproven_left(self, connection: InboundPeer) -> None:
        self._unproven.pop(connection, None)

    @property
    def unproven(self) -> int:
        """Inbound connections not yet proven, now."""
        return len(self._unproven)

    def listen(self) -> Deferred[IListeningPort]:
        """Start listening on our peer endpoint."""
        endpoint = server_endpoint(self._reactor, self.config.replica(self.replica_id).peer)
        factory = Factory.forProtocol(lambda: InboundPeer(self, self._frame_bytes_max))
        if isinstance(self.authentication, PeerCertificates):
            return endpoint.listen(self.authentication.listening(factory))
        return endpoint.listen(factory)

    def connect_all(self) -> None:
        """Dial the cell file's replicas (until the node knows the membership)."""
        self.members_changed(None)

    def members_changed(self, membership: Membership | None) -> None:
        """Dial and admit exactly the other members of `membership` (None: the cell file's
        replicas): new members are dialled, removed ones are no longer, and their
        connections to us are closed (docs/design/membership.md §2.10)."""
        # The members, and the replicas the cell file lists: a replica catching up passes
        # through old memberships that lack today's master, which its file names (the
        # guide says to list the members it dials first). Where a replica is, the file
        # says for one it lists (the operator's own knowledge, as DNS was Chubby's).
        wanted = {ReplicaId(r.id): r.peer for r in self.config.replicas}
        if membership is not None:
            for member in membership.members:
                wanted.setdefault(member.replica_id, member.peer)
        wanted.pop(self.replica_id, None)
        self.admitted = frozenset(wanted)
        for peer, (address, service) in list(self._services.items()):
            if wanted.get(peer) != address:
                service.stopService()
                del self._services[peer]
                connection = self._connections.pop(peer, None)
                if connection is not None and connection.transport is not None:
                    connection.transport.loseConnection()
        for peer, address in sorted(wanted.items()):
            if peer not in self._services:
                self._dial(peer, address)
        for inbound in [c for c in self._inbound if c.peer not in self.admitted]:
            log.info(
                "{me}: closing {peer}'s connection: it is no longer a member",
                me=self.replica_id, peer=inbound.peer,
            )  # fmt: skip
            if inbound.transport is not None:
                inbound.transport.loseConnection()

    def _dial(self, peer: ReplicaId, address: str) -> None:
        try:
            try:
                description = connect_string(address)
            except ValueError:
                description = client_endpoint_string(address)  # host:port, as typed
            endpoint = client_endpoint(self._reactor, description)
        except ValueError as error:
            # One member's bad address (an operator's typo) must not keep us from the rest.
            log.error(
                "{me}: cannot dial peer {peer} at {address!r}: {error} (remove it and add it "
                "again with a good --peer)",
                me=self.replica_id, peer=peer, address=address, error=error,
            )  # fmt: skip
            return
        if isinstance(self.authentication, PeerCertificates):
            endpoint = self.authentication.connecting(endpoint)
        factory = Factory.forProtocol(self._outbound_factory(peer))
        service = ClientService(
            endpoint,
            factory,
            # Twisted's default jitter adds up to a second; a peer back in 50 ms
            # should be reconnected in about that, not a second later.
            retryPolicy=backoffPolicy(initialDelay=0.05, maxDelay=0.5, factor=1.6, jitter=_jitter),
            clock=self._reactor,
        )
        service.startService()
        self._services[peer] = (address, service)

    def inbound_opened(self, connection: InboundPeer) -> None:
        self._inbound.add(connection)

    def inbound_closed(self, connection: InboundPeer) -> None:
        self._inbound.discard(connection)

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
        for _, service in self._services.values():
            service.stopService()
