"""`chubbypy cell`'s supervision: the back-off rule (pure) and the supervisor on a fake reactor."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from chubbypy._cli_cell import WEB, ChildCommand, ChildProcess, Supervisor
from chubbypy._supervisor import GiveUp, Restart, after_exit, describe_exit, quorum_left
from chubbypy.config import SupervisorConfig

POLICY = SupervisorConfig(
    restart_delay_seconds=0.5,
    restart_delay_max_seconds=3.0,
    quick_exit_seconds=10.0,
    quick_exits_max=5,
)

# --- The rule ----------------------------------------------------------------------------------


def test_quick_exits_in_a_row_double_the_delay_up_to_the_maximum_then_give_up() -> None:
    """The 1st to 4th quick exits in a row wait 0.5, 1, 2 and 3 s (the cap); the 5th gives up."""
    decisions = []
    count = 0
    for _ in range(5):
        decision = after_exit(POLICY, count, ran_seconds=1.0)
        decisions.append(decision)
        if isinstance(decision, Restart):
            count = decision.quick_exits
    assert decisions == [
        Restart(0.5, 1),
        Restart(1.0, 2),
        Restart(2.0, 3),
        Restart(3.0, 4),
        GiveUp(5),
    ]


def test_a_child_that_ran_long_enough_starts_its_back_off_afresh() -> None:
    """An exit after quick_exit_seconds or more restarts at the first delay, its count at 0,
    however many quick exits came before."""
    assert after_exit(POLICY, 4, ran_seconds=10.0) == Restart(0.5, 0)
    assert after_exit(POLICY, 0, ran_seconds=9.99) == Restart(0.5, 1)


def test_a_single_quick_exit_allowed_gives_up_at_the_first() -> None:
    """With quick_exits_max 1 the first quick exit is the last."""
    policy = SupervisorConfig(quick_exits_max=1)
    assert after_exit(policy, 0, ran_seconds=0.1) == GiveUp(1)


def test_the_delay_stays_at_the_maximum_however_many_exits() -> None:
    """A huge count of quick exits still gives the capped delay (no overflow, no big power)."""
    policy = SupervisorConfig(quick_exits_max=10**9, restart_delay_max_seconds=30.0)
    assert after_exit(policy, 10**8, ran_seconds=0.0) == Restart(30.0, 10**8 + 1)


def test_exits_are_described_by_status_or_signal() -> None:
    """A signal is named; an exit status is given as is."""
    assert describe_exit(None, 9) == "was killed by signal 9 (SIGKILL)"
    assert describe_exit(1, None) == "exited with status 1"
    assert describe_exit(None, 200) == "was killed by signal 200"
    assert describe_exit(None, None) == "exited with status unknown"


def test_what_the_running_replicas_leave_the_cell() -> None:
    """The clause says whether the cell serves and how many more failures it survives."""
    assert quorum_left(3, 3).endswith("the cell serves and survives 1 more failure")
    assert (
        quorum_left(2, 3) == "2 of 3 replicas run: the cell serves, but one more failure stops it"
    )
    assert quorum_left(5, 5).endswith("survives 2 more failures")
    assert quorum_left(1, 3).startswith("1 of 3 replicas run: no majority (2)")


# --- The supervisor, on a fake reactor -----------------------------------------------------------


class FakeTransport:
    """A child process's transport: its pid and the signals it was sent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class FakeReactor(Clock):
    """A clock that records the processes spawned instead of starting them."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[ChildProcess, list[str]]] = []
        self.stopped = False

    def spawnProcess(
        self, protocol: ChildProcess, executable: str, args: list[str], env: Any
    ) -> None:
        transport = FakeTransport(100 + len(self.spawned))
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        self.spawned.append((protocol, args))

    def stop(self) -> None:
        self.stopped = True

    def latest(self, name: str) -> tuple[ChildProcess, list[str]]:
        return [spawned for spawned in self.spawned if spawned[0].name == name][-1]


def commands() -> list[ChildCommand]:
    replicas = [
        ChildCommand(rid, ("serve", rid, "--bootstrap"), ("serve", rid), {})
        for rid in ("r1", "r2", "r3")
    ]
    return [*replicas, ChildCommand(WEB, ("web",), ("web",), {})]


def kill(run: ChildProcess, signal_number: int = signal.SIGKILL) -> None:
    run.processEnded(Failure(ProcessTerminated(exitCode=None, signal=signal_number)))


@pytest.fixture
def reactor() -> FakeReactor:
    return FakeReactor()


@pytest.fixture
def supervisor(reactor: FakeReactor) -> Supervisor:
    started = Supervisor(reactor, POLICY, commands(), ("r1", "r2", "r3"))
    started.start()
    return started


def test_a_killed_replica_is_restarted_after_the_back_off_without_bootstrap(
    reactor: FakeReactor, supervisor: Supervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 of r2 after 20 s: one line says so and when it restarts; 0.5 s later it runs
    again, with the arguments of a restart (no --bootstrap)."""
    assert [args for _, args in reactor.spawned] == [
        ["serve", "r1", "--bootstrap"],
        ["serve", "r2", "--bootstrap"],
        ["serve", "r3", "--bootstrap"],
        ["web"],
    ]
    reactor.advance(20)
    kill(reactor.latest("r2")[0])
    assert capsys.readouterr().out == (
        "-- r2 was killed by signal 9 (SIGKILL) after 20.0 s; restarting it in 0.5 s "
        "(2 of 3 replicas run: the cell serves, but one more failure stops it)\n"
    )
    reactor.advance(0.49)
    assert len(reactor.spawned) == 4
    reactor.advance(0.01)
    run, args = reactor.latest("r2")
    assert (args, run.running) == (["serve", "r2"], True)
    assert capsys.readouterr().out == "-- r2 restarted (pid 104)\n"


