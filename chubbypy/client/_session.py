"""A Chubby session on the client: KeepAlives, the local lease, jeopardy, handles and locks.

Shell (STYLE §6). `Session.open(cell)` asks the master for a session; the session then keeps
one KeepAlive at the master at all times (Chubby §2.8) and keeps its own view of the
session lease on the local clock.

Theory of operation: one explicit state machine.

* **connected**: the local lease is valid; calls go to the master.
* **jeopardy**: the local lease ran out without a KeepAlive answer (the master may be
  failing over). Calls wait; the KeepAlives go on, to whichever replica is master.
* **safe**: a KeepAlive was answered during jeopardy: the session survived (often on a new
  master). It is reported, then the session is connected again.
* **expired**: the master said the session ended, or jeopardy lasted the whole grace
  period (45 s by default). Final: every call, waiting or later, fails `SessionExpired`,
  and every handle fails the same way from then on.
* **closed**: the program closed the session (or the library did, idle). Final, like
  expired, but nothing was lost that the program did not let go of.

The local lease counts from when the KeepAlive that was answered was first *sent*, plus how
long the master says it held it (the master extends a lease when it answers, and it
received the KeepAlive no earlier than it was sent), shrunk by the worst clock drift
between client and master, so it always ends before the master's own view of the lease.
The simulator's session-safety checker found that a retry must not restart the count; a
live cell showed that without the hold the client fell into jeopardy on every KeepAlive.
Each state change is reported to `on_state` callbacks and `states()` streams, and each
event the master sends (contents modified, lock acquired, master fail-over, ...) to
`on_event` callbacks and `events()` streams, once, in order. An event about one handle
also goes to that handle's own `on_event` callbacks and `events()` streams; a master
fail-over event goes to every handle that asked for events (any of them may have been
missed). A handle's streams end when it is closed, and with `SessionExpired` when the
session ends.

**The cache** (Chubby §2.5, `chubbypy.client._cache`): reads through the session
(`get_contents_and_stat`, `get_stat`, and the same on a handle) keep what the master let
them cache, including a name's absence, and answer later reads from memory while the
session is *connected* and its local lease valid. An INVALIDATE event drops an entry before
the KeepAlive that acknowledges it is sent; jeopardy, a master fail-over event and the
session's end empty the cache. `Session.open(..., cache=False)` turns it off.

**After a master fail-over** the new master knows a handle only once it is used (Chubby
§2.9), so the session presents every handle that asked for events to it; otherwise a
handle that only waits for events would hear nothing more.

**Idle sessions** (Chubby §2.8): the library closes a session that has had no open handle
and no call for a minute (`idle_close_seconds`), and logs why.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from chubbypy.client._cache import CachedNode, ClientCache
from chubbypy.client._cell import Cell, default_client_name
from chubbypy.client._errors import CellClosed, LockTimeout
from chubbypy.client._state import SessionState
from chubbypy.client._streams import EventStream, guarded
from chubbypy.protocol.client import RequestId, SessionReply, SessionRequest
from chubbypy.protocol.errors import (
    ChubbyError,
    InvalidHandle,
    IsADirectory,
    LockHeld,
    NoSuchNode,
    NotADirectory,
    SessionExpired,
    Unavailable,
)
from chubbypy.protocol.namespace import (
    AclNames,
    Create,
    Delete,
    Listing,
    LockMode,
    SetAcl,
    SetContents,
    SimpleWrite,
    Stat,
)
from chubbypy.protocol.session import (
    AcquireLock,
    CallDone,
    CheckSequencer,
    CloseHandle,
    CloseSession,
    CreateSession,
    EventKind,
    GetSequencer,
    HandleOpened,
    HandleWrite,
    KeepAlive,
    LeaseExtended,
    Locked,
    NodeRead,
    Open,
    PoisonHandle,
    ReadNode,
    ReleaseLock,
    SequencerValidity,
    SessionCall,
    SessionCreated,
    SessionEvent,
    SessionResult,
)
from chubbypy.protocol.values import SessionId
from chubbypy.sessions import EventMask, HandleMode

_R = TypeVar("_R")

GRACE_SECONDS_DEFAULT = 45.0
CLOCK_DRIFT_DEFAULT = 0.01
"""At least the cell's ``paxos.clock_drift_max``."""
HANDLES_PARKED_MAX = 100
"""Closed handles kept for reuse per session; beyond it the oldest is really closed."""
_HandleKey = tuple[str, int, int, int]
"""(path, mode, events, lock-delay in ms): handles with equal keys are interchangeable."""
IDLE_CLOSE_SECONDS_DEFAULT = 60.0
"""Chubby §2.8: a session idle this long with no open handle is ended by the library."""
ACQUIRE_FOREVER_SECONDS = 10.0**9
"""A blocking acquire without a timeout waits as long as it takes (Chubby's Acquire)."""
KEEPALIVE_RETRY_SECONDS = 1.0
"""The pause before a KeepAlive that failed for an unexpected reason is sent again."""
ACQUIRE_ANSWER_SECONDS = 5.0
"""How long past an acquire's timeout the client waits for the master's answer (the
master answers when the wait ends; a fail-over meanwhile resends the request)."""


