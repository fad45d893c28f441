"""Access control (Chubby §2.3): ACL names resolved through the cell's ACL directory, and
what each operation needs."""

from __future__ import annotations

from chubbypy.namespace import (
    EVERYONE,
    Access,
    NamespaceMachine,
    access_problem,
    acl_path,
    admits,
    write_problem,
)
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import (
    AclNames,
    Create,
    Delete,
    Exists,
    MultiOp,
    SetAcl,
    SetContents,
)

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
