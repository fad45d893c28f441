"""`chubbypy serve --config FILE --replica ID`: one replica process.

Shell side; the only module below the CLI that touches the global reactor. A replica whose
store was never written is either joining a brand-new cell (`--bootstrap`, which
`chubbypy cell` passes when every replica's store is new) or replacing a lost disk, in
which case it rebuilds from its peers before it votes (Paxos Made Live §5.1).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from attrs import evolve
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from chubbypy.config import REPLICA_COUNTS, CellConfig, ConfigError, load_config
from chubbypy.paxos import Durable, HardState, Persisted
from chubbypy.protocol import ReplicaId
from chubbypy.server._admin import admin_site
from chubbypy.server._clients import client_factory
from chubbypy.server._endpoints import server_endpoint
from chubbypy.server._peer_auth import PeerAuthentication, PeerCertificates, PeerKey
from chubbypy.server._peers import PeerNetwork
from chubbypy.server._secrets import ReplicaSecrets, SecretsError, load_secrets, with_secrets
from chubbypy.server._shell import ReplicaServer
from chubbypy.server._store_worker import StoreWorker
from chubbypy.server._test_clock import TEST_CLOCK_VARIABLE, RateClock
from chubbypy.store import SqlStore, StoreError

log = Logger()

TLS_KIND = "ssl:"
"""A client endpoint of this kind serves clients over TLS with the replica's certificate."""

CELL_CHILD = "CHUBBYPY_CELL_CHILD"
"""Set to "1" by `chubbypy cell` in the environment of the replicas it starts."""


class SystemChance:
    """The core's `Chance` in production: real randomness, and buggify always off."""

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(16))

    def randint(self, low: int, high: int) -> int:
        return self._random.randint(low, high)

    def buggify(self, site: str) -> bool:
        return False


def serve_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, help="the cell's YAML file")
    parser.add_argument("--replica", required=True, help="which replica of the cell this is")
    parser.add_argument(
        "--bootstrap",
        action="store_true",
        help="this replica's store is new because the cell is new (not because a disk was lost)",
    )
    parser.add_argument("--data-dir", type=Path, help="override the file's data_dir")
    return parser


def load(args: argparse.Namespace) -> CellConfig:
    config = load_config(args.config)
    if getattr(args, "data_dir", None) is not None:
        config = evolve(config, data_dir=Path(args.data_dir).resolve())
    return config


def serve_main(args: argparse.Namespace) -> int:
    """Run one replica until it is stopped; the process's exit status."""
    try:
        config = load(args)
        replica_id = ReplicaId(config.replica(args.replica).id)
        found = load_secrets(config, replica_id)
    except (ConfigError, SecretsError) as error:
        # One line per problem, and nothing started: a replica never runs on a missing key
        # or on one anybody could read in an example.
        print(f"chubbypy serve: {error}", file=sys.stderr)
        return 2
    config = with_secrets(config, found)
    try:
        monotonic = _monotonic(config)
    except ValueError as error:
        print(f"chubbypy serve: {TEST_CLOCK_VARIABLE}: {error}", file=sys.stderr)
        return 2
    _start_logging()
    if isinstance(monotonic, RateClock):
        log.warn(
            "{replica}: its clock runs at the rate in {path} ({rate:g} now), as "
            "{variable} asks: for the fault suite only",
            replica=replica_id, path=os.environ[TEST_CLOCK_VARIABLE], rate=monotonic.rate,
            variable=TEST_CLOCK_VARIABLE,
        )  # fmt: skip
    try:
        store = _open_store(config, replica_id)
        persisted = store.load()
    except StoreError as error:
        log.critical("{replica}: cannot open its store: {error}", replica=replica_id, error=error)
        return 1
    except OSError as error:  # its directory: not this user's to write, a full disk, ...
        log.critical(
            "{replica}: cannot open its data directory {directory}: {problem}",
            replica=replica_id,
            directory=config.data_dir_for(replica_id),
            problem=os_problem(error),
        )
        return 1
    fresh = persisted.hard_state is None
    rebuilding = fresh and not getattr(args, "bootstrap", False)
    if fresh and not rebuilding and len(config.replicas) not in REPLICA_COUNTS:
        log.critical(
            "{replica}: --bootstrap starts a new cell of the cell file's {count} replicas, and "
            "a new cell has 3 or 5; to grow a running cell, start the new replica without "
            "--bootstrap and add it with `chubbypy member add`",
            replica=replica_id, count=len(config.replicas),
        )  # fmt: skip
        return 2
    if fresh and not rebuilding:
        # The cell begins: mark the store, so a later start of an empty store means a lost disk.
        store.persist(Durable(hard_state=HardState()))
        persisted = store.load()
    elif rebuilding:
        log.warn(
            "{replica}: its store is empty and --bootstrap was not given: rebuilding from its "
            "peers before it votes (a new cell is started with --bootstrap on every replica)",
            replica=replica_id,
        )
    try:
        return _run(
            config,
            replica_id,
            store,
            persisted,
            rebuilding,
            _peer_authentication(config, found),
            monotonic,
        )
    except StoreError as error:  # what was loaded is damaged: the replica cannot resume
        log.critical(
            "{replica}: cannot start from its store: {error}", replica=replica_id, error=error
        )
        return 1


