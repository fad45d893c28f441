"""Per-principal quotas on nodes and bytes (`chubbypy.namespace._quota`), applied in the
replicated namespace: the principal a log command carries creates the node and is charged
for it; operators and nodes with no creator are exempt."""

from __future__ import annotations

import msgpack
import pytest

from chubbypy.namespace import NamespaceLimits, NamespaceMachine, quota_problem
from chubbypy.namespace._records import decode_snapshot
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Create,
    Delete,
    EndSession,
    InSession,
    LogWrite,
    MultiOp,
    OpenSession,
    SessionOpened,
    SetContents,
    WriteResult,
    Written,
)
from chubbypy.protocol.namespace_codec import (
    decode_log_write,
    decode_log_write_by,
    decode_result,
    encode_log_write,
)
from tests.unit.namespace.harness import CELL, at

LIMITS = NamespaceLimits(
    nodes_per_principal_max=3, bytes_per_principal_max=100, quota_exempt=frozenset({"operator"})
)


class Quota:
    """A machine under LIMITS fed one write per log index, each as some principal."""

    def __init__(self, limits: NamespaceLimits = LIMITS) -> None:
        self.machine = NamespaceMachine(CELL, limits)
        self.index = 0

    def result(self, principal: str, write: LogWrite) -> WriteResult:
        """Apply `write` at the next index, as `principal`, through the log's bytes."""
        self.index += 1
        payload = encode_log_write(write, principal)
        encoded, _ = self.machine.apply(LogIndex(self.index), payload)
        return decode_result(encoded)  # type: ignore[return-value]

    def refused(self, principal: str, write: LogWrite) -> Failure:
        """`write` as `principal` is refused RESOURCE_EXHAUSTED and changes nothing."""
        before = self.machine.snapshot()
        result = self.result(principal, write)
        assert isinstance(result, Failure), result
        assert result.code is ErrorCode.RESOURCE_EXHAUSTED, result
        assert self.machine.snapshot() == before
        return result


def test_a_principal_may_create_at_most_its_node_quota() -> None:
    """The fourth node of a principal with a quota of three is refused, naming the key;
    another principal is counted apart."""
    cell = Quota()
    for name in ("a", "b", "c"):
        assert isinstance(cell.result("anonymous", Create(at(name))), Written)
    refused = cell.refused("anonymous", Create(at("d")))
    assert "limits.nodes_per_principal_max" in refused.message
    assert "'anonymous'" in refused.message
    assert isinstance(cell.result("alice", Create(at("d"))), Written)
    assert cell.machine.tree.usage("anonymous").nodes == 3
    assert cell.machine.tree.usage("alice").nodes == 1


def test_deleting_a_node_gives_its_quota_back() -> None:
    """A principal at its node quota creates again once it deleted one."""
    cell = Quota()
    for name in ("a", "b", "c"):
        cell.result("bob", Create(at(name), contents=b"x" * 10))
    cell.refused("bob", Create(at("d")))
    assert isinstance(cell.result("bob", Delete(at("a"))), Written)
    assert cell.machine.tree.usage("bob").bytes == 20
    assert isinstance(cell.result("bob", Create(at("d"))), Written)


def test_bytes_count_against_the_file_s_creator_whoever_writes() -> None:
    """Creating or growing past the bytes quota is refused; growth of a file counts
    against its creator even when another principal writes it; shrinking always passes."""
    cell = Quota()
    cell.result("bob", Create(at("f"), contents=b"x" * 60))
    refused = cell.refused("bob", Create(at("g"), contents=b"y" * 41))
    assert "limits.bytes_per_principal_max" in refused.message
    assert isinstance(cell.result("bob", Create(at("g"), contents=b"y" * 40)), Written)
    cell.refused("carol", SetContents(at("f"), b"x" * 61))
    assert isinstance(cell.result("carol", SetContents(at("f"), b"x" * 10)), Written)
    assert cell.machine.tree.usage("bob").bytes == 50
    assert cell.machine.tree.usage("carol").bytes == 0


def test_operators_and_writes_with_no_principal_are_exempt() -> None:
    """The exempt principals (whose nodes are still counted, not limited), and commands that
    carry no principal (the master's own, or entries written before principals were
    logged), are never refused."""
    cell = Quota()
    for name in ("a", "b", "c", "d"):
        assert isinstance(cell.result("operator", Create(at(name), contents=b"z" * 90)), Written)
        assert isinstance(cell.result("", Create(at(name + "2"), contents=b"z" * 90)), Written)
    assert cell.machine.tree.usage("operator").nodes == 4
    assert cell.machine.tree.usage("").nodes == 0


