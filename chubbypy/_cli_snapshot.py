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

import argparse
import datetime
import os
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Final

from attrs import fields

from chubbypy._cli_text import shown
from chubbypy.namespace import NamespaceLimits
from chubbypy.node import (
    BackupError,
    NodeSettings,
    encode_backup,
    read_backup,
    restore_state,
)
from chubbypy.paxos import Durable, HardState
from chubbypy.protocol import Snapshot
from chubbypy.protocol.errors import ChubbyError, SnapshotGone

if TYPE_CHECKING:
    from chubbypy.cli import CellClient, CellTarget, Invocation
    from chubbypy.config import CellConfig

PROGRESS_BYTES_MIN: Final = 1 << 20
"""Snapshots larger than this report their progress on standard error, every tenth."""
STORE_NAME: Final = "replica.sqlite"
"""The store's file in a replica's directory (`chubbypy.config.CellConfig.storage_url_for`)."""


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    snapshot = commands.add_parser(
        "snapshot", parents=[common], help="back the cell up to a file, or seed a new cell"
    )
    actions = snapshot.add_subparsers(dest="action", required=True, metavar="ACTION")
    save = actions.add_parser(
        "save", parents=[common], help="save a snapshot of the cell (operators only)"
    )
    save.add_argument("file", help="the backup file to write (replaced atomically)")
    restore = actions.add_parser(
        "restore", parents=[common], help="seed a new cell's replica directory from a backup"
    )
    restore.add_argument("file", help="a backup file saved by snapshot save")
    restore.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="the replica's directory (DATA_DIR/<replica>), absent or empty",
    )
    restore.add_argument(
        "--rename-cell",
        action="store_true",
        help="restore another cell's backup into this cell, moving its names to /ls/<cell>",
    )


# ----------------------------------------------------------------------------- save


def save(
    client: CellClient,
    call: Invocation,
    config: CellConfig | None,
    stdout: BinaryIO,
    stderr: IO[str],
    as_json: bool,
) -> int:
    """Save the cell's snapshot to ``args.file``; the exit code."""
    from chubbypy import cli

    path = Path(call.args.file)
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
        unavailable = isinstance(error, (*cli.UNAVAILABLE_ERRORS, SnapshotGone))
        code = cli.EXIT_UNAVAILABLE if unavailable else cli.EXIT_FAILED
        return _failed(call, stdout, stderr, as_json, error.code.name, error.message, code)
    created_ms = time.time_ns() // 1_000_000
    data = encode_backup(call.cell, snapshot.index, snapshot.checksum, created_ms, snapshot.data)
    try:
        header, body = read_backup(data)  # the checks a restore makes, before writing
        restore_state(header, body, call.cell, **_state_limits(config))
        _write_atomically(path, data)
    except (BackupError, OSError) as error:
        what = "INTERNAL" if isinstance(error, BackupError) else "WRITE_FAILED"
        return _failed(call, stdout, stderr, as_json, what, str(error), cli.EXIT_FAILED)
    document = {
        "file": str(path),
        "index": snapshot.index,
        "checksum": snapshot.checksum.hex(),
        "bytes": len(data),
        "created": _iso(created_ms),
    }
    text = (
        f"saved the snapshot of cell {call.cell} at index {snapshot.index} (checksum "
        f"{snapshot.checksum.hex()}) to {path}: {len(data)} bytes"
    )
    return _done(call, stdout, as_json, document, text)


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
    call: Invocation, target: CellTarget, stdout: BinaryIO, stderr: IO[str], as_json: bool
) -> int:
    """Seed ``args.data_dir`` from ``args.file`` for the cell `target` names; the exit code."""
    from chubbypy import cli

    args, config, cell = call.args, target.config, target.name
    if cell is None:
        message = "name the new cell: --cell with its YAML file (or NAME@ADDRESS)"
        return _failed(call, stdout, stderr, as_json, "USAGE", message, cli.EXIT_USAGE)
    if config is not None and config.storage_url is not None:
        message = "the cell keeps its stores at storage_url; restore writes SQLite stores only"
        return _failed(call, stdout, stderr, as_json, "USAGE", message, cli.EXIT_USAGE)
    directory: Path = args.data_dir
    try:
        header, body = read_backup(Path(args.file).read_bytes())
        _check_directory(directory)
        if header.cell != cell and not args.rename_cell:
            raise BackupError(
                f"the backup is of cell {header.cell!r}, not {cell!r}: restore it into a cell "
                f"named {header.cell!r}, or give --rename-cell to move its names to /ls/{cell}"
            )
        restored = restore_state(header, body, cell, **_state_limits(config))
        _seed(directory, restored.snapshot)
    except (BackupError, OSError) as error:
        return _failed(
            call, stdout, stderr, as_json, "RESTORE_REFUSED", str(error), cli.EXIT_FAILED
        )
    document = {
        "file": str(args.file),
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
    return _done(call, stdout, as_json, document, text)


def _check_directory(directory: Path) -> None:
    """A restore writes only into a directory that is absent or empty."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise BackupError(f"{directory} is not an empty directory: a restore seeds a new replica")


def _seed(directory: Path, snapshot: Snapshot) -> None:
    """Make `directory` a replica's store holding `snapshot` as chosen, in one transaction:
    the replica starts from it as from its own checkpoint. Nothing is left on failure."""
    from chubbypy.store import SqlStore

    made = not directory.exists()
    previous = os.umask(0o077)  # the store holds every file's contents: its user's alone
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = SqlStore.for_path(directory / STORE_NAME)
        try:
            hard_state = HardState(chosen_index=snapshot.index)
            store.persist(Durable(hard_state=hard_state, snapshot=snapshot))
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


def _state_limits(config: CellConfig | None) -> dict[str, Any]:
    """The namespace limits and client table sizes a restored state is checked with: the
    cell's (any replica's: they are the same), or the defaults."""
    if config is None:
        defaults = fields(NodeSettings)
        return {
            "limits": NamespaceLimits(),
            "clients_max": defaults.clients_max.default,
            "client_results_max": defaults.client_results_max.default,
        }
    settings = config.node_settings(config.replicas[0].id)
    return {
        "limits": settings.namespace_limits,
        "clients_max": settings.clients_max,
        "client_results_max": settings.client_results_max,
    }


# ----------------------------------------------------------------------------- output


def _iso(milliseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _header(call: Invocation) -> dict[str, Any]:
    from chubbypy.cli import SCHEMA

    return {"schema": SCHEMA, "command": "snapshot", "action": call.args.action, "cell": call.cell}


def _done(
    call: Invocation, stdout: BinaryIO, as_json: bool, document: dict[str, Any], text: str
) -> int:
    from chubbypy.cli import EXIT_OK, write_json

    if as_json:
        write_json(stdout, {**_header(call), "ok": True, **document})
    else:
        stdout.write(f"{shown(text)}\n".encode())
        stdout.flush()
    return EXIT_OK


def _failed(
    call: Invocation,
    stdout: BinaryIO,
    stderr: IO[str],
    as_json: bool,
    code: str,
    message: str,
    exit_code: int,
) -> int:
    from chubbypy.cli import write_json

    print(f"chubbypy snapshot {call.args.action}: {code}: {shown(message)}", file=stderr)
    if as_json:
        failure = {"code": code, "message": message, "exit_code": exit_code}
        write_json(stdout, {**_header(call), "ok": False, "path": None, "error": failure})
    return exit_code
