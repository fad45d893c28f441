"""Applying one write to the namespace. Pure: `apply(tree, index, write)` changes the
in-memory tree and returns the result and the names it changed (STYLE §5); the same tree,
index and write give the same result on every replica.

Each write is checked in two steps, and the first problem found is the result:

1. **The request itself**, whatever the state: names (INVALID_NAME, the root for a Delete
   included), ACL names (INVALID_NAME), contents for a directory (IS_A_DIRECTORY, as for a
   SetContents on one), contents size (TOO_LARGE); for a MultiOp, its size (TOO_LARGE) and
   then every test and the operations of *both* branches, so a malformed MultiOp fails
   whatever the state.
2. **Against the state**: Create gives EXISTS, NO_SUCH_NODE (no parent), NOT_A_DIRECTORY
   (the parent is a file), RESOURCE_EXHAUSTED (a quota: `chubbypy.namespace._quota`) or
   BUSY (see `INSTANCES_PER_INDEX`); SetContents NO_SUCH_NODE, IS_A_DIRECTORY,
   GENERATION_MISMATCH, RESOURCE_EXHAUSTED; Delete NO_SUCH_NODE, GENERATION_MISMATCH (the
   instance differs), NOT_EMPTY; SetAcl NO_SUCH_NODE, GENERATION_MISMATCH.

Session commands (Chubby §2.4, §2.8), which only the master proposes:

* `OpenSession` allocates a session id like a node instance; `EndSession` drops the
  session's locks (into lock-delay if it `expired`) and deletes its ephemeral nodes;
  SESSION_EXPIRED if the session is gone already.
* `InSession(session, write)` applies `write` only while the session exists (else
  SESSION_EXPIRED: nothing a session asked for happens after it ended); the ephemeral
  nodes it creates belong to the session. An ephemeral node is a file and needs a session
  (IS_A_DIRECTORY, SESSION_REQUIRED otherwise).
* A *numbered* `InSession` or `Release` (issue 12) is a session call the client may send
  again: it is carried out once and its result kept in the session's record (every result
  but BUSY, which asks to be asked again); the same number again gets that result and
  changes nothing, and a number below the record's low-water mark gets STALE_REQUEST. A
  retried `OpenSession` (the same name and nonce as a live session's) opens nothing: its
  result is that session, if it is done for the principal that opened it, and
  PERMISSION_DENIED otherwise (`retried_session`: nonces are in the log, which whoever
  reads a replica's store sees). `Acquire` needs no number: a handle takes a lock once, and one
  asking again while it holds it changes nothing (the master answers it with the grant).
* `Acquire`, `Release` and `EndLockDelay` name a node by path *and instance*
  (NO_SUCH_NODE if that instance is gone) and change its lock through `chubbypy.locks`;
  the lock generation rises when a free lock becomes held.

A MultiOp (Paxos Made Live §5.6) evaluates every guard test, then runs `if_true` if all
held and `if_false` otherwise, each operation seeing the changes of those before it. If one
fails, the branch is rolled back and the result is that operation's Failure, its code
unchanged and its message prefixed with where it stood, ``if_true[2]: ``; a problem found
in step 1 is prefixed the same way (``guard[0]: ``, ``if_false[1]: ``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_never

from attrs import evolve, frozen

from chubbypy.locks import (
    LOCK_DELAY_MS_MAX,
    Holder,
    LockState,
    end_delay,
    release,
    session_ended,
)
from chubbypy.locks import (
    acquire as acquire_lock,
)
from chubbypy.namespace._names import NamespaceLimits, check_acl, check_path, parent_of
from chubbypy.namespace._quota import create_problem, growth_problem
from chubbypy.namespace._records import NodeRecord, contents_checksum
from chubbypy.namespace._tree import Tree
from chubbypy.protocol import NO_SESSION, CallNumber, LogIndex, SessionId
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import (
    Absent,
    AclGenerationIs,
    AclNames,
    Acquire,
    ContentGenerationIs,
    ContentsAre,
    Create,
    Delete,
    EndLockDelay,
    EndSession,
    Exists,
    InSession,
    InstanceIs,
    LockHeldAt,
    LogWrite,
    MultiOp,
    MultiResult,
    OpenSession,
    Release,
    SessionOpened,
    SetAcl,
    SetContents,
    SimpleWrite,
    Test,
    Write,
    WriteResult,
    Written,
)
from chubbypy.sessions import SESSION_NAME_CHARS_MAX, SessionRecord


@frozen
class Applied:
    """What one write did: its result, and the names of the nodes it wrote."""

    result: WriteResult
    changed: tuple[str, ...]
    """Names whose node was created, changed or deleted, in path order; empty when the
    write failed. A directory whose children changed is not listed itself: its listing
    changed when a name below it is listed."""


def apply(tree: Tree, index: LogIndex, write: LogWrite, principal: str = "") -> Applied:
    """Apply `write`, committed at log `index`, to `tree`, on behalf of `principal` (the
    creator of the nodes it creates; "" for none); see the module docstring."""
    match write:
        case OpenSession():
            return _open_session(tree, index, write, principal)
        case EndSession():
            return _end_session(tree, write)
        case InSession(session_id, inner, number):
            if tree.session(session_id) is None:
                return Applied(_session_gone(session_id), ())
            return _session_call(
                tree,
                session_id,
                number,
                lambda: _client_write(tree, index, inner, session_id, principal),
            )
        case Release(session_id, number=number):
            return _session_call(tree, session_id, number, lambda: _lock_command(tree, write))
        case Acquire() | EndLockDelay():
            return _lock_command(tree, write)
        case _:
            return _client_write(tree, index, write, NO_SESSION, principal)


def _client_write(
    tree: Tree, index: LogIndex, write: Write, session_id: SessionId, principal: str
) -> Applied:
    if isinstance(write, MultiOp):
        return _multi_op(tree, index, write, session_id, principal)
    problem = _request_problem(tree, write)
    if problem is not None:
        return Applied(problem, ())
    result = _write(tree, index, write, session_id, principal)
    return Applied(result, (write.path,) if isinstance(result, Written) else ())


# ----------------------------------------------------------------------------- step 1


def request_problem(tree: Tree, write: Write) -> Failure | None:
    """What is wrong with `write` whatever the state (step 1), or None: the same answer
    `apply` would give, so a master can refuse it before it costs a log entry on every
    replica's disk (an oversized write, an invalid name)."""
    if isinstance(write, MultiOp):
        return _multi_op_problem(tree, write)
    return _request_problem(tree, write)


