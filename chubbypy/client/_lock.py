"""Holding a lock for a block of code, with its sequencer and a signal if it is lost.

Shell (STYLE §6). `Cell.lock(path)` makes a `Lock`; ``async with cell.lock(path) as held``
(in a coroutine run by ``Deferred.fromCoroutine``) acquires it before the body runs and
lets it go after. The traps this avoids (Chubby §2.4; kazoo and python-etcd3 users know
them):

* **The body never runs without the lock.** If the lock is not acquired within `timeout`,
  `LockTimeout` is raised and the body is skipped (a timeout of 0 tries once, as Chubby's
  TryAcquire, and fails at once if the lock is held or delayed); so is it when the session
  has expired or the file is missing and not to be created.
* **Fencing.** `held.sequencer` names this acquisition: hand it to the servers the lock
  protects, which check it (`Cell.check_sequencer`) or fence writes with it
  (`Handle.set_sequencer`), so a holder that lost the lock without knowing cannot harm
  them (§2.4).
* **A lost lock is signalled.** The session expiring, or the file being deleted, while the
  body runs fires `held.lost` (and `held.on_lost` callbacks) with a `LockLost`; after a
  master fail-over the lock is checked again. The body cannot be stopped from outside, so
  when it ends normally after a loss, the exit raises that `LockLost`: work done under a
  lost lock is never reported as done under it. In *jeopardy* (the master out of reach,
  the session not yet lost) `held.in_jeopardy` is True: work needing the lock should wait.
  Jeopardy begins when this client's view of the session lease ends, which is no later
  than the master's; the master may then expire the session and, after the lock-delay,
  hand the lock to another. So a lock whose session is still in jeopardy a lock-delay
  after jeopardy began is counted as lost (at once with no lock-delay): give a lock-delay
  (`lock_delay_seconds`, at most 60 s) to ride out a master fail-over that takes longer
  than the lease.
* **Letting go.** Leaving the block releases the lock (closing its handle), whatever the
  body raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from chubbypy.client._errors import LockLost, LockTimeout
from chubbypy.client._session import Handle, Session
from chubbypy.client._state import SessionState
from chubbypy.client._streams import guarded
from chubbypy.protocol.errors import ChubbyError, InvalidHandle, LockDelayed, LockHeld
from chubbypy.protocol.session import EventKind, EventMask, SessionEvent

__all__ = ["HandleOpener", "Held", "Lock"]


class HandleOpener(Protocol):
    """What a `Lock` opens its handle with: a `Cell`, in the cell's session."""

    def open(
        self,
        path: str,
        *,
        events: EventMask | int = ...,
        create: bool = ...,
        lock_delay_seconds: float = ...,
    ) -> Deferred[Handle]: ...


