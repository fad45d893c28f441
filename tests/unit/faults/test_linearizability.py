"""The fault suite's linearizability checker on registers: known good and known bad histories."""

from __future__ import annotations

import random

import pytest
from attrs import evolve

from chubbypy.testing.faults._history import Kind, Op, Outcome
from chubbypy.testing.faults._linearizability import check_operations
from chubbypy.testing.faults._models import Register

INITIAL = ("init", 1)
MS = 1_000_000


def op(
    process: str,
    kind: Kind,
    invoke: float,
    complete: float | None,
    outcome: Outcome = Outcome.OK,
    **fields: object,
) -> Op:
    """An op on register ``register/a``, its times in milliseconds."""
    return Op(
        id=0,
        process=process,
        key="register/a",
        kind=kind,
        invoke_ns=int(invoke * MS),
        complete_ns=None if complete is None else int(complete * MS),
        outcome=outcome,
        **fields,  # type: ignore[arg-type]
    )


def numbered(ops: list[Op]) -> list[Op]:
    """The ops with ids 1, 2, ... (as `read_history` numbers them)."""
    return [evolve(o, id=i) for i, o in enumerate(ops, 1)]


def check(ops: list[Op], steps_max: int = 1_000_000) -> bool | None:
    return check_operations("register/a", Register(INITIAL), numbered(ops), steps_max).linearizable


def read(process: str, invoke: float, complete: float, value: str, generation: int) -> Op:
    return op(process, Kind.READ, invoke, complete, value=value, generation=generation)


def write(
    process: str, invoke: float, complete: float | None, value: str, generation: int | None
) -> Op:
    outcome = Outcome.OK if complete is not None and generation is not None else Outcome.UNKNOWN
    return op(process, Kind.WRITE, invoke, complete, outcome, value=value, generation=generation)


def test_sequential_write_then_read_is_linearizable() -> None:
    """A write, then a read of what it wrote at the generation it made: linearizable."""
    assert check([write("p1", 0, 1, "x", 2), read("p2", 2, 3, "x", 2)]) is True


@pytest.mark.parametrize("seen", [("init", 1), ("x", 2)])
def test_a_read_concurrent_with_a_write_may_see_either(seen: tuple[str, int]) -> None:
    """A read overlapping a write may return the value before it or after it."""
    assert check([write("p1", 0, 10, "x", 2), read("p2", 1, 9, *seen)]) is True


def test_a_stale_read_is_not_linearizable() -> None:
    """A read begun after a write completed must not return the value before the write."""
    verdict = check_operations(
        "register/a",
        Register(INITIAL),
        numbered([write("p1", 0, 1, "x", 2), read("p2", 2, 3, "init", 1)]),
    )
    assert verdict.linearizable is False
    assert verdict.stuck is not None
    assert verdict.stuck.kind is Kind.READ
    assert "no linearization" in verdict.explain()


def test_a_read_of_a_value_never_written_is_not_linearizable() -> None:
    """Reads return only what some write wrote."""
    assert check([write("p1", 0, 1, "x", 2), read("p2", 2, 3, "y", 2)]) is False


def test_a_value_does_not_come_back_after_a_newer_one_was_read() -> None:
    """Two reads in sequence never see the register go back in time."""
    ops = [
        write("p1", 0, 10, "x", 2),
        read("p2", 1, 2, "x", 2),
        read("p3", 3, 4, "init", 1),
    ]
    assert check(ops) is False


def test_two_compare_and_swaps_from_one_generation_cannot_both_succeed() -> None:
    """Concurrent CAS from generation 1, both answered ok: one of them must have failed."""
    ops = [
        op("p1", Kind.CAS, 0, 5, expected=1, value="a", generation=2),
        op("p2", Kind.CAS, 1, 6, expected=1, value="b", generation=2),
    ]
    assert check(ops) is False


def test_one_compare_and_swap_wins_and_the_other_fails() -> None:
    """Of two concurrent CAS from one generation, one succeeds and one is refused."""
    ops = [
        op("p1", Kind.CAS, 0, 5, expected=1, value="a", generation=2),
        op("p2", Kind.CAS, 1, 6, Outcome.FAIL, expected=1, value="b"),
        read("p3", 7, 8, "a", 2),
    ]
    assert check(ops) is True


def test_a_refused_compare_and_swap_at_the_right_generation_is_not_linearizable() -> None:
    """A CAS refused for its generation while the register was at that generation."""
    ops = [op("p1", Kind.CAS, 0, 1, Outcome.FAIL, expected=1, value="a")]
    assert check(ops) is False


def test_a_pending_write_may_take_effect_late() -> None:
    """A write whose outcome is unknown may take effect long after the client gave up."""
    ops = [
        write("p1", 0, None, "x", None),
        read("p2", 5, 6, "init", 1),
        read("p2", 50, 51, "x", 2),
    ]
    assert check(ops) is True


def test_a_pending_write_may_never_take_effect() -> None:
    """A write of unknown outcome that nobody ever sees is fine."""
    ops = [write("p1", 0, None, "x", None), read("p2", 5, 6, "init", 1)]
    assert check(ops) is True


