"""A master and its database for the master's unit tests: a cell without Paxos, whose log
applies every proposal at once."""

from __future__ import annotations

from typing import Any

from chubbypy.master import (
    CallResult,
    ClientWrite,
    HandleOpened,
    KeepAliveAnswered,
    MasterService,
    MasterTiming,
    Proposal,
    SessionStarted,
)
from chubbypy.namespace import DEFAULT_LIMITS, NamespaceLimits, NamespaceMachine
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Create,
    LockMode,
    Write,
)
from chubbypy.protocol.session import EventKind, HandleMode
from chubbypy.sessions import SessionTiming

CELL, ROOT = "c", "/ls/c"
KEY = b"test key, 32 bytes long ........"
TIMING = MasterTiming(
    SessionTiming(lease_ticks=100, answer_before_ticks=30, failover_extra_ticks=10),
    tick_microseconds=100_000,  # 10 ticks a second: a 1000 ms lock-delay is 10 ticks
    waiters_max=2000,
)
RW = HandleMode.READ | HandleMode.WRITE
EXCLUSIVE, SHARED = LockMode.EXCLUSIVE, LockMode.SHARED


class Cell:
    """A master and its database; proposals are applied in order as soon as they appear."""

    def __init__(
        self,
        timing: MasterTiming = TIMING,
        admins: tuple[str, ...] = (),
        limits: NamespaceLimits = DEFAULT_LIMITS,
    ) -> None:
        self.timing = timing
        self.machine = NamespaceMachine(CELL, limits)
        self.admins = admins
        self.proposed: list[Proposal] = []
        """Every proposal of the master's, in order."""
        self.index = 0
        self.now = 0
        self.master = self.new_master()
        self.results: dict[int, CallResult] = {}
        self.token = 0
        self.client_writes: dict[int, Write] = {}
        self.last_sequence: dict[int, int] = {}
        """Per session, the number of the last event a KeepAlive answer carried."""
        self.written: list[tuple[Write, object]] = []
        """Clients' writes applied, with their results, in order."""

    def new_master(self) -> MasterService:
        master = MasterService(self.timing, KEY, self.admins)
        master.start(self.now, epoch=self.index + 1, machine=self.machine)
        return master

    def fail_over(self) -> None:
        """A new master takes over (the old one's memory is gone)."""
        self.master = self.new_master()

    def next_token(self) -> int:
        self.token += 1
        return self.token

    def settle(self) -> None:
        while True:
            replies, proposals = self.master.take(master_lease_valid=True)
            for reply in replies:
                assert reply.token not in self.results, reply
                self.results[reply.token] = reply.result
            if not proposals:
                return
            for proposal in proposals:
                self.index += 1
                if isinstance(proposal, ClientWrite):
                    write = self.client_writes.pop(proposal.ticket)
                    applied = self.machine.apply_write(LogIndex(self.index), write)
                    self.master.landed(proposal.ticket)
                    self.master.applied(None, write, applied)
                    self.written.append((write, applied.result))
                    continue
                self.proposed.append(proposal)
                applied = self.machine.apply_write(
                    LogIndex(self.index), proposal.write, proposal.principal
                )
                self.master.landed(proposal.ticket)
                self.master.applied(proposal.token, proposal.write, applied)

    def client_write(self, write: Write) -> None:
        """A client's write without a session, through the master's cache gate."""
        self.client_writes[self.master.submit_write(write)] = write
        self.settle()

    def call(self, method: str, *args: Any, **kwargs: Any) -> int:
        token = self.next_token()
        getattr(self.master, method)(token, *args, **kwargs)
        self.settle()
        return token

    def result(self, token: int) -> CallResult | None:
        return self.results.get(token)

    def ok(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = self.result(self.call(method, *args, **kwargs))
        assert result is not None, "no answer yet"
        assert not isinstance(result, Failure), result
        return result

    def code(self, method: str, *args: Any, **kwargs: Any) -> ErrorCode:
        result = self.result(self.call(method, *args, **kwargs))
        assert isinstance(result, Failure), result
        return result.code

    def tick(self, ticks: int) -> None:
        for _ in range(ticks):
            self.now += 1
            self.master.tick(self.now)
            self.settle()

    def session(self) -> int:
        started = self.ok("create_session", "client")
        assert isinstance(started, SessionStarted)
        return started.session_id

    def open(self, session: int, name: str = "lock", **options: Any) -> bytes:
        options.setdefault("create", Create(f"{ROOT}/{name}"))
        opened = self.ok("open", session, f"{ROOT}/{name}", options.pop("mode", RW), **options)
        assert isinstance(opened, HandleOpened)
        return opened.handle

    def events(self, session: int, acked: int = 0) -> list[tuple[EventKind, int]]:
        """Send a KeepAlive; the events its answer carries (kind, handle id), if answered."""
        answer = self.result(self.call("keep_alive", session, acked))
        if answer is None:
            return []
        assert isinstance(answer, KeepAliveAnswered), answer
        if answer.events:
            self.last_sequence[session] = answer.events[-1].sequence
        return [(e.kind, e.handle_id) for e in answer.events]
