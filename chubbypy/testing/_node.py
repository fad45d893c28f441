"""A simulated replica process: the shipped `chubbypy.node.ReplicaNode`, with simulated time,
disk and network around it.

It plays the part the Twisted server plays in production (`chubbypy.server._shell`) and
nothing more: it turns its drifting local clock into the node's ticks, delivers peer
messages and client requests to the node, and carries out the node's outputs in order: a
`Persist` goes to a simulated disk that takes a random while (now and then a long stall)
and loses everything not yet durable if the process crashes; sends go to the simulated
network; answers go back over the client's simulated connection. Every decision (what to
persist, send, apply, answer) is the node's. A paused process's clock runs on while it
handles nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import frozen

from chubbypy.node import (
    Answer,
    ConnectionId,
    Disconnect,
    EntryApplied,
    EventHappened,
    NodeSettings,
    Note,
    Output,
    Persist,
    ReplicaNode,
    SendChecksum,
    SendPeer,
)
from chubbypy.paxos import Applier, BecameMaster, ChecksumTaken, Durable, Outcome, Replica
from chubbypy.protocol import Entry, Envelope, PeerMessage, ReplicaId
from chubbypy.protocol.client import ChecksumReport, ClientRequest, ServerReply
from chubbypy.store import MemoryStore
from chubbypy.testing._world import MILLISECOND, Clock, Scheduler, SimChance

if TYPE_CHECKING:
    from chubbypy.testing._checkers import Observer

DISK_STALL = "sim.fsync-stalls"
"""A chance site of the simulated disk: one write takes far longer than usual."""


@frozen
class DiskSettings:
    """How the simulated disk behaves."""

    fsync_min_us: int
    fsync_max_us: int
    stall_min_us: int = 50 * MILLISECOND
    stall_max_us: int = 800 * MILLISECOND
    stall_share: float = 0.1
    """Of the writes the stall site picks, the share that stall (the site is asked on every
    write: a stall every few hundred writes is plenty)."""


@frozen
class ReplicaLinks:
    """How a simulated replica reaches the rest of the simulated world."""

    send_peer: Callable[[Envelope], None]
    send_checksum: Callable[[ReplicaId, ReplicaId, ChecksumReport], None]
    """(sender, recipient, report)."""
    answer: Callable[[ReplicaId, str, ServerReply], None]
    """(replica, client, reply): over the client's connection."""
    disconnect: Callable[[ReplicaId, str], None]
    """(replica, client): the replica closed the client's connection."""
    narrate: Callable[[str], None]
    entry_applied: (
        Callable[[ReplicaId, Entry, tuple[Outcome | ChecksumTaken, ...]], None] | None
    ) = None
    """(replica, entry, results): the replica applied the entry, now."""


