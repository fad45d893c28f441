"""Store calls on a thread of their own, in order, so the reactor never waits on a disk.

Shell side. The replica hands the worker one `Durable` per Ready (group commit: everything
the core accumulated since the previous write goes in one transaction and one fsync) and
carries on; the Deferred fires on the reactor thread when the write is durable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from chubbypy.paxos import Durable
from chubbypy.store import Store

T = TypeVar("T")


class _DaemonThread(threading.Thread):
    """A thread that never keeps the process alive by itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class _StorePool(ThreadPool):
    # The store thread is a daemon: a replica whose main thread has ended (start-up failed,
    # say, after the worker began) must exit, not linger doing nothing while looking alive.
    # A graceful stop still finishes the queued writes (`stop` joins the thread), and a write
    # cut off by an abrupt exit is a crash the store's transactions already survive.
    threadFactory = _DaemonThread


class StoreWorker:
    """One thread that runs every store call, first come first served."""

    def __init__(self, reactor: IReactorThreads, store: Store) -> None:
        self._reactor = reactor
        self._store = store
        self._pool = _StorePool(minthreads=1, maxthreads=1, name="chubbypy-store")
        self._pool.start()

    def persist(self, durable: Durable) -> Deferred[float]:
        """Make `durable` durable; fires with the seconds the write took (fsync included)."""
        return self.run(lambda: self._timed(durable))

    def run(self, call: Callable[[], T]) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, call)

    def _timed(self, durable: Durable) -> float:
        started = time.monotonic()
        self._store.persist(durable)
        return time.monotonic() - started

    def stop(self) -> None:
        """Finish what was queued, then stop the thread and close the store."""
        self._pool.stop()
        self._store.close()