class Session:
    """One session with a cell; see the module docstring. Make one with `Session.open`."""

    log = Logger()

    def __init__(
        self,
        cell: Cell,
        clock: IReactorTime,
        session_id: SessionId,
        credential: bytes,
        *,
        grace_seconds: float,
        clock_drift_max: float,
        cache: bool = True,
        idle_close_seconds: float | None = IDLE_CLOSE_SECONDS_DEFAULT,
    ) -> None:
        self.cell = cell
        self.session_id = session_id
        self._credential = credential
        self._clock = clock
        self._grace = grace_seconds
        self._drift = clock_drift_max
        self._lease_end = 0.0
        self._lease_ms = 0
        self._state = SessionState.CONNECTED
        self._acked = 0
        self._waiting: list[Deferred[None]] = []
        self._jeopardy_call: IDelayedCall | None = None
        self._closing = False
        self.on_state: list[Callable[[SessionState], None]] = []
        """Called with each state change, in order (on the reactor thread)."""
        self.on_event: list[Callable[[SessionEvent], None]] = []
        """Called with each event the master sends, in order (on the reactor thread)."""
        self._state_streams: list[EventStream[SessionState]] = []
        self._event_streams: list[EventStream[SessionEvent]] = []
        self._handles: dict[int, Handle] = {}
        """Open handles by number, for the events meant for them."""
        self.cache_enabled = cache
        self.cache = ClientCache()
        self._parked: dict[_HandleKey, list[tuple[bytes, Stat, int]]] = {}
        """Handles closed by the program but kept open at the master, for reuse."""
        self._parked_count = 0
        self._idle_close = idle_close_seconds
        self._open_handles = 0
        self._calls_running = 0
        self._last_call = clock.seconds()
        self._idle_call: IDelayedCall | None = None
        self._watch_idle()

    @classmethod
    def open(
        cls,
        cell: Cell,
        clock: IReactorTime,
        *,
        name: str | None = None,
        grace_seconds: float = GRACE_SECONDS_DEFAULT,
        clock_drift_max: float = CLOCK_DRIFT_DEFAULT,
        cache: bool = True,
        idle_close_seconds: float | None = IDLE_CLOSE_SECONDS_DEFAULT,
    ) -> Deferred[Session]:
        """A new session (its KeepAlives already running); `cache` False turns its cache
        off (every read goes to the master). A session with no open handle and no call for
        `idle_close_seconds` is closed (None: never), as Chubby's library does, so that an
        idle client costs the master nothing."""

        async def create() -> Session:
            sent = clock.seconds()
            result = await _call(cell, CreateSession(name or default_client_name()))
            if not isinstance(result, SessionCreated):
                raise ChubbyError(f"unexpected {type(result).__name__} to CreateSession")
            session = cls(cell, clock, result.session_id, result.credential,
                          grace_seconds=grace_seconds, clock_drift_max=clock_drift_max, cache=cache,
                          idle_close_seconds=idle_close_seconds)  # fmt: skip
            session._extend(sent, result.lease_ms)
            session._keep_alive()
            return session

        return Deferred.fromCoroutine(create())

    # ------------------------------------------------------------------------- queries

    @property
    def clock(self) -> IReactorTime:
        """The clock the session counts its lease on."""
        return self._clock

    @property
    def state(self) -> SessionState:
        """Where the session is: connected, jeopardy, safe, expired or closed."""
        return self._state

    def states(self) -> EventStream[SessionState]:
        """The session's state changes from now on, as an async iterator (see
        `chubbypy.client._streams`); it ends after the final state."""
        stream: EventStream[SessionState] = EventStream(
            lambda: _discard(self._state_streams, stream)
        )
        self._state_streams.append(stream)
        if self._state.final:
            stream.end()
        return stream

    def events(self) -> EventStream[SessionEvent]:
        """Every event the master sends this session from now on, as an async iterator;
        it ends, with `SessionExpired`, when the session does (cleanly if closed)."""
        stream: EventStream[SessionEvent] = EventStream(
            lambda: _discard(self._event_streams, stream)
        )
        self._event_streams.append(stream)
        if self._state.final:
            stream.end(self._ending_error())
        return stream

    def _ended_state(self) -> SessionState:
        """What the master saying the session is over means: closed, if we asked."""
        return SessionState.CLOSED if self._closing else SessionState.EXPIRED

    def _ending_error(self) -> SessionExpired | None:
        if self._state is SessionState.EXPIRED:
            return SessionExpired(f"session {self.session_id} has expired")
        return None

    @property
    def lease_remaining(self) -> float:
        """Seconds of local lease left (0 in jeopardy or once expired)."""
        return max(0.0, self._lease_end - self._clock.seconds())

    # ------------------------------------------------------------------------- calls

    def open_handle(
        self,
        path: str,
        *,
        mode: HandleMode = HandleMode.READ | HandleMode.WRITE,
        events: int = 0,
        lock_delay_seconds: float = 0.0,
        create: bool = False,
        contents: bytes = b"",
        ephemeral: bool = False,
        exclusive: bool = False,
        directory: bool = False,
        acl: AclNames | None = None,
    ) -> Deferred[Handle]:
        """A handle on `path` in `mode` (its permissions are checked against the node's
        ACLs), with the `events` (an `EventMask`) its session should hear of. With
        `create`, the node is created if missing: a file with `contents` (or a `directory`),
        with `acl` names (else its parent's), `ephemeral` tying a file to this session; with
        `exclusive` it must be new. `lock_delay_seconds` (at most 60) holds the lock back
        from others when this session expires holding it."""
        made = Create(path, directory, contents, acl, ephemeral=ephemeral) if create else None
        delay_ms = round(lock_delay_seconds * 1000)

        key = (path, int(mode), events, delay_ms)

        async def opening() -> Handle:
            if not exclusive and not events:
                reused = await self._reuse_handle(key)
                if reused is not None:
                    return reused
            call = Open(self.session_id, self._credential, path, mode, EventMask(events),
                        delay_ms, made, exclusive)  # fmt: skip
            result = await self.call(call)
            if not isinstance(result, HandleOpened):
                raise ChubbyError(f"unexpected {type(result).__name__} to Open")
            self._handle_opened()
            handle = Handle(self, path, result.handle, result.created, result.stat, key,
                            handle_id=result.handle_id)  # fmt: skip
            self._handles[result.handle_id] = handle
            return handle

        return Deferred.fromCoroutine(opening())

    async def _reuse_handle(self, key: _HandleKey) -> Handle | None:
        """A handle closed earlier with the same name, mode and lock-delay, if its node
        is still the one it opened (as the cache, kept coherent, says): no call to the
        master (Chubby §2.5 caches handles too). As with any open handle, its permissions
        were checked when the master opened it."""
        parked = self._parked.get(key)
        if not parked or not self._cache_usable():
            return None
        handle_bytes, stat, handle_id = parked.pop()
        if not parked:
            del self._parked[key]
        try:
            now: Stat | None = await self.get_stat(key[0])
        except ChubbyError:
            now = None  # gone, or not readable now: a real open says why
        if now is None or now.instance != stat.instance:
            self._close_parked(handle_bytes)
            return None
        self._handle_opened()
        handle = Handle(self, key[0], handle_bytes, False, now, key, handle_id=handle_id)
        self._handles[handle_id] = handle
        return handle

    def _park(self, key: _HandleKey, handle_bytes: bytes, stat: Stat, handle_id: int) -> bool:
        """Keep a closed handle for a later open instead of closing it at the master;
        False if it cannot be kept (the cache is off, or the session is not connected)."""
        if not self._cache_usable():
            return False
        self._parked.setdefault(key, []).append((handle_bytes, stat, handle_id))
        self._parked_count += 1
        while self._parked_count > HANDLES_PARKED_MAX:
            oldest = next(iter(self._parked))
            handles = self._parked[oldest]
            self._close_parked(handles.pop(0)[0])
            if not handles:
                del self._parked[oldest]
        return True

    def _close_parked(self, handle_bytes: bytes) -> None:
        self._parked_count -= 1
        closing = Deferred.fromCoroutine(_call(self.cell, CloseHandle(handle_bytes)))
        closing.addErrback(lambda _: None)  # the session's end closes it anyway

    def get_contents_and_stat(self, path: str) -> Deferred[tuple[bytes, Stat]]:
        """The file's contents and metadata, from the cache when it holds them
        (`NoSuchNode`, `IsADirectory`)."""

        async def reading() -> tuple[bytes, Stat]:
            node = await self._read(path)
            if node.stat is None:
                raise NoSuchNode(f"no node {path}")
            if node.stat.is_directory:
                raise IsADirectory(f"{path} is a directory")
            return node.contents, node.stat

        return Deferred.fromCoroutine(reading())

    def get_stat(self, path: str) -> Deferred[Stat]:
        """The node's metadata, from the cache when it holds it (`NoSuchNode`)."""

        async def reading() -> Stat:
            node = await self._read(path)
            if node.stat is None:
                raise NoSuchNode(f"no node {path}")
            return node.stat

        return Deferred.fromCoroutine(reading())

    def _cache_usable(self) -> bool:
        """Whether cached entries may be used now: the master's promise to invalidate
        them first lasts as long as the session lease, as this client counts it."""
        return (
            self.cache_enabled
            and self._state is SessionState.CONNECTED
            and not self._closing
            and self._clock.seconds() < self._lease_end
        )

    async def _read(self, path: str) -> CachedNode:
        if self._cache_usable():
            cached = self.cache.get(path)
            if cached is not None:
                return cached
        started = self.cache.reading(path)
        answer: NodeRead | None = None
        try:
            call = ReadNode(self.session_id, self._credential, path, self.cache_enabled)
            result = await self.call(call)
            if not isinstance(result, NodeRead):
                raise ChubbyError(f"unexpected {type(result).__name__} to ReadNode")
            answer = result
        finally:
            node = None if answer is None else CachedNode(answer.stat, answer.contents)
            self.cache.read_done(
                path,
                started,
                node,
                cached=answer is not None and answer.cached,
                event_sequence=0 if answer is None else answer.event_sequence,
                usable=self._cache_usable(),
            )
        assert node is not None
        return node

    def check_sequencer(self, sequencer: bytes) -> Deferred[bool]:
        """Whether `sequencer` still names a lock held in its mode at its generation."""
        return Deferred.fromCoroutine(self._check_sequencer(sequencer))

    async def _check_sequencer(self, sequencer: bytes) -> bool:
        result = await self.call(CheckSequencer(sequencer))
        return isinstance(result, SequencerValidity) and result.valid

    def close(self) -> Deferred[None]:
        """End the session: its locks are released at once, its ephemeral files deleted."""
        if self._state.final:
            return succeed(None)
        self._closing = True
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()

        async def closing() -> None:
            try:
                await _call(self.cell, CloseSession(self.session_id, self._credential))
            finally:
                self._set_state(SessionState.CLOSED)

        return Deferred.fromCoroutine(closing())

    async def call(
        self,
        call: SessionCall,
        attempt_seconds: float | None = None,
        deadline: float | None = None,
    ) -> SessionResult:
        """Send `call` to the master, waiting out jeopardy; raises its ChubbyError."""
        while self._state is SessionState.JEOPARDY:
            waiting: Deferred[None] = Deferred()
            self._waiting.append(waiting)
            await waiting
        if self._state.final:
            raise SessionExpired(f"session {self.session_id} has {self._state.value}")
        self._calls_running += 1
        try:
            return await _call(self.cell, call, attempt_seconds, deadline)
        except SessionExpired:
            self._set_state(self._ended_state())
            raise
        finally:
            self._calls_running -= 1
            self._last_call = self._clock.seconds()

    # ------------------------------------------------------------------------- idleness

    def _handle_opened(self) -> None:
        self._open_handles += 1

    def _handle_closed(self) -> None:
        self._open_handles -= 1
        self._last_call = self._clock.seconds()

    def _watch_idle(self) -> None:
        if self._idle_close is None or self._state.final or self._closing:
            return
        due = self._last_call + self._idle_close - self._clock.seconds()
        self._idle_call = self._clock.callLater(max(due, 0.0), self._idle_check)

    def _idle_check(self) -> None:
        assert self._idle_close is not None
        idle = self._clock.seconds() - self._last_call
        busy = self._open_handles or self._calls_running
        if not busy and idle >= self._idle_close and self._state is SessionState.CONNECTED:
            self.log.info(
                "session {id}: idle for {idle:.0f} s with no open handle: closing it",
                id=self.session_id,
                idle=idle,
            )
            self.close().addErrback(lambda f: self.log.failure("idle close failed", f))
            return
        if busy:
            self._last_call = self._clock.seconds()
        self._watch_idle()

    # ------------------------------------------------------------------------- the lease

    def _extend(self, sent: float, lease_ms: int, held_ms: int = 0) -> None:
        """A lease of `lease_ms` from when the master answered a call first sent at `sent`
        and held `held_ms` there: the answer came no earlier than `sent` plus the hold, on
        the master's clock, whose rate may differ from ours by the drift bound both ways."""
        shrink = (1 - self._drift) / (1 + self._drift)
        self._lease_ms = lease_ms
        self._lease_end = max(self._lease_end, sent + (held_ms + lease_ms) / 1000 * shrink)
        if self._jeopardy_call is not None and self._jeopardy_call.active():
            self._jeopardy_call.cancel()
        delay = max(0.0, self._lease_end - self._clock.seconds())
        self._jeopardy_call = self._clock.callLater(delay, self._lease_ran_out)

    def _lease_ran_out(self) -> None:
        if self._state is SessionState.CONNECTED and self._clock.seconds() >= self._lease_end:
            self._set_state(SessionState.JEOPARDY)

    def _keep_alive(self) -> None:
        Deferred.fromCoroutine(self._keep_alive_loop()).addErrback(
            lambda failure: self.log.failure("the KeepAlive loop failed", failure)
        )

    async def _keep_alive_loop(self) -> None:
        while not self._state.final and not self._closing:
            sent = self._clock.seconds()
            deadline = max(self._lease_end, sent) + self._grace
            call = KeepAlive(self.session_id, self._credential, self._acked)
            # The master holds a KeepAlive until its own view of the lease nearly ends:
            # wait up to a whole lease for the answer (a retry would supersede it).
            attempt = self._lease_ms / 1000 + 1.0
            try:
                result = await _call(self.cell, call, attempt, deadline)
            except SessionExpired:
                self._set_state(self._ended_state())
                return
            except Unavailable:
                if self._clock.seconds() >= deadline:
                    self._set_state(SessionState.EXPIRED)  # the grace period is over
                    return
                continue
            except CellClosed:
                self._set_state(SessionState.CLOSED if self._closing else SessionState.EXPIRED)
                return
            except Exception as error:
                # A replica refusing the connection (a rotated token, a rolling upgrade) or
                # an unexpected answer must not stop the KeepAlives: the session would sit
                # in jeopardy for ever and its locks would never be reported lost.
                if self._clock.seconds() >= deadline:
                    self._set_state(SessionState.EXPIRED)
                    return
                self.log.warn("session {id}: a KeepAlive failed ({error}); trying again",
                              id=self.session_id, error=error)  # fmt: skip
                await deferLater(self._clock, KEEPALIVE_RETRY_SECONDS, lambda: None)
                continue
            if not isinstance(result, LeaseExtended):
                continue
            self._extend(sent, result.lease_ms, result.held_ms)
            if self._state is SessionState.JEOPARDY:
                self._set_state(SessionState.SAFE)
                self._set_state(SessionState.CONNECTED)
            self._deliver(result.events)

    def _deliver(self, events: tuple[SessionEvent, ...]) -> None:
        for event in events:
            if event.sequence <= self._acked:
                continue  # sent again because an answer was lost: seen already
            self._acked = event.sequence
            if event.kind is EventKind.INVALIDATE:
                self.cache.invalidate(event.path, event.sequence)
                continue  # the cache's business; acknowledged by the next KeepAlive
            if event.kind is EventKind.MASTER_FAILOVER:
                self.cache.flush()  # the new master knows nothing of what we cached
                for handle in list(self._handles.values()):
                    if handle.asked_for_events:
                        handle._deliver(event)
                        handle._present()
            elif event.handle_id in self._handles:
                self._handles[event.handle_id]._deliver(event)
            for callback in list(self.on_event):
                guarded(callback, event, "an on_event callback")
            for stream in list(self._event_streams):
                stream.push(event)

    def _handle_gone(self, handle: Handle) -> None:
        if self._handles.get(handle.handle_id) is handle:
            del self._handles[handle.handle_id]

    def _set_state(self, state: SessionState) -> None:
        if state is self._state or self._state.final:
            return
        self._state = state
        if state in (SessionState.JEOPARDY, SessionState.EXPIRED, SessionState.CLOSED):
            self.cache.flush()
            self._parked, self._parked_count = {}, 0  # their nodes may have changed
        if state.final and self._idle_call and self._idle_call.active():
            self._idle_call.cancel()
        if state.final and self._jeopardy_call and self._jeopardy_call.active():
            self._jeopardy_call.cancel()
        self.log.info("session {id}: {state}", id=self.session_id, state=state.value)
        for callback in list(self.on_state):
            guarded(callback, state, "an on_state callback")
        for stream in list(self._state_streams):
            stream.push(state)
        if state.final:
            ending = self._ending_error()
            for ended in list(self._state_streams):
                ended.end()
            for events in list(self._event_streams):
                events.end(ending)
            handles, self._handles = self._handles, {}
            for handle in handles.values():
                handle._session_ended(ending)
        if state is SessionState.CONNECTED or state.final:
            waiting, self._waiting = self._waiting, []
            for deferred in waiting:
                deferred.callback(None)


