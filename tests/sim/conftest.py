"""Shared helpers for simulator tests: run seeds, explain failures with the replay command."""

from __future__ import annotations

from chubbypy.testing import SimResult


def explain(result: SimResult, scenario: str = "random", extra: str = "") -> str:
    """A failure message that says what broke and how to replay it exactly."""
    lines = [str(v) for v in result.violations]
    replay = f"chubbypy-sim --seed {result.seed} --replicas {result.replicas}"
    if scenario != "random":
        replay += f" --scenario {scenario}"
    return "\n".join([*lines, f"replay: {replay}{extra} --narrate"])