def test_a_pending_write_cannot_take_effect_before_it_was_sent() -> None:
    """A read that completed before a pending write was invoked cannot see it."""
    ops = [read("p2", 0, 1, "x", 2), write("p1", 5, None, "x", None)]
    assert check(ops) is False


def test_generations_count_the_pending_writes_that_took_effect() -> None:
    """Two unobserved pending writes explain a generation two above; three cannot come
    from two."""
    pending = [write(f"p{i}", i, None, f"v{i}", None) for i in range(2)]
    assert check([*pending, write("q", 10, 11, "w", 4), read("r", 12, 13, "w", 4)]) is True
    assert check([*pending, write("q", 10, 11, "w", 5)]) is False


def test_many_interchangeable_pending_writes_are_checked_quickly() -> None:
    """Forty unobserved pending writes and reads that pin how many took effect: the search
    counts them instead of choosing subsets, so it stays small."""
    ops = [write(f"p{i}", i, None, f"v{i}", None) for i in range(40)]
    ops.append(write("q", 100, 101, "last", 22))
    ops.append(read("r", 102, 103, "last", 22))
    verdict = check_operations("register/a", Register(INITIAL), numbered(ops), 200_000)
    assert verdict.linearizable is True
    assert verdict.steps < 20_000


def test_cached_reads_are_judged_like_reads() -> None:
    """A read from the cache that returns an overwritten value is caught too."""
    ops = [
        write("p1", 0, 1, "x", 2),
        op("p2", Kind.CACHED_READ, 2, 3, value="init", generation=1),
    ]
    assert check(ops) is False


def test_the_search_is_bounded() -> None:
    """With a budget too small, the verdict is undecided, which is not a pass."""
    ops = [write(f"p{i}", i, 100 + i, f"v{i}", i + 2) for i in range(6)]
    assert check(ops, steps_max=3) is None


def test_failed_and_unanswered_reads_are_ignored() -> None:
    """A read that failed or was never answered changed nothing and is not judged."""
    ops = [
        write("p1", 0, 1, "x", 2),
        op("p2", Kind.READ, 2, 3, Outcome.FAIL, error="unavailable"),
        op("p2", Kind.READ, 4, None, Outcome.UNKNOWN),
    ]
    assert check(ops) is True


# ----------------------------------------------------------------------------- random


def random_history(seed: int, processes: int = 5, per_process: int = 60) -> list[Op]:
    """A linearizable history by construction: each op takes effect at a random instant
    within its interval, on a real register, in the order of those instants; some writes'
    outcomes are lost (unknown), whether they took effect or not."""
    rng = random.Random(seed)
    planned = []
    for p in range(processes):
        now = rng.uniform(0, 5)
        for n in range(per_process):
            start, end = now, now + rng.uniform(0.1, 10)
            point = rng.uniform(start, end)
            kind = rng.choice([Kind.READ, Kind.READ, Kind.CACHED_READ, Kind.WRITE, Kind.CAS])
            planned.append((point, start, end, f"p{p}", kind, f"p{p}-{n}", rng.random()))
            now = end + rng.uniform(0, 3)
    value, generation = INITIAL
    ops = []
    for _point, start, end, process, kind, token, chance in sorted(planned):
        lost = chance < 0.1 and kind in (Kind.WRITE, Kind.CAS)
        if kind in (Kind.READ, Kind.CACHED_READ):
            ops.append(op(process, kind, start, end, value=value, generation=generation))
            continue
        if kind is Kind.CAS:
            expected = generation if chance < 0.6 else generation - 1
            if expected != generation:
                ops.append(
                    op(process, kind, start, end, Outcome.FAIL, expected=expected, value=token)
                )
                continue
        else:
            expected = None
        took_effect = not lost or chance < 0.05
        if took_effect:
            value, generation = token, generation + 1
        if lost:
            ops.append(
                op(process, kind, start, end, Outcome.UNKNOWN, expected=expected, value=token)
            )
        else:
            ops.append(
                op(process, kind, start, end, expected=expected, value=token, generation=generation)
            )
    return ops


@pytest.mark.parametrize("seed", range(8))
def test_random_linearizable_histories_pass(seed: int) -> None:
    """Histories made linearizable by construction (300 ops, concurrent, some lost) pass."""
    assert check(random_history(seed)) is True


@pytest.mark.parametrize("seed", range(8))
def test_a_planted_stale_read_is_caught(seed: int) -> None:
    """The same histories with one read made stale (it returns a value overwritten by a
    write that completed before the read began) fail."""
    ops = random_history(seed)
    rng = random.Random(seed)
    completed_writes = [
        o for o in ops if o.kind in (Kind.WRITE, Kind.CAS) and o.outcome is Outcome.OK
    ]
    candidates = [
        (r, w)
        for r in ops
        if r.kind is Kind.READ
        for w in completed_writes
        if w.complete_ns is not None
        and w.complete_ns < r.invoke_ns
        and w.generation
        and w.generation > 2
    ]
    planted, newer = rng.choice(candidates)
    older = next(
        o
        for o in completed_writes
        if o.generation is not None
        and newer.generation is not None
        and o.generation < newer.generation
    )
    stale = evolve(planted, value=older.value, generation=older.generation)
    ops[ops.index(planted)] = stale
    verdict = check_operations("register/a", Register(INITIAL), numbered(ops))
    assert verdict.linearizable is False
