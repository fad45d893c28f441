"""The values that leave the Paxos core: Ready batches, what to persist, events, status.

The contract with the shell (STYLE §1, after etcd raft's Ready/Advance) is the order in which
it handles one `Ready`:

0. it may send `ready.early` at once, before anything else: the master's requests that peers
   accept its new entries. They depend on nothing this replica has yet to write, so the
   master's own write and its peers' run in parallel (the Raft thesis §10.2.1); the master
   counts its own acceptance only once `advance` says its write is durable;
1. make `ready.durable` durable (one transaction, one fsync);
2. then send `ready.messages` (they may depend on what step 1 wrote);
3. then apply `ready.committed` in order, first restoring the state machine from
   `ready.durable.snapshot` if that snapshot lies beyond what was applied;
4. then call `replica.advance(ready)`.
"""

from __future__ import annotations

import enum

from attrs import frozen

from chubbypy.protocol import (
    NO_BALLOT,
    NO_INDEX,
    Ballot,
    Entry,
    Envelope,
    Epoch,
    LogIndex,
    Membership,
    ReplicaId,
    Snapshot,
)


@frozen
class HardState:
    """An acceptor's durable promises: the highest ballot promised and how far the log is chosen.

    `voting` is False from the moment a replica starts rebuilding a lost disk until the
    rebuild completes: a restart in between must not make it a voter again.
    """

    promised: Ballot = NO_BALLOT
    chosen_index: LogIndex = NO_INDEX
    voting: bool = True


@frozen
class Durable:
    """Writes that must be durable before a Ready's messages are sent."""

    hard_state: HardState | None = None
    """The new hard state, if it changed."""
    entries: tuple[Entry, ...] = ()
    """Log entries to write, replacing any earlier entry at the same index."""
    snapshot: Snapshot | None = None
    """A new snapshot to keep (replacing the old one)."""
    compact_through: LogIndex | None = None
    """Log entries at or below this index may be deleted, after `snapshot` is stored."""
    genesis: Membership | None = None
    """The membership before the log's first instance, written once: by a founding replica
    at its first Ready, by a new one when its first catch-up anchors it."""

    def is_empty(self) -> bool:
        return (
            self.hard_state is None
            and not self.entries
            and self.snapshot is None
            and self.compact_through is None
            and self.genesis is None
        )


@frozen
class Persisted:
    """What a store holds for a replica: enough to rebuild it exactly as it persisted itself.

    `hard_state` is None only for a store nothing was ever written to: a brand-new replica,
    or one whose disk was lost (the server tells which from how it was started).
    """

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    genesis: Membership | None = None
    """The membership before instance 1 (`Durable.genesis`); None before it is known."""


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    MASTER = "master"


class StepDownReason(enum.Enum):
    LEASE_EXPIRED = "its master lease expired"
    NO_LEASE = "it never obtained a master lease"
    HIGHER_BALLOT = "another proposer holds a higher ballot"
    BEHIND = "a peer knows more of the chosen log than it does"
    RESIGNED = "it resigned, handing over to a successor"
    REMOVED = "it is no longer a voter of the cell"


# Events: what happened to this replica, for logs, metrics and narration.


@frozen
class Campaigning:
    """The replica started phase 1 with `ballot`."""

    ballot: Ballot


@frozen
class BecameMaster:
    """Phase 1 succeeded: the replica is master for `epoch` and re-proposes what it found."""

    ballot: Ballot
    epoch: Epoch
    recovered_entries: int


@frozen
class StartedServing:
    """The epoch's first entry is applied: every earlier entry is applied; the master serves."""

    epoch: Epoch
    index: LogIndex


@frozen
class SteppedDown:
    """The replica stopped being master, or gave up its campaign (`role` says which)."""

    role: Role
    epoch: Epoch
    ballot: Ballot
    reason: StepDownReason


@frozen
class LeaseAcquired:
    """The master's lease became valid (it was not, a moment before)."""

    epoch: Epoch
    expiry_tick: int


@frozen
class LeaseLost:
    """The master's lease ran out before it was renewed."""

    epoch: Epoch


