"""Backup files: a small header, then a snapshot; and a new cell's state seeded from one.
Pure: bytes in, values out (the CLI reads and writes the files, and the store).

A backup file (``chubbypy snapshot save``) is::

    b"chubbypy snapshot\\n"              the magic line
    4 bytes, big-endian                  the header's length (at most HEADER_BYTES_MAX)
    msgpack [format, cell, index,        BACKUP_FORMAT; the cell's name; the log index the
             checksum, created_ms,       snapshot is of; the state's checksum there; when
             body_bytes, digest]         it was saved (ms since the epoch, UTC); the body's
                                         length and SHA-256
    the body                             the applier's snapshot (`chubbypy.paxos.Applier.
                                         snapshot`), exactly as replicas send it to catch up

`read_backup` refuses a file that is not one, a header out of range, a body cut short or
longer than announced, or one whose bytes are not the ones saved (its SHA-256).
`restore_state` then restores the body into a fresh applier and namespace (every record
decoded and checked, as a peer's snapshot is) and recomputes the state's checksum, which
must be the one saved; so nothing is written from a file that does not restore.

**A restore seeds a new cell.** Its sessions belong to clients of the old cell, whose
credentials the new cell's handle key does not make, and whose view of the state went on
past the snapshot: `restore_state` ends every one of them, as expired (the same
`EndSession` a master proposes when a lease runs out), in one entry after the snapshot's
index. Their ephemeral files are deleted; the locks they held enter their lock-delay, which
the new cell's first master runs in full before the locks are free. Every replica restored
from one file gets the same state, so their checksums agree.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from attrs import frozen

from chubbypy.namespace import NamespaceLimits, NamespaceMachine
from chubbypy.paxos import Applier, HardState
from chubbypy.protocol import (
    MASTER_CLIENT,
    NO_BALLOT,
    Ballot,
    Command,
    Entry,
    LogIndex,
    Membership,
    Snapshot,
    Value,
    ValueKind,
)
from chubbypy.protocol._plain import DecodeError, array, binary, bounded, pack, text, unpack
from chubbypy.protocol.namespace import EndSession
from chubbypy.protocol.namespace_codec import encode_log_write
from chubbypy.protocol.session import (
    SNAPSHOT_BYTES_MAX,
    SNAPSHOT_DIGEST_BYTES,
    STATE_CHECKSUM_BYTES,
)
from chubbypy.protocol.values import LOG_INDEX_MAX

MAGIC: Final = b"chubbypy snapshot\n"
BACKUP_FORMAT: Final = 1
"""The header's first field; a later layout gets a new number."""
HEADER_BYTES_MAX: Final = 4096
CELL_CHARS_MAX: Final = 64
CREATED_MS_MAX: Final = (1 << 63) - 1


class BackupError(Exception):
    """A backup file that cannot be restored, and why (one line)."""


@frozen
class BackupHeader:
    """What a backup file says of itself."""

    cell: str
    index: int
    checksum: bytes
    created_ms: int
    body_bytes: int
    digest: bytes


@frozen
class RestoredCell:
    """A new cell's state, seeded from a backup: the snapshot its replicas start from."""

    snapshot: Snapshot
    sessions_ended: int
    """The old cell's sessions ended as expired (see the module docstring)."""
    hard_state: HardState
    """What each replica's store starts with: the snapshot's index as chosen, and a
    promise of a ballot in the round of the snapshot's epoch (owned by the new cell's
    first voter: for a lease after they start, the others accept only its
    campaign), so that the new cell's first master campaigns in a later round and serves
    a later epoch than any the state has seen (else the applier, at that epoch already,
    refuses every command of the new master's lower epoch, and the new cell never
    answers a write)."""


def encode_backup(cell: str, index: int, checksum: bytes, created_ms: int, body: bytes) -> bytes:
    """The bytes of a backup file of snapshot `body`."""
    digest = hashlib.sha256(body).digest()
    header = pack([BACKUP_FORMAT, cell, index, checksum, created_ms, len(body), digest])
    assert len(header) <= HEADER_BYTES_MAX, len(header)
    return MAGIC + len(header).to_bytes(4, "big") + header + body


