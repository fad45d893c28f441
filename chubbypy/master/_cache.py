"""The master's half of the consistent cache (Chubby §2.5): who caches what, and the gate
every change to the namespace passes before it is proposed. Pure.

Theory of operation.

* **Cachers.** A session that reads a node through the master may cache what it read
  (contents, metadata, or the node's absence) if the master *registers* it as a cacher of
  that name (`register`). The master then owes it an invalidation before that name changes.
  A session caches at most `names_per_session_max` names
  (``limits.cached_names_per_session_max``): past it a read is answered, not registered
  (`full`), and the client does not keep it, so one session cannot grow the master's
  memory without bound by reading name after name. A name's invalidation, or the
  session's end, frees its place.
* **The gate.** Every write bound for the log, a client's or the master's own, is
  `submit`ted. When it is *activated*, the gate works out from the namespace as it is then
  the names it *touches* (whose order matters) and the names it *changes* (whose cached
  copies it makes stale; see `write_paths`); every session caching a changed name is sent
  an INVALIDATE event (queued in the `SessionTable`, delivered with its KeepAlive) and
  the write waits until that session acknowledges the event (its next KeepAlive) or its
  lease is over; only then is it released, to be proposed. The writer
  hears back once it was applied, so a write completes only after every cached copy it
  makes stale was dropped.
* **Busy names.** From activation until the write has *landed* (applied, or refused by the
  log), its touched names are busy: a read of a busy name is answered but not registered,
  so no client caches a value about to change (Chubby: "reads of uncached nodes during
  that wait go to the master without being cached").
* **Order.** Writes that touch a common name are released in submission order; others
  pass a held one, so one slow client delays only the writes to what it caches, never the
  whole cell.
* **A session's end** deletes its ephemeral nodes, which are known only once the session's
  earlier writes (its creates) have landed: an `EndSession` is activated, and its names
  computed, only then (`session` barrier).
* **Fail-over.** A new master does not know who cached what from its predecessor; every
  session got a fail-over event that flushes its cache. Until every session acknowledged
  it or its lease is over (`failover_complete`), no write that touches a name is released
  and nothing is registered.

The gate is given its collaborators, never a callback into its owner: the session table
it queues invalidations in (at construction), and the namespace tree to work the names out
from (with each call that may activate a write).
"""

from __future__ import annotations

from typing import Generic, TypeVar, assert_never

from attrs import define, field

from chubbypy.master._ids import CallToken, GateTicket
from chubbypy.namespace import Tree
from chubbypy.namespace._names import parent_of
from chubbypy.protocol import SessionId
from chubbypy.protocol.namespace import (
    Acquire,
    Create,
    Delete,
    EndLockDelay,
    EndSession,
    InSession,
    LogWrite,
    MultiOp,
    OpenSession,
    Release,
    SetAcl,
    SetContents,
)
from chubbypy.protocol.session import EventKind
from chubbypy.sessions import SessionTable

_P = TypeVar("_P")

UNTIL_ENDED = -1
"""What a write waits for when only the session's end will do (it is refused, for
falling behind or because an operator ended it, its lease still running:
`SessionTable.awaits_expiry`)."""

Paths = tuple[frozenset[str], frozenset[str]]
"""A write's (touched, changed) names; see `write_paths`."""


@define
class _Item(Generic[_P]):
    payload: _P
    write: LogWrite
    touched: frozenset[str] | None
    """None until activated."""
    session: SessionId | None = None
    """A session's writes: an EndSession is activated after the earlier ones landed."""
    ends_session: bool = False
    waits: dict[SessionId, int] = field(factory=dict)
    """Session -> the event sequence it must acknowledge (or UNTIL_ENDED)."""


