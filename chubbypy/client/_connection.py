"""One framed connection to one replica: the hello, then requests matched to their replies.

Shell (STYLE §1, §6): a Twisted `Protocol` that turns bytes into `chubbypy.protocol.client`
messages with `FrameDecoder` and `decode_wire`, and back with `encode_wire` and
`encode_frame`. It makes no decisions about the cell (which replica is master, what to
retry); `chubbypy.client.Cell` does, over one `ReplicaConnection` per replica.

Theory of operation. The connecting side speaks first: `connectionMade` sends the `Hello`,
and callers wait for the `Welcome` with `when_welcomed`. A refusal before the welcome
(``ErrorReply`` for request 0: UNSUPPORTED_VERSION, WRONG_CELL) fails those waiters with
the matching `ChubbyError`, and so does a welcome for another version or another cell.
With credentials, the connection counts as welcomed only once its `Authenticate` (the
first request) was answered; a refusal fails the waiters with `PermissionDenied`.
Then `request` numbers each request (1, 2, 3, ... on this connection), keeps its Deferred
in `_pending` under that id, and the reply with the same id fires it, in whatever order
replies come. Each request has its own timeout on the injected clock; a reply that arrives
after its request timed out (or was cancelled) finds no entry and is dropped. When the
connection ends, for any reason, every request still pending fails with `ConnectionClosed`:
no caller waits for a reply that can no longer come. Bytes that are not a frame, or a frame
that is not a reply, mean the stream is lost: the connection is aborted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar, cast

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from chubbypy.client._addresses import display_address
from chubbypy.client._errors import ConnectionClosed, RequestTimedOut
from chubbypy.protocol.client import (
    INT64_MAX,
    NO_REQUEST,
    PROTOCOL_VERSION,
    Authenticate,
    Authenticated,
    ClientRequest,
    ConnectionRole,
    ErrorReply,
    Hello,
    MasterLocation,
    ReadReply,
    Registered,
    RequestId,
    ServerReply,
    SessionReply,
    StatusReply,
    Welcome,
    WriteReply,
)
from chubbypy.protocol.errors import (
    ChubbyError,
    FrameTooLarge,
    UnsupportedVersion,
    WrongCell,
    error_for,
)
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.values import ReplicaId
from chubbypy.protocol.wire import DecodeError, decode_wire, encode_wire

__all__ = ["FRAME_BYTES_MAX_DEFAULT", "REPLY_BYTES_MAX", "ReplicaConnection"]

FRAME_BYTES_MAX_DEFAULT: Final = 1 << 20
"""The cell's frame limit when no configuration says otherwise (``limits.frame_bytes_max``)."""
REPLY_BYTES_MAX: Final = 64 << 20
"""The largest reply frame accepted. Replies are not bound by the cell's frame limit (a full
directory page can exceed it), so this bound only stops a garbage length prefix."""

_T = TypeVar("_T")

MakeRequest = Callable[[RequestId], ClientRequest]
"""Builds a request once its id is known."""


class _Waiters(Generic[_T]):
    """Callers waiting for one outcome; each gets a Deferred of its own (which it may cancel)."""

    def __init__(self) -> None:
        self._waiting: list[Deferred[_T]] = []
        self._value: _T | None = None
        self._error: Exception | None = None
        self.done = False

    def wait(self) -> Deferred[_T]:
        if self._error is not None:
            return fail(self._error)
        if self.done:
            return succeed(cast(_T, self._value))
        waiter: Deferred[_T] = Deferred(canceller=self._waiting.remove)
        self._waiting.append(waiter)
        return waiter

    def fire(self, value: _T) -> None:
        if not self.done:
            self.done, self._value = True, value
            for waiter in self._take():
                waiter.callback(value)

    def fail(self, error: Exception) -> None:
        if not self.done:
            self.done, self._error = True, error
            for waiter in self._take():
                waiter.errback(error)

    def _take(self) -> list[Deferred[_T]]:
        waiting, self._waiting = self._waiting, []
        return waiting


