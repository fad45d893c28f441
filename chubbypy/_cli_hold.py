"""The ``chubbypy`` commands that last: ``watch``, ``lock -- CMD`` and ``elect -- CMD``.

Shell (STYLE §1), beside `chubbypy.cli`, which parses their arguments. They run on the
blocking client (`chubbypy.client.blocking`): `watch` prints a handle's events as they
come; `lock` and `elect` run a command as a child process while this process holds a
lock (or leads an election), with the sequencer in ``CHUBBY_SEQUENCER``, and stop it if the
lock (the leadership) is lost.

Supervising the child: it inherits standard input, output and error and the environment,
plus ``CHUBBY_SEQUENCER`` (the sequencer, hex) and ``CHUBBY_LOCK_PATH``. SIGTERM and SIGHUP
sent to chubbypy are passed on to it; Ctrl-C reaches it directly (it is in the terminal's
process group), and chubbypy waits for it. When the lock is lost (the session expired, the
file was deleted) chubbypy sends it SIGTERM, then SIGKILL after ``--kill-after`` seconds,
and exits 1. While the session is in jeopardy (no word from the master) a warning is
printed and the child keeps running for as long as ``--lock-delay``, which holds the lock
back from others for that long after the master may have expired the session: the lock
survives a master fail-over that ends in time; past that, it counts as lost (at once
without a lock-delay), since another may hold it. Otherwise chubbypy exits with the child's
status (128 + N for a child killed by signal N), having released the lock.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import IO, Any, BinaryIO, Final, Protocol

from chubbypy._cli_text import json_text, shown
from chubbypy._exit_codes import EXIT_CANNOT_RUN, EXIT_FAILED, EXIT_NOT_ACQUIRED
from chubbypy.client._errors import LockTimeout
from chubbypy.client._state import SessionState
from chubbypy.protocol.errors import ChubbyError, SessionExpired
from chubbypy.protocol.session import EventKind, EventMask, SessionEvent

__all__ = [
    "EXIT_LOCK_LOST",
    "EXIT_NOT_ACQUIRED",
    "SEQUENCER_VARIABLE",
    "run_elected",
    "run_locked",
    "watch",
]

EXIT_LOCK_LOST: Final = EXIT_FAILED
"""The lock (the leadership) was lost while the command ran: it was stopped."""
SEQUENCER_VARIABLE: Final = "CHUBBY_SEQUENCER"
LOCK_PATH_VARIABLE: Final = "CHUBBY_LOCK_PATH"
POLL_SECONDS: Final = 0.2
WATCHED: Final = (
    EventMask.CONTENTS_MODIFIED
    | EventMask.CHILD_CHANGED
    | EventMask.LOCK_ACQUIRED
    | EventMask.CONFLICTING_LOCK
    | EventMask.HANDLE_INVALID
)


class Signal(Protocol):
    """What `supervise` watches: a `threading.Event` set when the child must stop."""

    def is_set(self) -> bool: ...


Emit = Callable[[dict[str, Any]], None]
"""Writes one JSON document (``--json``) or nothing."""


# ----------------------------------------------------------------------------- watch


def watch(
    client: Any, path: str, *, count: int | None, stdout: BinaryIO, stderr: IO[str], emit: Emit,
    as_json: bool,
) -> int:  # fmt: skip
    """Print the events of `path` until Ctrl-C (or `count` events); see ``chubbypy watch``."""
    seen = 0
    handle = client.open(path, events=WATCHED)
    events = handle.events()
    print(f"chubbypy watch: watching {path} (Ctrl-C stops)", file=stderr, flush=True)
    try:
        while count is None or seen < count:
            try:
                event: SessionEvent = events.next()
            except StopIteration:
                return 0
            except SessionExpired:
                print(f"chubbypy watch: the session expired; events may have been missed; "
                      f"watching {path} again", file=stderr, flush=True)  # fmt: skip
                handle = client.open(path, events=WATCHED)
                events = handle.events()
                continue
            seen += 1
            _print_event(event, stdout, emit, as_json)
            if event.kind is EventKind.HANDLE_INVALID:
                print(f"chubbypy watch: {path} was deleted", file=stderr, flush=True)
                return 1
    except KeyboardInterrupt:
        return 0
    finally:
        events.close()
        _quietly(handle.close)
    return 0


def _print_event(event: SessionEvent, stdout: BinaryIO, emit: Emit, as_json: bool) -> None:
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    if as_json:
        emit({"event": {"kind": event.kind.name, "path": event.path or None,
                        "sequence": event.sequence, "time": now}})  # fmt: skip
        return
    note = " (events may have been missed: read again)" if _failover(event) else ""
    stdout.write(f"{now} {event.kind.name} {shown(event.path)}{note}\n".encode())
    stdout.flush()


def _failover(event: SessionEvent) -> bool:
    return event.kind is EventKind.MASTER_FAILOVER


# ----------------------------------------------------------------------------- lock


def run_locked(
    client: Any, path: str, command: Sequence[str], *, shared: bool, timeout: float | None,
    try_only: bool, lock_delay: float, kill_after: float, stderr: IO[str], emit: Emit,
) -> int:  # fmt: skip
    """Run `command` while holding the lock of `path`; see ``chubbypy lock``."""
    lock = client.lock(path, shared=shared, timeout=0.0 if try_only else timeout,
                       lock_delay_seconds=lock_delay)  # fmt: skip
    try:
        held = lock.acquire()
    except LockTimeout as refused:
        print(f"chubbypy lock: {path}: not acquired: {shown(str(refused))}", file=stderr)
        emit({"path": path, "acquired": False, "exit_code": EXIT_NOT_ACQUIRED})
        return EXIT_NOT_ACQUIRED
    mode = "shared" if shared else "exclusive"
    print(f"chubbypy lock: holding {path} ({mode}); running {command[0]}", file=stderr,
          flush=True)  # fmt: skip
    jeopardy = _warn_in_jeopardy(client, "lock", stderr)
    try:
        status = supervise(command, _child_environment(path, held.sequencer), held.lost,
                           kill_after=kill_after, stderr=stderr)  # fmt: skip
    finally:
        client.on_state.remove(jeopardy)
        _quietly(held.release)
    lost = held.lost.is_set()
    if lost:
        print(f"chubbypy lock: {held.lost_reason}: stopped {command[0]}", file=stderr)
    code = EXIT_LOCK_LOST if lost else status
    emit({"path": path, "acquired": True, "sequencer": held.sequencer.hex(), "lost": lost,
          "exit_status": status, "exit_code": code})  # fmt: skip
    return code


# ----------------------------------------------------------------------------- elect


def run_elected(
    client: Any, path: str, identity: str, command: Sequence[str], *, timeout: float | None,
    lock_delay: float, kill_after: float, stderr: IO[str], emit: Emit,
) -> int:  # fmt: skip
    """Run `command` while this process leads the election on `path`; see ``chubbypy
    elect``."""
    election = client.election(path, identity, lock_delay_seconds=lock_delay)
    deposed = threading.Event()
    election.on_deposed.append(lambda reason: deposed.set())
    print(f"chubbypy elect: campaigning for {path} as {identity!r}", file=stderr, flush=True)
    try:
        sequencer = election.campaign(timeout=timeout)
    except LockTimeout as timed_out:
        print(f"chubbypy elect: {path}: not elected: {timed_out}", file=stderr)
        emit({"path": path, "elected": False, "exit_code": EXIT_NOT_ACQUIRED})
        return EXIT_NOT_ACQUIRED
    print(f"chubbypy elect: leading {path}; running {command[0]}", file=stderr, flush=True)
    jeopardy = _warn_in_jeopardy(client, "elect", stderr)
    lost = False
    try:
        status = supervise(command, _child_environment(path, sequencer), deposed,
                           kill_after=kill_after, stderr=stderr)  # fmt: skip
    finally:
        lost = deposed.is_set()  # before the resignation below deposes it too
        client.on_state.remove(jeopardy)
        if not lost:
            _quietly(election.resign)
    if lost:
        print(f"chubbypy elect: deposed from {path}: stopped {command[0]}", file=stderr)
    code = EXIT_LOCK_LOST if lost else status
    emit({"path": path, "elected": True, "sequencer": sequencer.hex(), "deposed": lost,
          "exit_status": status, "exit_code": code})  # fmt: skip
    return code


# ----------------------------------------------------------------------------- the child


def supervise(
    command: Sequence[str], environment: dict[str, str], stop: Signal, *, kill_after: float,
    stderr: IO[str],
) -> int:  # fmt: skip
    """Run `command` until it exits (its exit status) or `stop` is set (it is stopped:
    SIGTERM, then SIGKILL after `kill_after` seconds). Not started at all if `stop` is
    set already (1, as for a loss while it ran)."""
    if stop.is_set():
        return EXIT_LOCK_LOST
    try:
        child = subprocess.Popen(list(command), env=environment)
    except OSError as error:
        print(f"chubbypy: cannot run {command[0]}: {error.strerror}", file=stderr)
        return EXIT_CANNOT_RUN
    restore = _pass_signals_to(child)
    try:
        while True:
            try:
                return _status(child.wait(timeout=POLL_SECONDS))
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:
                continue  # Ctrl-C reached the child too: wait for it to end
            if stop.is_set():
                return _stop(child, kill_after)
    finally:
        restore()


def _stop(child: subprocess.Popen[bytes], kill_after: float) -> int:
    child.terminate()
    try:
        return _status(child.wait(timeout=kill_after))
    except subprocess.TimeoutExpired:
        child.kill()
        return _status(child.wait())


def _status(returncode: int) -> int:
    """A shell's view of how the child ended: its code, or 128 + the signal that ended it."""
    return 128 - returncode if returncode < 0 else returncode


