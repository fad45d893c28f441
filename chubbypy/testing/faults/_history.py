"""Histories: what each client process of the fault suite did, and when, one line per event.

Test support (the fault suite's records). A worker writes an *invoke* line before each call
to the cell and a *complete* line after it, each a JSON object, flushed at once: a worker
that dies mid-call leaves an invoke without its completion, which reads back as an operation
of unknown outcome (it may or may not have taken effect), never as one that did not happen.
Times are `time.monotonic_ns()`, one clock for every process of the machine (Linux's
CLOCK_MONOTONIC is not per process, nor per network namespace), so real-time order across
processes is the order of these numbers.

An operation's outcome is one of three (Jepsen's ok / fail / info):

* ``ok``: it took effect once, with the result recorded;
* ``fail``: it certainly took no effect (a compare-and-swap refused for its generation, a
  fenced write refused for its sequencer, a lock not granted);
* ``unknown``: it may have taken effect, at any moment after its invocation, even after the
  client gave up (a timeout, an unreachable cell, an outcome the client cannot know).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

from attrs import asdict, evolve, frozen

__all__ = [
    "LOCK_PREFIX",
    "READ_KINDS",
    "REGISTER_PREFIX",
    "History",
    "HistoryWriter",
    "Kind",
    "Op",
    "Outcome",
    "parse_lines",
    "read_history",
]

REGISTER_PREFIX: Final = "register/"
"""The keys of registers: ``register/<name>``, the file ``<cell>/faults/<name>``."""
LOCK_PREFIX: Final = "lock/"
"""The keys of locks: ``lock/<name>``, the file ``<cell>/faults/<name>``."""


class Kind(enum.Enum):
    """What an operation did; a register's or a lock's."""

    READ = "read"
    """A register read from the master (a plain call): `value` and `generation` seen."""
    CACHED_READ = "cached_read"
    """A register read through a handle, served from the session's cache when it can be."""
    WRITE = "write"
    """A register write of `value`; its `generation` is the file's content generation after."""
    CAS = "cas"
    """A write of `value` if the file is at content generation `expected`."""
    ACQUIRE = "acquire"
    """A lock's acquisition; `sequencer` is the lock generation its sequencer names."""
    RELEASE = "release"
    """The release of the acquisition `sequencer`."""
    FENCED_WRITE = "fenced_write"
    """A write of `value` to the lock's file, fenced by the sequencer of generation
    `sequencer`; its `generation` is the file's content generation after."""
    LOCK_READ = "lock_read"
    """A plain read of the lock's file: `value` and `generation` seen."""


class Outcome(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@frozen
class Op:
    """One operation of one client process on one register or lock (its `key`)."""

    id: int
    """Unique in its history file (the invoke and the completion share it)."""
    process: str
    key: str
    kind: Kind
    invoke_ns: int
    complete_ns: int | None = None
    """When the answer came, or the client gave up (for an unknown outcome); None for an
    invocation never completed (the worker died)."""
    outcome: Outcome = Outcome.UNKNOWN
    value: str | None = None
    """The contents written, or read (None: an empty file)."""
    expected: int | None = None
    generation: int | None = None
    sequencer: int | None = None
    error: str | None = None
    """Why it failed, or why its outcome is unknown, as the client said."""

    @property
    def pending(self) -> bool:
        """Whether it may have taken effect at any time after its invocation."""
        return self.outcome is Outcome.UNKNOWN

    def describe(self) -> str:
        """One line for a person: who did what, when, and what came of it."""
        arguments = []
        if self.expected is not None:
            arguments.append(f"expected={self.expected}")
        if self.sequencer is not None:
            arguments.append(f"sequencer={self.sequencer}")
        if self.value is not None and self.kind not in (Kind.READ, Kind.CACHED_READ):
            arguments.append(f"value={self.value!r}")
        result = self.outcome.value
        if self.outcome is Outcome.OK and self.kind in READ_KINDS:
            result += f" {self.value!r} at generation {self.generation}"
        elif self.outcome is Outcome.OK and self.generation is not None:
            result += f" generation {self.generation}"
        if self.error:
            result += f" ({self.error})"
        ended = "never" if self.complete_ns is None else f"{self.complete_ns / 1e9:.6f}"
        return (
            f"#{self.id} {self.process} {self.kind.value}({', '.join(arguments)}) on "
            f"{self.key} [{self.invoke_ns / 1e9:.6f} .. {ended}] -> {result}"
        )


READ_KINDS: Final = frozenset({Kind.READ, Kind.CACHED_READ, Kind.LOCK_READ})


@frozen
class History:
    """Every operation of a run, and each object's state before the first of them."""

    ops: tuple[Op, ...]
    initial: dict[str, tuple[str | None, int]]
    """Per key: the contents and content generation its file had when the workload began."""

    def objects(self) -> list[str]:
        """The registers and locks it names, each by its key."""
        return sorted({op.key for op in self.ops} | set(self.initial))

    def of(self, key: str) -> list[Op]:
        return [op for op in self.ops if op.key == key]


class HistoryWriter:
    """Appends one process's invocations and completions to a history file."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._next_id = 1

    def invoke(self, op: Op) -> Op:
        """Record that `op` (its id given here) is being sent; the op, with its id."""
        op = evolve(op, id=self._next_id)
        self._next_id += 1
        self._line({"event": "invoke", **_plain(op)})
        return op

    def complete(self, op: Op) -> None:
        """Record `op`'s outcome (an op returned by `invoke`, evolved)."""
        self._line({"event": "complete", **_plain(op)})

    def _line(self, document: dict[str, Any]) -> None:
        self._stream.write(json.dumps(document, separators=(",", ":")) + "\n")
        self._stream.flush()


def _plain(op: Op) -> dict[str, Any]:
    document = asdict(op)
    document["kind"] = op.kind.value
    document["outcome"] = op.outcome.value
    return {key: value for key, value in document.items() if value is not None}


def _op(document: dict[str, Any]) -> Op:
    fields = {key: value for key, value in document.items() if key != "event"}
    fields["kind"] = Kind(fields["kind"])
    fields["outcome"] = Outcome(fields.get("outcome", Outcome.UNKNOWN.value))
    return Op(**fields)


def parse_lines(lines: Iterable[str], source: str) -> Iterator[Op]:
    """The operations of one history file: each completion, and each invocation that was
    never completed (as unknown); ids are made unique across files by `source`."""
    invoked: dict[int, Op] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            op = _op(document)
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{source}:{number}: not a history line: {error}") from error
        if document["event"] == "invoke":
            invoked[op.id] = op
        else:
            invoked.pop(op.id, None)
            yield op
    for op in invoked.values():
        yield evolve(op, outcome=Outcome.UNKNOWN, complete_ns=None, error="never completed")


def read_history(directory: Path) -> History:
    """The history of a run: every ``*.history.jsonl`` in `directory`, and the initial
    states in ``initial.json``; op ids are renumbered to be unique across files."""
    initial_path = directory / "initial.json"
    initial = {
        key: (value, generation)
        for key, (value, generation) in json.loads(initial_path.read_text()).items()
    }
    ops: list[Op] = []
    for path in sorted(directory.glob("*.history.jsonl")):
        with path.open() as lines:
            ops.extend(parse_lines(lines, path.name))
    ops.sort(key=lambda op: (op.invoke_ns, op.process))
    return History(tuple(evolve(op, id=i) for i, op in enumerate(ops, 1)), initial)
