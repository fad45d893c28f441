"""Helpers for the namespace tests: a machine that numbers its own log indices."""

from __future__ import annotations

from chubbypy.namespace import DEFAULT_LIMITS, NamespaceLimits, NamespaceMachine
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Contents,
    GetContentsAndStat,
    GetStat,
    Listing,
    LogWrite,
    MultiResult,
    Read,
    ReadDir,
    ReadResult,
    Stat,
    Write,
    WriteResult,
    Written,
)

CELL = "c"
ROOT = "/ls/c"


def at(*components: str) -> str:
    """The name of `components` below the cell root."""
    return "/".join((ROOT, *components))


class Cell:
    """A NamespaceMachine fed one write per log index, with assertions for results."""

    def __init__(self, limits: NamespaceLimits = DEFAULT_LIMITS) -> None:
        self.machine = NamespaceMachine(CELL, limits)
        self.index = 0

    def write(self, write: LogWrite, *, same_entry: bool = False) -> WriteResult:
        """Apply `write` at the next log index (or the current one, as in a batch)."""
        if not same_entry or self.index == 0:
            self.index += 1
        return self.machine.apply_write(LogIndex(self.index), write).result

    def ok(self, write: LogWrite, *, same_entry: bool = False) -> Stat | None:
        result = self.write(write, same_entry=same_entry)
        assert isinstance(result, Written), result
        return result.stat

    def multi(self, write: Write) -> MultiResult:
        result = self.write(write)
        assert isinstance(result, MultiResult), result
        return result

    def fails(self, write: LogWrite) -> Failure:
        """Apply `write`, which must fail and change nothing."""
        before = self.machine.snapshot()
        result = self.write(write)
        assert isinstance(result, Failure), result
        assert self.machine.snapshot() == before
        return result

    def code(self, write: LogWrite) -> ErrorCode:
        return self.fails(write).code

    def read(self, query: Read) -> ReadResult:
        return self.machine.read(query)

    def stat(self, path: str) -> Stat:
        result = self.read(GetStat(path))
        assert isinstance(result, Stat), result
        return result

    def contents(self, path: str) -> bytes:
        result = self.read(GetContentsAndStat(path))
        assert isinstance(result, Contents), result
        return result.contents

    def listing(self, path: str, after: str = "", limit: int = 1000) -> Listing:
        result = self.read(ReadDir(path, after, limit))
        assert isinstance(result, Listing), result
        return result

    def names(self, path: str) -> list[str]:
        return [entry.name for entry in self.listing(path).entries]

    def read_code(self, query: Read) -> ErrorCode:
        result = self.read(query)
        assert isinstance(result, Failure), result
        return result.code


def every_read(machine: NamespaceMachine) -> dict[str, tuple[ReadResult, ...]]:
    """Every read of every node (a directory read whole), to compare two machines."""
    answers = {}
    for record in machine.records():
        queries: list[Read] = [GetStat(record.path), GetContentsAndStat(record.path)]
        queries.append(ReadDir(record.path, "", DEFAULT_LIMITS.readdir_entries_max))
        answers[record.path] = tuple(machine.read(q) for q in queries)
    return answers
