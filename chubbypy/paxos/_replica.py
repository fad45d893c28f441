"""Multi-Paxos replica core. Pure: inputs are messages, proposals and ticks; outputs are Readys.

Theory of operation
-------------------
Every replica is an acceptor and a learner; one at a time is the **master** (the distinguished
proposer of Paxos Made Live §4.2). Roles and their `tick` behaviour:

* FOLLOWER accepts from the master and learns what is chosen from the chosen index the master
  piggybacks on every Accept and Heartbeat. When the lease it granted the master runs out
  (plus a random jitter) it campaigns.
* CANDIDATE runs phase 1 once for every instance from its first unchosen one (Prepare with a
  ballot higher than any it has seen; promises come in bounded pages). A quorum of promises
  makes it master; it re-proposes the highest-ballot value each promise reported (no-ops in
  the gaps) and then an EPOCH_START entry. Its epoch is the round of the ballot it won with:
  rounds are unique to each replica (PML footnote 1), so no two masterships share an epoch,
  and each mastership's epoch is above every earlier one's. (A failed mastership's
  EPOCH_START may still be chosen later, adopted by a later master; it is then a no-op.)
* MASTER proposes batches of commands with a bounded window of instances in flight. It serves
  nothing (`propose` refuses) until its EPOCH_START entry is applied, so every earlier entry
  has been applied by then.

**Master leases** (PML §5.2, Chubby §2.2). An acceptor that accepts an Accept or Heartbeat
from a master refuses Prepare and Accept from every *other* replica for `lease_ticks` of its
own clock. The master dates its lease from the tick in which it sent a message and holds it
for `master_lease_ticks` once a quorum acknowledged messages sent at or after that tick; the
shorter window covers clock drift (see `master_lease_ticks_for`). Why two masters can never
both believe in a lease: let M's lease rest on quorum Q acknowledging messages of ballot b_M
sent at t, and N's on messages of a higher ballot b_N, sent only after N gathered promises
from quorum P. Some acceptor A is in both Q and P. It cannot have promised b_N before taking
M's message (it would have refused b_M), so it promised afterwards, and it refused N's
Prepare until its lease to M ran out, which is after M's own belief ran out. N's messages are
sent after that promise, so N's lease starts after M's ended. The same holds with roles
swapped, which is why only acknowledgements of messages sent after phase 1 count.

An acceptor that restarts does not know whom it leased itself to, but if it leased itself to
anyone, that master's ballot is the one it promised: so for `lease_ticks` after a restart it
accepts only from the replica that owns its promised ballot.

A master that learns of a higher promised ballot while its lease is valid **boosts**: it runs
phase 1 again with a higher ballot and keeps its epoch (PML §5.2's remedy for churn). A master
whose lease runs out steps down.

Persistence follows the Ready contract (`_ready.py`): every message is sent only after the
state it depends on (promised ballot, accepted entries) is durable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import assert_never

from attrs import define, field

from chubbypy.paxos._chance import Bug, Chance
from chubbypy.paxos._membership import (
    counted_acknowledgements,
    quorum_reached,
    successor_problem,
)
from chubbypy.paxos._ready import (
    BecameMaster,
    Campaigning,
    Durable,
    HardState,
    LeaseAcquired,
    LeaseLost,
    MembershipChanged,
    PeerProgress,
    Persisted,
    Ready,
    Rebuilt,
    RefusalReason,
    Refused,
    ReplicaEvent,
    Role,
    SnapshotInstalled,
    StartedServing,
    Status,
    StepDownReason,
    SteppedDown,
)
from chubbypy.paxos._settings import Limits, Timing
from chubbypy.protocol import (
    BALLOT_ROUND_MAX,
    LOG_INDEX_MAX,
    NO_BALLOT,
    NO_EPOCH,
    NO_INDEX,
    ROUND_MAX,
    Accept,
    Accepted,
    Ballot,
    CatchUp,
    CatchUpRequest,
    Command,
    Entry,
    Envelope,
    Epoch,
    Heartbeat,
    HeartbeatAck,
    InstallSnapshot,
    LogIndex,
    Membership,
    Nack,
    PeerMessage,
    Prepare,
    Promise,
    ReplicaId,
    Resign,
    Snapshot,
    Value,
    ValueKind,
)


@define
class _Proposal:
    """An instance the master proposed at its current ballot and has not yet seen chosen."""

    value: Value
    acks: set[ReplicaId]
    sent_tick: int
    config: Membership
    """The membership whose voters' majority chooses this instance (the one in effect
    after the instance before it)."""


_CHECKSUM_REQUEST = None
"""Marks a checksum request in the master's queue; it becomes an instance of its own."""


@define
class _Campaign:
    """Phase 1 in progress, for a new mastership or for a master's boost."""

    ballot: Ballot
    from_index: LogIndex
    base_config: Membership
    """The membership that governs `from_index`: the chain's first link."""
    asked: set[ReplicaId]
    """The replicas sent a Prepare: every member, and each voter of a later link."""
    reported: dict[ReplicaId, list[tuple[Entry, bool]]] = field(factory=dict)
    """Per acceptor, the entries its promise pages reported so far, each with whether the
    acceptor knew it chosen."""
    complete: dict[ReplicaId, bool] = field(factory=dict)
    """Acceptors whose every page has arrived (a dict, for a deterministic order)."""
    deadline_tick: int = 0

    def page_received(self, sender: ReplicaId, promise: Promise) -> bool:
        """Take the next page of `sender`'s promise; False for a duplicate or late page."""
        pages = self.reported.setdefault(sender, [])
        expected = pages[-1][0].index + 1 if pages else self.from_index
        if promise.from_index != expected or sender in self.complete:
            return False
        pages.extend((entry, entry.index <= promise.chosen_index) for entry in promise.entries)
        if not promise.more:
            self.complete[sender] = True
        return True


