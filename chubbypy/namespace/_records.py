"""Node records: what is persisted of each node, and the snapshot format. Pure: values and
their encoding.

A `NodeRecord` holds every persisted field of one node. The same records serve three uses
(STYLE §5): the in-memory tree keeps one per node, a checkpoint stores one row per node in
the ``nodes`` table, and a snapshot is the list of them in path order. A directory's size is
not stored: it is the number of its children, which the records themselves give.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from attrs import frozen

from chubbypy.locks import FREE, Holder, LockMode, LockState
from chubbypy.protocol._plain import (
    DecodeError,
    array,
    binary,
    boolean,
    integer,
    pack,
    text,
    uint64,
    unpack,
)
from chubbypy.protocol.errors import Failure
from chubbypy.protocol.namespace import AclNames, MultiResult, SessionOpened, WriteResult, Written
from chubbypy.protocol.namespace_codec import result_from_plain, result_to_plain
from chubbypy.protocol.values import NO_SESSION, HandleId, SessionId
from chubbypy.sessions import SessionCalls, SessionRecord

SNAPSHOT_FORMAT = 5
"""First field of a snapshot; a later format gets a new number. Format 1 (before sessions
and locks) is still read: its nodes are unlocked and owned by no session; so is format 2
(before sessions kept their calls' answers): its sessions have none kept; format 3
(before nodes named the principal that created them): its nodes were created by no
principal, so they count against no one's quota; and format 4 (before sessions named the
principal that created them): its sessions were created by no principal, so a retried
CreateSession of one is no one's (`chubbypy.namespace.retried_session`)."""
SNAPSHOT_FORMATS = (1, 2, 3, 4, SNAPSHOT_FORMAT)
"""Every format `decode_snapshot` reads."""


@frozen
class NodeRecord:
    """Every persisted field of one node: a row of a checkpoint, an entry of a snapshot."""

    path: str
    is_directory: bool
    ephemeral: bool
    contents: bytes
    """Empty for a directory."""
    instance: int
    content_generation: int
    """1 when a file is created, +1 per write of its contents; always 0 for a directory."""
    lock_generation: int
    acl_generation: int
    """1 when the node is created (its ACL names are written then), +1 per SetAcl."""
    checksum: int
    """`contents_checksum(contents)` for a file; 0 for a directory."""
    acl: AclNames
    owner_session: SessionId = NO_SESSION
    """The session an ephemeral node belongs to (deleted when it ends); NO_SESSION for a
    permanent node (or an ephemeral one from before sessions existed)."""
    lock: LockState = FREE
    creator: str = ""
    """The principal that created the node, whose quotas it counts against
    (`chubbypy.namespace._quota`); "" for a node created by the cell itself, by a trusted
    caller, or before nodes kept their creator (it counts against no one)."""


@frozen
class NamespaceChanges:
    """What a checkpoint must write: the nodes created or changed, and the names of the nodes
    deleted, since the previous checkpoint; each in path order."""

    upserts: tuple[NodeRecord, ...]
    deletes: tuple[str, ...]
    session_upserts: tuple[SessionRecord, ...] = ()
    session_deletes: tuple[SessionId, ...] = ()
    """Sessions opened and ended since the previous checkpoint, in id order."""


def contents_checksum(contents: bytes) -> int:
    """The 64-bit checksum of a file's contents (Chubby §2.3)."""
    return int.from_bytes(hashlib.blake2b(contents, digest_size=8).digest(), "big")


def record_to_plain(record: NodeRecord) -> list[Any]:
    acl = record.acl
    return [
        record.path,
        record.is_directory,
        record.ephemeral,
        record.contents,
        record.instance,
        record.content_generation,
        record.lock_generation,
        record.acl_generation,
        record.checksum,
        [acl.read, acl.write, acl.change],
        record.owner_session,
        [
            [
                [h.session_id, h.handle_id, int(h.mode), h.lock_delay_ms]
                for h in record.lock.holders
            ],
            record.lock.delay_ms,
        ],
        record.creator,
    ]


