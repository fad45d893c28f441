"""The log budget: how many lines of one kind a client or a peer can make a replica write."""

from __future__ import annotations

from chubbypy.node import Counter, LogBudget, left_out_suffix
from chubbypy.node._log_budget import KINDS_MAX


def test_a_burst_is_let_through_up_to_the_budget_then_lines_are_counted() -> None:
    """With 10 lines a minute, the first 10 lines of a kind at once are let through and
    the next 90 are left out, each counted by kind."""
    counter = Counter("left_out_total", "", labelled=True)
    budget = LogBudget(10, 60.0, counter)
    admitted = [budget.admit("refused", 0.0) for _ in range(100)]
    assert admitted[:10] == [0] * 10
    assert admitted[10:] == [None] * 90
    assert counter.value(kind="refused") == 90
    assert budget.left_out_total == 90


def test_the_next_line_let_through_says_how_many_were_left_out() -> None:
    """Once the bucket refills (one line per 6 s at 10 a minute) the next line is let
    through with the count of those left out since the last one, and the count restarts."""
    budget = LogBudget(10, 60.0)
    for _ in range(15):
        budget.admit("timeout", 0.0)
    assert budget.admit("timeout", 5.9) is None
    assert budget.admit("timeout", 6.0) == 6
    assert budget.admit("timeout", 12.0) == 0
    assert left_out_suffix(6) == " (6 more like this were left out of the log since the last one)"
    assert left_out_suffix(0) == ""


def test_kinds_have_budgets_of_their_own() -> None:
    """A flood of one kind of line does not silence another kind."""
    budget = LogBudget(1, 60.0)
    assert budget.admit("a", 0.0) == 0
    assert budget.admit("a", 0.0) is None
    assert budget.admit("b", 0.0) == 0


def test_the_number_of_kinds_remembered_is_bounded() -> None:
    """Past KINDS_MAX kinds the least recently used is forgotten (and starts full again)."""
    budget = LogBudget(1, 60.0)
    for n in range(KINDS_MAX + 1):
        assert budget.admit(f"kind {n}", 0.0) == 0
    assert budget.admit("kind 0", 0.0) == 0  # forgotten, so a fresh bucket
    assert budget.admit(f"kind {KINDS_MAX}", 0.0) is None


def test_a_clock_that_goes_back_refills_nothing() -> None:
    """A `now` earlier than the last one refills nothing (and takes nothing away)."""
    budget = LogBudget(1, 60.0)
    assert budget.admit("a", 100.0) == 0
    assert budget.admit("a", 50.0) is None
    assert budget.admit("a", 160.0) == 1
