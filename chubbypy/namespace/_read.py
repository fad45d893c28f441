"""Answering reads from the in-memory namespace. Pure: `read(tree, query)` looks, never
changes anything, and never touches a disk (STYLE §5); the master answers reads from memory
under its lease.

Failures, first found first: INVALID_NAME, BAD_REQUEST (a ReadDir limit below 1),
NO_SUCH_NODE, then IS_A_DIRECTORY for GetContentsAndStat of a directory (a directory has no
contents; GetStat describes it) and NOT_A_DIRECTORY for ReadDir of a file.

Who may read what is checked by the caller (`chubbypy.namespace._acl`: read access to the
node read, or to a directory listed), with one rule here: a listing names every child, but
shows a child's metadata (size, generations, instance, checksum, ACL names) only to a
principal that may read that child, since those say what a protected file holds and when
it changes (Chubby §2.3 guards a file's metadata with its own read ACL).
"""

from __future__ import annotations

from typing import assert_never

from chubbypy.namespace._acl import admits
from chubbypy.namespace._names import check_path
from chubbypy.namespace._records import NodeRecord
from chubbypy.namespace._tree import Tree
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Contents,
    DirEntry,
    GetContentsAndStat,
    GetStat,
    Listing,
    Read,
    ReadDir,
    ReadResult,
)


def read(tree: Tree, query: Read, principal: str | None = None) -> ReadResult:
    """The answer to `query` from `tree`, for `principal` (None: a trusted caller, who
    sees everything); see the module docstring."""
    problem = check_path(query.path, tree.cell, tree.limits)
    if problem is not None:
        return problem
    if isinstance(query, ReadDir) and query.limit < 1:
        return Failure(ErrorCode.BAD_REQUEST, f"ReadDir limit {query.limit}; at least 1")
    node = tree.get(query.path)
    if node is None:
        return Failure(ErrorCode.NO_SUCH_NODE, f"no node {query.path}")
    match query:
        case GetStat():
            return tree.stat(node)
        case GetContentsAndStat():
            if node.is_directory:
                return Failure(ErrorCode.IS_A_DIRECTORY, f"{query.path} is a directory")
            return Contents(node.contents, tree.stat(node))
        case ReadDir():
            return _read_dir(tree, node, query, principal)
        case unexpected:
            assert_never(unexpected)


def _read_dir(
    tree: Tree, node: NodeRecord, query: ReadDir, principal: str | None
) -> Listing | Failure:
    """One page of children in name order. A limit above `readdir_entries_max` is clamped;
    `more` tells the caller to ask again after the last name. A child's metadata is shown
    only to a principal its read ACL admits: its name alone otherwise."""
    if not node.is_directory:
        return Failure(ErrorCode.NOT_A_DIRECTORY, f"{query.path} is a file")
    limit = min(query.limit, tree.limits.readdir_entries_max)
    names, more = tree.page(node.path, query.after, limit)
    entries = []
    for name in names:
        child = tree.get(f"{node.path}/{name}")
        assert child is not None, (node.path, name)
        shown = principal is None or admits(tree, child.acl.read, principal)
        entries.append(DirEntry(name, tree.stat(child) if shown else None))
    return Listing(tuple(entries), more)
