"""A sorted set of names for a directory's children. Pure: a data structure, no I/O.

ReadDir pages through a directory in name order, and a directory may hold 100,000 children
or more, so finding a page must not scan the directory. A single sorted list would page in
O(log n + page) but would move n/2 pointers on every insertion in the middle. Like
`sortedcontainers.SortedList`, this keeps the names in sublists of `load` to `2 * load`
names each, with the last name of each sublist in `_maxes`: a lookup is two bisections, and
an insertion or removal moves at most `2 * load` names plus, when a sublist splits or
empties, one entry of `_maxes`. Sublists that shrink are not merged; a directory that grew
large and then shrank keeps some small sublists, which costs a little memory, never
correctness.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator


class SortedNames:
    """Distinct strings in sorted order; see the module docstring."""

    __slots__ = ("_length", "_lists", "_load", "_maxes")

    def __init__(self, names: Iterable[str] = (), load: int = 1000) -> None:
        assert load >= 1, load
        ordered = sorted(names)
        assert all(a < b for a, b in itertools.pairwise(ordered)), "names must be distinct"
        self._load = load
        self._lists = [ordered[i : i + load] for i in range(0, len(ordered), load)]
        self._maxes = [sublist[-1] for sublist in self._lists]
        self._length = len(ordered)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[str]:
        return itertools.chain.from_iterable(self._lists)

    def add(self, name: str) -> None:
        """Insert `name`, which must not be present."""
        if not self._lists:
            self._lists.append([name])
            self._maxes.append(name)
        else:
            # The first sublist whose last name is not below `name`; past the end, the last.
            position = min(bisect_left(self._maxes, name), len(self._maxes) - 1)
            names = self._lists[position]
            assert names[min(bisect_left(names, name), len(names) - 1)] != name, name
            insort(names, name)
            self._maxes[position] = names[-1]
            if len(names) > 2 * self._load:
                self._split(position)
        self._length += 1

    def _split(self, position: int) -> None:
        names = self._lists[position]
        upper = names[self._load :]
        del names[self._load :]
        self._lists.insert(position + 1, upper)
        self._maxes[position] = names[-1]
        self._maxes.insert(position + 1, upper[-1])

    def remove(self, name: str) -> None:
        """Remove `name`, which must be present."""
        position = bisect_left(self._maxes, name)
        assert position < len(self._maxes), name
        names = self._lists[position]
        index = bisect_left(names, name)
        assert names[index] == name, name
        del names[index]
        if names:
            self._maxes[position] = names[-1]
        else:
            del self._lists[position]
            del self._maxes[position]
        self._length -= 1

    def page(self, after: str, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` names greater than `after`, and whether more follow them."""
        assert limit >= 1, limit
        wanted = limit + 1  # one more than asked for tells whether more follow
        position = bisect_right(self._maxes, after)
        found: list[str] = []
        if position < len(self._lists):
            start = bisect_right(self._lists[position], after)
            found.extend(self._lists[position][start : start + wanted])
        position += 1
        while position < len(self._lists) and len(found) < wanted:
            found.extend(self._lists[position][: wanted - len(found)])
            position += 1
        return found[:limit], len(found) > limit
