"""A fake cell for client tests: replicas that speak the real wire protocol over iosim pipes.

`FakeCell` holds what the replicas share: a small in-memory namespace, the registrations,
the remembered result of every write (so a retried write gets its first result, as the
real log gives it), every `WriteRequest` any replica received, and which replica is master.
`FakeReplica` is one member: its address and how it misbehaves (down, silent, hint-less,
scripted error codes, dropped replies). `FakeReplicaProtocol` is its side of one
connection. `FakeNetwork` dials replicas for a `Cell` and moves bytes and time on a
`task.Clock`: nothing happens unless a test runs it, and no wall clock is read.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim

from chubbypy.client import Cell, client_endpoint_string
from chubbypy.protocol.client import (
    NO_REQUEST,
    PROTOCOL_VERSION,
    ClientRequest,
    ErrorReply,
    Hello,
    LocateMaster,
    MasterLocation,
    ReadReply,
    ReadRequest,
    Register,
    Registered,
    ReplicaAddress,
    ReplicaStatus,
    RequestId,
    ServerReply,
    StatusReply,
    StatusRequest,
    Welcome,
    WireMessage,
    WriteReply,
    WriteRequest,
)
from chubbypy.protocol.errors import ChubbyError, ErrorCode
from chubbypy.protocol.errors import Failure as Refused
from chubbypy.protocol.framing import FrameDecoder, encode_frame
from chubbypy.protocol.namespace import (
    Absent,
    AclNames,
    Contents,
    Create,
    Delete,
    DirEntry,
    Exists,
    GetContentsAndStat,
    GetStat,
    Listing,
    MultiOp,
    MultiResult,
    Read,
    ReadDir,
    ReadResult,
    SetAcl,
    SetContents,
    SimpleWrite,
    Stat,
    Test,
    Write,
    WriteResult,
    Written,
)
from chubbypy.protocol.values import ClientId, Epoch, LogIndex, ReplicaId
from chubbypy.protocol.wire import DecodeError, decode_wire, encode_wire, error_reply_for
from chubbypy.sessions import client_credential, client_credential_matches

CELL = "test"
ROOT = f"/ls/{CELL}"
ACL = AclNames("everyone", "everyone", "admins")
FAKE_KEY = b"the fake cell's handle key"
"""The key of the fake cell's client credentials."""


def send(transport: Any, message: WireMessage) -> None:
    """Write `message` as one frame."""
    transport.write(encode_frame(encode_wire(message)))


def frames(data: bytes) -> list[WireMessage]:
    """Every message in `data`, a stream of whole frames."""
    return [decode_wire(body) for body in FrameDecoder(1 << 20).feed(data)]


# ----------------------------------------------------------------------------- namespace


@define
class Node:
    is_directory: bool
    contents: bytes
    instance: int
    generation: int = 1
    acl: AclNames = ACL
    ephemeral: bool = False


