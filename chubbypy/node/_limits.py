"""Live registrations and sessions per connection and per principal, and the limits on them
(`ClientLimits`). Pure: books kept by the master's node, consulted before anything is
proposed (issue 12: a flood of 12,000 registrations in 3 s evicted every honest client
and cost the master its lease).

What "live" means, and why:

* **A registration** counts against the connection that made it, and against that
  connection's principal at the time, from when it is proposed until its client is
  evicted (the applier names the evicted client) or the connection closes. A client
  registers once and keeps its id across connections, so a connection that registers
  again and again is a flood; once it closes, the clients it registered are the client
  table's business alone (least recently used first out). Clients never unregister, so
  counting "registered and not evicted" against a principal for good would lock an
  honest principal out after any flood: tying the count to open connections does not.
* **A session** counts against the connection that created it until it ends (its
  `EndSession` applied: closed, or expired) or that connection closes, and against its
  principal until it ends, whatever becomes of the connection: sessions outlive their
  connections (a client follows a new master), and each costs the master memory and
  KeepAlives until its lease runs out.
* **Where**: in this master's memory, not replicated. A new master starts from zero: it
  has no connections yet (so no registrations count), and does not know who created the
  sessions it inherits. Those are bounded anyway: each ends within a lease unless its
  client keeps it alive, so a fail-over lets a principal hold at most twice its limit for
  a lease. Replicating the owner would put a principal's name in every session record
  and client entry, in the log and in every snapshot, to buy exactness only across
  fail-overs.

What the limits do not stop: a principal that closes connections and opens new ones may
register again each time. Each such registration costs the cell a command in the log
(O(1) to apply) and evicts the least recently used client, whose library registers
again by itself; the per-principal limit bounds how much of the table one principal
holds at once through its open connections.

Both books answer a request that would pass a limit with the reason, naming the limit and
its key.
"""

from __future__ import annotations

from typing import Literal

from attrs import define, field

from chubbypy.master import CallResult, CallToken, SessionStarted
from chubbypy.node._outputs import ConnectionId
from chubbypy.node._settings import ClientLimits
from chubbypy.protocol import NO_CLIENT, ClientId, SessionId

__all__ = ["RegistrationBook", "SessionBook"]


class _Tally:
    """Live items per principal."""

    def __init__(self) -> None:
        self.live: dict[str, int] = {}

    def add(self, principal: str, amount: int) -> None:
        left = self.live.get(principal, 0) + amount
        assert left >= 0, (principal, left)
        if left:
            self.live[principal] = left
        else:
            del self.live[principal]


@define
class _Registration:
    principal: str
    client_id: ClientId = NO_CLIENT
    """`NO_CLIENT` while the registration is in flight."""


class RegistrationBook:
    """Live registrations per connection and per principal; see the module docstring."""

    def __init__(self, limits: ClientLimits) -> None:
        self._limits = limits
        self._by_connection: dict[ConnectionId, dict[int, _Registration]] = {}
        """Each connection's registrations, by nonce."""
        self._nonces: dict[int, ConnectionId] = {}
        """Which connection counts each registration (a nonce is counted once)."""
        self._owners: dict[ClientId, int] = {}
        """The nonce of each counted registration that got its client."""
        self._tally = _Tally()

    def refusal(self, connection: ConnectionId, principal: str, nonce: int) -> str | None:
        """Why registering `nonce` on `connection` would pass a limit; None if it would not
        (a registration already counted, retried, never does)."""
        if nonce in self._nonces:
            return None
        held = len(self._by_connection.get(connection, ()))
        live = self._tally.live.get(principal, 0)
        return _refusal(self._limits, "registrations", held, live, principal)

    def proposed(self, connection: ConnectionId, principal: str, nonce: int) -> None:
        """A registration of `nonce` was proposed for `connection`: it counts from now."""
        if nonce in self._nonces:
            return
        self._nonces[nonce] = connection
        self._by_connection.setdefault(connection, {})[nonce] = _Registration(principal)
        self._tally.add(principal, 1)

    def registered(self, nonce: int, client_id: ClientId, evicted: ClientId) -> None:
        """The log registered `nonce` as `client_id`, evicting `evicted` (or NO_CLIENT)."""
        connection = self._nonces.get(nonce)
        if connection is not None:
            self._by_connection[connection][nonce].client_id = client_id
            self._owners[client_id] = nonce
        if evicted in self._owners:
            self._forget(self._owners[evicted])

    def connection_closed(self, connection: ConnectionId) -> None:
        """Its registrations no longer count (their clients live on in the table)."""
        for nonce in list(self._by_connection.get(connection, ())):
            self._forget(nonce)
        self._by_connection.pop(connection, None)

    def stepped_down(self) -> None:
        """Mastership ended: registrations in flight are no longer this replica's to count
        (they may still be chosen; their clients retry at the next master)."""
        pending = [
            nonce
            for held in self._by_connection.values()
            for nonce, registration in held.items()
            if registration.client_id == NO_CLIENT
        ]
        for nonce in pending:
            self._forget(nonce)

    def live(self, principal: str) -> int:
        """`principal`'s live registrations (for tests and metrics)."""
        return self._tally.live.get(principal, 0)

    def _forget(self, nonce: int) -> None:
        connection = self._nonces.pop(nonce)
        registration = self._by_connection[connection].pop(nonce)
        self._owners.pop(registration.client_id, None)
        self._tally.add(registration.principal, -1)