def _request_problem(tree: Tree, write: SimpleWrite) -> Failure | None:
    """What is wrong with `write` whatever the state, or None."""
    problem = check_path(write.path, tree.cell, tree.limits)
    if problem is not None:
        return problem
    match write:
        case Create(path, is_directory, contents, acl, ephemeral):
            if acl is not None and (problem := check_acl(acl, tree.limits)) is not None:
                return problem
            if is_directory and contents:
                return Failure(ErrorCode.IS_A_DIRECTORY, f"{path}: a directory has no contents")
            if is_directory and ephemeral:
                # An ephemeral node is deleted when its session ends, so it may not have
                # children (ZooKeeper's rule too): a directory cannot be ephemeral.
                message = f"{path}: an ephemeral node is a file, not a directory"
                return Failure(ErrorCode.IS_A_DIRECTORY, message)
            return _size_problem(tree, path, contents)
        case SetContents(path, contents, _):
            return _size_problem(tree, path, contents)
        case Delete(path, _):
            if path == tree.root:
                return Failure(ErrorCode.INVALID_NAME, f"{path}: the cell root cannot be deleted")
            return None
        case SetAcl(_, acl, _):
            return check_acl(acl, tree.limits)
        case unexpected:
            assert_never(unexpected)


def _size_problem(tree: Tree, path: str, contents: bytes) -> Failure | None:
    if len(contents) > tree.limits.file_bytes_max:
        message = f"{path}: {len(contents)} bytes of contents; at most {tree.limits.file_bytes_max}"
        return Failure(ErrorCode.TOO_LARGE, message)
    return None


# ----------------------------------------------------------------------------- step 2


def _write(
    tree: Tree, index: LogIndex, write: SimpleWrite, session_id: SessionId, principal: str
) -> Written | Failure:
    match write:
        case Create():
            return _create(tree, index, write, session_id, principal)
        case SetContents():
            return _set_contents(tree, write)
        case Delete():
            return _delete(tree, write)
        case SetAcl():
            return _set_acl(tree, write)
        case unexpected:
            assert_never(unexpected)