def read_backup(data: bytes) -> tuple[BackupHeader, bytes]:
    """A backup file's header and body, checked whole; BackupError saying what is wrong."""
    if not data.startswith(MAGIC):
        raise BackupError("not a chubbypy snapshot file (it does not start as one)")
    start = len(MAGIC) + 4
    if len(data) < start:
        raise BackupError("truncated: the file ends inside its header")
    length = int.from_bytes(data[len(MAGIC) : start], "big")
    if length > HEADER_BYTES_MAX or len(data) < start + length:
        raise BackupError(f"truncated or damaged: a header of {length} bytes does not fit")
    try:
        header = unpack(data[start : start + length], _header_from_plain)
    except DecodeError as error:
        raise BackupError(f"damaged header: {error}") from None
    body = data[start + length :]
    if len(body) != header.body_bytes:
        cut = "truncated" if len(body) < header.body_bytes else "longer than saved"
        raise BackupError(
            f"{cut}: {len(body)} bytes of snapshot, the header says {header.body_bytes}"
        )
    if hashlib.sha256(body).digest() != header.digest:
        raise BackupError("damaged: the snapshot's bytes are not the ones saved (SHA-256 differs)")
    return header, body


def _header_from_plain(plain: Any) -> BackupHeader:
    fields = array(plain)
    if not fields or fields[0] != BACKUP_FORMAT or type(fields[0]) is not int:
        raise DecodeError(f"unknown backup format {fields[:1]!r:.20}")
    _, cell, index, checksum, created_ms, body_bytes, digest = array(plain, 7)
    name = text(cell)
    if not 1 <= len(name) <= CELL_CHARS_MAX:
        raise DecodeError(f"a cell name of {len(name)} characters")
    return BackupHeader(
        name,
        bounded(index, 1, LOG_INDEX_MAX - 1, "index"),
        _sized(checksum, STATE_CHECKSUM_BYTES, "checksum"),
        bounded(created_ms, 0, CREATED_MS_MAX, "creation time"),
        bounded(body_bytes, 1, SNAPSHOT_BYTES_MAX, "snapshot size"),
        _sized(digest, SNAPSHOT_DIGEST_BYTES, "digest"),
    )


def _sized(data: Any, size: int, what: str) -> bytes:
    value = binary(data)
    if len(value) != size:
        raise DecodeError(f"a {what} of {len(value)} bytes, not {size}")
    return value


def restore_state(
    header: BackupHeader,
    body: bytes,
    cell: str,
    limits: NamespaceLimits,
    *,
    clients_max: int,
    client_results_max: int,
    membership: Membership,
) -> RestoredCell:
    """Cell `cell`'s state from a backup read by `read_backup`: restored and checked (its
    checksum recomputed), renamed into `cell` if the backup is of another cell, and every
    old session ended (see the module docstring); its snapshot's handle is `membership`, the
    new cell's first (the old cell's members are not the new one's). BackupError if it
    does not restore."""
    machine = NamespaceMachine(header.cell, limits)
    applier = Applier(machine, clients_max=clients_max, client_results_max=client_results_max)
    try:
        applier.restore(LogIndex(header.index), body)
    except DecodeError as error:
        raise BackupError(f"damaged: the snapshot does not restore: {error}") from None
    if applier.checksum() != header.checksum:
        raise BackupError(
            "damaged: the restored state's checksum is not the one saved "
            f"({applier.checksum().hex()}, saved {header.checksum.hex()})"
        )
    if cell != header.cell:
        machine.rename_cell(cell)
    sessions = [record.session_id for record in machine.sessions()]
    if not sessions:
        return _restored(applier, LogIndex(header.index), 0, membership)
    ends = tuple(
        Command(MASTER_CLIENT, number, encode_log_write(EndSession(session_id, expired=True), ""))
        for number, session_id in enumerate(sessions, 1)
    )
    index = LogIndex(header.index + 1)
    applier.apply(Entry(index, NO_BALLOT, Value(applier.epoch, ValueKind.COMMANDS, ends)))
    assert not machine.sessions(), machine.sessions()
    return _restored(applier, index, len(sessions), membership)


def _restored(
    applier: Applier, index: LogIndex, sessions_ended: int, membership: Membership
) -> RestoredCell:
    # A campaign's round is above every promised one (`Replica._promise_next_ballot`).
    owner = min(membership.voters)
    hard_state = HardState(promised=Ballot(max(applier.epoch, 1), owner), chosen_index=index)
    snapshot = Snapshot(index, applier.snapshot(), membership)
    return RestoredCell(snapshot, sessions_ended, hard_state)
