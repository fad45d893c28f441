"""Failed authentications per connection and per source address, and the limits on them.
Pure: the node's memory, driven by its ticks (issue 13: about 11,000 wrong-token
Authenticate requests a second were allowed, each checked and logged).

Theory of operation.

* **Per connection**: a connection may fail `failures_per_connection_max` times; the
  failure that reaches it is answered, and then the connection is closed. A client that
  knows its token never fails twice, and a guesser must open a new connection (a hello,
  under the connection limit) for every few guesses.
* **Per source address**: a token bucket of `failures_per_address_max` failures, refilled
  at that many per `window_ticks`. While an address's bucket is empty, its Authenticate
  requests are refused at once *without the token being looked at*, so that guessing is
  slowed to the refill rate however many connections the guesser opens, and a right
  guess made meanwhile teaches it nothing. Only failures cost: a client with the right
  token is never slowed by its own successes.
* **Memory** is bounded: at most `ADDRESSES_MAX` addresses are remembered, the one whose
  last failure is oldest forgotten first (a forgotten address starts again with a full
  bucket, which is what it would have refilled to unless the flood is wider than the
  table). An address is a host as the connection's peer names it; a guesser that
  controls many source addresses (a whole IPv6 prefix, say) gets a bucket per address.

A failed authentication also takes the principal the connection had away: it acts as
anonymous (if the cell serves anonymous clients) or as no one until it authenticates
again (`chubbypy.node._node`). A connection therefore never goes on acting as a
principal after presenting a token that was not that principal's.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from attrs import define, frozen

from chubbypy.node._outputs import ConnectionId

__all__ = ["ADDRESSES_MAX", "AuthGuard", "AuthLimits"]

ADDRESSES_MAX: Final = 10_000
"""Source addresses whose recent failures are remembered at once."""


@frozen
class AuthLimits:
    """The limits on failed authentications; the names are the cell file's keys under
    ``limits:`` (the window there in seconds, here in ticks)."""

    failures_per_connection_max: int = 3
    failures_per_address_max: int = 20
    window_ticks: int = 2_400

    def __attrs_post_init__(self) -> None:
        assert self.failures_per_connection_max >= 1, self
        assert self.failures_per_address_max >= 1, self
        assert self.window_ticks >= 1, self


@define
class _Bucket:
    tokens: float
    updated: int


class AuthGuard:
    """Failed authentications per connection and per address; see the module docstring."""

    def __init__(self, limits: AuthLimits) -> None:
        self._limits = limits
        self._capacity = float(limits.failures_per_address_max)
        self._rate = limits.failures_per_address_max / limits.window_ticks
        self._failures: dict[ConnectionId, int] = {}
        self._addresses: OrderedDict[str, _Bucket] = OrderedDict()

    def refusal(self, address: str, now: int) -> int | None:
        """None if `address` may try to authenticate at tick `now`; else the ticks until
        it may (its bucket of failures is empty)."""
        bucket = self._addresses.get(address)
        if bucket is None:
            return None
        self._refill(bucket, now)
        if bucket.tokens >= 1.0:
            return None
        return max(1, int((1.0 - bucket.tokens) / self._rate + 0.999999))

    def failed(self, connection: ConnectionId, address: str, now: int) -> bool:
        """An authentication on `connection`, from `address`, failed at tick `now`: True if
        the connection has now failed as often as it may (close it)."""
        self._spend(address, now)
        return self.refused(connection)

    def refused(self, connection: ConnectionId) -> bool:
        """An authentication on `connection` was refused unchecked (its address is over
        its budget), which counts against the connection alone: True to close it."""
        failures = self._failures.get(connection, 0) + 1
        self._failures[connection] = failures
        return failures >= self._limits.failures_per_connection_max

    def _spend(self, address: str, now: int) -> None:
        bucket = self._addresses.pop(address, None)
        if bucket is None:
            bucket = _Bucket(self._capacity, now)
            if len(self._addresses) >= ADDRESSES_MAX:
                self._addresses.popitem(last=False)
        else:
            self._refill(bucket, now)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)
        self._addresses[address] = bucket  # the most recent failure goes last

    def connection_closed(self, connection: ConnectionId) -> None:
        self._failures.pop(connection, None)

    @property
    def connection_max(self) -> int:
        """Failures a connection may have; the last one closes it."""
        return self._limits.failures_per_connection_max

    @property
    def addresses(self) -> int:
        """Addresses remembered (for tests: bounded by `ADDRESSES_MAX`)."""
        return len(self._addresses)

    def _refill(self, bucket: _Bucket, now: int) -> None:
        elapsed = max(0, now - bucket.updated)
        bucket.tokens = min(self._capacity, bucket.tokens + elapsed * self._rate)
        bucket.updated = max(bucket.updated, now)
