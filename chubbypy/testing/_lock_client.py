"""A simulated lock client: a Chubby client library in miniature, and the checks on it.

`SimLockClient` keeps a session alive with KeepAlives (one always parked at the master),
keeps its own conservative view of the session lease on its own drifting clock, and runs a
workload: open a lock file, acquire its lock (blocking), hold it a while and write the file
fenced by the sequencer, release; now and then close the session and start another.

What it *believes* is what the checkers judge. The client believes it holds a lock from
the moment the grant arrives (if its local lease is valid then) until it sends the release
or its local lease runs out (jeopardy), whichever comes first. Its local lease is measured
from when it *sent* the KeepAlive that was answered, shrunk for the worst clock drift both
ways, so it always ends before the master's view of the lease, whatever the clocks do
within their bound (Chubby §2.8).

`LockObserver` holds the checkers added for sessions and locks:

* **mutual exclusion**: no two clients ever believe they hold the same lock at once;
* **session safety**: a session is expired in the log only after its client's lease view
  ended, in true time;
* **fencing**: a write guarded by a sequencer is applied only while that sequencer's
  generation is the lock's latest;
* **cache coherence**: no read, from the client's cache or from the master, returns
  contents older than a write that completed before the read began (true time). The
  clients cache what they read with the library's own bookkeeping
  (`chubbypy.client._cache.ClientCache`), under its rules: entries are used only while the
  local lease is valid, dropped on INVALIDATE before the KeepAlive that acknowledges it,
  and flushed in jeopardy and on a master fail-over event;
* **events**: each session's events arrive in order, none twice and none missing: after
  the repeats of an answer that was lost, each new event is numbered one above the last,
  except the first of a new mastership, which must be its MASTER_FAILOVER event (events
  of a mastership in progress may be lost with it; the fail-over event says so, as in
  Chubby); and no handle hears of more changes (contents modified, lock acquired) of its
  node than the log has applied.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from attrs import define, field

from chubbypy.client._cache import CachedNode, ClientCache
from chubbypy.locks import decode_sequencer
from chubbypy.paxos import ChecksumTaken, Outcome, OutcomeKind
from chubbypy.protocol import MASTER_CLIENT, Entry, ValueKind
from chubbypy.protocol.client import (
    ClientRequest,
    ErrorReply,
    RequestId,
    ServerReply,
    SessionReply,
    SessionRequest,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import (
    Acquire,
    Create,
    EndSession,
    InSession,
    LockHeldAt,
    LockMode,
    MultiOp,
    MultiResult,
    Release,
    SetContents,
    Stat,
    Written,
)
from chubbypy.protocol.namespace_codec import decode_log_write, decode_result
from chubbypy.protocol.session import (
    AcquireLock,
    CloseSession,
    CreateSession,
    HandleWrite,
    KeepAlive,
    LeaseExtended,
    Locked,
    Open,
    ReadNode,
    ReleaseLock,
    SessionCall,
    SessionCreated,
    SessionResult,
)
from chubbypy.protocol.session import HandleOpened as WireHandleOpened
from chubbypy.protocol.session import NodeRead as WireNodeRead
from chubbypy.sessions import EventKind, EventMask, HandleMode, SessionEvent
from chubbypy.testing._lock_requests import (
    LOCK_COUNT,
    LOCK_PATH_FORMAT,
    LockBug,
    LockOp,
    LockReply,
    LockRequest,
    LockStatus,
)
from chubbypy.testing._world import MILLISECOND, Clock, Scheduler

Violate = Callable[[str, str], None]


@define
class LockObserver:
    """The session and lock checkers; see the module docstring."""

    violate: Violate
    now: Callable[[], int]
    _believers: dict[str, dict[str, int]] = field(factory=dict)
    """Per lock path: client -> the lock generation it believes it holds."""
    _lease_end_true: dict[int, int] = field(factory=dict)
    """Per session: the latest true time its client's lease view reached."""
    _applied: set[int] = field(factory=set)
    _generation: dict[str, int] = field(factory=dict)
    _written: dict[tuple[str, bytes], int] = field(factory=dict)
    """(path, contents) of each fenced write applied -> the content generation it made."""
    _released: set[tuple[int, str, int]] = field(factory=set)
    """(session, path, lock generation) of each release the log applied."""
    _completed: dict[str, list[tuple[int, int]]] = field(factory=dict)
    """Per path: (true time its writer heard it completed, content generation)."""
    _values: int = 0
    grants_believed: int = 0
    fenced_writes: int = 0
    expiries: int = 0
    reads_checked: int = 0
    cache_hits: int = 0
    _changes: dict[tuple[str, EventKind], int] = field(factory=dict)
    """Per (path, kind): changes applied that raise that event on the path's handles."""
    _heard: dict[tuple[int, int, EventKind], int] = field(factory=dict)
    """Per (session, handle, kind): events of that kind received."""
    _last_event: dict[int, int] = field(factory=dict)
    events_checked: int = 0

    def events_received(
        self, client: str, session_id: int, events: tuple[SessionEvent, ...]
    ) -> None:
        """A KeepAlive answer of `session_id` carried `events` (repeats included)."""
        for event in events:
            last = self._last_event.get(session_id, 0)
            if event.sequence <= last:
                continue  # repeated: the answer that carried it was lost, or not acked yet
            next_in_mastership = last != 0 and event.sequence == last + 1
            # A mastership numbers its events from (epoch << 32) + 1: its first event is
            # the fail-over event, or the first event of a session it opened.
            first_of_mastership = event.sequence & 0xFFFF_FFFF == 1 and (
                last == 0 or event.kind is EventKind.MASTER_FAILOVER
            )
            if not (next_in_mastership or first_of_mastership):
                self.violate(
                    "events",
                    f"{client}'s session {session_id} got event {event.sequence} "
                    f"({event.kind.name}) after {last}: one lost or out of order",
                )
            self._last_event[session_id] = event.sequence
            self.events_checked += 1
            if event.kind in (EventKind.CONTENTS_MODIFIED, EventKind.LOCK_ACQUIRED):
                key = (session_id, event.handle_id, event.kind)
                self._heard[key] = heard = self._heard.get(key, 0) + 1
                applied = self._changes.get((event.path, event.kind), 0)
                if heard > applied:
                    self.violate(
                        "events",
                        f"{client}'s handle {event.handle_id:#x} heard {heard} "
                        f"{event.kind.name} events of {event.path}; the log applied {applied}",
                    )

    def _fenced_write_applied(self, write: SetContents, generation: int) -> None:
        key = (write.path, write.contents)
        earlier = self._written.get(key)
        if earlier is not None:
            self.violate(
                "at most once",
                f"the handle write of {write.contents!r} to {write.path} was applied twice "
                f"(content generations {earlier} and {generation}): a retried session call "
                "took effect again",
            )
        self._written[key] = generation
        self._changed(write.path, EventKind.CONTENTS_MODIFIED)

    def release_answered(
        self, client: str, session_id: int, path: str, generation: int, refused: ErrorCode | None
    ) -> None:
        """`client`'s release of `path` at lock `generation` was answered (`refused` with
        that code, or done): a retried call must get the answer of its first effect."""
        if refused is not None and (session_id, path, generation) in self._released:
            self.violate(
                "at most once",
                f"{client}'s release of {path} (generation {generation}) freed the lock, "
                f"yet was answered {refused.name}: a retried session call did not get its "
                "first answer",
            )

    def _changed(self, path: str, kind: EventKind) -> None:
        self._changes[(path, kind)] = self._changes.get((path, kind), 0) + 1

    def next_value(self) -> int:
        """Contents for a write that no other write uses."""
        self._values += 1
        return self._values

    def write_completed(self, path: str, contents: bytes) -> None:
        """A fenced write's client heard, now, that it was applied."""
        generation = self._written[(path, contents)]
        self._completed.setdefault(path, []).append((self.now(), generation))

    def read(self, client: str, path: str, began: int, stat: Stat | None, *, hit: bool) -> None:
        """A read of `path` that began at true time `began` returned `stat` (None: absent)."""
        self.reads_checked += 1
        self.cache_hits += hit
        got = -1 if stat is None else stat.content_generation
        done = [g for t, g in self._completed.get(path, ()) if t < began]
        if done and got < max(done):
            where = "its cache" if hit else "the master"
            self.violate(
                "cache coherence",
                f"{client} read {path} from {where} at generation {got} (began at "
                f"{began} µs), older than generation {max(done)}, whose write completed "
                "before the read began",
            )

    def believes(self, client: str, path: str, generation: int) -> None:
        holders = self._believers.setdefault(path, {})
        others = {c: g for c, g in holders.items() if c != client}
        if others:
            self.violate(
                "mutual exclusion",
                f"{client} believes it holds {path} (generation {generation}) while "
                f"{others} believe they do too",
            )
        holders[client] = generation
        self.grants_believed += 1

    def stops_believing(self, client: str, path: str) -> None:
        self._believers.get(path, {}).pop(client, None)

    def lease_view(self, session_id: int, end_true: int) -> None:
        """The client of `session_id` believes its lease lasts until true time `end_true`."""
        self._lease_end_true[session_id] = max(self._lease_end_true.get(session_id, 0), end_true)

    def entry_applied(self, entry: Entry, results: tuple[Outcome | ChecksumTaken, ...]) -> None:
        """The first replica to apply `entry` did, now: judge what it did."""
        if entry.index in self._applied or entry.value.kind is not ValueKind.COMMANDS:
            return
        self._applied.add(entry.index)
        outcomes = [r for r in results if isinstance(r, Outcome)]
        for command, outcome in zip(entry.value.commands, outcomes, strict=True):
            if command.client_id == MASTER_CLIENT and outcome.kind is OutcomeKind.APPLIED:
                self._judge(decode_log_write(command.payload), decode_result(outcome.result))

    def _judge(self, write: object, result: object) -> None:
        match write:
            case Acquire(path=path) if isinstance(result, Written) and result.stat:
                self._generation[path] = result.stat.lock_generation
                self._changed(path, EventKind.LOCK_ACQUIRED)
            case EndSession(session_id, expired=True) if isinstance(result, Written):
                self.expiries += 1
                lease_end = self._lease_end_true.get(session_id, 0)
                if self.now() < lease_end:
                    self.violate(
                        "session safety",
                        f"session {session_id} expired at {self.now()} µs, before its "
                        f"client's lease view ended at {lease_end} µs",
                    )
            case Release(session_id, _, path, _, int(generation)) if isinstance(result, Written):
                self._released.add((session_id, path, generation))
            case InSession(_, MultiOp(guard=(LockHeldAt() as test,), if_true=(write,))):
                if isinstance(result, MultiResult) and result.guard_held:
                    (written,) = result.results
                    if isinstance(write, SetContents) and written.stat is not None:
                        self._fenced_write_applied(write, written.stat.content_generation)
                    self.fenced_writes += 1
                    latest = self._generation.get(test.path, 0)
                    if test.lock_generation != latest:
                        self.violate(
                            "fencing",
                            f"a write fenced by generation {test.lock_generation} of "
                            f"{test.path} applied after generation {latest} was granted",
                        )


