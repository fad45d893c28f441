"""The Applier: epoch guard, exactly-once client table, eviction, snapshots and checksums."""

from __future__ import annotations

import random

import pytest

from chubbypy.paxos import Applier, ChecksumTaken, Outcome, OutcomeKind
from chubbypy.protocol import (
    MASTER_CLIENT,
    NO_CLIENT,
    Ballot,
    ClientId,
    Command,
    Entry,
    Epoch,
    LogIndex,
    ReplicaId,
    Value,
    ValueKind,
)
from tests.unit.paxos.harness import DictMachine, command

BALLOT = Ballot(1, ReplicaId("r1"))


class Log:
    """Feeds an Applier one entry at a time, numbering the entries itself."""

    def __init__(self, clients_max: int = 8, client_results_max: int = 8) -> None:
        self.machine = DictMachine()
        self.applier = Applier(
            self.machine, clients_max=clients_max, client_results_max=client_results_max
        )
        self.index = 0

    def append(self, value: Value) -> tuple[Outcome | ChecksumTaken, ...]:
        self.index += 1
        return self.applier.apply(Entry(LogIndex(self.index), BALLOT, value))

    def start(self, epoch: int) -> None:
        assert self.append(Value(Epoch(epoch), ValueKind.EPOCH_START)) == ()

    def commands(self, *commands: Command, epoch: int | None = None) -> list[Outcome]:
        epoch = self.applier.epoch if epoch is None else epoch
        outcomes = self.append(Value(Epoch(epoch), ValueKind.COMMANDS, commands))
        assert all(isinstance(o, Outcome) for o in outcomes)
        return list(outcomes)  # type: ignore[arg-type]

    def one(self, command: Command) -> Outcome:
        (outcome,) = self.commands(command)
        return outcome

    def register(self, nonce: int = 7) -> ClientId:
        outcome = self.one(Command(NO_CLIENT, nonce, b""))
        assert outcome.kind is OutcomeKind.REGISTERED
        return outcome.client_id


def started(**limits: int) -> Log:
    log = Log(**limits)
    log.start(1)
    return log


def test_epoch_start_sets_the_epoch() -> None:
    """Each EPOCH_START makes its epoch current; NOOPs change nothing."""
    log = Log()
    log.start(3)
    assert log.applier.epoch == 3
    assert log.append(Value(Epoch(4), ValueKind.NOOP)) == ()
    assert log.applier.epoch == 3
    log.start(5)
    assert log.applier.epoch == 5
    assert log.applier.applied_index == 3


def test_epoch_start_not_above_the_current_epoch_is_a_no_op() -> None:
    """A stale EPOCH_START changes nothing; its epoch's commands are refused, current ones apply."""
    log = started()
    client = log.register()
    log.start(5)
    log.start(3)  # a mastership that never served, adopted by the master of epoch 5's successor
    assert log.applier.epoch == 5
    log.start(5)  # the current epoch's own start, chosen again, changes nothing either
    assert log.applier.epoch == 5
    (stale,) = log.commands(command(client, 1, b"a=1"), epoch=3)
    assert stale.kind is OutcomeKind.EPOCH_CHANGED
    assert log.one(command(client, 1, b"a=1")).kind is OutcomeKind.APPLIED
    assert log.machine.calls == 1
    log.start(6)
    assert log.applier.epoch == 6


def test_batch_of_a_stale_epoch_is_refused_whole() -> None:
    """A COMMANDS batch of a stale epoch gets EPOCH_CHANGED for every command, and applies none."""
    log = started()
    client = log.register()
    log.start(2)
    stale = log.commands(command(client, 1, b"a=1"), command(client, 2, b"b=2"), epoch=1)
    assert [(o.kind, o.sequence) for o in stale] == [
        (OutcomeKind.EPOCH_CHANGED, 1),
        (OutcomeKind.EPOCH_CHANGED, 2),
    ]
    assert log.machine.calls == 0
    assert log.applier.cached_result(client, 1) is None
    # Nothing was recorded: the same sequence, proposed again in the current epoch, applies.
    assert log.one(command(client, 1, b"a=1")).kind is OutcomeKind.APPLIED