class Handle:
    """An open handle on one node (Chubby §2.6); its calls return Deferreds.

    Made by `Cell.open` (or `Session.open_handle`). `path` is the node's name, `stat` its
    metadata as last seen through this handle, `created` whether the open created it.
    Every call fails `InvalidHandle` once the handle is closed or poisoned, and
    `NoSuchNode` once its node is deleted, even if the name is created again.
    """

    def __init__(
        self,
        session: Session,
        path: str,
        handle: bytes,
        created: bool,
        stat: Stat,
        key: _HandleKey | None = None,
        *,
        handle_id: int = 0,
    ) -> None:
        self.session = session
        self._key = key
        self._locked = False
        """It asked for a lock once: closing it must release that at the master."""
        self.path = path
        self.created = created
        self.stat = stat
        self.handle_id = handle_id
        """The handle's number at the cell (the events meant for it carry it)."""
        self._handle = handle
        self._poisoned = False
        self._closed = False
        self._sequencer: bytes | None = None
        self._outstanding: set[Deferred[Any]] = set()
        self.on_event: list[Callable[[SessionEvent], None]] = []
        """Called with each event for this handle, in order (on the reactor thread)."""
        self._streams: list[EventStream[SessionEvent]] = []

    # ------------------------------------------------------------------------- queries

    @property
    def closed(self) -> bool:
        """The program closed this handle."""
        return self._closed

    @property
    def asked_for_events(self) -> bool:
        """It was opened with an event mask: it hears of master fail-overs too."""
        return bool(self._key and self._key[2])

    def events(self) -> EventStream[SessionEvent]:
        """This handle's events from now on (those its event mask asked for, and master
        fail-overs), as an async iterator; it ends when the handle is closed, and with
        `SessionExpired` if the session ends."""
        stream: EventStream[SessionEvent] = EventStream(lambda: _discard(self._streams, stream))
        self._streams.append(stream)
        if self._closed:
            stream.end()
        elif self.session.state.final:
            stream.end(self.session._ending_error())
        return stream

    # ------------------------------------------------------------------------- locks

    def acquire(self, *, shared: bool = False, timeout: float | None = None) -> Deferred[bytes]:
        """Wait for the lock (exclusive, or `shared`), for ever or `timeout` seconds; its
        sequencer once held. `LockTimeout` if not acquired in time: the master itself
        withdraws the request when `timeout` passes, so a given-up request is never
        granted unseen, and the handle stays usable. (If the master cannot be reached to
        say so, the handle is poisoned instead, which withdraws the request wherever it
        waits.) Cancelling the wait poisons the handle too (Chubby §2.6): close it."""
        mode = LockMode.SHARED if shared else LockMode.EXCLUSIVE
        # The master holds a blocking acquire until the lock is free (or its wait is over):
        # one attempt as long as the wait, never re-sent while the connection lives (a
        # second request would queue behind the first); after a fail-over it is sent again,
        # and a handle that already holds the lock is simply granted it.
        wait_ms = None if timeout is None else max(0, round(timeout * 1000))
        wait = ACQUIRE_FOREVER_SECONDS if timeout is None else timeout + ACQUIRE_ANSWER_SECONDS
        deadline = self.session.clock.seconds() + wait
        self._locked = True
        call = AcquireLock(self._handle, mode, wait=True, wait_ms=wait_ms)
        waiting = self._locked_call(call, wait, deadline)
        if timeout is not None:
            waiting.addErrback(self._acquire_timed_out, timeout)
        return waiting.addErrback(self._acquire_cancelled)

    def _acquire_timed_out(self, failure: Failure, timeout: float) -> Failure:
        """The master's refusal at the end of the wait, or no answer from any master by
        then: `LockTimeout` either way (the request withdrawn in both)."""
        error = failure.value
        within = f"the lock {self.path} was not acquired within {timeout:g} s"
        if isinstance(error, LockHeld):
            raise LockTimeout(f"{within}: {error}") from error
        if isinstance(error, Unavailable) and not isinstance(error, LockTimeout):
            if not self._poisoned:
                self.poison().addErrback(lambda _: None)
            raise LockTimeout(
                f"{within} ({error}); the handle was poisoned to withdraw the request"
            ) from error
        return failure

    def _acquire_cancelled(self, failure: Failure) -> Failure:
        """A blocked acquire given up by its caller (not by a poison or a close, which set
        `_poisoned` first) would stay queued at the master and win the lock unseen."""
        if isinstance(failure.value, _AcquireCancelled) and not self._poisoned:
            self.poison().addErrback(lambda _: None)
        return failure

    def try_acquire(self, *, shared: bool = False) -> Deferred[bytes]:
        """The lock now, or `LockHeld` / `LockDelayed`; its sequencer."""
        mode = LockMode.SHARED if shared else LockMode.EXCLUSIVE
        self._locked = True
        return self._locked_call(AcquireLock(self._handle, mode, wait=False))

    def get_sequencer(self) -> Deferred[bytes]:
        """The sequencer of the lock this handle holds (`LockNotHeld` if none)."""
        return self._locked_call(GetSequencer(self._handle))

    def release(self) -> Deferred[None]:
        """Let go of the lock this handle acquired last (and of nothing later)."""
        return self._track(
            lambda: self._no_result(ReleaseLock(self._handle, self.stat.lock_generation))
        )

    def set_sequencer(self, sequencer: bytes | None) -> None:
        """Fence this handle's later writes with `sequencer` (Chubby's SetSequencer): each
        is applied only while the lock it names is still held at its generation, else it
        fails `InvalidSequencer`. None stops fencing. Reads are not fenced: a read cannot
        harm what the lock protects."""
        self._sequencer = sequencer

    def check_sequencer(self, sequencer: bytes) -> Deferred[bool]:
        """Whether `sequencer` still names a lock held in its mode at its generation
        (what a server given a sequencer asks; Chubby §2.4)."""
        return self._track(lambda: self.session._check_sequencer(sequencer))

    # ------------------------------------------------------------------------- reads

    def get_contents_and_stat(self) -> Deferred[tuple[bytes, Stat]]:
        """The file's contents and metadata (from the session's cache when it holds them);
        `NoSuchNode` once the node this handle opened was deleted, even if re-created."""

        async def reading() -> tuple[bytes, Stat]:
            contents, stat = await self.session.get_contents_and_stat(self.path)
            self._check_instance(stat)
            self.stat = stat
            return contents, stat

        return self._track(reading)

    def get_stat(self) -> Deferred[Stat]:
        """The node's metadata (see `get_contents_and_stat`)."""

        async def reading() -> Stat:
            stat = await self.session.get_stat(self.path)
            self._check_instance(stat)
            self.stat = stat
            return stat

        return self._track(reading)

    def read_dir(self, after: str = "", limit: int = 1000) -> Deferred[Listing]:
        """One page of the directory's children in name order, from the first name after
        `after`, at most `limit` (`NotADirectory` for a file); `Listing.more` says whether
        a later page has more."""

        async def reading() -> Listing:
            stat = await self.get_stat()
            if not stat.is_directory:
                raise NotADirectory(f"{self.path} is a file")
            listing: Listing = await self.session.cell.read_dir(self.path, after, limit)
            return listing

        return self._track(reading)

    def _check_instance(self, stat: Stat) -> None:
        if stat.instance != self.stat.instance:
            raise NoSuchNode(f"the node of this handle is gone: {self.path}")

    # ------------------------------------------------------------------------- writes

    def set_contents(
        self,
        contents: bytes,
        expected_generation: int | None = None,
        *,
        sequencer: bytes | None = None,
    ) -> Deferred[Stat]:
        """Replace the file's contents; its metadata after. With `expected_generation`,
        only if the contents are still at that generation (`GenerationMismatch`): a
        compare-and-swap. With `sequencer` (or the one `set_sequencer` attached), only
        while that lock is held (`InvalidSequencer`)."""
        return self._write(SetContents(self.path, contents, expected_generation), sequencer)

    def set_acl(
        self, acl: AclNames, expected_generation: int | None = None, *,
        sequencer: bytes | None = None,
    ) -> Deferred[Stat]:  # fmt: skip
        """Replace the node's three ACL names (the handle must be opened with
        `HandleMode.CHANGE_ACL`); with `expected_generation`, only if the ACLs are still at
        that generation. Its metadata after."""
        return self._write(SetAcl(self.path, acl, expected_generation), sequencer)

    def delete(self, *, sequencer: bytes | None = None) -> Deferred[None]:
        """Delete the node this handle opened (not a later node of the same name); a
        directory must be empty. The handle is useless afterwards: close it."""

        async def deleting() -> None:
            await self._write(Delete(self.path, self.stat.instance), sequencer)

        return self._track(deleting)

    def _write(self, write: SimpleWrite, sequencer: bytes | None) -> Deferred[Stat]:
        fence = sequencer if sequencer is not None else self._sequencer

        async def writing() -> Stat:
            result = await self.session.call(HandleWrite(self._handle, write, fence))
            if not isinstance(result, CallDone):
                raise ChubbyError(f"unexpected {type(result).__name__}")
            if result.stat is not None:
                self.stat = result.stat
            return self.stat

        return self._track(writing)

    # ------------------------------------------------------------------------- ending

    def close(self) -> Deferred[None]:
        """Close the handle (releasing its lock, if it holds one). A handle that asked for
        no events and no lock may be kept by the session for a later open of the same name
        in the same mode (Chubby's handle cache); the program cannot tell the difference."""
        first = not self._closed
        if first:
            self._closed = True
            self.session._handle_closed()
            self.session._handle_gone(self)
            for stream in list(self._streams):
                stream.end()
        reusable = first and not self._poisoned and not self._locked and not self._outstanding
        self._poisoned = True  # nothing after a close, whatever the reply
        for call in list(self._outstanding):
            call.cancel()
        parkable = reusable and self._key is not None and not self._key[2]
        if (
            parkable
            and self._key
            and self.session._park(self._key, self._handle, self.stat, self.handle_id)
        ):
            return succeed(None)
        return Deferred.fromCoroutine(self._no_result(CloseHandle(self._handle)))

    def poison(self) -> Deferred[None]:
        """Make this handle's outstanding and later calls fail (`InvalidHandle`) without
        closing it (Chubby §2.6): a way for one part of a program to stop another's
        blocked acquire. A lock it holds stays held until the handle is closed."""
        self._poisoned = True
        for call in list(self._outstanding):
            call.cancel()
        return Deferred.fromCoroutine(self._no_result(PoisonHandle(self._handle)))

    def _present(self) -> None:
        """Show this handle to a new master (Chubby §2.9 step 8): it knows a handle made
        before the fail-over only once the handle is used, and until then would send it no
        events, so a handle that only waits for events would go deaf. Any call naming the
        handle will do; asking for its sequencer changes nothing (and a handle holding no
        lock is refused, harmlessly, after being recognised)."""
        if self._closed or self._poisoned:
            return
        presenting = Deferred.fromCoroutine(self.session.call(GetSequencer(self._handle)))
        presenting.addErrback(lambda _: None)

    def _deliver(self, event: SessionEvent) -> None:
        for callback in list(self.on_event):
            guarded(callback, event, "a handle's on_event callback")
        for stream in list(self._streams):
            stream.push(event)

    def _session_ended(self, error: SessionExpired | None) -> None:
        for stream in list(self._streams):
            stream.end(error)

    # ------------------------------------------------------------------------- plumbing

    def _locked_call(
        self, call: SessionCall, attempt: float | None = None, deadline: float | None = None
    ) -> Deferred[bytes]:
        async def calling() -> bytes:
            result = await self.session.call(call, attempt, deadline)
            if not isinstance(result, Locked):
                raise ChubbyError(f"unexpected {type(result).__name__}")
            self.stat = result.stat
            return result.sequencer

        return self._track(calling, acquiring=isinstance(call, AcquireLock) and call.wait)

    async def _no_result(self, call: SessionCall) -> None:
        result = await self.session.call(call)
        if not isinstance(result, CallDone):
            raise ChubbyError(f"unexpected {type(result).__name__}")

    def _track(
        self, make: Callable[[], Coroutine[Any, Any, _R]], *, acquiring: bool = False
    ) -> Deferred[_R]:
        """Run a call on this handle; refused at once if poisoned, and failed
        `InvalidHandle` if poisoned while outstanding."""
        if self._poisoned:
            return fail(InvalidHandle("the handle was poisoned or closed"))
        running = Deferred.fromCoroutine(make())
        self._outstanding.add(running)

        def ended(result: object) -> object:
            self._outstanding.discard(running)
            if isinstance(result, Failure) and isinstance(result.value, CancelledError):
                if self._poisoned:
                    raise InvalidHandle("the handle was poisoned or closed")
                if acquiring:
                    raise _AcquireCancelled("the acquire was cancelled")
            return result

        return running.addBoth(ended)


class _AcquireCancelled(InvalidHandle):
    """A handle's call cancelled by its caller; an acquire's cancel poisons the handle."""


def _discard(items: list[_R], item: _R) -> None:
    if item in items:
        items.remove(item)


async def _call(
    cell: Cell,
    call: SessionCall,
    attempt_seconds: float | None = None,
    deadline: float | None = None,
) -> SessionResult:
    """One session call through the master, redirects and retries as every call has."""

    def make(request_id: RequestId) -> SessionRequest:
        return SessionRequest(request_id, call)

    reply: Any = await cell._call_master(make, deadline or cell._deadline(), attempt_seconds)
    if not isinstance(reply, SessionReply):
        raise ChubbyError(f"unexpected {type(reply).__name__} to a session call")
    result: SessionResult = reply.result
    return result
