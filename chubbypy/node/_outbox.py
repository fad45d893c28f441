"""Where a node's parts put what the driver must do, in the order they decided it. Pure.

Every part of the node (the node itself, the clients' writes, the master's services) is
given the same `Outbox` when the node is built, so that outputs keep one order and error
replies are made, counted and hinted in one place.
"""

from __future__ import annotations

from chubbypy.node._metrics import Counter
from chubbypy.node._outputs import Answer, ConnectionId, Note, NoteLevel, Output
from chubbypy.paxos import Replica
from chubbypy.protocol import ReplicaId
from chubbypy.protocol.client import ERROR_MESSAGE_CHARS_MAX, ErrorReply, RequestId, ServerReply
from chubbypy.protocol.errors import ErrorCode


class Outbox:
    """The node's outputs so far; see the module docstring."""

    def __init__(self, replica_id: ReplicaId, core: Replica, errors: Counter) -> None:
        self._replica_id = replica_id
        self._core = core
        self._errors = errors
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

    def warn_once(self, connection: ConnectionId, kind: str, text: str) -> None:
        """A WARN note, for the first refusal of its `kind` on the connection only: a client
        that sends a flood of refused requests must not flood the log as well."""
        warned = self._warned.setdefault(connection, set())
        if kind not in warned:
            warned.add(kind)
            self.note(NoteLevel.WARN, f"{text} (more on this connection go unlogged)")

    def connection_closed(self, connection: ConnectionId) -> None:
        self._warned.pop(connection, None)

    def master(self) -> ReplicaId | None:
        """The master as this replica believes it (itself while it serves)."""
        if self._core.serving:
            return self._replica_id
        hint = self._core.master_hint()
        return hint if hint != self._replica_id else None
