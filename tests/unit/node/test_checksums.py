"""State checksums (Paxos Made Live §6.2): the master asks, every replica digests, the
followers report to the master, which compares."""

from __future__ import annotations

from chubbypy.node import NoteLevel, SendChecksum
from chubbypy.paxos import ChecksumTaken
from chubbypy.protocol import ReplicaId
from chubbypy.protocol.client import ChecksumReport
from tests.unit.node.harness import R1, R2, R3, Cell, metric

EVERY = 10


def checksummed() -> Cell:
    """A cell whose master r1 asked for one checksum and heard both followers' reports."""
    cell = Cell(checksum_every_ticks=EVERY)
    cell.elect(R1)
    cell.run(EVERY + 4)
    cell.nodes[R1].checksum_requests = False  # no more, so that the counts stay put
    cell.run(4)
    return cell


def taken(cell: Cell, rid: ReplicaId) -> list[ChecksumTaken]:
    return [
        result
        for applied in cell.applied(rid)
        for result in applied.results
        if isinstance(result, ChecksumTaken)
    ]


def test_the_master_asks_and_followers_report_to_it() -> None:
    """Every `checksum_every_ticks` the master proposes a CHECKSUM; each follower applies it
    and sends its digest to the master (the master sends none)."""
    cell = checksummed()
    (mine,) = taken(cell, R1)
    for rid in (R2, R3):
        assert [(o.recipient, o.report) for o in cell.of(rid, SendChecksum)] == [
            (R1, ChecksumReport(mine.index, mine.checksum))
        ]
    assert cell.of(R1, SendChecksum) == []


def test_equal_reports_count_comparisons_and_no_mismatch() -> None:
    """A peer's report equal to ours counts a comparison, and nothing else."""
    cell = checksummed()
    book = cell.nodes[R1].checksums
    assert (book.compared, book.mismatches, book.divergence) == (2, 0, None)
    assert cell.notes(R1, NoteLevel.CRITICAL) == []
    assert metric(cell.nodes[R1], "chubbypy_checksum_comparisons_total") == 2
    assert metric(cell.nodes[R1], "chubbypy_checksum_mismatches_total") == 0


def test_a_different_report_is_a_divergence() -> None:
    """A report that differs from ours sets `checksums.divergence`, counts a mismatch and
    leaves a CRITICAL note naming the index and both replicas; the replica's status (what
    `chubbypy status` asks) counts it too."""
    cell = checksummed()
    (mine,) = taken(cell, R1)
    node = cell.nodes[R1]
    cell.report(R3, R1, ChecksumReport(mine.index, b"\x00" * 8))
    book = node.checksums
    assert (book.compared, book.mismatches) == (3, 1)
    assert book.divergence is not None
    assert f"at index {mine.index}" in book.divergence
    (critical,) = cell.notes(R1, NoteLevel.CRITICAL)
    assert "REPLICAS DIVERGED" in critical
    assert f"{R3}'s state checksum is 0000000000000000, {R1}'s is {mine.checksum.hex()}" in critical
    assert metric(node, "chubbypy_checksum_mismatches_total") == 1
    assert book.last[R3] == (mine.index, False)
    assert metric(node, f'chubbypy_checksum_last_matched{{peer="{R3}"}}') == 0
    assert metric(node, f'chubbypy_checksum_last_compared_index{{peer="{R3}"}}') == mine.index
    assert node.status().checksum_mismatches == 1


def test_a_divergence_is_kept_for_good() -> None:
    """Once set, the divergence stays, even after a later equal report."""
    cell = checksummed()
    (mine,) = taken(cell, R1)
    node = cell.nodes[R1]
    cell.report(R3, R1, ChecksumReport(mine.index, b"bad"))
    first = node.checksums.divergence
    cell.report(R2, R1, ChecksumReport(mine.index, mine.checksum))
    assert node.checksums.divergence == first is not None


def test_a_report_for_an_index_not_yet_applied_is_compared_when_we_get_there() -> None:
    """A report that arrives before this replica applied its index is kept and compared when
    the replica applies the CHECKSUM entry."""
    cell = Cell(checksum_every_ticks=EVERY)
    cell.elect(R1)
    late = cell.nodes[R3]
    cell.isolate(R3)  # it falls behind (for less than a lease: it does not campaign)
    for _ in range(EVERY + 4):
        if cell.of(R2, SendChecksum):
            break
        cell.run(1)
    cell.nodes[R1].checksum_requests = False
    (mine,) = taken(cell, R1)
    assert late.applier.applied_index < mine.index
    report = next(o.report for o in cell.of(R2, SendChecksum))  # r2's, as if sent to r3
    cell.report(R2, R3, report)
    assert late.checksums.compared == 0
    cell.heal()
    cell.run(6)  # r3 hears the master again and catches up
    assert late.applier.applied_index >= mine.index
    assert (late.checksums.compared, late.checksums.mismatches) == (1, 0)


def test_a_report_too_old_to_compare_is_dropped() -> None:
    """A report for an index this replica passed without a checksum of its own is ignored."""
    cell = checksummed()
    node = cell.nodes[R1]
    cell.report(R2, R1, ChecksumReport(1, b"whatever"))
    assert (node.checksums.compared, node.checksums.mismatches) == (2, 0)
