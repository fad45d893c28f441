"""The master's lock waits (Chubby §2.4): acquires in progress, blocked ones in their
queues, the bounds on their waits, and lock-delay timers. Pure: memory of one mastership,
driven by the service's calls and its clock.

Theory of operation.

* **Acquires in progress.** An acquire the service proposes at once is *pending*
  (`proposed`) until its grant is applied (`applied`, which hands its call back to be
  answered). One that cannot succeed now and may wait is *queued* on its lock (`wait`) and
  pending too: a `chubbypy.locks.LockQueues` FIFO per lock, which wakes no herd. Whenever
  the lock may have changed, the service asks `grantable` for the acquires to propose now;
  a grant that loses its race goes back to the head of the queue (`requeue`).
* **Bounded waits.** A queued acquire whose caller gave a bound *ends* at a tick:
  `waits_ended` withdraws it then if it is still queued, and names it to be refused. (The
  end outlives a call answered earlier; passing, it then does nothing.)
* **Leaving early.** A queued acquire leaves when its call is cancelled (`cancel`), its
  handle closed or poisoned (`cancel_handle`), its session ended (`cancel_session`), or
  its node deleted (`drop_lock`, which also stops that lock's delay timer). A grant
  already proposed is not withdrawn: it applies, and is answered.
* **Lock-delay timers.** A lock whose holder's session expired is in lock-delay until the
  log applies `EndLockDelay`; its timer (`delay`) ends at a tick, when `delays_ended`
  names the lock and the service proposes that command.

Every answer is a value (the tokens of the calls to answer, the acquires to propose, the
locks whose delay ended): this class never replies, proposes or reads the namespace.

Invariant: every queued token is pending, with the call it was queued for; a handle has at
most one acquire pending (`in_progress`: a retry joins it rather than queue twice).
"""

from __future__ import annotations

from attrs import evolve, field, frozen

from chubbypy.locks import LockKey, LockQueues, LockState, Waiter
from chubbypy.master._ids import CallToken
from chubbypy.protocol import HandleId, SessionId
from chubbypy.protocol.namespace import Acquire, LockMode
from chubbypy.sessions import Handle


@frozen
class AcquireCall:
    """One acquire in progress: the handle asking, the mode it asks for, and whether it may
    wait in the queue (a blocking Acquire) or is refused when it cannot have the lock now."""

    handle: Handle
    mode: LockMode
    wait: bool
    queued_at: int | None = field(default=None, eq=False)
    """The tick it was first queued at (None until then): a grant that lost its race goes
    back to the head of the queue with it, so operators see how long it has waited. (Not
    part of what the call is: the same acquire, queued or not, is equal.)"""

    @property
    def key(self) -> LockKey:
        """The lock it asks for: its handle's node, of the instance the handle names."""
        return self.handle.path, self.handle.instance

    def command(self) -> Acquire:
        """The log command that grants it, if it still can when applied."""
        handle = self.handle
        return Acquire(handle.session_id, handle.handle_id, handle.path, handle.instance,
                       self.mode, handle.lock_delay_ms)  # fmt: skip


