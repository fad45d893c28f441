"""Shell: YAML -> frozen Config, validated once.

A cell's configuration lives in a YAML file under ``etc/`` (``etc/cell.yaml`` is the commented
example). `load_config` reads it and `parse_config` checks it, once, into frozen values
(STYLE §3, "validate at the edges"): a `CellConfig` that exists is valid, so the server and
the core assert rather than re-check. The core never sees this module; the shell hands it
`PaxosConfig.timing()` and `PaxosConfig.limits()`, which convert seconds to ticks and
gather every queue and batch bound (STYLE §4).

A mistake in the file is a `ConfigError` whose message has one line per problem, each naming
the file, the dotted key path (``replicas[1].peer``, ``paxos.master_lease_seconds``), what is
wrong and what is expected. Every problem is collected before raising, so one run of the
checker shows all of them. Relations between keys (the lease arithmetic, the bounds that
`Limits` asserts) are checked here first, so that the user reads a sentence instead of an
`AssertionError` from the core.

A relative ``data_dir`` is resolved against the current working directory when the file is
loaded, not against the file's own directory, like a path given on the command line.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, cast

import yaml
from attrs import define, field, fields, frozen
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from chubbypy.master import MasterTiming
from chubbypy.namespace import DEFAULT_LIMITS, NamespaceLimits
from chubbypy.node import (
    ANONYMOUS,
    Auth,
    AuthLimits,
    ClientLimits,
    NodeSettings,
    handle_key_for,
)
from chubbypy.paxos import (
    Limits,
    Timing,
    drift_fraction,
    master_lease_ticks_for,
    ticks_covering,
    ticks_within,
)
from chubbypy.protocol import COMMAND_OVERHEAD_BYTES, ReplicaId
from chubbypy.protocol.client import PRINCIPAL_CHARS_MAX, TOKEN_CHARS_MAX, ReplicaAddress
from chubbypy.protocol.session import (
    CALLS_UNACKED_MAX,
    LOCK_INFO_LISTED_MAX,
    SNAPSHOT_CHUNK_BYTES_MAX,
)
from chubbypy.protocol.values import (
    LEARNERS_MAX,
    MESSAGE_COMMANDS_MAX,
    MESSAGE_ENTRIES_MAX,
    VALUE_COMMANDS_MAX,
    VOTERS_MAX,
    VOTERS_MIN,
)
from chubbypy.protocol.wire import GREETING_BYTES_MAX

__all__ = [
    "AuthConfig",
    "CellConfig",
    "ConfigError",
    "LimitsConfig",
    "PaxosConfig",
    "ReplicaConfig",
    "SupervisorConfig",
    "TlsConfig",
    "WebConfig",
    "is_placeholder",
    "load_config",
    "parse_config",
]


class ConfigError(Exception):
    """A configuration that cannot be used. The message has one line per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        assert self.problems
        super().__init__("\n".join(self.problems))


@frozen
class ReplicaConfig:
    """One member of the cell: its name and the Twisted server endpoints it listens on."""

    id: ReplicaId
    """Unique within the cell; also the name of its directory under ``data_dir``."""
    peer: str
    """Endpoint for Paxos messages from the other replicas."""
    client: str
    """Endpoint for Chubby clients."""
    admin: str
    """Endpoint for the admin web pages and health checks."""


@frozen
class PaxosConfig:
    """Every duration and bound of the Paxos core, as configured (seconds and counts).

    The attribute names are the YAML keys of the ``paxos:`` section and the defaults are
    the values a missing key takes; ``etc/cell.yaml`` explains why each default is what it is.
    """

    tick_seconds: float = 0.025
    """Length of one tick, the core's unit of time."""
    master_lease_seconds: float = 0.6
    """How long an acceptor refuses other proposers after hearing from the master."""
    clock_drift_max: float = 0.01
    """Bound on any clock's rate error, as a fraction (0.01: 1% fast or slow)."""
    heartbeat_seconds: float = 0.1
    """How often the master renews its lease."""
    election_jitter_seconds: float = 0.15
    """Most random extra wait before campaigning."""
    retry_seconds: float = 0.15
    """Wait for promises or a catch-up reply before trying again."""
    batch_entries_max: int = 64
    """Commands in one Paxos instance."""
    batch_bytes_max: int = 1 << 20
    """Bytes of commands in one Paxos instance (payloads plus a fixed header each)."""
    proposals_inflight_max: int = 32
    """Instances proposed but not yet chosen (the pipeline window)."""
    proposals_queued_max: int = 10_000
    """Commands waiting for a place in the window; more are refused as overload."""
    catchup_entries_max: int = 256
    """Entries in one catch-up reply or promise."""
    log_retain_entries: int = 1_000
    """Entries kept before the latest snapshot."""
    snapshot_every_entries: int = 10_000
    """Applied entries between checkpoints."""
    checksum_every_seconds: float = 60.0
    """How often the master asks every replica to checksum its state."""
    clients_max: int = 50_000
    """Clients whose recent results are remembered for exactly-once retries."""
    client_results_max: int = 64
    """Results remembered per client."""

    def timing(self) -> Timing:
        """The core's durations in ticks; the master's lease is shortened for clock drift."""
        return Timing.from_seconds(
            tick_seconds=self.tick_seconds,
            lease_seconds=self.master_lease_seconds,
            clock_drift_max=self.clock_drift_max,
            heartbeat_seconds=self.heartbeat_seconds,
            election_jitter_seconds=self.election_jitter_seconds,
            retry_seconds=self.retry_seconds,
        )

    def limits(self) -> Limits:
        """The core's queue and batch bounds."""
        return Limits(
            batch_entries_max=self.batch_entries_max,
            batch_bytes_max=self.batch_bytes_max,
            proposals_inflight_max=self.proposals_inflight_max,
            proposals_queued_max=self.proposals_queued_max,
            catchup_entries_max=self.catchup_entries_max,
            log_retain_entries=self.log_retain_entries,
        )

    def checksum_every_ticks(self) -> int:
        """`checksum_every_seconds` in ticks (at least one)."""
        return max(1, round(self.checksum_every_seconds / self.tick_seconds))


ADMIN_CONNECTIONS_PER_ADDRESS_DEFAULT: Final = 16
_CLIENT_LIMITS: Final = ClientLimits()
"""The node's defaults, which the cell file's ``limits:`` keys of the same names override."""
_AUTH_LIMITS: Final = AuthLimits()


