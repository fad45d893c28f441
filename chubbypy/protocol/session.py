"""Session, handle and lock calls between a client and the master, as frozen data.

Part of `chubbypy.protocol`. A client sends a `SessionRequest` carrying one call and the
master answers with a `SessionReply` carrying its result, or an `ErrorReply` (SESSION_EXPIRED,
LOCK_HELD, INVALID_HANDLE, NOT_MASTER, ...), so operating errors raise the same exception
classes as everywhere else. Handles and sequencers are opaque bytes the master made; the
client only passes them back. Chubby §2.4 to §2.9 name the calls.
"""

from __future__ import annotations

import enum

from attrs import frozen

from chubbypy.protocol.namespace import Create, LockMode, SimpleWrite, Stat
from chubbypy.protocol.values import NO_HANDLE, NO_SESSION, HandleId, ReplicaId, SessionId

HANDLE_BYTES_MAX = 4096
"""More than any handle of a valid name needs; longer bytes are refused undecoded."""
SEQUENCER_BYTES_MAX = 4096
"""Likewise for sequencers."""
CREDENTIAL_BYTES_MAX = 64
"""A session's credential (the master makes 16 bytes); longer bytes are refused undecoded."""
SESSION_NAME_CHARS_MAX = 256
"""How long the client's description of itself may be (it appears on status pages)."""


def session_name_problem(name: str) -> str | None:
    """Why `name` cannot name a session (the client's description of itself, which
    operators see in listings and terminals), or None. A name is printable text (Python's
    `str.isprintable`: no control characters, so no terminal escapes, no line breaks, no
    invisible formatting characters such as a right-to-left override) of at most
    SESSION_NAME_CHARS_MAX characters."""
    if len(name) > SESSION_NAME_CHARS_MAX:
        return f"a session name of {len(name)} characters; at most {SESSION_NAME_CHARS_MAX}"
    if not name.isprintable():
        position, character = next((i, c) for i, c in enumerate(name) if not c.isprintable())
        return (
            f"a session name holds printable characters only: U+{ord(character):04X} at "
            f"{position} is not ({name!r:.80})"
        )
    return None


SESSIONS_PAGE_MAX = 1000
"""The most sessions one `SessionList` carries: a `ListSessions` asking for more is read
as asking for this many, and a longer list is refused undecoded."""
SESSION_PATHS_LISTED_MAX = 16
"""The most lock paths, and the most ephemeral paths, one `SessionInfo` lists; its counts
say how many there are in all."""
SESSION_STATE_CHARS_MAX = 32
"""How long a `SessionInfo.state` may be ("live", "closing", ...)."""
LOCK_INFO_LISTED_MAX = 1000
"""The most holders, and the most waiters, one `LockInfo` lists (the cell lists at most
``sessions.lock_info_listed_max`` of each, which may not be more): a longer list is refused
undecoded. Its counts say how many there are in all."""
LOCK_INFO_MODES = ("free", "exclusive", "shared")
"""What `LockInfo.mode` may say."""
SNAPSHOT_CHUNK_BYTES_MAX = 4 << 20
"""The most bytes one `SnapshotChunk` carries (the cell sends at most
``limits.snapshot_chunk_bytes``, which may not be more): a longer chunk is refused undecoded."""
SNAPSHOT_BYTES_MAX = (1 << 32) - 1
"""The largest snapshot a `SnapshotChunk` may announce: what a store keeps in one row."""
SNAPSHOT_DIGEST_BYTES = 32
"""A snapshot's SHA-256, which every chunk carries: the reassembled bytes must have it."""
STATE_CHECKSUM_BYTES = 8
"""The replicated state's checksum (`chubbypy.paxos.Applier.checksum`)."""


class EventKind(enum.IntEnum):
    """Events a handle (or the session) can receive (Chubby §2.5). Values are stable."""

    CONTENTS_MODIFIED = 1
    CHILD_CHANGED = 2
    """A child of the directory was added, removed or modified."""
    MASTER_FAILOVER = 3
    """Other events may have been lost: rescan, and flush any cache."""
    HANDLE_INVALID = 4
    """The handle (and any lock it held) is no longer valid: its node was deleted."""
    LOCK_ACQUIRED = 5
    CONFLICTING_LOCK = 6
    """Another client asked for the lock this handle holds."""
    INVALIDATE = 7
    """Cache invalidation: drop what is cached of `path` (and acknowledge)."""


