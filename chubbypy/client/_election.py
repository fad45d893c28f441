"""Leader election on a lock file (Chubby §2.4, "electing a primary"), over Twisted.

Shell (STYLE §6). Every candidate makes an `Election` on the same file and calls
`campaign()`; the one whose campaign acquires the file's lock is the leader: it writes its
identity into the file (fenced by its sequencer, so a deposed leader's late write is
refused), and keeps the lock while its session lives. Everyone (candidates or not) finds
the leader by reading the file: `leader()` reads it through the session's consistent
cache, so asking again costs nothing until the file changes.

The pattern (§2.4): the leader passes `sequencer` along with every request it makes to
the services it leads (a storage server, say), which check it (`Cell.check_sequencer`, or
a fenced write through a handle) and refuse a request whose sequencer is no longer valid.
A leader that was deposed without knowing it (a long pause) can then do no harm.

*Elected* and *deposed* reach the program as callbacks (`on_elected`, `on_deposed`) and
as the `changes()` async iterator of `Leadership` records. A leader is deposed when its
session expires or its file is deleted (its `LockLost` is the reason), when a new master
no longer counts its lock, or when it resigns (reason None). With `recampaign`, a
candidate deposed by a loss campaigns again, in a new session, until it resigns.

The file names the last leader until the next one writes: after a leader's session is
lost, `leader()` still names it until a standby wins, within the session lease plus the
lock-delay when one is campaigning. `resign()` clears the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from chubbypy.client._cell import Cell
from chubbypy.client._errors import LockLost, NotLeader
from chubbypy.client._lock import Held, Lock
from chubbypy.client._session import Handle
from chubbypy.client._streams import EventStream, guarded
from chubbypy.protocol.errors import ChubbyError, NoSuchNode
from chubbypy.protocol.session import EventKind, EventMask, SessionEvent

__all__ = ["Election", "Leadership"]


RECAMPAIGN_PAUSE_SECONDS = 1.0
"""The pause before campaigning again after a campaign that followed a loss failed."""
IDENTITY_BYTES_MAX = 64 * 1024
"""What a leader may advertise; well under any cell's file size limit."""


@frozen
class Leadership:
    """One change of this candidate's leadership."""

    elected: bool
    """True when it became leader, False when it stopped being leader."""
    sequencer: bytes | None
    """The sequencer of the leadership won (None when deposed)."""
    reason: Exception | None = None
    """Why it was deposed: a `LockLost`, or None when it resigned."""


