"""The master's side of sessions, handles and locks (Chubby §2.4 to §2.9). Pure: driven by
client calls, ticks of the master's clock and the entries the log applies; its outputs are
replies to calls and proposals for the log.

Theory of operation. One `MasterService` serves one mastership: the shell makes it when
its replica starts serving as master (`start`, after every earlier entry was applied) and
drops it when mastership ends; everything in it is memory that a new master rebuilds.

* **What is replicated and what is not.** Sessions' existence, ephemeral nodes, lock
  holders and lock-delays are in the namespace database (`chubbypy.namespace`), changed
  only by log commands this service proposes (`Proposal`). Session leases, open handles,
  lock waiters and lock-delay timers are memory.
* **Parts.** The service composes pure parts, each with one job, built together here
  and called with typed calls (none calls back into the service): the session table
  (`chubbypy.sessions.SessionTable`: leases, KeepAlives, events), the handle registry
  (`HandleRegistry`: the handles this mastership knows), the lock waits (`LockWaits`:
  acquires in progress, their queues and bounds, lock-delay timers) and the cache gate
  (`CacheGate`, which queues invalidations in the session table). What is left here is
  deciding: checking calls, proposing, answering, and turning applied entries into
  events and wake-ups.
* **Calls.** Each call carries the shell's `token`; the answer comes back as a `Reply`
  with that token, at once or after the proposal it caused was applied (`applied`).
  Reads of state (opening an existing node, sequencers) are answered from the database in
  memory, under the master lease the shell checked before calling.
* **Handles** are verified by their check digits and resolved against the database on
  every call: the session must be live and the node of the handle's instance must exist,
  so a handle made by a previous master works as well as one of ours (§2.9 step 8), and
  one closed in this mastership is refused.
* **Locks.** An `acquire` that can succeed at once is proposed; one that cannot waits in
  the lock's FIFO queue (`wait`) or is refused (`try`). Whenever an applied entry changes
  a lock (a release, a session's end, a lock-delay's end, a node's deletion) the queue
  hands out the next eligible waiters and their `Acquire`s are proposed: exactly those,
  so a release wakes no herd. The lock generation, and so every sequencer, comes from the
  applied state.
* **Lock-delay.** When an expired session's locks enter lock-delay, the service proposes
  `EndLockDelay` once the delay has passed on its clock; a new master restarts every
  delay in full (longer is always safe).
* **Fail-over (§2.9).** Until every session has acknowledged the fail-over event or
  expired (`SessionTable.failover_complete`), only KeepAlives, new sessions and closes are
  served; other calls get BUSY (retry), so no session acts on state cached from the old
  master before it has flushed it.
* **Events** are derived from each applied entry and pushed to the sessions whose handles
  asked for them, in commit order: contents modified, child added or removed, handle
  invalid (its node was deleted), lock acquired, conflicting lock request.
* **The consistent cache (§2.5).** Sessions read nodes through `read`, and may cache what
  they read when the master registers them as cachers. Every write bound for the log, the
  service's own and clients' (`submit_write`), passes the `CacheGate`: it is proposed only
  once every session caching a name it changes has acknowledged an INVALIDATE event or
  its lease is over; see `chubbypy.master._cache`.

* **Access control (§2.3).** Calls that carry a `principal` (every call from a client
  connection does) are checked against the node's ACL names (`chubbypy.namespace._acl`): an
  open, for each mode it asks, and for a creation, write on the parent; a read, read. A
  handle then carries its mode, so its later calls (write, acquire) need no new check, as
  in Chubby; a SetAcl needs a handle opened for CHANGE_ACL (only), other writes one opened
  for WRITE. `principal` None means a trusted caller (unit tests, the simulator).
* **Quotas.** A call's writes are proposed for its principal (`Proposal.principal`), whom
  the namespace charges for the nodes and bytes they create (`chubbypy.namespace._quota`);
  one the namespace would refuse for a quota is refused here first, costing no entry.
* **The ACL directory.** A master whose cell has none (a new cell) first proposes the one
  `protect_acl_directory` makes, listing the operators (`admins`): only they may then
  change ACL files (see `chubbypy.namespace._acl`).
* **Operators' queries.** `list_sessions` pages through the sessions in id order with
  what the master knows of each: its name (replicated), its state and lease (the session
  table), its open handles (this mastership's), the locks it holds and the ephemeral
  files it owns (the database). It lists clients' names and what they hold, so it needs
  the ACL called ``admin`` to admit the caller; it names no session, and is answered at
  once, fail-over or not: it acts on nothing.
* **Operators' lock view.** `lock_info` shows a node's lock to whoever may read the node:
  its holders (from the database) and their sessions' names and principals, its queue of
  waiters in order with how long each has waited (this mastership's memory), and the rest
  of its lock-delay (this master's timer). It is answered at once, fail-over or not.
* **Operators ending sessions.** `kill_session` ends another client's session, for
  principals the ACL ``admin`` admits, without breaking the lease promise (Chubby §2.8:
  a lease ends no earlier at the client than at the master): the master stops extending
  it (`SessionTable.operator_ending`). Its KeepAlives, the parked one at once, are
  refused SESSION_EXPIRED ("ending: ended by an operator"), so its client learns that
  the session is over and its locks lost; and once the lease it has runs out the session
  expires as any other does (`EndSession(expired=True)`: ephemeral files deleted, locks
  freed into their lock-delay). Until then its locks stay held, and a write that changes
  a name it caches waits (its client may still read that cache, unaware). The answer
  says how long that lease still runs. The mark is this mastership's memory, nothing is
  proposed: a fail-over before the lease runs out forgets it, and the session lives on
  if its client never heard (an operator ends it again; a client that heard stops its
  KeepAlives, and the new master expires it at the end of the lease it grants).
  Not numbered: ending a session that is ending already changes nothing and says so.
* **Sessions' names** are the clients' descriptions of themselves, shown to operators: a
  name that is not printable text (a control character, a terminal escape) is refused.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from attrs import frozen

from chubbypy.locks import (
    LOCK_DELAY_MS_MAX,
    LockKey,
    LockState,
    Sequencer,
    conflict,
    decode_sequencer,
)
from chubbypy.locks import release as lock_after_release
from chubbypy.master._cache import CacheGate
from chubbypy.master._ids import CallToken, GateTicket
from chubbypy.master._registry import HandleRegistry
from chubbypy.master._results import (
    CallResult,
    ClientWrite,
    Done,
    HandleOpened,
    KeepAliveAnswered,
    LockGranted,
    LockSummary,
    LockWaiterSummary,
    NodeRead,
    Proposal,
    Reply,
    SequencerChecked,
    SessionEnding,
    SessionsListed,
    SessionStarted,
    SessionSummary,
)
from chubbypy.master._retries import CallRetries
from chubbypy.master._waits import AcquireCall, LockWaits
from chubbypy.namespace import (
    ADMIN,
    Access,
    Applied,
    NamespaceMachine,
    NodeRecord,
    access_problem,
    acl_directory,
    acl_path,
    admits,
    check_path,
    protect_acl_directory,
    quota_problem,
    request_problem,
    retried_session,
    stale_call,
)
from chubbypy.namespace._names import parent_of
from chubbypy.protocol import NO_SESSION, CallNumber, HandleId, SessionId
from chubbypy.protocol._plain import DecodeError
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Acquire,
    Create,
    EndLockDelay,
    EndSession,
    InSession,
    LockHeldAt,
    LockMode,
    LogWrite,
    MultiOp,
    MultiResult,
    OpenSession,
    Release,
    SessionOpened,
    SetAcl,
    SimpleWrite,
    WriteResult,
    Written,
)
from chubbypy.protocol.session import (
    LOCK_INFO_LISTED_MAX,
    SESSION_PATHS_LISTED_MAX,
    SESSIONS_PAGE_MAX,
    EventKind,
    EventMask,
    HandleMode,
    LockHolderInfo,
    session_name_problem,
)
from chubbypy.sessions import (
    Handle,
    SessionRecord,
    SessionTable,
    SessionTiming,
    decode_handle,
)


@frozen
class MasterTiming:
    """The master's durations: its session table's, and how long a tick is."""

    session: SessionTiming
    tick_microseconds: int
    """For converting lock-delays, given in milliseconds, into ticks (rounding up)."""
    waiters_max: int = 100_000
    calls_waiting_per_session_max: int = 1_000
    """What one session may have waiting here: its acquires queued for their locks and
    its retries joined to a call in progress (``limits.calls_waiting_per_session_max``)."""
    handles_per_session_max: int = 10_000
    """Handles one session may have open here (``limits.handles_per_session_max``)."""
    cached_names_per_session_max: int = 10_000
    """Names one session may be registered as caching here
    (``limits.cached_names_per_session_max``); past it reads are answered uncached."""
    lock_info_listed_max: int = 100
    """The most holders, and the most waiters, one `lock_info` lists
    (``sessions.lock_info_listed_max``, at most LOCK_INFO_LISTED_MAX)."""

    def __attrs_post_init__(self) -> None:
        assert 1 <= self.lock_info_listed_max <= LOCK_INFO_LISTED_MAX, self

    def lock_delay_ticks(self, delay_ms: int) -> int:
        return math.ceil(delay_ms * 1000 / self.tick_microseconds)

    @classmethod
    def from_seconds(
        cls,
        *,
        tick_seconds: float,
        lease_seconds: float,
        answer_before_seconds: float,
        clock_drift_max: float,
        events_pending_max: int,
        waiters_max: int,
        calls_waiting_per_session_max: int = 1_000,
        handles_per_session_max: int = 10_000,
        cached_names_per_session_max: int = 10_000,
        lock_info_listed_max: int = 100,
    ) -> MasterTiming:
        """The one conversion of the session settings (see `SessionTiming.from_seconds`)."""
        session = SessionTiming.from_seconds(
            tick_seconds=tick_seconds,
            lease_seconds=lease_seconds,
            answer_before_seconds=answer_before_seconds,
            clock_drift_max=clock_drift_max,
            events_pending_max=events_pending_max,
        )
        tick_microseconds = round(tick_seconds * 1_000_000)
        return cls(
            session,
            tick_microseconds=tick_microseconds,
            waiters_max=waiters_max,
            calls_waiting_per_session_max=calls_waiting_per_session_max,
            handles_per_session_max=handles_per_session_max,
            cached_names_per_session_max=cached_names_per_session_max,
            lock_info_listed_max=lock_info_listed_max,
        )


@frozen
class _OpenCall:
    session_id: SessionId
    path: str
    mode: HandleMode
    events: EventMask
    lock_delay_ms: int
    exclusive: bool
    principal: str | None = None


_MODE_ACCESS = (
    (HandleMode.READ, Access.READ),
    (HandleMode.WRITE, Access.WRITE),
    (HandleMode.CHANGE_ACL, Access.CHANGE),
)


@frozen
class _WriteCall:
    fenced: bool


@frozen
class _ReplyWhenApplied:
    """A call answered `Done` (or its failure) once its proposal is applied."""

    always_done: bool = False
    """Answer Done even if the proposal failed (Close never fails)."""


@frozen
class _Creation:
    """A session's creation, answered once applied; the principal it came from (None: a
    trusted caller), which the new session remembers."""

    principal: str | None = None


_Pending = _OpenCall | _WriteCall | _ReplyWhenApplied | _Creation
"""A call other than an acquire (`LockWaits` keeps those), answered once applied."""


SESSIONS_PAGE_BYTES_BUDGET = 256 * 1024
"""A page of `list_sessions` ends early once the names and paths it lists come to about
this many bytes (it always lists at least one session, which SESSION_PATHS_LISTED_MAX
bounds): so a page fits a frame of the default 1 MiB with room to spare."""
LOCK_INFO_BYTES_BUDGET = 256 * 1024
"""Likewise, a `lock_info`'s holders and waiters stop being listed once their names come
to about this many bytes (it always lists at least one holder of a held lock); their
counts still say how many there are."""


class MasterService:
    """One mastership's sessions, handles and locks; see the module docstring."""

    def __init__(
        self,
        timing: MasterTiming,
        handle_key: bytes,
        admins: tuple[str, ...] = (),
        *,
        operator_ends_at_once: bool = False,
    ) -> None:
        self._timing = timing
        self._operator_ends_at_once = operator_ends_at_once
        """A deliberate bug (`chubbypy.node.NodeBug.OPERATOR_ENDS_AT_ONCE`), for the
        simulator's checkers to catch: `kill_session` also proposes the session's end."""
        self._key = handle_key
        self._admins = admins
        """The cell's operators, listed in the ACL directory this master makes if the
        cell has none (none: it makes none)."""
        self._machine: NamespaceMachine | None = None
        self._epoch = 0
        self._now = 0
        self._table: SessionTable[CallToken] = SessionTable(timing.session)
        self._gate: CacheGate[Proposal | ClientWrite] = CacheGate(
            self._table, timing.cached_names_per_session_max
        )
        self._handles = HandleRegistry()
        self._waits = LockWaits(timing.waiters_max)
        self._pending: dict[CallToken, _Pending] = {}
        self._closing: set[SessionId] = set()
        """Sessions whose close is in flight (for operators' listings)."""
        self._replies: list[Reply] = []
        self._retries = CallRetries()
        self._tickets = map(GateTicket, itertools.count(1))
        self._again: list[LogWrite] = []
        """The master's own decisions the log refused, to propose again (`not_proposed`)."""

    # ------------------------------------------------------------------------- life

    def start(self, now: int, epoch: int, machine: NamespaceMachine) -> None:
        """This replica serves as master of `epoch` from tick `now`; `machine` is its
        database, with every entry before the epoch's start applied."""
        assert self._machine is None, "one service per mastership"
        self._machine, self._epoch, self._now = machine, epoch, now
        sessions = [s.session_id for s in machine.sessions()]
        self._table.start(now, sessions, first_sequence=(epoch << 32) + 1)
        for record in machine.records():
            if record.lock.delay_ms:
                self._delay((record.path, record.instance), record.lock.delay_ms)
        if self._admins and machine.tree.get(acl_directory(machine.cell)) is None:
            self._propose(None, protect_acl_directory(machine.cell, self._admins))

    def tick(self, now: int) -> None:
        self._now = now
        again, self._again = self._again, []
        for write in again:
            self._propose(None, write)
        self._table.tick(now)
        for token, ticks in self._waits.waits_ended(now):
            message = f"not acquired within the {ticks} ticks asked for: held by another"
            self._reply(token, Failure(ErrorCode.LOCK_HELD, message))
        for key in self._waits.delays_ended(now):
            self._propose(None, EndLockDelay(*key))

    def take(self, *, master_lease_valid: bool) -> tuple[list[Reply], list[Proposal | ClientWrite]]:
        """Replies and proposals since the last call, in order.

        Answering a KeepAlive extends a session lease: a promise only a master that holds
        its master lease may make, because a successor starts only once that lease is
        over and then grants every session a whole lease from then. Without the lease
        (`master_lease_valid` False: the shell's core stepped down at this very tick, and
        the news has not reached the service yet) KeepAlives due are answered NOT_MASTER
        instead, and their clients retry.
        """
        outputs = self._table.take()
        for answer in outputs.answers:
            if not master_lease_valid:
                message = "the master lease lapsed: ask again"
                self._reply(answer.token, Failure(ErrorCode.NOT_MASTER, message))
                continue
            answered = KeepAliveAnswered(answer.lease_ticks, answer.events, answer.held_ticks)
            self._reply(answer.token, answered)
        for session_id, token in outputs.refused:
            self._reply(token, self._refusal(session_id))
        for session_id in outputs.expire:
            self._gate.session_gone(session_id)  # its lease is over: so is its cache
            self._propose(None, EndSession(session_id, expired=True))
        self._gate.failover_complete = self._table.failover_complete
        proposals = self._gate.release(self._db().tree)
        replies, self._replies = self._replies, []
        return replies, proposals

    def submit_write(self, write: LogWrite) -> GateTicket:
        """A client's write (no session) bound for the log: its ticket. It comes out of
        `take` as a `ClientWrite` once the cache gate lets it through."""
        ticket = next(self._tickets)
        self._gate.submit(ticket, ClientWrite(ticket), write, self._db().tree)
        return ticket

    def landed(self, ticket: GateTicket) -> None:
        """The write of `ticket` (a `Proposal`'s or a `ClientWrite`'s) was applied, or
        refused: the names it touched may be cached again."""
        self._gate.landed(ticket)

    def not_proposed(self, proposal: Proposal) -> None:
        """The log refused `proposal` (the master's queue was full, say). A call's is
        answered by the caller; the master's own decision (a session's expiry, a
        lock-delay's end) must still happen, so it is proposed again at the next tick."""
        if proposal.token is None:
            self._again.append(proposal.write)

    # ------------------------------------------------------------------------- sessions

    def create_session(
        self, token: CallToken, name: str, nonce: int = 0, principal: str | None = None
    ) -> None:
        """Open a session for client `name`, created by `principal` (None: a trusted
        caller, recorded as no one); a retry (the same `nonce`, not 0) of a creation that
        was applied gets that session, if it comes from the same principal, and
        PERMISSION_DENIED otherwise (`retried_session`). A name that is not printable text
        is refused BAD_REQUEST (it is shown to operators: no terminal escapes). The session
        remembers `principal`, for operators."""
        problem = session_name_problem(name)
        if problem is not None:
            self._reply(token, Failure(ErrorCode.BAD_REQUEST, problem))
            return
        creation = OpenSession(name, nonce)
        retried = retried_session(self._db().tree, creation, principal or "")
        if isinstance(retried, Failure):
            self._reply(token, retried)
        elif retried is not None:
            self._heard_from(retried.session_id, principal)
            self._reply(token, self._session_started(retried.session_id))
        else:
            self._pending[token] = _Creation(principal)
            self._propose(token, creation, principal)

    def close_session(self, token: CallToken, session_id: SessionId) -> None:
        """End the session cleanly (its locks are free at once); never fails. From now on
        the session is not live, and its cache is void (the client stopped using it)."""
        if self._table.is_live(session_id) or self._table.awaits_expiry(session_id):
            self._closing.add(session_id)
        self._table.closing(session_id)
        self._gate.session_gone(session_id)
        self._pending[token] = _ReplyWhenApplied(always_done=True)
        self._propose(token, EndSession(session_id, expired=False))

    def keep_alive(
        self,
        token: CallToken,
        session_id: SessionId,
        acked_through: int,
        principal: str | None = None,
    ) -> None:
        if not self._table.keep_alive(session_id, token, acked_through):
            self._reply(token, self._refusal(session_id))
            return
        self._heard_from(session_id, principal)
        self._gate.acked(session_id, acked_through)

    # ------------------------------------------------------------------------- reads

    def read(
        self,
        token: CallToken,
        session_id: SessionId,
        path: str,
        *,
        cache: bool,
        principal: str | None = None,
    ) -> None:
        """The node at `path` (or its absence); with `cache`, the session is registered as
        caching it unless a change to it is under way, or the session caches as many names
        as it may (the answer then says why, for the log). With `principal`, it must have
        read access."""
        machine = self._db()
        refused = self._session_problem(session_id) or check_path(
            path, machine.cell, machine.tree.limits
        )
        if refused is None and principal is not None:
            refused = access_problem(machine.tree, principal, path, Access.READ)
        if refused is not None:
            self._reply(token, refused)
            return
        self._heard_from(session_id, principal)
        node = machine.tree.get(path)
        cached = cache and self._gate.register(session_id, path)
        full = cache and not cached and self._gate.full(session_id, path)
        sequence = self._table.next_sequence(session_id)
        stat, contents = (None, b"") if node is None else (machine.tree.stat(node), node.contents)
        why = self._cache_full(session_id) if full else ""
        self._reply(token, NodeRead(stat, contents, cached, sequence, why))

    @property
    def cache_cost(self) -> tuple[int, int]:
        """(cached names registered, writes held for invalidations), for /metrics."""
        return self._gate.cached_names, self._gate.held

    # ------------------------------------------------------------------------- handles

    def open(
        self,
        token: CallToken,
        session_id: SessionId,
        path: str,
        mode: HandleMode,
        events: EventMask = EventMask.NONE,
        lock_delay_ms: int = 0,
        create: Create | None = None,
        exclusive: bool = False,
        principal: str | None = None,
        number: CallNumber | None = None,
    ) -> None:
        """Open `path` in `mode`; with `create`, create it first if it does not exist (and
        with `exclusive`, fail if it does). `create.path` must be `path`. With `principal`,
        its access is checked (see the module docstring). With `number` and `create`, a
        retry whose first attempt created the node opens it as created."""
        machine = self._db()
        refused = (
            self._session_problem(session_id)
            or check_path(path, machine.cell, machine.tree.limits)
            or self._handles_full(session_id)
        )
        if refused is None and not 0 <= lock_delay_ms <= LOCK_DELAY_MS_MAX:
            message = f"a lock-delay of {lock_delay_ms} ms; at most {LOCK_DELAY_MS_MAX}"
            refused = Failure(ErrorCode.BAD_REQUEST, message)
        if refused is not None:
            self._reply(token, refused)
            return
        self._heard_from(session_id, principal)
        assert create is None or create.path == path, (create, path)
        call = _OpenCall(session_id, path, mode, events, lock_delay_ms, exclusive, principal)
        kept = False if create is None or number is None else self._retry(token, session_id, number)
        if not isinstance(kept, bool):
            self._open_applied(token, call, kept)
            return
        if kept:
            return
        node = machine.tree.get(path)
        if node is not None:
            self._opened(token, call, node, created=False)
        elif create is None:
            self._reply(token, Failure(ErrorCode.NO_SUCH_NODE, f"no node {path}"))
        elif principal is not None and (
            denied := access_problem(machine.tree, principal, parent_of(path), Access.WRITE)
            or quota_problem(machine.tree, principal, create)
        ):
            self._reply(token, denied)
        else:
            self._pending[token] = call
            self._track(token, session_id, number)
            self._propose(token, InSession(session_id, create, number), principal)

    def close(
        self, token: CallToken, handle_bytes: bytes, number: CallNumber | None = None
    ) -> None:
        """Close the handle: its lock (if it holds it) is released; never fails for a
        handle of this cell. With `number`, a retry gets the first answer."""
        if self._replayed(token, handle_bytes, number, lambda _: Done()):
            return
        try:
            handle = decode_handle(handle_bytes, self._key)
        except DecodeError as error:
            self._reply(token, Failure(ErrorCode.INVALID_HANDLE, str(error)))
            return
        self._handles.close(handle)
        for waiting in self._waits.cancel_handle(handle):
            self._reply(waiting, Failure(ErrorCode.INVALID_HANDLE, "the handle was closed"))
        node = self._db().tree.get(handle.path)
        holds = node is not None and node.instance == handle.instance
        if holds and node is not None and node.lock.holder(handle.session_id, handle.handle_id):
            self._pending[token] = _ReplyWhenApplied(always_done=True)
            self._track(token, handle.session_id, number)
            self._propose_release(token, handle.session_id, handle.handle_id, node, None, number)
        else:
            self._reply(token, Done())

    def poison(self, token: CallToken, handle_bytes: bytes) -> None:
        """Make the handle's outstanding and later calls fail (INVALID_HANDLE) without
        closing it (Chubby §2.6): its blocked acquires end; a lock it holds stays held until
        it is closed. Remembered for this mastership (the client library remembers too)."""
        try:
            handle = decode_handle(handle_bytes, self._key)
        except DecodeError as error:
            self._reply(token, Failure(ErrorCode.INVALID_HANDLE, str(error)))
            return
        self._handles.poison(handle.handle_id)
        for waiting in self._waits.cancel_handle(handle):
            self._reply(waiting, Failure(ErrorCode.INVALID_HANDLE, "the handle was poisoned"))
        self._reply(token, Done())

    # ------------------------------------------------------------------------- locks

    def acquire(
        self, token: CallToken, handle_bytes: bytes, mode: LockMode, *, wait: bool,
        wait_ticks: int | None = None,
    ) -> None:  # fmt: skip
        """Take the handle's lock in `mode`: at once if free, else queued (`wait`) or
        refused. A queued request waits at most `wait_ticks` if given, then is withdrawn
        and refused LOCK_HELD (a grant already proposed for it still applies, and is
        answered)."""
        resolved = self._resolve(handle_bytes, HandleMode.WRITE)
        if isinstance(resolved, Failure):
            self._reply(token, resolved)
            return
        handle, node = resolved
        holder = node.lock.holder(handle.session_id, handle.handle_id)
        if holder is not None:
            # A retry whose first answer was lost (a fail-over, a dropped connection): the
            # lock is this handle's already, in the mode asked for or not.
            if holder.mode is mode:
                self._reply(token, self._granted(node, mode))
            else:
                message = f"this handle holds the lock {holder.mode.name.lower()} already"
                self._reply(token, Failure(ErrorCode.LOCK_HELD, message))
            return
        in_progress = self._waits.in_progress(handle)
        if in_progress is not None:
            first, pending = in_progress
            if pending.mode is mode and pending.wait == wait:
                self._join(first, token, handle.session_id)  # a retry keeps the first's place
            else:
                message = "an acquire through this handle is in progress: one at a time"
                self._reply(token, Failure(ErrorCode.BAD_REQUEST, message))
            return
        call = AcquireCall(handle, mode, wait)
        refused = conflict(node.lock, mode)
        if refused is None and not self._waits.has_waiters(call.key):
            self._waits.proposed(token, call)
            self._propose(token, call.command())
        elif wait:
            if (full := self._waiting_full(handle.session_id)) is not None:
                self._reply(token, full)
                return
            if not self._waits.wait(token, call, self._now, wait_ticks):
                self._reply(token, Failure(ErrorCode.BUSY, "too many lock requests waiting"))
                return
            for holder in node.lock.holders:
                self._notify_handle(holder.handle_id, EventKind.CONFLICTING_LOCK)
        else:
            self._reply(token, refused or Failure(ErrorCode.LOCK_HELD, "others wait for it"))

    def release(
        self,
        token: CallToken,
        handle_bytes: bytes,
        generation: int | None = None,
        number: CallNumber | None = None,
    ) -> None:
        """Let go of the lock; with `generation`, only the hold of that acquisition (a late
        or duplicated release must not free a later one). With `number`, a retry gets the
        first answer (see `_replayed`)."""
        if self._replayed(token, handle_bytes, number, _done_unless_failed):
            return
        resolved = self._resolve(handle_bytes, None)
        if isinstance(resolved, Failure):
            self._reply(token, resolved)
            return
        handle, node = resolved
        self._pending[token] = _ReplyWhenApplied()
        self._track(token, handle.session_id, number)
        self._propose_release(token, handle.session_id, handle.handle_id, node, generation,
                              number)  # fmt: skip

    def write(
        self,
        token: CallToken,
        handle_bytes: bytes,
        write: SimpleWrite,
        sequencer: bytes | None = None,
        number: CallNumber | None = None,
        principal: str | None = None,
    ) -> None:
        """Apply `write` to the handle's node on behalf of its session; with `sequencer`
        (Chubby's SetSequencer), only while that sequencer is valid when the write is
        applied: the fencing check is part of the log command, so it cannot be overtaken.
        With `number`, a retry gets the first answer (see `_replayed`). A SetAcl needs a
        handle opened for CHANGE_ACL, any other write one opened for WRITE. With
        `principal`, the write is done for it (charged to its quotas)."""
        fenced = sequencer is not None
        if self._replayed(
            token, handle_bytes, number, lambda kept: _write_result(kept, fenced=fenced)
        ):
            return
        needs = HandleMode.CHANGE_ACL if isinstance(write, SetAcl) else HandleMode.WRITE
        resolved = self._resolve(handle_bytes, needs)
        if isinstance(resolved, Failure):
            self._reply(token, resolved)
            return
        handle, _ = resolved
        if write.path != handle.path:
            message = f"a write to {write.path} through a handle on {handle.path}"
            self._reply(token, Failure(ErrorCode.BAD_REQUEST, message))
            return
        tree = self._db().tree
        wrong = request_problem(tree, write) or (
            None if principal is None else quota_problem(tree, principal, write)
        )
        if wrong is not None:  # what the log would refuse anyway: no entry for it
            self._reply(token, wrong)
            return
        guarded: SimpleWrite | MultiOp = write
        if sequencer is not None:
            try:
                named = decode_sequencer(sequencer)
            except DecodeError as error:
                self._reply(token, Failure(ErrorCode.INVALID_SEQUENCER, str(error)))
                return
            test = LockHeldAt(named.path, named.instance, named.mode, named.lock_generation)
            guarded = MultiOp((test,), (write,))
        self._pending[token] = _WriteCall(fenced=fenced)
        self._track(token, handle.session_id, number)
        self._propose(token, InSession(handle.session_id, guarded, number), principal)

    def get_sequencer(self, token: CallToken, handle_bytes: bytes) -> None:
        """The sequencer of the lock this handle holds (Chubby §2.4)."""
        resolved = self._resolve(handle_bytes, None)
        if isinstance(resolved, Failure):
            self._reply(token, resolved)
            return
        handle, node = resolved
        holder = node.lock.holder(handle.session_id, handle.handle_id)
        if holder is None:
            self._reply(token, Failure(ErrorCode.LOCK_NOT_HELD, "this handle holds no lock"))
            return
        self._reply(token, self._granted(node, holder.mode))

    def check_sequencer(self, token: CallToken, sequencer: bytes) -> None:
        """Whether `sequencer` names a lock held now in its mode at its generation."""
        self._reply(token, SequencerChecked(self.sequencer_valid(sequencer)))

    def sequencer_valid(self, sequencer: bytes) -> bool:
        try:
            named = decode_sequencer(sequencer)
        except DecodeError:
            return False
        machine = self._db()
        node = machine.tree.get(named.path)
        return (
            named.cell == machine.cell
            and node is not None
            and node.instance == named.instance
            and node.lock.mode is named.mode
            and node.lock_generation == named.lock_generation
        )

    @property
    def session_count(self) -> int:
        """Live sessions this master knows."""
        return len(self._table)

    def cancel(self, token: CallToken) -> None:
        """The caller gave up (deadline, lost connection): stop waiting for the lock.

        A grant already proposed for it still applies; the handle keeps that lock until it
        releases it or closes, as in Chubby, where only Close or Poison cancel an Acquire.
        """
        if not self._retries.leave(token):
            self._waits.cancel(token)

    def call_ended(self, token: CallToken) -> list[CallToken]:
        """The call `token` ended outside the service (the log refused its proposal, or its
        epoch ended first): forget it; the retries that joined it, to answer alike."""
        self._pending.pop(token, None)
        self._waits.applied(token)
        return self._retries.settle(token)

    # ------------------------------------------------------------------------- operators

    def list_sessions(
        self,
        token: CallToken,
        after: SessionId = NO_SESSION,
        limit: int = SESSIONS_PAGE_MAX,
        principal: str | None = None,
    ) -> None:
        """One page of the cell's sessions in id order: those numbered above `after`, at
        most `limit` (clamped to SESSIONS_PAGE_MAX, and fewer once the page passes
        SESSIONS_PAGE_BYTES_BUDGET). With `principal`, the ACL called ``admin`` must admit
        it (the listing shows clients' names and what they hold); otherwise
        PERMISSION_DENIED, and nothing is listed."""
        tree = self._db().tree
        refused = None
        if limit < 1:
            refused = Failure(ErrorCode.BAD_REQUEST, f"a session list limit of {limit}; at least 1")
        else:
            refused = self.operator_problem(principal, "list sessions")
        if refused is not None:
            self._reply(token, refused)
            return
        records, more = tree.sessions_after(after, min(limit, SESSIONS_PAGE_MAX))
        summaries: list[SessionSummary] = []
        listed_bytes = 0
        for record in records:
            if summaries and listed_bytes >= SESSIONS_PAGE_BYTES_BUDGET:
                more = True  # cut short: the rest of the page follows on the next
                break
            summary = self._summary(record)
            summaries.append(summary)
            listed_bytes += _listed_bytes(summary)
        self._reply(token, SessionsListed(tuple(summaries), more))

    def kill_session(
        self, token: CallToken, session_id: SessionId, principal: str | None = None
    ) -> None:
        """End session `session_id` for an operator: its lease is extended no more, and it
        expires when the lease it has runs out (see the module docstring). With
        `principal`, the ACL called ``admin`` must admit it, else PERMISSION_DENIED and
        nothing changes. Answered at once, `SessionEnding`: not found, ending already
        (nothing changed), or ending now; and in how many ticks its lease runs out."""
        refused = self.operator_problem(principal, "end another client's session")
        if refused is not None:
            self._reply(token, refused)
            return
        if self._db().tree.session(session_id) is None:
            self._reply(token, SessionEnding(found=False, already=False, ends_in_ticks=0))
            return
        already = not self._table.is_live(session_id)
        self._table.operator_ending(session_id)  # refused from now on: its client hears
        if self._operator_ends_at_once:
            self._propose(None, EndSession(session_id, expired=True))
        # The table holds every session the database holds (see `_summary`).
        expiry = self._table.lease_expiry(session_id)
        assert expiry is not None, session_id
        self._reply(token, SessionEnding(True, already, max(0, expiry - self._now)))

    def lock_info(self, token: CallToken, path: str, principal: str | None = None) -> None:
        """The lock of the node at `path`: its holders, its waiters in queue order and its
        lock-delay (`LockSummary`). With `principal`, it must have read access to the
        node (PERMISSION_DENIED, as for reading its contents); NO_SUCH_NODE if there is
        none."""
        machine = self._db()
        refused = check_path(path, machine.cell, machine.tree.limits)
        if refused is None and principal is not None:
            refused = access_problem(machine.tree, principal, path, Access.READ)
        node = machine.tree.get(path)
        if refused is None and node is None:
            refused = Failure(ErrorCode.NO_SUCH_NODE, f"no node {path}")
        if refused is not None or node is None:
            self._reply(token, refused or Failure(ErrorCode.NO_SUCH_NODE, path))
            return
        self._reply(token, self._lock_summary(node))

    def _lock_summary(self, node: NodeRecord) -> LockSummary:
        """What this master knows of the lock of `node`, bounded as `lock_info` says."""
        key = (node.path, node.instance)
        budget = _Budget(LOCK_INFO_BYTES_BUDGET)
        holders = self._lock_holders(node, budget)
        queued = self._waits.queued(key)
        waiters = self._lock_waiters(queued, budget)
        delay_end = self._waits.delay_end(key)
        delay_left = 0 if not node.lock.delay_ms or delay_end is None else delay_end - self._now
        mode = "free" if node.lock.mode is None else node.lock.mode.name.lower()
        return LockSummary(node.path, node.instance, mode, node.lock_generation,
                           tuple(holders), len(node.lock.holders), tuple(waiters), len(queued),
                           max(0, delay_left))  # fmt: skip

    def _lock_holders(self, node: NodeRecord, budget: _Budget) -> list[LockHolderInfo]:
        """The first holders of the lock of `node` (at least one, if it is held)."""
        holders: list[LockHolderInfo] = []
        for hold in node.lock.holders[: self._timing.lock_info_listed_max]:
            client, principal = self._who(hold.session_id)
            if not budget.spend(client, principal) and holders:
                break
            mode = hold.mode.name.lower()
            holders.append(
                LockHolderInfo(hold.session_id, client, principal, mode, hold.lock_delay_ms)
            )
        return holders

    def _lock_waiters(self, queued: list[AcquireCall], budget: _Budget) -> list[LockWaiterSummary]:
        """The first of the acquires `queued` for a lock, head first, while `budget` lasts."""
        waiters: list[LockWaiterSummary] = []
        for call in queued[: self._timing.lock_info_listed_max]:
            session_id = call.handle.session_id
            client, principal = self._who(session_id)
            if not budget.spend(client, principal):
                break
            assert call.queued_at is not None, call
            waited = self._now - call.queued_at
            mode = call.mode.name.lower()
            waiters.append(LockWaiterSummary(session_id, client, principal, mode, waited))
        return waiters

    def _who(self, session_id: SessionId) -> tuple[str, str]:
        """The session's name (its client's description) and its principal, as known."""
        record = self._db().tree.session(session_id)
        assert record is not None, session_id  # its end drops its holds and its waits
        return record.name, self._table.principal(session_id)

    def operator_problem(self, principal: str | None, what: str) -> Failure | None:
        """PERMISSION_DENIED unless `principal` is an operator, whom the ACL called
        ``admin`` admits (None: a trusted caller). The one check of every operators'
        call."""
        tree = self._db().tree
        if principal is None or admits(tree, ADMIN, principal):
            return None
        message = (
            f"{principal!r} may not {what}: the ACL {ADMIN!r} "
            f"({acl_path(tree.cell, ADMIN)}) does not admit it"
        )
        return Failure(ErrorCode.PERMISSION_DENIED, message)

    def _summary(self, record: SessionRecord) -> SessionSummary:
        """What this master knows of the session `record` names."""
        session_id = record.session_id
        tree = self._db().tree
        locks: list[tuple[str, str]] = []
        ephemeral: list[str] = []
        for path in tree.session_paths(session_id):
            node = tree.get(path)
            assert node is not None, (session_id, path)
            holder = next((h for h in node.lock.holders if h.session_id == session_id), None)
            if holder is not None:
                locks.append((path, holder.mode.name.lower()))
            if node.owner_session == session_id:
                ephemeral.append(path)
        # The table holds every session the database holds: both change only as entries
        # are applied, and the service hears of each entry as soon as it was applied.
        expiry = self._table.lease_expiry(session_id)
        assert expiry is not None, session_id
        return SessionSummary(
            session_id,
            record.name,
            self._state_name(session_id),
            max(0, expiry - self._now),
            self._handles.count(session_id),
            tuple(locks[:SESSION_PATHS_LISTED_MAX]),
            len(locks),
            tuple(ephemeral[:SESSION_PATHS_LISTED_MAX]),
            len(ephemeral),
            self._gate.cached_by(session_id),
            self._table.principal(session_id),
        )

    def _state_name(self, session_id: SessionId) -> str:
        """The session's state as `chubbypy.protocol.session.SessionInfo.state` names it."""
        if self._table.is_live(session_id):
            return "live"
        if self._table.is_doomed(session_id):
            return "doomed"
        if self._table.is_operator_ended(session_id):
            return "operator-ended"
        return "closing" if session_id in self._closing else "ending"

    # ------------------------------------------------------------------------- the log

    def applied(self, token: CallToken | None, write: LogWrite, applied: Applied) -> None:
        """`write` (proposed by this service with `token`, or by anyone with None) was
        applied with `applied`: answer, wake waiters, deliver events."""
        result = applied.result
        match write:
            case OpenSession() if isinstance(result, SessionOpened):
                if self._table.lease_expiry(result.session_id) is None:
                    self._table.opened(result.session_id)
                # else a retried creation applied twice: the second opened nothing
                if token is not None:
                    pending = self._pending.pop(token, None)
                    if isinstance(pending, _Creation):
                        self._heard_from(result.session_id, pending.principal)
                    self._reply(token, self._session_started(result.session_id))
                return
            case EndSession(session_id) if isinstance(result, Written):
                self._session_ended(session_id, applied)
            case InSession(_, inner):
                self._changed(inner, applied)
            case Acquire() | Release() | EndLockDelay():
                self._lock_changed(write, result)
            case OpenSession() | EndSession():
                pass
            case _:
                self._changed(write, applied)
        if token is not None:
            self._finish(token, write, result)

    # ------------------------------------------------------------------------- helpers

    def _db(self) -> NamespaceMachine:
        assert self._machine is not None, "start() first"
        return self._machine

    def _heard_from(self, session_id: SessionId, principal: str | None) -> None:
        """A call of the session came from `principal` (None: a trusted caller)."""
        if principal is not None:
            self._table.heard_from(session_id, principal)

    def _reply(self, token: CallToken, result: CallResult) -> None:
        """Answer call `token`, and every retry that joined it, with `result`."""
        self._replies.append(Reply(token, result))
        for retry in self._retries.settle(token):
            self._replies.append(Reply(retry, result))

    def _track(self, token: CallToken, session_id: SessionId, number: CallNumber | None) -> None:
        """The numbered call `token` is proposed: its retries join it until answered."""
        if number is not None:
            self._retries.track(token, (session_id, number.sequence))

    def _replayed(
        self,
        token: CallToken,
        handle_bytes: bytes,
        number: CallNumber | None,
        answer: Callable[[WriteResult], CallResult],
    ) -> bool:
        """Whether the numbered call `token` through a handle was a retry, now answered
        (see `_retry`; `answer` makes its answer of the kept result). False (not a retry,
        or a handle that does not decode: it is refused as any other) otherwise."""
        if number is None:
            return False
        try:
            session_id = decode_handle(handle_bytes, self._key).session_id
        except DecodeError:
            return False
        kept = self._retry(token, session_id, number)
        if isinstance(kept, bool):
            return kept
        self._reply(token, answer(kept))
        return True

    def _retry(
        self, token: CallToken, session_id: SessionId, number: CallNumber
    ) -> WriteResult | bool:
        """Whether the call `token` numbered `number` in the session is a retry: True if it
        was answered here (it joined its first attempt, still in progress; or the session's
        record has passed its number: STALE_REQUEST); the first attempt's result if the
        record keeps it, for the caller to answer; False if it is no retry (or its session
        is gone, and it is refused as any other call)."""
        first = self._retries.numbered((session_id, number.sequence))
        if first is not None:
            self._join(first, token, session_id)
            return True
        record = self._db().tree.session(session_id)
        if record is None:
            return False
        if number.sequence < record.calls.low_water:
            self._reply(token, stale_call(session_id, number.sequence, self._db().tree.limits))
            return True
        kept = record.calls.result(number.sequence)
        return False if kept is None else kept

    def _join(self, first: CallToken, retry: CallToken, session_id: SessionId) -> None:
        """`retry` waits for the answer of `first`, in progress; unless its session has as
        many calls waiting as it may, when it is refused at once."""
        full = self._waiting_full(session_id)
        if full is not None:
            self._replies.append(Reply(retry, full))
        else:
            self._retries.join(first, retry, session_id)

    def _handles_full(self, session_id: SessionId) -> Failure | None:
        """RESOURCE_EXHAUSTED if the session has as many handles open here as it may (a
        handle is the master's memory, not the log's: opening them in a loop must cost a
        bounded amount); else None."""
        count, most = self._handles.count(session_id), self._timing.handles_per_session_max
        if count < most:
            return None
        message = (
            f"session {session_id} has {count} handles open "
            f"(limits.handles_per_session_max is {most}); close some first"
        )
        return Failure(ErrorCode.RESOURCE_EXHAUSTED, message)

    def _cache_full(self, session_id: SessionId) -> str:
        """Why the session's read was answered uncached: it caches as many names as it may
        (issue 13's review: one session cached 100,000 absent names, 100 MB of the
        master's memory)."""
        most = self._timing.cached_names_per_session_max
        return (
            f"session {session_id} caches {self._gate.cached_by(session_id)} names "
            f"(limits.cached_names_per_session_max is {most}): a read answered uncached"
        )

    def _waiting_full(self, session_id: SessionId) -> Failure | None:
        """RESOURCE_EXHAUSTED if the session has as many calls waiting as it may (issue
        13: a flood of pipelined blocking acquires must cost the master a bounded amount,
        and must not fill the queues that every session shares); else None."""
        waiting = self._retries.joined_of(session_id) + self._waits.queued_of(session_id)
        most = self._timing.calls_waiting_per_session_max
        if waiting < most:
            return None
        message = (
            f"session {session_id} has {waiting} calls waiting at the master "
            f"(limits.calls_waiting_per_session_max is {most})"
        )
        return Failure(ErrorCode.RESOURCE_EXHAUSTED, message)

    def _propose(
        self, token: CallToken | None, write: LogWrite, principal: str | None = None
    ) -> None:
        """Propose `write`, done for `principal` (None: for no one), once the cache gate
        lets it through (at once, mostly)."""
        ticket = next(self._tickets)
        session = write.session_id if isinstance(write, InSession | EndSession) else None
        ends = isinstance(write, EndSession)
        proposal = Proposal(token, write, ticket, principal or "")
        tree = self._db().tree
        self._gate.submit(ticket, proposal, write, tree, session=session, ends_session=ends)

    def _session_started(self, session_id: SessionId) -> CallResult:
        """The answer to the creation of `session_id` (a retry's too): its lease's rest."""
        if not self._table.is_live(session_id):
            message = f"the session this creation opened, {session_id}, is ending: create another"
            return _expired(message)
        expiry = self._table.lease_expiry(session_id)
        assert expiry is not None, session_id
        # A tick short, as a KeepAlive's answer (`SessionTable._answer`): the creation was
        # applied anywhere within the tick `_now` began, and the client must never count
        # on more than the master will honour (found by the simulator's session-safety
        # checker once an operator could end a session before its first KeepAlive answer).
        return SessionStarted(session_id, max(0, expiry - self._now - 1))

    def _session_problem(self, session_id: SessionId) -> Failure | None:
        if not self._table.is_live(session_id):
            return self._refusal(session_id)
        if not self._table.failover_complete:
            message = "a new master waits for every session to acknowledge the fail-over"
            return Failure(ErrorCode.BUSY, message)
        return None

    def _refusal(self, session_id: SessionId) -> Failure:
        """SESSION_EXPIRED for a KeepAlive or call of a session that is not live: why."""
        if self._table.is_operator_ended(session_id):
            return _expired(f"session {session_id} ending: ended by an operator")
        if self._table.is_doomed(session_id):
            message = f"session {session_id} ending: it fell too far behind on its events"
            return _expired(message)
        return _expired(f"session {session_id} has ended")

    def _resolve(
        self, handle_bytes: bytes, needs: HandleMode | None
    ) -> tuple[Handle, NodeRecord] | Failure:
        """The handle and its node, or why it cannot be used (see the module docstring)."""
        try:
            handle = decode_handle(handle_bytes, self._key)
        except DecodeError as error:
            return Failure(ErrorCode.INVALID_HANDLE, str(error))
        refused = self._session_problem(handle.session_id)
        if refused is not None:
            return refused
        if self._handles.is_closed(handle.handle_id):
            return Failure(ErrorCode.INVALID_HANDLE, "the handle was closed")
        if self._handles.get(handle.handle_id) is None:  # an earlier master's, used here
            full = self._handles_full(handle.session_id)
            if full is not None:
                return full
        node = self._db().tree.get(handle.path)
        if node is None or node.instance != handle.instance:
            return Failure(
                ErrorCode.NO_SUCH_NODE, f"the node of this handle is gone: {handle.path}"
            )
        if needs is not None and not handle.mode & needs:
            message = f"the handle was not opened for {needs.name}"
            return Failure(ErrorCode.PERMISSION_DENIED, message)
        self._handles.remember(handle)
        return handle, node

    def _opened(
        self, token: CallToken, call: _OpenCall, node: NodeRecord, *, created: bool
    ) -> None:
        if call.exclusive and not created:
            self._reply(token, Failure(ErrorCode.EXISTS, f"{call.path} exists"))
            return
        if call.principal is not None:
            for bit, access in _MODE_ACCESS:
                if not call.mode & bit:
                    continue
                denied = access_problem(self._db().tree, call.principal, call.path, access)
                if denied is not None:
                    self._reply(token, denied)
                    return
        handle = Handle(
            call.session_id,
            self._handles.new_id(self._epoch),
            call.path,
            node.instance,
            call.mode,
            call.events,
            call.lock_delay_ms,
            self._epoch,
        )
        self._handles.remember(handle)
        stat = self._db().tree.stat(node)
        self._reply(token, HandleOpened(handle.encode(self._key), created, stat, handle.handle_id))

    def _granted(self, node: NodeRecord, mode: LockMode) -> LockGranted:
        sequencer = Sequencer(self._db().cell, node.path, node.instance, mode, node.lock_generation)
        return LockGranted(self._db().tree.stat(node), sequencer.encode())

    def _finish(self, token: CallToken, write: LogWrite, result: object) -> None:
        """Answer the call `token` whose proposal `write` was applied with `result`."""
        if isinstance(write, Acquire):
            self._acquire_applied(token, result)
            return
        pending = self._pending.pop(token, None)
        match pending:
            case None:
                return
            case _OpenCall():
                self._open_applied(token, pending, result)
            case _WriteCall(fenced):
                self._reply(token, _write_result(result, fenced=fenced))
            case _ReplyWhenApplied(always_done):
                done = always_done or not isinstance(result, Failure)
                self._reply(token, Done() if done else result)  # type: ignore[arg-type]
            case _Creation():  # refused (one that opened a session was answered then)
                assert isinstance(result, Failure), result
                self._reply(token, result)

    def _open_applied(self, token: CallToken, call: _OpenCall, result: object) -> None:
        node = self._db().tree.get(call.path)
        if isinstance(result, Written):
            assert result.stat is not None, result
            if node is not None and node.instance == result.stat.instance:
                self._opened(token, call, node, created=True)
            else:  # a retry's answer, kept while the node it created went away
                message = f"{call.path} was created by this call, and deleted since"
                self._reply(token, Failure(ErrorCode.NO_SUCH_NODE, message))
        elif isinstance(result, Failure) and result.code is ErrorCode.EXISTS and node is not None:
            self._opened(token, call, node, created=False)  # created by another, meanwhile
        else:
            assert isinstance(result, Failure), result
            self._reply(token, result)

    def _acquire_applied(self, token: CallToken, result: object) -> None:
        call = self._waits.applied(token)
        if call is None:
            return
        node = self._db().tree.get(call.handle.path)
        if isinstance(result, Written) and node is not None:
            self._reply(token, self._granted(node, call.mode))
            return
        assert isinstance(result, Failure), result
        lost_race = result.code in (ErrorCode.LOCK_HELD, ErrorCode.LOCK_DELAYED)
        if call.wait and lost_race and node is not None and node.instance == call.handle.instance:
            self._waits.requeue(token, call, self._now)
            self._wake(call.key)
        else:
            self._reply(token, result)

    def _lock_changed(self, write: Acquire | Release | EndLockDelay, result: object) -> None:
        key = (write.path, write.instance)
        if isinstance(write, Acquire) and isinstance(result, Written):
            for handle in self._handles.on_path(write.path):
                if handle.handle_id != write.handle_id:
                    self._notify(handle, EventKind.LOCK_ACQUIRED)
        self._wake(key)

    def _propose_release(
        self,
        token: CallToken,
        session_id: SessionId,
        handle_id: HandleId,
        node: NodeRecord,
        generation: int | None = None,
        number: CallNumber | None = None,
    ) -> None:
        """Propose the release, and right behind it the grants it will make possible, so
        that both go into one log entry: a hand-over costs one commit instead of two in
        series. The grants are decided when applied, like any other: if the release fails
        after all, they fail too and their waiters go back to the head of the queue."""
        key = (node.path, node.instance)
        self._propose(token, Release(session_id, handle_id, *key, generation, number))
        if generation not in (None, node.lock_generation):
            return  # a stale release: it will fail, and frees nothing
        after = lock_after_release(node.lock, session_id, handle_id)
        if not isinstance(after, Failure):
            self._grant(key, after)

    def _wake(self, key: LockKey) -> None:
        """Propose the grants the lock's queue can make now."""
        node = self._db().tree.get(key[0])
        if node is None or node.instance != key[1]:
            return
        self._grant(key, node.lock)

    def _grant(self, key: LockKey, lock: LockState) -> None:
        for token, command in self._waits.grantable(key, lock):
            self._propose(token, command)

    def _session_ended(self, session_id: SessionId, applied: Applied) -> None:
        self._table.ended(session_id)
        self._closing.discard(session_id)
        self._gate.session_gone(session_id)
        for waiting in self._waits.cancel_session(session_id):
            self._reply(waiting, _expired(f"session {session_id} has ended"))
        self._handles.session_ended(session_id)
        for path in applied.changed:
            node = self._db().tree.get(path)
            if node is None:
                self._deleted(path)
                continue
            if node.lock.delay_ms:
                self._delay((path, node.instance), node.lock.delay_ms)
            self._wake((path, node.instance))

    def _delay(self, key: LockKey, delay_ms: int) -> None:
        """The lock is in lock-delay for `delay_ms` from now, on this master's clock."""
        self._waits.delay(key, self._now + self._timing.lock_delay_ticks(delay_ms))

    def _changed(self, write: LogWrite, applied: Applied) -> None:
        """Events for a client write that was applied, and waiters of deleted nodes."""
        if isinstance(applied.result, Failure):
            return
        created = _created_paths(write, applied)
        for path in applied.changed:
            node = self._db().tree.get(path)
            if node is None:
                self._deleted(path)
                continue
            for handle in self._handles.on_path(path):
                if handle.instance != node.instance:
                    self._notify(handle, EventKind.HANDLE_INVALID)
                elif path not in created:
                    self._notify(handle, EventKind.CONTENTS_MODIFIED)
            if path in created:
                self._notify_path(parent_of(path), EventKind.CHILD_CHANGED)

    def _deleted(self, path: str) -> None:
        """Node `path` is gone: its handles are invalid, its lock's waiters fail."""
        for handle in self._handles.on_path(path):
            for waiting in self._waits.drop_lock((path, handle.instance)):
                self._reply(waiting, Failure(ErrorCode.NO_SUCH_NODE, f"{path} was deleted"))
            self._notify(handle, EventKind.HANDLE_INVALID)
        self._notify_path(parent_of(path), EventKind.CHILD_CHANGED)

    def _notify_path(self, path: str, kind: EventKind) -> None:
        for handle in self._handles.on_path(path):
            self._notify(handle, kind)

    def _notify_handle(self, handle_id: HandleId, kind: EventKind) -> None:
        """Push `kind` to the handle's session, if this master knows the handle."""
        handle = self._handles.get(handle_id)
        if handle is not None:
            self._notify(handle, kind)

    def _notify(self, handle: Handle, kind: EventKind) -> None:
        """Push `kind` to the handle's session if the handle asked for it at open."""
        if handle.events & EventMask(1 << kind):
            self._table.push(handle.session_id, kind, handle.path, handle.handle_id)