@frozen
class LimitsConfig:
    """Size limits of the service outside the Paxos core, and what one client connection or
    principal may hold (`chubbypy.node.ClientLimits`). YAML section ``limits:``."""

    file_bytes_max: int = 256 * 1024
    """Contents of one file in the namespace (Chubby's limit)."""
    frame_bytes_max: int = 1 << 20
    """One length-prefixed frame on the wire."""
    peer_message_bytes_max: int = 1 << 28
    """One message between replicas, reassembled from frames (the largest snapshot)."""
    registrations_per_connection_max: int = _CLIENT_LIMITS.registrations_per_connection_max
    """Live client registrations made on one client connection."""
    registrations_per_principal_max: int = _CLIENT_LIMITS.registrations_per_principal_max
    """Live client registrations of one principal, on all its open connections."""
    sessions_per_connection_max: int = _CLIENT_LIMITS.sessions_per_connection_max
    """Live sessions created on one client connection."""
    sessions_per_principal_max: int = _CLIENT_LIMITS.sessions_per_principal_max
    """Live sessions of one principal (created through the current master)."""
    client_connections_max: int = 10_000
    """Client connections open at once; more are refused (BUSY). Lowered at start, with a
    warning, to what the process's file descriptor limit allows."""
    hello_timeout_seconds: float = 5.0
    """A client connection that has not said hello by then is closed; so is a connection
    to the peer port that has not proven itself a member by then."""
    hello_frame_bytes_max: int = 4096
    """One frame from a client connection before its Hello is welcomed, or from a peer
    connection before it is proven a member: a Hello or a handshake message is tiny."""
    peer_handshakes_max: int = 64
    """Connections to the peer port not yet proven, at once; past it the oldest is closed
    (so squatters cannot keep a member out: a member proves itself in a round trip)."""
    peer_handshakes_per_address_max: int = 8
    """As peer_handshakes_max, from one source address."""
    admin_connections_max: int = 64
    """Connections to the admin (HTTP) port open at once; more are answered 503 and closed."""
    admin_idle_timeout_seconds: float = 30.0
    """An admin connection that sends nothing for this long is closed."""
    admin_connections_per_address_max: int = ADMIN_CONNECTIONS_PER_ADDRESS_DEFAULT
    """Admin connections open at once from one source address (at most
    admin_connections_max; when not given, the smaller of 16 and it)."""
    admin_request_head_seconds: float = 5.0
    """A request's line and headers must arrive whole within this long of their first
    byte (slowloris); else 408 and the connection is closed."""
    admin_request_head_bytes_max: int = 8192
    """A request line (414 past it) and its headers together (431 past it)."""
    http_request_bytes_max: int = 16 * 1024
    """The body of one request to the admin port (it takes none: twisted.web would
    otherwise buffer any body whole, on disk past 100,000 bytes)."""
    frame_timeout_seconds: float = 10.0
    """A frame begun must be finished within this long (while the replica reads)."""
    idle_timeout_seconds: float = 300.0
    """A greeted connection with nothing in progress that sends nothing is closed."""
    requests_pending_per_connection_max: int = 1_024
    """Requests of one connection in progress at once; past it the replica stops reading
    the connection until answers go out (back-pressure)."""
    reply_bytes_buffered_max: int = 4 << 20
    """Bytes of replies one client connection may have waiting for its client to read;
    past it none of its requests are handled until its client reads them."""
    reply_bytes_buffered_total_max: int = 256 << 20
    """The same, summed over every client connection whose replies wait to be read."""
    client_requests_per_turn: int = 128
    """Client requests handled per reactor turn, over all connections in turn."""
    client_bytes_per_turn: int = 1 << 20
    """Bytes of client requests (and the replies written at once) handled per reactor
    turn, over all connections in turn; at least one request is handled per turn."""
    request_arrays_max: int = 16_384
    """Arrays (and maps) in one client request; decoding stops at the one past it (each
    costs about a microsecond, and a 1 MiB frame of empty arrays holds a million)."""
    client_reads_per_turn: int = 64
    """Client connections read per reactor turn, after every peer's messages."""
    auth_failures_per_connection_max: int = _AUTH_LIMITS.failures_per_connection_max
    """Failed authentications on one connection; the last one closes it."""
    auth_failures_per_address_max: int = _AUTH_LIMITS.failures_per_address_max
    """Failed authentications from one source address per auth_failures_window_seconds;
    past it the address's attempts are refused without their tokens being checked."""
    auth_failures_window_seconds: float = 60.0
    calls_waiting_per_session_max: int = 1_000
    """Calls of one session waiting at the master (blocking acquires queued, retries joined
    to a call in progress); past it the session's next one is refused RESOURCE_EXHAUSTED."""
    handles_per_session_max: int = 10_000
    """Handles one session has open at the master; past it an Open is refused
    RESOURCE_EXHAUSTED (handles are the master's memory, not the log's)."""
    cached_names_per_session_max: int = 10_000
    """Names one session is registered as caching at the master; past it a read is
    answered uncached (and the client keeps nothing). 0: the master registers no cacher."""
    log_lines_per_minute: int = 10
    """Warnings of one kind that clients or peers can cause, per minute; more are counted
    (chubbypy_log_lines_left_out_total) and the next line says how many were left out."""

    nodes_per_principal_max: int = DEFAULT_LIMITS.nodes_per_principal_max
    """Nodes one principal created that exist (a quota, enforced in the namespace)."""
    bytes_per_principal_max: int = DEFAULT_LIMITS.bytes_per_principal_max
    """Bytes of contents in the files one principal created (a quota)."""
    snapshot_chunk_bytes: int = 256 * 1024
    """The most bytes of a backup's snapshot one answer carries (``chubbypy snapshot
    save`` asks for one piece at a time); at most SNAPSHOT_CHUNK_BYTES_MAX and at most
    reply_bytes_buffered_max."""
    snapshot_held_seconds: float = 30.0
    """How long the master keeps a backup's snapshot in memory after its last piece was
    asked for; a backup that pauses longer starts again."""

    def auth_limits(self, tick_seconds: float) -> AuthLimits:
        """The limits on failed authentications, for the node (the window in ticks)."""
        return AuthLimits(
            failures_per_connection_max=self.auth_failures_per_connection_max,
            failures_per_address_max=self.auth_failures_per_address_max,
            window_ticks=max(1, round(self.auth_failures_window_seconds / tick_seconds)),
        )

    def client_limits(self) -> ClientLimits:
        """The limits on what one connection or principal holds, for the node."""
        return ClientLimits(
            registrations_per_connection_max=self.registrations_per_connection_max,
            registrations_per_principal_max=self.registrations_per_principal_max,
            sessions_per_connection_max=self.sessions_per_connection_max,
            sessions_per_principal_max=self.sessions_per_principal_max,
        )


@frozen
class SessionsConfig:
    """Sessions, KeepAlives and locks (Chubby §2.4, §2.8). YAML section ``sessions:``."""

    lease_seconds: float = 12.0
    """A session lease, as the master grants it (Chubby's default)."""
    keepalive_answer_before_seconds: float = 4.0
    """The master answers a held KeepAlive when the lease has this long to run."""
    events_pending_max: int = 1000
    """Events waiting per session; a session further behind is ended at its lease's end."""
    lock_waiters_max: int = 100_000
    """Blocked lock requests at the master, all locks together."""
    answers_kept_max: int = 64
    """Answers of one session's unacknowledged calls kept in its replicated record, so a
    retry gets its first answer (exactly-once session calls); at least CALLS_UNACKED_MAX,
    how far the client library runs ahead of its oldest unanswered call."""
    lock_info_listed_max: int = 100
    """The most holders, and the most waiters, one GetLockInfo answer lists (its counts
    say how many there are in all); at most LOCK_INFO_LISTED_MAX."""


SNAPSHOT_CHUNK_BYTES_MIN: Final = 4096
"""Smaller pieces would make a backup of a large cell a million calls."""
TOKEN_CHARS_MIN: Final = 16
SECRETS_DIR: Final = "_secrets"
"""The directory, inside data_dir, where `chubbypy cell` creates a cell's keys. Its name
cannot be a replica id (those start with a letter), so it never meets a replica's files."""
PLACEHOLDER_WORDS: Final = ("replace", "changeme", "change me", "placeholder", "example")
"""A secret containing one of these (any case) was copied from an example, not chosen: it is
public, and refused (issue 13: the repository once shipped a usable key and token)."""

ADMINS_DEFAULT: Final = ("operator",)
"""``auth.admins`` when the file does not say: the example cells' operator principal."""


@frozen
class AuthConfig:
    """Who a client is, and the secrets that make handles and replicas unforgeable. YAML
    section ``auth:``.

    Each principal has a shared token, given in the file or, better, in a file of its own
    (``token_file:``); a client presents its principal and token when it connects. The
    principal is what the ACL files (``/ls/<cell>/acl/<name>``) list. Secret files are read
    by the replica when it starts (`chubbypy.server`), never by this module: a client that
    reads the cell file to find its replicas needs none of them.
    """

    principals: tuple[tuple[str, str], ...] = ()
    """(principal, token) pairs given in the file itself."""
    anonymous: bool = True
    """Whether a client without a token is served, as principal ``anonymous``."""
    handle_key: str | None = None
    """The secret of the handles' check digits and of the credentials, given in the file
    itself; None: read from `handle_key_file`."""
    token_files: tuple[tuple[str, str], ...] = ()
    """(principal, file) pairs: the token is the file's contents (surrounding blanks
    stripped). A relative file name is inside data_dir (`CellConfig.secret_path`)."""
    handle_key_file: str = f"{SECRETS_DIR}/handle.key"
    """Where the handle key is when `handle_key` is not given."""
    peer_key_file: str = f"{SECRETS_DIR}/peer.key"
    """The cell's peer key: replicas prove they know it to each other before any Paxos
    message is taken (unless the cell has a ``tls:`` section: then certificates do that)."""
    admins: tuple[str, ...] = ADMINS_DEFAULT
    """The cell's operators: listed in the ACL directory's ``admin`` file when the cell is
    made (only they may then change ACL files or list sessions), and exempt from quotas."""

    def token_of(self, principal: str) -> str | None:
        """`principal`'s token if the file gives it inline (token files are the server's)."""
        return dict(self.principals).get(principal)


@frozen
class TlsConfig:
    """The cell's certificates. YAML section ``tls:``; without it the cell uses no TLS.

    With it, replicas authenticate each other with mutual TLS (each replica's certificate
    names its id as its subject's common name, signed by `ca`), and ``ssl:`` client
    endpoints serve clients over TLS with the same certificate. Each path may contain
    ``{replica}``, replaced by the replica's id, and a relative one is inside data_dir.
    """

    ca: str = f"{SECRETS_DIR}/tls/ca.pem"
    """PEM certificate(s) of the authority that signs every replica's certificate."""
    cert: str = f"{SECRETS_DIR}/tls/{{replica}}.pem"
    """This replica's certificate (PEM), with its id as the subject's common name."""
    key: str = f"{SECRETS_DIR}/tls/{{replica}}.key"
    """This replica's private key (PEM)."""


WEB_LISTEN_DEFAULT: Final = "tcp:7400:interface=127.0.0.1"
"""Where `chubbypy web` (and the page `chubbypy cell` starts) listens: loopback only."""
WEB_BODY_BYTES_DEFAULT: Final = 1 << 20
WEB_CONNECTIONS_PER_ADDRESS_DEFAULT: Final = 64
REQUEST_HEAD_BYTES_MIN: Final = 1024
"""A request head smaller than this cannot carry a browser's usual headers and cookies."""


