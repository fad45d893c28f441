"""Access control (Chubby §2.3): ACL names resolved through the cell's ACL directory, and
what each operation needs."""

from __future__ import annotations

from attrs import evolve

from chubbypy.namespace import (
    ADMIN,
    EVERYONE,
    Access,
    NamespaceMachine,
    access_problem,
    acl_directory,
    acl_files_needed,
    acl_path,
    admits,
    exposed_acl_directory,
    protect_acl_directory,
    write_problem,
)
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import (
    AclNames,
    Create,
    Delete,
    Exists,
    Listing,
    MultiOp,
    MultiResult,
    ReadDir,
    SetAcl,
    SetContents,
    Stat,
)
from chubbypy.protocol.namespace_codec import decode_result, encode_result

ROOT = "/ls/c"
ADMINS = AclNames("readers", "admins", "admins")


def machine_with_acls() -> NamespaceMachine:
    """/ls/c/acl/{admins,readers} and /ls/c/d (a directory guarded by them) with a file."""
    machine = NamespaceMachine("c")
    writes = [
        Create(f"{ROOT}/acl", is_directory=True),
        Create(acl_path("c", "admins"), contents=b"alice  # the admin\n\n"),
        Create(acl_path("c", "readers"), contents=b"bob\nalice\n"),
        Create(f"{ROOT}/d", is_directory=True, acl=ADMINS),
        Create(f"{ROOT}/d/f"),
    ]
    for index, write in enumerate(writes, start=1):
        machine.apply_write(LogIndex(index), write)
    return machine


def test_an_acl_file_admits_the_principals_it_lists() -> None:
    """One principal per line, comments and blank lines ignored; '*' admits anyone."""
    tree = machine_with_acls().tree
    assert admits(tree, "admins", "alice")
    assert not admits(tree, "admins", "bob")
    assert not admits(tree, "admins", "alice  # the admin")


def test_all_admits_everyone_until_its_file_exists_and_missing_files_admit_no_one() -> None:
    """The built-in name 'all' is open by default; any other missing ACL fails closed."""
    machine = machine_with_acls()
    assert admits(machine.tree, EVERYONE, "anyone")
    assert not admits(machine.tree, "typo", "alice")
    machine.apply_write(LogIndex(10), Create(acl_path("c", EVERYONE), contents=b"carol\n"))
    assert not admits(machine.tree, EVERYONE, "anyone")
    assert admits(machine.tree, EVERYONE, "carol")


def test_a_node_s_acl_names_decide_each_kind_of_access() -> None:
    """A created child inherits its parent's ACL names; read, write, change each checked."""
    tree = machine_with_acls().tree
    assert access_problem(tree, "bob", f"{ROOT}/d/f", Access.READ) is None
    denied = access_problem(tree, "bob", f"{ROOT}/d/f", Access.WRITE)
    assert denied is not None
    assert denied.code is ErrorCode.PERMISSION_DENIED
    assert "admins" in denied.message
    assert access_problem(tree, "alice", f"{ROOT}/d/f", Access.CHANGE) is None
    assert access_problem(tree, "eve", f"{ROOT}/d/missing", Access.READ) is not None, (
        "reading that a name is absent needs read on its parent"
    )


def test_each_write_needs_its_permission() -> None:
    """Create: write on the parent; SetContents, Delete: write; SetAcl: change; a MultiOp:
    read for its guards and every operation's own."""
    tree = machine_with_acls().tree
    f = f"{ROOT}/d/f"
    assert write_problem(tree, "bob", Create(f"{ROOT}/d/g")) is not None
    assert write_problem(tree, "bob", Create(f"{ROOT}/g")) is None, "the root is 'all'"
    assert write_problem(tree, "bob", SetContents(f, b"x")) is not None
    assert write_problem(tree, "bob", Delete(f)) is not None
    assert write_problem(tree, "alice", SetAcl(f, ADMINS)) is None
    guarded = MultiOp((Exists(f),), (SetContents(f"{ROOT}/x", b""),))
    assert write_problem(tree, "eve", guarded) is not None, "eve may not read f"
    assert write_problem(tree, "bob", guarded) is None


