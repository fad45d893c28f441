"""Applies committed log entries to a state machine: epoch guard, exactly-once, checksums.

Pure. The shell hands every committed entry, in log order, to `Applier.apply`; the applier
returns one `Outcome` per command. It owns the replicated bookkeeping that every state
machine needs and that must be part of its snapshot:

* the **current epoch**, the highest of the EPOCH_START entries applied. A batch proposed
  under any other epoch is refused as a whole (Paxos Made Live §5.3, §7: an operation must
  fail if its master lost mastership, or lost and regained it, between receiving it and
  committing it);
* the **client table** for exactly-once commands (as in the Raft thesis §6.3): per
  registered client, the results of its recent sequence numbers, so a retry after a
  fail-over gets the original result instead of applying twice. It holds at most
  `clients_max` clients; a registration past that evicts the least recently used one, the
  client whose last appearance in the log is oldest (ties within one entry: the lowest
  id). Every replica applies the same log, so every replica evicts the same client. The
  table is kept in that order (an `OrderedDict`, the oldest first), so an eviction costs
  O(1) and a use O(1) (plus sorting the few clients of one entry), never a scan: a flood
  of registrations costs each replica the same per registration at 100,000 clients as at
  100. A registration's payload is its *owner*, the principal that made it (UTF-8; empty
  in entries from before owners were recorded): the table keeps it, and a registration
  with a nonce it knows is answered with that client and its owner, for the node to hand
  the client's id and credential only to that owner (nonces are in the log, which whoever
  reads a replica's store sees: issue 13's review);
* **checksums** on demand (CHECKSUM entries), of the whole replicated state.

Commands of `MASTER_CLIENT`, the master's own decisions, skip the client table.
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from typing import Any, Protocol

import msgpack
from attrs import define, field, frozen

from chubbypy.paxos._chance import Bug
from chubbypy.protocol import (
    EPOCH_MAX,
    MASTER_CLIENT,
    NO_CLIENT,
    NO_EPOCH,
    NO_INDEX,
    ClientId,
    Command,
    Entry,
    Epoch,
    LogIndex,
    ValueKind,
)
from chubbypy.protocol._plain import DecodeError, array, binary, bounded, uint64, unpack


class StateMachine(Protocol):
    """What the replicated log drives: deterministic, and serialisable for snapshots."""

    def apply(self, index: LogIndex, payload: bytes) -> tuple[bytes, object]:
        """Apply one command's payload. Returns its result, which must be deterministic (every
        replica's must be equal: it is replicated in the client table and compared), and what
        the machine tells its host about the command (`Outcome.effect`; None if nothing)."""
        ...

    def snapshot(self) -> bytes:
        """The whole state as bytes."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a `snapshot`'s bytes; DecodeError, and no change, for
        bytes that `snapshot_problem` finds wrong."""
        ...

    def snapshot_problem(self, data: bytes) -> str | None:
        """Why `data` is not a snapshot this machine could restore (decoded and checked
        whole, as `restore` would), or None; changes nothing."""
        ...

    def checksum(self) -> bytes:
        """A digest of the state, equal on replicas with equal state."""
        ...


class OutcomeKind(enum.Enum):
    APPLIED = "applied"
    """Applied now; `result` is what the state machine returned."""
    DUPLICATE = "duplicate"
    """Applied earlier; `result` is the original result."""
    REGISTERED = "registered"
    """A registration: `client_id` is the client's id (the same for a retried registration)."""
    EPOCH_CHANGED = "epoch changed"
    """Not applied: proposed under an epoch that was no longer current."""
    UNKNOWN_CLIENT = "unknown client"
    """Not applied: the client is not registered (or was evicted); it must register again."""
    STALE_SEQUENCE = "stale sequence"
    """Not applied: the sequence is below what the client acknowledged, or its result is gone."""


@frozen
class Outcome:
    """What became of one command at one log index."""

    index: LogIndex
    kind: OutcomeKind
    client_id: ClientId
    sequence: int
    result: bytes = b""
    effect: object = field(default=None, eq=False, repr=False)
    """For a command APPLIED now: what the state machine told its host about it (for the
    namespace, the decoded write and the names it changed: `chubbypy.namespace.AppliedWrite`).
    Memory only: not compared between replicas, and not part of any snapshot."""
    evicted: ClientId = NO_CLIENT
    """For a new registration: the client it evicted to make room (`NO_CLIENT`: none). The
    same on every replica; a node uses it to stop counting that client against whoever
    registered it (`chubbypy.node`'s registration limits)."""
    owner: bytes = b""
    """For a registration: the owner of the client it names (the principal that first
    registered its nonce), which alone may be told the client's id."""


