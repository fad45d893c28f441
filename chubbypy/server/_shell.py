"""The Twisted shell around one replica: ticks, peer messages and client requests in; Readys out.

Shell side (STYLE §1, §6). It makes no protocol decisions: it turns a monotonic clock into
ticks, bytes into core inputs, and handles each Ready in the contract's order (durable on
the store thread first, then send, then apply, then advance), answering clients from what
the applier returns. Reads are answered from memory, by the master only, under its lease.

Every input first catches the core's tick count up with the clock: a process that stalled
must not act on a lease its clock says is over (see `master_lease_ticks_for`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.config import CellConfig
from chubbypy.master import MasterTiming
from chubbypy.namespace import (
    Access,
    NamespaceLimits,
    NamespaceMachine,
    access_problem,
    write_problem,
)
from chubbypy.paxos import (
    Applier,
    Chance,
    ChecksumTaken,
    Outcome,
    OutcomeKind,
    Persisted,
    Ready,
    RefusalReason,
    Replica,
    ReplicaEvent,
    Role,
    StartedServing,
    SteppedDown,
    describe_event,
)
from chubbypy.protocol import (
    MASTER_CLIENT,
    NO_CLIENT,
    ClientId,
    Command,
    Envelope,
    PeerMessage,
    ReplicaId,
)
from chubbypy.protocol.client import (
    ChecksumReport,
    ErrorReply,
    MasterLocation,
    ReadReply,
    ReadRequest,
    Registered,
    ReplicaAddress,
    ReplicaStatus,
    RequestId,
    ServerReply,
    SessionRequest,
    StatusReply,
    WriteReply,
    WriteRequest,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace_codec import decode_result, encode_write
from chubbypy.server._metrics import Registry
from chubbypy.server._sessions import SessionHost
from chubbypy.server._store_worker import StoreWorker
from chubbypy.sessions import SessionTiming

Reply = Callable[[ServerReply], None]
"""Sends a reply to the client connection that asked (a no-op once it has gone)."""

CHECKSUMS_KEPT = 64
"""Recent checksums a replica remembers, to compare with reports that arrive late."""


class PeerSender(Protocol):
    def send(self, envelope: Envelope) -> None: ...

    def send_checksum(self, recipient: ReplicaId, report: ChecksumReport) -> None: ...


@frozen
class _Waiter:
    reply: Reply
    request_id: RequestId
    registration: bool


class ReplicaServer:
    """One replica's process: the core, the namespace, and the shell around them."""

    log = Logger()

    def __init__(
        self,
        *,
        config: CellConfig,
        replica_id: ReplicaId,
        reactor: IReactorTime,
        store: StoreWorker,
        halt: Callable[[], None],
        persisted: Persisted,
        chance: Chance,
        monotonic: Callable[[], float] = time.monotonic,
        rebuilding: bool = False,
    ) -> None:
        paxos = config.paxos
        self.config = config
        self.replica_id = replica_id
        self._reactor = reactor
        self._store = store
        self._halt = halt
        self._monotonic = monotonic
        self._tick_seconds = paxos.tick_seconds
        self._started = monotonic()
        self.core = Replica(
            replica_id,
            config.replica_ids,
            paxos.timing(),
            paxos.limits(),
            chance,
            persisted,
            voting=not rebuilding,
        )
        limits = NamespaceLimits(file_bytes_max=config.limits.file_bytes_max)
        self.machine = NamespaceMachine(config.cell, limits)
        self.applier = Applier(
            self.machine,
            clients_max=paxos.clients_max,
            client_results_max=paxos.client_results_max,
        )
        if persisted.snapshot is not None:
            self.applier.restore(persisted.snapshot.index, persisted.snapshot.data)
        self._last_checkpoint = self.applier.applied_index
        self.sessions = SessionHost(
            self.core, self.machine, _master_timing(config), _handle_key(config),
            paxos.tick_seconds, self._propose_client,
        )  # fmt: skip
        self._peers: PeerSender | None = None
        self._writing: Ready | None = None
        self._pending: dict[tuple[ClientId, int], list[_Waiter]] = {}
        self._checksums: OrderedDict[int, bytes] = OrderedDict()
        self._reports: dict[int, dict[ReplicaId, bytes]] = {}
        self._checksum_due = paxos.checksum_every_ticks()
        self.divergence: str | None = None
        """Set, and never cleared, when a peer's checksum differs from ours at some index."""
        self.metrics = Registry()
        self._define_metrics()
        self._ticker = LoopingCall(self._ticked)
        self._ticker.clock = reactor

    # ------------------------------------------------------------------ life cycle

    def wire(self, peers: PeerSender) -> None:
        self._peers = peers

    def start(self) -> None:
        self.log.info(
            "{replica} starts: chosen through {chosen}, applied through {applied}{mode}",
            replica=self.replica_id,
            chosen=self.core.status().chosen_index,
            applied=self.applier.applied_index,
            mode="" if self.core.status().voting else " (rebuilding: not voting yet)",
        )
        if self.config.auth.handle_key is None:
            self.log.warn(
                "{replica}: no auth.handle_key in {source}: handles' check digits come from "
                "the cell's name, so anyone who knows it can forge a handle",
                replica=self.replica_id,
                source=self.config.source or "the cell file",
            )
        self._ticker.start(self._tick_seconds, now=False)
        self._drain()

    def stop(self) -> Deferred[None]:
        """A graceful stop: hand over mastership, let the hand-over reach the peers, stop."""
        if self._ticker.running:
            self._ticker.stop()
        if self.core.resign():
            self.log.info("{replica} resigns to hand mastership over", replica=self.replica_id)
        self._drain()
        # Give the reactor a moment to write the Resign messages before the sockets close.
        return deferLater(self._reactor, 0.1, lambda: None)

    # ------------------------------------------------------------------ inputs

    def _input(self, action: Callable[[], object]) -> None:
        self._catch_up()
        action()
        self._drain()

    def _catch_up(self) -> None:
        due = int((self._monotonic() - self._started) / self._tick_seconds)
        if due > self.core.tick_count:
            self.core.tick(due - self.core.tick_count)
            self._ticked_checks()

    def _ticked(self) -> None:
        self._input(lambda: None)

    def _ticked_checks(self) -> None:
        """The master asks every replica to checksum its state now and then (PML §6.2)."""
        self.sessions.ticked()
        if self.core.serving and self.core.tick_count >= self._checksum_due:
            self._checksum_due = self.core.tick_count + self.config.paxos.checksum_every_ticks()
            self.core.request_checksum(self.core.epoch)

    def peer_message(self, sender: ReplicaId, message: PeerMessage) -> None:
        self._input(lambda: self.core.step(sender, message))

    def register(self, reply: Reply, request_id: RequestId, nonce: int) -> None:
        command = Command(NO_CLIENT, nonce, b"")
        self._input(lambda: self._propose(reply, request_id, command, registration=True))

    def session_call(
        self, reply: Reply, request: SessionRequest, connection: int, principal: str
    ) -> None:
        """A session, handle or lock call (the master's session service answers it)."""
        self._input(
            lambda: self.sessions.call(
                reply, request.request_id, request.call, connection, principal
            )
        )

    def connection_closed(self, connection: int) -> None:
        self._input(lambda: self.sessions.connection_closed(connection))

    def write(self, reply: Reply, request: WriteRequest, principal: str) -> None:
        self._input(lambda: self._write(reply, request, principal))

    def _write(self, reply: Reply, request: WriteRequest, principal: str) -> None:
        if request.client_id == MASTER_CLIENT:
            reply(self._error(request.request_id, ErrorCode.UNKNOWN_CLIENT, "a reserved id"))
            return
        if self.core.serving and (
            denied := write_problem(self.machine.tree, principal, request.write)
        ):
            reply(self._error(request.request_id, denied.code, denied.message))
            return
        cached = self.applier.cached_result(ClientId(request.client_id), request.sequence)
        if cached is not None and self.core.serving:
            # A retry of a write already applied: its original result, at once.
            self._ops.inc(op="write")
            reply(WriteReply(request.request_id, self.applier.applied_index, decode_result(cached)))  # type: ignore[arg-type]
            return
        command = Command(
            ClientId(request.client_id),
            request.sequence,
            encode_write(request.write),
            request.first_unacked,
        )
        # While this replica is master, the write waits at the cache gate until every
        # cached copy it makes stale was invalidated (usually: not at all).
        if not self.sessions.write(reply, request.request_id, command, request.write):
            self._propose(reply, request.request_id, command, registration=False)

    def _propose_client(self, reply: Reply, request_id: RequestId, command: Command) -> bool:
        return self._propose(reply, request_id, command, registration=False)

    def _propose(
        self, reply: Reply, request_id: RequestId, command: Command, *, registration: bool
    ) -> bool:
        """Propose one client command; False if the core refused it (answered already)."""
        refused = self.core.propose([command], self.core.epoch)
        if refused is not None:
            code = _REFUSALS[refused.reason]
            reply(self._error(request_id, code, refused.reason.value))
            return False
        key = (command.client_id, command.sequence)
        self._pending.setdefault(key, []).append(_Waiter(reply, request_id, registration))
        self._proposals.inc()
        return True

    def read(self, request: ReadRequest, principal: str) -> ServerReply:
        self._catch_up()
        if not self.core.can_serve_reads():
            return self._error(request.request_id, ErrorCode.NOT_MASTER, "not the master")
        self._ops.inc(op="read")
        tree = self.machine.tree
        denied = access_problem(tree, principal, request.read.path, Access.READ)
        if denied is not None:
            return self._error(request.request_id, denied.code, denied.message)
        result = self.machine.read(request.read)
        return ReadReply(request.request_id, self.applier.applied_index, result)

    def locate(self, request_id: RequestId) -> MasterLocation:
        self._catch_up()
        addresses = tuple(ReplicaAddress(r.id, r.client) for r in self.config.replicas)
        epoch = self.core.epoch or self.applier.epoch
        return MasterLocation(request_id, self._master(), epoch, addresses)

    def status(self, request_id: RequestId) -> StatusReply:
        self._catch_up()
        return StatusReply(request_id, self.replica_status())

    def replica_status(self) -> ReplicaStatus:
        s = self.core.status()
        remaining = max(0, s.lease_expiry_tick - s.tick) if s.lease_valid else 0
        return ReplicaStatus(
            replica_id=self.replica_id,
            role=s.role.value,
            epoch=s.epoch or self.applier.epoch,
            promised=str(s.promised),
            chosen_index=s.chosen_index,
            applied_index=s.applied_index,
            first_index=s.first_index,
            last_index=s.last_index,
            snapshot_index=s.snapshot_index,
            serving=s.serving,
            lease_valid=s.lease_valid,
            lease_remaining_ms=int(remaining * self._tick_seconds * 1000),
            master_hint=self._master(),
            uptime_ms=int((self._monotonic() - self._started) * 1000),
        )

    def _master(self) -> ReplicaId | None:
        if self.core.serving:
            return self.replica_id
        hint = self.core.master_hint()
        return hint if hint != self.replica_id else None

    def _error(self, request_id: RequestId, code: ErrorCode, message: str) -> ErrorReply:
        self._errors.inc(code=code.name.lower())
        hint = self._master() if code is ErrorCode.NOT_MASTER else None
        return ErrorReply(request_id, code, message, hint)

    # ------------------------------------------------------------------ the Ready contract

    def _drain(self) -> None:
        while self._writing is None and self.core.has_ready():
            ready = self.core.ready()
            if self._peers is not None:
                for envelope in ready.early:  # the Ready contract's step 0: before the write
                    self._peers.send(envelope)
            if ready.durable.is_empty():
                self._finish(ready)
                continue
            self._writing = ready
            written = self._store.persist(ready.durable)
            written.addCallbacks(self._written, self._write_failed)
            return

    def _written(self, seconds: float) -> None:
        ready = self._writing
        assert ready is not None
        self._writing = None
        self._fsync_seconds.observe(seconds)
        self._finish(ready)
        self._catch_up()
        self._drain()

    def _write_failed(self, failure: TwistedFailure) -> None:
        # A write that failed may or may not be on the disk: continuing could break a
        # promise. Stop; the replica recovers from its log when it restarts.
        self.log.failure("{replica}: the store failed; stopping", failure, replica=self.replica_id)
        self._halt()

    def _finish(self, ready: Ready) -> None:
        """The Ready's writes are durable: send, apply, advance."""
        if self._peers is not None:
            for envelope in ready.messages:
                self._peers.send(envelope)
        snapshot = ready.durable.snapshot
        if snapshot is not None and snapshot.index > self.applier.applied_index:
            self.applier.restore(snapshot.index, snapshot.data)
        for entry in ready.committed:
            self._batch_commands.observe(len(entry.value.commands))
            results = self.applier.apply(entry)
            for result in results:
                if isinstance(result, Outcome):
                    self._outcome(result)
                else:
                    self._checksum_taken(result)
            self.sessions.applied([r for r in results if isinstance(r, Outcome)])
        self.core.advance(ready)
        for event in ready.events:
            self._event(event)
        self._maybe_checkpoint()

    def _outcome(self, outcome: Outcome) -> None:
        registration = outcome.kind is OutcomeKind.REGISTERED
        key = (NO_CLIENT if registration else outcome.client_id, outcome.sequence)
        for waiter in self._pending.pop(key, []):
            waiter.reply(self._reply_for(waiter, outcome))

    def _reply_for(self, waiter: _Waiter, outcome: Outcome) -> ServerReply:
        match outcome.kind:
            case OutcomeKind.REGISTERED:
                return Registered(waiter.request_id, outcome.client_id)
            case OutcomeKind.APPLIED | OutcomeKind.DUPLICATE:
                self._ops.inc(op="write")
                result = decode_result(outcome.result)
                return WriteReply(waiter.request_id, outcome.index, result)  # type: ignore[arg-type]
            case OutcomeKind.EPOCH_CHANGED:
                return self._error(waiter.request_id, ErrorCode.EPOCH_CHANGED, "retry")
            case OutcomeKind.UNKNOWN_CLIENT:
                return self._error(waiter.request_id, ErrorCode.UNKNOWN_CLIENT, "register again")
            case OutcomeKind.STALE_SEQUENCE:
                return self._error(waiter.request_id, ErrorCode.STALE_REQUEST, "result forgotten")
        raise AssertionError(outcome.kind)

    def _event(self, event: ReplicaEvent) -> None:
        self.log.info("{replica}: {what}", replica=self.replica_id, what=describe_event(event))
        if isinstance(event, StartedServing):
            self.sessions.started(event.epoch)
        if isinstance(event, SteppedDown):
            self.sessions.stopped()
            # Whatever was in flight may still be chosen; the clients retry elsewhere with the
            # same (client, sequence), and the cell applies each once.
            for waiters in self._pending.values():
                for waiter in waiters:
                    waiter.reply(
                        self._error(waiter.request_id, ErrorCode.NOT_MASTER, "stepped down")
                    )
            self._pending = {}

    def _maybe_checkpoint(self) -> None:
        applied = self.applier.applied_index
        if applied - self._last_checkpoint < self.config.paxos.snapshot_every_entries:
            return
        if self.core.applied_index != applied or self.core.has_ready() or self._writing:
            return
        self.core.snapshot_taken(applied, self.applier.snapshot())
        self._last_checkpoint = applied

    # ------------------------------------------------------------------ checksums (PML §6.2)

    def _checksum_taken(self, taken: ChecksumTaken) -> None:
        self._checksums[taken.index] = taken.checksum
        while len(self._checksums) > CHECKSUMS_KEPT:
            self._checksums.popitem(last=False)
        master = self.core.master_hint()
        if self.core.status().role is not Role.MASTER and master and self._peers:
            self._peers.send_checksum(master, ChecksumReport(taken.index, taken.checksum))
        for sender, checksum in self._reports.pop(taken.index, {}).items():
            self._compare(sender, taken.index, checksum)

    def checksum_reported(self, sender: ReplicaId, report: ChecksumReport) -> None:
        """A peer's checksum at `report.index`: compare now, or when we get there."""
        if report.index in self._checksums:
            self._compare(sender, report.index, report.checksum)
        elif report.index > self.applier.applied_index and len(self._reports) < CHECKSUMS_KEPT:
            self._reports.setdefault(report.index, {})[sender] = report.checksum

    def _compare(self, sender: ReplicaId, index: int, checksum: bytes) -> None:
        self._checksums_compared.inc()
        mine = self._checksums[index]
        if checksum == mine:
            return
        self._mismatches.inc()
        self.divergence = (
            f"at index {index} {sender}'s state checksum is {checksum.hex()}, "
            f"{self.replica_id}'s is {mine.hex()}"
        )
        self.log.critical(
            "{replica}: REPLICAS DIVERGED: {d}", replica=self.replica_id, d=self.divergence
        )

    # ------------------------------------------------------------------ metrics

    def _define_metrics(self) -> None:
        m = self.metrics
        status = self.core.status
        m.gauge(
            "chubbypy_role",
            "1 for this replica's current role.",
            lambda: [((("role", r.value),), float(status().role is r)) for r in Role],
        )
        for name, help_text, read in (
            (
                "chubbypy_epoch",
                "The current mastership's epoch.",
                lambda: float(self.applier.epoch),
            ),
            (
                "chubbypy_chosen_index",
                "Highest log index known chosen.",
                lambda: float(status().chosen_index),
            ),
            (
                "chubbypy_applied_index",
                "Highest log index applied.",
                lambda: float(self.applier.applied_index),
            ),
            (
                "chubbypy_first_index",
                "Lowest log index still kept.",
                lambda: float(status().first_index),
            ),
            (
                "chubbypy_lease_valid",
                "1 if this replica holds a valid master lease.",
                lambda: float(status().lease_valid),
            ),
            (
                "chubbypy_voting",
                "0 while the replica rebuilds a lost disk.",
                lambda: float(status().voting),
            ),
            (
                "chubbypy_queued_commands",
                "Commands waiting for the pipeline window.",
                lambda: float(status().queued_commands),
            ),
            (
                "chubbypy_sessions",
                "Live sessions the master's session service holds (0 on other replicas).",
                lambda: float(self.sessions.sessions),
            ),
            (
                "chubbypy_cached_names",
                "(session, name) pairs the master will invalidate before a change.",
                lambda: float(self.sessions.cache_cost[0]),
            ),
            (
                "chubbypy_writes_awaiting_invalidation",
                "Writes held until the sessions caching what they change acknowledged.",
                lambda: float(self.sessions.cache_cost[1]),
            ),
        ):
            m.gauge(name, help_text, _scalar(read))
        self._proposals = m.counter("chubbypy_proposals_total", "Client commands proposed.")
        self._ops = m.counter(
            "chubbypy_client_operations_total", "Client operations done.", labelled=True
        )
        self._errors = m.counter(
            "chubbypy_client_errors_total", "Client requests refused, by code.", labelled=True
        )
        self._checksums_compared = m.counter(
            "chubbypy_checksum_comparisons_total", "State checksums compared with a peer's."
        )
        self._mismatches = m.counter(
            "chubbypy_checksum_mismatches_total", "State checksums that differed from a peer's."
        )
        self._fsync_seconds = m.histogram(
            "chubbypy_fsync_seconds",
            "Time to make one Ready durable (one transaction, one fsync).",
            (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
        )
        self._batch_commands = m.histogram(
            "chubbypy_batch_commands",
            "Commands per applied log entry.",
            (0, 1, 2, 4, 8, 16, 32, 64, 128),
        )


def _scalar(
    read: Callable[[], float],
) -> Callable[[], list[tuple[tuple[tuple[str, str], ...], float]]]:
    return lambda: [((), read())]


_REFUSALS: dict[RefusalReason, ErrorCode] = {
    RefusalReason.NOT_MASTER: ErrorCode.NOT_MASTER,
    RefusalReason.EPOCH_CHANGED: ErrorCode.EPOCH_CHANGED,
    RefusalReason.OVERLOADED: ErrorCode.BUSY,
    RefusalReason.TOO_LARGE: ErrorCode.TOO_LARGE,
}


def _master_timing(config: CellConfig) -> MasterTiming:
    """The session service's durations in ticks, from the `sessions:` and `paxos:` sections."""
    sessions, paxos = config.sessions, config.paxos
    tick = paxos.tick_seconds
    lease_ticks = int(sessions.lease_seconds / tick + 1e-9)
    drift = paxos.clock_drift_max
    # A new master's whole lease must outlast any its predecessor granted, on any clocks
    # within the drift bound: stretch it by 2e/(1-e) (and a tick for rounding).
    extra = int(lease_ticks * 2 * drift / (1 - drift)) + 1
    return MasterTiming(
        SessionTiming(
            lease_ticks=lease_ticks,
            answer_before_ticks=max(1, int(sessions.keepalive_answer_before_seconds / tick)),
            failover_extra_ticks=extra,
            events_pending_max=sessions.events_pending_max,
        ),
        tick_microseconds=round(tick * 1_000_000),
        waiters_max=sessions.lock_waiters_max,
    )


def _handle_key(config: CellConfig) -> bytes:
    """The key of handles' check digits, the same on every replica of the cell: derived from
    the configured secret ``auth.handle_key``. Without one, from the cell's name, which stops
    accidental misuse (a handle of another cell, or altered bytes) but not a forger who
    knows the name; the replica warns at start."""
    secret = config.auth.handle_key
    material = f"chubbypy handles of cell {config.cell}" + ("" if secret is None else secret)
    return hashlib.blake2b(material.encode(), digest_size=32).digest()
