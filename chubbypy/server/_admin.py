"""The admin HTTP port: health, readiness, Prometheus metrics and a JSON status.

Shell side, on twisted.web. ``/healthz`` answers while the process runs; ``/readyz`` only
while the replica votes, knows a master, and has never seen a peer's state checksum differ
from its own (a divergence is loud and stays until an operator acts); ``/metrics`` is the
Prometheus text format; ``/status`` is the replica's view of itself as JSON.
"""

from __future__ import annotations

import json

from attrs import asdict
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from chubbypy.server._http import BoundedSite, HttpLimits
from chubbypy.server._shell import ReplicaServer


class _Text(Resource):
    isLeaf = True

    def __init__(self, replica: ReplicaServer) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.replica = replica

    def render_GET(self, request: Request) -> bytes:
        status, content_type, body = self.answer()
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type.encode())
        request.setHeader(b"cache-control", b"no-store")
        return body.encode()

    def answer(self) -> tuple[int, str, str]:
        raise NotImplementedError


class Healthz(_Text):
    def answer(self) -> tuple[int, str, str]:
        return 200, "text/plain; charset=utf-8", "ok\n"


class Readyz(_Text):
    def answer(self) -> tuple[int, str, str]:
        reason = not_ready_reason(self.replica)
        if reason is None:
            return 200, "text/plain; charset=utf-8", "ready\n"
        return 503, "text/plain; charset=utf-8", f"not ready: {reason}\n"


class Metrics(_Text):
    def answer(self) -> tuple[int, str, str]:
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.replica.node.metrics.render()


class Status(_Text):
    def answer(self) -> tuple[int, str, str]:
        node = self.replica.node
        status = asdict(node.status())
        status["cell"] = self.replica.config.cell
        status["voting"] = node.core.status().voting
        status["divergence"] = node.checksums.divergence
        return 200, "application/json", json.dumps(status, indent=2) + "\n"


def not_ready_reason(server: ReplicaServer) -> str | None:
    """Why this replica should not take traffic, or None if it may."""
    node = server.node
    if node.checksums.divergence is not None:
        return f"state diverged from a peer's: {node.checksums.divergence}"
    if not node.core.status().voting:
        return "rebuilding a lost disk from its peers"
    if node.status().master_hint is None:
        return "no master known (an election is under way, or no quorum)"
    return None


def admin_site(server: ReplicaServer) -> Site:
    """The admin port's site, within the cell file's limits (`BoundedSite`), its refusals
    on /metrics."""
    root = Resource()
    for name, resource in (
        (b"healthz", Healthz(server)),
        (b"readyz", Readyz(server)),
        (b"metrics", Metrics(server)),
        (b"status", Status(server)),
    ):
        root.putChild(name, resource)
    limits = server.config.limits
    site = BoundedSite(
        root,
        HttpLimits(
            connections_max=limits.admin_connections_max,
            request_bytes_max=limits.http_request_bytes_max,
            idle_timeout_seconds=limits.admin_idle_timeout_seconds,
            connections_key="admin_connections_max",
            request_bytes_key="http_request_bytes_max",
            connections_per_address_max=limits.admin_connections_per_address_max,
            connections_per_address_key="admin_connections_per_address_max",
            request_head_seconds=limits.admin_request_head_seconds,
            request_head_seconds_key="admin_request_head_seconds",
            request_head_bytes_max=limits.admin_request_head_bytes_max,
            request_head_bytes_key="admin_request_head_bytes_max",
            log_lines_per_minute=limits.log_lines_per_minute,
        ),
    )
    site.displayTracebacks = False
    metrics = server.node.metrics
    metrics.gauge(
        "chubbypy_admin_connections",
        "Connections to the admin port open (admitted under limits.admin_connections_max).",
        lambda: [((), float(site.connections))],
    )
    metrics.counter_view(
        "chubbypy_admin_connections_refused_total",
        "Admin port connections past limits.admin_connections_max (answered 503, closed).",
        lambda: float(site.refused["connections"]),
    )
    metrics.counter_view(
        "chubbypy_admin_connections_per_address_refused_total",
        "Admin port connections past limits.admin_connections_per_address_max from one "
        "source address (answered 503, closed).",
        lambda: float(site.refused["connections_per_address"]),
    )
    metrics.counter_view(
        "chubbypy_admin_request_heads_too_slow_total",
        "Admin port requests whose line and headers took longer than "
        "limits.admin_request_head_seconds (answered 408, closed).",
        lambda: float(site.refused["request_head_time"]),
    )
    metrics.counter_view(
        "chubbypy_admin_request_heads_too_large_total",
        "Admin port requests whose line (414) or headers (431) were longer than "
        "limits.admin_request_head_bytes_max (closed).",
        lambda: float(site.refused["request_line_bytes"] + site.refused["request_headers_bytes"]),
    )
    metrics.counter_view(
        "chubbypy_admin_requests_too_large_total",
        "Admin port requests with a body past limits.http_request_bytes_max (answered 413).",
        lambda: float(site.refused["request_bytes"]),
    )
    return site
