"""A seed replays exactly: same trace, same result, whatever the process's hash seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from attrs import evolve

from chubbypy.testing import SimSettings
from chubbypy.testing.sim_cli import run_seed

SCRIPT = (
    "import json; from attrs import evolve; from chubbypy.testing import SimSettings;"
    "from chubbypy.testing.sim_cli import run_seed;"
    "r = run_seed(11, evolve(SimSettings(), replicas=5));"
    "print(json.dumps([r.trace_hash, r.events, r.committed_index, r.acknowledged]))"
)


def test_same_seed_same_run_in_one_process() -> None:
    """Running a seed twice gives identical traces and results."""
    first = run_seed(11, evolve(SimSettings(), replicas=5))
    second = run_seed(11, evolve(SimSettings(), replicas=5))
    assert first == second


def test_same_seed_same_run_across_hash_seeds() -> None:
    """A seed replays identically in fresh processes with different PYTHONHASHSEED values."""
    expected = run_seed(11, evolve(SimSettings(), replicas=5))
    for hash_seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
        output = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            env=environment,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        trace, events, committed, acknowledged = json.loads(output)
        assert (trace, events, committed, acknowledged) == (
            expected.trace_hash,
            expected.events,
            expected.committed_index,
            expected.acknowledged,
        )


def test_different_seeds_differ() -> None:
    """Different seeds give different runs (the trace depends on the seed)."""
    assert run_seed(1, SimSettings()).trace_hash != run_seed(2, SimSettings()).trace_hash


def test_narrating_does_not_change_the_run() -> None:
    """A narrated replay is the same run as a silent one (same trace)."""
    from chubbypy.testing import SimCell

    lines: list[str] = []
    narrated = SimCell(13, SimSettings(), narrate=lines.append).run_scenario()
    silent = SimCell(13, SimSettings()).run_scenario()
    assert narrated == silent
    assert any("checked lease safety" in line for line in lines)
