"""Fixtures for the integration tests: a live three-replica cell per test, logs on failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import OPEN_CELLS, LiveCell, Measure


@pytest.fixture
def make_cell(tmp_path: Path) -> Iterator[Callable[..., LiveCell]]:
    """Starts a new cell in the test's directory (with `LiveCell`'s options); stops it after."""
    cells: list[LiveCell] = []

    def make(**options: Any) -> LiveCell:
        cell = LiveCell(tmp_path / f"cell{len(cells) + 1}", **options)
        cells.append(cell)
        cell.start()
        return cell

    yield make
    for cell in cells:
        cell.close()


@pytest.fixture
def cell(make_cell: Callable[..., LiveCell]) -> LiveCell:
    """A new three-replica cell with the default settings, serving."""
    return make_cell()


MEASURED = "measured: "
"""The prefix of the user properties that `measure` records."""


@pytest.fixture
def measure(record_property: Callable[[str, object], None]) -> Measure:
    """Records a measured duration: printed (with -s) and listed at the end of the run."""

    def record(name: str, seconds: float) -> None:
        print(f"\n{MEASURED}{name}: {seconds:.3f} s", flush=True)
        record_property(MEASURED + name, round(seconds, 3))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every duration the tests measured, also when xdist workers ran them."""
    lines = [
        f"{value:7.3f} s  {key.removeprefix(MEASURED)}  ({report.nodeid.rpartition('::')[2]})"
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for key, value in getattr(report, "user_properties", ())
        if key.startswith(MEASURED)
    ]
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report shows what each of its cells' replicas said and logged."""
    report = yield
    if report.failed:
        for cell in OPEN_CELLS:
            report.sections.append((f"replicas of {cell.name} ({cell.directory})", cell.explain()))
    return report