def test_a_multiop_past_the_quota_rolls_back_whole() -> None:
    """A MultiOp whose second Create passes the node quota applies nothing, and the
    principal's usage is what it was."""
    cell = Quota()
    cell.result("bob", Create(at("a")))
    cell.result("bob", Create(at("b")))
    creates = (Create(at("c")), Create(at("d")))
    result = cell.result("bob", MultiOp((), creates))
    assert isinstance(result, Failure)
    assert result.code is ErrorCode.RESOURCE_EXHAUSTED
    assert result.message.startswith("if_true[1]: ")
    assert cell.machine.tree.get(at("c")) is None
    assert cell.machine.tree.usage("bob").nodes == 2


def test_ephemeral_nodes_are_charged_until_their_session_ends() -> None:
    """A session's ephemeral file counts against the principal that created it, and stops
    counting when the session ends and the file goes."""
    cell = Quota()
    opened = cell.result("", OpenSession("client"))
    assert isinstance(opened, SessionOpened)
    create = Create(at("e"), contents=b"x" * 5, ephemeral=True)
    assert isinstance(cell.result("bob", InSession(opened.session_id, create)), Written)
    assert cell.machine.tree.usage("bob").nodes == 1
    cell.result("", EndSession(opened.session_id, expired=False))
    assert cell.machine.tree.usage("bob").nodes == 0


def test_the_log_command_carries_the_principal_and_old_commands_carry_none() -> None:
    """`encode_log_write` with a principal round-trips it; a command without one (every
    entry written before) reads as done for no principal, and applies as before."""
    write = Create(at("f"), contents=b"x")
    assert decode_log_write_by(encode_log_write(write, "bob")) == (write, "bob")
    assert decode_log_write_by(encode_log_write(write)) == (write, "")
    assert decode_log_write(encode_log_write(write, "bob")) == write
    cell = Quota()
    _, effect = cell.machine.apply(LogIndex(1), encode_log_write(write, "bob"))
    assert effect is not None
    assert effect.principal == "bob"
    assert cell.machine.tree.usage("bob").nodes == 1


@pytest.mark.parametrize(
    "plain",
    [[20, "", [1, "/ls/c/f", False, b"", None, False]],
     [20, "bob", [20, "eve", [1, "/ls/c/f", False, b"", None, False]]],
     [20, 7, [1, "/ls/c/f", False, b"", None, False]]],
    ids=["empty principal", "nested", "not text"],
)  # fmt: skip
def test_a_malformed_principal_envelope_is_not_a_write(plain: list[object]) -> None:
    """A payload whose principal is empty, nested or not text is refused BAD_REQUEST."""
    machine = NamespaceMachine(CELL, LIMITS)
    encoded, effect = machine.apply(LogIndex(1), msgpack.packb(plain, use_bin_type=True))
    assert effect is None
    result = decode_result(encoded)
    assert isinstance(result, Failure)
    assert result.code is ErrorCode.BAD_REQUEST
    assert machine.tree.get(at("f")) is None


def test_the_snapshot_keeps_creators_and_an_older_one_loads_with_none() -> None:
    """A format 4 snapshot restores every node's creator and so the usage; a format 3
    one (before creators) loads with every node charged to no one."""
    cell = Quota()
    cell.result("bob", Create(at("f"), contents=b"x" * 7))
    snapshot = cell.machine.snapshot()
    restored = NamespaceMachine(CELL, LIMITS)
    restored.restore(snapshot)
    assert restored.tree.usage("bob").nodes == 1
    assert restored.tree.usage("bob").bytes == 7
    assert restored.snapshot() == snapshot
    current = msgpack.unpackb(snapshot)
    old = [3, current[1], [record[:12] for record in current[2]], current[3]]
    _, records, _ = decode_snapshot(msgpack.packb(old, use_bin_type=True))
    assert {record.creator for record in records} == {""}
    restored.restore(msgpack.packb(old, use_bin_type=True))
    assert restored.tree.usage("bob").nodes == 0


def test_the_master_s_check_before_proposing_agrees_with_apply() -> None:
    """`quota_problem` refuses what apply would (a Create, a growing SetContents), passes
    what it would pass, and leaves MultiOps to the log."""
    cell = Quota()
    for name in ("a", "b", "c"):
        cell.result("bob", Create(at(name), contents=b"x" * 30))
    tree = cell.machine.tree
    assert quota_problem(tree, "bob", Create(at("d"))) is not None
    assert quota_problem(tree, "bob", Create(at("a"))) is None, "EXISTS is apply's answer"
    assert quota_problem(tree, "carol", SetContents(at("a"), b"x" * 41)) is not None
    assert quota_problem(tree, "carol", SetContents(at("a"), b"x" * 40)) is None
    assert quota_problem(tree, "operator", Create(at("d"))) is None
    assert quota_problem(tree, "bob", MultiOp((), (Create(at("d")),))) is None
    refused = cell.result("bob", MultiOp((), (Create(at("d")),)))
    assert isinstance(refused, Failure)
    assert refused.code is ErrorCode.RESOURCE_EXHAUSTED
