"""The fault suite's client processes: workloads on registers and locks, recorded as histories.

Test support. A worker process runs a few threads, each a client process of the history
with a `BlockingCell` (a session) of its own, doing one operation at a time, and records
each operation's invocation and completion (`chubbypy.testing.faults._history`):

* ``register``: plain reads, writes of unique values, and compare-and-swaps (a read, then a
  write given the generation it saw) on the registers' files;
* ``cached``: reads through a handle, which the session's consistent cache serves when it
  can (Chubby §2.5), and now and then a write through the same handle;
* ``lock``: acquire a lock (with a timeout), write its file fenced by the sequencer a few
  times, read the file, release; a holder whose session ended opens a new handle.

Outcomes: an answer is ``ok``; a refusal that certainly changed nothing is ``fail`` (a
compare-and-swap refused for its generation, a fenced write refused for its sequencer, a lock
refused because it is held, a release refused because it was no longer held); anything else
(a timeout, an unreachable cell, an error the client cannot tell the effect of) is
``unknown``, which the checkers take as "may have taken effect at any time after it was
sent". A read that fails has no effect and is recorded as ``fail``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TextIO

from attrs import evolve

from chubbypy.client import LockTimeout
from chubbypy.client.blocking import BlockingCell, BlockingHandle, connect
from chubbypy.locks import decode_sequencer
from chubbypy.protocol.errors import (
    GenerationMismatch,
    InvalidSequencer,
    LockHeld,
    LockNotHeld,
    SessionExpired,
)
from chubbypy.testing.faults._history import (
    LOCK_PREFIX,
    REGISTER_PREFIX,
    HistoryWriter,
    Kind,
    Op,
    Outcome,
)

__all__ = ["WORKLOADS", "Worker", "keys_of", "path_of", "run_worker"]

WORKLOADS: Final = ("register", "cached", "lock")
TIMEOUT_SECONDS: Final = 4.0
"""One call's deadline, retries included: past it the outcome is unknown."""
REQUEST_TIMEOUT_SECONDS: Final = 1.0
GRACE_SECONDS: Final = 4.0
ACQUIRE_SECONDS: Final = 3.0
THINK_SECONDS_MAX: Final = 0.05
"""A pause between one thread's operations, so that a few threads do not flood the cell."""
HOLD_SECONDS_MAX: Final = 0.3


def path_of(cell: str, key: str) -> str:
    """The file of a register or lock key: ``/ls/<cell>/faults/<name>``."""
    return f"/ls/{cell}/faults/{key.partition('/')[2]}"


def _text(contents: bytes) -> str:
    return contents.decode(errors="replace")


class _Recorder:
    """One client process's history, shared by the threads of a worker (one file)."""

    def __init__(self, stream: TextIO) -> None:
        self._writer = HistoryWriter(stream)
        self._lock = threading.Lock()

    def invoke(self, op: Op) -> Op:
        with self._lock:
            return self._writer.invoke(op)

    def complete(self, op: Op) -> None:
        with self._lock:
            self._writer.complete(op)


