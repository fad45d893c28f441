"""`chubbypy cell`: a local cell, each replica a child process; the main job (`make run`).

Starts every replica of the cell file (``etc/cell.yaml``: three on loopback, data under
``./var/cell``) and, beside them, the web page (`chubbypy.web`, at the file's
``web.listen``; ``--no-web`` leaves it out), prints the addresses, the admin URLs and the
page's URL, says which replica is master whenever that changes, and on Ctrl-C stops the
page and every replica gracefully (the master hands over first). Started again, it finds
the data where it left it.

On first start it creates the cell's secrets, which the cell file names but never holds:
the handle key, the peer key and the principals' token files (with ``--auto-tls`` and a
``tls:`` section, a cell CA and each replica's certificate too), and says where they are
and how the CLI acts as the operator. ``--init`` does only that, for a cell whose replicas
run on several machines: create the files once, then copy them to each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from twisted.internet import error as twisted_error
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure as TwistedFailure
from twisted.web.client import Agent, readBody

from chubbypy.config import CellConfig, ConfigError
from chubbypy.protocol import ReplicaId
from chubbypy.server._endpoints import http_url
from chubbypy.server._secrets import SecretsError, create_secrets, load_secrets, public_ca_path
from chubbypy.server._serve import CELL_CHILD, load
from chubbypy.store import SqlStore, StoreError
from chubbypy.web._server import web_url

STOP_SECONDS = 10.0
"""How long the replicas get to stop gracefully before they are killed."""


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


class ReplicaProcess(ProcessProtocol):
    """One child: its output, prefixed with its name, and when it ends."""

    def __init__(self, name: str, width: int) -> None:
        self.name = name
        self._prefix = f"{name:<{width}} | "
        self._partial = {1: b"", 2: b""}
        self.ended: Deferred[None] = Deferred()
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
        if not reason.check(twisted_error.ProcessDone):  # type: ignore[no-untyped-call]
            print(f"{self._prefix}exited: {reason.getErrorMessage()}", flush=True)
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        if self.running and self.transport is not None:
            with contextlib.suppress(twisted_error.ProcessExitedAlready):
                self.transport.signalProcess(name)


def cell_main(args: argparse.Namespace) -> int:
    """Run a local cell until Ctrl-C; the exit status."""
    if args.config is None:
        args.config = "etc/cell5.yaml" if args.replicas == 5 else "etc/cell.yaml"
    if not Path(args.config).is_file():
        print(f"chubbypy cell: no cell file at {args.config}", file=sys.stderr)
        return 2
    try:
        config = load(args)
        if getattr(args, "auto_tls", False) and config.tls is None:
            print(
                f"chubbypy cell: --auto-tls makes the certificates a tls: section names, and "
                f"{args.config} has none (etc/cell.yaml shows one, commented out)",
                file=sys.stderr,
            )
            return 2
        created = create_secrets(config, auto_tls=getattr(args, "auto_tls", False))
        for replica in config.replicas:
            load_secrets(config, replica.id)  # a replica that would refuse, refused here
        if getattr(args, "init", False):
            _secrets_banner(config, created)
            return 0
        fresh = _fresh_replicas(config)
    except (ConfigError, StoreError, SecretsError) as error:
        print(f"chubbypy cell: {error}", file=sys.stderr)
        return 2
    bootstrap = len(fresh) == len(config.replicas)
    with_web = not getattr(args, "no_web", False)
    _banner(config, args.config, fresh, bootstrap, with_web)
    _secrets_banner(config, created)
    from twisted.internet import reactor

    children = [_spawn(reactor, args, config, replica.id, bootstrap) for replica in config.replicas]
    page = [_spawn_web(reactor, args, config)] if with_web else []
    monitor = MasterMonitor(reactor, config)
    monitor.start()
    stopping: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)
    reactor.addSystemEventTrigger(
        "before", "shutdown", _stop_all, reactor, [*page, *children], monitor
    )
    everyone_gone = DeferredList([child.ended for child in children])
    # Every replica exited by itself (each reported why): the cell is over.
    everyone_gone.addCallback(lambda _: None if stopping else reactor.stop())
    reactor.run()
    return 0


def _fresh_replicas(config: CellConfig) -> list[ReplicaId]:
    """Replicas whose store was never written (all of them, when the cell is new)."""
    fresh = []
    for replica in config.replicas:
        database = config.data_dir_for(replica.id) / "replica.sqlite"
        if config.storage_url is None and not database.exists():
            fresh.append(replica.id)
            continue
        store = SqlStore(config.storage_url_for(replica.id))
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


def _spawn(
    reactor: object, args: argparse.Namespace, config: CellConfig, replica_id: str, bootstrap: bool
) -> ReplicaProcess:
    command = [sys.executable, "-m", "chubbypy.server", "serve"]
    command += ["--config", str(args.config), "--replica", replica_id]
    if args.data_dir is not None:
        command += ["--data-dir", str(args.data_dir)]
    if bootstrap:
        command.append("--bootstrap")
    child = ReplicaProcess(replica_id, _prefix_width(config))
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", CELL_CHILD: "1"}
    reactor.spawnProcess(child, sys.executable, command, env=environment)  # type: ignore[attr-defined]
    return child


def _prefix_width(config: CellConfig) -> int:
    """The width of the children's names before their lines (the replicas' ids, "web")."""
    return max(3, *(len(r.id) for r in config.replicas))


def _spawn_web(reactor: object, args: argparse.Namespace, config: CellConfig) -> ReplicaProcess:
    """`chubbypy web` for the same cell file, its output prefixed ``web``."""
    command = [sys.executable, "-m", "chubbypy.web", "--config", str(args.config)]
    child = ReplicaProcess("web", _prefix_width(config))
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reactor.spawnProcess(child, sys.executable, command, env=environment)  # type: ignore[attr-defined]
    return child


def _stop_all(
    reactor: object, children: list[ReplicaProcess], monitor: MasterMonitor
) -> Deferred[list[tuple[bool, None]]]:
    monitor.stop()
    print("\nstopping the cell...", flush=True)
    for child in children:
        child.signal("TERM")

    def kill_stragglers() -> None:
        for child in children:
            if child.running:
                print(f"{child.name} did not stop in {STOP_SECONDS:.0f}s; killing it", flush=True)
                child.signal("KILL")

    timer = reactor.callLater(STOP_SECONDS, kill_stragglers)  # type: ignore[attr-defined]
    done = DeferredList([child.ended for child in children])
    done.addCallback(lambda result: (timer.cancel() if timer.active() else None, result)[1])
    return done


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