def _create(
    tree: Tree, index: LogIndex, create: Create, session_id: SessionId, principal: str
) -> Written | Failure:
    path = create.path
    if create.ephemeral and not session_id:
        message = f"{path}: an ephemeral node belongs to a session; create it in one"
        return Failure(ErrorCode.SESSION_REQUIRED, message)
    if tree.get(path) is not None:
        return Failure(ErrorCode.EXISTS, f"{path} exists")
    parent = tree.get(parent_of(path))
    if parent is None:
        return Failure(ErrorCode.NO_SUCH_NODE, f"{path}: no directory {parent_of(path)}")
    if not parent.is_directory:
        return Failure(ErrorCode.NOT_A_DIRECTORY, f"{path}: {parent.path} is a file")
    exhausted = create_problem(tree, principal, create)
    if exhausted is not None:
        return exhausted
    instance = tree.new_instance(index)
    if instance is None:
        return Failure(ErrorCode.BUSY, f"{path}: too many nodes created in one log entry")
    acl = parent.acl if create.acl is None else create.acl
    record = evolve(_new_node(create, instance, acl), creator=principal)
    if create.ephemeral:
        record = evolve(record, owner_session=session_id)
    tree.put(record)
    return Written(tree.stat(record))


def _new_node(create: Create, instance: int, acl: AclNames) -> NodeRecord:
    """A created node: a file's contents have been written once, its ACL names once (they
    are its parent's unless given, Chubby §2.3), its lock never."""
    directory = create.is_directory
    return NodeRecord(
        path=create.path,
        is_directory=directory,
        ephemeral=create.ephemeral,
        contents=create.contents,
        instance=instance,
        content_generation=0 if directory else 1,
        lock_generation=0,
        acl_generation=1,
        checksum=0 if directory else contents_checksum(create.contents),
        acl=acl,
    )


def _set_contents(tree: Tree, write: SetContents) -> Written | Failure:
    node = tree.get(write.path)
    if node is None:
        return _no_such_node(write.path)
    if node.is_directory:
        return Failure(ErrorCode.IS_A_DIRECTORY, f"{write.path} is a directory")
    expected = write.expected_generation
    if expected is not None and expected != node.content_generation:
        return _mismatch(write.path, "content generation", node.content_generation, expected)
    exhausted = growth_problem(tree, node, write.contents)
    if exhausted is not None:
        return exhausted
    record = evolve(
        node,
        contents=write.contents,
        content_generation=node.content_generation + 1,
        checksum=contents_checksum(write.contents),
    )
    tree.put(record)
    return Written(tree.stat(record))


def _delete(tree: Tree, delete: Delete) -> Written | Failure:
    node = tree.get(delete.path)
    if node is None:
        return _no_such_node(delete.path)
    expected = delete.expected_instance
    if expected is not None and expected != node.instance:
        return _mismatch(delete.path, "instance", node.instance, expected)
    if node.is_directory and tree.child_count(node.path):
        return Failure(ErrorCode.NOT_EMPTY, f"{delete.path} has children")
    tree.remove(node.path)
    return Written(None)


def _set_acl(tree: Tree, write: SetAcl) -> Written | Failure:
    node = tree.get(write.path)
    if node is None:
        return _no_such_node(write.path)
    expected = write.expected_generation
    if expected is not None and expected != node.acl_generation:
        return _mismatch(write.path, "ACL generation", node.acl_generation, expected)
    record = evolve(node, acl=write.acl, acl_generation=node.acl_generation + 1)
    tree.put(record)
    return Written(tree.stat(record))


def _no_such_node(path: str) -> Failure:
    return Failure(ErrorCode.NO_SUCH_NODE, f"no node {path}")


def _mismatch(path: str, what: str, actual: int, expected: int) -> Failure:
    return Failure(ErrorCode.GENERATION_MISMATCH, f"{path}: {what} is {actual}, not {expected}")


# ----------------------------------------------------------------------------- MultiOp