class CacheGate(Generic[_P]):
    """Cachers, and the writes waiting on their invalidations; see the module docstring.
    `_P` is what `submit` takes and `release` gives back for each write."""

    def __init__(self, table: SessionTable[CallToken], names_per_session_max: int) -> None:
        assert names_per_session_max >= 0, names_per_session_max
        self._table = table
        self._names_per_session_max = names_per_session_max
        self._cachers: dict[str, set[SessionId]] = {}
        self._cached: dict[SessionId, set[str]] = {}
        self._held: dict[GateTicket, _Item[_P]] = {}
        """Not released yet, in submission order."""
        self._flying: dict[GateTicket, _Item[_P]] = {}
        """Released, not landed yet."""
        self._busy: dict[str, int] = {}
        """Per name, the activated writes touching it that have not landed."""
        self._waiting_on: dict[SessionId, set[GateTicket]] = {}
        """Per session, the held writes that wait for it (the inverse of `_Item.waits`)."""
        self._session_writes: dict[SessionId, int] = {}
        """Per session, its writes (not its end) submitted and not landed."""
        self._changed = True
        """Something happened since `release` last looked that may let a write go."""
        self._failover_complete = False

    @property
    def failover_complete(self) -> bool:
        return self._failover_complete

    @failover_complete.setter
    def failover_complete(self, complete: bool) -> None:
        self._changed |= complete != self._failover_complete
        self._failover_complete = complete

    # ------------------------------------------------------------------------- caching

    def may_cache(self, path: str) -> bool:
        return self.failover_complete and path not in self._busy

    def full(self, session_id: SessionId, path: str) -> bool:
        """Whether the session caches as many names as it may, `path` not among them."""
        cached = self._cached.get(session_id, ())
        return len(cached) >= self._names_per_session_max and path not in cached

    def register(self, session_id: SessionId, path: str) -> bool:
        """Record that the session caches `path`, if it may; whether it was recorded."""
        if not self.may_cache(path) or self.full(session_id, path):
            return False
        self._cachers.setdefault(path, set()).add(session_id)
        self._cached.setdefault(session_id, set()).add(path)
        return True

    @property
    def cached_names(self) -> int:
        """(session, name) pairs registered: the master's cost of the cache."""
        return sum(len(paths) for paths in self._cached.values())

    def cached_by(self, session_id: SessionId) -> int:
        """Names registered as cached by the session."""
        return len(self._cached.get(session_id, ()))

    @property
    def held(self) -> int:
        """Writes waiting for invalidations (or their turn)."""
        return len(self._held)

    # ------------------------------------------------------------------------- writes

    def submit(
        self,
        ticket: GateTicket,
        payload: _P,
        write: LogWrite,
        tree: Tree,
        *,
        session: SessionId | None = None,
        ends_session: bool = False,
    ) -> None:
        """A write bound for the log; `payload` comes out of `release` when it may go.
        `session`: the session whose write it is (see the module docstring); `tree`: the
        namespace now."""
        assert ticket not in self._held, ticket
        assert ticket not in self._flying, ticket
        item = _Item(payload, write, None, session=session, ends_session=ends_session)
        self._held[ticket] = item
        self._changed = True
        if session is not None and not ends_session:
            self._session_writes[session] = self._session_writes.get(session, 0) + 1
        if not (ends_session and self._session_writes_pending(session)):
            self._activate(ticket, item, tree)

    def acked(self, session_id: SessionId, acked_through: int) -> None:
        """The session acknowledged its events up to `acked_through`."""
        waiting = self._waiting_on.get(session_id, set())
        for ticket in list(waiting):
            waits = self._held[ticket].waits
            due = waits[session_id]
            if due != UNTIL_ENDED and due <= acked_through:
                del waits[session_id]
                waiting.discard(ticket)
                self._changed = True
        if not waiting:
            self._waiting_on.pop(session_id, None)

    def session_gone(self, session_id: SessionId) -> None:
        """The session's lease is over, or it closed: its cache is void."""
        for path in self._cached.pop(session_id, ()):
            cachers = self._cachers[path]
            cachers.discard(session_id)
            if not cachers:
                del self._cachers[path]
        for ticket in self._waiting_on.pop(session_id, ()):
            del self._held[ticket].waits[session_id]
            self._changed = True

    def landed(self, ticket: GateTicket) -> None:
        """The write `ticket` was applied, or will never be: its names are free."""
        item = self._flying.pop(ticket, None)
        if item is None:
            return
        self._changed = True
        if item.session is not None and not item.ends_session:
            count = self._session_writes[item.session] - 1
            if count:
                self._session_writes[item.session] = count
            else:
                del self._session_writes[item.session]
        if item.touched is None:
            return
        for path in item.touched:
            count = self._busy[path] - 1
            if count:
                self._busy[path] = count
            else:
                del self._busy[path]

    def release(self, tree: Tree) -> list[_P]:
        """The payloads that may be proposed now, in submission order; `tree`: the
        namespace now. (It looks at the held writes only if something happened since it
        last did that may let one go: it is asked after every input.)"""
        if not self._changed:
            return []
        self._changed = False
        released = []
        blocked: set[str] = set()
        for ticket, item in list(self._held.items()):
            if item.touched is None:
                if self._session_writes_pending(item.session):
                    continue
                self._activate(ticket, item, tree)
            assert item.touched is not None
            ready = not item.waits and (self.failover_complete or not item.touched)
            if ready and not (item.touched & blocked):
                del self._held[ticket]
                self._flying[ticket] = item
                released.append(item.payload)
            else:
                blocked |= item.touched
        return released

    # ------------------------------------------------------------------------- helpers

    def _activate(self, ticket: GateTicket, item: _Item[_P], tree: Tree) -> None:
        touched, changed = write_paths(tree, item.write)
        item.touched = touched | changed
        for path in item.touched:
            self._busy[path] = self._busy.get(path, 0) + 1
        for path in changed:
            for session_id in self._cachers.pop(path, ()):
                self._uncache(session_id, path)
                due = self._invalidate(session_id, path)
                if due is not None:
                    item.waits[session_id] = _later(item.waits.get(session_id), due)
                    self._waiting_on.setdefault(session_id, set()).add(ticket)

    def _uncache(self, session_id: SessionId, path: str) -> None:
        """The session no longer caches `path` (its set goes once it names nothing)."""
        cached = self._cached[session_id]
        cached.discard(path)
        if not cached:
            del self._cached[session_id]

    def _invalidate(self, session_id: SessionId, path: str) -> int | None:
        """Tell the session to drop `path` from its cache: the event's sequence number to
        await, UNTIL_ENDED, or None when there is nothing to await (the session is gone)."""
        sequence = self._table.push(session_id, EventKind.INVALIDATE, path)
        if sequence is not None:
            return sequence
        return UNTIL_ENDED if self._table.awaits_expiry(session_id) else None

    def _session_writes_pending(self, session: SessionId | None) -> bool:
        """Whether a write of `session` (not its end) was submitted and has not landed.
        (Its end waits for them all: once a session ends, none is submitted after it.)"""
        return session is not None and session in self._session_writes