class HandleMode(enum.IntFlag):
    """What a handle may do (Chubby §2.6 `Open` options); checked against ACLs at open."""

    READ = 1
    WRITE = 2
    """Write the contents, delete, and acquire the lock (either mode)."""
    CHANGE_ACL = 4


class EventMask(enum.IntFlag):
    """The events a handle asked for at open; bit n is `EventKind(n)`. Only the events
    about one handle's node have a bit: a session hears of a fail-over and of cache
    invalidations whatever its handles asked for."""

    NONE = 0
    CONTENTS_MODIFIED = 1 << EventKind.CONTENTS_MODIFIED
    CHILD_CHANGED = 1 << EventKind.CHILD_CHANGED
    HANDLE_INVALID = 1 << EventKind.HANDLE_INVALID
    LOCK_ACQUIRED = 1 << EventKind.LOCK_ACQUIRED
    CONFLICTING_LOCK = 1 << EventKind.CONFLICTING_LOCK


HANDLE_MODES_ALL = HandleMode.READ | HandleMode.WRITE | HandleMode.CHANGE_ACL
"""Every bit a `HandleMode` may have; a mode with any other bit is not one."""
EVENT_MASK_ALL = (
    EventMask.CONTENTS_MODIFIED
    | EventMask.CHILD_CHANGED
    | EventMask.HANDLE_INVALID
    | EventMask.LOCK_ACQUIRED
    | EventMask.CONFLICTING_LOCK
)
"""Every bit an `EventMask` may have; a mask with any other bit is not one."""


@frozen
class SessionEvent:
    """One event for one session, numbered in the order the session receives them."""

    sequence: int
    kind: EventKind
    path: str = ""
    handle_id: HandleId = NO_HANDLE
    """The handle the event is for; NO_HANDLE for an event about the whole session."""


# ----------------------------------------------------------------------------- calls


@frozen
class CreateSession:
    """Start a session; `name` says who the client is (for operators). `nonce`, chosen at
    random by the client and kept across retries, names the creation: a retry gets the
    session its first attempt made (0: no retry is told apart)."""

    name: str
    nonce: int = 0


@frozen
class KeepAlive:
    """Keep the session alive; held by the master until the lease nearly ends or an event
    is due. `acked_through` acknowledges every event up to that sequence number."""

    session_id: SessionId
    credential: bytes
    """The session's credential from `SessionCreated`: proof the caller owns the session."""
    acked_through: int


@frozen
class CloseSession:
    session_id: SessionId
    credential: bytes


@frozen
class Open:
    """Open `path` for what `mode` allows, hearing of the `events` asked for. With
    `create`, create the node if missing (and with `exclusive`, fail if it exists). The
    codec refuses a mode or mask with a bit outside the defined ones."""

    session_id: SessionId
    credential: bytes
    path: str
    mode: HandleMode
    events: EventMask = EventMask.NONE
    lock_delay_ms: int = 0
    create: Create | None = None
    exclusive: bool = False


@frozen
class CloseHandle:
    handle: bytes


@frozen
class PoisonHandle:
    """Fail the handle's outstanding and later calls without closing it."""

    handle: bytes


@frozen
class AcquireLock:
    """Take the handle's lock; with `wait`, queue until it is free (else LOCK_HELD), for
    at most `wait_ms` if given: then the master withdraws the request and answers
    LOCK_HELD, so a request given up on can never be granted unseen."""

    handle: bytes
    mode: LockMode
    wait: bool
    wait_ms: int | None = None


@frozen
class ReleaseLock:
    """Let go of the lock; `lock_generation` names the acquisition released, so a release
    delayed or sent twice cannot free a later acquisition through the same handle."""

    handle: bytes
    lock_generation: int | None = None


@frozen
class HandleWrite:
    """A write to the handle's node; with `sequencer`, only while it is valid (fencing)."""

    handle: bytes
    write: SimpleWrite
    sequencer: bytes | None = None


@frozen
class GetSequencer:
    handle: bytes


@frozen
class CheckSequencer:
    sequencer: bytes


@frozen
class ReadNode:
    """Read the node at `path` (contents and stat; or its absence). With `cache`, ask to be
    registered as caching it (Chubby §2.5): the master then invalidates it before any
    change, through the session's KeepAlives."""

    session_id: SessionId
    credential: bytes
    path: str
    cache: bool = True


