"""Every seed that once exposed a bug replays on every run (tests/sim/regression_seeds.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest
from attrs import evolve

from chubbypy.testing import SimSettings
from chubbypy.testing.sim_cli import run_seed
from tests.sim.conftest import explain


def _regressions() -> list[tuple[str, int, int]]:
    lines = (Path(__file__).parent / "regression_seeds.txt").read_text().splitlines()
    rows = []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if fields:
            scenario, replicas, seed = fields
            rows.append((scenario, int(replicas), int(seed)))
    return rows


@pytest.mark.parametrize(("scenario", "replicas", "seed"), _regressions())
def test_regression_seed(scenario: str, replicas: int, seed: int) -> None:
    """A seed that once failed now passes every checker."""
    result = run_seed(seed, evolve(SimSettings(), replicas=replicas), scenario)
    assert result.ok, explain(result, scenario)