@frozen
class ChecksumTaken:
    """The state's checksum at a CHECKSUM entry: equal on every replica, or something is wrong."""

    index: LogIndex
    checksum: bytes


@define
class _Client:
    results: dict[int, bytes]
    """Results of applied sequences the client may still retry."""
    last_index: LogIndex
    """Where the client last appeared in the log: its place in the eviction order."""
    low_water: int = 0
    """Every sequence below this that is not in `results` may have been applied: a result
    was dropped, because the client acknowledged it or because too many were kept."""
    nonce: int = 0
    """The registration's nonce: a retried registration gets this client again."""
    owner: bytes = b""
    """The principal that registered it (its registration's payload; empty before owners
    were recorded): only its retries get this client (see the module docstring)."""


class Applier:
    """Applies committed entries to `machine`; see the module docstring."""

    def __init__(
        self,
        machine: StateMachine,
        *,
        clients_max: int,
        client_results_max: int,
        bugs: frozenset[Bug] = frozenset(),
    ) -> None:
        assert clients_max >= 1, clients_max
        assert client_results_max >= 1, client_results_max
        self._machine = machine
        self._clients_max = clients_max
        self._client_results_max = client_results_max
        self._bugs = bugs
        self._applied_index = NO_INDEX
        self._epoch = NO_EPOCH
        self._next_client_id = 1
        self._clients: OrderedDict[ClientId, _Client] = OrderedDict()
        """Every live client, least recently used first: in (last_index, client id) order
        between entries (see `_touch` and `_entry_applied`)."""
        self._registrations: dict[int, ClientId] = {}
        """Nonce of each live client's registration, so a retried registration is idempotent."""
        self._touched: list[ClientId] = []
        """Clients that appeared in the entry being applied, in order of appearance."""

    @property
    def applied_index(self) -> LogIndex:
        return self._applied_index

    @property
    def epoch(self) -> Epoch:
        """The epoch of the last EPOCH_START applied."""
        return self._epoch

    def apply(self, entry: Entry) -> tuple[Outcome | ChecksumTaken, ...]:
        """Apply the next committed entry."""
        assert entry.index == self._applied_index + 1, (entry.index, self._applied_index)
        self._applied_index = entry.index
        value = entry.value
        match value.kind:
            case ValueKind.NOOP:
                return ()
            case ValueKind.EPOCH_START:
                # A later master may adopt the EPOCH_START of a mastership that never got
                # it chosen (a failed master's leftover), after a newer epoch began. That
                # mastership never served; its start changes nothing.
                self._epoch = max(self._epoch, value.epoch)
                return ()
            case ValueKind.CHECKSUM:
                return (ChecksumTaken(entry.index, self.checksum()),)
            case ValueKind.MEMBERSHIP:
                # The Paxos core keeps the membership (it counts quorums by it, from the
                # chosen log and the snapshot's handle); the state machine has no part in it.
                return ()
            case ValueKind.COMMANDS:
                if value.epoch != self._epoch and Bug.SKIP_EPOCH_CHECK not in self._bugs:
                    return tuple(
                        Outcome(entry.index, OutcomeKind.EPOCH_CHANGED, c.client_id, c.sequence)
                        for c in value.commands
                    )
                assert not self._touched, self._touched
                outcomes = tuple(self._apply_command(entry.index, c) for c in value.commands)
                self._entry_applied()
                return outcomes
        raise AssertionError(value.kind)

    def cached_result(self, client_id: ClientId, sequence: int) -> bytes | None:
        """The result of an applied command still remembered, for a retry answered at once."""
        client = self._clients.get(client_id)
        return None if client is None else client.results.get(sequence)

    def registered_client(self, nonce: int) -> tuple[ClientId, bytes] | None:
        """The client a registration with `nonce` made, and its owner, while the table keeps
        it: a retried registration is answered at once, at no cost to the log (with the
        client if it comes from the owner)."""
        client_id = self._registrations.get(nonce)
        return None if client_id is None else (client_id, self._clients[client_id].owner)

    def _apply_command(self, index: LogIndex, command: Command) -> Outcome:
        if command.client_id == NO_CLIENT:
            return self._register(index, command)
        if command.client_id == MASTER_CLIENT:
            # The master's own decision: no client retries it, so no table (see
            # MASTER_CLIENT); it is still refused with the batch if the epoch changed.
            result, effect = self._machine.apply(index, command.payload)
            return Outcome(
                index, OutcomeKind.APPLIED, MASTER_CLIENT, command.sequence, result, effect
            )
        client = self._clients.get(command.client_id)
        if client is None:
            return Outcome(index, OutcomeKind.UNKNOWN_CLIENT, command.client_id, command.sequence)
        self._touch(command.client_id, client, index)
        if command.first_unacked > client.low_water:
            client.low_water = command.first_unacked
            for acknowledged in [s for s in client.results if s < client.low_water]:
                del client.results[acknowledged]
        if command.sequence in client.results and Bug.NO_DEDUPLICATION not in self._bugs:
            result = client.results[command.sequence]
            return Outcome(
                index, OutcomeKind.DUPLICATE, command.client_id, command.sequence, result
            )
        if command.sequence < client.low_water:
            # It may have been applied and its result dropped: we can no longer tell.
            # Refuse rather than ever apply a command twice.
            return Outcome(index, OutcomeKind.STALE_SEQUENCE, command.client_id, command.sequence)
        result, effect = self._machine.apply(index, command.payload)
        client.results[command.sequence] = result
        while len(client.results) > self._client_results_max:
            dropped = min(client.results)
            del client.results[dropped]
            client.low_water = max(client.low_water, dropped + 1)
        return Outcome(
            index, OutcomeKind.APPLIED, command.client_id, command.sequence, result, effect
        )

    def _register(self, index: LogIndex, command: Command) -> Outcome:
        nonce = command.sequence
        if nonce in self._registrations and Bug.NO_DEDUPLICATION not in self._bugs:
            # A retried registration (after a fail-over, say): the same client, not a new one.
            client_id = self._registrations[nonce]
            client = self._clients[client_id]
            self._touch(client_id, client, index)
            return Outcome(index, OutcomeKind.REGISTERED, client_id, nonce, owner=client.owner)
        client_id = ClientId(self._next_client_id)
        self._next_client_id += 1
        self._clients[client_id] = _Client({}, index, nonce=nonce, owner=command.payload)
        self._touched.append(client_id)
        self._registrations[nonce] = client_id
        evicted = NO_CLIENT
        if len(self._clients) > self._clients_max:
            evicted = self._least_recently_used(index)
            del self._registrations[self._clients.pop(evicted).nonce]
        return Outcome(
            index, OutcomeKind.REGISTERED, client_id, nonce, evicted=evicted, owner=command.payload
        )

    # The eviction order. Between entries, `_clients` runs in (last_index, client id) order,
    # oldest first: the order the rule "evict the client last seen earliest in the log,
    # the lowest id among those of one entry" names, derived from replicated fields alone,
    # so a snapshot need not record it. Within an entry, each client that appears moves to
    # the end at once (so the ones that did not appear stay in order at the front), and at
    # the entry's end the few that appeared are put in id order.

    def _touch(self, client_id: ClientId, client: _Client, index: LogIndex) -> None:
        """`client_id` appears in the log at `index`: it becomes the most recently used."""
        assert client.last_index <= index, (client.last_index, index)
        client.last_index = index
        self._clients.move_to_end(client_id)
        self._touched.append(client_id)

    def _least_recently_used(self, index: LogIndex) -> ClientId:
        """The client to evict: the first in order, unless every client appeared in this
        very entry (`clients_max` below an entry's clients), then the lowest id."""
        first = next(iter(self._clients))
        if self._clients[first].last_index < index:
            return first
        return min(self._clients)  # all appeared at `index`: at most an entry's worth

    def _entry_applied(self) -> None:
        """Put the clients that appeared in the entry just applied in id order, at the end."""
        touched, self._touched = self._touched, []
        for client_id in sorted(set(touched)):
            if client_id in self._clients:  # not evicted later in the same entry
                self._clients.move_to_end(client_id)

    # Snapshots and checksums cover the bookkeeping as well as the machine's own state.

    def snapshot(self) -> bytes:
        state = [self._applied_index, *self._bookkeeping()]
        return bytes(msgpack.packb([state, self._machine.snapshot()], use_bin_type=True))

    def _bookkeeping(self) -> list[object]:
        clients = [
            [c, r.last_index, r.low_water, r.nonce, sorted(r.results.items()), r.owner]
            for c, r in sorted(self._clients.items())
        ]
        return [self._epoch, self._next_client_id, clients]

    def restore(self, index: LogIndex, data: bytes) -> None:
        """Replace everything with the snapshot `data` taken after applying `index`.

        The bytes are decoded and checked whole first, the machine's part by the machine, so
        a snapshot that is not one raises DecodeError and changes nothing.
        """
        restored = decode_snapshot(index, data)
        self._machine.restore(restored.machine)
        self._applied_index = restored.applied_index
        self._epoch = restored.epoch
        self._next_client_id = restored.next_client_id
        self._clients = restored.clients
        self._touched = []
        self._registrations = {r.nonce: c for c, r in self._clients.items()}

    def snapshot_problem(self, index: LogIndex, data: bytes) -> str | None:
        """Why `data` is not a snapshot taken after applying `index` that this applier (and
        its machine) could restore, or None. Decodes and checks the whole of it, changing
        nothing: a peer's snapshot is checked so before anything is replaced."""
        try:
            restored = decode_snapshot(index, data)
        except DecodeError as error:
            return str(error)
        return self._machine.snapshot_problem(restored.machine)

    def checksum(self) -> bytes:
        """A 64-bit digest of the replicated state: machine, epoch and client table."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(self._machine.checksum())
        digest.update(msgpack.packb(self._bookkeeping(), use_bin_type=True))
        return digest.digest()


# ----------------------------------------------------------------------------- snapshots

# An applier's snapshot is msgpack ``[state, machine]``: `state` is ``[applied_index, epoch,
# next_client_id, clients]``, each client ``[id, last_index, low_water, nonce, [[sequence,
# result], ...], owner]`` in id order (without `owner` before owners were recorded: such a
# client has no owner, and no one's retry gets it), and `machine` the machine's own
# snapshot bytes. A snapshot
# may come from a peer (InstallSnapshot) or from a disk that was damaged, so decoding checks
# every field's type and range, and what the table's invariants need (ids, nonces and
# sequences distinct, no client past the next id, none seen after the snapshot's index),
# and raises DecodeError, and nothing else, otherwise.


@frozen
class RestoredState:
    """An applier's snapshot, decoded and checked: what `Applier.restore` installs."""

    applied_index: LogIndex
    epoch: Epoch
    next_client_id: int
    clients: OrderedDict[ClientId, _Client] = field(eq=False)
    """In eviction order, least recently used first (as `Applier` keeps them)."""
    machine: bytes


