"""Live updates: the cell's events, as server-sent events, to the pages that show the nodes.

Shell (STYLE §1, §6). A page that shows nodes opens one event stream
(``GET /api/events?path=...``) naming the nodes it shows. For each, the visitor's own
client of the cell (the login's, or the shared anonymous one) holds a handle opened with
events (contents modified, child added or removed, node deleted, lock acquired): so the
cell's ACLs decide what a visitor may watch, exactly as for reading, and the cell's
events (Chubby §2.5) are what the page hears, not a poll. `Watches` keeps one handle per
node per client, shared by that client's streams and closed a while after the last stream
that wanted it ends (`LINGER_SECONDS`: a page that reloads does not reopen them).

What a stream sends (each ``data:`` one line of JSON):

* ``change`` ``{"path", "kind"}``: kind ``contents``, ``children``, ``deleted`` or ``lock``;
* ``unwatched`` ``{"path", "error", "message"}``: a node that could not be watched;
* ``watching`` ``{"paths"}``: every node of the stream is watched now (or said to be
  unwatched): a change from now on is heard;
* ``failover`` ``{}``: the client's session heard of a master fail-over (events may have
  been missed: the page reloads what it shows);
* ``master`` ``{"master", "epoch", "previous"}``: the cell page's poll saw a new master;
* ``session`` ``{"state"}``: the client's session changed state (jeopardy, expired, ...);
* ``logout`` ``{}``: the login ended (logged out or idle); the stream ends.

A stream refused past a bound (or for a visitor who must log in first) is answered 200
with ``retry`` and one ``refused`` ``{"error", "message", "retry_seconds"}`` event, then
ended (`refuse_stream`): the page shows why and tries again later.

Bounds: streams per login (or per address, for anonymous visitors) and in all, paths per
stream; a stream whose client does not read (its socket buffer full: the transport pauses
it) is ended rather than buffered without bound; a comment line every
`HEARTBEAT_SECONDS` finds dead connections.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Final

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from chubbypy.client import Cell, Handle, SessionState
from chubbypy.protocol.errors import ChubbyError
from chubbypy.protocol.session import EventKind, EventMask, HandleMode, SessionEvent

__all__ = ["EventStream", "LiveUpdates", "StreamRefused", "Watches", "refuse_stream"]

WATCH_EVENTS: Final = (
    EventMask.CONTENTS_MODIFIED
    | EventMask.CHILD_CHANGED
    | EventMask.HANDLE_INVALID
    | EventMask.LOCK_ACQUIRED
)
LINGER_SECONDS: Final = 10.0
HEARTBEAT_SECONDS: Final = 15.0
RETRY_MS: Final = 3000
"""How long a browser waits before it reconnects a stream that broke."""
REFUSED_RETRY_SECONDS: Final = 5
"""How long a page waits before it tries again a stream that was refused (the script
doubles it at each refusal in a row, up to a minute)."""

CHANGE_KINDS: Final = {
    EventKind.CONTENTS_MODIFIED: "contents",
    EventKind.CHILD_CHANGED: "children",
    EventKind.HANDLE_INVALID: "deleted",
    EventKind.LOCK_ACQUIRED: "lock",
}


@implementer(IPushProducer)
class EventStream:
    """One open ``text/event-stream`` answer; see the module docstring."""

    def __init__(self, request: Request, owner: str, paths: tuple[str, ...]) -> None:
        self.request = request
        self.owner = owner
        self.paths = frozenset(paths)
        self.closed = False
        self._paused = False
        self.ended: Deferred[None] = Deferred()
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"x-accel-buffering", b"no")
        request.registerProducer(self, True)
        request.write(f"retry: {RETRY_MS}\n\n".encode())
        request.notifyFinish().addBoth(self._finished)

    def send(self, event: str, data: dict[str, Any]) -> None:
        """Write one event; a client that stopped reading is cut off instead."""
        if self.closed:
            return
        if self._paused:
            self.close()
            return
        line = json.dumps(data, separators=(",", ":"))
        self.request.write(f"event: {event}\ndata: {line}\n\n".encode())

    def heartbeat(self) -> None:
        if not self.closed and not self._paused:
            self.request.write(b": still here\n\n")

    def close(self) -> None:
        """End the answer (the browser reconnects unless the page closes it)."""
        if self.closed:
            return
        self.closed = True
        self.request.unregisterProducer()
        self.request.finish()
        self._done()

    def _finished(self, _: object) -> None:
        self.closed = True  # the client went away, or we finished
        self._done()

    def _done(self) -> None:
        if not self.ended.called:
            self.ended.callback(None)

    # IPushProducer: the transport says when its buffer is full.
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False

    def stopProducing(self) -> None:
        self.closed = True
        self._done()


@define
class _Watched:
    """One node some stream of a client watches: its handle (once open) and its users."""

    users: int = 0
    handle: Handle | None = None
    opening: Deferred[Handle] | None = None
    closing: IDelayedCall | None = None
    gone: bool = False
    settled: list[Callable[[], None]] = field(factory=list)
    """Called once the handle is open, or could not be opened."""


@define(eq=False)
class Watches:
    """The handles one client of the cell holds for its streams, by path."""

    cell: Cell
    clock: IReactorTime
    streams: set[EventStream] = field(factory=set)
    _watched: dict[str, _Watched] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.cell.on_event.append(self._event)
        self.cell.on_state.append(self._state)

    def subscribe(self, stream: EventStream) -> None:
        self.streams.add(stream)
        pending = {path for path in stream.paths}

        def settled(path: str) -> None:
            pending.discard(path)
            if not pending:
                opened = [p for p in sorted(stream.paths) if self._is_watched(p)]
                stream.send("watching", {"paths": opened})

        for path in stream.paths:
            watched = self._watched.setdefault(path, _Watched())
            watched.users += 1
            if watched.closing is not None:
                watched.closing.cancel()
                watched.closing = None
            if watched.handle is None and watched.opening is None:
                self._open(path, watched)  # again, for a node that was gone: it may be back
            if watched.opening is not None:
                watched.settled.append(lambda path=path: settled(path))  # type: ignore[misc]
            else:
                settled(path)
        stream.ended.addCallback(lambda _: self._unsubscribe(stream))

    def _is_watched(self, path: str) -> bool:
        watched = self._watched.get(path)
        return watched is not None and watched.handle is not None

    def _open(self, path: str, watched: _Watched) -> None:
        opening = self.cell.open(path, mode=HandleMode.READ, events=WATCH_EVENTS)
        watched.opening = opening

        def opened(handle: Handle) -> None:
            watched.opening = None
            if self._watched.get(path) is not watched or watched.users == 0:
                handle.close().addErrback(lambda _: None)
                return
            watched.handle = handle
            _settle(watched)

        def refused(failure: Any) -> None:
            watched.opening = None
            watched.gone = True
            error = failure.value
            code = error.code.name if isinstance(error, ChubbyError) else "UNAVAILABLE"
            message = error.message if isinstance(error, ChubbyError) else str(error)
            for stream in self._streams_of(path):
                stream.send("unwatched", {"path": path, "error": code, "message": message})
            _settle(watched)

        opening.addCallbacks(opened, refused)

    def _unsubscribe(self, stream: EventStream) -> None:
        self.streams.discard(stream)
        for path in stream.paths:
            watched = self._watched.get(path)
            if watched is None:
                continue
            watched.users -= 1
            if watched.users == 0:
                watched.closing = self.clock.callLater(LINGER_SECONDS, self._close, path)

    def _close(self, path: str) -> None:
        watched = self._watched.pop(path, None)
        if watched is not None and watched.handle is not None and not watched.handle.closed:
            watched.handle.close().addErrback(lambda _: None)

    def _streams_of(self, path: str) -> list[EventStream]:
        return [stream for stream in self.streams if path in stream.paths]

    def _event(self, event: SessionEvent) -> None:
        if event.kind is EventKind.MASTER_FAILOVER:
            self.broadcast("failover", {})
            return
        kind = CHANGE_KINDS.get(event.kind)
        if kind is None:
            return  # cache invalidations and lock conflicts are not the page's business
        if event.kind is EventKind.HANDLE_INVALID:
            watched = self._watched.get(event.path)
            if watched is not None:
                watched.handle, watched.gone = None, True
        for stream in self._streams_of(event.path):
            stream.send("change", {"path": event.path, "kind": kind})

    def _state(self, state: SessionState) -> None:
        self.broadcast("session", {"state": state.name.lower()})
        if state.final:
            self._session_ended()

    def _session_ended(self) -> None:
        """The client's session is over (expired: say, it fell behind on events), and its
        handles with it. The streams end; their pages reconnect (after the retry time),
        which opens the handles again in the client's next session."""
        for watched in self._watched.values():
            if watched.closing is not None and watched.closing.active():
                watched.closing.cancel()
        self._watched.clear()
        for stream in list(self.streams):
            stream.close()

    def broadcast(self, event: str, data: dict[str, Any]) -> None:
        for stream in list(self.streams):
            stream.send(event, data)

    def close(self) -> None:
        """The client is going: end every stream and forget every handle (closing the
        client closes them at the master)."""
        for watched in self._watched.values():
            if watched.closing is not None and watched.closing.active():
                watched.closing.cancel()
        self._watched.clear()
        for stream in list(self.streams):
            stream.send("logout", {})
            stream.close()
        self.cell.on_event.remove(self._event)
        self.cell.on_state.remove(self._state)


