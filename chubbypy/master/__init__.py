"""The master's in-memory side of sessions, handles and locks (Chubby §2.4 to §2.9). Pure:
driven by client calls, ticks and applied log entries; outputs replies and proposals."""

from chubbypy.master._ids import CallToken, GateTicket
from chubbypy.master._results import (
    CallResult,
    ClientWrite,
    Done,
    HandleOpened,
    KeepAliveAnswered,
    LockGranted,
    LockSummary,
    LockWaiterSummary,
    NodeRead,
    Proposal,
    Reply,
    SequencerChecked,
    SessionEnding,
    SessionsListed,
    SessionStarted,
    SessionSummary,
)
from chubbypy.master._service import MasterService, MasterTiming

__all__ = [
    "CallResult",
    "CallToken",
    "ClientWrite",
    "Done",
    "GateTicket",
    "HandleOpened",
    "KeepAliveAnswered",
    "LockGranted",
    "LockSummary",
    "LockWaiterSummary",
    "MasterService",
    "MasterTiming",
    "NodeRead",
    "Proposal",
    "Reply",
    "SequencerChecked",
    "SessionEnding",
    "SessionStarted",
    "SessionSummary",
    "SessionsListed",
]
