"""Randomness and deliberate faults, passed into the core so it stays deterministic.

The core never imports `random`. It asks a `Chance` for the little randomness Paxos needs
(election jitter) and, in simulation only, whether to take a rare path (`buggify`).
`Bug` names the defects the checkers must catch: a test switches one on and expects the
simulator to report a violation (Paxos Made Live §6.3: leave known bugs in to test the tests).
"""

from __future__ import annotations

import enum
from typing import Protocol


class Chance(Protocol):
    """A source of randomness for the core."""

    def randint(self, low: int, high: int) -> int:
        """A uniformly chosen integer in [low, high]."""
        ...

    def buggify(self, site: str) -> bool:
        """Whether to take a rare path at `site`: always False outside simulation."""
        ...


class Bug(enum.Enum):
    """A deliberate defect, switched on only by tests that prove the checkers catch it."""

    REPLY_BEFORE_PERSIST = "reply-before-persist"
    """The shell sends a Ready's messages before its writes are durable."""
    IGNORE_LEASE_END = "ignore-lease-end"
    """The master keeps believing in its lease after it ends, and never steps down for it."""
    SKIP_EPOCH_CHECK = "skip-epoch-check"
    """The state machine applies commands proposed under an epoch that is no longer current."""
    ACCEPTOR_IGNORES_LEASE = "acceptor-ignores-lease"
    """An acceptor promises a new proposer while it still leases itself to the master."""
    FORGET_ACCEPTED_VALUES = "forget-accepted-values"
    """A new master proposes no-ops instead of adopting values its promises reported."""
    NO_DEDUPLICATION = "no-deduplication"
    """A retried command is applied again instead of getting its original result."""
    COUNT_LEARNER_IN_QUORUM = "count-learner-in-quorum"
    """Learners' acceptances, promises and lease acknowledgements count towards quorums as
    voters' do."""
    CANDIDATE_IGNORES_CHAIN = "candidate-ignores-chain"
    """A candidate wins with a majority of the membership in effect at its first unchosen
    instance alone, ignoring the changes among the values it re-proposes."""
    REMOVED_MASTER_STAYS = "removed-master-stays"
    """A master whose removal is chosen keeps its mastership and its lease."""


class NoChance:
    """A `Chance` for tests that need no randomness: always the low end, never buggify."""

    def randint(self, low: int, high: int) -> int:
        return low

    def buggify(self, site: str) -> bool:
        return False
