"""`SimCell`: a whole cell (replicas, clients, network, disks, clocks) in one process from one seed.

A run has the shape of Paxos Made Live's tests (§6.3): a *safety phase* with random faults
(crashes and restarts that lose unsynced writes, partitions including one-way ones, stalls,
message loss, duplication and reordering, clocks drifting within the configured bound),
then the faults stop and every replica comes back, then a *liveness phase* in which every
operation must finish within a bound. The checkers (`_checkers.py`) run throughout and at the
end. Scenario tests use the same cell through a small DSL::

    cell = SimCell(seed=7)
    cell.start()
    cell.run(seconds=3)
    cell.partition({"r1"}, {"r2", "r3"})
    cell.run(seconds=5)
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable

from attrs import evolve, frozen

from chubbypy.client.core import CallSettings, ClientBug, SessionSettings
from chubbypy.master import MasterTiming
from chubbypy.namespace import NamespaceLimits
from chubbypy.node import Auth, NodeBug, NodeSettings, handle_key_for
from chubbypy.paxos import Bug, ChecksumTaken, Limits, Outcome, Timing, membership_of_ids
from chubbypy.protocol import Entry, Envelope, Membership, ReplicaId
from chubbypy.protocol.client import ChecksumReport, ClientRequest, ReplicaAddress, ServerReply
from chubbypy.testing._calls import ClientProcess
from chubbypy.testing._checkers import Observer, Violation
from chubbypy.testing._client import ScriptClient, SimClient
from chubbypy.testing._lock_checks import LockObserver
from chubbypy.testing._lock_client import LockBug, SimLockClient
from chubbypy.testing._members import SimMembershipOperator
from chubbypy.testing._node import DiskSettings, ReplicaLinks, SimReplica
from chubbypy.testing._operator import SimOperator
from chubbypy.testing._registers import CELL
from chubbypy.testing._stalling import StallingCacher
from chubbypy.testing._world import (
    MILLISECOND,
    SECOND,
    Clock,
    Network,
    NetworkFaults,
    Scheduler,
    SimChance,
)

SIM_LIMITS = Limits(
    batch_entries_max=8,
    batch_bytes_max=4096,
    proposals_inflight_max=4,
    proposals_queued_max=64,
    catchup_entries_max=16,
    log_retain_entries=20,
)
"""Small limits, so that batching, the window, catch-up and truncation all get exercised."""


PROGRESS_SECONDS = 2

CONVERGENCE_GRACE_US = 1 * SECOND
"""How long after the quiet's end every replica has to apply what the most advanced one
had: many round trips, disk writes and ticks of a healed network."""
"""How often a narrated run reports progress."""


MEMBERS_SEED_MIX = 0x6D656D62657273
"""Mixed into a run's seed for the membership operator's own generator."""
KNOWN_BUGS: dict[str, str] = {}
"""Checkers that catch a bug known and filed but not fixed yet, and why: their violations
are reported apart (`SimResult.known`), and `tests/sim/regression_seeds.txt` keeps a seed
of each as a strict xfail until the fix turns it into an ordinary regression seed. Empty:
issue 12 fixed the last (session calls that were not exactly-once)."""


SIM_ADMINS = ("anonymous",)
"""The simulated cell's operators, as ``auth.admins``: its clients are all anonymous, and
its scripted operator lists sessions. Its first master makes the ACL directory for them,
as a real cell's does."""


