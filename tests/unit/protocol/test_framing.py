"""Length-prefixed framing: frames survive any split of the stream, and bad prefixes are refused."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chubbypy.protocol.errors import BadRequest, FrameTooLarge
from chubbypy.protocol.framing import FRAME_LENGTH_MAX, FrameDecoder, encode_frame

MAX = 64


def prefix(length: int) -> bytes:
    return struct.pack(">I", length)


def test_encode_frame_puts_a_big_endian_length_in_front() -> None:
    """A frame is the body's length as 4 big-endian bytes, then the body."""
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_many_frames_in_one_chunk_all_come_out_in_order() -> None:
    """A thousand small frames arriving in one chunk are returned at once, in order."""
    bodies = [f"frame {i}".encode() for i in range(1000)]
    decoder = FrameDecoder(MAX)
    assert decoder.feed(b"".join(encode_frame(b) for b in bodies)) == bodies
    assert decoder.pending_bytes == 0


def test_a_frame_split_byte_by_byte_comes_out_once_complete() -> None:
    """Fed one byte at a time, a frame is returned only with its last byte."""
    decoder = FrameDecoder(MAX)
    stream = encode_frame(b"hello")
    for position, byte in enumerate(stream[:-1]):
        assert decoder.feed(bytes([byte])) == []
        assert decoder.pending_bytes == position + 1
    assert decoder.feed(stream[-1:]) == [b"hello"]
    assert decoder.pending_bytes == 0


def test_a_frame_of_exactly_the_maximum_is_accepted() -> None:
    """A body of frame_bytes_max bytes decodes."""
    body = bytes(range(MAX))
    assert FrameDecoder(MAX).feed(encode_frame(body)) == [body]


@pytest.mark.parametrize("length", [MAX + 1, 2**31 - 1, FRAME_LENGTH_MAX])
def test_an_oversized_prefix_is_refused_before_its_body_arrives(length: int) -> None:
    """A prefix above the maximum raises FrameTooLarge on its fourth byte, with no body sent."""
    decoder = FrameDecoder(MAX)
    assert decoder.feed(prefix(length)[:3]) == []
    with pytest.raises(FrameTooLarge, match=str(length)):
        decoder.feed(prefix(length)[3:])
    assert decoder.pending_bytes == 0


def test_a_zero_length_frame_is_a_bad_request() -> None:
    """A prefix of 0 raises BadRequest: every message has a body."""
    with pytest.raises(BadRequest, match="empty frame"):
        FrameDecoder(MAX).feed(encode_frame(b"ok") + prefix(0))


def test_a_length_of_one_is_a_frame() -> None:
    """The smallest frame (one byte of body) decodes."""
    assert FrameDecoder(MAX).feed(prefix(1) + b"x") == [b"x"]


def test_after_an_error_the_decoder_refuses_everything() -> None:
    """Once the stream lost its frame boundaries, later input raises the same error."""
    decoder = FrameDecoder(MAX)
    with pytest.raises(FrameTooLarge):
        decoder.feed(prefix(MAX + 1))
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"fine"))


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 9])
def test_pending_bytes_reports_a_truncated_frame(cut: int) -> None:
    """After a whole frame and part of the next, pending_bytes counts the partial frame."""
    decoder = FrameDecoder(MAX)
    assert decoder.feed(encode_frame(b"whole") + encode_frame(b"truncated")[:cut]) == [b"whole"]
    assert decoder.pending_bytes == cut


def test_garbage_after_a_valid_frame_is_kept_as_a_partial_frame() -> None:
    """Bytes after a complete frame are a partial frame until their prefix says otherwise."""
    decoder = FrameDecoder(MAX)
    assert decoder.feed(encode_frame(b"ok") + b"\x00\x00") == [b"ok"]
    assert decoder.pending_bytes == 2
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\xff\xff")


def test_one_large_frame_in_many_chunks_is_not_quadratic() -> None:
    """A 1 MiB frame fed in 16-byte chunks decodes quickly, and exactly once."""
    body = bytes(range(256)) * 4096
    stream = encode_frame(body)
    decoder = FrameDecoder(len(body))
    out = [frame for i in range(0, len(stream), 16) for frame in decoder.feed(stream[i : i + 16])]
    assert out == [body]


bodies = st.lists(st.binary(min_size=1, max_size=MAX), max_size=20)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(bodies=bodies, data=st.data())
def test_any_split_of_a_stream_gives_the_same_frames(
    bodies: list[bytes], data: st.DataObject
) -> None:
    """Cutting a stream of frames at arbitrary points yields exactly the frames sent."""
    stream = b"".join(encode_frame(b) for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = FrameDecoder(MAX)
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    assert out == bodies
    assert decoder.pending_bytes == 0


def test_frames_max_cuts_only_that_many_and_keeps_the_rest_unchecked() -> None:
    """With frames_max 1, one frame comes out; the bytes behind it (even an oversized
    prefix) wait, unchecked, for a later feed."""
    decoder = FrameDecoder(MAX)
    stream = encode_frame(b"one") + encode_frame(b"two") + prefix(MAX + 1)
    assert decoder.feed(stream, 1) == [b"one"]
    assert decoder.pending_bytes == len(stream) - len(encode_frame(b"one"))
    assert decoder.feed(b"", 0) == []
    assert decoder.feed(b"", 1) == [b"two"]
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"")


def test_a_new_limit_applies_from_the_next_frame_cut() -> None:
    """A frame behind a small one is checked against the limit in force when it is cut:
    refused under the small limit (naming it), taken once the limit is raised."""
    stream = encode_frame(b"hi") + encode_frame(bytes(40))
    small = FrameDecoder(8, "limits.hello_frame_bytes_max")
    assert small.feed(stream, 1) == [b"hi"]
    with pytest.raises(FrameTooLarge, match=r"above the limit of 8 \(limits.hello_frame_bytes_max"):
        small.feed(b"")
    raised = FrameDecoder(8)
    assert raised.feed(stream, 1) == [b"hi"]
    raised.limit(MAX)
    assert raised.feed(b"") == [bytes(40)]
    assert raised.frame_bytes_max == MAX
