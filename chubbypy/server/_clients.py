"""The client port: a Chubby client's connection to any replica, and the limits that hold
under floods (issue 13).

Shell side. The first frame must be a Hello for this cell and protocol version; then the
client sends requests and gets replies tagged with its request ids, which the replica's
node answers (`chubbypy.node`: who is master, who the connection acts as, what it may do).

Theory of operation. `ClientPort` is the port's factory and the keeper of its limits:

* **Connections.** At most `connections_max` client connections are open at once (checked
  against the process's descriptor limit at start, `fit_to_descriptor_limit`, so the
  peers, the admin port and the store always have descriptors left). One past it gets an
  error frame (BUSY, naming the key) and is closed; the client library retries later or
  elsewhere.
* **The Hello.** Until its Hello is welcomed a connection may send only a Hello: its frames
  may be at most `hello_frame_bytes_max` bytes (cut one at a time, so a request sent right
  behind the Hello is held to the greeted limit, `frame_bytes_max`), and a frame of any
  other kind is refused from its tag, its body never decoded. After it, only requests,
  each decoded only as far as its `request_arrays_max`-th array: a frame of tiny arrays
  costs msgpack about a second a MiB, and no request needs so many.
* **Time-outs.** A connection must say hello within `hello_timeout_seconds`; a frame, once
  its first byte arrived, must be whole within `frame_timeout_seconds` (while we read);
  a greeted connection with no request in progress that sends nothing for
  `idle_timeout_seconds` is closed (the client library dials again when it next needs the
  replica; a session's connection to the master always has its KeepAlive in progress, so
  it is never idle), and so is one whose requests are held because its client has read
  none of its replies for as long. Each closes with an error frame saying why, and then,
  if the other side does not read it, is aborted `CLOSE_GRACE_SECONDS` later. A sweep
  every `SWEEP_SECONDS` looks at every connection's deadline.
* **Turns.** Frames are queued per connection as they arrive, and taken round-robin over
  the connections, at most `requests_per_turn` and `bytes_per_turn` bytes (a request's
  frame and the replies written at once) per reactor turn, and at least one request (the
  next turn is a zero-delay call, so timers and peers run in between: decoding a large
  frame of tiny items takes about a second a MiB, so a turn must not take many). A
  connection whose frames wait for a later turn stops being read (back-pressure:
  `transport.pauseProducing`) until its queue is empty, so what a connection has queued
  is bounded by one read.
* **Pipelining.** A connection may have at most `requests_pending_max` requests handed to
  the node and not yet answered; past it, its frames wait and it is not read until
  answers go out. A connection whose replies its client does not read (the transport's
  write buffer is full: it pauses us as its producer) is not read either, and once the
  replies it has written since then reach `reply_bytes_buffered_max` (or those of every
  connection together reach `reply_bytes_buffered_total_max`) none of its waiting
  requests is handled until the buffer has drained (the transport resumes us): a client
  that never reads costs at most that much memory, not a reply for every request it sent.

The reactor (`chubbypy.server._reactor`) serves the client connections after the peers,
a bounded number per turn (`demote`). Every limit has a metric on the admin port.
"""

from __future__ import annotations

import resource
from collections import deque
from collections.abc import Callable
from typing import Final

from attrs import evolve, frozen
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure
from zope.interface import implementer

