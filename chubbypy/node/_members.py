"""The master's side of the operators' membership calls (docs/design/membership.md §4).

`ListMembers` is answered at once from the Paxos core (the membership in effect and what the
master knows of each member's progress). `ChangeMembership` is one step, checked here in
this order: a change the membership already shows is answered at once (`already`: a retry
after a lost answer or a fail-over is harmless); `if_version`; the step's own sense (an id
added must be new, one promoted a learner, one removed a member); the one rule of a change
(`chubbypy.paxos.successor_problem`); then the gates that keep the cell available: a
learner is promoted only once it has caught up (done rebuilding, acknowledged the master
within two heartbeats, knowing the log chosen to within one catch-up page: NOT_CAUGHT_UP
otherwise), and a removal must leave a quorum of live voters unless forced. The core then
proposes it once its window is empty; the answer goes out when the core says it is chosen
(`chosen`), and a mastership that ends first answers NOT_MASTER (the client asks the next
master, which answers `already` if it was).
"""

from __future__ import annotations

from attrs import evolve

from chubbypy.node._outbox import Outbox
from chubbypy.node._outputs import ConnectionId
from chubbypy.node._settings import NodeSettings
from chubbypy.paxos import RefusalReason, Replica, successor_problem
from chubbypy.protocol import LogIndex, Member, Membership
from chubbypy.protocol.client import RequestId, SessionReply
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.session import (
    AddLearner,
    ChangeMembership,
    MemberInfo,
    MemberList,
    MembershipDone,
    MembershipStep,
    Promote,
    Remove,
)

__all__ = ["MemberDesk", "membership_after"]


class MemberDesk:
    """A master's membership calls in progress; see the module docstring."""

    def __init__(self, settings: NodeSettings, core: Replica, outbox: Outbox) -> None:
        self._settings = settings
        self._core = core
        self._outbox = outbox
        self._pending: list[tuple[ConnectionId, RequestId, Membership]] = []

    def listed(self) -> MemberList:
        """The membership in effect, with each member's progress as this master knows it."""
        core = self._core
        membership = core.membership
        progress = core.peer_progress()
        now = core.tick_count
        members = []
        for member in membership.members:
            known = progress.get(member.replica_id)
            itself = member.replica_id == core.replica_id
            chosen = core.status().chosen_index if itself else None
            acked = 0 if itself else None
            if known is not None:
                chosen = known.chosen_index
                acked = self._settings.ms(max(0, now - known.acked_tick))
            members.append(
                MemberInfo(
                    member.replica_id,
                    member.peer,
                    member.client,
                    member.voter,
                    itself,
                    chosen,
                    acked,
                )
            )
        index = core.membership_index
        return MemberList(membership.version, index, core.status().chosen_index, tuple(members))

    def change(
        self, connection: ConnectionId, request_id: RequestId, call: ChangeMembership
    ) -> str:
        """Take an operator's change (its principal already checked); the outcome's name
        for ``chubbypy_operator_calls_total``."""
        core = self._core
        current = core.membership
        if shows(current, call.step):
            done = MembershipDone(current.version, core.membership_index, already=True)
            self._outbox.answer(connection, SessionReply(request_id, done))
            return "already"
        if call.if_version and call.if_version != current.version:
            message = (
                f"the membership is at version {current.version}, not {call.if_version}: "
                "list the members and decide again"
            )
            return self._refuse(connection, request_id, Failure(ErrorCode.VERSION_CHANGED, message))
        proposed = membership_after(current, call.step)
        if isinstance(proposed, Failure):
            return self._refuse(connection, request_id, proposed)
        gate = self._gate(current, call.step)
        if gate is not None:
            return self._refuse(connection, request_id, gate)
        refused = core.propose_membership(proposed, core.epoch)
        if refused is not None:
            if refused.reason is RefusalReason.MEMBERSHIP_BUSY:
                message = "another membership change is in progress; ask again once it is done"
                failure = Failure(ErrorCode.MEMBERSHIP_BUSY, message)
            else:
                failure = Failure(ErrorCode.NOT_MASTER, f"not proposed: {refused.reason.value}")
            return self._refuse(connection, request_id, failure)
        self._pending.append((connection, request_id, proposed))
        return "proposed"

    def chosen(self, index: LogIndex, membership: Membership) -> None:
        """A change was chosen at `index`: answer the calls that asked for it."""
        waiting, self._pending = self._pending, []
        for connection, request_id, proposed in waiting:
            if proposed == membership:
                done = MembershipDone(membership.version, index, already=False)
                self._outbox.answer(connection, SessionReply(request_id, done))
            else:
                self._pending.append((connection, request_id, proposed))

    def stopped(self) -> None:
        """The mastership ended: the calls waiting go to the next master (which answers
        `already` for a change that was chosen)."""
        waiting, self._pending = self._pending, []
        for connection, request_id, _ in waiting:
            message = "mastership ended before the change was chosen: ask the new master"
            self._outbox.refuse(connection, request_id, ErrorCode.NOT_MASTER, message)

    def connection_closed(self, connection: ConnectionId) -> None:
        self._pending = [p for p in self._pending if p[0] != connection]

    def _refuse(self, connection: ConnectionId, request_id: RequestId, failure: Failure) -> str:
        self._outbox.refuse(connection, request_id, failure.code, failure.message)
        return failure.code.name.lower()

    def _gate(self, current: Membership, step: MembershipStep) -> Failure | None:
        """NOT_CAUGHT_UP for a learner behind; MEMBERSHIP_INVALID for a removal that would
        leave too few live voters (unless forced)."""
        core = self._core
        recent = core.tick_count - 2 * self._settings.timing.heartbeat_ticks
        progress = core.peer_progress()
        chosen = core.status().chosen_index
        match step:
            case Promote(replica_id):
                known = progress.get(replica_id)
                # Within one catch-up page of the master: what a lagging voter would fetch
                # in one round trip (its last acknowledgement is up to a heartbeat old).
                behind_max = self._settings.limits.catchup_entries_max
                if known is None or known.acked_tick < recent:
                    heard = (
                        "never"
                        if known is None
                        else (f"{self._settings.ms(core.tick_count - known.acked_tick)} ms ago")
                    )
                    message = (
                        f"{replica_id} has not acknowledged the master lately (last: {heard}); "
                        "is it running, and can it reach the master?"
                    )
                    return Failure(ErrorCode.NOT_CAUGHT_UP, message)
                if not known.trusted:
                    # Its rebuild ends once an instance begun after it started is chosen: ask
                    # for one (a checksum, which also compares its state with ours).
                    core.request_checksum(core.epoch)
                    message = (
                        f"{replica_id} is still rebuilding from its peers (PML §5.1): it votes "
                        "once it has seen a new instance chosen; ask again in a moment "
                        "(promote --wait)"
                    )
                    return Failure(ErrorCode.NOT_CAUGHT_UP, message)
                if chosen - known.chosen_index > behind_max:
                    message = (
                        f"{replica_id} knows the log chosen through {known.chosen_index}, "
                        f"the master through {chosen}: wait for it to catch up"
                    )
                    return Failure(ErrorCode.NOT_CAUGHT_UP, message)
            case Remove(replica_id, force) if not force:
                voters = [v for v in current.voters if v != replica_id]
                live = [
                    v
                    for v in voters
                    if v == core.replica_id or (v in progress and progress[v].acked_tick >= recent)
                ]
                quorum = len(voters) // 2 + 1
                if len(live) < quorum:
                    message = (
                        f"removing {replica_id} leaves {len(live)} live voters of {len(voters)} "
                        f"({', '.join(live)}), and a quorum needs {quorum}: the cell would "
                        "stop. Bring a voter back, or remove with --force"
                    )
                    return Failure(ErrorCode.MEMBERSHIP_INVALID, message)
            case _:
                pass
        return None