def _later(current: int | None, due: int) -> int:
    if current == UNTIL_ENDED or due == UNTIL_ENDED:
        return UNTIL_ENDED
    return due if current is None else max(current, due)


def write_paths(tree: Tree, write: LogWrite) -> Paths:
    """The names `write` touches (whose order matters: every name it mentions) and those
    it changes (whose cached copy it makes stale: the node, and for a creation or deletion
    its parent, whose child count changes), in `tree` as it is now. A lock's release
    changes no metadata; a grant may raise the lock generation."""
    match write:
        case Create(path) | Delete(path):
            both = frozenset((path, parent_of(path)))
            return both, both
        case SetContents(path) | SetAcl(path) | Acquire(path=path):
            return frozenset((path,)), frozenset((path,))
        case MultiOp(_, if_true, if_false):
            touched: frozenset[str] = frozenset()
            for inner in (*if_true, *if_false):
                touched |= write_paths(tree, inner)[0]
            return touched, touched
        case InSession(_, inner):
            return write_paths(tree, inner)
        case Release(path=path) | EndLockDelay(path=path):
            return frozenset((path,)), frozenset()
        case EndSession(session_id):
            return _session_end_paths(tree, session_id)
        case OpenSession():
            return frozenset(), frozenset()
        case unexpected:
            assert_never(unexpected)


def _session_end_paths(tree: Tree, session_id: SessionId) -> Paths:
    """An EndSession deletes the session's ephemeral nodes and frees its locks."""
    touched: set[str] = set()
    changed: set[str] = set()
    for path in tree.session_paths(session_id):
        node = tree.get(path)
        touched.add(path)
        if node is not None and node.owner_session == session_id:
            changed.update((path, parent_of(path)))
    return frozenset(touched | changed), frozenset(changed)
