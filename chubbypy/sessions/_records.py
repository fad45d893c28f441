"""What is replicated of a session: that it exists. Pure: a value.

Chubby §2.8, §2.9. A session's *existence* is a committed fact (`OpenSession`, `EndSession`
in the log), so its locks and ephemeral nodes outlive the master that granted them; its
*lease* is not: the authoritative session-lease timer runs in the master's memory, is never
written to the log, and a new master conservatively restarts every session's lease (a
lease may be extended, never shortened, so starting it again is always safe).
"""

from __future__ import annotations

from attrs import field, frozen

from chubbypy.protocol.namespace import WriteResult
from chubbypy.protocol.session import SESSION_NAME_CHARS_MAX
from chubbypy.protocol.values import CallNumber, SessionId

__all__ = ["SESSION_NAME_CHARS_MAX", "SessionCalls", "SessionRecord"]


@frozen
class SessionCalls:
    """The answers a session's client may still ask for again (issue 12): the results of
    its numbered calls at or above `low_water`, in number order. A call below `low_water` was
    acknowledged, or its result was dropped to keep the record bounded: it may have been
    carried out, and the log can no longer tell, so it is refused, never carried out again."""

    low_water: int = 1
    results: tuple[tuple[int, WriteResult], ...] = ()

    def problem(self) -> str | None:
        """Why these are not calls a session could have kept, or None (a damaged store)."""
        numbers = [number for number, _ in self.results]
        if self.low_water < 1 or any(n < self.low_water for n in numbers):
            return f"an answer kept below its low-water mark {self.low_water}"
        if numbers != sorted(set(numbers)):
            return "answers kept out of order, or twice"
        return None

    def result(self, sequence: int) -> WriteResult | None:
        return next((result for number, result in self.results if number == sequence), None)

    def recorded(self, number: CallNumber, result: WriteResult, most: int) -> SessionCalls:
        """These calls with call `number`'s result added, what it acknowledges dropped, and
        at most `most` results kept (the lowest numbers go first)."""
        low_water = max(self.low_water, number.first_unacked)
        kept = sorted([(n, r) for n, r in self.results if n >= low_water] + [
            (number.sequence, result)
        ], key=lambda pair: pair[0])  # fmt: skip
        if len(kept) > most:
            low_water = kept[-most - 1][0] + 1
            kept = kept[-most:]
        return SessionCalls(low_water, tuple(kept))


@frozen(order=True)
class SessionRecord:
    """One live session as the replicated database holds it."""

    session_id: SessionId
    """Unique in the cell, never reused: allocated like node instances, from the log index
    of the `OpenSession` that created it."""
    name: str
    """Who the client says it is (``chubbypy@host:pid`` by default)."""
    nonce: int = 0
    """The client's name for the creation: a retried CreateSession gets this session, if it
    comes from `principal`."""
    calls: SessionCalls = field(factory=SessionCalls, eq=True, order=False)
    """The answers of its calls it may still ask for again."""
    principal: str = ""
    """Who created it (the principal its OpenSession's log command carries; "" for one
    created before principals were recorded, or by a trusted caller). Nonces are in the
    log, which a reader of a replica's store sees: only this principal's retry gets the
    session (issue 13's review)."""
