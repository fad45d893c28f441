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

What a connection may send depends on its state, and is checked before the work its input
costs: before its Hello (or, on the peer port, its proof) a connection's frames may be only
as large as a greeting (`limit_frames`, ``limits.hello_frame_bytes_max``), cut one at a time
so that each is checked against the limit of the state the one before it left; and a
frame's message kind is checked against `expected` from its first bytes, before its body is
decoded (`chubbypy.protocol.wire.decode_wire`). So a stranger's frame costs a few KiB of
buffer and a few bytes' reading, whatever it claims to be.
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
from chubbypy.protocol.wire import (
    Expected,
    UnexpectedMessageError,
    UnknownMessageError,
    decode_wire,
    encode_wire,
)

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
        """The largest frame this side sends (and, unless `limit_frames` says less, takes)."""
        self._closing = False
        self._one_at_a_time = False
        self._cutting = False
        self.bytes_sent = 0
        """Bytes written to the transport so far, frames whole."""

    def limit_frames(self, frame_bytes_max: int, named: str, *, one_at_a_time: bool) -> None:
        """From the next frame on, take frames of at most `frame_bytes_max` bytes (a refusal
        names the limit as `named`); `one_at_a_time`, cut each only once the one before it
        was handled (`frames_waiting` is false), so that a frame sent right behind a Hello
        is checked against the limit of the state the Hello leaves."""
        self._decoder.limit(frame_bytes_max, named)
        self._one_at_a_time = one_at_a_time

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._cut(data)

    def cut_received(self) -> None:
        """Cut the frames received but not yet cut (after `limit_frames` let more through)."""
        if not self._closing:
            self._cut(b"")

    def _cut(self, data: bytes) -> None:
        if self._cutting:  # called back from a frame's handler: the loop below goes on
            assert not data
            return
        self._cutting = True
        try:
            while True:
                wanted = None if not self._one_at_a_time else 0 if self.frames_waiting() else 1
                try:
                    frames = self._decoder.feed(data, wanted)
                except ChubbyError as error:
                    self.refuse(error.code, error.message)
                    return
                data = b""
                if frames:
                    self.frames_received(frames)
                if wanted is None or not frames or self.closing():
                    return
        finally:
            self._cutting = False

    def frames_waiting(self) -> bool:
        """Whether frames cut earlier wait to be handled (never, when each is handled at
        once as here)."""
        return False

    def frames_received(self, frames: list[bytes]) -> None:
        """Whole frames cut from the stream, in order: by default each handled at once."""
        for body in frames:
            if self.closing():
                return
            self.body_received(body)

    def expected(self) -> Expected | None:
        """The messages this connection may send now (None: any); others are refused
        undecoded (`unexpected`)."""
        return None

    def body_received(self, body: bytes) -> None:
        """One frame's body: its kind checked, then decoded, then `message_received` (or
        refused)."""
        try:
            message = decode_wire(body, self.expected())
        except UnknownMessageError as error:
            self.refuse(ErrorCode.UNKNOWN_MESSAGE, str(error))
            return
        except UnexpectedMessageError as error:
            self.unexpected(str(error))
            return
        except DecodeError as error:
            self.refuse(ErrorCode.BAD_REQUEST, str(error))
            return
        self.message_received(message)

    def unexpected(self, why: str) -> None:
        """A message this connection may not send in its state (`expected`): refused."""
        self.refuse(ErrorCode.BAD_REQUEST, why)

    @property
    def pending_bytes(self) -> int:
        """Bytes received and not yet cut into a frame (0 between frames)."""
        return self._decoder.pending_bytes

    def closing(self) -> bool:
        """Whether this connection refused bad input and is going away."""
        return self._closing

    def message_received(self, message: WireMessage) -> None:
        raise NotImplementedError

    @property
    def frame_bytes_max(self) -> int:
        """The largest frame this side sends."""
        return self._frame_bytes_max

    def send_body(self, body: bytes) -> None:
        """Send an already encoded message body that fits one frame."""
        assert len(body) <= self._frame_bytes_max, len(body)
        if not self._closing and self.transport is not None:
            self._write(encode_frame(body))

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
        self._write(encode_frame(body))

    def _write(self, frame: bytes) -> None:
        assert self.transport is not None
        self.bytes_sent += len(frame)
        self.transport.write(frame)

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