def _pass_signals_to(child: subprocess.Popen[bytes]) -> Callable[[], None]:
    """Hand SIGTERM and SIGHUP on to `child` while it runs; the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers (tests run elsewhere)

    def forward(number: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(number)

    previous = {
        number: signal.signal(number, forward) for number in (signal.SIGTERM, signal.SIGHUP)
    }

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    return restore


def _child_environment(path: str, sequencer: bytes) -> dict[str, str]:
    return {**os.environ, SEQUENCER_VARIABLE: sequencer.hex(), LOCK_PATH_VARIABLE: path}


def _warn_in_jeopardy(client: Any, command: str, stderr: IO[str]) -> Callable[[Any], None]:
    """Say when the session is in jeopardy and when it is safe again; the callback added."""

    def changed(state: SessionState) -> None:
        if state is SessionState.JEOPARDY:
            message = "the session is in jeopardy (no word from the master): the lock may be lost"
            print(f"chubbypy {command}: {message}", file=stderr, flush=True)
        elif state is SessionState.SAFE:
            print(f"chubbypy {command}: the session is safe again", file=stderr, flush=True)

    client.on_state.append(changed)
    return changed


def _quietly(action: Callable[[], object]) -> None:
    """Let go of something on the way out; the session's end does it anyway if this fails."""
    with contextlib.suppress(ChubbyError, OSError):
        action()


def json_line(stdout: BinaryIO, document: dict[str, Any]) -> None:
    """One JSON document on one line (``watch --json`` prints one per event)."""
    stdout.write(json_text(document).encode() + b"\n")
    stdout.flush()
