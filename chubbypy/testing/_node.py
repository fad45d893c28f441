"""A simulated replica process: the Paxos core and applier wrapped in a simulated shell.

It plays the part the Twisted server will play (STYLE §1): it turns simulated time, messages
and disk completions into core inputs, and handles each Ready in the contract's order, with
a real delay before the disk write is durable. A crash loses whatever was not yet durable.
It also answers the simulated clients, as the master's service layer will.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import frozen

from chubbypy.master import MasterTiming
from chubbypy.namespace import NamespaceMachine
from chubbypy.paxos import (
    Applier,
    BecameMaster,
    Bug,
    ChecksumTaken,
    Limits,
    Outcome,
    OutcomeKind,
    Ready,
    Replica,
    ReplicaEvent,
    StartedServing,
    SteppedDown,
    Timing,
    describe_event,
)
from chubbypy.protocol import (
    NO_CLIENT,
    ClientId,
    Command,
    Entry,
    Envelope,
    PeerMessage,
    ReplicaId,
)
from chubbypy.store import MemoryStore
from chubbypy.testing._kv import KvMachine, parse_put, parse_put_result, put_payload
from chubbypy.testing._lock_node import SimMasterHost
from chubbypy.testing._lock_requests import LockBug, LockReply, LockRequest, LockStatus
from chubbypy.testing._registers import NamespaceRegisters, register_write
from chubbypy.testing._requests import OpKind, Reply, ReplyStatus, Request
from chubbypy.testing._world import Clock, Scheduler, SimChance

if TYPE_CHECKING:
    from chubbypy.testing._checkers import Observer


@frozen
class NodeSettings:
    """The simulated shell's settings, shared by every node of a cell."""

    members: tuple[ReplicaId, ...]
    timing: Timing
    limits: Limits
    tick_us: int
    fsync_min_us: int
    fsync_max_us: int
    snapshot_every_entries: int
    checksum_every_ticks: int
    clients_max: int
    client_results_max: int
    buggify_rate: float
    bugs: frozenset[Bug]
    namespace: bool
    """Keep the registers in the real namespace database instead of a plain dict."""
    master_timing: MasterTiming | None = None
    """Serve sessions and locks (lock clients) from the real namespace database (with the
    registers in it too when `namespace`)."""
    lock_bugs: frozenset[LockBug] = frozenset()


