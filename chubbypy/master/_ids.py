"""The master's own numbers for work in progress. Pure: two `NewType`s.

Neither crosses the wire nor enters the log, so neither lives in `chubbypy.protocol`; they
are kept apart from the session and handle ids there (and from each other) so that passing
one where another belongs fails `mypy --strict`.
"""

from __future__ import annotations

from typing import NewType

CallToken = NewType("CallToken", int)
"""The shell's number for one call in progress: the service answers it with a `Reply`
carrying the same token, at once or once the proposal it caused was applied."""

GateTicket = NewType("GateTicket", int)
"""The cache gate's number for one write bound for the log (the master's own `Proposal`
or a client's `ClientWrite`): reported `landed` once the log applied or refused it."""
