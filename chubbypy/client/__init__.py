"""Clients of a chubbypy cell: one core over Twisted, with asyncio and blocking front ends.

Shell (STYLE §1, §6). Three front ends, one set of method names:

* `Cell` (this package): Twisted; every call returns a Deferred.
* `chubbypy.client.aio.connect` gives an `AsyncCell`: the same calls as coroutines, for an
  asyncio program (or one running Twisted's asyncio reactor).
* `chubbypy.client.blocking.connect` (also `chubbypy.client.connect`) gives a
  `BlockingCell`: the same calls as plain blocking calls, for scripts and threads.

A cell client finds the master, follows fail-overs and retries writes exactly once (see
`chubbypy.client._cell`). Plain calls on the cell (`get_contents_and_stat`, `create`,
`set_contents`, ...) need no session; `open` gives a `Handle` in the cell's `Session`
(KeepAlives, jeopardy, expiry, the consistent cache), through which a program takes locks
with sequencers, hears of events and writes fenced. `Cell.lock` holds a lock for a block
of code (`Lock`, `Held`); `Election` elects a leader on a lock file. Operating errors raise
the `chubbypy.protocol.errors` classes (`NoSuchNode`, `NodeExists`, `GenerationMismatch`,
`Unavailable`, ...); the namespace values these calls take and return (`Stat`, `Contents`,
`AclNames`, the MultiOp tests and writes) are in `chubbypy.protocol.namespace`. Operators
see sessions (`Cell.list_sessions`, `SessionInfo`) and locks (`Cell.lock_info`, `LockInfo`)
and may end a session (`Cell.end_session`, `SessionEnding`) or take a snapshot of the
whole database for a backup (`Cell.snapshot`, `CellSnapshot`), and list and change the
cell's membership (`Cell.members`, `MemberList`; `Cell.change_membership` with `AddLearner`,
`Promote` or `Remove`, answered by `MembershipDone`).
"""

from chubbypy.client._addresses import client_endpoint_string, display_address
from chubbypy.client._cell import Cell
from chubbypy.client._connection import ReplicaConnection
from chubbypy.client._election import Election, Leadership
from chubbypy.client._errors import (
    CellClosed,
    ConnectionClosed,
    LockLost,
    LockTimeout,
    NotLeader,
    OutcomeUnknown,
    ReplicaUnreachable,
    RequestTimedOut,
)
from chubbypy.client._lock import Held, Lock
from chubbypy.client._plain_cell import Dialer, ReplicaReport, endpoint_dialer
from chubbypy.client._session import Handle, Session
from chubbypy.client._snapshot import CellSnapshot
from chubbypy.client._state import SessionState
from chubbypy.client._streams import EventStream, StreamOverflow
from chubbypy.client.blocking import (
    BlockingCell,
    BlockingElection,
    BlockingHandle,
    BlockingHeld,
    BlockingLock,
    BlockingStream,
    connect,
)
from chubbypy.protocol.namespace import AclNames, Contents, DirEntry, Listing, Stat
from chubbypy.protocol.session import (
    AddLearner,
    EventKind,
    EventMask,
    HandleMode,
    LockHolderInfo,
    LockInfo,
    LockWaiterInfo,
    MemberInfo,
    MemberList,
    MembershipDone,
    Promote,
    Remove,
    SessionEnding,
    SessionEvent,
    SessionInfo,
)

__all__ = [
    "AclNames",
    "AddLearner",
    "BlockingCell",
    "BlockingElection",
    "BlockingHandle",
    "BlockingHeld",
    "BlockingLock",
    "BlockingStream",
    "Cell",
    "CellClosed",
    "CellSnapshot",
    "ConnectionClosed",
    "Contents",
    "Dialer",
    "DirEntry",
    "Election",
    "EventKind",
    "EventMask",
    "EventStream",
    "Handle",
    "HandleMode",
    "Held",
    "Leadership",
    "Listing",
    "Lock",
    "LockHolderInfo",
    "LockInfo",
    "LockLost",
    "LockTimeout",
    "LockWaiterInfo",
    "MemberInfo",
    "MemberList",
    "MembershipDone",
    "NotLeader",
    "OutcomeUnknown",
    "Promote",
    "Remove",
    "ReplicaConnection",
    "ReplicaReport",
    "ReplicaUnreachable",
    "RequestTimedOut",
    "Session",
    "SessionEnding",
    "SessionEvent",
    "SessionInfo",
    "SessionState",
    "Stat",
    "StreamOverflow",
    "client_endpoint_string",
    "connect",
    "display_address",
    "endpoint_dialer",
]