def _monotonic(config: CellConfig) -> Callable[[], float]:
    """The replica's clock: the system's monotonic clock, or the fault suite's test clock
    (`chubbypy.server._test_clock`) when the environment asks for it; ValueError (saying
    why) for a test clock that cannot run."""
    path = os.environ.get(TEST_CLOCK_VARIABLE)
    if not path:
        return time.monotonic
    return RateClock(Path(path), config.paxos.clock_drift_max, _warn_clock)


def _warn_clock(text: str) -> None:
    log.warn("{text}", text=text)


def os_problem(error: OSError) -> str:
    """An OSError as one line for a person: "Permission denied: '/srv/cell/r1'"."""
    where = f": {str(error.filename)!r}" if error.filename is not None else ""
    return f"{error.strerror or error}{where}"


def _peer_authentication(config: CellConfig, found: ReplicaSecrets) -> PeerAuthentication:
    """How this replica proves itself to its peers: its certificate, or the cell's key."""
    if found.tls is not None:
        return PeerCertificates(found.tls)
    assert found.peer_key is not None
    return PeerKey(config.cell, found.peer_key)


def _open_store(config: CellConfig, replica_id: ReplicaId) -> SqlStore:
    """The replica's store, in a directory only its user may enter: the store holds every
    file's contents (whatever their ACLs) and the nonces clients retry with. Files the
    process makes are its user's alone (umask 077); a directory or store left readable by
    an older version is narrowed, with a warning."""
    os.umask(0o077)
    directory = config.data_dir_for(replica_id)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (directory, *sorted(directory.glob("*.sqlite*"))):
        mode = path.stat().st_mode & 0o777
        wanted = 0o700 if path.is_dir() else 0o600
        if mode & ~wanted:
            try:
                path.chmod(wanted)
            except OSError as error:
                log.warn(
                    "{replica}: {path} is readable by others ({mode:o}) and could not be "
                    "narrowed: {error}",
                    replica=replica_id, path=path, mode=mode, error=error,
                )  # fmt: skip
            else:
                log.warn(
                    "{replica}: {path} was readable by others ({mode:o}); now {wanted:o}",
                    replica=replica_id, path=path, mode=mode, wanted=wanted,
                )  # fmt: skip
    # A store from before membership changes is upgraded to the cell file's membership.
    seed = config.node_settings(replica_id).seed_membership
    return SqlStore(config.storage_url_for(replica_id), seed=seed)


def _run(
    config: CellConfig,
    replica_id: ReplicaId,
    store: SqlStore,
    persisted: Persisted,
    rebuilding: bool,
    authentication: PeerAuthentication,
    monotonic: Callable[[], float],
) -> int:
    reactor = _install_reactor(config)
    worker = StoreWorker(reactor, store)
    try:
        server = ReplicaServer(
            config=config,
            replica_id=replica_id,
            reactor=reactor,
            store=worker,
            halt=reactor.stop,
            persisted=persisted,
            chance=SystemChance(),
            monotonic=monotonic,
            rebuilding=rebuilding,
        )
    except StoreError:
        worker.stop()
        raise
    peers = PeerNetwork(reactor, config, replica_id, server, authentication)
    server.wire(peers)
    peers.define_metrics(server.node.metrics)
    outcome = {"status": 0}
    if os.environ.get(CELL_CHILD) == "1":
        # Under `chubbypy cell` a Ctrl-C reaches every process; the cell stops its replicas
        # one way only (SIGTERM, a graceful stop), so the replica ignores the Ctrl-C itself.
        reactor.callWhenRunning(signal.signal, signal.SIGINT, signal.SIG_IGN)
    reactor.callWhenRunning(_listen, reactor, config, replica_id, server, peers, outcome)
    reactor.addSystemEventTrigger("before", "shutdown", _stop, server, peers, worker)
    reactor.run()
    return 1 if server.failed else outcome["status"]


