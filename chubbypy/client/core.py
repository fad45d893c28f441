"""The client library's sans-IO core, for drivers: the Twisted client and the simulator.

Pure (STYLE §1): nothing here reads a clock, draws a random number or touches a socket.
Time comes in as local seconds, randomness and rare paths from a `chubbypy.paxos.Chance`.

* `ClientSession` (`chubbypy.client._session_core`): one session's states, local lease,
  KeepAlives, events, cache and handle presentation. Inputs are methods named after what
  happened; each returns `SessionOutput` values to carry out.
* `MasterCall` with `CellView` and `CallSettings` (`chubbypy.client._calls`): one call
  carried to the cell's master, with its retries across fail-overs. Inputs return the next
  `CallStep`: `SendRequest`, `AskLocations`, `Pause`, then `Finished` or `Failed`.
* `SessionState` and its transition table (`chubbypy.client._state`), `ClientCache`
  (`chubbypy.client._cache`), the deliberate bugs (`ClientBug`) and the chance sites.

A driver owns connections (or simulated links) and timers, and does what the outputs say.
"""

from chubbypy.client._cache import CachedNode, ClientCache
from chubbypy.client._calls import (
    ALIVE_SECONDS,
    DROP_AFTER_SEND,
    FINAL_CONNECT_ERRORS,
    REDIRECTS_MAX,
    RESEND_EARLY,
    RETRIED_CODES,
    AskLocations,
    CallSettings,
    CallStep,
    CellView,
    Failed,
    Finished,
    Located,
    LocationRound,
    MasterCall,
    NotLocated,
    Pause,
    SendRequest,
    SendTimes,
)
from chubbypy.client._errors import (
    CellClosed,
    ConnectionClosed,
    ReplicaUnreachable,
    RequestTimedOut,
)
from chubbypy.client._session_core import (
    KEEPALIVE_LATE,
    AcquireTiming,
    Admission,
    CheckLeaseAt,
    ClientBug,
    ClientSession,
    EventDelivered,
    HandleKey,
    KeepAliveAt,
    ParkedHandle,
    PresentHandle,
    ReadFromMaster,
    SendClose,
    SendKeepAlive,
    SessionOutput,
    SessionSettings,
    StateChanged,
    acquire_outcome_unknown,
    blocking_acquire,
    local_lease_end,
)
from chubbypy.client._state import TRANSITIONS, SessionInput, SessionState, next_state

CHANCE_SITES = (DROP_AFTER_SEND, RESEND_EARLY, KEEPALIVE_LATE)
"""Every place the core asks `chance.buggify`."""

__all__ = [
    "ALIVE_SECONDS",
    "CHANCE_SITES",
    "DROP_AFTER_SEND",
    "FINAL_CONNECT_ERRORS",
    "KEEPALIVE_LATE",
    "REDIRECTS_MAX",
    "RESEND_EARLY",
    "RETRIED_CODES",
    "TRANSITIONS",
    "AcquireTiming",
    "Admission",
    "AskLocations",
    "CachedNode",
    "CallSettings",
    "CallStep",
    "CellClosed",
    "CellView",
    "CheckLeaseAt",
    "ClientBug",
    "ClientCache",
    "ClientSession",
    "ConnectionClosed",
    "EventDelivered",
    "Failed",
    "Finished",
    "HandleKey",
    "KeepAliveAt",
    "Located",
    "LocationRound",
    "MasterCall",
    "NotLocated",
    "ParkedHandle",
    "Pause",
    "PresentHandle",
    "ReadFromMaster",
    "ReplicaUnreachable",
    "RequestTimedOut",
    "SendClose",
    "SendKeepAlive",
    "SendRequest",
    "SendTimes",
    "SessionInput",
    "SessionOutput",
    "SessionSettings",
    "SessionState",
    "StateChanged",
    "acquire_outcome_unknown",
    "blocking_acquire",
    "local_lease_end",
    "next_state",
]
