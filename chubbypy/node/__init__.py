"""One replica of a cell as a pure, sans-IO node: the Paxos core, the replicated database and
the master's services, driven by input values (ticks, peer messages, decoded client
requests, "durable write done") and answering with output values (persist this, send these,
answer that). The Twisted server and the simulator drive the same node."""

from chubbypy.node._auth_guard import AuthLimits
from chubbypy.node._backup_file import (
    BackupError,
    BackupHeader,
    RestoredCell,
    encode_backup,
    read_backup,
    restore_state,
)
from chubbypy.node._log_budget import LogBudget, left_out_suffix
from chubbypy.node._metrics import Counter, Histogram, Registry
from chubbypy.node._node import ReplicaNode
from chubbypy.node._outputs import (
    Answer,
    ConnectionId,
    Disconnect,
    EntryApplied,
    EventHappened,
    Note,
    NoteLevel,
    Output,
    Persist,
    SendChecksum,
    SendPeer,
)
from chubbypy.node._settings import (
    ANONYMOUS,
    ANSWER_LOST,
    DISCONNECT,
    KEEPALIVE_LATE,
    Auth,
    ClientLimits,
    NodeBug,
    NodeSettings,
    handle_key_for,
)

__all__ = [
    "ANONYMOUS",
    "ANSWER_LOST",
    "DISCONNECT",
    "KEEPALIVE_LATE",
    "Answer",
    "Auth",
    "AuthLimits",
    "BackupError",
    "BackupHeader",
    "ClientLimits",
    "ConnectionId",
    "Counter",
    "Disconnect",
    "EntryApplied",
    "EventHappened",
    "Histogram",
    "LogBudget",
    "NodeBug",
    "NodeSettings",
    "Note",
    "NoteLevel",
    "Output",
    "Persist",
    "Registry",
    "ReplicaNode",
    "RestoredCell",
    "SendChecksum",
    "SendPeer",
    "encode_backup",
    "handle_key_for",
    "left_out_suffix",
    "read_backup",
    "restore_state",
]
