"""Replica-to-replica messages of the Multi-Paxos log, as frozen data.

Part of `chubbypy.protocol`. The Paxos core (`chubbypy.paxos`) consumes and produces these;
the codec turns them into bytes. Ticks in `sent_tick` are the sender's own tick counter,
echoed back unchanged so the master can date its lease without comparing clocks.
"""

from __future__ import annotations

from attrs import frozen

from chubbypy.protocol.values import (
    NO_INDEX,
    Ballot,
    Entry,
    LogIndex,
    Membership,
    ReplicaId,
    Snapshot,
    Value,
)


@frozen
class Prepare:
    """Phase 1a, run once for every instance from `from_index` on (Multi-Paxos)."""

    ballot: Ballot
    from_index: LogIndex


@frozen
class Promise:
    """Phase 1b: the acceptor promised `ballot` and reports what it accepted from `from_index`.

    Entries at or below `chosen_index` are known chosen. One promise carries a bounded page
    of entries: `more` says others follow, and the proposer asks for them with another
    Prepare at the same ballot from the next index. `behind` says entries from `from_index`
    were already truncated into a snapshot: the proposer must catch up before it can lead.
    """

    ballot: Ballot
    from_index: LogIndex
    entries: tuple[Entry, ...]
    chosen_index: LogIndex
    more: bool
    behind: bool


@frozen
class Accept:
    """Phase 2a for one instance; also carries the master's chosen index and renews its lease."""

    ballot: Ballot
    index: LogIndex
    value: Value
    chosen_index: LogIndex
    sent_tick: int


@frozen
class Accepted:
    """Phase 2b: the acceptor accepted `index` at `ballot`; `sent_tick` echoes the Accept's."""

    ballot: Ballot
    index: LogIndex
    sent_tick: int
    chosen_index: LogIndex


@frozen
class Heartbeat:
    """The master's lease renewal when it has nothing to propose; carries its chosen index,
    and the last index it has proposed (a rebuilding replica dates its rebuild by it)."""

    ballot: Ballot
    chosen_index: LogIndex
    sent_tick: int
    last_index: LogIndex = NO_INDEX


@frozen
class HeartbeatAck:
    """An acceptor took a Heartbeat at `ballot` and granted the sender a lease.

    `trusted` is False from a learner still rebuilding (PML §5.1): the master promotes a
    learner only once it is trusted and caught up."""

    ballot: Ballot
    sent_tick: int
    chosen_index: LogIndex
    trusted: bool = True


@frozen
class Nack:
    """A refusal of `ballot`: the acceptor promised `promised`, or is leased to another master.

    `chosen_index` tells the refused replica how far the acceptor knows the log is chosen, so a
    replica cut off from the master alone can still catch up from its other peers.
    """

    ballot: Ballot
    promised: Ballot
    leased: bool
    chosen_index: LogIndex


@frozen
class Resign:
    """The master at `ballot` gave up its mastership and its lease (a graceful stop).

    An acceptor leased to it drops the lease at once; `successor` (a peer the master chose
    as the most caught up, or "" for none) campaigns at once. `chosen_index` is how far the
    master knew the log chosen: a master removed from the cell resigns the moment it learns
    its removal is chosen, and its peers learn that from this, not from a next heartbeat.
    """

    ballot: Ballot
    successor: ReplicaId
    chosen_index: LogIndex = NO_INDEX


@frozen
class CatchUpRequest:
    """A lagging replica asks for chosen entries from `from_index` on."""

    from_index: LogIndex


@frozen
class CatchUp:
    """Chosen entries, in order, and how far the sender knows the log is chosen, with the
    membership that governs the first of them (a new replica anchors on it)."""

    entries: tuple[Entry, ...]
    chosen_index: LogIndex
    membership: Membership


@frozen
class InstallSnapshot:
    """The entries the requester needs were truncated: here is a snapshot covering them."""

    snapshot: Snapshot


PeerMessage = (
    Prepare
    | Promise
    | Accept
    | Accepted
    | Heartbeat
    | HeartbeatAck
    | Nack
    | Resign
    | CatchUpRequest
    | CatchUp
    | InstallSnapshot
)


@frozen
class Envelope:
    """A peer message with its addresses."""

    sender: ReplicaId
    recipient: ReplicaId
    message: PeerMessage
