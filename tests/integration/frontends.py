"""Drivers that let one synchronous test run against each client front end.

Test support for STYLE §11 "integration/". The three front ends (`chubbypy.client.Cell` over
Twisted, `chubbypy.client.aio`, `chubbypy.client.blocking`) share their method names but
not how a call is made or waited for. A `Front` hides only that:

* `connect` makes a client of a cell file where that front end wants it made (the Twisted
  `Cell` on the client library's reactor thread, the `AsyncCell` inside a coroutine on an
  event loop running in a thread of its own, the `BlockingCell` in the test's thread);
* `call(function, *args)` runs any call of the front end's objects there and waits for its
  result (a Deferred, a coroutine, or a plain value), re-raising its exception; `start`
  does the same without waiting, as a `concurrent.futures.Future`;
* `next(stream, timeout)` reads one item of an event, state or leadership stream;
* `lock(cell, path, ...)` is a ``with`` block entered and left through the front end's own
  ``with`` / ``async with`` (so its context-manager code is what runs; `FrontLock.start`
  begins entering without waiting), and `lost_is_set` reads its own kind of lost signal;
* `election(cell, path, identity)` makes a candidate (`Election` for Twisted, whose `Cell`
  has no `election` method).

Everything else a test does is the front end's own calls, by their shared names.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from types import TracebackType
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chubbypy.client import Cell, Election, aio
from chubbypy.client.blocking import connect as blocking_connect
from chubbypy.client.blocking import running_reactor
from chubbypy.config import load_config

__all__ = [
    "CALL_SECONDS",
    "ENDED",
    "FRONTS",
    "AsyncioFront",
    "BlockingFront",
    "Front",
    "FrontLock",
    "TwistedFront",
    "assert_waiting",
    "eventually",
]

CALL_SECONDS: Final = 10.0
"""The most a driver waits for one call: far more than any call of a healthy cell takes."""

ENDED: Final = object()
"""What `Front.next` gives once a stream has ended cleanly."""


def _settle(future: Future[Any], outcome: object) -> None:
    """Complete `future` with `outcome` (a value, or a Twisted `Failure` or an exception to
    raise), unless the waiter gave up on it already."""
    with contextlib.suppress(InvalidStateError):
        if isinstance(outcome, Failure):
            future.set_exception(outcome.value)
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class Front:
    """How one front end's calls are made and waited for; see the module docstring."""

    name: str

    def connect(self, config_path: str, **options: Any) -> Any:
        """A client of the cell in `config_path`; `options` are `Cell`'s."""
        raise NotImplementedError

    def start(self, function: Callable[..., Any], *args: Any, **kw: Any) -> Future[Any]:
        """`function(*args, **kw)` started where the front end's objects live; its result,
        once any Deferred or coroutine it returned is done."""
        raise NotImplementedError

    def call(self, function: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """`function(*args, **kw)`'s result (see `start`), within `CALL_SECONDS`."""
        return self.wait(self.start(function, *args, **kw), CALL_SECONDS)

    def wait(self, pending: Future[Any], timeout: float) -> Any:
        """The result of a started call; `TimeoutError` (the call then cancelled) if it
        takes longer than `timeout` seconds."""
        try:
            return pending.result(timeout)
        except TimeoutError:
            pending.cancel()
            raise

    def next(self, stream: Any, timeout: float = CALL_SECONDS) -> Any:
        """The next item of `stream`, `ENDED` if it ended cleanly, or `TimeoutError` if
        nothing came within `timeout` seconds (the stream goes on)."""
        try:
            return self.wait(self.start(stream.next), timeout)
        except StopAsyncIteration:
            return ENDED

    def election(self, cell: Any, path: str, identity: str) -> Any:
        """A candidate advertising `identity` in the election on file `path`."""
        return self.call(cell.election, path, identity)

    def lock(self, cell: Any, path: str, **options: Any) -> FrontLock:
        """The lock of `path` (`options` as `Cell.lock`'s), as a ``with`` block."""
        return FrontLock(self, self.call(cell.lock, path, **options))

    def enter(self, manager: Any) -> Any:
        """Enter the front end's own lock context manager."""
        return self.call(manager.__aenter__)

    def start_enter(self, manager: Any) -> Future[Any]:
        """Start entering the front end's own lock context manager, without waiting."""
        return self.start(manager.__aenter__)

    def exit(
        self,
        manager: Any,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> Any:
        """Leave the front end's own lock context manager."""
        return self.call(manager.__aexit__, kind, error, traceback)

    def lost_is_set(self, held: Any) -> bool:
        """Whether the front end's own lost signal of a held lock is set."""
        raise NotImplementedError

    def close(self, cell: Any) -> None:
        """Close a client made by `connect`."""
        self.call(cell.close)

    def shut(self) -> None:
        """Stop what the driver itself runs (an event loop), once its clients are closed."""


class FrontLock:
    """A front end's lock context manager, entered and left from the test's thread."""

    def __init__(self, front: Front, manager: Any) -> None:
        self.front = front
        self.manager = manager

    def __enter__(self) -> Any:
        return self.front.enter(self.manager)

    def start(self) -> Future[Any]:
        """Begin entering without waiting (a lock held elsewhere); its held lock, once
        granted. Leave with ``__exit__`` as usual."""
        return self.front.start_enter(self.manager)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return bool(self.front.exit(self.manager, kind, error, traceback))


class TwistedFront(Front):
    """The Twisted `Cell`, run on the client library's reactor thread: each call is made
    there, and its Deferred awaited from the test's thread."""

    name = "twisted"

    def __init__(self) -> None:
        self.reactor: Any = running_reactor()

    def connect(self, config_path: str, **options: Any) -> Cell:
        config = load_config(config_path)
        made: Cell = self.call(lambda: Cell.from_config(self.reactor, config, **options))
        return made

    def start(self, function: Callable[..., Any], *args: Any, **kw: Any) -> Future[Any]:
        future: Future[Any] = Future()
        running: list[Deferred[Any]] = []

        def begin() -> None:
            try:
                result = function(*args, **kw)
            except BaseException as error:
                _settle(future, error)
                return
            if inspect.iscoroutine(result):
                result = Deferred.fromCoroutine(result)
            if not isinstance(result, Deferred):
                _settle(future, result)
                return
            running.append(result)
            result.addBoth(lambda outcome: _settle(future, outcome))

        def cancel_running() -> None:
            for deferred in running:
                deferred.cancel()

        def cancelled(done: Future[Any]) -> None:
            if done.cancelled():
                self.reactor.callFromThread(cancel_running)

        future.add_done_callback(cancelled)
        self.reactor.callFromThread(begin)
        return future

    def election(self, cell: Any, path: str, identity: str) -> Election:
        made: Election = self.call(Election, cell, path, identity)
        return made

    def lost_is_set(self, held: Any) -> bool:
        called: bool = self.call(lambda: held.lost.called)
        return called


class AsyncioFront(Front):
    """`chubbypy.client.aio`, on an asyncio event loop running in a thread of its own: each
    call is made in a coroutine on that loop (`asyncio.run_coroutine_threadsafe`)."""

    name = "asyncio"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="frontends-asyncio", daemon=True
        )
        self._thread.start()

    def connect(self, config_path: str, **options: Any) -> aio.AsyncCell:
        made: aio.AsyncCell = self.call(aio.connect, config_path, **options)
        return made

    def start(self, function: Callable[..., Any], *args: Any, **kw: Any) -> Future[Any]:
        async def run() -> Any:
            result = function(*args, **kw)
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop)

    def lost_is_set(self, held: Any) -> bool:
        done: bool = self.call(held.lost.done)
        return done

    def shut(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_SECONDS)
        self.loop.close()