def test_registration_allocates_increasing_client_ids() -> None:
    """Registrations get ids 1, 2, 3 in log order; the outcome echoes the client's nonce."""
    log = started()
    outcomes = log.commands(*(Command(NO_CLIENT, nonce, b"") for nonce in (40, 41, 42)))
    assert [(o.kind, o.client_id, o.sequence) for o in outcomes] == [
        (OutcomeKind.REGISTERED, 1, 40),
        (OutcomeKind.REGISTERED, 2, 41),
        (OutcomeKind.REGISTERED, 3, 42),
    ]


def test_retried_registration_gets_the_same_client() -> None:
    """A registration with a live client's nonce gets that client again, refreshed for eviction."""
    log = started(clients_max=2)
    a = log.register(nonce=11)
    b = log.register(nonce=12)
    assert (a, b) == (1, 2)
    (again,) = log.commands(Command(NO_CLIENT, 11, b""))
    assert (again.kind, again.client_id, again.sequence) == (OutcomeKind.REGISTERED, a, 11)
    # a is now more recent than b, so a third client evicts b, and gets the next id.
    c = log.register(nonce=13)
    assert c == 3
    assert log.one(command(b, 1)).kind is OutcomeKind.UNKNOWN_CLIENT
    assert log.one(command(a, 1)).kind is OutcomeKind.APPLIED


def test_retried_registration_keeps_the_client_s_results() -> None:
    """Registering again with the same nonce does not reset the client's exactly-once table."""
    log = started()
    client = log.register(nonce=21)
    first = log.one(command(client, 1, b"k=1"))
    assert log.register(nonce=21) == client
    again = log.one(command(client, 1, b"k=1"))
    assert (again.kind, again.result) == (OutcomeKind.DUPLICATE, first.result)
    assert log.machine.calls == 1


def test_a_registration_records_its_owner_and_a_retry_is_told_it() -> None:
    """The registration's payload (the principal that made it) is the client's owner: the
    outcome of every registration of its nonce, and `registered_client`, name it, so the
    node hands the client only to its owner; another principal's registration of the same
    nonce gets the same client and owner (and is refused by the node), never a new one."""
    log = started()
    first = log.one(Command(NO_CLIENT, 5, b"alice"))
    assert (first.kind, first.owner) == (OutcomeKind.REGISTERED, b"alice")
    stolen = log.one(Command(NO_CLIENT, 5, b"mallory"))
    assert (stolen.client_id, stolen.owner) == (first.client_id, b"alice")
    assert log.applier.registered_client(5) == (first.client_id, b"alice")
    assert log.applier.registered_client(6) is None


def test_a_client_s_owner_survives_a_snapshot_and_an_older_snapshot_has_none() -> None:
    """A restored table knows each client's owner; a snapshot written before owners were
    recorded (each client five fields) restores with no owner, which no one's retry
    matches."""
    log = started()
    alice = log.one(Command(NO_CLIENT, 5, b"alice")).client_id
    copy = Log()
    copy.index = log.index
    copy.applier.restore(LogIndex(log.index), log.applier.snapshot())
    assert copy.applier.registered_client(5) == (alice, b"alice")
    assert copy.applier.checksum() == log.applier.checksum()
    old = Log(clients_max=3)
    old.index = 5
    old.applier.restore(LogIndex(5), SNAPSHOT_D56E5AD)
    assert old.applier.registered_client(1) == (ClientId(1), b"")


def test_eviction_frees_the_registration_nonce() -> None:
    """Once a client is evicted, a registration with its nonce makes a new client."""
    log = started(clients_max=1)
    a = log.register(nonce=31)
    b = log.register(nonce=32)  # evicts a
    assert log.one(command(a, 1)).kind is OutcomeKind.UNKNOWN_CLIENT
    fresh = log.register(nonce=31)  # evicts b
    assert fresh not in (a, b)
    assert log.one(command(fresh, 1)).kind is OutcomeKind.APPLIED
    assert log.register(nonce=32) not in (a, b, fresh)