@define
class _Channel:
    """One outstanding request and its retries."""

    request: LockRequest | None = None
    attempt: int = 0
    sent_local: int = 0
    began: int = 0
    """True time of the first sending."""
    request_ids: set[int] = field(factory=set)
    """The wire request ids it was sent with: an answer to any will do."""


def _wire_call(request: LockRequest) -> SessionCall:
    """The session call a lock client's request is, on the wire."""
    session, credential, path = request.session_id, request.credential, request.path
    match request.kind:
        case LockOp.CREATE_SESSION:
            return CreateSession(request.client)
        case LockOp.KEEPALIVE:
            return KeepAlive(session, credential, request.acked)
        case LockOp.OPEN:
            mode = int(HandleMode.READ | HandleMode.WRITE)
            events = int(EventMask.CONTENTS_MODIFIED | EventMask.LOCK_ACQUIRED)
            return Open(session, credential, path, mode, events, request.lock_delay_ms,
                        Create(path), False)  # fmt: skip
        case LockOp.ACQUIRE:
            return AcquireLock(request.handle, LockMode.EXCLUSIVE, wait=True)
        case LockOp.RELEASE:
            return ReleaseLock(request.handle, request.generation or None)
        case LockOp.FENCED_WRITE:
            write = SetContents(path, str(request.value).encode())
            return HandleWrite(request.handle, write, request.sequencer)
        case LockOp.CLOSE_SESSION:
            return CloseSession(session, credential)
        case LockOp.READ:
            return ReadNode(session, credential, path, request.cache)