def _write_result(result: object, *, fenced: bool) -> CallResult:
    """A handle write's answer: Done, or why it was not applied."""
    if isinstance(result, Failure):
        return result
    if fenced and isinstance(result, MultiResult):
        if not result.guard_held:
            message = "the sequencer is no longer valid: a newer holder has the lock"
            return Failure(ErrorCode.INVALID_SEQUENCER, message)
        return Done(result.results[0].stat)
    assert isinstance(result, Written), result
    return Done(result.stat)


def _done_unless_failed(result: WriteResult) -> CallResult:
    return result if isinstance(result, Failure) else Done()


def _listed_bytes(summary: SessionSummary) -> int:
    """About how many bytes `summary` takes in a reply: its texts, and a little for the
    numbers and framing around each."""
    paths = [path for path, _ in summary.locks] + list(summary.ephemeral)
    texts = [summary.name, summary.state, *paths]
    return 64 + sum(len(text.encode()) + 16 for text in texts)


class _Budget:
    """About how many bytes an operators' answer may still list: names and principals,
    and a little for the numbers and framing around each entry."""

    def __init__(self, total: int) -> None:
        self._left = total

    def spend(self, *texts: str) -> bool:
        """List an entry of these texts, if the budget has room left (else False)."""
        if self._left <= 0:
            return False
        self._left -= 64 + sum(len(text.encode()) + 16 for text in texts)
        return True


def _expired(message: str) -> Failure:
    return Failure(ErrorCode.SESSION_EXPIRED, message)


def _created_paths(write: LogWrite, applied: Applied) -> set[str]:
    """The names `write` created (in the branch a MultiOp ran)."""
    if isinstance(write, Create):
        return {write.path}
    if isinstance(write, MultiOp) and isinstance(applied.result, MultiResult):
        branch = write.if_true if applied.result.guard_held else write.if_false
        return {w.path for w in branch if isinstance(w, Create)}
    return set()
