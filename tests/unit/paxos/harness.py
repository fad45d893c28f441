"""A cell of `Replica`s wired by an in-memory network that the test drives by hand.

Nothing moves unless the test says so: `tick` advances chosen replicas' clocks, `deliver`
hands in-flight envelopes to their recipients, `take` holds or drops them, `inject` adds
hand-made ones, and `crash`/`restart` rebuild a replica from its `MemoryStore`. After every
input the cell drains the replica's Readys in the contract's order (STYLE §1): persist to
the store, then put the messages in flight, then apply committed entries through an
`Applier` over a `DictMachine`, then `advance`.

Two checks run on every Ready, so every test that uses the cell also checks them:

* **durable before send**: every Promise, Accepted and HeartbeatAck leaves only once the
  promise and the accepted entry it reports are in the store;
* **agreement**: every replica commits the same value at the same index.

`DriftingCell` runs a `Cell` in true time instead, for the randomized lease-safety test: each
replica ticks at its own drifting rate, and the network loses, delays and duplicates.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import itertools
import random
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

import msgpack

from chubbypy.paxos import (
    Applier,
    Bug,
    Chance,
    ChecksumTaken,
    Limits,
    NoChance,
    Outcome,
    Persisted,
    Ready,
    Replica,
    ReplicaEvent,
    Role,
    Timing,
    membership_of_ids,
)
from chubbypy.protocol import (
    NO_BALLOT,
    NO_CLIENT,
    NO_EPOCH,
    Accepted,
    ClientId,
    Command,
    Entry,
    Envelope,
    Epoch,
    HeartbeatAck,
    LogIndex,
    Member,
    Membership,
    PeerMessage,
    Promise,
    ReplicaId,
    Value,
)
from chubbypy.protocol._plain import DecodeError, array, binary, unpack
from chubbypy.store import MemoryStore

R1, R2, R3, R4, R5 = (ReplicaId(f"r{n}") for n in range(1, 6))
ALL = (R1, R2, R3, R4, R5)

TIMING = Timing(
    lease_ticks=20,
    master_lease_ticks=18,
    heartbeat_ticks=4,
    election_jitter_ticks=4,
    retry_ticks=4,
)
LIMITS = Limits()

Match = Callable[[Envelope], bool]


# ----------------------------------------------------------------------------- small parts


class DictMachine:
    """A `StateMachine` over a dict: ``b"key=value"`` sets key; the result is its old value."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.calls = 0

    def apply(self, index: LogIndex, payload: bytes) -> tuple[bytes, object]:
        self.calls += 1
        key, _, value = payload.partition(b"=")
        previous = self.values.get(key, b"")
        self.values[key] = value
        return previous, (index, key)

    def snapshot(self) -> bytes:
        return bytes(msgpack.packb(sorted(self.values.items()), use_bin_type=True))

    def restore(self, data: bytes) -> None:
        self.values = self._decoded(data)

    def snapshot_problem(self, data: bytes) -> str | None:
        try:
            self._decoded(data)
        except DecodeError as error:
            return str(error)
        return None

    @staticmethod
    def _decoded(data: bytes) -> dict[bytes, bytes]:
        pairs = unpack(data, array)
        return {binary(k): binary(v) for k, v in (array(pair, 2) for pair in pairs)}

    def checksum(self) -> bytes:
        return hashlib.blake2b(self.snapshot(), digest_size=8).digest()


class SteadyChance:
    """A `Chance` whose election jitter is always `jitter` ticks (clamped); never buggifies.

    The cell's default is one tick, so a follower's lease runs out one tick before it
    campaigns: `Cell.elect` can then let every other lease run out without starting a duel.
    """

    def __init__(self, jitter: int = 1) -> None:
        self.jitter = jitter

    def randint(self, low: int, high: int) -> int:
        return max(low, min(high, self.jitter))

    def buggify(self, site: str) -> bool:
        return False


class ScriptedChance:
    """A `Chance` that returns queued values from `randint`, then the low end; never buggifies."""

    def __init__(self, values: Iterable[int] = ()) -> None:
        self.values = deque(values)

    def randint(self, low: int, high: int) -> int:
        if not self.values:
            return low
        value = self.values.popleft()
        assert low <= value <= high, (low, value, high)
        return value

    def buggify(self, site: str) -> bool:
        return False


