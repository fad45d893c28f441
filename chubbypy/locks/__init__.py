"""Locks (Chubby §2.4). Pure: the lock state of a node, the functions that change it, and
sequencers."""

from chubbypy.locks._lock import (
    FREE,
    LOCK_DELAY_MS_MAX,
    Granted,
    Holder,
    LockState,
    acquire,
    conflict,
    end_delay,
    release,
    session_ended,
)
from chubbypy.locks._queue import LockKey, LockQueues, Waiter
from chubbypy.locks._sequencer import Sequencer, decode_sequencer
from chubbypy.protocol.namespace import LockMode
from chubbypy.protocol.session import SEQUENCER_BYTES_MAX

__all__ = [
    "FREE",
    "LOCK_DELAY_MS_MAX",
    "SEQUENCER_BYTES_MAX",
    "Granted",
    "Holder",
    "LockKey",
    "LockMode",
    "LockQueues",
    "LockState",
    "Sequencer",
    "Waiter",
    "acquire",
    "conflict",
    "decode_sequencer",
    "end_delay",
    "release",
    "session_ended",
]