@frozen
class WebConfig:
    """The admin namespace browser, `chubbypy web` (`chubbypy.web`). YAML section ``web:``.

    The page is a client of the cell: it has no rights of its own, every request acts as
    anonymous or as the principal a person logged in as. Each number below bounds what one
    visitor (or all of them) can make the web server hold or do; past a bound a request
    is refused with a clear error and the server keeps serving everyone else.
    """

    listen: str = WEB_LISTEN_DEFAULT
    """Twisted server endpoint string (``tcp:`` or ``ssl:``); ``--listen`` overrides it."""
    hosts: tuple[str, ...] = ()
    """Host names the page may be reached by besides the listening address, ``localhost``
    and ``127.0.0.1``/``[::1]``: any other ``Host`` header is refused (DNS rebinding)."""
    logins_max: int = 64
    """Logins live at once (each holds a client of the cell, with its session)."""
    login_idle_seconds: float = 900.0
    """A login unused this long is ended and its client of the cell closed."""
    login_attempts_per_address_max: int = 10
    """Login attempts from one address per `login_attempts_window_seconds` (a token bucket)."""
    login_attempts_window_seconds: float = 60.0
    login_failures_per_principal_max: int = 5
    """Failed logins as one principal, from every address together, per the cell's
    ``limits.auth_failures_window_seconds`` (a token bucket). Past it the page refuses that
    principal's logins, before asking the cell, until the bucket refills: every login
    reaches the cell from the web server's host, and the cell allows only
    ``limits.auth_failures_per_address_max`` failures per host and principal, so this must
    be below it, or failed web logins would lock the principal out of the cell on that
    host (the CLI too)."""
    logins_per_principal_max: int = 16
    """Logins of one principal live at once (at most logins_max)."""
    logins_per_address_max: int = 16
    """Logins made from one address live at once (at most logins_max)."""
    connections_max: int = 256
    """HTTP connections open at once (event streams included); more are closed at once."""
    connections_per_address_max: int = WEB_CONNECTIONS_PER_ADDRESS_DEFAULT
    """HTTP connections open at once from one address (at most connections_max; when not
    given, the smaller of 64 and it)."""
    request_head_seconds: float = 5.0
    """A request's line and headers must arrive whole within this long of their first
    byte (slowloris); else 408 and the connection is closed."""
    request_head_bytes_max: int = 16384
    """A request line (414 past it) and its headers together (431 past it)."""
    request_body_bytes_max: int = WEB_BODY_BYTES_DEFAULT
    """Bytes of one request's body; a longer one is refused (413) without being kept. When
    not given, at least what a file of ``limits.file_bytes_max`` needs as base64."""
    json_depth_max: int = 8
    """Nesting of arrays and objects in a JSON request body."""
    children_per_page: int = 200
    """Children of a directory shown on one page of the tree (and the API's largest page)."""
    contents_shown_bytes_max: int = 65536
    """Bytes of a file's contents one page or API answer carries; the rest is paged."""
    sessions_per_page: int = 100
    """Sessions on one page of the sessions list."""
    event_streams_per_login_max: int = 4
    """Live-update streams (server-sent events) of one login, or of one address when
    anonymous."""
    event_streams_max: int = 64
    """Live-update streams of all visitors together."""
    watched_paths_per_stream_max: int = 64
    """Nodes one live-update stream watches (each a handle with events in the cell)."""
    status_poll_seconds: float = 1.0
    """How often the cell page's figures are read from each replica's admin port."""
    chart_points: int = 120
    """Samples each live chart keeps (120 at 1 s: the last two minutes)."""


@frozen
class SupervisorConfig:
    """How `chubbypy cell` keeps its children (the replicas, the web page) running. YAML
    section ``supervisor:``; `chubbypy serve` ignores it.

    A child that exits while the cell runs is started again after a back-off that starts
    at `restart_delay_seconds` and doubles with each quick exit in a row (one within
    `quick_exit_seconds` of its start) up to `restart_delay_max_seconds`; at the
    `quick_exits_max`-th quick exit in a row it is left stopped, and the cell says so.
    """

    restart_delay_seconds: float = 0.5
    """The first back-off: long enough for a port to be free, short against a lease."""
    restart_delay_max_seconds: float = 30.0
    """The longest back-off, however often the child died."""
    quick_exit_seconds: float = 30.0
    """A child that ran at least this long before it exited starts its back-off afresh."""
    quick_exits_max: int = 5
    """Quick exits in a row after which the child is not started again."""


@frozen
class CellConfig:
    """A whole cell, as loaded from one file; see the module docstring."""

    cell: str
    """The cell's name: the <cell> in /ls/<cell>/..."""
    replicas: tuple[ReplicaConfig, ...]
    data_dir: Path
    """Absolute; replica <id> keeps its files in data_dir/<id>/."""
    storage_url: str | None
    """SQLAlchemy URL template with "{replica}", or None for a SQLite file per replica."""
    paxos: PaxosConfig = PaxosConfig()
    limits: LimitsConfig = LimitsConfig()
    sessions: SessionsConfig = SessionsConfig()
    auth: AuthConfig = AuthConfig()
    tls: TlsConfig | None = None
    """The cell's certificates, or None: no TLS (replicas authenticate with the peer key)."""
    web: WebConfig = WebConfig()
    """The admin namespace browser (`chubbypy web`)."""
    supervisor: SupervisorConfig = SupervisorConfig()
    """How `chubbypy cell` restarts a child that exited."""
    source: Path | None = None
    """The file this came from, for messages."""

    @property
    def replica_ids(self) -> tuple[ReplicaId, ...]:
        """The members of the cell, in the file's order."""
        return tuple(replica.id for replica in self.replicas)

    def replica(self, replica_id: str) -> ReplicaConfig:
        """The replica called `replica_id`; a `ConfigError` listing the known ids if none."""
        for replica in self.replicas:
            if replica.id == replica_id:
                return replica
        known = ", ".join(self.replica_ids)
        where = f"{self.source}: " if self.source is not None else ""
        raise ConfigError(
            [f"{where}replicas: no replica {replica_id!r} in cell {self.cell!r}; known: {known}"]
        )

    def data_dir_for(self, replica_id: str) -> Path:
        """The directory that belongs to replica `replica_id` alone."""
        return self.data_dir / self.replica(replica_id).id

    def secret_path(self, written: str, replica_id: str | None = None) -> Path:
        """The file a secret's path as written in the cell file names: ``{replica}``
        replaced by `replica_id`, ``~`` expanded, and a relative path taken inside
        data_dir (so ``--data-dir`` moves a cell's keys with its data)."""
        if replica_id is not None:
            written = written.replace(REPLICA_PLACEHOLDER, self.replica(replica_id).id)
        path = Path(written).expanduser()
        return path if path.is_absolute() else self.data_dir / path

    def node_settings(self, replica_id: str) -> NodeSettings:
        """What replica `replica_id`'s node runs with (`chubbypy.node.ReplicaNode`)."""
        paxos, sessions, auth = self.paxos, self.sessions, self.auth
        return NodeSettings(
            replica_id=self.replica(replica_id).id,
            cell=self.cell,
            addresses=tuple(ReplicaAddress(r.id, r.client) for r in self.replicas),
            peer_addresses=tuple(r.peer for r in self.replicas),
            timing=paxos.timing(),
            limits=paxos.limits(),
            master_timing=MasterTiming.from_seconds(
                tick_seconds=paxos.tick_seconds,
                lease_seconds=sessions.lease_seconds,
                answer_before_seconds=sessions.keepalive_answer_before_seconds,
                clock_drift_max=paxos.clock_drift_max,
                events_pending_max=sessions.events_pending_max,
                waiters_max=sessions.lock_waiters_max,
                calls_waiting_per_session_max=self.limits.calls_waiting_per_session_max,
                handles_per_session_max=self.limits.handles_per_session_max,
                cached_names_per_session_max=self.limits.cached_names_per_session_max,
                lock_info_listed_max=sessions.lock_info_listed_max,
            ),
            tick_microseconds=round(paxos.tick_seconds * 1_000_000),
            namespace_limits=NamespaceLimits(
                file_bytes_max=self.limits.file_bytes_max,
                session_answers_max=sessions.answers_kept_max,
                nodes_per_principal_max=self.limits.nodes_per_principal_max,
                bytes_per_principal_max=self.limits.bytes_per_principal_max,
                quota_exempt=frozenset(auth.admins),
            ),
            handle_key=handle_key_for(self.cell, auth.handle_key),
            auth=Auth(auth.principals, auth.anonymous),
            snapshot_every_entries=paxos.snapshot_every_entries,
            checksum_every_ticks=paxos.checksum_every_ticks(),
            clients_max=paxos.clients_max,
            client_results_max=paxos.client_results_max,
            client_limits=self.limits.client_limits(),
            auth_limits=self.limits.auth_limits(paxos.tick_seconds),
            log_lines_per_minute=self.limits.log_lines_per_minute,
            snapshot_chunk_bytes=self.limits.snapshot_chunk_bytes,
            snapshot_held_ticks=max(
                1, round(self.limits.snapshot_held_seconds / paxos.tick_seconds)
            ),
            admins=auth.admins,
        )

    def storage_url_for(self, replica_id: str) -> str:
        """The SQLAlchemy URL of replica `replica_id`'s store."""
        replica = self.replica(replica_id)
        if self.storage_url is None:
            path = self.data_dir / replica.id / "replica.sqlite"
            # URL.create escapes characters such as '?' that a formatted string would misread.
            return URL.create("sqlite", database=os.fspath(path)).render_as_string(False)
        return self.storage_url.replace(REPLICA_PLACEHOLDER, replica.id)


