"""Three `ReplicaNode`s over `MemoryStore`s and a network that the test drives by hand.

Nothing moves unless the test says so: `tick` advances chosen nodes' clocks (each node has
its own), `deliver` hands in-flight envelopes (and checksum reports) to their recipients,
`drop` loses them, `isolate` cuts a node off from its peers, and a node's outstanding
`Persist` is made durable at once unless the test `hold`s that node's disk, in which case
it stays out until `durable` is called. Clients talk to a node over a `Connection`
(`Cell.connect`), which collects every `Answer` sent on it.

The harness carries out each node's outputs in order, as the shells do, and checks on every
output what any correct node must do, so every test that uses the cell also checks it:

* **one write at a time**: no second `Persist` while one is out;
* **durable before send**: every Promise, Accepted and HeartbeatAck leaves only once what
  it reports is in the store (`tests.unit.paxos.harness.check_durable`).

`ChosenChance` is a `Chance` whose `buggify` fires for chosen sites only, to drive the node's
chance sites one at a time.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from attrs import define, field

from chubbypy.master import MasterTiming
from chubbypy.namespace import NamespaceLimits
from chubbypy.node import (
    Answer,
    Auth,
    AuthLimits,
    ClientLimits,
    ConnectionId,
    Disconnect,
    EntryApplied,
    EventHappened,
    NodeBug,
    NodeSettings,
    Note,
    NoteLevel,
    Output,
    Persist,
    ReplicaNode,
    SendChecksum,
    SendPeer,
    handle_key_for,
)
from chubbypy.paxos import Bug, Chance, Limits, NoChance, Role, Timing
from chubbypy.protocol import ClientId, Envelope, ReplicaId
from chubbypy.protocol.client import (
    ChecksumReport,
    ClientRequest,
    ErrorReply,
    ReadRequest,
    Register,
    Registered,
    ReplicaAddress,
    RequestId,
    ServerReply,
    SessionReply,
    SessionRequest,
    WriteReply,
    WriteRequest,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import Create, LockMode, Read, Write
from chubbypy.protocol.session import (
    AcquireLock,
    CreateSession,
    HandleMode,
    HandleOpened,
    Locked,
    Open,
    SessionCall,
    SessionCreated,
    SessionResult,
)
from chubbypy.sessions import SessionTiming, client_credential
from chubbypy.store import MemoryStore
from tests.unit.paxos.harness import check_durable

R1, R2, R3 = (ReplicaId(f"r{n}") for n in range(1, 4))
MEMBERS = (R1, R2, R3)
CELL = "c"
ROOT = f"/ls/{CELL}"

TIMING = Timing(
    lease_ticks=20,
    master_lease_ticks=18,
    heartbeat_ticks=4,
    election_jitter_ticks=4,
    retry_ticks=4,
)
TICK_MICROSECONDS = 100_000
"""Ten ticks a second: a duration of n ticks is n * 100 ms on the wire."""
SESSION_LEASE_TICKS = 100
ANSWER_BEFORE_TICKS = 30
MASTER_TIMING = MasterTiming(
    SessionTiming(lease_ticks=SESSION_LEASE_TICKS, answer_before_ticks=ANSWER_BEFORE_TICKS),
    tick_microseconds=TICK_MICROSECONDS,
)
LIMITS = Limits()
ANONYMOUS_ALLOWED = Auth()
CLIENT_LIMITS = ClientLimits()
AUTH_LIMITS = AuthLimits()
HANDLE_KEY = handle_key_for(CELL, "the unit tests' handle key")
RW = HandleMode.READ | HandleMode.WRITE

Match = Callable[[Envelope], bool]
_O = TypeVar("_O")


def everything(envelope: Envelope) -> bool:
    return True


def touching(rid: ReplicaId) -> Match:
    """Envelopes to or from `rid` (to cut it off: drop these)."""
    return lambda envelope: rid in (envelope.sender, envelope.recipient)


def to(rid: ReplicaId) -> Match:
    return lambda envelope: envelope.recipient == rid


def settings(
    rid: ReplicaId,
    *,
    auth: Auth = ANONYMOUS_ALLOWED,
    limits: Limits = LIMITS,
    snapshot_every_entries: int = 10_000,
    checksum_every_ticks: int = 10_000,
    clients_max: int = 10_000,
    client_limits: ClientLimits = CLIENT_LIMITS,
    auth_limits: AuthLimits = AUTH_LIMITS,
    log_lines_per_minute: int = 10,
    admins: tuple[str, ...] = (),
    snapshot_chunk_bytes: int = 256 * 1024,
    snapshot_held_ticks: int = 300,
    namespace_limits: NamespaceLimits | None = None,
    master_timing: MasterTiming = MASTER_TIMING,
    bugs: frozenset[Bug] = frozenset(),
    node_bugs: frozenset[NodeBug] = frozenset(),
) -> NodeSettings:
    """`rid`'s settings, filled as `chubbypy.config` and the simulator fill them."""
    return NodeSettings(
        replica_id=rid,
        cell=CELL,
        addresses=tuple(ReplicaAddress(r, f"tcp:127.0.0.1:700{r[-1]}") for r in MEMBERS),
        timing=TIMING,
        limits=limits,
        master_timing=master_timing,
        tick_microseconds=TICK_MICROSECONDS,
        namespace_limits=namespace_limits or NamespaceLimits(quota_exempt=frozenset(admins)),
        handle_key=HANDLE_KEY,
        auth=auth,
        snapshot_every_entries=snapshot_every_entries,
        checksum_every_ticks=checksum_every_ticks,
        clients_max=clients_max,
        client_limits=client_limits,
        auth_limits=auth_limits,
        log_lines_per_minute=log_lines_per_minute,
        snapshot_chunk_bytes=snapshot_chunk_bytes,
        snapshot_held_ticks=snapshot_held_ticks,
        admins=admins,
        bugs=bugs,
        node_bugs=node_bugs,
    )


