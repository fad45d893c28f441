"""Access control (Chubby §2.3): who may read, write, or change the ACL names of a node.
Pure: looks at the tree, changes nothing.

Each node has three ACL names (read, write, change). An ACL name names a file in the cell's
ACL directory, ``/ls/<cell>/acl/<name>``, whose lines list the principals it admits (one
per line; ``*`` admits everyone; text after ``#`` is a comment). The name ``all`` needs no
file: while ``/ls/<cell>/acl/all`` does not exist it admits everyone, which is what a new
cell's root (and so, by inheritance, every node) uses until an operator writes ACL files.
Any other name whose file is missing admits no one: a typo fails closed.

What needs which permission:

* reading a node (its contents, its metadata) needs *read* on it; reading that a name is
  absent needs *read* on its parent;
* opening a handle needs, for each mode it asks, that permission on the node (Chubby checks
  at open; the handle then carries the mode), and creating the node needs *write* on its
  parent;
* writing contents or deleting needs *write* on the node; changing its ACL names needs
  *change*; a lock (in either mode) needs a handle opened for writing, so *write*.

The ACL directory protects itself. The first master of a cell that has no ACL directory
creates it (`protect_acl_directory`, a MultiOp proposed as the master's own command, so
every replica applies the same): ``acl/`` and ``acl/admin`` with ACL names
``(all, admin, admin)``, ``acl/admin`` listing the configured operators (``auth.admins``).
So only an operator may add, edit or remove ACL files or change their ACL names, while
anyone may read them. The ACL called ``admin`` also guards what only operators may do
outside the tree (listing sessions). A cell whose ACL directory was made before is left
as it is, since its operators may rely on its ACL names: see README "ACL defaults".
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from attrs import frozen

from chubbypy.namespace._names import parent_of
from chubbypy.namespace._tree import Tree
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Absent,
    AclNames,
    Create,
    Delete,
    MultiOp,
    SetAcl,
    SetContents,
    Stat,
    Write,
)

EVERYONE = "all"
"""The ACL name that admits everyone while its file does not exist."""
ADMIN = "admin"
"""The ACL name of the cell's operators: it guards the ACL directory and ListSessions."""
ACL_DIRECTORY = "acl"
PROTECTED_ACL = AclNames(EVERYONE, ADMIN, ADMIN)
"""ACL names of the ACL directory a cell creates, and of its ``admin`` file."""


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"
    CHANGE = "change"


def acl_path(cell: str, name: str) -> str:
    return f"/ls/{cell}/{ACL_DIRECTORY}/{name}"


@frozen
class AclFileNeeded:
    """The file an ACL name given for `role` (read, write or change) is looked up in."""

    role: str
    name: str
    path: str

    def warning(self, found: Stat | None) -> str | None:
        """The warning when what is at `path` (`found`, None: nothing) is not a file: the
        name admits no one. None when it is one."""
        if found is not None and not found.is_directory:
            return None
        return (
            f"the {self.role} ACL {self.name!r} has no file {self.path}: it admits no one "
            "until that file lists principals"
        )


def acl_files_needed(cell: str, given: Mapping[str, str | None]) -> tuple[AclFileNeeded, ...]:
    """The ACL files the names `given` (role → name, None or "" when not given) are looked
    up in: every name but ``all``, which needs none. Each front end (CLI, web page) looks
    these up after setting ACL names and warns with `AclFileNeeded.warning`; a file it
    cannot read is not warned of (it may well exist)."""
    return tuple(
        AclFileNeeded(role, name, acl_path(cell, name))
        for role, name in given.items()
        if name and name != EVERYONE
    )


def acl_directory(cell: str) -> str:
    return f"/ls/{cell}/{ACL_DIRECTORY}"


def admins_file(admins: tuple[str, ...]) -> bytes:
    """The contents of ``acl/admin`` listing `admins`."""
    lines = ["# The cell's operators (auth.admins when the cell was made): one per line."]
    return "\n".join([*lines, *admins, ""]).encode()


def protect_acl_directory(cell: str, admins: tuple[str, ...]) -> MultiOp:
    """The write that makes a cell's ACL directory, writable only by `admins`, if it has
    none (see the module docstring); it changes nothing where one exists."""
    directory = acl_directory(cell)
    return MultiOp(
        (Absent(directory),),
        (
            Create(directory, is_directory=True, acl=PROTECTED_ACL),
            Create(acl_path(cell, ADMIN), contents=admins_file(admins), acl=PROTECTED_ACL),
        ),
    )


def exposed_acl_directory(tree: Tree) -> str | None:
    """Why the cell's ACL directory lets others than its operators change ACL files (its
    write or change ACL name is not ``admin``), or None: for a warning at a master's start."""
    node = tree.get(acl_directory(tree.cell))
    if node is None or (node.acl.write == ADMIN and node.acl.change == ADMIN):
        return None
    return (
        f"{node.path} has write ACL {node.acl.write!r} and change ACL {node.acl.change!r}: "
        "whoever they admit can edit ACL files and grant themselves access"
    )


def listed_principals(contents: bytes) -> tuple[str, ...]:
    """The entries an ACL file's `contents` list, in order: one per line, text after
    ``#`` a comment, blank lines skipped (``*`` stands for everyone)."""
    entries = (
        line.split("#", 1)[0].strip() for line in contents.decode("utf-8", "replace").splitlines()
    )
    return tuple(entry for entry in entries if entry)


def admits(tree: Tree, name: str, principal: str) -> bool:
    """Whether the ACL called `name` admits `principal`."""
    node = tree.get(acl_path(tree.cell, name))
    contents = None if node is None or node.is_directory else node.contents
    return acl_file_admits(name, contents, principal)


def acl_file_admits(name: str, contents: bytes | None, principal: str) -> bool:
    """Whether the ACL called `name`, whose file holds `contents` (None: there is no such
    file), admits `principal`: the one rule, used by the master and by clients (the web
    page) that read the file to decide what to offer."""
    if contents is None:
        return name == EVERYONE
    return any(entry in ("*", principal) for entry in listed_principals(contents))


def _name(acl: AclNames, access: Access) -> str:
    match access:
        case Access.READ:
            return acl.read
        case Access.WRITE:
            return acl.write
        case Access.CHANGE:
            return acl.change


def access_problem(tree: Tree, principal: str, path: str, access: Access) -> Failure | None:
    """PERMISSION_DENIED if `principal` lacks `access` to `path` (to its parent when it
    does not exist); None if it has it, or if neither exists (the operation will say)."""
    node = tree.get(path)
    where = path
    if node is None:
        where = parent_of(path)
        node = tree.get(where)
        if node is None:
            return None
    name = _name(node.acl, access)
    if admits(tree, name, principal):
        return None
    return Failure(
        ErrorCode.PERMISSION_DENIED,
        f"{principal} may not {access.value} {where}: ACL {name!r} does not admit it",
    )


def write_problem(tree: Tree, principal: str, write: Write) -> Failure | None:
    """The first permission `principal` lacks for `write`, or None."""
    match write:
        case Create(path):
            return access_problem(tree, principal, parent_of(path), Access.WRITE)
        case SetContents(path) | Delete(path):
            return access_problem(tree, principal, path, Access.WRITE)
        case SetAcl(path):
            return access_problem(tree, principal, path, Access.CHANGE)
        case MultiOp(guard, if_true, if_false):
            for test in guard:
                problem = access_problem(tree, principal, test.path, Access.READ)
                if problem is not None:
                    return problem
            for inner in (*if_true, *if_false):
                problem = write_problem(tree, principal, inner)
                if problem is not None:
                    return problem
    return None
