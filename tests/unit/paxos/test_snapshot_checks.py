"""A snapshot is decoded and checked whole before it replaces anything (issue 13, item 4).

`Applier.snapshot_problem` decodes an applier's snapshot (its bookkeeping, then the
machine's part, by the machine) and says what is wrong, changing nothing; `Applier.restore`
of a snapshot with a problem raises DecodeError and changes nothing either. Snapshots come
from peers (InstallSnapshot) and from disks that may be damaged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chubbypy.namespace import NamespaceMachine
from chubbypy.paxos import Applier
from chubbypy.protocol import (
    EPOCH_MAX,
    MASTER_CLIENT,
    NO_CLIENT,
    Ballot,
    Command,
    Entry,
    Epoch,
    LogIndex,
    ReplicaId,
    Value,
    ValueKind,
)
from chubbypy.protocol.codec import DecodeError
from tests.unit.namespace.test_machine import CELL, _populated

BALLOT = Ballot(3, ReplicaId("r1"))


def applier_of(machine: NamespaceMachine) -> Applier:
    return Applier(machine, clients_max=8, client_results_max=8)


def taken() -> tuple[LogIndex, bytes]:
    """A snapshot of a populated namespace with two clients, one holding a result, at 4."""
    applier = applier_of(_populated().machine)
    values = [
        Value(Epoch(3), ValueKind.EPOCH_START),
        Value(Epoch(3), ValueKind.COMMANDS, (Command(NO_CLIENT, 71, b""),)),
        Value(Epoch(3), ValueKind.COMMANDS, (Command(NO_CLIENT, 72, b""),)),
        Value(Epoch(3), ValueKind.COMMANDS, (Command(1, 1, b"not a write", 0),)),  # type: ignore[arg-type]
    ]
    for index, value in enumerate(values, 1):
        applier.apply(Entry(LogIndex(index), BALLOT, value))
    assert applier.cached_result(1, 1) is not None  # type: ignore[arg-type]
    return LogIndex(len(values)), applier.snapshot()


INDEX, GOOD = taken()


def plain(data: bytes = GOOD) -> list[Any]:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)  # type: ignore[no-any-return]


def pack(data: object) -> bytes:
    return bytes(msgpack.packb(data, use_bin_type=True))


def edited(edit: Callable[[list[Any]], object]) -> bytes:
    """GOOD with `edit` applied to its plain form (state, machine)."""
    snapshot = plain()
    edit(snapshot)
    return pack(snapshot)


def set_at(path: tuple[int, ...], value: object) -> Callable[[list[Any]], object]:
    def edit(snapshot: list[Any]) -> None:
        target = snapshot
        for position in path[:-1]:
            target = target[position]
        target[path[-1]] = value

    return edit


# state = [applied_index, epoch, next_client_id, clients]; a client =
# [id, last_index, low_water, nonce, [[sequence, result], ...]]
BAD: dict[str, bytes] = {
    "empty": b"",
    "garbage": b"\xc1garbage" * 10,
    "truncated": GOOD[:-5],
    "trailing bytes": GOOD + b"\x00",
    "not a pair": pack([1, 2, 3]),
    "index of another snapshot": edited(set_at((0, 0), INDEX + 1)),
    "index as text": edited(set_at((0, 0), "4")),
    "epoch past its range": edited(set_at((0, 1), EPOCH_MAX + 1)),
    "negative epoch": edited(set_at((0, 1), -1)),
    "next client id zero": edited(set_at((0, 2), 0)),
    "next client id past 64 bits": edited(set_at((0, 2), 2**64 - 1)),
    "clients not a list": edited(set_at((0, 3), {})),
    "client id zero": edited(set_at((0, 3, 0, 0), 0)),
    "client at the next id": edited(set_at((0, 3, 1, 0), 3)),
    "client twice": edited(set_at((0, 3, 1, 0), 1)),
    "nonce twice": edited(set_at((0, 3, 1, 3), 71)),
    "client seen after the snapshot": edited(set_at((0, 3, 0, 1), INDEX + 1)),
    "low water past 64 bits": edited(set_at((0, 3, 0, 2), 2**63)),
    "result twice": edited(lambda s: s[0][3][0][4].append(s[0][3][0][4][0])),
    "result not bytes": edited(set_at((0, 3, 0, 4, 0, 1), "text")),
    "machine not bytes": edited(set_at((1,), "text")),
    "machine garbage": edited(set_at((1,), b"\xc1")),
    "machine of another cell": edited(set_at((1,), NamespaceMachine(CELL + "x").snapshot())),
    "machine not a tree": edited(
        lambda s: s.__setitem__(1, pack([*plain(s[1])[:2], plain(s[1])[2][1:], []]))
    ),
}


def test_a_good_snapshot_has_no_problem_and_restores() -> None:
    """The snapshot taken restores into a fresh applier with the same checksum."""
    source = applier_of(_populated().machine)
    copy = applier_of(NamespaceMachine(CELL))
    assert copy.snapshot_problem(INDEX, GOOD) is None
    copy.restore(INDEX, GOOD)
    assert copy.applied_index == INDEX
    assert copy.epoch == 3
    assert copy.cached_result(1, 1) is not None  # type: ignore[arg-type]
    assert copy.snapshot() == GOOD
    assert copy.checksum() != source.checksum()  # the clients differ from a bare machine's


@pytest.mark.parametrize("data", list(BAD.values()), ids=list(BAD))
def test_a_bad_snapshot_is_named_and_restores_nothing(data: bytes) -> None:
    """Each damaged snapshot gets a problem from snapshot_problem, and restore raises
    DecodeError and leaves the applier and its machine exactly as they were."""
    applier = applier_of(_populated().machine)
    before = (applier.checksum(), applier.snapshot(), applier.applied_index)
    problem = applier.snapshot_problem(INDEX, data)
    assert problem, problem
    with pytest.raises(DecodeError):
        applier.restore(INDEX, data)
    assert (applier.checksum(), applier.snapshot(), applier.applied_index) == before


def test_the_master_client_is_never_restored_as_a_client() -> None:
    """MASTER_CLIENT is above every id a snapshot may list (it skips the client table)."""
    snapshot = plain()
    snapshot[0][2] = MASTER_CLIENT
    snapshot[0][3][1][0] = MASTER_CLIENT
    assert applier_of(NamespaceMachine(CELL)).snapshot_problem(INDEX, pack(snapshot))


def _mutated(data: bytes, draw: st.DataObject) -> bytes:
    body = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 3))):
        position = draw.draw(st.integers(0, len(body) - 1))
        match draw.draw(st.sampled_from(["overwrite", "insert", "cut"])):
            case "overwrite":
                body[position] = draw.draw(st.integers(0, 255))
            case "insert":
                body[position:position] = draw.draw(st.binary(min_size=1, max_size=5))
            case _:
                del body[position : position + draw.draw(st.integers(1, 5))]
    return bytes(body)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(draw=st.data())
def test_a_damaged_snapshot_never_raises_and_restores_whole_or_not_at_all(
    draw: st.DataObject,
) -> None:
    """A snapshot with bytes overwritten, inserted or cut: snapshot_problem never raises,
    and restore either takes it (when it has no problem) or raises DecodeError alone and
    changes nothing."""
    data = _mutated(GOOD, draw)
    applier = applier_of(_populated().machine)
    before = applier.snapshot()
    problem = applier.snapshot_problem(INDEX, data)
    if problem is None:
        applier.restore(INDEX, data)
        assert applier.applied_index == INDEX
    else:
        with pytest.raises(DecodeError):
            applier.restore(INDEX, data)
        assert applier.snapshot() == before


leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.sampled_from([0, 1, 2, 2**32, 2**63 - 1, 2**63, 2**64 - 1])
    | st.text(max_size=6)
    | st.binary(max_size=6)
    | st.lists(st.integers(0, 3), max_size=3)
)


def _paths(data: object, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every position in nested lists, leaves and lists alike."""
    found = [path] if path else []
    if isinstance(data, list):
        for position, item in enumerate(data):
            found += _paths(item, (*path, position))
    return found


@settings(max_examples=300, deadline=None, derandomize=True)
@given(draw=st.data())
def test_any_one_field_of_a_namespace_snapshot_replaced_never_raises(
    draw: st.DataObject,
) -> None:
    """The machine's own part with any one field (node, lock holder, session, answer)
    replaced by arbitrary data: snapshot_problem never raises, and restore takes it whole
    or raises DecodeError and changes nothing."""
    machine_plain = plain(plain()[1])
    path = draw.draw(st.sampled_from(_paths(machine_plain)))
    set_at(path, draw.draw(leaf))(machine_plain)
    data = edited(set_at((1,), pack(machine_plain)))
    applier = applier_of(_populated().machine)
    before = applier.snapshot()
    if applier.snapshot_problem(INDEX, data) is None:
        applier.restore(INDEX, data)
    else:
        with pytest.raises(DecodeError):
            applier.restore(INDEX, data)
        assert applier.snapshot() == before
