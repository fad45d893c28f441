"""The cell page's figures: every replica's ``/status`` and ``/metrics``, polled, as history.

The pure part (`parse_metrics`, `CellHistory`) takes what each poll found and keeps the
last ``web.chart_points`` rounds; from consecutive rounds it draws the charts' points:
writes and reads per second (the replicas' ``chubbypy_client_operations_total``), the
99th percentile of the time a write and a read take to be answered (the buckets of
``chubbypy_client_write_seconds`` and ``chubbypy_client_read_seconds`` filled since the
round before, from every replica), and of the time to make a batch durable
(``chubbypy_fsync_seconds``), and live
sessions (``chubbypy_sessions``, which only the master counts). A replica whose counters
went down restarted: its new count is taken as the increase.

`StatusPoller` is the shell: a `LoopingCall` that asks each replica's admin port (a public
interface of the replicas: no secret, no change) once per ``web.status_poll_seconds``,
with a deadline, reading at most `ADMIN_BODY_BYTES_MAX` of each answer, and tells its
listeners when the serving master changes (the page shows a fail-over as a banner).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from attrs import define, frozen
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.iweb import IResponse

__all__ = [
    "CellHistory",
    "ChartPoint",
    "ReplicaSample",
    "Round",
    "StatusPoller",
    "parse_metrics",
]

ADMIN_BODY_BYTES_MAX: Final = 1 << 20
"""A replica's /metrics is a few KiB; anything near this is not a replica's."""
ADMIN_TIMEOUT_SECONDS: Final = 2.0
P99: Final = 0.99

Labels = tuple[tuple[str, str], ...]
Metrics = dict[str, dict[Labels, float]]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> Metrics:
    """The samples of a Prometheus text page: name -> labels -> value (comments and lines
    that are not samples are skipped)."""
    metrics: Metrics = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        pairs = tuple(sorted(_LABEL.findall(labels or "")))
        metrics.setdefault(name, {})[pairs] = number
    return metrics


@frozen
class ReplicaSample:
    """What one replica's admin port said in one round (None where it did not answer)."""

    status: Mapping[str, Any] | None
    metrics: Metrics | None
    problem: str | None = None


@frozen
class Round:
    """One poll of every replica, at `time` (seconds on the web server's clock)."""

    time: float
    replicas: Mapping[str, ReplicaSample]

    def master(self) -> tuple[str, int] | None:
        """The serving replica and its epoch, if exactly one serves."""
        serving = [
            (rid, int(sample.status.get("epoch", 0)))
            for rid, sample in self.replicas.items()
            if sample.status is not None and sample.status.get("serving")
        ]
        return serving[0] if len(serving) == 1 else None


@frozen
class ChartPoint:
    """The charts' values over the interval that ends at `time`."""

    time: float
    writes_per_second: float
    reads_per_second: float
    fsync_p99_ms: float | None
    """None when no replica made anything durable in the interval."""
    sessions: float
    write_p99_ms: float | None = None
    """The 99th percentile of the writes answered in the interval, from the replicas'
    ``chubbypy_client_write_seconds`` (None: none was)."""
    read_p99_ms: float | None = None
    """Of the reads (``chubbypy_client_read_seconds``)."""


def _value(metrics: Metrics | None, name: str, **labels: str) -> float | None:
    if metrics is None or name not in metrics:
        return None
    return metrics[name].get(tuple(sorted(labels.items())))


def _increase(before: float | None, after: float | None) -> float:
    """How much a counter rose (a counter that went down was restarted from zero)."""
    if after is None:
        return 0.0
    if before is None or after < before:
        return after if before is not None else 0.0
    return after - before


def _buckets(metrics: Metrics | None, name: str) -> dict[float, float]:
    """A histogram's cumulative buckets: upper bound -> count."""
    if metrics is None or f"{name}_bucket" not in metrics:
        return {}
    found = {}
    for labels, count in metrics[f"{name}_bucket"].items():
        bound = dict(labels).get("le")
        if bound is not None:
            found[math.inf if bound == "+Inf" else float(bound)] = count
    return found