class BlockingFront(Front):
    """`chubbypy.client.blocking`: each call is made in the test's own thread (a started
    one in a thread of its own), as a program using it would."""

    name = "blocking"

    def connect(self, config_path: str, **options: Any) -> Any:
        return blocking_connect(config_path, **options)

    def call(self, function: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return function(*args, **kw)

    def start(self, function: Callable[..., Any], *args: Any, **kw: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            try:
                result = function(*args, **kw)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)

        threading.Thread(target=run, name="frontends-blocking", daemon=True).start()
        return future

    def next(self, stream: Any, timeout: float = CALL_SECONDS) -> Any:
        try:
            return stream.next(timeout=timeout)
        except StopIteration:
            return ENDED

    def enter(self, manager: Any) -> Any:
        return manager.__enter__()

    def start_enter(self, manager: Any) -> Future[Any]:
        return self.start(manager.__enter__)

    def exit(
        self,
        manager: Any,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> Any:
        return manager.__exit__(kind, error, traceback)

    def lost_is_set(self, held: Any) -> bool:
        is_set: bool = held.lost.is_set()
        return is_set


FRONTS: Final = {front.name: front for front in (TwistedFront, AsyncioFront, BlockingFront)}
"""Each driver class by its front end's name (the test ids)."""


def eventually(condition: Callable[[], bool], what: str, timeout: float = CALL_SECONDS) -> None:
    """Wait until `condition()` is true, polling; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


def assert_waiting(pending: Future[Any], seconds: float = 0.3) -> None:
    """Asserts that a started call is still waiting `seconds` later."""
    time.sleep(seconds)
    assert not pending.done(), f"finished early: {pending}"