def command(
    client_id: int, sequence: int, payload: bytes = b"k=v", first_unacked: int = 0
) -> Command:
    return Command(ClientId(client_id), sequence, payload, first_unacked)


def to(recipient: ReplicaId) -> Match:
    return lambda envelope: envelope.recipient == recipient


def from_(sender: ReplicaId) -> Match:
    return lambda envelope: envelope.sender == sender


def of(*kinds: type) -> Match:
    return lambda envelope: isinstance(envelope.message, kinds)


def both(*matches: Match) -> Match:
    return lambda envelope: all(match(envelope) for match in matches)


def between(group: Iterable[ReplicaId]) -> Match:
    """Envelopes whose sender and recipient are both in `group` (one side of a partition)."""
    members = set(group)
    return lambda envelope: envelope.sender in members and envelope.recipient in members


def everything(envelope: Envelope) -> bool:
    return True


def lone(
    persisted: Persisted | None = None,
    *,
    limits: Limits = LIMITS,
    chance: Chance | None = None,
    members: Sequence[ReplicaId] = (R1, R2, R3),
) -> Replica:
    """Replica r1 on its own, its first Ready (if any) already taken."""
    replica = Replica(
        R1, membership_of_ids(members), TIMING, limits, chance or NoChance(), persisted
    )
    drain(replica)
    return replica


def drain(replica: Replica) -> list[Ready]:
    """Take every Ready a lone replica has, advancing each (for tests without a cell)."""
    readys = []
    while replica.has_ready():
        ready = replica.ready()
        replica.advance(ready)
        readys.append(ready)
    return readys


def sent(readys: Sequence[Ready]) -> list[Envelope]:
    return [envelope for ready in readys for envelope in (*ready.early, *ready.messages)]


def messages(readys: Sequence[Ready], kind: type | None = None) -> list[PeerMessage]:
    return [e.message for e in sent(readys) if kind is None or isinstance(e.message, kind)]


def check_durable(persisted: Persisted, envelope: Envelope) -> None:
    """A reply that depends on a promise or an accepted entry leaves after it is stored."""
    promised = persisted.hard_state.promised
    snapshot_index = persisted.snapshot.index if persisted.snapshot else 0
    entries = {entry.index: entry for entry in persisted.entries}
    match envelope.message:
        case Promise(ballot=ballot, entries=reported):
            assert promised >= ballot, (envelope, promised)
            for entry in reported:
                assert entries.get(entry.index) == entry, (envelope, entry)
        case Accepted(ballot=ballot, index=index):
            assert promised >= ballot, (envelope, promised)
            stored = entries.get(index)
            # A chosen entry is acknowledged as it is stored (same value), never rewritten.
            known_chosen = max(snapshot_index, persisted.hard_state.chosen_index)
            assert index <= known_chosen or (stored is not None and stored.ballot >= ballot), (
                envelope,
                stored,
            )
        case HeartbeatAck(ballot=ballot):
            assert promised >= ballot, (envelope, promised)
        case _:
            pass


# ----------------------------------------------------------------------------- the cell


