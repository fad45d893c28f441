"""How a master's service talks to the replicated log: its proposals as commands, and the
applied writes back to it. Pure.

The service's decisions go into the log as the master's own commands (`MASTER_CLIENT`,
numbered here), all of one batch in one `propose` so that they share a log entry (a
release and the grant it allows, say). When an entry is applied, the writes the namespace
applied (each outcome's `effect`) come back to the service in log order, each with the
token of the call it served (or None); a master command refused because its epoch ended is
reported so that its caller can be told to retry. Every proposal's cache-gate ticket is
reported `landed` once its outcome is known (or the core refused it).

Numbering starts again with each mastership: every command of an earlier mastership is
applied before the new master starts serving (they precede its EPOCH_START in the log),
so a sequence number here always names this mastership's own command.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from chubbypy.master import CallToken, GateTicket, MasterService, Proposal
from chubbypy.namespace import AppliedWrite
from chubbypy.paxos import Outcome, OutcomeKind
from chubbypy.protocol import MASTER_CLIENT, ClientId, Command
from chubbypy.protocol.namespace_codec import encode_log_write


class ServiceLog:
    """The numbering of one mastership's commands; see the module docstring."""

    def __init__(self) -> None:
        self._sequences = itertools.count(1)
        self._proposals: dict[int, Proposal] = {}
        """Per command sequence: the proposal it carries (its call, or None; its ticket)."""
        self._client_writes: dict[tuple[ClientId, int], list[GateTicket]] = {}
        """Per (client, sequence) of a client's write proposed: its gate tickets."""

    def client_write_proposed(self, command: Command, ticket: GateTicket) -> None:
        """A client's write the gate let through was proposed as `command`: its ticket is
        reported `landed` with the first outcome of its (client, sequence)."""
        key = (command.client_id, command.sequence)
        self._client_writes.setdefault(key, []).append(ticket)

    def commands(self, proposals: Iterable[Proposal]) -> list[Command]:
        """The commands to propose, in order, for `proposals`."""
        commands = []
        for proposal in proposals:
            sequence = next(self._sequences)
            payload = encode_log_write(proposal.write, proposal.principal)
            commands.append(Command(MASTER_CLIENT, sequence, payload))
            self._proposals[sequence] = proposal
        return commands

    def refused(self, service: MasterService, commands: Iterable[Command]) -> list[CallToken]:
        """The core refused `commands`: the tokens of the calls they served (the master's
        own decisions among them the service proposes again)."""
        tokens = []
        for command in commands:
            proposal = self._proposals.pop(command.sequence)
            service.landed(proposal.ticket)
            service.not_proposed(proposal)
            if proposal.token is not None:
                tokens.append(proposal.token)
        return tokens

    def applied(self, service: MasterService, outcomes: Iterable[Outcome]) -> list[CallToken]:
        """Report one applied entry's `outcomes` to `service`: every write the namespace
        applied (clients' writes too: they cause events). The tokens of master commands
        refused because their epoch ended."""
        refused = []
        for outcome in outcomes:
            if outcome.kind is OutcomeKind.REGISTERED:
                continue  # its sequence is a nonce, which names no write
            for ticket in self._client_writes.pop((outcome.client_id, outcome.sequence), ()):
                service.landed(ticket)
            token: CallToken | None = None
            if outcome.client_id == MASTER_CLIENT and outcome.sequence in self._proposals:
                proposal = self._proposals.pop(outcome.sequence)
                token = proposal.token
                service.landed(proposal.ticket)
            if isinstance(outcome.effect, AppliedWrite):
                service.applied(token, outcome.effect.write, outcome.effect.applied)
            elif outcome.kind is OutcomeKind.APPLIED:
                assert token is None, "the master's own commands always decode"
            elif token is not None:
                refused.append(token)
        return refused