@frozen
class ListSessions:
    """List the cell's sessions as the master knows them, in id order: those numbered
    above `after`, at most `limit` (at most SESSIONS_PAGE_MAX). An operator's query: it
    names no session, so it carries no credential; the ACL ``admin`` must admit the
    caller's principal."""

    after: SessionId = NO_SESSION
    limit: int = SESSIONS_PAGE_MAX


@frozen
class GetLockInfo:
    """Who holds the lock of the node at `path`, who waits for it in which order, and its
    lock-delay, as the master knows them (`LockInfo`). It names no session, so it carries
    no credential; the caller's principal needs read access to the node, as to read its
    contents."""

    path: str


@frozen
class KillSession:
    """End session `session_id`, which another client owns: an operator's call (the ACL
    ``admin`` must admit the caller's principal, as for `ListSessions`). The master
    extends the session's lease no more: its KeepAlives are refused SESSION_EXPIRED
    ("ending: ended by an operator") from now on, so its client learns that it is over,
    and it is ended as expired when the lease it has runs out, never earlier (its client
    may count on that lease until then): its ephemeral files are deleted and its locks
    freed (into their lock-delay) then. The answer (`SessionEnding`) says when. Not
    numbered: ending a session that is ending already changes nothing. The end is the
    master's memory, not the log's: a fail-over before the lease runs out forgets it, and
    the session lives on if its client never heard (end it again)."""

    session_id: SessionId


@frozen
class GetSnapshot:
    """A piece of a snapshot of the cell's replicated database, for backups: an operator's
    call (the ACL ``admin`` must admit the caller's principal, as for `ListSessions`). It
    names no session.

    `index` 0 asks the master to take a snapshot of its state now (and keep it, for
    ``limits.snapshot_held_seconds`` after the last piece asked for); the answer
    (`SnapshotChunk`) names its index. Later pieces name that index and the `offset` of
    the next byte wanted. A master that no longer holds the snapshot of `index` (a
    fail-over, a newer one taken meanwhile, or it was left idle too long) refuses
    SNAPSHOT_GONE: start again from index 0."""

    index: int
    offset: int


@frozen
class ListMembers:
    """The cell's membership as the master knows it (`MemberList`): open to whoever may ask
    a replica's status (the members' addresses are in every `MasterLocation` already)."""


@frozen
class AddLearner:
    """Add replica `replica_id`, reached by peers at `peer` and by clients at `client`, as
    a learner: it takes the log and never counts in a quorum until promoted."""

    replica_id: ReplicaId
    peer: str
    client: str


@frozen
class Promote:
    """Make learner `replica_id` a voter: refused NOT_CAUGHT_UP until it has caught up."""

    replica_id: ReplicaId


@frozen
class Remove:
    """Remove member `replica_id` (the master too: it hands over first). Refused when it
    would leave fewer voters, or fewer live ones, than a quorum needs, unless `force`."""

    replica_id: ReplicaId
    force: bool = False


MembershipStep = AddLearner | Promote | Remove


def describe_step(step: MembershipStep) -> str:
    """One membership step in words, for logs and the CLI (past tense: what it does)."""
    match step:
        case AddLearner(replica_id, peer, client):
            return f"added {replica_id} as a learner (peers dial {peer}, clients {client})"
        case Promote(replica_id):
            return f"promoted {replica_id} to voter"
        case Remove(replica_id, force):
            return f"removed {replica_id}" + (" (forced)" if force else "")
    raise AssertionError(step)


@frozen
class ChangeMembership:
    """One membership change, an operator's call (the ACL ``admin`` must admit the
    caller's principal). It is answered (`MembershipDone`) once the change is chosen; a
    change the membership already shows is answered at once with `already`, so a retry
    after a fail-over is harmless. `if_version` (0: any) refuses VERSION_CHANGED unless
    the membership is at that version."""

    step: MembershipStep
    if_version: int = 0


SessionCall = (
    CreateSession
    | KeepAlive
    | CloseSession
    | Open
    | CloseHandle
    | PoisonHandle
    | AcquireLock
    | ReleaseLock
    | HandleWrite
    | GetSequencer
    | CheckSequencer
    | ReadNode
    | ListSessions
    | GetLockInfo
    | KillSession
    | GetSnapshot
    | ListMembers
    | ChangeMembership
)

