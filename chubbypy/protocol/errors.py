"""Operating errors: the expected failures, each with a wire code and a client exception class.

Part of `chubbypy.protocol` (STYLE §9). The core returns these as values (`Failure`), the
server sends them as codes, and the client raises the matching `ChubbyError` subclass, so a
caller catches `NoSuchNode` whether the error came from this process or a replica.
"""

from __future__ import annotations

import enum

from attrs import frozen


@enum.unique  # two codes of one value would silently be one (say, after a merge)
class ErrorCode(enum.IntEnum):
    """Every operating error that crosses the wire. Values are stable: never renumber."""

    # The namespace (expected outcomes of operations on nodes).
    NO_SUCH_NODE = 1
    EXISTS = 2
    NOT_A_DIRECTORY = 3
    IS_A_DIRECTORY = 4
    NOT_EMPTY = 5
    GENERATION_MISMATCH = 6
    TOO_LARGE = 7
    INVALID_NAME = 8
    PERMISSION_DENIED = 9
    GUARD_FAILED = 10
    """Reserved. (A MultiOp whose branch fails part-way reports the failing operation's own
    code, with its position in the message; nothing in the branch is applied.)"""

    # Locks and sessions (Chubby §2.4, §2.8).
    LOCK_HELD = 11
    """The lock is held in a conflicting mode (or this handle holds it already)."""
    LOCK_NOT_HELD = 12
    """A release or sequencer request through a handle that does not hold the lock."""
    LOCK_DELAYED = 13
    """The lock is free but in lock-delay after its holder's session expired."""
    SESSION_EXPIRED = 14
    """The session ended (expired or closed); its handles, locks and ephemeral nodes are gone."""
    INVALID_SEQUENCER = 15
    """A sequencer that does not name a lock held now in its mode at its generation."""
    SESSION_REQUIRED = 16
    """The operation belongs to a session (an ephemeral node, a lock) and was made without one."""
    INVALID_HANDLE = 17
    """Not a handle of this cell, or one that was closed or poisoned."""

    # The cell (where and whether an operation can run now).
    NOT_MASTER = 20
    """This replica is not the serving master; the reply names the master if it knows one."""
    EPOCH_CHANGED = 21
    """The master changed before the operation was committed; it had no effect. Retry."""
    BUSY = 22
    """The master is overloaded; retry after a pause."""
    UNKNOWN_CLIENT = 23
    """The client's registration is gone (evicted or never made); register again."""
    STALE_REQUEST = 24
    """A retry of a command whose outcome the cell no longer remembers."""
    UNAVAILABLE = 25
    """The cell cannot serve now (no quorum, no master)."""
    RESOURCE_EXHAUSTED = 26
    """A configured limit on what one connection or one principal may hold (live client
    registrations, live sessions) is reached; the message names the limit and its key.
    Not retried: asking again changes nothing until something is given back."""
    SNAPSHOT_GONE = 27
    """The master no longer holds the snapshot a backup was reading (a fail-over, a newer
    snapshot taken meanwhile, or it was left idle too long): start the backup again."""
    MEMBERSHIP_BUSY = 28
    """Another membership change is in progress: one at a time. Try again once it is done."""
    NOT_CAUGHT_UP = 29
    """The learner to promote has not caught up with the master (or not acknowledged it
    lately): promoting it now would leave the cell one failure from stopping."""
    MEMBERSHIP_INVALID = 30
    """The change cannot follow the cell's membership (an unknown or existing id, too few
    voters, too many learners, a removal that leaves too few live voters): the message
    says which."""
    VERSION_CHANGED = 31
    """The membership is no longer at the version the change was asked for (``--if-version``)."""

    # The wire (malformed or unacceptable input; the connection is closed after the reply).
    BAD_REQUEST = 40
    FRAME_TOO_LARGE = 41
    UNSUPPORTED_VERSION = 42
    UNKNOWN_MESSAGE = 43
    WRONG_CELL = 44
    INTERNAL = 50


@frozen
class Failure:
    """An operating error as a value: its code and a sentence for humans."""

    code: ErrorCode
    message: str