@define
class _Session:
    principal: str
    connection: ConnectionId | None
    """The connection that created it, while that connection is open."""


@define
class _Created:
    """What counts against one open connection: its creations in flight, its live sessions."""

    calls: set[CallToken] = field(factory=set)
    sessions: set[SessionId] = field(factory=set)

    def __len__(self) -> int:
        return len(self.calls) + len(self.sessions)


class SessionBook:
    """Live sessions per connection and per principal, at this master; see the module
    docstring. A `CreateSession` counts from when it is called (`creating`)."""

    def __init__(self, limits: ClientLimits) -> None:
        self._limits = limits
        self._creating: dict[CallToken, _Session] = {}
        self._sessions: dict[SessionId, _Session] = {}
        self._by_connection: dict[ConnectionId, _Created] = {}
        self._tally = _Tally()

    def refusal(self, connection: ConnectionId, principal: str) -> str | None:
        """Why one more session created on `connection` would pass a limit, or None."""
        held = len(self._by_connection.get(connection, ()))
        live = self._tally.live.get(principal, 0)
        return _refusal(self._limits, "sessions", held, live, principal)

    def creating(self, token: CallToken, connection: ConnectionId, principal: str) -> None:
        """A `CreateSession` call `token` is under way: it counts from now."""
        self._creating[token] = _Session(principal, connection)
        self._by_connection.setdefault(connection, _Created()).calls.add(token)
        self._tally.add(principal, 1)

    def answered(self, token: CallToken, result: CallResult) -> None:
        """Call `token` was answered: a session created goes on counting, as that session;
        a creation that failed (or that named a session already counted) stops counting."""
        session = self._creating.pop(token, None)
        if session is None:
            return  # not a CreateSession
        created = self._created_on(session)
        if created is not None:
            created.calls.discard(token)
        if isinstance(result, SessionStarted) and result.session_id not in self._sessions:
            self._sessions[result.session_id] = session
            if created is not None:
                created.sessions.add(result.session_id)
            return
        self._tally.add(session.principal, -1)

    def ended(self, session_id: SessionId) -> None:
        """The log ended session `session_id` (closed or expired)."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        created = self._created_on(session)
        if created is not None:
            created.sessions.discard(session_id)
        self._tally.add(session.principal, -1)

    def connection_closed(self, connection: ConnectionId) -> None:
        """What it created no longer counts against it (still against its principal)."""
        created = self._by_connection.pop(connection, _Created())
        for token in created.calls:
            self._creating[token].connection = None
        for session_id in created.sessions:
            self._sessions[session_id].connection = None

    def live(self, principal: str) -> int:
        """`principal`'s live sessions, created through this master (for tests)."""
        return self._tally.live.get(principal, 0)

    def _created_on(self, session: _Session) -> _Created | None:
        if session.connection is None:
            return None
        return self._by_connection[session.connection]


_Kind = Literal["registrations", "sessions"]
"""What is counted: the prefix of its two limits' names in `ClientLimits`."""


def _refusal(limits: ClientLimits, kind: _Kind, held: int, live: int, principal: str) -> str | None:
    """Why one more of `kind` would pass a limit, with `held` live on the connection and
    `live` of the principal: naming the limit and its key; None if it would pass none."""
    for holder, name, count in (
        ("this connection", f"{kind}_per_connection_max", held),
        (f"principal {principal!r}", f"{kind}_per_principal_max", live),
    ):
        limit = getattr(limits, name)
        if count >= limit:
            what = "client registrations" if kind == "registrations" else "sessions"
            return (
                f"{holder} holds {count} live {what}, the most {limits.key(name)} ({limit}) allows"
            )
    return None
