"""Every seed that once exposed a bug replays on every run (tests/sim/regression_seeds.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chubbypy.testing.sim_cli import _settings, run_seed
from tests.sim.conftest import explain


def _regressions() -> list[tuple[str, int, int, str]]:
    lines = (Path(__file__).parent / "regression_seeds.txt").read_text().splitlines()
    rows = []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if fields:
            scenario, replicas, seed, *workload = fields
            rows.append((scenario, int(replicas), int(seed), *(workload or ["registers"])))
    return rows


@pytest.mark.parametrize(("scenario", "replicas", "seed", "workload"), _regressions())
def test_regression_seed(scenario: str, replicas: int, seed: int, workload: str) -> None:
    """A seed that once failed now passes every checker."""
    settings = _settings(replicas, [], 1.0, workload)
    result = run_seed(seed, settings, scenario)
    assert result.ok, explain(result, scenario, f" --workload {workload}")
