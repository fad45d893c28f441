"""The in-memory namespace of one cell: nodes by name, children by directory. Pure: a data
structure changed only by `chubbypy.namespace.apply`, never by time or I/O.

Theory of operation. `_nodes` maps every name to its `NodeRecord`, and `_children` maps
every directory's name to the sorted names of its children (a `SortedNames`), so a lookup
is one dict access and a ReadDir page costs O(log n + page). The cell root always exists
and is never removed. Records are frozen: a change replaces a node's record, so the
previous record is still whole, which gives two things cheaply:

* **Undo for MultiOp.** Between `begin()` and `commit()` every change appends the name's
  previous record (or None) to a journal, and `rollback()` puts them back in reverse
  order, so a failed branch leaves no trace (Paxos Made Live §5.6: a MultiOp is atomic).
* **Changes for checkpoints.** `_touched` remembers, for each name changed since the last
  `take_changes()`, whether a node of that name existed then. From it `take_changes()`
  derives exactly what a checkpoint must write: a node that exists now is an upsert; a name
  whose node existed at the last call and does not now is a delete; a node created and
  deleted between two calls appears in neither. A rolled-back change leaves nothing.

Sessions (Chubby §2.8) are here too: `_sessions` holds every live session's record, and
`_session_paths` indexes, per session, the names of the nodes it owns (ephemeral nodes) or
whose lock it holds, so ending a session touches only those nodes. The index is derived
from the records and kept by the three methods every node change goes through (`_insert`,
`_replace`, `_delete`), so a rolled-back MultiOp leaves it right as well. Session changes
are never inside a MultiOp.

Quotas are measured the same way: `_usage` holds, per principal, the nodes it created
(each record names its `creator`) and the bytes of their contents, derived from the records
and kept by those same three methods, so a rolled-back MultiOp leaves it right too and a
restored snapshot rebuilds it.

Instance numbers come from the log index of the write that creates the node, but one log
entry carries a batch of commands and a MultiOp may create, delete and re-create a name,
so several nodes can be created at one index. The k-th node created at index i (k from 0,
counting creations later rolled back too) gets instance ``i * INSTANCES_PER_INDEX + k``:
unique, and greater than every instance handed out before, on every replica alike. No
counter needs persisting: a snapshot or checkpoint is taken between entries, and the next
entry has a greater index.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from attrs import evolve, frozen

from chubbypy.locks import LockMode
from chubbypy.namespace._names import (
    NamespaceLimits,
    base_name,
    cell_root,
    component_problem,
    parent_of,
)
from chubbypy.namespace._records import NamespaceChanges, NodeRecord, contents_checksum
from chubbypy.namespace._sorted import SortedNames
from chubbypy.protocol import NO_INDEX, CallNumber, LogIndex, SessionId
from chubbypy.protocol.namespace import AclNames, Stat, WriteResult
from chubbypy.sessions import SessionRecord

INSTANCES_PER_INDEX = 1 << 16
"""Nodes that can be created at one log index; a creation beyond it is refused as BUSY
(the default limits allow 64 commands of at most 64 operations per entry: 4,096)."""


@frozen
class Usage:
    """What one principal's nodes hold (its quotas' measure)."""

    nodes: int
    bytes: int


NO_USAGE = Usage(0, 0)


@frozen
class _Undo:
    path: str
    previous: NodeRecord | None
    first_touch: bool
    """This change added `path` to `_touched`; undoing it removes it again."""


class Tree:
    """The nodes of one cell; see the module docstring."""

    def __init__(
        self,
        cell: str,
        limits: NamespaceLimits,
        nodes: dict[str, NodeRecord],
        sessions: dict[SessionId, SessionRecord] | None = None,
    ) -> None:
        """The tree of `nodes` and `sessions`, which `records_problem` has found to be one."""
        self.cell = cell
        self.limits = limits
        self.root = cell_root(cell)
        assert len(self.root) <= limits.path_bytes_max, (self.root, limits)
        self._nodes = nodes
        children: dict[str, list[str]] = {p: [] for p, r in nodes.items() if r.is_directory}
        for path in nodes:
            if path != self.root:
                children[parent_of(path)].append(base_name(path))
        self._children = {path: SortedNames(names) for path, names in children.items()}
        self._sessions: dict[SessionId, SessionRecord] = dict(sessions or {})
        self._session_ids = sorted(self._sessions)
        """Every live session's id, in order (ids only grow, so a new one goes last)."""
        self._session_paths: dict[SessionId, set[str]] = {sid: set() for sid in self._sessions}
        self._nonces = {(s.name, s.nonce): sid for sid, s in self._sessions.items() if s.nonce}
        """The live sessions opened with a nonce, by their name and nonce."""
        self._usage: dict[str, Usage] = {}
        """What each principal's nodes hold, derived from the records' creators."""
        for record in nodes.values():
            self._index(record, add=True)
        self._sessions_touched: dict[SessionId, bool] = {}
        self._touched: dict[str, bool] = {}
        self._journal: list[_Undo] | None = None
        self._instance_index = NO_INDEX
        self._instances_used = 0
        self._instance_last = max(
            [r.instance for r in nodes.values()] + [s.session_id for s in self._sessions.values()]
        )

    @classmethod
    def fresh(cls, cell: str, limits: NamespaceLimits, root_acl: AclNames) -> Tree:
        """A cell holding only its root directory, with ACL names `root_acl`."""
        root = cell_root(cell)
        tree = cls(
            cell, limits, {root: NodeRecord(root, True, False, b"", 0, 0, 0, 1, 0, root_acl)}
        )
        tree._touched[root] = False  # so the first checkpoint writes the root too
        return tree

    # ------------------------------------------------------------------------- queries

    def get(self, path: str) -> NodeRecord | None:
        return self._nodes.get(path)

    def child_count(self, path: str) -> int:
        return len(self._children[path])

    def page(self, path: str, after: str, limit: int) -> tuple[list[str], bool]:
        """Names of up to `limit` children of directory `path` after `after`, and whether
        more follow."""
        return self._children[path].page(after, limit)

    def stat(self, record: NodeRecord) -> Stat:
        """The metadata of the node `record`, which is in the tree."""
        size = self.child_count(record.path) if record.is_directory else len(record.contents)
        return Stat(
            record.instance,
            record.content_generation,
            record.lock_generation,
            record.acl_generation,
            record.checksum,
            record.acl,
            record.is_directory,
            record.ephemeral,
            size,
        )

    def records(self) -> list[NodeRecord]:
        """Every node, in path order."""
        return [self._nodes[path] for path in sorted(self._nodes)]

    def usage(self, principal: str) -> Usage:
        """The nodes `principal` created that exist, and the bytes of their contents."""
        return self._usage.get(principal, NO_USAGE)

    def session(self, session_id: SessionId) -> SessionRecord | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[SessionRecord]:
        """Every live session, in id order."""
        return [self._sessions[sid] for sid in self._session_ids]

    def sessions_after(self, after: SessionId, limit: int) -> tuple[list[SessionRecord], bool]:
        """At most `limit` live sessions numbered above `after`, in id order, and whether
        more follow: a page costs its own length, not the number of sessions."""
        first = bisect_right(self._session_ids, after)
        ids = self._session_ids[first : first + limit]
        return [self._sessions[sid] for sid in ids], first + len(ids) < len(self._session_ids)

    def session_by_nonce(self, name: str, nonce: int) -> SessionRecord | None:
        """The live session that an OpenSession of `name` and `nonce` (not 0) opened."""
        session_id = self._nonces.get((name, nonce)) if nonce else None
        return None if session_id is None else self._sessions[session_id]

    def session_paths(self, session_id: SessionId) -> list[str]:
        """Names of the nodes session `session_id` owns or holds the lock of, in path order
        (none for a session that does not exist)."""
        return sorted(self._session_paths.get(session_id, ()))

    # ------------------------------------------------------------------------- changes

    def new_instance(self, index: LogIndex) -> int | None:
        """The instance of the next node created at log `index`; None if `index` has used
        all INSTANCES_PER_INDEX of them."""
        assert index >= max(1, self._instance_index), (index, self._instance_index)
        if index != self._instance_index:
            self._instance_index, self._instances_used = index, 0
        if self._instances_used == INSTANCES_PER_INDEX:
            return None
        instance = index * INSTANCES_PER_INDEX + self._instances_used
        self._instances_used += 1
        assert instance > self._instance_last, (instance, self._instance_last)
        self._instance_last = instance
        return instance

    def put(self, record: NodeRecord) -> None:
        """Create the node `record` names, or replace it; a new node's parent must be a
        directory, and a replaced node keeps its kind."""
        previous = self._nodes.get(record.path)
        self._note(record.path, previous)
        if previous is None:
            self._insert(record)
        else:
            assert previous.is_directory == record.is_directory, (previous, record)
            self._replace(record)

    def remove(self, path: str) -> None:
        """Delete the node `path`, which exists, is not the root, and has no children."""
        previous = self._nodes.get(path)
        assert previous is not None, path
        self._note(path, previous)
        self._delete(path)

    def _note(self, path: str, previous: NodeRecord | None) -> None:
        first_touch = path not in self._touched
        if first_touch:
            self._touched[path] = previous is not None
        if self._journal is not None:
            self._journal.append(_Undo(path, previous, first_touch))

    def _insert(self, record: NodeRecord) -> None:
        parent = self._nodes[parent_of(record.path)]
        assert parent.is_directory, parent
        self._children[parent.path].add(base_name(record.path))
        if record.is_directory:
            self._children[record.path] = SortedNames()
        self._nodes[record.path] = record
        self._index(record, add=True)

    def _replace(self, record: NodeRecord) -> None:
        self._index(self._nodes[record.path], add=False)
        self._nodes[record.path] = record
        self._index(record, add=True)

    def _delete(self, path: str) -> None:
        assert path != self.root, path
        if path in self._children:
            assert not self._children[path], path
            del self._children[path]
        self._children[parent_of(path)].remove(base_name(path))
        self._index(self._nodes.pop(path), add=False)

    def _index(self, record: NodeRecord, *, add: bool) -> None:
        """Add `record` to (or take it out of) the index of each session it involves, and
        its creator's usage."""
        if record.creator:
            sign = 1 if add else -1
            usage = self._usage.get(record.creator, NO_USAGE)
            usage = Usage(usage.nodes + sign, usage.bytes + sign * len(record.contents))
            assert usage.nodes >= 0, (record.creator, usage)
            assert usage.bytes >= 0, (record.creator, usage)
            if usage.nodes:
                self._usage[record.creator] = usage
            else:
                assert usage.bytes == 0, (record.creator, usage)
                del self._usage[record.creator]
        involved = {h.session_id for h in record.lock.holders}
        if record.owner_session:
            involved.add(record.owner_session)
        for session_id in involved:
            paths = self._session_paths[session_id]
            if add:
                paths.add(record.path)
            else:
                paths.discard(record.path)

    # ------------------------------------------------------------------------- sessions

    def open_session(self, session: SessionRecord) -> None:
        """Add a new session (its id from `new_instance`)."""
        assert self._journal is None, "sessions change outside MultiOps"
        assert session.session_id not in self._sessions, session
        assert not self._session_ids or session.session_id > self._session_ids[-1], session
        self._sessions[session.session_id] = session
        self._session_ids.append(session.session_id)
        self._session_paths[session.session_id] = set()
        if session.nonce:
            assert (session.name, session.nonce) not in self._nonces, session
            self._nonces[session.name, session.nonce] = session.session_id
        self._sessions_touched.setdefault(session.session_id, False)

    def record_call(self, session_id: SessionId, number: CallNumber, result: WriteResult) -> None:
        """Keep `result` as the answer of the live session's call `number` (see
        `SessionCalls`), at most `limits.session_answers_max` of them."""
        assert self._journal is None, "sessions change outside MultiOps"
        session = self._sessions[session_id]
        calls = session.calls.recorded(number, result, self.limits.session_answers_max)
        self._sessions[session_id] = evolve(session, calls=calls)
        self._sessions_touched.setdefault(session_id, True)

    def close_session(self, session_id: SessionId) -> None:
        """Remove a session that owns and holds nothing any more."""
        assert self._journal is None, "sessions change outside MultiOps"
        assert not self._session_paths[session_id], (session_id, self._session_paths[session_id])
        del self._session_ids[bisect_left(self._session_ids, session_id)]
        del self._session_paths[session_id]
        session = self._sessions.pop(session_id)
        if session.nonce:
            del self._nonces[session.name, session.nonce]
        self._sessions_touched.setdefault(session_id, True)

    # ------------------------------------------------------------------------- atomicity

    def begin(self) -> None:
        """Start journaling changes, so that `rollback` can undo them."""
        assert self._journal is None, "MultiOps do not nest"
        self._journal = []

    def commit(self) -> None:
        """Keep the changes since `begin`."""
        assert self._journal is not None
        self._journal = None

    def rollback(self) -> None:
        """Undo every change since `begin`, newest first."""
        assert self._journal is not None
        for undo in reversed(self._journal):
            if undo.previous is None:
                self._delete(undo.path)
            elif undo.path not in self._nodes:
                self._insert(undo.previous)
            else:
                self._replace(undo.previous)
            if undo.first_touch:
                del self._touched[undo.path]
        self._journal = None

    def take_changes(self) -> NamespaceChanges:
        """The upserts and deletes since the previous call; see the module docstring."""
        assert self._journal is None, "not inside a MultiOp"
        upserts, deletes = [], []
        for path in sorted(self._touched):
            record = self._nodes.get(path)
            if record is not None:
                upserts.append(record)
            elif self._touched[path]:
                deletes.append(path)
        self._touched = {}
        session_upserts, session_deletes = [], []
        for session_id in sorted(self._sessions_touched):
            session = self._sessions.get(session_id)
            if session is not None:
                session_upserts.append(session)
            elif self._sessions_touched[session_id]:
                session_deletes.append(session_id)
        self._sessions_touched = {}
        return NamespaceChanges(
            tuple(upserts), tuple(deletes), tuple(session_upserts), tuple(session_deletes)
        )