class ChosenChance:
    """A `Chance` whose `buggify` fires for `sites` only (recording every site asked); a test
    may change `sites` as it goes.

    `randint` returns the low end, except right after a site fired, when it returns `value`
    (clamped), if given: the node's sites draw their amount just after they fire.
    """

    def __init__(self, *sites: str, value: int | None = None) -> None:
        self.sites = set(sites)
        self.value = value
        self.asked: list[str] = []
        self._fired = False

    def randint(self, low: int, high: int) -> int:
        fired, self._fired = self._fired, False
        if fired and self.value is not None:
            return max(low, min(high, self.value))
        return low

    def buggify(self, site: str) -> bool:
        self.asked.append(site)
        self._fired = site in self.sites
        return self._fired


# ----------------------------------------------------------------------------- clients


@define
class Connection:
    """One client connection to one node, with the answers it received, in order."""

    cell: Cell
    replica: ReplicaId
    id: ConnectionId
    answers: list[ServerReply] = field(factory=list)
    _request_ids: Iterator[int] = field(factory=lambda: itertools.count(1))

    def send(self, request: ClientRequest) -> RequestId:
        """Deliver `request` to the node now; its id."""
        self.cell.request(self, request)
        return request.request_id

    def next_id(self) -> RequestId:
        return RequestId(next(self._request_ids))

    def reply(self, request_id: RequestId) -> ServerReply | None:
        """The answer to `request_id`, if any (asserting there is at most one)."""
        found = [a for a in self.answers if a.request_id == request_id]
        assert len(found) <= 1, found
        return found[0] if found else None

    def close(self) -> None:
        self.cell.close(self)

    # ------------------------------------------------------------------ requests by kind

    def read(self, read: Read) -> RequestId:
        return self.send(ReadRequest(self.next_id(), read))

    def write(
        self,
        client_id: ClientId,
        sequence: int,
        write: Write,
        first_unacked: int = 0,
        credential: bytes | None = None,
    ) -> RequestId:
        """A write as client `client_id`, showing its own credential unless `credential`."""
        shown = client_credential(client_id, HANDLE_KEY) if credential is None else credential
        request = WriteRequest(self.next_id(), client_id, shown, sequence, first_unacked, write)
        return self.send(request)

    def register(self, nonce: int) -> RequestId:
        return self.send(Register(self.next_id(), nonce))

    def call(self, call: SessionCall) -> RequestId:
        return self.send(SessionRequest(self.next_id(), call))

    # ------------------------------------------------------------------ answers by kind

    def error(self, request_id: RequestId) -> ErrorReply:
        reply = self.reply(request_id)
        assert isinstance(reply, ErrorReply), reply
        return reply

    def code(self, request_id: RequestId) -> ErrorCode:
        return self.error(request_id).code

    def result(self, request_id: RequestId) -> SessionResult:
        reply = self.reply(request_id)
        assert isinstance(reply, SessionReply), reply
        return reply.result


