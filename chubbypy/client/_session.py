"""A Chubby session on the client, over Twisted: KeepAlives, the local lease, handles, locks.

Shell (STYLE §6). `Session.open(cell)` asks the master for a session. Every rule of the
session lives in the pure `chubbypy.client._session_core.ClientSession` (its theory of
operation is there): its states (connected, jeopardy, safe, closing, expired, closed), the
local lease with its clock-drift margin, which KeepAlive to send and what its answer or
failure means, event numbering and routing, when the cache may be used, which handles a
new master is shown. `Session` drives it: it carries the core's outputs out with the
injected clock (`IReactorTime`), the cell's calls and Deferreds, and turns them into the
program's callbacks and streams.

What the program sees. Each state change is reported to `on_state` callbacks and
`states()` streams (CLOSING excepted: the program asked for it), and each event the
master sends (contents modified, lock acquired, master fail-over, ...) to `on_event`
callbacks and `events()` streams, once, in order. An event about one handle also goes to
that handle's own `on_event` callbacks and `events()` streams; a master fail-over event
goes to every handle that asked for events (any of them may have been missed). A handle's
streams end when it is closed, and with `SessionExpired` when the session ends. Calls made
in jeopardy wait for the session to be safe (or over); once it is over they fail
`SessionExpired`.

**The cache** (Chubby §2.5): reads through the session (`get_contents_and_stat`,
`get_stat`, and the same on a handle) keep what the master let them cache, including a
name's absence, and answer later reads from memory while the session is connected and its
local lease valid. `Session.open(..., cache=False)` turns it off.

**Idle sessions** (Chubby §2.8): the library closes a session that has had no open handle
and no call for a minute (`idle_close_seconds`), and logs why.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar, assert_never

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chubbypy.client._cache import CachedNode, ClientCache
from chubbypy.client._calls import SendTimes
from chubbypy.client._errors import CellClosed, LockTimeout
from chubbypy.client._plain_cell import PlainCell, default_client_name
from chubbypy.client._session_core import (
    CLOCK_DRIFT_DEFAULT,
    GRACE_SECONDS_DEFAULT,
    Admission,
    CheckLeaseAt,
    ClientSession,
    EventDelivered,
    HandleKey,
    KeepAliveAt,
    ParkedHandle,
    PresentHandle,
    SendClose,
    SendKeepAlive,
    SessionOutput,
    SessionSettings,
    StateChanged,
    acquire_outcome_unknown,
    blocking_acquire,
)
from chubbypy.client._state import SessionState
from chubbypy.client._streams import EventStream, guarded
from chubbypy.protocol._plain import INT64_MAX
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
    EVENT_MASK_ALL,
    HANDLE_MODES_ALL,
    AcquireLock,
    CallDone,
    CheckSequencer,
    CloseHandle,
    CloseSession,
    CreateSession,
    EventMask,
    GetSequencer,
    HandleMode,
    HandleOpened,
    HandleWrite,
    LeaseExtended,
    Locked,
    NodeRead,
    Open,
    PoisonHandle,
    ReleaseLock,
    SequencerValidity,
    SessionCall,
    SessionCreated,
    SessionEvent,
    SessionResult,
    is_numbered,
)
from chubbypy.protocol.values import NO_HANDLE, CallNumber, HandleId, SessionId

__all__ = ["Handle", "Session"]

_R = TypeVar("_R")

IDLE_CLOSE_SECONDS_DEFAULT = 60.0
"""Chubby §2.8: a session idle this long with no open handle is ended by the library."""


class Session:
    """One session with a cell; see the module docstring. Make one with `Session.open`."""

    log = Logger()

    def __init__(
        self,
        cell: PlainCell,
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
        self._clock = clock
        settings = SessionSettings(grace_seconds, clock_drift_max, cache)
        self._core = ClientSession(session_id, credential, settings, chance=cell._chance)
        self._pending: deque[SessionOutput] = deque()
        self._carrying = False
        self._lease_timer: IDelayedCall | None = None
        self._keepalive_timer: IDelayedCall | None = None
        self._keepalive: Deferred[Any] | None = None
        """The KeepAlive on its way to the master."""
        self._closing: Deferred[None] | None = None
        """The CloseSession call just started, for `close` to return."""
        self._waiting: list[Deferred[None]] = []
        """Calls waiting for the next state change (jeopardy to end)."""
        self._numbers_waiting: list[Deferred[None]] = []
        """Numbered calls waiting for an older one to end (`CALLS_UNACKED_MAX`)."""
        self.on_state: list[Callable[[SessionState], None]] = []
        """Called with each state change, in order (on the reactor thread)."""
        self.on_event: list[Callable[[SessionEvent], None]] = []
        """Called with each event the master sends, in order (on the reactor thread)."""
        self._state_streams: list[EventStream[SessionState]] = []
        self._event_streams: list[EventStream[SessionEvent]] = []
        self._handles: dict[int, Handle] = {}
        """Open handles by number, for the events meant for them."""
        self._idle_close = idle_close_seconds
        self._master_said = ""
        """The master's words when it refused the session (SESSION_EXPIRED), if it did."""
        self._calls_running = 0
        self._last_call = clock.seconds()
        self._idle_call: IDelayedCall | None = None
        self._watch_idle()

    @classmethod
    def open(
        cls,
        cell: PlainCell,
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
            # The nonce names this creation on every attempt: a retry whose first attempt
            # opened a session (its answer lost) gets that session, not a second one.
            call = CreateSession(name or default_client_name(), secrets.randbelow(INT64_MAX) + 1)
            result, sent = await cell._session_call(call)
            if not isinstance(result, SessionCreated):
                raise ChubbyError(f"unexpected {type(result).__name__} to CreateSession")
            session = cls(cell, clock, result.session_id, result.credential,
                          grace_seconds=grace_seconds, clock_drift_max=clock_drift_max, cache=cache,
                          idle_close_seconds=idle_close_seconds)  # fmt: skip
            session._created(sent, result.lease_ms)
            return session

        return Deferred.fromCoroutine(create())

    # ------------------------------------------------------------------------- queries

    @property
    def session_id(self) -> SessionId:
        """The session's number at the cell."""
        return self._core.session_id

    @property
    def _credential(self) -> bytes:
        return self._core.credential

    @property
    def cache(self) -> ClientCache:
        """What the session keeps of its reads (`hits`, `misses`, `len`)."""
        return self._core.cache

    @property
    def cache_enabled(self) -> bool:
        """Whether reads keep what the master lets them cache."""
        return self._core.settings.cache

    @property
    def clock(self) -> IReactorTime:
        """The clock the session counts its lease on."""
        return self._clock

    @property
    def state(self) -> SessionState:
        """Where the session is: connected, jeopardy, safe, closing, expired or closed."""
        return self._core.state

    @property
    def expired_because(self) -> str:
        """What the master said when it refused the session, say "session 5 ending: ended
        by an operator" ("" if it said nothing: the session is live, or it expired here
        because its lease and grace period ran out without an answer)."""
        return self._master_said

    def states(self) -> EventStream[SessionState]:
        """The session's state changes from now on, as an async iterator (see
        `chubbypy.client._streams`); it ends after the final state."""
        stream: EventStream[SessionState] = EventStream(
            lambda: _discard(self._state_streams, stream)
        )
        self._state_streams.append(stream)
        if self.state.final:
            stream.end()
        return stream

    def events(self) -> EventStream[SessionEvent]:
        """Every event the master sends this session from now on, as an async iterator;
        it ends, with `SessionExpired`, when the session does (cleanly if closed)."""
        stream: EventStream[SessionEvent] = EventStream(
            lambda: _discard(self._event_streams, stream)
        )
        self._event_streams.append(stream)
        if self.state.final:
            stream.end(self._ending_error())
        return stream

    def _ending_error(self) -> SessionExpired | None:
        if self.state is SessionState.EXPIRED:
            said = f" ({self._master_said})" if self._master_said else ""
            return SessionExpired(f"session {self.session_id} has expired{said}")
        return None

    @property
    def lease_remaining(self) -> float:
        """Seconds of local lease left (0 in jeopardy or once expired, even when the master
        refused the session before its lease ran out: an operator ended it, say)."""
        if self.state.final:
            return 0.0
        return max(0.0, self._core.lease_end_seconds - self._clock.seconds())

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
        from others when this session expires holding it. A `mode` or `events` with bits
        no Chubby handle has, or an empty `mode`, is a `ValueError` here (the cell would
        refuse the frame)."""
        if not mode or int(mode) & ~int(HANDLE_MODES_ALL) or events & ~int(EVENT_MASK_ALL):
            raise ValueError(f"no handle has mode {int(mode):#x} or events {events:#x}")
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
            handle = Handle(self, path, result.handle, result.created, result.stat, key,
                            handle_id=result.handle_id)  # fmt: skip
            self._handle_opened(handle)
            return handle

        return Deferred.fromCoroutine(opening())

    async def _reuse_handle(self, key: HandleKey) -> Handle | None:
        """A handle closed earlier with the same name, mode and lock-delay, if its node
        is still the one it opened (as the cache, kept coherent, says): no call to the
        master (Chubby §2.5 caches handles too). As with any open handle, its permissions
        were checked when the master opened it."""
        parked = self._core.unpark(self._clock.seconds(), key)
        if parked is None:
            return None
        try:
            now: Stat | None = await self.get_stat(key[0])
        except ChubbyError:
            now = None  # gone, or not readable now: a real open says why
        if now is None or now.instance != parked.stat.instance:
            self._close_at_master(parked.handle)
            return None
        handle = Handle(self, key[0], parked.handle, False, now, key, handle_id=parked.handle_id)
        self._handle_opened(handle)
        return handle

    def _park(self, key: HandleKey, handle_bytes: bytes, stat: Stat, handle_id: HandleId) -> bool:
        """Keep a closed handle for a later open instead of closing it at the master;
        False if it cannot be kept (the cache is off, or the session is not connected)."""
        parked = ParkedHandle(handle_bytes, stat, handle_id)
        evicted = self._core.park(self._clock.seconds(), key, parked)
        if evicted is None:
            return False
        for handle in evicted:
            self._close_at_master(handle)
        return True

    def _close_at_master(self, handle_bytes: bytes) -> None:
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

    async def _read(self, path: str) -> CachedNode:
        wanted = self._core.read_wanted(self._clock.seconds(), path)
        if isinstance(wanted, CachedNode):
            return wanted
        answer: NodeRead | None = None
        try:
            result = await self.call(wanted.call)
            if not isinstance(result, NodeRead):
                raise ChubbyError(f"unexpected {type(result).__name__} to ReadNode")
            answer = result
        finally:
            self._core.read_answered(self._clock.seconds(), path, wanted.started, answer)
        return CachedNode(answer.stat, answer.contents)

    def check_sequencer(self, sequencer: bytes) -> Deferred[bool]:
        """Whether `sequencer` still names a lock held in its mode at its generation."""
        return Deferred.fromCoroutine(self._check_sequencer(sequencer))

    async def _check_sequencer(self, sequencer: bytes) -> bool:
        result = await self.call(CheckSequencer(sequencer))
        return isinstance(result, SequencerValidity) and result.valid

    def close(self) -> Deferred[None]:
        """End the session: its locks are released at once, its ephemeral files deleted."""
        self._carry_out(self._core.close_requested())
        closing, self._closing = self._closing, None
        return closing if closing is not None else Deferred.fromCoroutine(self._until_final())

    async def _until_final(self) -> None:
        while not self.state.final:
            await self._state_change()

    async def _close_sent(self, call: CloseSession) -> None:
        try:
            await _call(self.cell, call)
        finally:
            self._carry_out(self._core.close_finished())

    async def call(
        self,
        call: SessionCall,
        attempt_seconds: float | None = None,
        deadline: float | None = None,
    ) -> SessionResult:
        """Send `call` to the master, waiting out jeopardy; raises its ChubbyError."""
        while (admission := self._core.call_wanted()) is Admission.WAIT:
            await self._state_change()
        if admission is Admission.REFUSE:
            ending = self._ending_error()  # expired: it says what the master said, if any
            raise ending or SessionExpired(f"session {self.session_id} has {self.state.value}")
        number = None
        if is_numbered(call):
            # Carried out once whatever the retries: numbered, within CALLS_UNACKED_MAX of
            # the oldest call still unanswered (whose answer the cell keeps until then).
            while not self._core.number_wanted():
                await self._number_freed()
            number = self._core.call_number(call)
        self._calls_running += 1
        try:
            return await _call(self.cell, call, attempt_seconds, deadline, number)
        except SessionExpired as error:
            self._refused(error)
            self._carry_out(self._core.expiry_reported())
            raise
        finally:
            self._core.call_ended(number)
            if number is not None:
                waiting, self._numbers_waiting = self._numbers_waiting, []
                for waiter in waiting:
                    waiter.callback(None)
            self._calls_running -= 1
            self._last_call = self._clock.seconds()

    def _number_freed(self) -> Deferred[None]:
        """Fires when a numbered call of this session ends."""
        waiting: Deferred[None] = Deferred(lambda d: _discard(self._numbers_waiting, d))
        self._numbers_waiting.append(waiting)
        return waiting

    def _state_change(self) -> Deferred[None]:
        """Fires at the session's next change of state."""
        waiting: Deferred[None] = Deferred(lambda d: _discard(self._waiting, d))
        self._waiting.append(waiting)
        return waiting

    # ------------------------------------------------------------------------- handles

    def _handle_opened(self, handle: Handle) -> None:
        self._handles[handle.handle_id] = handle
        self._core.handle_opened(handle.handle_id, asked_for_events=handle.asked_for_events)

    def _handle_closed(self, handle: Handle) -> None:
        self._last_call = self._clock.seconds()
        if self._handles.get(handle.handle_id) is handle:
            del self._handles[handle.handle_id]
            self._core.handle_closed(handle.handle_id)

    def _handle_poisoned(self, handle: Handle) -> None:
        if self._handles.get(handle.handle_id) is handle:
            self._core.handle_poisoned(handle.handle_id)

    # ------------------------------------------------------------------------- idleness

    def _watch_idle(self) -> None:
        if self._idle_close is None or not self.state.live:
            return
        due = self._last_call + self._idle_close - self._clock.seconds()
        self._idle_call = self._clock.callLater(max(due, 0.0), self._idle_check)

    def _idle_check(self) -> None:
        assert self._idle_close is not None
        idle = self._clock.seconds() - self._last_call
        busy = self._core.open_handles or self._calls_running
        if not busy and idle >= self._idle_close and self.state is SessionState.CONNECTED:
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

    # ------------------------------------------------------------------------- the core

    def _created(self, sent: SendTimes, lease_ms: int) -> None:
        self._carry_out(self._core.session_created(self._clock.seconds(), sent, lease_ms))

    def _carry_out(self, outputs: Iterable[SessionOutput]) -> None:
        """Do what the core asked, in order. Outputs of inputs that arrive meanwhile (a
        callback that closes the session, say) queue behind, so order is kept."""
        self._pending.extend(outputs)
        if self._carrying:
            return
        self._carrying = True
        try:
            while self._pending:
                self._carry_out_one(self._pending.popleft())
        finally:
            self._carrying = False

    def _carry_out_one(self, output: SessionOutput) -> None:
        match output:
            case StateChanged(state):
                self._state_changed(state)
            case EventDelivered(event, handle_ids):
                self._event_delivered(event, handle_ids)
            case PresentHandle(handle_id):
                if handle_id in self._handles:
                    self._handles[handle_id]._present()
            case SendKeepAlive():
                self._send_keepalive(output)
            case KeepAliveAt(at_seconds):
                delay = max(0.0, at_seconds - self._clock.seconds())
                self._keepalive_timer = self._clock.callLater(delay, self._keepalive_due)
            case CheckLeaseAt(at_seconds):
                _cancel(self._lease_timer)
                delay = max(0.0, at_seconds - self._clock.seconds())
                self._lease_timer = self._clock.callLater(delay, self._lease_checked)
            case SendClose(call):
                self._closing = Deferred.fromCoroutine(self._close_sent(call))
            case _:
                assert_never(output)

    def _lease_checked(self) -> None:
        self._lease_timer = None
        self._carry_out(self._core.lease_checked(self._clock.seconds()))

    def _keepalive_due(self) -> None:
        self._keepalive_timer = None
        self._carry_out(self._core.keepalive_due(self._clock.seconds()))

    def _send_keepalive(self, output: SendKeepAlive) -> None:
        keepalive, attempt = output.keepalive, output.attempt_seconds
        calling = self.cell._session_call(keepalive, attempt, output.deadline_seconds)
        sending = Deferred.fromCoroutine(calling)
        self._keepalive = sending
        sending.addCallbacks(self._keepalive_answered, self._keepalive_failed).addErrback(
            lambda failure: self.log.failure("the KeepAlive loop failed", failure)
        )

    def _keepalive_answered(self, answered: tuple[SessionResult, SendTimes]) -> None:
        self._keepalive = None
        result, sent = answered
        if not isinstance(result, LeaseExtended):
            self._keepalive_ended(ChubbyError(f"unexpected {type(result).__name__} to a KeepAlive"))
            return
        self._carry_out(self._core.keepalive_answered(self._clock.seconds(), sent, result))

    def _keepalive_failed(self, failure: Failure) -> None:
        self._keepalive = None
        assert isinstance(failure.value, Exception)
        self._keepalive_ended(failure.value)

    def _refused(self, error: SessionExpired) -> None:
        """The master refused the session: keep its words (the first, if it said more)."""
        if not self.state.final and not self._master_said:
            self._master_said = error.message

    def _keepalive_ended(self, error: Exception) -> None:
        if isinstance(error, SessionExpired):
            self._refused(error)
        expected = (SessionExpired, Unavailable, CellClosed, CancelledError)
        if self.state.live and not isinstance(error, expected):
            # A replica refusing the connection (a rotated token, a rolling upgrade) or an
            # unexpected answer: the core tries again after a pause.
            self.log.warn("session {id}: a KeepAlive failed ({error}); trying again",
                          id=self.session_id, error=error)  # fmt: skip
        self._carry_out(self._core.keepalive_failed(self._clock.seconds(), error))

    def _state_changed(self, state: SessionState) -> None:
        if not state.live:
            _cancel(self._idle_call)
            _cancel(self._keepalive_timer)
        if state.final:
            _cancel(self._lease_timer)
            if self._keepalive is not None:
                self._keepalive.cancel()  # its answer would change nothing now
            if self._closing is not None:  # a close from a callback: its caller waits
                self._closing.addErrback(lambda _: None)  # for the end, not for this call
                self._closing = None
        if state is not SessionState.CLOSING:  # the program's own doing: not reported
            self._report(state)
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            deferred.callback(None)

    def _report(self, state: SessionState) -> None:
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

    def _event_delivered(self, event: SessionEvent, handle_ids: tuple[int, ...]) -> None:
        for handle_id in handle_ids:
            if handle_id in self._handles:
                self._handles[handle_id]._deliver(event)
        for callback in list(self.on_event):
            guarded(callback, event, "an on_event callback")
        for stream in list(self._event_streams):
            stream.push(event)


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
        key: HandleKey | None = None,
        *,
        handle_id: HandleId = NO_HANDLE,
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
        granted unseen, and the handle stays usable. (If no master answers by then, the
        request may have been granted unseen, by a master that failed before it could
        answer: the handle is closed instead, which withdraws the request wherever it
        waits and lets go of the lock if it was granted.) Cancelling the wait poisons the
        handle (Chubby §2.6): close it."""
        mode = LockMode.SHARED if shared else LockMode.EXCLUSIVE
        # The master holds a blocking acquire until the lock is free (or its wait is over):
        # one attempt as long as the wait, never re-sent while the connection lives (a
        # second request would queue behind the first); after a fail-over it is sent again,
        # and a handle that already holds the lock is simply granted it.
        timing = blocking_acquire(self.session.clock.seconds(), timeout)
        self._locked = True
        call = AcquireLock(self._handle, mode, wait=True, wait_ms=timing.wait_ms)
        waiting = self._locked_call(call, timing.attempt_seconds, timing.deadline_seconds)
        if timeout is not None:
            waiting.addErrback(self._acquire_timed_out, timeout)
        return waiting.addErrback(self._acquire_cancelled)

    def _acquire_timed_out(self, failure: Failure, timeout: float) -> Failure:
        """The master's refusal at the end of the wait, or no answer from any master by
        then: `LockTimeout` either way (the request withdrawn in both; in the second, by
        closing the handle, which also lets go of a grant no master could answer)."""
        error = failure.value
        within = f"the lock {self.path} was not acquired within {timeout:g} s"
        if isinstance(error, LockHeld):
            raise LockTimeout(f"{within}: {error}") from error
        if acquire_outcome_unknown(error):
            if not self._closed:
                self.close().addErrback(lambda _: None)
            raise LockTimeout(
                f"{within} ({error}); the handle was closed to withdraw the request"
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
            self.session._handle_closed(self)
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
        self.session._handle_poisoned(self)
        for call in list(self._outstanding):
            call.cancel()
        return Deferred.fromCoroutine(self._no_result(PoisonHandle(self._handle)))

    def _present(self) -> None:
        """Show this handle to a new master (Chubby §2.9 step 8): it knows a handle made
        before the fail-over only once the handle is used, and until then would send it no
        events, so a handle that only waits for events would go deaf. Any call naming the
        handle will do; asking for its sequencer changes nothing (and a handle holding no
        lock is refused, harmlessly, after being recognised). The session's core chose the
        handles to present: those open, not poisoned, that asked for events."""
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
    cell: PlainCell,
    call: SessionCall,
    attempt_seconds: float | None = None,
    deadline: float | None = None,
    number: CallNumber | None = None,
) -> SessionResult:
    """One session call through the master, redirects and retries as every call has."""
    result, _ = await cell._session_call(call, attempt_seconds, deadline, number)
    return result


def _cancel(call: IDelayedCall | None) -> None:
    if call is not None and call.active():
        call.cancel()
