"""What happens to a session, a handle or an election, as an async iterator over Twisted.

Shell (STYLE §6). An `EventStream` is what `Cell.events()`, `Cell.states()`,
`Handle.events()` and `Election.changes()` return: items are queued in order as they
happen, from the moment the stream is made, and read with ``async for`` in a coroutine
(``Deferred.fromCoroutine``), or one at a time with `next()`, which returns a Deferred for
code written with callbacks. A stream ends when what it follows ends (a handle closed, a
session over): the loop stops, or with the reason (say `SessionExpired`) raised from it.
`close()` stops it early. The asyncio and blocking clients wrap the same streams.

A stream nobody reads must not grow without bound: past `limit` items waiting it fails
with `StreamOverflow` (the reader learns it missed some, as with a master fail-over, and
rescans), instead of keeping them all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

__all__ = ["STREAM_ITEMS_MAX", "EventStream", "StreamOverflow", "guarded"]

_T = TypeVar("_T")

STREAM_ITEMS_MAX = 10_000
"""Items a stream keeps for a reader that has not taken them."""


_log = Logger()


def guarded(callback: Callable[[_T], object], value: _T, what: str) -> None:
    """Run an application's callback (`what` names it in the log): its exception is
    logged, not let loose in the library, so the other callbacks and streams go on."""
    try:
        callback(value)
    except Exception:
        _log.failure("{what} raised", what=what)


class StreamOverflow(Exception):
    """A stream's reader fell more than its limit behind: items were dropped. Rescan."""


class EventStream(Generic[_T]):
    """An ordered queue of items as an async iterator; see the module docstring."""

    def __init__(
        self, on_close: Callable[[], None] | None = None, *, limit: int = STREAM_ITEMS_MAX
    ) -> None:
        self._items: deque[_T] = deque()
        self._readers: deque[Deferred[_T]] = deque()
        self._ended = False
        self._error: BaseException | None = None
        self._on_close = on_close
        self._limit = limit

    @property
    def ended(self) -> bool:
        """Nothing more will come (items already queued may still be read)."""
        return self._ended

    def push(self, item: _T) -> None:
        """Queue `item` (or hand it to a waiting reader); ignored once ended."""
        if self._ended:
            return
        if self._readers:
            self._readers.popleft().callback(item)
            return
        self._items.append(item)
        if len(self._items) > self._limit:
            self._items.clear()
            self.end(StreamOverflow(f"more than {self._limit} items were not read"))

    def end(self, error: BaseException | None = None) -> None:
        """No more items: readers get what is queued, then the end (or `error`)."""
        if self._ended:
            return
        self._ended = True
        self._error = error
        readers, self._readers = self._readers, deque()
        for reader in readers:
            reader.errback(self._ending())
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    def close(self) -> None:
        """Stop following: queued items are dropped and the iteration ends."""
        self._items.clear()
        self.end()

    def next(self) -> Deferred[_T]:
        """The next item, when there is one; fails `StopAsyncIteration` (or with the reason
        the stream ended) once it ended and nothing is queued."""
        if self._items:
            return succeed(self._items.popleft())
        if self._ended:
            return fail(self._ending())
        reader: Deferred[_T] = Deferred(lambda d: self._readers.remove(d))
        self._readers.append(reader)
        return reader

    def __aiter__(self) -> EventStream[_T]:
        return self

    def __anext__(self) -> Deferred[_T]:
        return self.next()

    def _ending(self) -> BaseException:
        return self._error if self._error is not None else StopAsyncIteration()
