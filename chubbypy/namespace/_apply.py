"""Applying one write to the namespace. Pure: `apply(tree, index, write)` changes the
in-memory tree and returns the result and the names it changed (STYLE §5); the same tree,
index and write give the same result on every replica.

Each write is checked in two steps, and the first problem found is the result:

1. **The request itself**, whatever the state: names (INVALID_NAME, the root for a Delete
   included), ACL names (INVALID_NAME), contents for a directory (IS_A_DIRECTORY, as for a
   SetContents on one), contents size (TOO_LARGE); for a MultiOp, its size (TOO_LARGE) and
   then every test and the operations of *both* branches, so a malformed MultiOp fails
   whatever the state.
2. **Against the state**: Create gives EXISTS, NO_SUCH_NODE (no parent), NOT_A_DIRECTORY
   (the parent is a file) or BUSY (see `INSTANCES_PER_INDEX`); SetContents NO_SUCH_NODE,
   IS_A_DIRECTORY, GENERATION_MISMATCH; Delete NO_SUCH_NODE, GENERATION_MISMATCH (the
   instance differs), NOT_EMPTY; SetAcl NO_SUCH_NODE, GENERATION_MISMATCH.

A MultiOp (Paxos Made Live §5.6) evaluates every guard test, then runs `if_true` if all
held and `if_false` otherwise, each operation seeing the changes of those before it. If one
fails, the branch is rolled back and the result is that operation's Failure, its code
unchanged and its message prefixed with where it stood, ``if_true[2]: ``; a problem found
in step 1 is prefixed the same way (``guard[0]: ``, ``if_false[1]: ``).
"""

from __future__ import annotations

from typing import assert_never

from attrs import evolve, frozen

from chubbypy.namespace._names import check_acl, check_path, parent_of
from chubbypy.namespace._records import NodeRecord, contents_checksum
from chubbypy.namespace._tree import Tree
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Absent,
    AclGenerationIs,
    AclNames,
    ContentGenerationIs,
    ContentsAre,
    Create,
    Delete,
    Exists,
    InstanceIs,
    MultiOp,
    MultiResult,
    SetAcl,
    SetContents,
    SimpleWrite,
    Test,
    Write,
    WriteResult,
    Written,
)


@frozen
class Applied:
    """What one write did: its result, and the names of the nodes it wrote."""

    result: WriteResult
    changed: tuple[str, ...]
    """Names whose node was created, changed or deleted, in path order; empty when the
    write failed. A directory whose children changed is not listed itself: its listing
    changed when a name below it is listed."""


def apply(tree: Tree, index: LogIndex, write: Write) -> Applied:
    """Apply `write`, committed at log `index`, to `tree`; see the module docstring."""
    if isinstance(write, MultiOp):
        return _multi_op(tree, index, write)
    problem = _request_problem(tree, write)
    if problem is not None:
        return Applied(problem, ())
    result = _write(tree, index, write)
    return Applied(result, (write.path,) if isinstance(result, Written) else ())


# ----------------------------------------------------------------------------- step 1


def _request_problem(tree: Tree, write: SimpleWrite) -> Failure | None:
    """What is wrong with `write` whatever the state, or None."""
    problem = check_path(write.path, tree.cell, tree.limits)
    if problem is not None:
        return problem
    match write:
        case Create(path, is_directory, contents, acl, _):
            if acl is not None and (problem := check_acl(acl, tree.limits)) is not None:
                return problem
            if is_directory and contents:
                return Failure(ErrorCode.IS_A_DIRECTORY, f"{path}: a directory has no contents")
            return _size_problem(tree, path, contents)
        case SetContents(path, contents, _):
            return _size_problem(tree, path, contents)
        case Delete(path, _):
            if path == tree.root:
                return Failure(ErrorCode.INVALID_NAME, f"{path}: the cell root cannot be deleted")
            return None
        case SetAcl(_, acl, _):
            return check_acl(acl, tree.limits)
        case unexpected:
            assert_never(unexpected)


def _size_problem(tree: Tree, path: str, contents: bytes) -> Failure | None:
    if len(contents) > tree.limits.file_bytes_max:
        message = f"{path}: {len(contents)} bytes of contents; at most {tree.limits.file_bytes_max}"
        return Failure(ErrorCode.TOO_LARGE, message)
    return None


# ----------------------------------------------------------------------------- step 2


def _write(tree: Tree, index: LogIndex, write: SimpleWrite) -> Written | Failure:
    match write:
        case Create():
            return _create(tree, index, write)
        case SetContents():
            return _set_contents(tree, write)
        case Delete():
            return _delete(tree, write)
        case SetAcl():
            return _set_acl(tree, write)
        case unexpected:
            assert_never(unexpected)


def _create(tree: Tree, index: LogIndex, create: Create) -> Written | Failure:
    path = create.path
    if tree.get(path) is not None:
        return Failure(ErrorCode.EXISTS, f"{path} exists")
    parent = tree.get(parent_of(path))
    if parent is None:
        return Failure(ErrorCode.NO_SUCH_NODE, f"{path}: no directory {parent_of(path)}")
    if not parent.is_directory:
        return Failure(ErrorCode.NOT_A_DIRECTORY, f"{path}: {parent.path} is a file")
    instance = tree.new_instance(index)
    if instance is None:
        return Failure(ErrorCode.BUSY, f"{path}: too many nodes created in one log entry")
    record = _new_node(create, instance, parent.acl if create.acl is None else create.acl)
    tree.put(record)
    return Written(tree.stat(record))


