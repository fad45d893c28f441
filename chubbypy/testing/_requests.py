"""The register workload's operations as the checkers see them: what a client asked and what
it was told, in its own terms (simulation only). What crosses the simulated network is the
wire protocol's own values (`chubbypy.protocol.client`)."""

from __future__ import annotations

import enum

from attrs import frozen

from chubbypy.protocol import NO_CLIENT, ClientId
from chubbypy.protocol.namespace import WriteResult


class OpKind(enum.Enum):
    REGISTER = "register"
    WRITE = "write"
    """Put a unique value into a register, through the log."""
    READ = "read"
    """Read a register from the master's memory under its lease: no log, no disk."""
    INCREMENT = "increment"
    """Read a counter from the master, then write it plus one, guarded by what was read."""


class ReplyStatus(enum.Enum):
    OK = "ok"
    CONFLICT = "conflict"
    """An increment whose guard failed: another write came first, nothing changed."""
    INDETERMINATE = "indeterminate"
    """The command may or may not have been applied, and the replicas can no longer tell."""
    UNAVAILABLE = "unavailable"
    """No master answered before the call's deadline: the outcome is unknown."""


@frozen
class Request:
    client: str
    op_id: int
    kind: OpKind
    client_id: ClientId = NO_CLIENT
    sequence: int = 0
    """The command's sequence (0 until it has one: an increment gets it for its write)."""
    key: str = ""
    value: int = 0
    """A write: the value written; an increment: the value it read (-1: absent)."""


@frozen
class Reply:
    op_id: int
    status: ReplyStatus
    value: int = 0
    """Write and increment: the value now in the register; read: its value (-1 if none);
    register: the new client id."""
    index: int = 0
    """Write and increment: the index through which the write is surely applied (its own
    entry's, or a later one for a retry answered from the client table); read: the master's
    applied index."""
    result: WriteResult | None = None
    """A write's result as the client was told it."""
