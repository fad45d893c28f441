"""The master's queues of blocked lock requests: FIFO per lock, woken without a herd.
Pure: in-memory state of one mastership, rebuilt by clients retrying after a fail-over.

Chubby §2.4 leaves waiting to the implementation; ours keeps the guarantees a demanding
ZooKeeper user expects of its lock recipe, without its herd: a blocked `Acquire` waits in a
FIFO queue per lock (a node instance), and when the lock changes (a release, a session's
end, the end of a lock-delay, all committed through the log) `grantable` hands out exactly
the waiters at the head that can hold the lock together: the first waiter, and after a
shared one every shared waiter directly behind it. The shell proposes an `Acquire` for
each; they are *in flight* until applied, and nothing else is handed out for that lock
meanwhile, so two conflicting grants are never proposed at once. One that loses anyway
(another client's `try_acquire` got in first) goes back to the head with `requeue`.

Each waiter carries the token its caller knows the call by (the master's `CallToken`); the
queues only compare and hand tokens back, so they are generic over the token's type.

A waiter leaves when its call is cancelled (`cancel`: the handle was closed or poisoned,
the call's deadline passed, or its session ended), and every waiter of a lock leaves when
its node is deleted (`drop_lock`). `waiters_max` bounds all queues together; a request past
it is refused (BUSY) rather than growing the master's memory without limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from attrs import frozen

from chubbypy.locks._lock import LockState, conflict
from chubbypy.protocol.namespace import LockMode
from chubbypy.protocol.values import HandleId, SessionId

LockKey = tuple[str, int]
"""A lock: its node's path and instance."""

Token = TypeVar("Token", bound=Hashable)
"""What the caller knows a blocked call by."""


@frozen
class Waiter(Generic[Token]):
    """One blocked `Acquire`: who asks, how, and the caller's token for the call."""

    token: Token
    session_id: SessionId
    handle_id: HandleId
    mode: LockMode
    lock_delay_ms: int = 0


class LockQueues(Generic[Token]):
    """Every blocked lock request of one master; see the module docstring."""

    def __init__(self, waiters_max: int) -> None:
        assert waiters_max >= 1, waiters_max
        self._waiters_max = waiters_max
        self._queues: dict[LockKey, deque[Waiter[Token]]] = {}
        self._where: dict[Token, LockKey] = {}
        self._in_flight: dict[LockKey, set[Token]] = {}
        self._by_session: dict[SessionId, dict[Token, None]] = {}
        """Per session, the tokens of its waiters, in the order they were queued (so that a
        session's end costs its own waiters, not every queue's)."""

    def wait(self, key: LockKey, waiter: Waiter[Token]) -> bool:
        """Queue `waiter` at the tail; False (nothing queued) if the queues are full."""
        assert waiter.token not in self._where, waiter
        if len(self._where) >= self._waiters_max:
            return False
        self._queues.setdefault(key, deque()).append(waiter)
        self._placed(key, waiter)
        return True

    def grantable(self, key: LockKey, state: LockState) -> list[Waiter[Token]]:
        """The waiters at the head that `state` lets hold the lock now, taken off the queue
        and marked in flight; none while earlier grants are in flight."""
        queue = self._queues.get(key)
        if not queue or self._in_flight.get(key) or conflict(state, queue[0].mode) is not None:
            return []
        granted = [queue.popleft()]
        if granted[0].mode is LockMode.SHARED:
            # Readers behind a reader share the lock with it; a writer behind them keeps
            # its turn (later readers do not pass it, so writers never starve).
            while queue and queue[0].mode is LockMode.SHARED:
                granted.append(queue.popleft())
        self._forget_queue_if_empty(key)
        self._in_flight[key] = {w.token for w in granted}
        for waiter in granted:
            self._removed(waiter)
        return granted

    def applied(self, key: LockKey, token: Token) -> None:
        """The grant proposed for `token` was applied (won or lost)."""
        flight = self._in_flight.get(key)
        if flight is not None:
            flight.discard(token)
            if not flight:
                del self._in_flight[key]

    def requeue(self, key: LockKey, waiter: Waiter[Token]) -> None:
        """A grant lost its race: back to the head of the queue (it keeps its turn)."""
        self.applied(key, waiter.token)
        self._queues.setdefault(key, deque()).appendleft(waiter)
        self._placed(key, waiter)

    def cancel(self, token: Token) -> Waiter[Token] | None:
        """Take the waiter of `token` out of its queue; None if it is not waiting."""
        key = self._where.get(token)
        if key is None:
            return None
        queue = self._queues[key]
        waiter = next(w for w in queue if w.token == token)
        queue.remove(waiter)
        self._removed(waiter)
        self._forget_queue_if_empty(key)
        return waiter

    def cancel_handle(
        self, key: LockKey, session_id: SessionId, handle_id: HandleId
    ) -> list[Waiter[Token]]:
        """Take every waiter of one handle on lock `key` out of the queue (it was closed)."""
        mine = [
            w
            for w in self._queues.get(key, ())
            if (w.session_id, w.handle_id) == (session_id, handle_id)
        ]
        for waiter in mine:
            self.cancel(waiter.token)
        return mine

    def cancel_session(self, session_id: SessionId) -> list[Waiter[Token]]:
        """Take every waiter of a session out of every queue (the session ended), in the
        order they were queued."""
        tokens = list(self._by_session.get(session_id, ()))
        return [waiter for token in tokens if (waiter := self.cancel(token)) is not None]

    def drop_lock(self, key: LockKey) -> list[Waiter[Token]]:
        """The node is gone: every waiter of its lock, in order, taken off."""
        queue = self._queues.pop(key, deque())
        self._in_flight.pop(key, None)
        for waiter in queue:
            self._removed(waiter)
        return list(queue)

    def waiting(self, key: LockKey) -> list[Waiter[Token]]:
        """The waiters of `key`, head first."""
        return list(self._queues.get(key, ()))

    def waiting_of(self, session_id: SessionId) -> int:
        """How many waiters the session has, in every queue."""
        return len(self._by_session.get(session_id, ()))

    def __len__(self) -> int:
        return len(self._where)

    def _placed(self, key: LockKey, waiter: Waiter[Token]) -> None:
        self._where[waiter.token] = key
        self._by_session.setdefault(waiter.session_id, {})[waiter.token] = None

    def _removed(self, waiter: Waiter[Token]) -> None:
        del self._where[waiter.token]
        tokens = self._by_session[waiter.session_id]
        del tokens[waiter.token]
        if not tokens:
            del self._by_session[waiter.session_id]

    def _forget_queue_if_empty(self, key: LockKey) -> None:
        if key in self._queues and not self._queues[key]:
            del self._queues[key]
