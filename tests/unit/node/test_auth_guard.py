"""The guard on failed authentications: per connection, per source address, bounded."""

from __future__ import annotations

from chubbypy.node import AuthLimits, ConnectionId
from chubbypy.node._auth_guard import ADDRESSES_MAX, AuthGuard

ONE, TWO = ConnectionId(1), ConnectionId(2)


def test_a_connection_is_closed_at_its_limit_and_forgotten_when_closed() -> None:
    """`failed` says to close on the connection's last allowed failure; a closed
    connection's count is forgotten."""
    guard = AuthGuard(AuthLimits(failures_per_connection_max=2, failures_per_address_max=100))
    assert guard.failed(ONE, "h", 0) is False
    assert guard.failed(ONE, "h", 0) is True
    assert guard.failed(TWO, "h", 0) is False
    guard.connection_closed(ONE)
    assert guard.failed(ONE, "h", 0) is False


def test_an_address_is_refused_when_its_bucket_is_empty_until_it_refills() -> None:
    """Three failures per 30 ticks: the fourth attempt is refused for 10 ticks (one
    failure's worth of refill), then allowed."""
    guard = AuthGuard(AuthLimits(failures_per_address_max=3, window_ticks=30))
    for n in range(3):
        assert guard.refusal("h", 0) is None
        guard.failed(ConnectionId(n), "h", 0)
    assert guard.refusal("h", 0) == 10
    assert guard.refusal("h", 6) == 4
    assert guard.refusal("h", 10) is None
    assert guard.refusal("elsewhere", 0) is None


def test_refusals_unchecked_cost_the_connection_only() -> None:
    """`refused` counts against the connection, not the address's bucket."""
    guard = AuthGuard(AuthLimits(failures_per_connection_max=2, failures_per_address_max=1))
    guard.failed(ONE, "h", 0)
    assert guard.refused(TWO) is False
    assert guard.refused(TWO) is True
    assert guard.refusal("h", 0) is not None


def test_the_addresses_remembered_are_bounded() -> None:
    """Failures from more than ADDRESSES_MAX hosts keep at most ADDRESSES_MAX buckets, the
    oldest failure's host forgotten first."""
    guard = AuthGuard(AuthLimits(failures_per_address_max=1, window_ticks=1_000_000))
    for n in range(ADDRESSES_MAX + 10):
        guard.failed(ConnectionId(n), f"host {n}", n)
    assert guard.addresses == ADDRESSES_MAX
    assert guard.refusal("host 0", ADDRESSES_MAX + 10) is None
    assert guard.refusal(f"host {ADDRESSES_MAX + 9}", ADDRESSES_MAX + 10) is not None