REPLICA_PLACEHOLDER: Final = "{replica}"
"""Replaced by the replica id in `storage_url`; plain text replacement, not str.format."""

CELL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
REPLICA_ID = re.compile(r"[a-z][a-z0-9_-]{0,31}")
ENDPOINT_KINDS: Final = ("tcp:", "ssl:", "unix:")
REPLICA_COUNTS: Final = (3, 5)
"""How many replicas a new cell starts with (``--bootstrap``): three survive one failure,
five two; an even count adds cost but no tolerance."""
REPLICAS_LISTED_MAX: Final = VOTERS_MAX + LEARNERS_MAX
"""The most replicas a cell file lists: a running cell's members change (``chubbypy member``),
and a new replica's file names itself and the members it dials first."""
FRAME_LENGTH_MAX: Final = (1 << 32) - 1
"""The largest length a 4-byte frame prefix can state."""
CLOCK_DRIFT_LIMIT: Final = 0.5
LEASE_TICKS_MIN: Final = 4
MASTER_LEASE_TICKS_MIN: Final = 2

TOP_KEYS: Final = (
    "cell",
    "replicas",
    "data_dir",
    "storage_url",
    "paxos",
    "limits",
    "sessions",
    "auth",
    "tls",
    "web",
    "supervisor",
)
TOP_REQUIRED: Final = ("cell", "replicas", "data_dir")
REPLICA_KEYS: Final = tuple(attribute.name for attribute in fields(ReplicaConfig))


def load_config(path: str | os.PathLike[str]) -> CellConfig:
    """Read and check the YAML file at `path`; a `ConfigError` describes every mistake."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        raise ConfigError([f"{source}: cannot read the file: {error}"]) from None
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        raise ConfigError([_yaml_problem(source, error)]) from None
    return parse_config(document, source)


def parse_config(mapping: object, source: str | os.PathLike[str] | None = None) -> CellConfig:
    """Check `mapping` (a parsed YAML document) and build the frozen `CellConfig`."""
    origin = Path(source) if source is not None else None
    problems = _Problems()
    if mapping is None:
        problems.add("", "the file is empty: expected the keys cell, replicas and data_dir")
        raise problems.error(origin)
    top = _section(mapping, "", TOP_KEYS, TOP_REQUIRED, problems)
    if top is None:
        raise problems.error(origin)
    cell = _cell_name(top["cell"], problems) if "cell" in top else None
    replicas = _replicas(top["replicas"], problems) if "replicas" in top else ()
    data_dir = _data_dir(top["data_dir"], problems) if "data_dir" in top else None
    storage_url = _storage_url(top.get("storage_url"), problems)
    paxos = _numbers(top.get("paxos"), "paxos", PaxosConfig, PAXOS_RULES, problems)
    limits_section = top.get("limits")
    if isinstance(limits_section, dict):
        limits_section = {
            **limits_section,
            **_parts_not_given(limits_section, LIMITS_PARTS, LimitsConfig()),
        }
    limits = _numbers(limits_section, "limits", LimitsConfig, LIMITS_RULES, problems)
    sessions = _numbers(top.get("sessions"), "sessions", SessionsConfig, SESSIONS_RULES, problems)
    _check_session_relations(sessions, paxos, problems)
    auth = _auth(top.get("auth"), problems)
    tls = _tls(top.get("tls"), problems)
    _check_endpoint_kinds(replicas, tls, problems)
    _check_paxos_relations(paxos, problems)
    _check_size_relations(paxos, limits, problems)
    _check_client_limits(limits, paxos, problems)
    _check_parts(limits, "limits", LIMITS_PARTS, problems)
    web = _web(top.get("web"), limits, problems)
    supervisor = _numbers(
        top.get("supervisor"), "supervisor", SupervisorConfig, SUPERVISOR_RULES, problems
    )
    _check_supervisor_relations(supervisor, problems)
    if problems or cell is None or data_dir is None:
        raise problems.error(origin)
    config = CellConfig(
        cell=cell,
        replicas=replicas,
        data_dir=data_dir,
        storage_url=storage_url,
        # The values were read with the field's own type (int or float) and checked above.
        paxos=PaxosConfig(**cast("dict[str, Any]", paxos)),
        limits=LimitsConfig(**cast("dict[str, Any]", limits)),
        sessions=SessionsConfig(**cast("dict[str, Any]", sessions)),
        auth=auth,
        tls=tls,
        web=web,
        supervisor=SupervisorConfig(**cast("dict[str, Any]", supervisor)),
        source=origin,
    )
    # Pair assertion: the core's own checks must agree with the ones above. If one of these
    # fails, this module let through a value the core rejects: a bug here, not in the file.
    config.paxos.timing()
    config.paxos.limits()
    return config


# --- Collecting problems ---------------------------------------------------------------------


@define
class _Problems:
    """Every problem found so far, as (dotted key path, what is wrong) pairs."""

    found: list[tuple[str, str]] = field(factory=list)

    def add(self, path: str, message: str) -> None:
        self.found.append((path, message))

    def __bool__(self) -> bool:
        return bool(self.found)

    def error(self, source: Path | None) -> ConfigError:
        def line(path: str, message: str) -> str:
            parts = [str(source)] if source is not None else []
            return ": ".join([*parts, *([path] if path else []), message])

        return ConfigError(line(path, message) for path, message in self.found)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: object) -> str:
    """How a YAML value reads back to the user, with the YAML type named."""
    match value:
        case None:
            return "null"
        case bool():
            return f"boolean {str(value).lower()}"
        case int():
            return f"integer {value}"
        case float():
            return f"number {value:g}"
        case str():
            return f"string {value!r}"
        case list():
            return "a list"
        case Mapping():
            return "a mapping"
        case _:
            return type(value).__name__


def _section(
    value: object,
    path: str,
    known: tuple[str, ...],
    required: tuple[str, ...],
    problems: _Problems,
) -> Mapping[str, object] | None:
    """`value` as a mapping, noting unknown keys (with a suggestion) and missing ones."""
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping of keys, got {_describe(value)}")
        return None
    for key in value:
        if not isinstance(key, str):
            problems.add(path, f"key {_describe(key)} is not a name: keys are strings")
        elif key not in known:
            problems.add(_join(path, key), _unknown_key(key, known))
    for key in required:
        if key not in value:
            problems.add(_join(path, key), "is missing: this key is required")
    return cast("Mapping[str, object]", value)


def _unknown_key(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key: did you mean {close[0]!r}?"
    return f"unknown key: expected one of {', '.join(known)}"


AUTH_KEYS: Final = (
    "principals",
    "anonymous",
    "handle_key",
    "handle_key_file",
    "peer_key_file",
    "admins",
)


def _auth(value: object, problems: _Problems) -> AuthConfig:
    """The ``auth:`` section: principals with their tokens, anonymous access, the keys."""
    if value is None:
        return AuthConfig()
    section = _section(value, "auth", AUTH_KEYS, (), problems)
    if section is None:
        return AuthConfig()
    principals, token_files = _principals(section.get("principals", {}), problems)
    anonymous = section.get("anonymous", True)
    if not isinstance(anonymous, bool):
        problems.add("auth.anonymous", f"expected true or false, got {_describe(anonymous)}")
        anonymous = True
    key = section.get("handle_key")
    if key is not None and (not isinstance(key, str) or len(key) < TOKEN_CHARS_MIN):
        problems.add("auth.handle_key", f"expected a secret string of at least "
                     f"{TOKEN_CHARS_MIN} characters")  # fmt: skip
        key = None
    elif key is not None and is_placeholder(key):
        problems.add("auth.handle_key", PLACEHOLDER_PROBLEM)
        key = None
    files = {
        name: _file_name(section[name], f"auth.{name}", problems)
        for name in ("handle_key_file", "peer_key_file")
        if name in section
    }
    return AuthConfig(
        tuple(principals),
        anonymous,
        key,
        tuple(token_files),
        admins=_admins(section, problems),
        **{name: path for name, path in files.items() if path is not None},
    )


PLACEHOLDER_PROBLEM: Final = (
    "this is an example's placeholder, which anyone can read: choose a long random secret "
    "(or leave the key out: `chubbypy cell` creates the cell's keys in its data directory)"
)


def is_placeholder(secret: str) -> bool:
    """Whether `secret` was copied from an example rather than chosen (`PLACEHOLDER_WORDS`)."""
    lowered = secret.lower()
    return any(word in lowered for word in PLACEHOLDER_WORDS)


def _principals(
    listed: object, problems: _Problems
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``auth.principals``: each a token, or ``{token_file: FILE}``; (inline, from files)."""
    principals: list[tuple[str, str]] = []
    token_files: list[tuple[str, str]] = []
    if not isinstance(listed, Mapping):
        problems.add("auth.principals", f"expected a mapping of principal: token, got "
                     f"{_describe(listed)}")  # fmt: skip
        return principals, token_files
    for name, token in listed.items():
        path = _join("auth.principals", str(name))
        if not isinstance(name, str) or not name or len(name) > PRINCIPAL_CHARS_MAX:
            problems.add(path, f"a principal is a name of 1 to {PRINCIPAL_CHARS_MAX} characters")
        elif any(c.isspace() or c == "#" for c in name) or name in (ANONYMOUS, "*"):
            problems.add(path, f"{name!r} cannot be a principal: no spaces or '#', and "
                         f"{ANONYMOUS!r} and '*' are reserved")  # fmt: skip
        elif isinstance(token, Mapping):
            section = _section(token, path, ("token_file",), ("token_file",), problems)
            if section is not None and "token_file" in section:
                file = _file_name(section["token_file"], f"{path}.token_file", problems)
                if file is not None:
                    token_files.append((name, file))
        elif not isinstance(token, str) or not TOKEN_CHARS_MIN <= len(token) <= TOKEN_CHARS_MAX:
            problems.add(
                path,
                f"the token must be a string of {TOKEN_CHARS_MIN} to {TOKEN_CHARS_MAX} "
                "characters (a long random one: it is the principal's password), or "
                "{token_file: FILE}",
            )
        elif is_placeholder(token):
            problems.add(path, PLACEHOLDER_PROBLEM)
        else:
            principals.append((name, token))
    return principals, token_files


