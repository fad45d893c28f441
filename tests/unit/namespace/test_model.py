"""The namespace against a deliberately simple reference model, driven by Hypothesis.

The model keeps a plain dict from full name to a small dict, finds children by scanning
every name, and copies the whole dict to make a MultiOp atomic: no indexes, no journal, no
cleverness. Sessions are a dict from id to name; a node's lock is a sorted list of holder
tuples and a lock-delay, and ending a session scans every node. Limits are tiny so that
every limit is hit, and names come from a small alphabet so that names collide. After every
step the results must be identical (Failures by code, and by where a MultiOp failed), and
the whole trees and session tables must be equal.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from chubbypy.locks import Holder, LockState
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
    Acquire,
    ContentGenerationIs,
    Contents,
    ContentsAre,
    Create,
    Delete,
    DirEntry,
    EndLockDelay,
    EndSession,
    Exists,
    GetContentsAndStat,
    GetStat,
    InSession,
    InstanceIs,
    Listing,
    LockHeldAt,
    LockMode,
    LogWrite,
    MultiOp,
    MultiResult,
    OpenSession,
    Read,
    ReadDir,
    ReadResult,
    Release,
    SessionOpened,
    SetAcl,
    SetContents,
    SimpleWrite,
    Stat,
    Test,
    Write,
    WriteResult,
    Written,
)
from chubbypy.protocol.namespace_codec import decode_result, encode_log_write
from chubbypy.sessions import SessionRecord

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
        node["instance"], node["cgen"], node["lgen"], node["agen"], check, node["acl"],
        node["dir"], node["eph"], size,
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
        if write.is_directory and write.ephemeral:
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
        root |= {"lgen": 0, "owner": 0, "holders": [], "delay": 0}
        self.nodes: dict[str, Node] = {ROOT: {**root, "acl": ROOT_ACL_DEFAULT}}
        self.sessions: dict[int, str] = {}
        self.index = 0
        self.created_at_index = 0

    def advance(self, same_entry: bool) -> None:
        if not same_entry or self.index == 0:
            self.index += 1
            self.created_at_index = 0

    def new_id(self) -> int:
        """The next instance or session id: both count the creations in this entry."""
        new = self.index * INSTANCES_PER_INDEX + self.created_at_index
        self.created_at_index += 1
        return new

    def write(self, write: LogWrite, owner: int = 0) -> Expected:
        match write:
            case OpenSession(name):
                if len(name) > 256:
                    return Failure(ErrorCode.BAD_REQUEST, "")
                session_id = self.new_id()
                self.sessions[session_id] = name
                return SessionOpened(session_id)
            case EndSession(session_id, expired):
                return self.end_session(session_id, expired)
            case InSession(session_id, inner):
                if session_id not in self.sessions:
                    return Failure(ErrorCode.SESSION_EXPIRED, "")
                return self.write(inner, session_id)
            case Acquire() | Release() | EndLockDelay():
                return self.lock(write)
            case MultiOp():
                return self.multi_op(write, owner)
        code = request_code(write)
        if code is not None:
            return Failure(code, "")
        return self.run(self.nodes, write, owner)

    def end_session(self, session_id: int, expired: bool) -> Expected:
        if session_id not in self.sessions:
            return Failure(ErrorCode.SESSION_EXPIRED, "")
        for path in sorted(self.nodes):
            node = self.nodes[path]
            if node["owner"] == session_id:
                del self.nodes[path]
                continue
            dropped = [h for h in node["holders"] if h[0] == session_id]
            node["holders"] = [h for h in node["holders"] if h[0] != session_id]
            if expired and dropped and not node["holders"]:
                node["delay"] = max(h[3] for h in dropped)
        del self.sessions[session_id]
        return Written(None)

    def lock(self, command: Acquire | Release | EndLockDelay) -> Expected:
        if not isinstance(command, EndLockDelay) and command.session_id not in self.sessions:
            return Failure(ErrorCode.SESSION_EXPIRED, "")
        node = self.nodes.get(command.path)
        if node is None or node["instance"] != command.instance:
            return Failure(ErrorCode.NO_SUCH_NODE, "")
        if isinstance(command, EndLockDelay):
            node["delay"] = 0
            return Written(stat(self.nodes, command.path))
        mine = [h for h in node["holders"] if h[:2] == (command.session_id, command.handle_id)]
        if isinstance(command, Release):
            if command.lock_generation not in (None, node["lgen"]):
                return Failure(ErrorCode.LOCK_NOT_HELD, "")
            if not mine:
                return Failure(ErrorCode.LOCK_NOT_HELD, "")
            node["holders"].remove(mine[0])
            return Written(stat(self.nodes, command.path))
        if not 0 <= command.lock_delay_ms <= 60_000:
            return Failure(ErrorCode.BAD_REQUEST, "")
        if mine:
            return Failure(ErrorCode.LOCK_HELD, "")
        if node["delay"]:
            return Failure(ErrorCode.LOCK_DELAYED, "")
        modes = {h[2] for h in node["holders"]}
        if modes and (modes != {LockMode.SHARED} or command.mode is not LockMode.SHARED):
            return Failure(ErrorCode.LOCK_HELD, "")
        if not node["holders"]:
            node["lgen"] += 1
        holder = (command.session_id, command.handle_id, command.mode, command.lock_delay_ms)
        node["holders"] = sorted([*node["holders"], holder])
        return Written(stat(self.nodes, command.path))

    def run(self, nodes: dict[str, Node], write: SimpleWrite, owner: int) -> Written | Failure:
        node = nodes.get(write.path)
        if isinstance(write, Create):
            return self.create(nodes, write, owner)
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

    def create(self, nodes: dict[str, Node], create: Create, owner: int) -> Written | Failure:
        if create.ephemeral and not owner:
            return Failure(ErrorCode.SESSION_REQUIRED, "")
        if create.path in nodes:
            return Failure(ErrorCode.EXISTS, "")
        above = nodes.get(parent(create.path))
        if above is None:
            return Failure(ErrorCode.NO_SUCH_NODE, "")
        if not above["dir"]:
            return Failure(ErrorCode.NOT_A_DIRECTORY, "")
        instance = self.new_id()
        nodes[create.path] = {
            "dir": create.is_directory,
            "eph": create.ephemeral,
            "contents": create.contents,
            "instance": instance,
            "cgen": 0 if create.is_directory else 1,
            "agen": 1,
            "acl": above["acl"] if create.acl is None else create.acl,
            "lgen": 0,
            "owner": owner if create.ephemeral else 0,
            "holders": [],
            "delay": 0,
        }
        return Written(stat(nodes, create.path))

    def multi_op(self, multi: MultiOp, owner: int) -> Expected:
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
            result = self.run(scratch, write, owner)
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
        if isinstance(test, LockHeldAt):
            modes = {h[2] for h in node["holders"]}
            return (
                node["instance"] == test.instance
                and modes == {test.mode}
                and node["lgen"] == test.lock_generation
            )
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
        lock_generation=node["lgen"],
        acl_generation=node["agen"],
        checksum=0 if node["dir"] else checksum(node["contents"]),
        acl=node["acl"],
        owner_session=node["owner"],
        lock=LockState(tuple(Holder(*h) for h in node["holders"]), node["delay"]),
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
        self.session_table: dict[int, SessionRecord] = {}
        self.ever_opened: list[int] = []
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

    def session_id(self, data: st.DataObject) -> int:
        """Mostly a live session, sometimes one that ended, or one that never existed."""
        live = sorted(self.model.sessions)
        if live and data.draw(st.integers(0, 4)):
            return data.draw(st.sampled_from(live))
        return data.draw(st.sampled_from([*self.ever_opened, 1]))

    def mode(self, data: st.DataObject) -> LockMode:
        return data.draw(st.sampled_from([LockMode.EXCLUSIVE, LockMode.SHARED]))

    def test(self, data: st.DataObject) -> Test:
        path = self.path(data)
        kinds = ["exists", "absent", "content", "acl", "inst", "is", "lock"]
        match data.draw(st.sampled_from(kinds)):
            case "lock":
                node = self.model.nodes.get(path)
                generation = 0 if node is None else node["lgen"]
                return LockHeldAt(
                    path,
                    self.number(data, path, "instance"),
                    self.mode(data),
                    data.draw(st.sampled_from([generation, generation, generation + 1])),
                )
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

    def apply(self, write: LogWrite, same_entry: bool) -> None:
        self.model.advance(same_entry and not self.must_advance)
        self.must_advance = False
        expected = self.model.write(write)
        index = LogIndex(self.model.index)
        actual = decode_result(self.machine.apply(index, encode_log_write(write))[0])
        _same(expected, actual)
        if isinstance(actual, SessionOpened):
            self.ever_opened.append(actual.session_id)

    @initialize(data=st.data())
    def populate(self, data: st.DataObject) -> None:
        """Start with up to five children of the root, so that even a short run has full
        directories to page through and nodes to write."""
        names = data.draw(st.lists(st.sampled_from(VALID_COMPONENTS), max_size=5, unique=True))
        for name in names:
            self.apply(Create(f"{ROOT}/{name}", data.draw(st.booleans())), same_entry=False)
        for _ in range(data.draw(st.integers(0, 3))):
            self.apply(OpenSession("client"), same_entry=False)

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

    @rule(same_entry=st.booleans(), long_name=st.integers(0, 9))
    def open_session(self, same_entry: bool, long_name: int) -> None:
        self.apply(OpenSession("x" * 300 if long_name == 0 else "client"), same_entry)

    @rule(data=st.data(), same_entry=st.booleans(), expired=st.booleans())
    def end_session(self, data: st.DataObject, same_entry: bool, expired: bool) -> None:
        """End a session, often one that holds locks or owns ephemeral nodes."""
        nodes = self.model.nodes.values()
        involved = sorted({h[0] for n in nodes for h in n["holders"]} | {n["owner"] for n in nodes})
        involved = [i for i in involved if i]
        if involved and data.draw(st.booleans()):
            session_id = data.draw(st.sampled_from(involved))
        else:
            session_id = self.session_id(data)
        self.apply(EndSession(session_id, expired), same_entry)

    @rule(data=st.data(), same_entry=st.booleans())
    def expire_a_holder(self, data: st.DataObject, same_entry: bool) -> None:
        """Expire a session that holds a lock, so the lock-delay path is walked often."""
        holders = sorted({h[0] for n in self.model.nodes.values() for h in n["holders"]})
        if holders:
            self.apply(EndSession(data.draw(st.sampled_from(holders)), True), same_entry)

    @rule(data=st.data(), same_entry=st.booleans())
    def acquire_a_delayed_lock(self, data: st.DataObject, same_entry: bool) -> None:
        """A live session tries a lock in lock-delay (LOCK_DELAYED, whatever the mode)."""
        delayed = sorted(p for p, n in self.model.nodes.items() if n["delay"])
        if delayed and self.model.sessions:
            path = data.draw(st.sampled_from(delayed))
            session_id = data.draw(st.sampled_from(sorted(self.model.sessions)))
            instance = self.model.nodes[path]["instance"]
            self.apply(Acquire(session_id, 1, path, instance, self.mode(data)), same_entry)

    @rule(data=st.data(), same_entry=st.booleans(), multi=st.booleans())
    def write_in_session(self, data: st.DataObject, same_entry: bool, multi: bool) -> None:
        """A write on a session's behalf: ephemeral creations belong to it."""
        write: Write = self.create(data)
        if multi:
            guard = tuple(self.test(data) for _ in range(data.draw(st.integers(0, 1))))
            write = MultiOp(guard, (self.create(data), self.simple_write(data)))
        self.apply(InSession(self.session_id(data), write), same_entry)

    @rule(
        data=st.data(),
        same_entry=st.booleans(),
        handle=st.integers(1, 3),
        delay=st.sampled_from([0, 5, 5, 60_000, 60_001]),
    )
    def acquire(self, data: st.DataObject, same_entry: bool, handle: int, delay: int) -> None:
        """Acquire, often a lock that is held or in lock-delay already (to conflict)."""
        nodes = self.model.nodes.items()
        delayed = sorted(p for p, n in nodes if n["delay"])
        held = sorted(p for p, n in nodes if n["holders"])
        match data.draw(st.integers(0, 3)):
            case 0 if delayed:
                path = data.draw(st.sampled_from(delayed))
            case 1 if held:
                path = data.draw(st.sampled_from(held))
            case _:
                path = self.path(data)
        node = self.model.nodes.get(path)
        own = node is not None and data.draw(st.integers(0, 4)) > 0
        instance = node["instance"] if own else self.number(data, path, "instance")
        command = Acquire(self.session_id(data), handle, path, instance, self.mode(data), delay)
        self.apply(command, same_entry)

    @rule(data=st.data(), same_entry=st.booleans(), handle=st.integers(1, 3))
    def release(self, data: st.DataObject, same_entry: bool, handle: int) -> None:
        """Release, most often by a handle that holds some lock."""
        holds = [(p, h) for p, n in self.model.nodes.items() for h in n["holders"]]
        if holds and data.draw(st.integers(0, 3)):
            path, holder = data.draw(st.sampled_from(sorted(holds)))
            node = self.model.nodes[path]
            generation = data.draw(st.sampled_from([None, node["lgen"], node["lgen"] - 1]))
            command = Release(holder[0], holder[1], path, node["instance"], generation)
        else:
            path = self.path(data)
            instance = self.number(data, path, "instance")
            command = Release(self.session_id(data), handle, path, instance)
        self.apply(command, same_entry)

    @rule(data=st.data(), same_entry=st.booleans())
    def end_lock_delay(self, data: st.DataObject, same_entry: bool) -> None:
        delayed = sorted(p for p, n in self.model.nodes.items() if n["delay"])
        pick = delayed and data.draw(st.integers(0, 2)) == 0  # let delays last a while
        path = data.draw(st.sampled_from(delayed)) if pick else self.path(data)
        self.apply(EndLockDelay(path, self.number(data, path, "instance")), same_entry)

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
        for session_id in changes.session_deletes:
            del self.session_table[session_id]
        for session in changes.session_upserts:
            assert session.session_id not in self.session_table, session
            self.session_table[session.session_id] = session
        assert self.session_table == {s.session_id: s for s in self.machine.sessions()}

    @rule(from_snapshot=st.booleans())
    def recover(self, from_snapshot: bool) -> None:
        """Replace the machine by one restored from a snapshot or from the checkpoint table."""
        self.checkpoint()
        replacement = NamespaceMachine(CELL, LIMITS)
        if from_snapshot:
            replacement.restore(self.machine.snapshot())
        else:
            replacement.restore_records(
                list(self.table.values()), list(self.session_table.values())
            )
        assert replacement.checksum() == self.machine.checksum()
        self.machine = replacement
        self.must_advance = True  # a snapshot is taken between log entries

    @invariant()
    def same_tree(self) -> None:
        assert self.machine.records() == self.model.records()
        sessions = tuple(SessionRecord(i, n) for i, n in sorted(self.model.sessions.items()))
        assert self.machine.sessions() == sessions


NamespaceModel.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None, derandomize=True
)
TestNamespaceModel = NamespaceModel.TestCase