def test_registration_in_a_stale_epoch_registers_nothing() -> None:
    """A registration refused for its epoch records no nonce; a retry gets the next fresh id."""
    log = started()
    log.start(2)
    (stale,) = log.commands(Command(NO_CLIENT, 41, b""), epoch=1)
    assert stale.kind is OutcomeKind.EPOCH_CHANGED
    assert log.register(nonce=41) == 1


def test_unknown_client_is_refused() -> None:
    """A command from a client id never registered is refused as UNKNOWN_CLIENT, not applied."""
    log = started()
    assert log.one(command(9, 1)).kind is OutcomeKind.UNKNOWN_CLIENT
    assert log.machine.calls == 0


def test_duplicate_gets_the_original_result() -> None:
    """A retried (client, sequence) gets DUPLICATE and the first result, without a machine call."""
    log = started()
    client = log.register()
    first = log.one(command(client, 1, b"k=1"))
    log.one(command(client, 2, b"k=2"))
    assert first.kind is OutcomeKind.APPLIED
    again = log.one(command(client, 1, b"k=1"))
    assert (again.kind, again.result) == (OutcomeKind.DUPLICATE, first.result)
    assert log.machine.calls == 2
    assert log.machine.values[b"k"] == b"2"


def test_acknowledged_results_are_dropped_and_never_reapplied() -> None:
    """first_unacked drops older results; a later retry below it is STALE_SEQUENCE, not applied."""
    log = started()
    client = log.register()
    log.one(command(client, 1, b"k=1"))
    log.one(command(client, 2, b"k=2"))
    log.one(command(client, 3, b"k=3", first_unacked=3))
    assert log.applier.cached_result(client, 1) is None
    assert log.applier.cached_result(client, 3) == b"2"
    stale = log.one(command(client, 1, b"k=1"))
    assert stale.kind is OutcomeKind.STALE_SEQUENCE
    assert (log.machine.calls, log.machine.values[b"k"]) == (3, b"3")


def test_lost_sequence_below_the_last_applied_is_applied_on_retry() -> None:
    """Pipelined: seq 5 lost and seq 6 applied, a retry of seq 5 applies: it is above low water."""
    log = started()
    client = log.register()
    for sequence in range(1, 5):
        log.one(command(client, sequence, b"a=%d" % sequence))
    log.one(command(client, 6, b"b=6"))
    retry = log.one(command(client, 5, b"c=5"))
    assert retry.kind is OutcomeKind.APPLIED
    assert log.machine.values[b"c"] == b"5"


def test_result_overflow_raises_the_low_water_mark() -> None:
    """Beyond client_results_max the oldest result is dropped and its sequence becomes stale."""
    log = started(client_results_max=2)
    client = log.register()
    for sequence in (1, 2, 3):
        log.one(command(client, sequence, b"k=%d" % sequence))
    assert log.one(command(client, 1)).kind is OutcomeKind.STALE_SEQUENCE
    assert log.one(command(client, 2)).kind is OutcomeKind.DUPLICATE
    assert log.machine.calls == 3


def test_eviction_takes_the_least_recently_used_client() -> None:
    """Past clients_max, the client last seen earliest in the log is evicted, deterministically."""
    log = started(clients_max=2)
    a, b = log.register(1), log.register(2)
    log.one(command(a, 1))  # a is now more recent than b
    c = log.register(3)
    assert log.one(command(b, 1)).kind is OutcomeKind.UNKNOWN_CLIENT
    assert log.one(command(a, 2)).kind is OutcomeKind.APPLIED
    assert log.one(command(c, 1)).kind is OutcomeKind.APPLIED