def _file_name(value: object, path: str, problems: _Problems) -> str | None:
    text = _string(value, path, problems)
    if text is not None and not text.strip():
        problems.add(path, "is empty: expected a file name")
        return None
    return text


TLS_KEYS: Final = tuple(attribute.name for attribute in fields(TlsConfig))


def _tls(value: object, problems: _Problems) -> TlsConfig | None:
    """The ``tls:`` section: absent (or empty, every key commented out) means no TLS."""
    if value is None:
        return None
    section = _section(value, "tls", TLS_KEYS, (), problems)
    if section is None:
        return None
    files = {
        key: _file_name(section[key], f"tls.{key}", problems) for key in TLS_KEYS if key in section
    }
    return TlsConfig(**{key: file for key, file in files.items() if file is not None})


SSL_FILE_OPTIONS: Final = ("privateKey", "certKey", "extraCertChain", "caCertsDir")


def _check_endpoint_kinds(
    replicas: tuple[ReplicaConfig, ...], tls: TlsConfig | None, problems: _Problems
) -> None:
    """``ssl:`` is for client endpoints only, and needs the ``tls:`` section's certificate."""
    for position, replica in enumerate(replicas):
        for kind in ("peer", "admin"):
            if getattr(replica, kind).startswith("ssl:"):
                why = (
                    "replicas authenticate each other with the tls: section (mutual TLS) or "
                    "the peer key, over tcp: or unix:"
                    if kind == "peer"
                    else "the admin port is plain http, for loopback"
                )
                problems.add(f"replicas[{position}].{kind}", f"ssl: is for client endpoints: {why}")
        if not replica.client.startswith("ssl:"):
            continue
        if tls is None:
            problems.add(
                f"replicas[{position}].client",
                "an ssl: endpoint needs the tls: section (the CA, and each replica's "
                "certificate and key)",
            )
        elif any(f":{option}=" in replica.client for option in SSL_FILE_OPTIONS):
            problems.add(
                f"replicas[{position}].client",
                "an ssl: endpoint takes its certificate and key from the tls: section: "
                f"leave out {', '.join(SSL_FILE_OPTIONS)}",
            )


# --- auth.admins: the cell's operators (kept in this one block) -------------------------------


def _admins(section: Mapping[str, object], problems: _Problems) -> tuple[str, ...]:
    """``auth.admins``: a non-empty list of principal names (``anonymous`` allowed, for a
    development cell whose every client may administer it)."""
    listed = section.get("admins", list(ADMINS_DEFAULT))
    if not isinstance(listed, list) or not listed:
        problems.add("auth.admins", f"expected a non-empty list of principals, got "
                     f"{_describe(listed)}")  # fmt: skip
        return ADMINS_DEFAULT
    admins: list[str] = []
    for position, name in enumerate(listed):
        path = f"auth.admins[{position}]"
        if not isinstance(name, str) or not 0 < len(name) <= PRINCIPAL_CHARS_MAX:
            problems.add(path, f"a principal is a name of 1 to {PRINCIPAL_CHARS_MAX} characters")
        elif not name.isprintable() or any(c.isspace() or c == "#" for c in name) or name == "*":
            problems.add(path, f"{name!r} cannot be a principal: no spaces, '#' or control "
                         "characters, and '*' is not a principal")  # fmt: skip
        elif name in admins:
            problems.add(path, f"{name!r} is listed twice")
        else:
            admins.append(name)
    return tuple(admins) or ADMINS_DEFAULT


# --- Reading single values -------------------------------------------------------------------


def _string(value: object, path: str, problems: _Problems) -> str | None:
    if not isinstance(value, str):
        problems.add(path, f"expected a string, got {_describe(value)}")
        return None
    return value


def _integer(value: object, path: str, problems: _Problems) -> int | None:
    # bool is a subclass of int in Python; in a config file `yes` is never meant as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(path, f"expected an integer, got {_describe(value)}{_number_hint(value)}")
        return None
    return value


def _number(value: object, path: str, problems: _Problems) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(path, f"expected a number, got {_describe(value)}{_number_hint(value)}")
        return None
    if not math.isfinite(value):
        problems.add(path, f"expected a finite number, got {_describe(value)}")
        return None
    return float(value)


def _number_hint(value: object) -> str:
    """A hint for the two usual ways a number ends up a string in YAML."""
    if not isinstance(value, str):
        return ""
    if re.fullmatch(r"[+-]?[0-9.]+[eE][+-]?[0-9]+", value):
        return " (YAML 1.1 reads 1e6 as a string: write 1000000 or 1.0e+6)"
    if re.fullmatch(r"[0-9.]+ *[a-zA-Z]+", value):
        return " (give a plain number: the unit is in the key's name)"
    return ""


def _cell_name(value: object, problems: _Problems) -> str | None:
    name = _string(value, "cell", problems)
    if name is not None and not CELL_NAME.fullmatch(name):
        problems.add(
            "cell",
            f"{name!r} is not a valid cell name: expected a lowercase letter, then up to 63 "
            "lowercase letters, digits, '_' or '-' (it is a path component: /ls/<cell>/)",
        )
        return None
    return name


def _data_dir(value: object, problems: _Problems) -> Path | None:
    text = _string(value, "data_dir", problems)
    if text is None:
        return None
    if not text.strip():
        problems.add("data_dir", "is empty: expected a directory path")
        return None
    # Relative to the working directory at load time, as documented in the module docstring.
    return Path(os.path.abspath(text))


def _storage_url(value: object, problems: _Problems) -> str | None:
    if value is None:
        return None
    url = _string(value, "storage_url", problems)
    if url is None:
        return None
    if REPLICA_PLACEHOLDER not in url:
        problems.add(
            "storage_url",
            f"{url!r} has no {REPLICA_PLACEHOLDER}: every replica needs a store of its own, "
            "so the URL must contain {replica}, which is replaced by the replica id",
        )
        return None
    try:
        make_url(url.replace(REPLICA_PLACEHOLDER, "r1"))
    except ArgumentError as error:
        problems.add("storage_url", f"{url!r} is not a SQLAlchemy URL: {error}")
        return None
    return url


# --- Replicas --------------------------------------------------------------------------------


def _replicas(value: object, problems: _Problems) -> tuple[ReplicaConfig, ...]:
    if not isinstance(value, list):
        problems.add(
            "replicas",
            f"expected a list of 3 to {REPLICAS_LISTED_MAX} replicas, got {_describe(value)}",
        )
        return ()
    if not VOTERS_MIN <= len(value) <= REPLICAS_LISTED_MAX:
        # A new cell starts with 3 or 5 (serve --bootstrap checks); a running cell's file
        # may list one more during a replacement, and up to the membership's bounds.
        problems.add(
            "replicas",
            f"has {len(value)} replicas: a cell file lists 3 to {REPLICAS_LISTED_MAX} "
            "(a new cell starts with 3 or 5)",
        )
    ids: dict[str, str] = {}
    endpoints: dict[str, str] = {}
    replicas = []
    for position, item in enumerate(value):
        replica = _replica(item, f"replicas[{position}]", ids, endpoints, problems)
        if replica is not None:
            replicas.append(replica)
    return tuple(replicas)


