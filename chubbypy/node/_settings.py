"""Everything a replica node depends on besides its inputs: built once, by the shell from the
cell file (`chubbypy.config.CellConfig.node_settings`) or by the simulator from its own.

Pure values. Durations are already in ticks (see `chubbypy.paxos.Timing` and
`chubbypy.master.MasterTiming`, whose `from_seconds` is the one place each rule lives).
"""

from __future__ import annotations

import enum
import hashlib
import hmac

from attrs import field, frozen

from chubbypy.master import MasterTiming
from chubbypy.namespace import NamespaceLimits
from chubbypy.node._auth_guard import AuthLimits
from chubbypy.paxos import Bug, Limits, Timing, genesis_membership
from chubbypy.protocol import Membership, ReplicaId
from chubbypy.protocol.client import ReplicaAddress

ANONYMOUS = "anonymous"
"""The principal of a connection that presented no token (when `Auth.anonymous`)."""


KEEPALIVE_LATE = "node.keepalive-answer-late"
"""Chance site: a KeepAlive answer is held back a few ticks (a slow master, a busy link)."""
ANSWER_LOST = "node.answer-lost-after-apply"
"""Chance site: the answer to a write or a session call that changed state is lost after
the change was applied: the client hears nothing and asks again."""
DISCONNECT = "node.disconnect-waiting-call"
"""Chance site: a client connection is dropped while its blocking acquire waits."""


class NodeBug(enum.Enum):
    """Deliberate defects of the node (not of the Paxos core), switched on only by tests
    that show the simulator's checkers catch them (Paxos Made Live §6.3)."""

    ANSWER_BEFORE_APPLIED = "answer-before-applied"
    """Answer a client's write as soon as it is proposed, claiming it done at the next
    index, before it is chosen, let alone applied."""
    ROUTE_TO_WRONG_REQUEST = "route-to-wrong-request"
    """Assume outcomes come back in the order their commands were proposed here, and answer
    the oldest waiting request with each (another client's outcome, often)."""
    OPERATOR_ENDS_AT_ONCE = "operator-ends-at-once"
    """End a session an operator ends at once, through the log, as issue 14 first did,
    instead of when its lease runs out: its locks pass on while its client may still
    count on its lease."""


@frozen
class Auth:
    """Who a connection may act as: principals and their shared tokens."""

    principals: tuple[tuple[str, str], ...] = ()
    """(principal, token) pairs."""
    anonymous: bool = True
    """Whether a connection that presented no token acts as `ANONYMOUS`."""

    def knows(self, principal: str) -> bool:
        """Whether `principal` is one of the cell's (has a token)."""
        return any(name == principal for name, _ in self.principals)

    def admits(self, principal: str, token: str) -> bool:
        """Whether `token` is `principal`'s (compared in constant time)."""
        expected = dict(self.principals).get(principal)
        return expected is not None and hmac.compare_digest(expected.encode(), token.encode())


@frozen
class ClientLimits:
    """What one client connection, and one principal, may hold live at this replica: the
    bounds that keep a flood of registrations or sessions from filling the client table
    or the master's memory (issue 12). Past one, the request is refused RESOURCE_EXHAUSTED
    before anything is proposed. The names are the cell file's keys under ``limits:``.

    What "live" means (`chubbypy.node._limits`): a registration counts against the
    connection it was made on, and that connection's principal, from when it is proposed
    until its client is evicted or the connection closes; a session counts against the
    connection it was created on until it ends or that connection closes, and against its
    principal until it ends. The counts are this master's memory: a new master starts
    from zero (it has no connections yet, and does not know who created the sessions it
    inherits, which are few and end with their leases).
    """

    registrations_per_connection_max: int = 64
    """A client registers once, and again only after an eviction: 64 is a flood."""
    registrations_per_principal_max: int = 20_000
    """Room for 10,000 clients of one principal, each on its own connection, twice over."""
    sessions_per_connection_max: int = 1_000
    """A `Cell` holds one session at a time; 1,000 leaves room for programs of many."""
    sessions_per_principal_max: int = 20_000
    """Room for 10,000 clients of one principal with a session each, twice over."""

    def key(self, name: str) -> str:
        """The cell file's key of the limit `name` (for error messages)."""
        assert hasattr(self, name), name
        return f"limits.{name}"


@frozen
class NodeSettings:
    """One replica's settings; every replica of a cell has the same but `replica_id`."""

    replica_id: ReplicaId
    cell: str
    addresses: tuple[ReplicaAddress, ...]
    """Every member, with the address clients reach it at, in the cell's order."""
    timing: Timing
    limits: Limits
    master_timing: MasterTiming
    tick_microseconds: int
    namespace_limits: NamespaceLimits
    handle_key: bytes
    """The key of handles' check digits and sessions' credentials (`handle_key_for`)."""
    auth: Auth = Auth()
    snapshot_every_entries: int = 10_000
    checksum_every_ticks: int = 2_400
    clients_max: int = 10_000
    client_results_max: int = 64
    client_limits: ClientLimits = ClientLimits()
    auth_limits: AuthLimits = field(factory=AuthLimits)
    """Failed authentications per connection and per source address (issue 13)."""
    log_lines_per_minute: int = 10
    """Log lines of one kind that a client or a peer can make us write, per minute
    (`chubbypy.node._log_budget`)."""
    snapshot_chunk_bytes: int = 256 * 1024
    """The most bytes of a backup's snapshot one answer carries
    (``limits.snapshot_chunk_bytes``)."""
    snapshot_held_ticks: int = 3_000
    """How long the master keeps a backup's snapshot after its last piece was asked for
    (``limits.snapshot_held_seconds``)."""
    admins: tuple[str, ...] = ()
    """The cell's operators (``auth.admins``): a master whose cell has no ACL directory
    makes one only they may change, with them in ``acl/admin`` (none: it makes none)."""
    peer_addresses: tuple[str, ...] = ()
    """For each of `addresses`, the endpoint its peers dial (the cell file's ``peer``);
    empty where replicas are named by id alone (the simulator)."""
    bugs: frozenset[Bug] = frozenset()
    node_bugs: frozenset[NodeBug] = frozenset()

    @property
    def seed_membership(self) -> Membership:
        """The membership the cell file seeds a new cell with: every replica a voter."""
        ids = tuple(address.replica_id for address in self.addresses)
        peers = self.peer_addresses or ids
        return genesis_membership(
            (address.replica_id, peer, address.client_endpoint)
            for address, peer in zip(self.addresses, peers, strict=True)
        )

    @property
    def ticks_per_minute(self) -> int:
        return max(1, 60_000_000 // self.tick_microseconds)

    def ms(self, ticks: int) -> int:
        """`ticks` as whole milliseconds, rounded down: a client never counts on more."""
        return ticks * self.tick_microseconds // 1000


def handle_key_for(cell: str, secret: str | None) -> bytes:
    """The key of handles' check digits, the same on every replica of the cell: derived from
    the configured secret ``auth.handle_key``. Without one, from the cell's name, which stops
    accidental misuse (a handle of another cell, or altered bytes) but not a forger who
    knows the name; the replica warns at start."""
    material = f"chubbypy handles of cell {cell}" + ("" if secret is None else secret)
    return hashlib.blake2b(material.encode(), digest_size=32).digest()