class Replica:
    """One replica's Multi-Paxos state machine. See the module docstring."""

    def __init__(
        self,
        replica_id: ReplicaId,
        membership: Membership,
        timing: Timing,
        limits: Limits,
        chance: Chance,
        persisted: Persisted | None = None,
        bugs: frozenset[Bug] = frozenset(),
        *,
        voting: bool = True,
    ) -> None:
        self._id = replica_id
        self._timing = timing
        self._limits = limits
        self._chance = chance
        self._bugs = bugs
        self._tick = 0
        # A replica whose disk was lost may have made promises it no longer remembers. It
        # rebuilds as a non-voting member (PML §5.1): it learns and keeps the log, but sends
        # no promise or acceptance, and never campaigns, until it has seen an instance that
        # started after its rebuild began chosen, and a whole lease period has passed.
        self._rebuild_floor: LogIndex | None = None

        # Acceptor and learner state; the durable part is restored from `persisted`.
        persisted = persisted or Persisted()
        hard_state = persisted.hard_state or HardState()
        self._voting = voting and hard_state.voting
        # The membership: `membership` seeds a new cell; after that the log and the snapshot
        # handle carry it (docs/design/membership.md §2.11). A replica that starts with
        # nothing to anchor it (a new member, or a lost disk) uses the seed, silently, until
        # its first catch-up or snapshot says what governs the log.
        self._unsaved_genesis: Membership | None = None
        if persisted.snapshot is not None:
            base, self._anchored = persisted.snapshot.membership, True
        elif persisted.genesis is not None:
            base, self._anchored = persisted.genesis, True
        elif self._voting:
            # A founding replica (bootstrap): the seed is the cell's first membership. (A
            # voting replica with a store always has a genesis or a snapshot: a rebuilding
            # one anchors before it votes, and version 1 stores are upgraded with the seed.)
            base, self._anchored = membership, True
            self._unsaved_genesis = membership
        else:
            base, self._anchored = membership, False
        snapshot_base = persisted.snapshot.index if persisted.snapshot else NO_INDEX
        self._configs: list[tuple[LogIndex, Membership]] = [(snapshot_base, base)]
        """Each membership with the index after which it governs, in order: the one in
        effect after the snapshot (or the genesis), then each change chosen since."""
        self._configs_through = snapshot_base
        """The chosen entries up to here have been scanned for membership changes."""
        self._membership_in_effect(base)
        self._promised = hard_state.promised
        self._snapshot = persisted.snapshot
        # The chosen index is written lazily (see `_chosen_advanced`), so a snapshot, which
        # only ever holds chosen state, may be ahead of it.
        self._chosen_index = max(
            hard_state.chosen_index,
            persisted.snapshot.index if persisted.snapshot else NO_INDEX,
        )
        self._log: dict[LogIndex, Entry] = {}
        for entry in persisted.entries:
            self._log[entry.index] = entry
        snapshot_index = persisted.snapshot.index if persisted.snapshot else NO_INDEX
        # Entries at or below the snapshot may be kept for lagging peers; none is missing above it.
        self._first_index = LogIndex(min([snapshot_index + 1, *self._log]))
        assert self._chosen_index >= snapshot_index, (self._chosen_index, snapshot_index)
        # A store checks this as it loads (a damaged disk is refused with a clear error).
        problem = persisted_problem(persisted)
        assert problem is None, problem
        # Restart = snapshot + replay: the shell restores the snapshot, then applies what
        # the first Ready hands out as committed.
        self._applied_index = snapshot_index
        self._events: list[ReplicaEvent] = []
        self._role = Role.FOLLOWER
        self._scan_chosen_memberships()
        self._highest_seen = self._promised

        # The lease this replica granted as an acceptor (see the module docstring on restarts).
        self._lease_holder: ReplicaId | None = None
        self._lease_until = 0
        self._lease_heard = False
        """Whether the lease grant came from a master's message (not the restart rule's guess)."""
        if self._promised != NO_BALLOT:
            self._lease_holder = self._promised.replica_id
            self._lease_until = timing.lease_ticks
        self._election_deadline = self._lease_until + self._jitter()

        # Proposer state.
        self._ballot = NO_BALLOT
        self._campaign: _Campaign | None = None
        self._catchup_due = 0
        self._reset_master_state()

        # Output buffers, drained by `ready`.
        self._hard_state_dirty = False
        self._chosen_dirty = False
        self._chosen_flush_tick = 0
        self._unsaved: dict[LogIndex, Entry] = {}
        self._unsaved_snapshot: Snapshot | None = None
        self._compact_through: LogIndex | None = None
        self._outbox: list[Envelope] = []
        self._early_outbox: list[Envelope] = []
        """Accepts for our own new entries: the shell may send them before persisting."""
        self._outstanding = False
        # A rebuild begins durably, before the replica says anything.
        self._hard_state_dirty = not self._voting and hard_state.voting

    def _reset_master_state(self) -> None:
        self._mastership_ballot = NO_BALLOT
        self._epoch = NO_EPOCH
        self._epoch_start_index = NO_INDEX
        self._serving = False
        self._next_index = LogIndex(0)
        self._proposals: dict[LogIndex, _Proposal] = {}
        self._chosen_ahead: set[LogIndex] = set()
        self._queue: deque[Command | None] = deque()
        self._acked_tick: dict[ReplicaId, int] = {}
        self._peer_chosen: dict[ReplicaId, LogIndex] = {}
        self._peer_trusted: dict[ReplicaId, bool] = {}
        self._last_send_tick = 0
        self._lease_expiry = 0
        self._had_lease = False
        self._mastership_tick = 0
        self._heartbeat_due = 0
        self._boost: _Campaign | None = None
        self._membership_queued: Membership | None = None
        """A change the master will propose once its window is empty."""
        self._membership_inflight: LogIndex | None = None
        """The instance of the change proposed and not yet chosen: nothing after it is
        proposed until it is (docs/design/membership.md §2.2)."""
        self._proposing_config: Membership | None = None
        """The membership that governs the next new instance: the one in effect, or the
        last change among this master's proposals not yet chosen."""

    # ------------------------------------------------------------------ inputs

    def tick(self, elapsed: int = 1) -> None:
        """`elapsed` ticks of this replica's clock have passed since the last call.

        Every timer is a deadline, so a process that stalled and catches up many ticks at
        once acts once, on where its clock is now (it does not campaign once per tick missed).
        """
        assert elapsed >= 1, elapsed
        self._tick += elapsed
        if self._chosen_dirty and self._tick >= self._chosen_flush_tick:
            self._hard_state_dirty = True
        match self._role:
            case Role.FOLLOWER:
                if not self._voting:
                    self._rebuild_check()
                elif self._tick >= self._election_deadline and self._is_voter:
                    self._campaign_start()
            case Role.CANDIDATE:
                assert self._campaign is not None
                if self._tick >= self._campaign.deadline_tick:
                    self._campaign_start()
            case Role.MASTER:
                self._master_ticked()
            case unexpected:
                assert_never(unexpected)

    def step(self, sender: ReplicaId, message: PeerMessage) -> None:
        """A peer's message arrived. One that could not come from a correct peer is ignored."""
        assert sender != self._id, sender
        # A sender outside our membership is heard as any other: a replica that lags behind
        # changes must take the current master's messages, and no count ever includes a
        # replica that is not a voter of the membership that governs what it counts. The
        # peer layer decides who may connect at all.
        if not self._plausible(sender, message):
            return
        match message:
            case Prepare():
                self._prepare_received(sender, message)
            case Promise():
                self._promise_received(sender, message)
            case Accept():
                self._accept_received(sender, message)
            case Accepted():
                self._accepted_received(sender, message)
            case Heartbeat():
                self._heartbeat_received(sender, message)
            case HeartbeatAck():
                self._heartbeat_ack_received(sender, message)
            case Nack():
                self._nack_received(sender, message)
            case CatchUpRequest():
                self._catch_up_requested(sender, message)
            case CatchUp():
                self._catch_up_received(sender, message)
            case InstallSnapshot():
                self._snapshot_received(sender, message)
            case Resign():
                self._resign_received(sender, message)
            case unexpected:
                assert_never(unexpected)

    def _plausible(self, sender: ReplicaId, message: PeerMessage) -> bool:
        """Whether a correct peer could have sent this: a proposer's messages carry its own
        ballot, replies carry ours, and echoed ticks are ticks we have reached."""
        match message:
            case Prepare(ballot) | Accept(ballot) | Heartbeat(ballot) | Resign(ballot):
                return ballot.replica_id == sender
            case Promise(ballot) | Nack(ballot):
                return ballot.replica_id == self._id
            case Accepted(ballot, _, sent_tick) | HeartbeatAck(ballot, sent_tick, _):
                return ballot.replica_id == self._id and sent_tick <= self._tick
            case CatchUpRequest(from_index):
                return from_index >= 1
            case CatchUp() | InstallSnapshot():
                return True
            case unexpected:
                assert_never(unexpected)

    def propose(self, commands: Sequence[Command], epoch: Epoch) -> Refused | None:
        """Queue commands validated under `epoch`; they are batched into instances in order."""
        refused = self._refuse_proposal(epoch)
        if refused is not None:
            return refused
        if any(c.size_bytes > self._limits.batch_bytes_max for c in commands):
            return Refused(RefusalReason.TOO_LARGE)
        if len(self._queue) + len(commands) > self._limits.proposals_queued_max:
            return Refused(RefusalReason.OVERLOADED)
        self._queue.extend(commands)
        self._fill_window()
        return None

    @property
    def queue_room(self) -> int:
        """How many more commands `propose` would take now (before OVERLOADED)."""
        return self._limits.proposals_queued_max - len(self._queue)

    def request_checksum(self, epoch: Epoch) -> Refused | None:
        """Propose a CHECKSUM instance: every replica checksums its state when it applies it."""
        refused = self._refuse_proposal(epoch)
        if refused is not None:
            return refused
        if len(self._queue) >= self._limits.proposals_queued_max:
            return Refused(RefusalReason.OVERLOADED)
        self._queue.append(_CHECKSUM_REQUEST)
        self._fill_window()
        return None

    def propose_membership(self, membership: Membership, epoch: Epoch) -> Refused | None:
        """Propose the cell's next membership, one step from the current one (the caller
        checked it with `successor_problem`). It is proposed once every instance before it
        is chosen, and nothing is proposed after it until it is chosen; it governs the
        instances after its own (docs/design/membership.md §2.2)."""
        refused = self._refuse_proposal(epoch)
        if refused is not None:
            return refused
        if self.membership_change_pending:
            return Refused(RefusalReason.MEMBERSHIP_BUSY)
        problem = successor_problem(self._membership, membership)
        assert problem is None, problem
        self._membership_queued = membership
        self._fill_window()
        return None

    @property
    def membership_change_pending(self) -> bool:
        """Whether this master has a membership change queued or not yet chosen."""
        return self._membership_queued is not None or self._membership_inflight is not None

    def resign(self) -> bool:
        """Give up mastership gracefully (a planned stop): no more lease, and a quick hand-over.

        The master stops believing in its lease first, then asks its acceptors to drop theirs
        and names the most caught-up live peer to campaign at once. Returns False if this
        replica was not master.
        """
        return self._resign(StepDownReason.RESIGNED)

    def _resign(self, reason: StepDownReason) -> bool:
        if self._role is not Role.MASTER:
            return False
        ballot = self._ballot
        successor = self._successor()
        peers = self._peers
        self._step_down(reason)
        self._lease_holder = None
        self._lease_until = 0
        # Leave the next mastership to the successor, unless it fails to take it.
        self._election_deadline = self._tick + self._timing.lease_ticks + self._jitter()
        for peer in peers:
            self._send(peer, Resign(ballot, successor or ReplicaId(""), self._chosen_index))
        return True

    def _successor(self) -> ReplicaId | None:
        """The peer that acknowledged us recently and knows the most of the log."""
        recent = self._tick - 2 * self._timing.heartbeat_ticks
        voters = self._membership.voters
        alive = [p for p in voters if p != self._id and self._acked_tick.get(p, -1) >= recent]
        if not alive:
            return None
        return max(alive, key=lambda p: (self._peer_chosen.get(p, NO_INDEX), p))

    def snapshot_taken(self, index: LogIndex, data: bytes) -> None:
        """The state after applying `index` is `data`: keep it as a snapshot, truncate before it."""
        assert self._snapshot is None or index >= self._snapshot.index, index
        assert index == self._applied_index, (index, self._applied_index)
        snapshot = Snapshot(index, data, self._config_after(index))
        self._snapshot = snapshot
        self._unsaved_snapshot = snapshot
        keep_from = LogIndex(max(self._first_index, index + 1 - self._limits.log_retain_entries))
        if keep_from > self._first_index:
            self._drop_log_below(keep_from)

    # ------------------------------------------------------------------ outputs

    def has_ready(self) -> bool:
        """Whether `ready` has something, and the previous Ready was advanced."""
        return not self._outstanding and (
            self._hard_state_dirty
            or bool(self._unsaved)
            or self._unsaved_snapshot is not None
            or self._compact_through is not None
            or self._unsaved_genesis is not None
            or bool(self._outbox)
            or bool(self._early_outbox)
            or bool(self._events)
            or self._chosen_index > self._applied_index
        )

    def ready(self) -> Ready:
        """Everything to persist, send and apply since the last Ready."""
        assert not self._outstanding, "advance the previous Ready first"
        write_hard_state = self._hard_state_dirty or (
            self._chosen_dirty
            and bool(self._unsaved or self._unsaved_snapshot or self._compact_through is not None)
        )
        durable = Durable(
            hard_state=HardState(self._promised, self._chosen_index, self._voting)
            if write_hard_state
            else None,
            entries=tuple(self._unsaved[index] for index in sorted(self._unsaved)),
            snapshot=self._unsaved_snapshot,
            compact_through=self._compact_through,
            genesis=self._unsaved_genesis,
        )
        committed = tuple(
            self._log[LogIndex(index)]
            for index in range(self._applied_index + 1, self._chosen_index + 1)
        )
        ready = Ready(
            durable,
            tuple(self._outbox),
            committed,
            tuple(self._events),
            tuple(self._early_outbox),
        )
        self._applied_index = self._chosen_index
        if write_hard_state:
            self._hard_state_dirty = False
            self._chosen_dirty = False
        self._unsaved = {}
        self._unsaved_snapshot = None
        self._compact_through = None
        self._unsaved_genesis = None
        self._outbox = []
        self._early_outbox = []
        self._events = []
        self._outstanding = True
        return ready

    def advance(self, ready: Ready) -> None:
        """The shell persisted, sent and applied `ready`, in that order."""
        assert self._outstanding
        self._outstanding = False
        # Our own acceptances of this Ready's entries count from now: they are durable.
        for entry in ready.durable.entries:
            proposal = self._proposals.get(entry.index)
            if proposal is None or entry.ballot != self._ballot or self._role is not Role.MASTER:
                continue
            proposal.acks.add(self._id)
            if self._quorum_reached(proposal.acks, proposal.config):
                self._instance_chosen(entry.index)
        if (
            self._role is Role.MASTER
            and not self._serving
            and self._applied_index >= self._epoch_start_index
        ):
            self._serving = True
            self._events.append(StartedServing(self._epoch, self._epoch_start_index))
        self._fill_window()

    # ------------------------------------------------------------------ queries

    @property
    def replica_id(self) -> ReplicaId:
        return self._id

    @property
    def membership(self) -> Membership:
        """The configuration this replica counts quorums by."""
        return self._membership

    @property
    def anchored(self) -> bool:
        """Whether it knows the cell's membership (a new replica learns it from a peer)."""
        return self._anchored

    @property
    def membership_index(self) -> LogIndex:
        """The index `membership` governs after: its change's (or the snapshot's)."""
        return self._configs[-1][0]

    @property
    def tick_count(self) -> int:
        return self._tick

    @property
    def applied_index(self) -> LogIndex:
        """The last index handed out in a Ready as committed (or restored from a snapshot)."""
        return self._applied_index

    @property
    def serving(self) -> bool:
        """Master, with its epoch's first entry applied: it may take proposals."""
        return self._serving

    @property
    def epoch(self) -> Epoch:
        """The master's epoch, or NO_EPOCH when not master."""
        return self._epoch

    def lease_valid(self) -> bool:
        """Whether this replica is master and believes its master lease valid right now."""
        return self.lease_valid_at(self._tick)

    def lease_valid_at(self, tick: int) -> bool:
        """Whether, with nothing else happening, it would believe its lease valid at `tick`."""
        if self._role is not Role.MASTER:
            return False
        if Bug.IGNORE_LEASE_END in self._bugs and self._had_lease:
            return True
        return tick < self._lease_expiry

    def can_serve_reads(self) -> bool:
        """Master, serving its epoch, under a valid lease: reads of local state are current."""
        return self._serving and self.lease_valid()

    def master_hint(self) -> ReplicaId | None:
        """Who this replica believes is master: itself, the holder of its lease grant, or None."""
        if self._role is Role.MASTER:
            return self._id
        holder = self._lease_holder
        if holder is None or holder == self._id or not self._lease_heard:
            return None
        return holder if self._tick < self._lease_until else None

    def peer_progress(self) -> dict[ReplicaId, PeerProgress]:
        """For a master, each peer that acknowledged a message of its mastership (learners
        included): what a promotion's catch-up gate and an operator's member list read."""
        return {
            rid: PeerProgress(
                self._peer_chosen.get(rid, NO_INDEX), tick, self._peer_trusted.get(rid, True)
            )
            for rid, tick in sorted(self._acked_tick.items())
        }

    def status(self) -> Status:
        return Status(
            replica_id=self._id,
            role=self._role,
            promised=self._promised,
            ballot=self._ballot,
            epoch=self._epoch,
            serving=self._serving,
            lease_valid=self.lease_valid(),
            lease_expiry_tick=self._lease_expiry,
            tick=self._tick,
            chosen_index=self._chosen_index,
            applied_index=self._applied_index,
            snapshot_index=self._snapshot.index if self._snapshot else NO_INDEX,
            first_index=self._first_index,
            last_index=LogIndex(max(self._log, default=self._first_index - 1)),
            queued_commands=len(self._queue),
            inflight_instances=len(self._proposals),
            voting=self._voting,
            membership=self._membership if self._anchored else None,
        )

    # ------------------------------------------------------------------ acceptor

    def _leased_to_other(self, sender: ReplicaId) -> bool:
        """Whether a lease granted to another replica forbids dealing with `sender` now."""
        if Bug.ACCEPTOR_IGNORES_LEASE in self._bugs:
            return False
        return (
            self._lease_holder is not None
            and self._lease_holder != sender
            and self._tick < self._lease_until
        )

    def _prepare_received(self, sender: ReplicaId, prepare: Prepare) -> None:
        if self._anchored and sender not in self._membership.voters:
            # A candidate we do not know as a voter: refused (as a lease refusal, so it
            # waits), never promised. A replica of another history (started with
            # --bootstrap by mistake, and added) must not win our promise by counting a
            # membership of its own; a new voter we have not yet learned of only waits
            # until we catch up from the master.
            self._send(sender, Nack(prepare.ballot, NO_BALLOT, True, self._chosen_index))
            return
        self._saw_ballot(prepare.ballot)
        if self._leased_to_other(sender):
            self._send(sender, self._nack(prepare.ballot, leased=True))
            return
        if self._below_promise(prepare.ballot):
            self._send(sender, self._nack(prepare.ballot, leased=False))
            return
        if prepare.ballot > self._promised:
            self._promise(prepare.ballot)
            # Give the candidate time to finish before campaigning ourselves.
            self._election_deadline = max(
                self._election_deadline, self._tick + self._timing.retry_ticks + self._jitter()
            )
        promise = self._promise_for(
            prepare.ballot, prepare.from_index, self._limits.catchup_entries_max
        )
        self._send(sender, promise)

    def _below_promise(self, ballot: Ballot) -> bool:
        """Whether `ballot` is refused for the promise: below it, or another replica's
        ballot of the promised round. An acceptor never promises two ballots of one round,
        so no two masterships share an epoch (their winning round) even when the rounds a
        replica picks stop naming it alone, as they do when the number of voters changes
        (docs/design/membership.md §2.4). With a fixed membership no two replicas pick one
        round, and this refuses nothing more."""
        promised = self._promised
        return ballot < promised or (
            ballot.round == promised.round and ballot.replica_id != promised.replica_id
        )

    def _nack(self, ballot: Ballot, *, leased: bool) -> Nack:
        return Nack(ballot, self._promised, leased, self._chosen_index)

    def _promise(self, ballot: Ballot) -> None:
        """Promise `ballot` (made durable before any reply) and give up any role below it."""
        assert ballot > self._promised
        self._promised = ballot
        self._hard_state_dirty = True
        if self._role is not Role.FOLLOWER and ballot.replica_id != self._id:
            self._step_down(StepDownReason.HIGHER_BALLOT)

    def _promise_for(self, ballot: Ballot, from_index: LogIndex, limit: int) -> Promise:
        """A page of what this acceptor accepted from `from_index` on: at most `limit` entries."""
        indices = sorted(i for i in self._log if i >= from_index)
        entries = tuple(self._log[i] for i in indices[:limit])
        # Entries below our first retained index are chosen and gone from our log; a
        # proposer that lacks them must fetch a snapshot before it can lead.
        behind = from_index < self._first_index
        more = len(indices) > limit
        return Promise(ballot, from_index, entries, self._chosen_index, more, behind)

    def _accept_received(self, sender: ReplicaId, accept: Accept) -> None:
        if not self._take_master_message(sender, accept.ballot):
            return
        index = accept.index
        if index < self._first_index:
            # Chosen, and truncated here. A master whose ballot we accept proposes only the
            # chosen value for a chosen index (it recovered it in phase 1), so say yes: a new
            # master re-proposing what its promises reported must not stall on us.
            self._send(sender, self._accepted(accept))
        elif index <= self._chosen_index:
            # Chosen values never change; acknowledge only the same value.
            if self._log[index].value == accept.value:
                self._send(sender, self._accepted(accept))
        else:
            self._store_entry(Entry(index, accept.ballot, accept.value))
            self._send(sender, self._accepted(accept))
        self._learn(sender, accept.ballot, accept.chosen_index)

    def _accepted(self, accept: Accept) -> Accepted:
        return Accepted(accept.ballot, accept.index, accept.sent_tick, self._chosen_index)

    def _heartbeat_received(self, sender: ReplicaId, heartbeat: Heartbeat) -> None:
        if not self._take_master_message(sender, heartbeat.ballot):
            return
        ack = HeartbeatAck(heartbeat.ballot, heartbeat.sent_tick, self._chosen_index, self._voting)
        self._send(sender, ack)
        if not self._voting and self._rebuild_floor is None:
            # Instances after the master's last proposed one start after our rebuild began.
            self._rebuild_floor = LogIndex(heartbeat.last_index + 1)
        self._learn(sender, heartbeat.ballot, heartbeat.chosen_index)

    def _take_master_message(self, sender: ReplicaId, ballot: Ballot) -> bool:
        """Check an Accept or Heartbeat from `sender`; if taken, lease ourselves to the sender."""
        self._saw_ballot(ballot)
        if self._leased_to_other(sender):
            self._send(sender, self._nack(ballot, leased=True))
            return False
        if self._below_promise(ballot):
            self._send(sender, self._nack(ballot, leased=False))
            return False
        if ballot > self._promised:
            self._promise(ballot)
        assert self._promised.replica_id == sender
        self._lease_holder = sender
        self._lease_heard = True
        self._lease_until = self._tick + self._timing.lease_ticks
        self._election_deadline = self._lease_until + self._jitter()
        return True

    # ------------------------------------------------------------------ learner

    def _learn(self, sender: ReplicaId, ballot: Ballot, chosen_index: LogIndex) -> None:
        """The master at `ballot` says everything up to `chosen_index` is chosen.

        An entry we accepted at that same ballot holds the value the master proposed, which is
        the chosen one; anything else must come through catch-up.
        """
        advanced = False
        while self._chosen_index < chosen_index and self._anchored:
            entry = self._log.get(LogIndex(self._chosen_index + 1))
            if entry is None or entry.ballot != ballot:
                break
            self._chosen_index = entry.index
            advanced = True
        if advanced:
            self._chosen_advanced()
        if self._chosen_index < chosen_index:
            self._request_catch_up(sender)

    def _chosen_advanced(self) -> None:
        """The chosen index moved: write it with the next durable write, or within a heartbeat.

        Knowing an entry is chosen needs no durability: after a restart the replica learns it
        again from the master (the value is on a majority's disks either way), so a recorded
        chosen index that lags only means a longer replay from peers. Writing it eagerly
        would cost a transaction and an fsync before every apply, on the master's path to
        every client's reply; instead it rides along with the next entries or snapshot, and a
        quiet replica writes it one heartbeat period later.
        """
        if not self._chosen_dirty:
            self._chosen_dirty = True
            self._chosen_flush_tick = self._tick + self._timing.heartbeat_ticks
        self._scan_chosen_memberships()

    def _scan_chosen_memberships(self) -> None:
        """Take each membership change newly known chosen into effect, in index order."""
        while self._configs_through < self._chosen_index:
            index = LogIndex(self._configs_through + 1)
            self._configs_through = index
            entry = self._log.get(index)
            if entry is None:
                continue  # compacted into a snapshot whose handle we hold
            if entry.value.membership is not None:
                self._membership_chosen(index, entry.value.membership)

    def _membership_chosen(self, index: LogIndex, membership: Membership) -> None:
        """The change at `index` is chosen: it governs every instance after it."""
        problem = successor_problem(self._membership, membership)
        if problem is not None:
            raise ForeignHistory(
                f"the membership chosen at {index} (version {membership.version}) cannot "
                f"follow this replica's (version {self._membership.version}): {problem}"
            )
        self._configs.append((index, membership))
        before = self._peers
        self._membership_in_effect(membership)
        self._events.append(MembershipChanged(index, membership))
        if self._role is Role.MASTER:
            # A member removed hears once more, so it learns its removal is chosen (it is
            # sent nothing after this, and would otherwise campaign for ever).
            last = LogIndex(self._next_index - 1)
            farewell = Heartbeat(self._ballot, self._chosen_index, self._tick, last)
            for gone in before:
                if gone not in self._member_ids:
                    self._send(gone, farewell)
            if self._membership_inflight == index:
                self._membership_inflight = None
            if not self._is_voter and Bug.REMOVED_MASTER_STAYS not in self._bugs:
                # A master is a voter of the configuration it governs by: removed, it stops
                # believing in its lease now, and hands over at once.
                self._resign(StepDownReason.REMOVED)
            else:
                self._lease_recompute()
        elif self._role is Role.CANDIDATE and not self._is_voter:
            self._step_down(StepDownReason.REMOVED)

    def _config_after(self, index: LogIndex) -> Membership:
        """The membership that governs the instance after `index` (from the snapshot's on)."""
        assert index >= self._configs[0][0], (index, self._configs[0][0])
        found = self._configs[0][1]
        for start, membership in self._configs:
            if start > index:
                break
            found = membership
        return found

    def _request_catch_up(self, source: ReplicaId) -> None:
        if self._tick < self._catchup_due:
            return
        self._catchup_due = self._tick + self._timing.retry_ticks
        self._send(source, CatchUpRequest(LogIndex(self._chosen_index + 1)))

    def _catch_up_requested(self, sender: ReplicaId, request: CatchUpRequest) -> None:
        if not self._anchored:
            return
        base = self._configs[0][0]
        if request.from_index < self._first_index or request.from_index - 1 < base:
            # Truncated, or from before the oldest membership we know: the snapshot has both.
            assert self._snapshot is not None
            assert self._snapshot.index >= self._first_index - 1, self._snapshot.index
            self._send(sender, InstallSnapshot(self._snapshot))
            return
        last = min(self._chosen_index, request.from_index + self._limits.catchup_entries_max - 1)
        entries = tuple(self._log[LogIndex(i)] for i in range(request.from_index, last + 1))
        membership = self._config_after(LogIndex(request.from_index - 1))
        self._send(sender, CatchUp(entries, self._chosen_index, membership))

    def _catch_up_received(self, sender: ReplicaId, catch_up: CatchUp) -> None:
        if self._role is Role.MASTER:
            return  # a master's log is at least as complete as anything it needs
        before = self._chosen_index
        if not self._anchored:
            if not catch_up.entries or catch_up.entries[0].index != 1 or self._chosen_index:
                return
            # A new replica learns the cell's first membership with the log's first entries.
            self._anchor(NO_INDEX, catch_up.membership)
            self._unsaved_genesis = catch_up.membership
        for entry in catch_up.entries:
            if entry.index == self._chosen_index + 1:
                self._store_entry(entry)
                self._chosen_index = entry.index
        if self._chosen_index > before:
            self._chosen_advanced()
        self._catchup_due = 0
        if self._chosen_index < catch_up.chosen_index:
            self._request_catch_up(sender)

    def _snapshot_received(self, sender: ReplicaId, message: InstallSnapshot) -> None:
        snapshot = message.snapshot
        if self._role is Role.MASTER or snapshot.index <= self._chosen_index:
            return
        if self._role is Role.CANDIDATE:
            self._step_down(StepDownReason.BEHIND)
        self._drop_log_below(LogIndex(snapshot.index + 1))
        self._snapshot = snapshot
        self._unsaved_snapshot = snapshot
        self._chosen_index = snapshot.index
        self._anchor(snapshot.index, snapshot.membership)
        self._hard_state_dirty = True
        # The shell restores the state machine from the snapshot instead of applying up to it.
        self._applied_index = snapshot.index
        self._catchup_due = 0
        self._events.append(SnapshotInstalled(snapshot.index, sender))

    def _drop_log_below(self, keep_from: LogIndex) -> None:
        for index in [i for i in self._log if i < keep_from]:
            del self._log[index]
            self._unsaved.pop(index, None)
        self._first_index = keep_from
        self._compact_through = LogIndex(keep_from - 1)
        # Keep the memberships that govern the instances still in the log.
        while len(self._configs) > 1 and self._configs[1][0] <= keep_from - 1:
            del self._configs[0]

    def _anchor(self, index: LogIndex, membership: Membership) -> None:
        """What governs the instances after `index` is `membership`, on a peer's word (its
        snapshot's handle, or the genesis with its first entries): start the history there."""
        self._configs = [(index, membership)]
        self._configs_through = index
        self._anchored = True
        if membership != self._membership:
            self._membership_in_effect(membership)

    def _resign_received(self, sender: ReplicaId, resign: Resign) -> None:
        """The master we may be leased to gave up: drop the lease; its successor campaigns."""
        # What the master knew chosen, at its ballot (a removed master's last word).
        if resign.ballot == self._promised:
            self._learn(sender, resign.ballot, resign.chosen_index)
        # Only a lease to that very mastership (same ballot) is released: a Resign delayed
        # past a later mastership of the same replica must not cut that one's lease short.
        if self._lease_holder == sender and resign.ballot == self._promised:
            self._lease_holder = None
            self._lease_until = 0
        if self._role is not Role.FOLLOWER or self._leased_to_other(self._id):
            return
        if resign.successor == self._id and self._voting and self._is_voter:
            self._campaign_start()
        else:
            # The successor should win; campaign soon ourselves in case it does not.
            self._election_deadline = self._tick + self._timing.retry_ticks + self._jitter()

    def _rebuild_check(self) -> None:
        """Become a voting member once an instance started after the rebuild is chosen."""
        floor = self._rebuild_floor
        if floor is None or self._chosen_index < floor or self._tick < self._timing.lease_ticks:
            return
        self._voting = True
        self._hard_state_dirty = True  # durable before any vote this replica casts
        self._election_deadline = max(self._election_deadline, self._lease_until) + self._jitter()
        self._events.append(Rebuilt(self._chosen_index))

    # ------------------------------------------------------------------ candidate

    def _campaign_start(self) -> None:
        """Run phase 1 with a ballot above any seen, for every instance not known chosen."""
        assert not self._leased_to_other(self._id), "campaigning while leased to a master"
        ballot = self._promise_next_ballot()
        self._role = Role.CANDIDATE
        self._ballot = ballot
        self._campaign = self._new_campaign(ballot)
        self._events.append(Campaigning(ballot))

    def _promise_next_ballot(self) -> Ballot:
        """Promise ourselves the lowest ballot above any seen whose round is ours alone.

        (Paxos Made Live, footnote 1.)

        Voter i of n uses only rounds r with r mod n == i, so while the voters stay the same
        a round names one proposer and candidates do not duel over it. Epochs stay unique
        when they change, too: an acceptor never promises two ballots of one round
        (`_below_promise`).
        """
        voters = self._membership.voters
        order = voters if self._id in voters else self._member_ids
        n = len(order)
        mine = order.index(self._id)
        low = max(self._promised.round, self._highest_seen.round) + 1
        ballot = Ballot(low + (mine - low) % n, self._id)
        self._promise(ballot)
        return ballot

    def _new_campaign(self, ballot: Ballot) -> _Campaign:
        from_index = LogIndex(self._chosen_index + 1)
        deadline = self._tick + self._timing.retry_ticks + self._jitter()
        campaign = _Campaign(
            ballot, from_index, self._membership, set(self._peers), deadline_tick=deadline
        )
        # Our own promise travels no wire, so it reports everything in one page.
        own = self._promise_for(ballot, from_index, len(self._log))
        assert not own.more, from_index
        assert not own.behind, (from_index, self._first_index)
        campaign.page_received(self._id, own)
        for peer in self._peers:
            self._send(peer, Prepare(ballot, from_index))
        return campaign

    def _promise_received(self, sender: ReplicaId, promise: Promise) -> None:
        campaign = self._campaign if self._role is Role.CANDIDATE else self._boost
        if campaign is None or promise.ballot != campaign.ballot:
            return  # late or duplicate
        if promise.behind:
            # The acceptor truncated entries we lack. Step down, catch up, and campaign again
            # later: a replica that knows more can lead meanwhile.
            self._step_down(StepDownReason.BEHIND)
            self._catchup_due = 0
            self._request_catch_up(sender)
            return
        if not campaign.page_received(sender, promise):
            return
        if promise.more:
            # A long tail comes in pages; each one that arrives is progress, worth waiting for.
            campaign.deadline_tick = max(
                campaign.deadline_tick, self._tick + self._timing.retry_ticks
            )
            self._send(sender, Prepare(campaign.ballot, LogIndex(promise.entries[-1].index + 1)))
        if not self._quorum_reached(campaign.complete, campaign.base_config):
            return
        chain = self._campaign_chain(campaign)
        if not all(self._quorum_reached(campaign.complete, config) for config in chain):
            # A change among the values we would re-propose governs what follows it: ask
            # its voters too, and win only with a majority of each (§2.3).
            for config in chain:
                for voter in config.voters:
                    if voter != self._id and voter not in campaign.asked:
                        campaign.asked.add(voter)
                        self._send(voter, Prepare(campaign.ballot, campaign.from_index))
            return
        if self._role is Role.CANDIDATE:
            if self._id not in chain[-1].voters:
                # The chosen log has removed us: learn it (and stop campaigning) from the
                # acceptor whose promise told us.
                self._step_down(StepDownReason.REMOVED)
                self._catchup_due = 0
                self._request_catch_up(sender)
                return
            self._mastership_won(campaign)
        else:
            self._boost_won(campaign)

    def _campaign_chain(self, campaign: _Campaign) -> list[Membership]:
        """The memberships that may govern the instances from the campaign's start: the one
        in effect there, then each change among the values phase 2 would propose, in
        index order (docs/design/membership.md §2.3)."""
        chain = [campaign.base_config]
        if Bug.CANDIDATE_IGNORES_CHAIN in self._bugs:
            return chain
        recovered = self._recovered_values(campaign, NO_EPOCH)
        chain.extend(v.membership for v in recovered.values() if v.membership is not None)
        return chain

    def _recovered_values(self, campaign: _Campaign, epoch: Epoch) -> dict[LogIndex, Value]:
        """For each instance from the campaign's start, the value phase 2 must propose.

        A value some acceptor knows chosen wins; otherwise the highest-ballot value reported
        (the rule that makes Paxos safe); a gap becomes a no-op.
        """
        best: dict[LogIndex, tuple[bool, Ballot, Value]] = {}
        for replica_id in sorted(campaign.complete):
            if Bug.FORGET_ACCEPTED_VALUES in self._bugs and replica_id != self._id:
                continue
            for entry, known_chosen in campaign.reported[replica_id]:
                key = (known_chosen, entry.ballot, entry.value)
                current = best.get(entry.index)
                if current is None or key[:2] > current[:2]:
                    best[entry.index] = key
        last = max(best, default=campaign.from_index - 1)
        return {
            LogIndex(i): best[LogIndex(i)][2]
            if LogIndex(i) in best
            else Value(epoch, ValueKind.NOOP)
            for i in range(campaign.from_index, last + 1)
        }

    def _mastership_won(self, campaign: _Campaign) -> None:
        # The epoch is the winning ballot's round: rounds are unique per replica (see
        # `_promise_next_ballot`), so no two masterships share an epoch, and a quorum promised this
        # ballot over every earlier winning one, so epochs rise with each mastership.
        epoch = Epoch(campaign.ballot.round)
        recovered = self._recovered_values(campaign, epoch)
        self._campaign = None
        self._role = Role.MASTER
        self._reset_master_state()
        self._ballot = campaign.ballot
        self._mastership_ballot = campaign.ballot
        self._epoch = epoch
        self._mastership_tick = self._tick
        self._next_index = LogIndex(max(self._chosen_index, *recovered, NO_INDEX) + 1)
        self._propose_recovered(recovered)
        self._epoch_start_index = self._next_index
        self._propose_at(self._next_index, Value(epoch, ValueKind.EPOCH_START))
        self._next_index = LogIndex(self._next_index + 1)
        self._events.append(BecameMaster(campaign.ballot, epoch, len(recovered)))

    # ------------------------------------------------------------------ master

    def _propose_recovered(self, recovered: dict[LogIndex, Value]) -> None:
        """Phase 2, at our ballot, for every recovered instance not known chosen, in index
        order, each under the membership the changes before it make (§2.3)."""
        self._proposing_config = None
        self._membership_inflight = None
        for index, value in recovered.items():
            if index > self._chosen_index:
                self._propose_at(index, value)
                if value.membership is not None:
                    self._membership_inflight = index

    def _refuse_proposal(self, epoch: Epoch) -> Refused | None:
        if self._role is not Role.MASTER or not self._serving:
            return Refused(RefusalReason.NOT_MASTER)
        if epoch != self._epoch:
            return Refused(RefusalReason.EPOCH_CHANGED)
        return None

    def _master_ticked(self) -> None:
        if self._tick >= self._lease_expiry and Bug.IGNORE_LEASE_END not in self._bugs:
            if self._had_lease:
                self._events.append(LeaseLost(self._epoch))
                self._step_down(StepDownReason.LEASE_EXPIRED)
                return
            if self._tick >= self._mastership_tick + self._timing.master_lease_ticks:
                self._step_down(StepDownReason.NO_LEASE)
                return
        if self._boost is not None and self._tick >= self._boost.deadline_tick:
            self._boost_start()
        if self._tick >= self._heartbeat_due:
            self._heartbeat_due = self._tick + self._timing.heartbeat_ticks
            self._note_send()
            last = LogIndex(self._next_index - 1)
            heartbeat = Heartbeat(self._ballot, self._chosen_index, self._tick, last)
            for peer in self._peers:
                self._send(peer, heartbeat)
            self._resend_unacknowledged()

    def _resend_unacknowledged(self) -> None:
        """Send Accepts again to peers that have not acknowledged them for a while."""
        for index in sorted(self._proposals):
            proposal = self._proposals[index]
            if self._tick - proposal.sent_tick < self._timing.retry_ticks:
                continue
            proposal.sent_tick = self._tick
            accept = Accept(self._ballot, index, proposal.value, self._chosen_index, self._tick)
            for peer in self._accept_targets(proposal.config):
                if peer not in proposal.acks:
                    self._send(peer, accept)

    def _note_send(self) -> None:
        """The master sends at its ballot now: it accepts its own message, leasing itself."""
        assert self._promised == (self._boost.ballot if self._boost else self._ballot)
        self._last_send_tick = self._tick
        self._lease_holder = self._id
        self._lease_until = self._tick + self._timing.lease_ticks

    def _fill_window(self) -> None:
        """Cut batches from the queue into new instances while the window has room.

        Not while a Ready is outstanding: its writes are still being made durable, so a new
        instance could not be persisted or sent before `advance` anyway. Commands that arrive
        meanwhile wait in the queue and become one instance when it is advanced: one Accept
        per peer and one log row for all of them, instead of one per command (group commit
        at the level of the log, as etcd's raft loop batches proposals while it persists).
        """
        if self._role is not Role.MASTER or not self._serving or self._boost is not None:
            return
        if self._outstanding:
            return
        if self._membership_inflight is not None:
            return  # nothing after a change until it is chosen
        if self._membership_queued is not None:
            if self._next_index - 1 == self._chosen_index:
                # Every instance before it is chosen: one configuration governs the change.
                value = Value(self._epoch, ValueKind.MEMBERSHIP, membership=self._membership_queued)
                self._membership_queued = None
                self._membership_inflight = self._next_index
                self._propose_at(self._next_index, value)
                self._next_index = LogIndex(self._next_index + 1)
            return
        window = self._limits.proposals_inflight_max
        while self._queue and self._next_index - 1 - self._chosen_index < window:
            if self._queue[0] is _CHECKSUM_REQUEST:
                self._queue.popleft()
                value = Value(self._epoch, ValueKind.CHECKSUM)
            else:
                value = Value(self._epoch, ValueKind.COMMANDS, self._cut_batch())
            self._propose_at(self._next_index, value)
            self._next_index = LogIndex(self._next_index + 1)

    def _cut_batch(self) -> tuple[Command, ...]:
        batch: list[Command] = []
        size = 0
        entries_max = self._limits.batch_entries_max
        if self._chance.buggify("tiny-batch"):
            entries_max = 1
        while self._queue and len(batch) < entries_max:
            command = self._queue[0]
            if command is None:
                break
            command_bytes = command.size_bytes
            if size + command_bytes > self._limits.batch_bytes_max:
                break
            size += command_bytes
            batch.append(command)
            self._queue.popleft()
        assert batch, "every queued command fits a batch on its own"
        return tuple(batch)

    def _propose_at(self, index: LogIndex, value: Value) -> None:
        """Phase 2 for one instance at the current ballot: accept it ourselves, then ask peers."""
        assert index > self._chosen_index, index
        assert index not in self._proposals, index
        self._store_entry(Entry(index, self._ballot, value))
        # Our own acceptance counts once the entry is durable (`advance`); the peers are
        # asked at once, in parallel with our own write (`Ready.early`).
        config = self._proposing_config or self._membership
        self._proposals[index] = _Proposal(value, set(), self._tick, config)
        if value.membership is not None:
            self._proposing_config = value.membership
        self._note_send()
        accept = Accept(self._ballot, index, value, self._chosen_index, self._tick)
        for peer in self._accept_targets(config):
            self._early_outbox.append(Envelope(self._id, peer, accept))

    def _accept_targets(self, config: Membership) -> tuple[ReplicaId, ...]:
        """Who is asked to accept an instance `config` governs: our peers, and any member of
        `config` they lack (a voter of a recovered change not yet in effect)."""
        if config is self._membership:
            return self._peers
        extra = tuple(r for r in config.member_ids if r != self._id and r not in self._peers)
        return self._peers + extra

    def _accepted_received(self, sender: ReplicaId, accepted: Accepted) -> None:
        if not self._is_my_mastership(accepted.ballot):
            return
        self._peer_chosen[sender] = max(
            self._peer_chosen.get(sender, NO_INDEX), min(accepted.chosen_index, self._chosen_index)
        )
        self._lease_acknowledged(sender, accepted.sent_tick)
        proposal = self._proposals.get(accepted.index)
        if accepted.ballot != self._ballot or proposal is None:
            return
        proposal.acks.add(sender)
        if self._quorum_reached(proposal.acks, proposal.config):
            self._instance_chosen(accepted.index)

    def _heartbeat_ack_received(self, sender: ReplicaId, ack: HeartbeatAck) -> None:
        if self._is_my_mastership(ack.ballot):
            self._peer_trusted[sender] = ack.trusted
            # No peer knows more chosen than its master: a claim beyond ours is not believed.
            self._peer_chosen[sender] = max(
                self._peer_chosen.get(sender, NO_INDEX), min(ack.chosen_index, self._chosen_index)
            )
            self._lease_acknowledged(sender, ack.sent_tick)

    def _is_my_mastership(self, ballot: Ballot) -> bool:
        return (
            self._role is Role.MASTER
            and ballot.replica_id == self._id
            and ballot >= self._mastership_ballot
        )

    def _lease_acknowledged(self, sender: ReplicaId, sent_tick: int) -> None:
        """A peer accepted a message we sent at `sent_tick`: the lease may reach further."""
        assert sent_tick <= self._tick, (sent_tick, self._tick)
        if sent_tick <= self._acked_tick.get(sender, -1):
            return
        self._acked_tick[sender] = sent_tick
        self._lease_extend()

    def _lease_supported(self) -> int:
        """The expiry a quorum of the voters in effect supports: from the k-th latest tick
        they acknowledged (our own sends count for us), k the quorum; 0 if too few did.
        Learners' acknowledgements never count (docs/design/membership.md §2.5)."""
        ticks = [self._last_send_tick]
        ticks.extend(
            counted_acknowledgements(
                self._membership, self._acked_tick, learners_count=self._learners_count
            )
        )
        quorum = self._membership.quorum()
        if len(ticks) < quorum:
            return 0
        ticks.sort(reverse=True)
        return ticks[quorum - 1] + self._timing.master_lease_ticks

    def _lease_recompute(self) -> None:
        """The voters changed: the lease reaches no further than their acknowledgements
        support (a passed expiry steps down at the next tick)."""
        self._lease_expiry = min(self._lease_expiry, self._lease_supported())
        self._lease_extend()

    def _lease_extend(self) -> None:
        expiry = self._lease_supported()
        if expiry <= self._lease_expiry:
            return
        if self._tick >= self._lease_expiry and expiry > self._tick:
            self._events.append(LeaseAcquired(self._epoch, expiry))
        self._lease_expiry = expiry
        self._had_lease = self._had_lease or expiry > self._tick

    def _instance_chosen(self, index: LogIndex) -> None:
        del self._proposals[index]
        self._chosen_ahead.add(index)
        while LogIndex(self._chosen_index + 1) in self._chosen_ahead:
            self._chosen_index = LogIndex(self._chosen_index + 1)
            self._chosen_ahead.discard(self._chosen_index)
            self._chosen_advanced()
        self._fill_window()

    def _nack_received(self, sender: ReplicaId, nack: Nack) -> None:
        self._saw_ballot(nack.promised)
        if nack.chosen_index > self._chosen_index and self._role is not Role.MASTER:
            # Refused, but the refuser knows more of the log: stay warm by catching up from it.
            self._request_catch_up(sender)
        if nack.promised.replica_id == self._id or nack.promised <= nack.ballot:
            return  # our own higher ballot, or a lease refusal: wait for the deadline
        if self._role is Role.MASTER and self._is_my_mastership(nack.ballot):
            if self.lease_valid():
                if self._boost is None or self._boost.ballot < nack.promised:
                    self._boost_start()
            else:
                self._step_down(StepDownReason.HIGHER_BALLOT)

    def _boost_start(self) -> None:
        """Run phase 1 again at a higher ballot without giving up the mastership or epoch."""
        self._boost = self._new_campaign(self._promise_next_ballot())

    def _boost_won(self, campaign: _Campaign) -> None:
        recovered = self._recovered_values(campaign, self._epoch)
        if any(value.epoch > self._epoch for value in recovered.values()):
            # Another proposer started a newer epoch in between: ours can no longer apply.
            self._step_down(StepDownReason.HIGHER_BALLOT)
            return
        self._boost = None
        self._ballot = campaign.ballot
        self._proposals = {}
        self._chosen_ahead = set()
        self._propose_recovered(recovered)
        self._next_index = LogIndex(max(self._next_index, max(recovered, default=NO_INDEX) + 1))
        self._fill_window()

    def _step_down(self, reason: StepDownReason) -> None:
        if self._role is Role.FOLLOWER:
            return
        self._events.append(SteppedDown(self._role, self._epoch, self._ballot, reason))
        self._role = Role.FOLLOWER
        self._ballot = NO_BALLOT
        self._campaign = None
        self._reset_master_state()
        # Our own lease grant (to ourselves) still binds us; campaign only after it ends.
        self._election_deadline = max(self._lease_until, self._tick) + self._jitter()

    # ------------------------------------------------------------------ helpers

    def _membership_in_effect(self, membership: Membership) -> None:
        """Count quorums, send, and campaign by `membership` from now on."""
        self._membership = membership
        self._member_ids = tuple(m.replica_id for m in membership.members)
        self._peers = tuple(rid for rid in self._member_ids if rid != self._id)
        self._is_voter = self._id in membership.voters
        self._learners_count = Bug.COUNT_LEARNER_IN_QUORUM in self._bugs

    def _quorum_reached(
        self, replicas: Iterable[ReplicaId], config: Membership | None = None
    ) -> bool:
        """Whether `replicas` hold a majority of the voters of `config` (by default, the
        membership in effect)."""
        counted = config or self._membership
        return quorum_reached(counted, replicas, learners_count=self._learners_count)

    def _store_entry(self, entry: Entry) -> None:
        self._log[entry.index] = entry
        self._unsaved[entry.index] = entry

    def _saw_ballot(self, ballot: Ballot) -> None:
        self._highest_seen = max(self._highest_seen, ballot)

    def _send(self, recipient: ReplicaId, message: PeerMessage) -> None:
        if not self._voting and (
            isinstance(message, Promise)
            or (self._is_voter and isinstance(message, Accepted | HeartbeatAck))
        ):
            # Rebuilding: a silent acceptor, as safe as one whose replies are lost. A learner
            # still acknowledges (no count includes it), so the master sees it catch up.
            return
        self._outbox.append(Envelope(self._id, recipient, message))

    def _jitter(self) -> int:
        return self._chance.randint(0, self._timing.election_jitter_ticks)