def _replica(
    value: object,
    path: str,
    ids: dict[str, str],
    endpoints: dict[str, str],
    problems: _Problems,
) -> ReplicaConfig | None:
    """One replica entry; `ids` and `endpoints` map values already taken to where they were."""
    section = _section(value, path, REPLICA_KEYS, REPLICA_KEYS, problems)
    if section is None:
        return None
    replica_id = (
        _replica_id(section.get("id"), f"{path}.id", ids, problems) if "id" in section else None
    )
    addresses = {
        key: _endpoint(section[key], f"{path}.{key}", endpoints, problems)
        for key in ("peer", "client", "admin")
        if key in section
    }
    if replica_id is None or len(addresses) != 3 or None in addresses.values():
        return None
    return ReplicaConfig(id=ReplicaId(replica_id), **cast("dict[str, str]", addresses))


def _replica_id(value: object, path: str, ids: dict[str, str], problems: _Problems) -> str | None:
    name = _string(value, path, problems)
    if name is None:
        return None
    if not REPLICA_ID.fullmatch(name):
        problems.add(
            path,
            f"{name!r} is not a valid replica id: expected a lowercase letter, then up to 31 "
            "lowercase letters, digits, '_' or '-' (it names a directory)",
        )
        return None
    if name in ids:
        problems.add(path, f"{name!r} is already the id of {ids[name]}: ids must be unique")
        return None
    ids[name] = path.removesuffix(".id")
    return name


def _endpoint(
    value: object, path: str, endpoints: dict[str, str], problems: _Problems
) -> str | None:
    # Only a light syntactic check: Twisted parses the string when the server starts, and this
    # module does not import Twisted.
    text = _string(value, path, problems)
    if text is None:
        return None
    if not text.startswith(ENDPOINT_KINDS) or text.rstrip().endswith(":"):
        problems.add(
            path,
            f"{text!r} is not a Twisted server endpoint string: expected one starting with "
            'tcp:, ssl: or unix:, such as "tcp:7101:interface=127.0.0.1"',
        )
        return None
    if text in endpoints:
        problems.add(path, f"{text!r} is already used by {endpoints[text]}: endpoints must differ")
        return None
    endpoints[text] = path
    return text


# --- Numbers: one rule per key, then the relations between keys -------------------------------

Rule = Callable[[float], str | None]


def _positive_seconds(value: float) -> str | None:
    if value > 0:
        return None
    return f"{value:g} is not a duration: expected a number of seconds above 0"


def _at_least(minimum: int) -> Rule:
    def rule(value: float) -> str | None:
        return None if value >= minimum else f"{value:g} is too small: expected at least {minimum}"

    return rule


def _between(minimum: int, maximum: int, why: str) -> Rule:
    def rule(value: float) -> str | None:
        if minimum <= value <= maximum:
            return None
        return f"{value:g} is out of range: expected {minimum} to {maximum} ({why})"

    return rule


def _clock_drift(value: float) -> str | None:
    if 0 <= value < CLOCK_DRIFT_LIMIT:
        return None
    # Past 0.5 a clock may run three times as fast as another, and the master's safe share
    # of a lease, (1 - e) / (1 + e), falls below a third; such clocks are broken, not drifting.
    return (
        f"{value:g} is out of range: expected a fraction at least 0 and below 0.5 "
        "(0.01 means a clock may run 1% fast or slow)"
    )


def _frame_length(value: float) -> str | None:
    if 1 <= value <= FRAME_LENGTH_MAX:
        return None
    return f"{value:g} is out of range: expected 1 to {FRAME_LENGTH_MAX} (a 4-byte length prefix)"


PAXOS_RULES: Final[Mapping[str, Rule]] = {
    "tick_seconds": _positive_seconds,
    "master_lease_seconds": _positive_seconds,
    "clock_drift_max": _clock_drift,
    "heartbeat_seconds": _positive_seconds,
    "election_jitter_seconds": _positive_seconds,
    "retry_seconds": _positive_seconds,
    "batch_entries_max": _between(
        1, VALUE_COMMANDS_MAX, "the most commands a replica takes in one log entry from a peer"
    ),
    "batch_bytes_max": _at_least(1),
    "proposals_inflight_max": _at_least(1),
    "proposals_queued_max": _at_least(1),
    "catchup_entries_max": _between(
        1, MESSAGE_ENTRIES_MAX, "the most entries a replica takes in one message from a peer"
    ),
    "log_retain_entries": _at_least(0),
    "snapshot_every_entries": _at_least(1),
    "checksum_every_seconds": _positive_seconds,
    "clients_max": _at_least(1),
    "client_results_max": _at_least(1),
}
SESSIONS_RULES: Final[Mapping[str, Rule]] = {
    "lease_seconds": _positive_seconds,
    "keepalive_answer_before_seconds": _positive_seconds,
    "events_pending_max": _at_least(1),
    "lock_waiters_max": _at_least(1),
    # A client runs at most CALLS_UNACKED_MAX numbered calls ahead of its oldest unanswered
    # one: the cell must keep that many answers, or a retry may find its answer dropped.
    "answers_kept_max": _at_least(CALLS_UNACKED_MAX),
    "lock_info_listed_max": _between(
        1, LOCK_INFO_LISTED_MAX, "the most holders or waiters one lock's answer may carry"
    ),
}
LIMITS_RULES: Final[Mapping[str, Rule]] = {
    "file_bytes_max": _at_least(1),
    "frame_bytes_max": _frame_length,
    "peer_message_bytes_max": _at_least(1 << 20),
    "registrations_per_connection_max": _at_least(1),
    "registrations_per_principal_max": _at_least(1),
    "sessions_per_connection_max": _at_least(1),
    "sessions_per_principal_max": _at_least(1),
    "client_connections_max": _at_least(1),
    "hello_timeout_seconds": _positive_seconds,
    # A Hello or handshake message of the longest names must fit.
    "hello_frame_bytes_max": _between(
        GREETING_BYTES_MAX, FRAME_LENGTH_MAX, "the largest Hello or peer handshake message"
    ),
    "peer_handshakes_max": _at_least(1),
    "peer_handshakes_per_address_max": _at_least(1),
    "admin_connections_max": _at_least(1),
    "admin_idle_timeout_seconds": _positive_seconds,
    "admin_connections_per_address_max": _at_least(1),
    "admin_request_head_seconds": _positive_seconds,
    "admin_request_head_bytes_max": _at_least(REQUEST_HEAD_BYTES_MIN),
    "http_request_bytes_max": _at_least(0),
    "frame_timeout_seconds": _positive_seconds,
    "idle_timeout_seconds": _positive_seconds,
    # The client library runs up to CALLS_UNACKED_MAX numbered calls ahead, besides its
    # reads, acquires and KeepAlive: its own calls must never stop the replica reading it.
    "requests_pending_per_connection_max": _at_least(2 * CALLS_UNACKED_MAX),
    "reply_bytes_buffered_max": _at_least(1),
    "reply_bytes_buffered_total_max": _at_least(1),
    "client_requests_per_turn": _at_least(1),
    "client_bytes_per_turn": _at_least(1),
    # The smallest requests hold a few arrays; a MultiOp holds two or three an operation.
    "request_arrays_max": _at_least(64),
    "client_reads_per_turn": _at_least(1),
    "auth_failures_per_connection_max": _at_least(1),
    "auth_failures_per_address_max": _at_least(1),
    "auth_failures_window_seconds": _positive_seconds,
    "calls_waiting_per_session_max": _at_least(1),
    "handles_per_session_max": _at_least(1),
    "cached_names_per_session_max": _at_least(0),
    "log_lines_per_minute": _at_least(1),
    "nodes_per_principal_max": _at_least(1),
    "bytes_per_principal_max": _at_least(1),
    "snapshot_chunk_bytes": _between(
        SNAPSHOT_CHUNK_BYTES_MIN, SNAPSHOT_CHUNK_BYTES_MAX, "the most one answer may carry"
    ),
    "snapshot_held_seconds": _positive_seconds,
}


def _numbers(
    value: object,
    name: str,
    cls: type[PaxosConfig]
    | type[LimitsConfig]
    | type[SessionsConfig]
    | type[WebConfig]
    | type[SupervisorConfig],
    rules: Mapping[str, Rule],
    problems: _Problems,
    non_numeric: tuple[str, ...] = (),
) -> dict[str, float]:
    """The valid values of section `name`, missing keys taking the class's defaults.
    `non_numeric` are the class's other keys, which the caller reads (and which `value`
    must not hold).

    A key whose value is wrong is left out, so relations that involve it are not checked:
    one mistake is reported once.
    """
    attributes = [a for a in fields(cls) if a.name not in non_numeric]
    assert sorted(rules) == sorted(a.name for a in attributes), name
    # An empty section (every key commented out) reads as null: it means "all defaults".
    section = _section({} if value is None else value, name, tuple(rules), (), problems)
    if section is None:
        return {}
    values: dict[str, float] = {}
    for attribute in attributes:
        path = f"{name}.{attribute.name}"
        raw = section.get(attribute.name, attribute.default)
        read = _integer if isinstance(attribute.default, int) else _number
        number = read(raw, path, problems)
        if number is None:
            continue
        message = rules[attribute.name](number)
        if message is None:
            values[attribute.name] = number
        else:
            problems.add(path, message)
    return values


