"""Every seed that once exposed a bug replays on every run (tests/sim/regression_seeds.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest
from attrs import evolve

from chubbypy.testing._cell import KNOWN_BUGS
from chubbypy.testing.sim_cli import _settings, run_seed
from tests.sim.conftest import explain


class KnownBugSeen(Exception):
    """The seed of a known bug failed as expected: by that bug's checker, and no other."""


def _regressions() -> list[object]:
    lines = (Path(__file__).parent / "regression_seeds.txt").read_text().splitlines()
    rows: list[object] = []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        scenario, replicas, seed, *rest = fields
        known = "xfail" in rest
        workload = next((f for f in rest if f != "xfail"), "registers")
        row = (scenario, int(replicas), int(seed), workload, known)
        marks = (
            [pytest.mark.xfail(reason="a known bug", raises=KnownBugSeen, strict=True)]
            if known
            else []
        )
        rows.append(pytest.param(*row, marks=marks, id=f"{scenario}-{replicas}-{seed}-{workload}"))
    return rows


@pytest.mark.parametrize(("scenario", "replicas", "seed", "workload", "known"), _regressions())
def test_regression_seed(
    scenario: str, replicas: int, seed: int, workload: str, known: bool
) -> None:
    """A seed that once failed now passes every checker (a known bug's seed: every checker,
    its own included, judges it; it fails until the bug is fixed)."""
    settings = _settings(replicas, [], 1.0, workload)
    if known:
        settings = evolve(settings, known_bugs=frozenset())
    result = run_seed(seed, settings, scenario)
    checkers = {violation.checker for violation in result.violations}
    if known and checkers and checkers <= KNOWN_BUGS.keys():
        raise KnownBugSeen(explain(result, scenario, f" --workload {workload}"))
    assert result.ok, explain(result, scenario, f" --workload {workload}")