def test_a_listing_shows_a_child_s_metadata_only_to_its_readers() -> None:
    """ReadDir names every child, but a child's stat goes only to principals its read ACL
    admits; a trusted caller (no principal) sees all."""
    machine = machine_with_acls()
    machine.apply_write(LogIndex(10), Create(f"{ROOT}/secret", contents=b"x", acl=ADMINS))
    machine.apply_write(LogIndex(11), Create(f"{ROOT}/open", contents=b"y"))
    for principal, secret_shown in (("eve", False), ("bob", True), (None, True)):
        listing = machine.read(ReadDir(ROOT), principal)
        assert isinstance(listing, Listing)
        shown = {entry.name: entry.stat for entry in listing.entries}
        assert set(shown) == {"acl", "d", "open", "secret"}
        assert shown["open"] is not None
        assert (shown["secret"] is not None) is secret_shown, principal
    listing = machine.read(ReadDir(ROOT), "eve")
    assert isinstance(listing, Listing)
    hidden = next(entry for entry in listing.entries if entry.name == "secret")
    assert decode_result(encode_result(listing)) == listing
    assert hidden.stat is None


def test_a_new_cell_s_acl_directory_is_writable_only_by_its_operators() -> None:
    """`protect_acl_directory` makes acl/ and acl/admin (listing the operators) with ACL
    (all, admin, admin): anyone reads them, only operators write or re-ACL them, and
    anonymous cannot create an ACL file; applied again, or where acl/ exists, it changes
    nothing."""
    machine = NamespaceMachine("c")
    write = protect_acl_directory("c", ("operator", "ops2"))
    result = machine.apply_write(LogIndex(1), write).result
    assert isinstance(result, MultiResult)
    assert result.guard_held
    tree = machine.tree
    assert admits(tree, ADMIN, "operator")
    assert admits(tree, ADMIN, "ops2")
    assert not admits(tree, ADMIN, "anonymous")
    admin_file = acl_path("c", ADMIN)
    for principal, allowed in (("anonymous", False), ("operator", True)):
        for probe in (
            Create(acl_path("c", "all"), contents=b"anonymous\n"),
            SetContents(admin_file, b"anonymous\n"),
            SetAcl(admin_file, AclNames("all", "all", "all")),
            Delete(admin_file),
            SetAcl(acl_directory("c"), AclNames("all", "all", "all")),
        ):
            assert (write_problem(tree, principal, probe) is None) is allowed, (principal, probe)
    assert access_problem(tree, "anonymous", admin_file, Access.READ) is None
    before = machine.snapshot()
    again = machine.apply_write(LogIndex(2), write).result
    assert isinstance(again, MultiResult)
    assert not again.guard_held
    assert machine.snapshot() == before
    assert exposed_acl_directory(tree) is None


def test_an_acl_directory_made_before_the_defaults_is_reported_exposed() -> None:
    """An ACL directory whose write or change ACL is not 'admin' (one made before, which
    inherited 'all') is named by `exposed_acl_directory`, for the master's warning."""
    machine = machine_with_acls()
    exposed = exposed_acl_directory(machine.tree)
    assert exposed is not None
    assert "'all'" in exposed
    assert exposed_acl_directory(NamespaceMachine("c").tree) is None


def test_the_acl_files_a_front_end_looks_up_and_its_warning_for_a_missing_one() -> None:
    """`all` and names not given need no file; a missing name or a directory gets the
    warning, a file none (the one rule the CLI and the web page both warn by)."""
    needed = acl_files_needed("c", {"read": "all", "write": "ops", "change": None})
    assert [(n.role, n.name, n.path) for n in needed] == [("write", "ops", "/ls/c/acl/ops")]
    (ops,) = needed
    warning = ops.warning(None)
    expected = "the write ACL 'ops' has no file /ls/c/acl/ops: it admits no one until that "
    assert warning == expected + "file lists principals"
    file_stat = Stat(
        instance=1, content_generation=1, lock_generation=0, acl_generation=1,
        checksum=0, acl=AclNames("all", "all", "all"), is_directory=False,
        ephemeral=False, size=0,
    )  # fmt: skip
    assert ops.warning(file_stat) is None
    assert ops.warning(evolve(file_stat, is_directory=True)) == warning
