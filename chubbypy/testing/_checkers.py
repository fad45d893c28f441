"""The simulator's checkers: what must hold on every seed, whatever the faults.

The `Observer` watches the whole cell from outside, in true time:

* **agreement**: no two replicas learn different values for one instance;
* **unique epochs**: no two masterships (replica and winning ballot) share an epoch;
* **lease safety**: never two replicas that each believe they hold a valid master lease at
  one instant of true time;
* **consistency**: replicas that apply the same index get the same outcomes and the same
  state checksum (Paxos Made Live §6.2), and all replicas converge once faults stop;
* **durability**: every acknowledged command is in the committed log exactly once, with the
  result the client was given, and acknowledged commands are ordered as real time orders them;
* **exactly once**: no command is ever applied twice;
* **linearizable reads**: a read served by the master under its lease returns the latest
  write acknowledged before it began, never older, never one not yet written;
* **no lost update**: each increment (a write guarded by the value the client read) that
  changed its counter moved it by exactly one;
* **liveness**: once faults stop and the cell is whole, every operation completes within a
  bound.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from attrs import define, field, frozen

from chubbypy.paxos import ChecksumTaken, Outcome, OutcomeKind
from chubbypy.protocol import MASTER_CLIENT, Ballot, ClientId, Entry, Value
from chubbypy.protocol.namespace_codec import decode_result
from chubbypy.testing._registers import changed, put_in
from chubbypy.testing._requests import OpKind, Reply, ReplyStatus, Request
from chubbypy.testing._world import SECOND

INFINITY = 1 << 62


@frozen
class Violation:
    time_us: int
    checker: str
    message: str

    def __str__(self) -> str:
        return f"{self.checker} at {self.time_us / SECOND:.6f}s: {self.message}"


@define
class OpRecord:
    request: Request
    invoke_us: int
    complete_us: int | None = None
    reply: Reply | None = None

    @property
    def acknowledged(self) -> bool:
        return self.reply is not None and self.reply.status is ReplyStatus.OK


@define
class _Applied:
    """What the first replica to apply an index got (others must get the same)."""

    replica: str
    results: tuple[Outcome | ChecksumTaken, ...]


@define
class Observer:
    """Records what every replica and client does, and checks it. See the module docstring."""

    fail_fast: bool = True
    known_bugs: frozenset[str] = frozenset()
    """Checkers that catch a bug known and filed but not fixed yet: their violations are
    kept apart (`known`) and do not stop the run, so the other checkers keep judging."""
    violations: list[Violation] = field(factory=list)
    known: list[Violation] = field(factory=list)
    now_us: int = 0
    _chosen: dict[int, tuple[str, Value]] = field(factory=dict)
    _masterships: dict[int, tuple[str, Ballot]] = field(factory=dict)
    _applied: dict[int, _Applied] = field(factory=dict)
    _ops: list[OpRecord] = field(factory=list)
    _open: dict[tuple[str, int], OpRecord] = field(factory=dict)
    lease_holders_max: int = 0
    lease_checks: int = 0
    _checksums_compared: int = 0
    _puts_by_key: dict[str, list[tuple[int, int]]] | None = None
    """Every register's changes in log order, worked out once the run is over."""

    @property
    def failed(self) -> bool:
        return bool(self.violations)

    def violation(self, checker: str, message: str) -> None:
        found = Violation(self.now_us, checker, message)
        (self.known if checker in self.known_bugs else self.violations).append(found)

    # ------------------------------------------------------------------ as it runs

    def committed(self, replica: str, entry: Entry) -> None:
        """Agreement: the first value learned for an index is the only one."""
        earlier = self._chosen.get(entry.index)
        if earlier is None:
            self._chosen[entry.index] = (replica, entry.value)
        elif earlier[1] != entry.value:
            self.violation(
                "agreement",
                f"index {entry.index}: {earlier[0]} learned {earlier[1]}, "
                f"{replica} learned {entry.value}",
            )

    def mastership(self, replica: str, epoch: int, ballot: Ballot) -> None:
        """Unique epochs: a mastership's epoch names it alone (Paxos Made Live §5.3)."""
        earlier = self._masterships.setdefault(epoch, (replica, ballot))
        if earlier != (replica, ballot):
            self.violation(
                "unique epochs",
                f"epoch {epoch} belongs to {earlier[0]} (ballot {earlier[1]}) "
                f"and to {replica} (ballot {ballot})",
            )

    def applied(
        self, replica: str, index: int, results: tuple[Outcome | ChecksumTaken, ...]
    ) -> None:
        """Consistency: applying one index gives every replica the same outcomes and checksum."""
        earlier = self._applied.get(index)
        if earlier is None:
            self._applied[index] = _Applied(replica, results)
        elif earlier.results != results:
            self.violation(
                "consistency",
                f"index {index}: {earlier.replica} got {earlier.results}, {replica} got {results}",
            )
        elif any(isinstance(r, ChecksumTaken) for r in results):
            self._checksums_compared += 1

    def checksums_compared(self) -> int:
        """How many times a replica's checksum at a CHECKSUM entry matched an earlier one's."""
        return self._checksums_compared

    def leases(self, holders: Sequence[str]) -> None:
        """Lease safety, checked at every instant of true time at which anything happened."""
        self.lease_checks += 1
        self.lease_holders_max = max(self.lease_holders_max, len(holders))
        if len(holders) > 1:
            self.violation("lease safety", f"{', '.join(holders)} all hold a valid master lease")

    def invoked(self, client: str, request: Request, now_us: int) -> None:
        record = OpRecord(request, now_us)
        self._ops.append(record)
        self._open[(client, request.op_id)] = record

    def completed(self, client: str, request: Request, reply: Reply, now_us: int) -> None:
        """`request` (as it finally went: an increment gets its sequence late) ended."""
        record = self._open.pop((client, request.op_id))
        record.request = request
        record.complete_us = now_us
        record.reply = reply

    # ------------------------------------------------------------------ at the end

    def operations(self) -> list[OpRecord]:
        return list(self._ops)

    def summary(self) -> list[str]:
        """What the checkers looked at, one line each, for the end of a narrated run."""
        done = [r.request.kind for r in self._ops if r.acknowledged]
        commands = done.count(OpKind.WRITE) + done.count(OpKind.INCREMENT)
        return [
            f"agreement: {len(self._chosen)} instances learned, each with one value",
            f"unique epochs: {len(self._masterships)} masterships, each with its own epoch",
            f"lease safety: {self.lease_checks} instants checked, "
            f"never more than {self.lease_holders_max} lease holder",
            f"durability, exactly once: {commands} acknowledged commands, "
            "each applied once, where its acknowledgement said",
            f"linearizable reads: {done.count(OpKind.READ)} reads served from the master's memory",
            f"no lost update: {done.count(OpKind.INCREMENT)} acknowledged increments",
            f"consistency: {self._checksums_compared} checksum comparisons at equal indices",
        ]

    def check_history(self) -> None:
        """Durability, exactly-once, read linearizability and counters over the whole run."""
        applied = self._applied_commands()
        self._check_exactly_once(applied)
        self._check_acknowledged(applied)
        self._check_real_time_order(applied)
        self._check_counters()
        self._check_reads()

    def check_liveness(self, healed_us: int, bound_us: int, end_us: int) -> None:
        """Every operation finishes within `bound_us` of its start or of the heal, if later;
        and one begun once the cell was whole is answered (not `Unavailable`)."""
        for record in self._ops:
            deadline = max(record.invoke_us, healed_us) + bound_us
            finished = record.complete_us if record.complete_us is not None else INFINITY
            unanswered = record.reply is not None and record.reply.status is ReplyStatus.UNAVAILABLE
            if finished > deadline and end_us >= deadline:
                self.now_us = min(end_us, finished)
                self.violation(
                    "liveness",
                    f"{record.request.kind.value} op {record.request.op_id} of "
                    f"{record.request.client} (started {record.invoke_us / SECOND:.3f}s) "
                    f"not done {bound_us / SECOND:.1f}s after the faults stopped",
                )
                return
            if unanswered and record.invoke_us >= healed_us:
                self.now_us = finished
                self.violation(
                    "liveness",
                    f"{record.request.kind.value} op {record.request.op_id} of "
                    f"{record.request.client}, begun after the faults stopped, found no master",
                )
                return

    def _applied_commands(self) -> dict[tuple[ClientId, int], list[Outcome]]:
        commands: dict[tuple[ClientId, int], list[Outcome]] = {}
        for index in sorted(self._applied):
            for result in self._applied[index].results:
                if (
                    isinstance(result, Outcome)
                    and result.kind is OutcomeKind.APPLIED
                    and result.client_id != MASTER_CLIENT  # the master's own: no table
                ):
                    commands.setdefault((result.client_id, result.sequence), []).append(result)
        return commands

    def _check_exactly_once(self, applied: dict[tuple[ClientId, int], list[Outcome]]) -> None:
        for (client_id, sequence), outcomes in applied.items():
            if len(outcomes) > 1:
                indices = [outcome.index for outcome in outcomes]
                self.violation(
                    "exactly once",
                    f"client {client_id} command {sequence} applied at indices {indices}",
                )
                return

    def _commands(self) -> list[OpRecord]:
        return [r for r in self._ops if r.request.kind in (OpKind.WRITE, OpKind.INCREMENT)]

    def _check_acknowledged(self, applied: dict[tuple[ClientId, int], list[Outcome]]) -> None:
        for record in self._commands():
            if not record.acknowledged:
                continue
            request, reply = record.request, record.reply
            assert reply is not None
            outcomes = applied.get((request.client_id, request.sequence), [])
            if not outcomes:
                self.violation(
                    "durability",
                    f"acknowledged {request.kind.value} of client {request.client_id} "
                    f"command {request.sequence} (index {reply.index}) is not in the log",
                )
                return
            first = outcomes[0]
            if first.index > reply.index:
                self.violation(
                    "durability",
                    f"client {request.client_id} command {request.sequence} was acknowledged "
                    f"as applied through index {reply.index}, but the log applied it at "
                    f"{first.index}",
                )
                return
            if reply.result != decode_result(first.result):
                self.violation(
                    "durability",
                    f"client {request.client_id} command {request.sequence} was answered "
                    f"{reply.result}, but the log's result was {decode_result(first.result)}",
                )
                return

    def _check_real_time_order(self, applied: dict[tuple[ClientId, int], list[Outcome]]) -> None:
        """If A was acknowledged before B began, A is before B in the log."""
        acked = [
            (
                r.invoke_us,
                r.complete_us,
                applied[(r.request.client_id, r.request.sequence)][0].index,
            )
            for r in self._commands()
            if r.acknowledged
            and r.complete_us is not None
            and (r.request.client_id, r.request.sequence) in applied
        ]
        by_completion = sorted((done, index) for _, done, index in acked)
        completions = [done for done, _ in by_completion]
        highest = []
        running = 0
        for _, index in by_completion:
            running = max(running, index)
            highest.append(running)
        for invoke, _, index in acked:
            earlier = bisect.bisect_left(completions, invoke)
            if earlier and highest[earlier - 1] >= index:
                self.violation(
                    "durability",
                    f"a command acknowledged before {invoke / SECOND:.6f}s sits at index "
                    f"{highest[earlier - 1]}, after index {index} of a command begun then",
                )
                return

    def _puts(self, key: str) -> list[tuple[int, int]]:
        """(index, value) of every applied write that changed register `key`, in log order."""
        if self._puts_by_key is None:
            self._puts_by_key = {}
            for index in sorted(self._applied):
                for written, value in self._register_writes(index):
                    self._puts_by_key.setdefault(written, []).append((index, value))
        return self._puts_by_key.get(key, [])

    def _register_writes(self, index: int) -> list[tuple[str, int]]:
        """(key, value) of each register write applied at `index` that changed its file."""
        value = self._chosen[index][1]
        outcomes = [r for r in self._applied[index].results if isinstance(r, Outcome)]
        writes = []
        for command, outcome in zip(value.commands, outcomes, strict=False):
            if outcome.kind is not OutcomeKind.APPLIED or command.client_id == MASTER_CLIENT:
                continue
            written = put_in(command.payload)
            if written is not None and changed(outcome.result):
                writes.append(written)
        return writes

    def _check_counters(self) -> None:
        keys = sorted({r.request.key for r in self._ops if r.request.kind is OpKind.INCREMENT})
        for key in keys:
            previous = 0
            for index, value in self._puts(key):
                if value != previous + 1:
                    self.violation(
                        "lost update",
                        f"counter {key} went from {previous} to {value} at index {index}",
                    )
                    return
                previous = value

    def _check_reads(self) -> None:
        keys = sorted({r.request.key for r in self._ops if r.request.kind is OpKind.READ})
        for key in keys:
            if not self._check_reads_of(key):
                return

    def _check_reads_of(self, key: str) -> bool:
        """Reads against the write order the log fixed (a register with unique values)."""
        puts = self._puts(key)
        position = {value: n + 1 for n, (_, value) in enumerate(puts)}
        writes = {
            r.request.value: r
            for r in self._ops
            if r.request.kind is OpKind.WRITE and r.request.key == key
        }
        # acked_after[p]: the earliest acknowledgement of any write at position > p.
        acked_after = [INFINITY] * (len(puts) + 1)
        for p in range(len(puts) - 1, -1, -1):
            record = writes.get(puts[p][1])
            done = record.complete_us if record and record.acknowledged else None
            acked_after[p] = min(acked_after[p + 1], done if done is not None else INFINITY)
        reads = [
            r
            for r in self._ops
            if r.request.kind is OpKind.READ and r.request.key == key and r.acknowledged
        ]
        for record in reads:
            if not self._check_read(record, position, writes, acked_after):
                return False
        return self._check_monotonic_reads(reads, position)

    def _check_read(
        self,
        record: OpRecord,
        position: dict[int, int],
        writes: dict[int, OpRecord],
        acked_after: list[int],
    ) -> bool:
        assert record.reply is not None
        assert record.complete_us is not None
        value = record.reply.value
        where = f"read of {record.request.key} by {record.request.client} returned {value}"
        p = 0 if value == -1 else position.get(value)
        if p is None:
            self.violation("linearizable reads", f"{where}, which no applied write wrote")
            return False
        if p and writes[value].invoke_us > record.complete_us:
            self.violation("linearizable reads", f"{where} before it was written")
            return False
        if acked_after[p] < record.invoke_us:
            self.violation(
                "linearizable reads",
                f"{where}, but a later write was acknowledged at "
                f"{acked_after[p] / SECOND:.6f}s, before the read began "
                f"at {record.invoke_us / SECOND:.6f}s (a stale read)",
            )
            return False
        return True

    def _check_monotonic_reads(self, reads: list[OpRecord], position: dict[int, int]) -> bool:
        """A read that began after another finished never sees an older write."""

        def place(record: OpRecord) -> int:
            assert record.reply is not None
            return 0 if record.reply.value == -1 else position[record.reply.value]

        by_completion = sorted(reads, key=lambda r: r.complete_us or 0)
        completions = [r.complete_us or 0 for r in by_completion]
        highest: list[int] = []
        for record in by_completion:
            highest.append(max(highest[-1] if highest else 0, place(record)))
        for record in reads:
            earlier = bisect.bisect_left(completions, record.invoke_us)
            if earlier and highest[earlier - 1] > place(record):
                self.violation(
                    "linearizable reads",
                    f"read of {record.request.key} by {record.request.client} at "
                    f"{record.invoke_us / SECOND:.6f}s saw an older value than a read "
                    "that had already finished",
                )
                return False
        return True
