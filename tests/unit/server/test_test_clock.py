"""The fault suite's test clock hook: a replica clock at a file's rate, within the drift bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from chubbypy.server._test_clock import LOOK_SECONDS, RateClock, rate_problem


class FakeTime:
    """A real clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    tmp_path: Path, rate: str, drift: float = 0.01
) -> tuple[RateClock, FakeTime, Path, list[str]]:
    path = tmp_path / "rate"
    path.write_text(rate)
    real, warnings = FakeTime(), []
    return RateClock(path, drift, warnings.append, real), real, path, warnings


def test_the_clock_runs_at_the_files_rate(tmp_path: Path) -> None:
    """At rate 1.01, ten real seconds are 10.1 seconds of the replica's clock."""
    clock, real, _, _ = make(tmp_path, "1.01\n")
    start = clock()
    real.now += 10
    assert clock() - start == pytest.approx(10.1)


def test_a_new_rate_applies_from_when_it_is_read_without_a_jump(tmp_path: Path) -> None:
    """Changing the file changes the rate from then on; the time so far is kept."""
    clock, real, path, warnings = make(tmp_path, "1.01")
    start = clock()
    real.now += 10
    path.write_text("0.99")
    at_change = clock()
    assert at_change - start == pytest.approx(10.1)
    real.now += 10
    assert clock() - at_change == pytest.approx(9.9)
    assert warnings == []


def test_the_file_is_read_only_every_so_often(tmp_path: Path) -> None:
    """Within LOOK_SECONDS of the last look the rate is not read again."""
    clock, real, path, _ = make(tmp_path, "1.0")
    real.now += LOOK_SECONDS / 2
    path.write_text("1.01")
    clock()
    assert clock.rate == 1.0
    real.now += LOOK_SECONDS
    clock()
    assert clock.rate == 1.01


@pytest.mark.parametrize("rate", ["1.02", "0.98", "nan", "inf"])
def test_a_rate_beyond_the_drift_bound_is_refused_at_start(tmp_path: Path, rate: str) -> None:
    """A clock the lease arithmetic does not allow for cannot be started."""
    with pytest.raises(ValueError, match="clock_drift_max"):
        make(tmp_path, rate)


def test_a_file_without_a_number_is_refused_at_start(tmp_path: Path) -> None:
    """The error names the file and what it holds."""
    with pytest.raises(ValueError, match="holds 'fast', not a number"):
        make(tmp_path, "fast")


def test_a_missing_file_is_refused_at_start(tmp_path: Path) -> None:
    """The error names the file."""
    with pytest.raises(ValueError, match="cannot read the clock rate file"):
        RateClock(tmp_path / "absent", 0.01, print)


def test_a_later_rate_beyond_the_bound_is_ignored_with_one_warning(tmp_path: Path) -> None:
    """The clock keeps its rate, and says so once, not at every look."""
    clock, real, path, warnings = make(tmp_path, "1.005")
    path.write_text("1.5")
    for _ in range(3):
        real.now += LOOK_SECONDS
        clock()
    assert clock.rate == 1.005
    assert len(warnings) == 1
    assert "outside 1 ± paxos.clock_drift_max (0.01)" in warnings[0]
    path.unlink()
    real.now += LOOK_SECONDS
    clock()
    assert clock.rate == 1.005
    assert "cannot read the clock rate file" in warnings[-1]


def test_rate_problem_allows_exactly_the_bound() -> None:
    """Rates 1 - e and 1 + e are allowed; a hair more is not."""
    assert rate_problem(1.01, 0.01) is None
    assert rate_problem(0.99, 0.01) is None
    assert rate_problem(1.0100001, 0.01) is not None
