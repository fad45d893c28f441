"""``chubbypy snapshot save|restore``: back a cell up to a file, and seed a new cell from one.

Shell (STYLE §1): files, the store and the terminal around `chubbypy.client.Cell.snapshot`
(the transfer) and `chubbypy.node` (the file's format, its checks and the restored state).

* ``save FILE`` takes a snapshot from the master through the client protocol (an
  operator's call: the ACL ``admin``), checks it restores to the checksum the master
  announced, and writes it atomically (a temporary file in the same directory, fsync,
  rename, fsync of the directory), mode 0600: it holds every file, ACL and session.
  Progress goes to standard error for snapshots of more than PROGRESS_BYTES_MIN.
* ``restore FILE --data-dir DIR`` seeds one replica's directory (``DATA_DIR/<replica>``)
  of a new cell, the one ``--cell`` names: it refuses a damaged or truncated file,
  another cell's (unless ``--rename-cell``), and a DIR that is not empty, before
  writing anything. Restore every replica of the new cell from the same file; they get
  the same state (see `chubbypy.node._backup_file` for what becomes of old sessions).
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

from attrs import fields

from chubbypy._cli_outcome import Done, Refused
from chubbypy._exit_codes import EXIT_UNAVAILABLE, EXIT_USAGE
from chubbypy.client._calls import RETRIED_CODES
from chubbypy.client._snapshot import CellSnapshot
from chubbypy.namespace import NamespaceLimits
from chubbypy.node import (
    BackupError,
    NodeSettings,
    RestoredCell,
    encode_backup,
    read_backup,
    restore_state,
)
from chubbypy.paxos import Durable, membership_of_ids
from chubbypy.protocol import ReplicaId
from chubbypy.protocol.errors import (
    ChubbyError,
    SnapshotGone,
    Unavailable,
    UnsupportedVersion,
    WrongCell,
)

if TYPE_CHECKING:
    from chubbypy.config import CellConfig

UNAVAILABLE: Final = (Unavailable, WrongCell, UnsupportedVersion, SnapshotGone)
"""Errors that mean "no whole snapshot could be had now", not "refused": exit code 3."""


class SnapshotSource(Protocol):
    """What a save needs of a client: `chubbypy.client.BlockingCell.snapshot`."""

    def snapshot(self, progress: Callable[[int, int], None] | None = None) -> CellSnapshot: ...


PROGRESS_BYTES_MIN: Final = 1 << 20
"""Snapshots larger than this report their progress on standard error, every tenth."""
STORE_NAME: Final = "replica.sqlite"
"""The store's file in a replica's directory (`chubbypy.config.CellConfig.storage_url_for`)."""


# ----------------------------------------------------------------------------- save


def save(
    client: SnapshotSource, cell: str, config: CellConfig | None, path: Path, stderr: IO[str]
) -> Done | Refused:
    """Save the cell's snapshot to `path`."""
    shown_progress = [0]

    def progress(received: int, total: int) -> None:
        tenth = received * 10 // total
        if total > PROGRESS_BYTES_MIN and tenth > shown_progress[0]:
            shown_progress[0] = tenth
            print(f"chubbypy snapshot save: {received} of {total} bytes", file=stderr)

    try:
        snapshot = client.snapshot(progress)
    except ChubbyError as error:
        # No master, or none that kept one snapshot long enough: unavailable; else refused.
        unavailable = isinstance(error, UNAVAILABLE) or error.code in RETRIED_CODES
        return Refused(error.code.name, error.message, EXIT_UNAVAILABLE if unavailable else 1)
    created_ms = time.time_ns() // 1_000_000
    data = encode_backup(cell, snapshot.index, snapshot.checksum, created_ms, snapshot.data)
    try:
        header, body = read_backup(data)  # the checks a restore makes, before writing
        restore_state(header, body, cell, **_state_limits(config))
        _write_atomically(path, data)
    except (BackupError, OSError) as error:
        what = "INTERNAL" if isinstance(error, BackupError) else "WRITE_FAILED"
        return Refused(what, str(error), 1)
    document = {
        "file": str(path),
        "index": snapshot.index,
        "checksum": snapshot.checksum.hex(),
        "bytes": len(data),
        "created": _iso(created_ms),
    }
    text = (
        f"saved the snapshot of cell {cell} at index {snapshot.index} (checksum "
        f"{snapshot.checksum.hex()}) to {path}: {len(data)} bytes"
    )
    return Done(document, text)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: a temporary file beside it, made 0600,
    synced, renamed over it; then the directory synced, so the rename lasts."""
    directory = path.parent if str(path.parent) else Path(".")
    temporary = directory / f".{path.name}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory_descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_descriptor)
    finally:
        os.close(directory_descriptor)


# ----------------------------------------------------------------------------- restore


def restore(
    cell: str | None, config: CellConfig | None, file: Path, directory: Path, rename: bool
) -> Done | Refused:
    """Seed `directory` from the backup `file` for cell `cell` (from `config`, if given)."""
    if cell is None:
        message = "name the new cell: --cell with its YAML file (or NAME@ADDRESS)"
        return Refused("USAGE", message, EXIT_USAGE)
    if config is not None and config.storage_url is not None:
        message = "the cell keeps its stores at storage_url; restore writes SQLite stores only"
        return Refused("USAGE", message, EXIT_USAGE)
    try:
        header, body = read_backup(file.read_bytes())
        _check_directory(directory)
        if header.cell != cell and not rename:
            raise BackupError(
                f"the backup is of cell {header.cell!r}, not {cell!r}: restore it into a cell "
                f"named {header.cell!r}, or give --rename-cell to move its names to /ls/{cell}"
            )
        if config is None:
            message = (
                "restore needs the new cell's YAML file (--cell cell.yaml): the restored "
                "store records the new cell's members"
            )
            return Refused("USAGE", message, EXIT_USAGE)
        restored = restore_state(header, body, cell, **_state_limits(config))
        _seed(directory, restored)
    except (BackupError, OSError) as error:
        return Refused("RESTORE_REFUSED", str(error), 1)
    document = {
        "file": str(file),
        "data_dir": str(directory),
        "source_cell": header.cell,
        "index": header.index,
        "restored_index": restored.snapshot.index,
        "sessions_ended": restored.sessions_ended,
        "created": _iso(header.created_ms),
    }
    text = (
        f"restored cell {header.cell}'s snapshot at index {header.index} (saved "
        f"{_iso(header.created_ms)}) into {directory} for cell {cell}; "
        f"{restored.sessions_ended} sessions of the old cell ended"
    )
    return Done(document, text)


def _check_directory(directory: Path) -> None:
    """A restore writes only into a directory that is absent or empty."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise BackupError(f"{directory} is not an empty directory: a restore seeds a new replica")