class SimReplica:
    """One replica process of the simulated cell; see the module docstring."""

    def __init__(
        self,
        settings: NodeSettings,
        disk: DiskSettings,
        buggify_rate: float,
        clock: Clock,
        scheduler: Scheduler,
        observer: Observer,
        rng: random.Random,
        links: ReplicaLinks,
    ) -> None:
        self.name = settings.replica_id
        self.settings = settings
        self.clock = clock
        self.store = MemoryStore()
        self.alive = False
        self.lost_disk = False
        self.joined = False
        """Started without bootstrap to join the cell (a new replica): while its store is
        empty it rebuilds at every start, as `chubbypy replica` does without --bootstrap."""
        self.incarnation = 0
        self.paused_until = 0
        self.checksum_requests = True
        self._disk = disk
        self._buggify_rate = buggify_rate
        self._scheduler = scheduler
        self._observer = observer
        self._rng = rng
        self._links = links
        self._deferred: list[Callable[[], None]] = []
        self._connections: dict[str, ConnectionId] = {}
        self._clients: dict[ConnectionId, str] = {}
        self.write_started: Callable[[int], None] | None = None
        """A fault hook: called once, with its duration, when the next disk write starts."""

    @property
    def core(self) -> Replica:
        """The node's Paxos core (for scenario tests and the lease checker)."""
        return self.node.core

    @property
    def applier(self) -> Applier:
        return self.node.applier

    # ------------------------------------------------------------------ life cycle

    def boot(self, *, rebuilding: bool = False) -> None:
        """Start the process (first start or restart) from what the disk holds.

        `rebuilding`: the disk was lost, so the replica must not vote until it has rebuilt.
        """
        assert not self.alive
        self.alive = True
        self.incarnation += 1
        self._chance = SimChance(random.Random(self._rng.getrandbits(64)), self._buggify_rate)
        self.node = ReplicaNode(self.settings, self.store.load(), self._chance,
                                rebuilding=rebuilding)  # fmt: skip
        self.node.checksum_requests = self.checksum_requests
        self._tick_base = self.clock.local(self._scheduler.now) // self.settings.tick_microseconds
        self._connections, self._clients = {}, {}
        self._run(self.incarnation, lambda: self.node.started(self.local_ticks()))
        self._tick_event(self.incarnation)

    def resign(self) -> None:
        """A graceful stop begins: a master hands its mastership over."""
        self._run(self.incarnation, lambda: self.node.resign(self.local_ticks()))

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
        return (self.lost_disk or self.joined) and empty and not persisted.entries

    def holds(self, entry: Entry) -> bool:
        """Whether this replica's disk holds `entry`'s value at its index (or a snapshot
        past it): the quorum oracle's question."""
        return self.store.holds(entry.index, entry.value)

    def crash(self) -> list[str]:
        """Stop at once: in-flight disk writes, timers, connections and memory are lost.
        The clients whose connections it had, in order."""
        assert self.alive
        self.alive = False
        self.incarnation += 1
        self._deferred = []
        self.paused_until = 0
        connected, self._connections = list(self._connections), {}
        return connected

    def pause(self, until: int) -> None:
        """Stall the process (a GC pause, a frozen VM) while its clock keeps running. A
        crashed process has nothing to stall (its restart must not inherit the stall)."""
        if not self.alive:
            return
        self.paused_until = max(self.paused_until, until)
        incarnation = self.incarnation
        self._scheduler.at(until, lambda: self._resume(incarnation))

    def stop_checksums(self) -> None:
        """From now on this replica, as master, asks for no checksums (the run falls quiet)."""
        self.checksum_requests = False
        if self.alive:
            self.node.checksum_requests = False

    def resume(self) -> None:
        """End any stall now (the faults stop): what waited for it runs."""
        self.paused_until = min(self.paused_until, self._scheduler.now)
        self._resume(self.incarnation)

    def _resume(self, incarnation: int) -> None:
        if incarnation != self.incarnation or self._scheduler.now < self.paused_until:
            return
        deferred, self._deferred = self._deferred, []
        for action in deferred:
            action()

    # ------------------------------------------------------------------ inputs

    def local_ticks(self) -> int:
        """Ticks of this process's clock since it booted, whether or not it has seen them."""
        tick_us = self.settings.tick_microseconds
        return self.clock.local(self._scheduler.now) // tick_us - self._tick_base

    def _run(self, incarnation: int, action: Callable[[], None]) -> None:
        """Deliver an input to this process (later, if it is paused), then do what it says."""
        if incarnation != self.incarnation or not self.alive:
            return
        if self._scheduler.now < self.paused_until:
            self._deferred.append(lambda: self._run(incarnation, action))
            return
        action()
        for output in self.node.take():
            self._carry_out(output)

    def _tick_event(self, incarnation: int) -> None:
        if incarnation != self.incarnation:
            return
        self._run(incarnation, lambda: self.node.ticked(self.local_ticks()))
        tick_us = self.settings.tick_microseconds
        next_local = (self.clock.local(self._scheduler.now) // tick_us + 1) * tick_us
        self._scheduler.at(self.clock.true_at(next_local), lambda: self._tick_event(incarnation))

    def peer_message(self, sender: ReplicaId, message: PeerMessage) -> None:
        self._run(self.incarnation, lambda: self._peer_message(sender, message))

    def _peer_message(self, sender: ReplicaId, message: PeerMessage) -> None:
        refused = self.node.peer_message_received(self.local_ticks(), sender, message)
        # Every replica here is correct: a message one refuses (a snapshot another took that
        # does not pass its checks) is a bug in one or the other.
        assert refused is None, refused

    def checksum_report(self, sender: ReplicaId, report: ChecksumReport) -> None:
        self._run(
            self.incarnation,
            lambda: self.node.checksum_reported(self.local_ticks(), sender, report),
        )

    def client_request(self, client: str, request: ClientRequest) -> None:
        """A request from `client`, on its connection to this process (opened if new)."""
        self._run(self.incarnation, lambda: self._request(client, request))

    def client_gone(self, client: str) -> None:
        """`client` closed its connection to this process."""
        self._run(self.incarnation, lambda: self._closed(client))

    def _request(self, client: str, request: ClientRequest) -> None:
        connection = self._connections.get(client)
        if connection is None:
            connection = ConnectionId(len(self._clients) + 1)
            self._connections[client], self._clients[connection] = connection, client
            self.node.connection_opened(connection, client)
        self.node.request_received(self.local_ticks(), connection, request)

    def _closed(self, client: str) -> None:
        connection = self._connections.pop(client, None)
        if connection is not None:
            self.node.connection_closed(self.local_ticks(), connection)

    # ------------------------------------------------------------------ outputs

    def _carry_out(self, output: Output) -> None:
        links = self._links
        match output:
            case SendPeer(envelope):
                links.send_peer(envelope)
            case Persist(durable):
                self._write(durable)
            case Answer(connection, reply):
                client = self._clients.get(connection)
                if client is not None and self._connections.get(client) == connection:
                    links.answer(self.name, client, reply)
            case SendChecksum(recipient, report):
                links.send_checksum(self.name, recipient, report)
            case Disconnect(connection):
                client = self._clients.get(connection)
                if client is not None and self._connections.get(client) == connection:
                    self._closed(client)
                    links.disconnect(self.name, client)
            case Note(_, text):
                links.narrate(text)
            case EntryApplied(entry, results):
                self._observer.committed(self.name, entry)
                self._observer.applied(self.name, entry.index, results)
                if links.entry_applied is not None:
                    links.entry_applied(self.name, entry, results)
            case EventHappened(event):
                if isinstance(event, BecameMaster):
                    self._observer.mastership(self.name, event.epoch, event.ballot)

    def _write(self, durable: Durable) -> None:
        """The simulated disk: durable after a while, unless the process dies first."""
        disk = self._disk
        delay = self._rng.randint(disk.fsync_min_us, disk.fsync_max_us)
        if self._chance.buggify(DISK_STALL) and self._rng.random() < disk.stall_share:
            delay = self._rng.randint(disk.stall_min_us, disk.stall_max_us)
        incarnation = self.incarnation

        def durable_now() -> None:
            self.store.persist(durable)
            self.node.durable_written(self.local_ticks(), delay / 1_000_000)

        self._scheduler.after(delay, lambda: self._run(incarnation, durable_now))
        if self.write_started is not None:
            hook, self.write_started = self.write_started, None
            hook(delay)
