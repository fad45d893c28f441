"""The session codec's handle modes and event masks: every defined combination round-trips
as the flag types, and a bit outside the defined ones is refused with DecodeError (so a
hostile or newer client gets BAD_REQUEST, and the master never sees it)."""

from __future__ import annotations

from typing import Any

import pytest

from chubbypy.protocol import HandleId, SessionId
from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.namespace import AclNames, Stat
from chubbypy.protocol.session import (
    EVENT_MASK_ALL,
    HANDLE_MODES_ALL,
    EventKind,
    EventMask,
    HandleMode,
    HandleOpened,
    KeepAlive,
    Open,
)
from chubbypy.protocol.session_codec import (
    call_from_plain,
    call_to_plain,
    session_result_from_plain,
    session_result_to_plain,
)

OPEN = Open(SessionId(7), b"credential", "/ls/c/f", HandleMode.READ, EventMask.NONE)
STAT = Stat(1 << 16, 1, 0, 1, 0, AclNames("r", "w", "c"), False, False, 0)
MODE, EVENTS = 4, 5
"""Positions of the mode and the events in an Open's plain form."""
UNDEFINED_MODE_BITS = [bit for bit in range(63) if not (1 << bit) & HANDLE_MODES_ALL]
UNDEFINED_EVENT_BITS = [bit for bit in range(63) if not (1 << bit) & EVENT_MASK_ALL]


def open_with(position: int, value: object) -> list[Any]:
    plain = call_to_plain(OPEN)
    plain[position] = value
    return plain


def test_the_defined_bits_are_the_flags_members() -> None:
    """HANDLE_MODES_ALL and EVENT_MASK_ALL are exactly the members; an event's bit is its
    kind's number, and the session-wide kinds have none."""
    assert HANDLE_MODES_ALL == HandleMode.READ | HandleMode.WRITE | HandleMode.CHANGE_ACL == 7
    assert EVENT_MASK_ALL == 0x76
    for member in EventMask:
        assert member == 1 << EventKind[member.name]
    assert {EventKind(bit) for bit in range(1, 8) if not (1 << bit) & EVENT_MASK_ALL} == {
        EventKind.MASTER_FAILOVER,
        EventKind.INVALIDATE,
    }


@pytest.mark.parametrize("mode_bits", range(1, int(HANDLE_MODES_ALL) + 1))
def test_every_defined_mode_and_mask_round_trips_as_flags(mode_bits: int) -> None:
    """Each mode with each mask of defined bits decodes to the same Open, typed as flags."""
    for event_bits in range(int(EVENT_MASK_ALL) + 1):
        if event_bits & ~int(EVENT_MASK_ALL):
            continue
        call = Open(OPEN.session_id, OPEN.credential, OPEN.path, HandleMode(mode_bits),
                    EventMask(event_bits))  # fmt: skip
        decoded = call_from_plain(call_to_plain(call))
        assert decoded == call
        assert isinstance(decoded, Open)
        assert type(decoded.mode) is HandleMode
        assert type(decoded.events) is EventMask


def test_an_empty_mode_is_refused() -> None:
    """An Open for no mode at all is refused: such a handle would pass every ACL check
    (there is nothing to check) and still show the node's metadata and hear its events."""
    with pytest.raises(DecodeError, match="mode of 0"):
        call_from_plain(open_with(MODE, 0))


@pytest.mark.parametrize("bit", UNDEFINED_MODE_BITS)
def test_a_mode_with_an_undefined_bit_is_refused(bit: int) -> None:
    """Bit 3 and above of a mode name nothing: DecodeError, whatever else is set."""
    for mode in (1 << bit, (1 << bit) | int(HANDLE_MODES_ALL)):
        with pytest.raises(DecodeError, match="a handle mode of"):
            call_from_plain(open_with(MODE, mode))


@pytest.mark.parametrize("bit", UNDEFINED_EVENT_BITS)
def test_a_mask_with_an_undefined_bit_is_refused(bit: int) -> None:
    """Bit 0, the session-wide kinds' bits (3: MASTER_FAILOVER, 7: INVALIDATE) and bit 8
    and above are not events a handle asks for: DecodeError."""
    for events in (1 << bit, (1 << bit) | int(EVENT_MASK_ALL)):
        with pytest.raises(DecodeError, match="an event mask of"):
            call_from_plain(open_with(EVENTS, events))


@pytest.mark.parametrize("value", [-1, 2**63, "READ", 1.0, True, None, [1]])
@pytest.mark.parametrize("position", [MODE, EVENTS])
def test_a_mode_or_mask_that_is_no_unsigned_integer_is_refused(
    position: int, value: object
) -> None:
    """Only an integer from 0 to INT64_MAX can be a mode or a mask."""
    with pytest.raises(DecodeError):
        call_from_plain(open_with(position, value))


def test_ids_round_trip_and_no_id_is_refused_where_one_is_named() -> None:
    """Session and handle ids come back with their values; session 0 (no session) in a
    KeepAlive, and handle 0 (no handle) in a HandleOpened, are refused."""
    keep_alive = KeepAlive(SessionId(9), b"c", 3)
    assert call_from_plain(call_to_plain(keep_alive)) == keep_alive
    opened = HandleOpened(b"h", False, STAT, HandleId(1 << 32))
    assert session_result_from_plain(session_result_to_plain(opened)) == opened
    with pytest.raises(DecodeError):
        call_from_plain(call_to_plain(KeepAlive(SessionId(0), b"c", 3)))
    with pytest.raises(DecodeError):
        session_result_from_plain(
            session_result_to_plain(HandleOpened(b"h", False, STAT, HandleId(0)))
        )
