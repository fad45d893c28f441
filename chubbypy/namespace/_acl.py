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
"""

from __future__ import annotations

import enum

from chubbypy.namespace._names import parent_of
from chubbypy.namespace._tree import Tree
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    AclNames,
    Create,
    Delete,
    MultiOp,
    SetAcl,
    SetContents,
    Write,
)

EVERYONE = "all"
"""The ACL name that admits everyone while its file does not exist."""
ACL_DIRECTORY = "acl"


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"
    CHANGE = "change"


def acl_path(cell: str, name: str) -> str:
    return f"/ls/{cell}/{ACL_DIRECTORY}/{name}"


def admits(tree: Tree, name: str, principal: str) -> bool:
    """Whether the ACL called `name` admits `principal`."""
    node = tree.get(acl_path(tree.cell, name))
    if node is None or node.is_directory:
        return name == EVERYONE
    for line in node.contents.decode("utf-8", "replace").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry in ("*", principal):
            return True
    return False


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
