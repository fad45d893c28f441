"""A simulated lock client: a small program on the client library's own sans-IO core.

`SimLockClient` is the *program*, not a library: every rule of the session (its states,
local lease and drift margin, KeepAlives, events, cache, handle presentation after a
fail-over) is `chubbypy.client.core.ClientSession`'s, and every rule of carrying a call to
the master (locating it, redirects, retries, back-off, attempt times) is
`chubbypy.client.core.MasterCall`'s, the same code the Twisted client runs, here driven
over the simulated network (`chubbypy.testing._calls`). The program's workload: open a lock
file, acquire its lock (blocking, with a timeout), hold it a while and write the file
fenced by the sequencer, release; read lock files through the session's cache; now and
then ask the master, as an operator would, who holds a lock file's lock (GetLockInfo);
now and then close the session and start another.

What it *believes* is what the checkers (`chubbypy.testing._lock_checks`) judge: it
believes it holds a lock from the moment the grant arrives, if its session is connected
with a valid local lease then, until it sends the release or its session leaves the
connected state (jeopardy: the lock may be gone), whichever comes first. It tells the
checkers its session's lease as the core counts it, and the events the master sent.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable

from chubbypy.client.core import (
    Admission,
    CachedNode,
    CallSettings,
    CheckLeaseAt,
    ClientBug,
    ClientSession,
    EventDelivered,
    Failed,
    Finished,
    KeepAliveAt,
    MasterCall,
    PresentHandle,
    SendClose,
    SendKeepAlive,
    SessionOutput,
    SessionSettings,
    SessionState,
    StateChanged,
    acquire_outcome_unknown,
    blocking_acquire,
)
from chubbypy.locks import decode_sequencer
from chubbypy.paxos import Chance
from chubbypy.protocol import NO_HANDLE
from chubbypy.protocol._plain import INT64_MAX
from chubbypy.protocol.client import ServerReply, SessionReply, SessionRequest
from chubbypy.protocol.errors import (
    ChubbyError,
    InvalidSequencer,
    LockHeld,
    SessionExpired,
    Unavailable,
)
from chubbypy.protocol.namespace import Create, LockMode, SetContents
from chubbypy.protocol.session import (
    AcquireLock,
    CallDone,
    CloseHandle,
    CreateSession,
    EventMask,
    GetLockInfo,
    GetSequencer,
    HandleMode,
    HandleOpened,
    HandleWrite,
    LeaseExtended,
    Locked,
    LockInfo,
    NodeRead,
    Open,
    ReleaseLock,
    SessionCall,
    SessionCreated,
    SessionResult,
)
from chubbypy.testing._calls import ClientProcess
from chubbypy.testing._client import simulated_view
from chubbypy.testing._lock_checks import LockObserver
from chubbypy.testing._world import MILLISECOND

LOCK_PATH_FORMAT = "/ls/sim/lock{}"
LOCK_COUNT = 2


class LockBug(enum.Enum):
    """A deliberate bug in the lock program itself (the library's are `ClientBug`), to
    show the checkers can fail (Paxos Made Live §6.3)."""

    HOLDER_IGNORES_JEOPARDY = "holder-ignores-jeopardy"
    """The program keeps believing it holds its lock after its session fell into jeopardy."""


Answer = SessionResult | ChubbyError
"""How a session call ended: its result, or why it failed."""

LOCK_INFO_SHARE = 0.1
"""Of the turns that neither read nor start a session, the share that asks for a lock's
info (before opening, acquiring, writing or releasing)."""
ACQUIRE_TIMEOUT_SECONDS = 2.0
"""How long the program waits for a lock before it gives up and tries again later."""


class SimLockClient:
    """One lock client process (it never crashes; its messages can be lost, and it can be
    frozen); see the module docstring."""

    def __init__(
        self,
        replicas: tuple[str, ...],
        process: ClientProcess,
        observer: LockObserver,
        rng: random.Random,
        calls: CallSettings,
        session: SessionSettings,
        chance: Chance,
        *,
        bugs: frozenset[LockBug] = frozenset(),
        client_bugs: frozenset[ClientBug] = frozenset(),
        idle: bool = False,
    ) -> None:
        self.name = process.name
        self._process = process
        self._observer = observer
        self._rng = rng
        self._calls = calls
        self._session_settings = session
        self._chance = chance
        self._bugs = bugs
        self._client_bugs = client_bugs
        self._view = simulated_view(replicas)
        self._idle = idle
        """Only keep a session (a scenario controls everything else)."""
        self.stop_at = 0
        self.grants = 0
        self._session: ClientSession | None = None
        self._working = False
        self._lease_timers = 0
        """Counts the lease timers armed: only the latest one fires."""
        self._forget_handle()

    # ------------------------------------------------------------------ life

    def start(self, stop_at: int) -> None:
        self.stop_at = stop_at
        self._process.after(self._rng.randint(0, 50) * MILLISECOND, self._next_work)

    def pause(self, until: int) -> None:
        """Freeze the process (SIGSTOP, a long GC) until true time `until`: it sends no
        KeepAlives and handles nothing, while its clock, and its lease, run on."""
        self._process.pause(until)

    def resume(self) -> None:
        """Thaw the process now."""
        self._process.resume()

    def lease_end(self) -> int | None:
        """When its session's local lease ends, in true time (None: no session)."""
        session = self._session
        return None if session is None else self._process.true_at(session.lease_end_seconds)

    def reply_received(self, replica: str, reply: ServerReply) -> None:
        self._process.reply_received(replica, reply)

    def connection_lost(self, replica: str) -> None:
        self._process.connection_lost(replica)

    def _forget_handle(self) -> None:
        self._handle, self._handle_id, self._path = b"", NO_HANDLE, ""
        self._sequencer, self._generation = b"", 0
        self._believing = False

    # ------------------------------------------------------------------ the workload

    def _next_work(self) -> None:
        session = self._session
        if self._working:
            return
        if self._process.scheduler.now >= self.stop_at:
            return  # the workload is over; the session lives on, idle, with its KeepAlives
        if session is None:
            self._create_session()
        elif self._idle:
            return  # a session, kept alive by its KeepAlives: all an idle program does
        elif session.call_wanted() is not Admission.SEND:
            self._later(20)  # jeopardy: calls wait
        elif self._rng.random() < 0.3:
            self._read(session, LOCK_PATH_FORMAT.format(self._rng.randrange(LOCK_COUNT)))
        elif self._rng.random() < LOCK_INFO_SHARE:
            self._lock_info(session, LOCK_PATH_FORMAT.format(self._rng.randrange(LOCK_COUNT)))
        elif not self._handle:
            self._open(session)
        elif not self._sequencer:
            self._acquire()
        elif self._believing and self._rng.random() < 0.6:
            self._fenced_write()
        else:
            self._release(session)

    def _later(self, milliseconds: int) -> None:
        self._working = False
        self._process.after(milliseconds * MILLISECOND, self._next_work)

    def _work_done(self) -> None:
        self._later(self._rng.randint(1, 60))

    def _create_session(self) -> None:
        self._working = True
        call = self._master_call()
        create = CreateSession(self.name, self._rng.randint(1, INT64_MAX))  # one per creation
        self._process.run(call, lambda rid: SessionRequest(rid, create), self._created)

    def _created(self, end: Finished | Failed) -> None:
        if not isinstance(end, Finished):
            self._later(20)
            return
        result = _session_result(end.reply)
        assert isinstance(result, SessionCreated), result
        session = ClientSession(result.session_id, result.credential,
                                self._session_settings, self._client_bugs,
                                self._chance)  # fmt: skip
        self._session = session
        self._carry_out(session, session.session_created(self._now(), end.sent, result.lease_ms))
        self._work_done()

    def _read(self, session: ClientSession, path: str) -> None:
        """Read a lock file: from the session's cache if it holds it, else from the master."""
        began = self._process.scheduler.now
        wanted = session.read_wanted(self._now(), path)
        if isinstance(wanted, CachedNode):
            self._observer.read(self.name, path, began, wanted.stat, hit=True)
            self._later(self._rng.randint(1, 20))
            return

        def answered(answer: Answer) -> None:
            node = answer if isinstance(answer, NodeRead) else None
            session.read_answered(self._now(), path, wanted.started, node)
            if node is not None:
                self._observer.read(self.name, path, began, node.stat, hit=False)
            self._work_done()

        self._call(session, wanted.call, answered)

    def _lock_info(self, session: ClientSession, path: str) -> None:
        """Ask the master who holds `path`'s lock: the lock info checker judges the answer
        against what the log applied meanwhile."""
        asked = self._process.scheduler.now

        def answered(answer: Answer) -> None:
            if isinstance(answer, LockInfo):
                self._observer.lock_info_answered(self.name, answer, asked)
            self._work_done()

        self._call(session, GetLockInfo(path), answered)

    def _open(self, session: ClientSession) -> None:
        path = LOCK_PATH_FORMAT.format(self._rng.randrange(LOCK_COUNT))
        delay = self._rng.choice([0, 0, 100, 300])
        mode, events = HandleMode.READ | HandleMode.WRITE, EventMask.CONTENTS_MODIFIED
        events |= EventMask.LOCK_ACQUIRED
        call = Open(session.session_id, session.credential, path, mode, events, delay,
                    Create(path), False)  # fmt: skip

        def opened(answer: Answer) -> None:
            if isinstance(answer, HandleOpened) and self._session is session:
                self._handle, self._handle_id, self._path = answer.handle, answer.handle_id, path
                session.handle_opened(answer.handle_id, asked_for_events=True)
            self._work_done()

        self._call(session, call, opened)

    def _acquire(self) -> None:
        session, handle = self._session, self._handle
        assert session is not None
        timing = blocking_acquire(self._now(), ACQUIRE_TIMEOUT_SECONDS)
        call = AcquireLock(handle, LockMode.EXCLUSIVE, wait=True, wait_ms=timing.wait_ms)

        def answered(answer: Answer) -> None:
            if self._session is not session or self._handle != handle:
                pass
            elif isinstance(answer, Locked):
                self._granted(session, answer)
            elif acquire_outcome_unknown(answer):
                # No master answered in time: it may have been granted all the same. The
                # close withdraws the request wherever it waits, and frees a grant.
                self._call(session, CloseHandle(handle), lambda _: None)
                self._drop_handle(session)
            elif not isinstance(answer, LockHeld):  # gone (say): open again
                self._drop_handle(session)
            self._work_done()

        self._call(session, call, answered, timing.attempt_seconds, timing.deadline_seconds)

    def _granted(self, session: ClientSession, locked: Locked) -> None:
        self.grants += 1
        self._sequencer, self._generation = locked.sequencer, locked.stat.lock_generation
        connected = session.state is SessionState.CONNECTED
        if connected and self._now() < session.lease_end_seconds and not self._believing:
            self._believing = True
            path = decode_sequencer(locked.sequencer).path
            self._observer.believes(self.name, path, self._generation, self._still_believes)

    def _fenced_write(self) -> None:
        session, path = self._session, self._path
        assert session is not None
        contents = str(self._observer.next_value()).encode()
        call = HandleWrite(self._handle, SetContents(path, contents), self._sequencer)

        def written(answer: Answer) -> None:
            if isinstance(answer, CallDone):
                self._observer.write_completed(path, contents)
            elif isinstance(answer, InvalidSequencer) and self._session is session:
                self._stop_believing()  # someone newer holds it: we lost it in jeopardy
                self._sequencer = b""
            if isinstance(answer, ChubbyError) and not isinstance(
                answer, Unavailable | SessionExpired
            ):
                self._observer.write_refused(self.name, path, contents, answer.code)
            self._work_done()

        self._call(session, call, written)

    def _release(self, session: ClientSession) -> None:
        self._stop_believing()
        path, generation = self._path, self._generation

        def released(answer: Answer) -> None:
            # No answer at all, or the session's end (which took its kept answers and every
            # lock it held with it): the outcome is unknown, and nothing is claimed held.
            if not isinstance(answer, Unavailable | SessionExpired):
                refused = answer.code if isinstance(answer, ChubbyError) else None
                self._observer.release_answered(
                    self.name, session.session_id, path, generation, refused
                )
            if self._session is session:
                self._sequencer = b""
                if self._rng.random() < 0.15:
                    self._carry_out(session, session.close_requested())
            self._work_done()

        self._call(session, ReleaseLock(self._handle, generation), released)

    # ------------------------------------------------------------------ the session

    def _carry_out(self, session: ClientSession, outputs: Iterable[SessionOutput]) -> None:
        """Do what the session core says, in order."""
        for output in outputs:
            match output:
                case StateChanged(state):
                    self._state_changed(session, state)
                case EventDelivered():
                    pass  # the checkers heard every event the master sent, repeats included
                case PresentHandle(handle_id) if handle_id == self._handle_id:
                    self._call(session, GetSequencer(self._handle), lambda _: None)
                case SendKeepAlive(keepalive, attempt_seconds, deadline_seconds):
                    call = self._master_call(deadline_seconds, attempt_seconds)
                    self._process.run(call, lambda rid: SessionRequest(rid, keepalive),
                                      lambda end: self._keepalive_ended(session, end))  # fmt: skip
                case KeepAliveAt(at_seconds):
                    self._at(session, at_seconds, lambda: session.keepalive_due(self._now()))
                case CheckLeaseAt(at_seconds):
                    self._arm_lease_timer(session, at_seconds)
                case SendClose(close):
                    self._call(session, close, lambda _: self._close_finished(session))
        if session is self._session:
            self._observer.lease_view(
                session.session_id, self._process.true_at(session.lease_end_seconds)
            )

    def _at(
        self,
        session: ClientSession,
        at_seconds: float,
        due: Callable[[], Iterable[SessionOutput]],
    ) -> None:
        def fire() -> None:
            if session is self._session:
                self._carry_out(session, due())

        self._process.at(at_seconds, fire)

    def _arm_lease_timer(self, session: ClientSession, at_seconds: float) -> None:
        """(Re)arm the lease timer: an earlier one, when it fires, does nothing."""
        self._lease_timers += 1
        armed = self._lease_timers

        def checked() -> Iterable[SessionOutput]:
            return session.lease_checked(self._now()) if armed == self._lease_timers else ()

        self._at(session, at_seconds, checked)

    def _keepalive_ended(self, session: ClientSession, end: Finished | Failed) -> None:
        if session is not self._session:
            return
        now = self._now()
        if isinstance(end, Failed):
            self._carry_out(session, session.keepalive_failed(now, end.error))
            return
        result = _session_result(end.reply)
        assert isinstance(result, LeaseExtended), result
        self._observer.events_received(self.name, session.session_id, result.events)
        self._carry_out(session, session.keepalive_answered(now, end.sent, result))

    def _close_finished(self, session: ClientSession) -> None:
        if session is self._session:
            self._carry_out(session, session.close_finished())

    def _state_changed(self, session: ClientSession, state: SessionState) -> None:
        if state is SessionState.JEOPARDY and LockBug.HOLDER_IGNORES_JEOPARDY not in self._bugs:
            self._stop_believing()  # the lock may be gone
        if state in (SessionState.CLOSING, SessionState.EXPIRED, SessionState.CLOSED):
            self._stop_believing()
        if state.final and session is self._session:
            self._session = None  # start another
            self._forget_handle()

    def _still_believes(self) -> bool:
        """Whether the program would act on its lock now: it believes it holds it, and its
        session is connected with a valid local lease (the check a correct program makes
        before acting; it holds whether or not the process was frozen meanwhile)."""
        session = self._session
        if not self._believing or session is None:
            return False
        if LockBug.HOLDER_IGNORES_JEOPARDY in self._bugs:
            return True
        connected = session.state is SessionState.CONNECTED
        return connected and self._now() < session.lease_end_seconds

    def _stop_believing(self) -> None:
        if self._believing:
            self._believing = False
            self._observer.stops_believing(self.name, self._path)

    def _drop_handle(self, session: ClientSession) -> None:
        session.handle_closed(self._handle_id)
        self._stop_believing()
        self._forget_handle()

    # ------------------------------------------------------------------ calls

    def _now(self) -> float:
        return self._process.now()

    def _master_call(
        self, deadline: float | None = None, attempt_seconds: float | None = None
    ) -> MasterCall:
        deadline = deadline if deadline is not None else self._now() + self._calls.timeout_seconds
        return MasterCall(self._view, self._calls, deadline, attempt_seconds, self._chance)

    def _call(
        self,
        session: ClientSession,
        call: SessionCall,
        ended: Callable[[Answer], None],
        attempt_seconds: float | None = None,
        deadline: float | None = None,
    ) -> None:
        """Carry a session call to the master; `ended` hears its result or its error (a
        SESSION_EXPIRED answer also tells the session)."""
        self._working = True
        number = session.call_number(call)  # one numbered call at a time: never too far

        def finished(end: Finished | Failed) -> None:
            session.call_ended(number)
            if isinstance(end, Failed):
                if isinstance(end.error, SessionExpired) and session is self._session:
                    self._carry_out(session, session.expiry_reported())
                ended(end.error)
            else:
                ended(_session_result(end.reply))

        master_call = self._master_call(deadline, attempt_seconds)
        self._process.run(master_call, lambda rid: SessionRequest(rid, call, number), finished)


def _session_result(reply: ServerReply) -> SessionResult:
    assert isinstance(reply, SessionReply), reply
    return reply.result
