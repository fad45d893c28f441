"""The Multi-Paxos replicated log: a pure core driven by messages, proposals and ticks.

`Replica` is the log itself (acceptor, learner, and master with leases and epochs);
`Applier` applies what it commits to a `StateMachine` with the epoch guard and exactly-once
semantics. Neither touches a clock, a socket, a disk or a random number generator: the
shell passes ticks, messages and a `Chance` in, and handles each `Ready` that comes out.
"""

from chubbypy.paxos._applier import (
    Applier,
    ChecksumTaken,
    Outcome,
    OutcomeKind,
    StateMachine,
)
from chubbypy.paxos._chance import Bug, Chance, NoChance
from chubbypy.paxos._membership import (
    genesis_membership,
    membership_of_ids,
    membership_problem,
    successor_problem,
)
from chubbypy.paxos._ready import (
    BecameMaster,
    Campaigning,
    Durable,
    HardState,
    LeaseAcquired,
    LeaseLost,
    MembershipChanged,
    PeerProgress,
    Persisted,
    Ready,
    Rebuilt,
    RefusalReason,
    Refused,
    ReplicaEvent,
    Role,
    SnapshotInstalled,
    StartedServing,
    Status,
    StepDownReason,
    SteppedDown,
    describe_event,
)
from chubbypy.paxos._replica import ForeignHistory, Replica, persisted_problem
from chubbypy.paxos._settings import (
    Limits,
    Timing,
    drift_fraction,
    master_lease_ticks_for,
    ticks_covering,
    ticks_within,
)

__all__ = [
    "Applier",
    "BecameMaster",
    "Bug",
    "Campaigning",
    "Chance",
    "ChecksumTaken",
    "Durable",
    "ForeignHistory",
    "HardState",
    "LeaseAcquired",
    "LeaseLost",
    "Limits",
    "MembershipChanged",
    "NoChance",
    "Outcome",
    "OutcomeKind",
    "PeerProgress",
    "Persisted",
    "Ready",
    "Rebuilt",
    "RefusalReason",
    "Refused",
    "Replica",
    "ReplicaEvent",
    "Role",
    "SnapshotInstalled",
    "StartedServing",
    "StateMachine",
    "Status",
    "StepDownReason",
    "SteppedDown",
    "Timing",
    "describe_event",
    "drift_fraction",
    "genesis_membership",
    "master_lease_ticks_for",
    "membership_of_ids",
    "membership_problem",
    "persisted_problem",
    "successor_problem",
    "ticks_covering",
    "ticks_within",
]