from chubbypy.config import LimitsConfig
from chubbypy.node import ConnectionId, Histogram
from chubbypy.protocol.client import (
    NO_REQUEST,
    PROTOCOL_VERSION,
    Authenticate,
    ConnectionRole,
    Hello,
    LocateMaster,
    ReadRequest,
    Register,
    ServerReply,
    SessionRequest,
    StatusRequest,
    Welcome,
    WireMessage,
    WriteRequest,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.session import HandleWrite, ReadNode
from chubbypy.protocol.wire import Expected, expecting
from chubbypy.server._framed import FramedProtocol, ShellWarnings
from chubbypy.server._shell import ReplicaServer

__all__ = [
    "CLOSE_GRACE_SECONDS",
    "DESCRIPTORS_RESERVED",
    "SWEEP_SECONDS",
    "ClientConnection",
    "ClientPort",
    "ClientPortLimits",
    "client_factory",
    "fit_to_descriptor_limit",
]

LATENCY_KINDS: Final = {
    "read": "ReadRequest, a session's ReadNode",
    "write": "WriteRequest, a session's HandleWrite",
}
"""The requests timed, by kind. Not the calls that wait by design (a KeepAlive is held
until near its lease's end, an acquire until the lock is free) nor the rest."""
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip


def latency_kind(message: WireMessage) -> str | None:
    """Which of `LATENCY_KINDS` request `message` is timed as, or None."""
    match message:
        case ReadRequest() | SessionRequest(call=ReadNode()):
            return "read"
        case WriteRequest() | SessionRequest(call=HandleWrite()):
            return "write"
        case _:
            return None


_REQUESTS = (
    LocateMaster,
    StatusRequest,
    Authenticate,
    ReadRequest,
    WriteRequest,
    Register,
    SessionRequest,
)
_EXPECTING_HELLO: Final = expecting("a Hello (and nothing else before the Welcome)", Hello)

SWEEP_SECONDS: Final = 0.5
"""How often every connection's time-outs are checked."""
CLOSE_GRACE_SECONDS: Final = 2.0
"""How long a connection closed for a time-out has to read its error frame before it is
aborted (a client that reads nothing must not hold the descriptor)."""
DESCRIPTORS_RESERVED: Final = 256
"""File descriptors kept for everything but client connections: peer connections both
ways, admin requests, the store's files, the log, the reactor's own."""

log = Logger()


_CONFIGURED: Final = LimitsConfig()
"""The cell file's defaults, which are this port's: one place holds each number."""


@frozen
class ClientPortLimits:
    """The client port's limits, from the cell file's ``limits:`` (`from_config`)."""

    connections_max: int = _CONFIGURED.client_connections_max
    hello_timeout_seconds: float = _CONFIGURED.hello_timeout_seconds
    frame_timeout_seconds: float = _CONFIGURED.frame_timeout_seconds
    idle_timeout_seconds: float = _CONFIGURED.idle_timeout_seconds
    requests_pending_max: int = _CONFIGURED.requests_pending_per_connection_max
    requests_per_turn: int = _CONFIGURED.client_requests_per_turn
    bytes_per_turn: int = _CONFIGURED.client_bytes_per_turn
    request_arrays_max: int = _CONFIGURED.request_arrays_max
    frame_bytes_max: int = _CONFIGURED.frame_bytes_max
    hello_frame_bytes_max: int = _CONFIGURED.hello_frame_bytes_max
    reply_bytes_buffered_max: int = _CONFIGURED.reply_bytes_buffered_max
    reply_bytes_buffered_total_max: int = _CONFIGURED.reply_bytes_buffered_total_max
    log_lines_per_minute: int = _CONFIGURED.log_lines_per_minute

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> ClientPortLimits:
        return cls(
            connections_max=limits.client_connections_max,
            hello_timeout_seconds=limits.hello_timeout_seconds,
            frame_timeout_seconds=limits.frame_timeout_seconds,
            idle_timeout_seconds=limits.idle_timeout_seconds,
            requests_pending_max=limits.requests_pending_per_connection_max,
            requests_per_turn=limits.client_requests_per_turn,
            bytes_per_turn=limits.client_bytes_per_turn,
            request_arrays_max=limits.request_arrays_max,
            frame_bytes_max=limits.frame_bytes_max,
            hello_frame_bytes_max=limits.hello_frame_bytes_max,
            reply_bytes_buffered_max=limits.reply_bytes_buffered_max,
            reply_bytes_buffered_total_max=limits.reply_bytes_buffered_total_max,
            log_lines_per_minute=limits.log_lines_per_minute,
        )


def fit_to_descriptor_limit(
    connections_max: int,
    limits: Callable[[], tuple[int, int]] = lambda: resource.getrlimit(resource.RLIMIT_NOFILE),
    raise_to: Callable[[int, int], None] = lambda soft, hard: resource.setrlimit(
        resource.RLIMIT_NOFILE, (soft, hard)
    ),
) -> tuple[int, int, str | None]:
    """The client connections this process can hold, its descriptor limit, and a warning
    if that is fewer than `connections_max`: the soft limit (RLIMIT_NOFILE) is raised
    towards the hard one if it must be, and `DESCRIPTORS_RESERVED` are kept for the rest."""
    soft, hard = limits()
    needed = connections_max + DESCRIPTORS_RESERVED
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        if target > soft:
            try:
                raise_to(target, hard)
                soft = target
            except (ValueError, OSError):
                pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return connections_max, soft, None
    fitting = max(1, soft - DESCRIPTORS_RESERVED if soft > 2 * DESCRIPTORS_RESERVED else soft // 2)
    warning = (
        f"limits.client_connections_max is {connections_max}, but this process may open only "
        f"{soft} file descriptors (RLIMIT_NOFILE, hard limit {hard}) and keeps "
        f"{DESCRIPTORS_RESERVED} for peers, the admin port and the store: serving at most "
        f"{fitting} client connections (raise the limit, e.g. ulimit -n, or lower the key)"
    )
    return fitting, soft, warning


class ClientPort(Factory):
    """The client port's connections, their limits and their turns; see the module
    docstring."""

    noisy = False

    def __init__(self, server: ReplicaServer, reactor: IReactorTime, limits: ClientPortLimits):
        self.server = server
        self.reactor = reactor
        self.limits = limits
        self.expecting_requests = expecting(
            "a client request",
            *_REQUESTS,
            containers_max=limits.request_arrays_max,
            containers_named="limits.request_arrays_max",
        )
        """What a greeted connection may send."""
        self.connections: set[ClientConnection] = set()
        """The connections admitted (under the limit) and not yet closed."""
        self._ready: deque[ClientConnection] = deque()
        self._running = False
        self._spent = 0
        self._spent_bytes = 0
        self._full = False
        """Whether this turn left requests for the next (counted once per turn)."""
        self.unread_bytes = 0
        """Reply bytes written to connections whose clients do not keep up (each
        connection's `unread_bytes`, summed)."""
        self._unread_over = False
        """Whether `unread_bytes` is past its limit (counted once each time it passes)."""
        self._turn: IDelayedCall | None = None
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = reactor
        self.descriptor_limit = 0
        self._define_metrics()
        self.warnings = ShellWarnings(
            limits.log_lines_per_minute, reactor.seconds, self.left_out, f"{server.replica_id}: "
        )

    def buildProtocol(self, addr: IAddress | None) -> ClientConnection:
        connection = ClientConnection(self)
        connection.factory = self
        return connection

    def startFactory(self) -> None:
        if not self._sweeper.running:
            self._sweeper.start(SWEEP_SECONDS, now=False)

    def stopFactory(self) -> None:
        if self._sweeper.running:
            self._sweeper.stop()
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None

    def now(self) -> float:
        return self.reactor.seconds()

    # ------------------------------------------------------------------ connections

    def admit(self, connection: ClientConnection) -> bool:
        """Whether `connection` may be served: under the limit it counts from now on;
        past it, it is refused with a BUSY frame naming the key."""
        if len(self.connections) < self.limits.connections_max:
            self.connections.add(connection)
            demote = getattr(self.reactor, "demote", None)
            selectable = _selectable_of(connection)
            if demote is not None and selectable is not None:
                demote(selectable)
            return True
        self._refused.inc()
        limit = self.limits.connections_max
        self.warnings.warn(
            "connection-limit",
            f"refusing a client connection from {connection.peer_name()}: {limit} are open "
            "(limits.client_connections_max)",
        )
        connection.close_with(
            ErrorCode.BUSY,
            f"this replica serves {limit} client connections already "
            "(limits.client_connections_max): try again later, or another replica",
        )
        self.abort_later(connection)
        return False

    def closed(self, connection: ClientConnection) -> None:
        self.connections.discard(connection)

    def abort_later(self, connection: ClientConnection) -> None:
        """Abort `connection` if it is still open after `CLOSE_GRACE_SECONDS`."""
        self.reactor.callLater(CLOSE_GRACE_SECONDS, connection.abort)

    # ------------------------------------------------------------------ turns

    def queued(self, connection: ClientConnection) -> None:
        """`connection` has frames waiting: take them now if this turn's budget allows,
        else in later turns."""
        if not connection.in_turns and connection.ready():
            connection.in_turns = True
            self._ready.append(connection)
        if not self._running:
            self._run()

    def _run(self) -> None:
        self._running = True
        by_bytes = False
        try:
            while self._ready and self._spent < self.limits.requests_per_turn:
                connection = self._ready.popleft()
                connection.in_turns = False
                if not connection.ready():
                    continue
                if self._spent and (
                    self._spent_bytes + connection.next_frame_bytes() > self.limits.bytes_per_turn
                ):
                    connection.in_turns = True
                    self._ready.appendleft(connection)
                    by_bytes = True
                    break
                self._spent_bytes += connection.take()
                self._spent += 1
                if connection.ready() and not connection.in_turns:
                    connection.in_turns = True
                    self._ready.append(connection)
        finally:
            self._running = False
        if self._ready and not self._full:
            self._full = True
            self._deferred.inc()
            if by_bytes:
                self._deferred_by_bytes.inc()
        if self._spent and self._turn is None:
            self._turn = self.reactor.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._turn = None
        self._spent = 0
        self._spent_bytes = 0
        self._full = False
        self._run()

    # ------------------------------------------------------------------ unread replies

    def unread_changed(self, change: int) -> None:
        """A connection's unread reply bytes changed by `change`: keep the sum, and count
        each time it passes its limit."""
        self.unread_bytes += change
        assert self.unread_bytes >= 0, self.unread_bytes
        over = self.unread_bytes >= self.limits.reply_bytes_buffered_total_max
        if over and not self._unread_over:
            self._held.inc(limit="reply_bytes_buffered_total_max")
        self._unread_over = over

    def requests_held(self, limit: str) -> None:
        """Count a connection's requests held by its own limit on unread replies."""
        self._held.inc(limit=limit)

    def unread_over(self) -> bool:
        """Whether the reply bytes unread on all connections together are past their limit."""
        return self._unread_over

    # ------------------------------------------------------------------ time-outs

    def _sweep(self) -> None:
        now = self.now()
        expired = [(c, why) for c in self.connections if (why := c.expired(now)) is not None]
        for connection, (kind, code, message) in expired:
            self._timeouts.inc(kind=kind)
            connection.time_out(kind, code, message)

    # ------------------------------------------------------------------ metrics

    def _define_metrics(self) -> None:
        m = self.server.node.metrics
        limits = self.limits
        m.gauge(
            "chubbypy_client_connections",
            "Client connections open (admitted under limits.client_connections_max).",
            lambda: [((), float(len(self.connections)))],
        )
        m.gauge(
            "chubbypy_client_connections_max",
            "The client connections this replica serves at most (after the fd limit).",
            lambda: [((), float(self.limits.connections_max))],
        )
        m.gauge(
            "chubbypy_descriptor_limit",
            "The process's file descriptor limit (RLIMIT_NOFILE), as raised at start.",
            lambda: [((), float(self.descriptor_limit))],
        )
        self._refused = m.counter(
            "chubbypy_client_connections_refused_total",
            "Client connections refused past limits.client_connections_max.",
        )
        self._timeouts = m.counter(
            "chubbypy_client_timeouts_total",
            "Client connections closed for a time-out: hello (no Hello in "
            f"{limits.hello_timeout_seconds:g} s), frame (a frame not finished in "
            f"{limits.frame_timeout_seconds:g} s), idle (nothing in "
            f"{limits.idle_timeout_seconds:g} s), unread (requests held for replies unread "
            f"for {limits.idle_timeout_seconds:g} s).",
            labelled=True,
        )
        self.paused = m.counter(
            "chubbypy_client_reads_paused_total",
            "Times a client connection stopped being read: requests (frames wait for a "
            "later turn, or limits.requests_pending_per_connection_max requests are in "
            "progress), replies (its client does not read its replies).",
            labelled=True,
        )
        m.gauge(
            "chubbypy_client_connections_paused",
            "Client connections not being read now (back-pressure).",
            lambda: [((), float(sum(1 for c in self.connections if c.paused)))],
        )
        self._deferred = m.counter(
            "chubbypy_client_turns_full_total",
            "Reactor turns that used limits.client_requests_per_turn (or "
            "client_bytes_per_turn) and left client requests for the next turn.",
        )
        self._deferred_by_bytes = m.counter(
            "chubbypy_client_turns_bytes_full_total",
            "Reactor turns that used limits.client_bytes_per_turn (requests' frames and the "
            "replies written at once) and left client requests for the next turn.",
        )
        m.gauge(
            "chubbypy_client_reply_bytes_unread",
            "Reply bytes written to client connections whose transport's buffer is full "
            "(their clients do not keep up), summed (limits.reply_bytes_buffered_total_max).",
            lambda: [((), float(self.unread_bytes))],
        )
        m.gauge(
            "chubbypy_client_connections_held",
            "Client connections whose requests are not handled until their client reads its "
            "replies (limits.reply_bytes_buffered_max, reply_bytes_buffered_total_max).",
            lambda: [((), float(sum(1 for c in self.connections if c.held())))],
        )
        self._held = m.counter(
            "chubbypy_client_requests_held_total",
            "Times client requests were held because replies went unread past a limit: "
            "one connection's (reply_bytes_buffered_max) or all of them together "
            "(reply_bytes_buffered_total_max).",
            labelled=True,
        )
        m.counter_view(
            "chubbypy_client_reads_deferred_total",
            "Reactor turns that read limits.client_reads_per_turn client connections and "
            "left ready ones for the next turn (peers are always read first).",
            lambda: float(getattr(self.reactor, "client_events_deferred", 0)),
        )
        turn_seconds = getattr(self.reactor, "turn_seconds", None)
        if isinstance(turn_seconds, Histogram):
            m.add(turn_seconds)
        self.latency = {
            kind: m.histogram(
                f"chubbypy_client_{kind}_seconds",
                f"Time from a client's {kind} request being taken from its connection to its "
                f"reply being written ({LATENCY_KINDS[kind]}): what a client waits, less the "
                "network and its own queue.",
                LATENCY_BUCKETS,
            )
            for kind in LATENCY_KINDS
        }
        self.left_out = m.counter(
            "chubbypy_shell_log_lines_left_out_total",
            "Warnings about client connections that the log budget left out, by kind.",
            labelled=True,
        )


def _selectable_of(connection: ClientConnection) -> object | None:
    """The file descriptor object under a connection's transport (through a TLS layer)."""
    transport: object | None = connection.transport
    for _ in range(3):
        if transport is None or (hasattr(transport, "fileno") and hasattr(transport, "doRead")):
            return transport
        transport = getattr(transport, "transport", None)
    return None


@implementer(IPushProducer)
class ClientConnection(FramedProtocol):
    """One client's connection; see the module docstring."""

    log = Logger()

    def __init__(self, port: ClientPort) -> None:
        super().__init__(port.limits.frame_bytes_max)
        self.limit_frames(
            port.limits.hello_frame_bytes_max,
            "limits.hello_frame_bytes_max: nothing but a Hello before the Welcome",
            one_at_a_time=True,
        )
        self._port = port
        self._server = port.server
        self.warnings = port.warnings
        self._connection: ConnectionId | None = None
        self.open = True
        self.in_turns = False
        """Whether the port has this connection in its round of turns."""
        self._waiting: deque[bytes] = deque()
        self._pending = 0
        """Requests handed to the node and not yet answered."""
        self._timed: dict[int, tuple[float, str]] = {}
        """Of those, the ones timed (`latency_kind`): when each was handed on, its kind."""
        self._paused: set[str] = set()
        self._opened_at = self._active_at = port.now()
        self._frame_started_at: float | None = None
        self.unread_bytes = 0
        """Reply bytes written since the transport said its write buffer was full (zero
        once it has drained)."""
        self._full_since: float | None = None
        """When the transport said its write buffer was full (None: it has drained)."""

    # ------------------------------------------------------------------ Twisted

    def connectionMade(self) -> None:
        if self._port.admit(self) and self.transport is not None:
            self.transport.registerProducer(self, True)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self._clock_frame()

    def _clock_frame(self) -> None:
        """Start a frame's clock when its first bytes are in; stop it when none are."""
        if self.pending_bytes == 0:
            self._frame_started_at = None
        elif self._frame_started_at is None:
            self._frame_started_at = self._port.now()

    def frames_waiting(self) -> bool:
        return bool(self._waiting)

    def frames_received(self, frames: list[bytes]) -> None:
        if not frames:
            return
        self._active_at = self._port.now()
        self._waiting.extend(frames)
        self._port.queued(self)
        if self._waiting and not self.closing():
            self._pause("requests")

    def connectionLost(self, reason: TwistedFailure = connectionDone) -> None:
        super().connectionLost(reason)
        self.open = False
        self._waiting.clear()
        self._replies_drained()
        self._port.closed(self)
        if self._connection is not None:
            self._server.connection_closed(self._connection)

    # IPushProducer: the transport asks us to stop while its write buffer is full.

    def pauseProducing(self) -> None:
        if self._full_since is None:
            self._full_since = self._port.now()
        self._pause("replies")

    def resumeProducing(self) -> None:
        held = self.held()
        self._replies_drained()
        self._resume("replies")
        if held and self._waiting:
            self._port.queued(self)

    def stopProducing(self) -> None:
        self._waiting.clear()

    # ------------------------------------------------------------------ turns

    def ready(self) -> bool:
        """Whether a frame waits and may be taken now."""
        return (
            bool(self._waiting)
            and self.open
            and not self.closing()
            and self._pending < self._port.limits.requests_pending_max
            and not self.held()
        )

    def held(self) -> bool:
        """Whether this connection's requests wait for its client to read its replies: those
        written since its transport's buffer filled are past this connection's limit, or
        past all connections' limit together."""
        return self.unread_bytes > 0 and (
            self.unread_bytes >= self._port.limits.reply_bytes_buffered_max
            or self._port.unread_over()
        )

    def next_frame_bytes(self) -> int:
        """The size of the next waiting frame (one must wait)."""
        return len(self._waiting[0])

    def take(self) -> int:
        """Handle the next waiting frame; the bytes that cost (its own, and the replies
        written at once)."""
        body = self._waiting.popleft()
        sent = self.bytes_sent
        self.body_received(body)
        if not self._waiting:
            self._resume("requests")
        return len(body) + self.bytes_sent - sent

    def expected(self) -> Expected:
        return _EXPECTING_HELLO if self._connection is None else self._port.expecting_requests

    def message_received(self, message: WireMessage) -> None:
        # `expected` let through only a Hello, then only requests.
        if self._connection is None:
            assert isinstance(message, Hello), message
            self._hello(message)
        else:
            assert isinstance(message, _REQUESTS), message
            self._pending += 1
            kind = latency_kind(message)
            if kind is not None:  # at most requests_pending_max: each is answered
                self._timed[message.request_id] = (self._port.now(), kind)
            self._server.request(self._connection, message)

    def reply(self, message: ServerReply) -> None:
        if self.open:
            sent = self.bytes_sent
            self.send(message)
            if self._full_since is not None:
                self._replies_unread(self.bytes_sent - sent)
        if message.request_id == NO_REQUEST or self._pending == 0:
            return
        timed = self._timed.pop(message.request_id, None)
        if timed is not None:
            began, kind = timed
            self._port.latency[kind].observe(self._port.now() - began)
        self._pending -= 1
        if self._pending == 0:
            self._active_at = self._port.now()
        if self._waiting and self._pending == self._port.limits.requests_pending_max - 1:
            self._port.queued(self)

    def disconnect(self) -> None:
        """The node closes this connection (after its last answers, already written)."""
        self._closing = True
        self._waiting.clear()
        if self.transport is not None:
            self.transport.loseConnection()
            self._port.abort_later(self)

    def abort(self) -> None:
        if self.open and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ time-outs

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    def expired(self, now: float) -> tuple[str, ErrorCode, str] | None:
        """Which time-out has passed at `now`, if any: its kind, code and message."""
        limits = self._port.limits
        if self.closing() or not self.open:
            return None
        # A Hello that arrived but waits for its turn was sent in time: only the client's
        # own slowness counts.
        hello_late = self._connection is None and not self._waiting
        if hello_late and now - self._opened_at >= limits.hello_timeout_seconds:
            seconds = limits.hello_timeout_seconds
            message = f"no Hello within {seconds:g} s (limits.hello_timeout_seconds)"
            return "hello", ErrorCode.BAD_REQUEST, message
        started = self._frame_started_at
        if (
            started is not None
            and not self._paused
            and now - started >= limits.frame_timeout_seconds
        ):
            seconds = limits.frame_timeout_seconds
            message = (
                f"a frame begun {now - started:.1f} s ago is not finished "
                f"({self.pending_bytes} bytes so far; limits.frame_timeout_seconds is {seconds:g})"
            )
            return "frame", ErrorCode.BAD_REQUEST, message
        if (
            self._connection is not None
            and self._pending == 0
            and not self._waiting
            and started is None
            and now - self._active_at >= limits.idle_timeout_seconds
        ):
            seconds = limits.idle_timeout_seconds
            message = f"nothing received for {seconds:g} s (limits.idle_timeout_seconds)"
            return "idle", ErrorCode.UNAVAILABLE, message
        full_since = self._full_since
        if (
            full_since is not None
            and self.held()
            and now - full_since >= limits.idle_timeout_seconds
        ):
            seconds = limits.idle_timeout_seconds
            message = (
                f"{self.unread_bytes} bytes of replies unread, none read for {seconds:g} s "
                "(limits.reply_bytes_buffered_max, limits.idle_timeout_seconds)"
            )
            return "unread", ErrorCode.UNAVAILABLE, message
        return None

    def time_out(self, kind: str, code: ErrorCode, message: str) -> None:
        self.warnings.warn(
            f"timeout-{kind}", f"closing client connection from {self.peer_name()}: {message}"
        )
        self._waiting.clear()
        self.close_with(code, message)
        self._port.abort_later(self)

    # ------------------------------------------------------------------ helpers

    def _pause(self, reason: str) -> None:
        if reason in self._paused:
            return
        if not self._paused and self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._paused.add(reason)
        self._port.paused.inc(reason=reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._paused:
            return
        self._paused.discard(reason)
        if not self._paused and self.transport is not None and not self.closing():
            self.transport.resumeProducing()  # type: ignore[attr-defined]
            # A frame's clock stops while we do not read; it starts again from here.
            if self.pending_bytes:
                self._frame_started_at = self._port.now()

    def _replies_unread(self, written: int) -> None:
        """`written` more reply bytes behind a full write buffer: counted, and the
        connection held once they pass its limit."""
        was_held = self.held()
        self.unread_bytes += written
        self._port.unread_changed(written)
        if not was_held and self.unread_bytes >= self._port.limits.reply_bytes_buffered_max:
            self._port.requests_held("reply_bytes_buffered_max")

    def _replies_drained(self) -> None:
        """The write buffer drained (or the connection is gone): nothing is unread."""
        self._port.unread_changed(-self.unread_bytes)
        self.unread_bytes = 0
        self._full_since = None

    def _hello(self, message: Hello) -> None:
        cell = self._server.config.cell
        if message.version != PROTOCOL_VERSION:
            self.refuse(
                ErrorCode.UNSUPPORTED_VERSION,
                f"this replica speaks protocol {PROTOCOL_VERSION}, not {message.version}",
            )
        elif message.cell != cell:
            self.refuse(ErrorCode.WRONG_CELL, f"this is cell {cell!r}, not {message.cell!r}")
        elif message.role is not ConnectionRole.CLIENT:
            self.refuse(ErrorCode.BAD_REQUEST, "this is the client port; peers use the peer port")
        else:
            self._active_at = self._port.now()
            self._connection = self._server.connection_opened(self, self.peer_name())
            self.send(Welcome(PROTOCOL_VERSION, cell, self._server.replica_id))
            # Requests may follow, as large as any frame: cut those already received.
            self.limit_frames(
                self._port.limits.frame_bytes_max, "limits.frame_bytes_max", one_at_a_time=False
            )
            self.cut_received()
            self._clock_frame()


def client_factory(server: ReplicaServer, reactor: IReactorTime) -> ClientPort:
    """The client port's factory, with the cell file's limits (its connection limit
    fitted to the process's descriptor limit, with a warning if it had to be lowered)."""
    limits = ClientPortLimits.from_config(server.config.limits)
    fitting, descriptors, warning = fit_to_descriptor_limit(limits.connections_max)
    if warning is not None:
        log.warn("{replica}: {warning}", replica=server.replica_id, warning=warning)
        limits = evolve(limits, connections_max=fitting)
    port = ClientPort(server, reactor, limits)
    port.descriptor_limit = descriptors
    return port
