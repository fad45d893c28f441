"""The client port: a Chubby client's connection to any replica.

Shell side. The first frame must be a Hello for this cell and protocol version; then the
client sends requests and gets replies tagged with its request ids, which the replica's
node answers (`chubbypy.node`: who is master, who the connection acts as, what it may do).
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.node import ConnectionId
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    Authenticate,
    ConnectionRole,
    Hello,
    LocateMaster,
    ReadRequest,
    Register,
    ServerReply,
    SessionRequest,
    StatusRequest,
    Welcome,
    WireMessage,
    WriteRequest,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.server._framed import FramedProtocol
from chubbypy.server._shell import ReplicaServer

_REQUESTS = (
    LocateMaster,
    StatusRequest,
    Authenticate,
    ReadRequest,
    WriteRequest,
    Register,
    SessionRequest,
)


class ClientConnection(FramedProtocol):
    """One client's connection; see the module docstring."""

    log = Logger()

    def __init__(self, server: ReplicaServer, frame_bytes_max: int) -> None:
        super().__init__(frame_bytes_max)
        self._server = server
        self._connection: ConnectionId | None = None
        self.open = True

    def reply(self, message: ServerReply) -> None:
        if self.open:
            self.send(message)

    def disconnect(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def message_received(self, message: WireMessage) -> None:
        if self._connection is None:
            self._hello(message)
        elif isinstance(message, _REQUESTS):
            self._server.request(self._connection, message)
        else:
            self.refuse(ErrorCode.BAD_REQUEST, f"a client does not send {type(message).__name__}")

    def _hello(self, message: WireMessage) -> None:
        cell = self._server.config.cell
        if not isinstance(message, Hello):
            self.refuse(ErrorCode.BAD_REQUEST, "the first message must be a Hello")
        elif message.version != PROTOCOL_VERSION:
            self.refuse(
                ErrorCode.UNSUPPORTED_VERSION,
                f"this replica speaks protocol {PROTOCOL_VERSION}, not {message.version}",
            )
        elif message.cell != cell:
            self.refuse(ErrorCode.WRONG_CELL, f"this is cell {cell!r}, not {message.cell!r}")
        elif message.role is not ConnectionRole.CLIENT:
            self.refuse(ErrorCode.BAD_REQUEST, "this is the client port; peers use the peer port")
        else:
            peer = str(self.transport.getPeer()) if self.transport is not None else "?"
            self._connection = self._server.connection_opened(self, peer)
            self.send(Welcome(PROTOCOL_VERSION, cell, self._server.replica_id))

    def connectionLost(self, reason: TwistedFailure = connectionDone) -> None:
        super().connectionLost(reason)
        self.open = False
        if self._connection is not None:
            self._server.connection_closed(self._connection)


def client_factory(server: ReplicaServer, frame_bytes_max: int) -> Factory:
    return Factory.forProtocol(lambda: ClientConnection(server, frame_bytes_max))