def _new_node(create: Create, instance: int, acl: AclNames) -> NodeRecord:
    """A created node: a file's contents have been written once, its ACL names once (they
    are its parent's unless given, Chubby §2.3), its lock never."""
    directory = create.is_directory
    return NodeRecord(
        path=create.path,
        is_directory=directory,
        ephemeral=create.ephemeral,
        contents=create.contents,
        instance=instance,
        content_generation=0 if directory else 1,
        lock_generation=0,
        acl_generation=1,
        checksum=0 if directory else contents_checksum(create.contents),
        acl=acl,
    )


def _set_contents(tree: Tree, write: SetContents) -> Written | Failure:
    node = tree.get(write.path)
    if node is None:
        return _no_such_node(write.path)
    if node.is_directory:
        return Failure(ErrorCode.IS_A_DIRECTORY, f"{write.path} is a directory")
    expected = write.expected_generation
    if expected is not None and expected != node.content_generation:
        return _mismatch(write.path, "content generation", node.content_generation, expected)
    record = evolve(
        node,
        contents=write.contents,
        content_generation=node.content_generation + 1,
        checksum=contents_checksum(write.contents),
    )
    tree.put(record)
    return Written(tree.stat(record))


def _delete(tree: Tree, delete: Delete) -> Written | Failure:
    node = tree.get(delete.path)
    if node is None:
        return _no_such_node(delete.path)
    expected = delete.expected_instance
    if expected is not None and expected != node.instance:
        return _mismatch(delete.path, "instance", node.instance, expected)
    if node.is_directory and tree.child_count(node.path):
        return Failure(ErrorCode.NOT_EMPTY, f"{delete.path} has children")
    tree.remove(node.path)
    return Written(None)


def _set_acl(tree: Tree, write: SetAcl) -> Written | Failure:
    node = tree.get(write.path)
    if node is None:
        return _no_such_node(write.path)
    expected = write.expected_generation
    if expected is not None and expected != node.acl_generation:
        return _mismatch(write.path, "ACL generation", node.acl_generation, expected)
    record = evolve(node, acl=write.acl, acl_generation=node.acl_generation + 1)
    tree.put(record)
    return Written(tree.stat(record))


def _no_such_node(path: str) -> Failure:
    return Failure(ErrorCode.NO_SUCH_NODE, f"no node {path}")


def _mismatch(path: str, what: str, actual: int, expected: int) -> Failure:
    return Failure(ErrorCode.GENERATION_MISMATCH, f"{path}: {what} is {actual}, not {expected}")


# ----------------------------------------------------------------------------- MultiOp


def _multi_op(tree: Tree, index: LogIndex, multi: MultiOp) -> Applied:
    problem = _multi_op_problem(tree, multi)
    if problem is not None:
        return Applied(problem, ())
    tests = tuple(_holds(tree, test) for test in multi.guard)
    held = all(tests)
    branch, label = (multi.if_true, "if_true") if held else (multi.if_false, "if_false")
    tree.begin()
    results = []
    for position, write in enumerate(branch):
        result = _write(tree, index, write)
        if isinstance(result, Failure):
            tree.rollback()
            return Applied(_located(result, f"{label}[{position}]"), ())
        results.append(result)
    tree.commit()
    return Applied(
        MultiResult(held, tests, tuple(results)), tuple(sorted({w.path for w in branch}))
    )


def _multi_op_problem(tree: Tree, multi: MultiOp) -> Failure | None:
    count = len(multi.guard) + len(multi.if_true) + len(multi.if_false)
    if count > tree.limits.multiop_operations_max:
        message = f"a MultiOp of {count} tests and operations; at most"
        return Failure(ErrorCode.TOO_LARGE, f"{message} {tree.limits.multiop_operations_max}")
    for position, test in enumerate(multi.guard):
        problem = check_path(test.path, tree.cell, tree.limits)
        if problem is not None:
            return _located(problem, f"guard[{position}]")
    for label, branch in (("if_true", multi.if_true), ("if_false", multi.if_false)):
        for position, write in enumerate(branch):
            problem = _request_problem(tree, write)
            if problem is not None:
                return _located(problem, f"{label}[{position}]")
    return None


def _located(failure: Failure, where: str) -> Failure:
    return Failure(failure.code, f"{where}: {failure.message}; nothing was applied")


def _holds(tree: Tree, test: Test) -> bool:
    """Whether guard `test` holds: each test looks at one node, and one about a property
    of a node is false when there is no node."""
    node = tree.get(test.path)
    match test:
        case Exists():
            return node is not None
        case Absent():
            return node is None
        case ContentGenerationIs(_, generation):
            return node is not None and node.content_generation == generation
        case AclGenerationIs(_, generation):
            return node is not None and node.acl_generation == generation
        case InstanceIs(_, instance):
            return node is not None and node.instance == instance
        case ContentsAre(_, contents):
            # A directory has no contents, so no ContentsAre test holds for one.
            return node is not None and not node.is_directory and node.contents == contents
        case unexpected:
            assert_never(unexpected)
