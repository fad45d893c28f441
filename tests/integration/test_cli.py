"""The ``chubbypy`` command against a live cell: writes, reads, listings and exit codes."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import LiveCell


def test_cli_writes_and_reads_through_the_master(cell: LiveCell) -> None:
    """mkdir, put, cat, stat, ls (text and JSON) and rm change and show the namespace."""
    made = cell.cli("mkdir", "dir")
    assert made.code == 0, made
    put = cell.cli("--json", "put", "dir/greeting", "hello, cell")
    assert put.code == 0, put
    assert (put.json()["created"], put.json()["path"]) == (True, cell.path("dir/greeting"))
    shown = cell.cli("cat", cell.path("dir/greeting"))
    assert (shown.code, shown.output) == (0, b"hello, cell"), shown

    replaced = cell.cli("put", "dir/greeting", "-", stdin=b"\x00\xffbinary")
    assert replaced.code == 0, replaced
    raw = cell.cli("cat", "dir/greeting")
    assert (raw.code, raw.output) == (0, b"\x00\xffbinary"), raw
    cat = cell.cli("--json", "cat", "/dir/greeting")
    assert cat.code == 0, cat
    assert cat.json()["contents"] == {"encoding": "base64", "data": "AP9iaW5hcnk="}
    assert cat.json()["stat"]["content_generation"] == 2

    stat = cell.cli("stat", "dir/greeting")
    assert stat.code == 0, stat
    fields = dict(line.split(None, 1) for line in stat.stdout.splitlines())
    assert fields["path"] == cell.path("dir/greeting")
    assert (fields["type"], fields["size"], fields["content_generation"]) == ("file", "8", "2")

    assert cell.cli("put", "dir/other", "x").code == 0
    listing = cell.cli("ls", "dir")
    assert (listing.code, listing.stdout) == (0, "greeting\nother\n"), listing
    root = cell.cli("ls")
    assert (root.code, root.stdout) == (0, "acl/\ndir/\n"), root  # acl/: the cell made it
    as_json = cell.cli("ls", "--json", "./dir")
    assert as_json.code == 0, as_json
    document = as_json.json()
    assert (document["ok"], document["command"], document["cell"]) == (True, "ls", cell.name)
    entries = {e["name"]: e for e in document["entries"]}
    assert sorted(entries) == ["greeting", "other"]
    assert entries["other"]["path"] == cell.path("dir/other")
    assert (entries["other"]["stat"]["size"], entries["greeting"]["stat"]["size"]) == (1, 8)
    assert entries["greeting"]["stat"]["is_directory"] is False

    removed = cell.cli("--json", "rm", "dir/other")
    assert removed.code == 0, removed
    assert removed.json()["deleted"] is True
    after = cell.cli("ls", "dir")
    assert (after.code, after.stdout) == (0, "greeting\n"), after


def test_cli_refusals_exit_1_with_the_path_and_the_error(cell: LiveCell) -> None:
    """A missing node, a non-empty directory or an existing file exits 1 with a clear message."""
    missing = cell.cli("cat", "no/such/file")
    assert missing.code == 1, missing
    assert missing.output == b""
    assert f"{cell.path('no/such/file')}: NO_SUCH_NODE" in missing.stderr, missing

    as_json = cell.cli("--json", "rm", "nothing-here")
    assert as_json.code == 1, as_json
    document = as_json.json()
    assert (document["ok"], document["path"]) == (False, cell.path("nothing-here"))
    assert document["error"]["code"] == "NO_SUCH_NODE"
    assert document["error"]["exit_code"] == 1

    assert cell.cli("mkdir", "d").code == 0
    assert cell.cli("put", "d/f", "1").code == 0
    not_empty = cell.cli("rm", "d")
    assert (not_empty.code, "NOT_EMPTY" in not_empty.stderr) == (1, True), not_empty
    exists = cell.cli("put", "--create-only", "d/f", "2")
    assert (exists.code, "EXISTS" in exists.stderr) == (1, True), exists
    unchanged = cell.cli("cat", "d/f")
    assert (unchanged.code, unchanged.output) == (0, b"1"), unchanged


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    """Bad usage (unknown command, missing argument, bad option value, other cell) exits 2."""
    idle = LiveCell(tmp_path)
    idle.write_config()
    for args in (
        ["frobnicate"],
        ["cat"],
        ["--timeout", "-1", "ls"],
        ["put", "--if-generation", "x", "f", "v"],
        ["ls", "/ls/othercell/x"],
    ):
        result = idle.cli(*args)
        assert result.code == 2, f"{args}: {result}"
        assert result.stderr.strip(), f"{args}: no message: {result}"
    no_file = idle.cli("ls", cell=str(tmp_path / "missing.yaml"))
    assert (no_file.code, "missing.yaml" in no_file.stderr) == (2, True), no_file


def test_cli_exits_3_when_no_replica_is_reachable(tmp_path: Path) -> None:
    """With every replica down the command gives up after --timeout and exits 3."""
    idle = LiveCell(tmp_path)
    idle.write_config()  # nothing listens on its ports
    result = idle.cli("--timeout", "1", "ls")
    assert (result.code, "UNAVAILABLE" in result.stderr) == (3, True), result
    as_json = idle.cli("--json", "--timeout", "1", "cat", "f")
    assert as_json.code == 3, as_json
    assert as_json.json()["error"]["code"] == "UNAVAILABLE"
    addresses = ",".join(f"127.0.0.1:{p.client}" for p in idle.ports.values())
    status = idle.cli("--timeout", "1", "status", cell=f"{idle.name}@{addresses}")
    assert (status.code, status.stderr) == (3, "chubbypy status: no replica answered\n"), status
    lines = status.stdout.splitlines()
    assert [line.split()[2] for line in lines[1:4]] == ["unreachable"] * 3, status
    assert sum(line.startswith("unreachable: ") for line in lines[4:]) == 3, status
