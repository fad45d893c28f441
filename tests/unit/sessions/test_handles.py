"""Handles: they round-trip under the cell's key, and anything forged, altered, made under
another key or malformed is refused with DecodeError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chubbypy.protocol._plain import DecodeError, pack, unpack
from chubbypy.protocol.session import EventMask, HandleMode
from chubbypy.sessions import Handle, decode_handle, handle_id_for

KEY = b"k" * 32
HANDLE = Handle(
    session_id=196608,
    handle_id=handle_id_for(epoch=7, count=3),
    path="/ls/c/service/leader",
    instance=131072,
    mode=HandleMode.READ | HandleMode.WRITE,
    events=EventMask.CONTENTS_MODIFIED | EventMask.LOCK_ACQUIRED,
    lock_delay_ms=10_000,
    epoch=7,
)

numbers = st.integers(0, 2**62)
handles = st.builds(
    Handle,
    st.integers(1, 2**62),
    numbers,
    st.text(max_size=50),
    numbers,
    st.sampled_from(list(HandleMode)),
    st.sampled_from(list(EventMask)),
    st.integers(0, 60_000),
    numbers,
)


@given(handles)
def test_a_handle_round_trips_under_its_key(handle: Handle) -> None:
    """decode_handle(h.encode(key), key) == h."""
    assert decode_handle(handle.encode(KEY), KEY) == handle


def test_the_id_carries_the_creating_masters_epoch() -> None:
    """A master tells its own handles from a predecessor's by the epoch in the id."""
    assert HANDLE.master_epoch == 7
    assert handle_id_for(8, 0) > handle_id_for(7, 2**32 - 1)


def test_another_key_or_any_altered_byte_is_refused() -> None:
    """The check digits cover every field: a changed field, a flipped bit, or another cell's
    key is a DecodeError."""
    data = HANDLE.encode(KEY)
    with pytest.raises(DecodeError, match="check digits"):
        decode_handle(data, b"x" * 32)
    fields = unpack(data, lambda plain: plain)
    fields[4] = fields[4] + 1  # another node instance, same check digits
    with pytest.raises(DecodeError, match="check digits"):
        decode_handle(pack(fields), KEY)
    for position in range(len(data)):
        altered = bytearray(data)
        altered[position] ^= 0x01
        with pytest.raises(DecodeError):
            decode_handle(bytes(altered), KEY)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", pack([1, 2, 3]), pack("handle"), b"\x00" * 5000],
    ids=["empty", "not msgpack", "three fields", "a string", "too long"],
)
def test_malformed_bytes_are_refused(data: bytes) -> None:
    """Bytes that are not a handle at all raise DecodeError, never another exception."""
    with pytest.raises(DecodeError):
        decode_handle(data, KEY)


def test_session_credential_is_the_sessions_own() -> None:
    """A session's credential matches only its own id, under the key that made it."""
    from chubbypy.sessions import credential_matches, session_credential

    credential = session_credential(7, KEY)
    assert credential_matches(7, credential, KEY)
    assert not credential_matches(8, credential, KEY)
    assert not credential_matches(7, credential, b"y" * 32)
    assert not credential_matches(7, credential[:-1] + bytes([credential[-1] ^ 1]), KEY)
    handle = Handle(7, handle_id_for(1, 1), "/ls/c/f", 1, HandleMode.READ, EventMask.NONE, 0, 1)
    assert credential not in handle.encode(KEY)  # domain-separated from handles' digits


def test_a_client_credential_is_the_clients_own_and_never_a_sessions() -> None:
    """A plain client's credential matches only its own id under its key, has the wire's
    length, and differs from the session credential of the same number (their domains are
    separate, so a session's credential never writes as a client)."""
    from chubbypy.protocol.client import CLIENT_CREDENTIAL_BYTES
    from chubbypy.sessions import client_credential, client_credential_matches, session_credential

    credential = client_credential(7, KEY)
    assert len(credential) == CLIENT_CREDENTIAL_BYTES
    assert client_credential_matches(7, credential, KEY)
    assert not client_credential_matches(8, credential, KEY)
    assert not client_credential_matches(7, credential, b"y" * 32)
    assert not client_credential_matches(7, session_credential(7, KEY), KEY)
    assert not client_credential_matches(7, b"", KEY)


def test_the_wire_flags_are_still_named_by_this_package() -> None:
    """HandleMode and EventMask live in chubbypy.protocol; chubbypy.sessions names the same
    classes for the callers that still import them from here."""
    import chubbypy.protocol.session
    import chubbypy.sessions

    assert chubbypy.sessions.HandleMode is chubbypy.protocol.session.HandleMode
    assert chubbypy.sessions.EventMask is chubbypy.protocol.session.EventMask


def test_a_handle_made_before_the_codec_refused_unknown_bits_still_decodes() -> None:
    """Its check digits prove a master made it: an event bit no EventMask defines (the
    server once let bit 3 through) is dropped, not refused."""
    fields = [1, 7, handle_id_for(1, 1), "/ls/c/f", 1, 3, 0x7E, 0, 1]
    from chubbypy.sessions._handles import _mac

    handle = decode_handle(pack([*fields, _mac(KEY, fields)]), KEY)
    assert (handle.mode, handle.events) == (HandleMode.READ | HandleMode.WRITE, EventMask(0x76))