def test_eviction_reports_the_evicted_client() -> None:
    """A registration that made room names the client it evicted; one that did not, none."""
    log = started(clients_max=2)
    a = log.register(1)
    (second,) = log.commands(Command(NO_CLIENT, 2, b""))
    (third,) = log.commands(Command(NO_CLIENT, 3, b""))
    assert (second.evicted, third.evicted) == (NO_CLIENT, a)


def test_clients_seen_in_one_entry_are_evicted_lowest_id_first() -> None:
    """Clients last seen in the same entry are evicted in id order, whatever their order
    in the entry (the rule every replica applies, and the one before the order was kept)."""
    log = started(clients_max=3)
    a, b, c = log.register(1), log.register(2), log.register(3)
    log.commands(command(c, 1), command(a, 1), command(b, 1))
    evicted = [log.one(Command(NO_CLIENT, nonce, b"")).evicted for nonce in (4, 5, 6)]
    assert evicted == [a, b, c]


def test_an_entry_of_more_clients_than_the_table_evicts_the_lowest_ids() -> None:
    """When every client in the table appeared in the entry being applied, a registration
    in it evicts the lowest id (not the newcomer, not the first seen)."""
    log = started(clients_max=2)
    a, b = log.register(1), log.register(2)
    outcomes = log.commands(command(b, 1), command(a, 1), Command(NO_CLIENT, 3, b""))
    assert outcomes[2].evicted == a
    assert log.one(command(b, 2)).kind is OutcomeKind.APPLIED


def test_eviction_matches_the_scan_it_replaced() -> None:
    """Over a long random log, every registration evicts what a scan for the client with
    the oldest (last index, id) evicts: the order kept is that rule, without the scan."""
    rng = random.Random(12)
    log = started(clients_max=20)
    reference = _ScanTable(clients_max=20)
    for _ in range(400):
        commands = []
        for _ in range(rng.randint(1, 6)):
            if not reference.seen or rng.random() < 0.3:
                commands.append(Command(NO_CLIENT, rng.randint(1, 10**9), b""))
            else:
                client = rng.choice(sorted(reference.seen))
                commands.append(command(client, rng.randint(1, 10**9)))
        expected = reference.apply(log.index + 1, commands)
        outcomes = log.commands(*commands)
        assert [o.evicted for o in outcomes if o.kind is OutcomeKind.REGISTERED] == expected


class _ScanTable:
    """The reference: a table that scans for `min((last_index, id))` at every eviction."""

    def __init__(self, clients_max: int) -> None:
        self.clients_max = clients_max
        self.seen: dict[ClientId, int] = {}
        self.next_id = 1

    def apply(self, index: int, commands: list[Command]) -> list[ClientId]:
        """Apply one entry; the client each registration in it evicted (or NO_CLIENT)."""
        evicted = []
        for c in commands:
            if c.client_id != NO_CLIENT:
                if c.client_id in self.seen:
                    self.seen[c.client_id] = index
                continue
            self.seen[ClientId(self.next_id)] = index
            self.next_id += 1
            victim = NO_CLIENT
            if len(self.seen) > self.clients_max:
                victim = min(self.seen, key=lambda client: (self.seen[client], client))
                del self.seen[victim]
            evicted.append(victim)
        return evicted


def test_snapshot_restore_round_trips() -> None:
    """A restored Applier has the same checksum and behaves the same on what follows."""
    log = started(client_results_max=2)
    a, b = log.register(1), log.register(2)
    log.commands(command(a, 1, b"x=1"), command(b, 1, b"y=1"), command(a, 2, b"x=2"))
    log.one(command(a, 3, b"x=3", first_unacked=2))
    data = log.applier.snapshot()
    copy = Log(client_results_max=2)
    copy.index = log.index
    copy.applier.restore(LogIndex(log.index), data)
    assert copy.applier.checksum() == log.applier.checksum()
    assert copy.applier.epoch == log.applier.epoch
    assert copy.register(nonce=2) == log.register(nonce=2) == b  # the nonces survive
    following = [command(a, 1), command(a, 2), command(b, 1), command(b, 2, b"y=2"), command(9, 1)]
    assert copy.commands(*following) == log.commands(*following)
    assert copy.machine.values == log.machine.values
    assert copy.applier.checksum() == log.applier.checksum()