def decode_snapshot(index: LogIndex, data: bytes) -> RestoredState:
    """The applier's state in snapshot `data`, which must be of `index`; DecodeError (only)
    for anything an applier did not write."""
    return unpack(data, lambda plain: _snapshot_from_plain(index, plain))


def _snapshot_from_plain(index: LogIndex, plain: Any) -> RestoredState:
    state, machine = array(plain, 2)
    applied_index, epoch, next_client_id, clients = array(state, 4)
    if type(applied_index) is not int or applied_index != index:
        raise DecodeError(f"a snapshot of index {applied_index!r:.20}, not {index}")
    next_id = bounded(next_client_id, 1, MASTER_CLIENT, "next client id")
    restored: dict[ClientId, _Client] = {}
    for client_plain in array(clients):
        client_id, client = _client_from_plain(client_plain, index)
        if client_id in restored or client_id >= next_id:
            raise DecodeError(f"client {client_id} twice, or at or past the next id {next_id}")
        restored[client_id] = client
    if len({client.nonce for client in restored.values()}) != len(restored):
        raise DecodeError("two clients registered with one nonce")
    # The order follows from the fields (see `_touch`), so the snapshot need not record it.
    in_order = sorted(restored, key=lambda c: (restored[c].last_index, c))
    return RestoredState(
        LogIndex(index),
        Epoch(bounded(epoch, 0, EPOCH_MAX, "epoch")),
        next_id,
        OrderedDict((c, restored[c]) for c in in_order),
        binary(machine),
    )


def _client_from_plain(plain: Any, index: LogIndex) -> tuple[ClientId, _Client]:
    fields = array(plain)
    owner = b""
    if len(fields) == 6:
        *fields, owner_plain = fields
        owner = binary(owner_plain)
    client_id, last_index, low_water, nonce, results = array(fields, 5)
    sequences: dict[int, bytes] = {}
    for pair in array(results):
        sequence, result = array(pair, 2)
        sequences[uint64(sequence)] = binary(result)
    if len(sequences) != len(results):
        raise DecodeError(f"client {client_id!r:.20}: a result twice")
    client = _Client(
        sequences,
        LogIndex(bounded(last_index, 0, index, "a client's last index")),
        uint64(low_water),
        uint64(nonce),
        owner,
    )
    return ClientId(bounded(client_id, 1, MASTER_CLIENT - 1, "client id")), client
