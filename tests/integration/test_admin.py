"""The admin port of live replicas: health, readiness, status and metrics."""

from __future__ import annotations

from tests.integration.harness import REPLICA_IDS, LiveCell


def test_admin_pages_describe_a_healthy_cell(cell: LiveCell) -> None:
    """Every replica is healthy and ready, and their statuses agree on one master and epoch."""
    client = cell.client()
    client.create(cell.path("f"), b"x")
    master = cell.wait_ready()
    for rid in REPLICA_IDS:
        if rid != master:
            cell.wait_caught_up(rid, 10)
    leader = cell.status(master)
    assert leader is not None, cell.explain()
    for rid in REPLICA_IDS:
        assert cell.admin_get(rid, "/healthz") == "ok\n"
        assert cell.readyz(rid) == (200, "ready\n"), cell.explain()
        status = cell.status(rid)
        assert status is not None
        assert (status["replica_id"], status["cell"]) == (rid, cell.name)
        assert (status["master_hint"], status["epoch"]) == (master, leader["epoch"]), status
        assert (status["voting"], status["divergence"]) == (True, None), status
        assert status["role"] == ("master" if rid == master else "follower"), status
        assert status["serving"] is (rid == master), status
        assert status["applied_index"] == leader["applied_index"], status
    assert cell.metric(master, "chubbypy_lease_valid") == 1
    assert cell.metric(master, "chubbypy_voting") == 1
    assert cell.metric(master, "chubbypy_proposals_total") >= 1


def test_counters_are_exported_as_zero_before_their_first_event(cell: LiveCell) -> None:
    """A counter that never counted yet is on /metrics with the value 0."""
    body = cell.admin_get(cell.wait_master(), "/metrics")
    assert body is not None
    assert "\nchubbypy_checksum_mismatches_total 0\n" in body, body
