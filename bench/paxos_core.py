"""Commits per CPU-second of the pure Paxos core: a 3-replica cell in one process.

What is measured: three `Replica`s (r1..r3) with their shells' share of the work, handling
every `Ready` in the contract's order (`chubbypy.paxos._ready`): persist `ready.durable` into
a `MemoryStore`, send the messages, apply the committed entries through an `Applier` (epoch
guard, exactly-once client table) over a trivial state machine, `advance`. One registered
client feeds 100-byte commands to the master with `propose`, keeping its queue topped up so
the pipeline (`proposals_inflight_max` instances) stays full; `batch_entries_max` sets the
batch size. The network is perfect: every envelope is delivered in FIFO order, and the
recipient drains its Readys after each message, as the Twisted shell does after each callback.

A command counts once it has been applied on all three replicas. CPU time is
`time.process_time()` of the whole process, so it is the sum over the three replicas (plus
this small harness and the client's `Command` construction); the election and the client's
registration happen before the clock starts.

What is not measured: no sockets, no codec, no fsync, no SQL, no Twisted, no clock. Time does
not pass while commands flow (the master ticks only at the end, to tell the followers how far
the log is chosen). So the figures are the ceiling the pure core allows, not a cell's
throughput: the three replicas share the CPU (the master doing more than each follower),
and a real shell adds the codec, the sockets, the disk and the reactor on top.

Run: `.venv/bin/python bench/paxos_core.py [--batch 1 --batch 64] [--window 32] [--json]`;
`--profile` runs each configuration once under cProfile and prints its top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections import deque
from collections.abc import Sequence

from attrs import frozen

from chubbypy.paxos import (
    Applier,
    ChecksumTaken,
    Limits,
    NoChance,
    OutcomeKind,
    Replica,
    Timing,
    membership_of_ids,
)
from chubbypy.protocol import (
    NO_CLIENT,
    ClientId,
    Command,
    Entry,
    Envelope,
    LogIndex,
    ReplicaId,
    ValueKind,
)
from chubbypy.store import MemoryStore

MEMBERS = (ReplicaId("r1"), ReplicaId("r2"), ReplicaId("r3"))
PAYLOAD = b"x" * 100
"""Every command's payload: exactly 100 bytes."""
TIMING = Timing(
    lease_ticks=10,
    master_lease_ticks=8,
    heartbeat_ticks=2,
    election_jitter_ticks=1,
    retry_ticks=3,
)
CLIENTS_MAX = 64
CLIENT_RESULTS_MAX = 8
"""Results the applier keeps per client, as in the simulator's default settings."""
TICKS_MAX = 100
"""Bound on the ticks the election or the final catch-up may take: more is a harness bug."""
DEFAULT_COMMANDS = 20_000
DEFAULT_SCALE_MAX = 8
"""A batch-B run proposes commands * min(B, this), so every configuration takes a few seconds."""


class LastPayload:
    """The trivial `StateMachine`: keeps the last payload applied and returns no result."""

    def __init__(self) -> None:
        self._last = b""

    def apply(self, index: LogIndex, payload: bytes) -> bytes:
        self._last = payload
        return b""

    def snapshot(self) -> bytes:
        return self._last

    def restore(self, data: bytes) -> None:
        self._last = data

    def checksum(self) -> bytes:
        return self._last[:8]


class Node:
    """One replica and its shell's share of the work: a store, an applier, a state machine."""

    def __init__(self, replica_id: ReplicaId, limits: Limits) -> None:
        self.replica = Replica(replica_id, membership_of_ids(MEMBERS), TIMING, limits, NoChance())
        self.store = MemoryStore()
        self.applier = Applier(
            LastPayload(), clients_max=CLIENTS_MAX, client_results_max=CLIENT_RESULTS_MAX
        )
        self.applied_commands = 0
        self.applied_instances = 0
        self.client_id = NO_CLIENT

    def drain(self, network: deque[Envelope]) -> None:
        """Handle every Ready in the contract's order: send early, persist, send, apply,
        advance."""
        replica = self.replica
        while replica.has_ready():
            ready = replica.ready()
            assert ready.durable.snapshot is None, "this harness takes no snapshots"
            network.extend(ready.early)
            self.store.persist(ready.durable)
            network.extend(ready.messages)
            for entry in ready.committed:
                self._apply(entry)
            replica.advance(ready)

    def _apply(self, entry: Entry) -> None:
        if entry.value.kind is ValueKind.COMMANDS:
            self.applied_instances += 1
        for outcome in self.applier.apply(entry):
            assert not isinstance(outcome, ChecksumTaken), outcome
            if outcome.kind is OutcomeKind.APPLIED:
                self.applied_commands += 1
            elif outcome.kind is OutcomeKind.REGISTERED:
                self.client_id = outcome.client_id
            else:
                raise AssertionError(outcome)