def quantile(buckets: Mapping[float, float], fraction: float) -> float | None:
    """The `fraction` quantile of cumulative `buckets` (upper bound -> count), as the upper
    bound of the bucket it falls in (the largest finite bound for the +Inf bucket)."""
    total = buckets.get(math.inf, max(buckets.values(), default=0.0))
    if total <= 0:
        return None
    finite = sorted(b for b in buckets if b != math.inf)
    for bound in finite:
        if buckets[bound] >= fraction * total:
            return bound
    return finite[-1] if finite else None


class CellHistory:
    """The last `points_max` rounds, and the charts drawn from them; see the module
    docstring. Pure: the poller adds rounds, pages read."""

    def __init__(self, replica_ids: Iterable[str], points_max: int) -> None:
        self.replica_ids = tuple(replica_ids)
        self._rounds: deque[Round] = deque(maxlen=points_max + 1)
        self._compared_at: dict[str, float] = {}
        """When the serving master last compared each replica's state checksum with its own
        (for the master itself: when it last compared any)."""

    def add(self, round_: Round) -> tuple[str, int] | None:
        """Keep `round_`; the new master and epoch if the serving master changed since
        the last round that had one."""
        before = self.last_master()
        previous = self._rounds[-1] if self._rounds else None
        master = round_.master()
        if master is not None:
            rid = master[0]
            before_compared = self.last_compared(previous, rid)  # {} if not seen then
            for peer, index in self.last_compared(round_, rid).items():
                was = before_compared.get(peer)
                seen = previous is not None and previous.replicas.get(rid) is not None
                if seen and (was is None or index[0] > was[0]):
                    self._compared_at[peer] = self._compared_at[rid] = round_.time
        self._rounds.append(round_)
        now = round_.master()
        if now is not None and before is not None and now != before:
            return now
        return None

    def last_master(self) -> tuple[str, int] | None:
        for round_ in reversed(self._rounds):
            master = round_.master()
            if master is not None:
                return master
        return None

    @property
    def latest(self) -> Round | None:
        return self._rounds[-1] if self._rounds else None

    @staticmethod
    def last_compared(round_: Round | None, master: str) -> dict[str, tuple[int, bool]]:
        """Per follower, as `master`'s metrics in `round_` say: the index of the last
        comparison of its state checksum with the master's, and whether they matched."""
        sample = round_.replicas.get(master) if round_ is not None else None
        metrics = sample.metrics if sample is not None else None
        if metrics is None:
            return {}
        indices = metrics.get("chubbypy_checksum_last_compared_index", {})
        matched = metrics.get("chubbypy_checksum_last_matched", {})
        found = {}
        for labels, index in indices.items():
            peer = dict(labels).get("peer")
            if peer is not None:
                found[peer] = (int(index), matched.get(labels, 0.0) == 1.0)
        return found

    def compared_at(self, replica_id: str) -> float | None:
        """When this page last saw `replica_id` compare a state checksum, or None."""
        return self._compared_at.get(replica_id)

    def points(self) -> list[ChartPoint]:
        """One point per pair of consecutive rounds, oldest first."""
        rounds = list(self._rounds)
        return [_point(a, b) for a, b in itertools.pairwise(rounds)]


def _point(before: Round, after: Round) -> ChartPoint:
    seconds = max(after.time - before.time, 1e-9)
    writes = reads = sessions = 0.0
    latencies: dict[str, dict[float, float]] = {name: {} for name in _P99_HISTOGRAMS}
    for rid, sample in after.replicas.items():
        old = before.replicas.get(rid)
        old_metrics = old.metrics if old is not None else None
        name = "chubbypy_client_operations_total"
        writes += _increase(
            _value(old_metrics, name, op="write"), _value(sample.metrics, name, op="write")
        )
        reads += _increase(
            _value(old_metrics, name, op="read"), _value(sample.metrics, name, op="read")
        )
        sessions += _value(sample.metrics, "chubbypy_sessions") or 0.0
        for name, filled in latencies.items():
            then = _buckets(old_metrics, name)
            for bound, count in _buckets(sample.metrics, name).items():
                filled[bound] = filled.get(bound, 0.0) + _increase(then.get(bound), count)
    p99 = {name: quantile(filled, P99) for name, filled in latencies.items()}
    ms = {name: None if value is None else value * 1000 for name, value in p99.items()}
    return ChartPoint(
        time=after.time,
        writes_per_second=writes / seconds,
        reads_per_second=reads / seconds,
        fsync_p99_ms=ms["chubbypy_fsync_seconds"],
        sessions=sessions,
        write_p99_ms=ms["chubbypy_client_write_seconds"],
        read_p99_ms=ms["chubbypy_client_read_seconds"],
    )


