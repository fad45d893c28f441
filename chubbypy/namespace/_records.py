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

from chubbypy.protocol._plain import (
    DecodeError,
    array,
    binary,
    boolean,
    integer,
    pack,
    text,
    unpack,
)
from chubbypy.protocol.namespace import AclNames

SNAPSHOT_FORMAT = 1
"""First field of a snapshot; a later format gets a new number so old bytes are refused."""


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


@frozen
class NamespaceChanges:
    """What a checkpoint must write: the nodes created or changed, and the names of the nodes
    deleted, since the previous checkpoint; each in path order."""

    upserts: tuple[NodeRecord, ...]
    deletes: tuple[str, ...]


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
    ]


def record_from_plain(data: Any) -> NodeRecord:
    """A record from plain data; DecodeError if it is not shaped like one."""
    path, is_dir, ephemeral, contents, instance, content, lock, acl_generation, checksum, acl = (
        array(data, 10)
    )
    read, write, change = array(acl, 3)
    return NodeRecord(
        text(path),
        boolean(is_dir),
        boolean(ephemeral),
        binary(contents),
        integer(instance),
        integer(content),
        integer(lock),
        integer(acl_generation),
        integer(checksum),
        AclNames(text(read), text(write), text(change)),
    )


def encode_snapshot(cell: str, records: Iterable[NodeRecord]) -> bytes:
    """The snapshot bytes of a cell's nodes; `records` must be in path order."""
    return pack([SNAPSHOT_FORMAT, cell, [record_to_plain(r) for r in records]])


def decode_snapshot(data: bytes) -> tuple[str, list[NodeRecord]]:
    """The cell and records of a snapshot; DecodeError for bytes `encode_snapshot` did not
    write (whether they form a tree is checked when the tree is built)."""
    return unpack(data, _snapshot_from_plain)


def _snapshot_from_plain(data: Any) -> tuple[str, list[NodeRecord]]:
    version, cell, records = array(data, 3)
    if version != SNAPSHOT_FORMAT or type(version) is not int:
        raise DecodeError(f"unknown snapshot format {version!r:.20}")
    return text(cell), [record_from_plain(r) for r in array(records)]