def records_problem(
    cell: str, records: Iterable[NodeRecord], sessions: Iterable[SessionRecord] = ()
) -> str | None:
    """Why `records` and `sessions` are not the state of a cell rooted at `cell`'s root, or
    None."""
    live: set[int] = set()
    nonces: set[tuple[str, int]] = set()
    for session in sessions:
        if session.session_id in live:
            return f"two records for session {session.session_id}"
        live.add(session.session_id)
        if session.nonce and (session.name, session.nonce) in nonces:
            return f"two sessions opened by one nonce, {session.session_id} the second"
        nonces.add((session.name, session.nonce))
        problem = session.calls.problem()
        if problem is not None:
            return f"session {session.session_id}: {problem}"
    root = cell_root(cell)
    nodes: dict[str, NodeRecord] = {}
    for record in records:
        if record.path in nodes:
            return f"two records for {record.path!r:.80}"
        nodes[record.path] = record
    if root not in nodes or not nodes[root].is_directory or nodes[root].ephemeral:
        return f"no permanent root directory {root}"
    for path, record in nodes.items():
        problem = _record_problem(record) or (None if path == root else _placement(nodes, path))
        problem = problem or _ownership_problem(record, live)
        if problem is not None:
            return f"{path!r:.80}: {problem}"
    return None


