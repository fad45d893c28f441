"""The client's half of the consistent cache (Chubby §2.5): what a session read and may
keep, and the rules for keeping it. Pure bookkeeping; `Session` decides when it is usable.

Theory of operation.

* A read through the master (`ReadNode`) answered with `cached` means the master registered
  this session as a cacher of the name: it will send an INVALIDATE event, and wait for it to
  be acknowledged, before it lets the name change. Until then the entry (contents and stat,
  or the name's absence) is as fresh as the master's own copy.
* The session drops an entry when an INVALIDATE for its name arrives, *before* its next
  KeepAlive acknowledges the event; that acknowledgement is what lets the change proceed.
* A read's answer and an invalidation can cross (they may travel on different connections
  after a reconnect). Every answer carries the session's next event number at the time
  (`event_sequence`): an invalidation of the name numbered at or above it is about a later
  change, so an answer that arrives after such an invalidation is used once, not kept.
* `flush` empties the cache (jeopardy, a master fail-over event, the session's end); an
  answer to a read sent before a flush is not kept either.
"""

from __future__ import annotations

from attrs import frozen

from chubbypy.protocol.namespace import Stat


@frozen
class CachedNode:
    stat: Stat | None
    """None: the name is known to be absent."""
    contents: bytes


class ClientCache:
    """One session's cache of nodes; see the module docstring."""

    def __init__(self) -> None:
        self._entries: dict[str, CachedNode] = {}
        self._reading: dict[str, int] = {}
        """Reads outstanding per name."""
        self._invalidated: dict[str, int] = {}
        """The highest INVALIDATE number seen for a name while reads of it were outstanding."""
        self._flushes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path: str) -> CachedNode | None:
        node = self._entries.get(path)
        if node is None:
            self.misses += 1
        else:
            self.hits += 1
        return node

    def reading(self, path: str) -> int:
        """A read of `path` is being sent; pass what this returns to `read_done`."""
        self._reading[path] = self._reading.get(path, 0) + 1
        return self._flushes

    def read_done(
        self,
        path: str,
        started: int,
        node: CachedNode | None,
        *,
        cached: bool,
        event_sequence: int,
        usable: bool,
    ) -> None:
        """The read of `path` begun with `started` ended: its answer `node` (None: it
        failed), kept if the master registered it (`cached`), no invalidation or flush
        overtook it, and the cache is `usable` now."""
        late = self._invalidated.get(path, 0)
        count = self._reading[path] - 1
        if count:
            self._reading[path] = count
        else:
            del self._reading[path]
            self._invalidated.pop(path, None)
        fresh = started == self._flushes and late < event_sequence
        if node is not None and cached and fresh and usable:
            self._entries[path] = node

    def invalidate(self, path: str, sequence: int) -> None:
        """The master's INVALIDATE numbered `sequence`: drop `path`."""
        self._entries.pop(path, None)
        if path in self._reading:
            self._invalidated[path] = max(self._invalidated.get(path, 0), sequence)

    def flush(self) -> None:
        """Forget everything, and every answer to a read sent before now."""
        self._entries.clear()
        self._flushes += 1
