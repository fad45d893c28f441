"""One replica of a cell, sans-IO: the Paxos core, the replicated database and the master's
services, driven by input values and answering with output values.

Core side (STYLE §1), pure like `chubbypy.paxos`: no clock, socket, disk, thread or
randomness of its own. The Twisted server (`chubbypy.server`) and the simulator
(`chubbypy.testing`) drive the *same* node; they differ only in where the inputs come from
and how the outputs are carried out.

Theory of operation.

* **Inputs** are method calls, each with `now`, the node's local time in ticks since it
  started (the driver reads its clock): a tick of the timer (`ticked`), a peer's message,
  a peer's checksum report, a client connection opened or closed, a decoded client request
  (`chubbypy.protocol.client.ClientRequest`: the wire's own values), "the last `Persist` is
  durable" (`durable_written`), and a graceful stop (`resign`). Every input first catches
  the core's tick count up with `now`: a process that stalled must not act on a lease its
  clock says is over (see `chubbypy.paxos.master_lease_ticks_for`).
* **Outputs** (`take`) are values, carried out in order (`chubbypy.node._outputs`): persist
  this, send these envelopes, answer this request, close this connection, log this.
* **The Ready contract** (STYLE §1, etcd raft's Ready/Advance) is run here and only here:
  for each Ready, send its `early` messages (the master's Accepts, which depend on nothing
  it has yet to write), then `Persist` its durable part and wait; once durable, send its
  messages, apply its committed entries in order, answer the requests waiting for them,
  `advance`, then handle its events. One Ready is written at a time.
* **Applying** goes through the `Applier` (epoch guard, exactly-once client table,
  checksums) to the `NamespaceMachine`. Each outcome goes to `ClientWrites`, which answers
  every request waiting for that command, and to the `MasterHost`, which hands the master's
  services the writes the entry applied.
* **Mastership.** When the core starts serving an epoch (its EPOCH_START applied) the
  `MasterHost` starts the master's services; when it steps down they stop and every request
  in flight is answered NOT_MASTER (the clients retry elsewhere, with the same names).
* **Reads** are answered from memory, by the master only, under its lease.
* **Checkpoints.** Every `snapshot_every_entries` applied entries, once nothing is being
  written and the core has applied all the applier has, the node hands the core a snapshot
  of the replicated state; the core puts it in its next Ready's durable part and truncates
  the log behind it.
* **Checksums** (Paxos Made Live §6.2): the serving master asks for one every
  `checksum_every_ticks`; followers report theirs to the master, which compares
  (`ChecksumBook`).
* **Clients' identities.** A connection acts as `anonymous` (if allowed) until it
  authenticates with a principal's token; the principal is what every ACL check sees.
  A failed authentication takes the connection's principal away (back to anonymous, or
  to no one), and failures are limited per connection (it is closed at the limit) and
  per source address (`chubbypy.node._auth_guard`); refusals are logged within the log
  budget (`chubbypy.node._log_budget`), like every warning a client can cause. A
  plain client's id is not secret (ids are sequential): its registration answers with a
  credential (a MAC of the id under the handle key), and a write that does not show it is
  refused PERMISSION_DENIED before anything else, so no one but the registering client
  can spend its sequence numbers or read its remembered results.
"""

from __future__ import annotations

from collections.abc import Callable

