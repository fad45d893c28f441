"""How a master's service talks to the replicated log: its proposals as commands, and the
applied entries back to it. Pure; shared by the server's and the simulator's hosts.

The service's decisions go into the log as the master's own commands (`MASTER_CLIENT`,
numbered here), all of one batch in one `propose` so that they share a log entry (a
release and the grant it allows, say). When an entry is applied, the writes the namespace
applied come back to the service in log order, each with the token of the call it served
(or None); a master command refused because its epoch ended is reported so that its caller
can be told to retry. Every proposal's cache-gate ticket is reported `landed` once its
outcome is known (or the core refused it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from chubbypy.master._ids import CallToken, GateTicket
from chubbypy.master._results import ClientWrite, Proposal
from chubbypy.master._service import MasterService
from chubbypy.namespace import Applied
from chubbypy.paxos import Outcome, OutcomeKind
from chubbypy.protocol import MASTER_CLIENT, ClientId, Command, LogIndex
from chubbypy.protocol.namespace import LogWrite
from chubbypy.protocol.namespace_codec import encode_log_write


class ServiceLog:
    """The numbering of one mastership's commands; see the module docstring."""

    def __init__(self) -> None:
        self._sequences = itertools.count(1)
        self._tokens: dict[int, tuple[CallToken | None, GateTicket]] = {}
        """Per command sequence: the call it serves (or None), and its gate ticket."""
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
            commands.append(Command(MASTER_CLIENT, sequence, encode_log_write(proposal.write)))
            self._tokens[sequence] = (proposal.token, proposal.ticket)
        return commands

    def dispatch(
        self,
        service: MasterService,
        proposals: Iterable[Proposal | ClientWrite],
        propose: Callable[[list[Command]], bool],
        release: Callable[[ClientWrite], None],
    ) -> list[CallToken]:
        """Send what `service.take` let through, in order: each run of the service's own
        proposals as one batch (`propose`; False if the core refused it), each client's
        write to `release`. The tokens of the calls whose commands were refused."""
        refused: list[CallToken] = []
        batch: list[Proposal] = []

        def send_batch() -> None:
            commands = self.commands(batch)
            batch.clear()
            if commands and not propose(commands):
                refused.extend(self.refused(service, commands))

        for proposal in proposals:
            if isinstance(proposal, Proposal):
                batch.append(proposal)
            else:
                send_batch()
                release(proposal)
        send_batch()
        return refused

    def refused(self, service: MasterService, commands: Iterable[Command]) -> list[CallToken]:
        """The core refused `commands`: the tokens of the calls they served."""
        tokens = []
        for command in commands:
            token, ticket = self._tokens.pop(command.sequence)
            service.landed(ticket)
            if token is not None:
                tokens.append(token)
        return tokens

    def applied(
        self,
        service: MasterService,
        outcomes: Iterable[Outcome],
        writes: list[tuple[LogIndex, LogWrite, Applied]],
    ) -> list[CallToken]:
        """Report one applied entry to `service`: its `outcomes`, and the `writes` the
        namespace applied for it (`NamespaceMachine.take_applied`). Clients' writes are
        reported too (they cause events). The tokens of master commands refused because
        their epoch ended."""
        done = iter(writes)
        refused = []
        for outcome in outcomes:
            for ticket in self._client_writes.pop((outcome.client_id, outcome.sequence), ()):
                service.landed(ticket)
            token: CallToken | None = None
            mine = outcome.client_id == MASTER_CLIENT
            if mine and outcome.sequence in self._tokens:
                token, ticket = self._tokens.pop(outcome.sequence)
                service.landed(ticket)
            if outcome.kind is OutcomeKind.APPLIED:
                _, write, applied = next(done)
                service.applied(token, write, applied)
            elif token is not None:
                refused.append(token)
        assert next(done, None) is None, "every applied write was reported"
        return refused