@frozen
class Rebuilt:
    """A replica that rebuilt its lost state from its peers votes again."""

    chosen_index: LogIndex


@frozen
class MembershipChanged:
    """A membership change was chosen at `index`: it governs the instances after it."""

    index: LogIndex
    membership: Membership


@frozen
class SnapshotInstalled:
    """A peer sent a snapshot because the entries this replica needed were truncated."""

    index: LogIndex
    sender: ReplicaId


ReplicaEvent = (
    Campaigning
    | BecameMaster
    | StartedServing
    | SteppedDown
    | LeaseAcquired
    | LeaseLost
    | SnapshotInstalled
    | Rebuilt
    | MembershipChanged
)


@frozen
class Ready:
    """One batch of the core's output; handle it in the order the module docstring gives."""

    durable: Durable
    messages: tuple[Envelope, ...]
    committed: tuple[Entry, ...]
    events: tuple[ReplicaEvent, ...]
    early: tuple[Envelope, ...] = ()
    """Messages the shell may send before `durable` is durable (step 0)."""


class RefusalReason(enum.Enum):
    NOT_MASTER = "not master"
    EPOCH_CHANGED = "the epoch changed"
    OVERLOADED = "too many proposals queued"
    TOO_LARGE = "command larger than a batch"
    MEMBERSHIP_BUSY = "a membership change is already in progress"


@frozen
class Refused:
    """A proposal the core will not take; nothing was queued."""

    reason: RefusalReason


@frozen
class PeerProgress:
    """What a master knows of one peer: how far the peer knows the log chosen, the tick
    (the master's) of the latest message of this mastership it acknowledged, and whether
    its disk is trusted (False: a learner still rebuilding, PML §5.1)."""

    chosen_index: LogIndex
    acked_tick: int
    trusted: bool = True


@frozen
class Status:
    """A replica's view of itself, for operators, checkers and narration."""

    replica_id: ReplicaId
    role: Role
    promised: Ballot
    ballot: Ballot
    epoch: Epoch
    serving: bool
    lease_valid: bool
    lease_expiry_tick: int
    tick: int
    chosen_index: LogIndex
    applied_index: LogIndex
    snapshot_index: LogIndex
    first_index: LogIndex
    last_index: LogIndex
    queued_commands: int
    inflight_instances: int
    voting: bool
    """False while the replica rebuilds lost state from its peers (PML §5.1)."""
    membership: Membership | None = None
    """The membership it counts quorums by (None until a new replica is anchored)."""


def describe_event(event: ReplicaEvent) -> str:
    """One line for a replica event, for narration and logs."""
    match event:
        case Campaigning(ballot):
            return f"campaigns for mastership with ballot {ballot}"
        case BecameMaster(ballot, epoch, recovered):
            return (
                f"won ballot {ballot}: master for epoch {epoch}, re-proposing {recovered} entries"
            )
        case StartedServing(epoch, index):
            return f"serves epoch {epoch} (its first entry, {index}, is applied)"
        case SteppedDown(Role.MASTER, epoch, _, reason):
            return f"steps down as master of epoch {epoch}: {reason.value}"
        case SteppedDown(_, _, ballot, reason):
            return f"gives up its campaign with ballot {ballot}: {reason.value}"
        case LeaseAcquired(epoch, expiry):
            return f"holds the master lease for epoch {epoch} (until tick {expiry})"
        case LeaseLost(epoch):
            return f"lost the master lease of epoch {epoch}"
        case SnapshotInstalled(index, sender):
            return f"installed a snapshot at index {index} from {sender}"
        case MembershipChanged(index, membership):
            voters = ", ".join(membership.voters)
            learners = ", ".join(membership.learners) or "none"
            return (
                f"membership version {membership.version} chosen at {index}: "
                f"voters {voters}; learners {learners}"
            )
        case Rebuilt(chosen_index):
            return (
                f"rebuilt its state from its peers (chosen through {chosen_index}); it votes again"
            )
    raise AssertionError(event)