class FakeNamespace:
    """Files and directories in a dict: enough of `chubbypy.namespace` for client tests."""

    def __init__(self, page_entries_max: int = 1000) -> None:
        self.nodes: dict[str, Node] = {ROOT: Node(True, b"", 1, generation=0)}
        self.page_entries_max = page_entries_max
        self._instances = 1

    def stat(self, path: str) -> Stat:
        node = self.nodes[path]
        size = len(self.children(path)) if node.is_directory else len(node.contents)
        generation = 0 if node.is_directory else node.generation
        return Stat(
            node.instance, generation, 0, 0, 0, node.acl, node.is_directory, node.ephemeral, size
        )

    def children(self, path: str) -> list[str]:
        prefix = path + "/"
        return sorted(
            p[len(prefix) :]
            for p in self.nodes
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        )

    def apply(self, write: Write) -> WriteResult:
        if isinstance(write, MultiOp):
            return self._multi_op(write)
        return self._simple(write)

    def read(self, read: Read) -> ReadResult:
        node = self.nodes.get(read.path)
        if node is None:
            return Refused(ErrorCode.NO_SUCH_NODE, f"{read.path}: no such node")
        match read:
            case GetContentsAndStat():
                if node.is_directory:
                    return Refused(ErrorCode.IS_A_DIRECTORY, f"{read.path}: a directory")
                return Contents(node.contents, self.stat(read.path))
            case GetStat():
                return self.stat(read.path)
            case ReadDir(path, after, limit):
                if not node.is_directory:
                    return Refused(ErrorCode.NOT_A_DIRECTORY, f"{path}: not a directory")
                names = [n for n in self.children(path) if n > after]
                page = names[: min(limit, self.page_entries_max)]
                entries = tuple(DirEntry(n, self.stat(f"{path}/{n}")) for n in page)
                return Listing(entries, len(names) > len(page))
        raise AssertionError(read)

    def _simple(self, write: SimpleWrite) -> Written | Refused:
        path = write.path
        node = self.nodes.get(path)
        match write:
            case Create():
                parent = self.nodes.get(path.rpartition("/")[0])
                if node is not None:
                    return Refused(ErrorCode.EXISTS, f"{path}: exists")
                if parent is None:
                    return Refused(ErrorCode.NO_SUCH_NODE, f"{path}: no parent")
                if not parent.is_directory:
                    return Refused(ErrorCode.NOT_A_DIRECTORY, f"{path}: parent is a file")
                self._instances += 1
                self.nodes[path] = Node(
                    write.is_directory,
                    write.contents,
                    self._instances,
                    acl=write.acl or parent.acl,
                    ephemeral=write.ephemeral,
                )
                return Written(self.stat(path))
        if node is None:
            return Refused(ErrorCode.NO_SUCH_NODE, f"{path}: no such node")
        match write:
            case SetContents(_, contents, expected):
                if expected is not None and expected != node.generation:
                    return Refused(ErrorCode.GENERATION_MISMATCH, f"{path}: generation")
                node.contents, node.generation = contents, node.generation + 1
                return Written(self.stat(path))
            case Delete(_, expected):
                if expected is not None and expected != node.instance:
                    return Refused(ErrorCode.GENERATION_MISMATCH, f"{path}: instance")
                if self.children(path):
                    return Refused(ErrorCode.NOT_EMPTY, f"{path}: not empty")
                del self.nodes[path]
                return Written(None)
            case SetAcl(_, acl):
                node.acl = acl
                return Written(self.stat(path))
        raise AssertionError(write)

    def _multi_op(self, multi_op: MultiOp) -> MultiResult | Refused:
        tests = tuple(self._holds(test) for test in multi_op.guard)
        branch = multi_op.if_true if all(tests) else multi_op.if_false
        saved = copy.deepcopy(self.nodes)
        results = []
        for write in branch:
            result = self._simple(write)
            if isinstance(result, Refused):
                self.nodes = saved
                return Refused(ErrorCode.GUARD_FAILED, f"{write.path}: {result.message}")
            results.append(result)
        return MultiResult(all(tests), tests, tuple(results))

    def _holds(self, test: Test) -> bool:
        match test:
            case Exists(path):
                return path in self.nodes
            case Absent(path):
                return path not in self.nodes
        raise AssertionError(test)


# ----------------------------------------------------------------------------- replicas


@define(eq=False)
class FakeReplica:
    """One member of a `FakeCell`; its flags say how it misbehaves."""

    cell: FakeCell
    replica_id: ReplicaId
    port: int
    down: bool = False
    """Refuses connections."""
    silent: bool = False
    """Welcomes, then never answers."""
    hints: bool = True
    """NOT_MASTER replies name the master."""
    welcome_version: int = PROTOCOL_VERSION
    welcome_cell: str = CELL
    errors: list[ErrorCode] = field(factory=list)
    """Codes to answer the next master-only requests with, instead of serving them."""
    drop_replies: int = 0
    """Master-only requests to serve without replying."""
    believes: ReplicaId | None = None
    """The master this replica believes in, if not the cell's."""
    received: list[ClientRequest] = field(factory=list)

    @property
    def master(self) -> ReplicaId | None:
        return self.believes or self.cell.master

    @property
    def endpoint(self) -> str:
        """Its client endpoint as a cell's YAML spells it (a server endpoint string)."""
        return f"tcp:{self.port}:interface=127.0.0.1"

    @property
    def address(self) -> str:
        """Its canonical client endpoint description."""
        return client_endpoint_string(self.endpoint)

    def answer(self, request: ClientRequest) -> ServerReply | None:
        self.received.append(request)
        if self.silent:
            return None
        match request:
            case LocateMaster(rid):
                return MasterLocation(rid, self.master, Epoch(3), self.cell.addresses())
            case StatusRequest(rid):
                return StatusReply(rid, self.status())
        if isinstance(request, WriteRequest):
            self.cell.writes.append((self.replica_id, request))
            if len(self.cell.writes) in self.cell.evict_before_writes:
                self.cell.forget_clients()
        if self.master != self.replica_id:
            hint = self.master if self.hints else None
            return ErrorReply(request.request_id, ErrorCode.NOT_MASTER, "not master", hint)
        if self.errors:
            return ErrorReply(request.request_id, self.errors.pop(0), "scripted", None)
        reply = self.cell.serve(request)
        if self.drop_replies:
            self.drop_replies -= 1
            return None
        return reply

    def status(self) -> ReplicaStatus:
        role = "master" if self.cell.master == self.replica_id else "follower"
        index = LogIndex(self.cell.index)
        return ReplicaStatus(
            replica_id=self.replica_id,
            role=role,
            epoch=Epoch(3),
            promised="3.r1",
            chosen_index=index,
            applied_index=index,
            first_index=LogIndex(1),
            last_index=index,
            snapshot_index=LogIndex(0),
            serving=role == "master",
            lease_valid=True,
            lease_remaining_ms=1500,
            master_hint=self.cell.master,
            uptime_ms=60_000,
            checksum_mismatches=0,
        )


