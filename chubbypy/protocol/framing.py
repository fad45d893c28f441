"""Length-prefixed framing: how a byte stream is cut into message bodies. Pure, sans-IO.

Part of `chubbypy.protocol` (what crosses a process boundary, as data; STYLE §6 "Wire
format"). A frame is a 4-byte big-endian unsigned length followed by that many bytes of body;
`chubbypy.protocol.wire` turns a body into a message. The shell feeds whatever bytes a
connection received to a `FrameDecoder` and gets back the complete bodies; it never looks
at a length prefix itself.

Framing errors are `ChubbyError`s (`FrameTooLarge`, `BadRequest`), so the shell can answer
them with an `ErrorReply` for request 0 before it closes the connection. After an error the
stream has lost its frame boundaries: the decoder refuses every later input, and the
connection must be closed (reliability.md §5.3, items 1-4).
"""

from __future__ import annotations

import struct
from typing import Final

from chubbypy.protocol.errors import BadRequest, ChubbyError, FrameTooLarge

__all__ = ["FRAME_LENGTH_MAX", "PREFIX_BYTES", "FrameDecoder", "encode_frame"]

_PREFIX: Final = struct.Struct(">I")
PREFIX_BYTES: Final = _PREFIX.size
"""Bytes of the length prefix in front of every frame body."""
FRAME_LENGTH_MAX: Final = (1 << 32) - 1
"""The largest length a 4-byte prefix can state."""


def encode_frame(body: bytes) -> bytes:
    """`body` with its length prefix in front: one frame, ready to write to a connection."""
    assert 1 <= len(body) <= FRAME_LENGTH_MAX, len(body)
    return _PREFIX.pack(len(body)) + body


class FrameDecoder:
    """Cuts a stream of received bytes into frame bodies of at most `frame_bytes_max` bytes.

    Theory of operation: received bytes are appended to one buffer, and `_offset` marks the
    start of the first frame not yet returned. Each `feed` returns every frame completed so
    far, then drops the consumed bytes once, so many small frames in one chunk cost one pass
    and one frame split over many chunks costs one append per chunk (never quadratic).
    A length prefix is checked as soon as its fourth byte arrives, so an oversized frame is
    refused before any of its body is waited for or buffered beyond the chunk in hand.

    The limit may change between frames (`limit`): a connection that has not said hello
    takes only small frames. A frame is checked against the limit in force when it is cut,
    and `feed` cuts at most `frames_max` frames when asked, leaving the rest of the bytes
    unchecked until a later `feed` (of b"", if no more arrive), so that each frame can be
    checked against the limit of the state the frames before it left the connection in.
    """

    def __init__(self, frame_bytes_max: int, named: str = "") -> None:
        self._frame_bytes_max = 0
        self._named = ""
        self.limit(frame_bytes_max, named)
        self._buffer = bytearray()
        self._offset = 0
        self._failure: ChubbyError | None = None

    @property
    def frame_bytes_max(self) -> int:
        """The largest frame body this decoder accepts now."""
        return self._frame_bytes_max

    def limit(self, frame_bytes_max: int, named: str = "") -> None:
        """From the next frame cut on, accept bodies of at most `frame_bytes_max` bytes; a
        refusal names the limit as `named` (a configuration key, say), if given."""
        assert 1 <= frame_bytes_max <= FRAME_LENGTH_MAX, frame_bytes_max
        self._frame_bytes_max = frame_bytes_max
        self._named = named

    @property
    def pending_bytes(self) -> int:
        """Bytes received and not yet returned in a frame (a frame not yet complete, prefix
        included, or frames `frames_max` left uncut); 0 between frames.

        Non-zero when the connection closes means the peer sent a truncated frame.
        """
        return len(self._buffer) - self._offset

    def feed(self, data: bytes, frames_max: int | None = None) -> list[bytes]:
        """Every frame body completed by `data`, in order (at most `frames_max` of them, if
        given: the bytes after them are kept, like a partial frame, for a later `feed`).

        Raises `FrameTooLarge` for a length prefix above the maximum and `BadRequest` for a
        zero-length frame. The connection is then unusable, and frames completed earlier in
        the same `data` are dropped with it (the client retries them like any request lost
        to a broken connection).
        """
        if self._failure is not None:
            raise self._failure
        self._buffer += data
        try:
            frames = self._complete_frames(frames_max)
        except ChubbyError as failure:
            self._failure = failure
            self._buffer = bytearray()
            self._offset = 0
            raise
        if self._offset:
            del self._buffer[: self._offset]
            self._offset = 0
        return frames

    def _complete_frames(self, frames_max: int | None) -> list[bytes]:
        offset, frames = self._offset, list[bytes]()
        # A view copies each body once, straight into its bytes; it is released before
        # `feed` resizes the buffer.
        with memoryview(self._buffer) as view:
            while len(view) - offset >= PREFIX_BYTES and len(frames) != frames_max:
                (length,) = _PREFIX.unpack_from(view, offset)
                if length == 0:
                    raise BadRequest("empty frame: a frame body is at least one byte")
                if length > self._frame_bytes_max:
                    named = f" ({self._named})" if self._named else ""
                    raise FrameTooLarge(
                        f"frame of {length} bytes is above the limit of "
                        f"{self._frame_bytes_max}{named}"
                    )
                end = offset + PREFIX_BYTES + length
                if end > len(view):
                    break
                frames.append(bytes(view[offset + PREFIX_BYTES : end]))
                offset = end
        self._offset = offset
        return frames
