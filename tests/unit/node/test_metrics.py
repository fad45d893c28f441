"""The node's metrics as the admin port renders them (`node.metrics.render()`)."""

from __future__ import annotations

import re

from chubbypy.protocol import MASTER_CLIENT, ClientId
from chubbypy.protocol.namespace import Create, GetContentsAndStat
from chubbypy.protocol.session import KeepAlive
from tests.unit.node.harness import R1, R2, ROOT, Cell, metric

SERIES = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$')


def busy() -> Cell:
    """A cell whose master registered a client, applied two writes, answered a read and
    refused two requests, and whose follower refused two."""
    cell = Cell()
    cell.elect(R1)
    cell.run(2)
    client = cell.connect(R1)
    client_id = cell.register(client)
    cell.written(client, client_id, 1, Create(f"{ROOT}/a"))
    cell.written(client, client_id, 2, Create(f"{ROOT}/b"))
    client.read(GetContentsAndStat(f"{ROOT}/a"))
    client.write(ClientId(MASTER_CLIENT), 1, Create(f"{ROOT}/c"))  # unknown_client
    client.call(KeepAlive(12345, b"forged", 0))  # permission_denied
    follower = cell.connect(R2)
    follower.read(GetContentsAndStat(ROOT))
    follower.write(client_id, 3, Create(f"{ROOT}/d"))
    cell.settle()
    return cell


def test_proposals_count_the_clients_commands_proposed() -> None:
    """chubbypy_proposals_total counts the registration and the writes the master proposed;
    reads, refusals and a follower's refused writes propose nothing."""
    cell = busy()
    assert metric(cell.nodes[R1], "chubbypy_proposals_total") == 3
    assert metric(cell.nodes[R2], "chubbypy_proposals_total") == 0


def test_client_operations_count_reads_and_writes_done() -> None:
    """chubbypy_client_operations_total counts the reads answered and the writes applied."""
    node = busy().nodes[R1]
    assert metric(node, 'chubbypy_client_operations_total{op="write"}') == 2
    assert metric(node, 'chubbypy_client_operations_total{op="read"}') == 1


def test_errors_are_counted_by_code() -> None:
    """chubbypy_client_errors_total counts each refusal under its code, on the replica that
    refused it."""
    cell = busy()
    master, follower = cell.nodes[R1], cell.nodes[R2]
    assert metric(master, 'chubbypy_client_errors_total{code="unknown_client"}') == 1
    assert metric(master, 'chubbypy_client_errors_total{code="permission_denied"}') == 1
    assert metric(master, 'chubbypy_client_errors_total{code="not_master"}') == 0
    assert metric(follower, 'chubbypy_client_errors_total{code="not_master"}') == 2


def test_a_fresh_node_renders_its_unlabelled_counters_at_zero() -> None:
    """Before anything happened, the proposals counter is there, at 0 (so Prometheus sees
    the first increment), and no labelled series is invented."""
    text = Cell().nodes[R1].metrics.render()
    assert "chubbypy_proposals_total 0\n" in text
    assert "chubbypy_client_operations_total{" not in text
    assert "chubbypy_client_errors_total{" not in text


def test_gauges_show_role_and_log_positions() -> None:
    """The role gauge marks each replica's role; the applied index is the applier's."""
    cell = busy()
    master, follower = cell.nodes[R1], cell.nodes[R2]
    assert metric(master, 'chubbypy_role{role="master"}') == 1
    assert metric(follower, 'chubbypy_role{role="follower"}') == 1
    assert metric(follower, 'chubbypy_role{role="master"}') == 0
    assert metric(master, "chubbypy_applied_index") == master.applier.applied_index
    assert metric(master, "chubbypy_epoch") == master.core.epoch


def test_the_rendering_is_prometheus_text() -> None:
    """Every metric has HELP and TYPE lines, and every other line is one sample."""
    text = busy().nodes[R1].metrics.render()
    lines = text.splitlines()
    assert text.endswith("\n")
    names = {line.split()[2] for line in lines if line.startswith("# TYPE ")}
    assert names == {line.split()[2] for line in lines if line.startswith("# HELP ")}
    assert {"chubbypy_proposals_total", "chubbypy_client_errors_total"} <= names
    for line in lines:
        assert line.startswith("# ") or SERIES.match(line), line
