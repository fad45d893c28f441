"""Comparing replicas' state checksums (Paxos Made Live §6.2). Pure.

Now and then the master proposes a CHECKSUM entry; every replica that applies it digests its
whole replicated state at that index, and followers send theirs to the master. Equal
replicas give equal digests, so a difference means the replicas diverged: a bug, a disk
that lied, or memory corruption. The book keeps this replica's recent checksums and the
reports that arrive before this replica got to their index (a lagging master), compares each
pair once, and remembers the first divergence for good: it is loud and stays until an
operator acts (the admin port's ``/readyz`` says so).
"""

from __future__ import annotations

from collections import OrderedDict

from chubbypy.protocol import ReplicaId

CHECKSUMS_KEPT = 64
"""Recent checksums a replica remembers, to compare with reports that arrive late; also the
most reports it keeps for indices it has not applied yet."""


class ChecksumBook:
    """This replica's recent checksums and the peers' reports; see the module docstring."""

    def __init__(self, replica_id: ReplicaId) -> None:
        self._replica_id = replica_id
        self._mine: OrderedDict[int, bytes] = OrderedDict()
        self._early: dict[int, dict[ReplicaId, bytes]] = {}
        self.compared = 0
        self.mismatches = 0
        self.last: dict[ReplicaId, tuple[int, bool]] = {}
        """Per peer, the index of the last comparison of its checksum with ours, and
        whether they matched (the master's view of each follower)."""
        self.divergence: str | None = None
        """Set, and never cleared, when a peer's checksum differs from ours at some index."""

    def taken(self, index: int, checksum: bytes) -> list[str]:
        """This replica's checksum at `index`; the divergences it reveals (with reports that
        came first)."""
        self._mine[index] = checksum
        while len(self._mine) > CHECKSUMS_KEPT:
            self._mine.popitem(last=False)
        found = []
        for sender, theirs in self._early.pop(index, {}).items():
            found += self._compare(sender, index, theirs)
        return found

    def reported(self, sender: ReplicaId, index: int, checksum: bytes, applied: int) -> list[str]:
        """A peer's checksum at `index` (we have applied through `applied`): compared now,
        kept for when we get there, or dropped (too old to compare, or too many waiting)."""
        if index in self._mine:
            return self._compare(sender, index, checksum)
        if index > applied and len(self._early) < CHECKSUMS_KEPT:
            self._early.setdefault(index, {})[sender] = checksum
        return []

    def _compare(self, sender: ReplicaId, index: int, theirs: bytes) -> list[str]:
        self.compared += 1
        mine = self._mine[index]
        if index >= self.last.get(sender, (-1, True))[0]:
            self.last[sender] = (index, theirs == mine)
        if theirs == mine:
            return []
        self.mismatches += 1
        found = (
            f"at index {index} {sender}'s state checksum is {theirs.hex()}, "
            f"{self._replica_id}'s is {mine.hex()}"
        )
        self.divergence = self.divergence or found
        return [found]