CALLS_UNACKED_MAX = 64
"""How far a client's numbered calls may run ahead of its oldest unanswered one: a call
numbered n is sent only once every call below n - CALLS_UNACKED_MAX + 1 was answered. The
cell keeps at least this many answers per session (``sessions.answers_kept_max``), so no
call's answer is dropped while its client may still retry it."""


def is_numbered(call: SessionCall) -> bool:
    """Whether `call` carries its session's `CallNumber` (issue 12): the calls that may
    change the replicated state through a session, so that each is carried out once
    whatever the retries. An acquire needs none (a handle asking again for the lock it
    waits for, or holds, joins or is granted), nor do reads, KeepAlives, a poison (the
    master's memory) and the session's own creation (its nonce) and close (done twice is
    done once)."""
    match call:
        case Open(create=create):
            return create is not None
        case CloseHandle() | ReleaseLock() | HandleWrite():
            return True
    return False


# ----------------------------------------------------------------------------- results


@frozen
class SessionCreated:
    session_id: SessionId
    lease_ms: int
    """How long the lease runs from when the master answered, on the master's clock."""
    credential: bytes
    """The session's secret: every later call naming the session must carry it."""


@frozen
class LeaseExtended:
    lease_ms: int
    events: tuple[SessionEvent, ...]
    held_ms: int = 0
    """How long the master held the KeepAlive before answering; the new lease runs from
    the answer, so the client counts it from its sending plus this (rounded down)."""


@frozen
class HandleOpened:
    handle: bytes
    created: bool
    stat: Stat
    handle_id: HandleId
    """The handle's number, which the events meant for it carry (`SessionEvent.handle_id`)."""


@frozen
class Locked:
    """The handle holds the lock; `sequencer` names this acquisition (Chubby §2.4)."""

    stat: Stat
    sequencer: bytes


@frozen
class CallDone:
    """The call succeeded: a handle write's node metadata after it (None after a delete,
    and for other calls)."""

    stat: Stat | None = None


@frozen
class SequencerValidity:
    valid: bool


@frozen
class NodeRead:
    """What a `ReadNode` found: `stat` None if there is no such node; `contents` empty for
    a directory."""

    stat: Stat | None
    contents: bytes
    cached: bool
    """The master registered the session as caching this name: keep it until invalidated."""
    event_sequence: int
    """The session's next event number when the master answered: an INVALIDATE of this
    name numbered at or above it is about a later change, whenever it arrives."""


@frozen
class SessionInfo:
    """One session as the master sees it, for operators (never its credential).

    Lock and ephemeral paths are listed in path order, at most SESSION_PATHS_LISTED_MAX of
    each; `lock_count` and `ephemeral_count` say how many there are in all, so a listing
    cut short shows it (and the client can read the rest from the namespace).
    """

    session_id: SessionId
    name: str
    """The client's description of itself, from `CreateSession`."""
    state: str
    """One of "live" (its calls are served), "closing" (its close is in flight), "doomed"
    (it fell too far behind on events: refused, and ended when its lease runs out),
    "operator-ended" (an operator ended it: refused likewise, and ended when its lease
    runs out) and "ending" (its lease ran out: its end is in flight)."""
    lease_remaining_ms: int
    """How long its lease runs on from the master's answer, on the master's clock."""
    handles: int
    """Open handles this master knows of: those opened or used since it became master (a
    handle made by an earlier master counts once its client uses it again)."""
    locks: tuple[tuple[str, str], ...]
    """(path, "exclusive" or "shared") of the locks it holds."""
    lock_count: int
    ephemeral: tuple[str, ...]
    """Paths of the ephemeral files it owns (deleted when it ends)."""
    ephemeral_count: int
    cached_names: int = 0
    """Names the master registered it as caching (each costs an invalidation per change)."""
    principal: str = ""
    """The principal its client acts as, as this master heard it from the session's own
    calls (its creation, its KeepAlives, its opens and reads); "" until its first call to
    this master (after a fail-over, its next KeepAlive)."""


@frozen
class SessionList:
    """One page of sessions in id order; `more` says whether sessions with higher ids
    follow (ask again with `after` the last id listed)."""

    sessions: tuple[SessionInfo, ...]
    more: bool


