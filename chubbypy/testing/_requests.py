"""What simulated clients and replicas say to each other (simulation only, never on a wire)."""

from __future__ import annotations

import enum

from attrs import frozen

from chubbypy.protocol import NO_CLIENT, ClientId


class OpKind(enum.Enum):
    REGISTER = "register"
    WRITE = "write"
    """Put a unique value into a register, through the log."""
    READ = "read"
    """Read a register from the master's memory under its lease: no log, no disk."""
    INCREMENT = "increment"
    """The master reads a counter and proposes counter + 1: a decision made on master state,
    the case the epoch guard exists for."""


class ReplyStatus(enum.Enum):
    OK = "ok"
    NOT_MASTER = "not master"
    BUSY = "busy"
    """Try again shortly (overloaded, or the key has an increment in flight)."""
    RETRY = "retry"
    """The command was refused without effect (its epoch ended): send it again."""
    INDETERMINATE = "indeterminate"
    """The command may or may not have been applied, and the replicas can no longer tell."""


@frozen
class Request:
    client: str
    op_id: int
    kind: OpKind
    client_id: ClientId = NO_CLIENT
    sequence: int = 0
    key: str = ""
    value: int = 0


@frozen
class Reply:
    op_id: int
    status: ReplyStatus
    value: int = 0
    """Write and increment: the value now in the register; read: its value (-1 if none);
    register: the new client id."""
    index: int = 0
    """Write and increment: the log index applied at; read: the master's applied index."""
    hint: str | None = None
    """Who the replica believes is master, on NOT_MASTER."""
