"""Handles (Chubby §2.3, §2.6, §2.9): what a client holds instead of a name. Pure: a value,
its check digits, and its bytes.

A handle names a node *instance* (it fails once that node is deleted, even if the name is
re-created) and carries everything a master needs to rebuild it after a fail-over: the
session, the node, the mode it was opened in, the events it asked for, its lock-delay, and
the epoch of the master that made it (which tells a master whether it or a predecessor
created it). Its id is unique in the cell: the creating master's epoch in the high bits and
that master's count below, so handles of different masters never collide (lock holders are
recorded by handle id). Check digits, a keyed MAC over every other field, stop a client
from forging or altering a handle: a master honours one only if the MAC matches under the
cell's handle key, so the permission checks done at open need not be repeated.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from attrs import frozen

from chubbypy.protocol._plain import DecodeError, array, binary, integer, pack, text, unpack
from chubbypy.protocol.session import (
    EVENT_MASK_ALL,
    HANDLE_BYTES_MAX,
    HANDLE_MODES_ALL,
    EventMask,
    HandleMode,
)
from chubbypy.protocol.values import ClientId, HandleId, SessionId

HANDLE_FORMAT = 1
SESSION_CREDENTIAL_FORMAT = "session-1"
"""Domain separation: no handle's check digits are ever a session's credential."""
CLIENT_CREDENTIAL_FORMAT = "client-1"
"""Domain separation: no session's credential (or handle's check digits) is ever a plain
client's credential, though all three are MACs under the same key."""
MAC_BYTES = 16
HANDLE_COUNTER_BITS = 32
"""A master hands out up to 2**32 handles per epoch; the epoch is above them."""


@frozen
class Handle:
    """An open handle; see the module docstring."""

    session_id: SessionId
    handle_id: HandleId
    path: str
    instance: int
    mode: HandleMode
    events: EventMask
    lock_delay_ms: int
    epoch: int

    @property
    def master_epoch(self) -> int:
        """The epoch of the master that created it."""
        return self.handle_id >> HANDLE_COUNTER_BITS

    def encode(self, key: bytes) -> bytes:
        """The handle's bytes, with check digits under `key`."""
        fields = self._fields()
        return pack([*fields, _mac(key, fields)])

    def _fields(self) -> list[Any]:
        return [
            HANDLE_FORMAT,
            self.session_id,
            self.handle_id,
            self.path,
            self.instance,
            int(self.mode),
            int(self.events),
            self.lock_delay_ms,
            self.epoch,
        ]


def handle_id_for(epoch: int, count: int) -> HandleId:
    """The id of the `count`-th handle made by the master of `epoch`."""
    assert 0 <= count < 1 << HANDLE_COUNTER_BITS, count
    return HandleId(epoch << HANDLE_COUNTER_BITS | count)


def handle_epoch(handle_id: HandleId) -> int:
    """The epoch of the master that made the handle (`handle_id_for`'s inverse)."""
    return handle_id >> HANDLE_COUNTER_BITS


def decode_handle(data: bytes, key: bytes) -> Handle:
    """The handle `data` encodes, if its check digits match under `key`; DecodeError for
    anything else (malformed, altered, forged, or made under another key)."""
    if len(data) > HANDLE_BYTES_MAX:
        raise DecodeError(f"a handle of {len(data)} bytes (at most {HANDLE_BYTES_MAX})")
    return unpack(data, lambda plain: _from_plain(plain, key))


def _from_plain(plain: Any, key: bytes) -> Handle:
    *fields, mac = array(plain, 10)
    if not hmac.compare_digest(binary(mac), _mac(key, fields)):
        raise DecodeError("the handle's check digits do not match: forged or altered")
    version, session, handle_id, path, instance, mode, events, lock_delay_ms, epoch = fields
    if type(version) is not int or version != HANDLE_FORMAT:
        raise DecodeError(f"unknown handle format {version!r:.20}")
    # Masked rather than refused: the check digits prove a master made these fields, and a
    # handle made before the session codec refused unknown bits may carry one.
    return Handle(
        SessionId(integer(session, 1)),
        HandleId(integer(handle_id)),
        text(path),
        integer(instance),
        HandleMode(integer(mode) & HANDLE_MODES_ALL),
        EventMask(integer(events) & EVENT_MASK_ALL),
        integer(lock_delay_ms),
        integer(epoch),
    )


def session_credential(session_id: SessionId, key: bytes) -> bytes:
    """The secret a session's owner shows on every call naming the session (KeepAlive,
    CloseSession, Open, ReadNode): check digits of its id under the cell's handle key, so
    that knowing (or guessing) a session's number is not enough to keep it alive, close it,
    open handles in it or acknowledge its events. Every master of the cell computes the
    same, so it survives fail-overs, and nothing about it need be replicated."""
    return _mac(key, [SESSION_CREDENTIAL_FORMAT, session_id])


def credential_matches(session_id: SessionId, credential: bytes, key: bytes) -> bool:
    """Whether `credential` is session `session_id`'s (compared in constant time)."""
    return hmac.compare_digest(credential, session_credential(session_id, key))


def client_credential(client_id: ClientId, key: bytes) -> bytes:
    """The secret a plain client's owner shows on every write (`WriteRequest`): check digits
    of its id under the cell's handle key, in a domain of their own. Client ids are
    sequential and need not be secret; without this, anyone could write as another client
    (spending its sequence numbers, so that its own later writes answer with the
    attacker's cached results) or read its cached results. As for sessions, every master
    computes the same, so nothing about it is replicated and it survives fail-overs."""
    return _mac(key, [CLIENT_CREDENTIAL_FORMAT, client_id])


def client_credential_matches(client_id: ClientId, credential: bytes, key: bytes) -> bool:
    """Whether `credential` is client `client_id`'s (compared in constant time)."""
    return hmac.compare_digest(credential, client_credential(client_id, key))


def _mac(key: bytes, fields: list[Any]) -> bytes:
    return hmac.new(key, pack(fields), hashlib.sha256).digest()[:MAC_BYTES]