@frozen
class SimSettings:
    """Everything a simulated run depends on besides its seed."""

    replicas: int = 3
    clients: int = 4
    fault_seconds: float = 12.0
    """Length of the safety phase."""
    fault_interval_seconds: float = 0.8
    """Mean time between faults in the safety phase."""
    liveness_seconds: float = 10.0
    """Bound on finishing any operation once the faults stop."""
    liveness_phase_seconds: float | None = None
    """How long the workload runs once the faults stop (None: `liveness_seconds`); a
    scenario may check a tighter bound over a longer phase."""
    quiet_seconds: float = 3.0
    """After the workload stops: time for every replica to catch up before the final checks."""
    tick_seconds: float = 0.05
    lease_seconds: float = 1.0
    clock_drift_max: float = 0.01
    heartbeat_seconds: float = 0.2
    election_jitter_seconds: float = 0.5
    retry_seconds: float = 0.2
    drift_factor: float = 1.0
    """How much of the allowed drift clocks use; above 1 breaks the lease's assumption."""
    limits: Limits = SIM_LIMITS
    snapshot_every_entries: int = 25
    checksum_every_seconds: float = 1.0
    clients_max: int = 64
    client_results_max: int = 8
    client_timeout_seconds: float = 0.3
    fsync_min_us: int = 500
    fsync_max_us: int = 8 * MILLISECOND
    buggify: bool = True
    bugs: frozenset[Bug] = frozenset()
    node_bugs: frozenset[NodeBug] = frozenset()
    locks: bool = False
    """Run lock clients (sessions, KeepAlives, locks, fenced writes, cached reads) against
    the real namespace database and the master's session service."""
    registers: bool | None = None
    """Run the register clients; by default, unless `locks`. Both: the whole cell, the
    registers kept as files of the same namespace database."""
    lock_bugs: frozenset[LockBug] = frozenset()
    client_bugs: frozenset[ClientBug] = frozenset()
    grace_seconds: float = 5.0
    """How long a lock client's session may stay in jeopardy before it gives it up."""
    idle_lock_clients: bool = False
    """Lock clients only keep their sessions alive (a scenario scripts the rest)."""
    operator_ends: bool = True
    """While lock clients work (not idle ones), an operator ends a random live session
    now and then (`chubbypy.testing._operator`)."""
    membership_changes: bool = True
    """In the random faults' safety phase, an operator replaces replicas: adds a new one
    as a learner, promotes it, removes an old one, the master among them
    (`chubbypy.testing._members`)."""
    known_bugs: frozenset[str] = frozenset(KNOWN_BUGS)
    """Checkers whose violations are a known, filed bug: reported apart (`SimResult.known`)."""
    session_lease_seconds: float = 2.0
    keepalive_answer_before_seconds: float = 0.6

    @property
    def runs_registers(self) -> bool:
        return not self.locks if self.registers is None else self.registers

    def call_settings(self) -> CallSettings:
        """How the simulated clients carry calls (the client library's `CallSettings`)."""
        return CallSettings(
            timeout_seconds=5.0, request_timeout_seconds=self.client_timeout_seconds
        )

    def master_timing(self) -> MasterTiming:
        return MasterTiming.from_seconds(
            tick_seconds=self.tick_seconds,
            lease_seconds=self.session_lease_seconds,
            answer_before_seconds=self.keepalive_answer_before_seconds,
            clock_drift_max=self.clock_drift_max,
            events_pending_max=100,
            waiters_max=1000,
        )

    def timing(self) -> Timing:
        return Timing.from_seconds(
            tick_seconds=self.tick_seconds,
            lease_seconds=self.lease_seconds,
            clock_drift_max=self.clock_drift_max,
            heartbeat_seconds=self.heartbeat_seconds,
            election_jitter_seconds=self.election_jitter_seconds,
            retry_seconds=self.retry_seconds,
        )


@frozen
class SimResult:
    seed: int
    replicas: int
    violations: tuple[Violation, ...]
    known: tuple[Violation, ...]
    """Violations of a known, filed bug (`SimSettings.known_bugs`): not counted in `ok`."""
    trace_hash: str
    """A digest of everything that happened: equal for equal seeds, or the run is not repeatable."""
    simulated_seconds: float
    events: int
    operations: int
    acknowledged: int
    committed_index: int
    elections: int

    @property
    def ok(self) -> bool:
        return not self.violations