class Worker:
    """One thread of a worker process: a client process of the history."""

    def __init__(
        self,
        *,
        process: str,
        workload: str,
        cell_file: Path,
        cell: str,
        keys: list[str],
        recorder: _Recorder,
        stop: threading.Event,
        seed: int,
        log: Callable[[str], None],
    ) -> None:
        assert workload in WORKLOADS, workload
        self.process = process
        self._workload = workload
        self._cell_file = cell_file
        self._cell = cell
        self._keys = keys
        self._recorder = recorder
        self._stop = stop
        self._random = random.Random(seed)
        self._log = log
        self._counter = 0
        self._client: BlockingCell | None = None
        self._handles: dict[str, BlockingHandle] = {}

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Operate until told to stop; then close the client."""
        try:
            self._client = connect(
                str(self._cell_file),
                timeout_seconds=TIMEOUT_SECONDS,
                request_timeout_seconds=REQUEST_TIMEOUT_SECONDS,
                grace_seconds=GRACE_SECONDS,
                cache=self._workload == "cached",
                name=self.process,
            )
            while not self._stop.is_set():
                key = self._random.choice(self._keys)
                if self._workload == "register":
                    self._register(key)
                elif self._workload == "cached":
                    self._cached(key)
                else:
                    self._lock_turn(key)
                self._stop.wait(self._random.uniform(0, THINK_SECONDS_MAX))
        except Exception as error:  # a worker that dies must say why, then the run fails
            self._log(f"{self.process}: stopped by {type(error).__name__}: {error}")
            raise
        finally:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception as error:  # closing under faults may time out
                    self._log(f"{self.process}: close: {type(error).__name__}: {error}")

    def _value(self) -> str:
        self._counter += 1
        return f"{self.process}-{self._counter}"

    def _start(self, key: str, kind: Kind, **fields: object) -> Op:
        op = Op(0, self.process, key, kind, time.monotonic_ns(), **fields)  # type: ignore[arg-type]
        return self._recorder.invoke(op)

    def _end(
        self, op: Op, outcome: Outcome, error: BaseException | None = None, **fields: object
    ) -> Op:
        ended = evolve(
            op,
            complete_ns=time.monotonic_ns(),
            outcome=outcome,
            error=None if error is None else f"{type(error).__name__}: {error}"[:200],
            **fields,  # type: ignore[arg-type]
        )
        self._recorder.complete(ended)
        return ended

    @property
    def client(self) -> BlockingCell:
        assert self._client is not None
        return self._client

    # ------------------------------------------------------------------ registers

    def _register(self, key: str) -> None:
        choice = self._random.random()
        if choice < 0.4:
            self._read(key)
        elif choice < 0.6:
            self._write(key)
        else:
            seen = self._read(key)
            if seen is not None:
                self._cas(key, seen.generation)

    def _read(self, key: str) -> Op | None:
        op = self._start(key, Kind.READ)
        try:
            found = self.client.get_contents_and_stat(path_of(self._cell, key))
        except Exception as error:
            self._end(op, Outcome.FAIL, error)  # a read that failed changed nothing
            return None
        return self._end(
            op, Outcome.OK, value=_text(found.contents), generation=found.stat.content_generation
        )

    def _write(self, key: str) -> None:
        op = self._start(key, Kind.WRITE, value=self._value())
        assert op.value is not None
        try:
            stat = self.client.set_contents(path_of(self._cell, key), op.value.encode())
        except Exception as error:
            self._end(op, Outcome.UNKNOWN, error)
            return
        self._end(op, Outcome.OK, generation=stat.content_generation)

    def _cas(self, key: str, expected: int | None) -> None:
        op = self._start(key, Kind.CAS, value=self._value(), expected=expected)
        assert op.value is not None
        try:
            stat = self.client.set_contents(path_of(self._cell, key), op.value.encode(), expected)
        except GenerationMismatch as error:
            self._end(op, Outcome.FAIL, error)
            return
        except Exception as error:
            self._end(op, Outcome.UNKNOWN, error)
            return
        self._end(op, Outcome.OK, generation=stat.content_generation)

    # ------------------------------------------------------------------ cached reads

    def _handle(self, key: str) -> BlockingHandle:
        handle = self._handles.get(key)
        if handle is None or handle.closed:
            handle = self.client.open(path_of(self._cell, key))
            self._handles[key] = handle
        return handle

    def _forget(self, key: str) -> None:
        """Drop a handle that failed (its session may have ended): the next use opens anew."""
        handle = self._handles.pop(key, None)
        if handle is not None:
            try:
                handle.close()
            except Exception as error:
                self._log(f"{self.process}: closing a failed handle: {type(error).__name__}")

    def _cached(self, key: str) -> None:
        try:
            handle = self._handle(key)
        except Exception as error:
            self._log(f"{self.process}: open {key}: {type(error).__name__}: {error}")
            self._stop.wait(0.2)
            return
        if self._random.random() < 0.1:
            op = self._start(key, Kind.WRITE, value=self._value())
            assert op.value is not None
            try:
                stat = handle.set_contents(op.value.encode())
            except Exception as error:
                self._end(op, Outcome.UNKNOWN, error)
                self._forget(key)
                return
            self._end(op, Outcome.OK, generation=stat.content_generation)
            return
        op = self._start(key, Kind.CACHED_READ)
        try:
            contents, stat = handle.get_contents_and_stat()
        except Exception as error:
            self._end(op, Outcome.FAIL, error)
            self._forget(key)
            return
        self._end(op, Outcome.OK, value=_text(contents), generation=stat.content_generation)

    # ------------------------------------------------------------------ locks

    def _lock_turn(self, key: str) -> None:
        try:
            handle = self._handle(key)
        except Exception as error:
            self._log(f"{self.process}: open {key}: {type(error).__name__}: {error}")
            self._stop.wait(0.2)
            return
        sequencer = self._acquire(key, handle)
        if sequencer is None:
            return
        generation = decode_sequencer(sequencer).lock_generation
        for _ in range(self._random.randint(1, 3)):
            if not self._fenced_write(key, handle, sequencer, generation):
                break
            self._lock_read(key)
            self._stop.wait(self._random.uniform(0, HOLD_SECONDS_MAX))
        self._release(key, handle, generation)

    def _acquire(self, key: str, handle: BlockingHandle) -> bytes | None:
        op = self._start(key, Kind.ACQUIRE)
        try:
            sequencer = handle.acquire(timeout=ACQUIRE_SECONDS)
        except LockTimeout as error:
            # Refused at the end of the wait: certainly not granted. Not answered by any
            # master: perhaps granted, and let go when the handle was closed.
            held = isinstance(error.__cause__, LockHeld)
            self._end(op, Outcome.FAIL if held else Outcome.UNKNOWN, error)
            if not held:
                self._forget(key)
            return None
        except Exception as error:
            self._end(op, Outcome.UNKNOWN, error)
            self._forget(key)
            return None
        generation = decode_sequencer(sequencer).lock_generation
        self._end(op, Outcome.OK, sequencer=generation)
        return sequencer

    def _fenced_write(
        self, key: str, handle: BlockingHandle, sequencer: bytes, generation: int
    ) -> bool:
        op = self._start(key, Kind.FENCED_WRITE, sequencer=generation, value=self._value())
        assert op.value is not None
        try:
            stat = handle.set_contents(op.value.encode(), sequencer=sequencer)
        except InvalidSequencer as error:
            self._end(op, Outcome.FAIL, error)
            return False
        except Exception as error:
            self._end(op, Outcome.UNKNOWN, error)
            return False
        self._end(op, Outcome.OK, generation=stat.content_generation)
        return True

    def _lock_read(self, key: str) -> None:
        op = self._start(key, Kind.LOCK_READ)
        try:
            found = self.client.get_contents_and_stat(path_of(self._cell, key))
        except Exception as error:
            self._end(op, Outcome.FAIL, error)
            return
        self._end(
            op, Outcome.OK, value=_text(found.contents), generation=found.stat.content_generation
        )

    def _release(self, key: str, handle: BlockingHandle, generation: int) -> None:
        op = self._start(key, Kind.RELEASE, sequencer=generation)
        try:
            handle.release()
        except (LockNotHeld, SessionExpired) as error:
            self._end(op, Outcome.FAIL, error)
            self._forget(key)
            return
        except Exception as error:
            self._end(op, Outcome.UNKNOWN, error)
            self._forget(key)
            return
        self._end(op, Outcome.OK)


def run_worker(
    *,
    name: str,
    workload: str,
    threads: int,
    cell_file: Path,
    cell: str,
    keys: list[str],
    history: Path,
    stop: threading.Event,
    seed: int,
    log: Callable[[str], None],
) -> int:
    """Run `threads` client processes of one workload until `stop` is set; the exit status
    (1 if a thread stopped on an error of its own)."""
    failed: list[str] = []
    with history.open("a") as stream:
        recorder = _Recorder(stream)
        workers = [
            Worker(
                process=f"{name}.{i}",
                workload=workload,
                cell_file=cell_file,
                cell=cell,
                keys=keys,
                recorder=recorder,
                stop=stop,
                seed=seed * 1000 + i,
                log=log,
            )
            for i in range(threads)
        ]

        def running(worker: Worker) -> None:
            try:
                worker.run()
            except Exception:
                failed.append(worker.process)

        started = [threading.Thread(target=running, args=(w,), name=w.process) for w in workers]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join()
    return 1 if failed else 0


def keys_of(workload: str, registers: int, locks: int) -> list[str]:
    """The keys a workload works on."""
    if workload == "lock":
        return [f"{LOCK_PREFIX}l{i}" for i in range(locks)]
    return [f"{REGISTER_PREFIX}r{i}" for i in range(registers)]
