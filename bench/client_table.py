"""The applier's client table: the cost of a registration, and of a write, at N clients.

What is measured: one `Applier` over a state machine that does nothing, fed log entries of
`--batch` commands each, as every replica applies them. The table is first filled to
`clients_max` = N clients; then each registration evicts one (the least recently used), and
each write is a command of a registered client, so the figures are the table's own
bookkeeping per command, on every replica, in the apply path: no Paxos, store or codec.

Issue 12: a flood of registrations made the master lose its lease, because each one past
`clients_max` scanned the whole table for the client to evict (about 1 ms at 10,000 clients,
on every replica). The table now keeps its eviction order, so the cost no longer grows with N.

Run: `.venv/bin/python bench/client_table.py [--clients 1000 --clients 10000] [--batch 64]`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from chubbypy.paxos import Applier
from chubbypy.protocol import (
    NO_CLIENT,
    NO_EPOCH,
    Ballot,
    ClientId,
    Command,
    Entry,
    LogIndex,
    ReplicaId,
    Value,
    ValueKind,
)

BALLOT = Ballot(1, ReplicaId("r1"))


class NullMachine:
    """A state machine that does nothing, so that only the applier's own work is timed."""

    def apply(self, index: LogIndex, payload: bytes) -> tuple[bytes, object]:
        return b"", None

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass

    def checksum(self) -> bytes:
        return b""


class Feed:
    """An applier with `clients` registered clients, fed numbered entries."""

    def __init__(self, clients: int, batch: int) -> None:
        self.applier = Applier(NullMachine(), clients_max=clients, client_results_max=64)
        self.batch = batch
        self.index = 0
        self.nonce = 0
        self.sequences: dict[ClientId, int] = {}
        while self.nonce < clients:
            self.apply(self.registrations())

    def apply(self, commands: list[Command]) -> None:
        self.index += 1
        value = Value(NO_EPOCH, ValueKind.COMMANDS, tuple(commands))
        self.applier.apply(Entry(LogIndex(self.index), BALLOT, value))

    def registrations(self) -> list[Command]:
        first, self.nonce = self.nonce + 1, self.nonce + self.batch
        return [Command(NO_CLIENT, nonce, b"") for nonce in range(first, self.nonce + 1)]

    def writes(self, first_client: int, clients: int) -> list[Command]:
        commands = []
        for offset in range(self.batch):
            client = ClientId((first_client + offset) % clients + 1)
            sequence = self.sequences.get(client, 0) + 1
            self.sequences[client] = sequence
            commands.append(Command(client, sequence, b"x", sequence))
        return commands


def per_command_us(clients: int, batch: int, kind: str, entries: int) -> float:
    feed = Feed(clients, batch)
    batches = [
        feed.registrations() if kind == "registration" else feed.writes(n * batch, clients)
        for n in range(entries)
    ]
    started = time.perf_counter()
    for commands in batches:
        feed.apply(commands)
    return (time.perf_counter() - started) / (entries * batch) * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, action="append", help="table sizes (repeatable)")
    parser.add_argument("--batch", type=int, default=64, help="commands per entry (64)")
    parser.add_argument("--entries", type=int, default=40, help="entries timed per figure (40)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (3)")
    args = parser.parse_args(argv)
    print(f"{'clients':>8} {'batch':>6} {'µs/registration':>16} {'µs/write':>9}")
    for clients in args.clients or [1_000, 10_000, 100_000]:
        figures = [
            min(per_command_us(clients, args.batch, kind, args.entries) for _ in range(args.repeat))
            for kind in ("registration", "write")
        ]
        print(f"{clients:>8} {args.batch:>6} {figures[0]:>16.1f} {figures[1]:>9.2f}")


if __name__ == "__main__":
    main()
