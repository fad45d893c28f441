"""Issue 13's security suite, ACL defaults and quotas, against live three-replica cells: each
case of the issue's "Why" reproduced as a hostile (or careless) client would, shown refused
with nothing changed and the cell still serving everyone else."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from chubbypy.client.blocking import BlockingCell
from chubbypy.protocol.errors import BadRequest, PermissionDenied, ResourceExhausted
from chubbypy.protocol.namespace import AclNames
from tests.integration.harness import (
    CLI_SECONDS,
    CliResult,
    LiveCell,
    assert_state_matches,
    child_environment,
    chubbypy_command,
)
from tests.integration.test_list_sessions import list_sessions, named_session

OPERATOR = ("operator", "the operator's token for the suite")
AUTH = {"principals": {OPERATOR[0]: OPERATOR[1]}, "handle_key": "an integration test handle key"}
"""auth.admins is left to its default, [operator]."""
ESCAPE = "\x1b]0;owned\x07\x1b[2J\x1b[31mroot"


def operator(cell: LiveCell) -> BlockingCell:
    return cell.client(principal=OPERATOR[0], token=OPERATOR[1])


def operator_cli(cell: LiveCell, *args: str) -> CliResult:
    """``chubbypy --cell <cell> ARGS`` as the operator (its token in the environment)."""
    environment = {
        **child_environment(),
        "CHUBBY_PRINCIPAL": OPERATOR[0],
        "CHUBBY_TOKEN": OPERATOR[1],
    }
    done = subprocess.run(
        [*chubbypy_command(), "--cell", str(cell.config_path), *args],
        capture_output=True, cwd=cell.directory, env=environment, timeout=CLI_SECONDS,
        check=False,
    )  # fmt: skip
    return CliResult(done.returncode, done.stdout, done.stderr.decode(errors="replace"))


def still_serving(cell: LiveCell, client: BlockingCell, name: str) -> None:
    """The cell answers an honest write and read."""
    client.create(cell.path(name), b"fine")
    assert client.get_contents_and_stat(cell.path(name)).contents == b"fine"


def test_anonymous_cannot_edit_a_new_cell_s_acl_files(make_cell: Callable[..., LiveCell]) -> None:
    """A new cell's acl/ and acl/admin exist from the start, readable by anyone, writable
    only by the operator: anonymous cannot rewrite acl/admin, create acl/all (which would
    narrow or widen every 'all' node), delete an ACL file or re-ACL the directory; nothing
    changes, and the cell serves on."""
    cell = make_cell(auth=AUTH)
    anonymous = cell.client()
    admin_file = cell.path("acl/admin")
    before = anonymous.get_contents_and_stat(admin_file)
    assert b"\noperator\n" in before.contents
    assert before.stat.acl == AclNames("all", "admin", "admin")
    for attempt in (
        lambda: anonymous.set_contents(admin_file, b"anonymous\n"),
        lambda: anonymous.create(cell.path("acl/all"), b"anonymous\n"),
        lambda: anonymous.delete(admin_file),
        lambda: anonymous.set_acl(cell.path("acl"), AclNames("all", "all", "all")),
        lambda: anonymous.set_acl(admin_file, AclNames("all", "all", "all")),
    ):
        with pytest.raises(PermissionDenied):
            attempt()
    after = anonymous.get_contents_and_stat(admin_file)
    assert (after.contents, after.stat) == (before.contents, before.stat)
    assert [e.name for e in anonymous.list_dir(cell.path("acl"))] == ["admin"]
    refused = cell.cli("put", "acl/admin", "anonymous")
    assert refused.code == 1
    assert "PERMISSION_DENIED" in refused.stderr
    ops = operator(cell)
    ops.create(cell.path("acl/ops"), b"operator\n")  # the operator may
    still_serving(cell, anonymous, "after-acl-edits")


def test_a_protected_child_s_metadata_is_not_shown_through_read_dir(
    make_cell: Callable[..., LiveCell],
) -> None:
    """Anonymous ReadDir of the root names a file only the operator may read, but shows
    none of its size, generations, instance or checksum (nor does ``ls -l``); the operator
    sees them all."""
    cell = make_cell(auth=AUTH)
    ops = operator(cell)
    ops.create(cell.path("acl/ops"), b"operator\n")
    ops.create(cell.path("secret"), b"s" * 1000, acl=AclNames("ops", "ops", "ops"))
    anonymous = cell.client()
    anonymous.create(cell.path("public"), b"p")
    entries = {entry.name: entry.stat for entry in anonymous.list_dir(cell.path())}
    assert set(entries) == {"acl", "public", "secret"}
    assert entries["secret"] is None
    assert entries["public"] is not None
    with pytest.raises(PermissionDenied):
        anonymous.get_stat(cell.path("secret"))
    listed = cell.cli("ls", "-l")
    assert listed.code == 0, listed
    row = next(line for line in listed.stdout.splitlines() if line.endswith("secret"))
    assert row.split() == ["?", "?", "?", "?", "secret"]
    as_json = {e["name"]: e["stat"] for e in cell.cli("--json", "ls").json()["entries"]}
    assert as_json["secret"] is None
    seen = {entry.name: entry.stat for entry in ops.list_dir(cell.path())}
    secret = seen["secret"]
    assert secret is not None
    assert secret.size == 1000
    still_serving(cell, anonymous, "after-listing")


def test_anonymous_list_sessions_is_refused(make_cell: Callable[..., LiveCell]) -> None:
    """ListSessions (clients' host:pid and lock paths) is refused to anonymous, by the API
    and by ``chubbypy sessions``; the operator lists every session."""
    cell = make_cell(auth=AUTH)
    anonymous = cell.client()
    holder = named_session(anonymous, "chubbypy@victim-host:4242")
    with pytest.raises(PermissionDenied):
        list_sessions(anonymous)
    refused = cell.cli("sessions")
    assert refused.code == 1, refused
    assert "PERMISSION_DENIED" in refused.stderr
    assert "victim-host" not in refused.stdout + refused.stderr
    listed = operator_cli(cell, "--json", "sessions")
    assert listed.code == 0, listed
    names = {s["session_id"]: s["client"] for s in listed.json()["sessions"]}
    assert names[holder.session_id] == "chubbypy@victim-host:4242"
    still_serving(cell, anonymous, "after-listing")


def test_a_session_name_with_terminal_escapes_is_refused(
    make_cell: Callable[..., LiveCell],
) -> None:
    """A client naming its session with escape codes is refused BadRequest naming the
    unprintable character; no session is opened, and the operator's listing (which
    escapes whatever it prints) shows only honest sessions."""
    cell = make_cell(auth=AUTH)
    hostile = cell.client(name=ESCAPE)
    with pytest.raises(BadRequest, match="printable"):
        hostile.session()
    honest = named_session(cell.client(), "honest")
    listed = operator_cli(cell, "sessions")
    assert listed.code == 0, listed
    assert "\x1b" not in listed.stdout
    assert "honest" in listed.stdout
    ids = {info.session_id for info in list_sessions(operator(cell))}
    assert ids == {honest.session_id}
    still_serving(cell, cell.client(), "after-escapes")


def test_acl_set_works_with_change_permission_alone_and_warns_of_unknown_names(
    make_cell: Callable[..., LiveCell],
) -> None:
    """``acl set --read nosuchacl`` (and --write) is accepted with a warning on standard
    error and exit 0; it locks the operator out of reading and writing, yet ``acl set
    --read ops --write ops`` (change permission only) undoes it, and the file reads again."""
    cell = make_cell(auth=AUTH)
    ops = operator(cell)
    ops.create(cell.path("acl/ops"), b"operator\n")
    ops.create(cell.path("config"), b"v1", acl=AclNames("ops", "ops", "ops"))
    locked = operator_cli(cell, "acl", "set", "config", "--read", "nosuchacl", "--write", "nope")
    assert locked.code == 0, locked
    assert "warning" in locked.stderr
    assert "'nosuchacl'" in locked.stderr
    assert "'nope'" in locked.stderr
    assert "admits no one" in locked.stderr
    unreadable = operator_cli(cell, "cat", "config")
    assert unreadable.code == 1
    assert "PERMISSION_DENIED" in unreadable.stderr
    repaired = operator_cli(cell, "acl", "set", "config", "--read", "ops", "--write", "ops")
    assert repaired.code == 0, repaired
    assert repaired.stderr == ""
    assert repaired.stdout.startswith("read=ops write=ops change=ops")
    assert ops.get_contents_and_stat(cell.path("config")).contents == b"v1"
    assert operator_cli(cell, "cat", "config").output == b"v1"
    anonymous_try = cell.cli("acl", "set", "config", "--read", "all")
    assert anonymous_try.code == 1, "anonymous has no change permission"
    assert ops.get_stat(cell.path("config")).acl == AclNames("ops", "ops", "ops")


QUOTA_LIMITS = {"nodes_per_principal_max": 50, "bytes_per_principal_max": 1_030_000}
"""Room for four files of 256,000 bytes (1,024,000) and a few small ones per principal."""


def test_a_principal_past_its_quota_is_refused_with_nothing_changed(
    make_cell: Callable[..., LiveCell],
) -> None:
    """Anonymous 250 KB files are accepted up to the bytes quota and the next is refused
    ResourceExhausted naming the key, on every replica alike (not created anywhere; the
    replicas' checksums agree); a file's growth past it likewise; the accounting survives
    a restart of every replica (snapshots keep each node's creator); the operator is
    exempt; deleting gives the quota back; and the cell serves on. Before, 400 anonymous
    256 KiB files were accepted."""
    paxos = {"checksum_every_seconds": 1, "snapshot_every_entries": 5, "log_retain_entries": 2}
    cell = make_cell(auth=AUTH, limits=QUOTA_LIMITS, paxos=paxos)
    anonymous = cell.client()
    big = b"q" * 256_000
    for n in range(4):
        anonymous.create(cell.path(f"big{n}"), big)
    with pytest.raises(ResourceExhausted, match=r"limits\.bytes_per_principal_max"):
        anonymous.create(cell.path("big4"), big)
    with pytest.raises(ResourceExhausted, match=r"limits\.bytes_per_principal_max"):
        anonymous.set_contents(cell.path("big0"), big + b"m" * 6144)  # to 256 KiB
    names = {entry.name for entry in anonymous.list_dir(cell.path())}
    assert names == {"acl", "big0", "big1", "big2", "big3"}, "big4 was created nowhere"
    assert anonymous.get_stat(cell.path("big0")).size == len(big)
    small = cell.cli("put", "small", "x")
    assert small.code == 0, f"a small file still fits: {small}"
    cli_refused = cell.cli("put", "huge", "-", stdin=big)
    assert cli_refused.code == 1
    assert "RESOURCE_EXHAUSTED" in cli_refused.stderr
    assert "limits.bytes_per_principal_max" in cli_refused.stderr
    for rid in cell.running:
        assert cell.stop_replica(rid) == 0, cell.logs()
    for rid in ("r1", "r2", "r3"):
        cell.start_replica(rid)
    cell.wait_ready()
    anonymous = cell.client()
    with pytest.raises(ResourceExhausted, match=r"limits\.bytes_per_principal_max"):
        anonymous.create(cell.path("big4"), big)
    ops = operator(cell)
    ops.create(cell.path("operators-own"), big)  # exempt
    anonymous.delete(cell.path("big0"))
    anonymous.create(cell.path("big5"), big)  # room again
    master = cell.wait_master()
    follower = next(r for r in cell.running if r != master)
    assert_state_matches(cell, follower, master, ops)
    still_serving(cell, ops, "after-quota")
