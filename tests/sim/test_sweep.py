"""The simulator over a fixed list of seeds (the same on every run) plus a batch of fresh ones."""

from __future__ import annotations

import os
import random

import pytest
from attrs import evolve

from chubbypy.testing import SimSettings
from chubbypy.testing.sim_cli import run_seed
from tests.sim.conftest import explain

CHUNK = 10
FIXED = [(3, start) for start in range(0, 40, CHUNK)] + [
    (5, start) for start in range(0, 20, CHUNK)
]
"""60 fixed seeds, 40 on three replicas and 20 on five, in chunks of ten per test: a smoke
test that replays the same runs every time (with the fresh batch below, the regression
seeds and the targeted scenarios); ``make sweep`` runs thousands, fresh, on demand."""

FRESH_START = int(os.environ.get("CHUBBYPY_SIM_START", random.SystemRandom().randrange(10**9)))
"""Fresh seeds differ on every run; set CHUBBYPY_SIM_START to repeat a run's fresh batch."""


def _run_chunk(replicas: int, seeds: range, scenario: str = "random") -> None:
    settings = evolve(SimSettings(), replicas=replicas)
    for seed in seeds:
        result = run_seed(seed, settings, scenario)
        assert result.ok, explain(result, scenario)
        assert result.acknowledged > 0, f"seed {seed}: no operation was acknowledged at all"


@pytest.mark.parametrize(("replicas", "start"), FIXED)
def test_fixed_seeds(replicas: int, start: int) -> None:
    """Random faults over a fixed seed range break no checker."""
    _run_chunk(replicas, range(start, start + CHUNK))


@pytest.mark.parametrize("replicas", [3, 5])
def test_fresh_seeds(replicas: int) -> None:
    """Random faults over seeds never run before break no checker."""
    start = FRESH_START + (0 if replicas == 3 else 10**9)
    print(f"fresh seeds from {start} (CHUBBYPY_SIM_START={FRESH_START})")
    _run_chunk(replicas, range(start, start + CHUNK))


@pytest.mark.parametrize("scenario", ["bridge", "lost-ack", "flapping-master", "stalling-cacher"])
def test_targeted_scenarios_pass(scenario: str) -> None:
    """Each targeted fault pattern, with the bugs it aims at switched off, breaks no checker."""
    _run_chunk(3, range(0, CHUNK), scenario)