def test_a_restored_table_evicts_in_the_same_order() -> None:
    """The eviction order survives a snapshot: a restored applier evicts the same clients
    as the one that took it, though the snapshot lists clients by id."""
    log = started(clients_max=4)
    a, b, c, d = (log.register(n) for n in (1, 2, 3, 4))
    log.commands(command(c, 1), command(a, 1))
    log.one(command(b, 1))  # least recently used first: d, then a and c (same entry), b
    copy = Log(clients_max=4)
    copy.index = log.index
    copy.applier.restore(LogIndex(log.index), log.applier.snapshot())
    for nonce in (5, 6, 7, 8):
        assert copy.one(Command(NO_CLIENT, nonce, b"")) == log.one(Command(NO_CLIENT, nonce, b""))
    assert [log.one(command(x, 2)).kind for x in (d, a, c, b)] == [OutcomeKind.UNKNOWN_CLIENT] * 4


SNAPSHOT_D56E5AD = bytes.fromhex(
    "9294050104939501050001919201c400950203000290950304000390c4089192c40178c40131"
)
"""An applier's snapshot as commit d56e5ad wrote it (before the table kept its eviction
order): clients_max 3, clients 1, 2, 3 registered at indices 2, 3, 4, then client 1 wrote
x=1 at index 5."""


def test_a_snapshot_written_before_the_order_was_kept_restores_into_it() -> None:
    """The snapshot format did not change: one written by d56e5ad restores, with its clients
    in eviction order (least recently used first: 2, 3, then 1, which wrote last)."""
    log = Log(clients_max=3)
    log.index = 5
    log.applier.restore(LogIndex(5), SNAPSHOT_D56E5AD)
    assert log.applier.epoch == 1
    assert log.machine.values == {b"x": b"1"}
    assert log.applier.cached_result(ClientId(1), 1) is not None
    evicted = [log.one(Command(NO_CLIENT, nonce, b"")).evicted for nonce in (4, 5, 6)]
    assert evicted == [2, 3, 1]
    # New snapshots are written in the same format, and restore to the same state.
    again = Log(clients_max=3)
    again.index = log.index
    again.applier.restore(LogIndex(log.index), log.applier.snapshot())
    assert again.applier.checksum() == log.applier.checksum()


def test_checksum_entry_reports_the_checksum() -> None:
    """A CHECKSUM entry yields ChecksumTaken with the state's checksum() at that index."""
    log = started()
    client = log.register()
    log.one(command(client, 1, b"k=1"))
    (taken,) = log.append(Value(Epoch(1), ValueKind.CHECKSUM))
    assert taken == ChecksumTaken(LogIndex(log.index), log.applier.checksum())
    log.one(command(client, 2, b"k=2"))
    assert log.applier.checksum() != taken.checksum


def test_entries_must_come_in_order() -> None:
    """Applying an entry out of order is a programmer error (an assertion), never an outcome."""
    log = started()
    with pytest.raises(AssertionError):
        log.applier.apply(Entry(LogIndex(5), BALLOT, Value(Epoch(1), ValueKind.NOOP)))


def test_the_masters_own_commands_apply_without_a_client_table() -> None:
    """MASTER_CLIENT commands apply every time, remember nothing, and still obey the epoch."""
    log = started()
    first = log.one(command(MASTER_CLIENT, 1, b"a=1"))
    again = log.one(command(MASTER_CLIENT, 1, b"a=2"))
    assert (first.kind, again.kind) == (OutcomeKind.APPLIED, OutcomeKind.APPLIED)
    assert log.machine.calls == 2
    assert log.applier.cached_result(MASTER_CLIENT, 1) is None
    log.start(2)
    (stale,) = log.commands(command(MASTER_CLIENT, 2, b"a=3"), epoch=1)
    assert stale.kind is OutcomeKind.EPOCH_CHANGED