class Cell:
    """Replicas, their stores and appliers, and the envelopes in flight between them."""

    def __init__(
        self,
        size: int = 3,
        *,
        timing: Timing = TIMING,
        limits: Limits = LIMITS,
        chances: dict[ReplicaId, Callable[[], Chance]] | None = None,
        clients_max: int = 100,
        client_results_max: int = 100,
        apply: bool = True,
        bugs: frozenset[Bug] = frozenset(),
        learners: int = 0,
    ) -> None:
        self.members = ALL[: size + learners]
        voters = ALL[:size]
        self.membership = Membership(
            1, tuple(Member(rid, rid, rid, rid in voters) for rid in self.members)
        )
        """The first `size` replicas vote; the `learners` after them take the log only."""
        self.timing = timing
        self.limits = limits
        self.apply = apply
        self.bugs = bugs
        self._chances = chances or {}
        self._clients_max = clients_max
        self._client_results_max = client_results_max
        self.stores = {rid: MemoryStore() for rid in self.members}
        self.replicas: dict[ReplicaId, Replica] = {}
        self.machines: dict[ReplicaId, DictMachine] = {}
        self.appliers: dict[ReplicaId, Applier] = {}
        self.network: list[Envelope] = []
        self.readys: dict[ReplicaId, list[Ready]] = defaultdict(list)
        self.events: dict[ReplicaId, list[ReplicaEvent]] = defaultdict(list)
        self.committed: dict[ReplicaId, list[Entry]] = defaultdict(list)
        self.outcomes: dict[ReplicaId, list[Outcome | ChecksumTaken]] = defaultdict(list)
        self.history: list[tuple[ReplicaId, ReplicaEvent]] = []
        """Every replica's events, in the order they happened across the cell."""
        self.chosen: dict[LogIndex, Value] = {}
        """Every value any replica committed, by index: the agreement check's reference."""
        for rid in self.members:
            self.start(rid)

    # ------------------------------------------------------------------ processes

    def start(self, rid: ReplicaId, *, voting: bool = True) -> Replica:
        """Start (or restart) `rid` from what its store holds (as a rebuild if not `voting`)."""
        assert rid not in self.replicas, rid
        persisted = self.stores[rid].load()
        chance = self._chances.get(rid, SteadyChance)()
        replica = Replica(
            rid,
            self.membership,
            self.timing,
            self.limits,
            chance,
            persisted,
            self.bugs,
            voting=voting,
        )
        machine = DictMachine()
        applier = Applier(
            machine, clients_max=self._clients_max, client_results_max=self._client_results_max
        )
        if self.apply and persisted.snapshot is not None:
            applier.restore(persisted.snapshot.index, persisted.snapshot.data)
        self.replicas[rid], self.machines[rid], self.appliers[rid] = replica, machine, applier
        self.drain(rid)
        return replica

    def join(self, rid: ReplicaId) -> Replica:
        """Start a new replica `rid` on an empty store, as an operator starts a replacement:
        without bootstrap, so it rebuilds (no votes) and waits to be anchored by a peer; its
        seed is the cell's first membership (its cell file)."""
        assert rid not in self.members, rid
        self.members = (*self.members, rid)
        self.stores[rid] = MemoryStore()
        return self.start(rid, voting=False)

    def change(self, rid: ReplicaId, membership: Membership) -> None:
        """Master `rid` proposes `membership`; nothing is delivered yet."""
        replica = self.replicas[rid]
        refused = replica.propose_membership(membership, replica.epoch)
        assert refused is None, refused
        self.drain(rid)

    def crash(self, rid: ReplicaId) -> None:
        """Stop `rid`: its memory is gone, its store stays; envelopes to it will be lost."""
        del self.replicas[rid]

    restart = start

    def alive(self) -> list[ReplicaId]:
        return [rid for rid in self.members if rid in self.replicas]

    # ------------------------------------------------------------------ the Ready contract

    def drain(self, rid: ReplicaId) -> None:
        """Handle `rid`'s Readys: persist, then send, then apply, then advance."""
        replica = self.replicas[rid]
        store = self.stores[rid]
        while replica.has_ready():
            ready = replica.ready()
            self.network.extend(ready.early)  # step 0: before the write
            store.persist(ready.durable)
            if ready.messages:
                persisted = store.load()
                for envelope in ready.messages:
                    check_durable(persisted, envelope)
            self.network.extend(ready.messages)
            self._commit(rid, ready)
            self.readys[rid].append(ready)
            self.events[rid].extend(ready.events)
            self.history.extend((rid, event) for event in ready.events)
            replica.advance(ready)

    def _commit(self, rid: ReplicaId, ready: Ready) -> None:
        applier = self.appliers[rid]
        snapshot = ready.durable.snapshot
        if self.apply and snapshot is not None and snapshot.index > applier.applied_index:
            applier.restore(snapshot.index, snapshot.data)
        for entry in ready.committed:
            value = self.chosen.setdefault(entry.index, entry.value)
            assert value == entry.value, f"{rid} committed {entry} but {value} was chosen"
            self.committed[rid].append(entry)
            if self.apply:
                self.outcomes[rid].extend(applier.apply(entry))

    # ------------------------------------------------------------------ inputs

    def tick(self, *rids: ReplicaId, times: int = 1) -> None:
        """Tick `rids` (default: every live replica), one round at a time, draining each."""
        for _ in range(times):
            for rid in rids or self.alive():
                self.replicas[rid].tick()
                self.drain(rid)

    def step(self, envelope: Envelope) -> None:
        """Deliver one envelope now (lost if its recipient is down)."""
        if envelope.recipient in self.replicas:
            self.replicas[envelope.recipient].step(envelope.sender, envelope.message)
            self.drain(envelope.recipient)

    def deliver(self, match: Match = everything) -> int:
        """Deliver the matching envelopes in flight, oldest first; replies stay in flight."""
        batch = self.take(match)
        for envelope in batch:
            self.step(envelope)
        return len(batch)

    def settle(self, match: Match = everything, rounds: int = 100) -> None:
        """Deliver matching envelopes, and what they provoke, until none matches."""
        for _ in range(rounds):
            if not self.deliver(match):
                return
        raise AssertionError("the network did not settle")

    def take(self, match: Match = everything) -> list[Envelope]:
        """Remove the matching envelopes from flight (to drop them, or hold and inject later)."""
        taken = [envelope for envelope in self.network if match(envelope)]
        self.network = [envelope for envelope in self.network if not match(envelope)]
        return taken

    def inject(self, *envelopes: Envelope) -> None:
        self.network.extend(envelopes)

    def run(self, ticks: int, match: Match = everything) -> None:
        """Each round: tick every live replica, deliver what `match` lets through, drop the rest."""
        for _ in range(ticks):
            self.tick()
            self.settle(match)
            self.take()

    def propose(self, rid: ReplicaId, *commands: Command) -> None:
        replica = self.replicas[rid]
        refused = replica.propose(commands, replica.epoch)
        assert refused is None, refused
        self.drain(rid)

    def register(self, rid: ReplicaId, nonce: int = 1) -> ClientId:
        """Register a client through master `rid`; return its id (as the master applied it)."""
        self.propose(rid, Command(NO_CLIENT, nonce, b""))
        self.settle()
        self.run(1)
        return self.outcomes[rid][-1].client_id  # type: ignore[union-attr]

    def snapshot(self, rid: ReplicaId) -> None:
        """The shell of `rid` snapshots its applier at its applied index."""
        applier = self.appliers[rid]
        self.replicas[rid].snapshot_taken(applier.applied_index, applier.snapshot())
        self.drain(rid)

    # ------------------------------------------------------------------ scenarios and queries

    def elect(self, rid: ReplicaId, match: Match = everything) -> None:
        """Make `rid` master: tick it, delivering what it provokes, until it serves.

        Meanwhile every other live follower is ticked only while it is still leased (so it
        will take `rid`'s Prepare once the lease ends) and never as far as its own campaign.
        Only envelopes that `match` are delivered; everything left in flight afterwards is
        dropped.
        """
        replica = self.replicas[rid]
        for _ in range(10 * self.timing.lease_ticks):
            if replica.serving:
                break
            leased = [
                other
                for other in self.alive()
                if other != rid and self.replicas[other].status().role is Role.FOLLOWER
                if self.leased(other)
            ]
            self.tick(rid, *leased)
            self.settle(match)
            self.take()
        assert replica.serving, replica.status()

    def leased(self, rid: ReplicaId) -> bool:
        """Whether follower `rid` may still be bound by a lease it granted, without being due to
        campaign at its next tick.

        A lease heard from a master shows in `master_hint`. One from the restart rule, or one it
        granted itself as master, does not: for a replica that promised any ballot, a copy is
        ticked to see whether it would campaign.
        """
        replica = self.replicas[rid]
        if replica.master_hint() is not None:
            return True
        if replica.status().promised == NO_BALLOT:
            return False
        probe = copy.deepcopy(replica)
        probe.tick()
        return probe.status().role is Role.FOLLOWER

    def masters(self) -> list[ReplicaId]:
        return [rid for rid, r in self.replicas.items() if r.status().role is Role.MASTER]

    def master(self) -> ReplicaId:
        (rid,) = self.masters()
        return rid

    def leases(self) -> list[ReplicaId]:
        return [rid for rid, replica in self.replicas.items() if replica.lease_valid()]

    def epochs_started(self) -> list[Epoch]:
        """The epochs of the EPOCH_START entries in the chosen log, in log order."""
        return [
            self.chosen[index].epoch
            for index in sorted(self.chosen)
            if self.chosen[index].kind.name == "EPOCH_START"
        ]