def shows(membership: Membership, step: MembershipStep) -> bool:
    """Whether `membership` already shows what `step` asks for (a retry: answered at once)."""
    match step:
        case AddLearner(replica_id, peer, client):
            member = membership.member(replica_id)
            return member is not None and (member.peer, member.client) == (peer, client)
        case Promote(replica_id):
            member = membership.member(replica_id)
            return member is not None and member.voter
        case Remove(replica_id):
            return membership.member(replica_id) is None
    raise AssertionError(step)


def membership_after(current: Membership, step: MembershipStep) -> Membership | Failure:
    """The membership one `step` from `current`, or MEMBERSHIP_INVALID saying why not."""
    version = current.version + 1
    match step:
        case AddLearner(replica_id, peer, client):
            if current.member(replica_id) is not None:
                return _invalid(f"{replica_id} is a member already, with other addresses")
            member = Member(replica_id, peer, client, voter=False)
            ordered = sorted((*current.members, member), key=lambda m: m.replica_id)
            proposed = Membership(version, tuple(ordered))
        case Promote(replica_id):
            if current.member(replica_id) is None:
                return _invalid(f"{replica_id} is not a member: add it as a learner first")
            proposed = Membership(
                version,
                tuple(
                    evolve(m, voter=True) if m.replica_id == replica_id else m
                    for m in current.members
                ),
            )
        case Remove(replica_id):
            kept = tuple(m for m in current.members if m.replica_id != replica_id)
            proposed = Membership(version, kept)
    problem = successor_problem(current, proposed)
    if problem is not None:
        if len(proposed.voters) < len(current.voters):
            problem += "; add and promote the replacement first"
        return _invalid(problem)
    return proposed


def _invalid(message: str) -> Failure:
    return Failure(ErrorCode.MEMBERSHIP_INVALID, message)