class LockWaits:
    """Every lock wait of one mastership; see the module docstring."""

    def __init__(self, waiters_max: int) -> None:
        self._queues: LockQueues[CallToken] = LockQueues(waiters_max)
        self._pending: dict[CallToken, AcquireCall] = {}
        self._by_handle: dict[tuple[SessionId, HandleId], CallToken] = {}
        """The pending acquire of each handle that has one (one at a time)."""
        self._wait_ends: dict[CallToken, tuple[int, int]] = {}
        """Per bounded wait: the tick it ends at, and the bound in ticks."""
        self._delays: dict[LockKey, int] = {}
        """Per lock in lock-delay: the tick its delay ends at on this master's clock."""

    # ------------------------------------------------------------------------- acquires

    def proposed(self, token: CallToken, call: AcquireCall) -> None:
        """The service proposed `call`'s grant at once: it is pending until applied."""
        self._add(token, call)

    def wait(self, token: CallToken, call: AcquireCall, now: int, wait_ticks: int | None) -> bool:
        """Queue `call` at the tail of its lock's queue, waiting at most `wait_ticks` from
        tick `now` if given; False (nothing queued) if the queues are full."""
        if not self._queues.wait(call.key, _waiter(token, call)):
            return False
        self._add(token, call if call.queued_at is not None else evolve(call, queued_at=now))
        if wait_ticks is not None:
            self._wait_ends[token] = (now + wait_ticks, wait_ticks)
        return True

    def in_progress(self, handle: Handle) -> tuple[CallToken, AcquireCall] | None:
        """The acquire of `handle` in progress (queued, or its grant proposed), if any."""
        token = self._by_handle.get((handle.session_id, handle.handle_id))
        return None if token is None else (token, self._pending[token])

    def queued_of(self, session_id: SessionId) -> int:
        """The session's acquires queued for their locks."""
        return self._queues.waiting_of(session_id)

    def has_waiters(self, key: LockKey) -> bool:
        """Whether acquires wait for the lock (a new one must not pass them)."""
        return bool(self._queues.waiting(key))

    def queued(self, key: LockKey) -> list[AcquireCall]:
        """The acquires queued for the lock, head first (the next to be granted)."""
        return [self._pending[waiter.token] for waiter in self._queues.waiting(key)]

    def grantable(self, key: LockKey, lock: LockState) -> list[tuple[CallToken, Acquire]]:
        """The queued acquires that `lock`, the lock's state now, lets have it: taken off
        the queue, their grants to be proposed (none while earlier grants are in flight)."""
        granted = []
        for waiter in self._queues.grantable(key, lock):
            call = self._pending[waiter.token]
            granted.append((waiter.token, call.command()))
        return granted

    def applied(self, token: CallToken) -> AcquireCall | None:
        """The grant proposed for `token` was applied, won or lost: its call, no longer
        pending (None if the token is no acquire of this master's)."""
        call = self._drop(token)
        if call is not None:
            self._queues.applied(call.key, token)
        return call

    def requeue(self, token: CallToken, call: AcquireCall, now: int) -> None:
        """The grant lost a race: back to the head of the queue, and pending again (queued
        since tick `now` if it had not waited before)."""
        self._queues.requeue(call.key, _waiter(token, call))
        self._add(token, call if call.queued_at is not None else evolve(call, queued_at=now))

    # ------------------------------------------------------------------------- leaving

    def cancel(self, token: CallToken) -> bool:
        """Withdraw the acquire `token` if it is queued; whether it was."""
        if self._queues.cancel(token) is None:
            return False
        self._drop(token)
        return True

    def cancel_handle(self, handle: Handle) -> list[CallToken]:
        """Withdraw every queued acquire of `handle` (closed or poisoned)."""
        key = (handle.path, handle.instance)
        waiters = self._queues.cancel_handle(key, handle.session_id, handle.handle_id)
        return self._forget(waiters)

    def cancel_session(self, session_id: SessionId) -> list[CallToken]:
        """Withdraw every queued acquire of the session (it ended)."""
        return self._forget(self._queues.cancel_session(session_id))

    def drop_lock(self, key: LockKey) -> list[CallToken]:
        """The lock's node is gone: withdraw its queued acquires, in order, and stop its
        delay timer."""
        self._delays.pop(key, None)
        return self._forget(self._queues.drop_lock(key))

    # ------------------------------------------------------------------------- the clock

    def waits_ended(self, now: int) -> list[tuple[CallToken, int]]:
        """The queued acquires whose bound has passed at tick `now`, withdrawn: each token
        with the bound it asked for, in the order they were queued."""
        ended = []
        for token, (end, ticks) in list(self._wait_ends.items()):
            if end <= now:
                del self._wait_ends[token]
                if self.cancel(token):
                    ended.append((token, ticks))
        return ended

    def delay(self, key: LockKey, end: int) -> None:
        """The lock is in lock-delay until tick `end`."""
        self._delays[key] = end

    def delay_end(self, key: LockKey) -> int | None:
        """The tick the lock's delay ends at, if it is in lock-delay on this master's clock
        (None once ended, its `EndLockDelay` on its way)."""
        return self._delays.get(key)

    def delays_ended(self, now: int) -> list[LockKey]:
        """The locks whose delay has passed at tick `now` (each named once)."""
        ended = [key for key, end in self._delays.items() if end <= now]
        for key in ended:
            del self._delays[key]
        return ended

    # ------------------------------------------------------------------------- helpers

    def _forget(self, waiters: list[Waiter[CallToken]]) -> list[CallToken]:
        tokens = [waiter.token for waiter in waiters]
        for token in tokens:
            self._drop(token)
        return tokens

    def _add(self, token: CallToken, call: AcquireCall) -> None:
        handle = (call.handle.session_id, call.handle.handle_id)
        assert self._by_handle.get(handle, token) == token, (handle, token)
        self._pending[token] = call
        self._by_handle[handle] = token

    def _drop(self, token: CallToken) -> AcquireCall | None:
        call = self._pending.pop(token, None)
        if call is not None:
            del self._by_handle[call.handle.session_id, call.handle.handle_id]
        return call


def _waiter(token: CallToken, call: AcquireCall) -> Waiter[CallToken]:
    handle = call.handle
    return Waiter(token, handle.session_id, handle.handle_id, call.mode, handle.lock_delay_ms)
