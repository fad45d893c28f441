"""The client port: a Chubby client's connection to any replica.

Shell side. The first frame must be a Hello for this cell and protocol version; then the
client sends requests and gets replies tagged with its request ids. Any replica answers
master-location and status requests; only the serving master registers clients, takes
writes (through the log) and answers reads (from memory, under its lease); the others
reply NOT_MASTER and name the master they know (Chubby §2.2).

Authentication: a connection acts as principal ``anonymous`` (if the cell's ``auth.anonymous``
allows it) until it sends `Authenticate` with a principal and its token from ``auth.principals``.
Without a principal, only master-location and status requests are answered. The principal is
what the ACL checks of every read, write and open see.
"""

from __future__ import annotations

import hmac

from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.config import ANONYMOUS
from chubbypy.protocol.client import (
    PROTOCOL_VERSION,
    Authenticate,
    Authenticated,
    ConnectionRole,
    ErrorReply,
    Hello,
    LocateMaster,
    ReadRequest,
    Register,
    RequestId,
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


class ClientConnection(FramedProtocol):
    """One client's connection; see the module docstring."""

    log = Logger()

    def __init__(self, server: ReplicaServer, frame_bytes_max: int) -> None:
        super().__init__(frame_bytes_max)
        self._server = server
        self._greeted = False
        self.open = True
        self.principal: str | None = ANONYMOUS if server.config.auth.anonymous else None

    def reply(self, message: ServerReply) -> None:
        if self.open:
            self.send(message)

    def message_received(self, message: WireMessage) -> None:
        if not self._greeted:
            self._hello(message)
            return
        server = self._server
        principal = self.principal
        match message:
            case LocateMaster(request_id):
                self.reply(server.locate(request_id))
            case StatusRequest(request_id):
                self.reply(server.status(request_id))
            case Authenticate(request_id, name, token):
                self._authenticate(request_id, name, token)
            case (
                ReadRequest(request_id)
                | WriteRequest(request_id)
                | Register(request_id)
                | (SessionRequest(request_id))
            ) if principal is None:
                message_text = "authenticate first: this cell serves no anonymous clients"
                self.reply(ErrorReply(request_id, ErrorCode.PERMISSION_DENIED, message_text, None))
            case ReadRequest():
                assert principal is not None
                self.reply(server.read(message, principal))
            case WriteRequest():
                assert principal is not None
                server.write(self.reply, message, principal)
            case Register(request_id, nonce):
                server.register(self.reply, request_id, nonce)
            case SessionRequest():
                assert principal is not None
                server.session_call(self.reply, message, id(self), principal)
            case _:
                self.refuse(
                    ErrorCode.BAD_REQUEST, f"a client does not send {type(message).__name__}"
                )

    def _authenticate(self, request_id: RequestId, principal: str, token: str) -> None:
        expected = self._server.config.auth.token_of(principal)
        # Compared in constant time; the answer does not say which of the two was wrong.
        if expected is not None and hmac.compare_digest(expected.encode(), token.encode()):
            self.principal = principal
            self.reply(Authenticated(request_id, principal))
            return
        self.log.warn(
            "{replica}: refused authentication as {principal!r} from {peer}",
            replica=self._server.replica_id,
            principal=principal,
            peer=self.transport.getPeer() if self.transport else "?",
        )
        message = f"unknown principal {principal!r} or wrong token"
        self.reply(ErrorReply(request_id, ErrorCode.PERMISSION_DENIED, message, None))

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
            self._greeted = True
            self.send(Welcome(PROTOCOL_VERSION, cell, self._server.replica_id))

    def connectionLost(self, reason: TwistedFailure = connectionDone) -> None:
        super().connectionLost(reason)
        self.open = False
        if self._greeted:
            self._server.connection_closed(id(self))


def client_factory(server: ReplicaServer, frame_bytes_max: int) -> Factory:
    return Factory.forProtocol(lambda: ClientConnection(server, frame_bytes_max))
