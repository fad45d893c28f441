"""The namespace against a deliberately simple reference model, driven by Hypothesis.

The model keeps a plain dict from full name to a small dict, finds children by scanning
every name, and copies the whole dict to make a MultiOp atomic: no indexes, no journal, no
cleverness. Limits are tiny so that every limit is hit, and names come from a small alphabet
so that names collide. After every step the results must be identical (Failures by code,
and by where a MultiOp failed), and the whole trees must be equal.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from chubbypy.namespace import (
    INSTANCES_PER_INDEX,
    ROOT_ACL_DEFAULT,
    NamespaceLimits,
    NamespaceMachine,
    NodeRecord,
)
from chubbypy.protocol import LogIndex
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Absent,
    AclGenerationIs,
    AclNames,
    ContentGenerationIs,
    Contents,
    ContentsAre,
    Create,
    Delete,
    DirEntry,
    Exists,
    GetContentsAndStat,
    GetStat,
    InstanceIs,
    Listing,
    MultiOp,
    MultiResult,
    Read,
    ReadDir,
    ReadResult,
    SetAcl,
    SetContents,
    SimpleWrite,
    Stat,
    Test,
    Write,
    WriteResult,
    Written,
)
from chubbypy.protocol.namespace_codec import decode_result, encode_write

CELL = "c"
ROOT = "/ls/c"
FILE_MAX, PATH_MAX, COMPONENT_MAX, DEPTH_MAX, PAGE_MAX, OPS_MAX, ACL_MAX = 3, 13, 2, 3, 3, 5, 2
LIMITS = NamespaceLimits(
    file_bytes_max=FILE_MAX,
    path_bytes_max=PATH_MAX,
    component_bytes_max=COMPONENT_MAX,
    depth_max=DEPTH_MAX,
    readdir_entries_max=PAGE_MAX,
    multiop_operations_max=OPS_MAX,
    acl_name_bytes_max=ACL_MAX,
)
CHARACTERS = re.compile(r"[A-Za-z0-9._-]+")

Node = dict[str, Any]
Expected = WriteResult | ReadResult
"""What the model predicts; for a Failure, its message is a prefix the real one must have."""


# ----------------------------------------------------------------------------- the model


def checksum(contents: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(contents, digest_size=8).digest(), "big")


def good_component(component: str, most: int) -> bool:
    return (
        bool(CHARACTERS.fullmatch(component))
        and component not in (".", "..")
        and len(component) <= most
    )


def good_path(path: str) -> bool:
    if path == ROOT:
        return True
    if not path.startswith(ROOT + "/"):
        return False
    parts = path[len(ROOT) + 1 :].split("/")
    if len(parts) > DEPTH_MAX or len(path) > PATH_MAX:
        return False
    return all(good_component(part, COMPONENT_MAX) for part in parts)


def good_acl(acl: AclNames) -> bool:
    return all(good_component(name, ACL_MAX) for name in (acl.read, acl.write, acl.change))


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


def children(nodes: dict[str, Node], path: str) -> list[str]:
    return sorted(p.rsplit("/", 1)[1] for p in nodes if p != ROOT and parent(p) == path)


def stat(nodes: dict[str, Node], path: str) -> Stat:
    node = nodes[path]
    size = len(children(nodes, path)) if node["dir"] else len(node["contents"])
    check = 0 if node["dir"] else checksum(node["contents"])
    return Stat(
        node["instance"], node["cgen"], 0, node["agen"], check, node["acl"], node["dir"],
        node["eph"], size,
    )  # fmt: skip


def request_code(write: SimpleWrite) -> ErrorCode | None:
    """The failure of a write whatever the state, checked in the documented order."""
    if not good_path(write.path):
        return ErrorCode.INVALID_NAME
    if isinstance(write, Create):
        if write.acl is not None and not good_acl(write.acl):
            return ErrorCode.INVALID_NAME
        if write.is_directory and write.contents:
            return ErrorCode.IS_A_DIRECTORY
    if isinstance(write, Create | SetContents) and len(write.contents) > FILE_MAX:
        return ErrorCode.TOO_LARGE
    if isinstance(write, Delete) and write.path == ROOT:
        return ErrorCode.INVALID_NAME
    if isinstance(write, SetAcl) and not good_acl(write.acl):
        return ErrorCode.INVALID_NAME
    return None


class Model:
    """The namespace as a dict of dicts."""

    def __init__(self) -> None:
        root = {"dir": True, "eph": False, "contents": b"", "instance": 0, "cgen": 0, "agen": 1}
        self.nodes: dict[str, Node] = {ROOT: {**root, "acl": ROOT_ACL_DEFAULT}}
        self.index = 0
        self.created_at_index = 0

    def advance(self, same_entry: bool) -> None:
        if not same_entry or self.index == 0:
            self.index += 1
            self.created_at_index = 0

    def write(self, write: Write) -> Expected:
        if isinstance(write, MultiOp):
            return self.multi_op(write)
        code = request_code(write)
        if code is not None:
            return Failure(code, "")
        return self.run(self.nodes, write)

    def run(self, nodes: dict[str, Node], write: SimpleWrite) -> Written | Failure:
        node = nodes.get(write.path)
        if isinstance(write, Create):
            return self.create(nodes, write)
        if node is None:
            return Failure(ErrorCode.NO_SUCH_NODE, "")
        if isinstance(write, SetContents):
            if node["dir"]:
                return Failure(ErrorCode.IS_A_DIRECTORY, "")
            if write.expected_generation not in (None, node["cgen"]):
                return Failure(ErrorCode.GENERATION_MISMATCH, "")
            node.update(contents=write.contents, cgen=node["cgen"] + 1)
        elif isinstance(write, Delete):
            if write.expected_instance not in (None, node["instance"]):
                return Failure(ErrorCode.GENERATION_MISMATCH, "")
            if children(nodes, write.path):
                return Failure(ErrorCode.NOT_EMPTY, "")
            del nodes[write.path]
            return Written(None)
        else:
            if write.expected_generation not in (None, node["agen"]):
                return Failure(ErrorCode.GENERATION_MISMATCH, "")
            node.update(acl=write.acl, agen=node["agen"] + 1)
        return Written(stat(nodes, write.path))

    def create(self, nodes: dict[str, Node], create: Create) -> Written | Failure:
        if create.path in nodes:
            return Failure(ErrorCode.EXISTS, "")
        above = nodes.get(parent(create.path))
        if above is None:
            return Failure(ErrorCode.NO_SUCH_NODE, "")
        if not above["dir"]:
            return Failure(ErrorCode.NOT_A_DIRECTORY, "")
        instance = self.index * INSTANCES_PER_INDEX + self.created_at_index
        self.created_at_index += 1
        nodes[create.path] = {
            "dir": create.is_directory,
            "eph": create.ephemeral,
            "contents": create.contents,
            "instance": instance,
            "cgen": 0 if create.is_directory else 1,
            "agen": 1,
            "acl": above["acl"] if create.acl is None else create.acl,
        }
        return Written(stat(nodes, create.path))

    def multi_op(self, multi: MultiOp) -> Expected:
        if len(multi.guard) + len(multi.if_true) + len(multi.if_false) > OPS_MAX:
            return Failure(ErrorCode.TOO_LARGE, "")
        for position, test in enumerate(multi.guard):
            if not good_path(test.path):
                return Failure(ErrorCode.INVALID_NAME, f"guard[{position}]: ")
        for label, branch in (("if_true", multi.if_true), ("if_false", multi.if_false)):
            for position, write in enumerate(branch):
                code = request_code(write)
                if code is not None:
                    return Failure(code, f"{label}[{position}]: ")
        tests = tuple(self.holds(test) for test in multi.guard)
        label, branch = ("if_true", multi.if_true) if all(tests) else ("if_false", multi.if_false)
        scratch = {path: dict(node) for path, node in self.nodes.items()}
        results = []
        for position, write in enumerate(branch):
            result = self.run(scratch, write)
            if isinstance(result, Failure):
                return Failure(result.code, f"{label}[{position}]: ")
            results.append(result)
        self.nodes = scratch
        return MultiResult(all(tests), tests, tuple(results))

    def holds(self, test: Test) -> bool:
        node = self.nodes.get(test.path)
        if isinstance(test, Exists | Absent):
            return (node is not None) is isinstance(test, Exists)
        if node is None:
            return False
        if isinstance(test, ContentGenerationIs):
            return bool(node["cgen"] == test.generation)
        if isinstance(test, AclGenerationIs):
            return bool(node["agen"] == test.generation)
        if isinstance(test, InstanceIs):
            return bool(node["instance"] == test.instance)
        assert isinstance(test, ContentsAre)
        return not node["dir"] and node["contents"] == test.contents

    def read(self, query: Read) -> Expected:
        if not good_path(query.path):
            return Failure(ErrorCode.INVALID_NAME, "")
        if isinstance(query, ReadDir) and query.limit < 1:
            return Failure(ErrorCode.BAD_REQUEST, "")
        node = self.nodes.get(query.path)
        if node is None:
            return Failure(ErrorCode.NO_SUCH_NODE, "")
        if isinstance(query, GetStat):
            return stat(self.nodes, query.path)
        if isinstance(query, GetContentsAndStat):
            if node["dir"]:
                return Failure(ErrorCode.IS_A_DIRECTORY, "")
            return Contents(node["contents"], stat(self.nodes, query.path))
        if not node["dir"]:
            return Failure(ErrorCode.NOT_A_DIRECTORY, "")
        names = [name for name in children(self.nodes, query.path) if name > query.after]
        limit = min(query.limit, PAGE_MAX)
        entries = [DirEntry(n, stat(self.nodes, f"{query.path}/{n}")) for n in names[:limit]]
        return Listing(tuple(entries), len(names) > limit)

    def records(self) -> tuple[NodeRecord, ...]:
        return tuple(record(path, node) for path, node in sorted(self.nodes.items()))


def record(path: str, node: Node) -> NodeRecord:
    return NodeRecord(
        path=path,
        is_directory=node["dir"],
        ephemeral=node["eph"],
        contents=node["contents"],
        instance=node["instance"],
        content_generation=node["cgen"],
        lock_generation=0,
        acl_generation=node["agen"],
        checksum=0 if node["dir"] else checksum(node["contents"]),
        acl=node["acl"],
    )


# ----------------------------------------------------------------------------- strategies


def mostly(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """One of `valid` nine times in ten, else one of `invalid`: enough bad input to test
    the checks, without drowning the tree in refusals."""
    return st.sampled_from(valid * (9 * max(1, len(invalid)) // len(valid) + 1) + invalid)


VALID_COMPONENTS = ["a", "b", "c", "ab", "ba"]
components = mostly(VALID_COMPONENTS, ["abc", "", ".", "a*"])
prefixes = mostly([ROOT], ["/ls/x", "/ls/cc", "ls/c"])
random_paths = st.builds(
    lambda prefix, parts: prefix + "".join("/" + part for part in parts),
    prefixes,
    st.lists(components, max_size=4),
)
contents = mostly([b"", b"x", b"yz", b"abc"], [b"abcd"])
acl_names = mostly(["r", "w", "rw"], ["", "abc", "a/"])
acls = st.builds(AclNames, acl_names, acl_names, acl_names)
afters = st.sampled_from(["", "a", "aa", "ab", "b", "c", "~"])


def _same(expected: Expected, actual: Expected) -> None:
    if isinstance(expected, Failure):
        assert isinstance(actual, Failure), (expected, actual)
        assert actual.code is expected.code, (expected, actual)
        assert actual.message.startswith(expected.message), (expected, actual)
    else:
        assert actual == expected


class NamespaceModel(RuleBasedStateMachine):
    """Drives a NamespaceMachine (through the payload codec) and the Model side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.machine = NamespaceMachine(CELL, LIMITS)
        self.table: dict[str, NodeRecord] = {}
        self.must_advance = False

    # Drawing names and values that often refer to what exists.

    def path(self, data: st.DataObject) -> str:
        if data.draw(st.integers(0, 3)):
            return data.draw(st.sampled_from(sorted(self.model.nodes)))
        return data.draw(random_paths)

    def new_path(self, data: st.DataObject) -> str:
        if data.draw(st.integers(0, 3)):
            return f"{data.draw(st.sampled_from(sorted(self.model.nodes)))}/{data.draw(components)}"
        return data.draw(random_paths)

    def number(self, data: st.DataObject, path: str, field: str) -> int:
        """A generation or instance: often the node's own, sometimes another."""
        node = self.model.nodes.get(path)
        own = 0 if node is None else int(node[field])
        return data.draw(st.sampled_from([own, own, own + 1, max(own - 1, 0), 1]))

    def expected(self, data: st.DataObject, path: str, field: str) -> int | None:
        return None if data.draw(st.booleans()) else self.number(data, path, field)

    def simple_write(self, data: st.DataObject) -> SimpleWrite:
        kind = data.draw(st.sampled_from(["create", "create", "set", "delete", "acl"]))
        if kind == "create":
            return self.create(data)
        path = self.path(data)
        if kind == "set":
            return SetContents(path, data.draw(contents), self.expected(data, path, "cgen"))
        if kind == "delete":
            return Delete(path, self.expected(data, path, "instance"))
        return SetAcl(path, data.draw(acls), self.expected(data, path, "agen"))

    def create(self, data: st.DataObject) -> Create:
        is_directory = data.draw(st.booleans())
        body = b"" if is_directory and data.draw(st.integers(0, 9)) else data.draw(contents)
        acl = None if data.draw(st.integers(0, 2)) else data.draw(acls)
        return Create(self.new_path(data), is_directory, body, acl, data.draw(st.booleans()))

    def test(self, data: st.DataObject) -> Test:
        path = self.path(data)
        match data.draw(st.sampled_from(["exists", "absent", "content", "acl", "inst", "is"])):
            case "exists":
                return Exists(path)
            case "absent":
                return Absent(path)
            case "content":
                return ContentGenerationIs(path, self.number(data, path, "cgen"))
            case "acl":
                return AclGenerationIs(path, self.number(data, path, "agen"))
            case "inst":
                return InstanceIs(path, self.number(data, path, "instance"))
        node = self.model.nodes.get(path)
        own = b"" if node is None else node["contents"]
        return ContentsAre(path, data.draw(st.sampled_from([own, own, b"x"])))

    # Rules.

    def apply(self, write: Write, same_entry: bool) -> None:
        self.model.advance(same_entry and not self.must_advance)
        self.must_advance = False
        expected = self.model.write(write)
        index = LogIndex(self.model.index)
        actual = decode_result(self.machine.apply(index, encode_write(write)))
        _same(expected, actual)

    @initialize(data=st.data())
    def populate(self, data: st.DataObject) -> None:
        """Start with up to five children of the root, so that even a short run has full
        directories to page through and nodes to write."""
        names = data.draw(st.lists(st.sampled_from(VALID_COMPONENTS), max_size=5, unique=True))
        for name in names:
            self.apply(Create(f"{ROOT}/{name}", data.draw(st.booleans())), same_entry=False)

    @rule(data=st.data(), same_entry=st.booleans())
    def create_one(self, data: st.DataObject, same_entry: bool) -> None:
        self.apply(self.create(data), same_entry)

    @rule(data=st.data(), same_entry=st.booleans())
    def write_one(self, data: st.DataObject, same_entry: bool) -> None:
        self.apply(self.simple_write(data), same_entry)

    @rule(data=st.data(), same_entry=st.booleans())
    def multi_op(self, data: st.DataObject, same_entry: bool) -> None:
        # Up to 6 tests and operations, one more than OPS_MAX allows.
        guard = tuple(self.test(data) for _ in range(data.draw(st.integers(0, 2))))
        if_true = tuple(self.simple_write(data) for _ in range(data.draw(st.integers(0, 3))))
        if_false = tuple(self.simple_write(data) for _ in range(data.draw(st.integers(0, 1))))
        self.apply(MultiOp(guard, if_true, if_false), same_entry)
        if data.draw(st.booleans()):
            # At once, so that a rolled-back branch is checked to leave no change behind.
            self.checkpoint()

    @rule(data=st.data(), after=afters, limit=st.integers(0, 5))
    def read(self, data: st.DataObject, after: str, limit: int) -> None:
        path = self.path(data)
        for query in (GetStat(path), GetContentsAndStat(path), ReadDir(path, after, limit)):
            _same(self.model.read(query), self.machine.read(query))

    @rule(data=st.data(), after=afters, limit=st.integers(1, 5))
    def read_dir(self, data: st.DataObject, after: str, limit: int) -> None:
        """Page through a directory, the fullest one more often than not."""
        directories = [p for p, node in self.model.nodes.items() if node["dir"]]
        fullest = max(directories, key=lambda p: (len(children(self.model.nodes, p)), p))
        path = fullest if data.draw(st.booleans()) else data.draw(st.sampled_from(directories))
        query = ReadDir(path, after, limit)
        _same(self.model.read(query), self.machine.read(query))

    @rule()
    def checkpoint(self) -> None:
        """Apply take_changes to a table: deletes name rows that exist, upserts differ."""
        changes = self.machine.take_changes()
        for path in changes.deletes:
            del self.table[path]
        for record in changes.upserts:
            assert self.table.get(record.path) != record, record
            self.table[record.path] = record
        assert self.table == {r.path: r for r in self.machine.records()}

    @rule(from_snapshot=st.booleans())
    def recover(self, from_snapshot: bool) -> None:
        """Replace the machine by one restored from a snapshot or from the checkpoint table."""
        self.checkpoint()
        replacement = NamespaceMachine(CELL, LIMITS)
        if from_snapshot:
            replacement.restore(self.machine.snapshot())
        else:
            replacement.restore_records(list(self.table.values()))
        assert replacement.checksum() == self.machine.checksum()
        self.machine = replacement
        self.must_advance = True  # a snapshot is taken between log entries

    @invariant()
    def same_tree(self) -> None:
        assert self.machine.records() == self.model.records()


NamespaceModel.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None, derandomize=True
)
TestNamespaceModel = NamespaceModel.TestCase
