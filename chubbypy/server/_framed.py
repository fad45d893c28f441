"""A Twisted protocol that speaks length-prefixed msgpack frames of `WireMessage`s.

Shell side. Bad input (an oversized or malformed frame, an unknown message) gets an error
reply where one can be sent, then the connection is closed: nothing is applied, and every
other connection carries on.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.client import NO_REQUEST, ErrorReply, WireMessage
from chubbypy.protocol.errors import ChubbyError, ErrorCode
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.wire import UnknownMessageError, decode_wire, encode_wire


class FramedProtocol(Protocol):
    """Frames in, `message_received` out; `send` for the other way."""

    log = Logger()

    def __init__(self, frame_bytes_max: int) -> None:
        self._decoder = FrameDecoder(frame_bytes_max)
        self._frame_bytes_max = frame_bytes_max
        self._closing = False

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            frames = self._decoder.feed(data)
        except ChubbyError as error:
            self.refuse(error.code, error.message)
            return
        for body in frames:
            if self.closing():
                return
            try:
                message = decode_wire(body)
            except UnknownMessageError as error:
                self.refuse(ErrorCode.UNKNOWN_MESSAGE, str(error))
                return
            except DecodeError as error:
                self.refuse(ErrorCode.BAD_REQUEST, str(error))
                return
            self.message_received(message)

    def closing(self) -> bool:
        """Whether this connection refused bad input and is going away."""
        return self._closing

    def message_received(self, message: WireMessage) -> None:
        raise NotImplementedError

    @property
    def frame_bytes_max(self) -> int:
        return self._frame_bytes_max

    def send_body(self, body: bytes) -> None:
        """Send an already encoded message body that fits one frame."""
        assert len(body) <= self._frame_bytes_max, len(body)
        if not self._closing and self.transport is not None:
            self.transport.write(encode_frame(body))

    def send(self, message: WireMessage) -> None:
        if self._closing or self.transport is None:
            return
        body = encode_wire(message)
        if len(body) > self._frame_bytes_max:
            # Never send what the other side must refuse; say what went wrong instead.
            reply_to = getattr(message, "request_id", NO_REQUEST)
            message = ErrorReply(
                reply_to, ErrorCode.TOO_LARGE, "the reply exceeds the frame limit", None
            )
            body = encode_wire(message)
        self.transport.write(encode_frame(body))

    def refuse(self, code: ErrorCode, message: str) -> None:
        """Bad input: say why (if we can) and close this connection only."""
        self.log.warn(
            "closing connection from {peer}: {code}: {message}",
            peer=self.transport.getPeer() if self.transport else "?",
            code=code.name,
            message=message,
        )
        self.send(ErrorReply(NO_REQUEST, code, message[:4096], None))
        self._closing = True
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: TwistedFailure = connectionDone) -> None:
        if self._decoder.pending_bytes:
            self.log.warn(
                "connection closed in the middle of a frame ({n} bytes pending)",
                n=self._decoder.pending_bytes,
            )