class Workload:
    """One registered client's commands, proposed in chunks of one batch to keep the master busy.

    It keeps up to two windows of commands outstanding (queued or in flight), so the queue
    always holds enough to refill the window. Each command acknowledges every sequence the
    master has applied, as a pipelining client would.
    """

    def __init__(self, master: Node, client_id: ClientId, total: int, limits: Limits) -> None:
        assert client_id != NO_CLIENT
        self._master = master
        self._client_id = client_id
        self._total = total
        self._chunk = limits.batch_entries_max
        self._outstanding_max = 2 * limits.proposals_inflight_max * limits.batch_entries_max
        self._base = master.applied_commands
        self.proposed = 0

    def top_up(self) -> None:
        """Propose more commands while fewer than two windows' worth are outstanding."""
        master = self._master
        while self.proposed < self._total and (
            self.proposed - (master.applied_commands - self._base) < self._outstanding_max
        ):
            first_unacked = master.applied_commands - self._base + 1
            count = min(self._chunk, self._total - self.proposed)
            commands = [
                Command(self._client_id, self.proposed + i + 1, PAYLOAD, first_unacked)
                for i in range(count)
            ]
            refused = master.replica.propose(commands, master.replica.epoch)
            assert refused is None, refused
            self.proposed += count


class Cell:
    """Three nodes on a perfect network: FIFO delivery, nothing lost, no delay."""

    def __init__(self, limits: Limits) -> None:
        self.nodes = {member: Node(member, limits) for member in MEMBERS}
        self.master = self.nodes[MEMBERS[0]]
        self.network: deque[Envelope] = deque()
        self.delivered = 0

    def run(self, workload: Workload | None = None) -> None:
        """Deliver messages until none is left, topping the workload up as the master commits."""
        if workload is not None:
            workload.top_up()
        for node in self.nodes.values():
            node.drain(self.network)
        network = self.network
        while network:
            envelope = network.popleft()
            node = self.nodes[envelope.recipient]
            node.replica.step(envelope.sender, envelope.message)
            if workload is not None and node is self.master:
                workload.top_up()
            node.drain(network)
            self.delivered += 1

    def elect(self) -> None:
        """Tick only r1 until it serves: the others never campaign, so there is no contest."""
        for _ in range(TICKS_MAX):
            if self.master.replica.serving:
                return
            self.master.replica.tick()
            self.run()
        raise AssertionError("no master elected")

    def register(self) -> ClientId:
        """Register the client through the log, as every real client does first."""
        replica = self.master.replica
        refused = replica.propose([Command(NO_CLIENT, 1, b"")], replica.epoch)
        assert refused is None, refused
        self.run()
        assert self.master.client_id != NO_CLIENT
        return self.master.client_id

    def catch_up(self) -> None:
        """Tick the master until its heartbeats have told every follower all that is chosen."""
        target = self.master.replica.applied_index
        for _ in range(TICKS_MAX):
            if all(node.replica.applied_index >= target for node in self.nodes.values()):
                return
            self.master.replica.tick()
            self.run()
        raise AssertionError("followers did not catch up")


@frozen
class Config:
    batch: int
    window: int
    commands: int

    def limits(self) -> Limits:
        return Limits(
            batch_entries_max=self.batch,
            batch_bytes_max=1 << 30,
            proposals_inflight_max=self.window,
            proposals_queued_max=1 << 30,
            catchup_entries_max=max(256, self.window),
        )


@frozen
class Run:
    """One measured run of one configuration."""

    cpu_seconds: float
    wall_seconds: float
    commands: int
    instances: int
    messages: int


def prepared_cell(config: Config) -> tuple[Cell, Workload]:
    """A cell with a serving master and a registered client, every replica caught up."""
    limits = config.limits()
    cell = Cell(limits)
    cell.elect()
    client_id = cell.register()
    cell.catch_up()
    return cell, Workload(cell.master, client_id, config.commands, limits)


def measure(config: Config, profiler: cProfile.Profile | None = None) -> Run:
    """Run the workload once; only the commit phase is on the clock (and under the profiler)."""
    cell, workload = prepared_cell(config)
    before = {name: node.applied_commands for name, node in cell.nodes.items()}
    instances_before, delivered_before = cell.master.applied_instances, cell.delivered
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    cell.run(workload)
    cell.catch_up()
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for name, node in cell.nodes.items():
        assert node.applied_commands - before[name] == config.commands, name
    instances = cell.master.applied_instances - instances_before
    return Run(cpu, wall, config.commands, instances, cell.delivered - delivered_before)


