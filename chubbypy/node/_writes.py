"""Clients' commands in the log: proposing them, and answering each from its outcome. Pure.

A client's write (and a registration) is proposed as a `Command` named by
`(client id, sequence)` (a registration: `(NO_CLIENT, nonce)`). Every request waiting for a
command is kept under that name, because a client may ask again on another connection, or
the same command may come back from the log twice (a retry proposed again). When the
applier reports the command's `Outcome`, every request waiting for it is answered from it,
whether this replica proposed it or not: exactly-once is the applier's business (its
client table), and this is only the post office. A registration is answered with the
client's credential, which its writes must show (`chubbypy.sessions.client_credential`),
and only to the principal that owns the client (the registration's payload, the owner
the applier reports): a request from another principal with the same nonce (read from
the log, say) is refused PERMISSION_DENIED (`registered`).
When the replica stops serving, whatever is still in flight may yet be chosen; its
requests are answered NOT_MASTER and the clients retry elsewhere with the same name, so
the cell applies each command once.
"""

from __future__ import annotations

from attrs import frozen

from chubbypy.node._metrics import Counter
from chubbypy.node._outbox import Outbox
from chubbypy.node._outputs import ConnectionId
from chubbypy.node._settings import ANSWER_LOST, NodeBug
from chubbypy.paxos import Chance, Outcome, OutcomeKind, RefusalReason, Replica
from chubbypy.protocol import NO_CLIENT, ClientId, Command, LogIndex
from chubbypy.protocol.client import ErrorReply, Registered, RequestId, ServerReply, WriteReply
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import Written
from chubbypy.protocol.namespace_codec import decode_result
from chubbypy.sessions import client_credential

_Name = tuple[ClientId, int]
"""A command's name: (client id, sequence), or (NO_CLIENT, nonce) for a registration."""

REFUSALS: dict[RefusalReason, ErrorCode] = {
    RefusalReason.NOT_MASTER: ErrorCode.NOT_MASTER,
    RefusalReason.EPOCH_CHANGED: ErrorCode.EPOCH_CHANGED,
    RefusalReason.OVERLOADED: ErrorCode.BUSY,
    RefusalReason.TOO_LARGE: ErrorCode.TOO_LARGE,
}
"""How the core's refusal of a proposal is told to the client."""


@frozen
class _Waiter:
    connection: ConnectionId
    request_id: RequestId
    owner: bytes = b""
    """A registration's: the principal asking (as a registration's payload)."""


