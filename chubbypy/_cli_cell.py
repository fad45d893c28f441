"""`chubbypy cell`: a local cell, each replica a child process; the main job (`make run`).

Starts every replica of the cell file (``etc/cell.yaml``: three on loopback, data under
``./var/cell``) and, beside them, the web page (`chubbypy.web`, at the file's
``web.listen``; ``--no-web`` leaves it out), prints the addresses, the admin URLs and the
page's URL, says which replica is master whenever that changes, and on Ctrl-C stops the
page and every replica gracefully (the master hands over first). Started again, it finds
the data where it left it.

It supervises its children: one that exits while the cell runs (a crash, kill -9, the OOM
killer) is started again after a back-off that grows while it keeps dying quickly, with
one line saying which child, how it ended, when it restarts and what the cell can still
survive; after ``supervisor.quick_exits_max`` quick exits in a row it is left stopped, and
the cell says so (`chubbypy._supervisor` holds the rule). A replica started again is no
new cell: it gets no ``--bootstrap``, and catches up from the others.

Before it creates anything it checks that each replica's peer, client and admin port and
the page's are free, and refuses with one line naming the first taken port, what it is
for and the process that holds it, when it can tell (`chubbypy._ports`).

On first start it creates the cell's secrets, which the cell file names but never holds:
the handle key, the peer key and the principals' token files (with ``--auto-tls`` and a
``tls:`` section, a cell CA and each replica's certificate too), and says where they are
and how the CLI acts as the operator. ``--init`` does only that, for a cell whose replicas
run on several machines: create the files once, then copy them to each.

Exit status: 0 after Ctrl-C (or SIGTERM); 1 when it cannot start (a port taken, a data
directory it may not write) or every replica was given up; 2 for a bad cell file, option
or secret. Each expected failure is one line, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import assert_never

from attrs import frozen
from twisted.internet import error as twisted_error
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure as TwistedFailure
from twisted.web.client import Agent, readBody

from chubbypy._exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from chubbypy._ports import first_taken
from chubbypy._supervisor import GiveUp, Restart, after_exit, describe_exit, quorum_left
from chubbypy.config import CellConfig, ConfigError, SupervisorConfig
from chubbypy.protocol import ReplicaId
from chubbypy.server._endpoints import http_url
from chubbypy.server._secrets import SecretsError, create_secrets, load_secrets, public_ca_path
from chubbypy.server._serve import CELL_CHILD, load, os_problem
from chubbypy.store import SqlStore, StoreError
from chubbypy.web._server import web_url

STOP_SECONDS = 10.0
"""How long the replicas get to stop gracefully before they are killed."""
EXIT_STOPPED = EXIT_OK
WEB = "web"
"""The web page's name among the children."""


def cell_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", help="the cell's YAML file (default etc/cell.yaml)")
    parser.add_argument(
        "--replicas",
        type=int,
        choices=(3, 5),
        default=3,
        help="3 (etc/cell.yaml) or 5 (etc/cell5.yaml)",
    )
    parser.add_argument("--data-dir", type=Path, help="override the file's data_dir")
    parser.add_argument(
        "--auto-tls",
        action="store_true",
        help="with a tls: section, create a cell CA and each replica's certificate if missing",
    )
    parser.add_argument(
        "--init",
        action="store_true",
        help="create the cell's missing keys (and certificates) and exit without starting",
    )
    parser.add_argument(
        "--no-web", action="store_true", help="do not start the web page (chubbypy web) beside it"
    )
    return parser


ExitStatus = tuple[int | None, int | None]
"""How a child ended: its exit code, or the signal that killed it."""


class ChildProcess(ProcessProtocol):
    """One run of a child: its output, each line prefixed with its name; when it ends."""

    def __init__(self, name: str, width: int) -> None:
        self.name = name
        self._prefix = f"{name:<{width}} | "
        self._partial = {1: b"", 2: b""}
        self.ended: Deferred[ExitStatus] = Deferred()
        self.running = False

    def connectionMade(self) -> None:
        self.running = True

    def childDataReceived(self, fd: int, data: bytes) -> None:
        lines = (self._partial.get(fd, b"") + data).split(b"\n")
        self._partial[fd] = lines.pop()
        for line in lines:
            sys.stdout.write(self._prefix + line.decode("utf-8", "replace") + "\n")
        sys.stdout.flush()

    def processEnded(self, reason: TwistedFailure) -> None:
        self.running = False
        ended = reason.value
        self.ended.callback((getattr(ended, "exitCode", None), getattr(ended, "signal", None)))

    def signal(self, name: str) -> None:
        if self.running and self.transport is not None:
            with contextlib.suppress(twisted_error.ProcessExitedAlready):
                self.transport.signalProcess(name)


