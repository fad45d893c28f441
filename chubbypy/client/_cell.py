"""The Twisted client of a cell: plain calls, and a session for handles, locks and events.

Shell (STYLE §1, §6). `Cell` is the program's entry point. Its plain calls (`get_stat`,
`create`, ...) are `chubbypy.client._plain_cell.PlainCell`'s: find the master, follow it,
write exactly once, with the retry rules of `chubbypy.client._calls`. On top, it keeps the
cell's `Session` (`chubbypy.client._session`): opened at the first `open`, opened again
after an expiry, its state changes and events passed on to the cell's own callbacks and
streams; and it makes `Lock`s (`chubbypy.client._lock`) on that session.

Dependencies point one way: the pure core (`_calls`, `_session_core`, `_state`, `_cache`)
under `PlainCell` and `Session`, `Lock` above `Session`, this module above them all, and
`Election` on top.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.client._connection import FRAME_BYTES_MAX_DEFAULT
from chubbypy.client._errors import CellClosed
from chubbypy.client._lock import Lock
from chubbypy.client._plain_cell import Dialer, PlainCell, ReplicaReport
from chubbypy.client._session import Handle, Session
from chubbypy.client._state import SessionState
from chubbypy.client._streams import EventStream, guarded
from chubbypy.protocol.namespace import AclNames
from chubbypy.protocol.session import EventMask, HandleMode, SessionEvent

__all__ = ["Cell", "ReplicaReport"]  # ReplicaReport: `chubbypy.cli` imports it from here


class Cell(PlainCell):
    """A client of one Chubby cell, over Twisted; every operation returns a Deferred.

    `reactor` provides the clock (`IReactorTime`) and, unless `dialer` is given, the TCP
    connections (`IReactorTCP`). `addresses` are any replicas of cell `cell`, in any of the
    spellings `client_endpoint_string` accepts; one reachable replica is enough, the others
    are learned from it. `Cell.from_config` takes them from a cell's YAML instead.

    `timeout_seconds` bounds each operation (after it, `Unavailable`);
    `request_timeout_seconds` bounds each attempt within it. Retries back off from
    `backoff_initial_seconds` to `backoff_max_seconds`, or to `poll_seconds` while the cell
    answers but has no master. `rng` draws the registration
    nonce and the back-off jitter. `frame_bytes_max` is the cell's ``limits.frame_bytes_max``.
    `principal` and `token` authenticate every connection (the cell's ``auth.principals``);
    without them the client acts as ``anonymous``, if the cell allows it. Replicas at
    ``ssl:`` addresses are spoken to over TLS, only once their certificate is verified
    against `tls_ca` (a PEM file of the cell's CA; default: the system's authorities, or
    with `Cell.from_config` the cell file's ``tls.ca``) and names the host dialled.
    Nothing connects until the first operation.

    Handles, locks and events need a session (Chubby §2.8): the cell opens one at the first
    `open` (see `session`), keeps it alive with KeepAlives, and opens a new one after an
    expiry. `cache` turns its consistent cache on or off; `grace_seconds` is how long it
    waits out jeopardy before giving the session up; `clock_drift_max` at least the cell's
    ``paxos.clock_drift_max``; `idle_close_seconds` closes a session with no open handle
    and no call for that long (None: never).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        addresses: Sequence[str],
        cell: str,
        *,
        timeout_seconds: float = 10.0,
        request_timeout_seconds: float = 2.0,
        backoff_initial_seconds: float = 0.05,
        backoff_max_seconds: float = 1.0,
        poll_seconds: float = 0.1,
        name: str | None = None,
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
        rng: random.Random | None = None,
        dialer: Dialer | None = None,
        principal: str | None = None,
        token: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        cache: bool = True,
        grace_seconds: float = 45.0,
        clock_drift_max: float = 0.01,
        idle_close_seconds: float | None = 60.0,
    ) -> None:
        super().__init__(
            reactor, addresses, cell, timeout_seconds=timeout_seconds,
            request_timeout_seconds=request_timeout_seconds,
            backoff_initial_seconds=backoff_initial_seconds,
            backoff_max_seconds=backoff_max_seconds, poll_seconds=poll_seconds, name=name,
            frame_bytes_max=frame_bytes_max, rng=rng, dialer=dialer, principal=principal,
            token=token, tls_ca=tls_ca,
        )  # fmt: skip
        self._session_options: dict[str, Any] = dict(
            cache=cache, grace_seconds=grace_seconds, clock_drift_max=clock_drift_max,
            idle_close_seconds=idle_close_seconds,
        )  # fmt: skip
        self._session: Session | None = None
        self._session_waiters: list[Deferred[Session]] = []
        self._closing = False
        self.on_state: list[Callable[[SessionState], None]] = []
        """Called with each state change of the cell's session (on the reactor thread);
        after an expiry, the next session's CONNECTED follows."""
        self.on_event: list[Callable[[SessionEvent], None]] = []
        """Called with each event of the cell's session, in order (reactor thread)."""
        self._state_streams: list[EventStream[SessionState]] = []
        self._event_streams: list[EventStream[SessionEvent]] = []

    # ------------------------------------------------------------------------- sessions

    def session(self) -> Deferred[Session]:
        """The cell's session: opened on first use, and again once the last one ended
        (expired or closed). Its state changes and events reach `on_state`, `on_event`,
        `states()` and `events()` of the cell."""
        current = self._session
        if current is not None and current.state.live:
            return succeed(current)
        if self._closing:
            return fail(CellClosed(f"the client of cell {self.cell!r} is closing"))
        waiting: Deferred[Session] = Deferred()
        self._session_waiters.append(waiting)
        if len(self._session_waiters) == 1:
            self._run(self._open_session).addBoth(self._session_opened)
        return waiting

    async def _open_session(self) -> Session:
        made = await Session.open(self, self._clock, name=self._name, **self._session_options)
        made.on_state.append(self._session_state)
        made.on_event.append(self._session_event)
        self._session = made
        self._session_state(SessionState.CONNECTED)
        return made

    def _session_opened(self, result: Session | TwistedFailure) -> None:
        waiters, self._session_waiters = self._session_waiters, []
        for waiter in waiters:
            if isinstance(result, TwistedFailure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    @property
    def state(self) -> SessionState | None:
        """The state of the cell's session; None before the first."""
        return None if self._session is None else self._session.state

    def open(
        self,
        path: str,
        *,
        mode: HandleMode = HandleMode.READ | HandleMode.WRITE,
        events: EventMask | int = EventMask.NONE,
        create: bool = False,
        contents: bytes = b"",
        directory: bool = False,
        ephemeral: bool = False,
        exclusive: bool = False,
        acl: AclNames | None = None,
        lock_delay_seconds: float = 0.0,
    ) -> Deferred[Handle]:
        """A `Handle` on `path` in the cell's session (Chubby's Open).

        `mode` is what the handle may do (`HandleMode.READ`, `WRITE`, `CHANGE_ACL`),
        checked against the node's ACLs now. `events` (an `EventMask`) are the events it
        hears of. With `create`, a missing node is created: a file with `contents` (or a
        `directory`), with `acl` names (else its parent's), `ephemeral` (deleted when the
        session ends); with `exclusive` it must be new (`NodeExists`).
        `lock_delay_seconds` (at most 60) keeps the lock from others for that long when this
        session is lost holding it (Chubby §2.4). `NoSuchNode` if missing and not created.
        """

        async def opening() -> Handle:
            session = await self.session()
            handle: Handle = await session.open_handle(
                path, mode=mode, events=int(events), lock_delay_seconds=lock_delay_seconds,
                create=create, contents=contents, ephemeral=ephemeral, exclusive=exclusive,
                directory=directory, acl=acl,
            )  # fmt: skip
            return handle

        return self._run(opening)

    def check_sequencer(self, sequencer: bytes) -> Deferred[bool]:
        """Whether `sequencer` still names a lock held in its mode at the generation it
        names: what a server handed a sequencer asks before acting on it (Chubby §2.4)."""

        async def checking() -> bool:
            session = await self.session()
            valid: bool = await session.check_sequencer(sequencer)
            return valid

        return self._run(checking)

    def lock(
        self,
        path: str,
        *,
        timeout: float | None = None,
        shared: bool = False,
        lock_delay_seconds: float = 0.0,
        create: bool = True,
    ) -> Lock:
        """The lock of file `path`, to hold with ``async with`` (or `Lock.acquire`): see
        `chubbypy.client.Lock`. It waits for ever, or `timeout` seconds (`LockTimeout`);
        `shared` for a reader's lock; the file is created if missing unless not `create`."""
        return Lock(self, path, timeout=timeout, shared=shared, create=create,
                    lock_delay_seconds=lock_delay_seconds)  # fmt: skip

    def states(self) -> EventStream[SessionState]:
        """The cell's session states from now on, as an async iterator (it follows the
        cell to its next session after an expiry; it ends when the cell is closed)."""
        stream: EventStream[SessionState] = EventStream(lambda: self._state_streams.remove(stream))
        self._state_streams.append(stream)
        return stream

    def events(self) -> EventStream[SessionEvent]:
        """Every event of the cell's sessions from now on, as an async iterator (it ends
        when the cell is closed)."""
        stream: EventStream[SessionEvent] = EventStream(lambda: self._event_streams.remove(stream))
        self._event_streams.append(stream)
        return stream

    def _session_state(self, state: SessionState) -> None:
        for callback in list(self.on_state):
            guarded(callback, state, "an on_state callback of the cell")
        for stream in list(self._state_streams):
            stream.push(state)

    def _session_event(self, event: SessionEvent) -> None:
        for callback in list(self.on_event):
            guarded(callback, event, "an on_event callback of the cell")
        for stream in list(self._event_streams):
            stream.push(event)

    def close(self) -> Deferred[None]:
        """End the cell's session (its locks released, its ephemeral files deleted), cancel
        every operation in progress and close every connection; fires once they are
        closed. Later operations fail with `CellClosed`."""
        if self._closed:
            return succeed(None)
        self._closing = True  # no new session now (a recampaign would ask for one)
        session = self._session

        async def closing() -> None:
            if session is not None and not session.state.final:
                with contextlib.suppress(Exception):  # it ends at its lease anyway
                    await session.close()
            for states in list(self._state_streams):
                states.end()
            for events in list(self._event_streams):
                events.end()
            await self._shut_down()

        return Deferred.fromCoroutine(closing())