def _seconds(value: float) -> str:
    return f"{round(value, 9):g} s"


def _master_lease_ticks(lease_ticks: int, clock_drift_max: float) -> int:
    return master_lease_ticks_for(lease_ticks, drift_fraction(clock_drift_max))


def _check_paxos_relations(paxos: Mapping[str, float], problems: _Problems) -> None:
    """The relations between paxos keys that `Timing` and `Limits` assert, as sentences."""
    _check_lease(paxos, problems)
    if "tick_seconds" in paxos and "election_jitter_seconds" in paxos:
        tick, jitter = paxos["tick_seconds"], paxos["election_jitter_seconds"]
        if jitter < tick * (1 - 1e-9):
            problems.add(
                "paxos.election_jitter_seconds",
                f"{jitter:g} is shorter than one tick ({_seconds(tick)}): a jitter below a "
                "tick cannot separate the replicas' campaigns",
            )
    _check_at_least(
        paxos,
        "proposals_queued_max",
        "batch_entries_max",
        "the queue must hold at least one full batch",
        problems,
    )
    _check_page_commands(paxos, problems)
    _check_at_least(
        paxos,
        "catchup_entries_max",
        "proposals_inflight_max",
        "a new master re-proposes every in-flight instance its promises report, and they "
        "must fit in one promise",
        problems,
    )


def _check_page_commands(paxos: Mapping[str, float], problems: _Problems) -> None:
    """A page of catch-up (or a promise) full of full batches must be one a peer takes."""
    if "catchup_entries_max" not in paxos or "batch_entries_max" not in paxos:
        return
    entries, batch = paxos["catchup_entries_max"], paxos["batch_entries_max"]
    if entries * batch > MESSAGE_COMMANDS_MAX:
        problems.add(
            "paxos.catchup_entries_max",
            f"{entries:g} entries of up to paxos.batch_entries_max ({batch:g}) commands make "
            f"pages of {entries * batch:g} commands: a replica takes at most "
            f"{MESSAGE_COMMANDS_MAX} in one message from a peer",
        )


def _check_lease(paxos: Mapping[str, float], problems: _Problems) -> None:
    """The lease must be long enough for the drift margin and for two renewals."""
    if not {"tick_seconds", "master_lease_seconds", "clock_drift_max"} <= paxos.keys():
        return
    tick, lease = paxos["tick_seconds"], paxos["master_lease_seconds"]
    lease_ticks = ticks_within(lease, tick)
    if lease_ticks < LEASE_TICKS_MIN:
        problems.add(
            "paxos.master_lease_seconds",
            f"{lease:g} is too short: it must be at least {LEASE_TICKS_MIN} ticks "
            f"({_seconds(LEASE_TICKS_MIN * tick)} with tick_seconds {tick:g})",
        )
        return
    drift = paxos["clock_drift_max"]
    master_ticks = _master_lease_ticks(lease_ticks, drift)
    if master_ticks < MASTER_LEASE_TICKS_MIN:
        needed = lease_ticks
        while _master_lease_ticks(needed, drift) < MASTER_LEASE_TICKS_MIN:
            needed += 1
        problems.add(
            "paxos.master_lease_seconds",
            f"{lease:g} is too short for clock_drift_max {drift:g}: the master may trust only "
            f"{master_ticks} tick of it and needs {MASTER_LEASE_TICKS_MIN} "
            f"(at least {_seconds(needed * tick)} with these settings)",
        )
        return
    if "heartbeat_seconds" in paxos:
        heartbeat = paxos["heartbeat_seconds"]
        # Renewing at least twice per lease means one lost renewal does not cost the lease.
        if ticks_covering(heartbeat, tick) * 2 > master_ticks:
            problems.add(
                "paxos.heartbeat_seconds",
                f"{heartbeat:g} is too long: the master must renew at least twice per lease "
                f"(at most {_seconds(master_ticks // 2 * tick)} with these settings)",
            )


def _check_session_relations(
    sessions: Mapping[str, float], paxos: Mapping[str, float], problems: _Problems
) -> None:
    """A KeepAlive must be answered before the lease ends, at least a tick before."""
    keys = {"lease_seconds", "keepalive_answer_before_seconds"}
    if not keys <= sessions.keys() or "tick_seconds" not in paxos:
        return
    lease, before = sessions["lease_seconds"], sessions["keepalive_answer_before_seconds"]
    tick = paxos["tick_seconds"]
    if before >= lease:
        problems.add(
            "sessions.keepalive_answer_before_seconds",
            f"{before:g} is not shorter than sessions.lease_seconds ({lease:g}): the master "
            "must hold a KeepAlive for a while before answering it",
        )
    elif lease < 4 * tick:
        problems.add(
            "sessions.lease_seconds", f"{lease:g} is too short: at least 4 ticks ({4 * tick:g} s)"
        )


def _check_at_least(
    paxos: Mapping[str, float], key: str, other: str, why: str, problems: _Problems
) -> None:
    if key in paxos and other in paxos and paxos[key] < paxos[other]:
        problems.add(
            f"paxos.{key}",
            f"{paxos[key]:g} is smaller than paxos.{other} ({paxos[other]:g}): {why}",
        )


def _check_size_relations(
    paxos: Mapping[str, float], limits: Mapping[str, float], problems: _Problems
) -> None:
    """A file at the size limit must fit in one batch and in one frame."""
    if "file_bytes_max" not in limits:
        return
    file_bytes = limits["file_bytes_max"]
    if (
        "batch_bytes_max" in paxos
        and file_bytes + COMMAND_OVERHEAD_BYTES > paxos["batch_bytes_max"]
    ):
        problems.add(
            "limits.file_bytes_max",
            f"{file_bytes:g} does not fit in one Paxos batch: a write carries the whole file "
            f"in one command, so paxos.batch_bytes_max ({paxos['batch_bytes_max']:g}) must "
            f"exceed it by at least the {COMMAND_OVERHEAD_BYTES}-byte command header",
        )
    if "frame_bytes_max" in limits and file_bytes >= limits["frame_bytes_max"]:
        problems.add(
            "limits.file_bytes_max",
            f"{file_bytes:g} does not fit in one frame: a write request carries the whole file, "
            f"so limits.frame_bytes_max ({limits['frame_bytes_max']:g}) must be larger",
        )


def _check_client_limits(
    limits: Mapping[str, float], paxos: Mapping[str, float], problems: _Problems
) -> None:
    """A connection's limit above its principal's could never be reached: a mistake. A
    principal's registrations must stay below the client table's size: each registration
    past the table's size evicts the least recently used client, so a principal allowed as
    many as the table holds could evict every other principal's clients. And a session's
    calls left waiting must not fill its connection's pipeline."""
    registrations = limits.get("registrations_per_principal_max")
    clients = paxos.get("clients_max")
    if registrations is not None and clients is not None and registrations >= clients:
        problems.add(
            "limits.registrations_per_principal_max",
            f"{registrations:g} is not below paxos.clients_max ({clients:g}): one principal's "
            "registrations could evict every other principal's clients",
        )
    pending, waiting = "requests_pending_per_connection_max", "calls_waiting_per_session_max"
    if pending in limits and waiting in limits and limits[pending] <= limits[waiting] + 1:
        problems.add(
            f"limits.{pending}",
            f"{limits[pending]:g} is not above limits.{waiting} ({limits[waiting]:g}) + 1: "
            "a session's blocking acquires and its KeepAlive wait in progress, and a "
            "connection they fill is no longer read, so its next KeepAlive could never arrive",
        )
    _check_not_above(limits, "hello_frame_bytes_max", "frame_bytes_max", problems)
    _check_not_above(limits, "reply_bytes_buffered_max", "reply_bytes_buffered_total_max", problems)
    _check_not_above(limits, "snapshot_chunk_bytes", "reply_bytes_buffered_max", problems)
    for kind in ("registrations", "sessions"):
        connection, principal = f"{kind}_per_connection_max", f"{kind}_per_principal_max"
        if connection in limits and principal in limits and limits[connection] > limits[principal]:
            problems.add(
                f"limits.{connection}",
                f"{limits[connection]:g} is above limits.{principal} ({limits[principal]:g}): "
                "one connection can never hold more than its principal may",
            )


def _check_not_above(
    limits: Mapping[str, float], part: str, whole: str, problems: _Problems
) -> None:
    """A limit on a part above the limit on the whole could never be reached: a mistake."""
    if part in limits and whole in limits and limits[part] > limits[whole]:
        problems.add(
            f"limits.{part}", f"{limits[part]:g} is above limits.{whole} ({limits[whole]:g})"
        )


# --- The web page ----------------------------------------------------------------------------

WEB_KINDS: Final = ("tcp:", "ssl:")
WEB_NON_NUMERIC: Final = ("listen", "hosts")
HOST_NAME = re.compile(
    r"[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*\.?|\[[0-9a-f:.]+\]"
)
"""A DNS name (lowercase letters, digits, hyphens; dot-separated labels) or a bracketed
IPv6 address, as a ``Host`` header carries it before the port."""
JSON_DEPTH_LIMIT: Final = 64
"""Far below where Python's JSON parser would hit its recursion limit."""
BASE64_SLACK_BYTES: Final = 4096
"""Room in a request body for the JSON around a file's base64 contents."""