# ----------------------------------------------------------------------------- the cell


class Cell:
    """Three nodes, their stores, their clocks and what is in flight between them."""

    def __init__(
        self,
        *,
        chances: Mapping[ReplicaId, Chance] | None = None,
        check_sends: bool = True,
        **options: Any,
    ) -> None:
        """`options` go to every node's `settings`; `chances` by node (default `NoChance`);
        `check_sends` False turns the durable-before-send check off (to watch a bug)."""
        self.check_sends = check_sends
        self.members = MEMBERS
        self.stores = {rid: MemoryStore() for rid in MEMBERS}
        self.now = dict.fromkeys(MEMBERS, 0)
        self.chances = {rid: (chances or {}).get(rid) or NoChance() for rid in MEMBERS}
        self.nodes = {
            rid: ReplicaNode(
                settings(rid, **options),
                self.stores[rid].load(),
                self.chances[rid],
            )
            for rid in MEMBERS
        }
        self.network: list[Envelope] = []
        self.reports: list[tuple[ReplicaId, ReplicaId, ChecksumReport]] = []
        """Checksum reports in flight: (sender, recipient, report)."""
        self.outputs: dict[ReplicaId, list[Output]] = defaultdict(list)
        """Every output of each node, in order."""
        self.writing: dict[ReplicaId, Persist] = {}
        """Each node's outstanding `Persist`."""
        self.held: set[ReplicaId] = set()
        """Nodes whose `Persist` waits for `durable` instead of being made durable at once."""
        self.isolated: set[ReplicaId] = set()
        """Nodes cut off from their peers: whatever they send or are sent is lost."""
        self.connections: dict[tuple[ReplicaId, ConnectionId], Connection] = {}
        self._connection_ids = itertools.count(1)
        for rid in MEMBERS:
            self.nodes[rid].started(0)
            self._carry_out(rid)

    # ------------------------------------------------------------------ outputs

    def _carry_out(self, rid: ReplicaId) -> None:
        """Do what `rid` asked, in order; a `Persist` is made durable at once unless held."""
        while True:
            for output in self.nodes[rid].take():
                self._do(rid, output)
            if rid in self.held or rid not in self.writing:
                return
            self._write(rid)

    def _do(self, rid: ReplicaId, output: Output) -> None:
        self.outputs[rid].append(output)
        match output:
            case Persist():
                assert rid not in self.writing, f"{rid}: a second Persist while one is out"
                self.writing[rid] = output
            case SendPeer(envelope):
                assert envelope.sender == rid, envelope
                if self.check_sends:
                    check_durable(self.stores[rid].load(), envelope)
                self.network.append(envelope)
            case SendChecksum(recipient, report):
                self.reports.append((rid, recipient, report))
            case Answer(connection, reply):
                target = self.connections.get((rid, connection))
                if target is not None:
                    target.answers.append(reply)
            case Disconnect() | Note() | EntryApplied() | EventHappened():
                pass

    def _write(self, rid: ReplicaId) -> None:
        persist = self.writing.pop(rid)
        self.stores[rid].persist(persist.durable)
        self.nodes[rid].durable_written(self.now[rid], 0.001)

    # ------------------------------------------------------------------ disks and network

    def hold(self, rid: ReplicaId) -> None:
        """From now on, `rid`'s `Persist`s stay out until `durable(rid)`."""
        self.held.add(rid)

    def release(self, rid: ReplicaId) -> None:
        """Stop holding `rid`'s disk (and make what is out durable now)."""
        self.held.discard(rid)
        if rid in self.writing:
            self.durable(rid)

    def durable(self, rid: ReplicaId) -> None:
        """`rid`'s outstanding `Persist` is durable now."""
        assert rid in self.writing, f"{rid} has no Persist out"
        self._write(rid)
        self._carry_out(rid)

    def isolate(self, rid: ReplicaId) -> None:
        """Cut `rid` off from its peers (its clients still reach it)."""
        self.isolated.add(rid)

    def heal(self) -> None:
        self.isolated.clear()

    # ------------------------------------------------------------------ inputs

    def tick(self, *rids: ReplicaId, times: int = 1) -> None:
        """Advance the clocks of `rids` (default: all) one tick at a time, `times` times."""
        for _ in range(times):
            for rid in rids or self.members:
                self.now[rid] += 1
                self.nodes[rid].ticked(self.now[rid])
                self._carry_out(rid)

    def resign(self, rid: ReplicaId) -> None:
        """A graceful stop of `rid` begins."""
        self.nodes[rid].resign(self.now[rid])
        self._carry_out(rid)

    def deliver(self, match: Match = everything) -> int:
        """Deliver the matching envelopes in flight, and every checksum report, oldest first
        (those to or from an isolated node are lost); what they provoke stays in flight. How
        many were taken."""
        batch = self.take(match)
        for envelope in batch:
            rid = envelope.recipient
            if self.isolated & {envelope.sender, rid} or rid not in self.nodes:
                continue  # lost (cut off, or to a replica no one started)
            message = envelope.message
            refused = self.nodes[rid].peer_message_received(self.now[rid], envelope.sender, message)
            assert refused is None, refused  # every node here is correct: none sends garbage
            self._carry_out(rid)
        reports, self.reports = self.reports, []
        for sender, recipient, report in reports:
            if not self.isolated & {sender, recipient}:
                self.report(sender, recipient, report)
        return len(batch) + len(reports)

    def report(self, sender: ReplicaId, recipient: ReplicaId, report: ChecksumReport) -> None:
        """Deliver a checksum report from `sender` to `recipient` now (made up, or redirected)."""
        self.nodes[recipient].checksum_reported(self.now[recipient], sender, report)
        self._carry_out(recipient)

    def settle(self, match: Match = everything, rounds: int = 200) -> None:
        """Deliver matching envelopes and what they provoke until none matches."""
        for _ in range(rounds):
            if not self.deliver(match):
                return
        raise AssertionError("the network did not settle")

    def take(self, match: Match = everything) -> list[Envelope]:
        """Remove the matching envelopes from flight (to drop them, or to hold them)."""
        taken = [envelope for envelope in self.network if match(envelope)]
        self.network = [envelope for envelope in self.network if not match(envelope)]
        return taken

    drop = take

    def run(self, ticks: int, match: Match = everything) -> None:
        """Each round: tick every node, deliver what `match` lets through, drop the rest."""
        for _ in range(ticks):
            self.tick()
            self.settle(match)
            self.take()

    # ------------------------------------------------------------------ clients

    def connect(self, rid: ReplicaId, peer: str = "client") -> Connection:
        connection = Connection(self, rid, ConnectionId(next(self._connection_ids)))
        self.connections[rid, connection.id] = connection
        self.nodes[rid].connection_opened(connection.id, peer)
        return connection

    def request(self, connection: Connection, request: ClientRequest) -> None:
        rid = connection.replica
        self.nodes[rid].request_received(self.now[rid], connection.id, request)
        self._carry_out(rid)

    def close(self, connection: Connection) -> None:
        rid = connection.replica
        del self.connections[rid, connection.id]
        self.nodes[rid].connection_closed(self.now[rid], connection.id)
        self._carry_out(rid)

    # ------------------------------------------------------------------ scenarios

    def elect(self, rid: ReplicaId = R1) -> None:
        """Make `rid` master of a fresh cell: tick it alone, delivering everything, until it
        serves (the others are never ticked, so they never campaign against it)."""
        node = self.nodes[rid]
        for _ in range(10 * TIMING.lease_ticks):
            if node.core.serving:
                return
            self.tick(rid)
            self.settle()
        raise AssertionError(node.core.status())

    def register(self, connection: Connection, nonce: int = 1) -> ClientId:
        """Register a client through `connection`'s node (the master); its id."""
        request_id = connection.register(nonce)
        self.settle()
        reply = connection.reply(request_id)
        assert isinstance(reply, Registered), reply
        return reply.client_id

    def written(
        self, connection: Connection, client_id: ClientId, sequence: int, write: Write
    ) -> WriteReply:
        """A write through `connection`, settled; its reply."""
        request_id = connection.write(client_id, sequence, write)
        self.settle()
        reply = connection.reply(request_id)
        assert isinstance(reply, WriteReply), reply
        return reply

    def session(self, connection: Connection, name: str = "client") -> tuple[int, bytes]:
        """A session created through `connection`: (its id, its credential)."""
        request_id = connection.call(CreateSession(name))
        self.settle()
        created = connection.result(request_id)
        assert isinstance(created, SessionCreated), created
        return created.session_id, created.credential

    def open(self, connection: Connection, session: tuple[int, bytes], name: str = "lock") -> bytes:
        """A handle on `ROOT/name` (created if missing, opened read-write) in `session`."""
        path = f"{ROOT}/{name}"
        request_id = connection.call(Open(*session, path, RW, create=Create(path)))
        self.settle()
        opened = connection.result(request_id)
        assert isinstance(opened, HandleOpened), opened
        return opened.handle

    def lock(self, connection: Connection, handle: bytes) -> Locked:
        """Take `handle`'s lock exclusively, without waiting (it must be free); the grant."""
        request_id = connection.call(AcquireLock(handle, LockMode.EXCLUSIVE, wait=False))
        self.settle()
        locked = connection.result(request_id)
        assert isinstance(locked, Locked), locked
        return locked

    # ------------------------------------------------------------------ queries

    def master(self) -> ReplicaId:
        """The one node whose core is master."""
        (rid,) = [r for r, n in self.nodes.items() if n.core.status().role is Role.MASTER]
        return rid

    def notes(self, rid: ReplicaId, level: NoteLevel | None = None) -> list[str]:
        return [
            o.text
            for o in self.outputs[rid]
            if isinstance(o, Note) and (level is None or o.level is level)
        ]

    def applied(self, rid: ReplicaId) -> list[EntryApplied]:
        return self.of(rid, EntryApplied)

    def of(self, rid: ReplicaId, kind: type[_O]) -> list[_O]:
        """`rid`'s outputs of one kind, in order."""
        return [o for o in self.outputs[rid] if isinstance(o, kind)]

    def mark(self) -> dict[ReplicaId, int]:
        """Where each node's outputs stand now (for `since`)."""
        return {rid: len(self.outputs[rid]) for rid in self.members}

    def since(self, mark: dict[ReplicaId, int], rid: ReplicaId) -> list[Output]:
        return self.outputs[rid][mark[rid] :]


def metric(node: ReplicaNode, series: str) -> float:
    """The value of one series (name and labels, as rendered) of `node.metrics`; 0 if absent."""
    for line in node.metrics.render().splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0