def _install_reactor(config: CellConfig) -> Any:
    """The replica's reactor, peers first (`chubbypy.server._reactor`); Twisted's default
    where epoll is missing or a reactor was installed before, with a warning."""
    from twisted.internet.error import ReactorAlreadyInstalledError

    try:
        from chubbypy.server._reactor import install

        replica_reactor = install()
    except (ImportError, ReactorAlreadyInstalledError) as error:
        from twisted.internet import reactor

        log.warn(
            "not the peers-first reactor ({error}): a flood of client connections may "
            "delay peers' messages",
            error=error,
        )
        return reactor
    replica_reactor.client_events_per_turn = config.limits.client_reads_per_turn
    return replica_reactor


def _listen(
    reactor: object,
    config: CellConfig,
    replica_id: ReplicaId,
    server: ReplicaServer,
    peers: PeerNetwork,
    outcome: dict[str, int],
) -> None:
    replica = config.replica(replica_id)
    clients: IProtocolFactory = client_factory(server, reactor)  # type: ignore[arg-type]
    client_endpoint = replica.client
    if client_endpoint.startswith(TLS_KIND):
        # The certificate and key are the tls: section's (config.py refuses others here).
        assert isinstance(peers.authentication, PeerCertificates)
        clients = peers.authentication.serving_clients(clients)
        client_endpoint = "tcp:" + client_endpoint.removeprefix(TLS_KIND)
    listening = gatherResults(
        [
            peers.listen(),
            server_endpoint(reactor, client_endpoint).listen(clients),
            server_endpoint(reactor, replica.admin).listen(admin_site(server)),
        ],
        consumeErrors=True,
    )

    def started(_: object) -> None:
        log.info(
            "{replica} of cell {cell}: peers on {peer}, clients on {client}, admin on {admin}",
            replica=replica_id,
            cell=config.cell,
            peer=replica.peer,
            client=replica.client,
            admin=replica.admin,
        )
        peers.connect_all()
        server.start()

    def failed(failure: Failure) -> None:
        log.critical(
            "{replica} cannot listen {problem}",
            replica=replica_id,
            problem=_why_not_listening(failure),
        )
        outcome["status"] = 1
        reactor.stop()  # type: ignore[attr-defined]

    listening.addCallbacks(started, failed)


LISTENING_ON: Final = ("its peer port", "its client port", "its admin port")
"""What each listen of `_listen` is for, in its order."""


def _why_not_listening(failure: Failure) -> str:
    """One line for a listen that failed (which port, and the system's reason), not the
    traceback of a `FirstError` around a `CannotListenError`."""
    which = ""
    if isinstance(failure.value, FirstError):
        which = LISTENING_ON[failure.value.index] + " "
        failure = failure.value.subFailure
    return f"on {which}({failure.getErrorMessage()})"


def _stop(server: ReplicaServer, peers: PeerNetwork, worker: StoreWorker) -> Deferred[None]:
    """A graceful stop (SIGTERM, Ctrl-C): hand mastership over, then close the store."""
    stopped = server.stop()

    def close(_: object) -> None:
        peers.stop()
        worker.stop()
        log.info("{replica} stopped", replica=server.replica_id)

    stopped.addCallback(close)
    return stopped


def _start_logging() -> None:
    """One line per event: time, level, message. Twisted's own chatter only from warnings up."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    predicate.setLogLevelForNamespace("chubbypy", LogLevel.info)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(LineObserver(), [predicate])], redirectStandardIO=False
    )


@implementer(ILogObserver)
class LineObserver:
    """Writes each log event as one line: time, level, message (and a traceback if any)."""

    def __call__(self, event: LogEvent) -> None:
        when = time.strftime("%H:%M:%S", time.localtime(event.get("log_time", time.time())))
        level = event.get("log_level", LogLevel.info).name
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        sys.stdout.write(f"{when} {level:<5} {text}\n")
        sys.stdout.flush()