@frozen
class LockHolderInfo:
    """One hold on a lock, for operators: the session, its client and principal (as in
    `SessionInfo`), the mode, and the lock-delay that applies if the session expires while
    holding it."""

    session_id: SessionId
    client: str
    """The session's name: its client's description of itself."""
    principal: str
    mode: str
    """ "exclusive" or "shared"."""
    lock_delay_ms: int


@frozen
class LockWaiterInfo:
    """One blocked acquire in a lock's queue, for operators: who waits, for which mode,
    and for how long so far (on the master's clock)."""

    session_id: SessionId
    client: str
    principal: str
    mode: str
    waited_ms: int


@frozen
class LockInfo:
    """What a `GetLockInfo` found: the lock of the node `path` (of `instance`).

    `mode` is "free" (no holder; it may still be in lock-delay), "exclusive" or "shared".
    `lock_generation` is the node's: the sequencer a holder has names it (with the path,
    instance and mode), so a fenced server can compare. Holders are in (session, handle)
    order, waiters in queue order (the head is granted next), at most
    ``sessions.lock_info_listed_max`` of each and fewer for a very long page;
    `holder_count` and `waiter_count` say how many there are in all. Waiters are this
    master's: after a fail-over, a queue fills again as its clients retry.
    `lock_delay_remaining_ms` is how long the lock stays unavailable after its holder's
    session expired (0: not in lock-delay).
    """

    path: str
    instance: int
    mode: str
    lock_generation: int
    holders: tuple[LockHolderInfo, ...]
    holder_count: int
    waiters: tuple[LockWaiterInfo, ...]
    waiter_count: int
    lock_delay_remaining_ms: int


@frozen
class SessionEnding:
    """A `KillSession`'s answer.

    `found` is False if there was no such session in the cell (it had ended already, or
    never was); `already` then False and `ends_in_ms` 0. Otherwise `already` says whether
    it was ending before this call (an operator ended it earlier, perhaps an earlier
    attempt of this same call whose answer was lost; its client is closing it; it fell
    too far behind on its events; or its lease ran out): then this call changed nothing.
    `ends_in_ms` is how long the lease it has still runs, on the master's clock: it is
    ended as expired then, its locks freed into their lock-delay (a fail-over meanwhile
    forgets an operator's end: see `KillSession`)."""

    found: bool
    already: bool
    ends_in_ms: int


@frozen
class SnapshotChunk:
    """A `GetSnapshot`'s answer: the bytes of the snapshot of `index` from `offset` on (at
    most ``limits.snapshot_chunk_bytes``; the last piece ends at `total_bytes`).

    Every piece of one snapshot carries the same `index`, `total_bytes`, `digest` (the
    SHA-256 of the whole snapshot, so the reassembled bytes can be checked) and
    `checksum` (the replicated state's checksum at `index`, what replicas compare: a
    restore recomputes it). The snapshot is the one replicas send each other to catch up
    (`chubbypy.paxos.Applier.snapshot`): the namespace, sessions, locks and the client
    table after applying every entry through `index`."""

    index: int
    total_bytes: int
    digest: bytes
    checksum: bytes
    offset: int
    data: bytes


@frozen
class MemberInfo:
    """One member as the master sees it: its addresses, whether it votes and is the master,
    and (None if it has not acknowledged this mastership) how far it knows the log chosen
    and how long ago it last acknowledged the master."""

    replica_id: ReplicaId
    peer: str
    client: str
    voter: bool
    master: bool
    chosen_index: int | None
    acked_ms_ago: int | None


@frozen
class MemberList:
    """A `ListMembers`' answer: the membership's `version`, the log index it governs after
    (its change's, or a snapshot's when the change was compacted into one; 0: the cell's
    first membership), the master's chosen index, and its members in id order."""

    version: int
    index: int
    chosen_index: int
    members: tuple[MemberInfo, ...]


@frozen
class MembershipDone:
    """A `ChangeMembership`'s answer: the membership is at `version`, made by the change
    chosen at `index`; `already` if it was so before this call."""

    version: int
    index: int
    already: bool


SessionResult = (
    SessionCreated
    | LeaseExtended
    | HandleOpened
    | Locked
    | CallDone
    | SequencerValidity
    | NodeRead
    | SessionList
    | LockInfo
    | SessionEnding
    | SnapshotChunk
    | MemberList
    | MembershipDone
)
