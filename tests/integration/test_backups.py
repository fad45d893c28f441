"""Issue 15's backups on real processes: ``chubbypy snapshot save`` takes a snapshot from a
live cell's master through the client protocol (operators only), ``snapshot restore``
seeds three fresh replica directories from it (refusing a damaged file, another cell's,
and a directory in use), and a cell started on them serves everything back: contents,
metadata and ACL names; the lock a client of the old cell held is free once its
lock-delay has passed. Ports are the kernel's (`LiveCell`)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chubbypy.client import BlockingCell
from chubbypy.protocol.errors import NoSuchNode
from chubbypy.protocol.namespace import AclNames, Stat
from tests.integration.harness import REPLICA_IDS, LiveCell, poll

LOCK_DELAY_SECONDS = 2.0
FILES = {"app/config": b"mode=production\n", "app/peers": b"r1 r2 r3", "notes": b"\x00\xff" * 300}
"""Files of the saved cell, by path under its root, with their contents."""


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveCell, dict[str, Stat]]]:
    """A live cell with files, an ACL and a lock held by a live session; and each file's
    metadata. Its replicas stop once the module's tests are done."""
    cell = LiveCell(tmp_path_factory.mktemp("backup-source"))
    try:
        cell.start()
        principal, token = cell.operator
        operator = cell.client(principal=principal, token=token)
        operator.create(cell.path("app"), directory=True)
        stats = {name: operator.create(cell.path(name), data) for name, data in FILES.items()}
        stats["notes"] = operator.set_acl(cell.path("notes"), AclNames("admin", "admin", "all"))
        holder = cell.client(name="old holder")
        holder.lock(cell.path("app/lock"), lock_delay_seconds=LOCK_DELAY_SECONDS).__enter__()
        yield cell, stats
    finally:
        cell.close()


def test_a_principal_not_admitted_by_the_admin_acl_gets_no_backup(
    saved: tuple[LiveCell, dict[str, Stat]], tmp_path: Path
) -> None:
    """An anonymous ``snapshot save`` is refused PERMISSION_DENIED (exit 1) and writes
    no file."""
    cell, _ = saved
    target = tmp_path / "refused.snapshot"
    result = cell.cli("snapshot", "save", str(target), "--json")
    assert result.code == 1, result
    assert result.json()["error"]["code"] == "PERMISSION_DENIED", result
    assert "admin" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_saved_cell_restored_into_new_replicas_serves_everything_back(
    saved: tuple[LiveCell, dict[str, Stat]], tmp_path: Path
) -> None:
    """Saved by the operator (0600, index and checksum reported), restored into three
    fresh directories (the old session ended), refused into a used directory, from a
    truncated file or for another cell: the new cell started on them serves every file
    with its contents, metadata and ACL names, and the old holder's lock is free after
    its lock-delay."""
    source, stats = saved
    backup = tmp_path / "cell.snapshot"
    result = source.cli("snapshot", "save", str(backup), "--json", as_operator=True)
    assert result.code == 0, result
    document = result.json()
    assert document["index"] > 0
    assert len(document["checksum"]) == 16
    assert document["bytes"] == backup.stat().st_size
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["cell.snapshot"]  # no temporary left

    restored = LiveCell(tmp_path / "restored", name=source.name)
    restored.write_config()
    for rid in REPLICA_IDS:
        done = restore(restored, backup, restored.data_dir / rid)
        assert done.code == 0, done
        assert (done.json()["index"], done.json()["sessions_ended"]) == (document["index"], 1)
    refused_again = restore(restored, backup, restored.data_dir / REPLICA_IDS[0])
    assert (refused_again.code, "not an empty directory" in refused_again.stderr) == (1, True)
    truncated = tmp_path / "cut.snapshot"
    truncated.write_bytes(backup.read_bytes()[:-100])
    cut = restore(restored, truncated, tmp_path / "scratch")
    assert (cut.code, "truncated" in cut.stderr) == (1, True), cut
    other = restore(restored, backup, tmp_path / "other", "other@127.0.0.1:1")
    assert (other.code, "--rename-cell" in other.stderr) == (1, True), other
    assert not (tmp_path / "scratch").exists()
    assert not (tmp_path / "other").exists()

    try:
        restored.start()
        principal, token = restored.operator
        check_served(restored, restored.client(principal=principal, token=token), stats)
    finally:
        restored.close()


def restore(cell: LiveCell, backup: Path, directory: Path, cell_name: str | None = None) -> Any:
    return cell.cli(
        "snapshot", "restore", str(backup), "--data-dir", str(directory), "--json",
        cell=cell_name,
    )  # fmt: skip


def check_served(cell: LiveCell, operator: BlockingCell, stats: dict[str, Stat]) -> None:
    """Every saved file is there with its contents and metadata (its ACL names among them);
    the lock its old holder held is free once its lock-delay passed, and no old session
    is listed."""
    for name, data in FILES.items():
        read = operator.get_contents_and_stat(cell.path(name))
        assert (read.contents, read.stat) == (data, stats[name]), name
    assert operator.get_stat(cell.path("notes")).acl == AclNames("admin", "admin", "all")
    assert [e.name for e in operator.list_dir(cell.path("app"))] == ["config", "lock", "peers"]
    assert all(s.name != "old holder" for s in operator.list_sessions())
    newcomer = cell.client(name="new holder")
    lock = newcomer.lock(cell.path("app/lock"), timeout=LOCK_DELAY_SECONDS + 20)
    held = lock.__enter__()
    assert held.sequencer
    lock.__exit__(None, None, None)
    with pytest.raises(NoSuchNode):
        operator.get_stat(cell.path("missing"))
    poll(lambda: operator.lock_info(cell.path("app/lock")).mode == "free" or None, "free", 10)
