"""Timing and limits of the Paxos core, in ticks and counts. Pure: built once from configuration.

The core never sees seconds. `Timing.from_seconds` converts them once, and this is where the
master-lease arithmetic lives: how much shorter the master's view of its lease must be than
the promise its acceptors made, given the bound on clock drift.
"""

from __future__ import annotations

import math
from fractions import Fraction

from attrs import frozen


def master_lease_ticks_for(lease_ticks: int, clock_drift_max: Fraction) -> int:
    """The longest lease, in the master's ticks, that is safe against acceptors' `lease_ticks`.

    An acceptor that accepts a message while its tick counter reads m refuses every other
    proposer until its counter reaches m + lease_ticks: at least lease_ticks - 1 of its ticks
    after the message arrived, since it arrived somewhere inside tick m. The master dates its
    lease from the tick n in which it *sent* that message, which is no later than the arrival,
    and holds it while its counter is below n + K: at most K of its own ticks after sending.
    Each clock runs at a rate within [1 - e, 1 + e] of true time (e = clock_drift_max), so in
    true time the acceptor's promise lasts at least (lease_ticks - 1) / (1 + e) ticks and the
    master's belief at most K / (1 - e). The belief must end first:

        K <= (lease_ticks - 1) * (1 - e) / (1 + e)

    Message delay only makes the acceptor's promise start later, never earlier, so it cannot
    break this. A process that stalls is covered too, because the shell catches its tick
    counter up from the clock before it handles anything else.
    """
    assert 0 <= clock_drift_max < 1, clock_drift_max
    bound = Fraction(lease_ticks - 1) * (1 - clock_drift_max) / (1 + clock_drift_max)
    return math.floor(bound)


def ticks_within(seconds: float, tick_seconds: float) -> int:
    """`seconds` as whole ticks, rounded down: for a promise that must not be overstated (an
    acceptor's lease, a session lease). The tiny slack keeps 0.6 / 0.025 at 24, not 23."""
    return math.floor(seconds / tick_seconds + 1e-9)


def ticks_covering(seconds: float, tick_seconds: float) -> int:
    """`seconds` as whole ticks, rounded up and at least one: for a wait that must last at
    least that long (heartbeats, retries, jitter, how early to answer a KeepAlive)."""
    return max(1, math.ceil(seconds / tick_seconds - 1e-9))


def drift_fraction(clock_drift_max: float) -> Fraction:
    """The configured drift bound as an exact fraction, for lease arithmetic."""
    return Fraction(clock_drift_max).limit_denominator(1_000_000)


@frozen
class Timing:
    """Every duration the core uses, in ticks of the replica's own clock."""

    lease_ticks: int
    """How long an acceptor refuses other proposers after accepting from a master."""
    master_lease_ticks: int
    """How long the master trusts its lease after sending the message a quorum accepted."""
    heartbeat_ticks: int
    """How often the master renews its lease and resends unacknowledged accepts."""
    election_jitter_ticks: int
    """Random extra wait before campaigning, so replicas rarely campaign at once."""
    retry_ticks: int
    """How long to wait for a promise round or a catch-up reply before trying again."""

    def __attrs_post_init__(self) -> None:
        assert self.lease_ticks >= 4, self.lease_ticks
        assert 2 <= self.master_lease_ticks < self.lease_ticks, self
        # Renew at least twice per lease so one lost round does not cost the lease.
        assert 1 <= self.heartbeat_ticks * 2 <= self.master_lease_ticks, self
        assert self.election_jitter_ticks >= 1, self
        assert self.retry_ticks >= 1, self

    @classmethod
    def from_seconds(
        cls,
        *,
        tick_seconds: float,
        lease_seconds: float,
        clock_drift_max: float,
        heartbeat_seconds: float,
        election_jitter_seconds: float,
        retry_seconds: float,
    ) -> Timing:
        """Convert configured seconds to ticks, rounding every duration the safe way."""

        def ticks(seconds: float) -> int:
            return ticks_covering(seconds, tick_seconds)

        lease_ticks = ticks_within(lease_seconds, tick_seconds)
        drift = drift_fraction(clock_drift_max)
        return cls(
            lease_ticks=lease_ticks,
            master_lease_ticks=master_lease_ticks_for(lease_ticks, drift),
            heartbeat_ticks=ticks(heartbeat_seconds),
            election_jitter_ticks=ticks(election_jitter_seconds),
            retry_ticks=ticks(retry_seconds),
        )


@frozen
class Limits:
    """Every queue and batch bound of the core; each is a configuration value."""

    batch_entries_max: int = 64
    """Commands in one Paxos instance."""
    batch_bytes_max: int = 1 << 20
    """Bytes of commands in one Paxos instance (payloads plus a fixed header each)."""
    proposals_inflight_max: int = 32
    """Instances the master may have proposed but not yet seen chosen (the pipeline window)."""
    proposals_queued_max: int = 10_000
    """Commands waiting for a place in the window; more are refused as overload."""
    catchup_entries_max: int = 256
    """Entries in one catch-up reply or promise."""
    log_retain_entries: int = 1_000
    """Entries kept before the latest snapshot, so a slightly lagging replica needs no snapshot."""

    def __attrs_post_init__(self) -> None:
        assert self.batch_entries_max >= 1, self
        assert self.batch_bytes_max >= 1, self
        assert self.proposals_inflight_max >= 1, self
        assert self.proposals_queued_max >= self.batch_entries_max, self
        # A promise page should hold at least a window's worth of entries, so the usual tail
        # a new master must recover comes in one page (longer tails come in several).
        assert self.catchup_entries_max >= self.proposals_inflight_max, self
        assert self.log_retain_entries >= 0, self