@frozen
class ChildCommand:
    """What to run for one child: its first start's arguments, and a restart's."""

    name: str
    first: tuple[str, ...]
    again: tuple[str, ...]
    """A restart's: a replica started again is no new cell (no ``--bootstrap``)."""
    environment: dict[str, str]


class Supervisor:
    """The cell's children, kept running: see the module docstring.

    Each child has one run at a time (a `ChildProcess`), a count of its quick exits in a
    row, and, between an exit and its restart, the delayed call that restarts it. Once
    `stop` is called nothing is started again.
    """

    def __init__(
        self,
        reactor: object,
        policy: SupervisorConfig,
        commands: list[ChildCommand],
        replicas: tuple[str, ...],
    ) -> None:
        self._reactor = reactor
        self._policy = policy
        self._commands = {command.name: command for command in commands}
        self._replicas = replicas
        self._width = max(3, *(len(name) for name in self._commands))
        self._runs: dict[str, ChildProcess] = {}
        self._started_at: dict[str, float] = {}
        self._quick_exits = dict.fromkeys(self._commands, 0)
        self._restarts: dict[str, IDelayedCall] = {}
        self._given_up: set[str] = set()
        self.stopping = False
        self.exit_status = EXIT_STOPPED

    def start(self) -> None:
        for name, command in self._commands.items():
            self._spawn(name, command.first)

    def _spawn(self, name: str, arguments: tuple[str, ...]) -> ChildProcess:
        run = ChildProcess(name, self._width)
        environment = self._commands[name].environment
        self._reactor.spawnProcess(run, sys.executable, list(arguments), env=environment)  # type: ignore[attr-defined]
        self._runs[name] = run
        self._started_at[name] = self._now()
        run.ended.addCallback(lambda ended: self._exited(name, ended))
        return run

    def _restart(self, name: str) -> None:
        del self._restarts[name]
        run = self._spawn(name, self._commands[name].again)
        pid = getattr(run.transport, "pid", "?")
        print(f"-- {name} restarted (pid {pid})", flush=True)

    def _exited(self, name: str, ended: ExitStatus) -> None:
        how = describe_exit(*ended)
        if self.stopping:
            if ended != (0, None):
                print(f"{name} {how} while the cell stopped", flush=True)
            return
        ran = max(0.0, self._now() - self._started_at[name])
        decision = after_exit(self._policy, self._quick_exits[name], ran)
        said = f"-- {name} {how} after {ran:.1f} s"
        match decision:
            case Restart(delay, quick_exits):
                self._quick_exits[name] = quick_exits
                in_a_row = f" ({_ordinal(quick_exits)} quick exit in a row)" if quick_exits else ""
                self._restarts[name] = self._reactor.callLater(delay, self._restart, name)  # type: ignore[attr-defined]
                print(
                    f"{said}{in_a_row}; restarting it in {delay:g} s{self._without(name)}",
                    flush=True,
                )
            case GiveUp(quick_exits):
                self._given_up.add(name)
                print(
                    f"{said}, its {_ordinal(quick_exits)} quick exit in a row "
                    f"(supervisor.quick_exits_max): not restarting it{self._without(name)}",
                    flush=True,
                )
                self._check_any_replica_left()
            case unexpected:
                assert_never(unexpected)

    def _without(self, name: str) -> str:
        """What the cell is without `name` for now, as a clause for its line."""
        if name == WEB:
            return "" if name in self._restarts else "; the cell runs on without its web page"
        running = sum(1 for r in self._replicas if r in self._runs and self._runs[r].running)
        return f" ({quorum_left(running, len(self._replicas))})"

    def _check_any_replica_left(self) -> None:
        if all(replica in self._given_up for replica in self._replicas):
            print("-- every replica was given up: the cell stops", flush=True)
            self.exit_status = EXIT_FAILED
            self._reactor.stop()  # type: ignore[attr-defined]

    def stop(self) -> Deferred[list[tuple[bool, object]]]:
        """Stop every child gracefully (SIGTERM; SIGKILL after `STOP_SECONDS`); nothing is
        started again. Fires when every one has ended."""
        self.stopping = True
        for restart in self._restarts.values():
            restart.cancel()
        self._restarts.clear()
        runs = [run for run in self._runs.values() if run.running]
        # The page first: it is a client of the replicas, and says nothing useful as they go.
        runs.sort(key=lambda run: run.name != WEB)
        for run in runs:
            run.signal("TERM")

        def kill_stragglers() -> None:
            for run in runs:
                if run.running:
                    print(f"{run.name} did not stop in {STOP_SECONDS:.0f}s; killing it", flush=True)
                    run.signal("KILL")

        timer = self._reactor.callLater(STOP_SECONDS, kill_stragglers)  # type: ignore[attr-defined]
        endings: list[Deferred[object]] = [run.ended for run in runs]  # type: ignore[misc]
        done: Deferred[list[tuple[bool, object]]] = DeferredList(endings)
        done.addCallback(lambda result: (timer.cancel() if timer.active() else None, result)[1])
        return done

    def _now(self) -> float:
        seconds: float = self._reactor.seconds()  # type: ignore[attr-defined]
        return seconds


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def cell_main(args: argparse.Namespace) -> int:
    """Run a local cell until Ctrl-C; the exit status."""
    if args.config is None:
        args.config = "etc/cell5.yaml" if args.replicas == 5 else "etc/cell.yaml"
    if not Path(args.config).is_file():
        print(f"chubbypy cell: no cell file at {args.config}", file=sys.stderr)
        return EXIT_USAGE
    with_web = not getattr(args, "no_web", False)
    try:
        config = load(args)
        if getattr(args, "auto_tls", False) and config.tls is None:
            print(
                f"chubbypy cell: --auto-tls makes the certificates a tls: section names, and "
                f"{args.config} has none (etc/cell.yaml shows one, commented out)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        initialising = getattr(args, "init", False)
        # Before anything is created: a cell that cannot listen leaves no directory behind.
        taken = None if initialising else first_taken(config, with_web)
        if taken is not None:
            print(f"chubbypy cell: {taken}", file=sys.stderr)
            return EXIT_FAILED
        created = create_secrets(config, auto_tls=getattr(args, "auto_tls", False))
        for replica in config.replicas:
            load_secrets(config, replica.id)  # a replica that would refuse, refused here
        if initialising:
            _secrets_banner(config, created)
            return EXIT_STOPPED
        fresh = _fresh_replicas(config)
    except (ConfigError, StoreError, SecretsError) as error:
        print(f"chubbypy cell: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # the data directory: not ours to write, a full disk, ...
        print(
            f"chubbypy cell: cannot prepare {config.data_dir}: {os_problem(error)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    bootstrap = len(fresh) == len(config.replicas)
    _banner(config, args.config, fresh, bootstrap, with_web)
    _secrets_banner(config, created)
    return _run(args, config, bootstrap, with_web)


def _run(args: argparse.Namespace, config: CellConfig, bootstrap: bool, with_web: bool) -> int:
    from twisted.internet import reactor

    commands = [_replica_command(args, replica.id, bootstrap) for replica in config.replicas]
    if with_web:
        commands.append(_web_command(args))
    supervisor = Supervisor(reactor, config.supervisor, commands, config.replica_ids)
    monitor = MasterMonitor(reactor, config)
    reactor.callWhenRunning(supervisor.start)
    reactor.callWhenRunning(monitor.start)
    reactor.addSystemEventTrigger("before", "shutdown", _stop, supervisor, monitor)
    reactor.run()
    return supervisor.exit_status


def _stop(supervisor: Supervisor, monitor: MasterMonitor) -> Deferred[list[tuple[bool, object]]]:
    monitor.stop()
    print("\nstopping the cell...", flush=True)
    return supervisor.stop()


def _fresh_replicas(config: CellConfig) -> list[ReplicaId]:
    """Replicas whose store was never written (all of them, when the cell is new)."""
    fresh = []
    for replica in config.replicas:
        database = config.data_dir_for(replica.id) / "replica.sqlite"
        if config.storage_url is None and not database.exists():
            fresh.append(replica.id)
            continue
        seed = config.node_settings(replica.id).seed_membership
        store = SqlStore(config.storage_url_for(replica.id), seed=seed)
        try:
            if store.load().hard_state is None:
                fresh.append(replica.id)
        finally:
            store.close()
    return fresh


def _banner(
    config: CellConfig, source: str, fresh: list[ReplicaId], bootstrap: bool, with_web: bool
) -> None:
    print(f"chubbypy cell {config.cell!r} from {source}, data in {config.data_dir}")
    if bootstrap:
        print("a new cell: every replica starts empty")
    elif fresh:
        print(f"{', '.join(fresh)} start empty: they rebuild from the others before they vote")
    print(f"{'replica':<8} {'clients':<32} {'peers':<32} admin")
    for replica in config.replicas:
        print(f"{replica.id:<8} {replica.client:<32} {replica.peer:<32} {http_url(replica.admin)}")
    if with_web:
        print(f"web page: {web_url(config.web.listen)}  (the namespace, locks, sessions and "
              "replicas, live; log in as the operator with its token)")  # fmt: skip
    print(f"try:  chubbypy --cell {source} status")
    print("Ctrl-C stops the cell (the master hands over, then every replica stops)", flush=True)


def _secrets_banner(config: CellConfig, created: list[Path]) -> None:
    """Where the secrets are, which were just made, and how the CLI acts as the operator."""
    folders = sorted({path.parent for path in created})
    for folder in folders:
        names = ", ".join(path.name for path in created if path.parent == folder)
        print(f"created (new, random, mode 0600 for keys): {names} in {folder}")
    ca = public_ca_path(config)
    if ca is not None:
        print(f"clients verify the replicas' certificates against {ca} (a public copy)")
    token_files = dict(config.auth.token_files)
    operator = "operator" if "operator" in token_files else next(iter(token_files), None)
    if operator is not None:
        token = config.secret_path(token_files[operator])
        print(f"to act as {operator} from the CLI (in another terminal):")
        ca_variable = f" CHUBBY_CA_FILE={ca}" if ca is not None else ""
        print(f"  export CHUBBY_PRINCIPAL={operator} CHUBBY_TOKEN_FILE={token}{ca_variable}")
    print(flush=True)


def _child_environment() -> dict[str, str]:
    """A child's environment: unbuffered output, and the mark that makes it leave Ctrl-C to
    the cell (which stops its children one way only: SIGTERM, a graceful stop)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", CELL_CHILD: "1"}


def _replica_command(args: argparse.Namespace, replica_id: str, bootstrap: bool) -> ChildCommand:
    command = [sys.executable, "-m", "chubbypy.server", "serve"]
    command += ["--config", str(args.config), "--replica", replica_id]
    if args.data_dir is not None:
        command += ["--data-dir", str(args.data_dir)]
    first = (*command, "--bootstrap") if bootstrap else tuple(command)
    return ChildCommand(replica_id, first, tuple(command), _child_environment())


def _web_command(args: argparse.Namespace) -> ChildCommand:
    """`chubbypy web` for the same cell file, its output prefixed ``web``."""
    command = (sys.executable, "-m", "chubbypy.web", "--config", str(args.config))
    return ChildCommand(WEB, command, command, _child_environment())


class MasterMonitor:
    """Asks every replica's admin port who is master, and says so when it changes."""

    def __init__(self, reactor: object, config: CellConfig) -> None:
        self._agent = Agent(reactor)
        self._urls = {r.id: http_url(r.admin) + "/status" for r in config.replicas}
        self._loop = LoopingCall(self._poll)
        self._loop.clock = reactor  # type: ignore[assignment]
        self._master: str | None = None
        self._told = False

    def start(self) -> None:
        self._loop.start(0.5, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _poll(self) -> Deferred[None]:
        return ensureDeferred(self._poll_all())

    async def _poll_all(self) -> None:
        polls = [ensureDeferred(self._status(url)) for url in self._urls.values()]
        results = await DeferredList(polls, consumeErrors=True)
        self._seen([status for ok, status in results if ok])

    async def _status(self, url: str) -> dict[str, object]:
        response = await self._agent.request(b"GET", url.encode())
        body = await readBody(response)
        status = json.loads(body)
        assert isinstance(status, dict)
        return status

    def _seen(self, statuses: list[dict[str, object]]) -> None:
        serving = [s for s in statuses if s.get("serving")]
        master = str(serving[0]["replica_id"]) if serving else None
        if master != self._master or not self._told:
            self._master, self._told = master, True
            if master is None:
                print("-- no master yet (an election is under way)", flush=True)
            else:
                epoch = serving[0].get("epoch")
                print(f"-- master: {master} (epoch {epoch})", flush=True)