def _multi_op(
    tree: Tree, index: LogIndex, multi: MultiOp, session_id: SessionId, principal: str
) -> Applied:
    problem = _multi_op_problem(tree, multi)
    if problem is not None:
        return Applied(problem, ())
    tests = tuple(_holds(tree, test) for test in multi.guard)
    held = all(tests)
    branch, label = (multi.if_true, "if_true") if held else (multi.if_false, "if_false")
    tree.begin()
    results = []
    for position, write in enumerate(branch):
        result = _write(tree, index, write, session_id, principal)
        if isinstance(result, Failure):
            tree.rollback()
            return Applied(_located(result, f"{label}[{position}]"), ())
        results.append(result)
    tree.commit()
    return Applied(
        MultiResult(held, tests, tuple(results)), tuple(sorted({w.path for w in branch}))
    )


def _multi_op_problem(tree: Tree, multi: MultiOp) -> Failure | None:
    count = len(multi.guard) + len(multi.if_true) + len(multi.if_false)
    if count > tree.limits.multiop_operations_max:
        message = f"a MultiOp of {count} tests and operations; at most"
        return Failure(ErrorCode.TOO_LARGE, f"{message} {tree.limits.multiop_operations_max}")
    for position, test in enumerate(multi.guard):
        problem = check_path(test.path, tree.cell, tree.limits)
        if problem is not None:
            return _located(problem, f"guard[{position}]")
    for label, branch in (("if_true", multi.if_true), ("if_false", multi.if_false)):
        for position, write in enumerate(branch):
            problem = _request_problem(tree, write)
            if problem is not None:
                return _located(problem, f"{label}[{position}]")
    return None


def _located(failure: Failure, where: str) -> Failure:
    return Failure(failure.code, f"{where}: {failure.message}; nothing was applied")


def _holds(tree: Tree, test: Test) -> bool:
    """Whether guard `test` holds: each test looks at one node, and one about a property
    of a node is false when there is no node."""
    node = tree.get(test.path)
    match test:
        case Exists():
            return node is not None
        case Absent():
            return node is None
        case ContentGenerationIs(_, generation):
            return node is not None and node.content_generation == generation
        case AclGenerationIs(_, generation):
            return node is not None and node.acl_generation == generation
        case InstanceIs(_, instance):
            return node is not None and node.instance == instance
        case ContentsAre(_, contents):
            # A directory has no contents, so no ContentsAre test holds for one.
            return node is not None and not node.is_directory and node.contents == contents
        case LockHeldAt(_, instance, mode, generation):
            return (
                node is not None
                and node.instance == instance
                and node.lock.mode is mode
                and node.lock_generation == generation
            )
        case unexpected:
            assert_never(unexpected)


# ----------------------------------------------------------------------------- sessions


def _session_gone(session_id: SessionId) -> Failure:
    return Failure(ErrorCode.SESSION_EXPIRED, f"session {session_id} has ended")


def _session_call(
    tree: Tree, session_id: SessionId, number: CallNumber | None, carry_out: Callable[[], Applied]
) -> Applied:
    """Carry out the session's call `number` once (`carry_out`), keeping its answer for
    its retries; see `chubbypy.sessions.SessionCalls`."""
    session = tree.session(session_id)
    if session is None:
        return Applied(_session_gone(session_id), ())
    if number is None:
        return carry_out()
    if number.sequence < session.calls.low_water:
        return Applied(stale_call(session_id, number.sequence, tree.limits), ())
    kept = session.calls.result(number.sequence)
    if kept is not None:
        return Applied(kept, ())  # a retry: its first answer, and nothing changes
    applied = carry_out()
    result = applied.result
    if not (isinstance(result, Failure) and result.code is ErrorCode.BUSY):
        tree.record_call(session_id, number, result)  # BUSY asks to be asked again
    return applied


def stale_call(session_id: SessionId, sequence: int, limits: NamespaceLimits) -> Failure:
    """The answer to a call whose number the session's record has passed."""
    message = (
        f"call {sequence} of session {session_id} was answered and acknowledged, or its "
        f"answer was dropped (a session keeps {limits.session_answers_max}): it may have been "
        "carried out, and is not carried out again"
    )
    return Failure(ErrorCode.STALE_REQUEST, message)


