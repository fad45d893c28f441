"""A Twisted protocol that speaks length-prefixed msgpack frames of `WireMessage`s.

Shell side. Bad input (an oversized or malformed frame, an unknown message) gets an error
reply where one can be sent, then the connection is closed: nothing is applied, and every
other connection carries on. Every warning such input causes goes through a log budget
(`ShellWarnings`, on `chubbypy.node.LogBudget`): one malformed frame is one line, a
thousand connections sending one each are a few lines and a count.

Frames are cut from the stream as bytes arrive; by default each is decoded and handled at
once (`frames_received`). The client port overrides that to queue them and take them in
turns (`chubbypy.server._clients`), so that no connection's flood of requests holds the
reactor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.node import Counter, LogBudget, left_out_suffix
from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.client import NO_REQUEST, ErrorReply, WireMessage
from chubbypy.protocol.errors import ChubbyError, ErrorCode
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.wire import UnknownMessageError, decode_wire, encode_wire

__all__ = ["DEFAULT_WARNINGS", "FramedProtocol", "ShellWarnings"]

LOG_LINES_PER_MINUTE_DEFAULT: Final = 10
"""``limits.log_lines_per_minute``'s default, for connections not given the configured
budget (the peer port's)."""


class ShellWarnings:
    """The shell's warnings that a peer can cause, within a `LogBudget` on the shell's
    clock (seconds): the one way every such line is written."""

    log = Logger(namespace="chubbypy.server")

    def __init__(
        self,
        lines_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        left_out: Counter | None = None,
        prefix: str = "",
    ) -> None:
        self._budget = LogBudget(lines_per_minute, 60.0, left_out)
        self._clock = clock
        self._prefix = prefix
        """Put before every line (the replica's id)."""

    def warn(self, kind: str, text: str) -> None:
        """Log `text` at WARN unless lines of `kind` are over the budget (then count it)."""
        left_out = self._budget.admit(kind, self._clock())
        if left_out is not None:
            self.log.warn("{text}", text=self._prefix + text + left_out_suffix(left_out))

    @property
    def left_out_total(self) -> int:
        return self._budget.left_out_total


DEFAULT_WARNINGS = ShellWarnings(LOG_LINES_PER_MINUTE_DEFAULT)
"""The budget of connections that were not given one (peers)."""


class FramedProtocol(Protocol):
    """Frames in, `message_received` out; `send` for the other way."""

    log = Logger()
    warnings: ShellWarnings = DEFAULT_WARNINGS

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
        self.frames_received(frames)

    def frames_received(self, frames: list[bytes]) -> None:
        """Whole frames cut from the stream, in order: by default each handled at once."""
        for body in frames:
            if self.closing():
                return
            self.body_received(body)

    def body_received(self, body: bytes) -> None:
        """One frame's body: decoded, then `message_received` (or refused)."""
        try:
            message = decode_wire(body)
        except UnknownMessageError as error:
            self.refuse(ErrorCode.UNKNOWN_MESSAGE, str(error))
            return
        except DecodeError as error:
            self.refuse(ErrorCode.BAD_REQUEST, str(error))
            return
        self.message_received(message)

    @property
    def pending_bytes(self) -> int:
        """Bytes received of a frame not yet complete (0 between frames)."""
        return self._decoder.pending_bytes

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
        self.warnings.warn(
            f"refused-{code.name.lower()}",
            f"closing connection from {self.peer_name()}: {code.name}: {message[:200]}",
        )
        self.close_with(code, message)

    def close_with(self, code: ErrorCode, message: str) -> None:
        """Send an error for no request (the reason the connection ends), then close."""
        self.send(ErrorReply(NO_REQUEST, code, message[:4096], None))
        self._closing = True
        if self.transport is not None:
            self.transport.loseConnection()

    def peer_name(self) -> str:
        """Where the connection comes from, as "host:port" (for the log)."""
        peer = self.transport.getPeer() if self.transport is not None else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        if host is None:
            return str(peer) if peer is not None else "?"
        return f"{host}:{port}"

    def connectionLost(self, reason: TwistedFailure = connectionDone) -> None:
        if self._decoder.pending_bytes and not self._closing:
            self.warnings.warn(
                "closed-mid-frame",
                f"connection closed in the middle of a frame ({self._decoder.pending_bytes} "
                f"bytes pending), from {self.peer_name()}",
            )
