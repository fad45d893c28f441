"""The namespace as the state machine the replicated log drives. Pure: bytes in, bytes out,
deterministic; the Applier in front of it does the epoch guard and exactly-once.

`NamespaceMachine` implements `chubbypy.paxos.StateMachine`: `apply(index, payload)` decodes
a `Write`, applies it and returns the encoded result (with the decoded write and what it
changed, an `AppliedWrite`, for the master's services); `snapshot()` is the encoded list of
`NodeRecord`s in path order, so equal states give equal bytes whatever order they were built
in, and `checksum()` digests those bytes. For checkpoints (STYLE §5) the shell calls
`take_changes()` after applying up to an index and writes the upserts and deletes as rows of
its ``nodes`` table; on recovery it hands every row back to `restore_records()`.

After `restore()` or `restore_records()` the change set is empty: the restored state is the
new baseline. A shell that restores a snapshot received from a peer must therefore write
the whole of `records()` to its tables, not just later changes. A fresh machine's first
`take_changes()` includes its root, so the first checkpoint is complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from attrs import evolve, frozen

from chubbypy.namespace._apply import Applied, apply
from chubbypy.namespace._names import NamespaceLimits, cell_root
from chubbypy.namespace._read import read
from chubbypy.namespace._records import (
    NamespaceChanges,
    NodeRecord,
    decode_snapshot,
    encode_snapshot,
)
from chubbypy.namespace._tree import Tree, records_problem
from chubbypy.protocol import LogIndex
from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import AclNames, LogWrite, Read, ReadResult
from chubbypy.protocol.namespace_codec import decode_log_write_by, encode_result
from chubbypy.sessions import SessionRecord


@frozen
class AppliedWrite:
    """One write the log applied, decoded, with what it did (`Outcome.effect`)."""

    index: LogIndex
    write: LogWrite
    applied: Applied
    principal: str = ""
    """Whom the write was done for ("" for none: the master's own decisions)."""


ROOT_ACL_DEFAULT = AclNames("all", "all", "all")
"""ACL names of a new cell's root, and so by inheritance of every node created without
ACL names of its own. ``all`` names a file of the ACL directory that does not exist yet."""

DEFAULT_LIMITS = NamespaceLimits()


class NamespaceMachine:
    """The replicated database of one cell; see the module docstring."""

    def __init__(
        self,
        cell: str,
        limits: NamespaceLimits = DEFAULT_LIMITS,
        root_acl: AclNames = ROOT_ACL_DEFAULT,
    ) -> None:
        self._tree = Tree.fresh(cell, limits, root_acl)

    @property
    def cell(self) -> str:
        return self._tree.cell

    @property
    def tree(self) -> Tree:
        """The in-memory state, for `chubbypy.namespace.read` and later layers."""
        return self._tree

    def apply(self, index: LogIndex, payload: bytes) -> tuple[bytes, AppliedWrite | None]:
        """Apply a committed write or session command: its encoded result, and the write
        with what it did (the master's services derive events and lock hand-overs from
        it). A payload that does not decode is a BAD_REQUEST result and changes nothing."""
        try:
            write, principal = decode_log_write_by(payload)
        except DecodeError as error:
            return encode_result(Failure(ErrorCode.BAD_REQUEST, f"not a write: {error}")), None
        applied = self.apply_write(index, write, principal)
        return encode_result(applied.result), AppliedWrite(index, write, applied, principal)

    def apply_write(self, index: LogIndex, write: LogWrite, principal: str = "") -> Applied:
        """Apply a decoded write on behalf of `principal` ("" for none); the result and the
        names it changed."""
        return apply(self._tree, index, write, principal)

    def read(self, query: Read, principal: str | None = None) -> ReadResult:
        """Answer a read from memory; with `principal`, a listing shows a child's
        metadata only if `principal` may read the child."""
        return read(self._tree, query, principal)

    def records(self) -> tuple[NodeRecord, ...]:
        """Every node, in path order."""
        return tuple(self._tree.records())

    def sessions(self) -> tuple[SessionRecord, ...]:
        """Every live session, in id order."""
        return tuple(self._tree.sessions())

    def take_changes(self) -> NamespaceChanges:
        """Nodes created or changed, and names deleted, since the previous call (or since
        construction or restore), in path order; the set starts again empty. A node created
        and deleted in between is in neither."""
        return self._tree.take_changes()

    def restore_records(
        self, records: Iterable[NodeRecord], sessions: Iterable[SessionRecord] = ()
    ) -> None:
        """Replace the whole state with `records` and `sessions`, in any order (a
        checkpoint's rows)."""
        nodes, live = tuple(records), tuple(sessions)
        problem = records_problem(self.cell, nodes, live)
        assert problem is None, problem
        self._tree = Tree(
            self.cell,
            self._tree.limits,
            {r.path: r for r in nodes},
            {s.session_id: s for s in live},
        )

    def rename_cell(self, cell: str) -> None:
        """Make this namespace cell `cell`'s: every node's name moves from under the old
        cell's root to under the new one's (a backup of one cell restored into another;
        ACL names are names, not paths, and stay as they are)."""
        old, new = cell_root(self.cell), cell_root(cell)
        records = [evolve(r, path=new + r.path[len(old) :]) for r in self._tree.records()]
        sessions = tuple(self._tree.sessions())
        problem = records_problem(cell, records, sessions)
        assert problem is None, problem
        self._tree = Tree(
            cell,
            self._tree.limits,
            {r.path: r for r in records},
            {s.session_id: s for s in sessions},
        )

    def snapshot(self) -> bytes:
        return encode_snapshot(self.cell, self._tree.records(), self._tree.sessions())

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; DecodeError, and no change, for bytes
        that are not a snapshot of this cell."""
        self._tree = self._tree_of(data)

    def snapshot_problem(self, data: bytes) -> str | None:
        """Why `data` is not a snapshot of this cell that `restore` would take, or None.
        Decodes and checks the whole of it (as `restore` does) and changes nothing."""
        try:
            self._tree_of(data)
        except DecodeError as error:
            return str(error)
        return None

    def _tree_of(self, data: bytes) -> Tree:
        """The tree snapshot `data` holds, decoded and checked whole; DecodeError (only) for
        bytes that are not a snapshot of this cell (another cell's, a damaged one)."""
        cell, records, sessions = decode_snapshot(data)
        if cell != self.cell:
            raise DecodeError(f"a snapshot of cell {cell!r:.40}, not {self.cell!r}")
        problem = records_problem(cell, records, sessions)
        if problem is not None:
            raise DecodeError(f"the snapshot is not a tree: {problem}")
        return Tree(
            cell,
            self._tree.limits,
            {r.path: r for r in records},
            {s.session_id: s for s in sessions},
        )

    def checksum(self) -> bytes:
        """8 bytes that are equal on replicas with equal namespaces."""
        return hashlib.blake2b(self.snapshot(), digest_size=8).digest()