class Lock:
    """A lock to hold; see the module docstring. Made by `Cell.lock`."""

    log = Logger()

    def __init__(
        self,
        cell: HandleOpener,
        path: str,
        *,
        timeout: float | None = None,
        shared: bool = False,
        create: bool = True,
        lock_delay_seconds: float = 0.0,
    ) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError("a lock's timeout cannot be negative")
        self.cell = cell
        self.path = path
        self.timeout = timeout
        self.shared = shared
        self._create = create
        self._lock_delay = lock_delay_seconds
        self._held: Held | None = None
        self._entered = False
        """Acquired (or being acquired) and not yet left: one holder per Lock object."""

    def acquire(self) -> Deferred[Held]:
        """Wait for the lock (up to `timeout`: `LockTimeout`); the `Held` once held."""
        return Deferred.fromCoroutine(self._acquire())

    async def _acquire(self) -> Held:
        if self._entered:
            raise RuntimeError(
                f"this Lock of {self.path} is held or being acquired already: make one "
                "per holder (cell.lock(path) again)"
            )
        self._entered = True
        try:
            return await self._acquire_once()
        except BaseException:
            self._entered = False
            raise

    async def _acquire_once(self) -> Held:
        cell = self.cell
        handle: Handle = await cell.open(
            self.path, events=EventMask.HANDLE_INVALID, create=self._create,
            lock_delay_seconds=self._lock_delay,
        )  # fmt: skip
        gave_up = False

        def give_up() -> None:
            nonlocal gave_up
            gave_up = True
            handle.close().addErrback(lambda _: None)  # releases the lock if just granted

        if self.timeout == 0:
            return await self._try_once(handle)
        timer = None
        if self.timeout is not None:
            timer = handle.session.clock.callLater(self.timeout, give_up)
        try:
            sequencer: bytes = await handle.acquire(shared=self.shared)
            if gave_up:  # granted as the timer fired: the close lets it go
                raise InvalidHandle("closed: the time allowed is over")
        except BaseException as error:
            if not handle.closed:
                handle.close().addErrback(lambda _: None)
            if gave_up and isinstance(error, InvalidHandle):
                mode = "shared" if self.shared else "exclusive"
                raise LockTimeout(
                    f"the {mode} lock {self.path} was not acquired within {self.timeout:g} s"
                ) from None
            raise
        finally:
            if timer is not None and timer.active():
                timer.cancel()
        self._held = Held(self, handle, sequencer)
        return self._held

    async def _try_once(self, handle: Handle) -> Held:
        """A timeout of 0: Chubby's TryAcquire, once; `LockTimeout` if held or delayed."""
        try:
            sequencer = await handle.try_acquire(shared=self.shared)
        except (LockHeld, LockDelayed) as refused:
            handle.close().addErrback(lambda _: None)
            raise LockTimeout(f"the lock {self.path} is not free: {refused}") from None
        except BaseException:
            handle.close().addErrback(lambda _: None)
            raise
        self._held = Held(self, handle, sequencer)
        return self._held

    async def __aenter__(self) -> Held:
        """Acquire the lock (see `acquire`) before the body runs; the `Held`."""
        return await self._acquire()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Release the lock; raise its `LockLost` if it was lost and the body raised
        nothing."""
        held, self._held = self._held, None
        self._entered = False
        if held is None:
            return
        await held.release()
        if error is None and held.lost_reason is not None:
            raise held.lost_reason


class Held:
    """A lock this client holds; see the module docstring. `release()` lets it go."""

    log = Logger()

    def __init__(self, lock: Lock, handle: Handle, sequencer: bytes) -> None:
        self._lock_delay = lock._lock_delay
        self._lock = lock
        self._jeopardy_call: IDelayedCall | None = None
        self.path = lock.path
        self.shared = lock.shared
        self.handle = handle
        """The handle holding the lock (write the file through it, fenced)."""
        self.sequencer = sequencer
        """Names this acquisition: pass it to what the lock protects (Chubby §2.4)."""
        self.lost: Deferred[LockLost] = Deferred()
        """Fires with the `LockLost` if the lock is lost while held (never after a
        release)."""
        self.on_lost: list[Callable[[LockLost], None]] = []
        """Called with the `LockLost` if the lock is lost while held (reactor thread)."""
        self.lost_reason: LockLost | None = None
        self._released = False
        self._session: Session = handle.session
        self._session.on_state.append(self._state_changed)
        handle.on_event.append(self._event)
        if self._session.state.final:
            self._lose(f"the session {self._session.state.value}")
        elif self._session.state is SessionState.JEOPARDY:
            self._state_changed(SessionState.JEOPARDY)

    @property
    def is_lost(self) -> bool:
        """The lock was lost while held."""
        return self.lost_reason is not None

    @property
    def in_jeopardy(self) -> bool:
        """The session's lease ran out without word from the master: the lock may be lost
        (work needing it should pause); it is kept if the session is saved in time."""
        return self._session.state is SessionState.JEOPARDY and not self.is_lost

    def check(self) -> Deferred[bool]:
        """Whether the master still counts this acquisition as held (its sequencer valid)."""
        return self.handle.check_sequencer(self.sequencer)

    def release(self) -> Deferred[None]:
        """Let go of the lock (by closing its handle). Never fails: if the master cannot be
        told now, the lock ends with the session's lease."""
        return Deferred.fromCoroutine(self._release())

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._lock._held is self:
            self._lock._held, self._lock._entered = None, False
        self._unsubscribe()
        if self.handle.closed:
            return
        try:
            await self.handle.close()
        except ChubbyError as error:
            if not self.is_lost:
                self.log.warn(
                    "could not release the lock {path} now ({error}); it ends with the session",
                    path=self.path, error=error,
                )  # fmt: skip

    def _unsubscribe(self) -> None:
        if self._jeopardy_call is not None and self._jeopardy_call.active():
            self._jeopardy_call.cancel()
        with contextlib.suppress(ValueError):
            self._session.on_state.remove(self._state_changed)
        with contextlib.suppress(ValueError):
            self.handle.on_event.remove(self._event)

    def _state_changed(self, state: SessionState) -> None:
        if state is SessionState.JEOPARDY:
            clock = self._session.clock
            self._jeopardy_call = clock.callLater(self._lock_delay, self._jeopardy_outlasted)
        elif self._jeopardy_call is not None and self._jeopardy_call.active():
            self._jeopardy_call.cancel()
        if state.final:
            why = self._session.expired_because
            said = f" ({why})" if why and state is SessionState.EXPIRED else ""
            self._lose(f"its session {self._session.session_id} {state.value}{said}")

    def _jeopardy_outlasted(self) -> None:
        if self._session.state is SessionState.JEOPARDY:
            self._lose(
                f"its session was in jeopardy for the lock-delay ({self._lock_delay:g} s): "
                "the master may have expired it and given the lock to another"
            )

    def _event(self, event: SessionEvent) -> None:
        if event.kind is EventKind.HANDLE_INVALID:
            self._lose("its file was deleted")
        elif event.kind is EventKind.MASTER_FAILOVER:
            self.check().addCallbacks(self._checked, lambda _: None)

    def _checked(self, valid: bool) -> None:
        if not valid:
            self._lose("the new master does not count it as held")

    def _lose(self, why: str) -> None:
        if self.lost_reason is not None or self._released:
            return
        reason = LockLost(f"lost the lock {self.path}: {why}")
        self.lost_reason = reason
        self.log.warn("{reason}", reason=reason)
        self._unsubscribe()
        for callback in list(self.on_lost):
            guarded(callback, reason, "an on_lost callback")
        self.lost.callback(reason)
