"""What a replica node asks its driver to do, as values.

Pure. After every input the driver takes the node's outputs (`ReplicaNode.take`) and carries
them out **in order**: that order is the Ready contract (STYLE §1). A `Persist` is the one
asynchronous output: the driver starts the write, and tells the node `durable_written` once
it is durable; until then the node holds back everything that depends on it (it emits no
further `Persist`, and the messages of the Ready being written come only after).
"""

from __future__ import annotations

import enum
from typing import NewType

from attrs import frozen

from chubbypy.paxos import ChecksumTaken, Durable, Outcome, ReplicaEvent
from chubbypy.protocol import Entry, Envelope, ReplicaId
from chubbypy.protocol.client import ChecksumReport, ServerReply

ConnectionId = NewType("ConnectionId", int)
"""The driver's name for one client connection, unique among the live ones."""


@frozen
class Persist:
    """Make `durable` durable (one transaction, one fsync), then call `durable_written`."""

    durable: Durable


@frozen
class SendPeer:
    """Send a Paxos message to a peer; losing it is allowed (the core resends what matters)."""

    envelope: Envelope


@frozen
class SendChecksum:
    """Tell the master our state checksum at a CHECKSUM entry (Paxos Made Live §6.2)."""

    recipient: ReplicaId
    report: ChecksumReport


@frozen
class Answer:
    """Send `reply` on client connection `connection` (a no-op if it has gone)."""

    connection: ConnectionId
    reply: ServerReply


@frozen
class Disconnect:
    """Close client connection `connection` (its calls in progress are abandoned)."""

    connection: ConnectionId


class NoteLevel(enum.Enum):
    INFO = "info"
    WARN = "warn"
    CRITICAL = "critical"


@frozen
class Note:
    """Something an operator should be able to read in the log, with why."""

    level: NoteLevel
    text: str


@frozen
class EntryApplied:
    """The node applied `entry` with these results (for observers: the simulator's checkers)."""

    entry: Entry
    results: tuple[Outcome | ChecksumTaken, ...]


@frozen
class EventHappened:
    """The Paxos core reported `event` (for observers; the driver may also log it)."""

    event: ReplicaEvent


Output = (
    Persist | SendPeer | SendChecksum | Answer | Disconnect | Note | EntryApplied | EventHappened
)
