"""Identifiers and log values: what the replicated log carries, as frozen data.

Part of `chubbypy.protocol` (see STYLE §1): plain attrs values with no behaviour beyond
ordering and size, shared by the Paxos core, the stores and the wire codec.
"""

from __future__ import annotations

import enum
from typing import NewType

from attrs import field, frozen

ReplicaId = NewType("ReplicaId", str)
"""A replica's name in the cell configuration, such as ``"r1"``."""

LogIndex = NewType("LogIndex", int)
"""A Paxos instance number: the position of an entry in the replicated log, from 1."""

Epoch = NewType("Epoch", int)
"""A mastership's number: every entry a master proposes carries it; each new master's is higher."""

ClientId = NewType("ClientId", int)
"""A client registered through the log; 0 means "not yet registered"."""

SessionId = NewType("SessionId", int)
"""A Chubby session (§2.8): unique in the cell and never reused, allocated like a node
instance from the log index of the `OpenSession` that created it; 0 means "no session"."""

HandleId = NewType("HandleId", int)
"""An open handle (§2.3): unique in the cell, the creating master's epoch in the high bits
and its count below; 0 means "no handle" (an event about the session, not a handle)."""

NO_CLIENT = ClientId(0)
MASTER_CLIENT = ClientId(2**63 - 1)
"""The master itself, for the decisions it proposes on its own (expiring a session, ending
a lock-delay, granting a waiting lock request): applied without exactly-once bookkeeping,
because deciding one of them twice is harmless (the second finds it done and fails). No
client is ever registered with this id, and replicas refuse it from clients."""
NO_EPOCH = Epoch(0)
NO_INDEX = LogIndex(0)
NO_SESSION = SessionId(0)
"""The owner of a permanent node, and the session of a write made outside any session."""
NO_HANDLE = HandleId(0)
"""The handle of an event about the whole session (a fail-over, an invalidation)."""


@frozen
class Ballot:
    """A Paxos proposal number: unique per proposer, totally ordered (round, then replica)."""

    round: int
    replica_id: ReplicaId

    # Written out rather than attrs' order=True: the core compares ballots on every message,
    # and attrs' generic ordering costs about fifteen times as much (bench/paxos_core.py).
    def __lt__(self, other: Ballot) -> bool:
        return (self.round, self.replica_id) < (other.round, other.replica_id)

    def __le__(self, other: Ballot) -> bool:
        return (self.round, self.replica_id) <= (other.round, other.replica_id)

    def __gt__(self, other: Ballot) -> bool:
        return (self.round, self.replica_id) > (other.round, other.replica_id)

    def __ge__(self, other: Ballot) -> bool:
        return (self.round, self.replica_id) >= (other.round, other.replica_id)

    def __str__(self) -> str:
        return f"{self.round}.{self.replica_id}" if self.round else "0"


NO_BALLOT = Ballot(0, ReplicaId(""))
"""Below every real ballot: what an acceptor has promised before it promised anything."""


# Ranges of the values replicas exchange. A peer may send anything, and the codec refuses
# what lies outside these before any of it is used; so what the core keeps, and the store
# writes, always fits a signed 64-bit integer (SQLite's, and most databases', integer type),
# including what is derived from it (an epoch's handle ids, an index's node instances).

BALLOT_ROUND_MAX = 1 << 30
"""The highest ballot round a replica takes from a peer. A mastership's epoch is the round
it won with, and handle ids carry the epoch above 32 bits of count in a signed 64-bit
integer (`chubbypy.sessions.handle_id_for`), so an epoch must stay below 2**31; a replica's
next ballot is at most a cell's size above the highest it has seen, so 2**30 leaves room.
An election adds at most a cell's size: a five-replica cell electing a master every second
takes six years to get here.

Rounds are a finite resource, then: a ballot at this limit (which only a forged message
could bring, and peer authentication keeps out) leaves no higher ballot any replica takes,
and masters can no longer be elected. Replicas then refuse each other's higher ballots, and
log it; none stops or crashes (`ROUND_MAX` leaves a replica room to keep campaigning)."""
ROUND_MAX = (1 << 31) - 1
"""The highest ballot round a replica may hold at all, its own promises included: an
epoch's handle ids must fit (see `BALLOT_ROUND_MAX`). A replica promises itself at most a
cell's size above the highest round it has seen on each campaign, so from
`BALLOT_ROUND_MAX` it takes hundreds of millions of campaigns to get here."""
EPOCH_MAX = BALLOT_ROUND_MAX
"""Epochs are ballot rounds."""
LOG_INDEX_MAX = (1 << 47) - 1
"""The highest log index a replica takes from a peer. Node instances and session ids are a
log index times 2**16 plus a count (`chubbypy.namespace.INSTANCES_PER_INDEX`), which must
fit a signed 64-bit integer: ten thousand entries a second take 445 years to get here."""
REPLICA_ID_CHARS_MAX = 255
"""A replica id in a ballot or a Resign (the store's column holds no longer)."""
TICK_MAX = (1 << 63) - 1
"""The highest tick a peer may echo (any signed 64-bit count of ticks)."""
MESSAGE_ENTRIES_MAX = 1 << 16
"""Log entries in one Promise or CatchUp (a replica sends at most `catchup_entries_max`,
which the cell file's rules keep at or below this)."""
VALUE_COMMANDS_MAX = 1 << 16
"""Commands in one log value (a master batches at most `batch_entries_max`, kept at or
below this)."""
MESSAGE_COMMANDS_MAX = 1 << 20
"""Commands in one message, all its entries together: what a peer message may make a
replica build in memory is bounded by this, not only by its bytes (a page of catch-up holds
at most `catchup_entries_max` times `batch_entries_max`, kept at or below this)."""


