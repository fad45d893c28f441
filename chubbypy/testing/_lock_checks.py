"""The checkers of sessions, locks, caches and events, judging what lock clients believe.

What a lock client (`chubbypy.testing._lock_client`) *believes* is what these checkers
judge, against what the log applied, in true time:

* **mutual exclusion**: no two clients ever believe they hold the same lock at once (a
  client believes it holds a lock from the grant, if its session is connected with a valid
  local lease then, until it sends the release, its session leaves the connected state or
  its local lease ends, whichever comes first; a frozen process's lease ends all the same);
* **session safety**: a session is expired in the log only after its client's lease view
  ended, in true time (the client's view is the client library's own: `ClientSession`);
  a session an operator ended (`chubbypy.testing._operator`) is no exception;
* **fencing**: a write guarded by a sequencer is applied only while that sequencer's
  generation is the lock's latest;
* **cache coherence**: no read, from the client's cache or from the master, returns
  contents older than a write that completed before the read began (true time);
* **events**: each session's events arrive in order, none twice and none missing: after
  the repeats of an answer that was lost, each new event is numbered one above the last,
  except the first of a new mastership, which must be its MASTER_FAILOVER event (events
  of a mastership in progress may be lost with it; the fail-over event says so, as in
  Chubby); and no handle hears of more changes (contents modified, lock acquired) of its
  node than the log has applied;
* **lock info**: what an operator's GetLockInfo answers of a lock (its generation and
  its holders' sessions) is the lock checker's own model of that lock after some log
  index that some replica had applied at some instant between the asking and the answer
  (the master answers from what it applied; no replica may be ahead of the log, and no
  answer may be older than what every replica had applied when it was asked);
* **at most once**: every session call takes effect at most once, and a retried call gets
  the answer of its first effect: a handle write (unique contents) is applied once, and a
  release whose first attempt freed the lock is not answered as refused (SESSION_EXPIRED
  claims nothing: the session ended, its locks and kept answers with it), nor is a handle
  write that was applied.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field

from chubbypy.paxos import ChecksumTaken, Outcome, OutcomeKind
from chubbypy.protocol import MASTER_CLIENT, Entry, ValueKind
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import (
    Acquire,
    EndSession,
    InSession,
    LockHeldAt,
    MultiOp,
    MultiResult,
    Release,
    SetContents,
    Stat,
    Written,
)
from chubbypy.protocol.namespace_codec import decode_log_write, decode_result
from chubbypy.protocol.session import LockInfo, SessionEnding
from chubbypy.sessions import EventKind, SessionEvent

Violate = Callable[[str, str], None]


@define
class LockObserver:
    """The session and lock checkers; see the module docstring."""

    violate: Violate
    now: Callable[[], int]
    _believers: dict[str, dict[str, tuple[int, Callable[[], bool]]]] = field(factory=dict)
    """Per lock path: client -> (the lock generation it believes it holds, whether it
    still does)."""
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
    _holders: dict[str, list[int]] = field(factory=dict)
    """Per lock path: the sessions holding it after the last entry applied, one per hold."""
    _lock_history: dict[str, list[tuple[int, int, tuple[int, ...]]]] = field(factory=dict)
    """Per lock path: (log index, lock generation, holders' sessions in order) after each
    entry that changed it, in log order."""
    _applied_at: dict[str, list[tuple[int, int]]] = field(factory=dict)
    """Per replica: (true time, log index) of each entry it applied, in time order."""
    lock_infos_checked: int = 0
    operator_ends: int = 0
    """Sessions an operator's end found live (and so ended)."""
    _operator_ended: set[int] = field(factory=set)
    operator_ended_expiries: int = 0
    """Expiries in the log of sessions an operator ended (session safety judged each)."""
    _index: int = 0
    """The log index being judged."""

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

    def write_refused(self, client: str, path: str, contents: bytes, refused: ErrorCode) -> None:
        """`client`'s fenced write of `contents` to `path` was answered refused: if the log
        applied it, a retry did not get its first answer."""
        generation = self._written.get((path, contents))
        if generation is not None:
            self.violate(
                "at most once",
                f"{client}'s handle write of {contents!r} to {path} was applied (content "
                f"generation {generation}), yet answered {refused.name}: a retried session "
                "call did not get its first answer",
            )

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

    def believes(self, client: str, path: str, generation: int, still: Callable[[], bool]) -> None:
        """`client` believes, now, that it holds `path`'s lock at `generation`; `still()`
        says whether it believes so at a later instant (a correct program stops once its
        local lease ends, frozen or not: it acts on a lock only while its lease holds)."""
        holders = self._believers.setdefault(path, {})
        others = {c: g for c, (g, holds) in holders.items() if c != client and holds()}
        if others:
            self.violate(
                "mutual exclusion",
                f"{client} believes it holds {path} (generation {generation}) while "
                f"{others} believe they do too",
            )
        holders[client] = (generation, still)
        self.grants_believed += 1

    def stops_believing(self, client: str, path: str) -> None:
        self._believers.get(path, {}).pop(client, None)

    def lease_view(self, session_id: int, end_true: int) -> None:
        """The client of `session_id` believes its lease lasts until true time `end_true`."""
        self._lease_end_true[session_id] = max(self._lease_end_true.get(session_id, 0), end_true)

    def entry_applied(
        self, replica: str, entry: Entry, results: tuple[Outcome | ChecksumTaken, ...]
    ) -> None:
        """`replica` applied `entry`, now: judge what it did, the first time it is applied."""
        self._applied_at.setdefault(replica, []).append((self.now(), entry.index))
        if entry.index in self._applied or entry.value.kind is not ValueKind.COMMANDS:
            return
        self._applied.add(entry.index)
        self._index = entry.index
        outcomes = [r for r in results if isinstance(r, Outcome)]
        for command, outcome in zip(entry.value.commands, outcomes, strict=True):
            if command.client_id == MASTER_CLIENT and outcome.kind is OutcomeKind.APPLIED:
                self._judge(decode_log_write(command.payload), decode_result(outcome.result))

    def lock_info_answered(self, client: str, info: LockInfo, asked: int) -> None:
        """`client` asked, at true time `asked`, for the lock of `info.path` and was answered
        `info` now: it must be the model's lock after an index some replica had applied at
        some instant in between (see the module docstring)."""
        self.lock_infos_checked += 1
        states = {self._lock_state(info.path, index) for index in self._indices_applied(asked)}
        answered = (info.lock_generation, tuple(sorted(h.session_id for h in info.holders)))
        if answered not in states or len(info.holders) != info.holder_count:
            self.violate(
                "lock info",
                f"{client} was told {info.path} is {info.mode} at generation "
                f"{info.lock_generation}, held by {answered[1]} of {info.holder_count}; "
                f"between {asked} µs and {self.now()} µs the replicas had it as "
                f"{sorted(states)}",
            )

    def operator_ended(self, session_id: int, ending: SessionEnding) -> None:
        """An operator's end of `session_id` was answered `ending`: the checkers judge that
        session's expiry like any other's (counted apart, to show they did)."""
        if ending.found and not ending.already:
            self.operator_ends += 1
            self._operator_ended.add(session_id)

    def _indices_applied(self, since: int) -> set[int]:
        """The log indices some replica had applied at some instant from `since` to now."""
        indices = {0} if not self._applied_at else set()
        for applied in self._applied_at.values():
            before = [index for time, index in applied if time <= since]
            indices.add(before[-1] if before else 0)
            indices.update(index for time, index in applied if since < time <= self.now())
        return indices

    def _lock_state(self, path: str, index: int) -> tuple[int, tuple[int, ...]]:
        """The model's (generation, holders' sessions) of `path` after log index `index`."""
        changes = [state for state in self._lock_history.get(path, ()) if state[0] <= index]
        return changes[-1][1:] if changes else (0, ())

    def _lock_state_changed(self, path: str) -> None:
        holders = tuple(sorted(self._holders.get(path, ())))
        state = (self._index, self._generation.get(path, 0), holders)
        self._lock_history.setdefault(path, []).append(state)

    def _judge(self, write: object, result: object) -> None:
        match write:
            case Acquire(path=path) if isinstance(result, Written) and result.stat:
                self._generation[path] = result.stat.lock_generation
                self._changed(path, EventKind.LOCK_ACQUIRED)
            case EndSession(session_id, expired=True) if isinstance(result, Written):
                self.expiries += 1
                self.operator_ended_expiries += session_id in self._operator_ended
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
        if isinstance(result, Written):
            self._holds_changed(write)

    def _holds_changed(self, write: object) -> None:
        """The model of who holds each lock, after `write` was applied (and succeeded)."""
        match write:
            case Acquire(session_id, path=path):
                self._holders.setdefault(path, []).append(session_id)
                self._lock_state_changed(path)
            case Release(session_id, path=path):
                self._holders[path].remove(session_id)
                self._lock_state_changed(path)
            case EndSession(session_id):
                for path, holders in self._holders.items():
                    if session_id in holders:
                        holders[:] = [held for held in holders if held != session_id]
                        self._lock_state_changed(path)