def _settle(watched: _Watched) -> None:
    callbacks, watched.settled = watched.settled, []
    for callback in callbacks:
        callback()


def refuse_stream(request: Request, code: str, message: str) -> None:
    """Answer a stream that may not open now as a stream of one ``refused`` event, then
    end it. A browser's EventSource neither retries after an answer other than 200 nor
    lets the page read why; this way the page's script reads the reason, shows it and
    tries again later (backing off); the ``retry`` line slows any other EventSource."""
    request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
    line = json.dumps(
        {"error": code, "message": message, "retry_seconds": REFUSED_RETRY_SECONDS},
        separators=(",", ":"),
    )
    request.write(
        f"retry: {REFUSED_RETRY_SECONDS * 1000}\n\nevent: refused\ndata: {line}\n\n".encode()
    )
    request.finish()


class StreamRefused(Exception):
    """A stream that may not open: `code` (an API error code) and why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class LiveUpdates:
    """Every event stream, the `Watches` of each client, and the bounds on both."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        streams_max: int,
        streams_per_owner_max: int,
        paths_per_stream_max: int,
    ) -> None:
        self._clock = clock
        self._streams_max = streams_max
        self._per_owner_max = streams_per_owner_max
        self.paths_per_stream_max = paths_per_stream_max
        self._watches: dict[str, Watches] = {}
        self._streams: set[EventStream] = set()
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock
        self._heartbeat.start(HEARTBEAT_SECONDS, now=False)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def check(self, owner: str, paths: Iterable[str]) -> tuple[str, ...]:
        """The paths of a stream `owner` may open now; `StreamRefused` past a bound."""
        wanted = tuple(dict.fromkeys(paths))
        if len(wanted) > self.paths_per_stream_max:
            raise StreamRefused(
                "BAD_REQUEST",
                f"{len(wanted)} paths to watch; at most {self.paths_per_stream_max} "
                "(web.watched_paths_per_stream_max)",
            )
        if len(self._streams) >= self._streams_max:
            raise StreamRefused(
                "RESOURCE_EXHAUSTED",
                f"too many live views on this page from everyone ({self._streams_max} open, "
                "web.event_streams_max): close a tab, or wait for others to close",
            )
        if sum(stream.owner == owner for stream in self._streams) >= self._per_owner_max:
            whose = "your login" if owner.startswith("login:") else "your address"
            raise StreamRefused(
                "RESOURCE_EXHAUSTED",
                f"too many live views from {whose} ({self._per_owner_max} open, "
                "web.event_streams_per_login_max): close a tab",
            )
        return wanted

    def open(
        self, request: Request, owner: str, client_key: str, cell: Cell, paths: tuple[str, ...]
    ) -> EventStream:
        """Start a stream for `owner` (a login, or an anonymous address) watching `paths`
        through `cell` (whose watches are kept under `client_key`); `check` first."""
        stream = EventStream(request, owner, paths)
        self._streams.add(stream)
        stream.ended.addCallback(lambda _: self._streams.discard(stream))
        watches = self._watches.get(client_key)
        if watches is None:
            watches = self._watches[client_key] = Watches(cell, self._clock)
        watches.subscribe(stream)
        return stream

    def client_gone(self, client_key: str) -> None:
        """The client kept under `client_key` is closing (its login ended)."""
        watches = self._watches.pop(client_key, None)
        if watches is not None:
            watches.close()

    def master_changed(self, master: str, epoch: int, previous: str | None) -> None:
        for stream in list(self._streams):
            stream.send("master", {"master": master, "epoch": epoch, "previous": previous})

    def _beat(self) -> None:
        for stream in list(self._streams):
            stream.heartbeat()

    def close(self) -> None:
        if self._heartbeat.running:
            self._heartbeat.stop()
        for key in list(self._watches):
            self.client_gone(key)
        for stream in list(self._streams):
            stream.close()