class ReplicaConnection(Protocol):
    """A client connection to the replica at `address` of cell `cell`; see the module docstring.

    `clock` times requests out. `frame_bytes_max` is the cell's frame limit: a request whose
    frame would exceed it fails with `FrameTooLarge` here, since the replica would close the
    connection on it.
    """

    def __init__(
        self,
        clock: IReactorTime,
        address: str,
        cell: str,
        client_name: str,
        *,
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.address = address
        self._credentials = credentials
        self._shown = display_address(address)
        self._clock = clock
        self._hello = Hello(PROTOCOL_VERSION, cell, ConnectionRole.CLIENT, client_name)
        self._frame_bytes_max = frame_bytes_max
        self._decoder = FrameDecoder(max(frame_bytes_max, REPLY_BYTES_MAX))
        self._pending: dict[RequestId, Deferred[ServerReply]] = {}
        self._last_request_id = 0
        self._welcome: Welcome | None = None
        self._welcomed: _Waiters[ReplicaConnection] = _Waiters()
        self._closed: _Waiters[None] = _Waiters()
        self._dialing: Deferred[object] | None = None
        self._problem: str | None = None
        """Why this side ended the connection, or what the replica said before closing it."""

    def __repr__(self) -> str:
        return f"<ReplicaConnection {self.address} {self.replica_id or '(no welcome yet)'}>"

    # ------------------------------------------------------------------------- public

    @property
    def replica_id(self) -> ReplicaId | None:
        """The replica's id from its welcome; None before it."""
        return None if self._welcome is None else self._welcome.replica_id

    @property
    def is_closed(self) -> bool:
        """The connection has ended (or never opened): no request can be made on it."""
        return self._closed.done

    def dial(self, dialing: Deferred[object]) -> None:
        """Note the attempt to connect this protocol, so that a failure ends the connection
        and `abort` can cancel an attempt still under way."""
        self._dialing = dialing
        dialing.addCallbacks(self._dialed, self._dial_failed)

    def when_welcomed(self, timeout_seconds: float) -> Deferred[ReplicaConnection]:
        """Fires with this connection once the replica welcomed it.

        Fails with `UnsupportedVersion` or `WrongCell` if the replica refused the hello, with
        `ConnectionClosed` if the connection ended first, and with `RequestTimedOut` (after
        aborting the connection) if no welcome came within `timeout_seconds`.
        """
        waiter = self._welcomed.wait()
        if not waiter.called:
            waiter.addTimeout(timeout_seconds, self._clock, self._welcome_timed_out)
        return waiter

    def when_closed(self) -> Deferred[None]:
        """Fires once the connection has ended (at once if it already has)."""
        return self._closed.wait()

    def request(self, make: MakeRequest, timeout_seconds: float) -> Deferred[ServerReply]:
        """Send `make(request_id)` and fire with the reply of the same id.

        Fails with `RequestTimedOut` after `timeout_seconds`, `ConnectionClosed` if the
        connection ends first, and `FrameTooLarge` (nothing sent) for a request above the
        cell's frame limit. Cancelling the Deferred forgets the request.
        """
        assert self._welcome is not None, "request before the welcome"
        if self.is_closed or self.transport is None:
            return fail(self._closed_error())
        assert self._last_request_id < INT64_MAX
        self._last_request_id += 1
        request_id = RequestId(self._last_request_id)
        body = encode_wire(make(request_id))
        if len(body) > self._frame_bytes_max:
            return fail(
                FrameTooLarge(
                    f"request of {len(body)} bytes is above the cell's frame limit of "
                    f"{self._frame_bytes_max} bytes"
                )
            )

        def forget(_: Deferred[ServerReply]) -> None:
            self._pending.pop(request_id, None)

        def timed_out(result: ServerReply | Failure, _timeout: float) -> ServerReply | Failure:
            if isinstance(result, Failure) and isinstance(result.value, CancelledError):
                raise RequestTimedOut(
                    f"{self._shown}: no reply to request {request_id} within {timeout_seconds:g} s"
                )
            return result

        reply: Deferred[ServerReply] = Deferred(forget)
        self._pending[request_id] = reply
        self._transport().write(encode_frame(body))

        reply.addTimeout(timeout_seconds, self._clock, timed_out)
        return reply

    def abort(self, problem: str) -> None:
        """End the connection at once (or stop connecting); pending requests fail."""
        if self._problem is None:
            self._problem = problem
        if self.is_closed:
            return
        if self.transport is not None:
            transport = self._transport()
            # TCP transports can drop unsent data at once; others only close in order.
            getattr(transport, "abortConnection", transport.loseConnection)()
        elif self._dialing is not None:
            self._dialing.cancel()
        else:
            self._ended()

    def close(self) -> None:
        """End the connection after sending what is written; pending requests fail."""
        if self.transport is None or self.is_closed:
            self.abort("closed by the client")
        else:
            self._problem = self._problem or "closed by the client"
            self._transport().loseConnection()

    # ------------------------------------------------------------------------- Twisted

    def connectionMade(self) -> None:
        self._transport().write(encode_frame(encode_wire(self._hello)))

    def dataReceived(self, data: bytes) -> None:
        try:
            bodies = self._decoder.feed(data)
        except ChubbyError as error:
            self.abort(f"bad frame from the replica: {error.message}")
            return
        for body in bodies:
            if self.is_closed or self._problem is not None:
                return
            try:
                message = decode_wire(body)
            except DecodeError as error:
                self.abort(f"unreadable message from the replica: {error}")
                return
            self._message_received(message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._problem is None:
            self._problem = reason.getErrorMessage()
        self._ended()

    # ------------------------------------------------------------------------- events

    def _message_received(self, message: object) -> None:
        match message:
            case Welcome() if self._welcome is None:
                self._welcome_received(message)
            case ErrorReply() if message.request_id == NO_REQUEST and self._welcome is None:
                self._hello_refused(message)
            case ErrorReply() if message.request_id == NO_REQUEST:
                # The replica found a frame of ours malformed and closes the connection.
                self._problem = f"the replica reported {message.code.name}: {message.message}"
            case (
                MasterLocation()
                | Registered()
                | WriteReply()
                | ReadReply()
                | StatusReply()
                | SessionReply()
                | Authenticated()
                | ErrorReply()
            ) if self._welcome is not None:
                self._reply_received(message)
            case _:
                self.abort(f"unexpected {type(message).__name__} from the replica")

    def _welcome_received(self, welcome: Welcome) -> None:
        refusal: ChubbyError | None = None
        if welcome.version != PROTOCOL_VERSION:
            refusal = UnsupportedVersion(
                f"{self._shown} speaks protocol version {welcome.version}; "
                f"this client speaks {PROTOCOL_VERSION}"
            )
        elif welcome.cell != self._hello.cell:
            refusal = WrongCell(
                f"{self._shown} serves cell {welcome.cell!r}, not {self._hello.cell!r}"
            )
        if refusal is not None:
            self._welcomed.fail(refusal)
            self.abort(refusal.message)
            return
        self._welcome = welcome
        if self._credentials is None:
            self._welcomed.fire(self)
            return
        principal, token = self._credentials
        authenticating = self.request(lambda rid: Authenticate(rid, principal, token), 3600.0)
        authenticating.addCallbacks(self._authenticated, self._authentication_failed)

    def _authenticated(self, reply: ServerReply) -> None:
        if isinstance(reply, Authenticated):
            self._welcomed.fire(self)
            return
        if isinstance(reply, ErrorReply):
            error = error_for(reply.code, f"{self._shown}: {reply.message}")
        else:
            error = ChubbyError(f"unexpected {type(reply).__name__} to Authenticate")
        self._welcomed.fail(error)
        self.abort(error.message)

    def _authentication_failed(self, failure: Failure) -> None:
        self._welcomed.fail(failure.value)  # type: ignore[arg-type]

    def _hello_refused(self, reply: ErrorReply) -> None:
        error = error_for(reply.code, f"{self._shown} refused the hello: {reply.message}")
        self._welcomed.fail(error)
        self.abort(error.message)

    def _reply_received(self, reply: ServerReply) -> None:
        waiting = self._pending.pop(reply.request_id, None)
        if waiting is not None:  # else: a late reply to a request that timed out
            waiting.callback(reply)

    def _dialed(self, result: object) -> object:
        self._dialing = None
        return result

    def _dial_failed(self, failure: Failure) -> None:
        self._dialing = None
        reason = self._problem or failure.getErrorMessage()
        self._problem = f"cannot connect: {reason}"
        self._ended()

    def _welcome_timed_out(
        self, result: ReplicaConnection | Failure, timeout: float
    ) -> ReplicaConnection | Failure:
        if isinstance(result, Failure) and isinstance(result.value, CancelledError):
            problem = f"no welcome within {timeout:g} s"
            self.abort(problem)
            raise RequestTimedOut(f"{self._shown}: {problem}")
        return result

    # ------------------------------------------------------------------------- helpers

    def _transport(self) -> ITransport:
        assert self.transport is not None
        return self.transport

    def _ended(self) -> None:
        """The connection is over: fail everyone still waiting on it."""
        error = self._closed_error()
        pending, self._pending = self._pending, {}
        for reply in pending.values():
            reply.errback(error)
        self._welcomed.fail(error)
        self._closed.fire(None)

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(f"{self._shown}: {self._problem or 'connection closed'}")
