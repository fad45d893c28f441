"""Where a node's parts put what the driver must do, in the order they decided it. Pure.

Every part of the node (the node itself, the clients' writes, the master's services) is
given the same `Outbox` when the node is built, so that outputs keep one order and error
replies are made, counted and hinted in one place. Every warning a client can cause goes
through the node's `LogBudget` here (`warn_limited`, `warn_once`).
"""

from __future__ import annotations

from chubbypy.node._log_budget import LogBudget, left_out_suffix
from chubbypy.node._metrics import Counter
from chubbypy.node._outputs import Answer, ConnectionId, Note, NoteLevel, Output
from chubbypy.paxos import Replica
from chubbypy.protocol import ReplicaId
from chubbypy.protocol.client import ERROR_MESSAGE_CHARS_MAX, ErrorReply, RequestId, ServerReply
from chubbypy.protocol.errors import ErrorCode


class Outbox:
    """The node's outputs so far; see the module docstring."""

    def __init__(
        self, replica_id: ReplicaId, core: Replica, errors: Counter, log_budget: LogBudget
    ) -> None:
        self._replica_id = replica_id
        self._core = core
        self._errors = errors
        self._log_budget = log_budget
        self._outputs: list[Output] = []
        self._warned: dict[ConnectionId, set[str]] = {}
        """The kinds of refusal already noted on each open connection (`warn_once`)."""

    def put(self, output: Output) -> None:
        self._outputs.append(output)

    def take(self) -> list[Output]:
        outputs, self._outputs = self._outputs, []
        return outputs

    def answer(self, connection: ConnectionId, reply: ServerReply) -> None:
        self._outputs.append(Answer(connection, reply))

    def refuse(
        self, connection: ConnectionId, request_id: RequestId, code: ErrorCode, message: str
    ) -> None:
        """Answer `request_id` with an operating error (and, for NOT_MASTER, who is master)."""
        self.answer(connection, self.error(request_id, code, message))

    def error(self, request_id: RequestId, code: ErrorCode, message: str) -> ErrorReply:
        self._errors.inc(code=code.name.lower())
        hint = self.master() if code is ErrorCode.NOT_MASTER else None
        return ErrorReply(request_id, code, message[:ERROR_MESSAGE_CHARS_MAX], hint)

    def note(self, level: NoteLevel, text: str, *, separator: str = ": ") -> None:
        """A log line about this replica: its id, `separator`, `text`."""
        self._outputs.append(Note(level, f"{self._replica_id}{separator}{text}"))

    def warn_limited(self, kind: str, text: str) -> None:
        """A WARN note, unless lines of its `kind` exceed the log budget (then it is only
        counted, and the next one let through says how many were left out): a client must
        not be able to flood the log (issue 13)."""
        left_out = self._log_budget.admit(kind, self._core.tick_count)
        if left_out is not None:
            self.note(NoteLevel.WARN, text + left_out_suffix(left_out))

    def warn_once(self, connection: ConnectionId, kind: str, text: str) -> None:
        """A WARN note, for the first refusal of its `kind` on the connection only, within
        the log budget (`warn_limited`): a client that sends a flood of refused requests,
        or many connections that send one each, must not flood the log as well."""
        warned = self._warned.setdefault(connection, set())
        if kind not in warned:
            warned.add(kind)
            self.warn_limited(kind, f"{text} (more on this connection go unlogged)")

    def connection_closed(self, connection: ConnectionId) -> None:
        self._warned.pop(connection, None)

    def master(self) -> ReplicaId | None:
        """The master as this replica believes it (itself while it serves)."""
        if self._core.serving:
            return self._replica_id
        hint = self._core.master_hint()
        return hint if hint != self._replica_id else None