_P99_HISTOGRAMS: Final = (
    "chubbypy_fsync_seconds",
    "chubbypy_client_write_seconds",
    "chubbypy_client_read_seconds",
)
"""The histograms whose 99th percentile over each interval is charted, every replica's
buckets added together."""


# ----------------------------------------------------------------------------- the shell


class _BoundedBody(Protocol):
    """Collects a response body, giving up (and closing) past a bound."""

    def __init__(self, finished: Deferred[bytes], bytes_max: int) -> None:
        self._finished = finished
        self._bytes_max = bytes_max
        self._parts: list[bytes] = []
        self._received = 0

    def dataReceived(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self._bytes_max:
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if self._finished.called:
            return
        if self._received > self._bytes_max:
            self._finished.errback(ValueError(f"an answer longer than {self._bytes_max} bytes"))
        elif reason.check(ResponseDone):  # type: ignore[no-untyped-call]
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(reason)


@define
class _Listener:
    callback: Callable[[str, int, str | None], None]


class StatusPoller:
    """Polls every replica's admin port into a `CellHistory`; see the module docstring."""

    def __init__(
        self,
        reactor: IReactorTime,
        admin_urls: Mapping[str, str],
        history: CellHistory,
        poll_seconds: float,
    ) -> None:
        self._reactor = reactor
        self._agent = Agent(reactor, connectTimeout=ADMIN_TIMEOUT_SECONDS)
        self._urls = dict(admin_urls)
        self.history = history
        self._loop = LoopingCall(self._poll)
        self._loop.clock = reactor
        self._poll_seconds = poll_seconds
        self.on_master_changed: list[Callable[[str, int, str | None], None]] = []
        """Called with the new master, its epoch and the one before (None if unknown)."""

    def start(self) -> None:
        self._loop.start(self._poll_seconds, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _poll(self) -> Deferred[None]:
        return ensureDeferred(self.poll_once())

    async def poll_once(self) -> None:
        """Ask every replica once and add the round."""
        asked = [ensureDeferred(self._sample(url)) for url in self._urls.values()]
        answers = await DeferredList(asked, consumeErrors=True)
        samples = {}
        for rid, (ok, sample) in zip(self._urls, answers, strict=True):
            samples[rid] = sample if ok else ReplicaSample(None, None, "no answer")
        before = self.history.last_master()
        changed = self.history.add(Round(self._reactor.seconds(), samples))
        if changed is not None:
            for callback in list(self.on_master_changed):
                callback(changed[0], changed[1], before[0] if before else None)

    async def _sample(self, url: str) -> ReplicaSample:
        try:
            status = json.loads(await self._get(url + "/status"))
            metrics = parse_metrics((await self._get(url + "/metrics")).decode("utf-8", "replace"))
        except Exception as error:  # any failure of a replica's answer is that replica's
            return ReplicaSample(None, None, f"{type(error).__name__}: {error}"[:200])
        if not isinstance(status, dict):
            return ReplicaSample(None, None, "its /status is not a JSON object")
        return ReplicaSample(status, metrics)

    async def _get(self, url: str) -> bytes:
        requested = self._agent.request(b"GET", url.encode())
        requested.addTimeout(ADMIN_TIMEOUT_SECONDS, self._reactor)
        response: IResponse = await requested
        if response.code != 200:
            raise ValueError(f"{url} answered {response.code}")
        finished: Deferred[bytes] = Deferred()
        response.deliverBody(_BoundedBody(finished, ADMIN_BODY_BYTES_MAX))
        finished.addTimeout(ADMIN_TIMEOUT_SECONDS, self._reactor)
        return await finished