class Election:
    """One candidate (or observer) in the election held on file `path`; see the module
    docstring. `identity` is what the candidate advertises once leader."""

    log = Logger()

    def __init__(
        self,
        cell: Cell,
        path: str,
        identity: str,
        *,
        recampaign: bool = False,
        lock_delay_seconds: float = 0.0,
    ) -> None:
        if len(identity.encode()) > IDENTITY_BYTES_MAX:
            raise ValueError(f"an identity of at most {IDENTITY_BYTES_MAX} bytes")
        self.cell = cell
        self.path = path
        self.identity = identity
        self.recampaign = recampaign
        self._lock_delay = lock_delay_seconds
        self._held: Held | None = None
        self._campaign: Deferred[bytes] | None = None
        self._waiters: list[Deferred[bytes]] = []
        self._resigned = False
        self.on_elected: list[Callable[[bytes], None]] = []
        """Called with the sequencer when this candidate becomes leader (reactor thread)."""
        self.on_deposed: list[Callable[[Exception | None], None]] = []
        """Called when it stops being leader: with the `LockLost`, or None if it resigned."""
        self._streams: list[EventStream[Leadership]] = []

    # ------------------------------------------------------------------------- queries

    @property
    def is_leader(self) -> bool:
        """This candidate leads now (as far as it knows: see `Held.in_jeopardy`)."""
        return self._held is not None and not self._held.is_lost

    @property
    def sequencer(self) -> bytes | None:
        """The sequencer of the leadership held; pass it with every request the leader
        makes to what it leads, which checks it. None when not leader."""
        return self._held.sequencer if self.is_leader and self._held else None

    @property
    def held(self) -> Held | None:
        """The leadership's lock while leader (its handle, `lost` signal, jeopardy)."""
        return self._held if self.is_leader else None

    def leader(self) -> Deferred[str | None]:
        """What the leader advertises (its identity, or what it proclaimed), read from the
        file through the consistent cache; None if no one has led or the last resigned."""

        async def reading() -> str | None:
            session = await self.cell.session()
            try:
                contents, _ = await session.get_contents_and_stat(self.path)
            except NoSuchNode:
                return None
            return contents.decode(errors="replace") or None

        return Deferred.fromCoroutine(reading())

    def changes(self) -> EventStream[Leadership]:
        """This candidate's elections and depositions from now on, as an async iterator."""
        stream: EventStream[Leadership] = EventStream(lambda: self._streams.remove(stream))
        self._streams.append(stream)
        return stream

    def observe(self) -> EventStream[str | None]:
        """What the leader advertises, now and after each change, as an async iterator (a
        handle on the file asks for its events; a master fail-over re-reads it). Close
        the stream to stop."""
        handle_made: list[Handle] = []

        def closed() -> None:
            for handle in handle_made:
                handle.close().addErrback(lambda _: None)

        stream: EventStream[str | None] = EventStream(closed)

        async def watching() -> None:
            events = EventMask.CONTENTS_MODIFIED | EventMask.HANDLE_INVALID
            handle: Handle = await self.cell.open(self.path, events=events, create=True)
            handle_made.append(handle)
            if stream.ended:
                closed()
                return
            changes = handle.events()
            last: object = object()
            while True:
                now = await self.leader()
                if now != last:
                    stream.push(now)
                    last = now
                try:
                    event: SessionEvent = await changes.next()
                except StopAsyncIteration:
                    stream.end()
                    return
                if event.kind is EventKind.HANDLE_INVALID:  # deleted: watch the new one
                    handle = await self.cell.open(self.path, events=events, create=True)
                    handle_made.append(handle)
                    changes = handle.events()

        Deferred.fromCoroutine(watching()).addErrback(lambda failure: stream.end(failure.value))
        return stream

    # ------------------------------------------------------------------------- campaigning

    def campaign(self, timeout: float | None = None) -> Deferred[bytes]:
        """Wait until this candidate leads (for ever, or `timeout` seconds: `LockTimeout`),
        then advertise its identity; the leadership's sequencer. At once if it leads.
        `resign()` stops a campaign (it then fails `CancelledError`), and so does
        cancelling the last Deferred waiting for it. A campaign already running keeps its
        own timeout."""
        self._resigned = False
        if self.is_leader and self._held is not None:
            return succeed(self._held.sequencer)
        waiting: Deferred[bytes] = Deferred(self._waiter_cancelled)
        self._waiters.append(waiting)
        if self._campaign is None:
            self._campaign = Deferred.fromCoroutine(self._run_campaign(timeout))
            self._campaign.addBoth(self._campaign_over)
        return waiting

    def _waiter_cancelled(self, waiting: Deferred[bytes]) -> None:
        """The last caller waiting on the campaign gave up: stop it (the lock request is
        withdrawn), so that no one wins the lead unseen."""
        if waiting in self._waiters:
            self._waiters.remove(waiting)
        if not self._waiters and self._campaign is not None:
            self._campaign.cancel()

    def _campaign_over(self, result: bytes | Failure) -> None:
        self._campaign = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure) and self._resigned:
                waiter.errback(CancelledError(f"{self.identity} resigned while campaigning"))
            elif isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _run_campaign(self, timeout: float | None) -> bytes:
        lock = Lock(self.cell, self.path, timeout=timeout, lock_delay_seconds=self._lock_delay)
        held = await lock.acquire()
        if self._resigned:
            await held.release()
            raise CancelledError("resigned while campaigning")
        try:
            await held.handle.set_contents(self.identity.encode(), sequencer=held.sequencer)
        except ChubbyError:
            await held.release()
            raise
        self._held = held
        held.on_lost.append(self._lost)
        self.log.info("{identity} leads {path}", identity=self.identity, path=self.path)
        self._announce(Leadership(True, held.sequencer))
        for callback in list(self.on_elected):
            guarded(callback, held.sequencer, "an on_elected callback")
        return held.sequencer

    def proclaim(self, value: str) -> Deferred[None]:
        """As leader, advertise `value` instead (fenced: refused once deposed);
        `NotLeader` if this candidate does not lead."""

        async def proclaiming() -> None:
            held = self.held
            if held is None:
                raise NotLeader(f"{self.identity} does not lead {self.path}")
            await held.handle.set_contents(value.encode(), sequencer=held.sequencer)

        if len(value.encode()) > IDENTITY_BYTES_MAX:
            raise ValueError(f"at most {IDENTITY_BYTES_MAX} bytes")
        return Deferred.fromCoroutine(proclaiming())

    def resign(self) -> Deferred[None]:
        """Stop leading (clear the file, let the lock go) or stop campaigning; also stops
        `recampaign`. A later `campaign()` starts again."""
        self._resigned = True

        async def resigning() -> None:
            if self._campaign is not None:
                self._campaign.cancel()
            held, self._held = self._held, None
            if held is None:
                return
            if not held.is_lost:
                with contextlib.suppress(ChubbyError):  # fenced: harmless if deposed
                    await held.handle.set_contents(b"", sequencer=held.sequencer)
            await held.release()
            if not held.is_lost:
                self._deposed(None)

        return Deferred.fromCoroutine(resigning())

    def _lost(self, reason: LockLost) -> None:
        if self._held is None:
            return
        self._held = None
        self._deposed(reason)
        if self.recampaign and not self._resigned:
            self.log.info("{identity}: campaigning again for {path}", identity=self.identity,
                          path=self.path)  # fmt: skip
            self.campaign().addErrback(self._recampaign_failed)

    def _recampaign_failed(self, failure: object) -> None:
        """A campaign after a loss can fail (the old session expiring under it): try again
        in a moment, in a new session, until resigned or the client is closed."""
        if self._resigned or self.cell._closing or self.cell._closed:
            return
        self.log.warn("{identity}: campaigning again failed ({failure}); trying again",
                      identity=self.identity, failure=failure)  # fmt: skip
        self.cell._clock.callLater(RECAMPAIGN_PAUSE_SECONDS, self._campaign_again)

    def _campaign_again(self) -> None:
        if not self._resigned and not self.is_leader and self._campaign is None:
            self.campaign().addErrback(self._recampaign_failed)

    def _deposed(self, reason: Exception | None) -> None:
        why = "resigned" if reason is None else str(reason)
        self.log.info("{identity} no longer leads {path}: {why}", identity=self.identity,
                      path=self.path, why=why)  # fmt: skip
        self._announce(Leadership(False, None, reason))
        for callback in list(self.on_deposed):
            guarded(callback, reason, "an on_deposed callback")

    def _announce(self, change: Leadership) -> None:
        for stream in list(self._streams):
            stream.push(change)
