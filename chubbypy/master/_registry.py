"""The handles one mastership knows (Chubby §2.3, §2.6, §2.9). Pure: memory of one
mastership, which clients rebuild by using their handles after a fail-over.

Theory of operation. A handle is a value its client holds (`chubbypy.sessions.Handle`, its
check digits proving a master made it); nothing about it is in the log. The master
remembers the handles it made, and those of earlier masters that clients have used since
it took over (`remember`), for three uses:

* **Events.** An applied change of a node is pushed to the sessions whose handles on that
  name asked for it: `on_path` lists them, `get` finds a lock holder's.
* **Refusal.** A handle closed (`close`) or poisoned (`poison`) in this mastership is
  refused for the rest of it (`is_closed`). Closing also forgets the handle; a poisoned
  one stays known, still hears its events, and keeps a lock it holds until it is closed.
  A handle this master made is refused once it is no longer known (closed, or its
  session ended: the caller checks the session first), so closing one costs no memory;
  only the ids of earlier masters' handles closed here, and of poisoned ones, are kept
  (issue 13: opening and closing handles in a loop must not grow the master's memory).
* **Operators' listings.** `count` says how many handles a session has open.

When a session ends, its handles are forgotten but not refused (`session_ended`): a handle
of an ended session fails SESSION_EXPIRED anyway, and must keep saying so (§2.8's
stickiness).

Handle ids come from `new_id`: the master of epoch e numbers its handles e·2**32 + n
(`chubbypy.sessions.handle_id_for`), so the handles of different masters never share an
id, and lock holders, recorded by handle id, are never confused across a fail-over.

Invariant: a remembered handle is indexed under its path and under its session, and the
indexes name only remembered handles; `remember` and `_forget` are the only places that
change the three together.
"""

from __future__ import annotations

from typing import TypeVar

from chubbypy.protocol import HandleId, SessionId
from chubbypy.sessions import Handle, handle_epoch, handle_id_for

_K = TypeVar("_K")


class HandleRegistry:
    """The handles this mastership knows; see the module docstring."""

    def __init__(self) -> None:
        self._handles: dict[HandleId, Handle] = {}
        self._by_path: dict[str, set[HandleId]] = {}
        self._by_session: dict[SessionId, set[HandleId]] = {}
        self._refused: set[HandleId] = set()
        """Poisoned, or made by an earlier master and closed here: refused until this
        mastership ends. (This master's own closed handles are refused by not being
        known; see the module docstring.)"""
        self._made = 0
        self._epoch: int | None = None
        """The epoch of this master's handles (set when it makes its first)."""

    def new_id(self, epoch: int) -> HandleId:
        """The id of the next handle this master (of `epoch`) makes."""
        assert self._epoch in (None, epoch), (self._epoch, epoch)
        self._epoch = epoch
        handle_id = handle_id_for(epoch, self._made)
        self._made += 1
        return handle_id

    def made_here(self, handle_id: HandleId) -> bool:
        """Whether this master made the handle (it names this master's epoch)."""
        return self._epoch is not None and handle_epoch(handle_id) == self._epoch

    # ------------------------------------------------------------------------- changes

    def remember(self, handle: Handle) -> None:
        """Know `handle` (made here, or by an earlier master and used now)."""
        if handle.handle_id in self._handles:
            return
        self._handles[handle.handle_id] = handle
        self._by_path.setdefault(handle.path, set()).add(handle.handle_id)
        self._by_session.setdefault(handle.session_id, set()).add(handle.handle_id)

    def close(self, handle: Handle) -> None:
        """The client closed `handle`: forget it, and refuse it from now on."""
        if self.made_here(handle.handle_id):
            self._refused.discard(handle.handle_id)  # refused by not being known
        else:
            self._refused.add(handle.handle_id)
        self._forget(handle.handle_id)

    def poison(self, handle_id: HandleId) -> None:
        """Refuse the handle from now on, without forgetting it (Chubby's Poison)."""
        if handle_id in self._handles or not self.made_here(handle_id):
            self._refused.add(handle_id)

    def session_ended(self, session_id: SessionId) -> None:
        """Forget every handle of the session (not refused: see the module docstring)."""
        for handle_id in list(self._by_session.get(session_id, ())):
            self._forget(handle_id)
            if self.made_here(handle_id):
                self._refused.discard(handle_id)

    # ------------------------------------------------------------------------- queries

    def is_closed(self, handle_id: HandleId) -> bool:
        """Whether the handle is refused: closed or poisoned in this mastership (or, for
        one this master made, its session ended: check the session first)."""
        if handle_id in self._refused:
            return True
        return self.made_here(handle_id) and handle_id not in self._handles

    @property
    def refused_kept(self) -> int:
        """Ids kept only to refuse them (poisoned, or earlier masters' closed here)."""
        return len(self._refused)

    def get(self, handle_id: HandleId) -> Handle | None:
        return self._handles.get(handle_id)

    def on_path(self, path: str) -> list[Handle]:
        """The known handles on the name `path` (of any instance of its node)."""
        return [self._handles[handle_id] for handle_id in self._by_path.get(path, ())]

    def count(self, session_id: SessionId) -> int:
        """How many known handles the session has."""
        return len(self._by_session.get(session_id, ()))

    def __len__(self) -> int:
        return len(self._handles)

    # ------------------------------------------------------------------------- helpers

    def _forget(self, handle_id: HandleId) -> None:
        handle = self._handles.pop(handle_id, None)
        if handle is None:
            return
        _discard(self._by_path, handle.path, handle_id)
        _discard(self._by_session, handle.session_id, handle_id)


def _discard(index: dict[_K, set[HandleId]], key: _K, handle_id: HandleId) -> None:
    """Take `handle_id` out of `index[key]`, and the key out once it names no handle."""
    ids = index[key]
    ids.discard(handle_id)
    if not ids:
        del index[key]
