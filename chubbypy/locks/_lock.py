"""The lock of one node: who holds it, in which mode, and whether it is in lock-delay. Pure.

Chubby §2.4. Every file and directory is an advisory reader/writer lock: one handle holds it
exclusive (writer), or any number of handles hold it shared (reader). A lock is held by a
*handle* within a *session*, so a holder is the pair (session, handle). The lock state is
part of the node's replicated record (`chubbypy.namespace.NodeRecord.lock`): every change is
a committed log command, so holders outlive the master that granted them.

Theory of operation. `acquire`, `release` and `session_ended` are pure functions from a
`LockState` to the next one (or to a `Failure`); the namespace applies them inside log
commands and raises the node's lock generation whenever `acquire` turns a free lock into a
held one (`Granted.newly_held`).

* **Conflicts.** Exclusive conflicts with any holder; shared conflicts with an exclusive
  holder. A handle holds a lock at most once: acquiring again through the same handle is
  refused (LOCK_HELD), as is acquiring in a lock-delay (LOCK_DELAYED).
* **Release** frees the lock at once (no lock-delay): the holder let go on purpose.
* **Lock-delay.** When a session *expires* (not when it is closed), its holds are dropped,
  and if that leaves the lock free it stays unavailable for the longest lock-delay its
  holders chose (`delay_ms`). The delay's end is decided by the master's clock, which the
  state machine does not have, so it is a command of its own (`end_delay`) that the master
  proposes once the delay has passed; a new master restarts the whole delay, which is only
  ever longer, never shorter (the protection servers without sequencers rely on).

Waiters are not here: a blocked `Acquire` waits in the master's memory (a FIFO per lock)
and is proposed when it can succeed, so the log only ever sees attempts that are expected
to win; one that loses a race gets LOCK_HELD and goes back to the queue.
"""

from __future__ import annotations

from attrs import evolve, frozen

from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import LockMode
from chubbypy.protocol.values import HandleId, SessionId

LOCK_DELAY_MS_MAX = 60_000
"""Chubby's bound on a lock-delay (one minute), so a faulty client cannot hold a resource
hostage for long."""


@frozen(order=True)
class Holder:
    """One hold on a lock: the session and handle that hold it, and how.

    `lock_delay_ms` is the handle's lock-delay, chosen at open (at most LOCK_DELAY_MS_MAX):
    how long the lock stays unavailable if this session expires while holding it.
    """

    session_id: SessionId
    handle_id: HandleId
    mode: LockMode
    lock_delay_ms: int = 0


@frozen
class LockState:
    """A node's lock: its holders in (session, handle) order, and its lock-delay.

    `delay_ms` > 0 means the lock is free of holders but in lock-delay after its last
    holder's session expired; it is unavailable until `end_delay` is applied.
    """

    holders: tuple[Holder, ...] = ()
    delay_ms: int = 0

    @property
    def mode(self) -> LockMode | None:
        """The mode it is held in; None if free."""
        return self.holders[0].mode if self.holders else None

    @property
    def is_free(self) -> bool:
        """No holder and no lock-delay: an acquire in either mode would succeed."""
        return not self.holders and not self.delay_ms

    def holder(self, session_id: SessionId, handle_id: HandleId) -> Holder | None:
        """The hold of `(session_id, handle_id)`, if it holds this lock."""
        return next(
            (h for h in self.holders if (h.session_id, h.handle_id) == (session_id, handle_id)),
            None,
        )

    def held_by_session(self, session_id: SessionId) -> bool:
        return any(h.session_id == session_id for h in self.holders)


FREE = LockState()


@frozen
class Granted:
    """A successful acquire: the lock's next state, and whether it was free before (so the
    node's lock generation rises)."""

    state: LockState
    newly_held: bool


def conflict(state: LockState, mode: LockMode) -> Failure | None:
    """Why acquiring `state` in `mode` would fail now (ignoring who asks), or None."""
    if state.delay_ms:
        return Failure(
            ErrorCode.LOCK_DELAYED,
            f"the lock is in lock-delay ({state.delay_ms} ms after its holder's session expired)",
        )
    held = state.mode
    if held is None or (held is LockMode.SHARED and mode is LockMode.SHARED):
        return None
    return Failure(ErrorCode.LOCK_HELD, f"the lock is held {held.name.lower()}")


def acquire(state: LockState, holder: Holder) -> Granted | Failure:
    """`holder` takes the lock, if that does not conflict; see the module docstring."""
    assert 0 <= holder.lock_delay_ms <= LOCK_DELAY_MS_MAX, holder
    if state.holder(holder.session_id, holder.handle_id) is not None:
        return Failure(ErrorCode.LOCK_HELD, "this handle already holds the lock")
    refused = conflict(state, holder.mode)
    if refused is not None:
        return refused
    holders = tuple(sorted((*state.holders, holder)))
    return Granted(LockState(holders), newly_held=not state.holders)


def release(state: LockState, session_id: SessionId, handle_id: HandleId) -> LockState | Failure:
    """The handle lets go: the lock is free at once if it was the last holder."""
    if state.holder(session_id, handle_id) is None:
        return Failure(ErrorCode.LOCK_NOT_HELD, "this handle does not hold the lock")
    kept = tuple(h for h in state.holders if (h.session_id, h.handle_id) != (session_id, handle_id))
    return evolve(state, holders=kept)


def session_ended(state: LockState, session_id: SessionId, *, expired: bool) -> LockState:
    """Drop every hold of `session_id`. If it expired and that frees the lock, the lock
    enters lock-delay for the longest delay those holds chose."""
    dropped = [h for h in state.holders if h.session_id == session_id]
    if not dropped:
        return state
    kept = tuple(h for h in state.holders if h.session_id != session_id)
    delay_ms = 0
    if expired and not kept:
        delay_ms = max(h.lock_delay_ms for h in dropped)
    return LockState(kept, delay_ms)


def end_delay(state: LockState) -> LockState:
    """The lock-delay is over: the lock is free (if it was still in the delay)."""
    return evolve(state, delay_ms=0) if state.delay_ms else state