class ClientWrites:
    """Clients' commands proposed, and the requests waiting for them; see the module docstring."""

    def __init__(
        self,
        core: Replica,
        outbox: Outbox,
        chance: Chance,
        *,
        proposals: Counter,
        operations: Counter,
        handle_key: bytes,
        bugs: frozenset[NodeBug] = frozenset(),
    ) -> None:
        self._core = core
        self._handle_key = handle_key
        """The key of registered clients' credentials (`client_credential`)."""
        self._outbox = outbox
        self._chance = chance
        self._proposals = proposals
        self._operations = operations
        self._bugs = bugs
        self._waiting: dict[_Name, list[_Waiter]] = {}

    @property
    def waiting(self) -> int:
        """Requests waiting for their command's outcome (for /metrics)."""
        return sum(len(waiters) for waiters in self._waiting.values())

    def propose(self, connection: ConnectionId, request_id: RequestId, command: Command) -> bool:
        """Propose `command` for the request; False if the core refused it (answered)."""
        refused = self._core.propose([command], self._core.epoch)
        if refused is not None:
            code = REFUSALS[refused.reason]
            self._outbox.refuse(connection, request_id, code, refused.reason.value)
            return False
        name = (command.client_id, command.sequence)
        owner = command.payload if command.client_id == NO_CLIENT else b""
        self._waiting.setdefault(name, []).append(_Waiter(connection, request_id, owner))
        self._proposals.inc()
        if NodeBug.ANSWER_BEFORE_APPLIED in self._bugs and command.client_id != NO_CLIENT:
            self._answer_optimistically(name)
        return True

    def join(
        self, connection: ConnectionId, request_id: RequestId, name: _Name, owner: bytes = b""
    ) -> bool:
        """If the command `name` is in flight, the request (a registration's: of `owner`)
        waits for its outcome too (a retry costs no second proposal); False if it is not
        in flight."""
        waiting = self._waiting.get(name)
        if waiting is None:
            return False
        waiting.append(_Waiter(connection, request_id, owner))
        return True

    def registered(
        self,
        connection: ConnectionId,
        request_id: RequestId,
        client: ClientId,
        owner: bytes,
        asking: bytes,
    ) -> None:
        """Answer a retried registration, asked for by `asking`, whose client (owned by
        `owner`) the table keeps."""
        self._outbox.answer(connection, self._registered(request_id, client, owner, asking))

    def _registered(
        self, request_id: RequestId, client: ClientId, owner: bytes, asking: bytes
    ) -> Registered | ErrorReply:
        """The client's id and credential if `asking` owns it; else PERMISSION_DENIED, which
        says nothing of the client (an owner recorded as nothing, before owners were, owns
        nothing: no principal is empty)."""
        if owner != asking:
            message = "this nonce registered another principal's client: register with a fresh one"
            return self._error(request_id, ErrorCode.PERMISSION_DENIED, message)
        return Registered(request_id, client, client_credential(client, self._handle_key))

    def outcome(self, outcome: Outcome) -> None:
        """The applier's outcome of a command: answer everyone waiting for it."""
        registration = outcome.kind is OutcomeKind.REGISTERED
        name = (NO_CLIENT if registration else outcome.client_id, outcome.sequence)
        if NodeBug.ROUTE_TO_WRONG_REQUEST in self._bugs:
            name = self._oldest_waiting(name)
        for waiter in self._waiting.pop(name, []):
            reply = self._reply(waiter, outcome)
            if isinstance(reply, WriteReply) and self._chance.buggify(ANSWER_LOST):
                continue  # applied; the client hears nothing and asks again
            self._outbox.answer(waiter.connection, reply)

    def stepped_down(self) -> None:
        """Mastership ended: whatever is in flight goes elsewhere (it may still be chosen)."""
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for waiter in waiters:
                self._outbox.refuse(
                    waiter.connection, waiter.request_id, ErrorCode.NOT_MASTER, "stepped down"
                )

    def _reply(self, waiter: _Waiter, outcome: Outcome) -> ServerReply:
        request_id = waiter.request_id
        match outcome.kind:
            case OutcomeKind.REGISTERED:
                return self._registered(request_id, outcome.client_id, outcome.owner, waiter.owner)
            case OutcomeKind.APPLIED | OutcomeKind.DUPLICATE:
                self._operations.inc(op="write")
                result = decode_result(outcome.result)
                return WriteReply(request_id, outcome.index, result)  # type: ignore[arg-type]
            case OutcomeKind.EPOCH_CHANGED:
                return self._error(request_id, ErrorCode.EPOCH_CHANGED, "retry")
            case OutcomeKind.UNKNOWN_CLIENT:
                return self._error(request_id, ErrorCode.UNKNOWN_CLIENT, "register again")
            case OutcomeKind.STALE_SEQUENCE:
                return self._error(request_id, ErrorCode.STALE_REQUEST, "result forgotten")
        raise AssertionError(outcome.kind)

    def _error(self, request_id: RequestId, code: ErrorCode, message: str) -> ErrorReply:
        return self._outbox.error(request_id, code, message)

    # ------------------------------------------------------------------ deliberate bugs

    def _answer_optimistically(self, name: _Name) -> None:
        """NodeBug.ANSWER_BEFORE_APPLIED: claim the write done, at the next free index."""
        guess = LogIndex(self._core.status().last_index + 1)
        for waiter in self._waiting.pop(name, []):
            reply = WriteReply(waiter.request_id, guess, Written(None))
            self._outbox.answer(waiter.connection, reply)

    def _oldest_waiting(self, name: _Name) -> _Name:
        """NodeBug.ROUTE_TO_WRONG_REQUEST: assume outcomes come back in the order their
        commands were proposed here, and answer the oldest waiting request (wrong whenever
        another master's or another replica's commands are in the log too)."""
        return next(iter(self._waiting), name)