class FakeCell:
    """Replicas r1.. on ports 7201.., their shared namespace and exactly-once table."""

    def __init__(self, replicas: int = 3, master: str | None = "r1") -> None:
        self.replicas = {
            ReplicaId(f"r{n}"): FakeReplica(self, ReplicaId(f"r{n}"), 7200 + n)
            for n in range(1, replicas + 1)
        }
        self.master = None if master is None else ReplicaId(master)
        self.namespace = FakeNamespace()
        self.registrations: dict[int, ClientId] = {}
        self.forgotten = 0
        """Clients forgotten so far (as a cell evicts them)."""
        self.evict_before_writes: set[int] = set()
        """Forget every client just before the n-th write request arrives (counting all)."""
        self.results: dict[tuple[int, int], WriteReply] = {}
        self.writes: list[tuple[ReplicaId, WriteRequest]] = []
        self.index = 10

    def __getitem__(self, replica_id: str) -> FakeReplica:
        return self.replicas[ReplicaId(replica_id)]

    def seeds(self) -> list[str]:
        """Addresses as a user types them."""
        return [f"127.0.0.1:{r.port}" for r in self.replicas.values()]

    def addresses(self) -> tuple[ReplicaAddress, ...]:
        return tuple(ReplicaAddress(r.replica_id, r.endpoint) for r in self.replicas.values())

    def forget_clients(self) -> None:
        self.forgotten += len(self.registrations)
        self.registrations.clear()

    def next_client_id(self) -> int:
        """Ids are never reused, even after `forget_clients`."""
        return self.forgotten + len(self.registrations) + 1

    def serve(self, request: ClientRequest) -> ServerReply:
        rid = request.request_id
        match request:
            case Register(_, nonce):
                client = self.registrations.setdefault(nonce, ClientId(self.next_client_id()))
                return Registered(rid, client, client_credential(client, FAKE_KEY))
            case WriteRequest(_, client_id, credential, sequence, _, write):
                if not client_credential_matches(client_id, credential, FAKE_KEY):
                    return ErrorReply(rid, ErrorCode.PERMISSION_DENIED, "wrong credential", None)
                if client_id not in self.registrations.values():
                    return ErrorReply(rid, ErrorCode.UNKNOWN_CLIENT, "unknown client", None)
                first = self.results.get((client_id, sequence))
                if first is None:
                    self.index += 1
                    first = WriteReply(rid, LogIndex(self.index), self.namespace.apply(write))
                    self.results[(client_id, sequence)] = first
                return WriteReply(rid, first.index, first.result)
            case ReadRequest(_, read):
                return ReadReply(rid, LogIndex(self.index), self.namespace.read(read))
        raise AssertionError(request)

    def applied_writes(self) -> int:
        """Writes the cell applied (each exactly-once identity counts once)."""
        return len(self.results)