from chubbypy.namespace import (
    Access,
    NamespaceMachine,
    access_problem,
    quota_problem,
    request_problem,
    write_problem,
)
from chubbypy.node._auth_guard import AuthGuard
from chubbypy.node._checksums import ChecksumBook
from chubbypy.node._limits import RegistrationBook, SessionBook
from chubbypy.node._log_budget import LogBudget
from chubbypy.node._master import MasterHost
from chubbypy.node._metrics import Registry
from chubbypy.node._outbox import Outbox
from chubbypy.node._outputs import (
    ConnectionId,
    Disconnect,
    EntryApplied,
    EventHappened,
    NoteLevel,
    Output,
    Persist,
    SendChecksum,
    SendPeer,
)
from chubbypy.node._settings import ANONYMOUS, NodeSettings
from chubbypy.node._writes import ClientWrites
from chubbypy.paxos import (
    Applier,
    Bug,
    Chance,
    ChecksumTaken,
    MembershipChanged,
    Outcome,
    OutcomeKind,
    Persisted,
    Ready,
    Replica,
    ReplicaEvent,
    Role,
    StartedServing,
    SteppedDown,
    describe_event,
)
from chubbypy.protocol import (
    MASTER_CLIENT,
    NO_CLIENT,
    Command,
    InstallSnapshot,
    PeerMessage,
    ReplicaId,
)
from chubbypy.protocol.client import (
    MEMBER_ROLES,
    Authenticate,
    Authenticated,
    ChecksumReport,
    ClientRequest,
    LocateMaster,
    MasterLocation,
    ReadReply,
    ReadRequest,
    Register,
    ReplicaAddress,
    ReplicaStatus,
    RequestId,
    SessionRequest,
    StatusReply,
    StatusRequest,
    WriteReply,
    WriteRequest,
)
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace_codec import decode_result, encode_log_write
from chubbypy.sessions import client_credential_matches