WEB_RULES: Final[Mapping[str, Rule]] = {
    "logins_max": _at_least(1),
    "login_idle_seconds": _positive_seconds,
    "login_attempts_per_address_max": _at_least(1),
    "login_attempts_window_seconds": _positive_seconds,
    "login_failures_per_principal_max": _at_least(1),
    "logins_per_principal_max": _at_least(1),
    "logins_per_address_max": _at_least(1),
    "connections_max": _at_least(4),
    "connections_per_address_max": _at_least(1),
    "request_head_seconds": _positive_seconds,
    "request_head_bytes_max": _at_least(REQUEST_HEAD_BYTES_MIN),
    "request_body_bytes_max": _at_least(1024),
    "json_depth_max": _between(1, JSON_DEPTH_LIMIT, "nesting beyond it is a flood, not a form"),
    "children_per_page": _between(
        1, DEFAULT_LIMITS.readdir_entries_max, "the most children one ReadDir answers"
    ),
    "contents_shown_bytes_max": _at_least(16),
    "sessions_per_page": _at_least(1),
    "event_streams_per_login_max": _at_least(1),
    "event_streams_max": _at_least(1),
    "watched_paths_per_stream_max": _at_least(1),
    "status_poll_seconds": _positive_seconds,
    "chart_points": _between(2, 3600, "each point is kept per replica and sent to each page"),
}


def _web(value: object, limits: Mapping[str, float], problems: _Problems) -> WebConfig:
    """The ``web:`` section: where the page listens, the names it answers to, its bounds."""
    section = _section({} if value is None else value, "web", WEB_KEYS, (), problems)
    if section is None:
        return WebConfig()
    numbers = {k: v for k, v in section.items() if k in WEB_RULES}  # others: noted above
    if "request_body_bytes_max" not in numbers and "file_bytes_max" in limits:
        # Not given: large enough for the largest file, whatever limits.file_bytes_max says.
        needed = _body_bytes_needed(limits["file_bytes_max"])
        numbers["request_body_bytes_max"] = max(WEB_BODY_BYTES_DEFAULT, needed)
    numbers.update(_parts_not_given(numbers, WEB_PARTS, WebConfig()))
    failures, cell_failures = "login_failures_per_principal_max", "auth_failures_per_address_max"
    if failures not in numbers and isinstance(limits.get(cell_failures), int):
        # Not given: below the cell's budget, whatever limits says.
        numbers[failures] = max(1, min(WebConfig().login_failures_per_principal_max,
                                       int(limits[cell_failures]) - 1))  # fmt: skip
    values = _numbers(numbers, "web", WebConfig, WEB_RULES, problems, WEB_NON_NUMERIC)
    listen = _web_listen(section.get("listen", WEB_LISTEN_DEFAULT), problems)
    hosts = _web_hosts(section.get("hosts", []), problems)
    _check_web_relations(values, limits, problems)
    if len(values) != len(WEB_RULES):
        return WebConfig()  # a problem was noted: the caller raises
    return WebConfig(listen=listen, hosts=hosts, **cast("dict[str, Any]", values))


def _web_listen(value: object, problems: _Problems) -> str:
    text = _string(value, "web.listen", problems)
    if text is None:
        return WEB_LISTEN_DEFAULT
    if not text.startswith(WEB_KINDS) or text.rstrip().endswith(":"):
        problems.add(
            "web.listen",
            f"{text!r} is not a tcp: or ssl: Twisted server endpoint string, such as "
            f'"{WEB_LISTEN_DEFAULT}"',
        )
    return text


def _web_hosts(value: object, problems: _Problems) -> tuple[str, ...]:
    if not isinstance(value, list):
        problems.add("web.hosts", f"expected a list of host names, got {_describe(value)}")
        return ()
    hosts = []
    for position, name in enumerate(value):
        if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
            problems.add(
                f"web.hosts[{position}]",
                f"{_describe(name)} is not a host name: expected lowercase letters, digits, "
                "'-' and '.' (no port, no scheme), or a bracketed IPv6 address",
            )
        else:
            hosts.append(name.rstrip("."))
    return tuple(hosts)


def _check_web_relations(
    web: Mapping[str, float], limits: Mapping[str, float], problems: _Problems
) -> None:
    """A whole file must fit in one request (as base64, the API's encoding for any bytes),
    one login's (or address's, or principal's) share cannot exceed everyone's, and failed
    web logins must never spend the cell's whole budget of failures for the web server's
    host."""
    _check_parts(web, "web", WEB_PARTS, problems)
    failures = web.get("login_failures_per_principal_max")
    cell_failures = limits.get("auth_failures_per_address_max")
    if failures is not None and cell_failures is not None and failures >= cell_failures:
        problems.add(
            "web.login_failures_per_principal_max",
            f"{failures:g} is not below limits.auth_failures_per_address_max "
            f"({cell_failures:g}): every web login reaches the cell from the web server's host, "
            "so failed web logins would use up that host's budget for the principal and lock "
            "it out of the cell there, the CLI included; lower it (or raise the cell's)",
        )
    body, file_bytes = web.get("request_body_bytes_max"), limits.get("file_bytes_max")
    if body is not None and file_bytes is not None:
        needed = _body_bytes_needed(file_bytes)
        if body < needed:
            problems.add(
                "web.request_body_bytes_max",
                f"{body:g} cannot carry a file of limits.file_bytes_max ({file_bytes:g}) "
                f"bytes as base64 in JSON: at least {needed}",
            )


def _body_bytes_needed(file_bytes: float) -> int:
    """A request body that carries a file of `file_bytes` as base64 in a JSON object."""
    return 4 * math.ceil(file_bytes / 3) + BASE64_SLACK_BYTES


WEB_KEYS: Final = (*WEB_NON_NUMERIC, *WEB_RULES)

LIMITS_PARTS: Final = (("admin_connections_per_address_max", "admin_connections_max"),)
"""(part, whole): keys of ``limits:`` that bound one source's share of a whole; a part is at
most its whole, and when not given it is its default or the whole, the smaller."""
WEB_PARTS: Final = (
    ("connections_per_address_max", "connections_max"),
    ("logins_per_principal_max", "logins_max"),
    ("logins_per_address_max", "logins_max"),
    ("event_streams_per_login_max", "event_streams_max"),
)
"""The same, for ``web:``."""


def _parts_not_given(
    section: Mapping[str, object],
    parts: tuple[tuple[str, str], ...],
    defaults: LimitsConfig | WebConfig,
) -> dict[str, int]:
    """The value of each part `section` does not give: its default, or its whole (when
    given as a valid whole number) if that is smaller, so that lowering a whole alone is
    valid."""
    filled = {}
    for part, whole in parts:
        given = section.get(whole)
        valid = isinstance(given, int) and not isinstance(given, bool) and given >= 1
        if part not in section and valid:  # else the whole's own problem is reported
            filled[part] = min(getattr(defaults, part), cast("int", given))
    return filled


def _check_parts(
    values: Mapping[str, float],
    name: str,
    parts: tuple[tuple[str, str], ...],
    problems: _Problems,
) -> None:
    """Each part of `parts` is at most its whole."""
    for part, whole in parts:
        low, high = values.get(part), values.get(whole)
        if low is not None and high is not None and low > high:
            problems.add(
                f"{name}.{part}",
                f"{low:g} is above {name}.{whole} ({high:g}): one source's share can never be "
                "more than everyone's together",
            )


# --- The supervisor of `chubbypy cell` -------------------------------------------------------

SUPERVISOR_RULES: Final[Mapping[str, Rule]] = {
    "restart_delay_seconds": _positive_seconds,
    "restart_delay_max_seconds": _positive_seconds,
    "quick_exit_seconds": _positive_seconds,
    "quick_exits_max": _at_least(1),
}


def _check_supervisor_relations(supervisor: Mapping[str, float], problems: _Problems) -> None:
    first = supervisor.get("restart_delay_seconds")
    longest = supervisor.get("restart_delay_max_seconds")
    if first is not None and longest is not None and longest < first:
        problems.add(
            "supervisor.restart_delay_max_seconds",
            f"{_seconds(longest)} is below supervisor.restart_delay_seconds "
            f"({_seconds(first)}): the back-off only grows",
        )


# --- YAML ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # '<<' merges defaults in; later keys override them on purpose.
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool):
            continue  # construct_mapping refuses an unhashable key itself.
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in this mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(source: Path, error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        problem = error.problem or "invalid YAML"
        context = ""
        if error.context:
            started = error.context_mark
            at = f" at line {started.line + 1}, column {started.column + 1}" if started else ""
            context = f" ({error.context}{at})"
        return f"{source}: line {mark.line + 1}, column {mark.column + 1}: {problem}{context}"
    return f"{source}: not valid YAML: {error}"