class FakeReplicaProtocol(Protocol):
    """A replica's side of one client connection: the hello, then `FakeReplica.answer`."""

    def __init__(self, replica: FakeReplica) -> None:
        self.replica = replica
        self.decoder = FrameDecoder(1 << 20)
        self.welcomed = False

    def dataReceived(self, data: bytes) -> None:
        try:
            bodies = self.decoder.feed(data)
        except ChubbyError as error:
            self.refuse(error_reply_for(error, NO_REQUEST))
            return
        for body in bodies:
            try:
                message = decode_wire(body)
            except DecodeError as error:
                self.refuse(ErrorReply(NO_REQUEST, ErrorCode.BAD_REQUEST, str(error), None))
                return
            if not self.welcomed:
                assert isinstance(message, Hello), message
                self.hello_received(message)
            else:
                reply = self.replica.answer(message)  # type: ignore[arg-type]
                if reply is not None:
                    send(self.transport, reply)

    def hello_received(self, hello: Hello) -> None:
        if hello.version != PROTOCOL_VERSION:
            code, why = ErrorCode.UNSUPPORTED_VERSION, "version"
            self.refuse(ErrorReply(NO_REQUEST, code, why, None))
        elif hello.cell != CELL:
            self.refuse(ErrorReply(NO_REQUEST, ErrorCode.WRONG_CELL, f"I serve {CELL}", None))
        else:
            self.welcomed = True
            replica = self.replica
            send(
                self.transport,
                Welcome(replica.welcome_version, replica.welcome_cell, replica.replica_id),
            )

    def refuse(self, reply: ErrorReply) -> None:
        send(self.transport, reply)
        assert self.transport is not None
        self.transport.loseConnection()


# ----------------------------------------------------------------------------- network


class FakeNetwork:
    """Connects a `Cell` to a `FakeCell` through iosim pumps, on a `task.Clock`."""

    def __init__(self, cell: FakeCell) -> None:
        self.cell = cell
        self.clock = Clock()
        self.links: list[tuple[FakeReplica, iosim.IOPump]] = []
        self.dials: list[str] = []

    def client(self, **options: Any) -> Cell:
        """A `Cell` on this network, seeded with every replica's host:port."""
        options.setdefault("rng", random.Random(7))
        options.setdefault("name", "test-client")
        return Cell(self.clock, self.cell.seeds(), CELL, dialer=self.dial, **options)

    def dial(self, address: str, protocol: Protocol) -> Deferred[Any]:
        self.dials.append(address)
        replica = next((r for r in self.cell.replicas.values() if r.address == address), None)
        if replica is None or replica.down:
            return fail(ConnectionRefusedError(address))
        server = FakeReplicaProtocol(replica)
        pump = iosim.connect(
            server,
            iosim.makeFakeServer(server),
            protocol,
            iosim.makeFakeClient(protocol),
            greet=False,
            clock=self.clock,
        )
        self.links.append((replica, pump))
        return succeed(protocol)

    def crash(self, replica: FakeReplica) -> None:
        """The replica stops: its connections close and it refuses new ones."""
        replica.down = True
        for linked, pump in self.links:
            if linked is replica:
                pump.serverIO.loseConnection()
        self.flush()

    def flush(self) -> None:
        """Move bytes until every connection is quiet."""
        for _ in range(10_000):
            moved = False
            for _, pump in list(self.links):
                moved = pump.pump(advanceClock=False) or moved
            if not moved:
                return
        raise AssertionError("the network never went quiet")

    def settle(self, deferred: Deferred[Any], seconds: float = 60.0, step: float = 0.01) -> Any:
        """Run the network until `deferred` fires (within `seconds` of fake time); its result,
        or its exception raised."""
        end = self.clock.seconds() + seconds
        self.flush()
        while not deferred.called and self.clock.seconds() < end:
            self.clock.advance(step)
            self.flush()
        return result_of(deferred)


def result_of(deferred: Deferred[Any]) -> Any:
    """The result of a fired Deferred, or its exception raised."""
    assert deferred.called, "the Deferred has not fired"
    outcome: list[Any] = []
    deferred.addBoth(outcome.append)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def sequences(writes: Iterable[tuple[ReplicaId, WriteRequest]]) -> list[tuple[str, int, int]]:
    """(replica, client id, sequence) of each write received, in order."""
    return [(replica, w.client_id, w.sequence) for replica, w in writes]


def request_ids(requests: Iterable[ClientRequest]) -> list[RequestId]:
    return [r.request_id for r in requests]