@frozen
class Command:
    """One client command: exactly-once identity plus an opaque payload for the state machine.

    `sequence` numbers a client's commands from 1. `first_unacked` is the lowest sequence
    the client may still retry; results below it may be forgotten by the replicas.
    A registration command has `client_id == NO_CLIENT`, as `sequence` a nonce the client
    chose at random, and as `payload` the principal registering (UTF-8): a retry with the
    same nonce, from the same principal, gets the same client.
    """

    client_id: ClientId
    sequence: int
    payload: bytes
    first_unacked: int = 0

    @property
    def size_bytes(self) -> int:
        """Bytes this command contributes to a batch (payload plus a fixed header)."""
        return len(self.payload) + COMMAND_OVERHEAD_BYTES


COMMAND_OVERHEAD_BYTES = 24
"""Bytes counted per command on top of its payload when filling a batch."""


class ValueKind(enum.IntEnum):
    """What a log value does when applied."""

    NOOP = 0
    """Fills a gap a new master found: no effect."""
    EPOCH_START = 1
    """First entry of a mastership: makes `epoch` current for the entries after it."""
    COMMANDS = 2
    """A batch of client commands, applied in order, only if `epoch` is still current."""
    CHECKSUM = 3
    """Asks every replica for a checksum of its state at this index (Paxos Made Live §6.2)."""
    MEMBERSHIP = 4
    """The cell's next membership, whole: it governs the instances after this one
    (docs/design/membership.md §2.2). Like EPOCH_START, it takes effect whatever its epoch."""


@frozen
class Value:
    """The value of one Paxos instance: a batch of commands (or a control value) and its epoch."""

    epoch: Epoch
    kind: ValueKind
    commands: tuple[Command, ...] = field(default=())
    membership: Membership | None = field(default=None)
    """The new membership: carried by MEMBERSHIP values, and only by them."""

    @commands.validator
    def _only_batches_carry_commands(
        self, _attribute: object, commands: tuple[Command, ...]
    ) -> None:
        assert not commands or self.kind is ValueKind.COMMANDS, (self.kind, len(commands))

    @membership.validator
    def _membership_with_its_kind(self, _attribute: object, membership: object) -> None:
        assert (membership is None) == (self.kind is not ValueKind.MEMBERSHIP), self.kind

    @property
    def size_bytes(self) -> int:
        return sum(command.size_bytes for command in self.commands)


@frozen
class Entry:
    """A log entry: an instance's value and the ballot at which this replica accepted it."""

    index: LogIndex
    ballot: Ballot
    value: Value


@frozen
class Snapshot:
    """The state machine's state after applying every entry up to `index` (PML's snapshot),
    with the membership that governs the instances after it (PML's "snapshot handle")."""

    index: LogIndex
    data: bytes
    membership: Membership


@frozen
class CallNumber:
    """Names one call of a session that may change state, across every retry: the
    session's own count of such calls (from 1), and the lowest number whose answer the
    client may still ask for again (it acknowledges every answer below it). The cell keeps
    the answers of a session's unacknowledged calls, so a call retried after its answer was
    lost, on the same master, a new one or after every replica restarted, gets its first
    answer and changes nothing."""

    sequence: int
    first_unacked: int

    def __attrs_post_init__(self) -> None:
        assert 1 <= self.first_unacked <= self.sequence, self


# ----------------------------------------------------------------------------- membership

VOTERS_MIN = 3
"""The fewest voters a cell may have: one can fail and a majority remains."""
VOTERS_MAX = 7
LEARNERS_MAX = 2
"""Non-voting members catching up at once (a replacement needs one)."""
MEMBER_ADDRESS_CHARS_MAX = 255
MEMBERSHIP_VERSION_MAX = LOG_INDEX_MAX
"""Each change is a log entry, so versions never outrun indices."""


@frozen
class Member:
    """A replica of the cell's membership (docs/design/membership.md): its id, the
    addresses others dial (peers at `peer`, clients at `client`), and whether it votes (a
    learner takes the log and snapshots and never counts in a quorum)."""

    replica_id: ReplicaId
    peer: str
    client: str
    voter: bool


@frozen
class Membership:
    """The cell's members at one `version` (one higher at each change), in id order."""

    version: int
    members: tuple[Member, ...]

    def __attrs_post_init__(self) -> None:
        ids = [member.replica_id for member in self.members]
        assert ids == sorted(set(ids)), f"members must be in id order, each once: {ids}"

    @property
    def member_ids(self) -> tuple[ReplicaId, ...]:
        return tuple(m.replica_id for m in self.members)

    @property
    def voters(self) -> tuple[ReplicaId, ...]:
        return tuple(m.replica_id for m in self.members if m.voter)

    @property
    def learners(self) -> tuple[ReplicaId, ...]:
        return tuple(m.replica_id for m in self.members if not m.voter)

    def member(self, replica_id: ReplicaId) -> Member | None:
        return next((m for m in self.members if m.replica_id == replica_id), None)

    def quorum(self) -> int:
        """How many of its voters make a majority."""
        return len(self.voters) // 2 + 1