def retried_session(
    tree: Tree, open_session: OpenSession, principal: str
) -> SessionRecord | Failure | None:
    """The live session an earlier `open_session` (the same name and nonce) opened, when
    `principal` opened it: a retried CreateSession gets it. PERMISSION_DENIED when another
    principal opened it (or no principal: before principals were recorded), so a nonce read
    from the log gets no one another's session and credential; None when none did."""
    opened = tree.session_by_nonce(open_session.name, open_session.nonce)
    if opened is None or opened.principal == principal:
        return opened
    message = (
        f"a session named {open_session.name!r} was created with this nonce by another "
        "principal: a retry must come from its creator; create yours with a fresh nonce"
    )
    return Failure(ErrorCode.PERMISSION_DENIED, message)


def _open_session(
    tree: Tree, index: LogIndex, open_session: OpenSession, principal: str
) -> Applied:
    name, nonce = open_session.name, open_session.nonce
    if len(name) > SESSION_NAME_CHARS_MAX:
        message = f"a session name of {len(name)} characters"
        return Applied(
            Failure(ErrorCode.BAD_REQUEST, f"{message}; at most {SESSION_NAME_CHARS_MAX}"), ()
        )
    retried = retried_session(tree, open_session, principal)
    if isinstance(retried, Failure):
        return Applied(retried, ())
    if retried is not None:  # a retried CreateSession: the session its first attempt opened
        return Applied(SessionOpened(retried.session_id), ())
    instance = tree.new_instance(index)
    if instance is None:
        return Applied(Failure(ErrorCode.BUSY, "too many sessions opened in one log entry"), ())
    session_id = SessionId(instance)  # numbered like a node, so never reused
    tree.open_session(SessionRecord(session_id, name, nonce, principal=principal))
    return Applied(SessionOpened(session_id), ())


def _end_session(tree: Tree, end: EndSession) -> Applied:
    """Drop the session's locks and delete its ephemeral nodes, then the session."""
    if tree.session(end.session_id) is None:
        return Applied(_session_gone(end.session_id), ())
    changed = tree.session_paths(end.session_id)
    # Ephemeral nodes are files, so every one can be deleted whatever the order.
    for path in changed:
        node = tree.get(path)
        assert node is not None, path
        if node.owner_session == end.session_id:
            tree.remove(path)
        else:
            lock = session_ended(node.lock, end.session_id, expired=end.expired)
            tree.put(evolve(node, lock=lock))
    tree.close_session(end.session_id)
    return Applied(Written(None), tuple(changed))


def _lock_command(tree: Tree, command: Acquire | Release | EndLockDelay) -> Applied:
    if isinstance(command, Acquire) and tree.session(command.session_id) is None:
        return Applied(_session_gone(command.session_id), ())
    node = tree.get(command.path)
    if node is None or node.instance != command.instance:
        return Applied(_no_such_node(f"{command.path} of instance {command.instance}"), ())
    lock_generation = node.lock_generation
    match command:
        case Acquire(session_id, handle_id, _, _, mode, lock_delay_ms):
            if not 0 <= lock_delay_ms <= LOCK_DELAY_MS_MAX:
                message = f"a lock-delay of {lock_delay_ms} ms; at most {LOCK_DELAY_MS_MAX}"
                return Applied(Failure(ErrorCode.BAD_REQUEST, message), ())
            granted = acquire_lock(node.lock, Holder(session_id, handle_id, mode, lock_delay_ms))
            if isinstance(granted, Failure):
                return Applied(_on(command.path, granted), ())
            lock = granted.state
            lock_generation += granted.newly_held
        case Release(session_id, handle_id, _, _, generation):
            if generation is not None and generation != node.lock_generation:
                message = (
                    f"a release of generation {generation}; the lock is at {node.lock_generation}"
                )
                return Applied(_on(command.path, Failure(ErrorCode.LOCK_NOT_HELD, message)), ())
            released = release(node.lock, session_id, handle_id)
            if isinstance(released, Failure):
                return Applied(_on(command.path, released), ())
            lock = released
        case EndLockDelay():
            lock = end_delay(node.lock)
        case unexpected:
            assert_never(unexpected)
    return _relocked(tree, node, lock, lock_generation)


def _relocked(tree: Tree, node: NodeRecord, lock: LockState, lock_generation: int) -> Applied:
    if lock == node.lock:
        return Applied(Written(tree.stat(node)), ())
    record = evolve(node, lock=lock, lock_generation=lock_generation)
    tree.put(record)
    return Applied(Written(tree.stat(record)), (node.path,))


def _on(path: str, failure: Failure) -> Failure:
    return Failure(failure.code, f"{path}: {failure.message}")