def _seed(directory: Path, restored: RestoredCell) -> None:
    """Make `directory` a replica's store holding the restored snapshot as chosen (and the
    restore's hard state: `RestoredCell.hard_state`), in one transaction: the replica
    starts from it as from its own checkpoint. Nothing is left on failure."""
    from chubbypy.store import SqlStore

    made = not directory.exists()
    previous = os.umask(0o077)  # the store holds every file's contents: its user's alone
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = SqlStore.for_path(directory / STORE_NAME)
        try:
            store.persist(Durable(hard_state=restored.hard_state, snapshot=restored.snapshot))
        finally:
            store.close()
    except BaseException:
        for leftover in directory.glob(f"{STORE_NAME}*"):
            leftover.unlink(missing_ok=True)
        if made:
            directory.rmdir()
        raise
    finally:
        os.umask(previous)


CHECK_MEMBERSHIP: Final = membership_of_ids(ReplicaId(f"r{n}") for n in (1, 2, 3))
"""The membership a saved snapshot is checked with when no cell file is given (`save`
restores it to check it; a restore itself needs the new cell's file)."""


def _state_limits(config: CellConfig | None) -> dict[str, Any]:
    """The namespace limits and client table sizes a restored state is checked with: the
    cell's (any replica's: they are the same), or the defaults."""
    if config is None:
        defaults = fields(NodeSettings)
        return {
            "limits": NamespaceLimits(),
            "clients_max": defaults.clients_max.default,
            "client_results_max": defaults.client_results_max.default,
            "membership": CHECK_MEMBERSHIP,
        }
    settings = config.node_settings(config.replicas[0].id)
    return {
        "limits": settings.namespace_limits,
        "clients_max": settings.clients_max,
        "client_results_max": settings.client_results_max,
        "membership": settings.seed_membership,
    }


# ----------------------------------------------------------------------------- output


def _iso(milliseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