class ChubbyError(Exception):
    """Base of every operating error a client can catch."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, master_hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.master_hint = master_hint


class NoSuchNode(ChubbyError):
    code = ErrorCode.NO_SUCH_NODE


class NodeExists(ChubbyError):
    code = ErrorCode.EXISTS


class NotADirectory(ChubbyError):
    code = ErrorCode.NOT_A_DIRECTORY


class IsADirectory(ChubbyError):
    code = ErrorCode.IS_A_DIRECTORY


class NotEmpty(ChubbyError):
    code = ErrorCode.NOT_EMPTY


class GenerationMismatch(ChubbyError):
    code = ErrorCode.GENERATION_MISMATCH


class TooLarge(ChubbyError):
    code = ErrorCode.TOO_LARGE


class InvalidName(ChubbyError):
    code = ErrorCode.INVALID_NAME


class PermissionDenied(ChubbyError):
    code = ErrorCode.PERMISSION_DENIED


class GuardFailed(ChubbyError):
    code = ErrorCode.GUARD_FAILED


class LockHeld(ChubbyError):
    code = ErrorCode.LOCK_HELD


class LockNotHeld(ChubbyError):
    code = ErrorCode.LOCK_NOT_HELD


class LockDelayed(ChubbyError):
    code = ErrorCode.LOCK_DELAYED


class SessionExpired(ChubbyError):
    code = ErrorCode.SESSION_EXPIRED


class InvalidSequencer(ChubbyError):
    code = ErrorCode.INVALID_SEQUENCER


class SessionRequired(ChubbyError):
    code = ErrorCode.SESSION_REQUIRED


class InvalidHandle(ChubbyError):
    code = ErrorCode.INVALID_HANDLE


class NotMaster(ChubbyError):
    code = ErrorCode.NOT_MASTER


class EpochChanged(ChubbyError):
    code = ErrorCode.EPOCH_CHANGED


class Busy(ChubbyError):
    code = ErrorCode.BUSY


class UnknownClient(ChubbyError):
    code = ErrorCode.UNKNOWN_CLIENT


class StaleRequest(ChubbyError):
    code = ErrorCode.STALE_REQUEST


class Unavailable(ChubbyError):
    code = ErrorCode.UNAVAILABLE


class ResourceExhausted(ChubbyError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class SnapshotGone(ChubbyError):
    code = ErrorCode.SNAPSHOT_GONE


class MembershipBusy(ChubbyError):
    code = ErrorCode.MEMBERSHIP_BUSY


class NotCaughtUp(ChubbyError):
    code = ErrorCode.NOT_CAUGHT_UP


class MembershipInvalid(ChubbyError):
    code = ErrorCode.MEMBERSHIP_INVALID


class VersionChanged(ChubbyError):
    code = ErrorCode.VERSION_CHANGED


class BadRequest(ChubbyError):
    code = ErrorCode.BAD_REQUEST


class FrameTooLarge(ChubbyError):
    code = ErrorCode.FRAME_TOO_LARGE


class UnsupportedVersion(ChubbyError):
    code = ErrorCode.UNSUPPORTED_VERSION


class UnknownMessage(ChubbyError):
    code = ErrorCode.UNKNOWN_MESSAGE


class WrongCell(ChubbyError):
    code = ErrorCode.WRONG_CELL


class InternalError(ChubbyError):
    code = ErrorCode.INTERNAL


ERROR_CLASSES: dict[ErrorCode, type[ChubbyError]] = {
    cls.code: cls
    for cls in (
        NoSuchNode,
        NodeExists,
        NotADirectory,
        IsADirectory,
        NotEmpty,
        GenerationMismatch,
        TooLarge,
        InvalidName,
        PermissionDenied,
        GuardFailed,
        LockHeld,
        LockNotHeld,
        LockDelayed,
        SessionExpired,
        InvalidSequencer,
        SessionRequired,
        InvalidHandle,
        NotMaster,
        EpochChanged,
        Busy,
        UnknownClient,
        StaleRequest,
        Unavailable,
        ResourceExhausted,
        SnapshotGone,
        MembershipBusy,
        NotCaughtUp,
        MembershipInvalid,
        VersionChanged,
        BadRequest,
        FrameTooLarge,
        UnsupportedVersion,
        UnknownMessage,
        WrongCell,
        InternalError,
    )
}
"""The client exception class for each wire code (every code has one)."""


def error_for(code: ErrorCode, message: str, master_hint: str | None = None) -> ChubbyError:
    """The exception a client raises for an error reply."""
    return ERROR_CLASSES[code](message, master_hint=master_hint)