class ReplicaNode:
    """One replica; see the module docstring."""

    def __init__(
        self,
        settings: NodeSettings,
        persisted: Persisted,
        chance: Chance,
        *,
        rebuilding: bool = False,
    ) -> None:
        self.settings = settings
        self.core = Replica(
            settings.replica_id,
            settings.seed_membership,
            settings.timing,
            settings.limits,
            chance,
            persisted,
            settings.bugs,
            voting=not rebuilding,
        )
        self.machine = NamespaceMachine(settings.cell, settings.namespace_limits)
        self.applier = Applier(
            self.machine,
            clients_max=settings.clients_max,
            client_results_max=settings.client_results_max,
            bugs=settings.bugs,
        )
        if persisted.snapshot is not None:
            # DecodeError (and no node) for a snapshot that does not restore: a damaged disk.
            self.applier.restore(persisted.snapshot.index, persisted.snapshot.data)
        self.metrics = Registry()
        self._define_counters()
        self.log_budget = LogBudget(
            settings.log_lines_per_minute, settings.ticks_per_minute, self._log_left_out
        )
        """The node's budget of log lines a client can cause (the shell keeps its own, on
        its own clock; both count into ``chubbypy_log_lines_left_out_total``)."""
        self._outbox = Outbox(settings.replica_id, self.core, self._errors, self.log_budget)
        self._writes = ClientWrites(
            self.core, self._outbox, chance, proposals=self._proposals,
            operations=self._operations, handle_key=settings.handle_key,
            bugs=settings.node_bugs,
        )  # fmt: skip
        self._master = MasterHost(
            settings, self.core, self.machine, self._writes, self._outbox, chance,
            self._operator_calls, self.applier,
        )  # fmt: skip
        self.registrations = RegistrationBook(settings.client_limits)
        """Live registrations per connection and principal, against their limits."""
        self.checksums = ChecksumBook(settings.replica_id)
        self._auth_guard = AuthGuard(settings.auth_limits)
        self._define_gauges()
        self._writing: Ready | None = None
        self._principals: dict[ConnectionId, str | None] = {}
        self._peers: dict[ConnectionId, str] = {}
        """Where each connection comes from ("host:port"), for the log."""
        self._last_checkpoint = self.applier.applied_index
        self._checksum_due = settings.checksum_every_ticks
        self.checksum_requests = True
        """Whether the master asks for checksums (a simulator turns it off at the end of a
        run, so that the cell can fall quiet)."""

    # ------------------------------------------------------------------ outputs

    def take(self) -> list[Output]:
        """Everything the driver must do since the last call, in order."""
        return self._outbox.take()

    @property
    def session_book(self) -> SessionBook:
        """Live sessions per connection and principal, while this replica is master."""
        return self._master.session_book

    @property
    def writing(self) -> bool:
        """A `Persist` is out and not yet durable."""
        return self._writing is not None

    # ------------------------------------------------------------------ inputs

    def started(self, now: int) -> None:
        """The process is up (first start or restart from the store)."""
        self._catch_up(now)
        status = self.core.status()
        mode = "" if status.voting else " (rebuilding: not voting yet)"
        self._outbox.note(
            NoteLevel.INFO,
            f"starts: chosen through {status.chosen_index}, applied through "
            f"{self.applier.applied_index}{mode}",
            separator=" ",
        )
        self._drain()

    def ticked(self, now: int) -> None:
        """The driver's timer fired (or any moment: catching up is all a tick does)."""
        self._catch_up(now)
        self._drain()

    def peer_message_received(
        self, now: int, sender: ReplicaId, message: PeerMessage
    ) -> str | None:
        """A peer's Paxos message (its values already checked by the codec). Returns why it
        was refused, unused (the driver closes the connection it came on), or None."""
        self._catch_up(now)
        refused = self._peer_message_problem(sender, message)
        if refused is None:
            self.core.step(sender, message)
        self._drain()
        return refused

    def _peer_message_problem(self, sender: ReplicaId, message: PeerMessage) -> str | None:
        """What only the node can judge of a peer's message: a snapshot is decoded and checked
        whole (its format, that it is of this cell and of its index, every record) before
        the core may take it to replace this replica's state with (issue 13: a snapshot of
        garbage once replaced a follower's state, and bricked it)."""
        if not isinstance(message, InstallSnapshot):
            return None
        snapshot = message.snapshot
        problem = self.applier.snapshot_problem(snapshot.index, snapshot.data)
        if problem is None:
            return None
        return f"refused a snapshot at index {snapshot.index} from {sender}: {problem}"

    def checksum_reported(self, now: int, sender: ReplicaId, report: ChecksumReport) -> None:
        """A peer's checksum at `report.index`: compared now, or when we get there."""
        self._catch_up(now)
        applied = self.applier.applied_index
        for divergence in self.checksums.reported(sender, report.index, report.checksum, applied):
            self._diverged(divergence)
        self._drain()

    def connection_opened(self, connection: ConnectionId, peer: str = "") -> None:
        """A client connection (from `peer`, "host:port", for the log and the limits on
        failed authentications per host) said hello; it acts as anonymous (if allowed)
        until it authenticates."""
        self._principals[connection] = ANONYMOUS if self.settings.auth.anonymous else None
        self._peers[connection] = peer

    def connection_closed(self, now: int, connection: ConnectionId) -> None:
        """A client connection went away: its blocked lock requests stop waiting."""
        self._catch_up(now)
        self._principals.pop(connection, None)
        self._peers.pop(connection, None)
        self._auth_guard.connection_closed(connection)
        self._outbox.connection_closed(connection)
        self.registrations.connection_closed(connection)
        self._master.connection_closed(connection)
        self._drain()

    def request_received(self, now: int, connection: ConnectionId, request: ClientRequest) -> None:
        """A client's request on an open connection; answered now or later (`Answer`)."""
        assert connection in self._principals, "a request before the connection opened"
        self._catch_up(now)
        principal = self._principals[connection]
        match request:
            case LocateMaster(request_id):
                self._outbox.answer(connection, self.locate(request_id))
            case StatusRequest(request_id):
                self._outbox.answer(connection, StatusReply(request_id, self.status()))
            case Authenticate(request_id, name, token):
                self._authenticate(connection, request_id, name, token)
            case _ if principal is None:
                message = "authenticate first: this cell serves no anonymous clients"
                self._refuse(connection, request.request_id, ErrorCode.PERMISSION_DENIED, message)
            case ReadRequest():
                self._read(connection, request, principal)
            case WriteRequest():
                self._write(connection, request, principal)
            case Register(request_id, nonce):
                self._register(connection, request_id, nonce, principal)
            case SessionRequest(request_id, call, number):
                self._master.call(connection, request_id, call, principal, number)
        self._drain()

    def durable_written(self, now: int, seconds: float) -> None:
        """The last `Persist` is durable (it took `seconds`, fsync included)."""
        ready = self._writing
        assert ready is not None, "durable_written without a Persist out"
        self._writing = None
        self._fsync_seconds.observe(seconds)
        self._catch_up(now)
        self._finish(ready)
        self._drain()

    def resign(self, now: int) -> None:
        """A graceful stop: a master hands its mastership over."""
        self._catch_up(now)
        if self.core.resign():
            self._outbox.note(NoteLevel.INFO, "resigns to hand mastership over", separator=" ")
        self._drain()

    # ------------------------------------------------------------------ answers from memory

    def locate(self, request_id: RequestId) -> MasterLocation:
        epoch = self.core.epoch or self.applier.epoch
        # Voters only: a learner's client address was typed by an operator and has not
        # yet served; a client that dialled a wrong one would hand it its token.
        ordered = [m for m in self.core.membership.members if m.voter]
        # The cell file's address for a replica it lists, else the membership's (as the
        # peers dial: `chubbypy.server._peers.PeerNetwork.members_changed`).
        listed = {a.replica_id: a.client_endpoint for a in self.settings.addresses}
        replicas = tuple(
            ReplicaAddress(m.replica_id, listed.get(m.replica_id, m.client)) for m in ordered
        )
        return MasterLocation(request_id, self._outbox.master(), epoch, replicas)

    def status(self) -> ReplicaStatus:
        s = self.core.status()
        remaining = max(0, s.lease_expiry_tick - s.tick) if s.lease_valid else 0
        return ReplicaStatus(
            replica_id=self.settings.replica_id,
            role=s.role.value,
            epoch=s.epoch or self.applier.epoch,
            promised=str(s.promised),
            chosen_index=s.chosen_index,
            applied_index=s.applied_index,
            first_index=s.first_index,
            last_index=s.last_index,
            snapshot_index=s.snapshot_index,
            serving=s.serving,
            lease_valid=s.lease_valid,
            lease_remaining_ms=self.settings.ms(remaining),
            master_hint=self._outbox.master(),
            uptime_ms=self.settings.ms(s.tick),
            checksum_mismatches=self.checksums.mismatches,
            member_role=self.member_role,
            membership_version=0 if s.membership is None else s.membership.version,
        )

    @property
    def membership_version(self) -> int:
        """The version of the membership this replica knows (0 while it joins)."""
        membership = self.core.status().membership
        return 0 if membership is None else membership.version

    @property
    def member_role(self) -> str:
        """voter, learner, removed, or joining (see `ReplicaStatus.member_role`)."""
        membership = self.core.status().membership
        if membership is None:
            return "joining"
        member = membership.member(self.settings.replica_id)
        if member is None:
            return "removed"
        return "voter" if member.voter else "learner"

    def _read(self, connection: ConnectionId, request: ReadRequest, principal: str) -> None:
        request_id = request.request_id
        if not self.core.can_serve_reads():
            self._refuse(connection, request_id, ErrorCode.NOT_MASTER, "not the master")
            return
        denied = access_problem(self.machine.tree, principal, request.read.path, Access.READ)
        if denied is not None:
            self._refuse(connection, request_id, denied.code, denied.message)
            return
        self._operations.inc(op="read")
        result = self.machine.read(request.read, principal)
        self._outbox.answer(connection, ReadReply(request_id, self.applier.applied_index, result))

    def _authenticate(
        self, connection: ConnectionId, request_id: RequestId, principal: str, token: str
    ) -> None:
        """Act as `principal` if `token` is its own. Past the budget of failures of the
        source host for that principal the token is not even looked at; a failure takes
        the connection's principal away, and the connection's last allowed failure closes
        it. The budget is kept per host and principal (a name the cell does not know
        shares its host's one budget for every unknown name): a process failing on purpose
        as one principal keeps that principal's authentications from its host refused, not
        every principal's."""
        peer = self._peers.get(connection) or "?"
        host = _host_of(peer)
        known = self.settings.auth.knows(principal)
        address = f"{host} as {principal!r}" if known else f"{host} as an unknown principal"
        now = self.core.tick_count
        wait_ticks = self._auth_guard.refusal(address, now)
        if wait_ticks is None and self.settings.auth.admits(principal, token):
            self._authentications.inc(outcome="admitted")
            self._principals[connection] = principal
            self._outbox.answer(connection, Authenticated(request_id, principal))
            return
        # Never go on acting as a principal after a token that was not that principal's.
        self._principals[connection] = ANONYMOUS if self.settings.auth.anonymous else None
        if wait_ticks is None:
            self._authentications.inc(outcome="refused")
            close = self._auth_guard.failed(connection, address, now)
            kind, text = "authentication-refused", f"as {principal!r} from {peer}"
            message = f"unknown principal {principal!r} or wrong token"
        else:
            self._authentications.inc(outcome="rate_limited")
            close = self._auth_guard.refused(connection)
            kind, text = "authentication-rate-limited", f"from {peer}, unchecked"
            seconds = -(-self.settings.ms(wait_ticks) // 1000)
            message = (
                f"too many failed authentications from {address} "
                f"(limits.auth_failures_per_address_max in auth_failures_window_seconds): "
                f"refused unchecked while failures go on; at this rate, try again in {seconds} s"
            )
        if close:
            message += (
                f"; closing the connection after {self._auth_guard.connection_max} failed "
                "authentications (limits.auth_failures_per_connection_max)"
            )
        self._outbox.warn_limited(kind, f"refused authentication {text}")
        self._refuse(connection, request_id, ErrorCode.PERMISSION_DENIED, message)
        if close:
            self._outbox.put(Disconnect(connection))

    # ------------------------------------------------------------------ writes

    def _register(
        self, connection: ConnectionId, request_id: RequestId, nonce: int, principal: str
    ) -> None:
        """Propose a registration, unless the connection or its principal holds as many
        live registrations as its limit allows: then RESOURCE_EXHAUSTED, proposing nothing
        (a flood costs no log entry, and evicts no one). A retried registration (a nonce
        the client table knows, or one in flight) is answered from the table, or waits for
        the one in flight: it is never proposed twice, whatever the limits. Its client's id
        and credential go only to the principal that registered it (the command carries
        the principal: `ClientWrites.registered`)."""
        owner = principal.encode()  # the client's owner: only its retries get the client
        if self.core.serving:
            registered = self.applier.registered_client(nonce)
            if registered is not None:
                self._writes.registered(connection, request_id, *registered, owner)
                return
        if self._writes.join(connection, request_id, (NO_CLIENT, nonce), owner):
            return
        refused = self.registrations.refusal(connection, principal, nonce)
        if refused is not None:
            peer = self._peers.get(connection) or "?"
            text = f"refusing registrations from {principal!r} at {peer}: {refused}"
            self._outbox.warn_once(connection, "registrations", text)
            self._refuse(connection, request_id, ErrorCode.RESOURCE_EXHAUSTED, refused)
            return
        if self._writes.propose(connection, request_id, Command(NO_CLIENT, nonce, owner)):
            self.registrations.proposed(connection, principal, nonce)

    def _write(self, connection: ConnectionId, request: WriteRequest, principal: str) -> None:
        request_id = request.request_id
        if not self._owner_shown(connection, request, principal):
            return
        if request.client_id == MASTER_CLIENT:
            self._refuse(connection, request_id, ErrorCode.UNKNOWN_CLIENT, "a reserved id")
            return
        serving = self.core.serving
        cached = self.applier.cached_result(request.client_id, request.sequence)
        if cached is not None and serving:
            # A retry of a write already applied: its original result, at once (even if the
            # write itself, or anything since, took the writer's permission away).
            self._operations.inc(op="write")
            reply = WriteReply(request_id, self.applier.applied_index, decode_result(cached))  # type: ignore[arg-type]
            self._outbox.answer(connection, reply)
            return
        tree = self.machine.tree
        # Refused here what the log would refuse whatever the state (an oversized or
        # misnamed write), so that it costs no entry on every replica's disk; then what
        # this principal may not do.
        if serving and (
            wrong := request_problem(tree, request.write)
            or write_problem(tree, principal, request.write)
            or quota_problem(tree, principal, request.write)
        ):
            self._refuse(connection, request_id, wrong.code, wrong.message)
            return
        # The command carries the principal: the namespace charges it for what it creates.
        payload = encode_log_write(request.write, principal)
        command = Command(request.client_id, request.sequence, payload, request.first_unacked)
        # While this replica is master, the write waits at the cache gate until every
        # cached copy it makes stale was invalidated (usually: not at all).
        if not self._master.write(connection, request_id, command, request.write):
            self._writes.propose(connection, request_id, command)

    def _owner_shown(self, connection: ConnectionId, request: WriteRequest, principal: str) -> bool:
        """Whether the write shows its client's credential; if not it is refused before
        anything else, and changes nothing: a retry answered from the client table would
        hand another client's results out, and a write proposed would spend its sequence
        numbers (its own later writes then answered with the cached results of these)."""
        key = self.settings.handle_key
        if client_credential_matches(request.client_id, request.credential, key):
            return True
        self._outbox.warn_once(
            connection,
            "credential",
            f"refused a write naming client {request.client_id} from {principal!r} at "
            f"{self._peers.get(connection) or '?'}: not the client's credential (a forged or "
            "mistaken client id)",
        )
        message = f"client {request.client_id}: wrong credential; only its owner may write as it"
        self._refuse(connection, request.request_id, ErrorCode.PERMISSION_DENIED, message)
        return False

    def _refuse(
        self, connection: ConnectionId, request_id: RequestId, code: ErrorCode, message: str
    ) -> None:
        self._outbox.refuse(connection, request_id, code, message)

    # ------------------------------------------------------------------ time

    def _catch_up(self, now: int) -> None:
        if now > self.core.tick_count:
            self.core.tick(now - self.core.tick_count)
            self._ticked()

    def _ticked(self) -> None:
        """The master asks every replica to checksum its state now and then (PML §6.2)."""
        self._master.ticked()
        if not (self.core.serving and self.checksum_requests):
            return
        if self.core.tick_count >= self._checksum_due:
            self._checksum_due = self.core.tick_count + self.settings.checksum_every_ticks
            self.core.request_checksum(self.core.epoch)

    # ------------------------------------------------------------------ the Ready contract

    def _drain(self) -> None:
        while self._writing is None and self.core.has_ready():
            ready = self.core.ready()
            for envelope in ready.early:  # the Ready contract's step 0: before the write
                self._outbox.put(SendPeer(envelope))
            if Bug.REPLY_BEFORE_PERSIST in self.settings.bugs:
                self._send(ready)
            if ready.durable.is_empty():
                self._finish(ready)
                continue
            self._writing = ready
            self._outbox.put(Persist(ready.durable))

    def _finish(self, ready: Ready) -> None:
        """The Ready's writes are durable: send, apply, advance."""
        if Bug.REPLY_BEFORE_PERSIST not in self.settings.bugs:
            self._send(ready)
        snapshot = ready.durable.snapshot
        if snapshot is not None and snapshot.index > self.applier.applied_index:
            self.applier.restore(snapshot.index, snapshot.data)
        for entry in ready.committed:
            self._batch_commands.observe(len(entry.value.commands))
            results = self.applier.apply(entry)
            self._outbox.put(EntryApplied(entry, results))
            outcomes = [result for result in results if isinstance(result, Outcome)]
            for result in results:
                if isinstance(result, Outcome):
                    self._writes.outcome(result)
                    self._registered(result)
                else:
                    self._checksum_taken(result)
            self._master.applied(outcomes)
        self.core.advance(ready)
        for event in ready.events:
            self._event(event)
        self._maybe_checkpoint()

    def _registered(self, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.REGISTERED:
            self.registrations.registered(outcome.sequence, outcome.client_id, outcome.evicted)

    def _send(self, ready: Ready) -> None:
        for envelope in ready.messages:
            self._outbox.put(SendPeer(envelope))

    def _event(self, event: ReplicaEvent) -> None:
        self._outbox.put(EventHappened(event))
        self._outbox.note(NoteLevel.INFO, describe_event(event))
        if isinstance(event, StartedServing):
            self._master.started(event.epoch)
        if isinstance(event, MembershipChanged):
            self._master.membership_chosen(event.index, event.membership)
        if isinstance(event, SteppedDown):
            self._master.stopped()
            self.registrations.stepped_down()
            # Whatever was in flight may still be chosen; the clients retry elsewhere with the
            # same (client, sequence), and the cell applies each once.
            self._writes.stepped_down()

    def _maybe_checkpoint(self) -> None:
        applied = self.applier.applied_index
        if applied - self._last_checkpoint < self.settings.snapshot_every_entries:
            return
        if self.core.applied_index != applied or self.core.has_ready() or self._writing:
            return
        self.core.snapshot_taken(applied, self.applier.snapshot())
        self._last_checkpoint = applied

    # ------------------------------------------------------------------ checksums (PML §6.2)

    def _checksum_taken(self, taken: ChecksumTaken) -> None:
        for divergence in self.checksums.taken(taken.index, taken.checksum):
            self._diverged(divergence)
        master = self.core.master_hint()
        if self.core.status().role is not Role.MASTER and master is not None:
            report = ChecksumReport(taken.index, taken.checksum)
            self._outbox.put(SendChecksum(master, report))

    def _diverged(self, divergence: str) -> None:
        self._outbox.note(NoteLevel.CRITICAL, f"REPLICAS DIVERGED: {divergence}")

    # ------------------------------------------------------------------ metrics

    def _define_counters(self) -> None:
        m = self.metrics
        self._proposals = m.counter("chubbypy_proposals_total", "Client commands proposed.")
        self._operations = m.counter(
            "chubbypy_client_operations_total", "Client operations done.", labelled=True
        )
        self._errors = m.counter(
            "chubbypy_client_errors_total", "Client requests refused, by code.", labelled=True
        )
        self._authentications = m.counter(
            "chubbypy_authentications_total",
            "Authenticate requests: admitted, refused (unknown principal or wrong token), "
            "rate_limited (too many failures from the source address; token not checked).",
            labelled=True,
        )
        self._operator_calls = m.counter(
            "chubbypy_operator_calls_total",
            "Operators' calls this replica answered as master, by call (list_sessions, "
            "lock_info, end_session, snapshot: one per piece of a backup) and outcome (ok; "
            "for end_session ending, already (it was ending) or none (no such session); or "
            "the error code).",
            labelled=True,
        )
        self._log_left_out = m.counter(
            "chubbypy_log_lines_left_out_total",
            "Warnings a client or peer caused that the log budget left out, by kind.",
            labelled=True,
        )
        self._fsync_seconds = m.histogram(
            "chubbypy_fsync_seconds",
            "Time to make one Ready durable (one transaction, one fsync).",
            (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
        )
        self._batch_commands = m.histogram(
            "chubbypy_batch_commands",
            "Commands per applied log entry.",
            (0, 1, 2, 4, 8, 16, 32, 64, 128),
        )

    def _define_gauges(self) -> None:
        m = self.metrics
        status = self.core.status
        m.gauge(
            "chubbypy_role",
            "1 for this replica's current role.",
            lambda: [((("role", r.value),), float(status().role is r)) for r in Role],
        )
        m.gauge(
            "chubbypy_member_role",
            "1 for this replica's part in the membership it knows.",
            lambda: [
                ((("member_role", role),), float(self.member_role == role)) for role in MEMBER_ROLES
            ],
        )
        for name, help_text, read in (
            ("chubbypy_epoch", "The current mastership's epoch.", lambda: self.applier.epoch),
            ("chubbypy_chosen_index", "Highest log index known chosen.",
             lambda: status().chosen_index),
            ("chubbypy_applied_index", "Highest log index applied.",
             lambda: self.applier.applied_index),
            ("chubbypy_first_index", "Lowest log index still kept.",
             lambda: status().first_index),
            ("chubbypy_lease_valid", "1 if this replica holds a valid master lease.",
             lambda: status().lease_valid),
            ("chubbypy_voting", "0 while the replica rebuilds a lost disk.",
             lambda: status().voting),
            ("chubbypy_membership_version",
             "Version of the membership this replica knows (0 while it joins).",
             lambda: self.membership_version),
            ("chubbypy_queued_commands", "Commands waiting for the pipeline window.",
             lambda: status().queued_commands),
            ("chubbypy_sessions",
             "Live sessions the master's session service holds (0 on other replicas).",
             lambda: self._master.sessions),
            ("chubbypy_backup_snapshot_bytes",
             "Bytes of the snapshot the master holds for a backup being read (0: none).",
             lambda: self._master.snapshot_bytes),
            ("chubbypy_cached_names",
             "(session, name) pairs the master will invalidate before a change.",
             lambda: self._master.cache_cost[0]),
            ("chubbypy_writes_awaiting_invalidation",
             "Writes held until the sessions caching what they change acknowledged.",
             lambda: self._master.cache_cost[1]),
        ):  # fmt: skip
            m.gauge(name, help_text, _scalar(read))
        m.counter_view(
            "chubbypy_cached_names_refused_total",
            "Reads that asked to be cached, answered uncached because their session caches "
            "as many names as limits.cached_names_per_session_max allows.",
            lambda: self._master.reads_uncached_over_limit,
        )
        m.counter_view(
            "chubbypy_checksum_comparisons_total",
            "State checksums compared with a peer's.",
            lambda: self.checksums.compared,
        )
        m.counter_view(
            "chubbypy_checksum_mismatches_total",
            "State checksums that differed from a peer's.",
            lambda: self.checksums.mismatches,
        )
        m.gauge(
            "chubbypy_checksum_last_compared_index",
            "Per peer, the log index at which its state checksum was last compared with this "
            "replica's (the master compares its followers').",
            lambda: [
                ((("peer", p),), float(i)) for p, (i, _) in sorted(self.checksums.last.items())
            ],
        )
        m.gauge(
            "chubbypy_checksum_last_matched",
            "Per peer, 1 if its checksum matched this replica's at the last comparison, else 0.",
            lambda: [
                ((("peer", p),), float(ok)) for p, (_, ok) in sorted(self.checksums.last.items())
            ],
        )


def _host_of(peer: str) -> str:
    """The host of a "host:port" peer (the address failures are counted against)."""
    host, colon, _ = peer.rpartition(":")
    return host if colon else peer


def _scalar(
    read: Callable[[], float],
) -> Callable[[], list[tuple[tuple[tuple[str, str], ...], float]]]:
    return lambda: [((), float(read()))]