class ForeignHistory(Exception):
    """The cell's chosen log does not follow from this replica's membership: its store is
    another history's (another cell's, or a replica started with --bootstrap by mistake).
    The replica must stop: nothing it knows can be trusted for this cell."""


def persisted_problem(persisted: Persisted) -> str | None:
    """Why a replica cannot resume from `persisted` (a damaged store), or None.

    A replica restores its snapshot and replays the chosen entries after it, so every entry
    from just after the snapshot through the chosen index must be there, and the entries
    must come in index order, each once. The work is in the entries, never in the indices'
    span: a damaged chosen index far out costs no more than a sound one.
    """
    hard_state = persisted.hard_state or HardState()
    snapshot_index = persisted.snapshot.index if persisted.snapshot else NO_INDEX
    # A replica's own promise may lie above every round a peer can send (its campaigns go
    # above the highest seen), entries never: they were accepted from a peer's ballot.
    problem = _ballot_problem(hard_state.promised, "the promised ballot", ROUND_MAX, True)
    if hard_state.chosen_index > LOG_INDEX_MAX:
        problem = problem or f"the chosen index {hard_state.chosen_index} is out of range"
    if snapshot_index > LOG_INDEX_MAX:
        problem = problem or f"the snapshot's index {snapshot_index} is out of range"
    for entry in persisted.entries:
        if not 1 <= entry.index <= LOG_INDEX_MAX:
            return problem or f"log entry {entry.index}: its index is out of range"
        ballot_problem = _ballot_problem(entry.ballot, f"log entry {entry.index}'s ballot")
        problem = problem or ballot_problem
    if problem is not None:
        return problem
    chosen = max(hard_state.chosen_index, snapshot_index)
    indices = [entry.index for entry in persisted.entries]
    if any(a >= b for a, b in pairwise(indices)):
        return "the log entries are out of order or repeated"
    needed = [index for index in indices if snapshot_index < index <= chosen]
    if len(needed) == chosen - snapshot_index:
        return None
    missing = snapshot_index + 1
    for index in needed:
        if index != missing:
            break
        missing += 1
    return (
        f"log entry {missing} is missing: it is chosen (chosen through {chosen}) and not in "
        f"the snapshot (through {snapshot_index})"
    )


def _ballot_problem(
    ballot: Ballot, what: str, round_max: int = BALLOT_ROUND_MAX, allow_none: bool = False
) -> str | None:
    """Why `ballot` is not a replica's ballot up to `round_max` (or NO_BALLOT, if allowed)."""
    if ballot == NO_BALLOT and allow_none:
        return None
    if 1 <= ballot.round <= round_max and ballot.replica_id:
        return None
    return f"{what} {ballot.round}.{ballot.replica_id!r:.40} is out of range"