def _lock_reply(request: LockRequest, reply: ServerReply) -> LockReply:
    """A wire answer in the lock client's terms."""
    op = request.op_id
    match reply:
        case ErrorReply(code=ErrorCode.NOT_MASTER, master_hint=hint):
            return LockReply(op, LockStatus.NOT_MASTER, hint=hint)
        case ErrorReply(code=code):
            return LockReply(op, LockStatus.FAILED, code)
        case SessionReply(result=result):
            return _lock_result(op, result)
    raise AssertionError(f"unexpected {reply!r} to {request!r}")


def _lock_result(op: int, result: SessionResult) -> LockReply:
    match result:
        case SessionCreated(session_id, lease_ms, credential):
            return LockReply(op, LockStatus.OK, session_id=session_id, credential=credential,
                             lease_ms=lease_ms)  # fmt: skip
        case LeaseExtended(lease_ms, events, held_ms):
            return LockReply(op, LockStatus.OK, lease_ms=lease_ms, events=events,
                             held_ms=held_ms)  # fmt: skip
        case WireHandleOpened(handle):
            return LockReply(op, LockStatus.OK, handle=handle)
        case Locked(stat, sequencer):
            return LockReply(op, LockStatus.OK, sequencer=sequencer,
                             generation=stat.lock_generation)  # fmt: skip
        case WireNodeRead(stat, contents, cached, sequence):
            return LockReply(op, LockStatus.OK, stat=stat, contents=contents, cached=cached,
                             event_sequence=sequence)  # fmt: skip
    return LockReply(op, LockStatus.OK)


