"""Clients of a chubbypy cell: `Cell` over Twisted, and `BlockingCell` for synchronous code.

Shell (STYLE §1, §6). `Cell` finds the master, follows fail-overs and retries writes exactly
once (see `chubbypy.client._cell`); `ReplicaConnection` is its framed connection to one
replica; `BlockingCell` (made by `connect`) runs a `Cell` on a reactor in a background
thread. `Session` holds a Chubby session (KeepAlives, jeopardy, expiry) and opens `Handle`s
that take locks and give sequencers. Operating errors raise the `chubbypy.protocol.errors`
classes (`NoSuchNode`, `NodeExists`, `GenerationMismatch`, `Unavailable`, ...); the
namespace values these operations take and return (`Stat`, `Contents`, `AclNames`, the
MultiOp tests and writes) are in `chubbypy.protocol.namespace`.
"""

from chubbypy.client._addresses import client_endpoint_string, display_address
from chubbypy.client._cell import Cell, Dialer, ReplicaReport, endpoint_dialer
from chubbypy.client._connection import ReplicaConnection
from chubbypy.client._errors import (
    CellClosed,
    ConnectionClosed,
    ReplicaUnreachable,
    RequestTimedOut,
)
from chubbypy.client._session import Handle, Session, SessionState
from chubbypy.client.blocking import BlockingCell, connect

__all__ = [
    "BlockingCell",
    "Cell",
    "CellClosed",
    "ConnectionClosed",
    "Dialer",
    "Handle",
    "ReplicaConnection",
    "ReplicaReport",
    "ReplicaUnreachable",
    "RequestTimedOut",
    "Session",
    "SessionState",
    "client_endpoint_string",
    "connect",
    "display_address",
    "endpoint_dialer",
]