def record_from_plain(data: Any, snapshot_format: int = SNAPSHOT_FORMAT) -> NodeRecord:
    """A record from plain data; DecodeError if it is not shaped like one."""
    fields = array(data, {1: 10, 2: 12, 3: 12}.get(snapshot_format, 13))
    path, is_dir, ephemeral, contents, instance, content, lock, acl_generation, checksum, acl = (
        fields[:10]
    )
    owner_session, lock_state = (
        (NO_SESSION, FREE) if snapshot_format == 1 else _ownership(fields[10:12])
    )
    creator = text(fields[12]) if snapshot_format >= 4 else ""
    read, write, change = array(acl, 3)
    return NodeRecord(
        text(path),
        boolean(is_dir),
        boolean(ephemeral),
        binary(contents),
        uint64(instance),
        uint64(content),
        uint64(lock),
        uint64(acl_generation),
        integer(checksum),  # a 64-bit digest: unsigned, checked against the contents
        AclNames(text(read), text(write), text(change)),
        owner_session,
        lock_state,
        creator,
    )


def _ownership(fields: list[Any]) -> tuple[SessionId, LockState]:
    owner, lock = fields
    holders, delay_ms = array(lock, 2)
    decoded = []
    for plain in array(holders):
        session_id, handle_id, mode, lock_delay_ms = array(plain, 4)
        try:
            lock_mode = LockMode(integer(mode))
        except ValueError:
            raise DecodeError(f"unknown lock mode {mode!r:.20}") from None
        holder = Holder(
            SessionId(uint64(session_id, 1)),
            HandleId(uint64(handle_id)),
            lock_mode,
            uint64(lock_delay_ms),
        )
        decoded.append(holder)
    return SessionId(uint64(owner)), LockState(tuple(decoded), uint64(delay_ms))


def session_to_plain(session: SessionRecord) -> list[Any]:
    calls = session.calls
    results = [[number, result_to_plain(result)] for number, result in calls.results]
    fields = [session.session_id, session.name, session.nonce, calls.low_water, results]
    return [*fields, session.principal]


def session_from_plain(data: Any, snapshot_format: int = SNAPSHOT_FORMAT) -> SessionRecord:
    if snapshot_format < 3:  # before sessions kept their calls' answers
        session_id, name = array(data, 2)
        return SessionRecord(SessionId(uint64(session_id, 1)), text(name))
    if snapshot_format < 5:  # before sessions named the principal that created them
        session_id, name, nonce, low_water, results = array(data, 5)
        principal = ""
    else:
        session_id, name, nonce, low_water, results, principal = array(data, 6)
    answers = tuple(
        (uint64(number, 1), _call_result(result))
        for number, result in (array(pair, 2) for pair in array(results))
    )
    calls = SessionCalls(uint64(low_water, 1), answers)
    return SessionRecord(
        SessionId(uint64(session_id, 1)), text(name), uint64(nonce), calls, text(principal)
    )


def _call_result(data: Any) -> WriteResult:
    result = result_from_plain(data)
    if not isinstance(result, Written | MultiResult | Failure | SessionOpened):
        raise DecodeError(f"not a write's result: {type(result).__name__}")
    return result


def encode_snapshot(
    cell: str, records: Iterable[NodeRecord], sessions: Iterable[SessionRecord] = ()
) -> bytes:
    """The snapshot bytes of a cell's nodes and sessions; `records` must be in path order
    and `sessions` in id order."""
    return pack(
        [
            SNAPSHOT_FORMAT,
            cell,
            [record_to_plain(r) for r in records],
            [session_to_plain(s) for s in sessions],
        ]
    )


def decode_snapshot(data: bytes) -> tuple[str, list[NodeRecord], list[SessionRecord]]:
    """The cell, records and sessions of a snapshot; DecodeError for bytes `encode_snapshot`
    did not write (whether they form a tree is checked when the tree is built)."""
    return unpack(data, _snapshot_from_plain)


def _snapshot_from_plain(data: Any) -> tuple[str, list[NodeRecord], list[SessionRecord]]:
    fields = array(data)
    version = fields[0] if fields else None
    if type(version) is not int or version not in SNAPSHOT_FORMATS:
        raise DecodeError(f"unknown snapshot format {version!r:.20}")
    if version == 1:
        _, cell, records = array(data, 3)
        return text(cell), [record_from_plain(r, 1) for r in array(records)], []
    _, cell, records, sessions = array(data, 4)
    nodes = [record_from_plain(r, version) for r in array(records)]
    return text(cell), nodes, [session_from_plain(s, version) for s in array(sessions)]
