"""SortedNames, the children index: it behaves as a plain sorted list, whatever the load."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chubbypy.namespace._sorted import SortedNames

names = st.text(alphabet="abc", max_size=3)
operations = st.lists(st.tuples(st.sampled_from(["add", "remove"]), names), max_size=60)


def _page(reference: list[str], after: str, limit: int) -> tuple[list[str], bool]:
    following = [name for name in reference if name > after]
    return following[:limit], len(following) > limit


@pytest.mark.parametrize("load", [1, 2, 3, 1000])
@settings(max_examples=150, deadline=None, derandomize=True)
@given(initial=st.sets(names), steps=operations, after=names, limit=st.integers(1, 8))
def test_matches_a_plain_sorted_list(
    load: int, initial: set[str], steps: list[tuple[str, str]], after: str, limit: int
) -> None:
    """After any adds and removes, order, length and every page equal a sorted list's."""
    sorted_names = SortedNames(initial, load=load)
    reference = sorted(initial)
    for operation, name in steps:
        if operation == "add" and name not in reference:
            sorted_names.add(name)
            reference.append(name)
        elif operation == "remove" and name in reference:
            sorted_names.remove(name)
            reference.remove(name)
        reference.sort()
        assert list(sorted_names) == reference
    assert len(sorted_names) == len(reference)
    assert sorted_names.page(after, limit) == _page(reference, after, limit)


def test_adding_an_existing_name_or_removing_a_missing_one_is_a_programmer_error() -> None:
    """add and remove assert that the name is absent or present."""
    sorted_names = SortedNames(["a", "c"], load=1)
    with pytest.raises(AssertionError):
        sorted_names.add("c")
    with pytest.raises(AssertionError):
        sorted_names.remove("b")
    with pytest.raises(AssertionError):
        sorted_names.remove("d")
    with pytest.raises(AssertionError):
        SortedNames(["a", "a"])


def test_100000_names_in_random_order() -> None:
    """100,000 shuffled adds, then removing every third, leave a sorted set that pages right."""
    shuffled = [f"{i:06d}" for i in range(100_000)]
    random.Random(5).shuffle(shuffled)
    sorted_names = SortedNames()
    for name in shuffled:
        sorted_names.add(name)
    for name in shuffled[::3]:
        sorted_names.remove(name)
    kept = sorted(set(shuffled) - set(shuffled[::3]))
    assert list(sorted_names) == kept
    assert sorted_names.page(kept[5000], 3) == (kept[5001:5004], True)
    assert sorted_names.page(kept[-2], 3) == ([kept[-1]], False)
