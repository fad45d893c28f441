"""The Twisted driver of one replica node: a clock, sockets and a store thread around it.

Shell side (STYLE §1, §6). It makes no protocol decisions: `chubbypy.node.ReplicaNode` does.
It turns the monotonic clock into the node's ticks, delivers peer messages, client requests
and durable writes to the node, and carries out the node's outputs in the order given: a
`Persist` goes to the store thread (the node waits for `durable_written`), sends go to the
peer connections, answers to the client connection that asked.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure as TwistedFailure

from chubbypy.config import CellConfig
from chubbypy.node import (
    Answer,
    ConnectionId,
    Disconnect,
    EntryApplied,
    EventHappened,
    Note,
    NoteLevel,
    Output,
    Persist,
    ReplicaNode,
    SendChecksum,
    SendPeer,
)
from chubbypy.paxos import Chance, ForeignHistory, Persisted, persisted_problem
from chubbypy.protocol import Envelope, Membership, PeerMessage, ReplicaId
from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.client import ChecksumReport, ClientRequest, ServerReply
from chubbypy.server._store_worker import StoreWorker
from chubbypy.store import StoreError


class PeerSender(Protocol):
    def send(self, envelope: Envelope) -> None: ...

    def send_checksum(self, recipient: ReplicaId, report: ChecksumReport) -> None: ...

    def members_changed(self, membership: Membership | None) -> None:
        """Dial, and admit, the members of `membership` (None: the cell file's replicas,
        while this replica does not know the membership yet)."""
        ...


class ClientLink(Protocol):
    """A client connection, as the driver needs it."""

    def reply(self, message: ServerReply) -> None: ...

    def disconnect(self) -> None: ...


class ReplicaServer:
    """One replica's process: the node, and the Twisted parts around it."""

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
        self.config = config
        self.replica_id = replica_id
        self._reactor = reactor
        self._store = store
        self._halt = halt
        self._monotonic = monotonic
        self._tick_seconds = config.paxos.tick_seconds
        self._started = monotonic()
        self.node = _resumed_node(config, replica_id, persisted, chance, rebuilding)
        self.failed = False
        """Whether the store failed and the replica stopped (its process exits non-zero)."""
        self._peers: PeerSender | None = None
        self._membership_seen: Membership | None = None
        """The membership the peer network was last told of."""
        self._clients: dict[ConnectionId, ClientLink] = {}
        self._connection_ids = itertools.count(1)
        self._ticker = LoopingCall(self._ticked)
        self._ticker.clock = reactor

    def wire(self, peers: PeerSender) -> None:
        self._peers = peers

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        if self.config.auth.handle_key is None:
            self.log.warn(
                "{replica}: no auth.handle_key in {source}: handles' check digits come from "
                "the cell's name, so anyone who knows it can forge a handle",
                replica=self.replica_id,
                source=self.config.source or "the cell file",
            )
        self._ticker.start(self._tick_seconds, now=False)
        self.node.started(self._now())
        self._carry_out()

    def stop(self) -> Deferred[None]:
        """A graceful stop: hand mastership over, let the hand-over reach the peers, stop."""
        if self._ticker.running:
            self._ticker.stop()
        self.node.resign(self._now())
        self._carry_out()
        # Give the reactor a moment to write the Resign messages before the sockets close.
        return deferLater(self._reactor, 0.1, lambda: None)

    # ------------------------------------------------------------------ inputs

    def _now(self) -> int:
        """The node's local time: whole ticks of the monotonic clock since the start."""
        return int((self._monotonic() - self._started) / self._tick_seconds)

    def _ticked(self) -> None:
        try:
            self.node.ticked(self._now())
        except ForeignHistory as error:
            self._foreign(error)
            return
        self._carry_out()

    def peer_message(self, sender: ReplicaId, message: PeerMessage) -> str | None:
        """A peer's Paxos message. Returns why it was refused, unused (the caller closes the
        connection it came on), or None."""
        try:
            refused = self.node.peer_message_received(self._now(), sender, message)
        except ForeignHistory as error:
            self._foreign(error)
            return None
        self._carry_out()
        return refused

    def _foreign(self, error: ForeignHistory) -> None:
        """This replica's store is not this cell's history: stop, saying what to do."""
        self.log.critical(
            "{replica}: stopping: {error}. Its store is another history's: another cell's, "
            "or it was started with --bootstrap by mistake. Stop it, empty its data "
            "directory, and start it without --bootstrap (it then joins from its peers)",
            replica=self.replica_id,
            error=error,
        )
        self.failed = True
        self._halt()

    def checksum_reported(self, sender: ReplicaId, report: ChecksumReport) -> None:
        self.node.checksum_reported(self._now(), sender, report)
        self._carry_out()

    def connection_opened(self, link: ClientLink, peer: str) -> ConnectionId:
        """A client connection (from `peer`) said hello: its id for the requests that follow."""
        connection = ConnectionId(next(self._connection_ids))
        self._clients[connection] = link
        self.node.connection_opened(connection, peer)
        return connection

    def request(self, connection: ConnectionId, request: ClientRequest) -> None:
        self.node.request_received(self._now(), connection, request)
        self._carry_out()

    def connection_closed(self, connection: ConnectionId) -> None:
        if self._clients.pop(connection, None) is not None:
            self.node.connection_closed(self._now(), connection)
            self._carry_out()

    def _written(self, seconds: float) -> None:
        self.node.durable_written(self._now(), seconds)
        self._carry_out()

    def _write_failed(self, failure: TwistedFailure) -> None:
        # A write that failed may or may not be on the disk: continuing could break a
        # promise. Stop; the replica recovers from its log when it restarts.
        self.log.failure("{replica}: the store failed; stopping", failure, replica=self.replica_id)
        self.failed = True
        self._halt()

    # ------------------------------------------------------------------ outputs

    def _carry_out(self) -> None:
        for output in self.node.take():
            self._do(output)
        core = self.node.core
        if core.anchored and core.membership is not self._membership_seen:
            self._members_changed(core.membership)

    def _members_changed(self, membership: Membership) -> None:
        """The membership changed (or became known): the peers follow it."""
        previous, self._membership_seen = self._membership_seen, membership
        if self._peers is not None:
            self._peers.members_changed(membership)
        member = membership.member(self.replica_id)
        was_member = previous is not None and previous.member(self.replica_id) is not None
        if member is None and (was_member or previous is None):
            self.log.warn(
                "{replica}: removed from cell {cell} at membership version {version}: it no "
                "longer votes or campaigns (an operator may add it back as a learner)",
                replica=self.replica_id,
                cell=self.config.cell,
                version=membership.version,
            )

    def _do(self, output: Output) -> None:
        match output:
            case SendPeer(envelope):
                if self._peers is not None:
                    self._peers.send(envelope)
            case Persist(durable):
                self._store.persist(durable).addCallbacks(self._written, self._write_failed)
            case Answer(connection, reply):
                client = self._clients.get(connection)
                if client is not None:
                    client.reply(reply)
            case SendChecksum(recipient, report):
                if self._peers is not None:
                    self._peers.send_checksum(recipient, report)
            case Disconnect(connection):
                client = self._clients.get(connection)
                if client is not None:
                    client.disconnect()
            case Note(level, text):
                self._note(level, text)
            case EntryApplied() | EventHappened():
                pass  # for observers; the events' Notes say what happened

    def _note(self, level: NoteLevel, text: str) -> None:
        match level:
            case NoteLevel.INFO:
                self.log.info("{text}", text=text)
            case NoteLevel.WARN:
                self.log.warn("{text}", text=text)
            case NoteLevel.CRITICAL:
                self.log.critical("{text}", text=text)


def _resumed_node(
    config: CellConfig,
    replica_id: ReplicaId,
    persisted: Persisted,
    chance: Chance,
    rebuilding: bool,
) -> ReplicaNode:
    """The node, resumed from what its store loaded; StoreError if it cannot resume from it
    (a damaged disk: a chosen entry missing, a value out of range, a snapshot that does not
    restore), so the process refuses to start with one clear line instead of crashing."""
    problem = persisted_problem(persisted)
    if problem is not None:
        raise StoreError(f"the store is damaged: {problem}")
    try:
        return ReplicaNode(
            config.node_settings(replica_id), persisted, chance, rebuilding=rebuilding
        )
    except DecodeError as error:  # only the snapshot is decoded here
        index = persisted.snapshot.index if persisted.snapshot else "?"
        raise StoreError(
            f"the store is damaged: its snapshot at index {index} does not restore: {error}"
        ) from error