class SimLockClient:
    """One lock client process (it never crashes; its messages can be lost)."""

    def __init__(
        self,
        name: str,
        replicas: tuple[str, ...],
        scheduler: Scheduler,
        observer: LockObserver,
        rng: random.Random,
        clock: Clock,
        send: Callable[[str, str, ClientRequest], None],
        *,
        drift_max: float,
        timeout_us: int,
        bugs: frozenset[LockBug] = frozenset(),
    ) -> None:
        self._bugs = bugs
        self.name = name
        self._replicas = replicas
        self._scheduler = scheduler
        self._observer = observer
        self._rng = rng
        self._clock = clock
        self._send = send
        self._drift_max = drift_max
        self._timeout_us = timeout_us
        self._target = rng.randrange(len(replicas))
        self._op_id = 0
        self._work = _Channel()
        self._keepalive = _Channel()
        self.stop_at = 0
        self._session = 0
        self._credential = b""
        self._last_request_id = 0
        self._lease_end_local = 0
        self._acked = 0
        self._handle = b""
        self._path = ""
        self._sequencer = b""
        self._generation = 0
        self._believing = False
        self.grants = 0
        self._paused_until = 0
        self._cache = ClientCache()
        self._read_started = 0

    # ------------------------------------------------------------------ life

    def start(self, stop_at: int) -> None:
        self.stop_at = stop_at
        self._scheduler.after(self._rng.randint(0, 50) * MILLISECOND, self._next_work)

    def pause(self, until: int) -> None:
        """Freeze the process (SIGSTOP, a long GC) until true time `until`: it sends no
        KeepAlives and handles nothing, while its clock, and its lease, run on."""
        self._paused_until = max(self._paused_until, until)

    def _asleep(self, action: Callable[[], None]) -> bool:
        """While paused, put `action` off until the pause ends; whether it was put off."""
        if self._scheduler.now >= self._paused_until:
            return False
        self._scheduler.at(self._paused_until, action)
        return True

    @property
    def busy(self) -> bool:
        return self._work.request is not None

    def _local(self) -> int:
        return self._clock.local(self._scheduler.now)

    def _lease_valid(self) -> bool:
        return self._session != 0 and self._local() < self._lease_end_local

    def _cache_usable(self) -> bool:
        return self._lease_valid()

    # ------------------------------------------------------------------ the workload

    def _next_work(self) -> None:
        if self._asleep(self._next_work):
            return
        if self._work.request is not None or self._scheduler.now >= self.stop_at:
            return
        if not self._session:
            self._issue(self._work, LockOp.CREATE_SESSION)
        elif not self._lease_valid():
            self._scheduler.after(20 * MILLISECOND, self._next_work)  # jeopardy: calls wait
        elif self._rng.random() < 0.3:
            self._read(LOCK_PATH_FORMAT.format(self._rng.randrange(LOCK_COUNT)))
        elif not self._handle:
            self._path = LOCK_PATH_FORMAT.format(self._rng.randrange(LOCK_COUNT))
            delay = self._rng.choice([0, 0, 100, 300])
            self._issue(self._work, LockOp.OPEN, path=self._path, lock_delay_ms=delay)
        elif not self._sequencer:
            self._issue(self._work, LockOp.ACQUIRE, handle=self._handle)
        elif self._believing and self._rng.random() < 0.6:
            value = self._observer.next_value()
            self._issue(
                self._work,
                LockOp.FENCED_WRITE,
                handle=self._handle,
                sequencer=self._sequencer,
                path=self._path,
                value=value,
            )
        else:
            self._stop_believing()
            generation = self._generation
            self._issue(self._work, LockOp.RELEASE, handle=self._handle, generation=generation)

    def _read(self, path: str) -> None:
        """Read a lock file: from the cache if it holds it, else from the master."""
        if self._cache_usable():
            node = self._cache.get(path)
            if node is not None:
                self._observer.read(self.name, path, self._scheduler.now, node.stat, hit=True)
                self._scheduler.after(self._rng.randint(1, 20) * MILLISECOND, self._next_work)
                return
        self._read_started = self._cache.reading(path)
        self._issue(self._work, LockOp.READ, path=path, cache=True)

    def _read_done(self, request: LockRequest, reply: LockReply) -> None:
        ok = reply.status is LockStatus.OK
        node = CachedNode(reply.stat, reply.contents) if ok else None
        self._cache.read_done(request.path, self._read_started, node, cached=reply.cached,
                              event_sequence=reply.event_sequence,
                              usable=self._cache_usable())  # fmt: skip
        if ok:
            self._observer.read(self.name, request.path, self._work.began, reply.stat, hit=False)

    def _work_done(self, request: LockRequest, reply: LockReply) -> None:
        if request.kind is LockOp.READ:
            self._read_done(request, reply)
        if reply.status is LockStatus.FAILED and reply.code is ErrorCode.SESSION_EXPIRED:
            self._session_lost()
        elif request.kind is LockOp.CREATE_SESSION and reply.status is LockStatus.OK:
            self._session = reply.session_id
            self._credential = reply.credential
            self._acked = 0
            self._new_lease(self._work.sent_local, reply.lease_ms)
            self._start_keepalives()
        elif request.kind is LockOp.OPEN:
            self._handle = reply.handle if reply.status is LockStatus.OK else b""
        elif request.kind is LockOp.ACQUIRE and reply.status is LockStatus.OK:
            self._granted(reply)
        elif request.kind is LockOp.ACQUIRE:
            self._handle = b""  # its node is gone, say: open again
        elif request.kind is LockOp.RELEASE:
            refused = reply.code if reply.status is LockStatus.FAILED else None
            self._observer.release_answered(
                self.name, request.session_id, self._path, request.generation, refused
            )
            self._sequencer = b""
            if self._rng.random() < 0.15:
                self._issue(self._work, LockOp.CLOSE_SESSION, session_id=self._session)
                self._session_lost()
                return
        elif request.kind is LockOp.FENCED_WRITE and reply.status is LockStatus.OK:
            self._observer.write_completed(request.path, str(request.value).encode())
        elif request.kind is LockOp.FENCED_WRITE and reply.code is ErrorCode.INVALID_SEQUENCER:
            self._stop_believing()  # someone newer holds it: we lost it in jeopardy
            self._sequencer = b""
        hold = self._rng.randint(1, 60) * MILLISECOND
        self._scheduler.after(hold, self._next_work)

    def _granted(self, reply: LockReply) -> None:
        self.grants += 1
        self._sequencer = reply.sequencer
        self._generation = reply.generation
        if self._lease_valid() and not self._believing:
            self._believing = True
            self._observer.believes(
                self.name, decode_sequencer(reply.sequencer).path, reply.generation
            )
            self._watch_lease()

    def _stop_believing(self) -> None:
        if self._believing:
            self._believing = False
            self._observer.stops_believing(self.name, self._path)

    def _session_lost(self) -> None:
        self._cache.flush()
        self._stop_believing()
        self._session = 0
        self._credential = b""
        self._handle = b""
        self._sequencer = b""
        self._keepalive = _Channel()

    # ------------------------------------------------------------------ the lease

    def _new_lease(self, sent_local: int, lease_ms: int, held_ms: int = 0) -> None:
        """The lease the master granted, as this client may count on it: from the send
        time plus the master's hold, shrunk by the worst drift of both clocks."""
        epsilon = self._drift_max
        duration = int((lease_ms + held_ms) * MILLISECOND * (1 - epsilon) / (1 + epsilon))
        self._lease_end_local = max(self._lease_end_local, sent_local + duration)
        self._observer.lease_view(self._session, self._clock.true_at(self._lease_end_local))
        self._watch_lease()

    def _watch_lease(self) -> None:
        session, end = self._session, self._lease_end_local
        self._scheduler.at(
            max(self._scheduler.now, self._clock.true_at(end)), lambda: self._lease_check(session)
        )

    def _lease_check(self, session: int) -> None:
        if LockBug.HOLDER_IGNORES_JEOPARDY in self._bugs:
            return
        if session == self._session and not self._lease_valid():
            self._stop_believing()  # jeopardy: the lock may be gone
            self._cache.flush()

    def _start_keepalives(self) -> None:
        self._keepalive = _Channel()
        self._issue(self._keepalive, LockOp.KEEPALIVE, session_id=self._session, acked=0)

    def _keepalive_done(self, reply: LockReply) -> None:
        if reply.status is LockStatus.FAILED:
            self._session_lost()  # the session expired (or was closed): start another
            return
        self._new_lease(self._keepalive.sent_local, reply.lease_ms, reply.held_ms)
        self._observer.events_received(self.name, self._session, reply.events)
        for event in reply.events:
            if event.sequence <= self._acked:
                continue  # sent again: seen already
            self._acked = event.sequence
            if event.kind is EventKind.INVALIDATE:
                if LockBug.CACHE_IGNORES_INVALIDATION not in self._bugs:
                    self._cache.invalidate(event.path, event.sequence)
            elif event.kind is EventKind.MASTER_FAILOVER:
                self._cache.flush()
        self._keepalive = _Channel()
        if self._scheduler.now < self.stop_at + 2_000 * MILLISECOND:
            self._issue(self._keepalive, LockOp.KEEPALIVE, session_id=self._session,
                        acked=self._acked)  # fmt: skip

    # ------------------------------------------------------------------ requests

    def _issue(self, channel: _Channel, kind: LockOp, **fields: object) -> None:
        self._op_id += 1
        if kind is not LockOp.CREATE_SESSION and "session_id" not in fields:
            fields["session_id"] = self._session
        fields["credential"] = self._credential
        channel.request = LockRequest(self.name, self._op_id, kind, **fields)  # type: ignore[arg-type]
        channel.attempt = 0
        channel.request_ids = set()
        self._transmit(channel)

    def _transmit(self, channel: _Channel) -> None:
        request = channel.request
        assert request is not None
        channel.attempt += 1
        if channel.attempt == 1:
            channel.began = self._scheduler.now
        if channel.attempt == 1 or LockBug.LEASE_FROM_LAST_SEND in self._bugs:
            # The lease an answer grants counts from the *first* sending: the answer may be
            # to that one, made before any retry was sent (found by the session-safety
            # checker).
            channel.sent_local = self._local()
        attempt = channel.attempt
        self._last_request_id += 1
        channel.request_ids.add(self._last_request_id)
        wire = SessionRequest(RequestId(self._last_request_id), _wire_call(request))
        self._send(self.name, self._replicas[self._target], wire)
        timeout = self._timeout_us
        if request.kind in (LockOp.KEEPALIVE, LockOp.ACQUIRE):
            timeout *= 8  # held at the master by design
        self._scheduler.after(timeout, lambda: self._timed_out(channel, request, attempt))

    def _timed_out(self, channel: _Channel, request: LockRequest, attempt: int) -> None:
        if self._asleep(lambda: self._timed_out(channel, request, attempt)):
            return
        if channel.request is request and channel.attempt == attempt:
            self._target = (self._target + 1) % len(self._replicas)
            self._transmit(channel)

    def reply_received(self, replica: str, answer: ServerReply) -> None:
        if self._asleep(lambda: self.reply_received(replica, answer)):
            return
        channel = next(
            (
                c
                for c in (self._work, self._keepalive)
                if c.request is not None and answer.request_id in c.request_ids
            ),
            None,
        )
        if channel is None:
            return  # a late reply to a request already finished
        request = channel.request
        assert request is not None
        reply = _lock_reply(request, answer)
        if reply.status is LockStatus.NOT_MASTER:
            if reply.hint is not None and reply.hint in self._replicas and reply.hint != replica:
                self._target = self._replicas.index(reply.hint)
            else:
                self._target = (self._replicas.index(replica) + 1) % len(self._replicas)
            channel.attempt += 1
            attempt = channel.attempt
            self._scheduler.after(
                self._rng.randint(5, 40) * MILLISECOND,
                lambda: self._retry(channel, request, attempt),
            )
            return
        if reply.status is LockStatus.FAILED and reply.code is ErrorCode.BUSY:
            # "Not now" (a new master waits for every session to acknowledge the fail-over):
            # the same request again, as the library does. Giving up instead would lose
            # track of a handle that may hold the lock already (found by the liveness check:
            # the session kept its lock and waited on it through a new handle).
            channel.attempt += 1
            attempt = channel.attempt
            self._scheduler.after(
                self._rng.randint(20, 60) * MILLISECOND,
                lambda: self._retry(channel, request, attempt),
            )
            return
        channel.request = None
        if channel is self._work:
            self._work_done(request, reply)
        else:
            self._keepalive_done(reply)

    def _retry(self, channel: _Channel, request: LockRequest, attempt: int) -> None:
        if self._asleep(lambda: self._retry(channel, request, attempt)):
            return
        if channel.request is request and channel.attempt == attempt:
            self._transmit(channel)
