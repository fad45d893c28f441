"""The chubbypy command: arguments, the cell and paths, text and JSON output, exit codes."""

from __future__ import annotations

import io
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from chubbypy import cli
from chubbypy.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    SCHEMA,
    CellTarget,
    UsageError,
    build_parser,
    find_cell,
    parse_cell,
    resolve_path,
)
from chubbypy.client import ReplicaReport
from chubbypy.protocol.client import ReplicaStatus
from chubbypy.protocol.errors import (
    ChubbyError,
    ErrorCode,
    Failure,
    Unavailable,
    WrongCell,
    error_for,
)
from chubbypy.protocol.namespace import (
    AclNames,
    Contents,
    Create,
    Delete,
    DirEntry,
    GetContentsAndStat,
    GetStat,
    ReadDir,
    SetAcl,
    SetContents,
    Stat,
)
from chubbypy.protocol.session import (
    HandleMode,
    LockHolderInfo,
    LockInfo,
    LockWaiterInfo,
    SessionEnding,
)
from chubbypy.protocol.values import Epoch, LogIndex, ReplicaId
from tests.unit.client.harness import FakeNamespace

REPOSITORY = Path(__file__).resolve().parents[3]
ROOT = "/ls/local"
STAT_KEYS = {
    "instance",
    "content_generation",
    "lock_generation",
    "acl_generation",
    "checksum",
    "size",
    "is_directory",
    "ephemeral",
    "acl",
}
STATUS_KEYS = {
    "role",
    "epoch",
    "promised",
    "chosen_index",
    "applied_index",
    "first_index",
    "last_index",
    "snapshot_index",
    "serving",
    "lease_valid",
    "lease_remaining_ms",
    "master_hint",
    "uptime_ms",
    "checksum_mismatches",
    "member_role",
    "membership_version",
}


class StubCell:
    """The BlockingCell interface over an in-memory namespace (the harness's), no network."""

    def __init__(self) -> None:
        self.namespace = FakeNamespace()
        self.namespace.nodes = {ROOT: self.namespace.nodes.pop("/ls/test")}
        self.error: ChubbyError | None = None
        self.reports: tuple[ReplicaReport, ...] = ()
        self.calls: list[str] = []
        self.connected: list[tuple[CellTarget, str, float]] = []
        self.closed = False
        self.credentials: tuple[str, str] | None = None
        self.sessions: tuple[Any, ...] = ()
        self.unreadable: set[str] = set()
        """Paths this stub's caller may not read (get_stat refused; listed by name only)."""
        self.opened: list[tuple[str, HandleMode]] = []
        self.ended: list[int] = []
        self.ending: dict[int, SessionEnding] = {}
        """What end_session answers, by session (others: there is none to end)."""
        self.locks: dict[str, LockInfo] = {}

    def _done(self, name: str, result: Any) -> Any:
        self.calls.append(name)
        if self.error is not None:
            raise self.error
        if isinstance(result, Failure):
            raise error_for(result.code, result.message)
        return result

    def get_contents_and_stat(self, path: str) -> Contents:
        return self._done("get_contents_and_stat", self.namespace.read(GetContentsAndStat(path)))

    def get_stat(self, path: str) -> Stat:
        if path in self.unreadable:
            return self._done("get_stat", Failure(ErrorCode.PERMISSION_DENIED, "not yours"))  # type: ignore[no-any-return]
        return self._done("get_stat", self.namespace.read(GetStat(path)))

    def list_dir(self, path: str) -> tuple[DirEntry, ...]:
        entries = self._done("list_dir", self.namespace.read(ReadDir(path))).entries
        return tuple(
            DirEntry(e.name, None) if f"{path}/{e.name}" in self.unreadable else e for e in entries
        )

    def open(self, path: str, *, mode: HandleMode) -> StubHandle:
        self.opened.append((path, mode))
        return StubHandle(self, path, self.namespace.stat(path))

    def create(self, path: str, contents: bytes = b"", *, directory: bool = False) -> Stat:
        written = self._done("create", self.namespace.apply(Create(path, directory, contents)))
        return written.stat  # type: ignore[no-any-return]

    def set_contents(
        self, path: str, contents: bytes, expected_generation: int | None = None
    ) -> Stat:
        write = SetContents(path, contents, expected_generation)
        return self._done("set_contents", self.namespace.apply(write)).stat  # type: ignore[no-any-return]

    def delete(self, path: str, expected_instance: int | None = None) -> None:
        self._done("delete", self.namespace.apply(Delete(path, expected_instance)))

    def status(self, replica: str | None = None) -> tuple[ReplicaReport, ...]:
        return self._done("status", self.reports)  # type: ignore[no-any-return]

    def set_acl(self, path: str, acl: AclNames, expected_generation: int | None = None) -> Stat:
        write = SetAcl(path, acl, expected_generation)
        return self._done("set_acl", self.namespace.apply(write)).stat  # type: ignore[no-any-return]

    def list_sessions(self) -> tuple[Any, ...]:
        return self._done("list_sessions", self.sessions)  # type: ignore[no-any-return]

    def end_session(self, session_id: int) -> SessionEnding:
        self.ended.append(session_id)
        ending = self.ending.get(session_id, SessionEnding(False, False, 0))
        return self._done("end_session", ending)  # type: ignore[no-any-return]

    def lock_info(self, path: str) -> LockInfo:
        return self._done("lock_info", self.locks[path])  # type: ignore[no-any-return]

    def close(self) -> None:
        self.closed = True