@frozen
class Summary:
    """Repeated runs of one configuration: the best (least CPU) and the median."""

    config: Config
    best: Run
    median_cpu_seconds: float

    @classmethod
    def of(cls, config: Config, runs: Sequence[Run]) -> Summary:
        best = min(runs, key=lambda run: run.cpu_seconds)
        return cls(config, best, statistics.median(run.cpu_seconds for run in runs))

    def as_dict(self, machine: dict[str, object], repeat: int) -> dict[str, object]:
        best = self.best
        return {
            "benchmark": "paxos_core",
            "replicas": len(MEMBERS),
            "payload_bytes": len(PAYLOAD),
            "batch": self.config.batch,
            "window": self.config.window,
            "repeat": repeat,
            "commands": best.commands,
            "instances": best.instances,
            "messages_per_instance": best.messages / best.instances,
            "cpu_seconds_best": best.cpu_seconds,
            "cpu_seconds_median": self.median_cpu_seconds,
            "wall_seconds_best": best.wall_seconds,
            "commands_per_cpu_second_best": best.commands / best.cpu_seconds,
            "commands_per_cpu_second_median": best.commands / self.median_cpu_seconds,
            "instances_per_cpu_second_best": best.instances / best.cpu_seconds,
            "cpu_us_per_command_best": 1e6 * best.cpu_seconds / best.commands,
            "machine": machine,
        }


COLUMNS = (
    ("batch", "batch", "{}"),
    ("window", "window", "{}"),
    ("commands", "commands", "{}"),
    ("instances", "instances", "{}"),
    ("msgs/inst", "messages_per_instance", "{:.2f}"),
    ("cmd/cpu-s best", "commands_per_cpu_second_best", "{:,.0f}"),
    ("cmd/cpu-s median", "commands_per_cpu_second_median", "{:,.0f}"),
    ("inst/cpu-s best", "instances_per_cpu_second_best", "{:,.0f}"),
    ("cpu µs/cmd", "cpu_us_per_command_best", "{:.1f}"),
    ("wall s", "wall_seconds_best", "{:.2f}"),
)


def table(rows: Sequence[dict[str, object]]) -> str:
    """An aligned, right-justified table of the COLUMNS of `rows`."""
    cells = [[title for title, _, _ in COLUMNS]]
    cells += [[form.format(row[key]) for _, key, form in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def machine_line(info: dict[str, object]) -> str:
    return "machine: {platform}; {python}; {cpu}; cpu_count={cpu_count}".format(**info)


def configs(args: argparse.Namespace) -> list[Config]:
    """One configuration per --batch; the command count scales with the batch size."""
    scale = args.scale_max
    return [
        Config(batch, args.window, args.commands * min(batch, scale))
        for batch in args.batch or [1, 64]
    ]


def profile(config: Config, sort: str, lines: int) -> None:
    """Run `config` once under cProfile and print its top functions."""
    profiler = cProfile.Profile()
    run = measure(config, profiler)
    print(
        f"\nprofile: batch={config.batch} window={config.window} commands={run.commands}"
        f" instances={run.instances} (cpu {run.cpu_seconds:.2f}s under the profiler)"
    )
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs().sort_stats(sort).print_stats(lines)


def benchmark(args: argparse.Namespace) -> None:
    info = machine()
    if not args.json:
        print(machine_line(info))
        print(f"{len(MEMBERS)} replicas, {len(PAYLOAD)}-byte commands, best of {args.repeat}")
    rows = []
    for config in configs(args):
        runs = [measure(config) for _ in range(args.repeat)]
        row = Summary.of(config, runs).as_dict(info, args.repeat)
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        print(table(rows))


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add = parse.add_argument
    add("--batch", type=int, action="append", help="batch_entries_max; repeat it (1 and 64)")
    add("--window", type=int, default=32, help="proposals_inflight_max (32)")
    add("--commands", type=int, default=DEFAULT_COMMANDS, help="commands at batch 1 (20000)")
    add("--scale-max", type=int, default=DEFAULT_SCALE_MAX, help="batch B: commands*min(B, 8)")
    add("--repeat", type=int, default=3, help="runs per configuration, for best and median (3)")
    add("--json", action="store_true", help="one JSON object per configuration, no table")
    add("--profile", action="store_true", help="profile one run per configuration instead")
    add("--profile-sort", default="cumulative", help="pstats sort key (cumulative; tottime)")
    add("--profile-lines", type=int, default=15, help="functions to print (15)")
    return parse


def main(argv: Sequence[str] | None = None) -> None:
    parse = parser()
    args = parse.parse_args(argv)
    counts = [*(args.batch or []), args.window, args.commands, args.repeat, args.scale_max]
    if min(counts) < 1:
        parse.error("every count must be at least 1")
    if args.profile:
        print(machine_line(machine()))
        for config in configs(args):
            profile(config, args.profile_sort, args.profile_lines)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