# ----------------------------------------------------------------------------- true time

DRIFT = Fraction(1, 37)
"""The largest clock drift for which TIMING (lease 20 ticks, master lease 18) is safe."""


class RandomChance:
    """A seeded `Chance` for the randomized test: random jitter, never buggify."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = random.Random(rng.getrandbits(32))

    def randint(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def buggify(self, site: str) -> bool:
        return False


class DriftingCell:
    """A `Cell` in true time: each replica ticks at its own rate, messages take random delays.

    Faults, all from the seed: 8% of messages lost, 5% doubled, 10% held back for up to 25
    ticks; now and then a replica crashes (and restarts up to 30 ticks later) or is cut off
    from both peers for a while, the master most often. Each replica's clock runs at a rate
    drawn within DRIFT of true time, anew at each start.
    """

    def __init__(
        self, seed: int, timing: Timing = TIMING, bugs: frozenset[Bug] = frozenset()
    ) -> None:
        self.rng = rng = random.Random(seed)
        chances = {rid: (lambda: RandomChance(rng)) for rid in (R1, R2, R3)}
        limits = Limits(proposals_inflight_max=4, catchup_entries_max=8, log_retain_entries=4)
        self.cell = Cell(3, timing=timing, limits=limits, chances=chances, apply=False, bugs=bugs)
        self.now = 0.0
        self.queue: list[tuple[float, int, str, object]] = []
        self.sequence = itertools.count()
        self.period: dict[ReplicaId, float] = {}
        self.incarnation = dict.fromkeys(self.cell.members, 0)
        self.cut_off: ReplicaId | None = None
        for rid in self.cell.members:
            self._boot(rid)
        self._send()

    def _schedule(self, at: float, kind: str, data: object) -> None:
        heapq.heappush(self.queue, (at, next(self.sequence), kind, data))

    def _boot(self, rid: ReplicaId) -> None:
        drift = float(DRIFT)
        self.period[rid] = 1 / self.rng.uniform(1 - drift, 1 + drift)
        self.incarnation[rid] += 1
        first = self.now + self.rng.random() * self.period[rid]
        self._schedule(first, "tick", (rid, self.incarnation[rid]))

    def _send(self) -> None:
        """Put what the replicas sent on the wire: lost, doubled, late or on time."""
        for envelope in self.cell.take():
            if self.cut_off in (envelope.sender, envelope.recipient):
                continue
            roll = self.rng.random()
            if roll < 0.08:
                continue
            for _ in range(2 if roll > 0.95 else 1):
                late = self.rng.random() < 0.1
                delay = self.rng.uniform(2, 25) if late else self.rng.expovariate(2.0)
                self._schedule(self.now + delay, "message", envelope)

    def run(self, until: float) -> None:
        """Run to `until`, asserting after every event that at most one lease is believed."""
        while self.now < until:
            self.step()
            leases = self.cell.leases()
            assert len(leases) <= 1, (self.now, leases)

    def step(self) -> None:
        self.now, _, kind, data = heapq.heappop(self.queue)
        cell = self.cell
        if kind == "tick":
            rid, incarnation = data  # type: ignore[misc]
            if incarnation != self.incarnation[rid]:
                return
            cell.tick(rid)
            self._schedule(self.now + self.period[rid], "tick", data)
            self._fault(rid)
        elif kind == "message":
            assert isinstance(data, Envelope)
            cell.step(data)
        elif kind == "restart":
            rid = ReplicaId(str(data))
            cell.restart(rid)
            self._boot(rid)
        elif kind == "heal":
            self.cut_off = None
        self._send()

    def _fault(self, rid: ReplicaId) -> None:
        """Now and then, at `rid`'s tick: crash it, cut it off, propose, or snapshot."""
        cell, rng = self.cell, self.rng
        replica = cell.replicas[rid]
        roll = rng.random()
        master = replica.epoch != NO_EPOCH  # cheaper than status(), on every tick
        if roll < 0.003:
            cell.crash(rid)
            self.incarnation[rid] += 1
            self._schedule(self.now + rng.uniform(0, 30), "restart", rid)
        elif roll < (0.03 if master else 0.006) and self.cut_off is None:
            self.cut_off = rid
            self._schedule(self.now + rng.uniform(5, 50), "heal", None)
        elif roll < 0.2 and replica.serving:
            replica.propose([command(1, rng.randrange(1000))], replica.epoch)
            cell.drain(rid)
        elif roll < 0.22:
            replica.snapshot_taken(replica.applied_index, b"")
            cell.drain(rid)