def test_a_child_that_keeps_dying_quickly_is_given_up_and_the_cell_runs_on(
    reactor: FakeReactor, supervisor: Supervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    """r3 exiting at once, again and again, waits 0.5, 1, 2, 3 s, then is given up, saying
    so; the others keep running, and the reactor is not stopped."""
    waits = []
    for _ in range(5):
        run = reactor.latest("r3")[0]
        run.processEnded(Failure(ProcessTerminated(exitCode=1)))
        if supervisor._restarts:
            waits.append(supervisor._restarts["r3"].getTime() - reactor.seconds())
            reactor.advance(waits[-1])
    assert waits == [0.5, 1.0, 2.0, 3.0]
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (
        "-- r3 exited with status 1 after 0.0 s, its 5th quick exit in a row "
        "(supervisor.quick_exits_max): not restarting it "
        "(2 of 3 replicas run: the cell serves, but one more failure stops it)"
    )
    assert not reactor.stopped
    assert reactor.latest("r1")[0].running


def test_when_every_replica_is_given_up_the_cell_stops_with_status_1(
    reactor: FakeReactor, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last replica given up stops the reactor; the cell's exit status is 1."""
    policy_once = Supervisor(
        reactor, SupervisorConfig(quick_exits_max=1), commands(), ("r1", "r2", "r3")
    )
    policy_once.start()
    for rid in ("r1", "r2"):
        kill(reactor.latest(rid)[0])
    assert not reactor.stopped
    kill(reactor.latest("r3")[0])
    assert reactor.stopped
    assert policy_once.exit_status == 1
    assert (
        capsys.readouterr().out.splitlines()[-1] == "-- every replica was given up: the cell stops"
    )


def test_the_web_page_is_restarted_too_and_its_loss_said_plainly(
    reactor: FakeReactor, capsys: pytest.CaptureFixture[str]
) -> None:
    """The page is a child like the replicas; given up, the cell runs on without it."""
    supervisor = Supervisor(
        reactor, SupervisorConfig(quick_exits_max=2), commands(), ("r1", "r2", "r3")
    )
    supervisor.start()
    kill(reactor.latest(WEB)[0])
    assert capsys.readouterr().out.endswith("; restarting it in 0.5 s\n")
    reactor.advance(0.5)
    kill(reactor.latest(WEB)[0])
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .endswith("not restarting it; the cell runs on without its web page")
    )
    assert not reactor.stopped


def test_stopping_terms_the_page_first_then_the_replicas_and_restarts_nothing(
    reactor: FakeReactor, supervisor: Supervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    """stop() cancels a pending restart, sends SIGTERM to every running child (the page
    first), restarts none of them as they exit, and fires when all have ended."""
    kill(reactor.latest("r1")[0])
    capsys.readouterr()
    stopped = supervisor.stop()
    runs = [reactor.latest(name)[0] for name in ("r2", "r3", WEB)]
    assert [run.transport.signals for run in runs] == [["TERM"]] * 3  # type: ignore[union-attr]
    reactor.advance(5)
    assert len(reactor.spawned) == 4  # r1's restart was cancelled
    ended: list[object] = []
    stopped.addCallback(ended.append)
    for run in runs:
        run.processEnded(Failure(ProcessDone(0)))
    assert ended
    assert capsys.readouterr().out == ""


def test_a_child_that_will_not_stop_is_killed_after_the_grace(
    reactor: FakeReactor, supervisor: Supervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    """A child still running STOP_SECONDS after SIGTERM gets SIGKILL, and the line says so."""
    supervisor.stop()
    reactor.advance(10)
    run = reactor.latest("r2")[0]
    assert run.transport.signals == ["TERM", "KILL"]  # type: ignore[union-attr]
    assert "r2 did not stop in 10s; killing it" in capsys.readouterr().out