class SimReplica:
    """One replica process of the simulated cell."""

    def __init__(
        self,
        name: ReplicaId,
        settings: NodeSettings,
        clock: Clock,
        scheduler: Scheduler,
        observer: Observer,
        rng: random.Random,
        send_peer: Callable[[Envelope], None],
        send_reply: Callable[[ReplicaId, str, Reply | LockReply], None],
        narrate: Callable[[str], None],
        checksums_wanted: Callable[[], bool],
        entry_applied: Callable[[Entry, tuple[Outcome | ChecksumTaken, ...]], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock
        self.store = MemoryStore()
        self.alive = False
        self.lost_disk = False
        self.incarnation = 0
        self.paused_until = 0
        self._scheduler = scheduler
        self._observer = observer
        self._rng = rng
        self._send_peer = send_peer
        self._send_reply = send_reply
        self._narrate = narrate
        self._checksums_wanted = checksums_wanted
        self._entry_applied = entry_applied
        self._deferred: list[Callable[[], None]] = []
        self.write_started: Callable[[int], None] | None = None
        """A fault hook: called once, with its duration, when the next disk write starts."""

    # ------------------------------------------------------------------ life cycle

    def boot(self, *, rebuilding: bool = False) -> None:
        """Start the process (first start or restart) from what the disk holds.

        `rebuilding`: the disk was lost, so the replica must not vote until it has rebuilt.
        """
        assert not self.alive
        self.alive = True
        self.incarnation += 1
        settings = self.settings
        persisted = self.store.load()
        chance = SimChance(random.Random(self._rng.getrandbits(64)), settings.buggify_rate)
        self.core = Replica(
            self.name,
            settings.members,
            settings.timing,
            settings.limits,
            chance,
            persisted,
            settings.bugs,
            voting=not rebuilding,
        )
        self.machine: KvMachine | NamespaceRegisters | NamespaceMachine = (
            NamespaceRegisters() if settings.namespace else KvMachine()
        )
        self._host: SimMasterHost | None = None
        if settings.master_timing is not None:
            if isinstance(self.machine, NamespaceRegisters):
                database = self.machine.namespace  # registers and locks: the whole cell
            else:
                self.machine = database = NamespaceMachine("sim")
            self._host = SimMasterHost(
                self.core,
                database,
                settings.master_timing,
                self._lock_reply,
                settings.lock_bugs,
                self._propose_command,
                self._not_master_now,
            )
        self.applier = Applier(
            self.machine,
            clients_max=settings.clients_max,
            client_results_max=settings.client_results_max,
            bugs=settings.bugs,
        )
        if persisted.snapshot is not None:
            self.applier.restore(persisted.snapshot.index, persisted.snapshot.data)
        self._tick_base = self.clock.local(self._scheduler.now) // settings.tick_us
        self._fsync: Ready | None = None
        self._pending: dict[tuple[ClientId, int], Request] = {}
        self._increments: dict[str, tuple[ClientId, int]] = {}
        self._last_snapshot_index = self.applier.applied_index
        self._checksum_due = settings.checksum_every_ticks
        self._tick_event(self.incarnation)

    def resign(self) -> None:
        """A graceful stop begins: a master hands its mastership over."""
        self._run(self.incarnation, self._resign_now)

    def _resign_now(self) -> None:
        self.core.resign()

    def wipe(self) -> None:
        """The disk is lost (the process must be down)."""
        assert not self.alive
        self.store = MemoryStore()
        self.lost_disk = True

    @property
    def must_rebuild(self) -> bool:
        """Its disk was lost and nothing has been written to the new one: as `chubbypy
        serve` does with an empty store (no --bootstrap), it must rebuild before it votes,
        however many times it restarts before its first write."""
        persisted = self.store.load()
        empty = persisted.hard_state is None and persisted.snapshot is None
        return self.lost_disk and empty and not persisted.entries

    def crash(self) -> None:
        """Stop at once: in-flight disk writes, timers, and memory are lost."""
        assert self.alive
        self.alive = False
        self.incarnation += 1
        self._deferred = []
        self.paused_until = 0

    def pause(self, until: int) -> None:
        """Stall the process (a GC pause, a frozen VM) while its clock keeps running."""
        self.paused_until = max(self.paused_until, until)
        incarnation = self.incarnation
        self._scheduler.at(until, lambda: self._resume(incarnation))

    def _resume(self, incarnation: int) -> None:
        if incarnation != self.incarnation or self._scheduler.now < self.paused_until:
            return
        deferred, self._deferred = self._deferred, []
        for action in deferred:
            action()

    # ------------------------------------------------------------------ events

    def _run(self, incarnation: int, action: Callable[[], None]) -> None:
        """Run an input for this process: catch its ticks up to its clock, act, drain."""
        if incarnation != self.incarnation or not self.alive:
            return
        if self._scheduler.now < self.paused_until:
            self._deferred.append(lambda: self._run(incarnation, action))
            return
        self.catch_up_ticks()
        action()
        self._drain()

    def local_ticks(self) -> int:
        """Ticks of this process's clock since it booted, whether or not it has seen them."""
        return self.clock.local(self._scheduler.now) // self.settings.tick_us - self._tick_base

    def catch_up_ticks(self) -> None:
        """Tick the core for every tick of its clock that has passed.

        The real shell must do the same before handling any input: a process that stalled
        must not act on a lease its clock says is over.
        """
        target = self.local_ticks()
        if self.core.tick_count < target:
            self.core.tick(target - self.core.tick_count)
            self._ticked()

    def _ticked(self) -> None:
        """The master asks for a checksum every so often (Paxos Made Live §6.2)."""
        if self._host is not None:
            self._host.ticked()
        if not self.core.serving or not self._checksums_wanted():
            return
        if self.core.tick_count >= self._checksum_due:
            self._checksum_due = self.core.tick_count + self.settings.checksum_every_ticks
            self.core.request_checksum(self.core.epoch)

    def _tick_event(self, incarnation: int) -> None:
        if incarnation != self.incarnation:
            return
        self._run(incarnation, lambda: None)
        next_local = (self.clock.local(self._scheduler.now) // self.settings.tick_us + 1) * (
            self.settings.tick_us
        )
        self._scheduler.at(self.clock.true_at(next_local), lambda: self._tick_event(incarnation))

    def peer_message(self, sender: ReplicaId, message: PeerMessage) -> None:
        self._run(self.incarnation, lambda: self.core.step(sender, message))

    def client_request(self, request: Request | LockRequest) -> None:
        if isinstance(request, LockRequest):
            self._run(self.incarnation, lambda: self._lock_request_received(request))
        else:
            self._run(self.incarnation, lambda: self._request_received(request))

    # ------------------------------------------------------------------ the Ready contract

    def _drain(self) -> None:
        while self._fsync is None and self.core.has_ready():
            ready = self.core.ready()
            for envelope in ready.early:  # the Ready contract's step 0: before the write
                self._send_peer(envelope)
            if Bug.REPLY_BEFORE_PERSIST in self.settings.bugs:
                self._send(ready)
            if ready.durable.is_empty():
                self._finish(ready)
                continue
            self._fsync = ready
            delay = self._rng.randint(self.settings.fsync_min_us, self.settings.fsync_max_us)
            self._complete_write_after(delay)
            if self.write_started is not None:
                hook, self.write_started = self.write_started, None
                hook(delay)
            return

    def _complete_write_after(self, delay: int) -> None:
        incarnation = self.incarnation
        self._scheduler.after(delay, lambda: self._run(incarnation, self._fsync_done))

    def _fsync_done(self) -> None:
        ready = self._fsync
        assert ready is not None
        self._fsync = None
        self.store.persist(ready.durable)
        self._finish(ready)

    def _finish(self, ready: Ready) -> None:
        """The Ready's writes are durable: send, apply, advance."""
        if Bug.REPLY_BEFORE_PERSIST not in self.settings.bugs:
            self._send(ready)
        snapshot = ready.durable.snapshot
        if snapshot is not None and snapshot.index > self.applier.applied_index:
            self.applier.restore(snapshot.index, snapshot.data)
        for entry in ready.committed:
            self._observer.committed(self.name, entry)
            results = self.applier.apply(entry)
            self._observer.applied(self.name, entry.index, results)
            if self._entry_applied is not None:
                self._entry_applied(entry, results)
            if self._host is not None:
                self._host.applied([r for r in results if isinstance(r, Outcome)])
            for result in results:
                if isinstance(result, Outcome):
                    self._outcome(result, entry.value.epoch)
                else:
                    assert isinstance(result, ChecksumTaken)
        self.core.advance(ready)
        for event in ready.events:
            self._replica_event(event)
        self._maybe_snapshot()

    def _send(self, ready: Ready) -> None:
        for envelope in ready.messages:
            self._send_peer(envelope)

    def _maybe_snapshot(self) -> None:
        applied = self.applier.applied_index
        if applied - self._last_snapshot_index < self.settings.snapshot_every_entries:
            return
        if self.core.applied_index != applied or self.core.has_ready():
            return
        self.core.snapshot_taken(applied, self.applier.snapshot())
        self._last_snapshot_index = applied

    def _replica_event(self, event: ReplicaEvent) -> None:
        self._narrate(f"{self.name}: {describe_event(event)}")
        if isinstance(event, BecameMaster):
            self._observer.mastership(self.name, event.epoch, event.ballot)
        if isinstance(event, StartedServing) and self._host is not None:
            self._host.started(event.epoch)
        if isinstance(event, SteppedDown) and self._host is not None:
            self._host.stopped(self._lock_not_master)
        if isinstance(event, SteppedDown):
            for request in self._pending.values():
                self._reply(request, Reply(request.op_id, ReplyStatus.NOT_MASTER))
            self._pending = {}
            self._increments = {}

    # ------------------------------------------------------------------ the service

    def _lock_request_received(self, request: LockRequest) -> None:
        if self._host is None or not self._host.serving:
            self._lock_reply(request, self._lock_not_master(request))
            return
        self._host.request(request)

    def _lock_not_master(self, request: LockRequest) -> LockReply:
        return LockReply(request.op_id, LockStatus.NOT_MASTER, hint=self.core.master_hint())

    def _lock_reply(self, request: LockRequest, reply: LockReply) -> None:
        self._send_reply(self.name, request.client, reply)

    def _request_received(self, request: Request) -> None:
        assert not isinstance(self.machine, NamespaceMachine), "this lock cell has no registers"
        if request.kind is OpKind.READ:
            if self.core.can_serve_reads():
                value = self.machine.get(request.key)
                value = -1 if value is None else value
                reply = Reply(request.op_id, ReplyStatus.OK, value, self.applier.applied_index)
            else:
                reply = self._not_master(request)
            self._reply(request, reply)
            return
        if not self.core.serving:
            self._reply(request, self._not_master(request))
            return
        cached = self.applier.cached_result(request.client_id, request.sequence)
        if cached is not None and request.kind is not OpKind.REGISTER:
            index, value = parse_put_result(cached)
            self._reply(request, Reply(request.op_id, ReplyStatus.OK, value, index))
            return
        command = self._command_for(request)
        if command is None:
            self._reply(request, Reply(request.op_id, ReplyStatus.BUSY))
            return
        if request.kind is OpKind.INCREMENT:
            self._increments[request.key] = (command.client_id, command.sequence)
        if request.kind is not OpKind.REGISTER and self._host is not None and self._host.serving:
            # As on a real master: the write waits at the cache gate (see SessionHost).
            key, value = parse_put(command.payload)
            self._host.write(request, command, register_write(key, value))
            return
        self._propose_command(request, command)

    def _propose_command(self, request: Request, command: Command) -> bool:
        refused = self.core.propose([command], self.core.epoch)
        if refused is not None:
            self._reply(request, Reply(request.op_id, ReplyStatus.BUSY))
            self._increments.pop(request.key, None)
            return False
        self._pending[(command.client_id, command.sequence)] = request
        return True

    def _not_master_now(self, request: Request) -> None:
        self._increments.pop(request.key, None)
        self._reply(request, self._not_master(request))

    def _command_for(self, request: Request) -> Command | None:
        match request.kind:
            case OpKind.REGISTER:
                return Command(NO_CLIENT, request.sequence, b"")
            case OpKind.WRITE:
                payload = put_payload(request.key, request.value)
            case OpKind.INCREMENT:
                # One increment per counter in flight: the next must see this one's result.
                if request.key in self._increments:
                    return None
                assert not isinstance(self.machine, NamespaceMachine)
                payload = put_payload(request.key, (self.machine.get(request.key) or 0) + 1)
            case OpKind.READ:
                raise AssertionError("reads never reach the log")
        return Command(request.client_id, request.sequence, payload, request.sequence)

    def _outcome(self, outcome: Outcome, proposed_in: int) -> None:
        registered = outcome.kind is OutcomeKind.REGISTERED
        key = (NO_CLIENT if registered else outcome.client_id, outcome.sequence)
        # Only this mastership's own proposal frees the counter: an earlier master's, with
        # the same client and sequence, refused now (EPOCH_CHANGED), says nothing of ours
        # still in flight (found by the no-lost-update checker, 5 replicas, seed 20153).
        for counter, owner in list(self._increments.items()):
            if owner == key and proposed_in == self.core.epoch:
                del self._increments[counter]
        request = self._pending.pop(key, None)
        if request is None:
            return
        match outcome.kind:
            case OutcomeKind.APPLIED | OutcomeKind.DUPLICATE:
                index, value = parse_put_result(outcome.result)
                reply = Reply(request.op_id, ReplyStatus.OK, value, index)
            case OutcomeKind.REGISTERED:
                reply = Reply(request.op_id, ReplyStatus.OK, outcome.client_id, outcome.index)
            case OutcomeKind.EPOCH_CHANGED:
                reply = Reply(request.op_id, ReplyStatus.RETRY)
            case OutcomeKind.UNKNOWN_CLIENT | OutcomeKind.STALE_SEQUENCE:
                reply = Reply(request.op_id, ReplyStatus.INDETERMINATE)
        self._reply(request, reply)

    def _not_master(self, request: Request) -> Reply:
        return Reply(request.op_id, ReplyStatus.NOT_MASTER, hint=self.core.master_hint())

    def _reply(self, request: Request, reply: Reply) -> None:
        self._send_reply(self.name, request.client, reply)