class SimCell:
    """A simulated cell; see the module docstring."""

    def __init__(
        self,
        seed: int,
        settings: SimSettings = SimSettings(),
        *,
        narrate: Callable[[str], None] | None = None,
        fail_fast: bool = True,
    ) -> None:
        assert settings.replicas in (3, 5), settings.replicas
        self.seed = seed
        self.settings = settings
        self._rng = random.Random(seed)
        self._narrator = narrate
        self._trace = hashlib.blake2b(digest_size=16)
        self.scheduler = Scheduler()
        self.network = Network(self.scheduler, random.Random(self._rng.getrandbits(64)))
        self.observer = Observer(fail_fast=fail_fast, known_bugs=settings.known_bugs)
        self.names = tuple(ReplicaId(f"r{n}") for n in range(1, settings.replicas + 1))
        """Every replica started so far: the cell's own, then any that joined."""
        self.seed_names = self.names
        """The replicas the cell file names: the membership a new cell starts with."""
        self.retired: set[ReplicaId] = set()
        """Replicas removed from the membership and stopped for good."""
        self.members_operator: SimMembershipOperator | None = None
        self.lock_observer = LockObserver(self.observer.violation, lambda: self.scheduler.now)
        buggify_rate = 0.01 if settings.buggify and self._rng.random() < 0.5 else 0.0
        self.nodes = {name: self._make_node(name, buggify_rate) for name in self.names}
        self._buggify_rate = buggify_rate
        self.lock_clients: dict[str, SimLockClient] = {}
        if settings.locks:
            self.lock_clients = {
                f"l{n}": self._make_lock_client(f"l{n}") for n in range(1, settings.clients + 1)
            }
        register_clients = settings.clients if settings.runs_registers else 0
        self.clients = {
            f"c{n}": self._make_client(f"c{n}", n) for n in range(1, register_clients + 1)
        }
        working = settings.locks and not settings.idle_lock_clients
        self.operator = self._make_operator() if working and settings.operator_ends else None
        self._progress_due = PROGRESS_SECONDS * SECOND
        self._progress_applied = 0
        self.scripts: dict[str, ScriptClient] = {}
        self.stallers: dict[str, StallingCacher] = {}
        self._members_rng = random.Random(seed ^ MEMBERS_SEED_MIX)
        """The membership operator's and new replicas' own randomness: the rest of a run
        draws as it would without them."""
        self._memberships: list[tuple[int, Membership]] = [(0, membership_of_ids(self.seed_names))]
        """Each membership chosen, with its index (the quorum oracle's reference)."""
        self._oracle_through = 0
        self.elections = 0
        self.healed_at = 0

    def _node_settings(self, name: ReplicaId) -> NodeSettings:
        s = self.settings
        return NodeSettings(
            replica_id=name,
            cell=CELL,
            addresses=tuple(ReplicaAddress(n, n) for n in self.seed_names),
            timing=s.timing(),
            limits=s.limits,
            master_timing=s.master_timing(),
            tick_microseconds=int(s.tick_seconds * SECOND),
            namespace_limits=NamespaceLimits(quota_exempt=frozenset(SIM_ADMINS)),
            handle_key=handle_key_for(CELL, "the simulated cell's handle key"),
            auth=Auth(),
            snapshot_every_entries=s.snapshot_every_entries,
            checksum_every_ticks=max(1, round(s.checksum_every_seconds / s.tick_seconds)),
            clients_max=s.clients_max,
            client_results_max=s.client_results_max,
            admins=SIM_ADMINS,
            bugs=s.bugs,
            node_bugs=s.node_bugs,
        )

    def _make_node(
        self, name: ReplicaId, buggify_rate: float, rng: random.Random | None = None
    ) -> SimReplica:
        rng = rng or self._rng
        drift_ppm = int(self.settings.clock_drift_max * self.settings.drift_factor * 1_000_000)
        clock = Clock(
            offset_us=rng.randint(0, 10 * SECOND),
            ppm=rng.randint(-drift_ppm, drift_ppm),
        )
        links = ReplicaLinks(
            send_peer=self._send_peer,
            send_checksum=self._send_checksum,
            answer=self._send_reply,
            disconnect=self._disconnected,
            narrate=self._narrate_node,
            entry_applied=self._entry_applied,
        )
        return SimReplica(
            self._node_settings(name),
            DiskSettings(self.settings.fsync_min_us, self.settings.fsync_max_us),
            buggify_rate,
            clock,
            self.scheduler,
            self.observer,
            random.Random(rng.getrandbits(64)),
            links,
        )

    def _client_process(self, name: str) -> ClientProcess:
        drift_ppm = int(self.settings.clock_drift_max * self.settings.drift_factor * 1_000_000)
        clock = Clock(self._rng.randint(0, 10 * SECOND), self._rng.randint(-drift_ppm, drift_ppm))
        return ClientProcess(name, clock, self.scheduler, self._send_request, self._close)

    def _client_chance(self) -> SimChance:
        return SimChance(random.Random(self._rng.getrandbits(64)), self._buggify_rate)

    def _make_client(self, name: str, number: int) -> SimClient:
        return SimClient(
            number,
            self.names,
            self._client_process(name),
            self.observer,
            random.Random(self._rng.getrandbits(64)),
            self.settings.call_settings(),
            self._client_chance(),
        )

    def _make_lock_client(self, name: str) -> SimLockClient:
        s = self.settings
        return SimLockClient(
            self.names,
            self._client_process(name),
            self.lock_observer,
            random.Random(self._rng.getrandbits(64)),
            s.call_settings(),
            SessionSettings(grace_seconds=s.grace_seconds, clock_drift_max=s.clock_drift_max),
            self._client_chance(),
            bugs=s.lock_bugs,
            client_bugs=s.client_bugs,
            idle=s.idle_lock_clients,
        )

    def _make_operator(self) -> SimOperator:
        return SimOperator(
            self.names,
            self._client_process("op"),
            self.lock_observer,
            random.Random(self._rng.getrandbits(64)),
            self.settings.call_settings(),
            self._client_chance(),
            self._say,
        )

    # ------------------------------------------------------------------ wiring

    def _send_peer(self, envelope: Envelope) -> None:
        node = self.nodes[envelope.recipient]
        self.network.send(
            envelope.sender,
            envelope.recipient,
            lambda: node.peer_message(envelope.sender, envelope.message),
        )

    def _send_checksum(
        self, sender: ReplicaId, recipient: ReplicaId, report: ChecksumReport
    ) -> None:
        node = self.nodes[recipient]
        self.network.send(sender, recipient, lambda: node.checksum_report(sender, report))

    def _send_request(self, client: str, replica: str, request: ClientRequest) -> None:
        node = self.nodes[ReplicaId(replica)]
        self.network.send(client, replica, lambda: node.client_request(client, request))

    def _send_reply(self, replica: ReplicaId, client: str, reply: ServerReply) -> None:
        target = self._client(client)
        self.network.send(replica, client, lambda: target.reply_received(replica, reply))

    def _client(
        self, name: str
    ) -> (
        SimClient | SimLockClient | SimOperator | SimMembershipOperator | ScriptClient
        | StallingCacher
    ):  # fmt: skip
        if self.operator is not None and name == self.operator.name:
            return self.operator
        if self.members_operator is not None and name == self.members_operator.name:
            return self.members_operator
        return (
            self.lock_clients.get(name)
            or self.clients.get(name)
            or self.scripts.get(name)
            or self.stallers[name]
        )

    def _disconnected(self, replica: ReplicaId, client: str) -> None:
        """A replica closed a client's connection: the client hears of it (a FIN), unless
        the network loses the news."""
        target = self._client(client)
        self.network.send(replica, client, lambda: target.connection_lost(replica))

    def _close(self, client: str, replica: str) -> None:
        """A client closed its connection to a replica (the replica hears of it, or not)."""
        node = self.nodes[ReplicaId(replica)]
        self.network.send(client, replica, lambda: node.client_gone(client))

    def _entry_applied(
        self, replica: ReplicaId, entry: Entry, results: tuple[Outcome | ChecksumTaken, ...]
    ) -> None:
        self._quorum_oracle(replica, entry)
        self.lock_observer.entry_applied(replica, entry, results)

    def _quorum_oracle(self, replica: ReplicaId, entry: Entry) -> None:
        """When an index is first applied anywhere, a majority of the voters of the
        membership that governs it hold its value on their disks (or in a snapshot past
        it): a wrong count (a learner counted, the wrong membership) shows here at once,
        without the unlucky fail-over that would turn it into lost agreement."""
        index = entry.index
        if index <= self._oracle_through:
            return
        self._oracle_through = index
        config = self._membership_before(index)
        voters = config.voters
        holders = [v for v in voters if v in self.nodes and self.nodes[v].holds(entry)]
        wiped = any(self.nodes[v].lost_disk for v in voters if v in self.nodes)
        if len(holders) < config.quorum() and not wiped:
            self.observer.violation(
                "quorum",
                f"{replica} applied index {index}, held durably by {', '.join(holders) or 'none'}"
                f" alone: not a majority of the voters {', '.join(voters)} (membership "
                f"version {config.version})",
            )
        if entry.value.membership is not None:
            self._memberships.append((index, entry.value.membership))

    def _membership_before(self, index: int) -> Membership:
        """The membership that governs `index`: the last change chosen below it."""
        found = self._memberships[0][1]
        for changed_at, membership in self._memberships:
            if changed_at >= index:
                break
            found = membership
        return found

    # ------------------------------------------------------------------ membership

    @property
    def joined(self) -> int:
        return len(self.names) - len(self.seed_names)

    def join(self) -> ReplicaId:
        """Start replica r(n+1) on an empty store without bootstrap: it joins."""
        name = ReplicaId(f"r{len(self.names) + 1}")
        rng = self._members_rng
        node = self.nodes[name] = self._make_node(name, self._buggify_rate, rng)
        node.joined = True
        self.names = (*self.names, name)
        self._say(f"member operator: starts {name} (an empty store, no bootstrap)")
        node.boot(rebuilding=True)
        return name

    def removed(self, name: ReplicaId, *, linger: bool) -> None:
        """`name` left the membership: it lingers, running, or is stopped for good."""
        node = self.nodes[name]
        if linger:
            self._say(f"member operator: {name} is removed and left running")
            return
        self._say(f"member operator: {name} is removed and stopped for good")
        self.retired.add(name)
        if node.alive:
            self.crash(name)

    def say(self, line: str) -> None:
        self._say(line)

    def _narrate_node(self, line: str) -> None:
        if "won ballot" in line:
            self.elections += 1
        self._say(line)

    def _say(self, line: str) -> None:
        """Something happened: it goes into the trace, and to the narrator if any."""
        self._trace.update(f"{self.scheduler.now}:{line}\n".encode())
        self._tell(line)

    def _tell(self, line: str) -> None:
        """Narration only: never in the trace, so narrating never changes a run."""
        if self._narrator is not None:
            self._narrator(f"{self.scheduler.now / SECOND:9.3f}s  {line}")

    def _progress(self) -> None:
        applied = max(n.node.applier.applied_index for n in self.nodes.values())
        rate = (applied - self._progress_applied) / PROGRESS_SECONDS
        self._progress_applied = applied
        master = self.master()
        who = (
            f"{master} is master of epoch {self.nodes[master].core.epoch}"
            if master
            else "no master"
        )
        done = sum(1 for op in self.observer.operations() if op.acknowledged)
        self._tell(f"-- {who}; {applied} entries applied ({rate:.0f}/s); {done} client ops done")

    # ------------------------------------------------------------------ the DSL

    def start(self, *, workload_seconds: float | None = None) -> None:
        """Boot every replica and start the clients (until `workload_seconds`, if given)."""
        for name in self.names:
            self.nodes[name].boot()
        stop = int(workload_seconds * SECOND) if workload_seconds is not None else 1 << 60
        for client in self.clients.values():
            client.start(stop)
        for lock_client in self.lock_clients.values():
            lock_client.start(stop)
        if self.operator is not None:
            self.operator.start(stop)

    def add_lock_client(self) -> SimLockClient:
        """One more lock client (before `start`), for a scenario to watch."""
        name = f"l{len(self.lock_clients) + 1}"
        client = self.lock_clients[name] = self._make_lock_client(name)
        return client

    def wait_for(self, done: Callable[[], bool], *, seconds: float) -> None:
        """Run until `done()` holds (checked every 5 ms), for at most `seconds`."""
        deadline = self.scheduler.now + int(seconds * SECOND)
        while not done():
            assert self.scheduler.now < deadline, f"not done within {seconds}s"
            self.run(seconds=0.005)

    def seeded_random(self) -> random.Random:
        """A generator for a scenario's own choices, seeded from the cell's seed."""
        return random.Random(self._rng.getrandbits(64))

    def script_client(self) -> ScriptClient:
        """A client whose requests the scenario sends one at a time."""
        number = 1000 + len(self.scripts)
        client = ScriptClient(
            f"s{number}", number, self.scheduler, self.observer, self._send_request
        )
        self.scripts[client.name] = client
        return client

    def stalling_cacher(self, paths: tuple[str, ...]) -> StallingCacher:
        """A hostile session that caches `paths` and never acknowledges an invalidation
        (`chubbypy.testing._stalling`); the scenario starts it."""
        client = StallingCacher(
            f"x{len(self.stallers) + 1}", self.scheduler, self._send_request, paths
        )
        self.stallers[client.name] = client
        return client

    def serving(self) -> list[str]:
        """Replicas that are master and serving their epoch now (at most one has a lease)."""
        return [n for n in self.names if self.nodes[n].alive and self.nodes[n].core.serving]

    def run_until_serving(
        self, *, excluding: Iterable[str] = (), seconds: float = 10.0
    ) -> ReplicaId:
        """Run until a replica not in `excluding` serves with a valid lease; return its name."""
        excluded = set(excluding)
        deadline = self.scheduler.now + int(seconds * SECOND)
        while self.scheduler.now < deadline:
            master = self.master()
            if master is not None and master not in excluded and self.nodes[master].core.serving:
                return master
            self.run(seconds=0.005)
        raise AssertionError(f"no master outside {sorted(excluded)} within {seconds}s")

    def run(self, *, seconds: float) -> None:
        """Advance true time by `seconds`, checking leases at every instant something happens."""
        self.run_until(self.scheduler.now + int(seconds * SECOND))

    def run_until(self, end_us: int) -> None:
        scheduler = self.scheduler
        observer = self.observer
        while True:
            next_time = scheduler.next_time()
            if next_time is None or next_time > end_us:
                break
            if self._narrator is not None and next_time >= self._progress_due:
                scheduler.now = self._progress_due
                self._progress_due += PROGRESS_SECONDS * SECOND
                self._progress()
            scheduler.run_one()
            following = scheduler.next_time()
            if following is None or following > scheduler.now:
                observer.now_us = scheduler.now
                self._check_leases()
                if observer.fail_fast and observer.failed:
                    return
        scheduler.now = max(scheduler.now, end_us)

    def _check_leases(self) -> None:
        holders = []
        for name in self.names:
            node = self.nodes[name]
            # A stalled process believes what its clock will tell it when it wakes.
            if node.alive and node.core.lease_valid_at(node.local_ticks()):
                holders.append(name)
                if name not in node.core.membership.voters:
                    version = node.core.membership.version
                    self.observer.violation(
                        "lease safety",
                        f"{name} holds a master lease but is no voter of its membership "
                        f"(version {version})",
                    )
        self.observer.leases(holders)

    def crash(self, name: str) -> None:
        self._say(f"fault: crash {name} (unsynced writes are lost)")
        for client in self.nodes[ReplicaId(name)].crash():
            self._disconnected(ReplicaId(name), client)  # its kernel resets the connections

    def restart(self, name: str) -> None:
        node = self.nodes[ReplicaId(name)]
        if not node.alive and name not in self.retired:
            self._say(f"fault: restart {name}")
            # A disk lost before the rebuild was written down is still empty: rebuild again
            # (found by the agreement checker, seed 379: it voted with an empty disk).
            node.boot(rebuilding=node.must_rebuild)

    def stop_gracefully(self, name: str, down_seconds: float, fault_end: int) -> None:
        """A planned stop (SIGTERM): the master hands over, then the process exits."""
        node = self.nodes[ReplicaId(name)]
        self._say(f"fault: stop {name} gracefully")
        node.resign()
        self.scheduler.after(
            50 * MILLISECOND, lambda: self._stop_then_restart(name, down_seconds, fault_end)
        )

    def _stop_then_restart(self, name: str, down_seconds: float, fault_end: int) -> None:
        if self.nodes[ReplicaId(name)].alive and self.scheduler.now < fault_end:
            self.crash(name)
            self._later(down_seconds, lambda: self.restart(name), fault_end)

    def wipe(self, name: str) -> None:
        """Crash `name` and lose its disk; it comes back empty and rebuilds as a non-voter."""
        node = self.nodes[ReplicaId(name)]
        if node.alive:
            self.crash(name)
        self._say(f"fault: {name} loses its disk and restarts empty, rebuilding from its peers")
        node.wipe()
        node.boot(rebuilding=True)

    def partition(self, *groups: Iterable[str], one_way: bool = False) -> None:
        """Cut the links between the groups (one-way: only from earlier groups to later ones)."""
        sets = [set(group) for group in groups]
        arrow = " -/-> " if one_way else " | "
        self._say("fault: partition " + arrow.join(",".join(sorted(g)) for g in sets))
        self.network.partition(sets, one_way=one_way)

    def heal(self) -> None:
        self._say("heal: the network is whole again")
        self.network.heal()

    def pause(self, name: str, seconds: float) -> None:
        self._say(f"fault: {name} stalls for {seconds:.2f}s (its clock keeps running)")
        self.nodes[ReplicaId(name)].pause(self.scheduler.now + int(seconds * SECOND))

    def cut(self, a: str, b: str) -> None:
        """Cut the link between two replicas both ways; each still reaches the others (a bridge)."""
        self._say(f"fault: cut the link {a} <-> {b}")
        self.network.blocked.update({(a, b), (b, a)})

    def crash_during_write(self, name: str, down_seconds: float, fault_end: int) -> None:
        """Crash `name` part-way through its next disk write (a crash at a durability boundary)."""
        node = self.nodes[ReplicaId(name)]
        rng = self.seeded_random()

        def write_started(duration_us: int) -> None:
            def crash_now() -> None:
                if node.alive and self.scheduler.now < fault_end:
                    self.crash(name)
                    self._later(down_seconds, lambda: self.restart(name), fault_end)

            self.scheduler.after(rng.randint(0, max(0, duration_us - 1)), crash_now)

        node.write_started = write_started

    def flap_master(self, seconds: float, fault_end: int) -> None:
        """Isolate the master; the moment another replica serves, isolate that one instead.

        Fail-over during fail-over: the first master's unfinished instances can outlive a
        short second mastership, which is what the epoch guard is for.
        """
        first = self.master()
        if first is None:
            return
        self.partition([first], [n for n in self.names if n != first])
        deadline = self.scheduler.now + int(seconds * SECOND)

        def watch() -> None:
            if self.scheduler.now >= min(deadline, fault_end):
                return
            second = next(
                (
                    n
                    for n in self.names
                    if n != first and self.nodes[n].alive and self.nodes[n].core.serving
                ),
                None,
            )
            if second is None:
                self.scheduler.after(5 * MILLISECOND, watch)
                return
            self.heal()
            self.partition([second], [n for n in self.names if n != second])
            self._later(seconds, self.heal, fault_end)

        self.scheduler.after(5 * MILLISECOND, watch)

    def set_network(self, faults: NetworkFaults) -> None:
        self.network.faults = faults

    def master(self) -> ReplicaId | None:
        """The replica that holds a valid lease now, if any."""
        for name in self.names:
            node = self.nodes[name]
            if node.alive and node.core.lease_valid():
                return name
        return None

    # ------------------------------------------------------------------ a whole run

    def run_scenario(self) -> SimResult:
        """Safety phase with random faults, then heal, then liveness phase, then final checks."""
        s = self.settings
        fault_end = int(s.fault_seconds * SECOND)
        workload_end = fault_end + int(s.liveness_seconds * SECOND)
        self.start(workload_seconds=workload_end / SECOND)
        self._tell(
            f"safety phase: {s.replicas} replicas, {s.clients} clients, random faults for "
            f"{s.fault_seconds:.0f}s; the checkers watch every instant"
        )
        self._schedule_faults(fault_end)
        self.run_until(fault_end)
        return self.conclude()

    def conclude(self) -> SimResult:
        """Stop every fault, let the workload run its liveness phase, fall quiet, check all."""
        if self.observer.failed and self.observer.fail_fast:
            return self.result()
        s = self.settings
        self._tell(
            "liveness phase: faults stop, every replica comes back; every operation must "
            f"finish within {s.liveness_seconds:.0f}s"
        )
        self._heal_everything()
        phase = s.liveness_seconds if s.liveness_phase_seconds is None else s.liveness_phase_seconds
        workload_end = self.scheduler.now + int(phase * SECOND)
        for client in self.clients.values():
            client.stop_at = min(client.stop_at, workload_end)
        for lock_client in self.lock_clients.values():
            lock_client.stop_at = min(lock_client.stop_at, workload_end)
        if self.operator is not None:
            self.operator.stop_at = min(self.operator.stop_at, workload_end)
        self.scheduler.at(workload_end, self._fall_quiet)
        end = workload_end + int(s.quiet_seconds * SECOND)
        self.run_until(workload_end)
        self._tell("quiet: clients stop; replicas must converge to the same state")
        self.run_until(end)
        if not self.observer.failed or not self.observer.fail_fast:
            self._final_checks(end)
        for line in self.observer.summary():
            self._tell(f"checked {line}")
        if s.locks:
            locks = self.lock_observer
            grants = sum(c.grants for c in self.lock_clients.values())
            self._tell(
                f"checked mutual exclusion: {locks.grants_believed} of {grants} grants held "
                "with a valid lease, never two holders of one lock at once"
            )
            self._tell(
                f"checked fencing: {locks.fenced_writes} fenced writes applied, each under "
                "its lock's latest generation"
            )
            self._tell(
                f"checked session safety: {locks.expiries} sessions expired, none before "
                f"its client's view of its lease ended ({locks.operator_ended_expiries} of "
                f"the {locks.operator_ends} sessions an operator ended among them)"
            )
            self._tell(
                f"checked cache coherence: {locks.reads_checked} reads ({locks.cache_hits} "
                "from a client's cache), none older than a write completed before it began"
            )
            self._tell(
                f"checked events: {locks.events_checked} events, in order, none twice or "
                "lost, none before its change was applied"
            )
            self._tell(
                f"checked lock info: {locks.lock_infos_checked} answers, each the lock's "
                "generation and holders as the log had them between asking and answer"
            )
        return self.result()

    def _fall_quiet(self) -> None:
        """From now on no master asks for checksums, so the cell can fall quiet."""
        for node in self.nodes.values():
            node.stop_checksums()

    def _heal_everything(self) -> None:
        self.healed_at = self.scheduler.now
        self.heal()
        self.set_network(NetworkFaults())
        for name in self.names:
            self.nodes[name].write_started = None
            self.restart(name)
            self.nodes[name].resume()  # a stall begun before the faults stopped ends too

    def _final_checks(self, end: int) -> None:
        observer = self.observer
        observer.now_us = end
        s = self.settings
        observer.check_liveness(self.healed_at, int(s.liveness_seconds * SECOND), end)
        working = self.lock_clients and not s.idle_lock_clients
        if working and self.lock_observer.grants_believed == 0:
            observer.violation("liveness", "no lock client ever held a lock")
        observer.check_history()
        self._check_convergence()

    def _check_convergence(self) -> None:
        """Every replica applies what the most advanced one had applied when the quiet
        ended, within `CONVERGENCE_GRACE_US`, and at equal indices they hold equal state.
        The grace is for entries the quiet itself proposes (a session's expiry, a
        lock-delay's end): one chosen in the quiet's last round trip is still on its way to
        the followers when it ends (seed 40032, 3 replicas: chosen at r3 at 24.99 s)."""
        target = max(self.nodes[name].applier.applied_index for name in self.names)
        deadline = self.scheduler.now + CONVERGENCE_GRACE_US
        applied = self._applied()
        members = self._memberships[-1][1].member_ids
        while not _converged(applied, target) and self.scheduler.now < deadline:
            self.run_until(min(deadline, self.scheduler.now + 10 * MILLISECOND))
            applied = self._applied()
        if not _converged(applied, target):
            self.observer.violation(
                "liveness",
                f"replicas did not converge within {CONVERGENCE_GRACE_US // MILLISECOND} ms "
                f"of the quiet's end to index {target}: applied {applied}",
            )
            return
        checksums = {name: self.nodes[name].applier.checksum().hex() for name in members}
        if len(set(checksums.values())) > 1:
            self.observer.violation(
                "consistency", f"equal applied index, different state: {checksums}"
            )

    def _applied(self) -> dict[str, int]:
        """Each member's applied index (replicas removed from the cell fall behind)."""
        members = self._memberships[-1][1].member_ids
        return {name: self.nodes[name].applier.applied_index for name in members}

    def result(self) -> SimResult:
        ops = self.observer.operations()
        return SimResult(
            seed=self.seed,
            replicas=self.settings.replicas,
            violations=tuple(self.observer.violations),
            known=tuple(self.observer.known),
            trace_hash=self._trace.hexdigest(),
            simulated_seconds=self.scheduler.now / SECOND,
            events=self.scheduler.events_run,
            operations=len(ops),
            acknowledged=sum(1 for op in ops if op.acknowledged),
            committed_index=max(n.applier.applied_index for n in self.nodes.values()),
            elections=self.elections,
        )

    # ------------------------------------------------------------------ random faults

    def _schedule_faults(self, fault_end: int) -> None:
        rng = random.Random(self._rng.getrandbits(64))
        time = rng.randint(300, 1500) * MILLISECOND
        while time < fault_end:
            self.scheduler.at(time, self._fault_action(rng, fault_end))
            mean = self.settings.fault_interval_seconds
            time += int(rng.expovariate(1 / mean) * SECOND) + 50 * MILLISECOND
        if self.lock_clients:
            self._schedule_client_pauses(random.Random(self._rng.getrandbits(64)), fault_end)
        if self.settings.membership_changes:
            self._start_members_operator(fault_end)

    def _start_members_operator(self, fault_end: int) -> None:
        rng = self._members_rng
        drift_ppm = int(self.settings.clock_drift_max * self.settings.drift_factor * 1_000_000)
        clock = Clock(rng.randint(0, 10 * SECOND), rng.randint(-drift_ppm, drift_ppm))
        process = ClientProcess("mop", clock, self.scheduler, self._send_request, self._close)
        self.members_operator = SimMembershipOperator(
            self.seed_names,
            process,
            random.Random(rng.getrandbits(64)),
            self.settings.call_settings(),
            SimChance(random.Random(rng.getrandbits(64)), self._buggify_rate),
            self,
        )
        self.members_operator.start(fault_end)

    def _schedule_client_pauses(self, rng: random.Random, fault_end: int) -> None:
        """Freeze lock clients now and then, often for longer than their session lease: a
        holder that stops, loses its session, and wakes to find its lock gone."""
        names = sorted(self.lock_clients)
        time = rng.randint(500, 2000) * MILLISECOND
        while time < fault_end:
            name, seconds = rng.choice(names), rng.uniform(0.3, 4.0)

            def pause(name: str = name, seconds: float = seconds) -> None:
                self._say(f"fault: pause lock client {name} for {seconds:.2f}s")
                self.lock_clients[name].pause(self.scheduler.now + int(seconds * SECOND))

            self.scheduler.at(time, pause)
            time += int(rng.expovariate(1 / 1.5) * SECOND) + 100 * MILLISECOND

    def _fault_action(self, rng: random.Random, fault_end: int) -> Callable[[], None]:
        kind = rng.choices(
            [
                "crash",
                "crash-mid-write",
                "partition",
                "bridge",
                "isolate-master",
                "flap-master",
                "graceful-stop",
                "wipe",
                "one-way",
                "pause",
                "network",
                "heal",
            ],
            weights=[12, 10, 10, 8, 10, 10, 8, 3, 6, 12, 14, 8],
        )[0]
        seconds = rng.uniform(0.2, 4.0)
        pick = rng.random()
        groups_seed = rng.getrandbits(32)

        def act() -> None:
            if self.scheduler.now >= fault_end:
                return
            alive = [n for n in self.names if self.nodes[n].alive]
            match kind:
                case "crash":
                    if alive:
                        victim = alive[int(pick * len(alive))]
                        self.crash(victim)
                        self._later(seconds, lambda: self.restart(victim), fault_end)
                case "crash-mid-write":
                    target = self.master() if pick < 0.5 else None
                    if target is None and alive:
                        target = alive[int(pick * len(alive))]
                    if target is not None:
                        self.crash_during_write(target, seconds, fault_end)
                case "bridge":
                    names = list(self.names)
                    random.Random(groups_seed).shuffle(names)
                    self.cut(names[0], names[1])
                    self._later(seconds, self.heal, fault_end)
                case "flap-master":
                    self.flap_master(seconds, fault_end)
                case "graceful-stop":
                    target = self.master()
                    if target is not None:
                        self.stop_gracefully(target, seconds, fault_end)
                case "wipe":
                    # At most one replica rebuilds at a time: losing a second disk before the
                    # first has rebuilt is beyond what a cell can survive.
                    voting = [n for n in alive if self.nodes[n].core.status().voting]
                    running = [n for n in self.names if n not in self.retired]
                    if len(voting) == len(running) and alive:
                        self.wipe(alive[int(pick * len(alive))])
                case "partition" | "one-way":
                    names = list(self.names)
                    random.Random(groups_seed).shuffle(names)
                    cut = 1 + int(pick * (len(names) - 1))
                    self.partition(names[:cut], names[cut:], one_way=kind == "one-way")
                    self._later(seconds, self.heal, fault_end)
                case "isolate-master":
                    master = self.master() or self.names[int(pick * len(self.names))]
                    self.partition([master], [n for n in self.names if n != master])
                    self._later(seconds, self.heal, fault_end)
                case "pause":
                    target = self.master() if pick < 0.6 else None
                    target = target or self.names[int(pick * len(self.names))]
                    self.pause(target, seconds)
                case "network":
                    self._network_chaos(pick, seconds, fault_end)
                case "heal":
                    self.heal()

        return act

    def _network_chaos(self, pick: float, seconds: float, fault_end: int) -> None:
        faults = NetworkFaults(
            loss=0.3 * pick,
            duplication=0.2 * (1 - pick),
            reorder=0.3,
            delay_max_us=int(20 * MILLISECOND * pick) + MILLISECOND,
        )
        self._say(
            f"fault: network loses {faults.loss:.0%}, duplicates {faults.duplication:.0%}, "
            f"reorders {faults.reorder:.0%} for {seconds:.2f}s"
        )
        self.set_network(faults)
        self._later(seconds, lambda: self.set_network(NetworkFaults()), fault_end)

    def _later(self, seconds: float, action: Callable[[], None], fault_end: int) -> None:
        """Undo a fault after `seconds`, unless the faults have all stopped by then."""
        when = self.scheduler.now + int(seconds * SECOND)
        if when < fault_end:
            self.scheduler.at(when, action)


def default_settings(replicas: int = 3, **changes: object) -> SimSettings:
    """Simulator settings for a cell of `replicas`, with `changes` applied."""
    return evolve(SimSettings(replicas=replicas), **changes)  # type: ignore[arg-type]


def _converged(applied: dict[str, int], target: int) -> bool:
    """Every replica has applied through `target`, and all through the same index."""
    return len(set(applied.values())) == 1 and min(applied.values()) >= target