class StubHandle:
    """A handle of StubCell: its stat when opened, and SetAcl through it."""

    def __init__(self, cell: StubCell, path: str, stat: Stat) -> None:
        self.cell, self.path, self.stat = cell, path, stat

    def __enter__(self) -> StubHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cell.calls.append("close handle")

    def set_acl(self, acl: AclNames, expected_generation: int | None = None) -> Stat:
        write = SetAcl(self.path, acl, expected_generation)
        return self.cell._done("handle set_acl", self.cell.namespace.apply(write)).stat  # type: ignore[no-any-return]


class Terminal(io.BytesIO):
    """Standard output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Run:
    """One invocation's exit code and output."""

    def __init__(self, code: int, stdout: bytes, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)  # type: ignore[no-any-return]


def chubbypy(
    stub: StubCell,
    *argv: str,
    stdin: bytes = b"",
    environ: dict[str, str] | None = None,
    cwd: Path | None = None,
    tty: bool = False,
) -> Run:
    """Run the command with `argv` against `stub` (standard output a terminal if `tty`);
    what it returned and printed."""
    stdout, stderr = (Terminal() if tty else io.BytesIO()), io.StringIO()

    def connect(
        target: CellTarget, cell: str, timeout: float, credentials: tuple[str, str] | None
    ) -> StubCell:
        stub.connected.append((target, cell, timeout))
        stub.credentials = credentials
        return stub

    code = cli.run(
        argv,
        stdin=io.BytesIO(stdin),
        stdout=stdout,
        stderr=stderr,
        environ={"CHUBBY_CELL": "127.0.0.1:7201"} if environ is None else environ,
        cwd=cwd or Path("/nonexistent"),
        connect=connect,  # type: ignore[arg-type]
    )
    return Run(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def stub() -> StubCell:
    cell = StubCell()
    cell.create(f"{ROOT}/dir", directory=True)
    cell.create(f"{ROOT}/dir/child", b"x")
    cell.create(f"{ROOT}/file", b"hello\n")
    cell.calls.clear()
    return cell


def status_of(replica_id: str, role: str) -> ReplicaStatus:
    return ReplicaStatus(
        ReplicaId(replica_id),
        role,  # type: ignore[arg-type]
        Epoch(4),
        "4.r1",
        LogIndex(120),
        LogIndex(119),
        LogIndex(1),
        LogIndex(120),
        LogIndex(0),
        role == "master",
        True,
        1500,
        ReplicaId("r1"),
        9000,
        0,
    )


# ----------------------------------------------------------------------------- arguments


def test_global_options_may_come_before_or_after_the_command() -> None:
    """--cell, --json and --timeout parse the same on either side of the command."""
    before = build_parser().parse_args(["--json", "--timeout", "3", "--cell", "a:1", "ls", "x"])
    after = build_parser().parse_args(["ls", "x", "--json", "--timeout", "3", "--cell", "a:1"])
    assert vars(before) == vars(after)
    assert (after.json, after.timeout, after.cell, after.path) == (True, 3.0, "a:1", "x")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["put", "f", "v", "--create-only", "--if-generation", "3"],
        ["put", "f", "--if-generation", "-1"],
        ["ls", "--timeout", "0"],
        ["cell", "--replicas", "4"],
        ["serve", "--config", "c.yaml"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Bad arguments are argparse's usage errors: exit code 2 and a message."""
    assert cli.main(argv) == EXIT_USAGE
    assert "usage: chubbypy" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints the commands and exit codes and returns 0."""
    assert cli.main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "status" in out
    assert "3 cell unavailable" in " ".join(out.split())


# ----------------------------------------------------------------------------- cell and paths


@pytest.mark.parametrize(
    ("given", "full"),
    [
        ("", ROOT),
        ("/", ROOT),
        (".", ROOT),
        ("a", f"{ROOT}/a"),
        ("a/b/", f"{ROOT}/a/b"),
        ("/a/b", f"{ROOT}/a/b"),
        ("./a", f"{ROOT}/a"),
        ("/ls/local/a", f"{ROOT}/a"),
        ("/ls/other/a/", "/ls/other/a"),
    ],
)
def test_paths_resolve_against_the_cell_root(given: str, full: str) -> None:
    """Relative and root-relative paths name nodes under /ls/<cell>; /ls/ names are full."""
    assert resolve_path(given, "local") == full


def test_a_cell_is_addresses_with_an_optional_name() -> None:
    """--cell takes comma-separated host:port pairs or endpoint strings, and NAME@."""
    assert parse_cell("127.0.0.1:7201, tcp:7202:interface=127.0.0.1", "--cell") == CellTarget(
        ("127.0.0.1:7201", "tcp:7202:interface=127.0.0.1"), None
    )
    assert parse_cell("prod@db1:7201", "--cell") == CellTarget(("db1:7201",), "prod")
    with pytest.raises(UsageError, match="--cell: 'nowhere' is not an address"):
        parse_cell("nowhere", "--cell")
    with pytest.raises(UsageError, match="no replica address"):
        parse_cell("prod@", "--cell")


def test_a_cell_file_gives_the_name_and_the_client_endpoints() -> None:
    """A YAML path loads the configuration: its cell name and replicas' client endpoints."""
    target = parse_cell(str(REPOSITORY / "etc" / "cell.yaml"), "--cell")
    assert target.name == "local"
    assert target.addresses[0] == "tcp:7201:interface=127.0.0.1"
    assert target.config is not None


def test_a_bad_cell_file_is_a_usage_error(tmp_path: Path) -> None:
    """A configuration with mistakes is reported with every problem, as a usage error."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("cell: 7\n")
    with pytest.raises(UsageError, match=r"bad\.yaml"):
        parse_cell(str(bad), "--cell")


def test_the_cell_comes_from_the_option_then_the_environment_then_etc(tmp_path: Path) -> None:
    """--cell wins over $CHUBBY_CELL, which wins over ./etc/cell.yaml; none is an error."""
    (tmp_path / "etc").mkdir()
    shutil.copy(REPOSITORY / "etc" / "cell.yaml", tmp_path / "etc" / "cell.yaml")
    environ = {"CHUBBY_CELL": "env@h:1"}
    assert find_cell("opt@h:1", environ, tmp_path).name == "opt"
    assert find_cell(None, environ, tmp_path).name == "env"
    assert find_cell(None, {}, tmp_path).name == "local"
    with pytest.raises(UsageError, match="no cell"):
        find_cell(None, {"CHUBBY_CELL": " "}, tmp_path / "etc")


def test_no_cell_anywhere_exits_2(stub: StubCell) -> None:
    """Without --cell, CHUBBY_CELL or etc/cell.yaml the command is a usage error."""
    run = chubbypy(stub, "ls", environ={})
    assert run.code == EXIT_USAGE
    assert "no cell" in run.stderr


def test_the_cell_name_comes_from_a_full_path_or_defaults_to_local(stub: StubCell) -> None:
    """Bare addresses take the cell name from a /ls/<cell>/ path, else "local"."""
    chubbypy(stub, "stat", "/ls/elsewhere/file")
    chubbypy(stub, "--timeout", "4", "stat", "file")
    assert [(cell, timeout) for _, cell, timeout in stub.connected] == [
        ("elsewhere", 10.0),
        ("local", 4.0),
    ]
    assert stub.connected[0][0] == CellTarget(("127.0.0.1:7201",), None)


def test_a_path_in_another_cell_than_the_named_one_exits_2(stub: StubCell) -> None:
    """With a cell name given, a full path naming another cell is a usage error."""
    run = chubbypy(stub, "--cell", "prod@h:1", "stat", "/ls/local/file")
    assert run.code == EXIT_USAGE
    assert "is in cell 'local', but the cell given is 'prod'" in run.stderr
    assert stub.calls == []


# ----------------------------------------------------------------------------- commands


def test_ls_lists_names_with_a_slash_after_directories(stub: StubCell) -> None:
    """ls prints one child per line, directories marked; the client is closed after."""
    run = chubbypy(stub, "ls")
    assert (run.code, run.stdout) == (EXIT_OK, b"dir/\nfile\n")
    assert stub.closed


def test_ls_long_shows_metadata_columns(stub: StubCell) -> None:
    """ls -l prints a header and mode, size, generation and instance for each child."""
    lines = chubbypy(stub, "ls", "-l", "/").stdout.decode().splitlines()
    assert lines[0].split() == ["MODE", "SIZE", "GENERATION", "INSTANCE", "NAME"]
    assert lines[1].split() == ["d-", "1", "0", "2", "dir/"]
    assert lines[2].split() == ["--", "6", "1", "4", "file"]


def test_ls_json(stub: StubCell) -> None:
    """ls --json lists each child's name, full name and stat."""
    document = chubbypy(stub, "--json", "ls", "dir").json()
    assert document["schema"] == SCHEMA
    assert set(document) == {"schema", "command", "ok", "cell", "path", "entries"}
    assert (document["command"], document["ok"], document["cell"]) == ("ls", True, "local")
    assert document["path"] == f"{ROOT}/dir"
    (entry,) = document["entries"]
    assert (entry["name"], entry["path"]) == ("child", f"{ROOT}/dir/child")
    assert set(entry["stat"]) == STAT_KEYS
    assert set(entry["stat"]["acl"]) == {"read", "write", "change"}


def test_stat_prints_every_field(stub: StubCell) -> None:
    """stat prints the node's metadata, one field per line; --json has the STAT object."""
    text = chubbypy(stub, "stat", "file").stdout.decode()
    assert "type                file\n" in text
    assert "content_generation  1\n" in text
    document = chubbypy(stub, "stat", "file", "--json").json()
    assert set(document) == {"schema", "command", "ok", "cell", "path", "stat"}
    assert document["stat"]["size"] == 6


def test_cat_writes_the_raw_bytes(stub: StubCell) -> None:
    """cat copies the contents to standard output unchanged."""
    stub.set_contents(f"{ROOT}/file", b"\x00\xffbinary")
    assert chubbypy(stub, "cat", "file").stdout == b"\x00\xffbinary"


@pytest.mark.parametrize(
    ("contents", "encoded"),
    [
        (b"caf\xc3\xa9\n", {"encoding": "utf-8", "data": "café\n"}),
        (b"\x00\xff", {"encoding": "base64", "data": "AP8="}),
    ],
)
def test_cat_json_names_the_encoding(
    stub: StubCell, contents: bytes, encoded: dict[str, str]
) -> None:
    """Contents are UTF-8 text when valid, else base64, and the encoding says which."""
    stub.set_contents(f"{ROOT}/file", contents)
    document = chubbypy(stub, "--json", "cat", "file").json()
    assert set(document) == {"schema", "command", "ok", "cell", "path", "contents", "stat"}
    assert document["contents"] == encoded


def test_put_creates_a_missing_file_then_updates_it(stub: StubCell) -> None:
    """put creates the file if missing, else replaces its contents; --json says which."""
    first = chubbypy(stub, "--json", "put", "new", "one").json()
    second = chubbypy(stub, "--json", "put", "new", "two").json()
    assert set(first) == {"schema", "command", "ok", "cell", "path", "created", "stat"}
    assert (first["created"], second["created"]) == (True, False)
    assert second["stat"]["content_generation"] == 2
    assert stub.namespace.nodes[f"{ROOT}/new"].contents == b"two"


@pytest.mark.parametrize("value", [[], ["-"]])
def test_put_reads_standard_input(stub: StubCell, value: list[str]) -> None:
    """Without a VALUE, or with "-", put stores standard input's bytes."""
    assert chubbypy(stub, "put", "file", *value, stdin=b"\x01from stdin").code == EXIT_OK
    assert stub.namespace.nodes[f"{ROOT}/file"].contents == b"\x01from stdin"


def test_put_if_generation_is_a_compare_and_swap(stub: StubCell) -> None:
    """--if-generation N writes only at generation N; else exit 1 naming path and error."""
    assert chubbypy(stub, "put", "file", "v2", "--if-generation", "1").code == EXIT_OK
    run = chubbypy(stub, "put", "file", "v3", "--if-generation", "1")
    assert run.code == EXIT_FAILED
    assert run.stderr.startswith(f"chubbypy put: {ROOT}/file: GENERATION_MISMATCH: ")
    assert stub.namespace.nodes[f"{ROOT}/file"].contents == b"v2"


def test_put_create_only_refuses_an_existing_file(stub: StubCell) -> None:
    """--create-only fails with EXISTS (exit 1) when the file is there."""
    run = chubbypy(stub, "put", "--create-only", "file", "x")
    assert run.code == EXIT_FAILED
    assert "EXISTS" in run.stderr


def test_rm_deletes(stub: StubCell) -> None:
    """rm deletes the node; --json confirms the full name."""
    document = chubbypy(stub, "--json", "rm", "dir/child").json()
    assert document == {
        "schema": SCHEMA,
        "command": "rm",
        "ok": True,
        "cell": "local",
        "path": f"{ROOT}/dir/child",
        "deleted": True,
    }
    assert f"{ROOT}/dir/child" not in stub.namespace.nodes


def test_mkdir_and_mkdir_p(stub: StubCell) -> None:
    """mkdir creates one directory; -p creates the missing parents and accepts existing."""
    assert chubbypy(stub, "mkdir", "solo").code == EXIT_OK
    document = chubbypy(stub, "--json", "mkdir", "-p", "dir/a/b").json()
    assert set(document) == {"schema", "command", "ok", "cell", "path", "created", "stat"}
    assert document["created"] == [f"{ROOT}/dir/a", f"{ROOT}/dir/a/b"]
    again = chubbypy(stub, "--json", "mkdir", "-p", "dir/a/b").json()
    assert again["created"] == []
    assert again["stat"]["is_directory"]
    assert chubbypy(stub, "mkdir", "solo").code == EXIT_FAILED


def test_mkdir_p_through_a_file_fails(stub: StubCell) -> None:
    """mkdir -p refuses to treat an existing file as a parent directory (exit 1)."""
    run = chubbypy(stub, "mkdir", "-p", "file/sub")
    assert run.code == EXIT_FAILED
    assert "NOT_A_DIRECTORY" in run.stderr


def test_status_prints_a_table_with_unreachable_replicas(stub: StubCell) -> None:
    """status shows every replica's role, indexes, lease and master, then each problem (why
    one is down) on a line of its own; it exits 1 and sums the problems up on stderr."""
    stub.reports = (
        ReplicaReport(
            "tcp:host=127.0.0.1:port=7201", ReplicaId("r1"), status_of("r1", "master"), None
        ),
        ReplicaReport(
            "tcp:host=127.0.0.1:port=7202", ReplicaId("r2"), None, "cannot connect: refused"
        ),
    )
    run = chubbypy(stub, "status")
    lines = run.stdout.decode().splitlines()
    header = "REPLICA ADDRESS ROLE EPOCH CHOSEN APPLIED FIRST LAST LEASE MASTER"
    assert lines[0].split() == header.split()
    row = "r1 127.0.0.1:7201 master 4 120 119 1 120 1.5s r1"
    assert lines[1].split() == row.split()
    assert lines[2].split()[:3] == ["r2", "127.0.0.1:7202", "unreachable"]
    assert lines[3] == "r2: unreachable: cannot connect: refused"
    assert run.code == EXIT_FAILED
    assert run.stderr == "chubbypy status: the cell is not healthy, 1 problem: r2 unreachable\n"


def test_status_of_a_healthy_cell_exits_0_with_no_problem(stub: StubCell) -> None:
    """Every replica answered, one is master, none lags or diverged: exit 0, no problem line,
    "problems" empty and "ok" true."""
    stub.reports = tuple(
        ReplicaReport(f"tcp:host=127.0.0.1:port=720{n}", ReplicaId(f"r{n}"), status, None)
        for n, status in enumerate(
            (status_of("r1", "master"), status_of("r2", "follower")), start=1
        )
    )
    run = chubbypy(stub, "status")
    assert (run.code, run.stderr, len(run.stdout.decode().splitlines())) == (EXIT_OK, "", 3)
    document = chubbypy(stub, "--json", "status").json()
    assert (document["ok"], document["problems"], document["lag_max"]) == (True, [], 1000)
    assert "error" not in document


def test_status_json(stub: StubCell) -> None:
    """status --json lists every replica with the STATUS object or its problem, and each
    problem as data; with one, "ok" is false and "error" says UNHEALTHY, exit code 1."""
    stub.reports = (
        ReplicaReport(
            "tcp:host=127.0.0.1:port=7201", ReplicaId("r1"), status_of("r1", "master"), None
        ),
        ReplicaReport("tcp:host=127.0.0.1:port=7202", None, None, "refused"),
    )
    run = chubbypy(stub, "--json", "status")
    document = run.json()
    assert run.code == EXIT_FAILED
    assert set(document) == {
        "schema", "command", "ok", "cell", "master", "replicas", "problems", "lag_max",
        "path", "error",
    }  # fmt: skip
    assert document["master"] == "r1"
    up, down = document["replicas"]
    assert set(up) == {"replica_id", "address", "reachable", "problem", "status"}
    assert set(up["status"]) == STATUS_KEYS
    assert (up["address"], up["reachable"]) == ("127.0.0.1:7201", True)
    assert down == {
        "replica_id": None,
        "address": "127.0.0.1:7202",
        "reachable": False,
        "problem": "refused",
        "status": None,
    }
    assert document["problems"] == [
        {
            "kind": "unreachable",
            "replica_id": None,
            "address": "127.0.0.1:7202",
            "message": "unreachable: refused",
            "lag": None,
        }
    ]
    assert document["ok"] is False
    assert document["error"] == {
        "code": "UNHEALTHY",
        "message": "the cell is not healthy, 1 problem: 127.0.0.1:7202 unreachable",
        "exit_code": EXIT_FAILED,
    }


def test_status_with_no_replica_reachable_exits_3(stub: StubCell) -> None:
    """status exits 3 when not one replica answered; in JSON the error is UNAVAILABLE."""
    stub.reports = (ReplicaReport("tcp:host=h:port=1", None, None, "refused"),)
    assert chubbypy(stub, "status").code == EXIT_UNAVAILABLE
    run = chubbypy(stub, "--json", "status")
    assert (run.code, run.json()["error"]["code"]) == (EXIT_UNAVAILABLE, "UNAVAILABLE")


def test_status_lag_max_is_a_count_of_entries(stub: StubCell) -> None:
    """--lag-max takes 0 or more entries; anything else is a usage error (exit 2)."""
    stub.reports = (
        ReplicaReport("tcp:host=h:port=1", ReplicaId("r1"), status_of("r1", "master"), None),
    )
    assert chubbypy(stub, "--json", "status", "--lag-max", "0").json()["lag_max"] == 0
    for bad in ("-1", "ten", "1.5"):
        with pytest.raises(SystemExit) as raised:
            chubbypy(stub, "status", "--lag-max", bad)
        assert raised.value.code == EXIT_USAGE


# ----------------------------------------------------------------------------- errors


def test_an_operating_error_exits_1_naming_the_path_and_the_error(stub: StubCell) -> None:
    """A missing node: exit 1, and stderr says which path and which error."""
    run = chubbypy(stub, "cat", "missing")
    assert run.code == EXIT_FAILED
    assert run.stdout == b""
    assert (
        run.stderr == f"chubbypy cat: {ROOT}/missing: NO_SUCH_NODE: {ROOT}/missing: no such node\n"
    )


def test_errors_in_json_are_one_document_on_stdout_too(stub: StubCell) -> None:
    """With --json a failure still prints one document: ok false, the error's code."""
    run = chubbypy(stub, "--json", "stat", "missing")
    assert run.code == EXIT_FAILED
    document = run.json()
    assert set(document) == {"schema", "command", "ok", "cell", "path", "error"}
    assert document["ok"] is False
    assert document["path"] == f"{ROOT}/missing"
    assert document["error"]["code"] == "NO_SUCH_NODE"
    assert document["error"]["exit_code"] == EXIT_FAILED
    assert "NO_SUCH_NODE" in run.stderr


@pytest.mark.parametrize(
    "error", [Unavailable("no master answered within 10 s"), WrongCell("serves cell 'prod'")]
)
def test_an_unavailable_cell_exits_3(stub: StubCell, error: ChubbyError) -> None:
    """No master within the timeout, or a replica of another cell: exit 3."""
    stub.error = error
    run = chubbypy(stub, "--json", "ls")
    assert run.code == EXIT_UNAVAILABLE
    assert run.json()["error"] == {
        "code": error.code.name,
        "message": error.message,
        "exit_code": EXIT_UNAVAILABLE,
    }
    assert stub.closed


# ----------------------------------------------------------------------------- server commands


def test_serve_and_cell_dispatch_to_the_server_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve and cell call chubbypy.server's serve_main and chubbypy._cli_cell's cell_main
    with the arguments."""
    seen: list[Any] = []
    server = types.ModuleType("chubbypy.server")
    server.serve_main = lambda args: seen.append(("serve", args.config, args.replica)) or 0  # type: ignore[attr-defined]
    local_cell = types.ModuleType("chubbypy._cli_cell")
    local_cell.cell_main = lambda args: seen.append(("cell", args.replicas, args.data_dir)) or 5  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "chubbypy.server", server)
    monkeypatch.setitem(sys.modules, "chubbypy._cli_cell", local_cell)
    assert cli.main(["serve", "--config", "c.yaml", "--replica", "r2"]) == 0
    assert cli.main(["cell", "--replicas", "5", "--data-dir", "d"]) == 5
    assert seen == [("serve", "c.yaml", "r2"), ("cell", 5, Path("d"))]


def test_serve_without_the_server_package_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When chubbypy.server cannot be imported, serve says so and exits 2."""
    monkeypatch.setitem(sys.modules, "chubbypy.server", None)
    assert cli.main(["serve", "--config", "c.yaml", "--replica", "r1"]) == EXIT_USAGE
    assert "the server is not available" in capsys.readouterr().err


def test_acl_get_and_set_keep_the_names_not_given(stub: StubCell) -> None:
    """acl set changes only the names given, compare-and-swap on the generation it read."""
    got = chubbypy(stub, "acl", "get", "file", "--json")
    assert got.code == 0
    before = got.json()["acl"]
    changed = chubbypy(stub, "acl", "set", "file", "--write", "writers")
    assert changed.code == 0
    shown = f"read={before['read']} write=writers change={before['change']} (generation"
    assert shown.encode() in changed.stdout
    assert chubbypy(stub, "acl", "set", "file").code == 2, "naming nothing is a usage error"


def test_leader_prints_what_the_file_advertises_or_exits_1(stub: StubCell) -> None:
    """leader prints the election file's contents; an empty or missing file: no leader."""
    chubbypy(stub, "put", "election", "alpha:80")
    assert chubbypy(stub, "leader", "election").stdout == b"alpha:80\n"
    chubbypy(stub, "put", "election", "")
    assert chubbypy(stub, "leader", "election").code == 1
    assert chubbypy(stub, "leader", "missing", "--json").json()["ok"] is False


def test_sessions_prints_each_session(stub: StubCell) -> None:
    """sessions shows one row per session, and the documented SESSION objects in JSON."""
    info = types.SimpleNamespace(
        session_id=7, name="chubbypy@host:1", state="live", lease_remaining_ms=9500,
        handles=2, locks=((f"{ROOT}/lock", "exclusive"),), ephemeral=(f"{ROOT}/eph",),
        lock_count=1, ephemeral_count=1, cached_names=3, principal="alice",
    )  # fmt: skip
    stub.sessions = (info,)
    table = chubbypy(stub, "sessions")
    assert b"chubbypy@host:1" in table.stdout
    assert f"{ROOT}/lock(e)".encode() in table.stdout
    session = chubbypy(stub, "sessions", "--json").json()["sessions"][0]
    assert session["locks"] == [{"path": f"{ROOT}/lock", "mode": "exclusive"}]
    assert (session["session_id"], session["lease_remaining_ms"]) == (7, 9500)
    assert session["principal"] == "alice"
    assert b"alice" in table.stdout


def test_credentials_come_from_the_environment_both_or_neither(stub: StubCell) -> None:
    """CHUBBY_PRINCIPAL and CHUBBY_TOKEN reach the client; one without the other exits 2."""
    environ = {"CHUBBY_CELL": "127.0.0.1:7201", "CHUBBY_PRINCIPAL": "ops", "CHUBBY_TOKEN": "t" * 16}
    assert chubbypy(stub, "ls", environ=environ).code == 0
    assert stub.credentials == ("ops", "t" * 16)
    del environ["CHUBBY_TOKEN"]
    assert chubbypy(stub, "ls", environ=environ).code == 2


def test_the_token_may_come_from_a_file(stub: StubCell, tmp_path: Path) -> None:
    """CHUBBY_TOKEN_FILE names the token's file (relative to the working directory);
    with CHUBBY_TOKEN too, or unreadable, it is a usage error."""
    (tmp_path / "ops.token").write_text("t" * 20 + "\n")
    environ = {"CHUBBY_CELL": "127.0.0.1:7201", "CHUBBY_PRINCIPAL": "ops"}
    environ["CHUBBY_TOKEN_FILE"] = "ops.token"
    assert chubbypy(stub, "ls", environ=environ, cwd=tmp_path).code == 0
    assert stub.credentials == ("ops", "t" * 20)
    both = chubbypy(stub, "ls", environ={**environ, "CHUBBY_TOKEN": "x" * 16}, cwd=tmp_path)
    assert (both.code, "not both" in both.stderr) == (2, True)
    environ["CHUBBY_TOKEN_FILE"] = "missing.token"
    missing = chubbypy(stub, "ls", environ=environ, cwd=tmp_path)
    assert (missing.code, "CHUBBY_TOKEN_FILE" in missing.stderr) == (2, True)


def test_a_ca_file_reaches_the_client_for_ssl_addresses(stub: StubCell, tmp_path: Path) -> None:
    """CHUBBY_CA_FILE is passed on for ssl: replicas; a missing one is a usage error."""
    (tmp_path / "ca.pem").write_text("a CA")
    environ = {"CHUBBY_CELL": "ssl:host=db1:port=7201", "CHUBBY_CA_FILE": "ca.pem"}
    assert chubbypy(stub, "ls", environ=environ, cwd=tmp_path).code == 0
    assert stub.connected[-1][0].tls_ca == tmp_path / "ca.pem"
    environ["CHUBBY_CA_FILE"] = "nowhere.pem"
    missing = chubbypy(stub, "ls", environ=environ, cwd=tmp_path)
    assert (missing.code, "no CA certificate" in missing.stderr) == (2, True)


def test_completion_scripts_name_every_command(stub: StubCell) -> None:
    """completion bash|zsh prints a script completing commands, options and names."""
    for shell in ("bash", "zsh"):
        script = chubbypy(stub, "completion", shell).stdout.decode()
        for command in ("ls", "lock", "elect", "watch", "acl", "sessions", "leader"):
            assert command in script
        assert "__complete" in script
        assert "--shared" in script
    assert chubbypy(stub, "__complete", "di").stdout == b"dir/\n"
    assert chubbypy(stub, "__complete", "dir/c").stdout == b"dir/child\n"


def test_lock_without_a_command_is_a_usage_error(stub: StubCell) -> None:
    """lock and elect need the command to run after --."""
    assert chubbypy(stub, "lock", "file").code == 2
    assert chubbypy(stub, "elect", "file", "--id", "me", "--").code == 2


# ----------------------------------------------------------------------------- issue 14


def test_sessions_end_says_when_the_session_ends_and_warns_when_it_changed_nothing(
    stub: StubCell,
) -> None:
    """sessions --end ID says the session is ending and when its lease runs out (exit 0;
    found, already and ends_in_ms in JSON); one ending already, or one the cell did not
    have, is a warning on standard error, still exit 0; a non-id is a usage error; a
    refusal (not an operator) exits 1 with the code."""
    stub.ending = {7: SessionEnding(True, False, 11_800), 9: SessionEnding(True, True, 2_500)}
    done = chubbypy(stub, "sessions", "--end", "7")
    assert (done.code, done.stdout) == (
        EXIT_OK,
        b"session 7 ending: its client is refused from now on; it ends when its lease runs "
        b"out, in 11.8s\n",
    )
    document = chubbypy(stub, "sessions", "--end", "7", "--json").json()
    assert (document["found"], document["already"], document["ends_in_ms"]) == (True, False, 11800)
    already = chubbypy(stub, "sessions", "--end", "9")
    assert (already.code, already.stdout) == (EXIT_OK, b"")
    assert "session 9 was ending already: it ends when its lease runs out, in 2.5s" in (
        already.stderr
    )
    gone = chubbypy(stub, "sessions", "--end", "8")
    assert (gone.code, "session 8 was not in the cell" in gone.stderr) == (EXIT_OK, True)
    document = chubbypy(stub, "sessions", "--end", "8", "--json").json()
    assert (document["session_id"], document["found"], document["ok"]) == (8, False, True)
    assert document["warnings"]
    assert stub.ended == [7, 7, 9, 8, 8]
    for bad in ("0", "-3", "x", str(2**63)):
        with pytest.raises(SystemExit):
            chubbypy(stub, "sessions", "--end", bad)
    stub.error = error_for(ErrorCode.PERMISSION_DENIED, "'anonymous' may not end another's")
    refused = chubbypy(stub, "sessions", "--end", "7", "--json")
    assert (refused.code, refused.json()["error"]["code"]) == (EXIT_FAILED, "PERMISSION_DENIED")


def test_lock_info_prints_holders_and_waiters_in_order_and_escapes_their_names(
    stub: StubCell,
) -> None:
    """lock-info shows mode, generation, lock-delay left, the holders and the waiters in
    queue order (saying when a list was cut short), and the documented LOCK object in
    JSON; client names and principals from the cell are escaped on the terminal."""
    path = f"{ROOT}/lock"
    stub.locks[path] = LockInfo(
        path, 65536, "shared", 4,
        (LockHolderInfo(7, f"evil{ESCAPE}", "alice", "shared", 1500),), 2,
        (LockWaiterInfo(9, "w1", "", "exclusive", 2500),
         LockWaiterInfo(8, "w2", "bob", "shared", 100)), 2, 0,
    )  # fmt: skip
    shown = chubbypy(stub, "lock-info", "lock")
    assert shown.code == EXIT_OK
    text = shown.stdout.decode()
    assert "\x1b" not in text
    assert "evil\\x1b]0;owned" in text
    assert "mode                shared" in text
    assert "lock_generation     4" in text
    assert "holders             2 (the first 1 listed)" in text
    waiters = [line.split() for line in text.splitlines() if line.lstrip()[:1] in "12"]
    assert [(row[0], row[1], row[2], row[3]) for row in waiters[-2:]] == [
        ("1", "9", "exclusive", "2.5s"),
        ("2", "8", "shared", "0.1s"),
    ]
    lock = chubbypy(stub, "lock-info", "lock", "--json").json()["lock"]
    assert lock["holders"] == [
        {"session_id": 7, "client": f"evil{ESCAPE}", "principal": "alice", "mode": "shared",
         "lock_delay_ms": 1500}
    ]  # fmt: skip
    assert [w["session_id"] for w in lock["waiters"]] == [9, 8]
    assert (lock["mode"], lock["holder_count"], lock["lock_delay_remaining_ms"]) == ("shared", 2, 0)
    stub.error = error_for(ErrorCode.PERMISSION_DENIED, "may not read")
    assert chubbypy(stub, "lock-info", "lock").code == EXIT_FAILED


# ----------------------------------------------------------------------------- issue 13


def test_acl_set_works_with_change_permission_alone(stub: StubCell) -> None:
    """When the node cannot be read, acl set reads its names through a handle opened for
    CHANGE_ACL alone and sets them through it (compare-and-swap on that generation), so a
    read ACL that admits no one can be undone; with all three names it reads nothing."""
    stub.create(f"{ROOT}/acl", directory=True)
    stub.create(f"{ROOT}/acl/ops", b"ops\n")
    stub.set_acl(f"{ROOT}/file", AclNames("nosuchacl", "all", "all"))
    stub.unreadable = {f"{ROOT}/file"}
    stub.calls.clear()
    repaired = chubbypy(stub, "acl", "set", "file", "--read", "ops")
    assert repaired.code == EXIT_OK, repaired.stderr
    assert stub.opened == [(f"{ROOT}/file", HandleMode.CHANGE_ACL)]
    assert "handle set_acl" in stub.calls
    assert stub.namespace.stat(f"{ROOT}/file").acl == AclNames("ops", "all", "all")
    assert b"read=ops write=all change=all" in repaired.stdout
    stub.calls.clear()
    whole = chubbypy(stub, "acl", "set", "file", "--read", "all", "--write", "ops",
                     "--change", "ops")  # fmt: skip
    assert whole.code == EXIT_OK, whole.stderr
    assert stub.calls[0] == "set_acl", "the node is not read when all three names are given"
    assert len(stub.opened) == 1


def test_acl_set_warns_of_an_acl_name_with_no_file(stub: StubCell) -> None:
    """acl set of a name with no file under acl/ still sets it, exits 0, and warns on
    standard error (and in JSON); 'all' and a name whose file exists give no warning."""
    stub.create(f"{ROOT}/acl", directory=True)
    stub.create(f"{ROOT}/acl/ops", b"ops\n")
    warned = chubbypy(stub, "acl", "set", "file", "--read", "nosuchacl", "--write", "ops")
    assert warned.code == EXIT_OK
    assert "warning" in warned.stderr
    assert "'nosuchacl'" in warned.stderr
    assert f"{ROOT}/acl/nosuchacl" in warned.stderr
    assert "admits no one" in warned.stderr
    assert "'ops'" not in warned.stderr
    assert stub.namespace.stat(f"{ROOT}/file").acl.read == "nosuchacl"
    quiet = chubbypy(stub, "acl", "set", "file", "--read", "all", "--write", "ops")
    assert (quiet.code, quiet.stderr) == (EXIT_OK, "")
    document = chubbypy(stub, "acl", "set", "file", "--change", "typo", "--json")
    assert document.code == EXIT_OK
    assert "'typo'" in document.json()["warnings"][0]


def test_ls_shows_names_alone_for_children_the_caller_may_not_read(stub: StubCell) -> None:
    """A child listed without metadata is shown with '?' columns in ls -l, without a
    directory's '/', and with a null stat in JSON."""
    stub.unreadable = {f"{ROOT}/dir"}
    long = chubbypy(stub, "ls", "-l")
    assert long.code == EXIT_OK
    row = next(line for line in long.stdout.decode().splitlines() if line.endswith("dir"))
    assert row.split() == ["?", "?", "?", "?", "dir"]
    assert chubbypy(stub, "ls").stdout.decode().splitlines() == ["dir", "file"]
    entries = {e["name"]: e["stat"] for e in chubbypy(stub, "ls", "--json").json()["entries"]}
    assert entries["dir"] is None
    assert entries["file"] is not None


ESCAPE = "\x1b]0;owned\x07\x1b[2J\u202e"


def test_text_from_the_cell_is_printed_escaped(stub: StubCell) -> None:
    """A session name, an error message and a leader's contents holding terminal escapes
    reach the terminal as visible escapes, never as control characters; JSON escapes them
    as \\uXXXX and still reads back the same."""
    info = types.SimpleNamespace(
        session_id=7, name=f"evil{ESCAPE}", state="live", lease_remaining_ms=9500,
        handles=0, locks=(), ephemeral=(), lock_count=0, ephemeral_count=0, cached_names=0,
        principal=f"p{ESCAPE}",
    )  # fmt: skip
    stub.sessions = (info,)
    table = chubbypy(stub, "sessions")
    assert b"\x1b" not in table.stdout
    assert "\u202e".encode() not in table.stdout
    assert b"evil\\x1b]0;owned\\x07\\x1b[2J\\u202e" in table.stdout
    listed = chubbypy(stub, "sessions", "--json")
    assert b"\x1b" not in listed.stdout
    assert "\u202e".encode() not in listed.stdout
    assert listed.json()["sessions"][0]["client"] == f"evil{ESCAPE}"
    assert b"p\\x1b]0;owned" in table.stdout
    chubbypy(stub, "put", "election", f"leader{ESCAPE}")
    leader = chubbypy(stub, "leader", "election")
    assert leader.stdout == b"leader\\x1b]0;owned\\x07\\x1b[2J\\u202e\n"
    stub.error = error_for(ErrorCode.PERMISSION_DENIED, f"refused {ESCAPE}")
    failed = chubbypy(stub, "stat", "file")
    assert failed.code == EXIT_FAILED
    assert "\x1b" not in failed.stderr
    assert "refused \\x1b]0;owned" in failed.stderr


def test_cat_writes_raw_bytes_to_a_pipe_and_escapes_them_on_a_terminal(stub: StubCell) -> None:
    """cat's output is the file's bytes when standard output is not a terminal; on one,
    control characters and bytes that are not UTF-8 are escaped (lines and tabs kept),
    unless --raw."""
    contents = b"line one\n\tx\x1b[2J\xff\n"
    chubbypy(stub, "put", "file", "-", stdin=contents)
    assert chubbypy(stub, "cat", "file").stdout == contents
    assert chubbypy(stub, "cat", "file", tty=True).stdout == b"line one\n\tx\\x1b[2J\\xff\n"
    assert chubbypy(stub, "cat", "--raw", "file", tty=True).stdout == contents