def _placement(nodes: dict[str, NodeRecord], path: str) -> str | None:
    parent = nodes.get(parent_of(path))
    if parent is None or not parent.is_directory:
        return "its parent is not a directory of the tree"
    # Every name is checked when it is created; this catches a damaged store or snapshot.
    # Length limits are left out so that a cell whose limits were lowered still loads.
    return component_problem(base_name(path), len(path))


def _ownership_problem(record: NodeRecord, live: set[int]) -> str | None:
    if record.owner_session and (not record.ephemeral or record.is_directory):
        return "owned by a session but not an ephemeral file"
    involved = ({h.session_id for h in record.lock.holders} | {record.owner_session}) - {0}
    if not involved <= live:
        return f"names sessions that do not exist: {sorted(involved - live)}"
    lock = record.lock
    if lock.holders and lock.delay_ms:
        return "a lock both held and in lock-delay"
    if len({h.mode for h in lock.holders}) > 1 or (
        len(lock.holders) > 1 and lock.mode is not LockMode.SHARED
    ):
        return "a lock held in conflicting modes"
    if lock.holders and record.lock_generation == 0:
        return "a held lock whose generation never rose"
    return None


def _record_problem(record: NodeRecord) -> str | None:
    if record.is_directory:
        if record.contents or record.content_generation or record.checksum:
            return "a directory with contents"
    elif record.checksum != contents_checksum(record.contents):
        return "the checksum does not match the contents"
    return None
