"""Prometheus text-format metrics: counters, gauges and histograms with labels.

Pure: plain numbers that the node counts as it goes, rendered as text when a shell asks
(the admin port's ``/metrics``). Deliberately tiny: a replica exposes a few dozen series;
a dependency would do more than we need. Names follow Prometheus conventions (``_total``
for counters, base units such as seconds).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Counter:
    """A monotonically rising count, per label set.

    A counter without labels is exported as 0 from the start: a series that first appears
    at 1 hides its first increment from Prometheus's rate() and increase().
    """

    def __init__(self, name: str, help_text: str, *, labelled: bool = False) -> None:
        self.name, self.help_text = name, help_text
        self._values: dict[Labels, float] = {} if labelled else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        assert amount >= 0, amount
        key = tuple(sorted(labels.items()))
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} counter"
        for key, value in sorted(self._values.items()):
            yield f"{self.name}{_labels(key)} {_number(value)}"


class Gauge:
    """A value read when the metrics are scraped."""

    def __init__(
        self, name: str, help_text: str, read: Callable[[], Iterable[tuple[Labels, float]]]
    ):
        self.name, self.help_text = name, help_text
        self._read = read

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} gauge"
        for key, value in self._read():
            yield f"{self.name}{_labels(key)} {_number(value)}"


class Histogram:
    """Observations counted into fixed buckets (cumulative, as Prometheus expects)."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help_text = name, help_text
        self._bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} histogram"
        running = 0
        for bound, count in zip(self._bounds, self._counts, strict=False):
            running += count
            yield f'{self.name}_bucket{{le="{_number(bound)}"}} {running}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self._count}'
        yield f"{self.name}_sum {_number(self._sum)}"
        yield f"{self.name}_count {self._count}"


class CounterView:
    """A counter kept elsewhere (a plain number some part counts), read when scraped."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name, self.help_text = name, help_text
        self._read = read

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} counter"
        yield f"{self.name} {_number(self._read())}"


Metric = Counter | CounterView | Gauge | Histogram


class Registry:
    """Every metric of a process, rendered together."""

    def __init__(self) -> None:
        self._metrics: list[Metric] = []

    def add(self, metric: Metric) -> Metric:
        self._metrics.append(metric)
        return metric

    def counter(self, name: str, help_text: str, *, labelled: bool = False) -> Counter:
        counter = Counter(name, help_text, labelled=labelled)
        self._metrics.append(counter)
        return counter

    def histogram(self, name: str, help_text: str, buckets: tuple[float, ...]) -> Histogram:
        histogram = Histogram(name, help_text, buckets)
        self._metrics.append(histogram)
        return histogram

    def gauge(
        self, name: str, help_text: str, read: Callable[[], Iterable[tuple[Labels, float]]]
    ) -> Gauge:
        gauge = Gauge(name, help_text, read)
        self._metrics.append(gauge)
        return gauge

    def counter_view(self, name: str, help_text: str, read: Callable[[], float]) -> CounterView:
        view = CounterView(name, help_text, read)
        self._metrics.append(view)
        return view

    def render(self) -> str:
        return "".join(line + "\n" for metric in self._metrics for line in metric.lines())
